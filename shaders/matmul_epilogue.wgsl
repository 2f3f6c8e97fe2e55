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
// Rows of the texture kernels' packed op(B) per texture row (pack.wgsl): 4 (quads) or 1.
override B_GROUP: u32 = 4u;
// The texture kernels' grid: row blocks along x and column blocks along y, or the other way
// round (see matmul.rs, rows_along_x).
override ROWS_ALONG_X: bool = false;

@group(0) @binding(2) var<storage, read> bias: array<T>;
@group(0) @binding(3) var<storage, read> residual: array<T>;
@group(0) @binding(4) var<storage, read_write> c: array<T>;
@group(0) @binding(5) var<uniform> p: Params;
@group(0) @binding(8) var out_tex: texture_storage_2d_array<rgba32float, write>;
// The texture kernels' packed operands (pack.wgsl): A as M rows of K, op(B) as N rows of K in
// B_GROUP-row groups, four k per texel.
@group(0) @binding(6) var tex_a: texture_storage_2d<rgba32float, read>;
@group(0) @binding(7) var tex_b: texture_storage_2d<rgba32float, read>;

// The bias of columns col0..col0+3 (zero without one). The texture kernels load it once per
// invocation rather than once per output: on CPU drivers every storage-buffer read is a loop
// over the lanes.
fn bias4(col0: u32) -> vec4<f32> {
    if !HAS_BIAS {
        return vec4<f32>();
    }
    let cols = min(vec4<u32>(col0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.n - 1u));
    return vec4<f32>(f32(bias[cols.x]), f32(bias[cols.y]), f32(bias[cols.z]), f32(bias[cols.w]));
}

// The epilogue of columns col0..col0+3 (col0 a multiple of 4) of one row, with their bias b.
fn epilogue4(batch: u32, row: u32, col0: u32, acc: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    let pre = p.alpha * acc + b;
    var v = vec4<f32>(activate(pre.x), activate(pre.y), activate(pre.z), activate(pre.w));
    if HAS_RESIDUAL {
        let cols = min(vec4<u32>(col0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.n - 1u));
        let at = vec4<u32>(batch * p.r_stride + row * p.n) + cols;
        v += vec4<f32>(f32(residual[at.x]), f32(residual[at.y]), f32(residual[at.z]),
            f32(residual[at.w]));
    }
    return v;
}

// Stores columns col0..col0+3 of a row of C, those below N.
fn store4(batch: u32, row: u32, col0: u32, v: vec4<f32>) {
    let at = batch * p.c_stride + row * p.n + col0;
    c[at] = T(v.x);
    if col0 + 1u < p.n {
        c[at + 1u] = T(v.y);
    }
    if col0 + 2u < p.n {
        c[at + 2u] = T(v.z);
    }
    if col0 + 3u < p.n {
        c[at + 3u] = T(v.w);
    }
}

// Columns col0..col0+3 of a row of the buffer kernels, if inside C.
fn store_row(batch: u32, row: u32, col0: u32, acc: vec4<f32>) {
    if row < p.m && col0 < p.n {
        store4(batch, row, col0, epilogue4(batch, row, col0, acc, bias4(col0)));
    }
}

// Columns col0..col0+3 (col0 < N) of a row of the texture kernels with their bias b: to C or,
// with OUT_TEXTURE, as one texel of the packed output (the values rounded to T like C's, zero
// past column N).
fn emit_row(batch: u32, row: u32, col0: u32, acc: vec4<f32>, b: vec4<f32>) {
    if row >= p.m {
        return;
    }
    let v = epilogue4(batch, row, col0, acc, b);
    if OUT_TEXTURE {
        let inside = vec4<u32>(col0) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(p.n);
        textureStore(out_tex, vec2<u32>(col0 / 4u, row), 0,
            select(vec4<f32>(), vec4<f32>(vec4<T>(v)), inside));
        return;
    }
    store4(batch, row, col0, v);
}

// Where the texture kernels' packed op(B) holds column col's first texel (col clamped to the
// last column); load_b reads its texel at step x of k, B_GROUP·x further along the row.
fn b_texel(col: u32) -> vec2<u32> {
    let c = min(col, p.n - 1u);
    return vec2<u32>(c % B_GROUP, c / B_GROUP);
}

fn load_b(first: vec2<u32>, x: u32) -> vec4<f32> {
    return textureLoad(tex_b, first + vec2<u32>(B_GROUP * x, 0u));
}

// The texture kernels' (row block, column block) of workgroup wid.
fn blocks(wid: vec3<u32>) -> vec2<u32> {
    return select(wid.yx, wid.xy, ROWS_ALONG_X);
}

fn dot4(x: vec4<f32>, y0: vec4<f32>, y1: vec4<f32>, y2: vec4<f32>, y3: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(dot(x, y0), dot(x, y1), dot(x, y2), dot(x, y3));
}
