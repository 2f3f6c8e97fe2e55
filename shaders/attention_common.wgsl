// What the attention kernels share: element type, params, override constants, the bindings
// besides K and V, and the online-softmax bookkeeping. Compiled in front of attention.wgsl and
// attention_subgroup.wgsl (see kernels/src/lib.rs, modules).

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
@group(0) @binding(3) var<storage, read> bias: array<T>;
@group(0) @binding(4) var<storage, read> key_len: array<u32>;
@group(0) @binding(5) var<storage, read_write> out: array<T>;
@group(0) @binding(6) var<storage, read_write> state: array<vec4<f32>>;
@group(0) @binding(7) var<uniform> p: Params;

fn at(stride: vec4<u32>, b: u32, h: u32, s: u32) -> u32 {
    return stride.w + b * stride.x + h * stride.y + s * stride.z;
}

// The last key any query of the block [first_query, first_query + count) may see, plus one,
// within this dispatch's keys (uniform across the block).
fn key_end(b: u32, first_query: u32, count: u32) -> u32 {
    var end = min(p.k_len, p.key_stop);
    if HAS_KEY_LEN {
        end = min(end, key_len[b]);
    }
    if CAUSAL {
        let last_query = min(first_query + count, p.q_len);
        end = min(end, (last_query + p.k_len) - min(p.q_len, last_query + p.k_len));
    }
    return end;
}

// Whether query qi may see key j (j below the block's key_end).
fn visible(qi: u32, j: u32, end: u32) -> bool {
    var ok = j < end;
    if CAUSAL {
        ok = ok && j + p.q_len <= qi + p.k_len;
    }
    return ok;
}

fn state_base(b: u32, h: u32, qi: u32) -> u32 {
    return ((b * p.q_len + qi) * p.heads + h) * (HEAD_DIM / 4u + 1u);
}

fn load_q(b: u32, h: u32, qi: u32, c: u32) -> vec4<f32> {
    let e = at(p.q_stride, b, h, qi) + 4u * c;
    return vec4<f32>(f32(q[e]), f32(q[e + 1u]), f32(q[e + 2u]), f32(q[e + 3u])) * p.scale;
}

// Loads query qi (scaled) into qv and the running output into acc; returns the running
// (max, sum): empty on the first dispatch of a key range, else what the previous one left.
fn start_query(b: u32, h: u32, qi: u32, qv: ptr<function, array<vec4<f32>, 32>>,
    acc: ptr<function, array<vec4<f32>, 32>>) -> vec2<f32> {
    let d4 = HEAD_DIM / 4u;
    for (var c = 0u; c < d4; c++) {
        (*qv)[c] = load_q(b, h, qi, c);
    }
    if FIRST {
        return vec2<f32>(-1.0e30, 0.0);
    }
    let s = state_base(b, h, qi);
    for (var c = 0u; c < d4; c++) {
        (*acc)[c] = state[s + c];
    }
    return state[s + d4].xy;
}

fn bias_at(b: u32, h: u32, qi: u32, j: u32) -> f32 {
    return f32(bias[at(p.bias_stride, b, h, qi) + j]);
}

// Writes chunk c of query i's result: the normalised output when LAST, else the state.
fn finish_chunk(b: u32, h: u32, i: u32, c: u32, acc: vec4<f32>, run_sum: f32) {
    if !LAST {
        state[state_base(b, h, i) + c] = acc;
        return;
    }
    var inv = 0.0;
    if run_sum > 0.0 {
        inv = 1.0 / run_sum;
    }
    let o = acc * inv;
    let e = ((b * p.q_len + i) * p.heads + h) * HEAD_DIM + 4u * c;
    out[e] = T(o.x);
    out[e + 1u] = T(o.y);
    out[e + 2u] = T(o.z);
    out[e + 3u] = T(o.w);
}

fn finish_stats(b: u32, h: u32, i: u32, run_max: f32, run_sum: f32) {
    if !LAST {
        state[state_base(b, h, i) + HEAD_DIM / 4u] = vec4<f32>(run_max, run_sum, 0.0, 0.0);
    }
}
