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

/// A user's keys: Ed25519 (identity/ownership signatures), X25519 (HPKE wrap), X-Wing (hybrid PQ wrap), and a 32-byte convergence secret. Zeroized on drop.
#[derive(Clone)]
pub struct UserKey {
    /// Zeroizes itself on drop (ed25519-dalek's `zeroize` feature).
    signing: SigningKey,
    /// Zeroizes itself on drop (x25519-dalek's `zeroize` feature).
    x25519: StaticSecret,
    /// The X-Wing decapsulation key is this 32-byte seed.
    xwing_seed: Zeroizing<[u8; 32]>,
    convergence: Zeroizing<[u8; 32]>,
    /// Cached: deriving the X-Wing public key runs ML-KEM key generation.
    public: UserPublicKey,
}

impl UserKey {
    /// Fresh keys from the OS RNG.
    ///
    /// # Panics
    /// If the OS RNG fails (see [`DataKey::random`]).
    pub fn generate() -> Self {
        let mut secret = Zeroizing::new([0u8; SECRET_LEN]);
        fill_random(secret.as_mut());
        Self::from_secret(&secret)
    }

    /// Builds the key from its 128-byte secret material.
    fn from_secret(secret: &[u8; SECRET_LEN]) -> Self {
        let part = |i: usize| {
            let mut a = Zeroizing::new([0u8; 32]);
            a.copy_from_slice(&secret[32 * i..32 * (i + 1)]);
            a
        };
        let signing = SigningKey::from_bytes(&part(0));
        let x25519 = StaticSecret::from(*part(1));
        let xwing_seed = part(2);
        let convergence = part(3);
        let xwing_pk = xwing_private(&xwing_seed);
        let public = UserPublicKey {
            ed25519: signing.verifying_key().to_bytes(),
            x25519: x25519_dalek::PublicKey::from(&x25519).to_bytes(),
            xwing: XWing::sk_to_pk(&xwing_pk).to_bytes().to_vec(),
        };
        UserKey { signing, x25519, xwing_seed, convergence, public }
    }

    /// The 128-byte secret material, in key-file order.
    fn secret_bytes(&self) -> Zeroizing<[u8; SECRET_LEN]> {
        let mut s = Zeroizing::new([0u8; SECRET_LEN]);
        s[..32].copy_from_slice(self.signing.as_bytes());
        s[32..64].copy_from_slice(self.x25519.as_bytes());
        s[64..96].copy_from_slice(self.xwing_seed.as_ref());
        s[96..].copy_from_slice(self.convergence.as_ref());
        s
    }

    /// Serializes to the key-file format: one line of versioned JSON,
    /// `{"format":"datamesh-user-key","version":1,...}` (see the module docs).
    ///
    /// With a passphrase, the secret material is sealed with AES-256-GCM
    /// under an Argon2id-derived key ([`PassphraseParams::DEFAULT`]; salt and
    /// costs are stored); without one it is stored in clear, and the file's
    /// protection is its 0600 mode, which the CLI sets.
    ///
    /// # Panics
    /// If the OS RNG fails, or for a passphrase over 4 GiB.
    pub fn to_file_bytes(&self, passphrase: Option<&str>) -> Vec<u8> {
        self.to_file_bytes_with_params(passphrase, PassphraseParams::DEFAULT)
    }

