//! One regular file as the disk and the page cache see it: the backing file holds what is
//! durable, a map of dirty pages and a pending length hold what is not.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// The unit in which unsynced data is kept in memory.
pub const PAGE: u64 = 4096;

/// The unit a disk writes atomically: a page that was being written back when the power went
/// may reach the disk in part, sector by sector.
pub const SECTOR: u64 = 512;

/// Sectors of a page.
const SECTORS: u32 = (PAGE / SECTOR) as u32;

/// A file's unsynced state over its durable backing file.
#[derive(Debug)]
pub struct Pending {
    /// The durable content.
    backing: File,
    /// Length of the durable content.
    durable_len: u64,
    /// Length the file has now (what `stat` says), synced or not.
    len: u64,
    /// The lowest length the file was cut to since the last sync: bytes of the backing file at or
    /// after it read as zeros (a shrink followed by a growth does not bring old bytes back).
    zero_from: Option<u64>,
    /// Dirty pages by page index, each `PAGE` bytes of the file as it is now.
    dirty: BTreeMap<u64, Box<[u8]>>,
}

impl Pending {
    /// The state of a file whose content is all durable.
    pub fn new(backing: File) -> io::Result<Pending> {
        let len = backing.metadata()?.len();
        Ok(Pending {
            backing,
            durable_len: len,
            len,
            zero_from: None,
            dirty: BTreeMap::new(),
        })
    }

    /// The file's length now.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Pages written and not yet synced.
    pub fn dirty_pages(&self) -> usize {
        self.dirty.len()
    }

    /// Reads `buf.len()` bytes at `at` of page `page` as the durable file has them (zeros past
    /// its end and past a pending shrink).
    fn read_durable(&self, page: u64, at: usize, buf: &mut [u8]) -> io::Result<()> {
        let start = page * PAGE + at as u64;
        let limit = self
            .zero_from
            .map_or(self.durable_len, |z| z.min(self.durable_len));
        buf.fill(0);
        if start < limit {
            let n = ((limit - start) as usize).min(buf.len());
            self.backing.read_exact_at(&mut buf[..n], start)?;
        }
        Ok(())
    }

    /// Reads up to `size` bytes at `offset` of the file as it is now.
    pub fn read(&self, offset: u64, size: usize) -> io::Result<Vec<u8>> {
        let end = (offset + size as u64).min(self.len);
        if offset >= end {
            return Ok(Vec::new());
        }
        let mut out = vec![0u8; (end - offset) as usize];
        let mut pos = offset;
        while pos < end {
            let page = pos / PAGE;
            let at = (pos % PAGE) as usize;
            let n = ((PAGE - pos % PAGE).min(end - pos)) as usize;
            let dst = &mut out[(pos - offset) as usize..][..n];
            match self.dirty.get(&page) {
                Some(bytes) => dst.copy_from_slice(&bytes[at..at + n]),
                None => self.read_durable(page, at, dst)?,
            }
            pos += n as u64;
        }
        Ok(out)
    }

    /// The dirty copy of `page`, made from the file as it is now if it is not dirty yet.
    fn dirty_page(&mut self, page: u64) -> io::Result<&mut [u8]> {
        if !self.dirty.contains_key(&page) {
            let mut bytes = vec![0u8; PAGE as usize].into_boxed_slice();
            if page * PAGE < self.len {
                self.read_durable(page, 0, &mut bytes)?;
            }
            self.dirty.insert(page, bytes);
        }
        Ok(self.dirty.get_mut(&page).expect("inserted above"))
    }

