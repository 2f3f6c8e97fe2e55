//! Elementwise, normalisation, gather and concat ops on [`Tensor`].

use std::sync::Arc;

use tessera_kernels::copy::{copy_strided, StridedView};
use tessera_kernels::elementwise::{self, BinaryOp};
use tessera_kernels::embedding;
use tessera_kernels::grn::{grn, GrnArgs};
use tessera_kernels::matmul::Activation;
use tessera_kernels::norm::{self, NormArgs, NormKind, NormSpec};
use tessera_kernels::sample::{sample, Guidance};
use tessera_kernels::timestamp::timestamp_pick;
use tessera_kernels::topk;
use tessera_kernels::wait;
use tessera_kernels::{DType, Gpu};

use crate::error::{Result, TensorError};
use crate::tensor::Tensor;

/// The shape two shapes broadcast to (NumPy rules: aligned at the right, sizes equal or 1).
pub fn broadcast_shape(op: &'static str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for d in 0..rank {
        let x = if d + a.len() >= rank {
            a[d + a.len() - rank]
        } else {
            1
        };
        let y = if d + b.len() >= rank {
            b[d + b.len() - rank]
        } else {
            1
        };
        out[d] = match (x, y) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => {
                return Err(TensorError::Shape {
                    op,
                    detail: format!("shapes {a:?} and {b:?} do not broadcast"),
                })
            }
        };
    }
    Ok(out)
}

impl Tensor {
    /// This tensor's elements as a view of `shape` (which it broadcasts to): broadcast
    /// dimensions get stride 0.
    fn broadcast_view(&self, shape: &[usize]) -> StridedView {
        let pad = shape.len() - self.shape().len();
        let strides = (0..shape.len())
            .map(|d| {
                if d < pad || self.shape()[d - pad] == 1 {
                    0
                } else {
                    self.strides()[d - pad]
                }
            })
            .collect();
        StridedView {
            shape: shape.to_vec(),
            strides,
            offset: self.offset(),
        }
    }

    /// `act(self ∘ other)` elementwise with broadcasting.
    pub fn binary(&self, op: BinaryOp, other: &Tensor, act: Activation) -> Result<Tensor> {
        self.same_device("binary", other)?;
        let shape = broadcast_shape("binary", self.shape(), other.shape())?;
        let out = Tensor::empty(self.gpu(), &shape, self.dtype())?;
        elementwise::binary(
            self.gpu(),
            self.dtype(),
            op,
            act,
            self.buffer(),
            &self.broadcast_view(&shape),
            other.buffer(),
            &other.broadcast_view(&shape),
            out.buffer(),
        )?;
        Ok(out)
    }

