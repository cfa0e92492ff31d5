//! Location records: which node holds which shard of a file.
//!
//! The manifest is immutable (its CID is the file's CID); where shards live
//! changes as nodes die and repair moves shards. That mutable part is this
//! record: versioned, with a sequence number that only grows, and signed by
//! the node that wrote it. Replicas keep the valid record with the highest
//! `seq`; what a node accepts as a rewrite (the next `seq`, a trusted
//! signer, only positions whose holder is gone) is the node's rule, in
//! `crates/node/src/admit.rs` and docs/network.md.
//!
//! `seq` is at least 1 and never `u64::MAX`: a record at the ceiling could
//! never be rewritten, so one signed there would freeze its file's
//! placement for good. [`LocationRecord::next_seq`] is the checked step.
//!
//! ```text
//! LocationRecord v2 (DAG-CBOR)
//! ├── manifest     CID of the file's manifest
//! ├── seq          u64, bumped on every rewrite (repair)
//! ├── holders[]    node ids (libp2p peer id bytes, ≤ 64), each listed once
//! ├── chunks[]     per chunk, per shard: index into holders[]
//! ├── uploaded_at  unix seconds of the upload this record places (v2;
//! │                absent = unknown), kept by every rewrite
//! ├── origin       (v3) the upload's first record: holders[], moved[]
//! │                (chunk, shard, index into its holders[]) where it differs
//! │                from this record, signer, signature
//! ├── signer       32-byte Ed25519 public key of the writer
//! └── signature    Ed25519 over the encoding with an empty signature
//! ```
//!
//! A rewrite (`seq` > 1) of a file whose manifest names a writer also
//! carries `origin` (version 3): the upload's first record, compactly (its
//! holder list, the positions whose holder differs from this record's, its
//! signer and signature), from which [`LocationRecord::first_record`]
//! rebuilds the first record and checks the writer's signature on it. A
//! node that has no record of a file thus learns where the writer put each
//! shard, and takes a later record only if every position it moves away
//! from there is justified (see `crates/node/src/admit.rs`); without the
//! origin a peer could seed such a node with any record at all.
//!
//! `uploaded_at` ties a record to one upload: an owner's tombstone deletes
//! the uploads it is later than, not a re-upload of the same bytes after it
//! (see `core::tombstone`). Version 1 records (no `uploaded_at`) still
//! decode, their signatures over the same bytes as before; a tombstone
//! applies to them whatever its time.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::cid::Cid;
use crate::limits;
use crate::manifest::Manifest;

/// A node that holds shards, as location records name it: the bytes of its
/// libp2p peer id (at most 64). Plain bytes, so `core` stays free of libp2p;
/// the node converts to and from `PeerId` where it talks to the network.
///
/// On the wire it is a CBOR byte string, exactly as the `Vec<u8>` it
/// replaced, so records of every build decode and re-encode unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HolderId(#[serde(with = "serde_bytes")] Vec<u8>);

impl HolderId {
    /// The peer id bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    /// The peer id bytes, owned.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    /// No bytes: names no node.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl From<Vec<u8>> for HolderId {
    fn from(bytes: Vec<u8>) -> Self {
        HolderId(bytes)
    }
}

impl From<&[u8]> for HolderId {
    fn from(bytes: &[u8]) -> Self {
        HolderId(bytes.to_vec())
    }
}

impl From<HolderId> for Vec<u8> {
    fn from(id: HolderId) -> Self {
        id.0
    }
}

