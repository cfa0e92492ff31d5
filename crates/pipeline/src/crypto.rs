//! Chunk encryption: per-file data keys and the sealed-chunk format.
//!
//! Every encrypted file has its own 256-bit [`DataKey`], drawn at random or,
//! for convergent encryption, derived from the content and the owner's
//! convergence secret. Each chunk is sealed on its own with an AEAD so that
//! chunks can be fetched, verified and opened independently.
//!
//! # Sealed chunk format, version 1
//!
//! ```text
//! sealed = nonce || ciphertext || tag
//!   nonce       12 bytes (AES-256-GCM) or 24 bytes (XChaCha20-Poly1305)
//!   ciphertext  same length as the plaintext
//!   tag         16 bytes
//! aad    = "datamesh chunk v1" || cipher id (1 byte) || chunk index (u64, big-endian)
//!   cipher id   1 = AES-256-GCM, 2 = XChaCha20-Poly1305
//! ```
//!
//! The AAD is fixed-length, so its encoding is unambiguous. Binding the index
//! means a chunk moved to another position (or swapped with another chunk of
//! the same file) fails authentication; binding the cipher means a chunk
//! cannot be reinterpreted under the other algorithm.
//!
//! # Nonces
//!
//! - [`NonceMode::Random`]: a fresh nonce from the OS RNG on *every* call, so
//!   re-sending or re-encrypting a chunk never reuses a nonce with different
//!   content. For AES-GCM's 96-bit nonces the chance that any two of `n`
//!   seals under one key collide is at most `n² / 2⁹⁷`: about `2⁻⁵⁷` for a
//!   file of 2²⁰ chunks (1 TiB at 1 MiB chunks) and `2⁻³³` at 2³² chunks,
//!   which is NIST SP 800-38D's limit for random nonces. Keys are per file,
//!   so the count is per file, not global. XChaCha's 192-bit nonces make
//!   collisions negligible at any count.
//! - [`NonceMode::Convergent`]: the nonce is a PRF of the AAD (tag, cipher,
//!   index) and the plaintext, keyed by a subkey of the data key (SIV-like).
//!   The same nonce comes back only for the same plaintext at the same index
//!   under the same key, and then the ciphertext is identical too, so nothing
//!   leaks beyond equality, which is exactly what convergence is for.
//!
//! # Convergent keys
//!
//! [`DataKey::convergent`] follows Tahoe-LAFS's "added convergence secret":
//! mixing a per-user secret into the key means only the same user's copies
//! of a file deduplicate, and an outsider cannot confirm a guessed file by
//! encrypting it themselves.

use std::fmt;

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use datamesh_core::manifest::{Chunking, Cipher};
use rand::RngCore;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, Tag, UnboundKey};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Length of an AEAD tag, for both ciphers.
pub const TAG_LEN: usize = 16;

/// The format tag at the start of every chunk's AAD.
const CHUNK_AAD_TAG: &[u8; 17] = b"datamesh chunk v1";
/// Length of the AAD: tag, cipher id, index.
const CHUNK_AAD_LEN: usize = CHUNK_AAD_TAG.len() + 1 + 8;
/// BLAKE3 `derive_key` context of convergent data keys.
const CONVERGENT_KEY_CONTEXT: &str = "datamesh convergent data key v1";
/// BLAKE3 `derive_key` context of the subkey that keys convergent nonces.
/// A separate subkey keeps the PRF key apart from the cipher key.
const NONCE_KEY_CONTEXT: &str = "datamesh convergent chunk nonce v1";

/// Why a sealed chunk does not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The tag did not verify: wrong key, wrong chunk index, wrong cipher, or
    /// the bytes were altered.
    #[error(
        "chunk failed authentication: it was altered, belongs at another position, or the key is wrong; \
         fetch it again from another replica, or check that you are using the key the file was stored with"
    )]
    Authentication,
    /// Shorter than a nonce and a tag.
    #[error(
        "sealed chunk is too short to hold a nonce and a tag; it is truncated, fetch it again from another replica"
    )]
    Truncated,
}

