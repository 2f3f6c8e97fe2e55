// im2col for grouped 2-D convolution (1-D is H = 1): gathers every receptive field of a
// [N, C, H, W] input into the rows of a matrix, so the convolution is a matmul against the
// weight [C_out, C/groups, kh, kw] read as [C_out, C/groups·kh·kw] (PyTorch's layout):
//
//   cols[g, (n·H_out + y)·W_out + x, (c·kh + i)·kw + j]
//     = input[n, g·C/groups + c, y·stride_h − pad_h + i, x·stride_w − pad_w + j]   (0 outside)
//
// A band of rows (`row0`, `band_rows`) makes the matrix of those rows only, so a large
// convolution runs in bands that each fit a binding. One invocation per element of cols, 2-D
// grid so large inputs fit the dispatch limits.
// im2col_packed (one group) writes the matrix packed for the texture matmuls instead, four
// columns per texel, zero past the last (pack.wgsl's layout), one invocation per texel;
// im2col_packed_tex the same reading the input from a texture.

alias T = f32;

struct Params {
    n: u32,
    channels: u32,
    height: u32,
    width: u32,
    groups: u32,
    kh: u32,
    kw: u32,
    out_h: u32,
    out_w: u32,
    stride_h: u32,
    stride_w: u32,
    pad_h: u32,
    pad_w: u32,
    total: u32,
    row_pitch: u32,
    row0: u32,
    band_rows: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> src: array<T>;
@group(0) @binding(1) var<storage, read_write> cols: array<T>;
@group(0) @binding(2) var<uniform> p: Params;
@group(0) @binding(3) var cols_packed: texture_storage_2d_array<rgba32float, write>;
// The input packed as [N·C, H·W] rows (im2col_packed_tex): lavapipe gathers from an image with
// vector instructions, from a storage buffer lane by lane.
@group(0) @binding(4) var src_tex: texture_storage_2d<rgba32float, read>;

@compute @workgroup_size(256, 1, 1)
fn im2col(@builtin(global_invocation_id) gid: vec3<u32>) {
    let e = gid.y * p.row_pitch + gid.x;
    if e >= p.total {
        return;
    }
    let width = p.channels / p.groups * p.kh * p.kw;
    let rows = p.band_rows;
    cols[e] = field(e / (width * rows), p.row0 + (e / width) % rows, e % width);
}

@compute @workgroup_size(64, 4, 1)
fn im2col_packed(@builtin(global_invocation_id) gid: vec3<u32>) {
    packed_texel(gid, false);
}

@compute @workgroup_size(64, 4, 1)
fn im2col_packed_tex(@builtin(global_invocation_id) gid: vec3<u32>) {
    packed_texel(gid, true);
}

// Element `i` (y·W + x) of plane `plane` (n·C + c) of the input.
fn input(plane: u32, i: u32, from_tex: bool) -> f32 {
    if from_tex {
        return textureLoad(src_tex, vec2<u32>(i / 4u, plane))[i % 4u];
    }
    return f32(src[plane * p.height * p.width + i]);
}

fn packed_texel(gid: vec3<u32>, from_tex: bool) {
    let width = p.channels * p.kh * p.kw;
    let col0 = 4u * gid.y;
    if col0 >= width || gid.x >= p.band_rows {
        return;
    }
    // The row's pixel and the first column's tap, once; the next columns step the tap.
    let row = p.row0 + gid.x;
    let x = row % p.out_w;
    let n = row / (p.out_w * p.out_h);
    let y = (row / p.out_w) % p.out_h;
    var j = col0 % p.kw;
    var i = (col0 / p.kw) % p.kh;
    var c = col0 / (p.kw * p.kh);
    var v = vec4<f32>();
    for (var e = 0u; e < 4u; e++) {
        let iy = y * p.stride_h + i;
        let ix = x * p.stride_w + j;
        if col0 + e < width && iy >= p.pad_h && ix >= p.pad_w && iy - p.pad_h < p.height
            && ix - p.pad_w < p.width {
            v[e] = input(n * p.channels + c, (iy - p.pad_h) * p.width + ix - p.pad_w, from_tex);
        }
        j += 1u;
        if j == p.kw {
            j = 0u;
            i += 1u;
            if i == p.kh {
                i = 0u;
                c += 1u;
            }
        }
    }
    textureStore(cols_packed, vec2<u32>(gid.y, gid.x), 0, v);
}

// Element (row, col) of group g's matrix.
fn field(g: u32, row: u32, col: u32) -> T {
    let cg = p.channels / p.groups;
    let j = col % p.kw;
    let i = (col / p.kw) % p.kh;
    let c = col / (p.kw * p.kh);
    let x = row % p.out_w;
    let y = (row / p.out_w) % p.out_h;
    let n = row / (p.out_w * p.out_h);
    // Signed arithmetic through an offset: iy = y·stride + i − pad.
    let iy = y * p.stride_h + i;
    let ix = x * p.stride_w + j;
    if iy >= p.pad_h && ix >= p.pad_w && iy - p.pad_h < p.height && ix - p.pad_w < p.width {
        let ch = g * cg + c;
        return src[((n * p.channels + ch) * p.height + iy - p.pad_h) * p.width + ix - p.pad_w];
    }
    return T(0.0);
}
