//! Manifests from untrusted bytes: never panic; what decodes re-encodes to
//! a manifest that decodes to the same value.
#![no_main]
use datamesh_core::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::decode(data) {
        let again = Manifest::decode(&m.encode()).expect("a valid manifest re-decodes");
        assert_eq!(again, m);
    }
});
