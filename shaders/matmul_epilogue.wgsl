// The part every matmul kernel shares: element type, params, override constants, the bias,
// residual, output and params bindings, and the epilogue
//
//   C[b] = act(alpha * acc + bias) + residual[b]
//
// Kernel files are compiled with this file in front of them (see kernels/src/lib.rs, SHADERS).

alias T = f32;

struct Params {
    m: u32,
    n: u32,
    k: u32,
    batch_base: u32,
    a_stride: u32,
    b_stride: u32,
    c_stride: u32,
    alpha: f32,
}

override TRANS_B: bool = true;
override HAS_BIAS: bool = false;
override HAS_RESIDUAL: bool = false;
// 0 none, 1 relu, 2 gelu (erf), 3 gelu (tanh), 4 quick_gelu, 5 silu
override ACT: u32 = 0u;

@group(0) @binding(2) var<storage, read> bias: array<T>;
@group(0) @binding(3) var<storage, read> residual: array<T>;
@group(0) @binding(4) var<storage, read_write> c: array<T>;
@group(0) @binding(5) var<uniform> p: Params;

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

fn activate(x: f32) -> f32 {
    switch ACT {
        case 1u: { return max(x, 0.0); }
        case 2u: { return 0.5 * x * (1.0 + erf_approx(x * 0.7071067811865476)); }
        case 3u: {
            // tanh(u) = 1 - 2 / (exp(2u) + 1) stays finite for large |u|.
            let u = 0.7978845608028654 * (x + 0.044715 * x * x * x);
            let th = 1.0 - 2.0 / (exp(min(2.0 * u, 80.0)) + 1.0);
            return 0.5 * x * (1.0 + th);
        }
        case 4u: { return x * sigmoid(1.702 * x); }
        case 5u: { return x * sigmoid(x); }
        default: { return x; }
    }
}

// Applies the epilogue to one accumulated value and stores it.
fn store(batch: u32, row: u32, col: u32, acc: f32) {
    var v = p.alpha * acc;
    if HAS_BIAS {
        v += f32(bias[col]);
    }
    v = activate(v);
    let i = batch * p.c_stride + row * p.n + col;
    if HAS_RESIDUAL {
        v += f32(residual[i]);
    }
    c[i] = T(v);
}

fn store_row(batch: u32, row: u32, col0: u32, acc: vec4<f32>) {
    if row < p.m {
        for (var j = 0u; j < 4u; j++) {
            if col0 + j < p.n {
                store(batch, row, col0 + j, acc[j]);
            }
        }
    }
}

fn dot4(x: vec4<f32>, y0: vec4<f32>, y1: vec4<f32>, y2: vec4<f32>, y3: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(dot(x, y0), dot(x, y1), dot(x, y2), dot(x, y3));
}
