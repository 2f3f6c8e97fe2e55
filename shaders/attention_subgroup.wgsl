// Fused attention for CPU drivers with subgroups of 8 (lavapipe): the same result as
// attention.wgsl, with K and V read from read-only storage array textures (layer =
// batch·heads + head, row = key, four dims per texel; packed by pack.wgsl) instead of storage
// buffers and workgroup memory, which CPU drivers read lane by lane.
//
// Each invocation owns two queries (i and i + 64 of its workgroup's 128); the 8 invocations of
// a subgroup walk the keys 8 at a time: invocation l reads the texel of key t0 + l and the
// subgroup broadcasts it, so one texture read feeds 16 queries and one broadcast 2 (the
// broadcasts, a few shuffles each on llvmpipe, cost as much as the arithmetic with one query).
// No workgroup memory, no barriers. The online softmax, the masks and the FIRST/LAST chunking
// are attention.wgsl's. The head-dim steps are unrolled with constant indices: llvmpipe does
// not unroll those loops itself, and a variable index into qv or acc is a per-lane gather or
// scatter there; steps past HEAD_DIM / 4 are dead code once the override is known.
//
// Compiled after attention_common.wgsl (T, Params, overrides, shared bindings and helpers).

@group(0) @binding(8) var tex_k: texture_storage_2d_array<rgba32float, read>;
@group(0) @binding(9) var tex_v: texture_storage_2d_array<rgba32float, read>;

// One query's running state.
struct Run {
    max: f32,
    sum: f32,
}

// s0[j] += q0 · key j and s1[j] += q1 · key j of the subgroup's tile, four dims at a time.
fn add_scores(s0: ptr<function, array<f32, 8>>, s1: ptr<function, array<f32, 8>>,
    q0: vec4<f32>, q1: vec4<f32>, kt: vec4<f32>) {
    let k0 = subgroupBroadcast(kt, 0u);
    let k1 = subgroupBroadcast(kt, 1u);
    let k2 = subgroupBroadcast(kt, 2u);
    let k3 = subgroupBroadcast(kt, 3u);
    let k4 = subgroupBroadcast(kt, 4u);
    let k5 = subgroupBroadcast(kt, 5u);
    let k6 = subgroupBroadcast(kt, 6u);
    let k7 = subgroupBroadcast(kt, 7u);
    (*s0)[0] += dot(q0, k0);
    (*s1)[0] += dot(q1, k0);
    (*s0)[1] += dot(q0, k1);
    (*s1)[1] += dot(q1, k1);
    (*s0)[2] += dot(q0, k2);
    (*s1)[2] += dot(q1, k2);
    (*s0)[3] += dot(q0, k3);
    (*s1)[3] += dot(q1, k3);
    (*s0)[4] += dot(q0, k4);
    (*s1)[4] += dot(q1, k4);
    (*s0)[5] += dot(q0, k5);
    (*s1)[5] += dot(q1, k5);
    (*s0)[6] += dot(q0, k6);
    (*s1)[6] += dot(q1, k6);
    (*s0)[7] += dot(q0, k7);
    (*s1)[7] += dot(q1, k7);
}

// Four dims of both queries' outputs.
struct Pair {
    q0: vec4<f32>,
    q1: vec4<f32>,
}

// Both queries' acc·correction + Σ_j w[j]·(value j of the tile), four dims at a time.
fn mix_values(acc: Pair, c0: f32, c1: f32, w0: array<f32, 8>, w1: array<f32, 8>,
    vt: vec4<f32>) -> Pair {
    var a0 = acc.q0 * c0;
    var a1 = acc.q1 * c1;
    let v0 = subgroupBroadcast(vt, 0u);
    a0 += w0[0] * v0;
    a1 += w1[0] * v0;
    let v1 = subgroupBroadcast(vt, 1u);
    a0 += w0[1] * v1;
    a1 += w1[1] * v1;
    let v2 = subgroupBroadcast(vt, 2u);
    a0 += w0[2] * v2;
    a1 += w1[2] * v2;
    let v3 = subgroupBroadcast(vt, 3u);
    a0 += w0[3] * v3;
    a1 += w1[3] * v3;
    let v4 = subgroupBroadcast(vt, 4u);
    a0 += w0[4] * v4;
    a1 += w1[4] * v4;
    let v5 = subgroupBroadcast(vt, 5u);
    a0 += w0[5] * v5;
    a1 += w1[5] * v5;
    let v6 = subgroupBroadcast(vt, 6u);
    a0 += w0[6] * v6;
    a1 += w1[6] * v6;
    let v7 = subgroupBroadcast(vt, 7u);
    a0 += w0[7] * v7;
    a1 += w1[7] * v7;
    return Pair(a0, a1);
}

