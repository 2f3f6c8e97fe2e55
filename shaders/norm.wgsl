// Normalisation over the last axis, one workgroup of 64 invocations per row:
//
//   LayerNorm (KIND 0): y = (x - mean) / sqrt(var + eps) · weight + bias
//   RMSNorm   (KIND 1): y = x / sqrt(mean(x²) + eps) · weight
//   softmax   (KIND 2): y = exp(scale·x - max) / Σ exp(scale·x - max)
//
// With HAS_RESIDUAL the row is x + residual, which is also written to `sum` (the residual
// stream of a pre-LN transformer), so the add and the norm are one dispatch. GroupNorm is
// LayerNorm over rows of one group: with GROUP_HW > 0 the affine index of column j of row r is
// (r mod groups)·(cols / GROUP_HW) + j / GROUP_HW, i.e. the channel. Mean and variance are
// two passes in f32 (no E[x²] - E[x]² cancellation). LayerNorm, RMSNorm and GroupNorm end
// with the activation ACT (activation.wgsl; a VQ-GAN's GroupNorm + SiLU in one pass). With
// `affine_rows` > 0, weight and bias hold one row per block of that many rows (adaptive norms:
// per batch element).
//
// Entry points: norm_rows, one workgroup of 64 per row with reductions in workgroup memory
// (GPUs, long rows); norm_rows_serial (SERIAL = true), one invocation per row and no barriers,
// for CPU drivers, where barriers switch coroutines and short rows leave the workgroup idle;
// norm_rows_texels, the same reading x, residual, weight and bias from read-only storage
// textures four columns at a time (rows packed by pack.wgsl, weight and bias as one row), for
// CPU drivers, where an image load is a handful of vector instructions and a storage-buffer
// read a loop over the lanes (no GroupNorm).

alias T = f32;

struct Params {
    rows: u32,
    cols: u32,
    eps: f32,
    groups: u32,
    row_pitch: u32,
    scale: f32,
    // Rows sharing one row of weight and bias (adaptive norms: a batch element's rows); 0 when
    // every row shares the one row.
    affine_rows: u32,
    _pad1: u32,
}

override KIND: u32 = 0u;
override HAS_RESIDUAL: bool = false;
override HAS_WEIGHT: bool = true;
override HAS_BIAS: bool = true;
override GROUP_HW: u32 = 0u;
override SERIAL: bool = false;

@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read> residual: array<T>;
@group(0) @binding(2) var<storage, read> weight: array<T>;
@group(0) @binding(3) var<storage, read> bias: array<T>;
@group(0) @binding(4) var<storage, read_write> out: array<T>;
@group(0) @binding(5) var<storage, read_write> sum: array<T>;
@group(0) @binding(6) var<uniform> p: Params;
@group(0) @binding(7) var x_tex: texture_storage_2d<rgba32float, read>;
@group(0) @binding(8) var residual_tex: texture_storage_2d<rgba32float, read>;
@group(0) @binding(9) var weight_tex: texture_storage_2d<rgba32float, read>;
@group(0) @binding(10) var bias_tex: texture_storage_2d<rgba32float, read>;

const WG: u32 = 64u;
var<workgroup> partial: array<f32, 64>;

// Invocations sharing a row and the step between the elements each one visits.
fn step() -> u32 {
    return select(WG, 1u, SERIAL);
}

fn reduce_sum(v: f32, lid: u32) -> f32 {
    if SERIAL {
        return v;
    }
    partial[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            partial[lid] += partial[lid + s];
        }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}

fn reduce_max(v: f32, lid: u32) -> f32 {
    if SERIAL {
        return v;
    }
    partial[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            partial[lid] = max(partial[lid], partial[lid + s]);
        }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}

// Element j of the row starting at `base`, with the residual added (and stored) on the first
// pass. Later passes read back what this same invocation wrote, so no barrier is needed.
fn load(base: u32, j: u32, first: bool) -> f32 {
    if HAS_RESIDUAL {
        if first {
            let v = f32(x[base + j]) + f32(residual[base + j]);
            if writes {
                sum[base + j] = T(v);
            }
            return v;
        }
        return f32(sum[base + j]);
    }
    return f32(x[base + j]);
}

fn affine_index(row: u32, j: u32) -> u32 {
    if GROUP_HW > 0u {
        // max() keeps the division valid when the constant is 0 and this branch is dead.
        let hw = max(GROUP_HW, 1u);
        return (row % p.groups) * (p.cols / hw) + j / hw;
    }
    return affine_row(row) * p.cols + j;
}

fn affine_row(row: u32) -> u32 {
    return select(0u, row / max(p.affine_rows, 1u), p.affine_rows > 0u);
}

@compute @workgroup_size(64, 1, 1)
fn norm_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let row = wid.y * p.row_pitch + wid.x;
    // Uniform per workgroup: every invocation leaves together, before any barrier.
    if row >= p.rows {
        return;
    }
    normalize_row(row, lid3.x);
}

// Whether this invocation stores its row. The serial entry point's invocations past the last
// row run row 0 without storing instead of returning early: the code it shares with norm_rows
// holds barriers (SERIAL skips them), which WGSL allows only in uniform control flow — browsers'
// compilers check that statically.
var<private> writes: bool = true;

