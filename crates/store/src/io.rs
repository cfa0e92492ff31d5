//! The small file-system interface every durable write goes through.
//!
//! The store never calls `std::fs` directly: it calls [`Io`], whose real
//! implementation is [`RealIo`]. Tests swap in a simulated page cache
//! (`crate::sim`) that records which operations were made durable and can
//! "lose power" at any operation, so the write protocol itself (temp file,
//! write, fsync, rename, fsync the directory) is what gets tested, not a copy
//! of it. The index database goes through the same interface
//! ([`Io::db_backend`]) so redb's writes are subject to the same crash.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::error::StoreError;

/// One entry of a directory listing.
#[derive(Debug, Clone)]
pub(crate) struct DirEntry {
    /// File name (lossily converted; the store only creates ASCII names).
    pub name: String,
    /// Full path.
    pub path: PathBuf,
    /// Whether it is a directory.
    pub is_dir: bool,
    /// Length in bytes (files only).
    pub len: u64,
}

/// A file being written.
pub(crate) trait IoFile: Send {
    /// Appends all of `data`.
    fn write_all(&mut self, data: &[u8]) -> io::Result<()>;
    /// fsync: data and size are durable when this returns.
    fn sync(&mut self) -> io::Result<()>;
}

/// A held data-dir lock; dropping it releases the lock.
pub(crate) trait HeldLock: Send + Sync {}

/// File-system operations the store needs. Every method may fail; a real
/// implementation passes errors through unchanged so `ENOSPC` can be seen.
pub(crate) trait Io: Send + Sync + 'static {
    /// Creates `dir` and its parents if missing.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Creates a directory; `Ok(false)` if it already existed.
    fn create_dir(&self, path: &Path) -> io::Result<bool>;
    /// Creates a new file that must not exist yet.
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn IoFile>>;
    /// [`Io::create_new`], readable by its owner only (mode 0600 on Unix)
    /// from the moment it exists: for secrets.
    fn create_private(&self, path: &Path) -> io::Result<Box<dyn IoFile>> {
        self.create_new(path)
    }
    /// Atomically replaces `to` with `from` (same file system).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// fsyncs a directory, making creations, renames and removals in it durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Removes an empty directory.
    fn remove_dir(&self, path: &Path) -> io::Result<()>;
    /// When a file was last modified, if the file system says.
    fn modified(&self, path: &Path) -> io::Result<Option<SystemTime>>;
    /// Reads at most `limit` bytes of a file.
    fn read(&self, path: &Path, limit: u64) -> io::Result<Vec<u8>>;
    /// Opens a file for reading in pieces.
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn Read + Send>>;
    /// Lists a directory.
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<DirEntry>>;
    /// The length of a file, or `None` if it does not exist.
    fn file_len(&self, path: &Path) -> io::Result<Option<u64>>;
    /// Opens an existing file as redb storage.
    fn db_backend(&self, path: &Path) -> io::Result<Box<dyn redb::StorageBackend>>;
    /// Takes the exclusive data-dir lock at `path`.
    fn lock(&self, dir: &Path, path: &Path) -> Result<Box<dyn HeldLock>, StoreError>;
}

/// The real file system.
#[derive(Debug, Default)]
pub(crate) struct RealIo;

struct RealFile(File);

impl IoFile for RealFile {
    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        self.0.write_all(data)
    }
    fn sync(&mut self) -> io::Result<()> {
        // sync_all rather than sync_data: for a fresh file the size and the
        // inode must be durable too, and fdatasync's saving is nil here.
        self.0.sync_all()
    }
}