/// A file's 256-bit data key; zeroized on drop; Debug never prints it.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct DataKey([u8; 32]);

impl DataKey {
    /// A fresh key from the operating system's RNG.
    ///
    /// # Panics
    /// If the OS RNG fails, which on supported platforms does not happen
    /// short of a broken system; continuing without randomness would be worse.
    pub fn random() -> Self {
        let mut k = [0u8; 32];
        fill_random(&mut k);
        let key = DataKey(k);
        k.zeroize();
        key
    }

    /// Convergent key: BLAKE3 `derive_key` with context
    /// `"datamesh convergent data key v1"` over the user's convergence
    /// secret, the BLAKE3 hash of the whole plaintext, and `params`. Same
    /// user, same content and same parameters give the same key; another
    /// user's secret gives an unrelated one.
    ///
    /// `params` must name everything else that shapes the stored bytes, at
    /// least the cipher and the chunking; [`convergent_params`] builds a
    /// canonical string. The key material is `secret || content_hash ||
    /// params`; the first two are fixed-length, so it is unambiguous.
    pub fn convergent(secret: &[u8; 32], content_hash: &[u8; 32], params: &str) -> Self {
        let mut h = blake3::Hasher::new_derive_key(CONVERGENT_KEY_CONTEXT);
        h.update(secret);
        h.update(content_hash);
        h.update(params.as_bytes());
        DataKey(*h.finalize().as_bytes())
    }

