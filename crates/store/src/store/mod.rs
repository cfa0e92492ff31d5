//! [`Store`]: shard and manifest files, the redb index, pins, aliases,
//! capacity accounting and the open-time recovery.
//!
//! See the crate docs for the on-disk layout and the invariants. Opening and
//! recovery are in `recovery.rs`, object files and their index rows in
//! `objects.rs`, the index database's plumbing in `backend.rs`; GC lives in
//! `gc.rs`.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use datamesh_core::{Cid, limits};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::cache::{ChunkCache, new_cache};
use crate::error::{StoreError, index_error, io_error};
use crate::guard::{GuardSet, UploadGuard};
use crate::io::{Commit, HeldLock, Io, RealIo, write_file};
use crate::record::{ManifestRecord, RecordError, ShardRecord};
use crate::state::STATE_STRIPES;
use crate::{FORMAT_VERSION, MAX_PIN_NAME, lock, read_lock, write_lock};

mod backend;
mod objects;
mod recovery;

pub(crate) use self::backend::begin_write;
#[allow(clippy::wildcard_imports)]
use self::backend::*;
use self::objects::{bad_record, decode_key};

type Result<T> = std::result::Result<T, StoreError>;

/// Name of the format version file.
pub(crate) const FORMAT_FILE: &str = "FORMAT";
/// Name of the lock file.
pub(crate) const LOCK_FILE: &str = "LOCK";
/// Name of the index database.
pub(crate) const INDEX_FILE: &str = "index.redb";
/// Shard files live under here.
pub(crate) const SHARDS_DIR: &str = "shards";
/// Manifest files live under here.
pub(crate) const MANIFESTS_DIR: &str = "manifests";
/// Files being written live here until renamed into place.
pub(crate) const TMP_DIR: &str = "tmp";
/// Corrupt files are moved here for inspection.
pub(crate) const QUARANTINE_DIR: &str = "quarantine";
/// The node's own state records live under here (see `state.rs`).
pub(crate) const STATE_DIR: &str = "state";

/// Shard CID bytes → [`ShardRecord`] encoding.
pub(crate) const SHARDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("shards");
/// Manifest CID bytes → [`ManifestRecord`] encoding.
pub(crate) const MANIFESTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("manifests");
/// Manifest CID bytes → [`PinInfo`] encoding.
pub(crate) const PINS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("pins");
/// Public (UnixFS) CID bytes → manifest CID bytes.
pub(crate) const ALIASES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("aliases");

/// redb's page cache. The index holds ~100 bytes per shard, so this keeps
/// the hot part of a multi-million-shard index in memory.
const INDEX_CACHE_BYTES: usize = 64 << 20;
/// Read access times are written back only when they are at least this
/// stale (see [`Store::get_shard`]).
const ACCESS_INTERVAL_SECS: u64 = 3600;
/// Pending access-time updates that trigger a write-back from the read path.
const ACCESS_FLUSH_THRESHOLD: usize = 4096;

/// Store settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreConfig {
    /// Most bytes of shards plus manifests the store will hold. Puts that
    /// would exceed it fail with [`StoreError::CapacityExceeded`].
    /// Default 100 GiB. Set it below the disk's free space: the index,
    /// quarantine and file-system overhead are not counted.
    pub capacity_bytes: u64,
    /// Memory for the hot-chunk cache, in bytes; 0 disables it. Default 32 MiB.
    pub cache_bytes: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { capacity_bytes: 100 << 30, cache_bytes: 32 << 20 }
    }
}

/// What `open` found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Shard or manifest files with no index entry (a crash between the
    /// file's rename and the index commit), removed.
    pub orphans_removed: usize,
    /// Index entries whose file was missing, or whose record did not decode, dropped.
    pub missing_dropped: usize,
    /// Leftover temp files removed.
    pub temp_removed: usize,
    /// Files whose size did not match their index entry: moved to
    /// quarantine and their entries dropped.
    pub corrupt_quarantined: usize,
}

