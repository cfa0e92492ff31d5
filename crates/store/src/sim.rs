//! A simulated file system with a page cache that can lose power (tests only).
//!
//! Every file has *live* contents (what reads see) and *durable* contents
//! (what survived the last fsync), plus the log of page-sized writes made
//! since. Every directory has live and durable entry maps; `sync_dir` makes
//! the live map durable. That is the POSIX contract the store relies on:
//! file data is durable after fsync of the file, a creation/rename/removal
//! after fsync of its directory, and nothing else is promised.
//!
//! A shared [`Ctl`] counts operations (file-system and redb alike) and, from
//! a chosen index on, fails every operation: power is gone. [`SimFs::crash_image`]
//! then builds the disk a reboot would find, choosing adversarially
//! (by seeded coin flips) among everything the contract allows:
//! - per directory entry whose live and durable versions differ, either one
//!   (so an unsynced rename may be half done: the file in both dirs, or in
//!   neither);
//! - per file, its durable contents plus any subset of the unsynced page
//!   writes, applied in order (torn, reordered writeback).
//!
//! The redb index lives in the same simulated file system (through
//! [`crate::io::Io::db_backend`]), so it loses power at the same instant as
//! the shard files, with the same page-granular tearing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::StoreError;
use crate::io::{DirEntry, HeldLock, Io, IoFile};
use crate::lock;

/// Writeback granularity: a page either reaches the disk or does not.
const PAGE: usize = 4096;

/// SplitMix64: small, seedable, good enough to pick crash points.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub(crate) fn coin(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }

    pub(crate) fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

/// Operation counter, crash trigger and disk-space model, shared by a
/// file system and the redb backends opened on it.
#[derive(Debug)]
pub(crate) struct Ctl {
    ops: AtomicU64,
    crash_at: AtomicU64,
    crashed: AtomicBool,
    /// One operation that fails with EIO without crashing (`u64::MAX` = none).
    fail_at: AtomicU64,
    /// Bytes that file writes (not redb's) may still use; `None` = unlimited.
    space: Mutex<Option<u64>>,
}

impl Ctl {
    fn new() -> Self {
        Ctl {
            ops: AtomicU64::new(0),
            crash_at: AtomicU64::new(u64::MAX),
            crashed: AtomicBool::new(false),
            fail_at: AtomicU64::new(u64::MAX),
            space: Mutex::new(None),
        }
    }

    /// Fails every operation from the `n`th (counting from now) on.
    pub(crate) fn crash_after(&self, n: u64) {
        let now = self.ops.load(Ordering::SeqCst);
        self.crash_at.store(now.saturating_add(n), Ordering::SeqCst);
    }

    /// Makes the `n`th operation from now fail with EIO, once; the file
    /// system keeps working afterwards (a transient error, not a crash).
    pub(crate) fn fail_once_after(&self, n: u64) {
        let now = self.ops.load(Ordering::SeqCst);
        self.fail_at.store(now.saturating_add(n), Ordering::SeqCst);
    }

    /// Cancels a pending transient failure.
    pub(crate) fn disarm(&self) {
        self.fail_at.store(u64::MAX, Ordering::SeqCst);
    }

    /// Whether the transient failure has happened.
    pub(crate) fn failed(&self) -> bool {
        let at = self.fail_at.load(Ordering::SeqCst);
        at != u64::MAX && self.ops.load(Ordering::SeqCst) > at
    }

    pub(crate) fn ops(&self) -> u64 {
        self.ops.load(Ordering::SeqCst)
    }

    pub(crate) fn crashed(&self) -> bool {
        self.crashed.load(Ordering::SeqCst)
    }

    pub(crate) fn set_space(&self, bytes: Option<u64>) {
        *lock(&self.space) = bytes;
    }

