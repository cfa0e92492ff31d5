//! Versioned encodings of the index records, kept apart from the in-memory
//! structs so the on-disk format can evolve without touching callers.
//!
//! Every value starts with a version byte, then fixed little-endian fields:
//!
//! ```text
//! ShardRecord v1    [1][size u64][stored_at u64][last_access u64][verified_at u64]
//!                   [index u16][chunk_cid_len u8][chunk CID bytes]
//! ManifestRecord v1 [1][size u64][stored_at u64]
//! PinInfo v1        [1][size u64][created_at u64][has_name u8]
//!                   ([name_len u32][name UTF-8])   -- only if has_name = 1
//! PinInfo v2        [2][size u64][created_at u64][replica u8][has_name u8]
//!                   ([name_len u32][name UTF-8])   -- v1 reads as replica = 0
//! ```
//!
//! Keys are the binary form of the CID (`Cid::to_bytes`). Timestamps are
//! unix seconds. Decoders take untrusted bytes and never panic (proptested;
//! `ShardRecord::decode` is public so a cargo-fuzz target can call it).

use datamesh_core::Cid;

/// Version byte of [`ShardRecord`] encodings this build writes.
pub const SHARD_RECORD_VERSION: u8 = 1;
/// Version byte of [`ManifestRecord`] encodings this build writes.
pub const MANIFEST_RECORD_VERSION: u8 = 1;
/// Version byte of [`crate::PinInfo`] encodings this build writes.
pub const PIN_RECORD_VERSION: u8 = 2;

/// Why a record's bytes do not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Zero bytes.
    #[error("record is empty")]
    Empty,
    /// A version this build does not know (written by a newer DataMesh).
    #[error("record version {0} is unknown to this build")]
    UnknownVersion(u8),
    /// Fewer bytes than the fields need.
    #[error("record is truncated")]
    Truncated,
    /// Bytes left over after the last field.
    #[error("record has {0} trailing bytes")]
    Trailing(usize),
    /// The embedded CID does not parse.
    #[error("record holds a bad CID: {0}")]
    BadCid(String),
    /// The pin name is not UTF-8, or a flag byte is not 0 or 1.
    #[error("record holds a malformed field: {0}")]
    Malformed(&'static str),
}

/// What the index knows about one stored shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardRecord {
    /// The stored chunk this shard belongs to.
    pub chunk: Cid,
    /// Position of the shard in the chunk's k+m shards.
    pub index: u16,
    /// Size of the shard in bytes.
    pub size: u64,
    /// When the shard was stored (unix seconds).
    pub stored_at: u64,
    /// When the shard was last read, to within the store's access-time
    /// granularity (unix seconds).
    pub last_access: u64,
    /// When the shard's bytes were last checked against its CID (unix seconds).
    pub verified_at: u64,
}

impl ShardRecord {
    /// The version-1 encoding.
    pub fn encode(&self) -> Vec<u8> {
        let chunk = self.chunk.to_bytes();
        let mut out = Vec::with_capacity(1 + 8 * 4 + 2 + 1 + chunk.len());
        out.push(SHARD_RECORD_VERSION);
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.stored_at.to_le_bytes());
        out.extend_from_slice(&self.last_access.to_le_bytes());
        out.extend_from_slice(&self.verified_at.to_le_bytes());
        out.extend_from_slice(&self.index.to_le_bytes());
        // A valid CID is at most ~40 bytes; the u8 length cannot overflow.
        out.push(chunk.len() as u8);
        out.extend_from_slice(&chunk);
        out
    }

    /// Decodes untrusted bytes. Never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let mut r = Reader::new(bytes);
        match r.u8().map_err(|_| RecordError::Empty)? {
            SHARD_RECORD_VERSION => {}
            v => return Err(RecordError::UnknownVersion(v)),
        }
        let size = r.u64()?;
        let stored_at = r.u64()?;
        let last_access = r.u64()?;
        let verified_at = r.u64()?;
        let index = r.u16()?;
        let len = r.u8()? as usize;
        let chunk = Cid::from_bytes(r.take(len)?).map_err(|e| RecordError::BadCid(e.to_string()))?;
        r.finish()?;
        Ok(ShardRecord { chunk, index, size, stored_at, last_access, verified_at })
    }
}

/// What the index knows about one stored manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManifestRecord {
    /// Size of the encoded manifest in bytes.
    pub size: u64,
    /// When it was stored (unix seconds).
    pub stored_at: u64,
}

impl ManifestRecord {
    /// The version-1 encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(17);
        out.push(MANIFEST_RECORD_VERSION);
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.stored_at.to_le_bytes());
        out
    }

    /// Decodes untrusted bytes. Never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let mut r = Reader::new(bytes);
        match r.u8().map_err(|_| RecordError::Empty)? {
            MANIFEST_RECORD_VERSION => {}
            v => return Err(RecordError::UnknownVersion(v)),
        }
        let size = r.u64()?;
        let stored_at = r.u64()?;
        r.finish()?;
        Ok(ManifestRecord { size, stored_at })
    }
}

