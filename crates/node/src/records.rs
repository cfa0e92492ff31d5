//! The small records nodes keep about files, and how they are stored.
//!
//! Keys of the records nodes exchange with `PutRecord`/`GetRecord`:
//! - `loc/<manifest CID bytes>`: the file's signed [`LocationRecord`];
//! - `alias/<UnixFS CID bytes>`: the manifest CID of a public file;
//! - `tomb/<manifest CID bytes>`: the owner's tombstone of a deleted file
//!   (see `deletion.rs`).
//!
//! Location records and tombstones are kept as the store's state records
//! ([`LocationStore`], [`TombstoneStore`]).
//!
//! **Architecture invariant:** a stored location record is only replaced by
//! a valid one with a higher `seq` (or, when the node itself resolves a fork
//! in [`newest_vouched`], by the other line at the same `seq`), that fits
//! the file's manifest, signed by a writer the old record trusts
//! ([`may_replace`]), and moving only shards whose holders are gone as this
//! node sees it (the rules are in `admit.rs`).

// Store calls return `StoreError`, which carries CIDs inline.
#![allow(clippy::result_large_err)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use datamesh_core::tombstone::Tombstone;
use datamesh_core::{Cid, HolderId, LocationRecord};
use datamesh_store::{Store, StoreError};

/// Key of a file's location record.
pub fn location_key(manifest: &Cid) -> Vec<u8> {
    [b"loc/".as_slice(), &manifest.to_bytes()].concat()
}

/// Key of a public file's alias record.
pub fn alias_key(unixfs: &Cid) -> Vec<u8> {
    [b"alias/".as_slice(), &unixfs.to_bytes()].concat()
}

/// The DHT key of a CID (what providers are announced under).
pub fn dht_key(cid: &Cid) -> Vec<u8> {
    cid.to_bytes()
}

/// Location records, kept as the store's state records of kind
/// [`LOCATIONS`], keyed by manifest CID. A record's `written_at` is also its
/// lease clock (see `deletion.rs`).
#[derive(Clone)]
pub struct LocationStore {
    store: Store,
    /// Serialises `put`: two records of one file arriving together (a
    /// repair's and a replica's) could interleave the seq check and the
    /// write so that the lower record landed last.
    writing: Arc<std::sync::Mutex<()>>,
}

/// State-record kind of location records.
const LOCATIONS: &str = "locations";

impl LocationStore {
    /// Location records in `store`, after moving in those an older build
    /// kept in `legacy_dir` (`<data-dir>/locations/<manifest CID>`, the
    /// record's encoding, renewed by the file's modification time).
    pub fn open(store: &Store, legacy_dir: &Path) -> Result<Self, StoreError> {
        import_by_cid(store, LOCATIONS, legacy_dir, |cid, b| {
            LocationRecord::decode(b).is_ok_and(|r| r.manifest == *cid)
        })?;
        Ok(Self { store: store.clone(), writing: Arc::default() })
    }

    /// The stored record and when it was written or renewed (unix ms).
    fn read(&self, manifest: &Cid) -> Option<(LocationRecord, u64)> {
        let rec = self.store.get_state(LOCATIONS, &manifest.to_string()).ok()??;
        let r = LocationRecord::decode(&rec.value).ok().filter(|r| r.manifest == *manifest)?;
        Some((r, rec.written_at))
    }

    /// The stored record, if any and valid.
    pub fn get(&self, manifest: &Cid) -> Option<LocationRecord> {
        self.read(manifest).map(|(r, _)| r)
    }

    /// Stores `r` durably unless a record with a higher or equal `seq` is
    /// already there. Returns whether it was stored.
    pub fn put(&self, r: &LocationRecord) -> Result<bool, StoreError> {
        self.put_unless(r, |old| old.seq >= r.seq)
    }

    /// Stores `r` unless a record with a higher `seq` is already there:
    /// how a node gives up its own line of a forked record for the one the
    /// file's other replicas hold at the same `seq` (see [`newest_vouched`]).
    pub(crate) fn take_over(&self, r: &LocationRecord) -> Result<bool, StoreError> {
        self.put_unless(r, |old| old.seq > r.seq || old.signature == r.signature)
    }

    /// Stores `r` durably unless the stored record `keep`s its place; one
    /// writer at a time, so the check and the write are one step.
    fn put_unless(&self, r: &LocationRecord, keep: impl Fn(&LocationRecord) -> bool) -> Result<bool, StoreError> {
        let _one = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        if self.get(&r.manifest).is_some_and(|old| keep(&old)) {
            return Ok(false);
        }
        self.store.put_state(LOCATIONS, &r.manifest.to_string(), &r.encode())?;
        Ok(true)
    }