// Masks and biases one query's tile scores, then folds them into its running max and sum;
// returns the correction of its earlier output and leaves the weights in w.
fn softmax_step(b: u32, h: u32, qi: u32, t0: u32, end: u32, s: ptr<function, array<f32, 8>>,
    run: ptr<function, Run>, w: ptr<function, array<f32, 8>>) -> f32 {
    var tile_max = -1.0e30;
    if visible(qi, t0 + 0u, end) {
        if HAS_BIAS {
            (*s)[0] += bias_at(b, h, qi, t0 + 0u);
        }
        tile_max = max(tile_max, (*s)[0]);
    } else {
        (*s)[0] = -1.0e30;
    }
    if visible(qi, t0 + 1u, end) {
        if HAS_BIAS {
            (*s)[1] += bias_at(b, h, qi, t0 + 1u);
        }
        tile_max = max(tile_max, (*s)[1]);
    } else {
        (*s)[1] = -1.0e30;
    }
    if visible(qi, t0 + 2u, end) {
        if HAS_BIAS {
            (*s)[2] += bias_at(b, h, qi, t0 + 2u);
        }
        tile_max = max(tile_max, (*s)[2]);
    } else {
        (*s)[2] = -1.0e30;
    }
    if visible(qi, t0 + 3u, end) {
        if HAS_BIAS {
            (*s)[3] += bias_at(b, h, qi, t0 + 3u);
        }
        tile_max = max(tile_max, (*s)[3]);
    } else {
        (*s)[3] = -1.0e30;
    }
    if visible(qi, t0 + 4u, end) {
        if HAS_BIAS {
            (*s)[4] += bias_at(b, h, qi, t0 + 4u);
        }
        tile_max = max(tile_max, (*s)[4]);
    } else {
        (*s)[4] = -1.0e30;
    }
    if visible(qi, t0 + 5u, end) {
        if HAS_BIAS {
            (*s)[5] += bias_at(b, h, qi, t0 + 5u);
        }
        tile_max = max(tile_max, (*s)[5]);
    } else {
        (*s)[5] = -1.0e30;
    }
    if visible(qi, t0 + 6u, end) {
        if HAS_BIAS {
            (*s)[6] += bias_at(b, h, qi, t0 + 6u);
        }
        tile_max = max(tile_max, (*s)[6]);
    } else {
        (*s)[6] = -1.0e30;
    }
    if visible(qi, t0 + 7u, end) {
        if HAS_BIAS {
            (*s)[7] += bias_at(b, h, qi, t0 + 7u);
        }
        tile_max = max(tile_max, (*s)[7]);
    } else {
        (*s)[7] = -1.0e30;
    }
    let new_max = max((*run).max, tile_max);
    let correction = exp((*run).max - new_max);
    (*w)[0] = select(0.0, exp((*s)[0] - new_max), (*s)[0] > -1.0e29);
    (*w)[1] = select(0.0, exp((*s)[1] - new_max), (*s)[1] > -1.0e29);
    (*w)[2] = select(0.0, exp((*s)[2] - new_max), (*s)[2] > -1.0e29);
    (*w)[3] = select(0.0, exp((*s)[3] - new_max), (*s)[3] > -1.0e29);
    (*w)[4] = select(0.0, exp((*s)[4] - new_max), (*s)[4] > -1.0e29);
    (*w)[5] = select(0.0, exp((*s)[5] - new_max), (*s)[5] > -1.0e29);
    (*w)[6] = select(0.0, exp((*s)[6] - new_max), (*s)[6] > -1.0e29);
    (*w)[7] = select(0.0, exp((*s)[7] - new_max), (*s)[7] > -1.0e29);
    (*run).sum = (*run).sum * correction + (*w)[0] + (*w)[1] + (*w)[2] + (*w)[3] + (*w)[4]
        + (*w)[5] + (*w)[6] + (*w)[7];
    (*run).max = new_max;
    return correction;
}

