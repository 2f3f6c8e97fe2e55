//! Launcher and CPU reference for `shaders/copy.wgsl`: a strided view copied into another
//! strided view of the same shape (contiguous copies, concat).

use bytemuck::{Pod, Zeroable};

use crate::dtype::DType;
use crate::error::{KernelError, Result};
use crate::pool::GpuBuffer;
use crate::runtime::{Gpu, KernelKey, IN_OUT_BINDINGS};

const WORKGROUP: usize = 256;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    shape: [u32; 4],
    src_stride: [u32; 4],
    dst_stride: [u32; 4],
    src_offset: u32,
    dst_offset: u32,
    total: u32,
    row_pitch: u32,
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
    /// The row-major view of `shape` from the start of a buffer.
    pub fn contiguous(shape: &[usize]) -> Self {
        let mut strides = vec![1; shape.len()];
        for d in (0..shape.len().saturating_sub(1)).rev() {
            strides[d] = strides[d + 1] * shape[d + 1];
        }
        StridedView {
            shape: shape.to_vec(),
            strides,
            offset: 0,
        }
    }

    /// Shape and strides padded to four dimensions (leading size-1 dimensions).
    pub(crate) fn padded(&self, op: &'static str) -> Result<([u32; 4], [u32; 4])> {
        if self.shape.len() > 4 || self.shape.len() != self.strides.len() {
            return Err(KernelError::Shape {
                op,
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

    /// One past the highest element index the view reaches (0 for an empty view).
    pub fn end(&self) -> usize {
        if self.numel() == 0 {
            return 0;
        }
        self.offset
            + self
                .shape
                .iter()
                .zip(&self.strides)
                .map(|(s, st)| (s - 1) * st)
                .sum::<usize>()
            + 1
    }

    /// Fails unless every element of the view lies within `len_bytes` of `dtype` elements.
    pub(crate) fn check_within(
        &self,
        op: &'static str,
        len_bytes: u64,
        dtype: DType,
    ) -> Result<()> {
        if (self.end() * dtype.size()) as u64 > len_bytes {
            return Err(KernelError::Shape {
                op,
                detail: format!("view {self:?} reaches past its buffer of {len_bytes} bytes"),
            });
        }
        Ok(())
    }
}

/// Records `dst[dst_view] = src[src_view]` element by element; the views have one shape.
pub fn copy_strided(
    gpu: &Gpu,
    dtype: DType,
    src: &GpuBuffer,
    src_view: &StridedView,
    dst: &GpuBuffer,
    dst_view: &StridedView,
) -> Result<()> {
    if src_view.shape != dst_view.shape {
        return Err(KernelError::Shape {
            op: "copy",
            detail: format!(
                "shapes differ: {:?} vs {:?}",
                src_view.shape, dst_view.shape
            ),
        });
    }
    let (shape, src_stride) = src_view.padded("copy")?;
    let (_, dst_stride) = dst_view.padded("copy")?;
    src_view.check_within("copy", src.len_bytes(), dtype)?;
    dst_view.check_within("copy", dst.len_bytes(), dtype)?;
    let total = src_view.numel();
    if total == 0 {
        return Ok(());
    }
    let (grid, row_pitch) = gpu.grid_1d(total, WORKGROUP);
    let params = Params {
        shape,
        src_stride,
        dst_stride,
        src_offset: src_view.offset as u32,
        dst_offset: dst_view.offset as u32,
        total: total as u32,
        row_pitch,
    };
    let kernel = gpu.kernel(&KernelKey {
        shader: "copy",
        source: crate::modules::COPY,
        entry: "copy_strided",
        dtype,
        constants: vec![],
        bindings: IN_OUT_BINDINGS,
    })?;
    gpu.dispatch(
        &kernel,
        &[src.into(), dst.into()],
        bytemuck::bytes_of(&params),
        grid,
    )
}

/// The offsets of a view's elements in row-major order.
pub fn view_offsets(view: &StridedView) -> Vec<usize> {
    let total = view.numel();
    let dims = view.shape.len();
    let mut out = Vec::with_capacity(total);
    let mut idx = vec![0usize; dims];
    for _ in 0..total {
        out.push(
            view.offset
                + idx
                    .iter()
                    .zip(&view.strides)
                    .map(|(i, s)| i * s)
                    .sum::<usize>(),
        );
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

/// CPU reference of [`copy_strided`] into a contiguous destination.
pub fn copy_strided_cpu<E: Copy>(src: &[E], view: &StridedView) -> Vec<E> {
    view_offsets(view).into_iter().map(|o| src[o]).collect()
}
