//! The layers the transformer models share, loaded by Hugging Face key names.

use std::sync::Arc;

use tessera_tensor::{
    Activation, AttentionOptions, DType, Gpu, MatmulOptions, PackedMatrix, Tensor, TensorError,
};

use crate::error::{NnError, Result};
use crate::weights::Weights;

/// PyTorch's `nn.Linear`: `x · weightᵀ + bias`, weight `[out, in]` as the checkpoint stores it.
///
/// On adapters whose matmuls read textures (CPU drivers) the weight is packed once here and
/// kept only in that form.
#[derive(Debug)]
pub struct Linear {
    weight: LinearWeight,
    bias: Option<Tensor>,
    out_dim: usize,
    in_dim: usize,
}

#[derive(Debug)]
enum LinearWeight {
    Plain(Tensor),
    Packed(PackedMatrix),
    /// A weight past one buffer binding, as Linears over consecutive blocks of its rows (output
    /// features), their outputs concatenated.
    Split(Vec<Linear>),
}

impl Linear {
    /// `w.weight` `[out, in]` and, if `bias`, `w.bias` `[out]`.
    pub fn load(w: &Weights, in_dim: usize, out_dim: usize, bias: bool) -> Result<Self> {
        let weight = w.get("weight", &[out_dim, in_dim])?;
        let bias = if bias {
            Some(w.get("bias", &[out_dim])?)
        } else {
            None
        };
        Linear::new(weight, bias)
    }

    /// Several `[out, in]` projections stacked into one `[parts · out, in]` Linear (one matmul
    /// where the model has several of the same input): each part's weight, and its bias where
    /// `bias` says it has one (zeros for the others; no bias at all when none has one).
    pub fn load_stacked(
        parts: &[&Weights],
        bias: &[bool],
        in_dim: usize,
        out_dim: usize,
    ) -> Result<Self> {
        let weights = parts
            .iter()
            .map(|p| p.get("weight", &[out_dim, in_dim]))
            .collect::<Result<Vec<_>>>()?;
        let weight = Tensor::concat(&weights.iter().collect::<Vec<_>>(), 0)?;
        let bias = if bias.contains(&true) {
            let biases = parts
                .iter()
                .zip(bias)
                .map(|(p, &has_bias)| {
                    if has_bias {
                        p.get("bias", &[out_dim])
                    } else {
                        Ok(Tensor::zeros(p.gpu(), &[out_dim], p.dtype())?)
                    }
                })
                .collect::<Result<Vec<_>>>()?;
            Some(Tensor::concat(&biases.iter().collect::<Vec<_>>(), 0)?)
        } else {
            None
        };
        Linear::new(weight, bias)
    }

    /// The `[out, in]` weight `name` under `w`, without bias, in one piece when it fits a
    /// buffer binding and otherwise as blocks of rows that do (a vocabulary projection such as
    /// Whisper large's tied 51866 × 1280 head in f32 on an adapter that binds 128 MiB): the
    /// same product, its columns computed block by block.
    pub fn load_rows(w: &Weights, name: &str, out_dim: usize, in_dim: usize) -> Result<Self> {
        let row_bytes = (in_dim * w.dtype().size()) as u64;
        let gpu = w.gpu();
        if gpu
            .check_binding_size("linear", out_dim as u64 * row_bytes)
            .is_ok()
        {
            return Linear::new(w.get(name, &[out_dim, in_dim])?, None);
        }
        // Blocks of a multiple of 4 rows (the packed weights' quads), at most one binding.
        let block = ((gpu.max_binding() / row_bytes) as usize / 4 * 4).max(4);
        let values = w.get_host(name, &[out_dim, in_dim])?;
        let parts = values
            .chunks(block * in_dim)
            .map(|rows| {
                let t = Tensor::from_slice(gpu, rows, &[rows.len() / in_dim, in_dim], w.dtype())?;
                Linear::new(t, None)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Linear {
            weight: LinearWeight::Split(parts),
            bias: None,
            out_dim,
            in_dim,
        })
    }

    /// From tensors already on the GPU: weight `[out, in]`, bias `[out]`.
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        let (out_dim, in_dim) = match weight.shape() {
            &[o, i] => (o, i),
            s => {
                return Err(TensorError::Shape {
                    op: "linear",
                    detail: format!("weight must be [out, in], got {s:?}"),
                }
                .into())
            }
        };
        let weight = match weight.pack_weight()? {
            Some(packed) => LinearWeight::Packed(packed),
            None => LinearWeight::Plain(weight),
        };
        Ok(Linear {
            weight,
            bias,
            out_dim,
            in_dim,
        })
    }

