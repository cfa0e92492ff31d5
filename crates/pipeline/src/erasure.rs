//! Reed-Solomon erasure coding of stored chunks into `k` data and `m` parity
//! shards, any `k` of which rebuild the chunk.
//!
//! Layout, for a stored chunk of `len` bytes and `s = Erasure::shard_size(len)`:
//!
//! ```text
//! stored chunk ‖ zero padding to k·s
//! ├─ shard 0      bytes [0, s)            ┐
//! ├─ …                                    │ data shards: the chunk itself
//! ├─ shard k-1    bytes [(k-1)·s, k·s)    ┘
//! ├─ shard k      parity 0                ┐
//! ├─ …                                    │ parity shards (reed-solomon-simd,
//! └─ shard k+m-1  parity m-1              ┘ GF(2^16) Leopard-style codes)
//! ```
//!
//! Shard `i` is stored under the CID `raw`/BLAKE3 of its bytes
//! ([`shard_cids`]), listed in the chunk's manifest entry in this order.
//!
//! Because data shards are the chunk itself, a read that finds all `k` data
//! shards concatenates them and never touches the decoder (the common case).
//! `m = 0` is allowed (no redundancy; the library needs `m >= 1`, so it is
//! handled here without it).
//!
//! Everything coming from peers is checked before it reaches the library:
//! shard counts, shard lengths, and sizes against [`limits`], so hostile
//! input yields an [`ErasureError`], never a panic or a huge allocation.

use datamesh_core::{ChunkEntry, Cid, Erasure, limits};
use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};

/// Why shards could not be produced or turned back into a chunk.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ErasureError {
    /// The `k`+`m` parameters cannot be used: `k` is 0, or `k+m` exceeds
    /// [`limits::MAX_TOTAL_SHARDS`] or what the erasure library supports.
    /// Pick other parameters (the manifest that carries them is invalid).
    #[error("invalid erasure parameters: {0}")]
    InvalidParams(String),
    /// The shard list does not have one slot per shard (`k+m`).
    #[error("expected {expected} shard slots (k+m), got {got}")]
    ShardCount {
        /// `k+m`.
        expected: usize,
        /// Slots given.
        got: usize,
    },
    /// A present shard does not have the length the chunk size implies; it is
    /// not a shard of this chunk. Drop it and fetch that shard elsewhere.
    #[error("shard {index} is {got} bytes, expected {expected}")]
    ShardSize {
        /// Shard index.
        index: usize,
        /// The shard size for this chunk.
        expected: usize,
        /// The length found.
        got: usize,
    },
    /// Fewer usable shards than `k`: fetch more shards from other peers; if
    /// none are left, the chunk is lost.
    #[error("{have} usable shards, {need} needed to rebuild the chunk")]
    NotEnoughShards {
        /// Shards present (and, for [`decode_chunk`], matching their CIDs).
        have: usize,
        /// `k`.
        need: usize,
    },
    /// The decoded chunk does not hash to its CID although every shard used
    /// matched its own: the manifest entry is inconsistent (or was forged).
    #[error("decoded chunk does not match its CID {chunk}; the manifest entry is inconsistent")]
    Corrupt {
        /// The chunk's expected CID.
        chunk: Cid,
    },
    /// The chunk is larger than [`limits::MAX_STORED_CHUNK_SIZE`]; refused
    /// before allocating.
    #[error("stored chunk of {size} bytes exceeds the {max}-byte limit", max = limits::MAX_STORED_CHUNK_SIZE)]
    TooLarge {
        /// The size given.
        size: usize,
    },
    /// The erasure library refused input that passed our checks. This is a
    /// bug in DataMesh; please report it with the parameters involved.
    #[error("erasure library error (a DataMesh bug): {0}")]
    Library(String),
}

impl From<reed_solomon_simd::Error> for ErasureError {
    fn from(e: reed_solomon_simd::Error) -> Self {
        ErasureError::Library(e.to_string())
    }
}