/// Where a shard belongs: which stored chunk, and its position among the
/// chunk's k+m shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardMeta {
    /// CID of the stored chunk.
    pub chunk: Cid,
    /// Shard index within the chunk.
    pub index: u16,
}

/// A pin: a file the node keeps.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PinInfo {
    /// A human name, e.g. the uploaded file name.
    pub name: Option<String>,
    /// The file's size in bytes.
    pub size: u64,
    /// When it was pinned (unix seconds).
    pub created_at: u64,
    /// Kept for the network (a holder's copy of another node's file), not
    /// by a user of this node: dropped when the file's lease lapses or its
    /// owner's tombstone arrives. A user pin wins over a replica pin.
    pub replica: bool,
}

/// Counts and sizes of what is stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StoreStats {
    /// Shards stored.
    pub shards: u64,
    /// Bytes of shards stored.
    pub shard_bytes: u64,
    /// Manifests stored.
    pub manifests: u64,
    /// Pins.
    pub pins: u64,
    /// The capacity budget.
    pub capacity_bytes: u64,
    /// Bytes counted against the budget: shards, manifests and state
    /// records.
    pub used_bytes: u64,
    /// Bytes of manifests stored.
    pub manifest_bytes: u64,
    /// The node's own state records (location records, tombstones, leases,
    /// reputations).
    pub state_records: u64,
    /// Their bytes on disk.
    pub state_bytes: u64,
}

/// What a scrub found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ScrubReport {
    /// Objects read and verified.
    pub checked: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Objects found corrupt (now quarantined and dropped from the index).
    pub corrupt: Vec<Cid>,
}

/// Shards or manifests: the two kinds of content-addressed file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Shard,
    Manifest,
}

impl Kind {
    pub(crate) const ALL: [Kind; 2] = [Kind::Shard, Kind::Manifest];

    pub(crate) fn dir(self) -> &'static str {
        match self {
            Kind::Shard => SHARDS_DIR,
            Kind::Manifest => MANIFESTS_DIR,
        }
    }

    pub(crate) fn table(self) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
        match self {
            Kind::Shard => SHARDS,
            Kind::Manifest => MANIFESTS,
        }
    }

    pub(crate) fn what(self) -> &'static str {
        match self {
            Kind::Shard => "shard",
            Kind::Manifest => "manifest",
        }
    }

    pub(crate) fn max_size(self) -> u64 {
        match self {
            // A shard is at most a whole stored chunk (k = 1).
            Kind::Shard => limits::MAX_STORED_CHUNK_SIZE as u64,
            Kind::Manifest => limits::MAX_MANIFEST_SIZE as u64,
        }
    }

    /// The object size recorded in an index value.
    pub(crate) fn record_size(self, value: &[u8]) -> std::result::Result<u64, RecordError> {
        match self {
            Kind::Shard => ShardRecord::decode(value).map(|r| r.size),
            Kind::Manifest => ManifestRecord::decode(value).map(|r| r.size),
        }
    }
}

/// Committed and reserved bytes, kept in memory (rebuilt from the index at
/// open) so capacity checks and stats need no index scan.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Usage {
    pub shards: u64,
    pub shard_bytes: u64,
    pub manifests: u64,
    pub manifest_bytes: u64,
    /// State records (`state.rs`): counted like objects, so peers cannot
    /// fill a node's disk with records it does not budget for.
    pub state_records: u64,
    pub state_bytes: u64,
    /// Bytes of puts in progress, counted so concurrent puts cannot
    /// together overshoot the budget.
    pub reserved: u64,
}

impl Usage {
    pub(crate) fn used(&self) -> u64 {
        self.shard_bytes + self.manifest_bytes + self.state_bytes
    }

    pub(crate) fn add(&mut self, kind: Kind, count: u64, bytes: u64) {
        match kind {
            Kind::Shard => {
                self.shards += count;
                self.shard_bytes += bytes;
            }
            Kind::Manifest => {
                self.manifests += count;
                self.manifest_bytes += bytes;
            }
        }
    }

