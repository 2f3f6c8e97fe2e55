//! The [`Tensor`] type.

use std::fmt;
use std::sync::Arc;

use half::f16;
use tessera_kernels::copy::{copy_strided, StridedView};
use tessera_kernels::matmul::{
    self, Activation, MatmulA, MatmulArgs, MatmulB, MatmulOut, MatmulSpec, MatmulVariant,
    PackedRows,
};
use tessera_kernels::pack::PackLayout;
use tessera_kernels::{DType, Gpu, GpuBuffer};

use crate::error::{Result, TensorError};

/// Most dimensions a tensor can have.
pub const MAX_DIMS: usize = 4;

/// A tensor on the GPU: a shared device buffer seen through a shape and element strides.
///
/// Views (`reshape` of a contiguous tensor, `transpose`) share the buffer; operations whose
/// kernels cannot read a view copy it first with [`Tensor::contiguous`].
#[derive(Clone)]
pub struct Tensor {
    gpu: Arc<Gpu>,
    buffer: Arc<GpuBuffer>,
    shape: Vec<usize>,
    strides: Vec<usize>,
    offset: usize,
    dtype: DType,
}

/// The optional epilogue of [`Tensor::matmul_with`]:
/// `act(alpha · A·B + bias) + residual`.
#[derive(Clone, Copy, Debug, Default)]
pub struct MatmulOptions<'a> {
    /// Added per output column, shape `[N]`.
    pub bias: Option<&'a Tensor>,
    /// Added after the activation: the output's shape, or `[M, N]` for every batch entry.
    pub residual: Option<&'a Tensor>,
    /// Applied after the bias.
    pub activation: Activation,
    /// Scales the product; `None` means 1.
    pub alpha: Option<f32>,
    /// Kernel choice; `Auto` picks by adapter and shape.
    pub variant: MatmulVariant,
}

/// A `[rows, cols]` matrix packed into a texture for the matmul kernels CPU drivers run; cheap
/// to clone. Either a `[N, K]` weight packed once at load ([`Tensor::pack_weight`]), read as
/// B, or an activation a matmul wrote in this form ([`Tensor::matmul_packed_to_packed`]) for
/// the next matmul to read as A ([`PackedMatrix::matmul_packed`]), so that no buffer copy of
/// it exists.
#[derive(Clone, Debug)]
pub struct PackedMatrix {
    packed: Arc<PackedRows>,
    gpu: Arc<Gpu>,
}

impl PackedMatrix {
    /// `[rows, cols]`.
    pub fn shape(&self) -> [usize; 2] {
        let (rows, cols) = self.packed.shape();
        [rows, cols]
    }

    /// Element type (the precision of the values).
    pub fn dtype(&self) -> DType {
        self.packed.dtype()
    }

    /// An unwritten `[rows, cols]` matrix for a kernel to write packed, or `None` where it
    /// does not fit one texture.
    pub(crate) fn empty(
        gpu: &Arc<Gpu>,
        dtype: DType,
        rows: usize,
        cols: usize,
    ) -> Result<Option<PackedMatrix>> {
        if !PackedRows::fits(gpu, rows, cols, PackLayout::Rows) {
            return Ok(None);
        }
        Ok(Some(PackedMatrix {
            packed: Arc::new(PackedRows::empty(gpu, dtype, rows, cols)?),
            gpu: gpu.clone(),
        }))
    }

    pub(crate) fn rows(&self) -> &PackedRows {
        &self.packed
    }

    /// `act(alpha · self·wᵀ + bias) + residual` with this packed `[M, K]` matrix as A and a
    /// packed `[N, K]` weight: `[M, N]`.
    pub fn matmul_packed(&self, w: &PackedMatrix, opts: &MatmulOptions<'_>) -> Result<Tensor> {
        Ok(times_packed(&self.gpu, MatmulLhs::Packed(self), w, opts, false)?.into_tensor())
    }
}