impl AsRef<[u8]> for HolderId {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

// Hash and Eq are those of the bytes, so sets and maps of ids can be
// looked up by a byte slice.
impl std::borrow::Borrow<[u8]> for HolderId {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

/// The location record format this build writes for records with an
/// [`Origin`]; others are written as version 2 (or 1), readable by builds
/// before origins existed.
pub const LOCATION_VERSION: u32 = 3;

/// The version of a record without an origin: 1 without an upload time
/// (exactly a version 1 record, readable by older builds), else 2.
fn version_without_origin(uploaded_at: u64) -> u32 {
    if uploaded_at == 0 { 1 } else { 2 }
}

/// The upload's first record (seq 1) as a later record carries it: enough
/// to rebuild it from the carrying record and check its signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The first record's holders, in its order.
    pub holders: Vec<HolderId>,
    /// Positions whose first holder is not the carrying record's:
    /// `(chunk, shard, index into holders)`.
    pub moved: Vec<(u32, u16, u16)>,
    /// The first record's signer (the manifest's writer).
    #[serde(with = "serde_bytes")]
    pub signer: Vec<u8>,
    /// The first record's signature.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// Where the shards of one file are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocationRecord {
    /// Format version.
    pub version: u32,
    /// The file's manifest.
    pub manifest: Cid,
    /// Grows with every rewrite; the highest valid one wins.
    pub seq: u64,
    /// Node ids (libp2p peer id bytes) holding shards.
    pub holders: Vec<HolderId>,
    /// For each chunk, for each shard index: the index into `holders`.
    pub chunks: Vec<Vec<u16>>,
    /// When the upload this record places was made (unix seconds); 0 when
    /// unknown (version 1). Left out of the encoding when 0, so a version 1
    /// record encodes, and verifies, as it always did.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub uploaded_at: u64,
    /// The upload's first record (version 3; see the module doc).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    /// The writer's Ed25519 public key.
    #[serde(with = "serde_bytes")]
    pub signer: Vec<u8>,
    /// Signature over the record encoded with an empty signature.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// Why bytes are not a usable location record.
#[derive(Debug, thiserror::Error)]
pub enum LocationError {
    /// Not DAG-CBOR of this shape, or too large.
    #[error("location record does not decode: {0}")]
    Decode(String),
    /// Newer format.
    #[error("location record version {0} is newer than this build understands; upgrade datamesh")]
    UnknownVersion(u32),
    /// Fields contradict each other.
    #[error("location record is inconsistent: {0}")]
    Invalid(String),
    /// The signature does not verify.
    #[error("location record signature does not verify")]
    BadSignature,
}

/// Largest encoded location record accepted from a peer.
pub const MAX_LOCATION_SIZE: usize = 1024 * 1024;

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl LocationRecord {
    /// Builds and signs a record of an upload of unknown time. `chunks[c][s]`
    /// is the holder of shard `s` of chunk `c`, as node id bytes.
    pub fn sign<H: AsRef<[u8]>>(manifest: Cid, seq: u64, chunks: &[Vec<H>], key: &SigningKey) -> Self {
        Self::sign_upload(manifest, seq, chunks, 0, key)
    }

    /// Builds and signs a record of the upload made at `uploaded_at` (unix
    /// seconds).
    pub fn sign_upload<H: AsRef<[u8]>>(
        manifest: Cid,
        seq: u64,
        chunks: &[Vec<H>],
        uploaded_at: u64,
        key: &SigningKey,
    ) -> Self {
        let mut r = Self::unsigned(manifest, seq, chunks, uploaded_at, key);
        r.signature = key.sign(&r.signed_bytes()).to_bytes().to_vec();
        r
    }

    /// The record `sign_upload` signs, with an empty signature.
    fn unsigned<H: AsRef<[u8]>>(
        manifest: Cid,
        seq: u64,
        chunks: &[Vec<H>],
        uploaded_at: u64,
        key: &SigningKey,
    ) -> Self {
        let mut holders: Vec<HolderId> = Vec::new();
        let mut index = std::collections::HashMap::new();
        let chunks = chunks
            .iter()
            .map(|shards| {
                shards
                    .iter()
                    .map(|h| {
                        *index.entry(h.as_ref().to_vec()).or_insert_with(|| {
                            holders.push(HolderId::from(h.as_ref()));
                            (holders.len() - 1) as u16
                        })
                    })
                    .collect()
            })
            .collect();
        LocationRecord {
            version: version_without_origin(uploaded_at),
            manifest,
            seq,
            holders,
            chunks,
            uploaded_at,
            origin: None,
            signer: key.verifying_key().to_bytes().to_vec(),
            signature: Vec::new(),
        }
    }

    /// Builds and signs the record that follows `prev` (the next `seq`, the
    /// same upload time), with `chunks` as its holders, carrying the
    /// upload's first record when `prev` has it. Fails if `prev` is at the
    /// `seq` ceiling or carries an origin that does not verify.
    pub fn sign_rewrite<H: AsRef<[u8]>>(
        prev: &LocationRecord,
        chunks: &[Vec<H>],
        key: &SigningKey,
    ) -> Result<Self, LocationError> {
        let seq =
            prev.next_seq().ok_or_else(|| LocationError::Invalid(format!("seq {} is at the ceiling", prev.seq)))?;
        let first = prev.first_record()?;
        let mut r = Self::unsigned(prev.manifest, seq, chunks, prev.uploaded_at, key);
        if let Some(first) = first {
            let mut moved = Vec::new();
            for (c, row) in first.chunks.iter().enumerate() {
                for (s, &i) in row.iter().enumerate() {
                    if r.holder(c, s) != first.holders.get(i as usize) {
                        moved.push((c as u32, s as u16, i));
                    }
                }
            }
            r.origin = Some(Origin { holders: first.holders, moved, signer: first.signer, signature: first.signature });
            r.version = LOCATION_VERSION;
        }
        // Signed once, over the record as it goes out.
        r.signature = key.sign(&r.signed_bytes()).to_bytes().to_vec();
        Ok(r)
    }

    /// The upload's first record: this one at `seq` 1, else the one its
    /// origin rebuilds (signature checked), else `None` (a rewrite without
    /// an origin, written before origins existed).
    pub fn first_record(&self) -> Result<Option<LocationRecord>, LocationError> {
        if self.seq == 1 {
            return Ok(Some(self.clone()));
        }
        let Some(o) = &self.origin else { return Ok(None) };
        let bad = |why: String| LocationError::Invalid(format!("origin: {why}"));
        // A position not marked moved has the same holder as in this
        // record: its index in the origin's holder list, looked up in a map
        // (the first index of a holder listed twice, as a scan would find).
        let index: std::collections::HashMap<&HolderId, u16> =
            o.holders.iter().enumerate().rev().map(|(i, h)| (h, i as u16)).collect();
        let mut chunks = Vec::with_capacity(self.chunks.len());
        for row in &self.chunks {
            let mut first_row = Vec::with_capacity(row.len());
            for &i in row {
                let h = self.holders.get(i as usize).ok_or_else(|| bad("a shard has no holder".into()))?;
                // None: the holder is new here, so `moved` must list it.
                first_row.push(index.get(h).copied());
            }
            chunks.push(first_row);
        }
        for &(c, s, i) in &o.moved {
            let slot = chunks
                .get_mut(c as usize)
                .and_then(|row: &mut Vec<Option<u16>>| row.get_mut(s as usize))
                .ok_or_else(|| bad(format!("shard {s} of chunk {c} is outside the record")))?;
            if i as usize >= o.holders.len() {
                return Err(bad("a moved shard points outside its holder list".into()));
            }
            *slot = Some(i);
        }
        let mut rows = Vec::with_capacity(chunks.len());
        for (c, row) in chunks.into_iter().enumerate() {
            if let Some(s) = row.iter().position(Option::is_none) {
                return Err(bad(format!("shard {s} of chunk {c} is not marked moved but its holder is new")));
            }
            rows.push(row.into_iter().flatten().collect());
        }
        let first = LocationRecord {
            version: version_without_origin(self.uploaded_at),
            manifest: self.manifest,
            seq: 1,
            holders: o.holders.clone(),
            chunks: rows,
            uploaded_at: self.uploaded_at,
            origin: None,
            signer: o.signer.clone(),
            signature: o.signature.clone(),
        };
        first.check_signature()?;
        Ok(Some(first))
    }

    fn check_signature(&self) -> Result<(), LocationError> {
        let key = <[u8; 32]>::try_from(self.signer.as_slice())
            .ok()
            .and_then(|k| VerifyingKey::from_bytes(&k).ok())
            .ok_or(LocationError::BadSignature)?;
        let sig = Signature::from_slice(&self.signature).map_err(|_| LocationError::BadSignature)?;
        key.verify(&self.signed_bytes(), &sig).map_err(|_| LocationError::BadSignature)
    }

    fn signed_bytes(&self) -> Vec<u8> {
        let mut unsigned = self.clone();
        unsigned.signature = Vec::new();
        serde_ipld_dagcbor::to_vec(&unsigned).expect("location record encodes")
    }

    /// Canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        serde_ipld_dagcbor::to_vec(self).expect("location record encodes")
    }

