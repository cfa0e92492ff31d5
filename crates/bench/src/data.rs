//! Deterministic benchmark inputs: incompressible random bytes and
//! text-like bytes (generated words) that zstd level 1 compresses about
//! 2.5–3×, like prose or logs.
//!
//! Both come from a seeded xoshiro256** generator, so every run measures
//! the same bytes and a failure reproduces. Generation is fast enough
//! (several GB/s for random bytes) that writing a 2 GiB input file is
//! bounded by the disk, not by the generator.

/// xoshiro256**: fast, statistically good, and not cryptographic (it only
/// has to defeat compressors, not adversaries).
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator seeded through splitmix64, as the xoshiro authors
    /// recommend, so that small seeds still give well-mixed states.
    pub fn new(seed: u64) -> Self {
        let mut sm = datamesh_core::testdata::SplitMix64::new(seed);
        Rng { s: [sm.next_u64(), sm.next_u64(), sm.next_u64(), sm.next_u64()] }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// A uniform float in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A uniform integer in `0..n` (`n > 0`; the modulo bias is irrelevant here).
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next_u64().to_le_bytes();
        rest.copy_from_slice(&last[..rest.len()]);
    }
}

/// `n` incompressible bytes.
pub fn random(n: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; n];
    Rng::new(seed).fill(&mut v);
    v
}

/// Letters weighted roughly by English frequency, so words look like words
/// to an entropy coder (skewed symbol statistics), not like random letters.
const LETTERS: &[u8] =
    b"eeeeeeeeeeeettttttttttaaaaaaaaooooooooiiiiiiinnnnnnnsssssshhhhhhrrrrrrddddllllcccuuummwwffggyyppbbvkjxqz";

/// Words in the vocabulary. Large enough that the text is not a few
/// repeated phrases (which zstd would squeeze 10×), small enough that
/// common words recur within zstd's window as they do in prose.
const VOCABULARY: usize = 2048;

/// Text-like bytes: sentences of words drawn from a generated vocabulary
/// with a Zipf-like (log-uniform) rank distribution, capitalised sentence
/// starts, commas, full stops and line breaks. zstd level 1 compresses it
/// about 2.5–3× (checked by a test), close to English prose.
pub fn text(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let words: Vec<Vec<u8>> = (0..VOCABULARY)
        .map(|_| {
            // Short words dominate, as in natural languages.
            let len = 2 + rng.below(4) + rng.below(5);
            (0..len).map(|_| LETTERS[rng.below(LETTERS.len())]).collect()
        })
        .collect();
    let mut out = Vec::with_capacity(n + 64);
    let mut in_sentence = 0usize;
    let mut sentence_len = 0usize;
    let mut line = 0usize;
    while out.len() < n {
        // Log-uniform rank: P(rank r) ~ 1/r, Zipf's law with s = 1.
        let rank = ((VOCABULARY as f64).powf(rng.next_f64()) as usize).saturating_sub(1);
        let word = &words[rank.min(VOCABULARY - 1)];
        if in_sentence == 0 {
            sentence_len = 6 + rng.below(14);
            out.push(word[0].to_ascii_uppercase());
            out.extend_from_slice(&word[1..]);
        } else {
            out.extend_from_slice(word);
        }
        in_sentence += 1;
        line += word.len() + 1;
        if in_sentence == sentence_len {
            out.push(b'.');
            in_sentence = 0;
        } else if rng.below(12) == 0 {
            out.push(b',');
        }
        if line > 72 {
            out.push(b'\n');
            line = 0;
        } else {
            out.push(b' ');
        }
    }
    out.truncate(n);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn generators_are_deterministic_and_sized() {
        assert_eq!(random(1001, 7), random(1001, 7));
        assert_ne!(random(1001, 7), random(1001, 8));
        assert_eq!(random(1001, 7).len(), 1001);
        assert_eq!(text(5000, 1), text(5000, 1));
        assert_eq!(text(5000, 1).len(), 5000);
    }

    #[test]
    fn text_compresses_like_prose_and_random_does_not() {
        let n = 4 << 20;
        let t = text(n, 11);
        let ratio = n as f64 / zstd_len(&t) as f64;
        assert!((2.5..=3.2).contains(&ratio), "text ratio {ratio:.2}");
        let r = random(n, 11);
        assert!(zstd_len(&r) >= n, "random data compressed");
    }

    fn zstd_len(data: &[u8]) -> usize {
        datamesh_pipeline::compress::compress_if_pays(datamesh_core::Compression::Zstd, data)
            .map_or(data.len(), |c| c.len())
    }
}
