// Strided copy: gathers a view of up to 4 dimensions into a contiguous row-major buffer.
//
//   dst[i] = src[offset + Σ_d idx_d(i) · stride_d]
//
// shape and stride are given for 4 dimensions, outermost first (unused leading dimensions have
// size 1). One invocation per element, 2-D grid so large tensors fit the dispatch limits.

alias T = f32;

struct Params {
    shape: vec4<u32>,
    stride: vec4<u32>,
    offset: u32,
    total: u32,
    row_pitch: u32,
    _pad: u32,
}

@group(0) @binding(0) var<storage, read> src: array<T>;
@group(0) @binding(1) var<storage, read_write> dst: array<T>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(256, 1, 1)
fn copy_strided(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.y * p.row_pitch + gid.x;
    if i >= p.total {
        return;
    }
    var rest = i;
    let i3 = rest % p.shape.w;
    rest /= p.shape.w;
    let i2 = rest % p.shape.z;
    rest /= p.shape.z;
    let i1 = rest % p.shape.y;
    let i0 = rest / p.shape.y;
    dst[i] = src[p.offset + i0 * p.stride.x + i1 * p.stride.y + i2 * p.stride.z + i3 * p.stride.w];
}
