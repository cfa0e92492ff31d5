//! Tombstones (an owner's signed delete, sent to every holder): never panic
//! on hostile bytes or keys; what decodes re-encodes to the same bytes; any
//! tombstone round-trips.
#![no_main]
use datamesh_core::Cid;
use datamesh_core::tombstone::Tombstone;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = Tombstone::decode(data) {
        assert_eq!(t.encode(), data, "one encoding per tombstone");
        assert_eq!(Tombstone::decode(&t.encode()).ok(), Some(t.clone()));
        // Whatever key a manifest names: no panic, and a wrong one fails.
        let _ = t.verify(data.get(..32));
        let _ = t.verify(Some(data));
        let _ = t.verify(None);
    }
    // Any tombstone of a CID we issue round-trips.
    if data.len() >= 72 {
        let cid = if data[0] & 1 == 0 { Cid::raw_blake3(&data[72..]) } else { Cid::dag_cbor_blake3(&data[72..]) };
        let t = Tombstone {
            manifest: cid,
            deleted_at: u64::from_be_bytes(data[..8].try_into().expect("8 bytes")),
            signature: data[8..72].try_into().expect("64 bytes"),
        };
        assert_eq!(Tombstone::decode(&t.encode()).ok(), Some(t));
    }
});
