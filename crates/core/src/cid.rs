//! Content identifiers: CIDv1 with a multihash, printed in multibase base32.
//!
//! DataMesh uses three kinds:
//! - shards and stored chunks: codec `raw`, BLAKE3-256, so a proof over a
//!   shard's bytes verifies against its CID alone;
//! - manifests: codec `dag-cbor`, BLAKE3-256; the manifest CID is the file's
//!   CID for encrypted puts;
//! - public files: the UnixFS DAG root exactly as IPFS computes it (codec
//!   `dag-pb` or `raw`, SHA2-256).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Multicodec code of raw bytes.
pub const RAW: u64 = 0x55;
/// Multicodec code of DAG-CBOR.
pub const DAG_CBOR: u64 = 0x71;
/// Multicodec code of DAG-PB (UnixFS nodes).
pub const DAG_PB: u64 = 0x70;
/// Multihash code of SHA2-256.
pub const SHA2_256: u64 = 0x12;
/// Multihash code of BLAKE3 (256-bit output).
pub const BLAKE3: u64 = 0x1e;

/// What a CID's bytes are, by multicodec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// Raw bytes: shards, stored chunks, UnixFS raw leaves.
    Raw,
    /// A DataMesh manifest in DAG-CBOR.
    DagCbor,
    /// A UnixFS DAG-PB node.
    DagPb,
}

/// Why a string or byte sequence is not a CID DataMesh can use.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CidError {
    /// Not a CID at all.
    #[error("`{input}` is not a valid CID: {reason}")]
    Malformed {
        /// The text as given (truncated).
        input: String,
        /// The parser's reason.
        reason: String,
    },
    /// A CIDv0 (`Qm...`), which DataMesh does not issue.
    #[error("`{0}` is a CIDv0; DataMesh uses CIDv1 (`ipfs cid format -v 1` converts it)")]
    Version0(String),
    /// A codec or hash function DataMesh never produces.
    #[error("CID `{cid}` uses {what} {code:#x}, which DataMesh does not store")]
    Unsupported {
        /// The CID.
        cid: String,
        /// "codec" or "hash function".
        what: &'static str,
        /// The multicodec code.
        code: u64,
    },
}

/// A CIDv1 whose codec and hash DataMesh knows.
///
/// Invariant: version 1, codec in {raw, dag-cbor, dag-pb}, hash in
/// {BLAKE3-256, SHA2-256} with a 32-byte digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cid(cid::Cid);

/// In binary formats (DAG-CBOR) a CID is the IPLD link (tag 42); in
/// human-readable ones (JSON) it is its base32 text.
impl Serialize for Cid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() { s.collect_str(&self.0) } else { self.0.serialize(s) }
    }
}

impl<'de> Deserialize<'de> for Cid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            s.parse().map_err(D::Error::custom)
        } else {
            Cid::try_from(cid::Cid::deserialize(d)?).map_err(D::Error::custom)
        }
    }
}

impl Cid {
    /// The CID of raw bytes under BLAKE3 (shards and stored chunks).
    pub fn raw_blake3(bytes: &[u8]) -> Self {
        Self::from_blake3(RAW, blake3::hash(bytes).as_bytes())
    }

    /// A CID from an already computed BLAKE3 digest.
    pub fn from_blake3(codec: u64, digest: &[u8; 32]) -> Self {
        Self::from_digest(codec, BLAKE3, digest)
    }

    /// A CID from an already computed SHA2-256 digest.
    pub fn from_sha256(codec: u64, digest: &[u8; 32]) -> Self {
        Self::from_digest(codec, SHA2_256, digest)
    }

    fn from_digest(codec: u64, hash: u64, digest: &[u8; 32]) -> Self {
        // A 32-byte digest always fits the 64-byte multihash.
        let mh = multihash::Multihash::<64>::wrap(hash, digest).expect("32-byte digest fits");
        Cid(cid::Cid::new_v1(codec, mh))
    }

    /// The CID of DAG-CBOR bytes (a manifest) under BLAKE3.
    pub fn dag_cbor_blake3(bytes: &[u8]) -> Self {
        Self::from_blake3(DAG_CBOR, blake3::hash(bytes).as_bytes())
    }