/// The outcome of [`decode_chunk_report`]: the chunk and the shards that had
/// to be ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedChunk {
    /// The stored chunk, verified against its CID.
    pub data: Vec<u8>,
    /// Indices of shards that were present but did not match their CID: the
    /// peers that served them hold bad copies and those shards need repair.
    pub dropped: Vec<usize>,
}

/// Checks `k` and `m` against our limit and the library's.
pub fn validate(e: Erasure) -> Result<(), ErasureError> {
    let (k, m) = (e.k as usize, e.m as usize);
    if k == 0 {
        return Err(ErasureError::InvalidParams(format!("{k}+{m}: k must be at least 1")));
    }
    if k + m > limits::MAX_TOTAL_SHARDS {
        return Err(ErasureError::InvalidParams(format!(
            "{k}+{m}: at most {} shards per chunk",
            limits::MAX_TOTAL_SHARDS
        )));
    }
    if m > 0 && !ReedSolomonEncoder::supports(k, m) {
        return Err(ErasureError::InvalidParams(format!("{k}+{m}: not supported by the erasure library")));
    }
    Ok(())
}

/// Splits a stored chunk into k data shards (zero-padded to Erasure::shard_size(len)) and computes m parity shards. Returns k+m shards, data first.
pub fn encode(e: Erasure, stored: &[u8]) -> Result<Vec<Vec<u8>>, ErasureError> {
    validate(e)?;
    if stored.len() > limits::MAX_STORED_CHUNK_SIZE {
        return Err(ErasureError::TooLarge { size: stored.len() });
    }
    let s = e.shard_size(stored.len());
    let mut shards: Vec<Vec<u8>> = (0..e.k as usize)
        .map(|i| {
            let start = (i * s).min(stored.len());
            let end = ((i + 1) * s).min(stored.len());
            let mut shard = Vec::with_capacity(s);
            shard.extend_from_slice(&stored[start..end]);
            shard.resize(s, 0);
            shard
        })
        .collect();
    let parity = parity(e, &shards)?;
    shards.extend(parity);
    Ok(shards)
}

/// The `m` parity shards of `k` complete data shards of equal, valid size.
fn parity<T: AsRef<[u8]>>(e: Erasure, data: &[T]) -> Result<Vec<Vec<u8>>, ErasureError> {
    if e.m == 0 {
        return Ok(Vec::new());
    }
    Ok(reed_solomon_simd::encode(e.k as usize, e.m as usize, data)?)
}

/// Rebuilds the stored chunk (exactly `stored_size` bytes) from any k present shards. `shards[i]` is shard i or None. The caller must already have verified present shards against their CIDs.
pub fn decode(e: Erasure, stored_size: usize, shards: &[Option<Vec<u8>>]) -> Result<Vec<u8>, ErasureError> {
    validate(e)?;
    if stored_size > limits::MAX_STORED_CHUNK_SIZE {
        return Err(ErasureError::TooLarge { size: stored_size });
    }
    let s = e.shard_size(stored_size);
    check_shards(e, s, shards)?;
    let k = e.k as usize;
    let data = restore_data(e, s, shards)?;
    let mut out = Vec::with_capacity(k * s);
    for i in 0..k {
        match (&data[i], &shards[i]) {
            (Some(restored), _) => out.extend_from_slice(restored),
            (None, Some(present)) => out.extend_from_slice(present),
            // restore_data returns every missing data shard or an error.
            (None, None) => {
                return Err(ErasureError::Library(format!("data shard {i} was not restored")));
            }
        }
    }
    out.truncate(stored_size);
    Ok(out)
}

/// Recomputes the shards whose slot is None (for repair), given any k present; returns (index, bytes) for each rebuilt shard.
pub fn rebuild(e: Erasure, shards: &[Option<Vec<u8>>]) -> Result<Vec<(usize, Vec<u8>)>, ErasureError> {
    let missing: Vec<usize> = (0..shards.len()).filter(|&i| shards[i].is_none()).collect();
    rebuild_only(e, shards, &missing)
}