    /// Every valid record stored here.
    pub fn list(&self) -> Vec<LocationRecord> {
        let keys = self.store.list_state(LOCATIONS).unwrap_or_default();
        keys.iter().filter_map(|k| k.parse::<Cid>().ok()).filter_map(|cid| self.get(&cid)).collect()
    }

    /// Removes a record.
    pub fn remove(&self, manifest: &Cid) {
        let _one = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = self.store.remove_state(LOCATIONS, &manifest.to_string()) {
            tracing::warn!(file = %manifest, error = %e, "could not remove a location record");
        }
    }

    /// Marks the file's lease renewed now: the record is written again as
    /// it is, with a fresh `written_at`.
    pub fn touch(&self, manifest: &Cid) {
        let _one = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((r, _)) = self.read(manifest)
            && let Err(e) = self.store.put_state(LOCATIONS, &manifest.to_string(), &r.encode())
        {
            tracing::warn!(file = %manifest, error = %e, "could not renew a lease");
        }
    }

    /// Time since the file's lease was last renewed (or its record written).
    pub fn age(&self, manifest: &Cid) -> Option<Duration> {
        let (_, at) = self.read(manifest)?;
        let now = Duration::from_millis(datamesh_core::clock::unix_millis());
        Some(now.saturating_sub(Duration::from_millis(at)))
    }
}

/// Moves a directory of an older build's records, one file per file named
/// by its manifest CID, into the store's state records of `kind`; a file
/// `valid` refuses (not a record of that file) is dropped, as it was never
/// read before either.
pub(crate) fn import_by_cid(
    store: &Store,
    kind: &str,
    legacy_dir: &Path,
    valid: impl Fn(&Cid, &[u8]) -> bool,
) -> Result<(), StoreError> {
    let moved = store.import_state_dir(kind, legacy_dir, |name, bytes| {
        let cid = name.parse::<Cid>().ok()?;
        valid(&cid, &bytes).then_some(bytes)
    })?;
    if moved > 0 {
        tracing::info!(moved, kind, from = %legacy_dir.display(), "records of an older build moved into the store");
    }
    Ok(())
}

/// Whether `new`'s signer may replace `old`: a rewrite must be signed by
/// the previous writer or one of the previous holders (the repairers);
/// otherwise any peer could point a file at nodes of its choosing. Only the
/// signer: what the rewrite may change is checked in `admit.rs`.
pub fn may_replace(old: Option<&LocationRecord>, new: &LocationRecord) -> bool {
    let Some(old) = old else { return true };
    if old.signer == new.signer {
        return true;
    }
    match datamesh_net::peer_id_of_ed25519(&new.signer) {
        Some(p) => old.holders.iter().any(|h| h.as_slice() == p.to_bytes().as_slice()),
        None => false,
    }
}

/// The record a node should hold for a file, given its own (`ours`) and
/// the ones the file's replicas and holders answered with (`(holder id,
/// record)`).
///
/// **Forward:** a higher `seq` is taken when a peer already trusted with
/// the file vouches for it (a holder named in the current record, or its
/// signer, any of whom could sign a rewrite itself) or when it may replace
/// the current one outright; the walk goes on from the record taken.
///
/// **Forks:** two nodes whose views of who is online differ (one just back
/// from a partition, say) can both repair a file and each sign the next
/// `seq`. Peers take only the line whose signer their record names, so the
/// other signer would keep its own line for good, a line nobody maintains,
/// and report (and read) from holders that may be gone. At the same `seq`
/// the line more of the answering peers hold is taken, if a trusted peer
/// vouches for it; a tie keeps the current one. Every switch either raises
/// `seq` or strictly raises the number of peers agreeing, so the walk ends.
pub(crate) fn newest_vouched(ours: &LocationRecord, answers: &[(HolderId, LocationRecord)]) -> LocationRecord {
    let same = |a: &LocationRecord, b: &LocationRecord| a.signature == b.signature;
    let mut current = ours.clone();
    // Bounded anyway: each step raises seq or agreement, both finite.
    for _ in 0..=answers.len() * 2 + 1 {
        let trusted = |r: &LocationRecord, from: &HolderId| {
            may_replace(Some(&current), r)
                || current.holders.contains(from)
                || datamesh_net::peer_id_of_ed25519(&current.signer).is_some_and(|s| s.to_bytes() == from.as_slice())
        };
        let newer =
            answers.iter().filter(|(from, r)| r.seq > current.seq && trusted(r, from)).max_by_key(|(_, r)| r.seq);
        if let Some((_, r)) = newer {
            current = r.clone();
            continue;
        }
        let agree =
            |r: &LocationRecord| answers.iter().filter(|(_, a)| same(a, r)).count() + usize::from(same(r, ours));
        let here = agree(&current);
        let fork = answers
            .iter()
            .filter(|(from, r)| r.seq == current.seq && !same(r, &current) && trusted(r, from))
            .map(|(_, r)| (agree(r), r))
            .filter(|&(n, _)| n > here)
            .max_by_key(|&(n, _)| n);
        match fork {
            Some((_, r)) => current = r.clone(),
            None => break,
        }
    }
    current
}

