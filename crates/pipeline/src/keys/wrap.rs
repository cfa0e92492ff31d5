//! Wrapping a file's data key for its holders (HPKE to X25519 or X-Wing)
//! and under a passphrase, and unwrapping it.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Which wrap to produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WrapKind {
    /// HPKE with DHKEM(X25519): classical security.
    X25519,
    /// HPKE with X-Wing (ML-KEM-768 + X25519): the "quantum-resistant" level.
    XWing,
}

/// HPKE base-mode wrap of a data key for a recipient (info string binds "datamesh data key v1"). Produces WrappedKey::X25519 or ::XWing (recipient field per core/manifest.rs docs).
///
/// # Panics
/// If `to` holds a malformed key. Keys from [`UserPublicKey::from_str`] or
/// [`UserKey::public`] never are; for keys assembled by hand, use
/// [`try_wrap_for`].
pub fn wrap_for(dk: &DataKey, to: &UserPublicKey, kind: WrapKind) -> WrappedKey {
    match try_wrap_for(dk, to, kind) {
        Ok(w) => w,
        Err(e) => panic!("wrap_for: {e}"),
    }
}

/// [`wrap_for`] that reports a malformed recipient key instead of panicking.
pub fn try_wrap_for(dk: &DataKey, to: &UserPublicKey, kind: WrapKind) -> Result<WrappedKey, KeyError> {
    let invalid = |what: &str| KeyError::InvalidPublicKey(format!("its {what} key cannot be encrypted to"));
    match kind {
        WrapKind::X25519 => {
            let pk = <X25519HkdfSha256 as Kem>::PublicKey::from_bytes(&to.x25519).map_err(|_| invalid("X25519"))?;
            let (enc, sealed) = hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
                &OpModeS::Base,
                &pk,
                WRAP_INFO,
                dk.as_bytes(),
                &[],
            )
            // Encapsulation fails only for a low-order recipient point.
            .map_err(|_| invalid("X25519"))?;
            Ok(WrappedKey::X25519 { recipient: to.x25519.to_vec(), enc: enc.to_bytes().to_vec(), sealed })
        }
        WrapKind::XWing => {
            let pk = <XWing as Kem>::PublicKey::from_bytes(&to.xwing).map_err(|_| invalid("X-Wing"))?;
            let (enc, sealed) = hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, XWing>(
                &OpModeS::Base,
                &pk,
                WRAP_INFO,
                dk.as_bytes(),
                &[],
            )
            .map_err(|_| invalid("X-Wing"))?;
            Ok(WrappedKey::XWing { recipient: to.xwing_id().to_vec(), enc: enc.to_bytes().to_vec(), sealed })
        }
    }
}

/// Argon2id passphrase wrap of a data key: a fresh 16-byte salt, the key
/// Argon2id derives from `passphrase` seals `dk` with AES-256-GCM. Use
/// [`PassphraseParams::default`] (64 MiB, t = 3, p = 1) for real files and
/// [`PassphraseParams::TEST`] in tests.
///
/// Parameters outside what readers accept are clamped into it (and the
/// clamped values are recorded), so every wrap can be opened again.
///
/// # Panics
/// If the OS RNG fails, or for a passphrase over 4 GiB.
pub fn wrap_with_passphrase(dk: &DataKey, passphrase: &str, params: PassphraseParams) -> WrappedKey {
    let p = params.clamped();
    let mut salt = [0u8; SALT_LEN];
    fill_random(&mut salt);
    let mut nonce = [0u8; 12];
    fill_random(&mut nonce);
    let kek = argon2id(passphrase, &salt, p).expect("clamped Argon2 parameters and a 16-byte salt are valid");
    let sealed = aes_seal(&kek, nonce, PASSPHRASE_WRAP_AAD, dk.as_bytes());
    WrappedKey::Passphrase {
        salt: salt.to_vec(),
        m_cost: p.m_cost,
        t_cost: p.t_cost,
        p_cost: p.p_cost,
        nonce: nonce.to_vec(),
        sealed,
    }
}

/// A 32-byte data key from an opened wrap, or `None` for the wrong length.
pub(super) fn data_key_from(mut plain: Vec<u8>) -> Option<DataKey> {
    let out = <[u8; 32]>::try_from(plain.as_slice()).ok().map(DataKey::from_bytes);
    plain.zeroize();
    out
}

