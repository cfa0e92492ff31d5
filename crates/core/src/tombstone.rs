//! Tombstones: a file owner's signed word that a file is deleted.
//!
//! The owner signs [`delete_message`] with the Ed25519 key the manifest
//! names (`Manifest::owner`). The node that takes the delete request keeps
//! the signature as a tombstone and sends it to every holder; a holder checks
//! it against the manifest it already has, so no node can delete what it does
//! not own, and nobody but the owner can wipe a file from the network.
//!
//! A tombstone deletes the uploads of its file made up to `deleted_at`: a
//! location record names its upload's time (`LocationRecord::uploaded_at`),
//! and a re-upload of the same bytes after the deletion is not deleted by
//! the old tombstone ([`Tombstone::covers`]); a record of unknown time (a
//! version 1 record) is.
//!
//! Encoding (version 1):
//! ```text
//! [1][cid_len u8][manifest CID bytes][deleted_at u64 BE][signature 64 bytes]
//! ```

use ed25519_dalek::{Signature, Verifier, VerifyingKey};

use crate::cid::Cid;

const VERSION: u8 = 1;

/// The message an owner signs to delete `cid` at `unix_secs`.
pub fn delete_message(cid: &Cid, unix_secs: u64) -> Vec<u8> {
    format!("datamesh-delete-v1\n{cid}\n{unix_secs}").into_bytes()
}

/// A signed deletion of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tombstone {
    /// The file's manifest CID.
    pub manifest: Cid,
    /// When the owner signed it (unix seconds).
    pub deleted_at: u64,
    /// The owner's Ed25519 signature of [`delete_message`].
    pub signature: [u8; 64],
}

/// Why a tombstone is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TombstoneError {
    /// The bytes are not a tombstone.
    #[error("not a tombstone: {0}")]
    Malformed(&'static str),
    /// The file has no owner key, so nobody can sign its deletion.
    #[error("{0} has no owner key; it cannot be deleted across the network, only unpinned where it is kept")]
    NoOwner(Cid),
    /// The signature is not by the owner the manifest names.
    #[error("the tombstone for {0} is not signed by the file's owner")]
    NotOwner(Cid),
}

impl Tombstone {
    /// The binary form.
    pub fn encode(&self) -> Vec<u8> {
        let c = self.manifest.to_bytes();
        let mut out = Vec::with_capacity(2 + c.len() + 8 + 64);
        out.push(VERSION);
        // CIDs we issue are ≤ 38 bytes.
        out.push(c.len() as u8);
        out.extend_from_slice(&c);
        out.extend_from_slice(&self.deleted_at.to_be_bytes());
        out.extend_from_slice(&self.signature);
        out
    }

    /// Decodes untrusted bytes; never panics.
    pub fn decode(b: &[u8]) -> Result<Self, TombstoneError> {
        let (&v, rest) = b.split_first().ok_or(TombstoneError::Malformed("empty"))?;
        if v != VERSION {
            return Err(TombstoneError::Malformed("unknown version"));
        }
        let (&n, rest) = rest.split_first().ok_or(TombstoneError::Malformed("truncated"))?;
        let n = n as usize;
        if rest.len() != n + 8 + 64 {
            return Err(TombstoneError::Malformed("wrong length"));
        }
        let manifest = Cid::from_bytes(&rest[..n]).map_err(|_| TombstoneError::Malformed("bad CID"))?;
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&rest[n..n + 8]);
        let mut signature = [0u8; 64];
        signature.copy_from_slice(&rest[n + 8..]);
        Ok(Self { manifest, deleted_at: u64::from_be_bytes(ts), signature })
    }

    /// Whether this tombstone deletes the upload made at `uploaded_at`
    /// (unix seconds; 0: unknown, deleted).
    pub fn covers(&self, uploaded_at: u64) -> bool {
        uploaded_at <= self.deleted_at
    }

    /// Checks the signature against the owner key of the file's manifest.
    pub fn verify(&self, owner: Option<&[u8]>) -> Result<(), TombstoneError> {
        let owner = owner.ok_or(TombstoneError::NoOwner(self.manifest))?;
        let key = <[u8; 32]>::try_from(owner)
            .ok()
            .and_then(|k| VerifyingKey::from_bytes(&k).ok())
            .ok_or(TombstoneError::NotOwner(self.manifest))?;
        key.verify(&delete_message(&self.manifest, self.deleted_at), &Signature::from_bytes(&self.signature))
            .map_err(|_| TombstoneError::NotOwner(self.manifest))
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Signer, SigningKey};

    use super::*;

    fn signed(key: &SigningKey, cid: Cid, ts: u64) -> Tombstone {
        Tombstone { manifest: cid, deleted_at: ts, signature: key.sign(&delete_message(&cid, ts)).to_bytes() }
    }

    #[test]
    fn only_the_owner_signs_a_valid_tombstone() {
        let owner = SigningKey::from_bytes(&[1; 32]);
        let other = SigningKey::from_bytes(&[2; 32]);
        let cid = Cid::dag_cbor_blake3(b"manifest");
        let pk = owner.verifying_key().to_bytes();
        let t = signed(&owner, cid, 1_700_000_000);
        assert_eq!(Tombstone::decode(&t.encode()).unwrap(), t);
        t.verify(Some(&pk)).unwrap();
        assert_eq!(signed(&other, cid, 1).verify(Some(&pk)), Err(TombstoneError::NotOwner(cid)));
        assert_eq!(t.verify(None), Err(TombstoneError::NoOwner(cid)));
        // Replayed onto another file, or with another time: refused.
        let moved = Tombstone { manifest: Cid::dag_cbor_blake3(b"other"), ..t.clone() };
        assert!(moved.verify(Some(&pk)).is_err());
        let retimed = Tombstone { deleted_at: t.deleted_at + 1, ..t.clone() };
        assert!(retimed.verify(Some(&pk)).is_err());
    }

    #[test]
    fn a_tombstone_covers_uploads_up_to_its_time() {
        let t = Tombstone { manifest: Cid::dag_cbor_blake3(b"m"), deleted_at: 100, signature: [0; 64] };
        assert!(t.covers(0) && t.covers(99) && t.covers(100));
        assert!(!t.covers(101));
    }

    #[test]
    fn bad_bytes_are_refused_not_panicked_on() {
        let t = signed(&SigningKey::from_bytes(&[1; 32]), Cid::dag_cbor_blake3(b"m"), 5).encode();
        for cut in 0..t.len() {
            assert!(Tombstone::decode(&t[..cut]).is_err());
        }
        let mut long = t.clone();
        long.push(0);
        assert!(Tombstone::decode(&long).is_err());
        let mut v2 = t.clone();
        v2[0] = 2;
        assert!(Tombstone::decode(&v2).is_err());
        // A CID length one past the CID (the byte after it taken for part
        // of it): found by fuzzing; one tombstone has one encoding.
        let mut padded = t[..2].to_vec();
        padded[1] += 1;
        padded.extend_from_slice(&t[2..2 + t[1] as usize]);
        padded.push(0);
        padded.extend_from_slice(&t[2 + t[1] as usize..]);
        assert!(Tombstone::decode(&padded).is_err());
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(b in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = Tombstone::decode(&b);
        }
    }
}
