//! [`Store`]: shard and manifest files, the redb index, pins, aliases,
//! capacity accounting and the open-time recovery.
//!
//! See the crate docs for the on-disk layout and the invariants; GC lives in
//! `gc.rs`.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use datamesh_core::{Cid, limits};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::cache::{ChunkCache, new_cache};
use crate::error::{StoreError, index_error, io_error};
use crate::guard::{GuardSet, UploadGuard};
use crate::io::{Commit, HeldLock, Io, RealIo, write_file};
use crate::record::{ManifestRecord, RecordError, ShardRecord};
use crate::{FORMAT_VERSION, MAX_PIN_NAME, lock, read_lock, write_lock};

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
    /// Bytes counted against the budget: shards plus manifests.
    pub used_bytes: u64,
    /// Bytes of manifests stored.
    pub manifest_bytes: u64,
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
    /// Bytes of puts in progress, counted so concurrent puts cannot
    /// together overshoot the budget.
    pub reserved: u64,
}

impl Usage {
    fn used(&self) -> u64 {
        self.shard_bytes + self.manifest_bytes
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
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
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
#[derive(Debug)]
struct DynBackend(Box<dyn redb::StorageBackend>);

impl redb::StorageBackend for DynBackend {
    fn len(&self) -> std::result::Result<u64, io::Error> {
        self.0.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> std::result::Result<(), io::Error> {
        self.0.read(offset, out)
    }
    fn set_len(&self, len: u64) -> std::result::Result<(), io::Error> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> std::result::Result<(), io::Error> {
        self.0.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::result::Result<(), io::Error> {
        self.0.write(offset, data)
    }
    fn close(&self) -> std::result::Result<(), io::Error> {
        self.0.close()
    }
    fn try_lock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> std::result::Result<bool, redb::BackendError> {
        self.0.try_lock_range(start, end)
    }
    fn try_lock_shared_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> std::result::Result<bool, redb::BackendError> {
        self.0.try_lock_shared_range(start, end)
    }
    fn lock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> std::result::Result<(), redb::BackendError> {
        self.0.lock_range(start, end)
    }
    fn lock_shared_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> std::result::Result<(), redb::BackendError> {
        self.0.lock_shared_range(start, end)
    }
    fn unlock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> std::result::Result<(), redb::BackendError> {
        self.0.unlock_range(start, end)
    }
    fn query_lock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> std::result::Result<bool, redb::BackendError> {
        self.0.query_lock_range(start, end)
    }
}

/// Starts a write transaction that is durable when `commit` returns.
pub(crate) fn begin_write(dir: &Path, db: &Database) -> Result<redb::WriteTransaction> {
    let mut txn = db.begin_write().map_err(|e| index_error(dir, "starting a write", e))?;
    // Durability::Immediate is the default. Two-phase commit costs one more
    // fsync per commit (we commit once per batch) and makes recovery sound
    // even if the disk reorders the unsynced writes of a commit, which is
    // the failure our crash tests inject.
    txn.set_two_phase_commit(true);
    Ok(txn)
}

fn flush_access(inner: &Inner, durability: Durability) -> Result<()> {
    let pending = std::mem::take(&mut *lock(&inner.pending_access));
    if pending.is_empty() {
        return Ok(());
    }
    let dir = &inner.dir;
    let mut txn = begin_write(dir, &inner.db)?;
    txn.set_durability(durability).map_err(|e| index_error(dir, "recording access times", e))?;
    apply_access(dir, &txn, &pending)?;
    txn.commit().map_err(|e| index_error(dir, "recording access times", e))
}

fn apply_access(dir: &Path, txn: &redb::WriteTransaction, pending: &HashMap<Cid, u64>) -> Result<()> {
    let ix = |e: redb::StorageError| index_error(dir, "recording access times", e);
    let mut t = txn.open_table(SHARDS).map_err(|e| index_error(dir, "recording access times", e))?;
    for (cid, at) in pending {
        let key = cid.to_bytes();
        let rec = match t.get(key.as_slice()).map_err(ix)? {
            // Only existing records: a shard deleted since the read stays deleted.
            Some(v) => ShardRecord::decode(v.value()).ok(),
            None => None,
        };
        if let Some(mut rec) = rec {
            rec.last_access = rec.last_access.max(*at);
            // Every read verifies the bytes, so a read is also a verification.
            rec.verified_at = rec.verified_at.max(*at);
            t.insert(key.as_slice(), rec.encode().as_slice()).map_err(ix)?;
        }
    }
    Ok(())
}

impl Store {
    /// Opens (creating if needed) the data dir `dir`.
    ///
    /// Takes the dir's lock, checks its format version, removes leftover
    /// temp files, then reconciles the index with the files: files without
    /// an entry are removed, entries without a file are dropped, files of
    /// the wrong size are quarantined. What was done is in the report.
    pub fn open(dir: &Path, cfg: StoreConfig) -> Result<(Store, OpenReport)> {
        Self::open_with(dir, cfg, Arc::new(RealIo), Options::default())
    }

    pub(crate) fn open_with(
        dir: &Path,
        cfg: StoreConfig,
        io: Arc<dyn Io>,
        opts: Options,
    ) -> Result<(Store, OpenReport)> {
        let dir = dir.to_path_buf();
        let ioe = |op: &'static str, p: &Path| {
            let (d, p) = (dir.clone(), p.to_path_buf());
            move |e: io::Error| io_error(&d, op, &p, e)
        };
        io.create_dir_all(&dir).map_err(ioe("create", &dir))?;
        let held = io.lock(&dir, &dir.join(LOCK_FILE))?;
        let format_temp_removed = check_format(&*io, &dir)?;

        // The fixed directory tree, created once and made durable before any
        // file is renamed into it; puts never create directories, so they
        // never need to fsync a parent they did not write to.
        let mut created = false;
        for sub in [SHARDS_DIR, MANIFESTS_DIR, TMP_DIR, QUARANTINE_DIR, STATE_DIR] {
            let p = dir.join(sub);
            created |= io.create_dir(&p).map_err(ioe("create", &p))?;
        }
        if created {
            io.sync_dir(&dir).map_err(ioe("fsync", &dir))?;
        }
        for kind in Kind::ALL {
            let kdir = dir.join(kind.dir());
            let have: HashSet<String> = io
                .list_dir(&kdir)
                .map_err(ioe("list", &kdir))?
                .into_iter()
                .filter(|e| e.is_dir)
                .map(|e| e.name)
                .collect();
            let mut created = false;
            for b in 0..=255u8 {
                let name = format!("{b:02x}");
                if !have.contains(&name) {
                    let p = kdir.join(&name);
                    created |= io.create_dir(&p).map_err(ioe("create", &p))?;
                }
            }
            if created {
                io.sync_dir(&kdir).map_err(ioe("fsync", &kdir))?;
            }
        }

        let mut report = OpenReport { temp_removed: format_temp_removed, ..OpenReport::default() };
        let tmp = dir.join(TMP_DIR);
        for e in io.list_dir(&tmp).map_err(ioe("list", &tmp))? {
            if !e.is_dir {
                io.remove_file(&e.path).map_err(ioe("remove", &e.path))?;
                report.temp_removed += 1;
            }
        }

        let db = open_index(&*io, &dir)?;
        let usage = reconcile(&*io, &dir, &db, &mut report)?;

        let inner = Inner {
            dir,
            cfg,
            io,
            db,
            mutation: RwLock::new(()),
            inflight: Mutex::new(HashMap::new()),
            usage: Mutex::new(usage),
            guards: Arc::new(GuardSet::default()),
            pin_epoch: AtomicU64::new(0),
            gc_lock: Mutex::new(()),
            commit_failed: AtomicBool::new(false),
            pending_access: Mutex::new(HashMap::new()),
            state_dirs: Mutex::new(HashSet::new()),
            access_interval: opts.access_interval_secs,
            cache: new_cache(cfg.cache_bytes),
            seq: AtomicU64::new(0),
            _lock: held,
        };
        Ok((Store { inner: Arc::new(inner) }, report))
    }

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

    fn list(&self, kind: Kind) -> Result<Vec<Cid>> {
        let inner = &*self.inner;
        let ix = |e: redb::Error| index_error(&inner.dir, "listing", e);
        let txn = inner.db.begin_read().map_err(|e| ix(e.into()))?;
        let t = txn.open_table(kind.table()).map_err(|e| ix(e.into()))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| ix(e.into()))? {
            let (k, _) = row.map_err(|e| ix(e.into()))?;
            out.push(decode_key(k.value())?);
        }
        Ok(out)
    }

    /// The object's size and, for shards, its record.
    pub(crate) fn lookup(&self, kind: Kind, cid: &Cid) -> Result<Option<(u64, Option<ShardRecord>)>> {
        let inner = &*self.inner;
        let ix = |e: redb::Error| index_error(&inner.dir, "looking up", e);
        let txn = inner.db.begin_read().map_err(|e| ix(e.into()))?;
        let t = txn.open_table(kind.table()).map_err(|e| ix(e.into()))?;
        let Some(v) = t.get(cid.to_bytes().as_slice()).map_err(|e| ix(e.into()))? else {
            return Ok(None);
        };
        match kind {
            Kind::Shard => {
                let r = ShardRecord::decode(v.value()).map_err(|e| bad_record(cid, e))?;
                Ok(Some((r.size, Some(r))))
            }
            Kind::Manifest => {
                let r = ManifestRecord::decode(v.value()).map_err(|e| bad_record(cid, e))?;
                Ok(Some((r.size, None)))
            }
        }
    }

    fn put_objects(
        &self,
        kind: Kind,
        items: &[(Cid, &[u8], Option<ShardMeta>)],
        guard: Option<&UploadGuard>,
    ) -> Result<()> {
        let inner = &*self.inner;
        for (cid, data, _) in items {
            if data.len() as u64 > kind.max_size() {
                return Err(StoreError::TooLarge {
                    cid: *cid,
                    size: data.len() as u64,
                    max: kind.max_size(),
                    what: kind.what(),
                });
            }
            if !cid.verifies(data) {
                return Err(StoreError::Corrupt { cid: *cid });
            }
        }
        let mut seen = HashSet::new();
        let items: Vec<_> = items.iter().filter(|(c, _, _)| seen.insert(*c)).collect();

        let _m = read_lock(&inner.mutation);
        if let Some(g) = guard {
            // Before the "already stored?" check: see the guard protocol.
            g.add_many(items.iter().map(|i| i.0));
        }
        let fresh: Vec<_> = {
            let ix = |e: redb::Error| index_error(&inner.dir, "checking what is stored", e);
            let txn = inner.db.begin_read().map_err(|e| ix(e.into()))?;
            let t = txn.open_table(kind.table()).map_err(|e| ix(e.into()))?;
            let mut fresh = Vec::new();
            for item in items {
                if t.get(item.0.to_bytes().as_slice()).map_err(|e| ix(e.into()))?.is_none() {
                    fresh.push(item);
                }
            }
            fresh
        };
        if fresh.is_empty() {
            return Ok(());
        }
        let needed: u64 = fresh.iter().map(|i| i.1.len() as u64).sum();
        let reservation = self.reserve(needed)?;
        let inflight = self.register(fresh.iter().map(|i| i.0));

        // fsync latency, not bandwidth, bounds a put: overlapping the
        // batch's file fsyncs (and then its directory fsyncs) lets the file
        // system commit them together. Every file is durable and in place
        // before any directory is synced, and every directory before the
        // index commit, so the order that matters is unchanged.
        let results = par_map(&fresh, |(cid, data, _)| self.write_durably(kind, cid, data));
        let written: Vec<Cid> = fresh.iter().zip(&results).filter(|(_, r)| r.is_ok()).map(|(i, _)| i.0).collect();
        let files = (|| -> Result<()> {
            let mut dirs = BTreeSet::new();
            for r in results {
                if let Some(p) = r?.parent() {
                    dirs.insert(p.to_path_buf());
                }
            }
            // One fsync per touched directory makes all the renames durable.
            let dirs: Vec<PathBuf> = dirs.into_iter().collect();
            for r in par_map(&dirs, |d| inner.io.sync_dir(d).map_err(|e| io_error(&inner.dir, "fsync", d, e))) {
                r?;
            }
            Ok(())
        })();
        if let Err(e) = files {
            // Nothing was committed: give the space back now.
            self.remove_uncommitted(kind, &written);
            return Err(e);
        }
        let sized: Vec<_> = fresh.iter().map(|(c, d, m)| (*c, d.len() as u64, *m)).collect();
        self.index_durable(kind, &sized)?;
        drop(reservation);
        drop(inflight);
        Ok(())
    }

    /// Indexes files that are durable in place and counts them as used.
    ///
    /// If the commit fails, its outcome is unknown: a commit whose last fsync
    /// failed may still be on disk and be found by the next open. So the
    /// files stay; the next open keeps them if the entries made it and
    /// removes them as orphans if not. Removing them here could leave entries
    /// without files.
    pub(crate) fn index_durable(&self, kind: Kind, fresh: &[(Cid, u64, Option<ShardMeta>)]) -> Result<()> {
        let inner = &*self.inner;
        let (count, bytes) = self.index_batch(kind, fresh).inspect_err(|_| {
            inner.commit_failed.store(true, Ordering::SeqCst);
        })?;
        lock(&inner.usage).add(kind, count, bytes);
        Ok(())
    }

    /// Commits index entries for freshly written files, with any pending
    /// access times. Returns (objects added, bytes added).
    fn index_batch(&self, kind: Kind, fresh: &[(Cid, u64, Option<ShardMeta>)]) -> Result<(u64, u64)> {
        let inner = &*self.inner;
        let ix = |e: redb::Error| index_error(&inner.dir, "indexing new data", e);
        let txn = begin_write(&inner.dir, &inner.db)?;
        let (mut count, mut bytes) = (0, 0);
        {
            let mut t = txn.open_table(kind.table()).map_err(|e| ix(e.into()))?;
            let now = now();
            for &(cid, size, meta) in fresh {
                let key = cid.to_bytes();
                // A concurrent put of the same CID may have committed first.
                if t.get(key.as_slice()).map_err(|e| ix(e.into()))?.is_some() {
                    continue;
                }
                let value = match (kind, meta) {
                    (Kind::Shard, Some(m)) => ShardRecord {
                        chunk: m.chunk,
                        index: m.index,
                        size,
                        stored_at: now,
                        last_access: now,
                        verified_at: now,
                    }
                    .encode(),
                    _ => ManifestRecord { size, stored_at: now }.encode(),
                };
                t.insert(key.as_slice(), value.as_slice()).map_err(|e| ix(e.into()))?;
                count += 1;
                bytes += size;
            }
        }
        // Piggyback read-access times on a commit we pay for anyway.
        let pending = std::mem::take(&mut *lock(&inner.pending_access));
        if !pending.is_empty() {
            apply_access(&inner.dir, &txn, &pending)?;
        }
        txn.commit().map_err(|e| ix(e.into()))?;
        Ok((count, bytes))
    }

    /// temp file → write → fsync → rename into place. Leaves no temp file
    /// behind on failure. The caller fsyncs the destination directory.
    fn write_durably(&self, kind: Kind, cid: &Cid, data: &[u8]) -> Result<PathBuf> {
        let inner = &*self.inner;
        let tmp = self.tmp_path(kind.what());
        let dst = object_path(&inner.dir, kind, cid);
        match write_file(&*inner.io, (&tmp, &dst), data, false, Commit::Renamed) {
            Ok(()) => Ok(dst),
            Err((op, e)) => Err(io_error(&inner.dir, op, if op == "rename" { &dst } else { &tmp }, e)),
        }
    }

    pub(crate) fn tmp_path(&self, what: &str) -> PathBuf {
        // The data dir is locked to this process and tmp/ is emptied at open,
        // so a per-open counter is a unique name.
        let n = self.inner.seq.fetch_add(1, Ordering::Relaxed);
        self.inner.dir.join(TMP_DIR).join(format!("{what}-{n}.tmp"))
    }

    /// Removes the files of a failed batch that nobody else is writing or
    /// has indexed, so a failed put (e.g. disk full) gives its space back.
    pub(crate) fn remove_uncommitted(&self, kind: Kind, written: &[Cid]) {
        let inner = &*self.inner;
        // Holding the registry keeps new writers of these CIDs out while we
        // decide; an index entry can only come from a registered writer.
        let reg = lock(&inner.inflight);
        if inner.commit_failed.load(Ordering::SeqCst) {
            return;
        }
        let Ok(txn) = inner.db.begin_read() else {
            return;
        };
        let Ok(t) = txn.open_table(kind.table()) else {
            return;
        };
        for cid in written {
            let indexed = !matches!(t.get(cid.to_bytes().as_slice()), Ok(None));
            if reg.get(cid) == Some(&1) && !indexed {
                let _ = inner.io.remove_file(&object_path(&inner.dir, kind, cid));
            }
        }
    }

    fn reserve(&self, needed: u64) -> Result<Reservation<'_>> {
        self.reserve_bytes(needed)?;
        Ok(Reservation { usage: &self.inner.usage, bytes: needed })
    }

    /// Counts `needed` bytes as reserved if they fit the budget; the caller
    /// gives them back with [`Self::release_bytes`].
    pub(crate) fn reserve_bytes(&self, needed: u64) -> Result<()> {
        let mut u = lock(&self.inner.usage);
        let available = self.inner.cfg.capacity_bytes.saturating_sub(u.used() + u.reserved);
        if needed > available {
            return Err(StoreError::CapacityExceeded { needed, available });
        }
        u.reserved += needed;
        Ok(())
    }

    /// Gives back bytes taken with [`Self::reserve_bytes`].
    pub(crate) fn release_bytes(&self, bytes: u64) {
        let mut u = lock(&self.inner.usage);
        u.reserved = u.reserved.saturating_sub(bytes);
    }

    pub(crate) fn register(&self, cids: impl Iterator<Item = Cid>) -> Inflight<'_> {
        let mut m = lock(&self.inner.inflight);
        let cids: Vec<Cid> = cids.collect();
        for c in &cids {
            *m.entry(*c).or_insert(0) += 1;
        }
        Inflight { map: &self.inner.inflight, cids }
    }

