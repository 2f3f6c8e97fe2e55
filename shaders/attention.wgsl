// Fused scaled-dot-product attention in the FlashAttention-2 style:
//
//   out[b, i, h, :] = Σ_j softmax_j(scale · q_i·k_j + bias[b, h, i, j] + mask) · v_j
//
// A workgroup of 256 invocations owns 256 / SPLITS queries of one (batch, head); the SPLITS
// invocations of a query take every SPLITS-th group of eight keys, each keeping an f32 running
// max, sum and output (online softmax) and reading K and V straight from memory (the
// invocations of a query block read the same key at once), and combine their states through
// workgroup memory at the end. The S_q × S_k score matrix never exists in memory, and the
// splits give a GPU enough invocations when S_q · heads is small (SPLITS is picked per shape,
// see attention.rs).
//
// The query and the running output are meant to stay in registers: every access to them
// below has a constant index, the head-dim steps written out and guarded by HEAD_DIM (a
// constant once the pipeline is built). GPU compilers put arrays indexed by loop counters in
// slow local memory; on an H100 the loop-indexed version was 2x slower (and one with every
// value a named variable 2.5x faster still, see BENCHMARKS.md).
//
// One dispatch covers the keys [key_start, key_stop). Long sequences may be split over several
// dispatches (needed on llvmpipe, which ends any invocation's loops after 65535 iterations in
// total): FIRST starts from an empty state, otherwise the running max, sum and output are read
// from `state`; LAST writes the normalised output, otherwise the state for the next dispatch.
//
// Q, K and V are read as strided views: element (b, h, s, d) of a tensor is at
// stride.w + b·stride.x + h·stride.y + s·stride.z + d, which covers [B, S, H, D], [B, H, S, D]
// and slices of a fused QKV projection without copies. The output is [B, S_q, H, D]. HEAD_DIM
// is a multiple of 4, at most 128.
//
// Masks: CAUSAL lets query i see key j when j + S_q ≤ i + S_k (the ends aligned, so decoding
// one query sees every key); HAS_KEY_LEN limits batch b to its first key_len[b] keys;
// HAS_BIAS adds bias[bs.w + b·bs.x + h·bs.y + i·bs.z + j]. A query that sees no key gets zeros.
//
// Compiled after attention_common.wgsl (T, Params, overrides, shared bindings and helpers).

// K and V four elements at a time: their views' offsets and strides are multiples of 4
// (attention.rs copies them otherwise), so one load fetches four dimensions of a key.
@group(0) @binding(1) var<storage, read> k: array<vec4<T>>;
@group(0) @binding(2) var<storage, read> v: array<vec4<T>>;

// Invocations per query (a power of two from 4 to 256).
override SPLITS: u32 = 4u;
const GROUP: u32 = 256u;
// The splits' states meet here: (max, sum) of every invocation, then four vec4 of each
// invocation's output per round.
var<workgroup> combine: array<vec4<f32>, 1024>;

// This invocation's query (scaled) and running output, four dimensions per vec4.
var<private> qv: array<vec4<f32>, 32>;
var<private> acc: array<vec4<f32>, 32>;

