//! diffusers' `UVit2DModel`, the masked-token transformer of aMUSEd: token embedding, a block of
//! ConvNeXt and cross-attention layers (optionally downsampling), transformer layers modulated
//! by the pooled text embedding (`AdaLayerNormContinuous`), the mirrored block (optionally
//! upsampling) and the logits over the VQ codebook.
//!
//! Everything runs channels-last (`[batch, positions, channels]`); what depends on the prompt
//! only (projected text states, every cross-attention's keys and values, every modulation) is
//! computed once per generation in [`Conditioning`], not at each of the steps.

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use tessera_kernels::copy::StridedView;
use tessera_kernels::{DType, Gpu};
use tessera_nn::config::{head_dim, parse_json, positive, read_json};
use tessera_nn::{AttentionWeights, Linear, NnError, Result, SelfAttention, Weights};
use tessera_tensor::{Activation, AttentionOptions, BinaryOp, ConvOptions, Tensor};

/// The number of micro-conditioning values aMUSEd's pipeline passes (width, height, crop top,
/// crop left, aesthetic score).
pub const MICRO_CONDS: usize = 5;

/// `transformer/config.json` (diffusers' `UVit2DModel` defaults).
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct UVit2DConfig {
    /// `_class_name`: must be `UVit2DModel` when present.
    #[serde(rename = "_class_name")]
    pub class_name: Option<String>,
    /// Width of the transformer layers.
    pub hidden_size: usize,
    /// Whether linear and convolution layers have biases.
    pub use_bias: bool,
    /// Width of the pooled text embedding.
    pub cond_embed_dim: usize,
    /// Sinusoidal width of each micro-conditioning value.
    pub micro_cond_encode_dim: usize,
    /// Width of all micro-conditioning embeddings together.
    pub micro_cond_embed_dim: usize,
    /// Width of the text encoder's hidden states.
    pub encoder_hidden_size: usize,
    /// Token embeddings (the codebook, the mask token, padding).
    pub vocab_size: usize,
    /// VQ codebook entries: the logits' width.
    pub codebook_size: usize,
    /// Width of the token embedding.
    pub in_channels: usize,
    /// Width of the convolutional blocks.
    pub block_out_channels: usize,
    /// ConvNeXt + attention pairs per block.
    pub num_res_blocks: usize,
    /// Whether the first block halves the token grid (and the last doubles it back).
    pub downsample: bool,
    /// Whether the last block doubles the token grid.
    pub upsample: bool,
    /// Attention heads in the convolutional blocks.
    pub block_num_heads: usize,
    /// Transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads in the transformer layers.
    pub num_attention_heads: usize,
    /// GEGLU width of the transformer layers.
    pub intermediate_size: usize,
    /// RMSNorm epsilon.
    pub layer_norm_eps: f64,
    /// Whether the RMSNorms have weights.
    pub ln_elementwise_affine: bool,
    /// Token grid side at the model's native resolution.
    pub sample_size: usize,
}

impl Default for UVit2DConfig {
    fn default() -> Self {
        UVit2DConfig {
            class_name: None,
            hidden_size: 1024,
            use_bias: false,
            cond_embed_dim: 768,
            micro_cond_encode_dim: 256,
            micro_cond_embed_dim: 1280,
            encoder_hidden_size: 768,
            vocab_size: 8256,
            codebook_size: 8192,
            in_channels: 768,
            block_out_channels: 768,
            num_res_blocks: 3,
            downsample: false,
            upsample: false,
            block_num_heads: 12,
            num_hidden_layers: 22,
            num_attention_heads: 16,
            intermediate_size: 2816,
            layer_norm_eps: 1e-6,
            ln_elementwise_affine: true,
            sample_size: 64,
        }
    }
}

impl UVit2DConfig {
    /// `dir/config.json`, checked.
    pub fn load(dir: &Path) -> Result<Self> {
        let c: UVit2DConfig = read_json(&dir.join("config.json"), "UVit2DModel config")?;
        c.check()?;
        Ok(c)
    }

    /// A `config.json`'s text (what a browser fetched), parsed and checked.
    pub fn from_json(text: &str) -> Result<Self> {
        let c: UVit2DConfig = parse_json(text, Path::new("config.json"), "UVit2DModel config")?;
        c.check()?;
        Ok(c)
    }

