// Packs a strided 3-D view of a buffer into an rgba32float array texture (rgba16float for
// f16, see specialize), four consecutive columns per texel, zero-padded past the last column:
//
//   texel(x, r, z) = (src[offset + (z / layer_div)·outer_stride + (z % layer_div)·inner_stride
//                         + r·row_stride + (4x + j)·col_stride] for j in 0..4)
//
// (A layer index z = b·heads + h splits into two strides, so [B, S, H, D] views pack too.)
// With quads set, rows go in groups of four interleaved texel by texel: texel(x, r, z) is
// stored at (4x + r % 4, r / 4), the layout the texture matmuls read op(B) in.
// Texture reads are vectorised gathers on CPU drivers such as lavapipe, where storage-buffer
// reads go lane by lane; the texture matmuls and attention read their operands through this.

alias T = f32;

struct Params {
    rows: u32,
    cols: u32,
    row_stride: u32,
    col_stride: u32,
    offset: u32,
    width: u32,
    layer_div: u32,
    outer_stride: u32,
    inner_stride: u32,
    quads: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> src: array<T>;
@group(0) @binding(1) var dst: texture_storage_2d_array<rgba32float, write>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(64, 4, 1)
fn pack_rows(@builtin(global_invocation_id) gid: vec3<u32>) {
    let x = gid.x;
    let r = gid.y;
    let z = gid.z;
    if x >= p.width || r >= p.rows {
        return;
    }
    var v = vec4<f32>();
    let base = p.offset + (z / p.layer_div) * p.outer_stride + (z % p.layer_div) * p.inner_stride
        + r * p.row_stride;
    for (var j = 0u; j < 4u; j++) {
        let col = 4u * x + j;
        if col < p.cols {
            v[j] = f32(src[base + col * p.col_stride]);
        }
    }
    if p.quads != 0u {
        textureStore(dst, vec2<u32>(4u * x + r % 4u, r / 4u), z, v);
    } else {
        textureStore(dst, vec2<u32>(x, r), z, v);
    }
}

@group(0) @binding(3) var rows_tex: texture_storage_2d_array<rgba32float, read>;

// The quads layout of a texture packed as rows (pack_rows without quads, or a copy of whole
// rows): on CPU drivers a buffer copy and this texel shuffle are several times faster than
// pack_rows reading the buffer element by element.
@compute @workgroup_size(64, 4, 1)
fn quads_from_rows(@builtin(global_invocation_id) gid: vec3<u32>) {
    let x = gid.x;
    let q = gid.y;
    if x >= p.width || 4u * q >= p.rows {
        return;
    }
    let last = p.rows - 1u;
    for (var j = 0u; j < 4u; j++) {
        textureStore(dst, vec2<u32>(4u * x + j, q), gid.z,
            textureLoad(rows_tex, vec2<u32>(x, min(4u * q + j, last)), gid.z));
    }
}