fn load_query(b: u32, h: u32, qi: u32) {
    qv[0] = load_q(b, h, qi, 0u);
    if HEAD_DIM > 4u { qv[1] = load_q(b, h, qi, 1u); }
    if HEAD_DIM > 8u { qv[2] = load_q(b, h, qi, 2u); }
    if HEAD_DIM > 12u { qv[3] = load_q(b, h, qi, 3u); }
    if HEAD_DIM > 16u { qv[4] = load_q(b, h, qi, 4u); }
    if HEAD_DIM > 20u { qv[5] = load_q(b, h, qi, 5u); }
    if HEAD_DIM > 24u { qv[6] = load_q(b, h, qi, 6u); }
    if HEAD_DIM > 28u { qv[7] = load_q(b, h, qi, 7u); }
    if HEAD_DIM > 32u { qv[8] = load_q(b, h, qi, 8u); }
    if HEAD_DIM > 36u { qv[9] = load_q(b, h, qi, 9u); }
    if HEAD_DIM > 40u { qv[10] = load_q(b, h, qi, 10u); }
    if HEAD_DIM > 44u { qv[11] = load_q(b, h, qi, 11u); }
    if HEAD_DIM > 48u { qv[12] = load_q(b, h, qi, 12u); }
    if HEAD_DIM > 52u { qv[13] = load_q(b, h, qi, 13u); }
    if HEAD_DIM > 56u { qv[14] = load_q(b, h, qi, 14u); }
    if HEAD_DIM > 60u { qv[15] = load_q(b, h, qi, 15u); }
    if HEAD_DIM > 64u { qv[16] = load_q(b, h, qi, 16u); }
    if HEAD_DIM > 68u { qv[17] = load_q(b, h, qi, 17u); }
    if HEAD_DIM > 72u { qv[18] = load_q(b, h, qi, 18u); }
    if HEAD_DIM > 76u { qv[19] = load_q(b, h, qi, 19u); }
    if HEAD_DIM > 80u { qv[20] = load_q(b, h, qi, 20u); }
    if HEAD_DIM > 84u { qv[21] = load_q(b, h, qi, 21u); }
    if HEAD_DIM > 88u { qv[22] = load_q(b, h, qi, 22u); }
    if HEAD_DIM > 92u { qv[23] = load_q(b, h, qi, 23u); }
    if HEAD_DIM > 96u { qv[24] = load_q(b, h, qi, 24u); }
    if HEAD_DIM > 100u { qv[25] = load_q(b, h, qi, 25u); }
    if HEAD_DIM > 104u { qv[26] = load_q(b, h, qi, 26u); }
    if HEAD_DIM > 108u { qv[27] = load_q(b, h, qi, 27u); }
    if HEAD_DIM > 112u { qv[28] = load_q(b, h, qi, 28u); }
    if HEAD_DIM > 116u { qv[29] = load_q(b, h, qi, 29u); }
    if HEAD_DIM > 120u { qv[30] = load_q(b, h, qi, 30u); }
    if HEAD_DIM > 124u { qv[31] = load_q(b, h, qi, 31u); }
}

// The running output a previous dispatch left at state[s..].
fn load_output(s: u32) {
    acc[0] = state[s + 0u];
    if HEAD_DIM > 4u { acc[1] = state[s + 1u]; }
    if HEAD_DIM > 8u { acc[2] = state[s + 2u]; }
    if HEAD_DIM > 12u { acc[3] = state[s + 3u]; }
    if HEAD_DIM > 16u { acc[4] = state[s + 4u]; }
    if HEAD_DIM > 20u { acc[5] = state[s + 5u]; }
    if HEAD_DIM > 24u { acc[6] = state[s + 6u]; }
    if HEAD_DIM > 28u { acc[7] = state[s + 7u]; }
    if HEAD_DIM > 32u { acc[8] = state[s + 8u]; }
    if HEAD_DIM > 36u { acc[9] = state[s + 9u]; }
    if HEAD_DIM > 40u { acc[10] = state[s + 10u]; }
    if HEAD_DIM > 44u { acc[11] = state[s + 11u]; }
    if HEAD_DIM > 48u { acc[12] = state[s + 12u]; }
    if HEAD_DIM > 52u { acc[13] = state[s + 13u]; }
    if HEAD_DIM > 56u { acc[14] = state[s + 14u]; }
    if HEAD_DIM > 60u { acc[15] = state[s + 15u]; }
    if HEAD_DIM > 64u { acc[16] = state[s + 16u]; }
    if HEAD_DIM > 68u { acc[17] = state[s + 17u]; }
    if HEAD_DIM > 72u { acc[18] = state[s + 18u]; }
    if HEAD_DIM > 76u { acc[19] = state[s + 19u]; }
    if HEAD_DIM > 80u { acc[20] = state[s + 20u]; }
    if HEAD_DIM > 84u { acc[21] = state[s + 21u]; }
    if HEAD_DIM > 88u { acc[22] = state[s + 22u]; }
    if HEAD_DIM > 92u { acc[23] = state[s + 23u]; }
    if HEAD_DIM > 96u { acc[24] = state[s + 24u]; }
    if HEAD_DIM > 100u { acc[25] = state[s + 25u]; }
    if HEAD_DIM > 104u { acc[26] = state[s + 26u]; }
    if HEAD_DIM > 108u { acc[27] = state[s + 27u]; }
    if HEAD_DIM > 112u { acc[28] = state[s + 28u]; }
    if HEAD_DIM > 116u { acc[29] = state[s + 29u]; }
    if HEAD_DIM > 120u { acc[30] = state[s + 30u]; }
    if HEAD_DIM > 124u { acc[31] = state[s + 31u]; }
}

