//! The user key and its key file (version 1): generation, the Argon2id +
//! AES-256-GCM passphrase protection, loading and saving.

#[allow(clippy::wildcard_imports)]
use super::*;

/// A user's keys: Ed25519 (identity/ownership signatures), X25519 (HPKE wrap), X-Wing (hybrid PQ wrap), and a 32-byte convergence secret. Zeroized on drop.
#[derive(Clone)]
pub struct UserKey {
    /// Zeroizes itself on drop (ed25519-dalek's `zeroize` feature).
    pub(super) signing: SigningKey,
    /// Zeroizes itself on drop (x25519-dalek's `zeroize` feature).
    pub(super) x25519: StaticSecret,
    /// The X-Wing decapsulation key is this 32-byte seed.
    pub(super) xwing_seed: Zeroizing<[u8; 32]>,
    pub(super) convergence: Zeroizing<[u8; 32]>,
    /// Cached: deriving the X-Wing public key runs ML-KEM key generation.
    pub(super) public: UserPublicKey,
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
pub(super) fn xwing_private(seed: &[u8; 32]) -> <XWing as Kem>::PrivateKey {
    // X-Wing private keys are exactly 32-byte seeds; only the length is checked.
    <XWing as Kem>::PrivateKey::from_bytes(seed).expect("32-byte X-Wing seed")
}

/// The checksum of clear secret material.
pub(super) fn clear_check(secret: &[u8; SECRET_LEN]) -> Vec<u8> {
    blake3::derive_key("datamesh user key check v1", secret)[..8].to_vec()
}

/// From the key-encryption key: the AES key sealing the secret, and the
/// 16-byte passphrase check value.
pub(super) fn key_file_subkeys(kek: &[u8; 32]) -> (Zeroizing<[u8; 32]>, [u8; 16]) {
    let enc = Zeroizing::new(blake3::derive_key("datamesh key file encryption v1", kek));
    let mut check = [0u8; 16];
    check.copy_from_slice(&blake3::derive_key("datamesh key file key check v1", kek)[..16]);
    (enc, check)
}

/// The AAD of a protected key file: every header field a reader relies on.
pub(super) fn key_file_aad(public: &str, kdf: &KdfParams) -> Vec<u8> {
    format!(
        "{KEY_FILE_FORMAT} v{KEY_FILE_VERSION}\n{PROTECTION_PASSPHRASE}\n{public}\n{}\n{}\n{}\n{}\n{}",
        kdf.algorithm, kdf.salt, kdf.m_cost, kdf.t_cost, kdf.p_cost
    )
    .into_bytes()
}

pub(super) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(super) fn hex_field(s: Option<&str>, name: &str) -> Result<Vec<u8>, KeyError> {
    let s = s.ok_or_else(|| KeyError::Corrupt(format!("the `{name}` field is missing")))?;
    hex::decode(s).map_err(|_| KeyError::Corrupt(format!("the `{name}` field is not hex")))
}

pub(super) fn decode_secret(s: Option<&str>) -> Result<Zeroizing<[u8; SECRET_LEN]>, KeyError> {
    let s = s.ok_or_else(|| KeyError::Corrupt("the `secret` field is missing".into()))?;
    let mut secret = Zeroizing::new([0u8; SECRET_LEN]);
    hex::decode_to_slice(s, secret.as_mut())
        .map_err(|_| KeyError::Corrupt("the `secret` field is not 128 bytes of hex".into()))?;
    Ok(secret)
}

pub(super) fn parse_key_file(bytes: &[u8]) -> Result<KeyFile, KeyError> {
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
pub(super) struct KeyFile {
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
pub(super) struct KdfParams {
    algorithm: String,
    salt: String,
    m_cost: u32,
    t_cost: u32,
    p_cost: u32,
}