/// Finds a wrapped key addressed to this user (X25519 or X-Wing) and unwraps it. KeyError::NotARecipient if none is addressed to the user; KeyError::Unwrap if one is but fails.
pub fn unwrap_for(wrapped: &[WrappedKey], user: &UserKey) -> Result<DataKey, KeyError> {
    let xwing_id = user.public.xwing_id();
    let mut addressed = false;
    for w in wrapped {
        let opened = match w {
            WrappedKey::X25519 { recipient, enc, sealed } if recipient.as_slice() == user.public.x25519 => {
                addressed = true;
                open_x25519(user, enc, sealed)
            }
            WrappedKey::XWing { recipient, enc, sealed } if recipient.as_slice() == xwing_id => {
                addressed = true;
                open_xwing(user, enc, sealed)
            }
            _ => None,
        };
        if let Some(dk) = opened {
            return Ok(dk);
        }
    }
    Err(if addressed { KeyError::Unwrap } else { KeyError::NotARecipient })
}

pub(super) fn open_x25519(user: &UserKey, enc: &[u8], sealed: &[u8]) -> Option<DataKey> {
    let mut sk_bytes = Zeroizing::new(user.x25519.to_bytes());
    // hpke clamps on parsing, as x25519-dalek does on use: same key.
    let sk = <X25519HkdfSha256 as Kem>::PrivateKey::from_bytes(sk_bytes.as_ref()).ok()?;
    sk_bytes.zeroize();
    hpke_open::<X25519HkdfSha256>(&sk, enc, sealed)
}

pub(super) fn open_xwing(user: &UserKey, enc: &[u8], sealed: &[u8]) -> Option<DataKey> {
    hpke_open::<XWing>(&xwing_private(&user.xwing_seed), enc, sealed)
}

/// HPKE base-mode open of a wrapped data key under KEM `K`.
pub(super) fn hpke_open<K: Kem>(sk: &K::PrivateKey, enc: &[u8], sealed: &[u8]) -> Option<DataKey> {
    let enc = K::EncappedKey::from_bytes(enc).ok()?;
    let plain =
        hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, K>(&OpModeR::Base, sk, &enc, WRAP_INFO, sealed, &[])
            .ok()?;
    data_key_from(plain)
}

/// Tries the passphrase wraps; [`KeyError::WrongPassphrase`] if none opens.
///
/// The Argon2 costs come from the manifest, which may be hostile, so they
/// are bounded before anything is allocated or hashed.
///
/// Caps: [`MAX_M_COST_KIB`], [`MAX_T_COST`], [`MAX_P_COST`]; wraps beyond
/// them are skipped, and at most [`MAX_PASSPHRASE_WRAPS_TRIED`] wraps are
/// tried. [`KeyError::NoPassphraseWrap`] if the manifest has none;
/// [`KeyError::CostTooHigh`] if all of them were over the caps.
pub fn unwrap_with_passphrase(wrapped: &[WrappedKey], passphrase: &str) -> Result<DataKey, KeyError> {
    let mut any = false;
    let mut tried = 0usize;
    let mut too_costly = None;
    for w in wrapped {
        let WrappedKey::Passphrase { salt, m_cost, t_cost, p_cost, nonce, sealed } = w else { continue };
        any = true;
        let p = PassphraseParams { m_cost: *m_cost, t_cost: *t_cost, p_cost: *p_cost };
        if !p.within_limits() {
            too_costly.get_or_insert(p.too_costly());
            continue;
        }
        if tried == MAX_PASSPHRASE_WRAPS_TRIED {
            break;
        }
        tried += 1;
        let Some(kek) = argon2id(passphrase, salt, p) else { continue };
        if let Some(plain) = aes_open(&kek, nonce, PASSPHRASE_WRAP_AAD, sealed)
            && let Some(dk) = data_key_from(plain.to_vec())
        {
            return Ok(dk);
        }
    }
    match (any, tried, too_costly) {
        (false, _, _) => Err(KeyError::NoPassphraseWrap),
        (true, 0, Some(e)) => Err(e),
        _ => Err(KeyError::WrongPassphrase),
    }
}