    pub(crate) fn sub(&mut self, kind: Kind, count: u64, bytes: u64) {
        match kind {
            Kind::Shard => {
                self.shards = self.shards.saturating_sub(count);
                self.shard_bytes = self.shard_bytes.saturating_sub(bytes);
            }
            Kind::Manifest => {
                self.manifests = self.manifests.saturating_sub(count);
                self.manifest_bytes = self.manifest_bytes.saturating_sub(bytes);
            }
        }
    }
}

/// Test-only knobs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Options {
    pub access_interval_secs: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options { access_interval_secs: ACCESS_INTERVAL_SECS }
    }
}

pub(crate) struct Inner {
    pub(crate) dir: PathBuf,
    pub(crate) cfg: StoreConfig,
    pub(crate) io: Arc<dyn Io>,
    // Declared before `_lock` so the index is closed before the lock is released.
    pub(crate) db: Database,
    /// Puts, pins and access-time flushes hold this for reading; deletes,
    /// quarantines and GC sweeps hold it for writing. That orders "write file
    /// then commit entry" against "remove entry then remove file" for the same
    /// CID, which is what keeps an index entry from outliving its file.
    pub(crate) mutation: RwLock<()>,
    /// CIDs whose files are being written, with the number of writers.
    pub(crate) inflight: Mutex<HashMap<Cid, usize>>,
    pub(crate) usage: Mutex<Usage>,
    pub(crate) guards: Arc<GuardSet>,
    /// Bumped by every pin (under `mutation`), so a GC sweep can tell its
    /// mark is stale.
    pub(crate) pin_epoch: AtomicU64,
    /// One GC at a time.
    pub(crate) gc_lock: Mutex<()>,
    /// Set once an index commit failed: its outcome is unknown until the
    /// next open, so no file that it may reference is removed before then.
    commit_failed: AtomicBool,
    pub(crate) pending_access: Mutex<HashMap<Cid, u64>>,
    /// Kinds of state record whose directory exists durably (see `state.rs`).
    pub(crate) state_dirs: Mutex<HashSet<String>>,
    /// Writers of one state record take its stripe, so the size a write
    /// replaces is the size it counts (see `state.rs`).
    pub(crate) state_stripes: [Mutex<()>; STATE_STRIPES],
    access_interval: u64,
    cache: Option<ChunkCache>,
    seq: AtomicU64,
    _lock: Box<dyn HeldLock>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Best effort: losing access times costs only LRU precision.
        let _ = flush_access(self, Durability::Immediate);
    }
}

/// The node's durable local store. Cheap to clone; `Send + Sync`. All
/// methods block on disk IO: call them from `spawn_blocking`.
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.inner.dir).field("cfg", &self.inner.cfg).finish()
    }
}

pub(crate) fn now() -> u64 {
    datamesh_core::clock::unix_secs()
}

/// `<dir>/<shards|manifests>/<first digest byte, hex>/<cid>`.
pub(crate) fn object_path(dir: &Path, kind: Kind, cid: &Cid) -> PathBuf {
    let prefix = format!("{:02x}", cid.digest()[0]);
    dir.join(kind.dir()).join(prefix).join(cid.to_string())
}

/// Releases its bytes from `Usage::reserved` when dropped.
struct Reservation<'a> {
    usage: &'a Mutex<Usage>,
    bytes: u64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut u = lock(self.usage);
        u.reserved = u.reserved.saturating_sub(self.bytes);
    }
}

/// Registration in `Inner::inflight`, undone when dropped.
pub(crate) struct Inflight<'a> {
    map: &'a Mutex<HashMap<Cid, usize>>,
    cids: Vec<Cid>,
}

impl Drop for Inflight<'_> {
    fn drop(&mut self) {
        let mut m = lock(self.map);
        for c in &self.cids {
            if let Some(n) = m.get_mut(c) {
                *n -= 1;
                if *n == 0 {
                    m.remove(c);
                }
            }
        }
    }
}

