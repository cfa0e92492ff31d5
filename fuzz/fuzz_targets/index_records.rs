//! The store's index records (shards, manifests, pins): never panic; what
//! decodes re-encodes to the same record.
#![no_main]
use datamesh_store::record::ManifestRecord;
use datamesh_store::{PinInfo, ShardRecord};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = ShardRecord::decode(data) {
        assert_eq!(ShardRecord::decode(&r.encode()).ok(), Some(r));
    }
    if let Ok(r) = ManifestRecord::decode(data) {
        assert_eq!(ManifestRecord::decode(&r.encode()).ok(), Some(r));
    }
    if let Ok(r) = PinInfo::decode(data) {
        assert_eq!(PinInfo::decode(&r.encode()).ok(), Some(r));
    }
});
