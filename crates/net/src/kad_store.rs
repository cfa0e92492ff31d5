//! The Kademlia record store: libp2p's `MemoryStore` for provider records,
//! with a cap per provider, no value records, and persistence across
//! restarts kept off the network's event loop.
//!
//! **Value records are refused.** The node never uses DHT value records
//! (its own records travel on the shard protocol), so a peer's
//! `PUT_VALUE` is refused here (the store is where Kademlia puts them):
//! kept, they cost up to 65,536 × 64 KiB of memory, cloned and re-encoded
//! every minute and re-replicated to 20 peers an hour. A file of an older
//! build that holds some still loads; they are dropped.
//!
//! **Providers per peer are capped** ([`crate::Tuning::max_providers_per_peer`]):
//! one peer announcing millions of keys would otherwise fill the table of
//! provider keys for everyone. This node's own records are not capped.
//!
//! **Persistence** never copies the store on the event loop: every change
//! to the provider records is appended to a [`Journal`] (a short lock, one
//! small entry), and a [`Persister`] on a blocking thread folds the journal
//! into its own copy and writes that. Only if the journal overflows
//! (more than [`MAX_JOURNAL`] changes between two saves) is the store
//! copied whole once on the loop.
//!
//! # File format: `<state_dir>/kad-store.cbor`
//! One DAG-CBOR map (`StoreFile`): `version` (= 1), `records` (key, value,
//! publisher, expiry as Unix seconds; written empty since value records are
//! refused, read and dropped) and `providers` (key, provider peer id,
//! expiry, addresses). Expiry instants are monotonic in memory, so they are
//! converted to wall-clock seconds on save and back on load; anything already
//! expired on load, or expiring more than 100 years ahead, is dropped. The file is written atomically: a temporary
//! file in the same directory, fsync, rename over the old file, fsync of the
//! directory. A file that fails to decode is moved aside (`.corrupt`) and the
//! node starts with an empty store rather than refusing to start.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use datamesh_core::clock::{unix_secs, unix_secs_at};
use libp2p::kad::store::{Error as StoreError, MemoryStore, MemoryStoreConfig, RecordStore, Result as StoreResult};
use libp2p::kad::{ProviderRecord, Record, RecordKey};
use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

use crate::Tuning;
use crate::actor::K;

/// Name of the persisted store inside `state_dir`.
pub const STORE_FILE: &str = "kad-store.cbor";
/// Version of [`StoreFile`].
const STORE_VERSION: u32 = 1;
/// A store file larger than this is not read (it cannot be ours).
const MAX_STORE_FILE: u64 = 1 << 30;
/// An expiry further ahead than this (100 years) is not one this node
/// wrote (TTLs are hours): the entry is dropped like a malformed one. Kept
/// as it was, it would overflow `Instant` on load, or `SystemTime` on the
/// next save.
const MAX_LIFETIME_SECS: u64 = 100 * 365 * 24 * 3600;
/// Changes the journal holds between two saves before it gives up and the
/// next save copies the store whole.
pub(crate) const MAX_JOURNAL: usize = 1 << 20;
/// How often a peer at its cap has its expired records swept (the sweep
/// walks its keys).
const SWEEP_CAPPED_EVERY: Duration = Duration::from_secs(60);

/// `MemoryStore` that refuses value records, caps the providers of each
/// peer, and journals every provider change for the [`Persister`].
pub(crate) struct PersistentStore {
    inner: MemoryStore,
    local: PeerId,
    /// The keys each other peer provides here.
    by_peer: HashMap<PeerId, HashSet<RecordKey>>,
    max_per_peer: usize,
    /// When each capped peer was last swept of expired records.
    swept: HashMap<PeerId, Instant>,
    journal: Arc<Mutex<Journal>>,
}

/// The limits of the node's store: as many provider keys as `tuning`
/// allows, `K` providers per key; no value records.
pub(crate) fn store_config(tuning: &Tuning) -> MemoryStoreConfig {
    MemoryStoreConfig {
        max_records: 0,
        max_provided_keys: tuning.max_provider_keys,
        max_providers_per_key: K,
        max_value_bytes: 0,
    }
}

/// Provider changes since the last save.
#[derive(Default)]
pub(crate) struct Journal {
    changes: Vec<Change>,
    /// More than [`MAX_JOURNAL`] changes came: the next save needs a full copy.
    overflowed: bool,
}

