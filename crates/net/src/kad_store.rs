//! The Kademlia record store: libp2p's `MemoryStore`, plus the index needed
//! to enumerate every provider record, plus persistence across restarts.
//!
//! # File format: `<state_dir>/kad-store.cbor`
//! One DAG-CBOR map (`StoreFile`): `version` (= 1), `records` (key, value,
//! publisher, expiry as Unix seconds) and `providers` (key, provider peer id,
//! expiry, addresses). Expiry instants are monotonic in memory, so they are
//! converted to wall-clock seconds on save and back on load; anything already
//! expired on load, or expiring more than 100 years ahead, is dropped. The file is written atomically: a temporary
//! file in the same directory, fsync, rename over the old file, fsync of the
//! directory. A file that fails to decode is moved aside (`.corrupt`) and the
//! node starts with an empty store rather than refusing to start.

use std::borrow::Cow;
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use datamesh_core::clock::{unix_secs, unix_secs_at};
use libp2p::kad::store::{MemoryStore, MemoryStoreConfig, RecordStore, Result as StoreResult};
use libp2p::kad::{ProviderRecord, Record, RecordKey};
use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

use crate::Tuning;
use crate::actor::{K, MAX_DHT_VALUE};

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

/// `MemoryStore` that also remembers which keys have provider records, so
/// that all of them (not only our own) can be saved.
pub(crate) struct PersistentStore {
    inner: MemoryStore,
    provider_keys: HashSet<RecordKey>,
}

/// The limits of the node's store: as many records and provider keys as
/// `tuning` allows, `K` providers per key, values of at most `MAX_DHT_VALUE`.
pub(crate) fn store_config(tuning: &Tuning) -> MemoryStoreConfig {
    MemoryStoreConfig {
        max_records: tuning.max_dht_records,
        max_provided_keys: tuning.max_provider_keys,
        max_providers_per_key: K,
        // The store refuses values of `max_value_bytes` or more.
        max_value_bytes: MAX_DHT_VALUE + 1,
    }
}

impl PersistentStore {
    pub(crate) fn new(local: PeerId, config: MemoryStoreConfig) -> Self {
        Self { inner: MemoryStore::with_config(local, config), provider_keys: HashSet::new() }
    }

    /// Everything in the store, in the on-disk form.
    pub(crate) fn snapshot(&self) -> StoreFile {
        let now_i = Instant::now();
        let now_s = SystemTime::now();
        let to_unix = |e: Option<Instant>| e.map(|e| unix_secs_at(now_s + e.saturating_duration_since(now_i)));
        let records = self
            .inner
            .records()
            .map(|r| DiskRecord {
                key: r.key.to_vec(),
                value: r.value.clone(),
                publisher: r.publisher.map(|p| p.to_bytes()),
                expires: to_unix(r.expires),
            })
            .collect();
        let providers = self
            .provider_keys
            .iter()
            .flat_map(|k| self.inner.providers(k))
            .map(|p| DiskProvider {
                key: p.key.to_vec(),
                provider: p.provider.to_bytes(),
                expires: to_unix(p.expires),
                addrs: p.addresses.iter().map(|a| serde_bytes::ByteBuf::from(a.to_vec())).collect(),
            })
            .collect();
        StoreFile { version: STORE_VERSION, records, providers }
    }

