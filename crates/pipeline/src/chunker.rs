//! Cuts a byte stream into chunks, the unit that is compressed, sealed and
//! erasure-coded.
//!
//! Two strategies, chosen per file by [`Chunking`]:
//! - **Fixed**: every chunk is exactly `size` bytes, the last one shorter.
//!   Cheap and predictable; the default for encrypted puts
//!   ([`DEFAULT_CHUNK_SIZE`]).
//! - **FastCDC** (the 2020 variant, from the `fastcdc` crate): cut points
//!   depend on the content, so inserting or deleting bytes only changes the
//!   chunks around the edit and the rest deduplicate.
//!
//! [`Chunker`] is an iterator over a [`std::io::Read`]: it holds at most one
//! chunk (fixed) or one `max`-sized window (FastCDC) in memory, whatever the
//! stream's length. It never yields an empty chunk, so an empty input yields
//! nothing at all.

use std::io::{self, Read};

use datamesh_core::{Chunking, limits};
use fastcdc::v2020;

/// Default chunk size for encrypted puts: 4 MiB.
pub const DEFAULT_CHUNK_SIZE: u32 = 4 * 1024 * 1024;

/// Why a [`Chunking`] cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChunkerError {
    /// The sizes are zero, out of order, above [`limits::MAX_CHUNK_SIZE`] or
    /// outside what FastCDC accepts; the message names the offending value
    /// and the allowed range, so the caller can pick valid sizes.
    #[error("invalid chunking: {0}")]
    InvalidConfig(String),
}

/// Streams chunks out of a reader; memory bounded by the max chunk size.
pub struct Chunker<R: Read> {
    inner: Inner<R>,
}

enum Inner<R: Read> {
    Fixed {
        reader: R,
        size: usize,
        /// Set at end of stream or after an error: the iterator is fused.
        done: bool,
    },
    Cdc {
        cdc: v2020::StreamCDC<RetryInterrupted<R>>,
        done: bool,
    },
}

impl<R: Read> Chunker<R> {
    /// A chunker over `reader` cutting as `chunking` says.
    ///
    /// Fails with [`ChunkerError::InvalidConfig`] when a size is zero or above
    /// [`limits::MAX_CHUNK_SIZE`], when FastCDC sizes are not
    /// `min <= avg <= max`, or when they fall outside the ranges the FastCDC
    /// implementation supports (it would panic on them).
    pub fn new(reader: R, chunking: Chunking) -> Result<Self, ChunkerError> {
        validate(chunking)?;
        let inner = match chunking {
            Chunking::Fixed { size } => Inner::Fixed { reader, size: size as usize, done: false },
            Chunking::FastCdc { min, avg, max } => {
                Inner::Cdc { cdc: v2020::StreamCDC::new(RetryInterrupted(reader), min, avg, max), done: false }
            }
        };
        Ok(Chunker { inner })
    }
}

/// Checks `chunking` without building a chunker: the same rules as
/// [`Chunker::new`]. Useful to reject a bad configuration before any input
/// is opened.
pub fn validate(chunking: Chunking) -> Result<(), ChunkerError> {
    let bad = |s: String| Err(ChunkerError::InvalidConfig(s));
    let max_allowed = limits::MAX_CHUNK_SIZE as u64;
    match chunking {
        Chunking::Fixed { size } => {
            if size == 0 || size as u64 > max_allowed {
                return bad(format!("fixed chunk size {size} is outside 1..={max_allowed}"));
            }
        }
        Chunking::FastCdc { min, avg, max } => {
            if !(min <= avg && avg <= max) {
                return bad(format!("FastCDC sizes must satisfy min <= avg <= max, got {min}/{avg}/{max}"));
            }
            let ranges = [
                ("min", min, v2020::MINIMUM_MIN, v2020::MINIMUM_MAX),
                ("avg", avg, v2020::AVERAGE_MIN, v2020::AVERAGE_MAX),
                ("max", max, v2020::MAXIMUM_MIN, v2020::MAXIMUM_MAX),
            ];
            for (name, v, lo, hi) in ranges {
                let hi = (hi as u64).min(max_allowed);
                if (v as u64) < lo as u64 || v as u64 > hi {
                    return bad(format!("FastCDC {name} size {v} is outside {lo}..={hi}"));
                }
            }
        }
    }
    Ok(())
}

