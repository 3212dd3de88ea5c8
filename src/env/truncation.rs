//! Refusing a data file that cannot be mapped safely.

use std::path::Path;

use crate::error::Result;

/// Why the LMDB data file in `dir` cannot be mapped safely, if it cannot: LMDB maps the file and
/// trusts its meta pages, so a file cut shorter than the pages they name would make the first
/// read past its end a `SIGBUS`, not an error. Reads the two meta pages (format of LMDB 0.9:
/// magic `0xBEEFC0DE` at byte 16 of each, page size at 40, last page number at 136, transaction
/// id at 144) and checks that the file holds every page the newer one names. `None` for a file
/// that does not exist yet.
///
/// Another process, or this one closing the store, may be committing meanwhile: a commit writes
/// its pages before the meta page that names them, so the file's length is read after the meta
/// pages, never before (a length read first could be older than the newest meta).
pub(crate) fn truncation(dir: &Path) -> Result<Option<String>> {
    use std::io::Read;
    let path = dir.join("data.mdb");
    let mut file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if file.metadata()?.len() == 0 {
        return Ok(None);
    }
    let mut head = vec![0u8; 160];
    if file.read_exact(&mut head).is_err() {
        return Ok(Some(format!(
            "{} is truncated to {} bytes",
            path.display(),
            file.metadata()?.len()
        )));
    }
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4"));
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8"));
    if u32_at(&head, 16) != 0xBEEF_C0DE {
        return Ok(Some(format!("{} is not an LMDB data file", path.display())));
    }
    let page = u64::from(u32_at(&head, 40));
    let mut second = vec![0u8; 160];
    use std::io::{Seek, SeekFrom};
    let second_read = (512..=65536).contains(&page)
        && page.is_power_of_two()
        && file.seek(SeekFrom::Start(page)).is_ok()
        && file.read_exact(&mut second).is_ok();
    let len = file.metadata()?.len();
    if !second_read || len < 2 * page {
        return Ok(Some(format!(
            "{} is truncated or damaged: {len} bytes, page size {page}",
            path.display()
        )));
    }
    let metas = [&head, &second];
    let newest = metas
        .iter()
        .filter(|m| u32_at(m, 16) == 0xBEEF_C0DE)
        .max_by_key(|m| u64_at(m, 144))
        .expect("the first meta page has the magic");
    let needed = (u64_at(newest, 136) + 1).saturating_mul(page);
    if len < needed {
        return Ok(Some(format!(
            "{} is truncated: {len} bytes, its last page ends at byte {needed}",
            path.display()
        )));
    }
    Ok(None)
}
