//! User keys, key files and data-key wraps: round trips, the errors a user
//! sees, and refusal of damaged or hostile input without panics.
#![allow(clippy::unwrap_used)]

use datamesh_core::manifest::WrappedKey;
use datamesh_pipeline::crypto::DataKey;
use datamesh_pipeline::keys::{
    KeyError, MAX_M_COST_KIB, PassphraseParams, UserKey, UserPublicKey, WrapKind, XWING_PUBLIC_LEN, try_wrap_for,
    unwrap_for, unwrap_with_passphrase, wrap_for, wrap_with_passphrase,
};
use proptest::prelude::*;

const T: PassphraseParams = PassphraseParams::TEST;

fn same_key(a: &UserKey, b: &UserKey) -> bool {
    a.public() == b.public()
        && a.convergence_secret() == b.convergence_secret()
        && a.signing_key().to_bytes() == b.signing_key().to_bytes()
}

#[test]
fn key_file_round_trip_in_clear() {
    let k = UserKey::generate();
    let bytes = k.to_file_bytes(None);
    let text = std::str::from_utf8(&bytes).unwrap();
    assert!(text.starts_with("{\"format\":\"datamesh-user-key\",\"version\":1,"), "{text}");
    assert_eq!(text.lines().count(), 1);
    assert!(!UserKey::is_protected(&bytes));
    let back = UserKey::from_file_bytes(&bytes, None).unwrap();
    assert!(same_key(&k, &back));
    // A passphrase offered for a clear file is not needed and does no harm.
    assert!(same_key(&k, &UserKey::from_file_bytes(&bytes, Some("x")).unwrap()));
    assert_eq!(UserKey::public_from_file_bytes(&bytes).unwrap(), k.public());
}

#[test]
fn key_file_round_trip_with_passphrase() {
    let k = UserKey::generate();
    let bytes = k.to_file_bytes_with_params(Some("correct horse"), T);
    assert!(UserKey::is_protected(&bytes));
    let secret_hex = hex::encode(k.convergence_secret());
    assert!(!String::from_utf8_lossy(&bytes).contains(&secret_hex), "secret stored in clear");
    assert!(same_key(&k, &UserKey::from_file_bytes(&bytes, Some("correct horse")).unwrap()));
    assert_eq!(UserKey::from_file_bytes(&bytes, Some("correct hors")).unwrap_err(), KeyError::WrongPassphrase);
    assert_eq!(UserKey::from_file_bytes(&bytes, None).unwrap_err(), KeyError::PassphraseRequired);
    // The public key is readable without the passphrase.
    assert_eq!(UserKey::public_from_file_bytes(&bytes).unwrap(), k.public());
}

#[test]
fn default_params_are_recorded_in_the_file() {
    // Not run through Argon2 here (64 MiB is slow in debug builds); the
    // defaults are checked as data.
    assert_eq!(PassphraseParams::default(), PassphraseParams { m_cost: 64 * 1024, t_cost: 3, p_cost: 1 });
}

/// Replaces the first occurrence of `field`'s string value in a key file.
fn edit_field(bytes: &[u8], field: &str, f: impl Fn(&str) -> String) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(bytes).unwrap();
    let slot = if field == "salt" { &mut v["kdf"]["salt"] } else { &mut v[field] };
    let old = slot.as_str().unwrap().to_string();
    *slot = serde_json::Value::String(f(&old));
    serde_json::to_vec(&v).unwrap()
}

/// Flips the last hex digit (keeps the value valid hex of the same length).
fn flip_last_hex(s: &str) -> String {
    let mut c: Vec<char> = s.chars().collect();
    let last = c.len() - 1;
    c[last] = if c[last] == '0' { '1' } else { '0' };
    c.into_iter().collect()
}

#[test]
fn tampered_clear_file_is_refused() {
    let k = UserKey::generate();
    let bytes = k.to_file_bytes(None);
    let bad = edit_field(&bytes, "secret", flip_last_hex);
    assert!(matches!(UserKey::from_file_bytes(&bad, None), Err(KeyError::Corrupt(_))));
    let other = UserKey::generate().public().to_string();
    let bad = edit_field(&bytes, "public", |_| other.clone());
    assert!(matches!(UserKey::from_file_bytes(&bad, None), Err(KeyError::Corrupt(_))));
    let bad = edit_field(&bytes, "check", flip_last_hex);
    assert!(matches!(UserKey::from_file_bytes(&bad, None), Err(KeyError::Corrupt(_))));
}