/// Lets `Database::create_with_backend` take a boxed backend.
impl Store {
    /// The data dir.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The configuration the store was opened with.
    pub fn config(&self) -> StoreConfig {
        self.inner.cfg
    }

    /// Writes several shards durably, then indexes them in one redb
    /// transaction.
    ///
    /// Each shard is verified against its CID first ([`StoreError::Corrupt`]
    /// if not, nothing written). Shards already indexed are not rewritten.
    /// The capacity check happens before anything is written. Each file is
    /// written to `tmp/`, fsynced and renamed into place; each touched
    /// directory is fsynced once; then one commit indexes the whole batch.
    /// When this returns `Ok`, every shard survives a crash.
    ///
    /// With a guard, every CID is added to it first (see [`UploadGuard`]);
    /// without one, a shard no pin references may be collected by the next GC.
    pub fn put_shards(&self, shards: &[(Cid, &[u8], ShardMeta)], guard: Option<&UploadGuard>) -> Result<()> {
        let items: Vec<(Cid, &[u8], Option<ShardMeta>)> = shards.iter().map(|(c, d, m)| (*c, *d, Some(*m))).collect();
        self.put_objects(Kind::Shard, &items, guard)
    }

    /// Reads a shard, verifying it against its CID.
    ///
    /// A missing or bad file gives [`StoreError::Corrupt`]: the file is moved
    /// to quarantine and the entry dropped, so the next read says `NotFound`
    /// and repair can rebuild it.
    pub fn get_shard(&self, cid: &Cid) -> Result<Vec<u8>> {
        // Access times are not written here: a write transaction (and its
        // fsyncs) per read would make reads as slow as writes. A read only
        // notes the time in memory, and only when the stored time is older
        // than ACCESS_INTERVAL_SECS; the notes are written back with the next
        // put's commit, by `flush`, on drop, or (non-durably) once 4096 pile up.
        self.get_object(Kind::Shard, cid)
    }

    /// Whether the shard is indexed (does not read the file).
    pub fn has_shard(&self, cid: &Cid) -> Result<bool> {
        Ok(self.lookup(Kind::Shard, cid)?.is_some())
    }

    /// Removes a shard. `Ok(false)` if it was not stored.
    pub fn delete_shard(&self, cid: &Cid) -> Result<bool> {
        self.delete_object(Kind::Shard, cid)
    }

    /// Stores a manifest durably, verifying `bytes` against `cid`. Idempotent.
    /// Add the CID to an [`UploadGuard`] first if GC must not take it before
    /// it is pinned.
    pub fn put_manifest(&self, cid: &Cid, bytes: &[u8]) -> Result<()> {
        self.put_objects(Kind::Manifest, &[(*cid, bytes, None)], None)
    }

    /// Reads a manifest, verifying it against its CID (see [`Store::get_shard`]).
    pub fn get_manifest(&self, cid: &Cid) -> Result<Vec<u8>> {
        self.get_object(Kind::Manifest, cid)
    }

    /// Whether the manifest is indexed.
    pub fn has_manifest(&self, cid: &Cid) -> Result<bool> {
        Ok(self.lookup(Kind::Manifest, cid)?.is_some())
    }

