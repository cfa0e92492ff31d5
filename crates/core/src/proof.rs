//! Proofs of storage: "show me bytes `start..start+len` of shard X", answered
//! with a BLAKE3 verified slice (the Bao format).
//!
//! A shard's CID is the BLAKE3 hash of its bytes, and BLAKE3 is a Merkle tree
//! over 1 KiB chunks: a slice (the asked-for chunks plus the sibling hashes on
//! their path to the root) verifies against the CID alone. The auditor needs
//! no copy of the shard and no per-shard metadata, the holder cannot answer
//! without the bytes of the segment (which the auditor picks at random), and a
//! proof costs the holder one pass over the shard to build the tree.
//!
//! Only BLAKE3 CIDs can be proven this way; shards always are (`raw`,
//! BLAKE3), so this is no restriction in practice.

use std::io::{Cursor, Read};

use crate::cid::{BLAKE3, Cid};

/// Longest segment an audit may ask for. Keeps answers small (a proof is the
/// segment plus ~64 bytes per tree level) and bounds what a hostile auditor
/// can make a holder send.
pub const MAX_SEGMENT: u32 = 64 * 1024;

/// Largest proof [`prove`] produces for a segment of at most
/// [`MAX_SEGMENT`] bytes: the segment rounded out to whole 1 KiB chunks,
/// the 8-byte length header, and two 32-byte hashes per tree level of a
/// shard up to 2^40 bytes.
pub const MAX_PROOF: usize = MAX_SEGMENT as usize + 2 * 1024 + 8 + 64 * 40;

/// Why a proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The CID is not a BLAKE3 hash, so no slice can verify against it.
    #[error("{0} is not a BLAKE3 CID; only BLAKE3 shards can be audited")]
    NotBlake3(Cid),
    /// The segment is empty or longer than [`MAX_SEGMENT`].
    #[error("segment of {0} bytes; audits ask for 1..={MAX_SEGMENT} bytes")]
    BadSegment(u32),
    /// The proof does not verify: wrong bytes, wrong tree, truncated, or the
    /// shard has another length.
    #[error("the proof does not verify against {0}")]
    Invalid(Cid),
    /// Bytes after the end of a valid proof.
    #[error("the proof for {0} has trailing bytes")]
    Trailing(Cid),
}

fn check_segment(len: u32) -> Result<(), ProofError> {
    if len == 0 || len > MAX_SEGMENT { Err(ProofError::BadSegment(len)) } else { Ok(()) }
}

/// The proof of bytes `start..start+len` of `shard` (clamped to its end).
/// A `start` past the end proves the shard's length with its last chunk.
pub fn prove(shard: &[u8], start: u64, len: u32) -> Result<Vec<u8>, ProofError> {
    check_segment(len)?;
    let (outboard, _) = bao::encode::outboard(shard);
    let mut ex =
        bao::encode::SliceExtractor::new_outboard(Cursor::new(shard), Cursor::new(&outboard), start, len as u64);
    let mut out = Vec::new();
    // Reading from in-memory cursors of a consistent outboard cannot fail.
    ex.read_to_end(&mut out).map_err(|_| ProofError::BadSegment(len))?;
    Ok(out)
}

