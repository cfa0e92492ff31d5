//! User keys, the key file, and wrapping a file's data key for its holders.
//!
//! A [`UserKey`] holds four secrets: an Ed25519 signing key (identity and
//! ownership), an X25519 key and an X-Wing (ML-KEM-768 + X25519) seed
//! (receiving wrapped data keys), and a convergence secret (convergent
//! encryption, see [`crate::crypto::DataKey::convergent`]). Its public half,
//! [`UserPublicKey`], travels as one line of text starting with `dmpk1`.
//!
//! # Wraps
//!
//! A file's [`DataKey`] is wrapped once per holder into a
//! [`WrappedKey`] in the manifest:
//!
//! - `X25519`: HPKE (RFC 9180) base mode, DHKEM(X25519, HKDF-SHA256),
//!   HKDF-SHA256, ChaCha20-Poly1305; `recipient` is the X25519 public key.
//! - `XWing`: HPKE base mode with the X-Wing hybrid KEM
//!   (draft-connolly-cfrg-xwing-kem), HKDF-SHA256, ChaCha20-Poly1305;
//!   `recipient` is BLAKE3 of the 1216-byte X-Wing public key. Secure as
//!   long as *either* X25519 or ML-KEM-768 holds.
//! - `Passphrase`: Argon2id(passphrase, 16-byte salt) → AES-256-GCM key;
//!   the cost parameters are stored, and bounded on read
//!   ([`MAX_M_COST_KIB`], [`MAX_T_COST`], [`MAX_P_COST`]) so a hostile
//!   manifest cannot make us spend unbounded memory or time.
//!
//! HPKE's `info` is `"datamesh data key v1"` for both KEMs, so a wrap made
//! for another protocol using the same keys does not open here.
//!
//! # Key file, version 1
//!
//! JSON text:
//!
//! ```text
//! {"format":"datamesh-user-key","version":1,"public":"dmpk1…",
//!  "protection":"none","secret":"<hex>","check":"<hex>"}
//! {"format":"datamesh-user-key","version":1,"public":"dmpk1…",
//!  "protection":"argon2id+aes-256-gcm",
//!  "kdf":{"algorithm":"argon2id","salt":"<hex>","m_cost":65536,"t_cost":3,"p_cost":1},
//!  "key_check":"<hex>","nonce":"<hex>","sealed":"<hex>"}
//! ```
//!
//! `secret` is 128 bytes: Ed25519 seed ‖ X25519 secret ‖ X-Wing seed ‖
//! convergence secret. In clear files, `check` (BLAKE3, 8 bytes) catches
//! damage, and the `public` line must match the secrets. In protected files,
//! Argon2id gives a key-encryption key K; AES-256-GCM under a subkey of K
//! seals the secret with the header (public line, salt, costs) as AAD, and
//! `key_check` (16 bytes of another subkey of K) tells a wrong passphrase
//! apart from a damaged file. It gives an attacker nothing the GCM tag does
//! not already: both cost one Argon2id run per guess.

use std::fmt;
use std::str::FromStr;

use datamesh_core::manifest::WrappedKey;
use ed25519_dalek::{SigningKey, VerifyingKey};
use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::{X25519HkdfSha256, XWing};
use hpke::{Deserializable, Kem, OpModeR, OpModeS, Serializable};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use serde::{Deserialize, Serialize};
use x25519_dalek::StaticSecret;
use zeroize::{Zeroize, Zeroizing};

use crate::crypto::{DataKey, fill_random};

mod keyfile;
mod public;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
mod wrap;

pub use self::keyfile::UserKey;
#[allow(clippy::wildcard_imports)]
use self::keyfile::*;
pub use self::public::UserPublicKey;
pub use self::wrap::{WrapKind, try_wrap_for, unwrap_for, unwrap_with_passphrase, wrap_for, wrap_with_passphrase};

/// HPKE `info` for data-key wraps.
const WRAP_INFO: &[u8] = b"datamesh data key v1";
/// AAD of passphrase wraps in manifests.
const PASSPHRASE_WRAP_AAD: &[u8] = b"datamesh data key v1 passphrase";
/// The key file's `format` value.
const KEY_FILE_FORMAT: &str = "datamesh-user-key";
/// The key file version this build writes and reads.
pub const KEY_FILE_VERSION: u32 = 1;
const PROTECTION_NONE: &str = "none";
const PROTECTION_PASSPHRASE: &str = "argon2id+aes-256-gcm";
/// Key files are a few KiB; anything much larger is not one.
const MAX_KEY_FILE_SIZE: usize = 64 * 1024;
/// Length of the secret material: four 32-byte secrets.
const SECRET_LEN: usize = 128;
/// Prefix of a public key's text form.
const PUBLIC_PREFIX: &str = "dmpk1";
/// Version byte of the public key's binary encoding.
const PUBLIC_VERSION: u8 = 1;
/// Length of an X-Wing public key.
pub const XWING_PUBLIC_LEN: usize = 1216;
/// Binary public key: version, Ed25519, X25519, X-Wing, 4-byte checksum.
const PUBLIC_BIN_LEN: usize = 1 + 32 + 32 + XWING_PUBLIC_LEN + 4;
/// Argon2 salt length written by this build.
const SALT_LEN: usize = 16;

