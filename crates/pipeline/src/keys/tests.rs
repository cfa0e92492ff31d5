use super::public::{base32_decode, base32_encode};
use super::*;

#[test]
fn base32_matches_rfc4648_vectors() {
    // RFC 4648 §10, lowercased, without padding.
    for (raw, enc) in [
        ("", ""),
        ("f", "my"),
        ("fo", "mzxq"),
        ("foo", "mzxw6"),
        ("foob", "mzxw6yq"),
        ("fooba", "mzxw6ytb"),
        ("foobar", "mzxw6ytboi"),
    ] {
        assert_eq!(base32_encode(raw.as_bytes()), enc);
        assert_eq!(base32_decode(enc).as_deref(), Some(raw.as_bytes()));
        assert_eq!(base32_decode(&enc.to_uppercase()).as_deref(), Some(raw.as_bytes()));
    }
    // Non-canonical trailing bits, impossible lengths, bad characters.
    assert_eq!(base32_decode("mz"), None);
    assert_eq!(base32_decode("m"), None);
    assert_eq!(base32_decode("mzxw1"), None);
}

#[test]
fn hpke_and_dalek_agree_on_the_x25519_public_key() {
    let u = UserKey::generate();
    let sk = <X25519HkdfSha256 as Kem>::PrivateKey::from_bytes(&u.x25519.to_bytes()).unwrap();
    assert_eq!(X25519HkdfSha256::sk_to_pk(&sk).to_bytes().as_slice(), &u.public.x25519);
}

#[test]
fn clamping_keeps_params_readable() {
    let p = PassphraseParams { m_cost: 0, t_cost: 0, p_cost: 0 }.clamped();
    assert_eq!(p, PassphraseParams { m_cost: 8, t_cost: 1, p_cost: 1 });
    let p = PassphraseParams { m_cost: u32::MAX, t_cost: u32::MAX, p_cost: u32::MAX }.clamped();
    assert!(p.within_limits());
    assert!(argon2::Params::new(p.m_cost, p.t_cost, p.p_cost, Some(32)).is_ok());
}