/// Verifies `proof` against `cid` and returns the proven segment (shorter
/// than `len` when it reaches the shard's end, empty when `start` is past
/// it). Never panics, whatever the bytes.
pub fn verify(cid: &Cid, start: u64, len: u32, proof: &[u8]) -> Result<Vec<u8>, ProofError> {
    check_segment(len)?;
    if cid.hash_code() != BLAKE3 {
        return Err(ProofError::NotBlake3(*cid));
    }
    if proof.len() > MAX_PROOF {
        return Err(ProofError::Invalid(*cid));
    }
    let hash = bao::Hash::from(cid.digest());
    let mut reader = Cursor::new(proof);
    let mut dec = bao::decode::SliceDecoder::new(&mut reader, &hash, start, len as u64);
    let mut out = Vec::with_capacity(len as usize);
    dec.read_to_end(&mut out).map_err(|_| ProofError::Invalid(*cid))?;
    drop(dec);
    if reader.position() as usize != proof.len() {
        return Err(ProofError::Trailing(*cid));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::pseudo_random;

    #[test]
    fn proofs_verify_and_return_the_segment() {
        for size in [1usize, 1000, 1024, 1025, 70_000, 1 << 20] {
            let shard = pseudo_random(size, size as u64);
            let cid = Cid::raw_blake3(&shard);
            for (start, len) in [(0u64, 1u32), (0, 4096), (size as u64 / 2, 777), (size as u64 - 1, 64 * 1024)] {
                let p = prove(&shard, start, len).unwrap();
                assert!(p.len() <= MAX_PROOF);
                let seg = verify(&cid, start, len, &p).unwrap();
                let end = (start as usize + len as usize).min(size);
                assert_eq!(seg, &shard[start as usize..end], "size {size} start {start} len {len}");
            }
        }
    }

    #[test]
    fn a_flipped_bit_anywhere_is_caught() {
        let shard = pseudo_random(50_000, 3);
        let cid = Cid::raw_blake3(&shard);
        let p = prove(&shard, 20_000, 3000).unwrap();
        let want = &shard[20_000..23_000];
        for i in 0..p.len() {
            let mut bad = p.clone();
            bad[i] ^= 1 << (i % 8);
            match verify(&cid, 20_000, 3000, &bad) {
                Err(_) => {}
                // The length header is only proven by the last chunk; a flip
                // there that keeps the tree's shape changes nothing proven.
                Ok(seg) => assert!(i < 8 && seg == want, "flip at {i} gave other bytes"),
            }
        }
    }

    #[test]
    fn other_bytes_other_segments_and_truncation_are_refused() {
        let shard = pseudo_random(100_000, 4);
        let cid = Cid::raw_blake3(&shard);
        let p = prove(&shard, 40_960, 4096).unwrap();
        // A proof of another segment does not answer this one.
        assert!(verify(&cid, 0, 4096, &p).is_err());
        // A proof from other bytes (a holder that kept something else).
        let mut other = shard.clone();
        other[41_000] ^= 1;
        assert!(verify(&cid, 40_960, 4096, &prove(&other, 40_960, 4096).unwrap()).is_err());
        // Truncated or extended.
        for cut in [0, 1, 8, p.len() / 2, p.len() - 1] {
            assert!(verify(&cid, 40_960, 4096, &p[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = p.clone();
        long.push(0);
        assert_eq!(verify(&cid, 40_960, 4096, &long), Err(ProofError::Trailing(cid)));
        // Bounds and CID kinds.
        assert_eq!(verify(&cid, 0, 0, &p), Err(ProofError::BadSegment(0)));
        assert_eq!(prove(&shard, 0, MAX_SEGMENT + 1), Err(ProofError::BadSegment(MAX_SEGMENT + 1)));
        let sha = Cid::from_sha256(crate::cid::RAW, &[7; 32]);
        assert_eq!(verify(&sha, 40_960, 4096, &p), Err(ProofError::NotBlake3(sha)));
    }

    #[test]
    fn a_start_past_the_end_proves_the_length() {
        let shard = pseudo_random(10_000, 5);
        let cid = Cid::raw_blake3(&shard);
        let p = prove(&shard, 1 << 30, 100).unwrap();
        assert_eq!(verify(&cid, 1 << 30, 100, &p).unwrap(), Vec::<u8>::new());
        // A shorter shard cannot pass for this one.
        let short = &shard[..9000];
        assert!(verify(&cid, 1 << 30, 100, &prove(short, 1 << 30, 100).unwrap()).is_err());
    }

    proptest::proptest! {
        #[test]
        fn verify_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..4096), start in 0u64..1 << 40, len in 0u32..100_000) {
            let cid = Cid::raw_blake3(b"x");
            let _ = verify(&cid, start, len, &bytes);
        }
    }
}
