// Whisper's timestamp rule and the greedy pick in one pass per row of logits (transformers'
// WhisperTimeStampLogitsProcessor then an arg-max): with `x = logits + bias` (the bias holding
// the row's −∞ masks), the columns from `split` on (the timestamp tokens) win as a group when
// their log-sum-exp exceeds the largest column before `split`; the pick is then the best
// timestamp, otherwise the best column of the row (ties to the lower index).
//
// One workgroup of 64 invocations per row; invocation `i` owns the `i`-th contiguous chunk of
// columns. Writes the index to `picked[row]` and the bits of its log-probability under the
// processed row (the masks, and the text columns masked when the timestamps won) to
// `picked[rows + row]`: what Whisper's fallback averages over a window.

alias T = f32;

struct Params {
    rows: u32,
    cols: u32,
    split: u32,
    row_pitch: u32,
}

@group(0) @binding(0) var<storage, read> logits: array<T>;
@group(0) @binding(1) var<storage, read> bias: array<f32>;
@group(0) @binding(2) var<storage, read_write> picked: array<u32>;
@group(0) @binding(3) var<uniform> p: Params;

const WG: u32 = 64u;
// Below every finite f32: the value of a column masked to −∞ or of an empty range.
// −FLT_MAX exactly (a decimal literal rounds past the range in some compilers).
const NONE: f32 = -0x1.fffffep+127f;
var<workgroup> best_v: array<f32, 64>;
var<workgroup> best_i: array<u32, 64>;
var<workgroup> sums: array<f32, 64>;
var<workgroup> text_sums: array<f32, 64>;

fn value(row: u32, j: u32) -> f32 {
    let v = f32(logits[row * p.cols + j]) + bias[row * p.cols + j];
    // −∞ (and NaN) ranks below every finite value; neither can win.
    if !(v > NONE) {
        return NONE;
    }
    return v;
}

// The (value, index) maximum of columns [lo, hi) across the workgroup, ties to the lower index;
// (NONE, 0xffffffff) for an empty or all-masked range. Every invocation returns the result.
fn group_max(row: u32, lid: u32, lo: u32, hi: u32) -> vec2<u32> {
    var bv = NONE;
    var bi = 0xffffffffu;
    for (var j = lo; j < hi; j++) {
        let v = value(row, j);
        if v > bv {
            bv = v;
            bi = j;
        }
    }
    best_v[lid] = bv;
    best_i[lid] = bi;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            let w = best_v[lid + s];
            let wi = best_i[lid + s];
            if w > best_v[lid] || (w == best_v[lid] && wi < best_i[lid]) {
                best_v[lid] = w;
                best_i[lid] = wi;
            }
        }
        workgroupBarrier();
    }
    let out = vec2<u32>(bitcast<u32>(best_v[0]), best_i[0]);
    workgroupBarrier();
    return out;
}

// Σ exp(x − m) over columns [lo, hi); masked ones add nothing, and an all-masked group (m is
// NONE) sums to 0.
fn sum_exp(row: u32, lo: u32, hi: u32, m: f32) -> f32 {
    var sum = 0.0;
    if m > NONE {
        for (var j = lo; j < hi; j++) {
            let v = value(row, j);
            if v > NONE {
                sum += exp(v - m);
            }
        }
    }
    return sum;
}

@compute @workgroup_size(64, 1, 1)
fn timestamp_pick(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let row = wid.y * p.row_pitch + wid.x;
    if row >= p.rows {
        return;
    }
    let lid = lid3.x;
    let split = min(p.split, p.cols);
    let text_chunk = (split + WG - 1u) / WG;
    let t_lo = min(lid * text_chunk, split);
    let t_hi = min(t_lo + text_chunk, split);
    let text = group_max(row, lid, t_lo, t_hi);

    let stamps = p.cols - split;
    let stamp_chunk = (stamps + WG - 1u) / WG;
    let s_lo = min(split + lid * stamp_chunk, p.cols);
    let s_hi = min(s_lo + stamp_chunk, p.cols);
    let stamp = group_max(row, lid, s_lo, s_hi);

    let text_max = bitcast<f32>(text.x);
    let stamp_max = bitcast<f32>(stamp.x);
    // Σ exp(x − stamp_max) over the timestamp columns and Σ exp(x − text_max) over the text
    // columns.
    sums[lid] = sum_exp(row, s_lo, s_hi, stamp_max);
    text_sums[lid] = sum_exp(row, t_lo, t_hi, text_max);
    workgroupBarrier();
    if lid == 0u {
        var total = 0.0;
        var text_total = 0.0;
        for (var i = 0u; i < WG; i++) {
            total += sums[i];
            text_total += text_sums[i];
        }
        var pick = text.y;
        var pick_v = text_max;
        // The log-sum-exp of the processed row: both groups, or the timestamps alone.
        var lse = text_max + log(text_total);
        if stamp_max > NONE {
            let stamp_lse = stamp_max + log(total);
            if stamp_lse > text_max {
                pick = stamp.y;
                pick_v = stamp_max;
                lse = stamp_lse;
            } else {
                // The text won, so text_max ≥ stamp_lse ≥ stamp_max: the text's best is the
                // row's best.
                lse = text_max + log(text_total + total * exp(stamp_max - text_max));
            }
        }
        var logprob = pick_v - lse;
        if pick == 0xffffffffu {
            // Every column masked: the first, as an arg-max over −∞ gives.
            pick = 0u;
            logprob = NONE;
        }
        picked[row] = pick;
        picked[p.rows + row] = bitcast<u32>(logprob);
    }
}
