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
        for (var c = 0u; c < d4; c++) {
            let part = dot8(qv[c], textureLoad(tex_k, vec2<u32>(c, my_key), layer));
            s[0] += part[0];
            s[1] += part[1];
            s[2] += part[2];
            s[3] += part[3];
            s[4] += part[4];
            s[5] += part[5];
            s[6] += part[6];
            s[7] += part[7];
        }
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
        for (var c = 0u; c < d4; c++) {
            let vt = textureLoad(tex_v, vec2<u32>(c, my_key), layer);
            acc[c] = acc[c] * correction
                + w[0] * subgroupBroadcast(vt, 0u)
                + w[1] * subgroupBroadcast(vt, 1u)
                + w[2] * subgroupBroadcast(vt, 2u)
                + w[3] * subgroupBroadcast(vt, 3u)
                + w[4] * subgroupBroadcast(vt, 4u)
                + w[5] * subgroupBroadcast(vt, 5u)
                + w[6] * subgroupBroadcast(vt, 6u)
                + w[7] * subgroupBroadcast(vt, 7u);
        }
    }
    if i >= p.q_len {
        return;
    }
    for (var c = 0u; c < d4; c++) {
        finish_chunk(b, h, i, c, acc[c], run_sum);
    }
    finish_stats(b, h, i, run_max, run_sum);
}