#[test]
fn tampered_protected_file_is_refused() {
    let k = UserKey::generate();
    let bytes = k.to_file_bytes_with_params(Some("pw"), T);
    let bad = edit_field(&bytes, "sealed", flip_last_hex);
    assert!(matches!(UserKey::from_file_bytes(&bad, Some("pw")), Err(KeyError::Corrupt(_))));
    // The public line is authenticated, so it cannot be swapped for another.
    let other = UserKey::generate().public().to_string();
    let bad = edit_field(&bytes, "public", |_| other.clone());
    assert!(matches!(UserKey::from_file_bytes(&bad, Some("pw")), Err(KeyError::Corrupt(_))));
    // A changed salt derives another key: indistinguishable from a wrong passphrase.
    let bad = edit_field(&bytes, "salt", flip_last_hex);
    assert!(UserKey::from_file_bytes(&bad, Some("pw")).is_err());
}

#[test]
fn hostile_key_file_costs_are_refused_before_hashing() {
    let k = UserKey::generate();
    let bytes = k.to_file_bytes_with_params(Some("pw"), T);
    let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    v["kdf"]["m_cost"] = serde_json::json!(u32::MAX);
    let bad = serde_json::to_vec(&v).unwrap();
    // Would allocate 4 TiB if it were run; must fail fast instead.
    assert!(matches!(UserKey::from_file_bytes(&bad, Some("pw")), Err(KeyError::Corrupt(_))));
}

#[test]
fn key_file_versions_and_garbage() {
    let k = UserKey::generate();
    let mut v: serde_json::Value = serde_json::from_slice(&k.to_file_bytes(None)).unwrap();
    v["version"] = serde_json::json!(2);
    let newer = serde_json::to_vec(&v).unwrap();
    assert_eq!(UserKey::from_file_bytes(&newer, None).unwrap_err(), KeyError::UnsupportedVersion(2));
    v["version"] = serde_json::json!(1);
    v["format"] = serde_json::json!("something-else");
    assert!(matches!(UserKey::from_file_bytes(&serde_json::to_vec(&v).unwrap(), None), Err(KeyError::Corrupt(_))));
    for junk in [&b""[..], b"{}", b"not json", b"{\"format\":\"datamesh-user-key\",\"version\":1}", b"[1,2,3]"] {
        assert!(matches!(UserKey::from_file_bytes(junk, None), Err(KeyError::Corrupt(_))), "{junk:?}");
        assert!(!UserKey::is_protected(junk));
    }
}

#[test]
fn error_messages_say_what_to_do() {
    assert!(KeyError::NotARecipient.to_string().contains("datamesh key import"));
    assert!(KeyError::PassphraseRequired.to_string().contains("passphrase"));
    assert!(KeyError::UnsupportedVersion(9).to_string().contains("upgrade"));
}

#[test]
fn wrap_unwrap_for_both_kinds() {
    let alice = UserKey::generate();
    let dk = DataKey::random();
    let x = wrap_for(&dk, &alice.public(), WrapKind::X25519);
    let xw = wrap_for(&dk, &alice.public(), WrapKind::XWing);
    match (&x, &xw) {
        (WrappedKey::X25519 { recipient: r1, enc: e1, .. }, WrappedKey::XWing { recipient: r2, enc: e2, .. }) => {
            assert_eq!(r1.as_slice(), &alice.public().x25519);
            assert_eq!(r2.as_slice(), blake3::hash(&alice.public().xwing).as_bytes());
            assert_eq!(e1.len(), 32);
            assert_eq!(e2.len(), 1120);
        }
        _ => panic!("wrong wrap kinds: {x:?} {xw:?}"),
    }
    assert_eq!(unwrap_for(std::slice::from_ref(&x), &alice).unwrap(), dk);
    assert_eq!(unwrap_for(std::slice::from_ref(&xw), &alice).unwrap(), dk);
    // Wraps are randomized: wrapping twice gives different bytes.
    assert_ne!(wrap_for(&dk, &alice.public(), WrapKind::X25519), x);
}

#[test]
fn another_users_key_is_not_a_recipient() {
    let (alice, bob) = (UserKey::generate(), UserKey::generate());
    let dk = DataKey::random();
    let wraps = vec![
        wrap_for(&dk, &alice.public(), WrapKind::X25519),
        wrap_for(&dk, &alice.public(), WrapKind::XWing),
        wrap_with_passphrase(&dk, "pw", T),
    ];
    assert_eq!(unwrap_for(&wraps, &bob).unwrap_err(), KeyError::NotARecipient);
    assert_eq!(unwrap_for(&[], &bob).unwrap_err(), KeyError::NotARecipient);
    assert_eq!(unwrap_for(&wraps, &alice).unwrap(), dk);
}