    /// A key from its raw bytes (e.g. just unwrapped).
    pub fn from_bytes(b: [u8; 32]) -> Self {
        DataKey(b)
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl PartialEq for DataKey {
    /// Constant time, so comparing keys does not leak where they differ.
    fn eq(&self, other: &Self) -> bool {
        self.0.iter().zip(other.0.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

impl Eq for DataKey {}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

/// The canonical `params` string for [`DataKey::convergent`]: the cipher and
/// the chunking, e.g. `"cipher=aes256gcm;chunking=fixed:1048576"`.
///
/// Everything that changes the stored bytes for the same plaintext belongs
/// here, so that two puts that cannot deduplicate anyway get unrelated keys.
pub fn convergent_params(cipher: Cipher, chunking: &Chunking) -> String {
    let c = match cipher {
        Cipher::Aes256Gcm => "aes256gcm",
        Cipher::XChaCha20Poly1305 => "xchacha20poly1305",
    };
    let ch = match chunking {
        Chunking::Fixed { size } => format!("fixed:{size}"),
        Chunking::FastCdc { min, avg, max } => format!("fastcdc:{min}:{avg}:{max}"),
    };
    format!("cipher={c};chunking={ch}")
}

/// How a chunk's nonce is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceMode {
    /// A fresh random nonce on every seal (the default for random keys).
    Random,
    /// A nonce derived from the key, index and plaintext, so identical
    /// chunks seal to identical bytes (for convergent encryption).
    Convergent,
}

/// Nonce length of `cipher`.
pub fn nonce_len(cipher: Cipher) -> usize {
    match cipher {
        Cipher::Aes256Gcm => 12,
        Cipher::XChaCha20Poly1305 => 24,
    }
}

/// Length of seal_chunk's output for a plaintext of `len` bytes.
pub fn sealed_len(cipher: Cipher, len: usize) -> usize {
    nonce_len(cipher) + len + TAG_LEN
}

/// Seals one chunk. Output layout: `nonce || ciphertext || tag` (12-byte
/// nonce for AES-GCM, 24-byte for XChaCha); see [`sealed_len`].
///
/// - [`NonceMode::Random`]: a fresh random nonce on each call, including
///   when the same chunk is sealed again. With `n` seals under one (per-file)
///   key, the chance of any AES-GCM nonce collision is at most `n²/2⁹⁷`:
///   `2⁻³³` at `n = 2³²` (NIST SP 800-38D's bound for random nonces), about
///   `2⁻⁵⁷` for a file of 2²⁰ chunks.
/// - [`NonceMode::Convergent`]: nonce = BLAKE3, keyed by a subkey derived
///   from `key`, over the AAD (so the cipher and index) and the plaintext,
///   truncated (SIV-like: a nonce repeats only for the identical plaintext
///   at the same index, which then seals to identical bytes: the point of
///   convergence).
///
/// The AAD binds the format tag `"datamesh chunk v1"`, the cipher and the
/// chunk index, so chunks cannot be reordered or swapped between positions.
///
/// # Panics
/// In random mode, if the OS RNG fails (see [`DataKey::random`]).
pub fn seal_chunk(cipher: Cipher, key: &DataKey, index: u64, plaintext: &[u8], mode: NonceMode) -> Vec<u8> {
    let aad = chunk_aad(cipher, index);
    let nl = nonce_len(cipher);
    let mut nonce = [0u8; 24];
    match mode {
        NonceMode::Random => fill_random(&mut nonce[..nl]),
        NonceMode::Convergent => convergent_nonce(key, &aad, plaintext, &mut nonce[..nl]),
    }
    seal_with_nonce(cipher, key, &aad, &nonce[..nl], plaintext)
}

/// Opens a sealed chunk; CryptoError::Authentication if the tag fails (wrong key, tampered, or wrong index); CryptoError::Truncated if too short.
pub fn open_chunk(cipher: Cipher, key: &DataKey, index: u64, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let nl = nonce_len(cipher);
    if sealed.len() < nl + TAG_LEN {
        return Err(CryptoError::Truncated);
    }
    let (nonce, rest) = sealed.split_at(nl);
    let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
    let aad = chunk_aad(cipher, index);
    // One copy of the ciphertext into the output, then decrypt in place.
    let mut out = ciphertext.to_vec();
    let ok = match cipher {
        Cipher::Aes256Gcm => {
            let k = aes_key(key);
            let n = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Truncated)?;
            let t = Tag::try_from(tag).map_err(|_| CryptoError::Truncated)?;
            k.open_in_place_separate_tag(n, Aad::from(&aad), t, &mut out, 0..).is_ok()
        }
        Cipher::XChaCha20Poly1305 => {
            let c = XChaCha20Poly1305::new(key.as_bytes().into());
            c.decrypt_in_place_detached(XNonce::from_slice(nonce), &aad, &mut out, tag.into()).is_ok()
        }
    };
    if ok {
        Ok(out)
    } else {
        // Whatever decrypting left behind is unauthenticated; do not leave it around.
        out.zeroize();
        Err(CryptoError::Authentication)
    }
}

/// The AAD of chunk `index`: format tag, cipher id, index (big-endian).
fn chunk_aad(cipher: Cipher, index: u64) -> [u8; CHUNK_AAD_LEN] {
    let mut aad = [0u8; CHUNK_AAD_LEN];
    let t = CHUNK_AAD_TAG.len();
    aad[..t].copy_from_slice(CHUNK_AAD_TAG);
    aad[t] = cipher_id(cipher);
    aad[t + 1..].copy_from_slice(&index.to_be_bytes());
    aad
}

/// The stable one-byte identifier of a cipher in the AAD. Never renumber.
fn cipher_id(cipher: Cipher) -> u8 {
    match cipher {
        Cipher::Aes256Gcm => 1,
        Cipher::XChaCha20Poly1305 => 2,
    }
}

/// SIV-like nonce: BLAKE3 keyed by a subkey of the data key, over the AAD
/// (which carries the cipher and index) and the plaintext, truncated.
fn convergent_nonce(key: &DataKey, aad: &[u8], plaintext: &[u8], out: &mut [u8]) {
    let mut nk = blake3::derive_key(NONCE_KEY_CONTEXT, key.as_bytes());
    let mut h = blake3::Hasher::new_keyed(&nk);
    nk.zeroize();
    h.update(aad);
    h.update(plaintext);
    let d = h.finalize();
    out.copy_from_slice(&d.as_bytes()[..out.len()]);
}

/// Seals with an explicit nonce. The caller guarantees the nonce is unique
/// for this key (random) or tied to the plaintext (convergent).
fn seal_with_nonce(
    cipher: Cipher,
    key: &DataKey,
    aad: &[u8; CHUNK_AAD_LEN],
    nonce: &[u8],
    plaintext: &[u8],
) -> Vec<u8> {
    // One allocation of the final size, one copy of the plaintext, then
    // encryption in place and the tag appended.
    let mut out = Vec::with_capacity(sealed_len(cipher, plaintext.len()));
    out.extend_from_slice(nonce);
    out.extend_from_slice(plaintext);
    let body = &mut out[nonce.len()..];
    match cipher {
        Cipher::Aes256Gcm => {
            let k = aes_key(key);
            let mut n = [0u8; 12];
            n.copy_from_slice(nonce);
            // ring fails only past GCM's per-message limit (~64 GiB), far
            // above any chunk the pipeline accepts.
            let tag = k
                .seal_in_place_separate_tag(Nonce::assume_unique_for_key(n), Aad::from(aad), body)
                .expect("chunk is far below AES-GCM's 64 GiB message limit");
            out.extend_from_slice(tag.as_ref());
        }
        Cipher::XChaCha20Poly1305 => {
            let c = XChaCha20Poly1305::new(key.as_bytes().into());
            // Fails only past the 256 GiB message limit.
            let tag = c
                .encrypt_in_place_detached(XNonce::from_slice(nonce), aad, body)
                .expect("chunk is far below XChaCha20-Poly1305's message limit");
            out.extend_from_slice(&tag);
        }
    }
    out
}

/// The ring AES-256-GCM key for a data key.
fn aes_key(key: &DataKey) -> LessSafeKey {
    // A 32-byte key is always the right length for AES-256.
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key.as_bytes()).expect("32-byte key fits AES-256"))
}

/// Fills `buf` from the OS RNG.
pub(crate) fn fill_random(buf: &mut [u8]) {
    // OsRng reads getrandom(2) directly: no userspace state to fork or leak.
    rand::rngs::OsRng.fill_bytes(buf);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn aad_layout_is_fixed() {
        let aad = chunk_aad(Cipher::XChaCha20Poly1305, 0x0102_0304_0506_0708);
        assert_eq!(&aad[..17], b"datamesh chunk v1");
        assert_eq!(aad[17], 2);
        assert_eq!(&aad[18..], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(chunk_aad(Cipher::Aes256Gcm, 0)[17], 1);
    }

    /// Freezes the sealed format with a fixed nonce, independently of how
    /// nonces are chosen. The expected bytes were computed outside this
    /// crate (Python `cryptography`'s AESGCM, and ChaCha20Poly1305 over an
    /// HChaCha20 subkey for XChaCha), so they also check the AAD layout and
    /// the cipher wiring. Changing them is a format change.
    #[test]
    fn fixed_nonce_known_answer() {
        let key = DataKey::from_bytes([0x42; 32]);
        let aad = chunk_aad(Cipher::Aes256Gcm, 7);
        let s = seal_with_nonce(Cipher::Aes256Gcm, &key, &aad, &[0x24; 12], b"datamesh");
        assert_eq!(hex::encode(&s), "24242424242424242424242471f0b02084a3b556ef0eff5f91f8a8ebf1c4dfec3df6699c");
        assert_eq!(open_chunk(Cipher::Aes256Gcm, &key, 7, &s).as_deref(), Ok(&b"datamesh"[..]));

        let aad = chunk_aad(Cipher::XChaCha20Poly1305, 7);
        let s = seal_with_nonce(Cipher::XChaCha20Poly1305, &key, &aad, &[0x24; 24], b"datamesh");
        assert_eq!(
            hex::encode(&s),
            "242424242424242424242424242424242424242424242424c13fa30403413fce01edc34c713ef3983d134eee0c521061"
        );
        assert_eq!(open_chunk(Cipher::XChaCha20Poly1305, &key, 7, &s).as_deref(), Ok(&b"datamesh"[..]));
    }

    #[test]
    fn debug_redacts_the_key() {
        let k = DataKey::from_bytes([0xab; 32]);
        let s = format!("{k:?}");
        assert!(!s.contains("ab") && !s.contains("171"), "{s}");
    }
}