    pub(crate) fn get_object(&self, kind: Kind, cid: &Cid) -> Result<Vec<u8>> {
        let inner = &*self.inner;
        let Some((size, rec)) = self.lookup(kind, cid)? else {
            return Err(StoreError::NotFound { cid: *cid });
        };
        let path = object_path(&inner.dir, kind, cid);
        // One byte past the recorded size tells a grown file from a good one
        // without reading an arbitrarily large file.
        match inner.io.read(&path, size + 1) {
            Ok(bytes) if bytes.len() as u64 == size && cid.verifies(&bytes) => {
                if let Some(r) = rec {
                    self.note_access(cid, &r);
                }
                Ok(bytes)
            }
            Ok(_) => Err(self.quarantine(kind, cid, true)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Either deleted concurrently (entry gone too) or lost.
                if self.lookup(kind, cid)?.is_some() {
                    Err(self.quarantine(kind, cid, false))
                } else {
                    Err(StoreError::NotFound { cid: *cid })
                }
            }
            Err(e) => Err(io_error(&inner.dir, "read", &path, e)),
        }
    }

    pub(crate) fn note_access(&self, cid: &Cid, rec: &ShardRecord) {
        let now = now();
        if now.saturating_sub(rec.last_access) < self.inner.access_interval {
            return;
        }
        let flush = {
            let mut p = lock(&self.inner.pending_access);
            p.insert(*cid, now);
            p.len() >= ACCESS_FLUSH_THRESHOLD
        };
        if flush {
            // Non-durable: no fsync on the read path; the next durable commit
            // carries it to disk. Failure only loses access times.
            let _m = read_lock(&self.inner.mutation);
            let _ = flush_access(&self.inner, Durability::None);
        }
    }