@compute @workgroup_size(64, 1, 1)
fn norm_rows_serial(@builtin(global_invocation_id) gid: vec3<u32>) {
    let row = gid.y * p.row_pitch + gid.x;
    writes = row < p.rows;
    normalize_row(select(0u, row, writes), 0u);
}

// Normalises one row; `lid` is this invocation's place among the step() sharing it.
fn normalize_row(row: u32, lid: u32) {
    let n = p.cols;
    let base = row * n;
    if KIND == 2u {
        var m = -3.0e38;
        for (var j = lid; j < n; j += step()) {
            m = max(m, p.scale * load(base, j, true));
        }
        m = reduce_max(m, lid);
        var s = 0.0;
        for (var j = lid; j < n; j += step()) {
            s += exp(p.scale * load(base, j, false) - m);
        }
        let inv = 1.0 / reduce_sum(s, lid);
        for (var j = lid; j < n; j += step()) {
            if writes {
                out[base + j] = T(exp(p.scale * load(base, j, false) - m) * inv);
            }
        }
        return;
    }
    var mean = 0.0;
    if KIND == 0u {
        var s = 0.0;
        for (var j = lid; j < n; j += step()) {
            s += load(base, j, true);
        }
        mean = reduce_sum(s, lid) / f32(n);
    }
    var ss = 0.0;
    for (var j = lid; j < n; j += step()) {
        let d = load(base, j, KIND != 0u) - mean;
        ss += d * d;
    }
    let inv = inverseSqrt(reduce_sum(ss, lid) / f32(n) + p.eps);
    for (var j = lid; j < n; j += step()) {
        var v = (load(base, j, false) - mean) * inv;
        let a = affine_index(row, j);
        if HAS_WEIGHT {
            v *= f32(weight[a]);
        }
        if HAS_BIAS {
            v += f32(bias[a]);
        }
        if writes {
            out[base + j] = T(activate(v));
        }
    }
}

@compute @workgroup_size(64, 1, 1)
fn norm_rows_texels(@builtin(global_invocation_id) gid: vec3<u32>) {
    let row = gid.y * p.row_pitch + gid.x;
    if row >= p.rows {
        return;
    }
    let n = p.cols;
    let texels = (n + 3u) / 4u;
    if KIND == 2u {
        var m = -3.0e38;
        for (var c = 0u; c < texels; c++) {
            // Padding columns must not win the max.
            let v = select(vec4<f32>(-3.0e38), p.scale * row_texel(row, c, true), valid_mask(c));
            m = max(m, max(max(v.x, v.y), max(v.z, v.w)));
        }
        var s = 0.0;
        for (var c = 0u; c < texels; c++) {
            s += dot(valid(c, exp(p.scale * row_texel(row, c, false) - m)), vec4<f32>(1.0));
        }
        let inv = 1.0 / s;
        for (var c = 0u; c < texels; c++) {
            store_texel(row, c, exp(p.scale * row_texel(row, c, false) - m) * inv);
        }
        return;
    }
    var mean = 0.0;
    if KIND == 0u {
        var s = vec4<f32>();
        for (var c = 0u; c < texels; c++) {
            s += row_texel(row, c, true);
        }
        mean = dot(s, vec4<f32>(1.0)) / f32(n);
    }
    var ss = vec4<f32>();
    for (var c = 0u; c < texels; c++) {
        let d = valid(c, row_texel(row, c, KIND != 0u) - vec4<f32>(mean));
        ss += d * d;
    }
    let inv = inverseSqrt(dot(ss, vec4<f32>(1.0)) / f32(n) + p.eps);
    for (var c = 0u; c < texels; c++) {
        var v = (row_texel(row, c, false) - vec4<f32>(mean)) * inv;
        if HAS_WEIGHT {
            v *= textureLoad(weight_tex, vec2<u32>(c, affine_row(row)));
        }
        if HAS_BIAS {
            v += textureLoad(bias_tex, vec2<u32>(c, affine_row(row)));
        }
        store_texel(row, c, vec4<f32>(activate(v.x), activate(v.y), activate(v.z), activate(v.w)));
    }
}

// Columns 4c..4c+3 of a row (zero past the last column), with the residual added; on the
// first pass the sum is also stored.
fn row_texel(row: u32, c: u32, first: bool) -> vec4<f32> {
    var v = textureLoad(x_tex, vec2<u32>(c, row));
    if HAS_RESIDUAL {
        v += textureLoad(residual_tex, vec2<u32>(c, row));
        if first {
            for (var j = 0u; j < 4u; j++) {
                if 4u * c + j < p.cols {
                    sum[row * p.cols + 4u * c + j] = T(v[j]);
                }
            }
        }
    }
    return v;
}

fn valid_mask(c: u32) -> vec4<bool> {
    return vec4<u32>(4u * c) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(p.cols);
}

fn valid(c: u32, v: vec4<f32>) -> vec4<f32> {
    return select(vec4<f32>(), v, valid_mask(c));
}

fn store_texel(row: u32, c: u32, v: vec4<f32>) {
    for (var j = 0u; j < 4u; j++) {
        if 4u * c + j < p.cols {
            out[row * p.cols + 4u * c + j] = T(v[j]);
        }
    }
}
