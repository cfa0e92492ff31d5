//! The file manifest: an immutable, versioned description of a stored file.
//!
//! Encoded in canonical DAG-CBOR; its CID (`dag-cbor`, BLAKE3) is the file's
//! CID for encrypted puts. A manifest lists, for each chunk, how it was
//! compressed, the CID of its stored form (ciphertext for encrypted files),
//! and the CIDs of its k+m erasure-coded shards. It never says *where* shards
//! are: placement lives in a separate, rewritable location record, so that
//! repair never changes a file's CID.
//!
//! ```text
//! Manifest v1
//! ├── size, chunking, erasure {k, m}
//! ├── encryption? {cipher, convergent, wrapped_keys[]}   (absent = public)
//! ├── unixfs?     CID that `ipfs add --cid-version 1` gives the plaintext
//! ├── owner?      Ed25519 public key allowed to delete
//! ├── writer?     Ed25519 public key of the node that places the file (signs
//! │               its first location record); absent = written before it
//! │               existed, and left out of the encoding then, so such
//! │               manifests keep their bytes and CIDs
//! ├── merkle_root BLAKE3 tree over chunk CIDs
//! └── chunks[]    {plain_size, stored_size, compression, cid, shards[k+m]}
//! ```

use serde::{Deserialize, Serialize};

use crate::cid::{BLAKE3, Cid, Codec};
use crate::limits;

/// The manifest format this build writes.
pub const MANIFEST_VERSION: u32 = 1;

/// How the plaintext stream was cut into chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Chunking {
    /// Fixed-size chunks (the last one may be shorter).
    Fixed {
        /// Chunk size in bytes.
        size: u32,
    },
    /// Content-defined chunks (FastCDC, 2020 variant).
    FastCdc {
        /// Minimum chunk size in bytes.
        min: u32,
        /// Average chunk size in bytes.
        avg: u32,
        /// Maximum chunk size in bytes.
        max: u32,
    },
}

/// Reed-Solomon parameters: `k` data shards and `m` parity shards per chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Erasure {
    /// Data shards: any `k` shards rebuild the chunk.
    pub k: u16,
    /// Parity shards: up to `m` shards may be lost.
    pub m: u16,
}

impl Erasure {
    /// 4+2, the default.
    pub const DEFAULT: Erasure = Erasure { k: 4, m: 2 };

    /// Total shards per chunk.
    pub fn total(&self) -> usize {
        self.k as usize + self.m as usize
    }

    /// Size of each shard for a stored chunk of `len` bytes: the chunk is
    /// zero-padded to `k` equal shards of an even length (the erasure
    /// library's requirement), at least 2 bytes.
    pub fn shard_size(&self, len: usize) -> usize {
        let s = len.div_ceil(self.k.max(1) as usize).max(2);
        s + (s & 1)
    }
}

impl Default for Erasure {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Per-chunk compression, recorded only when it paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// Stored as is (incompressible, or compression off).
    None,
    /// Zstandard.
    Zstd,
    /// LZ4 block format with the uncompressed size prepended.
    Lz4,
}

/// Authenticated cipher of the chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cipher {
    /// AES-256-GCM, 96-bit nonces (the default; hardware accelerated).
    Aes256Gcm,
    /// XChaCha20-Poly1305, 192-bit nonces.
    XChaCha20Poly1305,
}

