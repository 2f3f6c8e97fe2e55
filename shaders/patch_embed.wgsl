// Patchify for the ViT/CLIP patch embedding: normalises an HWC image batch per channel and
// lays every p×p patch out as one row, in the order of the conv weight [hidden, 3, p, p], so
// the projection is a matmul. Row 0 of each image is left zero: the class token's slot, which
// the matmul's broadcast residual (class token + positions) fills.
//
//   cols[b, 1 + py·gw + px, (c·p + i)·p + j] = (rescale · img[b, py·p + i, px·p + j, c] − mean[c]) / std[c]
//
// U8 reads bytes packed four to a u32 (what an 8-bit image upload is); otherwise f32 pixels.
// patchify_packed (one image) writes the rows packed for the texture matmuls instead, four
// columns per texel (pack.wgsl's layout), one invocation per texel.

alias T = f32;

struct Params {
    mean: vec4<f32>,
    inv_std: vec4<f32>,
    batch: u32,
    height: u32,
    width: u32,
    patch_size: u32,
    grid_w: u32,
    patches: u32,
    rescale: f32,
    row_pitch: u32,
}

override U8: bool = true;

@group(0) @binding(0) var<storage, read> pixels_u8: array<u32>;
@group(0) @binding(1) var<storage, read> pixels_f32: array<f32>;
@group(0) @binding(2) var<storage, read_write> cols: array<T>;
@group(0) @binding(3) var<uniform> p: Params;
@group(0) @binding(4) var cols_packed: texture_storage_2d_array<rgba32float, write>;

fn pixel(i: u32) -> f32 {
    if U8 {
        return f32((pixels_u8[i / 4u] >> (8u * (i % 4u))) & 0xffu);
    }
    return pixels_f32[i];
}

@compute @workgroup_size(256, 1, 1)
fn patchify(@builtin(global_invocation_id) gid: vec3<u32>) {
    let e = gid.y * p.row_pitch + gid.x;
    let width = 3u * p.patch_size * p.patch_size;
    let rows = p.patches + 1u;
    if e >= p.batch * rows * width {
        return;
    }
    cols[e] = T(value(e / (width * rows), (e / width) % rows, e % width));
}

@compute @workgroup_size(64, 4, 1)
fn patchify_packed(@builtin(global_invocation_id) gid: vec3<u32>) {
    let width = 3u * p.patch_size * p.patch_size;
    let row = gid.y;
    if 4u * gid.x >= width || row > p.patches {
        return;
    }
    var v = vec4<f32>();
    for (var j = 0u; j < 4u; j++) {
        let col = 4u * gid.x + j;
        if col < width {
            v[j] = f32(T(value(0u, row, col)));
        }
    }
    textureStore(cols_packed, vec2<u32>(gid.x, row), 0, v);
}

// Element (row, col) of image b's matrix.
fn value(b: u32, row: u32, col: u32) -> f32 {
    if row == 0u {
        return 0.0;
    }
    let j = col % p.patch_size;
    let i = (col / p.patch_size) % p.patch_size;
    let c = col / (p.patch_size * p.patch_size);
    let px = (row - 1u) % p.grid_w;
    let py = (row - 1u) / p.grid_w;
    let y = py * p.patch_size + i;
    let x = px * p.patch_size + j;
    let v = pixel(((b * p.height + y) * p.width + x) * 3u + c);
    return (p.rescale * v - p.mean[c]) * p.inv_std[c];
}