    /// Decodes untrusted bytes and checks shape and signature.
    pub fn decode(bytes: &[u8]) -> Result<Self, LocationError> {
        if bytes.len() > MAX_LOCATION_SIZE {
            return Err(LocationError::Decode(format!("{} bytes exceeds {MAX_LOCATION_SIZE}", bytes.len())));
        }
        let r: LocationRecord =
            serde_ipld_dagcbor::from_slice(bytes).map_err(|e| LocationError::Decode(e.to_string()))?;
        if r.version > LOCATION_VERSION || r.version == 0 {
            return Err(LocationError::UnknownVersion(r.version));
        }
        if r.version == 1 && r.uploaded_at != 0 {
            return Err(LocationError::Invalid("a version 1 record has no upload time".into()));
        }
        if r.seq == 0 || r.seq == u64::MAX {
            return Err(LocationError::Invalid(format!("seq {} is outside 1..u64::MAX", r.seq)));
        }
        if r.holders.iter().any(|h| h.is_empty() || h.len() > 64) {
            return Err(LocationError::Invalid("a holder id is empty or longer than 64 bytes".into()));
        }
        if r.chunks
            .iter()
            .any(|c| c.len() > limits::MAX_TOTAL_SHARDS || c.iter().any(|&i| i as usize >= r.holders.len()))
        {
            return Err(LocationError::Invalid("a shard points outside the holder list".into()));
        }
        match (&r.origin, r.version) {
            (Some(_), 3) if r.seq > 1 => {}
            (None, v) if v < 3 => {}
            _ => {
                return Err(LocationError::Invalid(
                    "an origin comes with version 3 and a seq above 1, and only then".into(),
                ));
            }
        }
        if let Some(o) = &r.origin {
            let positions: usize = r.chunks.iter().map(Vec::len).sum();
            if o.moved.len() > positions {
                return Err(LocationError::Invalid("the origin moves more shards than the record has".into()));
            }
            if o.holders.iter().any(|h| h.is_empty() || h.len() > 64) {
                return Err(LocationError::Invalid("an origin holder id is empty or longer than 64 bytes".into()));
            }
        }
        r.check_signature()?;
        Ok(r)
    }

