//! Location records (signed, replicated by peers): never panic on hostile
//! bytes; what decodes re-encodes to a record that decodes equal; a record
//! of any shape, once signed, decodes to itself or is refused for its shape
//! (never for its signature); any record `sign` builds round-trips.
#![no_main]
use datamesh_core::location::{LocationError, MAX_LOCATION_SIZE};
use datamesh_core::{Cid, HolderId, LocationRecord};
use ed25519_dalek::{Signer, SigningKey};
use libfuzzer_sys::fuzz_target;

fn key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = LocationRecord::decode(data) {
        assert_eq!(LocationRecord::decode(&r.encode()).expect("a decoded record re-decodes"), r);
        // Rebuilding the first record from a hostile origin never panics,
        // and what it rebuilds is a seq-1 record of the same file.
        if let Ok(Some(first)) = r.first_record() {
            assert_eq!((first.seq, first.manifest, first.chunks.len()), (1, r.manifest, r.chunks.len()));
        }
    }
    // The same bytes as a record's shape, signed here: the signature checks
    // are then passed, so the shape checks behind them are reached.
    if let Ok(mut r) = serde_ipld_dagcbor::from_slice::<LocationRecord>(data) {
        r.signer = key().verifying_key().to_bytes().to_vec();
        r.signature = Vec::new();
        let unsigned = serde_ipld_dagcbor::to_vec(&r).expect("encodes");
        r.signature = key().sign(&unsigned).to_bytes().to_vec();
        let bytes = r.encode();
        match LocationRecord::decode(&bytes) {
            Ok(back) => {
                assert_eq!(back, r);
                let _ = back.first_record();
                for c in 0..back.chunks.len() {
                    assert_eq!(back.holders_of(c).len(), back.chunks[c].len());
                    for s in 0..back.chunks[c].len() {
                        assert!(back.holder(c, s).is_some());
                    }
                }
            }
            Err(LocationError::UnknownVersion(_) | LocationError::Invalid(_)) => {}
            Err(LocationError::Decode(_)) => assert!(bytes.len() > MAX_LOCATION_SIZE),
            Err(e @ LocationError::BadSignature) => panic!("a freshly signed record: {e}"),
        }
    }
    // A record built by `sign` from arbitrary holders round-trips.
    if let Some((&shape, rest)) = data.split_first() {
        let width = (shape % 8) as usize + 1;
        let chunks: Vec<Vec<Vec<u8>>> = rest
            .chunks(width * 2)
            .map(|c| c.chunks(2).map(|h| vec![h[0] % 8 + 1; h.get(1).map_or(1, |&n| n as usize % 64 + 1)]).collect())
            .collect();
        // Valid seqs are 1..u64::MAX.
        let seq = u64::from(shape).wrapping_mul(0x9e37_79b9_7f4a_7c15).clamp(1, u64::MAX - 1);
        let r = LocationRecord::sign(Cid::dag_cbor_blake3(rest), seq, &chunks, &key());
        let back = LocationRecord::decode(&r.encode()).expect("a signed record decodes");
        assert_eq!(back, r);
        for (c, row) in chunks.iter().enumerate() {
            for (s, h) in row.iter().enumerate() {
                assert_eq!(back.holder(c, s).map(HolderId::as_slice), Some(&h[..]));
            }
        }
        // Its rewrite (the rows rotated) carries it as its origin.
        if let Some(next) = r.next_seq().filter(|_| r.seq == 1).map(|_| {
            let rotated: Vec<Vec<Vec<u8>>> = chunks.iter().map(|row| row.iter().rev().cloned().collect()).collect();
            LocationRecord::sign_rewrite(&r, &rotated, &key()).expect("a rewrite of a valid record")
        }) {
            let back = LocationRecord::decode(&next.encode()).expect("a signed rewrite decodes");
            assert_eq!(back.first_record().expect("its origin rebuilds"), Some(r.clone()));
        }
    }
});