    /// `self + other` with broadcasting.
    pub fn add(&self, other: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Add, other, Activation::None)
    }

    /// `self · other` elementwise with broadcasting.
    pub fn mul(&self, other: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Mul, other, Activation::None)
    }

    /// `self − other` with broadcasting.
    pub fn sub(&self, other: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Sub, other, Activation::None)
    }

    /// `act(scale · self)` elementwise (a contiguous result).
    pub fn map(&self, act: Activation, scale: f32) -> Result<Tensor> {
        let out = Tensor::empty(self.gpu(), self.shape(), self.dtype())?;
        elementwise::unary(
            self.gpu(),
            self.dtype(),
            act,
            scale,
            self.buffer(),
            &self.view(),
            out.buffer(),
        )?;
        Ok(out)
    }

    /// `act(self)` elementwise.
    pub fn activation(&self, act: Activation) -> Result<Tensor> {
        self.map(act, 1.0)
    }

    /// `scale · self`.
    pub fn scale(&self, scale: f32) -> Result<Tensor> {
        self.map(Activation::None, scale)
    }

    fn check_affine(&self, op: &'static str, t: Option<&Tensor>, len: usize) -> Result<()> {
        if let Some(t) = t {
            self.same_device(op, t)?;
            if t.shape() != [len] {
                return Err(TensorError::Shape {
                    op,
                    detail: format!("parameter must be [{len}], got {:?}", t.shape()),
                });
            }
        }
        Ok(())
    }

    fn rows(&self) -> (usize, usize) {
        let cols = *self
            .shape()
            .last()
            .expect("tensors have at least one dimension");
        (self.numel() / cols.max(1), cols)
    }

    /// A [`NormSpec`] over `rows × cols` with the rest at their plain values.
    fn norm_spec(kind: NormKind, rows: usize, cols: usize) -> NormSpec {
        NormSpec {
            kind,
            rows,
            cols,
            groups: None,
            affine_rows: None,
            activation: Activation::None,
        }
    }

    fn run_norm(
        &self,
        op: &'static str,
        spec: NormSpec,
        residual: Option<&Tensor>,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let x = self.contiguous()?;
        let residual = match residual {
            Some(r) => {
                self.same_device(op, r)?;
                if r.shape() != self.shape() {
                    return Err(TensorError::Shape {
                        op,
                        detail: format!("residual must be {:?}, got {:?}", self.shape(), r.shape()),
                    });
                }
                Some(r.contiguous()?)
            }
            None => None,
        };
        let weight = weight.map(Tensor::contiguous).transpose()?;
        let bias = bias.map(Tensor::contiguous).transpose()?;
        let out = Tensor::empty(self.gpu(), self.shape(), self.dtype())?;
        let sum = match residual {
            Some(_) => Some(Tensor::empty(self.gpu(), self.shape(), self.dtype())?),
            None => None,
        };
        norm::norm(
            self.gpu(),
            self.dtype(),
            &spec,
            &NormArgs {
                x: x.buffer(),
                residual: residual
                    .as_ref()
                    .zip(sum.as_ref())
                    .map(|(r, s)| (r.buffer(), s.buffer())),
                weight: weight.as_ref().map(Tensor::buffer),
                bias: bias.as_ref().map(Tensor::buffer),
                out: out.buffer(),
            },
        )?;
        Ok((out, sum))
    }

    /// LayerNorm over the last axis with optional affine `weight` and `bias` (`[last]`).
    pub fn layer_norm(
        &self,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f32,
    ) -> Result<Tensor> {
        let (rows, cols) = self.rows();
        self.check_affine("layer_norm", weight, cols)?;
        self.check_affine("layer_norm", bias, cols)?;
        let kind = NormKind::LayerNorm { eps };
        Ok(self
            .run_norm(
                "layer_norm",
                Self::norm_spec(kind, rows, cols),
                None,
                weight,
                bias,
            )?
            .0)
    }

    /// `(self + residual, layer_norm(self + residual))` in one dispatch: the residual stream and
    /// the next block's normalised input of a pre-LN transformer.
    pub fn add_layer_norm(
        &self,
        residual: &Tensor,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f32,
    ) -> Result<(Tensor, Tensor)> {
        let (rows, cols) = self.rows();
        self.check_affine("add_layer_norm", weight, cols)?;
        self.check_affine("add_layer_norm", bias, cols)?;
        let kind = NormKind::LayerNorm { eps };
        let (out, sum) = self.run_norm(
            "add_layer_norm",
            Self::norm_spec(kind, rows, cols),
            Some(residual),
            weight,
            bias,
        )?;
        Ok((sum.expect("a residual gives a sum"), out))
    }

    /// RMSNorm over the last axis with an optional `weight` (`[last]`).
    pub fn rms_norm(&self, weight: Option<&Tensor>, eps: f32) -> Result<Tensor> {
        let (rows, cols) = self.rows();
        self.check_affine("rms_norm", weight, cols)?;
        let kind = NormKind::RmsNorm { eps };
        Ok(self
            .run_norm(
                "rms_norm",
                Self::norm_spec(kind, rows, cols),
                None,
                weight,
                None,
            )?
            .0)
    }

    /// Adaptive normalisation of `[batch, rows, dim]`: RMSNorm (or LayerNorm with
    /// `layer_norm`) over the last axis with a weight and a bias per batch element, `[batch,
    /// dim]` each — `norm(x)·(1 + scale) + shift` with the scale (and the norm's own weight)
    /// folded into `weight` and the shift as `bias`, in one pass.
    pub fn adaptive_norm(
        &self,
        layer_norm: bool,
        weight: &Tensor,
        bias: &Tensor,
        eps: f32,
    ) -> Result<Tensor> {
        const OP: &str = "adaptive_norm";
        let s = self.shape();
        if s.len() != 3 || weight.shape() != [s[0], s[2]] || bias.shape() != [s[0], s[2]] {
            return Err(TensorError::Shape {
                op: OP,
                detail: format!(
                    "x must be [batch, rows, dim] and weight and bias [batch, dim], got {s:?}, \
                     {:?} and {:?}",
                    weight.shape(),
                    bias.shape()
                ),
            });
        }
        self.same_device(OP, weight)?;
        self.same_device(OP, bias)?;
        let kind = if layer_norm {
            NormKind::LayerNorm { eps }
        } else {
            NormKind::RmsNorm { eps }
        };
        Ok(self
            .run_norm(
                OP,
                NormSpec {
                    affine_rows: Some(s[1]),
                    ..Self::norm_spec(kind, s[0] * s[1], s[2])
                },
                None,
                Some(weight),
                Some(bias),
            )?
            .0)
    }

    /// GroupNorm of `[N, C, ...]` (any spatial dimensions) over `groups` groups of channels, with
    /// optional per-channel `weight` and `bias` (`[C]`), as `torch.nn.GroupNorm`.
    pub fn group_norm(
        &self,
        groups: usize,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f32,
    ) -> Result<Tensor> {
        self.group_norm_with(groups, weight, bias, eps, Activation::None)
    }

    /// [`Tensor::group_norm`] followed by `activation` in the same pass (a VQ-GAN's
    /// GroupNorm + SiLU).
    pub fn group_norm_with(
        &self,
        groups: usize,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f32,
        activation: Activation,
    ) -> Result<Tensor> {
        let shape = self.shape();
        if shape.len() < 2 || groups == 0 || shape[1] % groups != 0 {
            return Err(TensorError::Shape {
                op: "group_norm",
                detail: format!("needs [N, C, ...] with C divisible by {groups}, got {shape:?}"),
            });
        }
        let (n, c) = (shape[0], shape[1]);
        let hw: usize = shape[2..].iter().product();
        self.check_affine("group_norm", weight, c)?;
        self.check_affine("group_norm", bias, c)?;
        let kind = NormKind::LayerNorm { eps };
        let cols = c / groups * hw;
        Ok(self
            .run_norm(
                "group_norm",
                NormSpec {
                    groups: Some((groups, hw)),
                    activation,
                    ..Self::norm_spec(kind, n * groups, cols)
                },
                None,
                weight,
                bias,
            )?
            .0)
    }

    /// Softmax over the last axis of `scale · self`.
    pub fn softmax(&self, scale: f32) -> Result<Tensor> {
        let (rows, cols) = self.rows();
        let kind = NormKind::Softmax { scale };
        Ok(self
            .run_norm(
                "softmax",
                Self::norm_spec(kind, rows, cols),
                None,
                None,
                None,
            )?
            .0)
    }

    /// Rows of a `[vocab, dim]` table gathered by token id: `[ids.len(), dim]`.
    pub fn embedding(&self, ids: &[u32]) -> Result<Tensor> {
        if self.shape().len() != 2 {
            return Err(TensorError::Shape {
                op: "embedding",
                detail: format!("table must be [vocab, dim], got {:?}", self.shape()),
            });
        }
        if ids.is_empty() {
            return Err(TensorError::Shape {
                op: "embedding",
                detail: "no token ids".into(),
            });
        }
        let (vocab, dim) = (self.shape()[0], self.shape()[1]);
        let table = self.contiguous()?;
        let out = Tensor::empty(self.gpu(), &[ids.len(), dim], self.dtype())?;
        embedding::embedding(
            self.gpu(),
            self.dtype(),
            table.buffer(),
            vocab,
            dim,
            ids,
            out.buffer(),
        )?;
        Ok(out)
    }

    /// Tensors of one rank and dtype joined along `axis` (other sizes equal).
    pub fn concat(tensors: &[&Tensor], axis: usize) -> Result<Tensor> {
        let first = tensors.first().ok_or(TensorError::Shape {
            op: "concat",
            detail: "nothing to concatenate".into(),
        })?;
        let rank = first.shape().len();
        if axis >= rank {
            return Err(TensorError::Shape {
                op: "concat",
                detail: format!("axis {axis} does not exist in shape {:?}", first.shape()),
            });
        }
        let mut shape = first.shape().to_vec();
        shape[axis] = 0;
        for t in tensors {
            first.same_device("concat", t)?;
            let same_rest = t.shape().len() == rank
                && (0..rank).all(|d| d == axis || t.shape()[d] == first.shape()[d]);
            if !same_rest {
                return Err(TensorError::Shape {
                    op: "concat",
                    detail: format!(
                        "{:?} and {:?} differ outside axis {axis}",
                        first.shape(),
                        t.shape()
                    ),
                });
            }
            shape[axis] += t.shape()[axis];
        }
        let out = Tensor::empty(first.gpu(), &shape, first.dtype())?;
        let full = StridedView::contiguous(&shape);
        let mut start = 0;
        for t in tensors {
            let dst = StridedView {
                shape: t.shape().to_vec(),
                strides: full.strides.clone(),
                offset: start * full.strides[axis],
            };
            copy_strided(
                t.gpu(),
                t.dtype(),
                t.buffer(),
                &t.view(),
                out.buffer(),
                &dst,
            )?;
            start += t.shape()[axis];
        }
        Ok(out)
    }

    /// The `k` largest values of each row (last axis) with their indices, best first (ties
    /// keep the lower index): `(values [.., k], indices)`, the indices read back to the host.
    pub fn topk(&self, k: usize) -> Result<(Tensor, Vec<u32>)> {
        wait(self.topk_async(k))
    }

    /// [`Tensor::topk`] as a future, which a browser awaits.
    pub async fn topk_async(&self, k: usize) -> Result<(Tensor, Vec<u32>)> {
        let (rows, cols) = self.rows();
        let x = self.contiguous()?;
        let mut shape = self.shape().to_vec();
        *shape.last_mut().expect("at least one dimension") = k;
        let values = Tensor::empty(self.gpu(), &shape, self.dtype())?;
        let indices = self.gpu().alloc("topk", (rows * k * 4) as u64)?;
        topk::topk(
            self.gpu(),
            self.dtype(),
            x.buffer(),
            rows,
            cols,
            k,
            values.buffer(),
            &indices,
        )?;
        let indices = self.gpu().read_u32_async(&indices, rows * k).await?;
        Ok((values, indices))
    }

    /// Global response normalisation (ConvNeXt-V2) of channels-last `[batch, positions,
    /// channels]` with `gamma` and `beta` (`[channels]`): `γ·(x·nx) + β + x`, `nx` the L2 norm
    /// over positions divided by its mean over channels (+1e-6).
    pub fn grn(&self, gamma: &Tensor, beta: &Tensor) -> Result<Tensor> {
        let s = self.shape();
        if s.len() != 3 {
            return Err(TensorError::Shape {
                op: "grn",
                detail: format!("input must be [batch, positions, channels], got {s:?}"),
            });
        }
        self.check_affine("grn", Some(gamma), s[2])?;
        self.check_affine("grn", Some(beta), s[2])?;
        let (x, gamma, beta) = (self.contiguous()?, gamma.contiguous()?, beta.contiguous()?);
        let norms = self.gpu().alloc("grn", (s[0] * s[2] * 4) as u64)?;
        let out = Tensor::empty(self.gpu(), s, self.dtype())?;
        grn(
            self.gpu(),
            self.dtype(),
            [s[0], s[1], s[2]],
            &GrnArgs {
                x: x.buffer(),
                gamma: gamma.buffer(),
                beta: beta.buffer(),
                norms: &norms,
                out: out.buffer(),
            },
        )?;
        Ok(out)
    }

    /// One draw per row (last axis) of the softmax of these logits, at `uniforms[row]` ∈
    /// [0, 1) by the inverse of the cumulative distribution: `(indices, probabilities)`, read
    /// back. With `guidance = Some(g)` the tensor holds unconditional rows then as many
    /// conditional ones, and the draw is from `uncond + g·(cond − uncond)` (one per
    /// unconditional row).
    pub fn sample_rows(
        &self,
        uniforms: &[f32],
        guidance: Option<f32>,
    ) -> Result<(Vec<u32>, Vec<f32>)> {
        wait(self.sample_rows_async(uniforms, guidance))
    }

    /// [`Tensor::sample_rows`] as a future, which a browser awaits.
    pub async fn sample_rows_async(
        &self,
        uniforms: &[f32],
        guidance: Option<f32>,
    ) -> Result<(Vec<u32>, Vec<f32>)> {
        let (stored, cols) = self.rows();
        let rows = if guidance.is_some() {
            stored / 2
        } else {
            stored
        };
        if uniforms.len() != rows || (guidance.is_some() && stored % 2 != 0) {
            return Err(TensorError::Shape {
                op: "sample",
                detail: format!(
                    "{} uniforms for {rows} rows to draw from {:?}{}",
                    uniforms.len(),
                    self.shape(),
                    if guidance.is_some() {
                        " (halves: unconditional, conditional)"
                    } else {
                        ""
                    }
                ),
            });
        }
        let x = self.contiguous()?;
        let gpu = self.gpu();
        let u = gpu.upload("sample", bytemuck::cast_slice(uniforms))?;
        let picked = gpu.alloc("sample", (2 * rows * 4) as u64)?;
        sample(
            gpu,
            self.dtype(),
            x.buffer(),
            rows,
            cols,
            guidance.map(|scale| Guidance {
                cond_offset: rows,
                scale,
            }),
            &u,
            &picked,
        )?;
        read_picks(gpu, &picked, rows).await
    }

    /// Whisper's greedy pick under its timestamp rule, per row (last axis) of these logits plus
    /// `bias` (f32, this shape: the row's −∞ masks): the best column from `split` on (the
    /// timestamp tokens) when their log-sum-exp exceeds the best column before `split`, else
    /// the best column of the row, ties to the lower index (`split` = columns: a masked
    /// arg-max). Per row the index and its log-probability under the processed row (see
    /// [`tessera_kernels::timestamp::timestamp_pick`]), read back together.
    pub fn timestamp_pick(&self, bias: &Tensor, split: usize) -> Result<(Vec<u32>, Vec<f32>)> {
        wait(self.timestamp_pick_async(bias, split))
    }

    /// [`Tensor::timestamp_pick`] as a future, which a browser awaits.
    pub async fn timestamp_pick_async(
        &self,
        bias: &Tensor,
        split: usize,
    ) -> Result<(Vec<u32>, Vec<f32>)> {
        let (rows, cols) = self.rows();
        if bias.shape() != self.shape() || bias.dtype() != DType::F32 {
            return Err(TensorError::Shape {
                op: "timestamp_pick",
                detail: format!(
                    "bias {:?} ({:?}) for logits {:?}: needs the same shape in f32",
                    bias.shape(),
                    bias.dtype(),
                    self.shape()
                ),
            });
        }
        let (x, b) = (self.contiguous()?, bias.contiguous()?);
        let picked = self
            .gpu()
            .alloc("timestamp_pick", (2 * rows.max(1) * 4) as u64)?;
        timestamp_pick(
            self.gpu(),
            self.dtype(),
            x.buffer(),
            b.buffer(),
            rows,
            cols,
            split,
            &picked,
        )?;
        read_picks(self.gpu(), &picked, rows).await
    }

    /// The index of the largest value of each row (last axis), ties to the lower index.
    pub fn argmax(&self) -> Result<Vec<u32>> {
        wait(self.argmax_async())
    }

    /// [`Tensor::argmax`] as a future, which a browser awaits.
    pub async fn argmax_async(&self) -> Result<Vec<u32>> {
        Ok(self.topk_async(1).await?.1)
    }

    /// Whisper's sinusoidal position table `[length, channels]`.
    pub fn sinusoids(
        gpu: &Arc<Gpu>,
        length: usize,
        channels: usize,
        dtype: DType,
    ) -> Result<Tensor> {
        let table = embedding::sinusoids(length, channels)?;
        Tensor::from_slice(gpu, &table, &[length, channels], dtype)
    }
}

/// Reads back what a picking kernel wrote to `picked`: `rows` indices, then the bits of one
/// f32 per row.
async fn read_picks(
    gpu: &Gpu,
    picked: &tessera_kernels::GpuBuffer,
    rows: usize,
) -> Result<(Vec<u32>, Vec<f32>)> {
    let mut words = gpu.read_u32_async(picked, 2 * rows).await?;
    let values = words
        .split_off(rows)
        .into_iter()
        .map(f32::from_bits)
        .collect();
    Ok((words, values))
}
