// Masked-token sampling (MaskGIT / aMUSEd): per row of logits, the guided logits
// `u + g·(c − u)` (classifier-free guidance; `c` the row `cond_offset` rows further on, none
// when `cond_offset` is 0), their softmax, and one token drawn by the inverse of the cumulative
// distribution at the row's uniform: the first index whose running sum exceeds `u · total`,
// as a multinomial draw of one sample. Writes the index to `picked[row]` and the bits of its
// probability to `picked[rows + row]`, so one read-back brings both.
//
// One workgroup of 64 invocations per row; invocation `i` owns the `i`-th contiguous chunk of
// columns, so the chunk sums give each chunk's starting point of the running sum.

alias T = f32;

struct Params {
    rows: u32,
    cols: u32,
    row_pitch: u32,
    cond_offset: u32,
    guidance: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> logits: array<T>;
@group(0) @binding(1) var<storage, read> uniforms: array<f32>;
@group(0) @binding(2) var<storage, read_write> picked: array<u32>;
@group(0) @binding(3) var<uniform> p: Params;

const WG: u32 = 64u;
var<workgroup> part: array<f32, 64>;
var<workgroup> owner: u32;
var<workgroup> owner_start: f32;
var<workgroup> target_sum: f32;
var<workgroup> total: f32;

fn logit(row: u32, j: u32) -> f32 {
    let u = f32(logits[row * p.cols + j]);
    if p.cond_offset == 0u {
        return u;
    }
    let c = f32(logits[(row + p.cond_offset) * p.cols + j]);
    return u + p.guidance * (c - u);
}

@compute @workgroup_size(64, 1, 1)
fn sample(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let row = wid.y * p.row_pitch + wid.x;
    if row >= p.rows {
        return;
    }
    let lid = lid3.x;
    let chunk = (p.cols + WG - 1u) / WG;
    let lo = min(lid * chunk, p.cols);
    let hi = min(lo + chunk, p.cols);

    var m = -3.4e38;
    for (var j = lo; j < hi; j++) {
        m = max(m, logit(row, j));
    }
    part[lid] = m;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            part[lid] = max(part[lid], part[lid + s]);
        }
        workgroupBarrier();
    }
    let row_max = part[0];
    workgroupBarrier();

    var sum = 0.0;
    for (var j = lo; j < hi; j++) {
        sum += exp(logit(row, j) - row_max);
    }
    part[lid] = sum;
    workgroupBarrier();
    if lid == 0u {
        var t = 0.0;
        for (var i = 0u; i < WG; i++) {
            t += part[i];
        }
        let goal = uniforms[row] * t;
        // The last chunk with mass whose start is at or below the goal.
        var start = 0.0;
        var who = 0u;
        var who_start = 0.0;
        for (var i = 0u; i < WG; i++) {
            if part[i] > 0.0 && start <= goal {
                who = i;
                who_start = start;
            }
            start += part[i];
        }
        owner = who;
        owner_start = who_start;
        target_sum = goal;
        total = t;
    }
    workgroupBarrier();
    if lid == owner {
        var acc = owner_start;
        var pick = lo;
        for (var j = lo; j < hi; j++) {
            let e = exp(logit(row, j) - row_max);
            if e > 0.0 {
                // Rounding can leave the goal past the last sum: the last token with mass.
                pick = j;
            }
            acc += e;
            if acc > target_sum {
                pick = j;
                break;
            }
        }
        picked[row] = pick;
        picked[p.rows + row] = bitcast<u32>(exp(logit(row, pick) - row_max) / total);
    }
}