    /// Moves a bad file to quarantine and drops its entry. Returns the error
    /// the reader should see.
    pub(crate) fn quarantine(&self, kind: Kind, cid: &Cid, bad_bytes: bool) -> StoreError {
        let inner = &*self.inner;
        let _w = write_lock(&inner.mutation);
        let r = (|| -> Result<bool> {
            let ix = |e: redb::Error| index_error(&inner.dir, "dropping a corrupt entry", e);
            let txn = begin_write(&inner.dir, &inner.db)?;
            let size = {
                let mut t = txn.open_table(kind.table()).map_err(|e| ix(e.into()))?;
                let old = t.remove(cid.to_bytes().as_slice()).map_err(|e| ix(e.into()))?;
                old.map(|v| kind.record_size(v.value()).unwrap_or(0))
            };
            let Some(size) = size else { return Ok(false) };
            // Entry first, then the file, as for deletes: the entry must
            // never outlive the file.
            txn.commit().map_err(|e| ix(e.into()))?;
            lock(&inner.usage).sub(kind, 1, size);
            self.move_to_quarantine(kind, cid, &object_path(&inner.dir, kind, cid));
            Ok(true)
        })();
        match r {
            Ok(true) => StoreError::Corrupt { cid: *cid },
            // Someone else dropped it meanwhile: a concurrent quarantine (the
            // bytes we read were still bad) or a delete.
            Ok(false) if bad_bytes => StoreError::Corrupt { cid: *cid },
            Ok(false) => StoreError::NotFound { cid: *cid },
            Err(e) => e,
        }
    }