/// Largest Argon2 memory cost accepted from a manifest or key file: 1 GiB (in KiB).
pub const MAX_M_COST_KIB: u32 = 1024 * 1024;
/// Largest Argon2 iteration count accepted from a manifest or key file.
pub const MAX_T_COST: u32 = 64;
/// Largest Argon2 lane count accepted from a manifest or key file.
pub const MAX_P_COST: u32 = 16;
/// At most this many passphrase wraps of one manifest are tried, so a
/// hostile manifest cannot multiply the (already bounded) Argon2 cost by 64.
pub const MAX_PASSPHRASE_WRAPS_TRIED: usize = 4;

/// What went wrong with a key, a key file or a wrapped key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key file is passphrase-protected and no passphrase was given.
    #[error("this key file is protected by a passphrase; enter the passphrase to unlock it")]
    PassphraseRequired,
    /// No passphrase wrap (or the key file) opened with this passphrase.
    #[error("wrong passphrase: nothing opened with it; check for typos, caps lock and keyboard layout, and try again")]
    WrongPassphrase,
    /// The key file is damaged or not a key file.
    #[error("the key file is damaged ({0}); restore it from your backup")]
    Corrupt(String),
    /// The key file was written by a newer DataMesh.
    #[error("the key file has format version {0}, which this build does not understand; upgrade datamesh")]
    UnsupportedVersion(u32),
    /// No wrapped key in the manifest is addressed to this user.
    #[error(
        "this file was not encrypted for your key; import the key it was stored with (`datamesh key import`), \
         or ask the owner to share it with your public key"
    )]
    NotARecipient,
    /// A wrapped key is addressed to this user but does not open.
    #[error(
        "the file's key is addressed to you but does not decrypt: the manifest is damaged or was tampered with; \
         fetch it again, or ask the owner to share the file with you again"
    )]
    Unwrap,
    /// The manifest holds no passphrase wrap at all.
    #[error("this file is not protected by a passphrase; open it with the key it was stored for")]
    NoPassphraseWrap,
    /// Every passphrase wrap asks for more Argon2 work than we allow.
    #[error(
        "the file's passphrase key asks for Argon2 cost m={m_cost} KiB, t={t_cost}, p={p_cost}, beyond the safety \
         limits (m ≤ 1 GiB, t ≤ 64, p ≤ 16); the manifest is damaged or hostile, so it was not tried"
    )]
    CostTooHigh {
        /// Memory cost in KiB.
        m_cost: u32,
        /// Iterations.
        t_cost: u32,
        /// Lanes.
        p_cost: u32,
    },
    /// Text that is not a DataMesh public key, or a key that cannot be used.
    #[error("not a usable DataMesh public key ({0}); copy the whole line starting with `dmpk1` again")]
    InvalidPublicKey(String),
}

/// Argon2id cost parameters for a passphrase wrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassphraseParams {
    /// Memory in KiB.
    pub m_cost: u32,
    /// Iterations.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl PassphraseParams {
    /// The default: 64 MiB, 3 iterations, 1 lane (RFC 9106's second
    /// recommendation, for memory-constrained machines).
    pub const DEFAULT: PassphraseParams = PassphraseParams { m_cost: 64 * 1024, t_cost: 3, p_cost: 1 };
    /// Cheap parameters for tests only: 256 KiB, 1 iteration. Never for real keys.
    pub const TEST: PassphraseParams = PassphraseParams { m_cost: 256, t_cost: 1, p_cost: 1 };

    /// Whether these are within the caps applied to untrusted input.
    pub fn within_limits(&self) -> bool {
        self.m_cost <= MAX_M_COST_KIB && self.t_cost <= MAX_T_COST && self.p_cost <= MAX_P_COST
    }

    /// The parameters actually used when writing: clamped into what Argon2
    /// accepts (m ≥ 8·p KiB, t ≥ 1, p ≥ 1) and what readers accept (the
    /// caps), so anything we write can be read back.
    fn clamped(self) -> PassphraseParams {
        let p_cost = self.p_cost.clamp(1, MAX_P_COST);
        PassphraseParams {
            m_cost: self.m_cost.clamp(8 * p_cost, MAX_M_COST_KIB),
            t_cost: self.t_cost.clamp(1, MAX_T_COST),
            p_cost,
        }
    }

    fn too_costly(&self) -> KeyError {
        KeyError::CostTooHigh { m_cost: self.m_cost, t_cost: self.t_cost, p_cost: self.p_cost }
    }
}

impl Default for PassphraseParams {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Argon2id(passphrase, salt) → 32-byte key. `None` if Argon2 refuses the
/// parameters or salt (only possible for untrusted input).
fn argon2id(passphrase: &str, salt: &[u8], p: PassphraseParams) -> Option<Zeroizing<[u8; 32]>> {
    let params = argon2::Params::new(p.m_cost, p.t_cost, p.p_cost, Some(32)).ok()?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 32]);
    a.hash_password_into(passphrase.as_bytes(), salt, out.as_mut()).ok()?;
    Some(out)
}

/// AES-256-GCM seal via ring; returns ciphertext ‖ tag.
fn aes_seal(key: &[u8; 32], nonce: [u8; 12], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("32-byte key fits AES-256"));
    let mut out = Vec::with_capacity(plaintext.len() + 16);
    out.extend_from_slice(plaintext);
    k.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut out)
        .expect("tiny input is far below AES-GCM's limits");
    out
}

/// AES-256-GCM open via ring; `None` if the tag does not verify.
fn aes_open(key: &[u8; 32], nonce: &[u8], aad: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("32-byte key fits AES-256"));
    let n = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut buf = Zeroizing::new(sealed.to_vec());
    let len = k.open_in_place(n, Aad::from(aad), buf.as_mut_slice()).ok()?.len();
    buf.truncate(len);
    Some(buf)
}
