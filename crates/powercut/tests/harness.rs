//! The harness itself: what was synced survives a cut, what was not does not, and memory maps
//! read through it.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use powercut::{Keep, PowerCut, PAGE, SECTOR};

struct Mounted {
    backing: tempfile::TempDir,
    _mountpoint: tempfile::TempDir,
    fs: PowerCut,
}

fn mount() -> Mounted {
    let backing = tempfile::tempdir().unwrap();
    let mountpoint = tempfile::tempdir().unwrap();
    let fs = PowerCut::mount(backing.path(), mountpoint.path())
        .expect("mount the power-cut filesystem (needs /dev/fuse and root)");
    Mounted {
        backing,
        _mountpoint: mountpoint,
        fs,
    }
}

impl Mounted {
    fn at(&self, name: &str) -> std::path::PathBuf {
        self.fs.mountpoint().join(name)
    }

    /// Cuts the power, unmounts, and returns the backing directory.
    fn cut(self, keep: Keep) -> tempfile::TempDir {
        self.fs.cut(keep).unwrap();
        self.fs.unmount().unwrap();
        self.backing
    }
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap()
}

#[test]
fn a_synced_write_survives_a_cut_and_an_unsynced_one_does_not() {
    let m = mount();
    let mut f = std::fs::File::create(m.at("log")).unwrap();
    f.write_all(b"first ").unwrap();
    f.sync_data().unwrap();
    f.write_all(b"second").unwrap();
    // The program reads its own unsynced write back.
    assert_eq!(std::fs::read(m.at("log")).unwrap(), b"first second");
    assert_eq!(m.fs.dirty_pages(), 1);
    drop(f);
    let counters = m.fs.counters();
    assert_eq!(counters.syncs, 1);
    assert!(counters.writes >= 2);
    let disk = m.cut(Keep::Nothing);
    assert_eq!(read(disk.path(), "log"), b"first ");
}

#[test]
fn closing_a_file_makes_nothing_durable() {
    let m = mount();
    std::fs::write(m.at("closed"), b"written and closed").unwrap();
    let disk = m.cut(Keep::Nothing);
    // The file exists (directory entries are durable), its content is lost.
    assert_eq!(read(disk.path(), "closed"), b"");
}

#[test]
fn fsync_of_one_descriptor_syncs_the_file_written_through_another() {
    let m = mount();
    let mut a = std::fs::File::create(m.at("f")).unwrap();
    a.write_all(b"through a").unwrap();
    let b = OpenOptions::new().read(true).open(m.at("f")).unwrap();
    b.sync_all().unwrap();
    drop((a, b));
    let disk = m.cut(Keep::Nothing);
    assert_eq!(read(disk.path(), "f"), b"through a");
}

#[test]
fn a_sync_covers_only_its_own_file() {
    let m = mount();
    let mut a = std::fs::File::create(m.at("a")).unwrap();
    let mut b = std::fs::File::create(m.at("b")).unwrap();
    a.write_all(b"aaa").unwrap();
    b.write_all(b"bbb").unwrap();
    a.sync_data().unwrap();
    drop((a, b));
    let disk = m.cut(Keep::Nothing);
    assert_eq!(read(disk.path(), "a"), b"aaa");
    assert_eq!(read(disk.path(), "b"), b"");
}

#[test]
fn an_o_dsync_write_is_durable_alone() {
    let m = mount();
    let mut plain = std::fs::File::create(m.at("env")).unwrap();
    plain.write_all(&[1; 2 * PAGE as usize]).unwrap();
    // LMDB's pattern: data pages through one descriptor, the meta page through an O_DSYNC one.
    let meta = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DSYNC)
        .open(m.at("env"))
        .unwrap();
    meta.write_all_at(&[2; 16], 0).unwrap();
    drop((plain, meta));
    let disk = m.cut(Keep::Nothing);
    let kept = read(disk.path(), "env");
    // Only the O_DSYNC write reached the disk: the other pages it did not touch are lost.
    assert_eq!(kept, [2; 16]);
}

#[test]
fn after_a_cut_every_request_fails() {
    let m = mount();
    let mut f = std::fs::File::create(m.at("f")).unwrap();
    f.write_all(b"x").unwrap();
    let report = m.fs.cut(Keep::Nothing).unwrap();
    assert_eq!(report.pages_lost, 1);
    let err = f.sync_data().unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    assert!(f.write_all(b"y").is_err());
    assert!(std::fs::read(m.at("f")).is_err());
    assert!(m.fs.counters().refused >= 2);
    drop(f);
    m.fs.unmount().unwrap();
}

