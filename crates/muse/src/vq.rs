//! The decoding half of diffusers' `VQModel` as aMUSEd uses it: codebook lookup,
//! `post_quant_conv`, and the `Decoder` (conv_in, a mid block of ResNet blocks, up blocks of
//! ResNet blocks with nearest ×2 upsampling and a 3×3 convolution, GroupNorm, SiLU, conv_out).
//! All of it NCHW, as the convolutions want it.

use std::path::Path;

use serde::Deserialize;
use tessera_nn::config::{parse_json, positive, read_json};
use tessera_nn::{NnError, Result, Weights};
use tessera_tensor::{Activation, ConvOptions, Tensor};

/// `vqvae/config.json` (diffusers' `VQModel` defaults).
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct VqConfig {
    /// `_class_name`: must be `VQModel` when present.
    #[serde(rename = "_class_name")]
    pub class_name: Option<String>,
    /// Image channels out.
    pub out_channels: usize,
    /// Decoder block types (all `UpDecoderBlock2D`).
    pub up_block_types: Vec<String>,
    /// Channels per resolution, highest resolution first.
    pub block_out_channels: Vec<usize>,
    /// ResNet blocks per encoder block (the decoder has one more).
    pub layers_per_block: usize,
    /// Activation (`silu`).
    pub act_fn: String,
    /// Channels of the latent grid.
    pub latent_channels: usize,
    /// GroupNorm groups.
    pub norm_num_groups: usize,
    /// Codebook entries.
    pub num_vq_embeddings: usize,
    /// Codebook vector width (defaults to `latent_channels`).
    pub vq_embed_dim: Option<usize>,
    /// Whether decoding looks token ids up in the codebook (aMUSEd: true).
    pub lookup_from_codebook: bool,
    /// Whether the decoder's mid block has self-attention (aMUSEd: false).
    pub mid_block_add_attention: bool,
    /// `group` (GroupNorm) or `spatial`.
    pub norm_type: String,
}

impl Default for VqConfig {
    fn default() -> Self {
        VqConfig {
            class_name: None,
            out_channels: 3,
            up_block_types: vec!["UpDecoderBlock2D".into()],
            block_out_channels: vec![64],
            layers_per_block: 1,
            act_fn: "silu".into(),
            latent_channels: 3,
            norm_num_groups: 32,
            num_vq_embeddings: 256,
            vq_embed_dim: None,
            lookup_from_codebook: false,
            mid_block_add_attention: true,
            norm_type: "group".into(),
        }
    }
}

impl VqConfig {
    /// `dir/config.json`, checked.
    pub fn load(dir: &Path) -> Result<Self> {
        let c: VqConfig = read_json(&dir.join("config.json"), "VQModel config")?;
        c.check()?;
        Ok(c)
    }

    /// A `config.json`'s text (what a browser fetched), parsed and checked.
    pub fn from_json(text: &str) -> Result<Self> {
        let c: VqConfig = parse_json(text, Path::new("config.json"), "VQModel config")?;
        c.check()?;
        Ok(c)
    }

    /// The codebook vector width.
    pub fn embed_dim(&self) -> usize {
        self.vq_embed_dim.unwrap_or(self.latent_channels)
    }

    /// Pixels per token along each side: 2^(blocks − 1).
    pub fn scale_factor(&self) -> usize {
        1 << self.block_out_channels.len().saturating_sub(1)
    }

