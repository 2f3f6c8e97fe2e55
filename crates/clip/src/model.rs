//! CLIP, laid out as transformers' `modeling_clip.py`: a vision tower (patch embedding with class
//! token, `pre_layrnorm`, pre-LN layers, `post_layernorm` on the class token), a causal text tower
//! pooled at the end token, both projected and L2-normalised, and `logit_scale`.

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use tessera_kernels::{DType, Gpu};
use tessera_nn::config::{activation, head_dim, positive, ModelConfig};
use tessera_nn::{
    gather_rows, AttentionWeights, Embedding, ImageProcessor, LayerNorm, Linear, Mlp, NnError,
    PatchEmbedding, PatchEmbeddingKeys, PreLnBlock, ProcessedImages, Result, SelfAttention,
    Weights,
};
use tessera_tensor::{Activation, MatmulOptions, Normalize, Pixels, Tensor};

use crate::tokenizer::ClipTokenizer;

/// The text tower's part of `config.json` (transformers' `CLIPTextConfig` defaults).
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct ClipTextConfig {
    /// Token count of the vocabulary.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Longest token sequence.
    pub max_position_embeddings: usize,
    /// MLP activation.
    pub hidden_act: String,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// The end token; 2 (the original configs) means "pool at the highest token id".
    pub eos_token_id: u32,
}

impl Default for ClipTextConfig {
    fn default() -> Self {
        ClipTextConfig {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
            eos_token_id: 49407,
        }
    }
}

impl ClipTextConfig {
    /// Refuses values the tower cannot run; `prefix` is where the fields sit in the file
    /// (`"text_config."` in a CLIPModel's config, `""` in a text model's own).
    pub fn check(&self, prefix: &str) -> Result<()> {
        let field = |name: &str| format!("{prefix}{name}");
        positive(&field("hidden_size"), self.hidden_size)?;
        positive(
            &field("max_position_embeddings"),
            self.max_position_embeddings,
        )?;
        positive(&field("vocab_size"), self.vocab_size)?;
        head_dim(
            &field("num_attention_heads"),
            self.hidden_size,
            self.num_attention_heads,
        )?;
        activation(&field("hidden_act"), &self.hidden_act)?;
        Ok(())
    }
}

/// The vision tower's part of `config.json` (transformers' `CLIPVisionConfig` defaults).
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct ClipVisionConfig {
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Must be 3.
    pub num_channels: usize,
    /// Side of the square training image.
    pub image_size: usize,
    /// Side of a square patch.
    pub patch_size: usize,
    /// MLP activation.
    pub hidden_act: String,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
}

impl Default for ClipVisionConfig {
    fn default() -> Self {
        ClipVisionConfig {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 224,
            patch_size: 32,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
        }
    }
}

/// `config.json` of a CLIPModel checkpoint.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct ClipConfig {
    /// Must be `clip` when present.
    pub model_type: Option<String>,
    /// The text tower.
    pub text_config: ClipTextConfig,
    /// The vision tower.
    pub vision_config: ClipVisionConfig,
    /// Width of the shared embedding space.
    pub projection_dim: usize,
}

impl Default for ClipConfig {
    fn default() -> Self {
        ClipConfig {
            model_type: None,
            text_config: ClipTextConfig::default(),
            vision_config: ClipVisionConfig::default(),
            projection_dim: 512,
        }
    }
}

impl ModelConfig for ClipConfig {
    const MODEL_TYPE: &'static str = "clip";
    const NAME: &'static str = "CLIPModel";

    fn model_type(&self) -> Option<&str> {
        self.model_type.as_deref()
    }

    fn check(&self) -> tessera_nn::Result<()> {
        let v = &self.vision_config;
        positive("projection_dim", self.projection_dim)?;
        self.text_config.check("text_config.")?;
        positive("vision_config.hidden_size", v.hidden_size)?;
        positive("vision_config.patch_size", v.patch_size)?;
        head_dim(
            "vision_config.num_attention_heads",
            v.hidden_size,
            v.num_attention_heads,
        )?;
        activation("vision_config.hidden_act", &v.hidden_act)?;
        if v.num_channels != 3 {
            return Err(NnError::config(
                "vision_config.num_channels",
                format!(
                    "{} channels: only RGB (3) images are supported",
                    v.num_channels
                ),
            ));
        }
        if v.image_size % v.patch_size != 0 {
            return Err(NnError::config(
                "vision_config.image_size",
                format!(
                    "{} is not a multiple of patch_size {}",
                    v.image_size, v.patch_size
                ),
            ));
        }
        Ok(())
    }
}

