//! The Whisper encoder, laid out as transformers' `WhisperEncoder`: two convolutions with GELU
//! (the second with stride 2), sinusoidal positions, pre-LN layers, a final LayerNorm.

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use tessera_kernels::{DType, Gpu};
use tessera_nn::config::{activation, head_dim, positive, ModelConfig};
use tessera_nn::{
    AttentionWeights, LayerNorm, Linear, Mlp, NnError, PreLnBlock, SelfAttention, Weights,
};
use tessera_tensor::{Activation, ConvOptions, Tensor};

use crate::error::{AudioError, Result};
use crate::mel::LogMel;

/// A Whisper `config.json`'s model sizes (transformers' `WhisperConfig` defaults).
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct WhisperConfig {
    /// Must be `whisper` when present.
    pub model_type: Option<String>,
    /// Mel bands of the input (80, or 128 for large-v3).
    pub num_mel_bins: usize,
    /// Width of the residual stream.
    pub d_model: usize,
    /// Encoder layers.
    pub encoder_layers: usize,
    /// Encoder attention heads.
    pub encoder_attention_heads: usize,
    /// Encoder MLP width.
    pub encoder_ffn_dim: usize,
    /// Encoder positions (1500: 3000 mel frames halved by the second convolution).
    pub max_source_positions: usize,
    /// MLP and stem activation.
    pub activation_function: String,
    /// Tokens.
    pub vocab_size: usize,
    /// Decoder layers.
    pub decoder_layers: usize,
    /// Decoder attention heads.
    pub decoder_attention_heads: usize,
    /// Decoder MLP width.
    pub decoder_ffn_dim: usize,
    /// Decoder positions: the most tokens a transcript window holds (448).
    pub max_target_positions: usize,
}

impl Default for WhisperConfig {
    fn default() -> Self {
        WhisperConfig {
            model_type: None,
            num_mel_bins: 80,
            d_model: 384,
            encoder_layers: 4,
            encoder_attention_heads: 6,
            encoder_ffn_dim: 1536,
            max_source_positions: 1500,
            activation_function: "gelu".into(),
            vocab_size: 51865,
            decoder_layers: 4,
            decoder_attention_heads: 6,
            decoder_ffn_dim: 1536,
            max_target_positions: 448,
        }
    }
}

impl ModelConfig for WhisperConfig {
    const MODEL_TYPE: &'static str = "whisper";
    const NAME: &'static str = "Whisper";

    fn model_type(&self) -> Option<&str> {
        self.model_type.as_deref()
    }

    fn check(&self) -> tessera_nn::Result<()> {
        if self.num_mel_bins == 0 || self.num_mel_bins > 256 {
            return Err(NnError::config(
                "num_mel_bins",
                format!("{} mel bands: use 80 or 128", self.num_mel_bins),
            ));
        }
        positive("d_model", self.d_model)?;
        positive("encoder_ffn_dim", self.encoder_ffn_dim)?;
        positive("max_source_positions", self.max_source_positions)?;
        head_dim(
            "encoder_attention_heads",
            self.d_model,
            self.encoder_attention_heads,
        )?;
        activation("activation_function", &self.activation_function)?;
        Ok(())
    }
}

impl WhisperConfig {
    /// Mel frames the encoder takes (twice its positions: 3000 for 30 s).
    pub fn frames(&self) -> usize {
        2 * self.max_source_positions
    }
}

/// The weights of `part` in a Whisper checkpoint: under `model.{part}.`
/// (WhisperForConditionalGeneration) or `{part}.` (WhisperModel), whichever holds `probe`.
pub(crate) fn part_of(w: &Weights, part: &str, probe: &str) -> Result<Weights> {
    let missing = || NnError::MissingWeight {
        key: format!("model.{part}.{probe}"),
        dir: w
            .dir()
            .unwrap_or(Path::new("(random weights)"))
            .to_path_buf(),
    };
    w.find_prefix(&[&format!("model.{part}."), &format!("{part}.")], probe)
        .ok_or_else(|| missing().into())
}

/// transformers' `WhisperEncoder`.
pub struct WhisperEncoder {
    config: WhisperConfig,
    conv1: (Tensor, Tensor),
    conv2: (Tensor, Tensor),
    embed_positions: Tensor,
    layers: Vec<PreLnBlock>,
    layer_norm: LayerNorm,
    activation: Activation,
}