    /// Pins a manifest CID (replacing the info of an existing pin). Durable
    /// when it returns. The manifest need not be stored yet, but while a
    /// pinned manifest is missing GC sweeps no shards (it cannot tell which
    /// are live).
    pub fn pin(&self, cid: &Cid, info: PinInfo) -> Result<()> {
        if let Some(n) = &info.name
            && n.len() > MAX_PIN_NAME
        {
            return Err(StoreError::PinNameTooLong { len: n.len(), max: MAX_PIN_NAME });
        }
        let inner = &*self.inner;
        let ix = |e: redb::Error| index_error(&inner.dir, "pinning", e);
        // Read-locked across commit and epoch bump: a GC sweep (write-locked)
        // sees either neither or both, so it never sweeps with a mark that
        // misses a committed pin.
        let _m = read_lock(&inner.mutation);
        let txn = begin_write(&inner.dir, &inner.db)?;
        {
            let mut t = txn.open_table(PINS).map_err(|e| ix(e.into()))?;
            t.insert(cid.to_bytes().as_slice(), info.encode().as_slice()).map_err(|e| ix(e.into()))?;
        }
        txn.commit().map_err(|e| ix(e.into()))?;
        inner.pin_epoch.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Unpins. `Ok(false)` if it was not pinned. The data stays until GC.
    pub fn unpin(&self, cid: &Cid) -> Result<bool> {
        let inner = &*self.inner;
        let ix = |e: redb::Error| index_error(&inner.dir, "unpinning", e);
        let txn = begin_write(&inner.dir, &inner.db)?;
        let existed = {
            let mut t = txn.open_table(PINS).map_err(|e| ix(e.into()))?;
            t.remove(cid.to_bytes().as_slice()).map_err(|e| ix(e.into()))?.is_some()
        };
        txn.commit().map_err(|e| ix(e.into()))?;
        Ok(existed)
    }

    /// All pins.
    pub fn pins(&self) -> Result<Vec<(Cid, PinInfo)>> {
        let inner = &*self.inner;
        let ix = |e: redb::Error| index_error(&inner.dir, "listing pins", e);
        let txn = inner.db.begin_read().map_err(|e| ix(e.into()))?;
        let t = txn.open_table(PINS).map_err(|e| ix(e.into()))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| ix(e.into()))? {
            let (k, v) = row.map_err(|e| ix(e.into()))?;
            let cid = decode_key(k.value())?;
            let info = PinInfo::decode(v.value()).map_err(|e| bad_record(&cid, e))?;
            out.push((cid, info));
        }
        Ok(out)
    }

    /// The pin's info, if pinned.
    pub fn pin_info(&self, cid: &Cid) -> Result<Option<PinInfo>> {
        let inner = &*self.inner;
        let ix = |e: redb::Error| index_error(&inner.dir, "reading a pin", e);
        let txn = inner.db.begin_read().map_err(|e| ix(e.into()))?;
        let t = txn.open_table(PINS).map_err(|e| ix(e.into()))?;
        match t.get(cid.to_bytes().as_slice()).map_err(|e| ix(e.into()))? {
            None => Ok(None),
            Some(v) => Ok(Some(PinInfo::decode(v.value()).map_err(|e| bad_record(cid, e))?)),
        }
    }

    /// Records that the public CID `from` (UnixFS) is the file of manifest
    /// `to`. Durable when it returns. GC drops aliases whose manifest it removes.
    pub fn set_alias(&self, from: &Cid, to: &Cid) -> Result<()> {
        let inner = &*self.inner;
        let ix = |e: redb::Error| index_error(&inner.dir, "setting an alias", e);
        let txn = begin_write(&inner.dir, &inner.db)?;
        {
            let mut t = txn.open_table(ALIASES).map_err(|e| ix(e.into()))?;
            t.insert(from.to_bytes().as_slice(), to.to_bytes().as_slice()).map_err(|e| ix(e.into()))?;
        }
        txn.commit().map_err(|e| ix(e.into()))
    }

    /// The manifest CID a public CID stands for.
    pub fn resolve_alias(&self, from: &Cid) -> Result<Option<Cid>> {
        let inner = &*self.inner;
        let ix = |e: redb::Error| index_error(&inner.dir, "resolving an alias", e);
        let txn = inner.db.begin_read().map_err(|e| ix(e.into()))?;
        let t = txn.open_table(ALIASES).map_err(|e| ix(e.into()))?;
        match t.get(from.to_bytes().as_slice()).map_err(|e| ix(e.into()))? {
            None => Ok(None),
            Some(v) => {
                Ok(Some(Cid::from_bytes(v.value()).map_err(|e| bad_record(from, RecordError::BadCid(e.to_string())))?))
            }
        }
    }

