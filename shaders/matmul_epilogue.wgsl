// The part every matmul kernel shares: element type, params, override constants, the bias,
// residual, output and params bindings, and the epilogue
//
//   C[b] = act(alpha * acc + bias) + residual[b]   (r_stride = 0: one residual for every b)
//
// Compiled after activation.wgsl and before the kernel files (see kernels/src/lib.rs, modules).

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
    r_stride: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

override TRANS_B: bool = true;
override HAS_BIAS: bool = false;
override HAS_RESIDUAL: bool = false;

@group(0) @binding(2) var<storage, read> bias: array<T>;
@group(0) @binding(3) var<storage, read> residual: array<T>;
@group(0) @binding(4) var<storage, read_write> c: array<T>;
@group(0) @binding(5) var<uniform> p: Params;

// Applies the epilogue to one accumulated value and stores it.
fn store(batch: u32, row: u32, col: u32, acc: f32) {
    var v = p.alpha * acc;
    if HAS_BIAS {
        v += f32(bias[col]);
    }
    v = activate(v);
    let within = row * p.n + col;
    if HAS_RESIDUAL {
        v += f32(residual[batch * p.r_stride + within]);
    }
    c[batch * p.c_stride + within] = T(v);
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