enum Change {
    Add(DiskProvider),
    Remove { key: Vec<u8>, provider: Vec<u8> },
}

impl Journal {
    fn push(&mut self, c: Change) {
        if self.overflowed {
            return;
        }
        if self.changes.len() >= MAX_JOURNAL {
            self.changes = Vec::new();
            self.overflowed = true;
            return;
        }
        self.changes.push(c);
    }
}

fn disk_provider(p: &ProviderRecord, now_i: Instant, now_s: SystemTime) -> DiskProvider {
    DiskProvider {
        key: p.key.to_vec(),
        provider: p.provider.to_bytes(),
        expires: p.expires.map(|e| unix_secs_at(now_s + e.saturating_duration_since(now_i))),
        addrs: p.addresses.iter().map(|a| serde_bytes::ByteBuf::from(a.to_vec())).collect(),
    }
}

impl PersistentStore {
    pub(crate) fn new(local: PeerId, config: MemoryStoreConfig, max_per_peer: usize) -> Self {
        Self {
            inner: MemoryStore::with_config(local, config),
            local,
            by_peer: HashMap::new(),
            max_per_peer,
            swept: HashMap::new(),
            journal: Arc::default(),
        }
    }

    /// The journal a [`Persister`] drains.
    pub(crate) fn journal(&self) -> Arc<Mutex<Journal>> {
        self.journal.clone()
    }

    fn log(&self, c: Change) {
        self.journal.lock().unwrap_or_else(|p| p.into_inner()).push(c);
    }

    /// Everything in the store, in the on-disk form. Walks the whole
    /// store: only for a journal that overflowed, and for tests.
    pub(crate) fn snapshot(&self) -> StoreFile {
        let (now_i, now_s) = (Instant::now(), SystemTime::now());
        let mut providers: Vec<DiskProvider> = self.inner.provided().map(|p| disk_provider(&p, now_i, now_s)).collect();
        for (peer, keys) in &self.by_peer {
            for k in keys {
                providers.extend(
                    self.inner
                        .providers(k)
                        .iter()
                        .filter(|p| p.provider == *peer)
                        .map(|p| disk_provider(p, now_i, now_s)),
                );
            }
        }
        StoreFile { version: STORE_VERSION, records: Vec::new(), providers }
    }

    /// Loads a snapshot, skipping expired or malformed entries, and value
    /// records (refused). Returns how many provider records were restored.
    pub(crate) fn restore(&mut self, file: StoreFile) -> usize {
        let now_i = Instant::now();
        let now_u = unix_secs();
        let mut np = 0;
        for p in file.providers {
            // None: never expires. Dropped: already expired, or further
            // ahead than any entry this node writes.
            let expires = match p.expires {
                None => None,
                Some(t) if t <= now_u || t - now_u > MAX_LIFETIME_SECS => continue,
                Some(t) => Some(now_i + Duration::from_secs(t - now_u)),
            };
            let Ok(provider) = PeerId::from_bytes(&p.provider) else {
                continue;
            };
            let addresses = p.addrs.into_iter().filter_map(|a| Multiaddr::try_from(a.into_vec()).ok()).collect();
            let rec = ProviderRecord { key: RecordKey::from(p.key), provider, expires, addresses };
            if self.add_provider(rec).is_ok() {
                np += 1;
            }
        }
        np
    }

    /// Drops `peer`'s expired records, at most once per
    /// [`SWEEP_CAPPED_EVERY`].
    fn sweep_expired(&mut self, peer: PeerId) {
        let now = Instant::now();
        if self.swept.get(&peer).is_some_and(|t| now.duration_since(*t) < SWEEP_CAPPED_EVERY) {
            return;
        }
        self.swept.insert(peer, now);
        let keys: Vec<RecordKey> = self.by_peer.get(&peer).map(|k| k.iter().cloned().collect()).unwrap_or_default();
        for k in keys {
            if self.inner.providers(&k).iter().any(|p| p.provider == peer && p.is_expired(now)) {
                self.remove_provider(&k, &peer);
            }
        }
    }
}

