//! Real-size models with random weights for benchmarks (`benches/models.rs`,
//! `tessera bench models`): ViT-B/16, CLIP ViT-B/32 (image and text towers), Whisper tiny and
//! base encoders and the base decoder (greedy, with timestamps, by beam search), aMUSEd-256's
//! transformer step and VQ-GAN, with their FLOP counts and largest activations.

use std::sync::Arc;

use tessera_audio::{
    token_timestamps, BeamOptions, GreedyOptions, TimestampRules, WhisperConfig, WhisperDecoder,
    WhisperEncoder,
};
use tessera_clip::{ClipConfig, ClipModel};
use tessera_kernels::{DType, Gpu};
use tessera_muse::{UVit2D, UVit2DConfig, VqConfig, VqDecoder};
use tessera_nn::{ProcessedImages, Weights};
use tessera_tensor::{Normalize, Tensor};
use tessera_vit::{ViTConfig, ViTForImageClassification};

/// Error of building or running a benchmark model.
pub type BenchError = Box<dyn std::error::Error + Send + Sync>;

/// The benchmark models, by name: `vit-b16` (batch 1), `vit-b16-b8`, `clip-b32-image`,
/// `clip-b32-text` (8 × 77 tokens), `whisper-tiny`, `whisper-base` (30 s), `whisper-base-decode`
/// (the decoder's greedy decoding of 28 tokens after a 4-token prompt, over a 30 s window's
/// encoder states: one step and one read-back of the logits per token),
/// `whisper-base-decode-timestamps` (the same under the timestamp rules: each token's masks
/// uploaded and the rule decided on the GPU), `whisper-base-decode-beams` (the same by beam
/// search with 5 beams: 5 rows a step, their logits read back and ranked on the CPU),
/// `whisper-base-align` (what word timestamps add to a window: the decoder reads its 32 tokens
/// once more — the encoder's keys and values already projected — keeping the cross-attention
/// of whisper-base's 8 alignment heads, read back, standardised, median-filtered and aligned
/// by dynamic time warping on the CPU), `amused-256-step` (one
/// unmasking step of aMUSEd-256's transformer: 16×16 tokens, the guided batch of 2, the draw
/// of every token and its read-back), `amused-256-vqgan` (its VQ-GAN decoding 16×16 tokens to a
/// 256×256 image), `amused-512-vqgan` (the same VQ-GAN, 32×32 tokens to 512×512: activations of
/// 256 MiB in f32, held in channel parts where a binding is smaller).
pub const MODELS: &[&str] = &[
    "vit-b16",
    "vit-b16-b8",
    "clip-b32-image",
    "clip-b32-text",
    "whisper-tiny",
    "whisper-base",
    "whisper-base-decode",
    "whisper-base-decode-timestamps",
    "whisper-base-decode-beams",
    "whisper-base-align",
    "amused-256-step",
    "amused-256-vqgan",
    "amused-512-vqgan",
];

/// Multiply-adds of the Whisper decoder's layers reading `tokens` tokens one after another:
/// per token the projections and the MLP, attention over the tokens so far and the encoder's
/// positions.
fn decoder_layer_macs(config: &WhisperConfig, tokens: usize) -> usize {
    let (d, pos, layers) = (
        config.d_model,
        config.max_source_positions,
        config.decoder_layers,
    );
    let attention: usize = (1..=tokens).map(|t| layers * 2 * d * (t + pos)).sum();
    tokens * layers * (6 * d * d + 2 * d * config.decoder_ffn_dim) + attention
}

/// A deterministic input in [−0.5, 0.5) of `shape`.
fn pattern(gpu: &Arc<Gpu>, shape: &[usize], dtype: DType) -> Result<Tensor, BenchError> {
    let values: Vec<f32> = (0..shape.iter().product::<usize>())
        .map(|i| ((i * 37 % 101) as f32 / 101.0) - 0.5)
        .collect();
    Ok(Tensor::from_slice(gpu, &values, shape, dtype)?)
}

/// Token ids as an f32 tensor, the output of the benchmarks that produce tokens.
fn ids_tensor(gpu: &Arc<Gpu>, ids: &[u32]) -> Result<Tensor, BenchError> {
    let values: Vec<f32> = ids.iter().map(|&t| t as f32).collect();
    Ok(Tensor::from_slice(gpu, &values, &[ids.len()], DType::F32)?)
}

