// The STFT front end of Whisper's log-mel, around a matmul that does the DFT:
//
//   frames:  frame[b, t, i] = hann(i) · x[b, reflect(t·hop + i − n_fft/2)]
//            (centred frames, reflect padding of n_fft/2, periodic Hann window)
//   power:   power[r, k] = spec[r, k]² + spec[r, bins + k]²
//            (spec = frames · [cos | −sin]ᵀ, bins = n_fft/2 + 1)
//
// One invocation per output element on a 2-D grid.

alias T = f32;

struct Params {
    clips: u32,
    samples: u32,
    frames: u32,
    n_fft: u32,
    hop: u32,
    bins: u32,
    total: u32,
    row_pitch: u32,
}

@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> dst: array<T>;
@group(0) @binding(2) var<uniform> p: Params;

const TAU: f32 = 6.283185307179586;

@compute @workgroup_size(256, 1, 1)
fn frames(@builtin(global_invocation_id) gid: vec3<u32>) {
    let e = gid.y * p.row_pitch + gid.x;
    if e >= p.total {
        return;
    }
    let i = e % p.n_fft;
    let t = (e / p.n_fft) % p.frames;
    let b = e / (p.n_fft * p.frames);
    // Signed position in the padded signal, reflected at both ends (no edge repeat).
    var s = i32(t * p.hop + i) - i32(p.n_fft / 2u);
    let n = i32(p.samples);
    if s < 0 {
        s = -s;
    }
    if s >= n {
        s = 2 * (n - 1) - s;
    }
    s = clamp(s, 0, n - 1);
    let window = 0.5 - 0.5 * cos(TAU * f32(i) / f32(p.n_fft));
    dst[e] = T(window * src[b * p.samples + u32(s)]);
}

@compute @workgroup_size(256, 1, 1)
fn power(@builtin(global_invocation_id) gid: vec3<u32>) {
    let e = gid.y * p.row_pitch + gid.x;
    if e >= p.total {
        return;
    }
    let k = e % p.bins;
    let r = e / p.bins;
    // Here src holds the DFT rows [re(0..bins) | im(0..bins)].
    let re = src[r * 2u * p.bins + k];
    let im = src[r * 2u * p.bins + p.bins + k];
    dst[e] = T(re * re + im * im);
}