    /// Refuses what this decoder does not implement.
    pub fn check(&self) -> Result<()> {
        if let Some(name) = &self.class_name {
            if name != "VQModel" {
                return Err(NnError::config(
                    "_class_name",
                    format!("{name:?}: the vqvae must be a VQModel"),
                ));
            }
        }
        if self.block_out_channels.is_empty() || self.block_out_channels.len() > 8 {
            return Err(NnError::config(
                "block_out_channels",
                "must list 1 to 8 channel counts",
            ));
        }
        if self.up_block_types.len() != self.block_out_channels.len()
            || self.up_block_types.iter().any(|t| t != "UpDecoderBlock2D")
        {
            return Err(NnError::config(
                "up_block_types",
                "only UpDecoderBlock2D blocks, one per block_out_channels entry, are supported",
            ));
        }
        positive("norm_num_groups", self.norm_num_groups)?;
        for &c in &self.block_out_channels {
            if c == 0 || c % self.norm_num_groups != 0 {
                return Err(NnError::config(
                    "block_out_channels",
                    format!(
                        "{c} is not a positive multiple of norm_num_groups {}",
                        self.norm_num_groups
                    ),
                ));
            }
        }
        positive("out_channels", self.out_channels)?;
        positive("latent_channels", self.latent_channels)?;
        positive("num_vq_embeddings", self.num_vq_embeddings)?;
        positive("vq_embed_dim", self.embed_dim())?;
        if self.act_fn != "silu" {
            return Err(NnError::config(
                "act_fn",
                format!("{:?}: only silu is supported", self.act_fn),
            ));
        }
        if self.norm_type != "group" {
            return Err(NnError::config(
                "norm_type",
                format!("{:?}: only group (GroupNorm) is supported", self.norm_type),
            ));
        }
        if !self.lookup_from_codebook {
            return Err(NnError::config(
                "lookup_from_codebook",
                "false: decoding token ids needs the codebook lookup",
            ));
        }
        if self.mid_block_add_attention {
            return Err(NnError::config(
                "mid_block_add_attention",
                "true: the decoder's mid-block attention is not implemented (aMUSEd's has none)",
            ));
        }
        Ok(())
    }
}

/// How activations are held: each `[batch, channels, h, w]` activation as consecutive channel
/// slices ("parts"), as few as fit a buffer binding, each of whole GroupNorm groups — one part
/// whenever the activation fits. GroupNorm is per group, SiLU, upsampling and additions per
/// element, and a convolution sums over its input parts, so a decoding whose activations pass
/// the binding (aMUSEd-512's 512×512 levels: 256 MiB in f32, past WebGPU's and lavapipe's
/// 128 MiB) runs on the same kernels.
#[derive(Clone, Copy)]
struct Layout {
    /// Values per channel: batch × height × width.
    per_channel: usize,
    /// Bytes per value.
    size: usize,
    /// Bytes one part may hold.
    limit: u64,
    /// GroupNorm groups (of every GroupNorm-carried activation).
    groups: usize,
}

impl Layout {
    /// The channel counts of the parts of a `channels`-channel activation.
    fn split(&self, channels: usize) -> Result<Vec<usize>> {
        self.split_units(channels, channels / self.groups)
    }

    /// The channel counts of parts of whole `unit`s of channels.
    fn split_units(&self, channels: usize, unit: usize) -> Result<Vec<usize>> {
        let units = channels / unit;
        let unit_bytes = (unit * self.per_channel * self.size) as u64;
        if unit_bytes > self.limit {
            return Err(NnError::Input(format!(
                "{unit} channels of {} values each ({} MiB) do not fit this adapter's {} MiB \
                 buffer binding: ask for a smaller image",
                self.per_channel,
                unit_bytes >> 20,
                self.limit >> 20
            )));
        }
        let per_part = ((self.limit / unit_bytes) as usize).min(units);
        let parts = units.div_ceil(per_part);
        // As even as whole units allow.
        let per_part = units.div_ceil(parts);
        Ok((0..units)
            .step_by(per_part)
            .map(|u| (units - u).min(per_part) * unit)
            .collect())
    }

    /// `parts` cut into smaller ones where one would not fit this layout (each part on its
    /// own, at GroupNorm group boundaries): the parts of an activation before it is upsampled
    /// into this layout.
    fn refine(&self, parts: &[Tensor]) -> Result<Vec<Tensor>> {
        let channels: usize = parts.iter().map(|p| p.shape()[1]).sum();
        let unit = channels / self.groups;
        let mut out = Vec::new();
        for part in parts {
            let split = self.split_units(part.shape()[1], unit)?;
            if split.len() == 1 {
                out.push(part.clone());
                continue;
            }
            let mut c = 0;
            for pc in split {
                out.push(part.narrow(1, c, pc)?.contiguous()?);
                c += pc;
            }
        }
        Ok(out)
    }

