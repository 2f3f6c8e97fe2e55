//! ViT, laid out as transformers' `modeling_vit.py`: embeddings (patch conv, class token,
//! positions), pre-LN encoder layers, final LayerNorm, optional pooler, classifier on the class
//! token.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use tessera_kernels::{DType, Gpu};
use tessera_nn::config::{activation, head_dim, positive, ModelConfig};
use tessera_nn::{
    gather_rows, AttentionWeights, ImageProcessor, LayerNorm, Linear, Mlp, NnError, PatchEmbedding,
    PatchEmbeddingKeys, PreLnBlock, ProcessedImages, Result, SelfAttention, Weights,
};
use tessera_tensor::{Activation, Normalize, Pixels, Tensor};

/// `config.json` of a ViT checkpoint (transformers' `ViTConfig`; defaults are its defaults).
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct ViTConfig {
    /// Must be `vit` when present.
    pub model_type: Option<String>,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// MLP activation.
    pub hidden_act: String,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// Side of the square training image.
    pub image_size: usize,
    /// Side of a square patch.
    pub patch_size: usize,
    /// Must be 3.
    pub num_channels: usize,
    /// Whether q, k and v have biases.
    pub qkv_bias: bool,
    /// Class names by index (as strings, as the JSON has them).
    pub id2label: Option<HashMap<String, String>>,
    /// The pooler's activation.
    pub pooler_act: String,
    /// The pooler's width (the hidden size when absent).
    pub pooler_output_size: Option<usize>,
}

impl Default for ViTConfig {
    fn default() -> Self {
        ViTConfig {
            model_type: None,
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            hidden_act: "gelu".into(),
            layer_norm_eps: 1e-12,
            image_size: 224,
            patch_size: 16,
            num_channels: 3,
            qkv_bias: true,
            id2label: None,
            pooler_act: "tanh".into(),
            pooler_output_size: None,
        }
    }
}

impl ModelConfig for ViTConfig {
    const MODEL_TYPE: &'static str = "vit";
    const NAME: &'static str = "ViT";

    fn model_type(&self) -> Option<&str> {
        self.model_type.as_deref()
    }

    fn check(&self) -> tessera_nn::Result<()> {
        if self.num_channels != 3 {
            return Err(NnError::config(
                "num_channels",
                format!(
                    "{} channels: only RGB (3) images are supported",
                    self.num_channels
                ),
            ));
        }
        positive("hidden_size", self.hidden_size)?;
        positive("patch_size", self.patch_size)?;
        positive("intermediate_size", self.intermediate_size)?;
        head_dim(
            "num_attention_heads",
            self.hidden_size,
            self.num_attention_heads,
        )?;
        if self.image_size % self.patch_size != 0 {
            return Err(NnError::config(
                "image_size",
                format!(
                    "{} is not a multiple of patch_size {}",
                    self.image_size, self.patch_size
                ),
            ));
        }
        activation("hidden_act", &self.hidden_act)?;
        activation("pooler_act", &self.pooler_act)?;
        Ok(())
    }
}

impl ViTConfig {
    /// Class names in index order (`LABEL_i` where the config has none).
    pub fn labels(&self, count: usize) -> Vec<String> {
        (0..count)
            .map(|i| {
                self.id2label
                    .as_ref()
                    .and_then(|m| m.get(&i.to_string()).cloned())
                    .unwrap_or_else(|| format!("LABEL_{i}"))
            })
            .collect()
    }
}

/// What [`ViTModel::forward`] returns.
#[derive(Debug)]
pub struct ViTOutput {
    /// `[batch, 1 + patches, hidden]`, after the final LayerNorm.
    pub last_hidden_state: Tensor,
    /// `[batch, pooler width]`: the pooler on the class token, where the checkpoint has one.
    pub pooler_output: Option<Tensor>,
}

/// transformers' `ViTModel`.
pub struct ViTModel {
    config: ViTConfig,
    embeddings: PatchEmbedding,
    layers: Vec<PreLnBlock>,
    layernorm: LayerNorm,
    pooler: Option<(Linear, Activation)>,
}

