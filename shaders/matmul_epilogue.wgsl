// The part every matmul kernel shares: element type, params, override constants, the bias,
// residual, output and params bindings, and the epilogue
//
//   C[b] = act(alpha * acc + bias) + residual[b]   (r_stride = 0: one residual for every b)
//
// The texture kernels can write C as a packed texture instead (OUT_TEXTURE, through
// emit_row): four columns per texel, zero past column N, the layout pack.wgsl gives a matmul's
// A, so the next matmul reads it without a buffer copy of C ever existing.
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
override OUT_TEXTURE: bool = false;

@group(0) @binding(2) var<storage, read> bias: array<T>;
@group(0) @binding(3) var<storage, read> residual: array<T>;
@group(0) @binding(4) var<storage, read_write> c: array<T>;
@group(0) @binding(5) var<uniform> p: Params;
@group(0) @binding(8) var out_tex: texture_storage_2d_array<rgba32float, write>;

// The epilogue of one accumulated value.
fn epilogue(batch: u32, row: u32, col: u32, acc: f32) -> f32 {
    var v = p.alpha * acc;
    if HAS_BIAS {
        v += f32(bias[col]);
    }
    v = activate(v);
    if HAS_RESIDUAL {
        v += f32(residual[batch * p.r_stride + row * p.n + col]);
    }
    return v;
}

// Applies the epilogue to one accumulated value and stores it.
fn store(batch: u32, row: u32, col: u32, acc: f32) {
    c[batch * p.c_stride + row * p.n + col] = T(epilogue(batch, row, col, acc));
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

// The bias of columns col0..col0+3 (zero without one), which the texture kernels load once
// per invocation rather than once per output: on CPU drivers every storage-buffer read is a
// loop over the lanes.
fn bias4(col0: u32) -> vec4<f32> {
    if !HAS_BIAS {
        return vec4<f32>();
    }
    let cols = min(vec4<u32>(col0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.n - 1u));
    return vec4<f32>(f32(bias[cols.x]), f32(bias[cols.y]), f32(bias[cols.z]), f32(bias[cols.w]));
}

// Columns col0..col0+3 of a row of the texture kernels (col0 a multiple of 4) with their bias
// b: to C or, with OUT_TEXTURE, as one texel of the packed output (the values rounded to T
// like C's, zero past column N).
fn emit_row(batch: u32, row: u32, col0: u32, acc: vec4<f32>, b: vec4<f32>) {
    if row >= p.m {
        return;
    }
    let pre = p.alpha * acc + b;
    var v = vec4<f32>(activate(pre.x), activate(pre.y), activate(pre.z), activate(pre.w));
    let cols = vec4<u32>(col0) + vec4<u32>(0u, 1u, 2u, 3u);
    let inside = cols < vec4<u32>(p.n);
    if HAS_RESIDUAL {
        let at = vec4<u32>(batch * p.r_stride + row * p.n) + min(cols, vec4<u32>(p.n - 1u));
        v += vec4<f32>(f32(residual[at.x]), f32(residual[at.y]), f32(residual[at.z]),
            f32(residual[at.w]));
    }
    if OUT_TEXTURE {
        textureStore(out_tex, vec2<u32>(col0 / 4u, row), 0,
            select(vec4<f32>(), vec4<f32>(vec4<T>(v)), inside));
        return;
    }
    let at = batch * p.c_stride + row * p.n + col0;
    c[at] = T(v.x);
    if inside.y {
        c[at + 1u] = T(v.y);
    }
    if inside.z {
        c[at + 2u] = T(v.z);
    }
    if inside.w {
        c[at + 3u] = T(v.w);
    }
}

fn dot4(x: vec4<f32>, y0: vec4<f32>, y1: vec4<f32>, y2: vec4<f32>, y3: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(dot(x, y0), dot(x, y1), dot(x, y2), dot(x, y3));
}