/// aMUSEd-256's transformer (the defaults are close; these are the checkpoint's).
fn amused_256() -> UVit2DConfig {
    UVit2DConfig {
        sample_size: 16,
        ..UVit2DConfig::default()
    }
}

/// aMUSEd-256's VQ-GAN.
fn amused_256_vq() -> VqConfig {
    VqConfig {
        up_block_types: vec!["UpDecoderBlock2D".into(); 5],
        block_out_channels: vec![128, 256, 256, 512, 768],
        layers_per_block: 2,
        latent_channels: 64,
        num_vq_embeddings: 8192,
        lookup_from_codebook: true,
        mid_block_add_attention: false,
        ..VqConfig::default()
    }
}

/// Whisper base's sizes (the defaults are tiny's).
fn whisper_base() -> WhisperConfig {
    WhisperConfig {
        d_model: 512,
        encoder_layers: 6,
        encoder_attention_heads: 8,
        encoder_ffn_dim: 2048,
        decoder_layers: 6,
        decoder_attention_heads: 8,
        decoder_ffn_dim: 2048,
        ..WhisperConfig::default()
    }
}

/// One benchmark: a model with random weights and its input, ready to run.
pub struct ModelBench {
    /// Its name in [`MODELS`].
    pub name: &'static str,
    /// Inputs per forward (images, texts or 30 s windows).
    pub batch: usize,
    /// Floating-point operations of one forward (2 per multiply-add of the matmuls, convolutions
    /// and attention).
    pub flops: f64,
    /// Bytes of the largest single activation of one forward (for `whisper-base-decode`, the
    /// cross-attention keys and values the decoding holds).
    pub largest_activation_bytes: u64,
    run: Box<dyn Fn() -> Result<Tensor, BenchError>>,
}

