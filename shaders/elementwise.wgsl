// Elementwise kernels over up to 4 dimensions with broadcasting by stride 0. The output is
// contiguous; each input is read through its own element strides and offset.
//
//   unary:   out[i] = act(scale · a[i])
//   binary:  out[i] = act(a[i] ∘ b[i]),  ∘ = add, mul, sub or a·gelu(b) (OP)
//
// Compiled after activation.wgsl (ACT) and strided.wgsl. One invocation per element on a 2-D
// grid, so large tensors fit the dispatch limits.

alias T = f32;

struct Params {
    shape: vec4<u32>,
    a_stride: vec4<u32>,
    b_stride: vec4<u32>,
    total: u32,
    row_pitch: u32,
    a_offset: u32,
    b_offset: u32,
    scale: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

// 0 add, 1 mul, 2 sub
override OP: u32 = 0u;

@group(0) @binding(0) var<storage, read> a: array<T>;
@group(0) @binding(1) var<storage, read> b: array<T>;
@group(0) @binding(2) var<storage, read_write> out: array<T>;
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(256, 1, 1)
fn unary(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.y * p.row_pitch + gid.x;
    if i >= p.total {
        return;
    }
    let x = f32(a[p.a_offset + strided_offset(i, p.shape, p.a_stride)]);
    out[i] = T(activate(p.scale * x));
}

@compute @workgroup_size(256, 1, 1)
fn binary(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.y * p.row_pitch + gid.x;
    if i >= p.total {
        return;
    }
    let x = f32(a[p.a_offset + strided_offset(i, p.shape, p.a_stride)]);
    let y = f32(b[p.b_offset + strided_offset(i, p.shape, p.b_stride)]);
    var v: f32;
    switch OP {
        case 1u: { v = x * y; }
        case 2u: { v = x - y; }
        // GEGLU's product: x · gelu(y), the exact (erf) GELU.
        case 3u: { v = x * gelu_erf(y); }
        default: { v = x + y; }
    }
    out[i] = T(activate(v));
}