    /// The layout after a nearest ×2 upsampling.
    fn upsampled(self) -> Layout {
        Layout {
            per_channel: self.per_channel * 4,
            ..self
        }
    }
}

/// A convolution's weight and bias with its padding.
struct Conv {
    weight: Tensor,
    bias: Tensor,
    padding: usize,
}

impl Conv {
    fn load(w: &Weights, c_in: usize, c_out: usize, k: usize) -> Result<Self> {
        Ok(Conv {
            weight: w.get("weight", &[c_out, c_in, k, k])?,
            bias: w.get("bias", &[c_out])?,
            padding: k / 2,
        })
    }

    fn conv(&self, x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        Ok(x.conv2d(
            weight,
            &ConvOptions {
                padding: (self.padding, self.padding),
                bias,
                ..ConvOptions::default()
            },
        )?)
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.conv(x, &self.weight, Some(&self.bias))
    }

    /// The convolution of the parts `x` into parts of `split` channels each: per output part,
    /// the sum of its weights' slice over each input part.
    fn forward_parts(&self, x: &[Tensor], split: &[usize]) -> Result<Vec<Tensor>> {
        if let ([x], [_]) = (x, split) {
            return Ok(vec![self.forward(x)?]);
        }
        let mut out = Vec::with_capacity(split.len());
        let mut o = 0;
        for &oc in split {
            let w = self.weight.narrow(0, o, oc)?;
            let bias = self.bias.narrow(0, o, oc)?.contiguous()?;
            let mut sum: Option<Tensor> = None;
            let mut i = 0;
            for part in x {
                let ic = part.shape()[1];
                let slice = w.narrow(1, i, ic)?.contiguous()?;
                let y = self.conv(part, &slice, sum.is_none().then_some(&bias))?;
                sum = Some(match sum {
                    None => y,
                    Some(s) => s.add(&y)?,
                });
                i += ic;
            }
            out.push(sum.expect("at least one input part"));
            o += oc;
        }
        Ok(out)
    }
}

/// GroupNorm (eps 1e-6) followed by SiLU.
struct NormAct {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
}

impl NormAct {
    fn load(w: &Weights, c: usize, groups: usize) -> Result<Self> {
        Ok(NormAct {
            weight: w.get("weight", &[c])?,
            bias: w.get("bias", &[c])?,
            groups,
        })
    }

    /// Each part with its channels' groups and affine values.
    fn forward_parts(&self, x: &[Tensor]) -> Result<Vec<Tensor>> {
        let unit = self.weight.shape()[0] / self.groups;
        let mut c = 0;
        x.iter()
            .map(|part| {
                let pc = part.shape()[1];
                let (weight, bias) = if pc == self.weight.shape()[0] {
                    (self.weight.clone(), self.bias.clone())
                } else {
                    (
                        self.weight.narrow(0, c, pc)?.contiguous()?,
                        self.bias.narrow(0, c, pc)?.contiguous()?,
                    )
                };
                c += pc;
                Ok(part.group_norm_with(
                    pc / unit,
                    Some(&weight),
                    Some(&bias),
                    1e-6,
                    Activation::Silu,
                )?)
            })
            .collect()
    }
}

/// `ResnetBlock2D` without a time embedding.
struct ResnetBlock {
    norm1: NormAct,
    conv1: Conv,
    norm2: NormAct,
    conv2: Conv,
    shortcut: Option<Conv>,
}

impl ResnetBlock {
    fn load(w: &Weights, c_in: usize, c_out: usize, groups: usize) -> Result<Self> {
        Ok(ResnetBlock {
            norm1: NormAct::load(&w.pp("norm1"), c_in, groups)?,
            conv1: Conv::load(&w.pp("conv1"), c_in, c_out, 3)?,
            norm2: NormAct::load(&w.pp("norm2"), c_out, groups)?,
            conv2: Conv::load(&w.pp("conv2"), c_out, c_out, 3)?,
            shortcut: if c_in != c_out {
                Some(Conv::load(&w.pp("conv_shortcut"), c_in, c_out, 1)?)
            } else {
                None
            },
        })
    }