    /// Best effort, after the entry is dropped: a file that cannot be moved
    /// is removed; if that fails too it is an orphan the next open removes.
    pub(crate) fn move_to_quarantine(&self, kind: Kind, cid: &Cid, path: &Path) {
        let inner = &*self.inner;
        let n = inner.seq.fetch_add(1, Ordering::Relaxed);
        let q = inner.dir.join(QUARANTINE_DIR).join(format!("{}-{cid}-{}-{n}", kind.what(), now()));
        if let Err(e) = inner.io.rename(path, &q)
            && e.kind() != io::ErrorKind::NotFound
        {
            let _ = inner.io.remove_file(path);
        }
    }

    fn delete_object(&self, kind: Kind, cid: &Cid) -> Result<bool> {
        let inner = &*self.inner;
        let ix = |e: redb::Error| index_error(&inner.dir, "deleting", e);
        let _w = write_lock(&inner.mutation);
        let txn = begin_write(&inner.dir, &inner.db)?;
        let size = {
            let mut t = txn.open_table(kind.table()).map_err(|e| ix(e.into()))?;
            let old = t.remove(cid.to_bytes().as_slice()).map_err(|e| ix(e.into()))?;
            old.map(|v| kind.record_size(v.value()).unwrap_or(0))
        };
        let Some(size) = size else { return Ok(false) };
        // Entry first, file second: a crash in between leaves an orphan file,
        // which the next open removes, never an entry without its file.
        txn.commit().map_err(|e| ix(e.into()))?;
        lock(&inner.usage).sub(kind, 1, size);
        lock(&inner.pending_access).remove(cid);
        // If removal fails the file is an orphan until the next open.
        let _ = inner.io.remove_file(&object_path(&inner.dir, kind, cid));
        Ok(true)
    }
}