    fn tick(&self) -> io::Result<()> {
        if self.crashed.load(Ordering::SeqCst) {
            return Err(power_lost());
        }
        let n = self.ops.fetch_add(1, Ordering::SeqCst);
        if n >= self.crash_at.load(Ordering::SeqCst) {
            self.crashed.store(true, Ordering::SeqCst);
            return Err(power_lost());
        }
        if n == self.fail_at.load(Ordering::SeqCst) {
            return Err(io::Error::other("injected I/O error"));
        }
        Ok(())
    }
}

fn power_lost() -> io::Error {
    io::Error::other("simulated power loss")
}

#[derive(Debug, Clone)]
enum Pending {
    Write { off: usize, data: Vec<u8> },
    SetLen(usize),
}

impl Pending {
    fn apply(&self, buf: &mut Vec<u8>) {
        match self {
            Pending::Write { off, data } => {
                if buf.len() < off + data.len() {
                    buf.resize(off + data.len(), 0);
                }
                buf[*off..off + data.len()].copy_from_slice(data);
            }
            Pending::SetLen(n) => buf.resize(*n, 0),
        }
    }
}

#[derive(Debug, Default)]
struct FileNode {
    live: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<Pending>,
}

impl FileNode {
    fn write(&mut self, off: usize, data: &[u8]) {
        Pending::Write { off, data: data.to_vec() }.apply(&mut self.live);
        // Split at page boundaries: each page is written back on its own.
        let mut at = 0;
        while at < data.len() {
            let page_end = ((off + at) / PAGE + 1) * PAGE;
            let n = (page_end - (off + at)).min(data.len() - at);
            self.pending.push(Pending::Write { off: off + at, data: data[at..at + n].to_vec() });
            at += n;
        }
    }

    fn sync(&mut self) {
        for p in self.pending.drain(..) {
            p.apply(&mut self.durable);
        }
        debug_assert_eq!(self.durable, self.live);
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    File(u64),
    Dir,
}

#[derive(Debug, Default, Clone)]
struct DirNode {
    live: BTreeMap<String, Entry>,
    durable: BTreeMap<String, Entry>,
}

#[derive(Debug, Default)]
struct State {
    files: HashMap<u64, FileNode>,
    dirs: HashMap<PathBuf, DirNode>,
    next_ino: u64,
}

/// The simulated file system. Clones share state.
#[derive(Debug, Clone)]
pub(crate) struct SimFs {
    st: Arc<Mutex<State>>,
    pub(crate) ctl: Arc<Ctl>,
    root: PathBuf,
}

fn split(p: &Path) -> io::Result<(PathBuf, String)> {
    match (p.parent(), p.file_name()) {
        (Some(d), Some(n)) => Ok((d.to_path_buf(), n.to_string_lossy().into_owned())),
        _ => Err(io::Error::new(io::ErrorKind::InvalidInput, "no parent")),
    }
}

fn not_found() -> io::Error {
    io::Error::from(io::ErrorKind::NotFound)
}

impl State {
    fn entry(&self, root: &Path, p: &Path) -> Option<Entry> {
        if p == root {
            return Some(Entry::Dir);
        }
        let (d, n) = split(p).ok()?;
        self.dirs.get(&d)?.live.get(&n).cloned()
    }

    fn file_mut(&mut self, root: &Path, p: &Path) -> io::Result<&mut FileNode> {
        match self.entry(root, p) {
            Some(Entry::File(ino)) => self.files.get_mut(&ino).ok_or_else(not_found),
            _ => Err(not_found()),
        }
    }
}

impl SimFs {
    /// An empty file system whose root is the directory `root`.
    pub(crate) fn new(root: &Path) -> Self {
        let mut st = State::default();
        st.dirs.insert(root.to_path_buf(), DirNode::default());
        SimFs { st: Arc::new(Mutex::new(st)), ctl: Arc::new(Ctl::new()), root: root.to_path_buf() }
    }

    /// The disk a reboot would find if power were cut now (see module docs).
    /// The new file system has a fresh, unarmed [`Ctl`].
    pub(crate) fn crash_image(&self, rng: &mut Rng) -> SimFs {
        let old = lock(&self.st);
        let mut new = State::default();
        rebuild(&old, &mut new, &self.root, rng);
        SimFs { st: Arc::new(Mutex::new(new)), ctl: Arc::new(Ctl::new()), root: self.root.clone() }
    }

