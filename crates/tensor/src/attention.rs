//! Fused attention and the views that feed it.

use tessera_kernels::attention::{self, AttentionArgs, AttentionSpec, AttentionVariant, HeadView};

use crate::error::{Result, TensorError};
use crate::tensor::Tensor;

/// How the four dimensions of Q, K and V are ordered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttentionLayout {
    /// `[batch, seq, heads, head_dim]`: a projection's output split into heads, no transpose.
    #[default]
    Bshd,
    /// `[batch, heads, seq, head_dim]`.
    Bhsd,
}

/// Options of [`Tensor::attention`].
#[derive(Clone, Copy, Debug, Default)]
pub struct AttentionOptions<'a> {
    /// Dimension order of q, k and v.
    pub layout: AttentionLayout,
    /// Factor on q·k; `None` means 1/√head_dim.
    pub scale: Option<f32>,
    /// Causal mask (ends aligned: the last query sees every key).
    pub causal: bool,
    /// Keys visible per batch entry (padding mask).
    pub key_lens: Option<&'a [u32]>,
    /// Added to the scores: `[B or 1, H or 1, S_q, S_k]`, size-1 dimensions broadcast.
    pub bias: Option<&'a Tensor>,
    /// Kernel choice; `Auto` picks by adapter and shape.
    pub variant: AttentionVariant,
}

impl Tensor {
    /// A view of `len` entries of dimension `axis` from `start` (no copy).
    pub fn narrow(&self, axis: usize, start: usize, len: usize) -> Result<Tensor> {
        let shape = self.shape();
        if axis >= shape.len() || start + len > shape[axis] || len == 0 {
            return Err(TensorError::Shape {
                op: "narrow",
                detail: format!(
                    "[{start}, {}) of axis {axis} is not inside {shape:?}",
                    start + len
                ),
            });
        }
        let mut new_shape = shape.to_vec();
        new_shape[axis] = len;
        let offset = self.offset() + start * self.strides()[axis];
        Ok(self.view_as(new_shape, self.strides().to_vec(), offset))
    }

    /// A view with dimension `axis` split into `sizes` (their product must be its size).
    pub fn unflatten(&self, axis: usize, sizes: &[usize]) -> Result<Tensor> {
        let shape = self.shape();
        if axis >= shape.len()
            || sizes.iter().product::<usize>() != shape[axis]
            || shape.len() - 1 + sizes.len() > crate::MAX_DIMS
        {
            return Err(TensorError::Shape {
                op: "unflatten",
                detail: format!("cannot split axis {axis} of {shape:?} into {sizes:?}"),
            });
        }
        let stride = self.strides()[axis];
        let mut new_shape = shape[..axis].to_vec();
        let mut new_strides = self.strides()[..axis].to_vec();
        for (i, &s) in sizes.iter().enumerate() {
            new_shape.push(s);
            new_strides.push(stride * sizes[i + 1..].iter().product::<usize>());
        }
        new_shape.extend_from_slice(&shape[axis + 1..]);
        new_strides.extend_from_slice(&self.strides()[axis + 1..]);
        Ok(self.view_as(new_shape, new_strides, self.offset()))
    }

    fn head_view(&self, op: &'static str, layout: AttentionLayout) -> Result<HeadView> {
        let st = self.strides();
        if self.shape().len() != 4 || st[3] != 1 {
            return Err(TensorError::Shape {
                op,
                detail: format!(
                    "q, k and v must be 4-D with contiguous last dimension, got {:?} strides {:?}",
                    self.shape(),
                    st
                ),
            });
        }
        let (head, seq) = match layout {
            AttentionLayout::Bshd => (st[2], st[1]),
            AttentionLayout::Bhsd => (st[1], st[2]),
        };
        Ok(HeadView {
            offset: self.offset(),
            batch: st[0],
            head,
            seq,
        })
    }

    /// Fused attention `softmax(scale·QKᵀ + bias + masks)·V` per batch entry and head; the
    /// result is `[batch, q_len, heads, head_dim]` (reshape to `[batch, q_len, heads·head_dim]`
    /// for the output projection). K and V must agree in every size; Q may have its own length.
    pub fn attention(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        opts: &AttentionOptions<'_>,
    ) -> Result<Tensor> {
        const OP: &str = "attention";
        q.same_device(OP, k)?;
        q.same_device(OP, v)?;
        let dims = |t: &Tensor| -> Result<(usize, usize, usize, usize)> {
            let s = t.shape();
            if s.len() != 4 {
                return Err(TensorError::Shape {
                    op: OP,
                    detail: format!("q, k and v must be 4-D, got {s:?}"),
                });
            }
            Ok(match opts.layout {
                AttentionLayout::Bshd => (s[0], s[2], s[1], s[3]),
                AttentionLayout::Bhsd => (s[0], s[1], s[2], s[3]),
            })
        };
        let (batch, heads, q_len, head_dim) = dims(q)?;
        let (kb, kh, k_len, kd) = dims(k)?;
        if (kb, kh, kd) != (batch, heads, head_dim) || dims(v)? != (kb, kh, k_len, kd) {
            return Err(TensorError::Shape {
                op: OP,
                detail: format!(
                    "q {:?}, k {:?} and v {:?} disagree in batch, heads or head_dim",
                    q.shape(),
                    k.shape(),
                    v.shape()
                ),
            });
        }
        let bias = match opts.bias {
            Some(bias) => {
                q.same_device(OP, bias)?;
                let (s, st) = (bias.shape(), bias.strides());
                let fits = s.len() == 4
                    && (s[0] == batch || s[0] == 1)
                    && (s[1] == heads || s[1] == 1)
                    && s[2] == q_len
                    && s[3] == k_len
                    && st[3] == 1;
                if !fits {
                    return Err(TensorError::Shape {
                        op: OP,
                        detail: format!(
                            "bias must be [{batch} or 1, {heads} or 1, {q_len}, {k_len}] with \
                             contiguous last dimension, got {s:?}"
                        ),
                    });
                }
                let view = HeadView {
                    offset: bias.offset(),
                    batch: if s[0] == 1 { 0 } else { st[0] },
                    head: if s[1] == 1 { 0 } else { st[1] },
                    seq: st[2],
                };
                Some((bias, view))
            }
            None => None,
        };
        let spec = AttentionSpec {
            batch,
            heads,
            q_len,
            k_len,
            head_dim,
            scale: opts.scale.unwrap_or(1.0 / (head_dim as f32).sqrt()),
            causal: opts.causal,
            dtype: q.dtype(),
            variant: opts.variant,
        };
        let out = Tensor::empty(q.gpu(), &[batch, q_len, heads, head_dim], q.dtype())?;
        attention::attention(
            q.gpu(),
            &spec,
            &AttentionArgs {
                q: (q.buffer(), q.head_view(OP, opts.layout)?),
                k: (k.buffer(), k.head_view(OP, opts.layout)?),
                v: (v.buffer(), v.head_view(OP, opts.layout)?),
                bias: bias.map(|(t, view)| (t.buffer(), view)),
                key_lens: opts.key_lens,
                out: out.buffer(),
            },
        )?;
        Ok(out)
    }
}