struct LockFile(#[allow(dead_code)] File);
impl HeldLock for LockFile {}

impl Io for RealIo {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn create_dir(&self, path: &Path) -> io::Result<bool> {
        match fs::create_dir(path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn IoFile>> {
        let f = OpenOptions::new().write(true).create_new(true).open(path)?;
        Ok(Box::new(RealFile(f)))
    }

    fn create_private(&self, path: &Path) -> io::Result<Box<dyn IoFile>> {
        let mut o = OpenOptions::new();
        o.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(0o600);
        }
        Ok(Box::new(RealFile(o.open(path)?)))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir(path)
    }

    fn modified(&self, path: &Path) -> io::Result<Option<SystemTime>> {
        Ok(fs::symlink_metadata(path)?.modified().ok())
    }

    fn read(&self, path: &Path, limit: u64) -> io::Result<Vec<u8>> {
        let f = File::open(path)?;
        let len = f.metadata()?.len().min(limit);
        let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        f.take(limit).read_to_end(&mut out)?;
        Ok(out)
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(File::open(path)?))
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        let mut out = Vec::new();
        for e in fs::read_dir(dir)? {
            let e = e?;
            // symlink_metadata: never follow links planted in the data dir.
            let md = fs::symlink_metadata(e.path())?;
            out.push(DirEntry {
                name: e.file_name().to_string_lossy().into_owned(),
                path: e.path(),
                is_dir: md.is_dir(),
                len: md.len(),
            });
        }
        Ok(out)
    }

    fn file_len(&self, path: &Path) -> io::Result<Option<u64>> {
        match fs::metadata(path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn db_backend(&self, path: &Path) -> io::Result<Box<dyn redb::StorageBackend>> {
        let f = OpenOptions::new().read(true).write(true).open(path)?;
        let backend = redb::backends::FileBackend::new(f).map_err(io::Error::other)?;
        Ok(Box::new(backend))
    }

    fn lock(&self, dir: &Path, path: &Path) -> Result<Box<dyn HeldLock>, StoreError> {
        let io_err = |op, e| StoreError::Io { op, path: path.to_path_buf(), source: e };
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| io_err("open the lock file", e))?;
        match f.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                // The holder wrote its pid after locking; a racing read may
                // see an empty file, hence "unknown".
                let mut s = String::new();
                let _ = f.read_to_string(&mut s);
                let pid = s.trim();
                let pid = if pid.is_empty() { "unknown".to_string() } else { pid.to_string() };
                return Err(StoreError::InUse { dir: dir.to_path_buf(), pid });
            }
            Err(TryLockError::Error(e)) => return Err(io_err("lock", e)),
        }
        // The pid is informational only (for the InUse message); the flock,
        // which the kernel drops when the process dies, is the real lock.
        f.set_len(0).map_err(|e| io_err("write", e))?;
        f.seek(SeekFrom::Start(0)).map_err(|e| io_err("write", e))?;
        writeln!(f, "{}", std::process::id()).map_err(|e| io_err("write", e))?;
        Ok(Box::new(LockFile(f)))
    }
}

/// How far [`write_file`] goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Commit {
    /// Up to the rename: the caller fsyncs the directory, once for a batch.
    Renamed,
    /// Up to the fsync of the directory: durable when `write_file` returns.
    Durable,
}

/// The one atomic file write of the node and the store: `tmp` is created
/// (readable by its owner only if `private`), written, fsynced and renamed
/// over `dst`, so `dst` holds either its old contents or all of `data`,
/// never a mix; with [`Commit::Durable`] `dst`'s directory is fsynced too,
/// which makes the rename survive a crash. On failure no temp file is left
/// and the error names the step.
pub(crate) fn write_file(
    io: &dyn Io,
    (tmp, dst): (&Path, &Path),
    data: &[u8],
    private: bool,
    commit: Commit,
) -> Result<(), (&'static str, io::Error)> {
    let r = (|| {
        let mut f = if private { io.create_private(tmp) } else { io.create_new(tmp) }.map_err(|e| ("create", e))?;
        f.write_all(data).map_err(|e| ("write", e))?;
        f.sync().map_err(|e| ("fsync", e))?;
        drop(f);
        io.rename(tmp, dst).map_err(|e| ("rename", e))
    })();
    if r.is_err() {
        let _ = io.remove_file(tmp);
    }
    r?;
    if commit == Commit::Durable {
        let dir = match dst.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        io.sync_dir(dir).map_err(|e| ("fsync", e))?;
    }
    Ok(())
}

/// Writes a file outside any store durably and atomically (temp file
/// `<name>.tmp` beside it, fsync, rename, fsync of the directory): for the
/// node's own files in its data dir, such as its identity key. With
/// `private` the file is readable by its owner only (mode 0600 on Unix)
/// from the moment it exists. A leftover temp file of an earlier attempt is
/// replaced.
pub fn write_file_atomically(path: &Path, data: &[u8], private: bool) -> io::Result<()> {
    let name = path.file_name().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let mut tmp_name = name.to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    write_file(&RealIo, (&tmp, path), data, private, Commit::Durable).map_err(|(_, e)| e)
}