    /// [`UserKey::to_file_bytes`] with explicit Argon2id costs (clamped into
    /// the limits readers accept). Ignored without a passphrase.
    pub fn to_file_bytes_with_params(&self, passphrase: Option<&str>, params: PassphraseParams) -> Vec<u8> {
        let public = self.public.to_string();
        let secret = self.secret_bytes();
        let mut file = KeyFile {
            format: KEY_FILE_FORMAT.into(),
            version: KEY_FILE_VERSION,
            public,
            protection: PROTECTION_NONE.into(),
            secret: None,
            check: None,
            kdf: None,
            key_check: None,
            nonce: None,
            sealed: None,
        };
        match passphrase {
            None => {
                file.secret = Some(hex::encode(secret.as_ref()));
                file.check = Some(hex::encode(clear_check(&secret)));
            }
            Some(pass) => {
                let p = params.clamped();
                let mut salt = [0u8; SALT_LEN];
                fill_random(&mut salt);
                let mut nonce = [0u8; 12];
                fill_random(&mut nonce);
                let kdf = KdfParams {
                    algorithm: "argon2id".into(),
                    salt: hex::encode(salt),
                    m_cost: p.m_cost,
                    t_cost: p.t_cost,
                    p_cost: p.p_cost,
                };
                // Clamped parameters and a 16-byte salt are always accepted.
                let kek = argon2id(pass, &salt, p).expect("clamped Argon2 parameters are valid");
                let (enc, check) = key_file_subkeys(&kek);
                let aad = key_file_aad(&file.public, &kdf);
                file.sealed = Some(hex::encode(aes_seal(&enc, nonce, &aad, secret.as_ref())));
                file.key_check = Some(hex::encode(check));
                file.nonce = Some(hex::encode(nonce));
                file.kdf = Some(kdf);
                file.protection = PROTECTION_PASSPHRASE.into();
            }
        }
        // Compact, one line: `{"format":"datamesh-user-key","version":1,...}`.
        let mut out = serde_json::to_vec(&file).expect("a struct of strings and numbers serializes");
        out.push(b'\n');
        out
    }

    /// Parse a key file. KeyError::PassphraseRequired if protected and None given; KeyError::WrongPassphrase; KeyError::Corrupt(String) / UnsupportedVersion.
    ///
    /// A passphrase given for a clear file is ignored.
    pub fn from_file_bytes(bytes: &[u8], passphrase: Option<&str>) -> Result<Self, KeyError> {
        let file = parse_key_file(bytes)?;
        let stated: UserPublicKey =
            file.public.parse().map_err(|e| KeyError::Corrupt(format!("its public key line is unreadable: {e}")))?;
        let secret = match file.protection.as_str() {
            PROTECTION_NONE => {
                let secret = decode_secret(file.secret.as_deref())?;
                let check = hex_field(file.check.as_deref(), "check")?;
                if check != clear_check(&secret) {
                    return Err(KeyError::Corrupt("the secret key does not match its checksum".into()));
                }
                secret
            }
            PROTECTION_PASSPHRASE => {
                let Some(pass) = passphrase else { return Err(KeyError::PassphraseRequired) };
                let kdf = file.kdf.as_ref().ok_or_else(|| KeyError::Corrupt("the `kdf` field is missing".into()))?;
                if kdf.algorithm != "argon2id" {
                    return Err(KeyError::Corrupt(format!("unknown key derivation `{}`", kdf.algorithm)));
                }
                let p = PassphraseParams { m_cost: kdf.m_cost, t_cost: kdf.t_cost, p_cost: kdf.p_cost };
                if !p.within_limits() {
                    return Err(KeyError::Corrupt(format!(
                        "it asks for Argon2 cost m={} KiB, t={}, p={}, beyond the limits this build accepts",
                        p.m_cost, p.t_cost, p.p_cost
                    )));
                }
                let salt = hex_field(Some(&kdf.salt), "salt")?;
                let nonce = hex_field(file.nonce.as_deref(), "nonce")?;
                let sealed = hex_field(file.sealed.as_deref(), "sealed")?;
                let key_check = hex_field(file.key_check.as_deref(), "key_check")?;
                let kek = argon2id(pass, &salt, p)
                    .ok_or_else(|| KeyError::Corrupt("its Argon2 parameters or salt are invalid".into()))?;
                let (enc, check) = key_file_subkeys(&kek);
                if !ct_eq(&check, &key_check) {
                    return Err(KeyError::WrongPassphrase);
                }
                let aad = key_file_aad(&file.public, kdf);
                let plain = aes_open(&enc, &nonce, &aad, &sealed).ok_or_else(|| {
                    KeyError::Corrupt("the passphrase is right but the sealed key fails authentication".into())
                })?;
                let mut secret = Zeroizing::new([0u8; SECRET_LEN]);
                if plain.len() != SECRET_LEN {
                    return Err(KeyError::Corrupt("the sealed key has the wrong length".into()));
                }
                secret.copy_from_slice(&plain);
                secret
            }
            other => return Err(KeyError::Corrupt(format!("unknown protection `{other}`"))),
        };
        let key = Self::from_secret(&secret);
        if key.public != stated {
            return Err(KeyError::Corrupt("the public key line does not belong to the secret key".into()));
        }
        Ok(key)
    }

