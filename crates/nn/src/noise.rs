//! Seeded uniform random numbers for the samplers.

/// Where uniform random numbers in [0, 1) come from: aMUSEd's token draws and re-masking
/// noise, Whisper's sampled decoding. [`SeededNoise`] is the default; tests replay the
/// reference implementations' draws.
pub trait Noise {
    /// The next `n` uniforms.
    fn uniforms(&mut self, n: usize) -> Vec<f32>;
}

/// SplitMix64: a seed gives the same draws on every machine and version.
#[derive(Clone, Debug)]
pub struct SeededNoise {
    state: u64,
}

impl SeededNoise {
    /// The stream of `seed`.
    pub fn new(seed: u64) -> Self {
        SeededNoise { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl Noise for SeededNoise {
    fn uniforms(&mut self, n: usize) -> Vec<f32> {
        // 24 random bits: every value is exact in f32 and below 1.
        (0..n)
            .map(|_| (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32)
            .collect()
    }
}
