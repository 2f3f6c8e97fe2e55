// Elementwise activations, shared by every kernel with an activation epilogue. Compiled in
// front of those kernels (see kernels/src/lib.rs, modules); ACT selects the function:
// 0 none, 1 relu, 2 gelu (erf), 3 gelu (tanh), 4 quick_gelu, 5 silu, 6 tanh.

override ACT: u32 = 0u;

// erf to 1.5e-7 (Abramowitz & Stegun 7.1.26); WGSL has no erf.
fn erf_approx(x: f32) -> f32 {
    let s = sign(x);
    let z = abs(x);
    let t = 1.0 / (1.0 + 0.3275911 * z);
    let y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t
        + 0.254829592) * t * exp(-z * z);
    return s * y;
}

fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

// GELU with the exact (erf) normal CDF.
fn gelu_erf(x: f32) -> f32 {
    return 0.5 * x * (1.0 + erf_approx(x * 0.7071067811865476));
}

fn activate(x: f32) -> f32 {
    switch ACT {
        case 1u: { return max(x, 0.0); }
        case 2u: { return gelu_erf(x); }
        case 3u: {
            // tanh(u) = 1 - 2 / (exp(2u) + 1) stays finite for large |u|.
            let u = 0.7978845608028654 * (x + 0.044715 * x * x * x);
            let th = 1.0 - 2.0 / (exp(min(2.0 * u, 80.0)) + 1.0);
            return 0.5 * x * (1.0 + th);
        }
        case 4u: { return x * sigmoid(1.702 * x); }
        case 5u: { return x * sigmoid(x); }
        case 6u: { return 1.0 - 2.0 / (exp(min(2.0 * x, 80.0)) + 1.0); }
        default: { return x; }
    }
}