    /// Whether key-file bytes are passphrase-protected. `false` for
    /// anything that is not a key file.
    pub fn is_protected(file_bytes: &[u8]) -> bool {
        parse_key_file(file_bytes).is_ok_and(|f| f.protection != PROTECTION_NONE)
    }

    /// The public key stated in a key file, readable without the passphrase
    /// (e.g. to show which key a protected file holds). Not checked against
    /// the secret until [`UserKey::from_file_bytes`] opens it.
    pub fn public_from_file_bytes(file_bytes: &[u8]) -> Result<UserPublicKey, KeyError> {
        let file = parse_key_file(file_bytes)?;
        file.public.parse().map_err(|e| KeyError::Corrupt(format!("its public key line is unreadable: {e}")))
    }

    /// The public half, to share.
    pub fn public(&self) -> UserPublicKey {
        self.public.clone()
    }

    /// The Ed25519 key that signs ownership (e.g. delete requests).
    pub fn signing_key(&self) -> &ed25519_dalek::SigningKey {
        &self.signing
    }

    /// The secret mixed into convergent data keys.
    pub fn convergence_secret(&self) -> &[u8; 32] {
        &self.convergence
    }
}

impl fmt::Debug for UserKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserKey({}, secrets redacted)", self.public.fingerprint())
    }
}

/// The hpke X-Wing private key for a seed.
fn xwing_private(seed: &[u8; 32]) -> <XWing as Kem>::PrivateKey {
    // X-Wing private keys are exactly 32-byte seeds; only the length is checked.
    <XWing as Kem>::PrivateKey::from_bytes(seed).expect("32-byte X-Wing seed")
}

/// The checksum of clear secret material.
fn clear_check(secret: &[u8; SECRET_LEN]) -> Vec<u8> {
    blake3::derive_key("datamesh user key check v1", secret)[..8].to_vec()
}

/// From the key-encryption key: the AES key sealing the secret, and the
/// 16-byte passphrase check value.
fn key_file_subkeys(kek: &[u8; 32]) -> (Zeroizing<[u8; 32]>, [u8; 16]) {
    let enc = Zeroizing::new(blake3::derive_key("datamesh key file encryption v1", kek));
    let mut check = [0u8; 16];
    check.copy_from_slice(&blake3::derive_key("datamesh key file key check v1", kek)[..16]);
    (enc, check)
}