    /// The `seq` of the record that rewrites this one; `None` at the
    /// ceiling (no valid record follows it).
    pub fn next_seq(&self) -> Option<u64> {
        self.seq.checked_add(1).filter(|&s| s < u64::MAX)
    }

    /// Checks the record's shape against the file's manifest: one row per
    /// chunk, one holder per shard of the chunk. A record that does not fit
    /// would leave shards without a holder, or name holders of shards that
    /// do not exist.
    pub fn fits(&self, m: &Manifest) -> Result<(), LocationError> {
        if self.chunks.len() != m.chunks.len() {
            return Err(LocationError::Invalid(format!(
                "{} chunk rows for a manifest of {} chunks",
                self.chunks.len(),
                m.chunks.len()
            )));
        }
        let total = m.erasure.total();
        if let Some((i, row)) =
            self.chunks.iter().enumerate().find(|(i, row)| row.len() != total || row.len() != m.chunks[*i].shards.len())
        {
            return Err(LocationError::Invalid(format!(
                "chunk {i} names {} holders; the manifest's code has {total} shards",
                row.len()
            )));
        }
        Ok(())
    }

    /// The holder of shard `shard` of chunk `chunk`.
    pub fn holder(&self, chunk: usize, shard: usize) -> Option<&HolderId> {
        let i = *self.chunks.get(chunk)?.get(shard)? as usize;
        self.holders.get(i)
    }