// q·k for the key whose first vec4 is k[kb], in four interleaved sums.
fn score(kb: u32) -> f32 {
    var s0 = dot(qv[0], vec4<f32>(k[kb]));
    var s1 = 0.0;
    var s2 = 0.0;
    var s3 = 0.0;
    if HEAD_DIM > 4u { s1 += dot(qv[1], vec4<f32>(k[kb + 1u])); }
    if HEAD_DIM > 8u { s2 += dot(qv[2], vec4<f32>(k[kb + 2u])); }
    if HEAD_DIM > 12u { s3 += dot(qv[3], vec4<f32>(k[kb + 3u])); }
    if HEAD_DIM > 16u { s0 += dot(qv[4], vec4<f32>(k[kb + 4u])); }
    if HEAD_DIM > 20u { s1 += dot(qv[5], vec4<f32>(k[kb + 5u])); }
    if HEAD_DIM > 24u { s2 += dot(qv[6], vec4<f32>(k[kb + 6u])); }
    if HEAD_DIM > 28u { s3 += dot(qv[7], vec4<f32>(k[kb + 7u])); }
    if HEAD_DIM > 32u { s0 += dot(qv[8], vec4<f32>(k[kb + 8u])); }
    if HEAD_DIM > 36u { s1 += dot(qv[9], vec4<f32>(k[kb + 9u])); }
    if HEAD_DIM > 40u { s2 += dot(qv[10], vec4<f32>(k[kb + 10u])); }
    if HEAD_DIM > 44u { s3 += dot(qv[11], vec4<f32>(k[kb + 11u])); }
    if HEAD_DIM > 48u { s0 += dot(qv[12], vec4<f32>(k[kb + 12u])); }
    if HEAD_DIM > 52u { s1 += dot(qv[13], vec4<f32>(k[kb + 13u])); }
    if HEAD_DIM > 56u { s2 += dot(qv[14], vec4<f32>(k[kb + 14u])); }
    if HEAD_DIM > 60u { s3 += dot(qv[15], vec4<f32>(k[kb + 15u])); }
    if HEAD_DIM > 64u { s0 += dot(qv[16], vec4<f32>(k[kb + 16u])); }
    if HEAD_DIM > 68u { s1 += dot(qv[17], vec4<f32>(k[kb + 17u])); }
    if HEAD_DIM > 72u { s2 += dot(qv[18], vec4<f32>(k[kb + 18u])); }
    if HEAD_DIM > 76u { s3 += dot(qv[19], vec4<f32>(k[kb + 19u])); }
    if HEAD_DIM > 80u { s0 += dot(qv[20], vec4<f32>(k[kb + 20u])); }
    if HEAD_DIM > 84u { s1 += dot(qv[21], vec4<f32>(k[kb + 21u])); }
    if HEAD_DIM > 88u { s2 += dot(qv[22], vec4<f32>(k[kb + 22u])); }
    if HEAD_DIM > 92u { s3 += dot(qv[23], vec4<f32>(k[kb + 23u])); }
    if HEAD_DIM > 96u { s0 += dot(qv[24], vec4<f32>(k[kb + 24u])); }
    if HEAD_DIM > 100u { s1 += dot(qv[25], vec4<f32>(k[kb + 25u])); }
    if HEAD_DIM > 104u { s2 += dot(qv[26], vec4<f32>(k[kb + 26u])); }
    if HEAD_DIM > 108u { s3 += dot(qv[27], vec4<f32>(k[kb + 27u])); }
    if HEAD_DIM > 112u { s0 += dot(qv[28], vec4<f32>(k[kb + 28u])); }
    if HEAD_DIM > 116u { s1 += dot(qv[29], vec4<f32>(k[kb + 29u])); }
    if HEAD_DIM > 120u { s2 += dot(qv[30], vec4<f32>(k[kb + 30u])); }
    if HEAD_DIM > 124u { s3 += dot(qv[31], vec4<f32>(k[kb + 31u])); }
    return (s0 + s1) + (s2 + s3);
}

