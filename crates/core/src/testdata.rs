//! Deterministic pseudo-random bytes for tests and benchmarks (splitmix64),
//! so a failure reproduces from its seed. Not for anything secret.

/// The splitmix64 generator.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Appends at least `n` bytes (whole 8-byte words) to `out`.
    pub fn extend(&mut self, out: &mut Vec<u8>, n: usize) {
        let end = out.len() + n;
        while out.len() < end {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
    }
}

/// `n` pseudo-random bytes from `seed`: the first `n` bytes of the
/// generator's little-endian output.
pub fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 8);
    SplitMix64::new(seed).extend(&mut out, n);
    out.truncate(n);
    out
}
