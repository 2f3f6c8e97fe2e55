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

alias T = f32;

struct Params {
    q_stride: vec4<u32>,
    k_stride: vec4<u32>,
    v_stride: vec4<u32>,
    bias_stride: vec4<u32>,
    heads: u32,
    q_len: u32,
    k_len: u32,
    scale: f32,
    key_start: u32,
    key_stop: u32,
    _pad0: u32,
    _pad1: u32,
}

override HEAD_DIM: u32 = 64u;
override CAUSAL: bool = false;
override HAS_KEY_LEN: bool = false;
override HAS_BIAS: bool = false;
override FIRST: bool = true;
override LAST: bool = true;

@group(0) @binding(0) var<storage, read> q: array<T>;
@group(0) @binding(1) var<storage, read> k: array<T>;
@group(0) @binding(2) var<storage, read> v: array<T>;
@group(0) @binding(3) var<storage, read> bias: array<T>;
@group(0) @binding(4) var<storage, read> key_len: array<u32>;
@group(0) @binding(5) var<storage, read_write> out: array<T>;
@group(0) @binding(6) var<storage, read_write> state: array<vec4<f32>>;
@group(0) @binding(7) var<uniform> p: Params;

const QUERIES: u32 = 64u;
const KEYS: u32 = 16u;
// 16 keys × up to 32 vec4 of K and of V: 16 KiB, WebGPU's default workgroup storage.
var<workgroup> tile_k: array<vec4<f32>, 512>;
var<workgroup> tile_v: array<vec4<f32>, 512>;

fn at(stride: vec4<u32>, b: u32, h: u32, s: u32) -> u32 {
    return stride.w + b * stride.x + h * stride.y + s * stride.z;
}

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
    var visible = p.k_len;
    if HAS_KEY_LEN {
        visible = min(key_len[b], p.k_len);
    }
    // Keys any query of this workgroup may see (uniform across the workgroup).
    var key_end = min(visible, p.key_stop);
    if CAUSAL {
        let last_query = min(wid.x * QUERIES + QUERIES, p.q_len);
        key_end = min(key_end, (last_query + p.k_len) - min(p.q_len, last_query + p.k_len));
    }
    var qv: array<vec4<f32>, 32>;
    var acc: array<vec4<f32>, 32>;
    let q_base = at(p.q_stride, b, h, qi);
    let s_base = ((b * p.q_len + qi) * p.heads + h) * (d4 + 1u);
    for (var c = 0u; c < d4; c++) {
        let e = q_base + 4u * c;
        qv[c] = vec4<f32>(f32(q[e]), f32(q[e + 1u]), f32(q[e + 2u]), f32(q[e + 3u])) * p.scale;
    }
    var run_max = -1.0e30;
    var run_sum = 0.0;
    if !FIRST {
        for (var c = 0u; c < d4; c++) {
            acc[c] = state[s_base + c];
        }
        run_max = state[s_base + d4].x;
        run_sum = state[s_base + d4].y;
    }
    var scores: array<f32, KEYS>;
    for (var t0 = p.key_start; t0 < key_end; t0 += KEYS) {
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
            var ok = j < key_end;
            if CAUSAL {
                ok = ok && j + p.q_len <= qi + p.k_len;
            }
            var s = -1.0e30;
            if ok {
                var dot_qk = 0.0;
                for (var c = 0u; c < d4; c++) {
                    dot_qk += dot(qv[c], tile_k[jj * d4 + c]);
                }
                if HAS_BIAS {
                    dot_qk += f32(bias[at(p.bias_stride, b, h, qi) + j]);
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
    if !LAST {
        for (var c = 0u; c < d4; c++) {
            state[s_base + c] = acc[c];
        }
        state[s_base + d4] = vec4<f32>(run_max, run_sum, 0.0, 0.0);
        return;
    }
    var inv = 0.0;
    if run_sum > 0.0 {
        inv = 1.0 / run_sum;
    }
    let o_base = ((b * p.q_len + i) * p.heads + h) * HEAD_DIM;
    for (var c = 0u; c < d4; c++) {
        let o = acc[c] * inv;
        out[o_base + 4u * c] = T(o.x);
        out[o_base + 4u * c + 1u] = T(o.y);
        out[o_base + 4u * c + 2u] = T(o.z);
        out[o_base + 4u * c + 3u] = T(o.w);
    }
}
