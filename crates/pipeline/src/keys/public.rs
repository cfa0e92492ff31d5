//! A user key's public half and its `dmpk1...` text form (base32 with a
//! checksum).

#[allow(clippy::wildcard_imports)]
use super::*;

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
    pub(super) fn to_binary(&self) -> Vec<u8> {
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
    pub(super) fn xwing_id(&self) -> [u8; 32] {
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
pub(super) fn x25519_contributory(pk: &[u8; 32]) -> bool {
    // Any fixed clamped scalar works: low order shows for all of them.
    let probe = StaticSecret::from([0x5a; 32]);
    probe.diffie_hellman(&x25519_dalek::PublicKey::from(*pk)).was_contributory()
}

pub(super) const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// RFC 4648 base32, lowercase, no padding.
pub(super) fn base32_encode(data: &[u8]) -> String {
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
pub(super) fn base32_decode(s: &str) -> Option<Vec<u8>> {
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
