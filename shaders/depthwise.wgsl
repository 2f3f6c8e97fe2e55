// Depthwise 2-D convolution (groups = channels, one filter per channel), direct: each output
// element sums its kh × kw taps of its own channel. The input is any strided 4-D view
// [N, C, H, W] (a channels-last tensor seen as NCHW needs no copy); the output is NCHW or
// channels-last [N, H_out·W_out, C]. Bias and activation fused. One invocation per output.

alias T = f32;

struct Params {
    n: u32,
    channels: u32,
    height: u32,
    width: u32,
    kh: u32,
    kw: u32,
    out_h: u32,
    out_w: u32,
    stride_h: u32,
    stride_w: u32,
    pad_h: u32,
    pad_w: u32,
    s_n: u32,
    s_c: u32,
    s_y: u32,
    s_x: u32,
    offset: u32,
    has_bias: u32,
    channels_last: u32,
    total: u32,
    row_pitch: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> src: array<T>;
@group(0) @binding(1) var<storage, read> weight: array<T>;
@group(0) @binding(2) var<storage, read> bias: array<T>;
@group(0) @binding(3) var<storage, read_write> out: array<T>;
@group(0) @binding(4) var<uniform> p: Params;

@compute @workgroup_size(256, 1, 1)
fn depthwise(@builtin(global_invocation_id) gid: vec3<u32>) {
    let e = gid.y * p.row_pitch + gid.x;
    if e >= p.total {
        return;
    }
    var c: u32;
    var x: u32;
    var y: u32;
    var n: u32;
    if p.channels_last == 1u {
        c = e % p.channels;
        let px = e / p.channels;
        x = px % p.out_w;
        y = (px / p.out_w) % p.out_h;
        n = px / (p.out_w * p.out_h);
    } else {
        x = e % p.out_w;
        y = (e / p.out_w) % p.out_h;
        c = (e / (p.out_w * p.out_h)) % p.channels;
        n = e / (p.out_w * p.out_h * p.channels);
    }
    let base = p.offset + n * p.s_n + c * p.s_c;
    var acc = 0.0;
    for (var i = 0u; i < p.kh; i++) {
        let iy = y * p.stride_h + i;
        if iy < p.pad_h || iy - p.pad_h >= p.height {
            continue;
        }
        for (var j = 0u; j < p.kw; j++) {
            let ix = x * p.stride_w + j;
            if ix < p.pad_w || ix - p.pad_w >= p.width {
                continue;
            }
            acc += f32(weight[(c * p.kh + i) * p.kw + j])
                * f32(src[base + (iy - p.pad_h) * p.s_y + (ix - p.pad_w) * p.s_x]);
        }
    }
    if p.has_bias == 1u {
        acc += f32(bias[c]);
    }
    out[e] = T(activate(acc));
}