    fn forward_parts(&self, x: &[Tensor], layout: Layout) -> Result<Vec<Tensor>> {
        let split = layout.split(self.conv1.bias.shape()[0])?;
        let h = self
            .conv1
            .forward_parts(&self.norm1.forward_parts(x)?, &split)?;
        let h = self
            .conv2
            .forward_parts(&self.norm2.forward_parts(&h)?, &split)?;
        let skip = match &self.shortcut {
            Some(s) => s.forward_parts(x, &split)?,
            // The same channels at the same layout: the same parts.
            None => x.to_vec(),
        };
        skip.iter().zip(&h).map(|(s, h)| Ok(s.add(h)?)).collect()
    }
}

/// The VQ-GAN decoder: token ids to RGB.
pub struct VqDecoder {
    config: VqConfig,
    codebook: Tensor,
    post_quant_conv: Conv,
    conv_in: Conv,
    mid: Vec<ResnetBlock>,
    /// Per up block: its ResNet blocks and its upsampling convolution (none for the last).
    up: Vec<(Vec<ResnetBlock>, Option<Conv>)>,
    norm_out: NormAct,
    conv_out: Conv,
}

impl VqDecoder {
    /// The decoder from a VQModel checkpoint's weights.
    pub fn new(config: &VqConfig, w: &Weights) -> Result<Self> {
        config.check()?;
        let c = config;
        let g = c.norm_num_groups;
        let chans = &c.block_out_channels;
        let top = *chans.last().expect("checked non-empty");
        let d = w.pp("decoder");
        let mid = (0..2)
            .map(|i| ResnetBlock::load(&d.pp("mid_block.resnets").pp(i), top, top, g))
            .collect::<Result<Vec<_>>>()?;
        let mut up = Vec::new();
        let mut prev = top;
        for (i, &out) in chans.iter().rev().enumerate() {
            let b = d.pp("up_blocks").pp(i);
            let resnets = (0..=c.layers_per_block)
                .map(|j| {
                    let c_in = if j == 0 { prev } else { out };
                    ResnetBlock::load(&b.pp("resnets").pp(j), c_in, out, g)
                })
                .collect::<Result<Vec<_>>>()?;
            let sampler = if i + 1 < chans.len() {
                Some(Conv::load(&b.pp("upsamplers.0.conv"), out, out, 3)?)
            } else {
                None
            };
            up.push((resnets, sampler));
            prev = out;
        }
        let e = c.embed_dim();
        Ok(VqDecoder {
            codebook: w.get("quantize.embedding.weight", &[c.num_vq_embeddings, e])?,
            post_quant_conv: Conv::load(&w.pp("post_quant_conv"), e, c.latent_channels, 1)?,
            conv_in: Conv::load(&d.pp("conv_in"), c.latent_channels, top, 3)?,
            mid,
            up,
            norm_out: NormAct::load(&d.pp("conv_norm_out"), chans[0], g)?,
            conv_out: Conv::load(&d.pp("conv_out"), chans[0], c.out_channels, 3)?,
            config: config.clone(),
        })
    }

    /// The config.
    pub fn config(&self) -> &VqConfig {
        &self.config
    }

    /// Multiply-adds of decoding one `h × w` grid (convolutions).
    pub fn macs(&self, (h, w): (usize, usize)) -> usize {
        let c = &self.config;
        let chans = &c.block_out_channels;
        let top = *chans.last().expect("checked non-empty");
        let resnet = |ci: usize, co: usize, px: usize| {
            px * (9 * ci * co + 9 * co * co + if ci != co { ci * co } else { 0 })
        };
        let mut px = h * w;
        let mut macs = px * (c.embed_dim() * c.latent_channels + 9 * c.latent_channels * top);
        macs += 2 * resnet(top, top, px);
        let mut prev = top;
        for (i, &out) in chans.iter().rev().enumerate() {
            macs += resnet(prev, out, px) + c.layers_per_block * resnet(out, out, px);
            if i + 1 < chans.len() {
                px *= 4;
                macs += px * 9 * out * out;
            }
            prev = out;
        }
        macs + px * 9 * chans[0] * c.out_channels
    }