    /// Writes `data` at `offset`, in the page cache only.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut pos = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let page = pos / PAGE;
            let at = (pos % PAGE) as usize;
            let n = ((PAGE as usize) - at).min(rest.len());
            self.dirty_page(page)?[at..at + n].copy_from_slice(&rest[..n]);
            rest = &rest[n..];
            pos += n as u64;
        }
        self.len = self.len.max(offset + data.len() as u64);
        Ok(())
    }

    /// Writes `data` at `offset` and makes that range durable, as a write through a descriptor
    /// opened with `O_DSYNC` does. Other unsynced writes stay unsynced.
    pub fn write_durable(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        if self.zero_from.is_some() {
            // A pending shrink must reach the disk before bytes past it do, or the bytes it
            // removed would come back; the whole file is synced first.
            self.sync()?;
        }
        self.write(offset, data)?;
        self.backing.write_all_at(data, offset)?;
        self.durable_len = self.durable_len.max(offset + data.len() as u64);
        Ok(())
    }

    /// Sets the file's length, in the page cache only.
    pub fn set_len(&mut self, len: u64) -> io::Result<()> {
        if len < self.len {
            self.dirty.retain(|&page, _| page * PAGE < len);
            if !len.is_multiple_of(PAGE) {
                let at = (len % PAGE) as usize;
                self.dirty_page(len / PAGE)?[at..].fill(0);
            }
            self.zero_from = Some(self.zero_from.map_or(len, |z| z.min(len)));
        }
        self.len = len;
        Ok(())
    }

    /// Makes everything written durable (`fsync`/`fdatasync`).
    pub fn sync(&mut self) -> io::Result<()> {
        if let Some(z) = self.zero_from.take() {
            if z < self.durable_len {
                self.backing.set_len(z)?;
                self.durable_len = z;
            }
        }
        let dirty = std::mem::take(&mut self.dirty);
        for (page, bytes) in dirty {
            let start = page * PAGE;
            if start >= self.len {
                continue;
            }
            let n = (self.len - start).min(PAGE) as usize;
            self.backing.write_all_at(&bytes[..n], start)?;
        }
        if self.len != self.durable_len {
            self.backing.set_len(self.len)?;
        }
        self.durable_len = self.len;
        Ok(())
    }

    /// The power goes off: of each dirty page, the sectors whose bits `sectors(page)` sets reach
    /// the disk (the kernel may have written the page back before the cut, whole or in part),
    /// the rest are lost, and so is a pending length change unless a kept sector extends the
    /// file. Returns the pages (kept whole, torn, lost).
    pub fn cut(&mut self, mut sectors: impl FnMut(u64) -> u8) -> io::Result<(usize, usize, usize)> {
        let dirty = std::mem::take(&mut self.dirty);
        let (mut kept, mut torn, mut lost) = (0, 0, 0);
        for (page, bytes) in dirty {
            let start = page * PAGE;
            let mask = if start < self.len { sectors(page) } else { 0 };
            match mask.count_ones() {
                0 => lost += 1,
                SECTORS => kept += 1,
                _ => torn += 1,
            }
            for sector in (0..SECTORS).filter(|i| mask & (1 << i) != 0) {
                let from = start + u64::from(sector) * SECTOR;
                if from >= self.len {
                    break;
                }
                let n = (self.len - from).min(SECTOR) as usize;
                let at = (from - start) as usize;
                self.backing.write_all_at(&bytes[at..at + n], from)?;
                self.durable_len = self.durable_len.max(from + n as u64);
            }
        }
        self.zero_from = None;
        self.len = self.durable_len;
        Ok((kept, torn, lost))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending() -> (tempfile::NamedTempFile, Pending) {
        let f = tempfile::NamedTempFile::new().unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(f.path())
            .unwrap();
        let p = Pending::new(file).unwrap();
        (f, p)
    }

    fn durable(f: &tempfile::NamedTempFile) -> Vec<u8> {
        std::fs::read(f.path()).unwrap()
    }

    #[test]
    fn unsynced_writes_read_back_and_reach_the_disk_only_on_sync() {
        let (f, mut p) = pending();
        p.write(5000, b"hello").unwrap();
        assert_eq!(p.len(), 5005);
        assert_eq!(p.read(5000, 10).unwrap(), b"hello");
        assert_eq!(p.read(0, 3).unwrap(), [0, 0, 0]);
        assert!(durable(&f).is_empty());
        p.sync().unwrap();
        let d = durable(&f);
        assert_eq!(d.len(), 5005);
        assert_eq!(&d[5000..], b"hello");
    }

    #[test]
    fn a_cut_loses_what_was_not_synced() {
        let (f, mut p) = pending();
        p.write(0, b"synced").unwrap();
        p.sync().unwrap();
        p.write(0, b"SYNCED").unwrap();
        p.write(3 * PAGE, b"tail").unwrap();
        assert_eq!(p.cut(|_| 0).unwrap(), (0, 0, 2));
        assert_eq!(durable(&f), b"synced");
        assert_eq!(p.len(), 6);
        assert_eq!(p.read(0, 100).unwrap(), b"synced");
    }

    #[test]
    fn a_cut_can_keep_some_pages_written_back() {
        let (f, mut p) = pending();
        p.write(0, &[1; PAGE as usize * 3]).unwrap();
        assert_eq!(
            p.cut(|page| if page == 1 { 0xFF } else { 0 }).unwrap(),
            (1, 0, 2)
        );
        let d = durable(&f);
        assert_eq!(d.len() as u64, 2 * PAGE);
        assert!(d[..PAGE as usize].iter().all(|&b| b == 0));
        assert!(d[PAGE as usize..].iter().all(|&b| b == 1));
    }

    #[test]
    fn durable_writes_survive_a_cut_and_leave_other_writes_pending() {
        let (f, mut p) = pending();
        p.write(0, b"pending").unwrap();
        p.write_durable(PAGE, b"meta").unwrap();
        assert_eq!(p.read(0, 7).unwrap(), b"pending");
        p.cut(|_| 0).unwrap();
        let d = durable(&f);
        assert_eq!(&d[..7], [0; 7]);
        assert_eq!(&d[PAGE as usize..], b"meta");
    }

    #[test]
    fn a_shrink_then_growth_reads_zeros_not_old_bytes() {
        let (f, mut p) = pending();
        p.write(0, &[9; 100]).unwrap();
        p.sync().unwrap();
        p.set_len(10).unwrap();
        p.set_len(100).unwrap();
        let now = p.read(0, 100).unwrap();
        assert_eq!(&now[..10], [9; 10]);
        assert_eq!(&now[10..], [0; 90]);
        p.sync().unwrap();
        let d = durable(&f);
        assert_eq!(&d[..10], [9; 10]);
        assert_eq!(&d[10..], [0; 90]);
    }

    #[test]
    fn an_unsynced_shrink_is_lost_on_a_cut() {
        let (f, mut p) = pending();
        p.write(0, &[9; 100]).unwrap();
        p.sync().unwrap();
        p.set_len(10).unwrap();
        p.cut(|_| 0xFF).unwrap();
        assert_eq!(durable(&f), [9; 100]);
    }

    #[test]
    fn a_cut_can_tear_a_page_at_sector_boundaries() {
        let (f, mut p) = pending();
        p.write(0, &[1; PAGE as usize]).unwrap();
        p.sync().unwrap();
        p.write(0, &[2; PAGE as usize]).unwrap();
        // Sectors 0 and 3 reach the disk.
        assert_eq!(p.cut(|_| 0b1001).unwrap(), (0, 1, 0));
        let d = durable(&f);
        for (i, sector) in d.chunks(SECTOR as usize).enumerate() {
            let want = if i == 0 || i == 3 { 2 } else { 1 };
            assert!(sector.iter().all(|&b| b == want), "sector {i}");
        }
    }
}