impl RecordStore for PersistentStore {
    type RecordsIter<'a> = <MemoryStore as RecordStore>::RecordsIter<'a>;
    type ProvidedIter<'a> = <MemoryStore as RecordStore>::ProvidedIter<'a>;

    fn get(&self, k: &RecordKey) -> Option<Cow<'_, Record>> {
        self.inner.get(k)
    }
    /// Refused, whoever asks: see the module doc.
    fn put(&mut self, _r: Record) -> StoreResult<()> {
        Err(StoreError::MaxRecords)
    }
    fn remove(&mut self, k: &RecordKey) {
        self.inner.remove(k)
    }
    fn records(&self) -> Self::RecordsIter<'_> {
        self.inner.records()
    }
    fn add_provider(&mut self, record: ProviderRecord) -> StoreResult<()> {
        let (key, peer) = (record.key.clone(), record.provider);
        let theirs = peer != self.local;
        if theirs && !self.by_peer.get(&peer).is_some_and(|k| k.contains(&key)) {
            if self.by_peer.get(&peer).is_some_and(|k| k.len() >= self.max_per_peer) {
                self.sweep_expired(peer);
            }
            if self.by_peer.get(&peer).is_some_and(|k| k.len() >= self.max_per_peer) {
                return Err(StoreError::MaxProvidedKeys);
            }
        }
        let entry = disk_provider(&record, Instant::now(), SystemTime::now());
        self.inner.add_provider(record)?;
        // A full key ignores a new provider: only what was kept counts.
        if theirs {
            if !self.inner.providers(&key).iter().any(|p| p.provider == peer) {
                return Ok(());
            }
            self.by_peer.entry(peer).or_default().insert(key);
        }
        self.log(Change::Add(entry));
        Ok(())
    }
    fn providers(&self, key: &RecordKey) -> Vec<ProviderRecord> {
        self.inner.providers(key)
    }
    fn provided(&self) -> Self::ProvidedIter<'_> {
        self.inner.provided()
    }
    fn remove_provider(&mut self, k: &RecordKey, p: &PeerId) {
        self.inner.remove_provider(k, p);
        if let Some(keys) = self.by_peer.get_mut(p) {
            keys.remove(k);
            if keys.is_empty() {
                self.by_peer.remove(p);
                self.swept.remove(p);
            }
        }
        self.log(Change::Remove { key: k.to_vec(), provider: p.to_bytes() });
    }
}

/// Writes the store file from the journal, on a blocking thread: it keeps
/// its own copy of the provider records, so the event loop never copies
/// the store.
#[derive(Default)]
pub(crate) struct Persister {
    copy: HashMap<(Vec<u8>, Vec<u8>), DiskProvider>,
}

impl Persister {
    /// Folds the journal's changes (or, after an overflow, `full`, a
    /// snapshot the caller took) into the copy, and writes it to `path`.
    /// Blocking.
    pub(crate) fn save(
        &mut self,
        journal: &Mutex<Journal>,
        full: Option<StoreFile>,
        path: &Path,
    ) -> std::io::Result<()> {
        let changes = std::mem::take(&mut journal.lock().unwrap_or_else(|p| p.into_inner()).changes);
        if let Some(f) = full {
            self.copy = f.providers.into_iter().map(|p| ((p.key.clone(), p.provider.clone()), p)).collect();
        }
        for c in changes {
            match c {
                Change::Add(p) => {
                    self.copy.insert((p.key.clone(), p.provider.clone()), p);
                }
                Change::Remove { key, provider } => {
                    self.copy.remove(&(key, provider));
                }
            }
        }
        let now = unix_secs();
        self.copy.retain(|_, p| p.expires.is_none_or(|t| t > now));
        let file =
            StoreFile { version: STORE_VERSION, records: Vec::new(), providers: self.copy.values().cloned().collect() };
        save(path, &file)
    }
}

/// Whether the journal overflowed since the last save (the caller then
/// takes a snapshot for [`Persister::save`]); clears the flag.
pub(crate) fn take_overflow(journal: &Mutex<Journal>) -> bool {
    std::mem::take(&mut journal.lock().unwrap_or_else(|p| p.into_inner()).overflowed)
}

