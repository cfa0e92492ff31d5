//! Per-chunk compression, applied before sealing and kept only when it pays.
//!
//! - [`Compression::Zstd`]: zstd level 1 through the bulk (one-shot) API: a
//!   good ratio at several hundred MB/s, and the bulk decoder writes into a
//!   buffer we size, so it cannot be made to allocate more than we allow.
//! - [`Compression::Lz4`]: the LZ4 block format (`lz4_flex`) with the
//!   uncompressed size prepended as 4 little-endian bytes. On decompression
//!   that prefix is only checked against the manifest's `plain_size`, never
//!   trusted for an allocation.
//!
//! A compressed chunk is kept only when it saves at least 1/16 of the input;
//! otherwise the chunk is stored as is and the manifest says
//! [`Compression::None`], so reads of incompressible data skip a pointless
//! decompression.
//!
//! **Cheap rejection of incompressible data.** Most large uploads (video,
//! archives, already-encrypted data) do not compress. Before compressing a
//! chunk larger than [`SAMPLE_SIZE`], we LZ4-compress a 64 KiB sample made of
//! four 16 KiB slices spread over the chunk (start, 1/3, 2/3, end). If the
//! sample does not save at least 1/32 of its size, the full compression is
//! skipped. LZ4 on 64 KiB costs tens of microseconds, against milliseconds for
//! zstd on a 4 MiB chunk. The threshold is looser than the 1/16 the whole
//! chunk must save because LZ4 on small slices finds less than zstd on the
//! whole chunk; the price of a wrong guess is only a chunk stored
//! uncompressed, never a wrong result.

use datamesh_core::{Compression, limits};

/// Chunks larger than this are sampled before being compressed in full.
pub const SAMPLE_SIZE: usize = 64 * 1024;

/// Number of slices the sample is made of.
const SAMPLE_SLICES: usize = 4;

/// zstd level: 1 favours throughput; higher levels gain little on the data
/// that compresses at all and cost several times the CPU.
const ZSTD_LEVEL: i32 = 1;

/// Why a stored chunk could not be decompressed. Any of these means the chunk
/// is corrupt (or its manifest entry is): fetch it again from other shards,
/// or report the file as damaged.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CompressError {
    /// The compressed bytes do not decode.
    #[error("chunk is corrupt: its {algo:?} data does not decompress ({reason})")]
    Corrupt {
        /// The algorithm recorded in the manifest.
        algo: Compression,
        /// What the decoder said.
        reason: String,
    },
    /// The data decoded, but to a different size than the manifest records.
    #[error("chunk is corrupt: it decompresses to {actual} bytes but the manifest says {expected}")]
    SizeMismatch {
        /// `plain_size` from the manifest.
        expected: usize,
        /// What decompression produced (or, for LZ4, what the size prefix claims).
        actual: usize,
    },
    /// The manifest claims a chunk larger than any DataMesh writes; refused
    /// before allocating.
    #[error("chunk is corrupt: manifest size {0} exceeds the {max}-byte chunk limit", max = limits::MAX_CHUNK_SIZE)]
    TooLarge(usize),
}

/// Compresses `data` with `algo` if that saves at least 1/16 of its size; None when it does not pay (store as is) or algo is Compression::None.
pub fn compress_if_pays(algo: Compression, data: &[u8]) -> Option<Vec<u8>> {
    if algo == Compression::None || data.is_empty() {
        return None;
    }
    if data.len() > SAMPLE_SIZE && !sample_compresses(data) {
        return None;
    }
    let out = match algo {
        Compression::None => return None,
        // zstd only fails on allocation failure or an invalid level; either
        // way storing the chunk uncompressed is correct.
        Compression::Zstd => zstd::bulk::compress(data, ZSTD_LEVEL).ok()?,
        Compression::Lz4 => lz4_flex::block::compress_prepend_size(data),
    };
    pays(data.len(), out.len()).then_some(out)
}

/// Whether `compressed` bytes save at least 1/16 of `plain` bytes, and at
/// least one byte (below 16 bytes, 1/16 rounds down to nothing).
fn pays(plain: usize, compressed: usize) -> bool {
    compressed < plain && compressed <= plain - plain / 16
}

/// LZ4 on four 16 KiB slices spread over `data`; see the module doc.
fn sample_compresses(data: &[u8]) -> bool {
    let slice = SAMPLE_SIZE / SAMPLE_SLICES;
    let last_start = data.len() - slice;
    let mut sample = Vec::with_capacity(SAMPLE_SIZE);
    for i in 0..SAMPLE_SLICES {
        let start = last_start * i / (SAMPLE_SLICES - 1);
        sample.extend_from_slice(&data[start..start + slice]);
    }
    let c = lz4_flex::block::compress(&sample);
    c.len() <= sample.len() - sample.len() / 32
}