    /// What the CID's bytes are.
    pub fn codec(&self) -> Codec {
        match self.0.codec() {
            RAW => Codec::Raw,
            DAG_CBOR => Codec::DagCbor,
            _ => Codec::DagPb,
        }
    }

    /// The multihash code (BLAKE3 or SHA2-256).
    pub fn hash_code(&self) -> u64 {
        self.0.hash().code()
    }

    /// The 32-byte digest.
    pub fn digest(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.0.hash().digest());
        out
    }

    /// Whether `bytes` hash to this CID. This is the check made on every read.
    pub fn verifies(&self, bytes: &[u8]) -> bool {
        let d = match self.hash_code() {
            BLAKE3 => *blake3::hash(bytes).as_bytes(),
            _ => {
                use sha2::Digest;
                sha2::Sha256::digest(bytes).into()
            }
        };
        d == self.digest()
    }

    /// An incremental hasher for bytes that arrive (or are read) in pieces,
    /// under this CID's hash function; [`CidHasher::verifies`] is then the
    /// same check as [`Cid::verifies`] over the concatenated pieces.
    pub fn hasher(&self) -> CidHasher {
        let state = match self.hash_code() {
            BLAKE3 => HashState::Blake3(Box::default()),
            _ => HashState::Sha256(Default::default()),
        };
        CidHasher { digest: self.digest(), state }
    }

    /// The binary form (as in a multihash-prefixed CID).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.to_bytes()
    }

    /// Parses the binary form, with the same checks as the text form. The
    /// bytes must be exactly one CID: `cid` reads a CID off the front of a
    /// buffer and ignores what follows, which would give one CID many
    /// encodings (a CID field with bytes past its end would decode).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CidError> {
        let malformed =
            |reason: String| CidError::Malformed { input: hex::encode(&bytes[..bytes.len().min(48)]), reason };
        let c = cid::Cid::try_from(bytes).map_err(|e| malformed(e.to_string()))?;
        if c.encoded_len() != bytes.len() {
            return Err(malformed(format!("{} bytes past the CID's end", bytes.len() - c.encoded_len())));
        }
        Self::try_from(c)
    }

    /// The underlying `cid::Cid`.
    pub fn inner(&self) -> &cid::Cid {
        &self.0
    }
}

/// Hashes bytes piece by piece and checks them against a CID (see
/// [`Cid::hasher`]). Memory is the hash state, whatever the length.
#[derive(Clone)]
pub struct CidHasher {
    digest: [u8; 32],
    state: HashState,
}

#[derive(Clone)]
enum HashState {
    Blake3(Box<blake3::Hasher>),
    Sha256(sha2::Sha256),
}

impl CidHasher {
    /// Adds the next piece.
    pub fn update(&mut self, piece: &[u8]) {
        match &mut self.state {
            HashState::Blake3(h) => {
                h.update(piece);
            }
            HashState::Sha256(h) => sha2::Digest::update(h, piece),
        }
    }

    /// Whether everything added so far hashes to the CID.
    pub fn verifies(&self) -> bool {
        let d: [u8; 32] = match &self.state {
            HashState::Blake3(h) => *h.finalize().as_bytes(),
            HashState::Sha256(h) => sha2::Digest::finalize(h.clone()).into(),
        };
        d == self.digest
    }
}

impl fmt::Debug for CidHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CidHasher")
    }
}

impl TryFrom<cid::Cid> for Cid {
    type Error = CidError;
    fn try_from(c: cid::Cid) -> Result<Self, CidError> {
        if c.version() != cid::Version::V1 {
            return Err(CidError::Version0(c.to_string()));
        }
        if !matches!(c.codec(), RAW | DAG_CBOR | DAG_PB) {
            return Err(CidError::Unsupported { cid: c.to_string(), what: "codec", code: c.codec() });
        }
        let h = c.hash();
        if !matches!(h.code(), BLAKE3 | SHA2_256) || h.size() != 32 {
            return Err(CidError::Unsupported { cid: c.to_string(), what: "hash function", code: h.code() });
        }
        Ok(Cid(c))
    }
}

impl From<Cid> for cid::Cid {
    fn from(c: Cid) -> Self {
        c.0
    }
}