impl WhisperEncoder {
    /// The encoder from weights under its own keys (`conv1.…`, `layers.i.…`).
    pub fn new(config: &WhisperConfig, w: &Weights) -> Result<Self> {
        config.validate()?;
        let (d, mels, ffn) = (config.d_model, config.num_mel_bins, config.encoder_ffn_dim);
        let act = activation("activation_function", &config.activation_function)?;
        let eps = 1e-5;
        let layers = (0..config.encoder_layers)
            .map(|i| {
                let l = w.pp("layers").pp(i);
                let a = l.pp("self_attn");
                Ok(PreLnBlock {
                    ln1: LayerNorm::load(&l.pp("self_attn_layer_norm"), d, eps)?,
                    attn: SelfAttention::load(
                        &AttentionWeights {
                            q: &a.pp("q_proj"),
                            k: &a.pp("k_proj"),
                            v: &a.pp("v_proj"),
                            out: &a.pp("out_proj"),
                            qkv_bias: [true, false, true],
                            out_bias: true,
                        },
                        d,
                        config.encoder_attention_heads,
                    )?,
                    ln2: LayerNorm::load(&l.pp("final_layer_norm"), d, eps)?,
                    mlp: Mlp::new(
                        Linear::load(&l.pp("fc1"), d, ffn, true)?,
                        Linear::load(&l.pp("fc2"), ffn, d, true)?,
                        act,
                    ),
                })
            })
            .collect::<tessera_nn::Result<Vec<_>>>()?;
        Ok(WhisperEncoder {
            conv1: (
                w.get("conv1.weight", &[d, mels, 3])?,
                w.get("conv1.bias", &[d])?,
            ),
            conv2: (
                w.get("conv2.weight", &[d, d, 3])?,
                w.get("conv2.bias", &[d])?,
            ),
            embed_positions: w.get("embed_positions.weight", &[config.max_source_positions, d])?,
            layers,
            layer_norm: LayerNorm::load(&w.pp("layer_norm"), d, eps)?,
            activation: act,
            config: config.clone(),
        })
    }

    /// The encoder of a WhisperModel or WhisperForConditionalGeneration folder as `dtype`.
    pub fn load(gpu: &Arc<Gpu>, dir: &Path, dtype: DType) -> Result<Self> {
        let config = WhisperConfig::load(dir)?;
        WhisperEncoder::from_checkpoint(&config, &Weights::open(gpu, dir, dtype)?)
    }

    /// The encoder from a whole WhisperModel or WhisperForConditionalGeneration checkpoint's
    /// weights (such as [`Weights::from_bytes`] of fetched files).
    pub fn from_checkpoint(config: &WhisperConfig, w: &Weights) -> Result<Self> {
        WhisperEncoder::new(config, &part_of(w, "encoder", "conv1.weight")?)
    }

    /// The config.
    pub fn config(&self) -> &WhisperConfig {
        &self.config
    }

    /// The GPU the weights live on.
    pub fn gpu(&self) -> &Arc<Gpu> {
        self.embed_positions.gpu()
    }

    /// The log-mel front end this encoder takes (`num_mel_bins` bands).
    pub fn log_mel(&self, gpu: &Arc<Gpu>) -> Result<LogMel> {
        LogMel::new(gpu, self.config.num_mel_bins)
    }

    /// `last_hidden_state` `[batch, positions, d_model]` of log-mel features
    /// `[batch, n_mels, frames]` (3000 frames for 30 s, in any dtype: they are converted to the
    /// model's).
    pub fn forward(&self, features: &Tensor) -> Result<Tensor> {
        let s = features.shape();
        let (mels, frames) = (self.config.num_mel_bins, self.config.frames());
        if s.len() != 3 || s[1] != mels || s[2] != frames {
            return Err(AudioError::Unsupported(format!(
                "the encoder takes log-mel features [batch, {mels}, {frames}], got {s:?}"
            )));
        }
        let dtype = self.embed_positions.dtype();
        // Each stage's input is dropped as soon as the next has read it.
        let features = if features.dtype() == dtype {
            features.clone()
        } else {
            features.to_dtype(dtype)?
        };
        let x = features.conv1d(
            &self.conv1.0,
            &ConvOptions {
                padding: (0, 1),
                bias: Some(&self.conv1.1),
                activation: self.activation,
                ..ConvOptions::default()
            },
        )?;
        drop(features);
        let y = x.conv1d(
            &self.conv2.0,
            &ConvOptions {
                stride: (1, 2),
                padding: (0, 1),
                bias: Some(&self.conv2.1),
                activation: self.activation,
                channels_last: true,
                ..ConvOptions::default()
            },
        )?;
        drop(x);
        let mut x = y.add(&self.embed_positions)?;
        drop(y);
        for layer in &self.layers {
            x = layer.forward(x, false)?;
        }
        Ok(self.layer_norm.forward(&x)?)
    }

    /// Multiply-adds of one forward of `batch` windows.
    pub fn macs(&self, batch: usize) -> usize {
        let c = &self.config;
        let (frames, pos, d) = (c.frames(), c.max_source_positions, c.d_model);
        batch * (frames * d * c.num_mel_bins * 3 + pos * d * d * 3)
            + self
                .layers
                .iter()
                .map(|l| l.macs(batch, pos))
                .sum::<usize>()
    }
}
