//! The FUSE filesystem: a passthrough to a backing directory whose file contents stay in memory
//! until they are synced.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    FileAttr, FileType, Filesystem, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyWrite, Request, TimeOrNow, FUSE_ROOT_ID,
};

use crate::file::Pending;
use crate::Keep;

/// Attributes and entries are never cached by the kernel: every `stat` sees the current length.
const TTL: Duration = Duration::ZERO;

/// Counters of what the filesystem saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// `write` requests.
    pub writes: u64,
    /// Writes through descriptors opened with `O_DSYNC` or `O_SYNC`, durable when they return.
    pub durable_writes: u64,
    /// `fsync`/`fdatasync` requests that made a file's pending writes durable.
    pub syncs: u64,
    /// Requests refused because the power was off.
    pub refused: u64,
}

/// What a cut did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CutReport {
    /// Unsynced pages that reached the disk whole (written back before the power went).
    pub pages_kept: usize,
    /// Unsynced pages of which some sectors reached the disk and others did not.
    pub pages_torn: usize,
    /// Unsynced pages that were lost.
    pub pages_lost: usize,
}

/// The state shared by the FUSE session and the test that cuts the power.
#[derive(Debug)]
pub(crate) struct State {
    backing: PathBuf,
    /// Path (relative to `backing`) of each inode; index 0 is the root (inode 1).
    paths: Vec<PathBuf>,
    by_path: HashMap<PathBuf, u64>,
    /// Regular files with unsynced state, by inode.
    files: HashMap<u64, Pending>,
    /// Open handles: whether writes through them are durable at once.
    handles: HashMap<u64, bool>,
    next_handle: u64,
    /// What the cut did, once the power is off.
    off: Option<CutReport>,
    /// A cut to make before the write or sync that brings `writes + syncs` to this number.
    armed: Option<(u64, Keep)>,
    counters: Counters,
}

impl State {
    pub(crate) fn new(backing: PathBuf) -> State {
        let root = PathBuf::new();
        State {
            backing,
            paths: vec![root.clone()],
            by_path: HashMap::from([(root, FUSE_ROOT_ID)]),
            files: HashMap::new(),
            handles: HashMap::new(),
            next_handle: 1,
            off: None,
            armed: None,
            counters: Counters::default(),
        }
    }