/// A tower's outputs.
#[derive(Debug)]
pub struct TowerOutput {
    /// `[batch, seq, hidden]`: the last layer (after `final_layer_norm` for text; before
    /// `post_layernorm` for vision, as transformers returns it).
    pub last_hidden_state: Tensor,
    /// `[batch, hidden]`: the end token's row (text) or the class token after `post_layernorm`
    /// (vision).
    pub pooler_output: Tensor,
}

/// `CLIPEncoderLayer`s under `w` (`encoder.layers.i.…`).
fn encoder_layers(
    w: &Weights,
    count: usize,
    hidden: usize,
    ffn: usize,
    heads: usize,
    act: Activation,
    eps: f64,
) -> Result<Vec<PreLnBlock>> {
    (0..count)
        .map(|i| {
            let l = w.pp("encoder.layers").pp(i);
            let a = l.pp("self_attn");
            Ok(PreLnBlock {
                ln1: LayerNorm::load(&l.pp("layer_norm1"), hidden, eps)?,
                attn: SelfAttention::load(
                    &AttentionWeights {
                        q: &a.pp("q_proj"),
                        k: &a.pp("k_proj"),
                        v: &a.pp("v_proj"),
                        out: &a.pp("out_proj"),
                        qkv_bias: [true; 3],
                        out_bias: true,
                    },
                    hidden,
                    heads,
                )?,
                ln2: LayerNorm::load(&l.pp("layer_norm2"), hidden, eps)?,
                mlp: Mlp::new(
                    Linear::load(&l.pp("mlp.fc1"), hidden, ffn, true)?,
                    Linear::load(&l.pp("mlp.fc2"), ffn, hidden, true)?,
                    act,
                ),
            })
        })
        .collect()
}

/// transformers' `CLIPTextTransformer`.
pub struct ClipTextTransformer {
    config: ClipTextConfig,
    token_embedding: Embedding,
    position_embedding: Tensor,
    layers: Vec<PreLnBlock>,
    final_layer_norm: LayerNorm,
}

impl ClipTextTransformer {
    /// The tower from weights under `text_model.`.
    pub fn new(config: &ClipTextConfig, w: &Weights) -> Result<Self> {
        let d = config.hidden_size;
        Ok(ClipTextTransformer {
            token_embedding: Embedding::load(
                w,
                "embeddings.token_embedding.weight",
                config.vocab_size,
                d,
            )?,
            position_embedding: w.get(
                "embeddings.position_embedding.weight",
                &[config.max_position_embeddings, d],
            )?,
            layers: encoder_layers(
                w,
                config.num_hidden_layers,
                d,
                config.intermediate_size,
                config.num_attention_heads,
                activation("text_config.hidden_act", &config.hidden_act)?,
                config.layer_norm_eps,
            )?,
            final_layer_norm: LayerNorm::load(&w.pp("final_layer_norm"), d, config.layer_norm_eps)?,
            config: config.clone(),
        })
    }

    /// Where a sequence is pooled: transformers' rule for the config's `eos_token_id`.
    pub fn eos_position(&self, ids: &[u32]) -> usize {
        if self.config.eos_token_id == 2 {
            // The original configs: the end token has the highest id; the first maximum wins.
            let max = ids.iter().copied().max().unwrap_or(0);
            ids.iter().position(|&i| i == max).unwrap_or(0)
        } else {
            ids.iter()
                .position(|&i| i == self.config.eos_token_id)
                .unwrap_or(0)
        }
    }

    /// The tower on token sequences (each with its start and end tokens); shorter ones are
    /// padded at the end, which the causal mask keeps from the tokens before.
    pub fn forward(&self, ids: &[Vec<u32>]) -> Result<TowerOutput> {
        Ok(self.forward_hidden(ids)?.0)
    }