/// Decompresses a chunk; `plain_size` is the size recorded in the manifest and bounds the output (never allocate more than it; error if the output differs).
pub fn decompress(algo: Compression, data: &[u8], plain_size: usize) -> Result<Vec<u8>, CompressError> {
    if plain_size > limits::MAX_CHUNK_SIZE {
        return Err(CompressError::TooLarge(plain_size));
    }
    let corrupt = |reason: String| CompressError::Corrupt { algo, reason };
    let out = match algo {
        Compression::None => data.to_vec(),
        Compression::Zstd => {
            // The bulk decoder writes into a buffer of at most `plain_size`
            // and fails if the frame needs more.
            zstd::bulk::decompress(data, plain_size).map_err(|e| corrupt(e.to_string()))?
        }
        Compression::Lz4 => {
            let Some((prefix, body)) = data.split_first_chunk::<4>() else {
                return Err(corrupt("shorter than its 4-byte size prefix".into()));
            };
            let claimed = u32::from_le_bytes(*prefix) as usize;
            if claimed != plain_size {
                return Err(CompressError::SizeMismatch { expected: plain_size, actual: claimed });
            }
            let mut out = vec![0u8; plain_size];
            // `decompress_into` fails (never panics) when the output slice is
            // too small, so hostile input cannot write past `plain_size`.
            let n = lz4_flex::block::decompress_into(body, &mut out).map_err(|e| corrupt(e.to_string()))?;
            out.truncate(n);
            out
        }
    };
    if out.len() != plain_size {
        return Err(CompressError::SizeMismatch { expected: plain_size, actual: out.len() });
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn random(n: usize, seed: u64) -> Vec<u8> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 24) as u8
            })
            .collect()
    }

    fn text(n: usize) -> Vec<u8> {
        b"DataMesh stores chunks redundantly across peers. ".iter().copied().cycle().take(n).collect()
    }

    #[test]
    fn compressible_data_is_compressed_and_round_trips() {
        for algo in [Compression::Zstd, Compression::Lz4] {
            for n in [100usize, SAMPLE_SIZE, SAMPLE_SIZE + 1, 1 << 20] {
                let data = text(n);
                let c = compress_if_pays(algo, &data).expect("text compresses");
                // 100 bytes hold two repeats of the sentence; longer inputs many.
                let bound = if n > 100 { n / 4 } else { n - n / 16 };
                assert!(c.len() <= bound, "{algo:?} {n} -> {}", c.len());
                assert_eq!(decompress(algo, &c, n).unwrap(), data);
            }
        }
    }

    #[test]
    fn incompressible_or_empty_data_is_left_alone() {
        for algo in [Compression::None, Compression::Zstd, Compression::Lz4] {
            assert_eq!(compress_if_pays(algo, &[]), None);
            assert_eq!(compress_if_pays(algo, &random(1000, 1)), None);
            assert_eq!(compress_if_pays(algo, &random(1 << 20, 2)), None);
        }
        assert_eq!(compress_if_pays(Compression::None, &text(10_000)), None);
    }

    #[test]
    fn sample_sees_compressible_data_past_the_start() {
        // Random first 64 KiB, then text: the spread-out sample still finds it.
        let mut data = random(SAMPLE_SIZE, 3);
        data.extend(text(1 << 20));
        assert!(compress_if_pays(Compression::Zstd, &data).is_some());
    }

    #[test]
    fn only_savings_of_a_sixteenth_count() {
        assert!(pays(1600, 1500));
        assert!(!pays(1600, 1501));
        assert!(!pays(15, 15));
        assert!(pays(15, 14));
    }

    #[test]
    fn none_checks_the_size() {
        assert_eq!(decompress(Compression::None, b"abc", 3).unwrap(), b"abc");
        assert!(matches!(
            decompress(Compression::None, b"abc", 4),
            Err(CompressError::SizeMismatch { expected: 4, actual: 3 })
        ));
    }

    #[test]
    fn wrong_sizes_and_huge_claims_are_refused() {
        let data = text(5000);
        for algo in [Compression::Zstd, Compression::Lz4] {
            let c = compress_if_pays(algo, &data).unwrap();
            assert!(decompress(algo, &c, 4999).is_err(), "{algo:?} too small");
            assert!(decompress(algo, &c, 5001).is_err(), "{algo:?} too large");
            assert!(matches!(decompress(algo, &c, limits::MAX_CHUNK_SIZE + 1), Err(CompressError::TooLarge(_))));
        }
        // An LZ4 prefix claiming 4 GiB is compared, not allocated.
        let mut lie = lz4_flex::block::compress_prepend_size(&data);
        lie[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decompress(Compression::Lz4, &lie, 5000),
            Err(CompressError::SizeMismatch { actual, .. }) if actual == u32::MAX as usize
        ));
        assert!(decompress(Compression::Lz4, &[1, 2], 0).is_err());
    }

    #[test]
    fn errors_say_the_chunk_is_corrupt() {
        let e = decompress(Compression::Zstd, b"not zstd", 10).unwrap_err();
        assert!(e.to_string().contains("corrupt"), "{e}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn round_trip(
            data in proptest::collection::vec(0u8..4, 0..20_000),
            lz4 in any::<bool>(),
        ) {
            // Small alphabet: compresses often, not always.
            let algo = if lz4 { Compression::Lz4 } else { Compression::Zstd };
            match compress_if_pays(algo, &data) {
                Some(c) => {
                    prop_assert!(c.len() <= data.len() - data.len() / 16);
                    prop_assert_eq!(decompress(algo, &c, data.len()).unwrap(), data);
                }
                None => prop_assert_eq!(decompress(Compression::None, &data, data.len()).unwrap(), data),
            }
        }

        #[test]
        fn garbage_never_panics(
            data in proptest::collection::vec(any::<u8>(), 0..2000),
            plain_size in 0usize..100_000,
            which in 0u8..3,
        ) {
            let algo = [Compression::None, Compression::Zstd, Compression::Lz4][which as usize];
            if let Ok(out) = decompress(algo, &data, plain_size) {
                prop_assert_eq!(out.len(), plain_size);
            }
        }

        #[test]
        fn flipped_bits_in_real_frames_never_panic(
            n in 1usize..5000,
            bit in any::<usize>(),
            lz4 in any::<bool>(),
        ) {
            let algo = if lz4 { Compression::Lz4 } else { Compression::Zstd };
            let data = text(n + 200);
            let mut c = compress_if_pays(algo, &data).unwrap();
            let bit = bit % (c.len() * 8);
            c[bit / 8] ^= 1 << (bit % 8);
            if let Ok(out) = decompress(algo, &c, data.len()) {
                prop_assert_eq!(out.len(), data.len());
            }
        }
    }
}
