//! Secrets: random tokens and how they are stored, and the sealing of S3
//! secrets.
//!
//! A token is a kind prefix and 256 random bits in base64url
//! (`dmat_` + 43 characters). The database keeps only SHA-256 over the
//! whole token string: 256 random bits cannot be guessed, so a fast hash is
//! enough (a slow one like Argon2 protects *low-entropy* passwords), and a
//! copy of the database yields no usable token. The prefix is hashed too,
//! so a token of one kind never passes for another; and a token's length is
//! checked before anything else, so a 10 MB "token" costs one comparison.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// The kinds of bearer secrets, each with its own prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenKind {
    Access,
    Refresh,
    Session,
    Csrf,
    ApiKey,
}

impl TokenKind {
    pub(crate) const fn prefix(self) -> &'static str {
        match self {
            TokenKind::Access => "dmat_",
            TokenKind::Refresh => "dmrt_",
            TokenKind::Session => "dmss_",
            TokenKind::Csrf => "dmcs_",
            TokenKind::ApiKey => "dmak_",
        }
    }

    /// The kind a presented token claims by its prefix, if any.
    pub(crate) fn of(token: &str) -> Option<TokenKind> {
        [TokenKind::Access, TokenKind::Refresh, TokenKind::Session, TokenKind::Csrf, TokenKind::ApiKey]
            .into_iter()
            .find(|k| token.starts_with(k.prefix()))
    }
}

/// Every token's length: a 5-byte prefix and 32 bytes in base64url.
pub(crate) const TOKEN_LEN: usize = 5 + 43;

/// 32 bytes from the operating system's generator.
pub(crate) fn random32() -> [u8; 32] {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
}

/// SHA-256 of `data`.
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// A new token of `kind`: the string the holder keeps, and the hash the
/// database keeps.
pub(crate) fn mint(kind: TokenKind) -> (Zeroizing<String>, [u8; 32]) {
    let raw = Zeroizing::new(random32());
    let token = Zeroizing::new(format!("{}{}", kind.prefix(), URL_SAFE_NO_PAD.encode(*raw)));
    let hash = sha256(token.as_bytes());
    (token, hash)
}

/// The stored hash of a presented token of `kind`, or `None` when it is not
/// a well-formed token of that kind (wrong length, prefix or alphabet).
pub(crate) fn parse(kind: TokenKind, token: &str) -> Option<[u8; 32]> {
    if token.len() != TOKEN_LEN || !token.starts_with(kind.prefix()) {
        return None;
    }
    let body = &token[kind.prefix().len()..];
    let raw = URL_SAFE_NO_PAD.decode(body).ok()?;
    (raw.len() == 32).then(|| sha256(token.as_bytes()))
}

/// A random identifier of `len` characters from `alphabet`.
pub(crate) fn random_id(len: usize, alphabet: &[u8]) -> String {
    let mut out = String::with_capacity(len);
    while out.len() < len {
        for b in random32() {
            // Rejection sampling keeps the choice uniform.
            let limit = 256 - 256 % alphabet.len();
            if (b as usize) < limit && out.len() < len {
                out.push(alphabet[b as usize % alphabet.len()] as char);
            }
        }
    }
    out
}

/// The key that seals S3 secrets at rest, given to [`crate::Services::open`]
/// by the caller (the node keeps it beside its identity, not in the
/// database): a copy of the database alone reveals no S3 secret.
///
/// Its `id` names the key so that a later key rotation can tell which key
/// sealed a row. Gateways sharing one database must share the sealing key
/// (an S3 secret sealed by another key does not open, and its key is then
/// refused as invalid); losing it invalidates every S3 key, not the
/// accounts.
pub struct SealingKey {
    id: String,
    key: Zeroizing<[u8; 32]>,
}

impl SealingKey {
    /// A sealing key from 32 secret bytes, named `id` (printable, at most 64
    /// characters).
    pub fn new(id: impl Into<String>, key: [u8; 32]) -> SealingKey {
        SealingKey { id: id.into(), key: Zeroizing::new(key) }
    }

    /// A fresh random key (tests, or a first start that then persists it).
    pub fn generate(id: impl Into<String>) -> SealingKey {
        SealingKey::new(id, random32())
    }

    /// The key's name.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The key's secret bytes, to persist it.
    pub fn secret_bytes(&self) -> &[u8; 32] {
        &self.key
    }

    /// The associated data binding a sealed secret to its S3 key and this
    /// sealing key: a sealed blob copied onto another access key's row, or
    /// opened with another sealing key, fails to open.
    fn aad(&self, key_id: &str) -> Vec<u8> {
        format!("datamesh-s3-secret-v1\0{}\0{}", self.id, key_id).into_bytes()
    }

    /// Seals `secret` for the S3 key `key_id`: a random 24-byte nonce, then
    /// the XChaCha20-Poly1305 ciphertext.
    pub(crate) fn seal(&self, key_id: &str, secret: &[u8]) -> Vec<u8> {
        let cipher = XChaCha20Poly1305::new((&*self.key).into());
        let mut nonce = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let aad = self.aad(key_id);
        let ct = cipher.encrypt(XNonce::from_slice(&nonce), Payload { msg: secret, aad: &aad }).unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        out
    }

    /// Opens a blob sealed by [`SealingKey::seal`] for `key_id`; `None` if
    /// it was sealed for another key, by another sealing key, or altered.
    pub(crate) fn open(&self, key_id: &str, sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        if sealed.len() < 24 + 16 {
            return None;
        }
        let cipher = XChaCha20Poly1305::new((&*self.key).into());
        let aad = self.aad(key_id);
        cipher
            .decrypt(XNonce::from_slice(&sealed[..24]), Payload { msg: &sealed[24..], aad: &aad })
            .ok()
            .map(Zeroizing::new)
    }
}

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealingKey").field("id", &self.id).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_refuse_other_kinds() {
        let (t, h) = mint(TokenKind::Access);
        assert_eq!(t.len(), TOKEN_LEN);
        assert_eq!(parse(TokenKind::Access, &t), Some(h));
        assert_eq!(parse(TokenKind::Refresh, &t), None);
        assert_eq!(parse(TokenKind::Access, &t[..TOKEN_LEN - 1]), None);
        assert_eq!(parse(TokenKind::Access, &"dmat_".repeat(2_000_000)), None);
    }

    #[test]
    fn sealed_secrets_are_bound_to_their_key() {
        let k = SealingKey::generate("k1");
        let sealed = k.seal("AKIA1", b"secret");
        assert_eq!(k.open("AKIA1", &sealed).as_deref().map(|v| v.as_slice()), Some(&b"secret"[..]));
        assert!(k.open("AKIA2", &sealed).is_none());
        assert!(SealingKey::new("k1", [7; 32]).open("AKIA1", &sealed).is_none());
        let mut bad = sealed.clone();
        bad[30] ^= 1;
        assert!(k.open("AKIA1", &bad).is_none());
    }

    #[test]
    fn random_ids_use_the_alphabet() {
        let id = random_id(20, b"ABC");
        assert_eq!(id.len(), 20);
        assert!(id.bytes().all(|b| b"ABC".contains(&b)));
    }
}