/// The file's data key, wrapped for one holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WrappedKey {
    /// HPKE base mode (X25519, HKDF-SHA256, ChaCha20-Poly1305) to an X25519 key.
    X25519 {
        /// The recipient's X25519 public key.
        #[serde(with = "serde_bytes")]
        recipient: Vec<u8>,
        /// HPKE encapsulated key.
        #[serde(with = "serde_bytes")]
        enc: Vec<u8>,
        /// The sealed data key.
        #[serde(with = "serde_bytes")]
        sealed: Vec<u8>,
    },
    /// HPKE base mode with the hybrid X-Wing KEM (ML-KEM-768 + X25519):
    /// the "quantum-resistant" level.
    XWing {
        /// BLAKE3 of the recipient's X-Wing public key (the key itself is 1216 bytes).
        #[serde(with = "serde_bytes")]
        recipient: Vec<u8>,
        /// HPKE encapsulated key.
        #[serde(with = "serde_bytes")]
        enc: Vec<u8>,
        /// The sealed data key.
        #[serde(with = "serde_bytes")]
        sealed: Vec<u8>,
    },
    /// A key-encryption key derived from a passphrase with Argon2id.
    Passphrase {
        /// Argon2 salt.
        #[serde(with = "serde_bytes")]
        salt: Vec<u8>,
        /// Argon2 memory cost in KiB.
        m_cost: u32,
        /// Argon2 iterations.
        t_cost: u32,
        /// Argon2 lanes.
        p_cost: u32,
        /// AES-256-GCM nonce.
        #[serde(with = "serde_bytes")]
        nonce: Vec<u8>,
        /// The sealed data key.
        #[serde(with = "serde_bytes")]
        sealed: Vec<u8>,
    },
}

/// How a file's chunks are encrypted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Encryption {
    /// The chunk cipher.
    pub cipher: Cipher,
    /// Whether the data key was derived from the content (convergent
    /// encryption) rather than drawn at random.
    pub convergent: bool,
    /// The data key, wrapped once per holder.
    pub wrapped_keys: Vec<WrappedKey>,
}

/// One chunk of the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkEntry {
    /// Plaintext bytes in this chunk.
    pub plain_size: u32,
    /// Bytes of the stored form (compressed, then sealed).
    pub stored_size: u32,
    /// Compression applied before encryption.
    pub compression: Compression,
    /// CID of the stored form (raw, BLAKE3).
    pub cid: Cid,
    /// CIDs of the k+m shards, data shards first.
    pub shards: Vec<Cid>,
}

/// An immutable description of a stored file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version ([`MANIFEST_VERSION`]).
    pub version: u32,
    /// Plaintext size in bytes.
    pub size: u64,
    /// How the plaintext was chunked.
    pub chunking: Chunking,
    /// Erasure code parameters.
    pub erasure: Erasure,
    /// Encryption, absent for public files.
    pub encryption: Option<Encryption>,
    /// For public files: the CID IPFS gives the same bytes.
    pub unixfs: Option<Cid>,
    /// Ed25519 public key of the owner, who alone may delete the file.
    #[serde(with = "serde_bytes")]
    pub owner: Option<Vec<u8>>,
    /// Ed25519 public key of the node the owner uploads through, the only
    /// signer of the file's first location record: the owner's delegation
    /// to it, fixed by the file's CID (nobody can name another writer for
    /// the same file). Absent in manifests written before it existed, which
    /// encode exactly as they did (see `crates/node/src/admit.rs`).
    #[serde(default, with = "serde_bytes", skip_serializing_if = "Option::is_none")]
    pub writer: Option<Vec<u8>>,
    /// BLAKE3 Merkle root over the chunk CIDs (see [`merkle_root`]).
    #[serde(with = "serde_bytes")]
    pub merkle_root: Vec<u8>,
    /// The chunks, in file order.
    pub chunks: Vec<ChunkEntry>,
}

/// Why bytes are not a valid manifest.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Larger than [`limits::MAX_MANIFEST_SIZE`].
    #[error("manifest is {0} bytes, more than the {max} allowed", max = limits::MAX_MANIFEST_SIZE)]
    TooLarge(usize),
    /// Not DAG-CBOR of the expected shape.
    #[error("manifest does not decode: {0}")]
    Decode(String),
    /// Written by a newer DataMesh.
    #[error("manifest version {0} is newer than this build understands ({MANIFEST_VERSION}); upgrade datamesh")]
    UnknownVersion(u32),
    /// Decodes, but its fields contradict each other.
    #[error("manifest is inconsistent: {0}")]
    Invalid(String),
    /// The bytes do not hash to the CID they were fetched by.
    #[error("manifest bytes do not match CID {0}: the copy is corrupt or forged")]
    CidMismatch(Cid),
}

impl Manifest {
    /// Canonical DAG-CBOR encoding.
    pub fn encode(&self) -> Vec<u8> {
        // Encoding plain structs of strings, ints, bytes and CIDs cannot fail.
        serde_ipld_dagcbor::to_vec(self).expect("manifest encodes")
    }