/// Recomputes just the shards listed in `want` (each slot None), given any
/// k present; returns (index, bytes) for each, in index order.
///
/// A repair fetches k shards of a chunk and rebuilds the one or two it
/// lost; the other slots are None only because they were not fetched. So
/// the decoder runs only when a wanted data shard is missing (or a wanted
/// parity shard needs a data shard that was not fetched), and the encoder
/// only when a parity shard is wanted: rebuilding everything cost a decode
/// and an encode per repaired chunk where one of them does.
pub fn rebuild_only(
    e: Erasure,
    shards: &[Option<Vec<u8>>],
    want: &[usize],
) -> Result<Vec<(usize, Vec<u8>)>, ErasureError> {
    validate(e)?;
    if shards.len() != e.total() {
        return Err(ErasureError::ShardCount { expected: e.total(), got: shards.len() });
    }
    // No chunk size is given: take the shard size from the first present
    // shard and hold every other one to it.
    let Some((index, s)) = shards.iter().enumerate().find_map(|(i, b)| Some((i, b.as_ref()?.len()))) else {
        return Err(ErasureError::NotEnoughShards { have: 0, need: e.k as usize });
    };
    let max = e.shard_size(limits::MAX_STORED_CHUNK_SIZE);
    if s == 0 || s % 2 == 1 || s > max {
        // An odd, empty or oversized shard is never one we produced;
        // `expected` names the nearest size that could be.
        return Err(ErasureError::ShardSize { index, expected: s.clamp(2, max) & !1, got: s });
    }
    check_shards(e, s, shards)?;
    let mut want: Vec<usize> = want.iter().copied().filter(|&i| i < shards.len() && shards[i].is_none()).collect();
    want.sort_unstable();
    want.dedup();
    if want.is_empty() {
        return Ok(Vec::new());
    }
    let k = e.k as usize;
    let want_parity = want.iter().any(|&i| i >= k);
    let data_missing = shards[..k].iter().any(Option::is_none);
    let mut restored = if want.iter().any(|&i| i < k) || (want_parity && data_missing) {
        restore_data(e, s, shards)?
    } else {
        vec![None; k]
    };
    // Parity is recomputed from the complete data shards, borrowed where
    // they are (fetched or restored), not copied.
    let mut parity = if want_parity {
        let data: Vec<&[u8]> = (0..k)
            .map(|i| match (&restored[i], &shards[i]) {
                (Some(r), _) => Ok(r.as_slice()),
                (None, Some(p)) => Ok(p.as_slice()),
                (None, None) => Err(ErasureError::Library(format!("data shard {i} was not restored"))),
            })
            .collect::<Result<_, _>>()?;
        parity(e, &data)?
    } else {
        Vec::new()
    };
    let mut rebuilt: Vec<(usize, Vec<u8>)> = Vec::with_capacity(want.len());
    for &i in &want {
        let bytes = if i < k {
            restored[i].take().ok_or_else(|| ErasureError::Library(format!("data shard {i} was not restored")))?
        } else {
            std::mem::take(&mut parity[i - k])
        };
        rebuilt.push((i, bytes));
    }
    Ok(rebuilt)
}

/// Verifies shards against the chunk entry's CIDs, drops the ones that do not match (returning their indices), decodes, and checks the result against entry.cid. Errors say how many shards were usable vs needed.
///
/// The indices of dropped shards are returned by [`decode_chunk_report`];
/// this function returns only the chunk.
pub fn decode_chunk(e: Erasure, entry: &ChunkEntry, shards: Vec<Option<Vec<u8>>>) -> Result<Vec<u8>, ErasureError> {
    decode_chunk_report(e, entry, shards).map(|d| d.data)
}

