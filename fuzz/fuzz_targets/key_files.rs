//! User key files and public key text: never panic on hostile input.
#![no_main]
use datamesh_pipeline::keys::{UserKey, UserPublicKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = UserKey::is_protected(data);
    let _ = UserKey::public_from_file_bytes(data);
    // Unprotected files only: a passphrase would run Argon2 on every input.
    if !UserKey::is_protected(data) {
        let _ = UserKey::from_file_bytes(data, None);
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = s.parse::<UserPublicKey>();
    }
});
