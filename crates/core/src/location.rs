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
//! ├── signer       32-byte Ed25519 public key of the writer
//! └── signature    Ed25519 over the encoding with an empty signature
//! ```
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

/// The location record format this build writes.
pub const LOCATION_VERSION: u32 = 2;

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
        let mut r = LocationRecord {
            // A record without an upload time is exactly a version 1
            // record, readable by older builds.
            version: if uploaded_at == 0 { 1 } else { LOCATION_VERSION },
            manifest,
            seq,
            holders,
            chunks,
            uploaded_at,
            signer: key.verifying_key().to_bytes().to_vec(),
            signature: Vec::new(),
        };
        r.signature = key.sign(&r.signed_bytes()).to_bytes().to_vec();
        r
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
        let key = <[u8; 32]>::try_from(r.signer.as_slice())
            .ok()
            .and_then(|k| VerifyingKey::from_bytes(&k).ok())
            .ok_or(LocationError::BadSignature)?;
        let sig = Signature::from_slice(&r.signature).map_err(|_| LocationError::BadSignature)?;
        key.verify(&r.signed_bytes(), &sig).map_err(|_| LocationError::BadSignature)?;
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