impl ModelBench {
    /// Builds model `name` of [`MODELS`] in `dtype` with random weights.
    pub fn new(gpu: &Arc<Gpu>, name: &str, dtype: DType) -> Result<Self, BenchError> {
        let w = Weights::random(gpu, dtype)?;
        let size = dtype.size() as u64;
        let norm = Normalize {
            rescale: 1.0 / 255.0,
            mean: [0.5; 3],
            std: [0.5; 3],
        };
        let images = |batch: usize, side: usize| ProcessedImages {
            pixels: (0..batch * side * side * 3)
                .map(|i| (i * 31 % 251) as u8)
                .collect(),
            batch,
            height: side,
            width: side,
        };
        let name: &'static str =
            MODELS.iter().copied().find(|m| *m == name).ok_or_else(|| {
                format!("unknown model '{name}': choose from {}", MODELS.join(", "))
            })?;
        let batch = if matches!(name, "vit-b16-b8" | "clip-b32-text") {
            8
        } else {
            1
        };
        let bench = match name {
            "vit-b16" | "vit-b16-b8" => {
                let config = ViTConfig {
                    id2label: Some(
                        (0..1000)
                            .map(|i| (i.to_string(), format!("c{i}")))
                            .collect(),
                    ),
                    ..ViTConfig::default()
                };
                let model = ViTForImageClassification::new(&config, &w)?;
                let input = images(batch, config.image_size);
                let seq = (config.image_size / config.patch_size).pow(2) + 1;
                ModelBench {
                    name,
                    batch,
                    flops: 2.0 * model.macs(batch) as f64,
                    largest_activation_bytes: (batch * seq * config.intermediate_size) as u64
                        * size,
                    run: Box::new(move || Ok(model.forward(&input, &norm)?.0)),
                }
            }
            "clip-b32-image" | "clip-b32-text" => {
                let config = ClipConfig::default();
                let model = ClipModel::new(&config, &w)?;
                if name == "clip-b32-image" {
                    let v = &config.vision_config;
                    let input = images(batch, v.image_size);
                    let seq = (v.image_size / v.patch_size).pow(2) + 1;
                    ModelBench {
                        name,
                        batch,
                        flops: 2.0 * model.vision_model().macs(batch) as f64,
                        largest_activation_bytes: (batch * seq * v.intermediate_size) as u64 * size,
                        run: Box::new(move || Ok(model.image_embeds(&input, &norm)?)),
                    }
                } else {
                    let t = &config.text_config;
                    let len = t.max_position_embeddings;
                    let ids: Vec<Vec<u32>> = (0..batch)
                        .map(|b| {
                            (0..len)
                                .map(|i| ((b * 977 + i * 131) % (t.vocab_size - 1)) as u32)
                                .collect()
                        })
                        .collect();
                    ModelBench {
                        name,
                        batch,
                        flops: 2.0 * model.text_model().macs(batch, len) as f64,
                        largest_activation_bytes: (batch * len * t.intermediate_size) as u64 * size,
                        run: Box::new(move || Ok(model.text_embeds(&ids)?)),
                    }
                }
            }
            "amused-256-step" => {
                let config = amused_256();
                let model = UVit2D::new(&config, &w)?;
                let (rows, text_len, side) = (2, 77, config.sample_size);
                let seq = side * side;
                let text = pattern(gpu, &[rows, text_len, config.encoder_hidden_size], dtype)?;
                let pooled = text
                    .narrow(1, 0, 1)?
                    .contiguous()?
                    .reshape(&[rows, config.cond_embed_dim])?;
                let cond = model.condition(&text, &pooled, &[[256.0, 256.0, 0.0, 0.0, 6.0]; 2])?;
                // Half the tokens masked, as in the middle of a generation.
                let mask = (config.vocab_size - 1) as u32;
                let ids: Vec<u32> = (0..rows * seq)
                    .map(|i| {
                        if i % 2 == 0 {
                            mask
                        } else {
                            (i * 131 % config.codebook_size) as u32
                        }
                    })
                    .collect();
                let uniforms: Vec<f32> = (0..seq).map(|i| (i * 61 % 97) as f32 / 97.0).collect();
                ModelBench {
                    name,
                    batch,
                    flops: 2.0 * model.macs(rows, seq, text_len) as f64,
                    largest_activation_bytes: (rows * seq * config.codebook_size) as u64 * size,
                    run: Box::new({
                        let gpu = gpu.clone();
                        move || {
                            let logits = model.forward(&ids, (side, side), &cond)?;
                            let (drawn, _) = logits.sample_rows(&uniforms, Some(10.0))?;
                            ids_tensor(&gpu, &drawn)
                        }
                    }),
                }
            }
            "amused-256-vqgan" | "amused-512-vqgan" => {
                // aMUSEd-512's VQ-GAN is aMUSEd-256's, over 32×32 tokens.
                let config = amused_256_vq();
                // diffusers runs the VQ-GAN in f32 (force_upcast); so does the pipeline.
                let model = VqDecoder::new(&config, &Weights::random(gpu, DType::F32)?)?;
                let side = if name == "amused-512-vqgan" { 32 } else { 16 };
                let ids: Vec<u32> = (0..side * side).map(|i| (i * 131 % 8192) as u32).collect();
                let px = side * config.scale_factor();
                ModelBench {
                    name,
                    batch,
                    flops: 2.0 * model.macs((side, side)) as f64,
                    // The im2col rows of the full-resolution 3×3 convolutions.
                    largest_activation_bytes: (px * px * 9 * config.block_out_channels[0]) as u64
                        * 4,
                    run: Box::new(move || Ok(model.decode(&ids, 1, (side, side))?)),
                }
            }
            "whisper-base-decode"
            | "whisper-base-decode-timestamps"
            | "whisper-base-decode-beams" => {
                let config = whisper_base();
                let model = WhisperDecoder::new(&config, &w)?;
                let (d, pos, vocab) = (
                    config.d_model,
                    config.max_source_positions,
                    config.vocab_size,
                );
                let states = pattern(gpu, &[1, pos, d], dtype)?;
                let new = 28;
                // Start, English, transcribe, then <|notimestamps|> or the timestamp rules.
                let mut options = GreedyOptions {
                    prompt: vec![50258, 50259, 50359, 50363],
                    max_new_tokens: new,
                    ..GreedyOptions::default()
                };
                if name == "whisper-base-decode-timestamps" {
                    options.prompt.pop();
                    options.timestamps = Some(TimestampRules {
                        no_timestamps: 50363,
                        eos: 50257,
                        max_initial_index: Some(50),
                    });
                }
                let rows = if name == "whisper-base-decode-beams" {
                    options.beams = Some(BeamOptions::default());
                    BeamOptions::default().num_beams
                } else {
                    1
                };
                let prompt = options.prompt.len();
                // Per token: the layers and the output head; once: the encoder's keys and
                // values.
                let tokens = prompt + new - 1;
                // Beams decode as rows of a batch over one audio's keys and values.
                let macs = rows * (decoder_layer_macs(&config, tokens) + tokens * vocab * d)
                    + config.decoder_layers * pos * 2 * d * d;
                ModelBench {
                    name,
                    batch,
                    flops: 2.0 * macs as f64,
                    // What decoding holds throughout: every layer's keys and values of the
                    // encoder's positions.
                    largest_activation_bytes: (config.decoder_layers * 2 * pos * d) as u64 * size,
                    run: Box::new({
                        let gpu = gpu.clone();
                        move || {
                            let ids = model.generate(&states, &options)?.swap_remove(0);
                            ids_tensor(&gpu, &ids)
                        }
                    }),
                }
            }
            "whisper-base-align" => {
                let config = whisper_base();
                let model = WhisperDecoder::new(&config, &w)?;
                let (d, pos) = (config.d_model, config.max_source_positions);
                // The window's cross-attention keys and values, as transcription projects
                // them once for decoding and alignment.
                let states = model.start(&pattern(gpu, &[1, pos, d], dtype)?)?;
                // Start, English, transcribe, a timestamp, 27 text tokens, a timestamp.
                let mut tokens = vec![50258, 50259, 50359, 50364];
                tokens.extend((0..27).map(|i| 220 + i * 977 % 30000));
                tokens.push(50364 + 150);
                // whisper-base's generation_config.json.
                let heads = [
                    (3, 1),
                    (4, 2),
                    (4, 3),
                    (4, 7),
                    (5, 1),
                    (5, 2),
                    (5, 4),
                    (5, 6),
                ];
                let fed = tokens.len() - 1;
                // The layers over every token, the output head once, the heads' weights.
                let macs = decoder_layer_macs(&config, fed)
                    + config.vocab_size * d
                    + heads.len() * fed * pos * (d / config.decoder_attention_heads);
                ModelBench {
                    name,
                    batch,
                    flops: 2.0 * macs as f64,
                    largest_activation_bytes: (config.decoder_layers * 2 * pos * d) as u64 * size,
                    run: Box::new({
                        let gpu = gpu.clone();
                        move || {
                            let weights =
                                model.cross_attention_weights(&states, &tokens[..fed], &heads)?;
                            let times = token_timestamps(
                                &weights,
                                heads.len(),
                                tokens.len(),
                                3,
                                pos,
                                Some(3000),
                                7,
                            );
                            Ok(Tensor::from_slice(
                                &gpu,
                                &times,
                                &[times.len()],
                                DType::F32,
                            )?)
                        }
                    }),
                }
            }
            _ => {
                let config = if name == "whisper-tiny" {
                    WhisperConfig::default()
                } else {
                    whisper_base()
                };
                let model = WhisperEncoder::new(&config, &w)?;
                let frames = config.frames();
                let input = pattern(gpu, &[batch, config.num_mel_bins, frames], dtype)?;
                let pos = config.max_source_positions;
                let largest = [
                    frames * config.d_model,
                    pos * 3 * config.d_model,
                    pos * config.encoder_ffn_dim,
                ]
                .into_iter()
                .max()
                .unwrap_or(0);
                ModelBench {
                    name,
                    batch,
                    flops: 2.0 * model.macs(batch) as f64,
                    largest_activation_bytes: (batch * largest) as u64 * size,
                    run: Box::new(move || Ok(model.forward(&input)?)),
                }
            }
        };
        Ok(bench)
    }

    /// Records one forward pass; its output is the returned tensor.
    pub fn run(&self) -> Result<Tensor, BenchError> {
        (self.run)()
    }
}