/// Threads a batch's file writes use at most. They mostly wait on fsync, so
/// this is about overlapping waits, not cores.
const WRITE_PARALLELISM: usize = 4;

/// `items.iter().map(f)`, spread over up to [`WRITE_PARALLELISM`] scoped
/// threads; results in input order. Runs inline for a single item.
fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let workers = items.len().min(WRITE_PARALLELISM);
    if workers <= 1 {
        return items.iter().map(f).collect();
    }
    let f = &f;
    let mut out: Vec<Option<R>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                scope.spawn(move || {
                    items.iter().enumerate().skip(w).step_by(workers).map(|(i, t)| (i, f(t))).collect::<Vec<_>>()
                })
            })
            .collect();
        let mut out: Vec<Option<R>> = (0..items.len()).map(|_| None).collect();
        for h in handles {
            // A panic in `f` is a bug; re-raise it on the caller's thread.
            let done = h.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
            for (i, r) in done {
                out[i] = Some(r);
            }
        }
        out
    });
    // Every index was filled by exactly one worker.
    out.iter_mut().filter_map(Option::take).collect()
}

fn decode_key(k: &[u8]) -> Result<Cid> {
    Cid::from_bytes(k).map_err(|e| StoreError::BadRecord { key: hex(k), source: RecordError::BadCid(e.to_string()) })
}

