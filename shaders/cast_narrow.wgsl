// Element type conversion from f32: dst[i] = T(src[i]). Built with the half type as T (the
// f32 → f16 direction of Tensor::to_dtype); 2-D grid so large tensors fit the dispatch limits.

alias T = f32;

struct Params {
    total: u32,
    row_pitch: u32,
}

@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> dst: array<T>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(256, 1, 1)
fn cast_narrow(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.y * p.row_pitch + gid.x;
    if i < p.total {
        dst[i] = T(src[i]);
    }
}
