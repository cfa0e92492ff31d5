//! The store's error type. Each variant says what went wrong in terms of
//! the data dir and what the operator or the calling node can do about it.

use std::io;
use std::path::{Path, PathBuf};

use datamesh_core::Cid;

use crate::record::RecordError;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object is not in the index. For shards the node should fetch it
    /// from a peer or let repair rebuild it.
    #[error("{cid} is not stored on this node")]
    NotFound {
        /// The CID asked for.
        cid: Cid,
    },
    /// The bytes on disk do not hash to the CID (flipped bits, truncation,
    /// or the file vanished). The file was moved to `<dir>/quarantine/` and
    /// the index entry dropped, so repair can fetch or rebuild the object.
    /// For a put, the bytes offered do not match the CID and nothing was
    /// written.
    #[error(
        "{cid} is corrupt: its bytes do not match the CID; a bad stored copy is moved to \
         quarantine/ and dropped from the index so repair can fetch or rebuild it"
    )]
    Corrupt {
        /// The CID whose bytes are bad.
        cid: Cid,
    },
    /// The put would take the store over its capacity budget. Nothing was
    /// written.
    #[error(
        "storing {needed} more bytes would exceed the store's capacity budget ({available} bytes \
         left): unpin files and run GC, or raise the capacity"
    )]
    CapacityExceeded {
        /// Bytes the put needed.
        needed: u64,
        /// Bytes left in the budget.
        available: u64,
    },
    /// The disk itself ran out of space (ENOSPC or quota) before the budget
    /// did. No temp file is left behind.
    #[error(
        "the disk holding {dir} is full: free space on it, or lower the store's capacity budget \
         to what the disk can really hold"
    )]
    DiskFull {
        /// The data dir.
        dir: PathBuf,
        /// The error the OS gave.
        #[source]
        source: io::Error,
    },
    /// Another process holds the data dir's lock.
    #[error("data dir {dir} is in use by another datamesh node (pid {pid}); stop it or use another data dir")]
    InUse {
        /// The data dir.
        dir: PathBuf,
        /// The pid recorded in the lock file, or `unknown`.
        pid: String,
    },
    /// The data dir was written by a newer DataMesh.
    #[error(
        "data dir {dir} has store format {found}, newer than this build understands ({supported}): \
         upgrade datamesh or point it at another data dir"
    )]
    FormatTooNew {
        /// The data dir.
        dir: PathBuf,
        /// Format version found in `FORMAT`.
        found: u32,
        /// Newest format this build reads.
        supported: u32,
    },
    /// The directory is not (and cannot become) a DataMesh data dir.
    #[error("{dir} is not a datamesh data dir: {reason}; choose an empty directory or an existing data dir")]
    NotAStore {
        /// The directory given.
        dir: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A file system operation failed for a reason other than a full disk.
    #[error("could not {op} {path}: {source}; check the data dir's permissions and the disk's health")]
    Io {
        /// What the store was doing ("write", "rename", ...).
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The index database (redb) failed.
    #[error(
        "the store index failed while {context}: {source}; restart the node (opening the store \
         repairs the index after a crash); if it persists, check the disk"
    )]
    Index {
        /// What the store was doing.
        context: &'static str,
        /// redb's error.
        #[source]
        source: Box<redb::Error>,
    },
    /// An index record does not decode.
    #[error("index record for {key} is unreadable ({source}); run a scrub or re-fetch the object")]
    BadRecord {
        /// The record's key, as text.
        key: String,
        /// Why it does not decode.
        #[source]
        source: RecordError,
    },
    /// The object is larger than any valid shard or manifest.
    #[error("{cid} is {size} bytes, more than the {max} a {what} may be; this is not valid DataMesh data")]
    TooLarge {
        /// The CID.
        cid: Cid,
        /// Its size.
        size: u64,
        /// The limit.
        max: u64,
        /// "shard" or "manifest".
        what: &'static str,
    },
    /// A state record's kind or key is not a plain file name, or its value
    /// is too large (see [`crate::MAX_STATE_VALUE`]).
    #[error("state record {kind}/{key} cannot be stored: {reason}")]
    BadState {
        /// The record's kind.
        kind: String,
        /// The record's key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A pin name longer than [`crate::MAX_PIN_NAME`] bytes.
    #[error("pin name is {len} bytes; shorten it to at most {max}")]
    PinNameTooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// Whether an IO error means the disk (or the user's quota) is full.
pub(crate) fn is_disk_full(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded)
        // ENOSPC / EDQUOT on Linux, in case the kind mapping ever changes.
        || matches!(e.raw_os_error(), Some(28) | Some(122))
}

/// Maps an IO error on `path` to `DiskFull` or `Io`.
pub(crate) fn io_error(dir: &Path, op: &'static str, path: &Path, e: io::Error) -> StoreError {
    if is_disk_full(&e) {
        StoreError::DiskFull { dir: dir.to_path_buf(), source: e }
    } else {
        StoreError::Io { op, path: path.to_path_buf(), source: e }
    }
}

/// Maps any redb error to `Index`, except a full disk, which becomes `DiskFull`.
pub(crate) fn index_error(dir: &Path, context: &'static str, e: impl Into<redb::Error>) -> StoreError {
    match e.into() {
        redb::Error::Io(io) if is_disk_full(&io) => StoreError::DiskFull { dir: dir.to_path_buf(), source: io },
        other => StoreError::Index { context, source: Box::new(other) },
    }
}