/// [`decode_chunk`], also reporting which shards were dropped as corrupt.
pub fn decode_chunk_report(
    e: Erasure,
    entry: &ChunkEntry,
    mut shards: Vec<Option<Vec<u8>>>,
) -> Result<DecodedChunk, ErasureError> {
    validate(e)?;
    let dropped = verify_shards(e, entry, &mut shards)?;
    let have = shards.iter().flatten().count();
    if have < e.k as usize {
        return Err(ErasureError::NotEnoughShards { have, need: e.k as usize });
    }
    let data = decode(e, entry.stored_size as usize, &shards)?;
    if !entry.cid.verifies(&data) {
        return Err(ErasureError::Corrupt { chunk: entry.cid });
    }
    Ok(DecodedChunk { data, dropped })
}

/// Sets to `None` every present shard that does not hash to its CID in
/// `entry` and returns their indices. Use it to find bad shards (for
/// repair) even when too few good ones remain to decode.
pub fn verify_shards(
    e: Erasure,
    entry: &ChunkEntry,
    shards: &mut [Option<Vec<u8>>],
) -> Result<Vec<usize>, ErasureError> {
    let total = e.total();
    if entry.shards.len() != total {
        return Err(ErasureError::ShardCount { expected: total, got: entry.shards.len() });
    }
    if shards.len() != total {
        return Err(ErasureError::ShardCount { expected: total, got: shards.len() });
    }
    let mut dropped = Vec::new();
    for (i, (slot, cid)) in shards.iter_mut().zip(&entry.shards).enumerate() {
        if slot.as_deref().is_some_and(|b| !cid.verifies(b)) {
            *slot = None;
            dropped.push(i);
        }
    }
    Ok(dropped)
}

/// Convenience: shard CIDs (raw BLAKE3) of encoded shards.
pub fn shard_cids(shards: &[Vec<u8>]) -> Vec<Cid> {
    shards.iter().map(|s| Cid::raw_blake3(s)).collect()
}

/// Slot count, per-shard length `s`, and at least `k` present.
fn check_shards(e: Erasure, s: usize, shards: &[Option<Vec<u8>>]) -> Result<(), ErasureError> {
    if shards.len() != e.total() {
        return Err(ErasureError::ShardCount { expected: e.total(), got: shards.len() });
    }
    for (index, shard) in shards.iter().enumerate() {
        if let Some(b) = shard
            && b.len() != s
        {
            return Err(ErasureError::ShardSize { index, expected: s, got: b.len() });
        }
    }
    let have = shards.iter().flatten().count();
    if have < e.k as usize {
        return Err(ErasureError::NotEnoughShards { have, need: e.k as usize });
    }
    Ok(())
}

