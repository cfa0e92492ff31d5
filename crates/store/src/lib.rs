//! The DataMesh node's durable local store: erasure-coded shards and
//! manifests as files, a redb index of what is stored, pins, aliases,
//! garbage collection, a capacity budget and a hot-chunk cache.
//!
//! The API is synchronous; the node calls it from `spawn_blocking`.
//! [`Store`] is `Clone + Send + Sync`.
//!
//! # On disk
//!
//! ```text
//! <dir>/
//! ├── FORMAT            "datamesh-store 1" — written first, atomically
//! ├── LOCK              flock'ed by the owning process; holds its pid
//! ├── index.redb        shards, manifests, pins, aliases (see `record`)
//! ├── shards/<hh>/<cid> one file per shard; hh = first digest byte in hex
//! ├── manifests/<hh>/<cid>
//! ├── state/<kind>/<key> the node's own records (see `state`), replaced atomically
//! ├── tmp/              files being written; emptied at open
//! └── quarantine/       corrupt files, kept for inspection
//! ```
//!
//! # Invariants
//!
//! **Architecture invariant:** an index entry never exists without its
//! complete, durable file. A put writes `tmp/x`, fsyncs it, renames it into
//! place, fsyncs each touched directory once per batch, and only then commits
//! the batch's entries in one redb transaction (`Durability::Immediate`,
//! two-phase commit). Deletes go the other way: entry first, then the file.
//!
//! **Architecture invariant:** a put that returned `Ok` survives kill -9 and
//! power loss; nothing half-written is ever listed. Open removes temp files,
//! removes files without an entry (a crash between rename and commit), drops
//! entries whose file is missing, and quarantines files of the wrong size.
//!
//! **Architecture invariant:** every read verifies the bytes against the CID.
//! A mismatch returns [`StoreError::Corrupt`], moves the file to
//! `quarantine/` and drops the entry so repair can rebuild it.
//!
//! Concurrency: puts run in parallel with each other and with reads; deletes,
//! quarantines and GC sweep batches exclude puts for their short commit (see
//! the `mutation` lock in `store.rs`). GC safety during uploads is the
//! [`UploadGuard`] protocol.
//!
//! Streaming: [`Store::shard_writer`] / [`Store::manifest_writer`] take an
//! object in pieces (a peer's upload goes to disk as it arrives) and commit
//! it the same way, only if it hashes to its CID; [`Store::shard_reader`] /
//! [`Store::manifest_reader`] read one in pieces, verified before the last
//! piece is handed out (see `stream.rs`).
//!
//! # Performance
//!
//! A durable put is bound by fsync latency. Within one `put_shards` batch
//! the files are written and fsynced on up to 4 threads, then the touched
//! directories are fsynced (once each) in parallel, then one index commit
//! (two fsyncs) covers the batch. Callers putting several batches at once
//! overlap further (`examples/put_bench.rs` measures it; on the ext4 VM
//! disk this was written on: ~190 MiB/s for one caller, ~350 MiB/s for two).
//! Reads take no write transaction: last-access times are noted in memory
//! and written back with the next commit (see [`Store::get_shard`]).
//!
//! # Failure handling
//!
//! A put fails before writing anything if it would exceed the capacity
//! budget; a real `ENOSPC` becomes [`StoreError::DiskFull`] and the batch's
//! files are removed. If an index commit fails its outcome is unknown until
//! the next open, which settles it from the disk. redb refuses further
//! writes after an I/O error on its file: the node should then drop the
//! `Store` and open it again.
//!
//! # Testing
//!
//! All file writes go through an internal `Io` trait. Unit tests replace it
//! with a simulated page cache that loses everything not yet fsynced at a
//! random operation (redb's file included), then check that recovery keeps
//! every acknowledged write. `tests/kill9.rs` kills a writer process with
//! SIGKILL in a loop and checks the same on the real file system.

// `StoreError` carries `Cid`s inline (~100 bytes: a multihash sized for 64-byte
// digests) because the node matches on `NotFound { cid }` / `Corrupt { cid }`.
// Errors are the cold path; boxing them would only complicate those matches.
#![allow(clippy::result_large_err)]
// Tests may unwrap: a panic is the failure report (STYLE.md).
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod cache;
mod error;
mod gc;
mod guard;
mod io;
pub mod record;
mod state;
mod store;
mod stream;

#[cfg(test)]
mod sim;
#[cfg(test)]
mod sim_tests;

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub use crate::error::StoreError;
pub use crate::gc::GcReport;
pub use crate::guard::UploadGuard;
pub use crate::io::write_file_atomically;
pub use crate::record::{RecordError, ShardRecord};
pub use crate::state::{
    MAX_STATE_NAME, MAX_STATE_VALUE, STATE_RECORD_VERSION, StateRecord, headroom as state_headroom,
};
pub use crate::store::{OpenReport, PinInfo, ScrubReport, ShardMeta, Store, StoreConfig, StoreStats};
pub use crate::stream::{ObjectReader, ObjectWriter};

/// The store format this build writes and the newest it opens.
pub const FORMAT_VERSION: u32 = 1;

/// Longest pin name accepted, in bytes.
pub const MAX_PIN_NAME: usize = 4096;

// The store's locks guard plain bookkeeping that every critical section
// leaves consistent, so a panic elsewhere does not make them unusable.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn read_lock<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn write_lock<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod api_tests {
    use super::*;

    fn assert_send_sync_clone<T: Send + Sync + Clone + 'static>() {}
    fn assert_send_sync<T: Send + Sync + 'static>() {}

    #[test]
    fn types_are_thread_safe() {
        assert_send_sync_clone::<Store>();
        assert_send_sync::<UploadGuard>();
        assert_send_sync::<StoreError>();
    }
}