impl FromStr for Cid {
    type Err = CidError;
    fn from_str(s: &str) -> Result<Self, CidError> {
        let s = s.trim();
        let shown: String = s.chars().take(80).collect();
        if s.starts_with("Qm") && s.len() == 46 {
            return Err(CidError::Version0(shown));
        }
        let malformed = |reason: String| CidError::Malformed { input: shown.clone(), reason };
        let c = cid::Cid::try_from(s).map_err(|e| malformed(e.to_string()))?;
        let c = Self::try_from(c)?;
        // As for the binary form: the text is exactly one CID.
        let (_, bytes) = multibase::decode(s).map_err(|e| malformed(e.to_string()))?;
        if bytes.len() != c.0.encoded_len() {
            return Err(malformed(format!(
                "{} bytes past the CID's end",
                bytes.len().saturating_sub(c.0.encoded_len())
            )));
        }
        Ok(c)
    }
}

impl fmt::Display for Cid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // CIDv1 displays as lowercase base32 ("b..."), the IPFS default.
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for Cid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cid({})", self.0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn empty_raw_sha256_matches_ipfs() {
        use sha2::Digest;
        let d: [u8; 32] = sha2::Sha256::digest(b"").into();
        let c = Cid::from_sha256(RAW, &d);
        // `ipfs add --cid-version 1` of an empty file.
        assert_eq!(c.to_string(), "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku");
    }

    #[test]
    fn text_and_binary_round_trip() {
        let c = Cid::raw_blake3(b"hello");
        assert_eq!(c.to_string().parse::<Cid>().unwrap(), c);
        assert_eq!(Cid::from_bytes(&c.to_bytes()).unwrap(), c);
        assert!(c.verifies(b"hello"));
        assert!(!c.verifies(b"hellp"));
        for c in [
            c,
            Cid::from_sha256(RAW, &{
                use sha2::Digest;
                sha2::Sha256::digest(b"hello").into()
            }),
        ] {
            let mut h = c.hasher();
            h.update(b"he");
            assert!(!h.verifies());
            h.update(b"llo");
            assert!(h.verifies());
            h.update(b"!");
            assert!(!h.verifies());
        }
    }

    #[test]
    fn bad_input_is_named() {
        assert!(matches!("not-a-cid".parse::<Cid>(), Err(CidError::Malformed { .. })));
        assert!(matches!("QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG".parse::<Cid>(), Err(CidError::Version0(_))));
        assert!(matches!(Cid::from_bytes(&[1, 2, 3]), Err(CidError::Malformed { .. })));
    }

    #[test]
    fn bytes_past_the_end_of_a_cid_are_refused() {
        // Found by fuzzing (the tombstone target): a CID field with a byte
        // past the CID's end decoded, so one CID had many encodings.
        let c = Cid::dag_cbor_blake3(b"m");
        let mut b = c.to_bytes();
        b.push(0);
        assert!(matches!(Cid::from_bytes(&b), Err(CidError::Malformed { .. })));
        assert!(matches!(Cid::from_bytes(&b[..b.len() - 2]), Err(CidError::Malformed { .. })));
        let text = multibase::encode(multibase::Base::Base32Lower, &b);
        assert!(matches!(text.parse::<Cid>(), Err(CidError::Malformed { .. })), "{text}");
        assert_eq!(multibase::encode(multibase::Base::Base32Lower, c.to_bytes()).parse::<Cid>().unwrap(), c);
    }

    #[test]
    fn json_is_text_and_cbor_is_a_link() {
        let c = Cid::raw_blake3(b"x");
        let j = serde_json::to_string(&c).unwrap();
        assert_eq!(j, format!("\"{c}\""));
        assert_eq!(serde_json::from_str::<Cid>(&j).unwrap(), c);
        let b = serde_ipld_dagcbor::to_vec(&c).unwrap();
        assert_eq!(b[0..2], [0xd8, 42]);
        assert_eq!(serde_ipld_dagcbor::from_slice::<Cid>(&b).unwrap(), c);
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,120}") { let _ = s.parse::<Cid>(); }
        #[test]
        fn from_bytes_never_panics(b in proptest::collection::vec(proptest::num::u8::ANY, 0..80)) {
            let _ = Cid::from_bytes(&b);
        }
    }
}