    /// A new, empty upload guard (see [`UploadGuard`] for the protocol).
    pub fn protect(&self) -> UploadGuard {
        UploadGuard::new(self.inner.guards.clone())
    }

    /// Counts and sizes.
    pub fn stats(&self) -> Result<StoreStats> {
        let inner = &*self.inner;
        let u = *lock(&inner.usage);
        let ix = |e: redb::Error| index_error(&inner.dir, "counting pins", e);
        let txn = inner.db.begin_read().map_err(|e| ix(e.into()))?;
        let pins = txn.open_table(PINS).map_err(|e| ix(e.into()))?.len().map_err(|e| ix(e.into()))?;
        Ok(StoreStats {
            shards: u.shards,
            shard_bytes: u.shard_bytes,
            manifests: u.manifests,
            pins,
            capacity_bytes: inner.cfg.capacity_bytes,
            used_bytes: u.used(),
            manifest_bytes: u.manifest_bytes,
            state_records: u.state_records,
            state_bytes: u.state_bytes,
        })
    }

    /// The index record of a shard.
    pub fn shard_record(&self, cid: &Cid) -> Result<Option<ShardRecord>> {
        Ok(self.lookup(Kind::Shard, cid)?.and_then(|(_, r)| r))
    }

    /// All stored shard CIDs (e.g. to announce them).
    pub fn list_shards(&self) -> Result<Vec<Cid>> {
        self.list(Kind::Shard)
    }

    /// All stored manifest CIDs.
    pub fn list_manifests(&self) -> Result<Vec<Cid>> {
        self.list(Kind::Manifest)
    }

    /// A cached chunk.
    pub fn cache_get(&self, cid: &Cid) -> Option<bytes::Bytes> {
        self.inner.cache.as_ref()?.get(cid)
    }

    /// Caches a chunk; evicts colder ones beyond `cache_bytes`. A chunk larger
    /// than the cache is not cached.
    pub fn cache_put(&self, cid: Cid, data: bytes::Bytes) {
        if let Some(c) = &self.inner.cache {
            c.insert(cid, data);
        }
    }

    /// Bytes currently held by the chunk cache.
    pub fn cache_bytes_used(&self) -> u64 {
        self.inner.cache.as_ref().map_or(0, |c| c.weight())
    }

    /// Writes pending read-access times to the index durably.
    pub fn flush(&self) -> Result<()> {
        flush_access(&self.inner, Durability::Immediate)
    }

    /// Reads and verifies every stored shard and manifest. Corrupt ones are
    /// quarantined and dropped from the index (listed in the report) so
    /// repair can rebuild them.
    pub fn scrub(&self) -> Result<ScrubReport> {
        self.scrub_paced(0)
    }

    /// [`Self::scrub`], reading at most `bytes_per_sec` on average (0:
    /// unpaced) so a scheduled scrub does not starve user reads. Blocks the
    /// calling thread for the pauses: run it on a blocking thread.
    pub fn scrub_paced(&self, bytes_per_sec: u64) -> Result<ScrubReport> {
        let mut report = ScrubReport::default();
        let start = std::time::Instant::now();
        for kind in Kind::ALL {
            for cid in self.list(kind)? {
                match self.get_object(kind, &cid) {
                    Ok(b) => {
                        report.checked += 1;
                        report.bytes += b.len() as u64;
                        if bytes_per_sec > 0 {
                            let due = Duration::from_secs_f64(report.bytes as f64 / bytes_per_sec as f64);
                            std::thread::sleep(due.saturating_sub(start.elapsed()));
                        }
                    }
                    Err(StoreError::Corrupt { cid }) => {
                        report.checked += 1;
                        report.corrupt.push(cid);
                    }
                    // Deleted since the listing.
                    Err(StoreError::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(report)
    }
}