    /// Names of the files directly in `dir` (live view).
    pub(crate) fn files_in(&self, dir: &Path) -> Vec<String> {
        let st = lock(&self.st);
        st.dirs
            .get(dir)
            .map(|d| d.live.iter().filter(|(_, e)| matches!(e, Entry::File(_))).map(|(n, _)| n.clone()).collect())
            .unwrap_or_default()
    }

    /// Paths of the files one level below `dir`'s subdirectories.
    pub(crate) fn files_below(&self, dir: &Path) -> BTreeSet<PathBuf> {
        let st = lock(&self.st);
        let mut out = BTreeSet::new();
        if let Some(d) = st.dirs.get(dir) {
            for (name, e) in &d.live {
                if *e == Entry::Dir {
                    let sub = dir.join(name);
                    if let Some(sd) = st.dirs.get(&sub) {
                        for (n, e) in &sd.live {
                            if matches!(e, Entry::File(_)) {
                                out.insert(sub.join(n));
                            }
                        }
                    }
                }
            }
        }
        out
    }
}

fn rebuild(old: &State, new: &mut State, path: &Path, rng: &mut Rng) {
    let empty = DirNode::default();
    let d = old.dirs.get(path).unwrap_or(&empty);
    let names: BTreeSet<&String> = d.live.keys().chain(d.durable.keys()).collect();
    let mut nd = DirNode::default();
    for name in names {
        let (l, du) = (d.live.get(name), d.durable.get(name));
        let chosen = if l == du || rng.coin() { l } else { du };
        match chosen {
            None => {}
            Some(Entry::File(ino)) => {
                let Some(f) = old.files.get(ino) else {
                    continue;
                };
                let mut content = f.durable.clone();
                for p in &f.pending {
                    if rng.coin() {
                        p.apply(&mut content);
                    }
                }
                new.next_ino += 1;
                let ino = new.next_ino;
                new.files.insert(ino, FileNode { live: content.clone(), durable: content, pending: Vec::new() });
                nd.live.insert(name.clone(), Entry::File(ino));
            }
            Some(Entry::Dir) => {
                nd.live.insert(name.clone(), Entry::Dir);
                rebuild(old, new, &path.join(name), rng);
            }
        }
    }
    nd.durable = nd.live.clone();
    new.dirs.insert(path.to_path_buf(), nd);
}

struct SimFile {
    fs: SimFs,
    ino: u64,
}

impl IoFile for SimFile {
    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        self.fs.ctl.tick()?;
        {
            let mut space = lock(&self.fs.ctl.space);
            if let Some(left) = space.as_mut() {
                if (data.len() as u64) > *left {
                    return Err(io::Error::from(io::ErrorKind::StorageFull));
                }
                *left -= data.len() as u64;
            }
        }
        let mut st = lock(&self.fs.st);
        let f = st.files.get_mut(&self.ino).ok_or_else(not_found)?;
        let off = f.live.len();
        f.write(off, data);
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.fs.ctl.tick()?;
        let mut st = lock(&self.fs.st);
        st.files.get_mut(&self.ino).ok_or_else(not_found)?.sync();
        Ok(())
    }
}

/// redb storage on a simulated file (an open file descriptor: it follows
/// the inode across renames).
#[derive(Debug)]
struct SimDb {
    fs: SimFs,
    ino: u64,
}

impl SimDb {
    fn with<T>(&self, f: impl FnOnce(&mut FileNode) -> io::Result<T>) -> io::Result<T> {
        self.fs.ctl.tick()?;
        let mut st = lock(&self.fs.st);
        f(st.files.get_mut(&self.ino).ok_or_else(not_found)?)
    }
}