fn rescale(f: f32) {
    acc[0] *= f;
    if HEAD_DIM > 4u { acc[1] *= f; }
    if HEAD_DIM > 8u { acc[2] *= f; }
    if HEAD_DIM > 12u { acc[3] *= f; }
    if HEAD_DIM > 16u { acc[4] *= f; }
    if HEAD_DIM > 20u { acc[5] *= f; }
    if HEAD_DIM > 24u { acc[6] *= f; }
    if HEAD_DIM > 28u { acc[7] *= f; }
    if HEAD_DIM > 32u { acc[8] *= f; }
    if HEAD_DIM > 36u { acc[9] *= f; }
    if HEAD_DIM > 40u { acc[10] *= f; }
    if HEAD_DIM > 44u { acc[11] *= f; }
    if HEAD_DIM > 48u { acc[12] *= f; }
    if HEAD_DIM > 52u { acc[13] *= f; }
    if HEAD_DIM > 56u { acc[14] *= f; }
    if HEAD_DIM > 60u { acc[15] *= f; }
    if HEAD_DIM > 64u { acc[16] *= f; }
    if HEAD_DIM > 68u { acc[17] *= f; }
    if HEAD_DIM > 72u { acc[18] *= f; }
    if HEAD_DIM > 76u { acc[19] *= f; }
    if HEAD_DIM > 80u { acc[20] *= f; }
    if HEAD_DIM > 84u { acc[21] *= f; }
    if HEAD_DIM > 88u { acc[22] *= f; }
    if HEAD_DIM > 92u { acc[23] *= f; }
    if HEAD_DIM > 96u { acc[24] *= f; }
    if HEAD_DIM > 100u { acc[25] *= f; }
    if HEAD_DIM > 104u { acc[26] *= f; }
    if HEAD_DIM > 108u { acc[27] *= f; }
    if HEAD_DIM > 112u { acc[28] *= f; }
    if HEAD_DIM > 116u { acc[29] *= f; }
    if HEAD_DIM > 120u { acc[30] *= f; }
    if HEAD_DIM > 124u { acc[31] *= f; }
}