    /// The manifest's CID: the file's CID for encrypted puts.
    pub fn cid(&self) -> Cid {
        Cid::dag_cbor_blake3(&self.encode())
    }

    /// Decodes and validates untrusted bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, ManifestError> {
        if bytes.len() > limits::MAX_MANIFEST_SIZE {
            return Err(ManifestError::TooLarge(bytes.len()));
        }
        // Peek the version first so a newer format gets a useful error.
        #[derive(Deserialize)]
        struct Head {
            version: u32,
        }
        let head: Head = serde_ipld_dagcbor::from_slice(bytes).map_err(|e| ManifestError::Decode(e.to_string()))?;
        if head.version != MANIFEST_VERSION {
            return Err(ManifestError::UnknownVersion(head.version));
        }
        let m: Manifest = serde_ipld_dagcbor::from_slice(bytes).map_err(|e| ManifestError::Decode(e.to_string()))?;
        m.validate()?;
        Ok(m)
    }

    /// Decodes bytes fetched by `cid`, checking they hash to it.
    pub fn decode_verified(cid: &Cid, bytes: &[u8]) -> Result<Self, ManifestError> {
        if cid.codec() != Codec::DagCbor || !cid.verifies(bytes) {
            return Err(ManifestError::CidMismatch(*cid));
        }
        Self::decode(bytes)
    }

    /// Checks internal consistency: sizes add up, shard counts match the
    /// code, limits hold, the Merkle root matches.
    pub fn validate(&self) -> Result<(), ManifestError> {
        let bad = |s: String| Err(ManifestError::Invalid(s));
        let Erasure { k, m } = self.erasure;
        if k == 0 || (k as usize + m as usize) > limits::MAX_TOTAL_SHARDS {
            return bad(format!("erasure {k}+{m} is outside 1..={} shards", limits::MAX_TOTAL_SHARDS));
        }
        let mut total = 0u64;
        for (i, c) in self.chunks.iter().enumerate() {
            if c.plain_size as usize > limits::MAX_CHUNK_SIZE || c.stored_size as usize > limits::MAX_STORED_CHUNK_SIZE
            {
                return bad(format!("chunk {i} exceeds the chunk size limit"));
            }
            if c.shards.len() != self.erasure.total() {
                return bad(format!("chunk {i} lists {} shards, expected {}", c.shards.len(), self.erasure.total()));
            }
            if c.cid.codec() != Codec::Raw || c.cid.hash_code() != BLAKE3 {
                return bad(format!("chunk {i} CID is not raw BLAKE3"));
            }
            if c.shards.iter().any(|s| s.codec() != Codec::Raw || s.hash_code() != BLAKE3) {
                return bad(format!("chunk {i} has a shard CID that is not raw BLAKE3"));
            }
            if self.encryption.is_none() && c.compression == Compression::None && c.plain_size != c.stored_size {
                return bad(format!("chunk {i} is stored uncompressed and unencrypted but sizes differ"));
            }
            total += c.plain_size as u64;
        }
        if total != self.size {
            return bad(format!("chunks hold {total} bytes but the file size is {}", self.size));
        }
        if let Some(e) = &self.encryption
            && (e.wrapped_keys.is_empty() || e.wrapped_keys.len() > limits::MAX_WRAPPED_KEYS)
        {
            return bad(format!("{} wrapped keys; 1..={} allowed", e.wrapped_keys.len(), limits::MAX_WRAPPED_KEYS));
        }
        if let Some(o) = &self.owner
            && o.len() != 32
        {
            return bad("owner key is not 32 bytes".into());
        }
        if let Some(w) = &self.writer
            && w.len() != 32
        {
            return bad("writer key is not 32 bytes".into());
        }
        if self.merkle_root.as_slice() != merkle_root(self.chunks.iter().map(|c| &c.cid)) {
            return bad("merkle root does not match the chunk list".into());
        }
        Ok(())
    }

    /// Byte offset of each chunk's first plaintext byte, plus the end.
    pub fn chunk_offsets(&self) -> Vec<u64> {
        let mut out = Vec::with_capacity(self.chunks.len() + 1);
        let mut at = 0u64;
        out.push(0);
        for c in &self.chunks {
            at += c.plain_size as u64;
            out.push(at);
        }
        out
    }
}