#[derive(Clone, Copy)]
enum MatmulLhs<'a> {
    Tensor(&'a Tensor),
    Packed(&'a PackedMatrix),
}

#[derive(Clone, Copy)]
enum MatmulRhs<'a> {
    Tensor(&'a Tensor),
    Packed(&'a PackedMatrix),
}

enum MatmulResult {
    Tensor(Tensor),
    Packed(PackedMatrix),
}

impl MatmulResult {
    fn into_tensor(self) -> Tensor {
        match self {
            MatmulResult::Tensor(t) => t,
            MatmulResult::Packed(_) => unreachable!("asked for a tensor"),
        }
    }
}

fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        strides[d] = strides[d + 1] * shape[d + 1];
    }
    strides
}

fn check_shape(op: &'static str, shape: &[usize]) -> Result<()> {
    if shape.is_empty() || shape.len() > MAX_DIMS {
        return Err(TensorError::Shape {
            op,
            detail: format!("a tensor has 1 to {MAX_DIMS} dimensions, got shape {shape:?}"),
        });
    }
    Ok(())
}

impl Tensor {
    /// Uploads `data` (f32) as a tensor of `shape`, stored as `dtype`.
    pub fn from_slice(gpu: &Arc<Gpu>, data: &[f32], shape: &[usize], dtype: DType) -> Result<Self> {
        check_shape("from_slice", shape)?;
        let numel: usize = shape.iter().product();
        if numel != data.len() {
            return Err(TensorError::Shape {
                op: "from_slice",
                detail: format!(
                    "shape {shape:?} holds {numel} elements but the data has {}",
                    data.len()
                ),
            });
        }
        gpu.check_dtype("from_slice", dtype)?;
        let buffer = match dtype {
            DType::F32 => gpu.upload("upload", bytemuck::cast_slice(data))?,
            DType::F16 => {
                let halves: Vec<u16> = data.iter().map(|&v| f16::from_f32(v).to_bits()).collect();
                gpu.upload("upload", bytemuck::cast_slice(&halves))?
            }
        };
        Ok(Tensor::from_buffer(gpu, buffer, shape, dtype))
    }

    /// Uploads f16 values as an f16 tensor of `shape`.
    pub fn from_f16(gpu: &Arc<Gpu>, data: &[f16], shape: &[usize]) -> Result<Self> {
        check_shape("from_f16", shape)?;
        let numel: usize = shape.iter().product();
        if numel != data.len() {
            return Err(TensorError::Shape {
                op: "from_f16",
                detail: format!(
                    "shape {shape:?} holds {numel} elements but the data has {}",
                    data.len()
                ),
            });
        }
        gpu.check_dtype("from_f16", DType::F16)?;
        let bits: Vec<u16> = data.iter().map(|v| v.to_bits()).collect();
        let buffer = gpu.upload("upload", bytemuck::cast_slice(&bits))?;
        Ok(Tensor::from_buffer(gpu, buffer, shape, DType::F16))
    }

    /// A zero-filled tensor.
    pub fn zeros(gpu: &Arc<Gpu>, shape: &[usize], dtype: DType) -> Result<Self> {
        let numel: usize = shape.iter().product();
        Tensor::from_slice(gpu, &vec![0.0; numel], shape, dtype)
    }

    /// A tensor of `shape` over a fresh buffer whose contents a kernel will write.
    pub fn empty(gpu: &Arc<Gpu>, shape: &[usize], dtype: DType) -> Result<Self> {
        check_shape("empty", shape)?;
        gpu.check_dtype("empty", dtype)?;
        let numel: usize = shape.iter().product();
        let buffer = gpu.alloc("alloc", (numel * dtype.size()) as u64)?;
        Ok(Tensor::from_buffer(gpu, buffer, shape, dtype))
    }

    /// Wraps a device buffer holding a contiguous `shape` of `dtype` elements.
    pub fn from_buffer(gpu: &Arc<Gpu>, buffer: GpuBuffer, shape: &[usize], dtype: DType) -> Self {
        Tensor {
            gpu: gpu.clone(),
            buffer: Arc::new(buffer),
            strides: contiguous_strides(shape),
            shape: shape.to_vec(),
            offset: 0,
            dtype,
        }
    }