// acc += w · the value whose first vec4 is v[vb].
fn accumulate(w: f32, vb: u32) {
    acc[0] += w * vec4<f32>(v[vb + 0u]);
    if HEAD_DIM > 4u { acc[1] += w * vec4<f32>(v[vb + 1u]); }
    if HEAD_DIM > 8u { acc[2] += w * vec4<f32>(v[vb + 2u]); }
    if HEAD_DIM > 12u { acc[3] += w * vec4<f32>(v[vb + 3u]); }
    if HEAD_DIM > 16u { acc[4] += w * vec4<f32>(v[vb + 4u]); }
    if HEAD_DIM > 20u { acc[5] += w * vec4<f32>(v[vb + 5u]); }
    if HEAD_DIM > 24u { acc[6] += w * vec4<f32>(v[vb + 6u]); }
    if HEAD_DIM > 28u { acc[7] += w * vec4<f32>(v[vb + 7u]); }
    if HEAD_DIM > 32u { acc[8] += w * vec4<f32>(v[vb + 8u]); }
    if HEAD_DIM > 36u { acc[9] += w * vec4<f32>(v[vb + 9u]); }
    if HEAD_DIM > 40u { acc[10] += w * vec4<f32>(v[vb + 10u]); }
    if HEAD_DIM > 44u { acc[11] += w * vec4<f32>(v[vb + 11u]); }
    if HEAD_DIM > 48u { acc[12] += w * vec4<f32>(v[vb + 12u]); }
    if HEAD_DIM > 52u { acc[13] += w * vec4<f32>(v[vb + 13u]); }
    if HEAD_DIM > 56u { acc[14] += w * vec4<f32>(v[vb + 14u]); }
    if HEAD_DIM > 60u { acc[15] += w * vec4<f32>(v[vb + 15u]); }
    if HEAD_DIM > 64u { acc[16] += w * vec4<f32>(v[vb + 16u]); }
    if HEAD_DIM > 68u { acc[17] += w * vec4<f32>(v[vb + 17u]); }
    if HEAD_DIM > 72u { acc[18] += w * vec4<f32>(v[vb + 18u]); }
    if HEAD_DIM > 76u { acc[19] += w * vec4<f32>(v[vb + 19u]); }
    if HEAD_DIM > 80u { acc[20] += w * vec4<f32>(v[vb + 20u]); }
    if HEAD_DIM > 84u { acc[21] += w * vec4<f32>(v[vb + 21u]); }
    if HEAD_DIM > 88u { acc[22] += w * vec4<f32>(v[vb + 22u]); }
    if HEAD_DIM > 92u { acc[23] += w * vec4<f32>(v[vb + 23u]); }
    if HEAD_DIM > 96u { acc[24] += w * vec4<f32>(v[vb + 24u]); }
    if HEAD_DIM > 100u { acc[25] += w * vec4<f32>(v[vb + 25u]); }
    if HEAD_DIM > 104u { acc[26] += w * vec4<f32>(v[vb + 26u]); }
    if HEAD_DIM > 108u { acc[27] += w * vec4<f32>(v[vb + 27u]); }
    if HEAD_DIM > 112u { acc[28] += w * vec4<f32>(v[vb + 28u]); }
    if HEAD_DIM > 116u { acc[29] += w * vec4<f32>(v[vb + 29u]); }
    if HEAD_DIM > 120u { acc[30] += w * vec4<f32>(v[vb + 30u]); }
    if HEAD_DIM > 124u { acc[31] += w * vec4<f32>(v[vb + 31u]); }
}

// acc[c] for a c known only at run time, without indexing acc by it.
fn output_at(c: u32) -> vec4<f32> {
    switch c {
        case 0u: { return acc[0]; }
        case 1u: { return acc[1]; }
        case 2u: { return acc[2]; }
        case 3u: { return acc[3]; }
        case 4u: { return acc[4]; }
        case 5u: { return acc[5]; }
        case 6u: { return acc[6]; }
        case 7u: { return acc[7]; }
        case 8u: { return acc[8]; }
        case 9u: { return acc[9]; }
        case 10u: { return acc[10]; }
        case 11u: { return acc[11]; }
        case 12u: { return acc[12]; }
        case 13u: { return acc[13]; }
        case 14u: { return acc[14]; }
        case 15u: { return acc[15]; }
        case 16u: { return acc[16]; }
        case 17u: { return acc[17]; }
        case 18u: { return acc[18]; }
        case 19u: { return acc[19]; }
        case 20u: { return acc[20]; }
        case 21u: { return acc[21]; }
        case 22u: { return acc[22]; }
        case 23u: { return acc[23]; }
        case 24u: { return acc[24]; }
        case 25u: { return acc[25]; }
        case 26u: { return acc[26]; }
        case 27u: { return acc[27]; }
        case 28u: { return acc[28]; }
        case 29u: { return acc[29]; }
        case 30u: { return acc[30]; }
        case 31u: { return acc[31]; }
        default: { return vec4<f32>(); }
    }
}

// The score of key j for query qi, -1e30 where masked. Computed for a clamped key either way,
// so the keys of a step do not wait on one another.
fn key_score(b: u32, h: u32, qi: u32, j: u32, end: u32) -> f32 {
    let jc = min(j, p.k_len - 1u);
    var s = score(at(p.k_stride, b, h, jc) / 4u);
    if HAS_BIAS {
        s += bias_at(b, h, qi, jc);
    }
    return select(-1.0e30, s, visible(qi, j, end));
}

