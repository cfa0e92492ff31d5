//! Properties of the sealed-chunk format: round trips, tamper detection,
//! position binding, nonce behaviour, convergence, and a frozen known answer.
#![allow(clippy::unwrap_used)]

use datamesh_core::manifest::{Chunking, Cipher};
use datamesh_pipeline::crypto::{
    CryptoError, DataKey, NonceMode, TAG_LEN, convergent_params, nonce_len, open_chunk, seal_chunk, sealed_len,
};
use proptest::prelude::*;

const CIPHERS: [Cipher; 2] = [Cipher::Aes256Gcm, Cipher::XChaCha20Poly1305];

fn any_cipher() -> impl Strategy<Value = Cipher> {
    prop_oneof![Just(Cipher::Aes256Gcm), Just(Cipher::XChaCha20Poly1305)]
}

fn any_mode() -> impl Strategy<Value = NonceMode> {
    prop_oneof![Just(NonceMode::Random), Just(NonceMode::Convergent)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn round_trip(cipher in any_cipher(), mode in any_mode(), key in any::<[u8; 32]>(), index in any::<u64>(),
                  data in proptest::collection::vec(any::<u8>(), 0..=8192)) {
        let key = DataKey::from_bytes(key);
        let sealed = seal_chunk(cipher, &key, index, &data, mode);
        prop_assert_eq!(sealed.len(), sealed_len(cipher, data.len()));
        prop_assert_eq!(open_chunk(cipher, &key, index, &sealed).unwrap(), data);
    }

    #[test]
    fn any_flipped_bit_fails(cipher in any_cipher(), mode in any_mode(), index in any::<u64>(),
                             data in proptest::collection::vec(any::<u8>(), 0..=2048), bit in any::<usize>()) {
        let key = DataKey::random();
        let mut sealed = seal_chunk(cipher, &key, index, &data, mode);
        let bit = bit % (sealed.len() * 8);
        sealed[bit / 8] ^= 1 << (bit % 8);
        prop_assert_eq!(open_chunk(cipher, &key, index, &sealed), Err(CryptoError::Authentication));
    }

    #[test]
    fn wrong_index_fails(cipher in any_cipher(), mode in any_mode(), index in any::<u64>(), other in any::<u64>(),
                         data in proptest::collection::vec(any::<u8>(), 0..=1024)) {
        prop_assume!(index != other);
        let key = DataKey::random();
        let sealed = seal_chunk(cipher, &key, index, &data, mode);
        prop_assert_eq!(open_chunk(cipher, &key, other, &sealed), Err(CryptoError::Authentication));
    }

    #[test]
    fn wrong_key_fails(cipher in any_cipher(), mode in any_mode(), k1 in any::<[u8; 32]>(), k2 in any::<[u8; 32]>(),
                       data in proptest::collection::vec(any::<u8>(), 0..=1024)) {
        prop_assume!(k1 != k2);
        let sealed = seal_chunk(cipher, &DataKey::from_bytes(k1), 3, &data, mode);
        prop_assert_eq!(open_chunk(cipher, &DataKey::from_bytes(k2), 3, &sealed), Err(CryptoError::Authentication));
    }

    #[test]
    fn truncated_input_is_refused_without_panic(cipher in any_cipher(),
                                                junk in proptest::collection::vec(any::<u8>(), 0..80)) {
        let key = DataKey::random();
        let r = open_chunk(cipher, &key, 0, &junk);
        if junk.len() < nonce_len(cipher) + TAG_LEN {
            prop_assert_eq!(r, Err(CryptoError::Truncated));
        } else {
            prop_assert_eq!(r, Err(CryptoError::Authentication));
        }
    }
}

#[test]
fn sizes_across_boundaries_round_trip() {
    let key = DataKey::random();
    for cipher in CIPHERS {
        for len in [0usize, 1, 15, 16, 17, 63, 64, 65, 4095, 4096, 4097, 65536 + 3] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + 1) as u8).collect();
            for mode in [NonceMode::Random, NonceMode::Convergent] {
                let s = seal_chunk(cipher, &key, len as u64, &data, mode);
                assert_eq!(s.len(), nonce_len(cipher) + len + TAG_LEN);
                assert_eq!(open_chunk(cipher, &key, len as u64, &s).unwrap(), data, "{cipher:?} {len}");
            }
        }
    }
}

#[test]
fn ciphertext_does_not_contain_the_plaintext() {
    let key = DataKey::random();
    let data = vec![0u8; 1024];
    for cipher in CIPHERS {
        let s = seal_chunk(cipher, &key, 0, &data, NonceMode::Random);
        let body = &s[nonce_len(cipher)..s.len() - TAG_LEN];
        assert!(body.iter().filter(|&&b| b == 0).count() < 32, "{cipher:?} looks unencrypted");
    }
}

#[test]
fn random_mode_never_repeats_a_nonce() {
    let key = DataKey::random();
    for cipher in CIPHERS {
        let nl = nonce_len(cipher);
        let mut nonces = std::collections::HashSet::new();
        let mut sealed = std::collections::HashSet::new();
        for _ in 0..200 {
            let s = seal_chunk(cipher, &key, 5, b"same chunk, sent again", NonceMode::Random);
            assert!(nonces.insert(s[..nl].to_vec()), "nonce reused");
            assert!(sealed.insert(s), "identical ciphertext in random mode");
        }
    }
}

