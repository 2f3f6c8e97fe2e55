// Fused scaled-dot-product attention in the FlashAttention-2 style:
//
//   out[b, i, h, :] = Σ_j softmax_j(scale · q_i·k_j + bias[b, h, i, j] + mask) · v_j
//
// A workgroup owns 64 queries of one (batch, head); K and V stream through workgroup memory
// in tiles of 16 keys, and each invocation keeps an f32 running max, sum and output for its
// query (online softmax), so the S_q × S_k score matrix never exists in memory.
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

@group(0) @binding(1) var<storage, read> k: array<T>;
@group(0) @binding(2) var<storage, read> v: array<T>;

const QUERIES: u32 = 64u;
const KEYS: u32 = 16u;
// 16 keys × up to 32 vec4 of K and of V: 16 KiB, WebGPU's default workgroup storage.
var<workgroup> tile_k: array<vec4<f32>, 512>;
var<workgroup> tile_v: array<vec4<f32>, 512>;

fn load_k(i: u32) -> vec4<f32> {
    return vec4<f32>(f32(k[i]), f32(k[i + 1u]), f32(k[i + 2u]), f32(k[i + 3u]));
}

fn load_v(i: u32) -> vec4<f32> {
    return vec4<f32>(f32(v[i]), f32(v[i + 1u]), f32(v[i + 2u]), f32(v[i + 3u]));
}

@compute @workgroup_size(64, 1, 1)
fn attention(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let lid = lid3.x;
    let b = wid.z;
    let h = wid.y;
    let i = wid.x * QUERIES + lid;
    let d4 = HEAD_DIM / 4u;
    // Out-of-range queries still take part in the tile loads and barriers.
    let qi = min(i, p.q_len - 1u);
    let end = key_end(b, wid.x * QUERIES, QUERIES);
    var qv: array<vec4<f32>, 32>;
    var acc: array<vec4<f32>, 32>;
    let stats = start_query(b, h, qi, &qv, &acc);
    var run_max = stats.x;
    var run_sum = stats.y;
    var scores: array<f32, KEYS>;
    for (var t0 = p.key_start; t0 < end; t0 += KEYS) {
        for (var e = lid; e < KEYS * d4; e += QUERIES) {
            let jj = e / d4;
            let c = e % d4;
            let j = min(t0 + jj, p.k_len - 1u);
            tile_k[e] = load_k(at(p.k_stride, b, h, j) + 4u * c);
            tile_v[e] = load_v(at(p.v_stride, b, h, j) + 4u * c);
        }
        workgroupBarrier();
        var tile_max = -1.0e30;
        for (var jj = 0u; jj < KEYS; jj++) {
            let j = t0 + jj;
            var s = -1.0e30;
            if visible(qi, j, end) {
                var dot_qk = 0.0;
                for (var c = 0u; c < d4; c++) {
                    dot_qk += dot(qv[c], tile_k[jj * d4 + c]);
                }
                if HAS_BIAS {
                    dot_qk += bias_at(b, h, qi, j);
                }
                s = dot_qk;
                tile_max = max(tile_max, s);
            }
            scores[jj] = s;
        }
        if tile_max > -1.0e29 {
            let new_max = max(run_max, tile_max);
            let correction = exp(run_max - new_max);
            run_sum *= correction;
            for (var c = 0u; c < d4; c++) {
                acc[c] *= correction;
            }
            for (var jj = 0u; jj < KEYS; jj++) {
                if scores[jj] > -1.0e29 {
                    let w = exp(scores[jj] - new_max);
                    run_sum += w;
                    for (var c = 0u; c < d4; c++) {
                        acc[c] += w * tile_v[jj * d4 + c];
                    }
                }
            }
            run_max = new_max;
        }
        workgroupBarrier();
    }
    if i >= p.q_len {
        return;
    }
    for (var c = 0u; c < d4; c++) {
        finish_chunk(b, h, i, c, acc[c], run_sum);
    }
    finish_stats(b, h, i, run_max, run_sum);
}