    /// [`ClipTextTransformer::forward`] and the hidden state before the last layer
    /// (`hidden_states[-2]` of transformers' `output_hidden_states`), `[batch, seq, hidden]`:
    /// what text-to-image models condition on.
    pub fn forward_hidden(&self, ids: &[Vec<u32>]) -> Result<(TowerOutput, Tensor)> {
        let len = ids.iter().map(Vec::len).max().unwrap_or(0);
        if ids.is_empty() || ids.iter().any(Vec::is_empty) {
            return Err(NnError::Input("no tokens to encode".into()));
        }
        if len > self.config.max_position_embeddings {
            return Err(NnError::Input(format!(
                "{len} tokens exceed the text tower's {} positions",
                self.config.max_position_embeddings
            )));
        }
        let (b, d) = (ids.len(), self.config.hidden_size);
        let flat: Vec<u32> = ids
            .iter()
            .flat_map(|s| {
                s.iter()
                    .copied()
                    .chain(std::iter::repeat(s[s.len() - 1]))
                    .take(len)
            })
            .collect();
        let mut x = self
            .token_embedding
            .forward(&flat)?
            .reshape(&[b, len, d])?
            .add(&self.position_embedding.narrow(0, 0, len)?)?;
        let last = self.layers.len().saturating_sub(1);
        for layer in &self.layers[..last] {
            x = layer.forward(x, true)?;
        }
        let penultimate = x.clone();
        for layer in &self.layers[last..] {
            x = layer.forward(x, true)?;
        }
        let last_hidden_state = self.final_layer_norm.forward(&x)?;
        let index: Vec<u32> = ids
            .iter()
            .enumerate()
            .map(|(i, s)| (i * len + self.eos_position(s)) as u32)
            .collect();
        let pooler_output = gather_rows(&last_hidden_state.reshape(&[b * len, d])?, &index)?;
        Ok((
            TowerOutput {
                last_hidden_state,
                pooler_output,
            },
            penultimate,
        ))
    }

    /// The config.
    pub fn config(&self) -> &ClipTextConfig {
        &self.config
    }

    /// Multiply-adds for `batch` sequences of `len` tokens.
    pub fn macs(&self, batch: usize, len: usize) -> usize {
        self.layers.iter().map(|l| l.macs(batch, len)).sum()
    }
}

/// transformers' `CLIPVisionTransformer`.
pub struct ClipVisionTransformer {
    config: ClipVisionConfig,
    embeddings: PatchEmbedding,
    pre_layrnorm: LayerNorm,
    layers: Vec<PreLnBlock>,
    post_layernorm: LayerNorm,
}

impl ClipVisionTransformer {
    /// The tower from weights under `vision_model.`.
    pub fn new(config: &ClipVisionConfig, w: &Weights) -> Result<Self> {
        let (d, eps) = (config.hidden_size, config.layer_norm_eps);
        Ok(ClipVisionTransformer {
            embeddings: PatchEmbedding::load(
                &w.pp("embeddings"),
                &PatchEmbeddingKeys {
                    weight: "patch_embedding.weight",
                    bias: None,
                    class: "class_embedding",
                    positions: "position_embedding.weight",
                    batched: false,
                },
                d,
                config.patch_size,
                config.image_size,
            )?,
            pre_layrnorm: LayerNorm::load(&w.pp("pre_layrnorm"), d, eps)?,
            layers: encoder_layers(
                w,
                config.num_hidden_layers,
                d,
                config.intermediate_size,
                config.num_attention_heads,
                activation("vision_config.hidden_act", &config.hidden_act)?,
                eps,
            )?,
            post_layernorm: LayerNorm::load(&w.pp("post_layernorm"), d, eps)?,
            config: config.clone(),
        })
    }

    /// The tower on `batch` HWC images of `size` = (height, width), rescaled and normalised on
    /// the GPU by `norm`.
    pub fn forward(
        &self,
        pixels: Pixels<'_>,
        batch: usize,
        size: (usize, usize),
        norm: &Normalize,
    ) -> Result<TowerOutput> {
        let mut x = self.pre_layrnorm.forward(
            &self
                .embeddings
                .at_size(size)?
                .forward(pixels, batch, norm)?,
        )?;
        for layer in &self.layers {
            x = layer.forward(x, false)?;
        }
        let (seq, d) = (x.shape()[1], x.shape()[2]);
        let index: Vec<u32> = (0..batch).map(|b| (b * seq) as u32).collect();
        let cls = gather_rows(&x.reshape(&[batch * seq, d])?, &index)?;
        Ok(TowerOutput {
            pooler_output: self.post_layernorm.forward(&cls)?,
            last_hidden_state: x,
        })
    }

    /// Multiply-adds for `batch` images at the config's size.
    pub fn macs(&self, batch: usize) -> usize {
        let c = &self.config;
        let patches = (c.image_size / c.patch_size).pow(2);
        batch * patches * c.hidden_size * 3 * c.patch_size * c.patch_size
            + self
                .layers
                .iter()
                .map(|l| l.macs(batch, patches + 1))
                .sum::<usize>()
    }
}