    /// Loads a snapshot, skipping expired or malformed entries. Returns how
    /// many records and provider records were restored.
    pub(crate) fn restore(&mut self, file: StoreFile) -> (usize, usize) {
        let now_i = Instant::now();
        let now_u = unix_secs();
        // Some(None) = never expires; None = dropped (already expired, or
        // further ahead than any entry this node writes).
        let to_instant = |e: Option<u64>| -> Option<Option<Instant>> {
            match e {
                None => Some(None),
                Some(t) if t <= now_u || t - now_u > MAX_LIFETIME_SECS => None,
                Some(t) => Some(Some(now_i + Duration::from_secs(t - now_u))),
            }
        };
        let (mut nr, mut np) = (0, 0);
        for r in file.records {
            let Some(expires) = to_instant(r.expires) else {
                continue;
            };
            let publisher = match r.publisher.map(|b| PeerId::from_bytes(&b)) {
                Some(Ok(p)) => Some(p),
                Some(Err(_)) => continue,
                None => None,
            };
            let rec = Record { key: RecordKey::from(r.key), value: r.value, publisher, expires };
            if self.inner.put(rec).is_ok() {
                nr += 1;
            }
        }
        for p in file.providers {
            let Some(expires) = to_instant(p.expires) else {
                continue;
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
        (nr, np)
    }
}

impl RecordStore for PersistentStore {
    type RecordsIter<'a> = <MemoryStore as RecordStore>::RecordsIter<'a>;
    type ProvidedIter<'a> = <MemoryStore as RecordStore>::ProvidedIter<'a>;

    fn get(&self, k: &RecordKey) -> Option<Cow<'_, Record>> {
        self.inner.get(k)
    }
    fn put(&mut self, r: Record) -> StoreResult<()> {
        self.inner.put(r)
    }
    fn remove(&mut self, k: &RecordKey) {
        self.inner.remove(k)
    }
    fn records(&self) -> Self::RecordsIter<'_> {
        self.inner.records()
    }
    fn add_provider(&mut self, record: ProviderRecord) -> StoreResult<()> {
        let key = record.key.clone();
        self.inner.add_provider(record)?;
        self.provider_keys.insert(key);
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
        if self.inner.providers(k).is_empty() {
            self.provider_keys.remove(k);
        }
    }
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

#[derive(Debug, Serialize, Deserialize, PartialEq)]
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
            Self(PersistentStore::new(local, store_config(&Tuning::default())))
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
            self.0.restore(file)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_restores_and_drops_expired() {
        let me = PeerId::random();
        let other = PeerId::random();
        let mut s = PersistentStore::new(me, MemoryStoreConfig::default());
        let soon = Some(Instant::now() + Duration::from_secs(3600));
        s.put(Record { key: RecordKey::new(b"a"), value: b"1".to_vec(), publisher: Some(other), expires: soon })
            .unwrap();
        s.put(Record { key: RecordKey::new(b"forever"), value: b"2".to_vec(), publisher: None, expires: None })
            .unwrap();
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
        // An entry that expired while the node was down.
        file.records.push(DiskRecord { key: b"old".to_vec(), value: vec![], publisher: None, expires: Some(1) });

        let dir = tempfile::tempdir().unwrap();
        let path = store_path(dir.path());
        save(&path, &file).unwrap();
        let loaded = load(&path).unwrap().unwrap();
        assert_eq!(loaded, file);

        let mut t = PersistentStore::new(me, MemoryStoreConfig::default());
        assert_eq!(t.restore(loaded), (2, 2));
        assert!(t.get(&RecordKey::new(b"old")).is_none());
        assert_eq!(t.get(&RecordKey::new(b"a")).unwrap().publisher, Some(other));
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
        let mut s = PersistentStore::new(PeerId::random(), MemoryStoreConfig::default());
        let rec = |key: &[u8], expires| DiskRecord { key: key.to_vec(), value: vec![], publisher: None, expires };
        let soon = unix_secs() + 3600;
        let file = StoreFile {
            version: STORE_VERSION,
            records: vec![
                rec(b"max", Some(u64::MAX)),
                rec(b"past-i64", Some(i64::MAX as u64 + 1000)),
                rec(b"soon", Some(soon)),
                rec(b"never", None),
            ],
            providers: vec![DiskProvider {
                key: b"p".to_vec(),
                provider: PeerId::random().to_bytes(),
                expires: Some(u64::MAX),
                addrs: vec![],
            }],
        };
        assert_eq!(s.restore(file), (2, 0));
        assert_eq!(s.snapshot().records.len(), 2);
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
}