impl crate::PinInfo {
    /// The version-2 encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(23 + self.name.as_ref().map_or(0, String::len));
        out.push(PIN_RECORD_VERSION);
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.created_at.to_le_bytes());
        out.push(u8::from(self.replica));
        match &self.name {
            None => out.push(0),
            Some(n) => {
                out.push(1);
                // Names are capped at MAX_PIN_NAME (far below u32::MAX) by `Store::pin`.
                out.extend_from_slice(&(n.len() as u32).to_le_bytes());
                out.extend_from_slice(n.as_bytes());
            }
        }
        out
    }

    /// Decodes untrusted bytes. Never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let mut r = Reader::new(bytes);
        let version = r.u8().map_err(|_| RecordError::Empty)?;
        if !(1..=PIN_RECORD_VERSION).contains(&version) {
            return Err(RecordError::UnknownVersion(version));
        }
        let size = r.u64()?;
        let created_at = r.u64()?;
        let replica = match version {
            1 => false,
            _ => match r.u8()? {
                0 => false,
                1 => true,
                _ => return Err(RecordError::Malformed("pin replica flag is not 0 or 1")),
            },
        };
        let name = match r.u8()? {
            0 => None,
            1 => {
                let len = r.u32()? as usize;
                let raw = r.take(len)?;
                Some(String::from_utf8(raw.to_vec()).map_err(|_| RecordError::Malformed("pin name is not UTF-8"))?)
            }
            _ => return Err(RecordError::Malformed("pin name flag is not 0 or 1")),
        };
        r.finish()?;
        Ok(crate::PinInfo { name, size, created_at, replica })
    }
}

/// A bounds-checked cursor over untrusted bytes.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.buf.len() < n {
            return Err(RecordError::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, RecordError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, RecordError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, RecordError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn finish(&self) -> Result<(), RecordError> {
        if self.buf.is_empty() { Ok(()) } else { Err(RecordError::Trailing(self.buf.len())) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PinInfo;
    use proptest::prelude::*;

    fn sample() -> ShardRecord {
        ShardRecord {
            chunk: Cid::raw_blake3(b"chunk"),
            index: 5,
            size: 1 << 20,
            stored_at: 1_700_000_000,
            last_access: 1_700_000_100,
            verified_at: 1_700_000_200,
        }
    }

    #[test]
    fn shard_record_round_trips_and_is_stable() {
        let r = sample();
        let bytes = r.encode();
        assert_eq!(bytes[0], 1);
        assert_eq!(ShardRecord::decode(&bytes).unwrap(), r);
        // A fixture of the v1 layout: if this changes, old data dirs break.
        // A fixture of the v1 layout (up to the chunk CID's digest): if this
        // changes, existing data dirs no longer decode.
        let fixture = concat!(
            "01",               // version
            "0000100000000000", // size
            "00f1536500000000", // stored_at
            "64f1536500000000", // last_access
            "c8f1536500000000", // verified_at
            "0500",             // index
            "24",               // CID length
            "01551e20",         // CIDv1, raw, BLAKE3, 32 bytes
        );
        assert!(hex_of(&bytes).starts_with(fixture), "{}", hex_of(&bytes));
        assert_eq!(bytes.len(), fixture.len() / 2 + 32);
    }

    fn hex_of(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn decoders_name_the_problem() {
        assert_eq!(ShardRecord::decode(&[]), Err(RecordError::Empty));
        assert_eq!(ShardRecord::decode(&[9]), Err(RecordError::UnknownVersion(9)));
        let bytes = sample().encode();
        assert_eq!(ShardRecord::decode(&bytes[..20]), Err(RecordError::Truncated));
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(ShardRecord::decode(&long), Err(RecordError::Trailing(1)));
    }

    #[test]
    fn pin_and_manifest_records_round_trip() {
        for name in [None, Some(String::new()), Some("holiday photos ✈".to_string())] {
            for replica in [false, true] {
                let p = PinInfo { name: name.clone(), size: 42, created_at: 7, replica };
                assert_eq!(PinInfo::decode(&p.encode()).unwrap(), p);
            }
        }
        // A version-1 pin (written before replicas were marked) is a user pin.
        let mut v1 = vec![1u8];
        v1.extend_from_slice(&42u64.to_le_bytes());
        v1.extend_from_slice(&7u64.to_le_bytes());
        v1.extend_from_slice(&[1, 2, 0, 0, 0, b'h', b'i']);
        assert_eq!(
            PinInfo::decode(&v1).unwrap(),
            PinInfo { name: Some("hi".into()), size: 42, created_at: 7, replica: false }
        );
        let m = ManifestRecord { size: 9, stored_at: 10 };
        assert_eq!(ManifestRecord::decode(&m.encode()).unwrap(), m);
    }

    proptest! {
        #[test]
        fn shard_record_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = ShardRecord::decode(&bytes);
        }

        #[test]
        fn shard_record_decode_never_panics_near_valid(cut in 0usize..80, flip in 0usize..640, v in 0u8..3) {
            // Mutations of a valid record reach deeper than random bytes.
            let mut bytes = sample().encode();
            bytes[0] = v;
            let bit = flip % (bytes.len() * 8);
            bytes[bit / 8] ^= 1 << (bit % 8);
            bytes.truncate(cut.min(bytes.len()));
            let _ = ShardRecord::decode(&bytes);
        }

        #[test]
        fn pin_and_manifest_decode_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = PinInfo::decode(&bytes);
            let _ = ManifestRecord::decode(&bytes);
        }

        #[test]
        fn shard_record_round_trips(index in any::<u16>(), size in any::<u64>(), t in any::<[u64; 3]>(), seed in any::<[u8; 8]>()) {
            let r = ShardRecord { chunk: Cid::raw_blake3(&seed), index, size, stored_at: t[0], last_access: t[1], verified_at: t[2] };
            prop_assert_eq!(ShardRecord::decode(&r.encode()).unwrap(), r);
        }
    }
}