impl ViTModel {
    /// The model from weights rooted at the ViTModel's keys (`embeddings.…`, `encoder.…`).
    pub fn new(config: &ViTConfig, w: &Weights) -> Result<Self> {
        config.validate()?;
        let (d, p) = (config.hidden_size, config.patch_size);
        let embeddings = PatchEmbedding::load(
            &w.pp("embeddings"),
            &PatchEmbeddingKeys {
                weight: "patch_embeddings.projection.weight",
                bias: Some("patch_embeddings.projection.bias"),
                class: "cls_token",
                positions: "position_embeddings",
                batched: true,
            },
            d,
            p,
            config.image_size,
        )?;
        let act = activation("hidden_act", &config.hidden_act)?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let l = w.pp("encoder.layer").pp(i);
                let a = l.pp("attention.attention");
                let bias = config.qkv_bias;
                Ok(PreLnBlock {
                    ln1: LayerNorm::load(&l.pp("layernorm_before"), d, config.layer_norm_eps)?,
                    attn: SelfAttention::load(
                        &AttentionWeights {
                            q: &a.pp("query"),
                            k: &a.pp("key"),
                            v: &a.pp("value"),
                            out: &l.pp("attention.output.dense"),
                            qkv_bias: [bias; 3],
                            out_bias: true,
                        },
                        d,
                        config.num_attention_heads,
                    )?,
                    ln2: LayerNorm::load(&l.pp("layernorm_after"), d, config.layer_norm_eps)?,
                    mlp: Mlp::new(
                        Linear::load(
                            &l.pp("intermediate.dense"),
                            d,
                            config.intermediate_size,
                            true,
                        )?,
                        Linear::load(&l.pp("output.dense"), config.intermediate_size, d, true)?,
                        act,
                    ),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let pooler = if w.contains("pooler.dense.weight") {
            let out = config.pooler_output_size.unwrap_or(d);
            Some((
                Linear::load(&w.pp("pooler.dense"), d, out, true)?,
                activation("pooler_act", &config.pooler_act)?,
            ))
        } else {
            None
        };
        Ok(ViTModel {
            config: config.clone(),
            embeddings,
            layers,
            layernorm: LayerNorm::load(&w.pp("layernorm"), d, config.layer_norm_eps)?,
            pooler,
        })
    }

    /// A ViTModel folder (or the ViT inside a ViTForImageClassification folder) as `dtype`.
    pub fn load(gpu: &Arc<Gpu>, dir: &Path, dtype: DType) -> Result<(Self, ImageProcessor)> {
        let config = ViTConfig::load(dir)?;
        let w = Weights::open(gpu, dir, dtype)?;
        let root = w
            .find_prefix(&["", "vit."], "embeddings.cls_token")
            .ok_or_else(|| NnError::MissingWeight {
                key: "embeddings.cls_token".into(),
                dir: dir.to_path_buf(),
            })?;
        let processor = ImageProcessor::load(dir, ImageProcessor::vit_default())?;
        Ok((ViTModel::new(&config, &root)?, processor))
    }

    /// The config.
    pub fn config(&self) -> &ViTConfig {
        &self.config
    }

    /// The model on preprocessed images (rescaled and normalised on the GPU by `norm`).
    pub fn forward(&self, images: &ProcessedImages, norm: &Normalize) -> Result<ViTOutput> {
        self.forward_pixels(
            Pixels::U8(&images.pixels),
            images.batch,
            (images.height, images.width),
            norm,
        )
    }

    /// The model on `batch` HWC images of `size` = (height, width); other sizes than the
    /// config's resample the position embeddings (`interpolate_pos_encoding=True`).
    pub fn forward_pixels(
        &self,
        pixels: Pixels<'_>,
        batch: usize,
        size: (usize, usize),
        norm: &Normalize,
    ) -> Result<ViTOutput> {
        let mut x = self
            .embeddings
            .at_size(size)?
            .forward(pixels, batch, norm)?;
        for layer in &self.layers {
            x = layer.forward(x, false)?;
        }
        let last_hidden_state = self.layernorm.forward(&x)?;
        let pooler_output = match &self.pooler {
            Some((dense, act)) => {
                let cls = self.class_tokens(&last_hidden_state)?;
                Some(dense.forward_with(&cls, *act, None)?)
            }
            None => None,
        };
        Ok(ViTOutput {
            last_hidden_state,
            pooler_output,
        })
    }

    /// Rows of the class token, `[batch, hidden]`.
    fn class_tokens(&self, hidden: &Tensor) -> Result<Tensor> {
        let s = hidden.shape();
        let index: Vec<u32> = (0..s[0]).map(|b| (b * s[1]) as u32).collect();
        gather_rows(&hidden.reshape(&[s[0] * s[1], s[2]])?, &index)
    }

    /// Multiply-adds of one forward of `batch` images at the config's size.
    pub fn macs(&self, batch: usize) -> usize {
        let c = &self.config;
        let patches = (c.image_size / c.patch_size).pow(2);
        let seq = patches + 1;
        batch * patches * c.hidden_size * 3 * c.patch_size * c.patch_size
            + self
                .layers
                .iter()
                .map(|l| l.macs(batch, seq))
                .sum::<usize>()
    }
}

/// transformers' `ViTForImageClassification`: the ViT without pooler and a linear classifier
/// on the class token.
pub struct ViTForImageClassification {
    vit: ViTModel,
    classifier: Linear,
    labels: Vec<String>,
}

impl ViTForImageClassification {
    /// The model from weights rooted at the checkpoint's keys (`vit.…`, `classifier.…`).
    pub fn new(config: &ViTConfig, w: &Weights) -> Result<Self> {
        let count = match &config.id2label {
            Some(m) if !m.is_empty() => m.len(),
            _ => 2,
        };
        Ok(ViTForImageClassification {
            vit: ViTModel::new(config, &w.pp("vit"))?,
            classifier: Linear::load(&w.pp("classifier"), config.hidden_size, count, true)?,
            labels: config.labels(count),
        })
    }

    /// A ViTForImageClassification folder as `dtype`, with its image processor.
    pub fn load(gpu: &Arc<Gpu>, dir: &Path, dtype: DType) -> Result<(Self, ImageProcessor)> {
        let config = ViTConfig::load(dir)?;
        let w = Weights::open(gpu, dir, dtype)?;
        if !w.contains("classifier.weight") {
            return Err(NnError::Folder {
                dir: dir.to_path_buf(),
                detail: "this ViT checkpoint has no classifier head (`classifier.weight`); \
                         classify with a ViTForImageClassification checkpoint"
                    .into(),
            });
        }
        let processor = ImageProcessor::load(dir, ImageProcessor::vit_default())?;
        Ok((ViTForImageClassification::new(&config, &w)?, processor))
    }

    /// Logits `[batch, labels]` and the ViT's output.
    pub fn forward(
        &self,
        images: &ProcessedImages,
        norm: &Normalize,
    ) -> Result<(Tensor, ViTOutput)> {
        self.forward_pixels(
            Pixels::U8(&images.pixels),
            images.batch,
            (images.height, images.width),
            norm,
        )
    }

    /// [`ViTForImageClassification::forward`] on raw HWC pixels.
    pub fn forward_pixels(
        &self,
        pixels: Pixels<'_>,
        batch: usize,
        size: (usize, usize),
        norm: &Normalize,
    ) -> Result<(Tensor, ViTOutput)> {
        let out = self.vit.forward_pixels(pixels, batch, size, norm)?;
        let cls = self.vit.class_tokens(&out.last_hidden_state)?;
        Ok((self.classifier.forward(&cls)?, out))
    }

    /// Class names in logit order.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The ViT inside.
    pub fn vit(&self) -> &ViTModel {
        &self.vit
    }

    /// Multiply-adds of one forward of `batch` images at the config's size.
    pub fn macs(&self, batch: usize) -> usize {
        self.vit.macs(batch) + batch * self.classifier.macs()
    }
}
