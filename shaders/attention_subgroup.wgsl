// Fused attention for CPU drivers with subgroups of 8 (lavapipe): the same result as
// attention.wgsl, with K and V read from rgba32float array textures (layer = batch·heads +
// head, row = key, four dims per texel; packed by pack.wgsl) instead of storage buffers and
// workgroup memory, which CPU drivers read lane by lane.
//
// Each invocation owns one query; the 8 invocations of a subgroup walk the keys 8 at a time:
// invocation l reads the texel of key t0 + l and the subgroup broadcasts it, so one texture
// read (a vector gather) feeds 8 queries. No workgroup memory, no barriers. The online softmax,
// the masks and the FIRST/LAST chunking are attention.wgsl's.
//
// Compiled after attention_common.wgsl (T, Params, overrides, shared bindings and helpers).

@group(0) @binding(8) var tex_k: texture_storage_2d_array<rgba32float, read>;
@group(0) @binding(9) var tex_v: texture_storage_2d_array<rgba32float, read>;

fn dot8(x: vec4<f32>, kt: vec4<f32>) -> array<f32, 8> {
    return array<f32, 8>(
        dot(x, subgroupBroadcast(kt, 0u)),
        dot(x, subgroupBroadcast(kt, 1u)),
        dot(x, subgroupBroadcast(kt, 2u)),
        dot(x, subgroupBroadcast(kt, 3u)),
        dot(x, subgroupBroadcast(kt, 4u)),
        dot(x, subgroupBroadcast(kt, 5u)),
        dot(x, subgroupBroadcast(kt, 6u)),
        dot(x, subgroupBroadcast(kt, 7u)),
    );
}

// s[j] += q · (key j of the subgroup's tile), four dims at a time.
fn add_scores(s: ptr<function, array<f32, 8>>, q: vec4<f32>, kt: vec4<f32>) {
    let part = dot8(q, kt);
    (*s)[0] += part[0];
    (*s)[1] += part[1];
    (*s)[2] += part[2];
    (*s)[3] += part[3];
    (*s)[4] += part[4];
    (*s)[5] += part[5];
    (*s)[6] += part[6];
    (*s)[7] += part[7];
}

// acc·correction + Σ_j w[j]·(value j of the tile), four dims at a time.
fn mix_values(acc: vec4<f32>, correction: f32, w: array<f32, 8>, vt: vec4<f32>) -> vec4<f32> {
    return acc * correction
        + w[0] * subgroupBroadcast(vt, 0u)
        + w[1] * subgroupBroadcast(vt, 1u)
        + w[2] * subgroupBroadcast(vt, 2u)
        + w[3] * subgroupBroadcast(vt, 3u)
        + w[4] * subgroupBroadcast(vt, 4u)
        + w[5] * subgroupBroadcast(vt, 5u)
        + w[6] * subgroupBroadcast(vt, 6u)
        + w[7] * subgroupBroadcast(vt, 7u);
}