    /// This tensor's elements as a view of its buffer (shape, strides, offset).
    pub(crate) fn view(&self) -> StridedView {
        StridedView {
            shape: self.shape.clone(),
            strides: self.strides.clone(),
            offset: self.offset,
        }
    }

    /// The same buffer seen through another shape, strides and offset.
    pub(crate) fn view_as(&self, shape: Vec<usize>, strides: Vec<usize>, offset: usize) -> Tensor {
        Tensor {
            shape,
            strides,
            offset,
            ..self.clone()
        }
    }

    /// The device this tensor lives on.
    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    /// The device buffer (shared with views).
    pub fn buffer(&self) -> &GpuBuffer {
        &self.buffer
    }

    /// Sizes, outermost first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Element strides, outermost first.
    pub fn strides(&self) -> &[usize] {
        &self.strides
    }

    /// Element offset of the first element in the buffer.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the elements lie in row-major order from the start of the buffer.
    pub fn is_contiguous(&self) -> bool {
        self.offset == 0 && self.strides == contiguous_strides(&self.shape)
    }

    /// A row-major copy, or this tensor itself when it already is one.
    pub fn contiguous(&self) -> Result<Tensor> {
        if self.is_contiguous() {
            return Ok(self.clone());
        }
        let out = Tensor::empty(&self.gpu, &self.shape, self.dtype)?;
        copy_strided(
            &self.gpu,
            self.dtype,
            &self.buffer,
            &self.view(),
            &out.buffer,
            &StridedView::contiguous(&self.shape),
        )?;
        Ok(out)
    }

    /// Writes this tensor's elements into `dst`'s buffer at the positions of `view` (a strided
    /// view of `dst`'s elements with this tensor's shape): interleaving parts into one tensor.
    pub fn copy_into_view(&self, dst: &Tensor, view: &StridedView) -> Result<()> {
        const OP: &str = "copy_into_view";
        self.same_device(OP, dst)?;
        if view.shape != self.shape
            || view.strides.len() != view.shape.len()
            || self.dtype != dst.dtype
            || !dst.is_contiguous()
            || view.end() > dst.numel()
        {
            return Err(TensorError::Shape {
                op: OP,
                detail: format!(
                    "cannot write {:?} {:?} through view {view:?} into {:?} {:?}",
                    self.shape, self.dtype, dst.shape, dst.dtype
                ),
            });
        }
        copy_strided(
            &self.gpu,
            self.dtype,
            &self.buffer,
            &self.view(),
            &dst.buffer,
            view,
        )?;
        Ok(())
    }