fn bad_record(cid: &Cid, e: RecordError) -> StoreError {
    StoreError::BadRecord { key: cid.to_string(), source: e }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Name of the temp file `FORMAT` is written through.
const FORMAT_TMP: &str = "FORMAT.tmp";

/// Checks `FORMAT`, or writes it into a fresh directory. Returns how many
/// leftover temp files it removed (from a crash during a first open).
fn check_format(io: &dyn Io, dir: &Path) -> Result<usize> {
    let path = dir.join(FORMAT_FILE);
    let ioe = |op: &'static str, p: &Path, e: io::Error| io_error(dir, op, p, e);
    let not_a_store = |reason: String| StoreError::NotAStore { dir: dir.to_path_buf(), reason };
    match io.read(&path, 4096) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let version = text.trim().strip_prefix("datamesh-store ").and_then(|v| v.trim().parse::<u32>().ok());
            match version {
                Some(v) if v > FORMAT_VERSION => {
                    Err(StoreError::FormatTooNew { dir: dir.to_path_buf(), found: v, supported: FORMAT_VERSION })
                }
                Some(v) if v >= 1 => Ok(0),
                _ => Err(not_a_store(format!(
                    "its FORMAT file says {:?}, not \"datamesh-store <version>\"",
                    text.chars().take(64).collect::<String>()
                ))),
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // No FORMAT: only a fresh directory, or one where a first open
            // was cut short (a LOCK, and a tmp/ holding at most FORMAT.tmp),
            // may become a store. Anything else is someone else's data.
            let entries = io.list_dir(dir).map_err(|e| ioe("list", dir, e))?;
            let foreign: Vec<&str> =
                entries.iter().map(|e| e.name.as_str()).filter(|n| *n != LOCK_FILE && *n != TMP_DIR).collect();
            if !foreign.is_empty() {
                return Err(not_a_store(format!(
                    "it has no FORMAT file but is not empty (it holds {})",
                    foreign.iter().take(3).copied().collect::<Vec<_>>().join(", ")
                )));
            }
            let tmpdir = dir.join(TMP_DIR);
            let mut removed = 0;
            if entries.iter().any(|e| e.name == TMP_DIR) {
                for e in io.list_dir(&tmpdir).map_err(|e| ioe("list", &tmpdir, e))? {
                    if e.name != FORMAT_TMP || e.is_dir {
                        return Err(not_a_store(format!("it has no FORMAT file and its tmp/ holds {}", e.name)));
                    }
                    io.remove_file(&e.path).map_err(|err| ioe("remove", &e.path, err))?;
                    removed += 1;
                }
            }
            // FORMAT goes first, written atomically, so a directory with our
            // files in it always has a FORMAT.
            if io.create_dir(&tmpdir).map_err(|e| ioe("create", &tmpdir, e))? {
                io.sync_dir(dir).map_err(|e| ioe("fsync", dir, e))?;
            }
            let tmp = tmpdir.join(FORMAT_TMP);
            let text = format!("datamesh-store {FORMAT_VERSION}\n");
            write_file(io, (&tmp, &path), text.as_bytes(), false, Commit::Durable)
                .map_err(|(_, e)| ioe("write", &path, e))?;
            Ok(removed)
        }
        Err(e) => Err(ioe("read", &path, e)),
    }
}