    fn path(&self, ino: u64) -> io::Result<&Path> {
        self.paths
            .get((ino - 1) as usize)
            .map(PathBuf::as_path)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))
    }

    fn full(&self, rel: &Path) -> PathBuf {
        self.backing.join(rel)
    }

    fn ino_of(&mut self, rel: PathBuf) -> u64 {
        if let Some(&ino) = self.by_path.get(&rel) {
            return ino;
        }
        self.paths.push(rel.clone());
        let ino = self.paths.len() as u64;
        self.by_path.insert(rel, ino);
        ino
    }

    fn child(&self, parent: u64, name: &OsStr) -> io::Result<PathBuf> {
        Ok(self.path(parent)?.join(name))
    }

    /// The attributes of `ino`, with the length the page cache has.
    fn attr(&self, ino: u64) -> io::Result<FileAttr> {
        let meta = fs::symlink_metadata(self.full(self.path(ino)?))?;
        let size = self.files.get(&ino).map_or(meta.len(), Pending::len);
        let kind = if meta.is_dir() {
            FileType::Directory
        } else if meta.file_type().is_symlink() {
            FileType::Symlink
        } else {
            FileType::RegularFile
        };
        let time = |secs: i64, nanos: i64| {
            UNIX_EPOCH + Duration::new(secs.max(0) as u64, nanos.clamp(0, 999_999_999) as u32)
        };
        Ok(FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: time(meta.atime(), meta.atime_nsec()),
            mtime: time(meta.mtime(), meta.mtime_nsec()),
            ctime: time(meta.ctime(), meta.ctime_nsec()),
            crtime: SystemTime::UNIX_EPOCH,
            kind,
            perm: (meta.mode() & 0o7777) as u16,
            nlink: meta.nlink() as u32,
            uid: meta.uid(),
            gid: meta.gid(),
            rdev: meta.rdev() as u32,
            blksize: 4096,
            flags: 0,
        })
    }

    /// The unsynced state of regular file `ino`, opened on first use.
    fn file(&mut self, ino: u64) -> io::Result<&mut Pending> {
        if !self.files.contains_key(&ino) {
            let path = self.full(self.path(ino)?);
            let backing = OpenOptions::new().read(true).write(true).open(path)?;
            self.files.insert(ino, Pending::new(backing)?);
        }
        Ok(self.files.get_mut(&ino).expect("inserted above"))
    }

    fn open_handle(&mut self, flags: i32) -> u64 {
        let fh = self.next_handle;
        self.next_handle += 1;
        self.handles.insert(fh, flags & libc::O_DSYNC != 0);
        fh
    }

    fn forget_path(&mut self, rel: &Path) {
        if let Some(ino) = self.by_path.remove(rel) {
            self.files.remove(&ino);
        }
    }

    /// Turns the power off. A second cut finds nothing left to lose.
    pub(crate) fn cut(&mut self, keep: Keep) -> io::Result<CutReport> {
        let mut x = match keep {
            Keep::Nothing => 0,
            Keep::Random(seed) | Keep::Sectors(seed) => seed,
        };
        let mut sectors = |_page: u64| {
            // SplitMix64.
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            let z = z ^ (z >> 31);
            match keep {
                Keep::Nothing => 0,
                Keep::Random(_) => {
                    if z & 1 == 1 {
                        0xFF
                    } else {
                        0
                    }
                }
                // Half the pages untouched by writeback, the others written in part or whole.
                Keep::Sectors(_) => {
                    if z & 1 == 1 {
                        (z >> 8) as u8
                    } else {
                        0
                    }
                }
            }
        };
        let first = self.off.is_none();
        if first {
            self.off = Some(CutReport::default());
        }
        self.armed = None;
        let mut report = CutReport::default();
        for pending in self.files.values_mut() {
            let (kept, torn, lost) = pending.cut(&mut sectors)?;
            report.pages_kept += kept;
            report.pages_torn += torn;
            report.pages_lost += lost;
        }
        if first {
            self.off = Some(report);
        }
        Ok(report)
    }

    pub(crate) fn arm(&mut self, ops: u64, keep: Keep) {
        self.armed = Some((ops, keep));
    }

    pub(crate) fn cut_report(&self) -> Option<CutReport> {
        self.off
    }

    /// Counts a write or sync about to happen; false when the power is (now) off.
    fn next_op(&mut self) -> bool {
        if let Some((at, keep)) = self.armed {
            if self.counters.writes + self.counters.syncs + 1 >= at {
                // A cut that cannot write a kept page keeps fewer: the power is off either way.
                let _ = self.cut(keep);
            }
        }
        self.off.is_none()
    }

    pub(crate) fn counters(&self) -> Counters {
        self.counters
    }

    pub(crate) fn dirty_pages(&self) -> usize {
        self.files.values().map(Pending::dirty_pages).sum()
    }
}

/// The errno of an I/O error, EIO when it has none.
fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

/// The `Filesystem` the FUSE session runs.
pub(crate) struct LossyFs(pub(crate) Arc<Mutex<State>>);

impl LossyFs {
    /// The state, or `None` (with the request counted as refused) when the power is off.
    fn on(&self) -> Option<MutexGuard<'_, State>> {
        let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if state.off.is_some() {
            state.counters.refused += 1;
            return None;
        }
        Some(state)
    }
}

/// Replies with the error of a failed operation, or EIO when the power is off.
macro_rules! on_or_eio {
    ($fs:expr, $reply:expr) => {
        match $fs.on() {
            Some(state) => state,
            None => return $reply.error(libc::EIO),
        }
    };
}