    /// The same elements seen as `shape` (a view when contiguous, a copy otherwise).
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        check_shape("reshape", shape)?;
        let numel: usize = shape.iter().product();
        if numel != self.numel() {
            return Err(TensorError::Shape {
                op: "reshape",
                detail: format!(
                    "cannot view {:?} ({} elements) as {shape:?} ({numel} elements)",
                    self.shape,
                    self.numel()
                ),
            });
        }
        let base = self.contiguous()?;
        Ok(Tensor {
            shape: shape.to_vec(),
            strides: contiguous_strides(shape),
            ..base
        })
    }

    /// A view with dimensions `d0` and `d1` swapped (no copy).
    pub fn transpose(&self, d0: usize, d1: usize) -> Result<Tensor> {
        let rank = self.shape.len();
        if d0 >= rank || d1 >= rank {
            return Err(TensorError::Shape {
                op: "transpose",
                detail: format!(
                    "dimensions {d0} and {d1} do not exist in shape {:?}",
                    self.shape
                ),
            });
        }
        let mut t = self.clone();
        t.shape.swap(d0, d1);
        t.strides.swap(d0, d1);
        Ok(t)
    }

    /// A view with the last two dimensions swapped (no copy).
    pub fn t(&self) -> Result<Tensor> {
        let rank = self.shape.len();
        if rank < 2 {
            return Err(TensorError::Shape {
                op: "t",
                detail: format!("needs at least 2 dimensions, got shape {:?}", self.shape),
            });
        }
        self.transpose(rank - 2, rank - 1)
    }

    /// Downloads the elements in row-major order as f32 (submits pending work and waits; in
    /// browsers, which cannot wait, an error: [`Tensor::to_vec_async`]).
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        tessera_kernels::wait(self.to_vec_async())
    }

    /// [`Tensor::to_vec`] as a future, which a browser awaits.
    pub async fn to_vec_async(&self) -> Result<Vec<f32>> {
        let c = self.contiguous()?;
        let bytes = c
            .gpu
            .read_async(&c.buffer, (c.numel() * c.dtype.size()) as u64)
            .await?;
        Ok(c.dtype.values(&bytes))
    }

    pub(crate) fn same_device(&self, op: &'static str, other: &Tensor) -> Result<()> {
        if !Arc::ptr_eq(&self.gpu, &other.gpu) {
            return Err(TensorError::Device { op });
        }
        if self.dtype != other.dtype {
            return Err(TensorError::DType {
                op,
                left: self.dtype,
                right: other.dtype,
            });
        }
        Ok(())
    }

    /// The tensor with its elements converted to `dtype` (f16 rounds to nearest even); a
    /// contiguous copy when the dtype is already `dtype`.
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        let src = self.contiguous()?;
        let out = Tensor::empty(&self.gpu, &self.shape, dtype)?;
        tessera_kernels::cast::cast(
            &self.gpu,
            self.dtype,
            dtype,
            &src.buffer,
            &out.buffer,
            self.numel(),
        )?;
        Ok(out)
    }

    /// `self · other` over the last two dimensions: `[..., M, K] · [..., K, N] -> [..., M, N]`.
    ///
    /// `other` may have the same leading dimensions or none (then it is shared by the batch).
    /// A transposed view of a row-major `[N, K]` tensor is read in place, so `x.matmul(&w.t()?)`
    /// costs no copy.
    pub fn matmul(&self, other: &Tensor) -> Result<Tensor> {
        self.matmul_with(other, &MatmulOptions::default())
    }

    /// PyTorch's `Linear`: `self · weightᵀ + bias`, weight `[out, in]`, bias `[out]`.
    pub fn linear(&self, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        if weight.shape.len() != 2 {
            return Err(TensorError::Shape {
                op: "linear",
                detail: format!("weight must be [out, in], got {:?}", weight.shape),
            });
        }
        self.matmul_with(
            &weight.t()?,
            &MatmulOptions {
                bias,
                ..MatmulOptions::default()
            },
        )
    }

    /// [`Tensor::matmul`] with a fused epilogue: `act(alpha · self·other + bias) + residual`.
    pub fn matmul_with(&self, other: &Tensor, opts: &MatmulOptions<'_>) -> Result<Tensor> {
        self.same_device("matmul", other)?;
        let out = matmul_any(
            &self.gpu,
            MatmulLhs::Tensor(self),
            MatmulRhs::Tensor(other),
            opts,
            false,
        )?;
        Ok(out.into_tensor())
    }

    /// A `[N, K]` weight (Linear layout) packed once for the texture matmul kernels that CPU
    /// drivers run, or `None` where this adapter's matmuls read buffers (packing would only
    /// cost memory).
    pub fn pack_weight(&self) -> Result<Option<PackedMatrix>> {
        if self.shape.len() != 2 {
            return Err(TensorError::Shape {
                op: "pack_weight",
                detail: format!("a weight is [out, in], got {:?}", self.shape),
            });
        }
        let (n, k) = (self.shape[0], self.shape[1]);
        if !matmul::prefers_packed_b(&self.gpu, n, k) {
            return Ok(None);
        }
        let w = self.contiguous()?;
        let packed = PackedRows::pack(&self.gpu, self.dtype, &w.buffer, n, k, PackLayout::Quads)?;
        Ok(Some(PackedMatrix {
            packed: Arc::new(packed),
            gpu: self.gpu.clone(),
        }))
    }

    /// `act(alpha · self·wᵀ + bias) + residual` with a packed `[N, K]` weight: `self`'s last
    /// axis is K.
    pub fn matmul_packed(&self, w: &PackedMatrix, opts: &MatmulOptions<'_>) -> Result<Tensor> {
        Ok(times_packed(&self.gpu, MatmulLhs::Tensor(self), w, opts, false)?.into_tensor())
    }

    /// [`Tensor::matmul_packed`] written as a packed `[rows, N]` matrix (the leading axes of
    /// `self` flattened into rows) for a following [`PackedMatrix::matmul_packed`]: on CPU
    /// drivers the product then never exists as a buffer and again as the next matmul's
    /// staged copy. `None` where the rows do not fit one texture; call
    /// [`Tensor::matmul_packed`] then.
    pub fn matmul_packed_to_packed(
        &self,
        w: &PackedMatrix,
        opts: &MatmulOptions<'_>,
    ) -> Result<Option<PackedMatrix>> {
        let rows = self.numel() / self.shape.last().copied().unwrap_or(1).max(1);
        if !PackedRows::fits(&self.gpu, rows, w.shape()[0], PackLayout::Rows) {
            return Ok(None);
        }
        match times_packed(&self.gpu, MatmulLhs::Tensor(self), w, opts, true)? {
            MatmulResult::Packed(p) => Ok(Some(p)),
            MatmulResult::Tensor(_) => unreachable!("asked for a packed result"),
        }
    }
}