/// Opens the index, creating it atomically (in tmp/, then renamed) so a
/// crash during creation never leaves a half-initialized database behind.
fn open_index(io: &dyn Io, dir: &Path) -> Result<Database> {
    let path = dir.join(INDEX_FILE);
    let ioe = |op: &'static str, p: &Path| {
        let (d, p) = (dir.to_path_buf(), p.to_path_buf());
        move |e: io::Error| io_error(&d, op, &p, e)
    };
    let mut builder = Database::builder();
    builder.set_cache_size(INDEX_CACHE_BYTES);
    if io.file_len(&path).map_err(ioe("stat", &path))?.is_none() {
        let tmp = dir.join(TMP_DIR).join("index.redb.new");
        let mut f = io.create_new(&tmp).map_err(ioe("create", &tmp))?;
        f.sync().map_err(ioe("fsync", &tmp))?;
        drop(f);
        {
            let backend = io.db_backend(&tmp).map_err(ioe("open", &tmp))?;
            let db = builder
                .create_with_backend(DynBackend(backend))
                .map_err(|e| index_error(dir, "creating the index", e))?;
            create_tables(dir, &db)?;
        }
        io.rename(&tmp, &path).map_err(ioe("rename", &path))?;
        io.sync_dir(dir).map_err(ioe("fsync", dir))?;
    }
    let backend = io.db_backend(&path).map_err(ioe("open", &path))?;
    let db = builder.create_with_backend(DynBackend(backend)).map_err(|e| index_error(dir, "opening the index", e))?;
    create_tables(dir, &db)?;
    Ok(db)
}

