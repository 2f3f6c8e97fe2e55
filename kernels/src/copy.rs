//! Launcher and CPU reference for `shaders/copy.wgsl`: a strided view made contiguous.

use bytemuck::{Pod, Zeroable};

use crate::dtype::DType;
use crate::error::{KernelError, Result};
use crate::pool::GpuBuffer;
use crate::runtime::{Binding, Gpu, KernelKey};

const WORKGROUP: usize = 256;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    shape: [u32; 4],
    stride: [u32; 4],
    offset: u32,
    total: u32,
    row_pitch: u32,
    _pad: u32,
}

/// A view of up to four dimensions: element `idx` is at `offset + Σ idx[d]·strides[d]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StridedView {
    /// Sizes, outermost first.
    pub shape: Vec<usize>,
    /// Element strides, outermost first.
    pub strides: Vec<usize>,
    /// Element offset of the first element.
    pub offset: usize,
}

impl StridedView {
    fn padded(&self) -> Result<([u32; 4], [u32; 4])> {
        if self.shape.len() > 4 || self.shape.len() != self.strides.len() {
            return Err(KernelError::Shape {
                op: "copy",
                detail: format!(
                    "a view needs at most 4 dimensions and one stride each, got shape {:?} strides {:?}",
                    self.shape, self.strides
                ),
            });
        }
        let pad = 4 - self.shape.len();
        let mut shape = [1u32; 4];
        let mut stride = [0u32; 4];
        for d in 0..self.shape.len() {
            shape[pad + d] = self.shape[d] as u32;
            stride[pad + d] = self.strides[d] as u32;
        }
        Ok((shape, stride))
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Records `dst = contiguous(view of src)`.
pub fn copy_strided(
    gpu: &Gpu,
    dtype: DType,
    src: &GpuBuffer,
    view: &StridedView,
    dst: &GpuBuffer,
) -> Result<()> {
    let (shape, stride) = view.padded()?;
    let total = view.numel();
    if total == 0 {
        return Ok(());
    }
    let last = view.offset
        + view
            .shape
            .iter()
            .zip(&view.strides)
            .map(|(s, st)| (s - 1) * st)
            .sum::<usize>();
    if (last + 1) * dtype.size() > src.len_bytes() as usize
        || total * dtype.size() > dst.len_bytes() as usize
    {
        return Err(KernelError::Shape {
            op: "copy",
            detail: format!("view {view:?} reaches past its buffer"),
        });
    }
    let groups = total.div_ceil(WORKGROUP);
    let max = gpu.limits().max_compute_workgroups_per_dimension as usize;
    let (gx, gy) = if groups <= max {
        (groups, 1)
    } else {
        (max, groups.div_ceil(max))
    };
    let params = Params {
        shape,
        stride,
        offset: view.offset as u32,
        total: total as u32,
        row_pitch: (gx * WORKGROUP) as u32,
        _pad: 0,
    };
    let kernel = gpu.kernel(&KernelKey {
        shader: "copy",
        source: crate::modules::COPY,
        entry: "copy_strided",
        dtype,
        constants: vec![],
        bindings: &[
            (0, Binding::Read),
            (1, Binding::ReadWrite),
            (2, Binding::Params),
        ],
    })?;
    gpu.dispatch(
        &kernel,
        &[src.into(), dst.into()],
        bytemuck::bytes_of(&params),
        [gx as u32, gy as u32, 1],
    )
}

/// CPU reference of [`copy_strided`].
pub fn copy_strided_cpu<E: Copy>(src: &[E], view: &StridedView) -> Vec<E> {
    let total = view.numel();
    let dims = view.shape.len();
    let mut out = Vec::with_capacity(total);
    let mut idx = vec![0usize; dims];
    for _ in 0..total {
        let at = view.offset
            + idx
                .iter()
                .zip(&view.strides)
                .map(|(i, s)| i * s)
                .sum::<usize>();
        out.push(src[at]);
        for d in (0..dims).rev() {
            idx[d] += 1;
            if idx[d] < view.shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}