    /// `x · weightᵀ + bias` over the last axis of `x`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(x, Activation::None, None)
    }

    /// `act(x · weightᵀ + bias) + residual` in one kernel.
    pub fn forward_with(
        &self,
        x: &Tensor,
        activation: Activation,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        let opts = self.options(activation, residual);
        Ok(match &self.weight {
            LinearWeight::Plain(w) => x.matmul_with(&w.t()?, &opts)?,
            LinearWeight::Packed(w) => x.matmul_packed(w, &opts)?,
            LinearWeight::Split(parts) => {
                let last = x.shape().len().max(1) - 1;
                let mut start = 0;
                let mut outs = Vec::with_capacity(parts.len());
                for p in parts {
                    let r = residual
                        .map(|r| r.narrow(last, start, p.out_dim)?.contiguous())
                        .transpose()?;
                    outs.push(p.forward_with(x, activation, r.as_ref())?);
                    start += p.out_dim;
                }
                Tensor::concat(&outs.iter().collect::<Vec<_>>(), last)?
            }
        })
    }

    /// `act(x · weightᵀ + bias)` written packed (`[rows, out]`, the leading axes of `x`
    /// flattened) for another packed layer to read ([`Linear::forward_packed`]); `None` where
    /// this layer's weight is not packed or the rows do not fit one texture.
    pub fn forward_to_packed(
        &self,
        x: &Tensor,
        activation: Activation,
    ) -> Result<Option<PackedMatrix>> {
        match &self.weight {
            LinearWeight::Packed(w) => {
                Ok(x.matmul_packed_to_packed(w, &self.options(activation, None))?)
            }
            LinearWeight::Plain(_) | LinearWeight::Split(_) => Ok(None),
        }
    }

    /// `x · weightᵀ + bias + residual` for a packed `[rows, in]` input; the residual is
    /// `[rows, out]`. Needs a packed weight ([`Linear::is_packed`]).
    pub fn forward_packed(&self, x: &PackedMatrix, residual: Option<&Tensor>) -> Result<Tensor> {
        match &self.weight {
            LinearWeight::Packed(w) => {
                Ok(x.matmul_packed(w, &self.options(Activation::None, residual))?)
            }
            LinearWeight::Plain(_) | LinearWeight::Split(_) => Err(TensorError::Shape {
                op: "linear",
                detail: "a packed input needs a packed weight in one piece".into(),
            }
            .into()),
        }
    }

    /// Whether the weight is packed for the texture matmuls (CPU drivers).
    pub fn is_packed(&self) -> bool {
        matches!(self.weight, LinearWeight::Packed(_))
    }

    fn options<'a>(
        &'a self,
        activation: Activation,
        residual: Option<&'a Tensor>,
    ) -> MatmulOptions<'a> {
        MatmulOptions {
            bias: self.bias.as_ref(),
            residual,
            activation,
            ..MatmulOptions::default()
        }
    }

    /// Output features.
    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// Multiply-adds per input row (for FLOP counts).
    pub fn macs(&self) -> usize {
        self.out_dim * self.in_dim
    }
}

/// `nn.LayerNorm` over the last axis.
#[derive(Debug)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl LayerNorm {
    /// `w.weight` and `w.bias`, both `[dim]`.
    pub fn load(w: &Weights, dim: usize, eps: f64) -> Result<Self> {
        Ok(LayerNorm {
            weight: w.get("weight", &[dim])?,
            bias: w.get("bias", &[dim])?,
            eps: eps as f32,
        })
    }

    /// The normalised `x`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.layer_norm(Some(&self.weight), Some(&self.bias), self.eps)?)
    }
}

