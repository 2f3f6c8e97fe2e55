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
// two passes in f32 (no E[x²] - E[x]² cancellation).
//
// Entry points: norm_rows, one workgroup of 64 per row with reductions in workgroup memory
// (GPUs, long rows); norm_rows_serial (SERIAL = true), one invocation per row and no barriers,
// for CPU drivers, where barriers switch coroutines and short rows leave the workgroup idle.

alias T = f32;

struct Params {
    rows: u32,
    cols: u32,
    eps: f32,
    groups: u32,
    row_pitch: u32,
    scale: f32,
    _pad0: u32,
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
            sum[base + j] = T(v);
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
    return j;
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

@compute @workgroup_size(64, 1, 1)
fn norm_rows_serial(@builtin(global_invocation_id) gid: vec3<u32>) {
    let row = gid.y * p.row_pitch + gid.x;
    if row >= p.rows {
        return;
    }
    normalize_row(row, 0u);
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
            out[base + j] = T(exp(p.scale * load(base, j, false) - m) * inv);
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
        out[base + j] = T(v);
    }
}
