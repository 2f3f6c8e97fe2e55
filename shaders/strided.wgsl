// Offsets in strided views of up to 4 dimensions, shared by the copy and elementwise kernels
// (compiled in front of them, see kernels/src/lib.rs, modules).

// The offset of element `i` (row-major over `shape`, outermost first) in a view with `stride`.
fn strided_offset(i: u32, shape: vec4<u32>, stride: vec4<u32>) -> u32 {
    var rest = i;
    let i3 = rest % shape.w;
    rest /= shape.w;
    let i2 = rest % shape.z;
    rest /= shape.z;
    let i1 = rest % shape.y;
    let i0 = rest / shape.y;
    return i0 * stride.x + i1 * stride.y + i2 * stride.z + i3 * stride.w;
}