/// Multi-head self-attention with the query, key and value projections fused into one matmul.
#[derive(Debug)]
pub struct SelfAttention {
    qkv: Linear,
    out: Linear,
    heads: usize,
}

/// Where the four projections of a [`SelfAttention`] live and which have a bias.
pub struct AttentionWeights<'a> {
    /// Query projection.
    pub q: &'a Weights,
    /// Key projection.
    pub k: &'a Weights,
    /// Value projection.
    pub v: &'a Weights,
    /// Output projection.
    pub out: &'a Weights,
    /// Whether q, k and v have biases (Whisper's key projection has none).
    pub qkv_bias: [bool; 3],
    /// Whether the output projection has a bias.
    pub out_bias: bool,
}

impl SelfAttention {
    /// Loads the projections (each `[hidden, hidden]`) and concatenates q, k and v into one
    /// `[3·hidden, hidden]` weight; a missing bias is zeros.
    pub fn load(w: &AttentionWeights<'_>, hidden: usize, heads: usize) -> Result<Self> {
        Ok(SelfAttention {
            qkv: Linear::load_stacked(&[w.q, w.k, w.v], &w.qkv_bias, hidden, hidden)?,
            out: Linear::load(w.out, hidden, hidden, w.out_bias)?,
            heads,
        })
    }

    /// `out_proj(attention(x)) + residual` for `x` `[batch, seq, hidden]`; `causal` for text
    /// towers. `x` is freed once the q/k/v projection has read it.
    pub fn forward(&self, x: Tensor, causal: bool, residual: Option<&Tensor>) -> Result<Tensor> {
        let (b, s, hidden) = (x.shape()[0], x.shape()[1], x.shape()[2]);
        let h = self.heads;
        let qkv = self.qkv.forward(&x)?.reshape(&[b, s, 3 * h, hidden / h])?;
        drop(x);
        let ctx = Tensor::attention(
            &qkv.narrow(2, 0, h)?,
            &qkv.narrow(2, h, h)?,
            &qkv.narrow(2, 2 * h, h)?,
            &AttentionOptions {
                causal,
                ..AttentionOptions::default()
            },
        )?;
        self.out
            .forward_with(&ctx.reshape(&[b, s, hidden])?, Activation::None, residual)
    }
}

/// The feed-forward block: `fc2(act(fc1(x)))`.
#[derive(Debug)]
pub struct Mlp {
    fc1: Linear,
    fc2: Linear,
    activation: Activation,
}

impl Mlp {
    /// From its two projections and the activation between them.
    pub fn new(fc1: Linear, fc2: Linear, activation: Activation) -> Self {
        Mlp {
            fc1,
            fc2,
            activation,
        }
    }

    /// `fc2(act(fc1(x))) + residual`, the activation and the residual fused into the matmuls;
    /// `x` is freed once `fc1` has read it.
    ///
    /// Where the weights are packed (CPU drivers), `fc1` writes the hidden activation, the
    /// largest of a transformer layer, packed for `fc2` to read: it never exists as a buffer
    /// and again as `fc2`'s staged copy.
    pub fn forward(&self, x: Tensor, residual: Option<&Tensor>) -> Result<Tensor> {
        if self.fc2.is_packed() {
            if let Some(h) = self.fc1.forward_to_packed(&x, self.activation)? {
                let mut shape = x.shape().to_vec();
                drop(x);
                *shape
                    .last_mut()
                    .expect("a matmul operand has 2 or more axes") = self.fc2.out_dim;
                let rows = h.shape()[0];
                let residual = residual
                    .map(|r| r.reshape(&[rows, self.fc2.out_dim]))
                    .transpose()?;
                return Ok(self
                    .fc2
                    .forward_packed(&h, residual.as_ref())?
                    .reshape(&shape)?);
            }
        }
        let h = self.fc1.forward_with(&x, self.activation, None)?;
        drop(x);
        self.fc2.forward_with(&h, Activation::None, residual)
    }
}