#[test]
fn a_random_cut_keeps_some_whole_pages_and_loses_the_others() {
    let m = mount();
    let pages = 64;
    let mut f = std::fs::File::create(m.at("f")).unwrap();
    for p in 0..pages {
        f.write_all(&[p as u8 + 1; PAGE as usize]).unwrap();
    }
    drop(f);
    let disk = m.cut(Keep::Random(7));
    let kept = read(disk.path(), "f");
    let mut whole = 0;
    for (p, page) in kept.chunks(PAGE as usize).enumerate() {
        // Each page is either as written or zeros (a hole before a kept page), never torn.
        if page.iter().all(|&b| b == p as u8 + 1) {
            whole += 1;
        } else {
            assert!(page.iter().all(|&b| b == 0), "page {p} is torn");
        }
    }
    assert!(whole > 0 && whole < pages, "{whole} of {pages} pages kept");
}

#[test]
fn memory_maps_read_through_it() {
    let m = mount();
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(m.at("mapped"))
        .unwrap();
    f.write_all(&vec![0xAB; 3 * PAGE as usize]).unwrap();
    f.write_all_at(b"written after", PAGE + 10).unwrap();
    let len = 3 * PAGE as usize;
    // SAFETY: a fresh read-only shared mapping of a file this test owns; it is read within its
    // length and unmapped before the file is closed.
    let bytes = unsafe {
        let ptr = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            std::os::fd::AsRawFd::as_raw_fd(&f),
            0,
        );
        assert_ne!(ptr, libc::MAP_FAILED, "mmap through FUSE");
        let copy = std::slice::from_raw_parts(ptr as *const u8, len).to_vec();
        libc::munmap(ptr, len);
        copy
    };
    assert_eq!(&bytes[..10], [0xAB; 10]);
    assert_eq!(&bytes[PAGE as usize + 10..][..13], b"written after");
    // Truncation and growth through the mount.
    f.set_len(PAGE + 20).unwrap();
    f.set_len(2 * PAGE).unwrap();
    let mut back = Vec::new();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.read_to_end(&mut back).unwrap();
    assert_eq!(back.len(), 2 * PAGE as usize);
    assert_eq!(&back[PAGE as usize + 10..][..10], b"written af");
    assert!(back[PAGE as usize + 20..].iter().all(|&b| b == 0));
    f.sync_all().unwrap();
    drop(f);
    let disk = m.cut(Keep::Nothing);
    assert_eq!(read(disk.path(), "mapped"), back);
}

#[test]
fn directories_and_renames_pass_through() {
    let m = mount();
    std::fs::create_dir(m.at("d")).unwrap();
    let mut f = std::fs::File::create(m.at("d/tmp")).unwrap();
    f.write_all(b"renamed").unwrap();
    drop(f);
    std::fs::rename(m.at("d/tmp"), m.at("d/final")).unwrap();
    std::fs::write(m.at("gone"), b"").unwrap();
    std::fs::remove_file(m.at("gone")).unwrap();
    let names: Vec<String> = std::fs::read_dir(m.at("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["final"]);
    let disk = m.cut(Keep::Nothing);
    // A rename syncs the file it moves.
    assert_eq!(read(disk.path(), "d/final"), b"renamed");
    assert!(!disk.path().join("gone").exists());
}

#[test]
fn an_armed_cut_happens_before_the_chosen_write_or_sync() {
    let m = mount();
    let mut f = std::fs::File::create(m.at("f")).unwrap();
    // Ops: write 1, sync 2, write 3, sync 4 (refused: the power goes before it).
    m.fs.arm(4, Keep::Nothing);
    f.write_all(b"one ").unwrap();
    f.sync_data().unwrap();
    f.write_all(b"two").unwrap();
    assert_eq!(m.fs.cut_report(), None);
    assert!(f.sync_data().is_err());
    assert_eq!(
        m.fs.cut_report(),
        Some(powercut::CutReport {
            pages_kept: 0,
            pages_torn: 0,
            pages_lost: 1
        })
    );
    assert!(f.write_all(b"three").is_err());
    drop(f);
    let disk = m.cut(Keep::Nothing);
    assert_eq!(read(disk.path(), "f"), b"one ");
}

#[test]
fn a_sector_cut_tears_pages_at_sector_boundaries_only() {
    let m = mount();
    let pages = 64;
    let mut f = std::fs::File::create(m.at("f")).unwrap();
    f.write_all(&vec![0xEE; pages * PAGE as usize]).unwrap();
    f.sync_all().unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    for p in 0..pages {
        f.write_all(&[p as u8 + 1; PAGE as usize]).unwrap();
    }
    drop(f);
    let report = m.fs.cut(Keep::Sectors(11)).unwrap();
    assert!(report.pages_torn > 0 && report.pages_lost > 0, "{report:?}");
    let disk = m.cut(Keep::Nothing);
    let kept = read(disk.path(), "f");
    assert_eq!(kept.len(), pages * PAGE as usize);
    for (i, sector) in kept.chunks(SECTOR as usize).enumerate() {
        let new = (i / (PAGE / SECTOR) as usize) as u8 + 1;
        // Each sector is the old or the new content, never a mix.
        assert!(
            sector.iter().all(|&b| b == new) || sector.iter().all(|&b| b == 0xEE),
            "sector {i} is torn"
        );
    }
}
