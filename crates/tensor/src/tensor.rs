//! The [`Tensor`] type.

use std::fmt;
use std::sync::Arc;

use half::f16;
use tessera_kernels::copy::{copy_strided, StridedView};
use tessera_kernels::matmul::{
    self, Activation, MatmulArgs, MatmulB, MatmulSpec, MatmulVariant, PackedB,
};
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

/// A `[N, K]` weight packed for the texture matmul kernels ([`Tensor::pack_weight`]); cheap to
/// clone.
#[derive(Clone, Debug)]
pub struct PackedWeight {
    packed: Arc<PackedB>,
    gpu: Arc<Gpu>,
}

impl PackedWeight {
    /// `[N, K]`.
    pub fn shape(&self) -> [usize; 2] {
        let (n, k) = self.packed.shape();
        [n, k]
    }
}

#[derive(Clone, Copy)]
enum MatmulRhs<'a> {
    Tensor(&'a Tensor),
    Packed(&'a PackedWeight),
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
        let view = StridedView {
            shape: self.shape.clone(),
            strides: self.strides.clone(),
            offset: self.offset,
        };
        copy_strided(
            &self.gpu,
            self.dtype,
            &self.buffer,
            &view,
            &out.buffer,
            &StridedView::contiguous(&self.shape),
        )?;
        Ok(out)
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

    /// Downloads the elements in row-major order as f32 (submits pending work and waits).
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        let c = self.contiguous()?;
        let bytes = c.gpu.read(&c.buffer, (c.numel() * c.dtype.size()) as u64)?;
        Ok(match c.dtype {
            DType::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            DType::F16 => bytes
                .chunks_exact(2)
                .map(|b| f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32())
                .collect(),
        })
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
        self.matmul_any(MatmulRhs::Tensor(other), opts)
    }

    /// A `[N, K]` weight (Linear layout) packed once for the texture matmul kernels that CPU
    /// drivers run, or `None` where this adapter's matmuls read buffers (packing would only
    /// cost memory).
    pub fn pack_weight(&self) -> Result<Option<PackedWeight>> {
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
        let packed = PackedB::pack(&self.gpu, self.dtype, &w.buffer, n, k)?;
        Ok(Some(PackedWeight {
            packed: Arc::new(packed),
            gpu: self.gpu.clone(),
        }))
    }

    /// `act(alpha · self·wᵀ + bias) + residual` with a packed `[N, K]` weight: `self`'s last
    /// axis is K.
    pub fn matmul_packed(&self, w: &PackedWeight, opts: &MatmulOptions<'_>) -> Result<Tensor> {
        if !Arc::ptr_eq(&self.gpu, &w.gpu) {
            return Err(TensorError::Device { op: "matmul" });
        }
        self.matmul_any(MatmulRhs::Packed(w), opts)
    }

    fn matmul_any(&self, rhs: MatmulRhs<'_>, opts: &MatmulOptions<'_>) -> Result<Tensor> {
        const OP: &str = "matmul";
        let packed_shape;
        let other_shape: &[usize] = match rhs {
            MatmulRhs::Tensor(t) => &t.shape,
            MatmulRhs::Packed(p) => {
                let (n, k) = p.packed.shape();
                packed_shape = [k, n];
                &packed_shape
            }
        };
        let (ra, rb) = (self.shape.len(), other_shape.len());
        if ra < 2 || rb < 2 {
            return Err(TensorError::Shape {
                op: OP,
                detail: format!(
                    "both operands need at least 2 dimensions, got {:?} and {:?}",
                    self.shape, other_shape
                ),
            });
        }
        let (m, k) = (self.shape[ra - 2], self.shape[ra - 1]);
        let (kb, n) = (other_shape[rb - 2], other_shape[rb - 1]);
        if k != kb {
            return Err(TensorError::Shape {
                op: OP,
                detail: format!(
                    "inner dimensions differ: {:?} · {:?} ({k} vs {kb})",
                    self.shape, other_shape
                ),
            });
        }
        let lead_a = &self.shape[..ra - 2];
        let lead_b = &other_shape[..rb - 2];
        let batch_b: usize = lead_b.iter().product();
        if batch_b != 1 && lead_a != lead_b {
            return Err(TensorError::Shape {
                op: OP,
                detail: format!(
                    "batch dimensions differ: {:?} · {:?}; B must have A's batch dimensions or none",
                    self.shape, other_shape
                ),
            });
        }
        let batch_a: usize = lead_a.iter().product();
        let mut out_shape = lead_a.to_vec();
        out_shape.extend([m, n]);
        if let Some(bias) = opts.bias {
            self.same_device(OP, bias)?;
            if bias.numel() != n || bias.shape.len() != 1 {
                return Err(TensorError::Shape {
                    op: OP,
                    detail: format!("bias must be [{n}], got {:?}", bias.shape),
                });
            }
        }
        let mut broadcast_residual = false;
        if let Some(res) = opts.residual {
            self.same_device(OP, res)?;
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
        let a = self.contiguous()?;
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
            dtype: self.dtype,
            variant: opts.variant,
        };
        let out = Tensor::empty(&self.gpu, &out_shape, self.dtype)?;
        matmul::matmul(
            &self.gpu,
            &spec,
            &MatmulArgs {
                a: &a.buffer,
                b: match (&b, rhs) {
                    (Some(b), _) => MatmulB::Buffer(&b.buffer),
                    (None, MatmulRhs::Packed(p)) => MatmulB::Packed(&p.packed),
                    (None, MatmulRhs::Tensor(t)) => MatmulB::Buffer(&t.buffer),
                },
                bias: bias.as_ref().map(|t| &*t.buffer),
                residual: residual.as_ref().map(|t| &*t.buffer),
                out: &out.buffer,
            },
        )?;
        Ok(out)
    }
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