impl<R: Read> Iterator for Chunker<R> {
    type Item = io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.inner {
            Inner::Fixed { reader, size, done } => {
                if *done {
                    return None;
                }
                match read_up_to(reader, *size) {
                    Ok(buf) if buf.is_empty() => {
                        *done = true;
                        None
                    }
                    Ok(buf) => {
                        // A short chunk means end of stream: no need to issue
                        // another read that would only return 0.
                        if buf.len() < *size {
                            *done = true;
                        }
                        Some(Ok(buf))
                    }
                    Err(e) => {
                        *done = true;
                        Some(Err(e))
                    }
                }
            }
            Inner::Cdc { cdc, done } => {
                if *done {
                    return None;
                }
                match cdc.next() {
                    None => {
                        *done = true;
                        None
                    }
                    Some(Ok(chunk)) => Some(Ok(chunk.data)),
                    Some(Err(e)) => {
                        // After an IO error StreamCDC's buffer state is not
                        // meaningful; stop rather than yield misaligned chunks.
                        *done = true;
                        Some(Err(e.into()))
                    }
                }
            }
        }
    }
}

/// Reads until `size` bytes or end of stream. `Read::read` may return fewer
/// bytes than asked at any time (pipes, sockets, decoders), so a single read
/// would make chunk boundaries depend on how the OS delivered the bytes.
/// `read_to_end` loops over short reads and retries `Interrupted`; `take`
/// caps it at `size`, and the exact-capacity buffer means it never grows.
fn read_up_to<R: Read>(reader: &mut R, size: usize) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(size);
    reader.by_ref().take(size as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

/// StreamCDC's buffer filling propagates `ErrorKind::Interrupted` as a hard
/// error; this adapter retries it, as `std`'s own read loops do.
struct RetryInterrupted<R>(R);

impl<R: Read> Read for RetryInterrupted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.0.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    use datamesh_core::testdata::pseudo_random as bytes;

    /// A reader that returns at most `step` bytes per call and an
    /// `Interrupted` error before every other read.
    struct Stingy<'a> {
        data: &'a [u8],
        step: usize,
        interrupt: bool,
    }

    impl Read for Stingy<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.interrupt = !self.interrupt;
            if self.interrupt {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    struct Failing;
    impl Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("disk on fire"))
        }
    }

    fn chunks(data: &[u8], c: Chunking) -> Vec<Vec<u8>> {
        Chunker::new(data, c).unwrap().collect::<io::Result<Vec<_>>>().unwrap()
    }

    #[test]
    fn fixed_boundary_sizes() {
        let size = 1000usize;
        let c = Chunking::Fixed { size: size as u32 };
        for (len, expect) in [
            (0, vec![]),
            (1, vec![1]),
            (size - 1, vec![size - 1]),
            (size, vec![size]),
            (size + 1, vec![size, 1]),
            (7 * size + 3, vec![size, size, size, size, size, size, size, 3]),
        ] {
            let data = bytes(len, len as u64);
            let got = chunks(&data, c);
            let lens: Vec<usize> = got.iter().map(Vec::len).collect();
            assert_eq!(lens, expect, "input of {len} bytes");
            assert_eq!(got.concat(), data);
        }
    }

    #[test]
    fn fixed_handles_short_and_interrupted_reads() {
        let data = bytes(10_000, 1);
        let r = Stingy { data: &data, step: 7, interrupt: false };
        let got: Vec<Vec<u8>> =
            Chunker::new(r, Chunking::Fixed { size: 1024 }).unwrap().collect::<io::Result<_>>().unwrap();
        assert!(got[..got.len() - 1].iter().all(|c| c.len() == 1024));
        assert_eq!(got.concat(), data);
    }

    #[test]
    fn fastcdc_handles_short_and_interrupted_reads() {
        let data = bytes(200_000, 2);
        let c = Chunking::FastCdc { min: 2048, avg: 8192, max: 32768 };
        let r = Stingy { data: &data, step: 333, interrupt: false };
        let got: Vec<Vec<u8>> = Chunker::new(r, c).unwrap().collect::<io::Result<_>>().unwrap();
        // Same cut points as reading the slice in one go.
        assert_eq!(got, chunks(&data, c));
        assert_eq!(got.concat(), data);
    }

    #[test]
    fn io_errors_are_reported_once() {
        for c in [Chunking::Fixed { size: 16 }, Chunking::FastCdc { min: 64, avg: 256, max: 1024 }] {
            let mut ch = Chunker::new(Failing, c).unwrap();
            assert!(matches!(ch.next(), Some(Err(_))));
            assert!(ch.next().is_none(), "fused after an error");
        }
    }

    #[test]
    fn fastcdc_boundary_sizes_and_limits() {
        let c = Chunking::FastCdc { min: 1024, avg: 4096, max: 16384 };
        for len in [0usize, 1, 1023, 1024, 1025, 16383, 16384, 16385, 300_000] {
            let data = bytes(len, 7);
            let got = chunks(&data, c);
            assert_eq!(got.concat(), data);
            assert!(got.iter().all(|c| !c.is_empty() && c.len() <= 16384));
            // All but the last respect the minimum.
            if got.len() > 1 {
                assert!(got[..got.len() - 1].iter().all(|c| c.len() >= 1024));
            }
        }
    }

    #[test]
    fn fastcdc_dedups_after_a_prefix_insert() {
        let c = Chunking::FastCdc { min: 2048, avg: 8192, max: 32768 };
        let data = bytes(2 << 20, 3);
        let before: Vec<Vec<u8>> = chunks(&data, c);
        let mut edited = bytes(100, 99);
        edited.extend_from_slice(&data);
        let after: HashSet<Vec<u8>> = chunks(&edited, c).into_iter().collect();
        let kept = before.iter().filter(|ch| after.contains(*ch)).count();
        // Only the first chunk or two can change; demand 90% survive.
        assert!(kept * 10 >= before.len() * 9, "{kept} of {} chunks survived", before.len());
        // And the fixed chunker, for contrast, loses them all: the test can fail.
        let fixed = Chunking::Fixed { size: 8192 };
        let fb: HashSet<Vec<u8>> = chunks(&data, fixed).into_iter().collect();
        assert!(chunks(&edited, fixed).iter().all(|ch| !fb.contains(ch)));
    }

    #[test]
    fn invalid_configs_are_refused() {
        let max = limits::MAX_CHUNK_SIZE as u32;
        for c in [
            Chunking::Fixed { size: 0 },
            Chunking::Fixed { size: max + 1 },
            Chunking::FastCdc { min: 0, avg: 0, max: 0 },
            Chunking::FastCdc { min: 4096, avg: 2048, max: 8192 },
            Chunking::FastCdc { min: 2048, avg: 8192, max: 4096 },
            Chunking::FastCdc { min: 32, avg: 256, max: 1024 },
            Chunking::FastCdc { min: 64, avg: 128, max: 1024 },
            Chunking::FastCdc { min: 64, avg: 256, max: 512 },
            Chunking::FastCdc { min: 2 << 20, avg: 2 << 20, max: 2 << 20 },
            Chunking::FastCdc { min: 64, avg: 8 << 20, max: 8 << 20 },
            Chunking::FastCdc { min: 64, avg: 256, max: max + 1 },
        ] {
            assert!(matches!(Chunker::new(&b""[..], c), Err(ChunkerError::InvalidConfig(_))), "{c:?} accepted");
        }
        for c in [
            Chunking::Fixed { size: 1 },
            Chunking::Fixed { size: max },
            Chunking::Fixed { size: DEFAULT_CHUNK_SIZE },
            Chunking::FastCdc { min: 64, avg: 256, max: 1024 },
            Chunking::FastCdc { min: 1 << 20, avg: 4 << 20, max },
        ] {
            assert!(Chunker::new(&b""[..], c).is_ok(), "{c:?} refused");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn concatenation_reproduces_input(
            len in 0usize..40_000,
            seed in any::<u64>(),
            size in 1u32..5000,
            fast in any::<bool>(),
        ) {
            let data = bytes(len, seed);
            let c = if fast {
                Chunking::FastCdc { min: 256, avg: 1024, max: 4096 }
            } else {
                Chunking::Fixed { size }
            };
            let got = chunks(&data, c);
            prop_assert!(got.iter().all(|c| !c.is_empty()));
            prop_assert_eq!(got.concat(), data);
        }
    }
}