macro_rules! try_reply {
    ($e:expr, $reply:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return $reply.error(errno(&e)),
        }
    };
}

impl Filesystem for LossyFs {
    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let mut s = on_or_eio!(self, reply);
        let rel = try_reply!(s.child(parent, name), reply);
        if let Err(e) = fs::symlink_metadata(s.full(&rel)) {
            return reply.error(errno(&e));
        }
        let ino = s.ino_of(rel);
        let attr = try_reply!(s.attr(ino), reply);
        reply.entry(&TTL, &attr, 0);
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        let s = on_or_eio!(self, reply);
        let attr = try_reply!(s.attr(ino), reply);
        reply.attr(&TTL, &attr);
    }

    fn setattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        let mut s = on_or_eio!(self, reply);
        if let Some(mode) = mode {
            let path = s.full(try_reply!(s.path(ino), reply));
            try_reply!(
                fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o7777)),
                reply
            );
        }
        if let Some(len) = size {
            try_reply!(s.file(ino).and_then(|f| f.set_len(len)), reply);
        }
        let attr = try_reply!(s.attr(ino), reply);
        reply.attr(&TTL, &attr);
    }

    fn mkdir(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut s = on_or_eio!(self, reply);
        let rel = try_reply!(s.child(parent, name), reply);
        let full = s.full(&rel);
        try_reply!(fs::create_dir(&full), reply);
        try_reply!(
            fs::set_permissions(&full, fs::Permissions::from_mode(mode & !umask & 0o7777)),
            reply
        );
        let ino = s.ino_of(rel);
        let attr = try_reply!(s.attr(ino), reply);
        reply.entry(&TTL, &attr, 0);
    }

    fn unlink(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let mut s = on_or_eio!(self, reply);
        let rel = try_reply!(s.child(parent, name), reply);
        try_reply!(fs::remove_file(s.full(&rel)), reply);
        s.forget_path(&rel);
        reply.ok();
    }

    fn rmdir(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let mut s = on_or_eio!(self, reply);
        let rel = try_reply!(s.child(parent, name), reply);
        try_reply!(fs::remove_dir(s.full(&rel)), reply);
        s.forget_path(&rel);
        reply.ok();
    }

    fn rename(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        _flags: u32,
        reply: ReplyEmpty,
    ) {
        let mut s = on_or_eio!(self, reply);
        let from = try_reply!(s.child(parent, name), reply);
        let to = try_reply!(s.child(newparent, newname), reply);
        // Contents not yet synced move with the file: they are synced first, so that the
        // backing file renamed is the whole file.
        if let Some(&ino) = s.by_path.get(&from) {
            if let Some(pending) = s.files.get_mut(&ino) {
                try_reply!(pending.sync(), reply);
            }
        }
        try_reply!(fs::rename(s.full(&from), s.full(&to)), reply);
        s.forget_path(&to);
        let moved: Vec<(PathBuf, u64)> = s
            .by_path
            .iter()
            .filter(|(p, _)| p.starts_with(&from))
            .map(|(p, &i)| (p.clone(), i))
            .collect();
        for (old, ino) in moved {
            let new = to.join(old.strip_prefix(&from).expect("filtered on the prefix"));
            s.by_path.remove(&old);
            s.paths[(ino - 1) as usize] = new.clone();
            s.by_path.insert(new, ino);
        }
        reply.ok();
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        let mut s = on_or_eio!(self, reply);
        if flags & libc::O_TRUNC != 0 {
            try_reply!(s.file(ino).and_then(|f| f.set_len(0)), reply);
        }
        let fh = s.open_handle(flags);
        reply.opened(fh, 0);
    }

    fn create(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut s = on_or_eio!(self, reply);
        let rel = try_reply!(s.child(parent, name), reply);
        let full = s.full(&rel);
        let created = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(mode & !umask & 0o7777)
            .open(&full);
        drop(try_reply!(created, reply));
        let ino = s.ino_of(rel);
        if flags & libc::O_TRUNC != 0 {
            try_reply!(s.file(ino).and_then(|f| f.set_len(0)), reply);
        }
        let attr = try_reply!(s.attr(ino), reply);
        let fh = s.open_handle(flags);
        reply.created(&TTL, &attr, 0, fh, 0);
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        let mut s = on_or_eio!(self, reply);
        let data = try_reply!(
            s.file(ino)
                .and_then(|f| f.read(offset.max(0) as u64, size as usize)),
            reply
        );
        reply.data(&data);
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        let mut s = on_or_eio!(self, reply);
        if !s.next_op() {
            s.counters.refused += 1;
            return reply.error(libc::EIO);
        }
        let durable = s.handles.get(&fh).copied().unwrap_or(false);
        s.counters.writes += 1;
        let offset = offset.max(0) as u64;
        let file = try_reply!(s.file(ino), reply);
        if durable {
            try_reply!(file.write_durable(offset, data), reply);
            s.counters.durable_writes += 1;
        } else {
            try_reply!(file.write(offset, data), reply);
        }
        reply.written(data.len() as u32);
    }

    fn flush(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _lock: u64, reply: ReplyEmpty) {
        // close() makes nothing durable.
        let _s = on_or_eio!(self, reply);
        reply.ok();
    }

    fn release(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _flags: i32,
        _lock_owner: Option<u64>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        s.handles.remove(&fh);
        reply.ok();
    }

    fn fsync(&mut self, _req: &Request<'_>, ino: u64, fh: u64, _datasync: bool, reply: ReplyEmpty) {
        let mut s = on_or_eio!(self, reply);
        // The kernel follows every write through an O_DSYNC descriptor with an fsync of that
        // descriptor. Those writes were made durable when they arrived; syncing the whole file
        // here would make durable the other writes the program never synced.
        if s.handles.get(&fh).copied().unwrap_or(false) {
            return reply.ok();
        }
        if !s.next_op() {
            s.counters.refused += 1;
            return reply.error(libc::EIO);
        }
        try_reply!(s.file(ino).and_then(Pending::sync), reply);
        s.counters.syncs += 1;
        reply.ok();
    }

    fn opendir(&mut self, _req: &Request<'_>, _ino: u64, _flags: i32, reply: ReplyOpen) {
        let _s = on_or_eio!(self, reply);
        reply.opened(0, 0);
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        let mut s = on_or_eio!(self, reply);
        let rel = try_reply!(s.path(ino).map(Path::to_path_buf), reply);
        let entries = try_reply!(fs::read_dir(s.full(&rel)), reply);
        let mut all = vec![
            (ino, FileType::Directory, ".".into()),
            (ino, FileType::Directory, "..".into()),
        ];
        for entry in entries {
            let entry = try_reply!(entry, reply);
            let kind = match entry.file_type() {
                Ok(t) if t.is_dir() => FileType::Directory,
                Ok(t) if t.is_symlink() => FileType::Symlink,
                _ => FileType::RegularFile,
            };
            let child = s.ino_of(rel.join(entry.file_name()));
            all.push((child, kind, entry.file_name()));
        }
        for (i, (child, kind, name)) in all.into_iter().enumerate().skip(offset.max(0) as usize) {
            if reply.add(child, (i + 1) as i64, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _ds: bool, reply: ReplyEmpty) {
        // Directory entries reach the backing directory when they are made (see the crate docs).
        let _s = on_or_eio!(self, reply);
        reply.ok();
    }

    fn access(&mut self, _req: &Request<'_>, ino: u64, _mask: i32, reply: ReplyEmpty) {
        let s = on_or_eio!(self, reply);
        try_reply!(s.attr(ino), reply);
        reply.ok();
    }
}