    /// Refuses values the model cannot run.
    pub fn check(&self) -> Result<()> {
        if let Some(name) = &self.class_name {
            if name != "UVit2DModel" {
                return Err(NnError::config(
                    "_class_name",
                    format!("{name:?}: the transformer must be a UVit2DModel"),
                ));
            }
        }
        for (field, v) in [
            ("hidden_size", self.hidden_size),
            ("cond_embed_dim", self.cond_embed_dim),
            ("encoder_hidden_size", self.encoder_hidden_size),
            ("codebook_size", self.codebook_size),
            ("in_channels", self.in_channels),
            ("block_out_channels", self.block_out_channels),
            ("intermediate_size", self.intermediate_size),
            ("sample_size", self.sample_size),
        ] {
            positive(field, v)?;
        }
        head_dim(
            "num_attention_heads",
            self.hidden_size,
            self.num_attention_heads,
        )?;
        head_dim(
            "block_num_heads",
            self.block_out_channels,
            self.block_num_heads,
        )?;
        if self.micro_cond_encode_dim == 0 || self.micro_cond_encode_dim % 2 != 0 {
            return Err(NnError::config(
                "micro_cond_encode_dim",
                format!("{} must be even and positive", self.micro_cond_encode_dim),
            ));
        }
        if self.micro_cond_embed_dim != MICRO_CONDS * self.micro_cond_encode_dim {
            return Err(NnError::config(
                "micro_cond_embed_dim",
                format!(
                    "{} is not {MICRO_CONDS} micro-conditions × micro_cond_encode_dim {}",
                    self.micro_cond_embed_dim, self.micro_cond_encode_dim
                ),
            ));
        }
        if self.vocab_size <= self.codebook_size {
            return Err(NnError::config(
                "vocab_size",
                format!(
                    "{} leaves no mask token after codebook_size {}",
                    self.vocab_size, self.codebook_size
                ),
            ));
        }
        if self.downsample != self.upsample {
            return Err(NnError::config(
                "upsample",
                "downsample and upsample must agree (the token grid must come back to its size)",
            ));
        }
        if !(self.layer_norm_eps > 0.0 && self.layer_norm_eps.is_finite()) {
            return Err(NnError::config("layer_norm_eps", "must be positive"));
        }
        Ok(())
    }
}

/// RMSNorm (or LayerNorm without a bias) over the last axis, with or without a weight.
struct Norm {
    weight: Option<Tensor>,
    eps: f32,
    layer_norm: bool,
}