    /// The holders of every shard of chunk `chunk`, in shard order.
    pub fn holders_of(&self, chunk: usize) -> Vec<&HolderId> {
        self.chunks
            .get(chunk)
            .map(|row| row.iter().filter_map(|&i| self.holders.get(i as usize)).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn key(b: u8) -> SigningKey {
        SigningKey::from_bytes(&[b; 32])
    }

    #[test]
    fn sign_decode_and_lookup() {
        let m = Cid::dag_cbor_blake3(b"m");
        let chunks = vec![vec![[1u8; 32], [2; 32], [3; 32]], vec![[3u8; 32], [1; 32], [4; 32]]];
        let r = LocationRecord::sign(m, 7, &chunks, &key(9));
        assert_eq!(r.holders.len(), 4);
        let back = LocationRecord::decode(&r.encode()).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.holder(1, 2).map(HolderId::as_slice), Some(&[4u8; 32][..]));
        assert_eq!(back.holder(2, 0), None);
    }

    #[test]
    fn rewrites_carry_the_first_record_and_it_verifies() {
        let m = Cid::dag_cbor_blake3(b"m");
        let first =
            LocationRecord::sign_upload(m, 1, &[vec![[1u8; 32], [2; 32]], vec![[2u8; 32], [3; 32]]], 77, &key(1));
        assert_eq!(first.first_record().unwrap().as_ref(), Some(&first));
        // Two repairs by other nodes: each carries the first record.
        let r2 = LocationRecord::sign_rewrite(&first, &[vec![[1u8; 32], [4; 32]], vec![[2u8; 32], [3; 32]]], &key(2))
            .unwrap();
        let r3 =
            LocationRecord::sign_rewrite(&r2, &[vec![[5u8; 32], [4; 32]], vec![[2u8; 32], [3; 32]]], &key(3)).unwrap();
        for r in [&r2, &r3] {
            assert_eq!(r.version, LOCATION_VERSION);
            let back = LocationRecord::decode(&r.encode()).unwrap();
            assert_eq!(back.first_record().unwrap(), Some(first.clone()));
        }
        assert_eq!((r3.seq, r3.uploaded_at, r3.origin.as_ref().unwrap().moved.len()), (3, 77, 2));
        // An origin that does not rebuild the writer's record is refused,
        // even when the carrying record is signed anew.
        let mut forged = r3.clone();
        forged.origin.as_mut().unwrap().moved.pop();
        forged.signature = key(3).sign(&forged.signed_bytes()).to_bytes().to_vec();
        let back = LocationRecord::decode(&forged.encode()).unwrap();
        assert!(back.first_record().is_err());
        let mut forged = r3.clone();
        forged.origin.as_mut().unwrap().signer = key(9).verifying_key().to_bytes().to_vec();
        forged.signature = key(3).sign(&forged.signed_bytes()).to_bytes().to_vec();
        assert!(matches!(
            LocationRecord::decode(&forged.encode()).unwrap().first_record(),
            Err(LocationError::BadSignature)
        ));
        // A record of the old format (no origin) rewrites without one.
        let old = LocationRecord::sign_upload(m, 4, &[vec![[1u8; 32], [2; 32]]], 77, &key(1));
        let next = LocationRecord::sign_rewrite(&old, &[vec![[1u8; 32], [3; 32]]], &key(1)).unwrap();
        assert_eq!((next.version, next.origin.is_none()), (2, true));
        assert_eq!(next.first_record().unwrap(), None);
    }

    #[test]
    fn tampering_is_caught() {
        let m = Cid::dag_cbor_blake3(b"m");
        let mut r = LocationRecord::sign(m, 1, &[vec![[1u8; 32], [2; 32]]], &key(9));
        r.seq = 2;
        assert!(matches!(LocationRecord::decode(&r.encode()), Err(LocationError::BadSignature)));
        let mut r = LocationRecord::sign(m, 1, &[vec![[1u8; 32], [2; 32]]], &key(9));
        r.chunks[0][1] = 9;
        assert!(matches!(LocationRecord::decode(&r.encode()), Err(LocationError::Invalid(_))));
    }

    /// A record written before holder ids had their own type (seq 42, four
    /// Ed25519 peer ids, signed with key 7): it still decodes, names the
    /// same holders, and re-encodes to the same bytes, so the signature
    /// still verifies everywhere.
    const V1_RECORD: &str = concat!(
        "a763736571182a666368756e6b73828300010283020003667369676e65725820ea4a6c63e29c520abef5507b132ec5f99547",
        "76aebebe7b92421eea691446d22c67686f6c6465727384582600240801122001010101010101010101010101010101010101",
        "0101010101010101010101010158260024080112200202020202020202020202020202020202020202020202020202020202",
        "0202025826002408011220030303030303030303030303030303030303030303030303030303030303030358260024080112",
        "2004040404040404040404040404040404040404040404040404040404040404046776657273696f6e01686d616e69666573",
        "74d82a58250001711e204fdb85068a0ac3db893db2947a6855f4be824c47fd62883ebe7f47bbadb74329697369676e617475",
        "72655840ef037ea6352cac98725df50338d222e81c1037ee349abad660397c74c30584e0e306235927877ebaed878bb4050e",
        "38268354faff7492a9eaff595738b366370a",
    );

    #[test]
    fn a_v1_record_decodes_and_reencodes_byte_identical() {
        let bytes = hex::decode(V1_RECORD).unwrap();
        let r = LocationRecord::decode(&bytes).unwrap();
        assert_eq!(r.seq, 42);
        let peer = |b: u8| [[0x00, 36, 0x08, 0x01, 0x12, 0x20].as_slice(), &[b; 32]].concat();
        assert_eq!(r.holders, [1, 2, 3, 4].map(|b| HolderId::from(peer(b))));
        assert_eq!(r.holder(1, 0).map(HolderId::as_slice), Some(peer(3).as_slice()));
        assert_eq!(r.encode(), bytes);
        let again = LocationRecord::sign(
            r.manifest,
            42,
            &[vec![peer(1), peer(2), peer(3)], vec![peer(3), peer(1), peer(4)]],
            &key(7),
        );
        assert_eq!(again.encode(), bytes);
    }

    /// A version 1 record (no upload time), as an older build signed it,
    /// still decodes and verifies; a version 2 one carries its upload time.
    #[test]
    fn version_1_records_still_verify() {
        #[derive(Serialize)]
        struct V1<'a> {
            version: u32,
            manifest: Cid,
            seq: u64,
            holders: Vec<serde_bytes::ByteBuf>,
            chunks: Vec<Vec<u16>>,
            #[serde(with = "serde_bytes")]
            signer: &'a [u8],
            #[serde(with = "serde_bytes")]
            signature: &'a [u8],
        }
        let k = key(9);
        let m = Cid::dag_cbor_blake3(b"m");
        let mut v1 = V1 {
            version: 1,
            manifest: m,
            seq: 3,
            holders: vec![serde_bytes::ByteBuf::from(vec![1u8; 32])],
            chunks: vec![vec![0, 0]],
            signer: &k.verifying_key().to_bytes(),
            signature: &[],
        };
        let sig = k.sign(&serde_ipld_dagcbor::to_vec(&v1).unwrap()).to_bytes();
        v1.signature = &sig;
        let r = LocationRecord::decode(&serde_ipld_dagcbor::to_vec(&v1).unwrap()).unwrap();
        assert_eq!((r.version, r.seq, r.uploaded_at), (1, 3, 0));
        let v2 = LocationRecord::sign_upload(m, 1, &[vec![[1u8; 32]]], 1_700_000_000, &k);
        let back = LocationRecord::decode(&v2.encode()).unwrap();
        assert_eq!((back.version, back.uploaded_at), (2, 1_700_000_000));
        let mut forged = v2.clone();
        forged.uploaded_at = 1_800_000_000;
        assert!(matches!(LocationRecord::decode(&forged.encode()), Err(LocationError::BadSignature)));
    }

