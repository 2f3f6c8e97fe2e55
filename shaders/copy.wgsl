// Strided copy between two views of up to 4 dimensions with the same shape:
//
//   dst[dst_offset + Σ_d idx_d · dst_stride_d] = src[src_offset + Σ_d idx_d · src_stride_d]
//
// for every index idx of the shape (outermost first; unused leading dimensions have size 1).
// Makes views contiguous, and writes into a slice of a larger tensor for concat. One
// invocation per element, 2-D grid so large tensors fit the dispatch limits. Compiled after
// strided.wgsl.

alias T = f32;

struct Params {
    shape: vec4<u32>,
    src_stride: vec4<u32>,
    dst_stride: vec4<u32>,
    src_offset: u32,
    dst_offset: u32,
    total: u32,
    row_pitch: u32,
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
    let at = p.src_offset + strided_offset(i, p.shape, p.src_stride);
    dst[p.dst_offset + strided_offset(i, p.shape, p.dst_stride)] = src[at];
}