// Adds key j's value with the weight of score s under the running max m (zero where masked,
// and added regardless, so the keys of a step do not wait on one another); returns the weight.
fn add_value(b: u32, h: u32, j: u32, s: f32, m: f32) -> f32 {
    let w = select(0.0, exp(s - m), s > -1.0e29);
    accumulate(w, at(p.v_stride, b, h, min(j, p.k_len - 1u)) / 4u);
    return w;
}

@compute @workgroup_size(256, 1, 1)
fn attention(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let queries = GROUP / SPLITS;
    let ql = li % queries;
    let split = li / queries;
    let b = wid.z;
    let h = wid.y;
    let i = wid.x * queries + ql;
    let d4 = HEAD_DIM / 4u;
    // Out-of-range queries still take part in the barriers of the combine.
    let qi = min(i, p.q_len - 1u);
    let end = key_end(b, wid.x * queries, queries);
    load_query(b, h, qi);
    var run_max = -1.0e30;
    var run_sum = 0.0;
    // A previous dispatch's state is the first split's to carry on.
    if !FIRST && split == 0u {
        let s = state_base(b, h, qi);
        load_output(s);
        let stats = state[s + d4];
        run_max = stats.x;
        run_sum = stats.y;
    }
    for (var j0 = p.key_start + split * 8u; j0 < end; j0 += SPLITS * 8u) {
        let s0 = key_score(b, h, qi, j0, end);
        let s1 = key_score(b, h, qi, j0 + 1u, end);
        let s2 = key_score(b, h, qi, j0 + 2u, end);
        let s3 = key_score(b, h, qi, j0 + 3u, end);
        let s4 = key_score(b, h, qi, j0 + 4u, end);
        let s5 = key_score(b, h, qi, j0 + 5u, end);
        let s6 = key_score(b, h, qi, j0 + 6u, end);
        let s7 = key_score(b, h, qi, j0 + 7u, end);
        let step_max = max(max(max(s0, s1), max(s2, s3)), max(max(s4, s5), max(s6, s7)));
        if step_max > -1.0e29 {
            let m = max(run_max, step_max);
            let correction = exp(run_max - m);
            rescale(correction);
            run_sum = run_sum * correction + add_value(b, h, j0, s0, m)
                + add_value(b, h, j0 + 1u, s1, m) + add_value(b, h, j0 + 2u, s2, m)
                + add_value(b, h, j0 + 3u, s3, m) + add_value(b, h, j0 + 4u, s4, m)
                + add_value(b, h, j0 + 5u, s5, m) + add_value(b, h, j0 + 6u, s6, m)
                + add_value(b, h, j0 + 7u, s7, m);
            run_max = m;
        }
    }
    // Combine: the common max and sum, then the outputs, scaled to that max, summed by the
    // first split four vec4 at a time.
    combine[li] = vec4<f32>(run_max, run_sum, 0.0, 0.0);
    workgroupBarrier();
    var all_max = -1.0e30;
    for (var sp = 0u; sp < SPLITS; sp++) {
        all_max = max(all_max, combine[sp * queries + ql].x);
    }
    var all_sum = 0.0;
    for (var sp = 0u; sp < SPLITS; sp++) {
        let st = combine[sp * queries + ql];
        all_sum += st.y * exp(st.x - all_max);
    }
    let own = exp(run_max - all_max);
    let first = split == 0u && i < p.q_len;
    workgroupBarrier();
    for (var c0 = 0u; c0 < d4; c0 += 4u) {
        for (var r = 0u; r < 4u; r++) {
            combine[li * 4u + r] = output_at(c0 + r) * own;
        }
        workgroupBarrier();
        if first {
            for (var r = 0u; r < 4u && c0 + r < d4; r++) {
                var sum = vec4<f32>();
                for (var sp = 0u; sp < SPLITS; sp++) {
                    sum += combine[(sp * queries + ql) * 4u + r];
                }
                finish_chunk(b, h, i, c0 + r, sum, all_sum);
            }
        }
        workgroupBarrier();
    }
    if first {
        finish_stats(b, h, i, all_max, all_sum);
    }
}