/// BLAKE3 binary Merkle tree over chunk CIDs: leaves are `H(0x00 || cid
/// bytes)`, inner nodes `H(0x01 || left || right)`, an odd node is promoted.
/// The empty list hashes to `H(0x02)`. Domain separation keeps a leaf from
/// posing as an inner node.
pub fn merkle_root<'a>(cids: impl Iterator<Item = &'a Cid>) -> Vec<u8> {
    let mut level: Vec<[u8; 32]> = cids
        .map(|c| {
            let mut h = blake3::Hasher::new();
            h.update(&[0]);
            h.update(&c.to_bytes());
            *h.finalize().as_bytes()
        })
        .collect();
    if level.is_empty() {
        return blake3::hash(&[2]).as_bytes().to_vec();
    }
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|p| match p {
                [l, r] => {
                    let mut h = blake3::Hasher::new();
                    h.update(&[1]);
                    h.update(l);
                    h.update(r);
                    *h.finalize().as_bytes()
                }
                [one] => *one,
                _ => unreachable!("chunks(2) yields one or two"),
            })
            .collect();
    }
    level[0].to_vec()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sample(n: usize) -> Manifest {
        let chunks: Vec<ChunkEntry> = (0..n)
            .map(|i| ChunkEntry {
                plain_size: 10,
                stored_size: 38,
                compression: Compression::None,
                cid: Cid::raw_blake3(&[i as u8]),
                shards: (0..6).map(|j| Cid::raw_blake3(&[i as u8, j])).collect(),
            })
            .collect();
        Manifest {
            version: MANIFEST_VERSION,
            size: 10 * n as u64,
            chunking: Chunking::Fixed { size: 10 },
            erasure: Erasure::DEFAULT,
            encryption: Some(Encryption {
                cipher: Cipher::Aes256Gcm,
                convergent: false,
                wrapped_keys: vec![WrappedKey::X25519 {
                    recipient: vec![1; 32],
                    enc: vec![2; 32],
                    sealed: vec![3; 48],
                }],
            }),
            unixfs: None,
            owner: Some(vec![7; 32]),
            writer: None,
            merkle_root: merkle_root(chunks.iter().map(|c| &c.cid)),
            chunks,
        }
    }

    #[test]
    fn round_trip_and_cid_is_stable() {
        let m = sample(3);
        let bytes = m.encode();
        let back = Manifest::decode_verified(&m.cid(), &bytes).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.cid(), m.cid());
    }

    #[test]
    fn inconsistent_manifests_are_refused() {
        let mut m = sample(2);
        m.size += 1;
        assert!(matches!(Manifest::decode(&m.encode()), Err(ManifestError::Invalid(_))));
        let mut m = sample(2);
        m.chunks[1].shards.pop();
        assert!(matches!(Manifest::decode(&m.encode()), Err(ManifestError::Invalid(_))));
        let mut m = sample(2);
        m.chunks.swap(0, 1);
        assert!(matches!(Manifest::decode(&m.encode()), Err(ManifestError::Invalid(_))));
        let mut m = sample(1);
        m.version = 9;
        assert!(matches!(Manifest::decode(&m.encode()), Err(ManifestError::UnknownVersion(9))));
    }

    #[test]
    fn shard_size_is_even_and_covers_the_chunk() {
        for k in 1..12u16 {
            let e = Erasure { k, m: 2 };
            for len in [0usize, 1, 2, 3, 100, 4097, 4 << 20] {
                let s = e.shard_size(len);
                assert!(s.is_multiple_of(2) && s >= 2 && s * k as usize >= len);
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Any flipped bit in an encoded manifest is caught by the CID check.
        #[test]
        fn any_flipped_bit_is_caught(n in 0usize..5, bit in 0usize..100_000) {
            let m = sample(n);
            let cid = m.cid();
            let mut bytes = m.encode();
            let bit = bit % (bytes.len() * 8);
            bytes[bit / 8] ^= 1 << (bit % 8);
            proptest::prop_assert!(Manifest::decode_verified(&cid, &bytes).is_err());
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = Manifest::decode(&bytes);
        }
    }
}
