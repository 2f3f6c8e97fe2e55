//! Launchers and CPU references for `shaders/elementwise.wgsl`: activations, scaling and
//! broadcasting add/mul/sub over strided views, with a contiguous output.

use bytemuck::{Pod, Zeroable};

use crate::copy::{view_offsets, StridedView};
use crate::dtype::DType;
use crate::error::{KernelError, Result};
use crate::matmul::Activation;
use crate::pool::GpuBuffer;
use crate::runtime::{Binding, Gpu, KernelKey};

const WORKGROUP: usize = 256;
const BINDINGS: &[(u32, Binding)] = &[
    (0, Binding::Read),
    (1, Binding::Read),
    (2, Binding::ReadWrite),
    (3, Binding::Params),
];

/// A binary elementwise operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    /// a + b.
    Add,
    /// a · b.
    Mul,
    /// a − b.
    Sub,
    /// a · gelu(b) with the exact (erf) GELU: GEGLU's product of its two halves.
    GeluMul,
}

impl BinaryOp {
    fn code(self) -> u32 {
        match self {
            BinaryOp::Add => 0,
            BinaryOp::Mul => 1,
            BinaryOp::Sub => 2,
            BinaryOp::GeluMul => 3,
        }
    }

    /// The operation on one pair, in f64 (the CPU reference).
    pub fn apply(self, a: f64, b: f64) -> f64 {
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Mul => a * b,
            BinaryOp::Sub => a - b,
            BinaryOp::GeluMul => a * Activation::GeluErf.apply(b),
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    shape: [u32; 4],
    a_stride: [u32; 4],
    b_stride: [u32; 4],
    total: u32,
    row_pitch: u32,
    a_offset: u32,
    b_offset: u32,
    scale: f32,
    _pad: [u32; 3],
}

#[allow(clippy::too_many_arguments)]
fn launch(
    gpu: &Gpu,
    dtype: DType,
    entry: &'static str,
    op: BinaryOp,
    act: Activation,
    scale: f32,
    a: (&GpuBuffer, &StridedView),
    b: (&GpuBuffer, &StridedView),
    out: &GpuBuffer,
) -> Result<()> {
    let (shape, a_stride) = a.1.padded(entry)?;
    let (b_shape, b_stride) = b.1.padded(entry)?;
    if a.1.shape != b.1.shape && entry == "binary" {
        return Err(KernelError::Shape {
            op: "binary",
            detail: format!("views differ: {:?} vs {:?}", a.1.shape, b_shape),
        });
    }
    a.1.check_within(entry, a.0.len_bytes(), dtype)?;
    b.1.check_within(entry, b.0.len_bytes(), dtype)?;
    let total = a.1.numel();
    if (total * dtype.size()) as u64 > out.len_bytes() {
        return Err(KernelError::Shape {
            op: entry,
            detail: format!(
                "output holds {} bytes, {total} elements needed",
                out.len_bytes()
            ),
        });
    }
    if total == 0 {
        return Ok(());
    }
    let (grid, row_pitch) = gpu.grid_1d(total, WORKGROUP);
    let kernel = gpu.kernel(&KernelKey {
        shader: "elementwise",
        source: crate::modules::ELEMENTWISE,
        entry,
        dtype,
        constants: vec![("OP", op.code() as f64), ("ACT", act.code() as f64)],
        bindings: BINDINGS,
    })?;
    let params = Params {
        shape,
        a_stride,
        b_stride,
        total: total as u32,
        row_pitch,
        a_offset: a.1.offset as u32,
        b_offset: b.1.offset as u32,
        scale,
        _pad: [0; 3],
    };
    gpu.dispatch(
        &kernel,
        &[a.0.into(), b.0.into(), out.into()],
        bytemuck::bytes_of(&params),
        grid,
    )
}

/// Records `out = act(scale · a)` over the view `a_view` of `a` (contiguous output).
pub fn unary(
    gpu: &Gpu,
    dtype: DType,
    act: Activation,
    scale: f32,
    a: &GpuBuffer,
    a_view: &StridedView,
    out: &GpuBuffer,
) -> Result<()> {
    let none = StridedView {
        shape: a_view.shape.clone(),
        strides: vec![0; a_view.shape.len()],
        offset: 0,
    };
    launch(
        gpu,
        dtype,
        "unary",
        BinaryOp::Add,
        act,
        scale,
        (a, a_view),
        (gpu.dummy(), &none),
        out,
    )
}

/// Records `out = act(a ∘ b)` over two views of one shape (broadcast dimensions have stride 0).
#[allow(clippy::too_many_arguments)]
pub fn binary(
    gpu: &Gpu,
    dtype: DType,
    op: BinaryOp,
    act: Activation,
    a: &GpuBuffer,
    a_view: &StridedView,
    b: &GpuBuffer,
    b_view: &StridedView,
    out: &GpuBuffer,
) -> Result<()> {
    launch(
        gpu,
        dtype,
        "binary",
        op,
        act,
        1.0,
        (a, a_view),
        (b, b_view),
        out,
    )
}

/// CPU reference of [`unary`].
pub fn unary_cpu(a: &[f32], view: &StridedView, act: Activation, scale: f32) -> Vec<f32> {
    view_offsets(view)
        .into_iter()
        .map(|o| act.apply(scale as f64 * a[o] as f64) as f32)
        .collect()
}

/// CPU reference of [`binary`].
pub fn binary_cpu(
    op: BinaryOp,
    act: Activation,
    a: &[f32],
    a_view: &StridedView,
    b: &[f32],
    b_view: &StridedView,
) -> Vec<f32> {
    view_offsets(a_view)
        .into_iter()
        .zip(view_offsets(b_view))
        .map(|(i, j)| act.apply(op.apply(a[i] as f64, b[j] as f64)) as f32)
        .collect()
}
