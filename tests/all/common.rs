//! Helpers shared by the tests.

use std::sync::Arc;

use tessera::Gpu;

/// The shared adapter; panics (fails the test) with the reason when there is none.
pub fn gpu() -> Arc<Gpu> {
    match Gpu::shared() {
        Ok(gpu) => gpu,
        Err(e) => panic!("this test needs a GPU adapter: {e}"),
    }
}

/// Deterministic values in [-1, 1).
pub fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Largest absolute difference relative to the largest magnitude of `want` (at least 1e-6).
pub fn rel_error(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "length differs");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    got.iter()
        .zip(want)
        .map(|(g, w)| {
            if g.is_finite() {
                (g - w).abs()
            } else {
                f32::INFINITY
            }
        })
        .fold(0f32, f32::max)
        / scale
}

/// Whether the adapter stores f16. Where it does not, checks that asking for f16 is the clear
/// `MissingFeature` error (the adapter's other paths are still tested) and returns false.
pub fn f16_or_clear_error(gpu: &Arc<Gpu>) -> bool {
    if gpu.supports_f16() {
        return true;
    }
    let err = tessera::Tensor::from_slice(gpu, &[1.0], &[1], tessera::DType::F16).unwrap_err();
    assert!(err.to_string().contains("SHADER_F16"), "{err}");
    false
}