    /// (pixels, channels) of each activation decoding one `h × w` grid makes, level by level:
    /// the top level's input, each level's output, and that output upsampled for the next.
    fn activations(&self, (h, w): (usize, usize)) -> Vec<(usize, usize)> {
        let chans = &self.config.block_out_channels;
        let mut px = h * w;
        let mut out = vec![(px, *chans.last().expect("checked non-empty"))];
        for (i, &ch) in chans.iter().rev().enumerate() {
            out.push((px, ch));
            if i + 1 < chans.len() {
                px *= 4;
                out.push((px, ch));
            }
        }
        out
    }

    /// Bytes of the largest tensor decoding one `h × w` grid makes (f32): the widest level's
    /// activations after its upsampling, or the full-resolution ones.
    pub fn largest_activation_bytes(&self, grid: (usize, usize)) -> u64 {
        let largest = self.activations(grid).iter().map(|&(px, ch)| px * ch).max();
        largest.unwrap_or(0) as u64 * 4
    }

    /// Bytes of the largest buffer decoding one `h × w` grid cannot do without: one GroupNorm
    /// group of the widest level after its upsampling, or the image itself (activations past
    /// a binding are held in parts of whole groups).
    pub fn smallest_part_bytes(&self, (h, w): (usize, usize)) -> u64 {
        let c = &self.config;
        let unit = self
            .activations((h, w))
            .iter()
            .map(|&(px, ch)| px * (ch / c.norm_num_groups))
            .max()
            .unwrap_or(0);
        let image = h * w * c.scale_factor().pow(2) * c.out_channels;
        unit.max(image) as u64 * self.codebook.dtype().size() as u64
    }

    /// The image `[batch, out_channels, h·s, w·s]` (values around [0, 1], not clamped; `s` is
    /// [`VqConfig::scale_factor`]) of `batch` grids of `h × w` codebook indices.
    pub fn decode(&self, ids: &[u32], batch: usize, (h, w): (usize, usize)) -> Result<Tensor> {
        let c = &self.config;
        if h == 0 || w == 0 || ids.len() != batch * h * w {
            return Err(NnError::Input(format!(
                "{} codebook indices for {batch} grids of {h}×{w}",
                ids.len()
            )));
        }
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= c.num_vq_embeddings) {
            return Err(NnError::Input(format!(
                "codebook index {bad} is outside the codebook of {}",
                c.num_vq_embeddings
            )));
        }
        let e = c.embed_dim();
        let quant = self
            .codebook
            .embedding(ids)?
            .reshape(&[batch, h, w, e])?
            .transpose(1, 3)?
            .transpose(2, 3)?
            .contiguous()?;
        let x = self.post_quant_conv.forward(&quant)?;
        let mut layout = Layout {
            per_channel: batch * h * w,
            size: self.codebook.dtype().size(),
            limit: self.codebook.gpu().max_binding(),
            groups: c.norm_num_groups,
        };
        let top = self.conv_in.bias.shape()[0];
        let mut x = self.conv_in.forward_parts(&[x], &layout.split(top)?)?;
        for r in &self.mid {
            x = r.forward_parts(&x, layout)?;
        }
        for (resnets, sampler) in &self.up {
            for r in resnets {
                x = r.forward_parts(&x, layout)?;
            }
            if let Some(conv) = sampler {
                layout = layout.upsampled();
                let up = layout
                    .refine(&x)?
                    .iter()
                    .map(|p| Ok(p.upsample_nearest2x()?))
                    .collect::<Result<Vec<_>>>()?;
                let split = layout.split(conv.bias.shape()[0])?;
                x = conv.forward_parts(&up, &split)?;
            }
        }
        let out = c.out_channels;
        let rgb = self.conv_out.forward_parts(
            &self.norm_out.forward_parts(&x)?,
            &layout.split_units(out, out)?,
        )?;
        Ok(rgb.into_iter().next().expect("one part"))
    }
}