/// transformers' `CLIPModel`.
pub struct ClipModel {
    config: ClipConfig,
    text: ClipTextTransformer,
    vision: ClipVisionTransformer,
    text_projection: Linear,
    visual_projection: Linear,
    logit_scale: f32,
}

impl ClipModel {
    /// The model from weights rooted at the checkpoint's keys.
    pub fn new(config: &ClipConfig, w: &Weights) -> Result<Self> {
        config.validate()?;
        let (t, v, p) = (
            &config.text_config,
            &config.vision_config,
            config.projection_dim,
        );
        Ok(ClipModel {
            text: ClipTextTransformer::new(t, &w.pp("text_model"))?,
            vision: ClipVisionTransformer::new(v, &w.pp("vision_model"))?,
            text_projection: Linear::load(&w.pp("text_projection"), t.hidden_size, p, false)?,
            visual_projection: Linear::load(&w.pp("visual_projection"), v.hidden_size, p, false)?,
            logit_scale: w.get_host("logit_scale", &[])?[0],
            config: config.clone(),
        })
    }

    /// A CLIPModel folder as `dtype`, with its image processor and tokenizer.
    pub fn load(
        gpu: &Arc<Gpu>,
        dir: &Path,
        dtype: DType,
    ) -> Result<(Self, ImageProcessor, ClipTokenizer)> {
        let config = ClipConfig::load(dir)?;
        let w = Weights::open(gpu, dir, dtype)?;
        let model = ClipModel::new(&config, &w)?;
        let processor = ImageProcessor::load(dir, ImageProcessor::clip_default())?;
        let tokenizer = ClipTokenizer::load(dir, config.text_config.max_position_embeddings)?;
        Ok((model, processor, tokenizer))
    }

    /// The config.
    pub fn config(&self) -> &ClipConfig {
        &self.config
    }

    /// The text tower.
    pub fn text_model(&self) -> &ClipTextTransformer {
        &self.text
    }

    /// The vision tower.
    pub fn vision_model(&self) -> &ClipVisionTransformer {
        &self.vision
    }

    /// `exp(logit_scale)`, the factor on cosine similarities.
    pub fn logit_scale(&self) -> f32 {
        self.logit_scale.exp()
    }

    /// L2-normalised projected image embeddings `[batch, projection_dim]`
    /// (`CLIPModel(...).image_embeds`).
    pub fn image_embeds(&self, images: &ProcessedImages, norm: &Normalize) -> Result<Tensor> {
        self.image_embeds_pixels(
            Pixels::U8(&images.pixels),
            images.batch,
            (images.height, images.width),
            norm,
        )
    }

    /// [`ClipModel::image_embeds`] on raw HWC pixels.
    pub fn image_embeds_pixels(
        &self,
        pixels: Pixels<'_>,
        batch: usize,
        size: (usize, usize),
        norm: &Normalize,
    ) -> Result<Tensor> {
        let pooled = self
            .vision
            .forward(pixels, batch, size, norm)?
            .pooler_output;
        l2_normalize(&self.visual_projection.forward(&pooled)?)
    }

    /// L2-normalised projected text embeddings `[texts, projection_dim]`
    /// (`CLIPModel(...).text_embeds`).
    pub fn text_embeds(&self, ids: &[Vec<u32>]) -> Result<Tensor> {
        let pooled = self.text.forward(ids)?.pooler_output;
        l2_normalize(&self.text_projection.forward(&pooled)?)
    }

    /// `logits_per_image` `[images, texts]`: `exp(logit_scale)` · cosine similarity.
    pub fn logits_per_image(&self, image_embeds: &Tensor, text_embeds: &Tensor) -> Result<Tensor> {
        Ok(image_embeds.matmul_with(
            &text_embeds.t()?,
            &MatmulOptions {
                alpha: Some(self.logit_scale()),
                ..MatmulOptions::default()
            },
        )?)
    }

    /// Zero-shot probabilities `[images, texts]`: softmax over the texts of each image's logits.
    pub fn probs(&self, image_embeds: &Tensor, text_embeds: &Tensor) -> Result<Tensor> {
        Ok(self
            .logits_per_image(image_embeds, text_embeds)?
            .softmax(1.0)?)
    }
}

/// Rows divided by their L2 norm: RMSNorm without epsilon gives `x·√n/‖x‖`, then `1/√n`.
fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let n = x.shape()[x.shape().len() - 1] as f32;
    Ok(x.rms_norm(None, 0.0)?.scale(1.0 / n.sqrt())?)
}
