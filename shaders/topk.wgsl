// Top-k over the last axis, one workgroup of 64 invocations per row: k rounds, each a
// workgroup arg-max over the elements ranked below the previous pick, in the order
// (value descending, index ascending) — so ties keep the lower index, as torch.topk does on
// CPU, and k = 1 is arg-max.

alias T = f32;

struct Params {
    rows: u32,
    cols: u32,
    k: u32,
    row_pitch: u32,
}

@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read_write> values: array<T>;
@group(0) @binding(2) var<storage, read_write> indices: array<u32>;
@group(0) @binding(3) var<uniform> p: Params;

const WG: u32 = 64u;
var<workgroup> best_v: array<f32, 64>;
var<workgroup> best_i: array<u32, 64>;

// Whether (v, i) ranks before (w, j).
fn before(v: f32, i: u32, w: f32, j: u32) -> bool {
    return v > w || (v == w && i < j);
}

@compute @workgroup_size(64, 1, 1)
fn topk(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let row = wid.y * p.row_pitch + wid.x;
    if row >= p.rows {
        return;
    }
    let lid = lid3.x;
    let base = row * p.cols;
    // The previous pick; the first round accepts everything.
    var prev_v = 3.4e38;
    var prev_i = 0xffffffffu;
    var first = true;
    for (var t = 0u; t < p.k; t++) {
        var bv = -3.4e38;
        var bi = 0xffffffffu;
        for (var j = lid; j < p.cols; j += WG) {
            let v = f32(x[base + j]);
            let below = first || before(prev_v, prev_i, v, j);
            if below && before(v, j, bv, bi) {
                bv = v;
                bi = j;
            }
        }
        best_v[lid] = bv;
        best_i[lid] = bi;
        workgroupBarrier();
        for (var s = WG / 2u; s > 0u; s >>= 1u) {
            if lid < s && before(best_v[lid + s], best_i[lid + s], best_v[lid], best_i[lid]) {
                best_v[lid] = best_v[lid + s];
                best_i[lid] = best_i[lid + s];
            }
            workgroupBarrier();
        }
        prev_v = best_v[0];
        prev_i = best_i[0];
        first = false;
        if lid == 0u {
            values[row * p.k + t] = T(prev_v);
            indices[row * p.k + t] = prev_i;
        }
        workgroupBarrier();
    }
}