#[test]
fn sharing_adds_a_wrap_for_another_user() {
    let (alice, bob) = (UserKey::generate(), UserKey::generate());
    let dk = DataKey::random();
    let mut wraps = vec![wrap_for(&dk, &alice.public(), WrapKind::XWing)];
    let opened = unwrap_for(&wraps, &alice).unwrap();
    wraps.push(wrap_for(&opened, &bob.public(), WrapKind::X25519));
    assert_eq!(unwrap_for(&wraps, &bob).unwrap(), dk);
}

#[test]
fn a_damaged_wrap_addressed_to_us_is_an_unwrap_error() {
    let alice = UserKey::generate();
    let dk = DataKey::random();
    for kind in [WrapKind::X25519, WrapKind::XWing] {
        let mut w = wrap_for(&dk, &alice.public(), kind);
        match &mut w {
            WrappedKey::X25519 { sealed, .. } | WrappedKey::XWing { sealed, .. } => sealed[0] ^= 1,
            WrappedKey::Passphrase { .. } => unreachable!(),
        }
        assert_eq!(unwrap_for(std::slice::from_ref(&w), &alice).unwrap_err(), KeyError::Unwrap);
        let mut w = wrap_for(&dk, &alice.public(), kind);
        match &mut w {
            WrappedKey::X25519 { enc, .. } | WrappedKey::XWing { enc, .. } => enc.truncate(5),
            WrappedKey::Passphrase { .. } => unreachable!(),
        }
        assert_eq!(unwrap_for(std::slice::from_ref(&w), &alice).unwrap_err(), KeyError::Unwrap);
    }
    // A damaged wrap does not hide a good one next to it.
    let mut bad = wrap_for(&dk, &alice.public(), WrapKind::X25519);
    if let WrappedKey::X25519 { sealed, .. } = &mut bad {
        sealed[3] ^= 0x80;
    }
    let good = wrap_for(&dk, &alice.public(), WrapKind::XWing);
    assert_eq!(unwrap_for(&[bad, good], &alice).unwrap(), dk);
}

#[test]
fn passphrase_wrap_round_trip_and_errors() {
    let dk = DataKey::random();
    let w = wrap_with_passphrase(&dk, "hunter2", T);
    match &w {
        WrappedKey::Passphrase { salt, m_cost, t_cost, p_cost, nonce, sealed } => {
            assert_eq!((salt.len(), nonce.len(), sealed.len()), (16, 12, 48));
            assert_eq!((*m_cost, *t_cost, *p_cost), (T.m_cost, T.t_cost, T.p_cost));
        }
        _ => panic!("not a passphrase wrap"),
    }
    assert_eq!(unwrap_with_passphrase(std::slice::from_ref(&w), "hunter2").unwrap(), dk);
    assert_eq!(unwrap_with_passphrase(std::slice::from_ref(&w), "hunter3").unwrap_err(), KeyError::WrongPassphrase);
    // Two passphrases on one file: either opens it.
    let w2 = wrap_with_passphrase(&dk, "other", T);
    assert_eq!(unwrap_with_passphrase(&[w.clone(), w2], "other").unwrap(), dk);
    // Salted: the same passphrase wraps differently each time.
    assert_ne!(wrap_with_passphrase(&dk, "hunter2", T), w);
    let u = UserKey::generate();
    let only_hpke = [wrap_for(&dk, &u.public(), WrapKind::X25519)];
    assert_eq!(unwrap_with_passphrase(&only_hpke, "hunter2").unwrap_err(), KeyError::NoPassphraseWrap);
}

#[test]
fn hostile_passphrase_costs_are_not_run() {
    let dk = DataKey::random();
    let mut w = wrap_with_passphrase(&dk, "pw", T);
    if let WrappedKey::Passphrase { m_cost, .. } = &mut w {
        *m_cost = MAX_M_COST_KIB + 1;
    }
    assert!(matches!(unwrap_with_passphrase(std::slice::from_ref(&w), "pw"), Err(KeyError::CostTooHigh { .. })));
    let mut w = wrap_with_passphrase(&dk, "pw", T);
    if let WrappedKey::Passphrase { t_cost, p_cost, .. } = &mut w {
        *t_cost = 1000;
        *p_cost = 1000;
    }
    assert!(matches!(unwrap_with_passphrase(std::slice::from_ref(&w), "pw"), Err(KeyError::CostTooHigh { .. })));
    // Malformed but cheap parameters are simply a failed attempt, not a panic.
    let mut w = wrap_with_passphrase(&dk, "pw", T);
    if let WrappedKey::Passphrase { m_cost, salt, nonce, .. } = &mut w {
        *m_cost = 0;
        salt.clear();
        nonce.truncate(3);
    }
    assert_eq!(unwrap_with_passphrase(&[w], "pw").unwrap_err(), KeyError::WrongPassphrase);
}