/// Key of a file's tombstone record.
pub fn tombstone_key(manifest: &Cid) -> Vec<u8> {
    [b"tomb/".as_slice(), &manifest.to_bytes()].concat()
}

/// Tombstones, kept as the store's state records of kind [`TOMBSTONES`],
/// keyed by manifest CID.
#[derive(Clone)]
pub struct TombstoneStore {
    store: Store,
}

/// State-record kind of tombstones.
const TOMBSTONES: &str = "tombstones";

impl TombstoneStore {
    /// Tombstones in `store`, after moving in those an older build kept in
    /// `legacy_dir` (`<data-dir>/tombstones/<manifest CID>`).
    pub fn open(store: &Store, legacy_dir: &Path) -> Result<Self, StoreError> {
        import_by_cid(store, TOMBSTONES, legacy_dir, |cid, b| Tombstone::decode(b).is_ok_and(|t| t.manifest == *cid))?;
        Ok(Self { store: store.clone() })
    }

    /// The tombstone of `manifest`, if any.
    pub fn get(&self, manifest: &Cid) -> Option<Tombstone> {
        let rec = self.store.get_state(TOMBSTONES, &manifest.to_string()).ok()??;
        Tombstone::decode(&rec.value).ok().filter(|t| t.manifest == *manifest)
    }

    /// Stores the tombstone of `t.manifest` durably. A tombstone lets this
    /// node free the file's space, so a full node still takes it (within
    /// the store's headroom for such records).
    pub(crate) fn put(&self, t: &Tombstone) -> Result<(), StoreError> {
        self.store.put_state_freeing(TOMBSTONES, &t.manifest.to_string(), &t.encode())
    }

    /// Forgets a tombstone (the file was uploaded again).
    pub fn remove(&self, manifest: &Cid) {
        if let Err(e) = self.store.remove_state(TOMBSTONES, &manifest.to_string()) {
            tracing::warn!(file = %manifest, error = %e, "could not remove a tombstone");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Records of one file arriving at once (a repair's, a replica's) are
    /// all taken or declined cleanly, and the highest `seq` is what stays.
    #[test]
    fn concurrent_location_records_keep_the_highest() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(&dir.path().join("store"), Default::default()).unwrap();
        let store = LocationStore::open(&store, &dir.path().join("locations")).unwrap();
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let file = Cid::dag_cbor_blake3(b"a manifest");
        for _ in 0..20 {
            let threads: Vec<_> = (1..=8u64)
                .map(|seq| {
                    let (store, rec) = (store.clone(), LocationRecord::sign(file, seq, &[vec![[seq as u8; 8]]], &key));
                    std::thread::spawn(move || store.put(&rec))
                })
                .collect();
            for t in threads {
                t.join().unwrap().unwrap();
            }
            assert_eq!(store.get(&file).unwrap().seq, 8);
            store.remove(&file);
        }
    }

    /// A data dir of an older build keeps working: its `locations/` and
    /// `tombstones/` files move into the store, a record keeps its lease
    /// clock (the file's modification time), and what never decoded is
    /// dropped with the old directories.
    #[test]
    fn records_of_an_older_build_are_moved_into_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let (old_locs, old_tombs) = (dir.path().join("locations"), dir.path().join("tombstones"));
        std::fs::create_dir(&old_locs).unwrap();
        std::fs::create_dir(&old_tombs).unwrap();
        let file = Cid::dag_cbor_blake3(b"a manifest");
        let rec = LocationRecord::sign(file, 3, &[vec![[1u8; 8]]], &key(1));
        std::fs::write(old_locs.join(file.to_string()), rec.encode()).unwrap();
        let renewed = std::time::SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::options()
            .append(true)
            .open(old_locs.join(file.to_string()))
            .unwrap()
            .set_modified(renewed)
            .unwrap();
        let other = Cid::dag_cbor_blake3(b"another manifest");
        std::fs::write(old_locs.join(other.to_string()), rec.encode()).unwrap(); // names another file
        std::fs::write(old_locs.join(format!("{file}.tmp")), b"half").unwrap();
        let tomb = Tombstone { manifest: file, deleted_at: 9, signature: [3; 64] };
        std::fs::write(old_tombs.join(file.to_string()), tomb.encode()).unwrap();

        let (store, _) = Store::open(&dir.path().join("store"), Default::default()).unwrap();
        let locations = LocationStore::open(&store, &old_locs).unwrap();
        let tombstones = TombstoneStore::open(&store, &old_tombs).unwrap();
        assert_eq!(locations.list(), vec![rec.clone()]);
        let age = locations.age(&file).unwrap();
        assert!(age >= Duration::from_secs(3599) && age < Duration::from_secs(3700), "{age:?}");
        assert_eq!(tombstones.get(&file), Some(tomb));
        assert!(!old_locs.exists() && !old_tombs.exists());
        // Renewed and written anew like any record.
        locations.touch(&file);
        assert!(locations.age(&file).unwrap() < Duration::from_secs(60));
        assert!(!locations.put(&rec).unwrap());
    }