    /// A record at the `seq` ceiling can never be rewritten: refused, and
    /// the step to it is `None` rather than a wrap to 0.
    #[test]
    fn the_seq_ceiling_is_refused_and_the_step_is_checked() {
        let m = Cid::dag_cbor_blake3(b"m");
        let top = LocationRecord::sign(m, u64::MAX, &[vec![[1u8; 32]]], &key(9));
        assert!(matches!(LocationRecord::decode(&top.encode()), Err(LocationError::Invalid(_))));
        let zero = LocationRecord::sign(m, 0, &[vec![[1u8; 32]]], &key(9));
        assert!(matches!(LocationRecord::decode(&zero.encode()), Err(LocationError::Invalid(_))));
        assert_eq!(top.next_seq(), None);
        assert_eq!(LocationRecord::sign(m, u64::MAX - 1, &[vec![[1u8; 32]]], &key(9)).next_seq(), None);
        assert_eq!(LocationRecord::sign(m, 7, &[vec![[1u8; 32]]], &key(9)).next_seq(), Some(8));
    }

    /// A record must have one row per chunk of its manifest and one holder
    /// per shard of the code.
    #[test]
    fn a_record_must_fit_its_manifest() {
        use crate::manifest::{ChunkEntry, Chunking, Compression, Erasure, MANIFEST_VERSION, merkle_root};
        let chunks: Vec<ChunkEntry> = (0..2u8)
            .map(|i| ChunkEntry {
                plain_size: 10,
                stored_size: 10,
                compression: Compression::None,
                cid: Cid::raw_blake3(&[i]),
                shards: (0..3).map(|j| Cid::raw_blake3(&[i, j])).collect(),
            })
            .collect();
        let man = Manifest {
            version: MANIFEST_VERSION,
            size: 20,
            chunking: Chunking::Fixed { size: 10 },
            erasure: Erasure { k: 2, m: 1 },
            encryption: None,
            unixfs: None,
            owner: None,
            writer: None,
            merkle_root: merkle_root(chunks.iter().map(|c| &c.cid)),
            chunks,
        };
        let cid = man.cid();
        let row = vec![[1u8; 32], [2; 32], [3; 32]];
        LocationRecord::sign(cid, 1, &[row.clone(), row.clone()], &key(9)).fits(&man).unwrap();
        let one_short = LocationRecord::sign(cid, 1, &[row.clone(), row[..2].to_vec()], &key(9));
        assert!(one_short.fits(&man).is_err());
        let one_chunk = LocationRecord::sign(cid, 1, std::slice::from_ref(&row), &key(9));
        assert!(one_chunk.fits(&man).is_err());
        let long = [row.clone(), [row.clone(), vec![[4u8; 32]]].concat()];
        assert!(LocationRecord::sign(cid, 1, &long, &key(9)).fits(&man).is_err());
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = LocationRecord::decode(&bytes);
        }
    }
}