#[test]
fn oversized_params_are_clamped_so_the_wrap_still_opens() {
    let dk = DataKey::random();
    // p=64 is over the cap; m is raised to Argon2's minimum for the clamped p.
    let w = wrap_with_passphrase(&dk, "pw", PassphraseParams { m_cost: 1, t_cost: 1, p_cost: 64 });
    assert_eq!(unwrap_with_passphrase(&[w], "pw").unwrap(), dk);
}

#[test]
fn public_key_text_round_trip() {
    let k = UserKey::generate();
    let p = k.public();
    assert_eq!(p.xwing.len(), XWING_PUBLIC_LEN);
    assert_eq!(p.ed25519, k.signing_key().verifying_key().to_bytes());
    let s = p.to_string();
    assert!(s.starts_with("dmpk1") && !s.contains(char::is_whitespace));
    assert_eq!(s.parse::<UserPublicKey>().unwrap(), p);
    assert_eq!(format!("  {}\n", s.to_uppercase().replacen("DMPK1", "dmpk1", 1)).parse::<UserPublicKey>().unwrap(), p);
    assert_eq!(p.fingerprint().len(), 16);
}

#[test]
fn public_key_garbage_is_refused() {
    let s = UserKey::generate().public().to_string();
    let invalid = |t: &str| matches!(t.parse::<UserPublicKey>(), Err(KeyError::InvalidPublicKey(_)));
    assert!(invalid(""));
    assert!(invalid("dmpk1"));
    assert!(invalid(&s[1..]));
    assert!(invalid(&s[..s.len() - 1]));
    assert!(invalid(&format!("{s}a")));
    assert!(invalid(&s.replacen("dmpk1", "dmpk2", 1)));
    // One changed character is caught by the checksum.
    let mut c: Vec<char> = s.chars().collect();
    c[40] = if c[40] == 'a' { 'b' } else { 'a' };
    assert!(invalid(&c.into_iter().collect::<String>()));
}

#[test]
fn malformed_public_keys_cannot_be_wrapped_to() {
    let mut p = UserKey::generate().public();
    p.xwing.truncate(100);
    assert!(matches!(try_wrap_for(&DataKey::random(), &p, WrapKind::XWing), Err(KeyError::InvalidPublicKey(_))));
    let mut p = UserKey::generate().public();
    p.x25519 = [0; 32]; // a low-order point
    assert!(matches!(try_wrap_for(&DataKey::random(), &p, WrapKind::X25519), Err(KeyError::InvalidPublicKey(_))));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn public_key_parse_never_panics(s in "dmpk1[a-z2-7]{0,2100}") {
        let _ = s.parse::<UserPublicKey>();
    }

    #[test]
    fn public_key_parse_never_panics_on_anything(s in ".{0,200}") {
        let _ = s.parse::<UserPublicKey>();
    }

    #[test]
    fn key_file_parse_never_panics(b in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = UserKey::from_file_bytes(&b, Some("pw"));
        let _ = UserKey::is_protected(&b);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// Any bit flipped in an HPKE wrap is caught: the wrap fails, is not
    /// addressed to us any more, or (if the flip hit the recipient) is skipped.
    #[test]
    fn flipped_wrap_never_yields_a_wrong_key(xwing in any::<bool>(), bit in any::<usize>()) {
        let alice = UserKey::generate();
        let dk = DataKey::random();
        let kind = if xwing { WrapKind::XWing } else { WrapKind::X25519 };
        let mut w = wrap_for(&dk, &alice.public(), kind);
        let (WrappedKey::X25519 { recipient, enc, sealed } | WrappedKey::XWing { recipient, enc, sealed }) = &mut w
        else { unreachable!() };
        let total = (recipient.len() + enc.len() + sealed.len()) * 8;
        let bit = bit % total;
        let (buf, at) = if bit < recipient.len() * 8 {
            (recipient, bit)
        } else if bit < (recipient.len() + enc.len()) * 8 {
            (enc, bit - recipient.len() * 8)
        } else {
            (sealed, bit - (recipient.len() + enc.len()) * 8)
        };
        buf[at / 8] ^= 1 << (at % 8);
        match unwrap_for(std::slice::from_ref(&w), &alice) {
            Ok(got) => prop_assert!(false, "flipped wrap opened (same key: {})", got == dk),
            Err(e) => prop_assert!(matches!(e, KeyError::Unwrap | KeyError::NotARecipient)),
        }
    }
}