impl redb::StorageBackend for SimDb {
    fn len(&self) -> io::Result<u64> {
        self.with(|f| Ok(f.live.len() as u64))
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.with(|f| {
            let off = usize::try_from(offset).map_err(io::Error::other)?;
            let src = f.live.get(off..off + out.len()).ok_or(io::ErrorKind::UnexpectedEof)?;
            out.copy_from_slice(src);
            Ok(())
        })
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.with(|f| {
            let len = usize::try_from(len).map_err(io::Error::other)?;
            Pending::SetLen(len).apply(&mut f.live);
            f.pending.push(Pending::SetLen(len));
            Ok(())
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        self.with(|f| {
            f.sync();
            Ok(())
        })
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.with(|f| {
            f.write(usize::try_from(offset).map_err(io::Error::other)?, data);
            Ok(())
        })
    }
}

struct NoLock;
impl HeldLock for NoLock {}

impl Io for SimFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.ctl.tick()?;
        let st = lock(&self.st);
        match st.entry(&self.root, dir) {
            Some(Entry::Dir) => Ok(()),
            _ => Err(io::Error::other("the simulated file system only has its root")),
        }
    }

    fn create_dir(&self, path: &Path) -> io::Result<bool> {
        self.ctl.tick()?;
        let mut st = lock(&self.st);
        match st.entry(&self.root, path) {
            Some(Entry::Dir) => return Ok(false),
            Some(Entry::File(_)) => return Err(io::ErrorKind::AlreadyExists.into()),
            None => {}
        }
        let (d, n) = split(path)?;
        st.dirs.get_mut(&d).ok_or_else(not_found)?.live.insert(n, Entry::Dir);
        st.dirs.insert(path.to_path_buf(), DirNode::default());
        Ok(true)
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn IoFile>> {
        self.ctl.tick()?;
        let mut st = lock(&self.st);
        if st.entry(&self.root, path).is_some() {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        let (d, n) = split(path)?;
        st.next_ino += 1;
        let ino = st.next_ino;
        st.dirs.get_mut(&d).ok_or_else(not_found)?.live.insert(n, Entry::File(ino));
        st.files.insert(ino, FileNode::default());
        Ok(Box::new(SimFile { fs: self.clone(), ino }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.ctl.tick()?;
        let mut st = lock(&self.st);
        let (fd, fname) = split(from)?;
        let (td, tname) = split(to)?;
        if !st.dirs.contains_key(&td) {
            return Err(not_found());
        }
        let e = st.dirs.get_mut(&fd).ok_or_else(not_found)?.live.remove(&fname).ok_or_else(not_found)?;
        st.dirs.get_mut(&td).ok_or_else(not_found)?.live.insert(tname, e);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.ctl.tick()?;
        let mut st = lock(&self.st);
        let d = st.dirs.get_mut(dir).ok_or_else(not_found)?;
        d.durable = d.live.clone();
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.ctl.tick()?;
        let mut st = lock(&self.st);
        let (d, n) = split(path)?;
        let dir = st.dirs.get_mut(&d).ok_or_else(not_found)?;
        match dir.live.get(&n) {
            Some(Entry::File(_)) => {
                dir.live.remove(&n);
                Ok(())
            }
            _ => Err(not_found()),
        }
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        self.ctl.tick()?;
        let mut st = lock(&self.st);
        if st.dirs.get(path).is_some_and(|d| !d.live.is_empty()) {
            return Err(io::Error::other("directory not empty"));
        }
        let (d, n) = split(path)?;
        let parent = st.dirs.get_mut(&d).ok_or_else(not_found)?;
        match parent.live.get(&n) {
            Some(Entry::Dir) => {
                parent.live.remove(&n);
                Ok(())
            }
            _ => Err(not_found()),
        }
    }

    fn modified(&self, path: &Path) -> io::Result<Option<std::time::SystemTime>> {
        self.ctl.tick()?;
        let mut st = lock(&self.st);
        st.file_mut(&self.root, path)?;
        Ok(None)
    }

    fn read(&self, path: &Path, limit: u64) -> io::Result<Vec<u8>> {
        self.ctl.tick()?;
        let mut st = lock(&self.st);
        let f = st.file_mut(&self.root, path)?;
        let n = f.live.len().min(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(f.live[..n].to_vec())
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn std::io::Read + Send>> {
        self.ctl.tick()?;
        let mut st = lock(&self.st);
        let f = st.file_mut(&self.root, path)?;
        Ok(Box::new(std::io::Cursor::new(f.live.clone())))
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        self.ctl.tick()?;
        let st = lock(&self.st);
        // A removed directory keeps its node (a crash may bring it back).
        if st.entry(&self.root, dir) != Some(Entry::Dir) {
            return Err(not_found());
        }
        let d = st.dirs.get(dir).ok_or_else(not_found)?;
        Ok(d.live
            .iter()
            .map(|(n, e)| DirEntry {
                name: n.clone(),
                path: dir.join(n),
                is_dir: *e == Entry::Dir,
                len: match e {
                    Entry::File(ino) => st.files.get(ino).map_or(0, |f| f.live.len() as u64),
                    Entry::Dir => 0,
                },
            })
            .collect())
    }

    fn file_len(&self, path: &Path) -> io::Result<Option<u64>> {
        self.ctl.tick()?;
        let mut st = lock(&self.st);
        match st.file_mut(&self.root, path) {
            Ok(f) => Ok(Some(f.live.len() as u64)),
            Err(_) => Ok(None),
        }
    }

    fn db_backend(&self, path: &Path) -> io::Result<Box<dyn redb::StorageBackend>> {
        self.ctl.tick()?;
        let st = lock(&self.st);
        match st.entry(&self.root, path) {
            Some(Entry::File(ino)) => Ok(Box::new(SimDb { fs: self.clone(), ino })),
            _ => Err(not_found()),
        }
    }

    fn lock(&self, _dir: &Path, _path: &Path) -> Result<Box<dyn HeldLock>, StoreError> {
        // One process: nothing to exclude.
        Ok(Box::new(NoLock))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The model itself: unsynced data and renames can vanish, synced ones cannot.
    #[test]
    fn crash_image_keeps_only_what_was_synced() {
        let root = Path::new("/r");
        let mut lost_file = 0;
        let mut lost_rename = 0;
        for seed in 0..64 {
            let fs = SimFs::new(root);
            fs.create_dir(&root.join("d")).unwrap();
            fs.sync_dir(root).unwrap();
            let mut f = fs.create_new(&root.join("a")).unwrap();
            f.write_all(&[1; 10_000]).unwrap();
            f.sync().unwrap();
            drop(f);
            fs.sync_dir(root).unwrap();
            let mut g = fs.create_new(&root.join("b")).unwrap();
            g.write_all(&[2; 10_000]).unwrap();
            drop(g);
            fs.rename(&root.join("a"), &root.join("d/a")).unwrap();

            let img = fs.crash_image(&mut Rng::new(seed));
            // "a" was synced: wherever it survives, it is whole.
            for p in [root.join("a"), root.join("d/a")] {
                if let Ok(b) = img.read(&p, u64::MAX) {
                    assert_eq!(b, vec![1; 10_000]);
                }
            }
            if img.read(&root.join("a"), 10).is_err() && img.read(&root.join("d/a"), 10).is_err() {
                lost_rename += 1;
            }
            // "b" was never synced: its directory entry may be gone, and its
            // contents may be any subset of its pages.
            match img.read(&root.join("b"), u64::MAX) {
                Ok(b) if b == vec![2; 10_000] => {}
                _ => lost_file += 1,
            }
        }
        assert!(lost_file > 0 && lost_rename > 0, "the model must actually lose things");
    }

    #[test]
    fn operations_fail_after_the_crash_point() {
        let fs = SimFs::new(Path::new("/r"));
        fs.ctl.crash_after(2);
        assert!(fs.create_dir(Path::new("/r/a")).is_ok());
        assert!(fs.create_dir(Path::new("/r/b")).is_ok());
        assert!(fs.create_dir(Path::new("/r/c")).is_err());
        assert!(fs.list_dir(Path::new("/r")).is_err());
        assert!(fs.ctl.crashed());
    }
}