fn create_tables(dir: &Path, db: &Database) -> Result<()> {
    let ix = |e: redb::Error| index_error(dir, "creating tables", e);
    let txn = begin_write(dir, db)?;
    for t in [SHARDS, MANIFESTS, PINS, ALIASES] {
        txn.open_table(t).map_err(|e| ix(e.into()))?;
    }
    txn.commit().map_err(|e| ix(e.into()))
}

/// Makes the index and the files agree; returns the usage of what remains.
fn reconcile(io: &dyn Io, dir: &Path, db: &Database, report: &mut OpenReport) -> Result<Usage> {
    let ix = |e: redb::Error| index_error(dir, "checking the index against the files", e);
    let ioe = |op: &'static str, p: &Path, e: io::Error| io_error(dir, op, p, e);
    let mut usage = Usage::default();
    for kind in Kind::ALL {
        let mut index: HashMap<Cid, u64> = HashMap::new();
        let mut drop_keys: Vec<Vec<u8>> = Vec::new();
        {
            let txn = db.begin_read().map_err(|e| ix(e.into()))?;
            let t = txn.open_table(kind.table()).map_err(|e| ix(e.into()))?;
            for row in t.iter().map_err(|e| ix(e.into()))? {
                let (k, v) = row.map_err(|e| ix(e.into()))?;
                match (Cid::from_bytes(k.value()), kind.record_size(v.value())) {
                    (Ok(c), Ok(size)) => {
                        index.insert(c, size);
                    }
                    _ => {
                        drop_keys.push(k.value().to_vec());
                        report.missing_dropped += 1;
                    }
                }
            }
        }
        let kdir = dir.join(kind.dir());
        let mut present: HashSet<Cid> = HashSet::new();
        for sub in io.list_dir(&kdir).map_err(|e| ioe("list", &kdir, e))? {
            if !sub.is_dir {
                continue;
            }
            for f in io.list_dir(&sub.path).map_err(|e| ioe("list", &sub.path, e))? {
                if f.is_dir {
                    continue;
                }
                let known = f
                    .name
                    .parse::<Cid>()
                    .ok()
                    .filter(|c| object_path(dir, kind, c) == f.path)
                    .and_then(|c| index.get(&c).map(|s| (c, *s)));
                match known {
                    None => {
                        io.remove_file(&f.path).map_err(|e| ioe("remove", &f.path, e))?;
                        report.orphans_removed += 1;
                    }
                    Some((c, size)) if size != f.len => {
                        let n = report.corrupt_quarantined;
                        let q = dir.join(QUARANTINE_DIR).join(format!("{}-{c}-{}-open{n}", kind.what(), now()));
                        io.rename(&f.path, &q).map_err(|e| ioe("quarantine", &f.path, e))?;
                        report.corrupt_quarantined += 1;
                        index.remove(&c);
                        drop_keys.push(c.to_bytes());
                    }
                    Some((c, _)) => {
                        present.insert(c);
                    }
                }
            }
        }
        index.retain(|c, _| {
            let keep = present.contains(c);
            if !keep {
                drop_keys.push(c.to_bytes());
                report.missing_dropped += 1;
            }
            keep
        });
        if !drop_keys.is_empty() {
            let txn = begin_write(dir, db)?;
            {
                let mut t = txn.open_table(kind.table()).map_err(|e| ix(e.into()))?;
                for k in &drop_keys {
                    t.remove(k.as_slice()).map_err(|e| ix(e.into()))?;
                }
            }
            txn.commit().map_err(|e| ix(e.into()))?;
        }
        usage.add(kind, index.len() as u64, index.values().sum());
    }
    Ok(usage)
}