/// The AAD of a protected key file: every header field a reader relies on.
fn key_file_aad(public: &str, kdf: &KdfParams) -> Vec<u8> {
    format!(
        "{KEY_FILE_FORMAT} v{KEY_FILE_VERSION}\n{PROTECTION_PASSPHRASE}\n{public}\n{}\n{}\n{}\n{}\n{}",
        kdf.algorithm, kdf.salt, kdf.m_cost, kdf.t_cost, kdf.p_cost
    )
    .into_bytes()
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn hex_field(s: Option<&str>, name: &str) -> Result<Vec<u8>, KeyError> {
    let s = s.ok_or_else(|| KeyError::Corrupt(format!("the `{name}` field is missing")))?;
    hex::decode(s).map_err(|_| KeyError::Corrupt(format!("the `{name}` field is not hex")))
}

fn decode_secret(s: Option<&str>) -> Result<Zeroizing<[u8; SECRET_LEN]>, KeyError> {
    let s = s.ok_or_else(|| KeyError::Corrupt("the `secret` field is missing".into()))?;
    let mut secret = Zeroizing::new([0u8; SECRET_LEN]);
    hex::decode_to_slice(s, secret.as_mut())
        .map_err(|_| KeyError::Corrupt("the `secret` field is not 128 bytes of hex".into()))?;
    Ok(secret)
}

fn parse_key_file(bytes: &[u8]) -> Result<KeyFile, KeyError> {
    #[derive(Deserialize)]
    struct Head {
        format: String,
        version: u32,
    }
    if bytes.len() > MAX_KEY_FILE_SIZE {
        return Err(KeyError::Corrupt(format!("it is {} bytes, far more than a key file", bytes.len())));
    }
    let head: Head =
        serde_json::from_slice(bytes).map_err(|e| KeyError::Corrupt(format!("not a DataMesh key file: {e}")))?;
    if head.format != KEY_FILE_FORMAT {
        return Err(KeyError::Corrupt(format!("its format is `{}`, not `{KEY_FILE_FORMAT}`", head.format)));
    }
    if head.version != KEY_FILE_VERSION {
        return Err(KeyError::UnsupportedVersion(head.version));
    }
    serde_json::from_slice(bytes).map_err(|e| KeyError::Corrupt(e.to_string()))
}

/// Key file version 1, as stored.
#[derive(Serialize, Deserialize)]
struct KeyFile {
    format: String,
    version: u32,
    public: String,
    protection: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    check: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kdf: Option<KdfParams>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key_check: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nonce: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sealed: Option<String>,
}

impl Drop for KeyFile {
    fn drop(&mut self) {
        // The clear secret's hex is key material.
        if let Some(s) = &mut self.secret {
            s.zeroize();
        }
    }
}

#[derive(Serialize, Deserialize)]
struct KdfParams {
    algorithm: String,
    salt: String,
    m_cost: u32,
    t_cost: u32,
    p_cost: u32,
}

/// What a user shares so others can wrap keys for them, written as one line
/// of text by `Display` and read back by `FromStr`.
///
/// The text is `dmpk1` followed by unpadded lowercase RFC 4648 base32 of
/// `0x01 ‖ ed25519 ‖ x25519 ‖ xwing (1216 B) ‖ BLAKE3(previous)[..4]`; the
/// checksum catches copy-and-paste damage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserPublicKey {
    /// Ed25519 verifying key (ownership signatures).
    pub ed25519: [u8; 32],
    /// X25519 public key (HPKE wraps).
    pub x25519: [u8; 32],
    /// X-Wing public key, 1216 bytes (hybrid post-quantum wraps).
    pub xwing: Vec<u8>,
}

impl UserPublicKey {
    /// A short, stable identifier for display: 16 hex digits of BLAKE3 over
    /// the binary encoding.
    pub fn fingerprint(&self) -> String {
        hex::encode(&blake3::hash(&self.to_binary()).as_bytes()[..8])
    }

    /// The versioned binary form, checksum included.
    fn to_binary(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(PUBLIC_BIN_LEN);
        b.push(PUBLIC_VERSION);
        b.extend_from_slice(&self.ed25519);
        b.extend_from_slice(&self.x25519);
        b.extend_from_slice(&self.xwing);
        let sum = blake3::hash(&b);
        b.extend_from_slice(&sum.as_bytes()[..4]);
        b
    }

    /// BLAKE3 of the X-Wing key: the `recipient` of X-Wing wraps.
    fn xwing_id(&self) -> [u8; 32] {
        *blake3::hash(&self.xwing).as_bytes()
    }
}

impl fmt::Display for UserPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(PUBLIC_PREFIX)?;
        f.write_str(&base32_encode(&self.to_binary()))
    }
}