impl Norm {
    fn load(w: &Weights, dim: usize, eps: f64, affine: bool) -> Result<Self> {
        Ok(Norm {
            weight: if affine {
                Some(w.get("weight", &[dim])?)
            } else {
                None
            },
            eps: eps as f32,
            layer_norm: false,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(if self.layer_norm {
            x.layer_norm(self.weight.as_ref(), None, self.eps)?
        } else {
            x.rms_norm(self.weight.as_ref(), self.eps)?
        })
    }
}

/// A 1×1 convolution (`[out, in, 1, 1]`) as the Linear it is on channels-last input.
fn conv1x1(w: &Weights, in_dim: usize, out_dim: usize, bias: bool) -> Result<Linear> {
    let weight = w
        .get("weight", &[out_dim, in_dim, 1, 1])?
        .reshape(&[out_dim, in_dim])?;
    let bias = if bias {
        Some(w.get("bias", &[out_dim])?)
    } else {
        None
    };
    Linear::new(weight, bias)
}

/// `x · (1 + scale) + shift`, `x` `[batch, positions, dim]`, the two `[batch, 1, dim]`.
fn modulate(x: &Tensor, m: &Modulation) -> Result<Tensor> {
    Ok(x.mul(&m.one_plus_scale)?.add(&m.shift)?)
}

/// `(1 + scale, shift)` of an adaptive norm, from `linear(silu(cond))` `[batch, 2·dim]`.
struct Modulation {
    one_plus_scale: Tensor,
    shift: Tensor,
}

impl Modulation {
    fn new(linear: &Linear, cond: &Tensor) -> Result<Self> {
        let b = cond.shape()[0];
        let emb = linear.forward(&cond.activation(Activation::Silu)?)?;
        let dim = emb.shape()[1] / 2;
        let one = Tensor::from_slice(cond.gpu(), &[1.0], &[1], cond.dtype())?;
        Ok(Modulation {
            one_plus_scale: emb.narrow(1, 0, dim)?.add(&one)?.reshape(&[b, 1, dim])?,
            shift: emb
                .narrow(1, dim, dim)?
                .contiguous()?
                .reshape(&[b, 1, dim])?,
        })
    }
}

/// diffusers' `Attention` as a cross-attention (no norms, no masks): the query projection, the
/// key and value projections stacked (run once per generation), heads, output projection.
struct CrossAttention {
    q: Linear,
    kv: Linear,
    out: Linear,
    heads: usize,
}

/// Keys and values of a cross-attention, `[batch, len, heads, head_dim]` views of one buffer.
struct KeyValues {
    kv: Tensor,
    heads: usize,
}

impl KeyValues {
    fn key(&self) -> Result<Tensor> {
        Ok(self.kv.narrow(2, 0, self.heads)?)
    }
    fn value(&self) -> Result<Tensor> {
        Ok(self.kv.narrow(2, self.heads, self.heads)?)
    }
}

impl CrossAttention {
    fn load(w: &Weights, dim: usize, heads: usize, bias: bool) -> Result<Self> {
        Ok(CrossAttention {
            q: Linear::load(&w.pp("to_q"), dim, dim, bias)?,
            kv: Linear::load_stacked(&[&w.pp("to_k"), &w.pp("to_v")], &[bias; 2], dim, dim)?,
            out: Linear::load(&w.pp("to_out.0"), dim, dim, bias)?,
            heads,
        })
    }

    /// Keys and values of `context` `[batch, len, dim]`.
    fn key_values(&self, context: &Tensor) -> Result<KeyValues> {
        let (b, l, d) = (context.shape()[0], context.shape()[1], context.shape()[2]);
        let h = self.heads;
        Ok(KeyValues {
            kv: self.kv.forward(context)?.reshape(&[b, l, 2 * h, d / h])?,
            heads: h,
        })
    }

    /// `out(attention(q(x), k, v)) + residual`.
    fn forward(&self, x: &Tensor, kv: &KeyValues, residual: &Tensor) -> Result<Tensor> {
        let (b, s, d) = (x.shape()[0], x.shape()[1], x.shape()[2]);
        let h = self.heads;
        let q = self.q.forward(x)?.reshape(&[b, s, h, d / h])?;
        let ctx = Tensor::attention(&q, &kv.key()?, &kv.value()?, &AttentionOptions::default())?;
        self.out
            .forward_with(&ctx.reshape(&[b, s, d])?, Activation::None, Some(residual))
    }
}

/// `ConvNextBlock`: depthwise 3×3, RMSNorm, Linear → GELU → GRN → Linear, residual, then
/// modulation by the pooled condition.
struct ConvNextBlock {
    depthwise: Tensor,
    depthwise_bias: Option<Tensor>,
    norm: Norm,
    linear_1: Linear,
    grn_gamma: Tensor,
    grn_beta: Tensor,
    linear_2: Linear,
    cond_mapper: Linear,
}

impl ConvNextBlock {
    fn load(w: &Weights, c: &UVit2DConfig) -> Result<Self> {
        let ch = c.block_out_channels;
        let bias = c.use_bias;
        Ok(ConvNextBlock {
            depthwise: w.get("depthwise.weight", &[ch, 1, 3, 3])?,
            depthwise_bias: if bias {
                Some(w.get("depthwise.bias", &[ch])?)
            } else {
                None
            },
            norm: Norm::load(&w.pp("norm"), ch, c.layer_norm_eps, c.ln_elementwise_affine)?,
            linear_1: Linear::load(&w.pp("channelwise_linear_1"), ch, 4 * ch, bias)?,
            grn_gamma: w
                .get("channelwise_norm.gamma", &[1, 1, 1, 4 * ch])?
                .reshape(&[4 * ch])?,
            grn_beta: w
                .get("channelwise_norm.beta", &[1, 1, 1, 4 * ch])?
                .reshape(&[4 * ch])?,
            linear_2: Linear::load(&w.pp("channelwise_linear_2"), 4 * ch, ch, bias)?,
            cond_mapper: Linear::load(&w.pp("cond_embeds_mapper"), c.hidden_size, 2 * ch, bias)?,
        })
    }

    fn forward(&self, x: &Tensor, (h, w): (usize, usize), m: &Modulation) -> Result<Tensor> {
        let (b, c) = (x.shape()[0], x.shape()[2]);
        let nchw = x.reshape(&[b, h, w, c])?.transpose(1, 3)?.transpose(2, 3)?;
        let y = nchw.conv2d(
            &self.depthwise,
            &ConvOptions {
                padding: (1, 1),
                groups: c,
                bias: self.depthwise_bias.as_ref(),
                channels_last: true,
                ..ConvOptions::default()
            },
        )?;
        let y = self.norm.forward(&y)?;
        let y = self.linear_1.forward_with(&y, Activation::GeluErf, None)?;
        let y = y.grn(&self.grn_gamma, &self.grn_beta)?;
        let y = self.linear_2.forward_with(&y, Activation::None, Some(x))?;
        modulate(&y, m)
    }
}

/// `SkipFFTransformerBlock`: two cross-attentions to the (mapped) text states, each after an
/// RMSNorm, with residuals.
struct SkipFfBlock {
    kv_mapper: Option<Linear>,
    norm1: Norm,
    attn1: CrossAttention,
    norm2: Norm,
    attn2: CrossAttention,
}

impl SkipFfBlock {
    fn load(w: &Weights, c: &UVit2DConfig) -> Result<Self> {
        let ch = c.block_out_channels;
        let heads = c.block_num_heads;
        Ok(SkipFfBlock {
            kv_mapper: if c.hidden_size != ch {
                Some(Linear::load(
                    &w.pp("kv_mapper"),
                    c.hidden_size,
                    ch,
                    c.use_bias,
                )?)
            } else {
                None
            },
            norm1: Norm::load(&w.pp("norm1"), ch, 1e-6, true)?,
            attn1: CrossAttention::load(&w.pp("attn1"), ch, heads, c.use_bias)?,
            norm2: Norm::load(&w.pp("norm2"), ch, 1e-6, true)?,
            attn2: CrossAttention::load(&w.pp("attn2"), ch, heads, c.use_bias)?,
        })
    }

    fn condition(&self, text: &Tensor) -> Result<[KeyValues; 2]> {
        let mapped;
        let context = match &self.kv_mapper {
            Some(m) => {
                mapped = m.forward(&text.activation(Activation::Silu)?)?;
                &mapped
            }
            None => text,
        };
        Ok([
            self.attn1.key_values(context)?,
            self.attn2.key_values(context)?,
        ])
    }

    fn forward(&self, x: &Tensor, kv: &[KeyValues; 2]) -> Result<Tensor> {
        let x = self.attn1.forward(&self.norm1.forward(x)?, &kv[0], x)?;
        self.attn2.forward(&self.norm2.forward(&x)?, &kv[1], &x)
    }
}

/// `UVitBlock`: optional downsampling, ConvNeXt + attention pairs, optional upsampling.
struct UVitBlock {
    down: Option<(Norm, Tensor, Option<Tensor>)>,
    pairs: Vec<(ConvNextBlock, SkipFfBlock)>,
    /// RMSNorm, the transposed convolution's weight as `[in, out·4]`, its bias repeated ×4.
    up: Option<(Norm, Tensor, Option<Tensor>)>,
}

/// The conditioning of one [`UVitBlock`].
struct BlockConditioning {
    pairs: Vec<(Modulation, [KeyValues; 2])>,
}

impl UVitBlock {
    fn load(w: &Weights, c: &UVit2DConfig, down: bool, up: bool) -> Result<Self> {
        let ch = c.block_out_channels;
        let sampler_conv = |s: &Weights| {
            s.find_prefix(&["conv.", "Conv2d_0."], "weight")
                .ok_or_else(|| NnError::MissingWeight {
                    key: s.key("conv.weight"),
                    dir: w.dir().map(Path::to_path_buf).unwrap_or_default(),
                })
        };
        let norm =
            |s: &Weights| Norm::load(&s.pp("norm"), ch, c.layer_norm_eps, c.ln_elementwise_affine);
        let down = if down {
            let s = w.pp("downsample");
            let conv = sampler_conv(&s)?;
            Some((
                norm(&s)?,
                conv.get("weight", &[ch, ch, 2, 2])?,
                if c.use_bias {
                    Some(conv.get("bias", &[ch])?)
                } else {
                    None
                },
            ))
        } else {
            None
        };
        let up = if up {
            let s = w.pp("upsample");
            let conv = sampler_conv(&s)?;
            let bias = if c.use_bias {
                let b = conv.get_host("bias", &[ch])?;
                let repeated: Vec<f32> = b.iter().flat_map(|&v| [v; 4]).collect();
                Some(Tensor::from_slice(
                    w.gpu(),
                    &repeated,
                    &[4 * ch],
                    w.dtype(),
                )?)
            } else {
                None
            };
            Some((
                norm(&s)?,
                conv.get("weight", &[ch, ch, 2, 2])?
                    .reshape(&[ch, 4 * ch])?,
                bias,
            ))
        } else {
            None
        };
        let pairs = (0..c.num_res_blocks)
            .map(|i| {
                Ok((
                    ConvNextBlock::load(&w.pp("res_blocks").pp(i), c)?,
                    SkipFfBlock::load(&w.pp("attention_blocks").pp(i), c)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(UVitBlock { down, pairs, up })
    }

    fn condition(&self, cond: &Tensor, text: &Tensor) -> Result<BlockConditioning> {
        Ok(BlockConditioning {
            pairs: self
                .pairs
                .iter()
                .map(|(res, attn)| {
                    Ok((
                        Modulation::new(&res.cond_mapper, cond)?,
                        attn.condition(text)?,
                    ))
                })
                .collect::<Result<Vec<_>>>()?,
        })
    }

    /// `x` `[batch, h·w, channels]` → the block's output and its grid.
    fn forward(
        &self,
        x: Tensor,
        (h, w): (usize, usize),
        cond: &BlockConditioning,
    ) -> Result<(Tensor, (usize, usize))> {
        let (b, c) = (x.shape()[0], x.shape()[2]);
        let (mut x, mut grid) = (x, (h, w));
        if let Some((norm, weight, bias)) = &self.down {
            let nchw = norm
                .forward(&x)?
                .reshape(&[b, h, w, c])?
                .transpose(1, 3)?
                .transpose(2, 3)?;
            x = nchw.conv2d(
                weight,
                &ConvOptions {
                    stride: (2, 2),
                    bias: bias.as_ref(),
                    channels_last: true,
                    ..ConvOptions::default()
                },
            )?;
            grid = (h / 2, w / 2);
        }
        for ((res, attn), (m, kv)) in self.pairs.iter().zip(&cond.pairs) {
            x = res.forward(&x, grid, m)?;
            x = attn.forward(&x, kv)?;
        }
        if let Some((norm, weight, bias)) = &self.up {
            // A 2×2 transposed convolution of stride 2 is a matmul per position
            // (`[in] · [in, out·2·2]`) whose four taps land on four output pixels.
            let (gh, gw) = grid;
            let taps = norm.forward(&x)?.matmul(weight)?;
            let taps = match bias {
                Some(bias) => taps.add(bias)?,
                None => taps,
            };
            // taps: [b·gh, gw, out, dy·2 + dx] → out [b·gh, dy, gw, dx, out].
            let taps = taps.reshape(&[b * gh, gw, c, 4])?;
            let out = Tensor::empty(x.gpu(), &[b, 4 * gh * gw, c], x.dtype())?;
            for dy in 0..2 {
                let src = taps.narrow(3, 2 * dy, 2)?.transpose(2, 3)?;
                src.copy_into_view(
                    &out,
                    &StridedView {
                        shape: vec![b * gh, gw, 2, c],
                        strides: vec![4 * gw * c, 2 * c, c, 1],
                        offset: dy * 2 * gw * c,
                    },
                )?;
            }
            x = out;
            grid = (2 * gh, 2 * gw);
        }
        Ok((x, grid))
    }
}

/// `BasicTransformerBlock` with `ada_norm_continuous` norms (RMSNorm before the attentions,
/// LayerNorm before the feed-forward, as diffusers builds them): self-attention,
/// cross-attention to the text, GEGLU feed-forward.
struct TransformerLayer {
    norms: [(Norm, Linear); 3],
    attn1: SelfAttention,
    attn2: CrossAttention,
    ff_in: Linear,
    ff_out: Linear,
}

struct LayerConditioning {
    /// Per norm: its weight folded into `1 + scale` (`[batch, dim]`), and the shift.
    norms: [(Tensor, Tensor); 3],
    kv: KeyValues,
}

impl TransformerLayer {
    fn load(w: &Weights, c: &UVit2DConfig) -> Result<Self> {
        let d = c.hidden_size;
        let heads = c.num_attention_heads;
        let bias = c.use_bias;
        // diffusers builds norm1 and norm2 as RMSNorms and norm3 as a LayerNorm (no bias).
        let norm = |i: usize| -> Result<(Norm, Linear)> {
            let n = w.pp(format!("norm{i}"));
            let mut norm = Norm::load(&n.pp("norm"), d, c.layer_norm_eps, c.ln_elementwise_affine)?;
            norm.layer_norm = i == 3;
            Ok((norm, Linear::load(&n.pp("linear"), d, 2 * d, bias)?))
        };
        Ok(TransformerLayer {
            norms: [norm(1)?, norm(2)?, norm(3)?],
            attn1: SelfAttention::load(
                &AttentionWeights {
                    q: &w.pp("attn1.to_q"),
                    k: &w.pp("attn1.to_k"),
                    v: &w.pp("attn1.to_v"),
                    out: &w.pp("attn1.to_out.0"),
                    qkv_bias: [bias; 3],
                    out_bias: bias,
                },
                d,
                heads,
            )?,
            attn2: CrossAttention::load(&w.pp("attn2"), d, heads, bias)?,
            ff_in: Linear::load(&w.pp("ff.net.0.proj"), d, 2 * c.intermediate_size, bias)?,
            ff_out: Linear::load(&w.pp("ff.net.2"), c.intermediate_size, d, bias)?,
        })
    }

    fn condition(&self, cond: &Tensor, text: &Tensor) -> Result<LayerConditioning> {
        let b = cond.shape()[0];
        let fold = |(norm, linear): &(Norm, Linear)| -> Result<(Tensor, Tensor)> {
            let m = Modulation::new(linear, cond)?;
            let d = m.shift.shape()[2];
            let scale = match &norm.weight {
                Some(w) => m.one_plus_scale.mul(w)?,
                None => m.one_plus_scale,
            };
            Ok((scale.reshape(&[b, d])?, m.shift.reshape(&[b, d])?))
        };
        Ok(LayerConditioning {
            norms: [
                fold(&self.norms[0])?,
                fold(&self.norms[1])?,
                fold(&self.norms[2])?,
            ],
            kv: self.attn2.key_values(text)?,
        })
    }

    /// `norm_i(x)·(1 + scale) + shift` in one pass.
    fn adaptive(&self, i: usize, x: &Tensor, cond: &LayerConditioning) -> Result<Tensor> {
        let norm = &self.norms[i].0;
        let (w, b) = &cond.norms[i];
        Ok(x.adaptive_norm(norm.layer_norm, w, b, norm.eps)?)
    }

    fn forward(&self, x: Tensor, cond: &LayerConditioning) -> Result<Tensor> {
        let n = self.adaptive(0, &x, cond)?;
        let x = self.attn1.forward(n, false, Some(&x))?;
        let n = self.adaptive(1, &x, cond)?;
        let x = self.attn2.forward(&n, &cond.kv, &x)?;
        let n = self.adaptive(2, &x, cond)?;
        let proj = self.ff_in.forward(&n)?;
        let inner = proj.shape()[2] / 2;
        let gated = proj.narrow(2, 0, inner)?.binary(
            BinaryOp::GeluMul,
            &proj.narrow(2, inner, inner)?,
            Activation::None,
        )?;
        self.ff_out.forward_with(&gated, Activation::None, Some(&x))
    }
}

/// What the transformer needs from the prompt, computed once per generation.
pub struct Conditioning {
    batch: usize,
    down: BlockConditioning,
    layers: Vec<LayerConditioning>,
    up: BlockConditioning,
}

impl Conditioning {
    /// The batch this conditioning is for.
    pub fn batch(&self) -> usize {
        self.batch
    }
}

/// diffusers' `UVit2DModel`.
pub struct UVit2D {
    config: UVit2DConfig,
    gpu: Arc<Gpu>,
    dtype: DType,
    encoder_proj: Linear,
    encoder_proj_norm: Norm,
    embeddings: Tensor,
    embed_norm: Norm,
    embed_conv: Linear,
    cond_linear_1: Linear,
    cond_linear_2: Linear,
    down_block: UVitBlock,
    to_hidden_norm: Norm,
    to_hidden: Linear,
    layers: Vec<TransformerLayer>,
    from_hidden_norm: Norm,
    from_hidden: Linear,
    up_block: UVitBlock,
    mlm_conv1: Linear,
    mlm_norm: Norm,
    mlm_conv2: Linear,
}

/// diffusers' `get_timestep_embedding(t, dim, flip_sin_to_cos=True, downscale_freq_shift=0)`.
fn sinusoidal(t: f32, dim: usize) -> Vec<f32> {
    let half = dim / 2;
    let freqs: Vec<f32> = (0..half)
        .map(|i| (-(10000f32.ln()) * i as f32 / half as f32).exp() * t)
        .collect();
    freqs
        .iter()
        .map(|a| a.cos())
        .chain(freqs.iter().map(|a| a.sin()))
        .collect()
}

impl UVit2D {
    /// The model from weights rooted at the checkpoint's keys.
    pub fn new(config: &UVit2DConfig, w: &Weights) -> Result<Self> {
        config.check()?;
        let c = config;
        let (d, ch, bias) = (c.hidden_size, c.block_out_channels, c.use_bias);
        let eps = c.layer_norm_eps;
        let affine = c.ln_elementwise_affine;
        Ok(UVit2D {
            encoder_proj: Linear::load(&w.pp("encoder_proj"), c.encoder_hidden_size, d, bias)?,
            encoder_proj_norm: Norm::load(&w.pp("encoder_proj_layer_norm"), d, eps, affine)?,
            embeddings: w.get("embed.embeddings.weight", &[c.vocab_size, c.in_channels])?,
            embed_norm: Norm::load(&w.pp("embed.layer_norm"), c.in_channels, eps, affine)?,
            embed_conv: conv1x1(&w.pp("embed.conv"), c.in_channels, ch, bias)?,
            cond_linear_1: Linear::load(
                &w.pp("cond_embed.linear_1"),
                c.micro_cond_embed_dim + c.cond_embed_dim,
                d,
                bias,
            )?,
            cond_linear_2: Linear::load(&w.pp("cond_embed.linear_2"), d, d, bias)?,
            down_block: UVitBlock::load(&w.pp("down_block"), c, c.downsample, false)?,
            to_hidden_norm: Norm::load(&w.pp("project_to_hidden_norm"), ch, eps, affine)?,
            to_hidden: Linear::load(&w.pp("project_to_hidden"), ch, d, bias)?,
            layers: (0..c.num_hidden_layers)
                .map(|i| TransformerLayer::load(&w.pp("transformer_layers").pp(i), c))
                .collect::<Result<Vec<_>>>()?,
            from_hidden_norm: Norm::load(&w.pp("project_from_hidden_norm"), d, eps, affine)?,
            from_hidden: Linear::load(&w.pp("project_from_hidden"), d, ch, bias)?,
            up_block: UVitBlock::load(&w.pp("up_block"), c, false, c.upsample)?,
            mlm_conv1: conv1x1(&w.pp("mlm_layer.conv1"), ch, c.in_channels, bias)?,
            mlm_norm: Norm::load(&w.pp("mlm_layer.layer_norm"), c.in_channels, eps, affine)?,
            mlm_conv2: conv1x1(
                &w.pp("mlm_layer.conv2"),
                c.in_channels,
                c.codebook_size,
                bias,
            )?,
            config: config.clone(),
            gpu: w.gpu().clone(),
            dtype: w.dtype(),
        })
    }

    /// The config.
    pub fn config(&self) -> &UVit2DConfig {
        &self.config
    }

    /// The device.
    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    /// The compute dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Multiply-adds of one [`UVit2D::forward`] for `batch` grids of `seq` tokens attending to
    /// `text_len` text states (matmuls, convolutions, attention; the per-generation
    /// [`Conditioning`] not counted).
    pub fn macs(&self, batch: usize, seq: usize, text_len: usize) -> usize {
        let c = &self.config;
        let (d, ch, l) = (c.hidden_size, c.block_out_channels, text_len);
        let mid = if c.downsample { seq / 4 } else { seq };
        let block = |s: usize| {
            let conv_next = 9 * ch + 8 * ch * ch;
            let skip_ff = 2 * (2 * ch * ch + 2 * l * ch);
            let sampler = if c.downsample { 4 * ch * ch } else { 0 };
            batch * (s * c.num_res_blocks * (conv_next + skip_ff) + s.max(mid) * sampler)
        };
        let layer = 6 * d * d + 2 * mid * d + 2 * l * d + 3 * d * c.intermediate_size;
        batch
            * (seq * c.in_channels * ch
                + 2 * mid * ch * d
                + mid * c.num_hidden_layers * layer
                + seq * (ch * c.in_channels + c.in_channels * c.codebook_size))
            + block(seq)
            + block(mid)
    }

    /// The conditioning for `text` (the text encoder's penultimate hidden states,
    /// `[batch, len, encoder_hidden_size]`), `pooled` (its projected embeddings,
    /// `[batch, cond_embed_dim]`) and each row's [`MICRO_CONDS`] micro-conditions.
    pub fn condition(
        &self,
        text: &Tensor,
        pooled: &Tensor,
        micro_conds: &[[f32; MICRO_CONDS]],
    ) -> Result<Conditioning> {
        let c = &self.config;
        let b = micro_conds.len();
        let ts = text.shape();
        if ts.len() != 3 || ts[0] != b || ts[2] != c.encoder_hidden_size {
            return Err(NnError::Input(format!(
                "text states {ts:?} are not [{b}, len, {}]",
                c.encoder_hidden_size
            )));
        }
        if pooled.shape() != [b, c.cond_embed_dim] {
            return Err(NnError::Input(format!(
                "pooled text embeddings {:?} are not [{b}, {}]",
                pooled.shape(),
                c.cond_embed_dim
            )));
        }
        let text = self
            .encoder_proj_norm
            .forward(&self.encoder_proj.forward(text)?)?;
        let micro: Vec<f32> = micro_conds
            .iter()
            .flat_map(|m| {
                m.iter()
                    .flat_map(|&v| sinusoidal(v, c.micro_cond_encode_dim))
                    .collect::<Vec<_>>()
            })
            .collect();
        let micro = Tensor::from_slice(
            text.gpu(),
            &micro,
            &[b, c.micro_cond_embed_dim],
            text.dtype(),
        )?;
        let pooled = Tensor::concat(&[pooled, &micro], 1)?;
        let cond = self
            .cond_linear_2
            .forward(
                &self
                    .cond_linear_1
                    .forward_with(&pooled, Activation::Silu, None)?,
            )?;
        Ok(Conditioning {
            batch: b,
            down: self.down_block.condition(&cond, &text)?,
            layers: self
                .layers
                .iter()
                .map(|l| l.condition(&cond, &text))
                .collect::<Result<Vec<_>>>()?,
            up: self.up_block.condition(&cond, &text)?,
        })
    }

    /// Logits over the codebook, `[batch, h·w, codebook_size]`, for token ids `[batch, h, w]`
    /// (row-major, `batch · h · w` of them; the mask token is `vocab_size − 1`).
    pub fn forward(
        &self,
        ids: &[u32],
        (h, w): (usize, usize),
        cond: &Conditioning,
    ) -> Result<Tensor> {
        let c = &self.config;
        let b = cond.batch;
        if h == 0 || w == 0 || ids.len() != b * h * w {
            return Err(NnError::Input(format!(
                "{} token ids for a batch of {b} grids of {h}×{w}",
                ids.len()
            )));
        }
        if c.downsample && (h % 2 != 0 || w % 2 != 0) {
            return Err(NnError::Input(format!(
                "a {h}×{w} token grid: this transformer halves the grid, so both sides must be even"
            )));
        }
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= c.vocab_size) {
            return Err(NnError::Input(format!(
                "token id {bad} is outside the vocabulary of {}",
                c.vocab_size
            )));
        }
        let x = self.embeddings.embedding(ids)?;
        let x = self.embed_norm.forward(&x)?;
        let x = self
            .embed_conv
            .forward(&x)?
            .reshape(&[b, h * w, c.block_out_channels])?;
        let (x, grid) = self.down_block.forward(x, (h, w), &cond.down)?;
        let mut x = self.to_hidden.forward(&self.to_hidden_norm.forward(&x)?)?;
        for (layer, lc) in self.layers.iter().zip(&cond.layers) {
            x = layer.forward(x, lc)?;
        }
        let x = self
            .from_hidden
            .forward(&self.from_hidden_norm.forward(&x)?)?;
        let (x, _) = self.up_block.forward(x, grid, &cond.up)?;
        let x = self.mlm_conv1.forward(&x)?;
        let x = self.mlm_norm.forward(&x)?;
        self.mlm_conv2.forward(&x)
    }
}