@compute @workgroup_size(64, 1, 1)
fn attention_subgroup(@builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid3: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32) {
    let lid = lid3.x;
    let b = wid.z;
    let h = wid.y;
    let i = wid.x * 64u + lid;
    let d4 = HEAD_DIM / 4u;
    // Out-of-range queries still take part in every broadcast.
    let qi = min(i, p.q_len - 1u);
    // Uniform across the subgroup, whose 8 queries start at lid - lane.
    let end = key_end(b, wid.x * 64u + lid - lane, 8u);
    let layer = b * p.heads + h;
    var qv: array<vec4<f32>, 32>;
    var acc: array<vec4<f32>, 32>;
    let stats = start_query(b, h, qi, &qv, &acc);
    var run_max = stats.x;
    var run_sum = stats.y;
    for (var t0 = p.key_start; t0 < end; t0 += 8u) {
        let my_key = min(t0 + lane, p.k_len - 1u);
        var s = array<f32, 8>();
        // Unrolled with constant indices (llvmpipe does not unroll these loops itself, and a
        // variable index into qv or acc is a per-lane gather or scatter there); steps past
        // HEAD_DIM / 4 are removed as dead code once the override is known.
        if 0u < d4 { add_scores(&s, qv[0], textureLoad(tex_k, vec2<u32>(0u, my_key), layer)); }
        if 1u < d4 { add_scores(&s, qv[1], textureLoad(tex_k, vec2<u32>(1u, my_key), layer)); }
        if 2u < d4 { add_scores(&s, qv[2], textureLoad(tex_k, vec2<u32>(2u, my_key), layer)); }
        if 3u < d4 { add_scores(&s, qv[3], textureLoad(tex_k, vec2<u32>(3u, my_key), layer)); }
        if 4u < d4 { add_scores(&s, qv[4], textureLoad(tex_k, vec2<u32>(4u, my_key), layer)); }
        if 5u < d4 { add_scores(&s, qv[5], textureLoad(tex_k, vec2<u32>(5u, my_key), layer)); }
        if 6u < d4 { add_scores(&s, qv[6], textureLoad(tex_k, vec2<u32>(6u, my_key), layer)); }
        if 7u < d4 { add_scores(&s, qv[7], textureLoad(tex_k, vec2<u32>(7u, my_key), layer)); }
        if 8u < d4 { add_scores(&s, qv[8], textureLoad(tex_k, vec2<u32>(8u, my_key), layer)); }
        if 9u < d4 { add_scores(&s, qv[9], textureLoad(tex_k, vec2<u32>(9u, my_key), layer)); }
        if 10u < d4 { add_scores(&s, qv[10], textureLoad(tex_k, vec2<u32>(10u, my_key), layer)); }
        if 11u < d4 { add_scores(&s, qv[11], textureLoad(tex_k, vec2<u32>(11u, my_key), layer)); }
        if 12u < d4 { add_scores(&s, qv[12], textureLoad(tex_k, vec2<u32>(12u, my_key), layer)); }
        if 13u < d4 { add_scores(&s, qv[13], textureLoad(tex_k, vec2<u32>(13u, my_key), layer)); }
        if 14u < d4 { add_scores(&s, qv[14], textureLoad(tex_k, vec2<u32>(14u, my_key), layer)); }
        if 15u < d4 { add_scores(&s, qv[15], textureLoad(tex_k, vec2<u32>(15u, my_key), layer)); }
        if 16u < d4 { add_scores(&s, qv[16], textureLoad(tex_k, vec2<u32>(16u, my_key), layer)); }
        if 17u < d4 { add_scores(&s, qv[17], textureLoad(tex_k, vec2<u32>(17u, my_key), layer)); }
        if 18u < d4 { add_scores(&s, qv[18], textureLoad(tex_k, vec2<u32>(18u, my_key), layer)); }
        if 19u < d4 { add_scores(&s, qv[19], textureLoad(tex_k, vec2<u32>(19u, my_key), layer)); }
        if 20u < d4 { add_scores(&s, qv[20], textureLoad(tex_k, vec2<u32>(20u, my_key), layer)); }
        if 21u < d4 { add_scores(&s, qv[21], textureLoad(tex_k, vec2<u32>(21u, my_key), layer)); }
        if 22u < d4 { add_scores(&s, qv[22], textureLoad(tex_k, vec2<u32>(22u, my_key), layer)); }
        if 23u < d4 { add_scores(&s, qv[23], textureLoad(tex_k, vec2<u32>(23u, my_key), layer)); }
        if 24u < d4 { add_scores(&s, qv[24], textureLoad(tex_k, vec2<u32>(24u, my_key), layer)); }
        if 25u < d4 { add_scores(&s, qv[25], textureLoad(tex_k, vec2<u32>(25u, my_key), layer)); }
        if 26u < d4 { add_scores(&s, qv[26], textureLoad(tex_k, vec2<u32>(26u, my_key), layer)); }
        if 27u < d4 { add_scores(&s, qv[27], textureLoad(tex_k, vec2<u32>(27u, my_key), layer)); }
        if 28u < d4 { add_scores(&s, qv[28], textureLoad(tex_k, vec2<u32>(28u, my_key), layer)); }
        if 29u < d4 { add_scores(&s, qv[29], textureLoad(tex_k, vec2<u32>(29u, my_key), layer)); }
        if 30u < d4 { add_scores(&s, qv[30], textureLoad(tex_k, vec2<u32>(30u, my_key), layer)); }
        if 31u < d4 { add_scores(&s, qv[31], textureLoad(tex_k, vec2<u32>(31u, my_key), layer)); }
        var tile_max = -1.0e30;
        if visible(qi, t0 + 0u, end) {
            if HAS_BIAS {
                s[0] += bias_at(b, h, qi, t0 + 0u);
            }
            tile_max = max(tile_max, s[0]);
        } else {
            s[0] = -1.0e30;
        }
        if visible(qi, t0 + 1u, end) {
            if HAS_BIAS {
                s[1] += bias_at(b, h, qi, t0 + 1u);
            }
            tile_max = max(tile_max, s[1]);
        } else {
            s[1] = -1.0e30;
        }
        if visible(qi, t0 + 2u, end) {
            if HAS_BIAS {
                s[2] += bias_at(b, h, qi, t0 + 2u);
            }
            tile_max = max(tile_max, s[2]);
        } else {
            s[2] = -1.0e30;
        }
        if visible(qi, t0 + 3u, end) {
            if HAS_BIAS {
                s[3] += bias_at(b, h, qi, t0 + 3u);
            }
            tile_max = max(tile_max, s[3]);
        } else {
            s[3] = -1.0e30;
        }
        if visible(qi, t0 + 4u, end) {
            if HAS_BIAS {
                s[4] += bias_at(b, h, qi, t0 + 4u);
            }
            tile_max = max(tile_max, s[4]);
        } else {
            s[4] = -1.0e30;
        }
        if visible(qi, t0 + 5u, end) {
            if HAS_BIAS {
                s[5] += bias_at(b, h, qi, t0 + 5u);
            }
            tile_max = max(tile_max, s[5]);
        } else {
            s[5] = -1.0e30;
        }
        if visible(qi, t0 + 6u, end) {
            if HAS_BIAS {
                s[6] += bias_at(b, h, qi, t0 + 6u);
            }
            tile_max = max(tile_max, s[6]);
        } else {
            s[6] = -1.0e30;
        }
        if visible(qi, t0 + 7u, end) {
            if HAS_BIAS {
                s[7] += bias_at(b, h, qi, t0 + 7u);
            }
            tile_max = max(tile_max, s[7]);
        } else {
            s[7] = -1.0e30;
        }
        let new_max = max(run_max, tile_max);
        let correction = exp(run_max - new_max);
        var w = array<f32, 8>();
        w[0] = select(0.0, exp(s[0] - new_max), s[0] > -1.0e29);
        w[1] = select(0.0, exp(s[1] - new_max), s[1] > -1.0e29);
        w[2] = select(0.0, exp(s[2] - new_max), s[2] > -1.0e29);
        w[3] = select(0.0, exp(s[3] - new_max), s[3] > -1.0e29);
        w[4] = select(0.0, exp(s[4] - new_max), s[4] > -1.0e29);
        w[5] = select(0.0, exp(s[5] - new_max), s[5] > -1.0e29);
        w[6] = select(0.0, exp(s[6] - new_max), s[6] > -1.0e29);
        w[7] = select(0.0, exp(s[7] - new_max), s[7] > -1.0e29);
        run_sum = run_sum * correction + w[0] + w[1] + w[2] + w[3] + w[4] + w[5] + w[6] + w[7];
        run_max = new_max;
        if 0u < d4 { acc[0] = mix_values(acc[0], correction, w, textureLoad(tex_v, vec2<u32>(0u, my_key), layer)); }
        if 1u < d4 { acc[1] = mix_values(acc[1], correction, w, textureLoad(tex_v, vec2<u32>(1u, my_key), layer)); }
        if 2u < d4 { acc[2] = mix_values(acc[2], correction, w, textureLoad(tex_v, vec2<u32>(2u, my_key), layer)); }
        if 3u < d4 { acc[3] = mix_values(acc[3], correction, w, textureLoad(tex_v, vec2<u32>(3u, my_key), layer)); }
        if 4u < d4 { acc[4] = mix_values(acc[4], correction, w, textureLoad(tex_v, vec2<u32>(4u, my_key), layer)); }
        if 5u < d4 { acc[5] = mix_values(acc[5], correction, w, textureLoad(tex_v, vec2<u32>(5u, my_key), layer)); }
        if 6u < d4 { acc[6] = mix_values(acc[6], correction, w, textureLoad(tex_v, vec2<u32>(6u, my_key), layer)); }
        if 7u < d4 { acc[7] = mix_values(acc[7], correction, w, textureLoad(tex_v, vec2<u32>(7u, my_key), layer)); }
        if 8u < d4 { acc[8] = mix_values(acc[8], correction, w, textureLoad(tex_v, vec2<u32>(8u, my_key), layer)); }
        if 9u < d4 { acc[9] = mix_values(acc[9], correction, w, textureLoad(tex_v, vec2<u32>(9u, my_key), layer)); }
        if 10u < d4 { acc[10] = mix_values(acc[10], correction, w, textureLoad(tex_v, vec2<u32>(10u, my_key), layer)); }
        if 11u < d4 { acc[11] = mix_values(acc[11], correction, w, textureLoad(tex_v, vec2<u32>(11u, my_key), layer)); }
        if 12u < d4 { acc[12] = mix_values(acc[12], correction, w, textureLoad(tex_v, vec2<u32>(12u, my_key), layer)); }
        if 13u < d4 { acc[13] = mix_values(acc[13], correction, w, textureLoad(tex_v, vec2<u32>(13u, my_key), layer)); }
        if 14u < d4 { acc[14] = mix_values(acc[14], correction, w, textureLoad(tex_v, vec2<u32>(14u, my_key), layer)); }
        if 15u < d4 { acc[15] = mix_values(acc[15], correction, w, textureLoad(tex_v, vec2<u32>(15u, my_key), layer)); }
        if 16u < d4 { acc[16] = mix_values(acc[16], correction, w, textureLoad(tex_v, vec2<u32>(16u, my_key), layer)); }
        if 17u < d4 { acc[17] = mix_values(acc[17], correction, w, textureLoad(tex_v, vec2<u32>(17u, my_key), layer)); }
        if 18u < d4 { acc[18] = mix_values(acc[18], correction, w, textureLoad(tex_v, vec2<u32>(18u, my_key), layer)); }
        if 19u < d4 { acc[19] = mix_values(acc[19], correction, w, textureLoad(tex_v, vec2<u32>(19u, my_key), layer)); }
        if 20u < d4 { acc[20] = mix_values(acc[20], correction, w, textureLoad(tex_v, vec2<u32>(20u, my_key), layer)); }
        if 21u < d4 { acc[21] = mix_values(acc[21], correction, w, textureLoad(tex_v, vec2<u32>(21u, my_key), layer)); }
        if 22u < d4 { acc[22] = mix_values(acc[22], correction, w, textureLoad(tex_v, vec2<u32>(22u, my_key), layer)); }
        if 23u < d4 { acc[23] = mix_values(acc[23], correction, w, textureLoad(tex_v, vec2<u32>(23u, my_key), layer)); }
        if 24u < d4 { acc[24] = mix_values(acc[24], correction, w, textureLoad(tex_v, vec2<u32>(24u, my_key), layer)); }
        if 25u < d4 { acc[25] = mix_values(acc[25], correction, w, textureLoad(tex_v, vec2<u32>(25u, my_key), layer)); }
        if 26u < d4 { acc[26] = mix_values(acc[26], correction, w, textureLoad(tex_v, vec2<u32>(26u, my_key), layer)); }
        if 27u < d4 { acc[27] = mix_values(acc[27], correction, w, textureLoad(tex_v, vec2<u32>(27u, my_key), layer)); }
        if 28u < d4 { acc[28] = mix_values(acc[28], correction, w, textureLoad(tex_v, vec2<u32>(28u, my_key), layer)); }
        if 29u < d4 { acc[29] = mix_values(acc[29], correction, w, textureLoad(tex_v, vec2<u32>(29u, my_key), layer)); }
        if 30u < d4 { acc[30] = mix_values(acc[30], correction, w, textureLoad(tex_v, vec2<u32>(30u, my_key), layer)); }
        if 31u < d4 { acc[31] = mix_values(acc[31], correction, w, textureLoad(tex_v, vec2<u32>(31u, my_key), layer)); }
    }
    if i >= p.q_len {
        return;
    }
    for (var c = 0u; c < d4; c++) {
        finish_chunk(b, h, i, c, acc[c], run_sum);
    }
    finish_stats(b, h, i, run_max, run_sum);
}