/// `lhs · wᵀ` for a packed weight `w` on `gpu`.
fn times_packed(
    gpu: &Arc<Gpu>,
    lhs: MatmulLhs<'_>,
    w: &PackedMatrix,
    opts: &MatmulOptions<'_>,
    packed_out: bool,
) -> Result<MatmulResult> {
    if !Arc::ptr_eq(gpu, &w.gpu) {
        return Err(TensorError::Device { op: "matmul" });
    }
    matmul_any(gpu, lhs, MatmulRhs::Packed(w), opts, packed_out)
}

fn matmul_any(
    gpu: &Arc<Gpu>,
    lhs: MatmulLhs<'_>,
    rhs: MatmulRhs<'_>,
    opts: &MatmulOptions<'_>,
    packed_out: bool,
) -> Result<MatmulResult> {
    const OP: &str = "matmul";
    let (lhs_shape, dtype) = match lhs {
        MatmulLhs::Tensor(t) => (t.shape.clone(), t.dtype),
        MatmulLhs::Packed(p) => (p.shape().to_vec(), p.dtype()),
    };
    let packed_shape;
    let other_shape: &[usize] = match rhs {
        MatmulRhs::Tensor(t) => &t.shape,
        MatmulRhs::Packed(p) => {
            let [n, k] = p.shape();
            packed_shape = [k, n];
            &packed_shape
        }
    };
    let (ra, rb) = (lhs_shape.len(), other_shape.len());
    if ra < 2 || rb < 2 {
        return Err(TensorError::Shape {
            op: OP,
            detail: format!(
                "both operands need at least 2 dimensions, got {lhs_shape:?} and {other_shape:?}"
            ),
        });
    }
    let (m, k) = (lhs_shape[ra - 2], lhs_shape[ra - 1]);
    let (kb, n) = (other_shape[rb - 2], other_shape[rb - 1]);
    if k != kb {
        return Err(TensorError::Shape {
            op: OP,
            detail: format!(
                "inner dimensions differ: {lhs_shape:?} · {other_shape:?} ({k} vs {kb})"
            ),
        });
    }
    let lead_a = &lhs_shape[..ra - 2];
    let lead_b = &other_shape[..rb - 2];
    let batch_b: usize = lead_b.iter().product();
    if batch_b != 1 && lead_a != lead_b {
        return Err(TensorError::Shape {
            op: OP,
            detail: format!(
                "batch dimensions differ: {lhs_shape:?} · {other_shape:?}; B must have A's batch dimensions or none"
            ),
        });
    }
    let batch_a: usize = lead_a.iter().product();
    let mut out_shape = lead_a.to_vec();
    out_shape.extend([m, n]);
    let same_device = |t: &Tensor| -> Result<()> {
        if !Arc::ptr_eq(gpu, &t.gpu) {
            return Err(TensorError::Device { op: OP });
        }
        if t.dtype != dtype {
            return Err(TensorError::DType {
                op: OP,
                left: dtype,
                right: t.dtype,
            });
        }
        Ok(())
    };
    if let Some(bias) = opts.bias {
        same_device(bias)?;
        if bias.numel() != n || bias.shape.len() != 1 {
            return Err(TensorError::Shape {
                op: OP,
                detail: format!("bias must be [{n}], got {:?}", bias.shape),
            });
        }
    }
    let mut broadcast_residual = false;
    if let Some(res) = opts.residual {
        same_device(res)?;
        broadcast_residual = res.shape != out_shape && res.shape == [m, n];
        if res.shape != out_shape && !broadcast_residual {
            return Err(TensorError::Shape {
                op: OP,
                detail: format!(
                    "residual must be {out_shape:?} or [{m}, {n}], got {:?}",
                    res.shape
                ),
            });
        }
    }
    let a = match lhs {
        MatmulLhs::Tensor(t) => Some(t.contiguous()?),
        MatmulLhs::Packed(_) => None,
    };
    // B is read in place when it is row-major [.., K, N] or a transposed row-major [.., N, K].
    let (b, trans_b) = match rhs {
        MatmulRhs::Tensor(other) => {
            let kn = contiguous_strides(&other.shape);
            let mut nk_shape = other.shape.clone();
            nk_shape.swap(rb - 2, rb - 1);
            let mut nk = contiguous_strides(&nk_shape);
            nk.swap(rb - 2, rb - 1);
            if other.offset == 0 && other.strides == kn {
                (Some(other.clone()), false)
            } else if other.offset == 0 && other.strides == nk {
                (Some(other.clone()), true)
            } else {
                (Some(other.contiguous()?), false)
            }
        }
        MatmulRhs::Packed(_) => (None, true),
    };
    let bias = opts.bias.map(Tensor::contiguous).transpose()?;
    let residual = opts.residual.map(Tensor::contiguous).transpose()?;
    // A shared B lets the whole batch run as one taller product.
    let (batch, rows) = if batch_b == 1 && !broadcast_residual {
        (1, batch_a * m)
    } else {
        (batch_a, m)
    };
    let spec = MatmulSpec {
        batch,
        m: rows,
        n,
        k,
        trans_b,
        broadcast_b: batch_b == 1,
        broadcast_residual,
        alpha: opts.alpha.unwrap_or(1.0),
        activation: opts.activation,
        dtype,
        variant: opts.variant,
    };
    let out = if packed_out {
        MatmulResult::Packed(PackedMatrix {
            packed: Arc::new(PackedRows::empty(gpu, dtype, batch * rows, n)?),
            gpu: gpu.clone(),
        })
    } else {
        MatmulResult::Tensor(Tensor::empty(gpu, &out_shape, dtype)?)
    };
    matmul::matmul(
        gpu,
        &spec,
        &MatmulArgs {
            a: match (&a, lhs) {
                (Some(a), _) => MatmulA::Buffer(&a.buffer),
                (None, MatmulLhs::Packed(p)) => MatmulA::Packed(&p.packed),
                (None, MatmulLhs::Tensor(t)) => MatmulA::Buffer(&t.buffer),
            },
            b: match (&b, rhs) {
                (Some(b), _) => MatmulB::Buffer(&b.buffer),
                (None, MatmulRhs::Packed(p)) => MatmulB::Packed(&p.packed),
                (None, MatmulRhs::Tensor(t)) => MatmulB::Buffer(&t.buffer),
            },
            bias: bias.as_ref().map(|t| &*t.buffer),
            residual: residual.as_ref().map(|t| &*t.buffer),
            out: match &out {
                MatmulResult::Tensor(t) => MatmulOut::Buffer(&t.buffer),
                MatmulResult::Packed(p) => MatmulOut::Packed(&p.packed),
            },
        },
    )?;
    Ok(out)
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor({:?}, {}", self.shape, self.dtype)?;
        if !self.is_contiguous() {
            write!(f, ", strides {:?}", self.strides)?;
        }
        write!(f, ")")
    }
}