/// A pre-LayerNorm transformer layer (ViT, CLIP, Whisper encoder):
/// `h = x + attn(ln1(x)); out = h + mlp(ln2(h))`.
#[derive(Debug)]
pub struct PreLnBlock {
    /// Norm before attention.
    pub ln1: LayerNorm,
    /// Self-attention.
    pub attn: SelfAttention,
    /// Norm before the MLP.
    pub ln2: LayerNorm,
    /// Feed-forward block.
    pub mlp: Mlp,
}

impl PreLnBlock {
    /// The layer's output for `x` `[batch, seq, hidden]`. Taking `x` by value lets its buffer
    /// go back to the pool as soon as the attention's residual add has read it, and each norm's
    /// output as soon as its projection has: at the MLP only the residual stream, the MLP's
    /// hidden activation and the output are alive.
    pub fn forward(&self, x: Tensor, causal: bool) -> Result<Tensor> {
        let h = self.attn.forward(self.ln1.forward(&x)?, causal, Some(&x))?;
        drop(x);
        self.mlp.forward(self.ln2.forward(&h)?, Some(&h))
    }

    /// Multiply-adds of the layer for `tokens` rows of `seq` tokens each (matmuls and
    /// attention), for FLOP counts.
    pub fn macs(&self, batch: usize, seq: usize) -> usize {
        let hidden = self.attn.out.out_dim();
        let rows = batch * seq;
        rows * (self.attn.qkv.macs()
            + self.attn.out.macs()
            + self.mlp.fc1.macs()
            + self.mlp.fc2.macs())
            + 2 * batch * seq * seq * hidden
    }
}

/// PyTorch's `nn.Embedding`: rows of a `[vocab, dim]` table by token id. A table larger than
/// the adapter binds in one buffer (CLIP-L's 49408 × 768 in f32 is 145 MiB; lavapipe binds
/// 128) stays on the host and its rows are gathered there and uploaded (a few hundred rows a
/// forward); otherwise the gather runs on the GPU.
pub struct Embedding {
    table: Table,
    dim: usize,
    gpu: Arc<Gpu>,
    dtype: DType,
}

enum Table {
    Gpu(Tensor),
    Host { values: Vec<f32>, vocab: usize },
}

impl Embedding {
    /// The `[vocab, dim]` table `name` under `w`.
    pub fn load(w: &Weights, name: &str, vocab: usize, dim: usize) -> Result<Self> {
        let bytes = (vocab * dim * w.dtype().size()) as u64;
        let table = if w.gpu().check_binding_size("embedding", bytes).is_ok() {
            Table::Gpu(w.get(name, &[vocab, dim])?)
        } else {
            Table::Host {
                values: w.get_host(name, &[vocab, dim])?,
                vocab,
            }
        };
        Ok(Embedding {
            table,
            dim,
            gpu: w.gpu().clone(),
            dtype: w.dtype(),
        })
    }

    /// `[ids.len(), dim]`; an id past the vocabulary is an error.
    pub fn forward(&self, ids: &[u32]) -> Result<Tensor> {
        match &self.table {
            Table::Gpu(t) => Ok(t.embedding(ids)?),
            Table::Host { values, vocab } => {
                let d = self.dim;
                let mut rows = Vec::with_capacity(ids.len() * d);
                for &id in ids {
                    let i = id as usize;
                    if i >= *vocab {
                        return Err(NnError::Input(format!(
                            "token id {id} is outside the vocabulary of {vocab}"
                        )));
                    }
                    rows.extend_from_slice(&values[i * d..(i + 1) * d]);
                }
                Ok(Tensor::from_slice(
                    &self.gpu,
                    &rows,
                    &[ids.len(), d],
                    self.dtype,
                )?)
            }
        }
    }
}

/// Rows `index[i]` of a `[rows, dim]` tensor (pooling at a token: the class token, the EOS
/// token), as `[index.len(), dim]`.
pub fn gather_rows(x: &Tensor, index: &[u32]) -> Result<Tensor> {
    Ok(x.embedding(index)?)
}