#[test]
fn convergent_mode_is_deterministic_per_user() {
    let (alice, bob) = ([1u8; 32], [2u8; 32]);
    let content = b"the same holiday photo, uploaded twice";
    let hash = *blake3::hash(content).as_bytes();
    for cipher in CIPHERS {
        let params = convergent_params(cipher, &Chunking::Fixed { size: 1 << 20 });
        let a1 = DataKey::convergent(&alice, &hash, &params);
        let a2 = DataKey::convergent(&alice, &hash, &params);
        let b = DataKey::convergent(&bob, &hash, &params);
        assert_eq!(a1, a2);
        assert_ne!(a1, b);

        let s1 = seal_chunk(cipher, &a1, 0, content, NonceMode::Convergent);
        let s2 = seal_chunk(cipher, &a2, 0, content, NonceMode::Convergent);
        let sb = seal_chunk(cipher, &b, 0, content, NonceMode::Convergent);
        assert_eq!(s1, s2, "same user, same content must deduplicate");
        assert_ne!(s1, sb, "another user's copy must not be linkable");

        // Same key, other position or other content: a different nonce.
        let nl = nonce_len(cipher);
        let at1 = seal_chunk(cipher, &a1, 1, content, NonceMode::Convergent);
        let other = seal_chunk(cipher, &a1, 0, b"different bytes", NonceMode::Convergent);
        assert_ne!(s1[..nl], at1[..nl]);
        assert_ne!(s1[..nl], other[..nl]);
    }
}

#[test]
fn convergent_key_depends_on_every_input() {
    let s = [9u8; 32];
    let h = [8u8; 32];
    let base = DataKey::convergent(&s, &h, "p");
    assert_ne!(base, DataKey::convergent(&[7u8; 32], &h, "p"));
    assert_ne!(base, DataKey::convergent(&s, &[7u8; 32], "p"));
    assert_ne!(base, DataKey::convergent(&s, &h, "q"));
    let fixed = Chunking::Fixed { size: 1 << 20 };
    assert_ne!(convergent_params(Cipher::Aes256Gcm, &fixed), convergent_params(Cipher::XChaCha20Poly1305, &fixed));
    assert_ne!(
        convergent_params(Cipher::Aes256Gcm, &fixed),
        convergent_params(Cipher::Aes256Gcm, &Chunking::FastCdc { min: 1, avg: 2, max: 3 })
    );
}

/// Freezes the whole public path (convergent key derivation, nonce
/// derivation, AAD, layout) with known answers. If this fails, stored
/// convergent files would stop deduplicating or opening: that is a format
/// change and needs a new version, not new expected values.
#[test]
fn convergent_known_answers() {
    let key = DataKey::convergent(
        &[0x11; 32],
        blake3::hash(b"datamesh").as_bytes(),
        "cipher=aes256gcm;chunking=fixed:1048576",
    );
    assert_eq!(hex::encode(key.as_bytes()), KAT_KEY);
    let aes = seal_chunk(Cipher::Aes256Gcm, &key, 1, b"datamesh", NonceMode::Convergent);
    assert_eq!(hex::encode(&aes), KAT_AES);
    let xc = seal_chunk(Cipher::XChaCha20Poly1305, &key, 1, b"datamesh", NonceMode::Convergent);
    assert_eq!(hex::encode(&xc), KAT_XCHACHA);
}

// Computed outside this crate (Python `blake3` and `cryptography`, with a
// hand-written HChaCha20 checked against the XChaCha draft's vector).
const KAT_KEY: &str = "d66f7311149f792dcc4f506bb9abb7c461f9340c3991e4b31b7a24562758e920";
const KAT_AES: &str = "1d079cb374ce1fd13f9ed81a97d2913d8ae3a03e06a1bf74b70cfae5c04b1ab0b79517fa";
const KAT_XCHACHA: &str =
    "bc2279126b6280003fe06a2ca230cd4612f3e2aa78202b79354e40190fb0aa8bd79d3fce93d01d8f59810f5f543453ae";

#[test]
fn chunks_cannot_be_swapped_between_positions() {
    let key = DataKey::random();
    for cipher in CIPHERS {
        let c0 = seal_chunk(cipher, &key, 0, b"first", NonceMode::Random);
        let c1 = seal_chunk(cipher, &key, 1, b"second", NonceMode::Random);
        assert_eq!(open_chunk(cipher, &key, 0, &c1), Err(CryptoError::Authentication));
        assert_eq!(open_chunk(cipher, &key, 1, &c0), Err(CryptoError::Authentication));
    }
}

#[test]
fn a_chunk_does_not_open_under_the_other_cipher() {
    let key = DataKey::random();
    // Same length for both ciphers' layouts: pad so neither is Truncated.
    let s = seal_chunk(Cipher::XChaCha20Poly1305, &key, 0, b"hello", NonceMode::Random);
    assert_eq!(open_chunk(Cipher::Aes256Gcm, &key, 0, &s), Err(CryptoError::Authentication));
    let s = seal_chunk(Cipher::Aes256Gcm, &key, 0, &[0u8; 40], NonceMode::Random);
    assert_eq!(open_chunk(Cipher::XChaCha20Poly1305, &key, 0, &s), Err(CryptoError::Authentication));
}

#[test]
fn data_key_debug_is_redacted_and_random_keys_differ() {
    let k = DataKey::from_bytes([0x5c; 32]);
    assert!(!format!("{k:?}").to_lowercase().contains("5c"));
    assert_ne!(DataKey::random(), DataKey::random());
}