    fn key(n: u8) -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(&[n; 32])
    }

    fn peer(n: u8) -> HolderId {
        HolderId::from(datamesh_net::peer_id_of_ed25519(&key(n).verifying_key().to_bytes()).unwrap().to_bytes())
    }

    /// A one-chunk record of `seq` naming `holders` (key numbers), signed by `by`.
    fn rec(seq: u64, holders: &[u8], by: u8) -> LocationRecord {
        let file = Cid::dag_cbor_blake3(b"a manifest");
        LocationRecord::sign(file, seq, &[holders.iter().map(|&h| peer(h)).collect::<Vec<_>>()], &key(by))
    }

    fn from(n: u8, r: &LocationRecord) -> (HolderId, LocationRecord) {
        (peer(n), r.clone())
    }

    /// A node that missed repairs walks forward to the newest record its
    /// trusted peers vouch for, and not to one only a stranger holds.
    #[test]
    fn a_stale_record_walks_forward_through_trusted_peers_only() {
        let ours = rec(1, &[1, 2, 3], 1);
        let second = rec(2, &[2, 3, 4], 2);
        let third = rec(3, &[4, 5, 6], 4);
        let forged = rec(9, &[7, 8, 9], 7);
        let answers = [from(7, &forged), from(2, &second), from(4, &third)];
        assert_eq!(newest_vouched(&ours, &answers), third);
        // Without the holder of the second record, the third is out of reach.
        assert_eq!(newest_vouched(&ours, &[from(7, &forged), from(4, &third)]), ours);
    }

    /// Two repairers signed the same `seq`: the node on the line fewer
    /// replicas hold takes the other one; one on the line more hold keeps
    /// it, and a tie keeps what the node has.
    #[test]
    fn a_forked_record_settles_on_the_line_more_replicas_hold() {
        // Node 9 (not a holder) re-signed seq 2 from its own view; holder 2
        // re-signed seq 2 as well, and replicas 3, 4 and 5 took holder 2's.
        let mine = rec(2, &[1, 2, 3, 4, 5, 7], 9);
        let theirs = rec(2, &[8, 2, 3, 4, 5, 6], 2);
        let answers = [from(2, &theirs), from(3, &theirs), from(4, &theirs), from(5, &theirs), from(6, &mine)];
        assert_eq!(newest_vouched(&mine, &answers), theirs, "the minority line gives up its record");
        assert_eq!(newest_vouched(&theirs, &answers), theirs, "the majority line keeps its record");
        // A tie keeps the current record.
        let tie = [from(2, &theirs), from(3, &mine)];
        assert_eq!(newest_vouched(&mine, &tie), mine);
        // A line vouched for only by strangers is not taken however many hold it.
        let alien = rec(2, &[10, 11, 12, 13, 14, 15], 10);
        let strangers = [from(10, &alien), from(11, &alien), from(12, &alien)];
        assert_eq!(newest_vouched(&mine, &strangers), mine);
        // And the walk goes on past the fork to the newest record.
        let next = rec(3, &[8, 2, 3, 4, 5, 10], 8);
        let mut more = answers.to_vec();
        more.push(from(8, &next));
        assert_eq!(newest_vouched(&mine, &more), next);
    }
}