/// The persisted store (see the module doc).
#[doc(hidden)]
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct StoreFile {
    version: u32,
    records: Vec<DiskRecord>,
    providers: Vec<DiskProvider>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct DiskRecord {
    #[serde(with = "serde_bytes")]
    key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    value: Vec<u8>,
    #[serde(with = "serde_bytes")]
    publisher: Option<Vec<u8>>,
    expires: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct DiskProvider {
    #[serde(with = "serde_bytes")]
    key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    provider: Vec<u8>,
    expires: Option<u64>,
    addrs: Vec<serde_bytes::ByteBuf>,
}

/// Where the store lives in `state_dir`.
pub(crate) fn store_path(state_dir: &Path) -> PathBuf {
    state_dir.join(STORE_FILE)
}

/// Decodes a store file's bytes, its version checked.
fn decode(bytes: &[u8]) -> Result<StoreFile, String> {
    match serde_ipld_dagcbor::from_slice::<StoreFile>(bytes) {
        Ok(f) if f.version == STORE_VERSION => Ok(f),
        Ok(f) => Err(format!("store version {} (this build reads {STORE_VERSION})", f.version)),
        Err(e) => Err(e.to_string()),
    }
}

/// The bytes of a store file.
fn encode(file: &StoreFile) -> std::io::Result<Vec<u8>> {
    serde_ipld_dagcbor::to_vec(file).map_err(std::io::Error::other)
}

/// Reads the store file. `Ok(None)` when there is none yet.
pub(crate) fn load(path: &Path) -> std::io::Result<Option<StoreFile>> {
    use std::io::{Error, ErrorKind};
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let decoded = if meta.len() > MAX_STORE_FILE {
        Err(format!("{} bytes is larger than any store this node writes", meta.len()))
    } else {
        decode(&std::fs::read(path)?)
    };
    match decoded {
        Ok(f) => Ok(Some(f)),
        Err(why) => {
            let aside = path.with_extension("cbor.corrupt");
            tracing::warn!(path = %path.display(), %why, "kad store unreadable; moved aside, starting empty");
            std::fs::rename(path, &aside).map_err(|e| Error::new(e.kind(), format!("moving aside: {e}")))?;
            Ok(None)
        }
    }
}

/// Writes the store file atomically (temp, fsync, rename, fsync dir).
pub(crate) fn save(path: &Path, file: &StoreFile) -> std::io::Result<()> {
    let bytes = encode(file)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("cbor.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// What the fuzz target `fuzz/fuzz_targets/kad_store.rs` drives: the store
/// file's decoder, and a store with the node's limits that takes what peers
/// ask it to keep. Not part of the API.
#[doc(hidden)]
pub mod fuzzing {
    use super::*;

    /// Decodes store file bytes as [`load`] does.
    pub fn decode(bytes: &[u8]) -> Result<StoreFile, String> {
        super::decode(bytes)
    }

    /// Encodes a store file as [`save`] does.
    pub fn encode(file: &StoreFile) -> Vec<u8> {
        super::encode(file).expect("a store file encodes")
    }

    /// A record: key, value, publisher.
    pub type RecordEntry = (Vec<u8>, Vec<u8>, Option<Vec<u8>>);
    /// A provider record: key, provider, addresses.
    pub type ProviderEntry = (Vec<u8>, Vec<u8>, Vec<Vec<u8>>);

    /// A node's DHT store, with the default tuning's limits.
    pub struct Store(PersistentStore);

    impl Store {
        /// An empty store of node `local`.
        pub fn new(local: PeerId) -> Self {
            let t = Tuning::default();
            Self(PersistentStore::new(local, store_config(&t), t.max_providers_per_peer))
        }

        /// A record a peer asks us to keep (`ttl` `None`: it never expires).
        pub fn put(&mut self, key: &[u8], value: Vec<u8>, publisher: Option<PeerId>, ttl: Option<Duration>) -> bool {
            let expires = ttl.map(|t| Instant::now() + t);
            self.0.put(Record { key: RecordKey::from(key.to_vec()), value, publisher, expires }).is_ok()
        }

        /// A provider record a peer announces.
        pub fn add_provider(
            &mut self,
            key: &[u8],
            provider: PeerId,
            addrs: Vec<Multiaddr>,
            ttl: Option<Duration>,
        ) -> bool {
            let expires = ttl.map(|t| Instant::now() + t);
            self.0
                .add_provider(ProviderRecord {
                    key: RecordKey::from(key.to_vec()),
                    provider,
                    expires,
                    addresses: addrs,
                })
                .is_ok()
        }

        /// Drops a record.
        pub fn remove(&mut self, key: &[u8]) {
            self.0.remove(&RecordKey::from(key.to_vec()))
        }

        /// Drops a provider record.
        pub fn remove_provider(&mut self, key: &[u8], provider: &PeerId) {
            self.0.remove_provider(&RecordKey::from(key.to_vec()), provider)
        }

        /// What the store holds and would save (expiry left out: it moves
        /// with the clock), sorted.
        pub fn contents(&self) -> (Vec<RecordEntry>, Vec<ProviderEntry>) {
            let file = self.0.snapshot();
            let mut r: Vec<RecordEntry> = file.records.into_iter().map(|r| (r.key, r.value, r.publisher)).collect();
            let mut p: Vec<ProviderEntry> = file
                .providers
                .into_iter()
                .map(|p| (p.key, p.provider, p.addrs.into_iter().map(|a| a.into_vec()).collect()))
                .collect();
            r.sort();
            p.sort();
            (r, p)
        }

        /// The store file's bytes, as [`save`] writes them.
        pub fn save(&self) -> Vec<u8> {
            encode(&self.0.snapshot())
        }

        /// Restores a decoded store file, as a node does on start.
        pub fn restore(&mut self, file: StoreFile) -> (usize, usize) {
            (0, self.0.restore(file))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn store(me: PeerId) -> PersistentStore {
        PersistentStore::new(me, store_config(&Tuning::default()), Tuning::default().max_providers_per_peer)
    }

    #[test]
    fn snapshot_restores_and_drops_expired() {
        let me = PeerId::random();
        let other = PeerId::random();
        let mut s = store(me);
        let soon = Some(Instant::now() + Duration::from_secs(3600));
        s.add_provider(ProviderRecord::new(RecordKey::new(b"p"), me, vec![])).unwrap();
        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        s.add_provider(ProviderRecord {
            key: RecordKey::new(b"q"),
            provider: other,
            expires: soon,
            addresses: vec![addr],
        })
        .unwrap();

        let mut file = s.snapshot();
        // An entry that expired while the node was down, and a value record
        // an older build kept.
        file.providers.push(DiskProvider {
            key: b"old".to_vec(),
            provider: other.to_bytes(),
            expires: Some(1),
            addrs: vec![],
        });
        file.records.push(DiskRecord { key: b"a".to_vec(), value: vec![1], publisher: None, expires: None });

        let dir = tempfile::tempdir().unwrap();
        let path = store_path(dir.path());
        save(&path, &file).unwrap();
        let loaded = load(&path).unwrap().unwrap();
        assert_eq!(loaded, file);

        let mut t = store(me);
        assert_eq!(t.restore(loaded), 2);
        assert!(t.providers(&RecordKey::new(b"old")).is_empty());
        assert!(t.get(&RecordKey::new(b"a")).is_none(), "value records are dropped");
        assert_eq!(t.provided().count(), 1, "our own provider record is ours again");
        assert_eq!(t.providers(&RecordKey::new(b"q"))[0].addresses.len(), 1);
        t.remove_provider(&RecordKey::new(b"q"), &other);
        assert_eq!(t.snapshot().providers.len(), 1);
    }

    #[test]
    fn an_expiry_beyond_any_clock_is_dropped_not_panicked_on() {
        // Found while fuzzing the store file: an expiry near u64::MAX
        // overflowed `Instant` on load, one just past i64::MAX seconds
        // overflowed `SystemTime` on the next save.
        let mut s = store(PeerId::random());
        let soon = unix_secs() + 3600;
        let prov = |key: &[u8], expires| DiskProvider {
            key: key.to_vec(),
            provider: PeerId::random().to_bytes(),
            expires,
            addrs: vec![],
        };
        let file = StoreFile {
            version: STORE_VERSION,
            records: vec![],
            providers: vec![
                prov(b"max", Some(u64::MAX)),
                prov(b"past-i64", Some(i64::MAX as u64 + 1000)),
                prov(b"soon", Some(soon)),
                prov(b"never", None),
            ],
        };
        assert_eq!(s.restore(file), 2);
        assert_eq!(s.snapshot().providers.len(), 2);
    }

    #[test]
    fn a_corrupt_file_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_path(dir.path());
        std::fs::write(&path, b"not cbor").unwrap();
        assert!(load(&path).unwrap().is_none());
        assert!(dir.path().join("kad-store.cbor.corrupt").exists());
        assert!(load(&path).unwrap().is_none(), "and then there is none");
    }

    /// The hole: a peer's `PUT_VALUE` was kept (up to 65,536 × 64 KiB).
    /// The node uses no value records: every one is refused.
    #[test]
    fn value_records_from_peers_are_refused() {
        let me = PeerId::random();
        let mut s = fuzzing::Store::new(me);
        assert!(!s.put(b"k", vec![1; 1000], Some(PeerId::random()), Some(Duration::from_secs(60))));
        assert!(!s.put(b"k", vec![1], None, None));
        assert!(s.contents().0.is_empty());
    }

    /// The hole: one peer could announce providers for every key the
    /// table could hold. Now each peer has a cap; others, and this node,
    /// are not held back by it, and a peer renewing what it has is fine.
    #[test]
    fn providers_per_peer_are_capped() {
        let me = PeerId::random();
        let (greedy, honest) = (PeerId::random(), PeerId::random());
        let cap = Tuning::default().max_providers_per_peer;
        let mut s = fuzzing::Store::new(me);
        let ttl = Some(Duration::from_secs(3600));
        for i in 0..cap {
            assert!(s.add_provider(format!("k{i}").as_bytes(), greedy, vec![], ttl), "{i}");
        }
        assert!(!s.add_provider(b"one more", greedy, vec![], ttl));
        assert!(s.add_provider(b"k0", greedy, vec![], ttl), "renewing a key it has");
        assert!(s.add_provider(b"one more", honest, vec![], ttl));
        assert!(s.add_provider(b"mine", me, vec![], ttl));
        s.remove_provider(b"k1", &greedy);
        assert!(s.add_provider(b"one more", greedy, vec![], ttl), "room again");
    }

    /// What the persister writes from the journal alone is what the store
    /// holds, and an overflowed journal is made whole by a snapshot.
    #[test]
    fn the_journal_saves_what_the_store_holds() {
        let me = PeerId::random();
        let mut s = store(me);
        let dir = tempfile::tempdir().unwrap();
        let path = store_path(dir.path());
        let mut persister = Persister::default();
        let ttl = Some(Instant::now() + Duration::from_secs(3600));
        let rec = |k: &str, p: PeerId| ProviderRecord {
            key: RecordKey::new(&k),
            provider: p,
            expires: ttl,
            addresses: vec!["/ip4/127.0.0.1/tcp/1".parse().unwrap()],
        };
        let peers: Vec<PeerId> = (0..3).map(|_| PeerId::random()).collect();
        for (i, p) in peers.iter().enumerate() {
            for j in 0..5 {
                s.add_provider(rec(&format!("k{i}-{j}"), *p)).unwrap();
            }
        }
        s.add_provider(rec("mine", me)).unwrap();
        persister.save(&s.journal(), None, &path).unwrap();
        s.remove_provider(&RecordKey::new(&"k0-0"), &peers[0]);
        s.add_provider(rec("k0-0", peers[1])).unwrap();
        persister.save(&s.journal(), None, &path).unwrap();
        let sorted = |mut f: StoreFile| {
            f.providers.sort_by(|a, b| (&a.key, &a.provider).cmp(&(&b.key, &b.provider)));
            f.providers.iter_mut().for_each(|p| p.expires = None);
            f
        };
        assert_eq!(sorted(load(&path).unwrap().unwrap()), sorted(s.snapshot()));
        assert_eq!(s.snapshot().providers.len(), 16);

        // Overflow: the journal gives up; a snapshot replaces the copy.
        s.journal.lock().unwrap().changes.clear();
        s.journal.lock().unwrap().overflowed = true;
        s.remove_provider(&RecordKey::new(&"k2-0"), &peers[2]);
        assert!(take_overflow(&s.journal()));
        persister.save(&s.journal(), Some(s.snapshot()), &path).unwrap();
        assert_eq!(sorted(load(&path).unwrap().unwrap()), sorted(s.snapshot()));
    }
}