@compute @workgroup_size(64, 1, 1)
fn attention_subgroup(@builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid3: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32) {
    let lid = lid3.x;
    let b = wid.z;
    let h = wid.y;
    let i0 = wid.x * 128u + lid;
    let i1 = i0 + 64u;
    let d4 = HEAD_DIM / 4u;
    // Out-of-range queries still take part in every broadcast.
    let q0 = min(i0, p.q_len - 1u);
    let q1 = min(i1, p.q_len - 1u);
    // Uniform across the subgroup, whose queries are lid - lane + 0..8 and + 64..72; the
    // later block sees at least as many keys.
    let end = max(key_end(b, i0 - lane, 8u), key_end(b, i1 - lane, 8u));
    let layer = b * p.heads + h;
    var qv0: array<vec4<f32>, 32>;
    var qv1: array<vec4<f32>, 32>;
    var acc0: array<vec4<f32>, 32>;
    var acc1: array<vec4<f32>, 32>;
    let stats0 = start_query(b, h, q0, &qv0, &acc0);
    let stats1 = start_query(b, h, q1, &qv1, &acc1);
    var run0 = Run(stats0.x, stats0.y);
    var run1 = Run(stats1.x, stats1.y);
    for (var t0 = p.key_start; t0 < end; t0 += 8u) {
        let my_key = min(t0 + lane, p.k_len - 1u);
        var s0 = array<f32, 8>();
        var s1 = array<f32, 8>();
        if 0u < d4 { add_scores(&s0, &s1, qv0[0], qv1[0], textureLoad(tex_k, vec2<u32>(0u, my_key), layer)); }
        if 1u < d4 { add_scores(&s0, &s1, qv0[1], qv1[1], textureLoad(tex_k, vec2<u32>(1u, my_key), layer)); }
        if 2u < d4 { add_scores(&s0, &s1, qv0[2], qv1[2], textureLoad(tex_k, vec2<u32>(2u, my_key), layer)); }
        if 3u < d4 { add_scores(&s0, &s1, qv0[3], qv1[3], textureLoad(tex_k, vec2<u32>(3u, my_key), layer)); }
        if 4u < d4 { add_scores(&s0, &s1, qv0[4], qv1[4], textureLoad(tex_k, vec2<u32>(4u, my_key), layer)); }
        if 5u < d4 { add_scores(&s0, &s1, qv0[5], qv1[5], textureLoad(tex_k, vec2<u32>(5u, my_key), layer)); }
        if 6u < d4 { add_scores(&s0, &s1, qv0[6], qv1[6], textureLoad(tex_k, vec2<u32>(6u, my_key), layer)); }
        if 7u < d4 { add_scores(&s0, &s1, qv0[7], qv1[7], textureLoad(tex_k, vec2<u32>(7u, my_key), layer)); }
        if 8u < d4 { add_scores(&s0, &s1, qv0[8], qv1[8], textureLoad(tex_k, vec2<u32>(8u, my_key), layer)); }
        if 9u < d4 { add_scores(&s0, &s1, qv0[9], qv1[9], textureLoad(tex_k, vec2<u32>(9u, my_key), layer)); }
        if 10u < d4 { add_scores(&s0, &s1, qv0[10], qv1[10], textureLoad(tex_k, vec2<u32>(10u, my_key), layer)); }
        if 11u < d4 { add_scores(&s0, &s1, qv0[11], qv1[11], textureLoad(tex_k, vec2<u32>(11u, my_key), layer)); }
        if 12u < d4 { add_scores(&s0, &s1, qv0[12], qv1[12], textureLoad(tex_k, vec2<u32>(12u, my_key), layer)); }
        if 13u < d4 { add_scores(&s0, &s1, qv0[13], qv1[13], textureLoad(tex_k, vec2<u32>(13u, my_key), layer)); }
        if 14u < d4 { add_scores(&s0, &s1, qv0[14], qv1[14], textureLoad(tex_k, vec2<u32>(14u, my_key), layer)); }
        if 15u < d4 { add_scores(&s0, &s1, qv0[15], qv1[15], textureLoad(tex_k, vec2<u32>(15u, my_key), layer)); }
        if 16u < d4 { add_scores(&s0, &s1, qv0[16], qv1[16], textureLoad(tex_k, vec2<u32>(16u, my_key), layer)); }
        if 17u < d4 { add_scores(&s0, &s1, qv0[17], qv1[17], textureLoad(tex_k, vec2<u32>(17u, my_key), layer)); }
        if 18u < d4 { add_scores(&s0, &s1, qv0[18], qv1[18], textureLoad(tex_k, vec2<u32>(18u, my_key), layer)); }
        if 19u < d4 { add_scores(&s0, &s1, qv0[19], qv1[19], textureLoad(tex_k, vec2<u32>(19u, my_key), layer)); }
        if 20u < d4 { add_scores(&s0, &s1, qv0[20], qv1[20], textureLoad(tex_k, vec2<u32>(20u, my_key), layer)); }
        if 21u < d4 { add_scores(&s0, &s1, qv0[21], qv1[21], textureLoad(tex_k, vec2<u32>(21u, my_key), layer)); }
        if 22u < d4 { add_scores(&s0, &s1, qv0[22], qv1[22], textureLoad(tex_k, vec2<u32>(22u, my_key), layer)); }
        if 23u < d4 { add_scores(&s0, &s1, qv0[23], qv1[23], textureLoad(tex_k, vec2<u32>(23u, my_key), layer)); }
        if 24u < d4 { add_scores(&s0, &s1, qv0[24], qv1[24], textureLoad(tex_k, vec2<u32>(24u, my_key), layer)); }
        if 25u < d4 { add_scores(&s0, &s1, qv0[25], qv1[25], textureLoad(tex_k, vec2<u32>(25u, my_key), layer)); }
        if 26u < d4 { add_scores(&s0, &s1, qv0[26], qv1[26], textureLoad(tex_k, vec2<u32>(26u, my_key), layer)); }
        if 27u < d4 { add_scores(&s0, &s1, qv0[27], qv1[27], textureLoad(tex_k, vec2<u32>(27u, my_key), layer)); }
        if 28u < d4 { add_scores(&s0, &s1, qv0[28], qv1[28], textureLoad(tex_k, vec2<u32>(28u, my_key), layer)); }
        if 29u < d4 { add_scores(&s0, &s1, qv0[29], qv1[29], textureLoad(tex_k, vec2<u32>(29u, my_key), layer)); }
        if 30u < d4 { add_scores(&s0, &s1, qv0[30], qv1[30], textureLoad(tex_k, vec2<u32>(30u, my_key), layer)); }
        if 31u < d4 { add_scores(&s0, &s1, qv0[31], qv1[31], textureLoad(tex_k, vec2<u32>(31u, my_key), layer)); }
        var w0 = array<f32, 8>();
        var w1 = array<f32, 8>();
        let c0 = softmax_step(b, h, q0, t0, end, &s0, &run0, &w0);
        let c1 = softmax_step(b, h, q1, t0, end, &s1, &run1, &w1);
        if 0u < d4 {
            let m = mix_values(Pair(acc0[0], acc1[0]), c0, c1, w0, w1, textureLoad(tex_v, vec2<u32>(0u, my_key), layer));
            acc0[0] = m.q0;
            acc1[0] = m.q1;
        }
        if 1u < d4 {
            let m = mix_values(Pair(acc0[1], acc1[1]), c0, c1, w0, w1, textureLoad(tex_v, vec2<u32>(1u, my_key), layer));
            acc0[1] = m.q0;
            acc1[1] = m.q1;
        }
        if 2u < d4 {
            let m = mix_values(Pair(acc0[2], acc1[2]), c0, c1, w0, w1, textureLoad(tex_v, vec2<u32>(2u, my_key), layer));
            acc0[2] = m.q0;
            acc1[2] = m.q1;
        }
        if 3u < d4 {
            let m = mix_values(Pair(acc0[3], acc1[3]), c0, c1, w0, w1, textureLoad(tex_v, vec2<u32>(3u, my_key), layer));
            acc0[3] = m.q0;
            acc1[3] = m.q1;
        }
        if 4u < d4 {
            let m = mix_values(Pair(acc0[4], acc1[4]), c0, c1, w0, w1, textureLoad(tex_v, vec2<u32>(4u, my_key), layer));
            acc0[4] = m.q0;
            acc1[4] = m.q1;
        }
        if 5u < d4 {
            let m = mix_values(Pair(acc0[5], acc1[5]), c0, c1, w0, w1, textureLoad(tex_v, vec2<u32>(5u, my_key), layer));
            acc0[5] = m.q0;
            acc1[5] = m.q1;
        }
        if 6u < d4 {
            let m = mix_values(Pair(acc0[6], acc1[6]), c0, c1, w0, w1, textureLoad(tex_v, vec2<u32>(6u, my_key), layer));
            acc0[6] = m.q0;
            acc1[6] = m.q1;
        }
        if 7u < d4 {
            let m = mix_values(Pair(acc0[7], acc1[7]), c0, c1, w0, w1, textureLoad(tex_v, vec2<u32>(7u, my_key), layer));
            acc0[7] = m.q0;
            acc1[7] = m.q1;
        }
        if 8u < d4 {
            let m = mix_values(Pair(acc0[8], acc1[8]), c0, c1, w0, w1, textureLoad(tex_v, vec2<u32>(8u, my_key), layer));
            acc0[8] = m.q0;
            acc1[8] = m.q1;
        }
        if 9u < d4 {
            let m = mix_values(Pair(acc0[9], acc1[9]), c0, c1, w0, w1, textureLoad(tex_v, vec2<u32>(9u, my_key), layer));
            acc0[9] = m.q0;
            acc1[9] = m.q1;
        }
        if 10u < d4 {
            let m = mix_values(Pair(acc0[10], acc1[10]), c0, c1, w0, w1, textureLoad(tex_v, vec2<u32>(10u, my_key), layer));
            acc0[10] = m.q0;
            acc1[10] = m.q1;
        }
        if 11u < d4 {
            let m = mix_values(Pair(acc0[11], acc1[11]), c0, c1, w0, w1, textureLoad(tex_v, vec2<u32>(11u, my_key), layer));
            acc0[11] = m.q0;
            acc1[11] = m.q1;
        }
        if 12u < d4 {
            let m = mix_values(Pair(acc0[12], acc1[12]), c0, c1, w0, w1, textureLoad(tex_v, vec2<u32>(12u, my_key), layer));
            acc0[12] = m.q0;
            acc1[12] = m.q1;
        }
        if 13u < d4 {
            let m = mix_values(Pair(acc0[13], acc1[13]), c0, c1, w0, w1, textureLoad(tex_v, vec2<u32>(13u, my_key), layer));
            acc0[13] = m.q0;
            acc1[13] = m.q1;
        }
        if 14u < d4 {
            let m = mix_values(Pair(acc0[14], acc1[14]), c0, c1, w0, w1, textureLoad(tex_v, vec2<u32>(14u, my_key), layer));
            acc0[14] = m.q0;
            acc1[14] = m.q1;
        }
        if 15u < d4 {
            let m = mix_values(Pair(acc0[15], acc1[15]), c0, c1, w0, w1, textureLoad(tex_v, vec2<u32>(15u, my_key), layer));
            acc0[15] = m.q0;
            acc1[15] = m.q1;
        }
        if 16u < d4 {
            let m = mix_values(Pair(acc0[16], acc1[16]), c0, c1, w0, w1, textureLoad(tex_v, vec2<u32>(16u, my_key), layer));
            acc0[16] = m.q0;
            acc1[16] = m.q1;
        }
        if 17u < d4 {
            let m = mix_values(Pair(acc0[17], acc1[17]), c0, c1, w0, w1, textureLoad(tex_v, vec2<u32>(17u, my_key), layer));
            acc0[17] = m.q0;
            acc1[17] = m.q1;
        }
        if 18u < d4 {
            let m = mix_values(Pair(acc0[18], acc1[18]), c0, c1, w0, w1, textureLoad(tex_v, vec2<u32>(18u, my_key), layer));
            acc0[18] = m.q0;
            acc1[18] = m.q1;
        }
        if 19u < d4 {
            let m = mix_values(Pair(acc0[19], acc1[19]), c0, c1, w0, w1, textureLoad(tex_v, vec2<u32>(19u, my_key), layer));
            acc0[19] = m.q0;
            acc1[19] = m.q1;
        }
        if 20u < d4 {
            let m = mix_values(Pair(acc0[20], acc1[20]), c0, c1, w0, w1, textureLoad(tex_v, vec2<u32>(20u, my_key), layer));
            acc0[20] = m.q0;
            acc1[20] = m.q1;
        }
        if 21u < d4 {
            let m = mix_values(Pair(acc0[21], acc1[21]), c0, c1, w0, w1, textureLoad(tex_v, vec2<u32>(21u, my_key), layer));
            acc0[21] = m.q0;
            acc1[21] = m.q1;
        }
        if 22u < d4 {
            let m = mix_values(Pair(acc0[22], acc1[22]), c0, c1, w0, w1, textureLoad(tex_v, vec2<u32>(22u, my_key), layer));
            acc0[22] = m.q0;
            acc1[22] = m.q1;
        }
        if 23u < d4 {
            let m = mix_values(Pair(acc0[23], acc1[23]), c0, c1, w0, w1, textureLoad(tex_v, vec2<u32>(23u, my_key), layer));
            acc0[23] = m.q0;
            acc1[23] = m.q1;
        }
        if 24u < d4 {
            let m = mix_values(Pair(acc0[24], acc1[24]), c0, c1, w0, w1, textureLoad(tex_v, vec2<u32>(24u, my_key), layer));
            acc0[24] = m.q0;
            acc1[24] = m.q1;
        }
        if 25u < d4 {
            let m = mix_values(Pair(acc0[25], acc1[25]), c0, c1, w0, w1, textureLoad(tex_v, vec2<u32>(25u, my_key), layer));
            acc0[25] = m.q0;
            acc1[25] = m.q1;
        }
        if 26u < d4 {
            let m = mix_values(Pair(acc0[26], acc1[26]), c0, c1, w0, w1, textureLoad(tex_v, vec2<u32>(26u, my_key), layer));
            acc0[26] = m.q0;
            acc1[26] = m.q1;
        }
        if 27u < d4 {
            let m = mix_values(Pair(acc0[27], acc1[27]), c0, c1, w0, w1, textureLoad(tex_v, vec2<u32>(27u, my_key), layer));
            acc0[27] = m.q0;
            acc1[27] = m.q1;
        }
        if 28u < d4 {
            let m = mix_values(Pair(acc0[28], acc1[28]), c0, c1, w0, w1, textureLoad(tex_v, vec2<u32>(28u, my_key), layer));
            acc0[28] = m.q0;
            acc1[28] = m.q1;
        }
        if 29u < d4 {
            let m = mix_values(Pair(acc0[29], acc1[29]), c0, c1, w0, w1, textureLoad(tex_v, vec2<u32>(29u, my_key), layer));
            acc0[29] = m.q0;
            acc1[29] = m.q1;
        }
        if 30u < d4 {
            let m = mix_values(Pair(acc0[30], acc1[30]), c0, c1, w0, w1, textureLoad(tex_v, vec2<u32>(30u, my_key), layer));
            acc0[30] = m.q0;
            acc1[30] = m.q1;
        }
        if 31u < d4 {
            let m = mix_values(Pair(acc0[31], acc1[31]), c0, c1, w0, w1, textureLoad(tex_v, vec2<u32>(31u, my_key), layer));
            acc0[31] = m.q0;
            acc1[31] = m.q1;
        }
    }
    if i0 < p.q_len {
        for (var c = 0u; c < d4; c++) {
            finish_chunk(b, h, i0, c, acc0[c], run0.sum);
        }
        finish_stats(b, h, i0, run0.max, run0.sum);
    }
    if i1 < p.q_len {
        for (var c = 0u; c < d4; c++) {
            finish_chunk(b, h, i1, c, acc1[c], run1.sum);
        }
        finish_stats(b, h, i1, run1.max, run1.sum);
    }
}