/// The missing data shards, restored from the present ones: entry `i` is
/// `Some` exactly when data shard `i` was missing. Shards are already
/// checked (count, sizes, at least `k` present).
fn restore_data(e: Erasure, s: usize, shards: &[Option<Vec<u8>>]) -> Result<Vec<Option<Vec<u8>>>, ErasureError> {
    let (k, m) = (e.k as usize, e.m as usize);
    let mut out = vec![None; k];
    if shards[..k].iter().all(Option::is_some) {
        // Fast path: the data shards are the chunk; nothing to decode.
        return Ok(out);
    }
    // m > 0 here: with m = 0, a missing data shard means fewer than k present,
    // which check_shards refused.
    let mut dec = ReedSolomonDecoder::new(k, m, s)?;
    // k shards are enough; feeding more only costs time.
    let mut fed = 0;
    for (i, shard) in shards.iter().enumerate() {
        let Some(b) = shard else { continue };
        if fed == k {
            break;
        }
        if i < k {
            dec.add_original_shard(i, b)?;
        } else {
            dec.add_recovery_shard(i - k, b)?;
        }
        fed += 1;
    }
    let result = dec.decode()?;
    for (i, slot) in out.iter_mut().enumerate() {
        if shards[i].is_none() {
            let r = result
                .restored_original(i)
                .ok_or_else(|| ErasureError::Library(format!("decoder did not restore data shard {i}")))?;
            *slot = Some(r.to_vec());
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use datamesh_core::Compression;
    use proptest::prelude::*;

    use datamesh_core::testdata::pseudo_random as bytes;

    fn entry(stored: &[u8], shards: &[Vec<u8>]) -> ChunkEntry {
        ChunkEntry {
            plain_size: stored.len() as u32,
            stored_size: stored.len() as u32,
            compression: Compression::None,
            cid: Cid::raw_blake3(stored),
            shards: shard_cids(shards),
        }
    }

    fn some(shards: &[Vec<u8>]) -> Vec<Option<Vec<u8>>> {
        shards.iter().cloned().map(Some).collect()
    }

    #[test]
    fn layouts_round_trip_with_m_losses() {
        for (k, m) in [(1, 0), (1, 1), (1, 3), (4, 2), (10, 4), (29, 51), (3, 0), (128, 128)] {
            let e = Erasure { k, m };
            for len in [0usize, 1, 2, 3, 1000, 65_537] {
                let data = bytes(len, len as u64 + k as u64);
                let shards = encode(e, &data).unwrap();
                assert_eq!(shards.len(), e.total());
                assert!(shards.iter().all(|s| s.len() == e.shard_size(len)));
                // Data shards are the chunk itself, zero padded.
                assert_eq!(&shards[..k as usize].concat()[..len], &data[..]);
                // Lose the first m shards (all data shards when m >= k).
                let mut partial = some(&shards);
                for slot in partial.iter_mut().take(m as usize) {
                    *slot = None;
                }
                assert_eq!(decode(e, len, &partial).unwrap(), data, "{k}+{m} len {len}");
                let rebuilt = rebuild(e, &partial).unwrap();
                assert_eq!(rebuilt.len(), m.min(k + m) as usize);
                for (i, b) in rebuilt {
                    assert_eq!(b, shards[i], "{k}+{m} rebuilt shard {i}");
                }
                assert_eq!(decode_chunk(e, &entry(&data, &shards), partial).unwrap(), data);
            }
        }
    }

    #[test]
    fn invalid_params_are_refused() {
        for (k, m) in [(0, 0), (0, 4), (200, 57), (256, 1)] {
            let e = Erasure { k, m };
            assert!(matches!(encode(e, b"x"), Err(ErasureError::InvalidParams(_))), "{k}+{m}");
            assert!(matches!(decode(e, 1, &[]), Err(ErasureError::InvalidParams(_))));
            assert!(matches!(rebuild(e, &[]), Err(ErasureError::InvalidParams(_))));
        }
        assert!(encode(Erasure { k: 200, m: 56 }, b"x").is_ok());
    }

    #[test]
    fn hostile_shapes_are_errors_not_panics() {
        let e = Erasure::DEFAULT;
        let data = bytes(1000, 1);
        let shards = encode(e, &data).unwrap();
        // Wrong slot count.
        assert!(matches!(decode(e, 1000, &some(&shards[..5])), Err(ErasureError::ShardCount { .. })));
        // A shard of the wrong length.
        let mut bad = some(&shards);
        bad[0] = None;
        bad[5] = Some(vec![0; 3]);
        assert!(matches!(decode(e, 1000, &bad), Err(ErasureError::ShardSize { index: 5, .. })));
        assert!(matches!(rebuild(e, &bad), Err(ErasureError::ShardSize { index: 5, .. })));
        assert_eq!(
            rebuild(e, &[None, None, None, None, None, None]),
            Err(ErasureError::NotEnoughShards { have: 0, need: 4 })
        );
        // Odd, empty, oversized shards for rebuild.
        for len in [0usize, 1, 3, e.shard_size(limits::MAX_STORED_CHUNK_SIZE) + 2] {
            let mut odd: Vec<Option<Vec<u8>>> = vec![None; 6];
            for slot in odd.iter_mut().take(4) {
                *slot = Some(vec![0; len]);
            }
            assert!(matches!(rebuild(e, &odd), Err(ErasureError::ShardSize { .. })), "len {len}");
        }
        // Sizes that disagree with stored_size.
        assert!(matches!(decode(e, 5000, &some(&shards)), Err(ErasureError::ShardSize { .. })));
        assert!(matches!(
            decode(e, limits::MAX_STORED_CHUNK_SIZE + 1, &some(&shards)),
            Err(ErasureError::TooLarge { .. })
        ));
        // Too few.
        let mut few = some(&shards);
        few[0] = None;
        few[1] = None;
        few[2] = None;
        assert_eq!(decode(e, 1000, &few), Err(ErasureError::NotEnoughShards { have: 3, need: 4 }));
        assert_eq!(rebuild(e, &few), Err(ErasureError::NotEnoughShards { have: 3, need: 4 }));
        // m = 0 with a data shard missing.
        let e0 = Erasure { k: 3, m: 0 };
        let s0 = encode(e0, &data).unwrap();
        let mut p0 = some(&s0);
        p0[1] = None;
        assert_eq!(decode(e0, 1000, &p0), Err(ErasureError::NotEnoughShards { have: 2, need: 3 }));
        // The entry lists the wrong number of shard CIDs.
        let mut en = entry(&data, &shards);
        en.shards.pop();
        assert!(matches!(decode_chunk(e, &en, some(&shards)), Err(ErasureError::ShardCount { .. })));
    }

    #[test]
    fn corrupt_shards_are_dropped_and_reported() {
        let e = Erasure { k: 4, m: 2 };
        let data = bytes(4096, 2);
        let shards = encode(e, &data).unwrap();
        let en = entry(&data, &shards);
        let mut s = some(&shards);
        if let Some(b) = s[1].as_mut() {
            b[0] ^= 1;
        }
        if let Some(b) = s[4].as_mut() {
            b[7] ^= 0x80;
        }
        let d = decode_chunk_report(e, &en, s.clone()).unwrap();
        assert_eq!(d.data, data);
        assert_eq!(d.dropped, vec![1, 4]);
        // A third bad shard leaves 3 of 4 needed.
        if let Some(b) = s[0].as_mut() {
            b[0] ^= 1;
        }
        assert_eq!(decode_chunk(e, &en, s), Err(ErasureError::NotEnoughShards { have: 3, need: 4 }));
    }

    #[test]
    fn an_inconsistent_entry_is_reported_corrupt() {
        let e = Erasure::DEFAULT;
        let data = bytes(999, 3);
        let shards = encode(e, &data).unwrap();
        let mut en = entry(&data, &shards);
        en.cid = Cid::raw_blake3(b"something else");
        assert_eq!(decode_chunk(e, &en, some(&shards)), Err(ErasureError::Corrupt { chunk: en.cid }));
    }

    fn subset_strategy() -> impl Strategy<Value = (u16, u16, usize, u64, Vec<bool>)> {
        (1u16..12, 0u16..8, 0usize..3000, any::<u64>()).prop_flat_map(|(k, m, len, seed)| {
            let total = (k + m) as usize;
            // Choose which shards survive: at least k of them.
            (
                Just(k),
                Just(m),
                Just(len),
                Just(seed),
                proptest::sample::subsequence((0..total).collect::<Vec<_>>(), k as usize..=total),
            )
                .prop_map(move |(k, m, len, seed, keep)| {
                    let mut mask = vec![false; total];
                    for i in keep {
                        mask[i] = true;
                    }
                    (k, m, len, seed, mask)
                })
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn any_k_shards_decode((k, m, len, seed, keep) in subset_strategy()) {
            let e = Erasure { k, m };
            let data = bytes(len, seed);
            let shards = encode(e, &data).unwrap();
            let partial: Vec<Option<Vec<u8>>> =
                shards.iter().zip(&keep).map(|(s, &k)| k.then(|| s.clone())).collect();
            prop_assert_eq!(&decode(e, len, &partial).unwrap(), &data);
            for (i, b) in rebuild(e, &partial).unwrap() {
                prop_assert!(!keep[i]);
                prop_assert_eq!(&b, &shards[i]);
            }
            // Any subset of the missing ones, alone: exactly those come back.
            let want: Vec<usize> = (0..keep.len()).filter(|&i| !keep[i] && (i + seed as usize).is_multiple_of(2)).collect();
            let only = rebuild_only(e, &partial, &want).unwrap();
            prop_assert_eq!(only.iter().map(|(i, _)| *i).collect::<Vec<_>>(), want);
            for (i, b) in only {
                prop_assert_eq!(&b, &shards[i]);
            }
            prop_assert_eq!(decode_chunk(e, &entry(&data, &shards), partial).unwrap(), data);
        }

        #[test]
        fn fewer_than_k_shards_never_decode((k, m, len, seed, keep) in subset_strategy(), drop in any::<usize>()) {
            let e = Erasure { k, m };
            let data = bytes(len, seed);
            let shards = encode(e, &data).unwrap();
            let mut partial: Vec<Option<Vec<u8>>> =
                shards.iter().zip(&keep).map(|(s, &k)| k.then(|| s.clone())).collect();
            // Drop present shards until k-1 remain.
            let present: Vec<usize> = (0..partial.len()).filter(|&i| keep[i]).collect();
            let excess = present.len() - (k as usize - 1);
            for j in 0..excess {
                partial[present[(drop % present.len() + j) % present.len()]] = None;
            }
            let have = k as usize - 1;
            let need = k as usize;
            prop_assert_eq!(decode(e, len, &partial), Err(ErasureError::NotEnoughShards { have, need }));
        }

        /// A flipped bit in any shard is caught: that shard is dropped and
        /// decoding still succeeds while k clean shards remain.
        #[test]
        fn any_flipped_bit_in_a_shard_is_caught(
            k in 1u16..8, m in 0u16..4, len in 0usize..2000, seed in any::<u64>(),
            which in any::<usize>(), bit in any::<usize>(),
        ) {
            let e = Erasure { k, m };
            let data = bytes(len, seed);
            let shards = encode(e, &data).unwrap();
            let en = entry(&data, &shards);
            let mut s = some(&shards);
            let which = which % s.len();
            if let Some(b) = s[which].as_mut() {
                let bit = bit % (b.len() * 8);
                b[bit / 8] ^= 1 << (bit % 8);
            }
            let got = decode_chunk_report(e, &en, s);
            if m >= 1 {
                let d = got.unwrap();
                prop_assert_eq!(d.data, data);
                prop_assert_eq!(d.dropped, vec![which]);
            } else {
                prop_assert_eq!(got, Err(ErasureError::NotEnoughShards { have: k as usize - 1, need: k as usize }));
            }
        }

        /// A flipped bit in the chunk is caught whichever side it is on:
        /// shards of a flipped chunk fail the original's shard CIDs, and an
        /// entry whose shard CIDs match a flipped chunk fails the chunk CID.
        #[test]
        fn any_flipped_bit_in_the_chunk_is_caught(
            k in 1u16..8, m in 0u16..4, len in 1usize..2000, seed in any::<u64>(), bit in any::<usize>(),
        ) {
            let e = Erasure { k, m };
            let data = bytes(len, seed);
            let mut flipped = data.clone();
            let bit = bit % (len * 8);
            flipped[bit / 8] ^= 1 << (bit % 8);
            let good = encode(e, &data).unwrap();
            let bad = encode(e, &flipped).unwrap();
            prop_assert!(decode_chunk(e, &entry(&data, &good), some(&bad)).is_err());
            let mut forged = entry(&flipped, &bad);
            forged.cid = Cid::raw_blake3(&data);
            prop_assert_eq!(decode_chunk(e, &forged, some(&bad)), Err(ErasureError::Corrupt { chunk: forged.cid }));
        }

        #[test]
        fn garbage_shards_never_panic(
            k in 0u16..6, m in 0u16..4, stored_size in 0usize..5000,
            lens in proptest::collection::vec(proptest::option::of(0usize..3000), 0..10),
        ) {
            let e = Erasure { k, m };
            let shards: Vec<Option<Vec<u8>>> = lens.iter().map(|l| l.map(|l| vec![0xAB; l])).collect();
            let _ = decode(e, stored_size, &shards);
            let _ = rebuild(e, &shards);
        }
    }
}