impl FromStr for UserPublicKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, KeyError> {
        let bad = |r: &str| Err(KeyError::InvalidPublicKey(r.into()));
        let s = s.trim();
        let Some(body) = s.strip_prefix(PUBLIC_PREFIX) else {
            return bad("it does not start with `dmpk1`");
        };
        // Refuse oversized input before decoding it.
        if body.len() != (PUBLIC_BIN_LEN * 8).div_ceil(5) {
            return bad("it has the wrong length");
        }
        let Some(b) = base32_decode(body) else { return bad("it contains characters outside base32") };
        if b.len() != PUBLIC_BIN_LEN {
            return bad("it has the wrong length");
        }
        if b[0] != PUBLIC_VERSION {
            return bad(&format!("encoding version {} is unknown; upgrade datamesh", b[0]));
        }
        let (data, sum) = b.split_at(PUBLIC_BIN_LEN - 4);
        if &blake3::hash(data).as_bytes()[..4] != sum {
            return bad("its checksum does not match, so it was mistyped or cut");
        }
        let mut ed25519 = [0u8; 32];
        ed25519.copy_from_slice(&data[1..33]);
        let mut x25519 = [0u8; 32];
        x25519.copy_from_slice(&data[33..65]);
        let xwing = data[65..].to_vec();
        if VerifyingKey::from_bytes(&ed25519).is_err() {
            return bad("its Ed25519 key is not a curve point");
        }
        if !x25519_contributory(&x25519) {
            return bad("its X25519 key is a low-order point");
        }
        if <XWing as Kem>::PublicKey::from_bytes(&xwing).is_err() {
            return bad("its X-Wing key is malformed");
        }
        Ok(UserPublicKey { ed25519, x25519, xwing })
    }
}

/// Whether an X25519 public key yields a contributory shared secret (is not
/// one of the low-order points that would make every wrap to it guessable).
fn x25519_contributory(pk: &[u8; 32]) -> bool {
    // Any fixed clamped scalar works: low order shows for all of them.
    let probe = StaticSecret::from([0x5a; 32]);
    probe.diffie_hellman(&x25519_dalek::PublicKey::from(*pk)).was_contributory()
}

const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// RFC 4648 base32, lowercase, no padding.
fn base32_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity((data.len() * 8).div_ceil(5));
    let (mut acc, mut bits) = (0u32, 0u32);
    for &byte in data {
        acc = (acc << 8) | byte as u32;
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(BASE32[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(BASE32[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Inverse of [`base32_encode`], case-insensitive; `None` on a character
/// outside the alphabet or non-zero trailing bits (non-canonical text).
fn base32_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 5 / 8);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c.to_ascii_lowercase() {
            c @ b'a'..=b'z' => c - b'a',
            c @ b'2'..=b'7' => c - b'2' + 26,
            _ => return None,
        };
        acc = ((acc << 5) | v as u32) & 0xfff;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    if bits >= 5 || acc & ((1 << bits) - 1) != 0 {
        return None;
    }
    Some(out)
}

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
fn data_key_from(mut plain: Vec<u8>) -> Option<DataKey> {
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

fn open_x25519(user: &UserKey, enc: &[u8], sealed: &[u8]) -> Option<DataKey> {
    let mut sk_bytes = Zeroizing::new(user.x25519.to_bytes());
    // hpke clamps on parsing, as x25519-dalek does on use: same key.
    let sk = <X25519HkdfSha256 as Kem>::PrivateKey::from_bytes(sk_bytes.as_ref()).ok()?;
    sk_bytes.zeroize();
    hpke_open::<X25519HkdfSha256>(&sk, enc, sealed)
}

fn open_xwing(user: &UserKey, enc: &[u8], sealed: &[u8]) -> Option<DataKey> {
    hpke_open::<XWing>(&xwing_private(&user.xwing_seed), enc, sealed)
}

/// HPKE base-mode open of a wrapped data key under KEM `K`.
fn hpke_open<K: Kem>(sk: &K::PrivateKey, enc: &[u8], sealed: &[u8]) -> Option<DataKey> {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
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
}
