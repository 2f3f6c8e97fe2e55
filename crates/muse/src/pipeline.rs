//! diffusers' `AmusedPipeline`: prompt → CLIP text encoder (penultimate hidden states and
//! projected pooled embedding) → the masked-token transformer over `steps` steps with
//! classifier-free guidance, drawing and re-masking tokens → the VQ-GAN decoder → RGB.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use tessera_clip::{ClipTextConfig, ClipTextTransformer, ClipTokenizer};
use tessera_kernels::{wait, DType, Gpu};
use tessera_nn::config::{parse_json, read_json};
use tessera_nn::{Linear, NnError, Noise, Result, Weights};
use tessera_tensor::Tensor;

use crate::scheduler::{linspace, AmusedScheduler};
use crate::transformer::{UVit2D, UVit2DConfig, MICRO_CONDS};
use crate::vq::{VqConfig, VqDecoder};

const TEXT_CONFIG: &str = "CLIPTextModelWithProjection config";

/// `text_encoder/config.json`: a `CLIPTextConfig` with the projection width.
#[derive(Clone, Debug, Deserialize)]
struct TextEncoderConfig {
    #[serde(flatten)]
    text: ClipTextConfig,
    projection_dim: usize,
}

/// The CLIP text encoder with its projection (`CLIPTextModelWithProjection`) and tokenizer,
/// padding every prompt to the full length as the pipeline does.
pub struct TextEncoder {
    tower: ClipTextTransformer,
    projection: Linear,
    tokenizer: ClipTokenizer,
    pad_id: u32,
}

/// What the transformer is conditioned on: `[batch, len, hidden]` and `[batch, projection]`.
pub struct TextEmbeddings {
    /// The hidden states before the last layer.
    pub hidden_states: Tensor,
    /// The projected pooled output (`text_embeds`).
    pub pooled: Tensor,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum TokenSpec {
    Plain(String),
    Added { content: String },
}

#[derive(Deserialize, Default)]
struct TokenizerConfig {
    pad_token: Option<TokenSpec>,
}

impl TextEncoder {
    /// `text_encoder/` and `tokenizer/` of a pipeline folder.
    pub fn load(
        gpu: &Arc<Gpu>,
        text_dir: &Path,
        tokenizer_dir: &Path,
        dtype: DType,
    ) -> Result<Self> {
        let config: TextEncoderConfig = read_json(&text_dir.join("config.json"), TEXT_CONFIG)?;
        config.text.check("")?;
        let w = Weights::open(gpu, text_dir, dtype)?;
        let tokenizer = ClipTokenizer::load(tokenizer_dir, config.text.max_position_embeddings)?;
        let tc_path = tokenizer_dir.join("tokenizer_config.json");
        let tc = if tc_path.is_file() {
            Some(read_json(&tc_path, "tokenizer config")?)
        } else {
            None
        };
        TextEncoder::build(config, &w, tokenizer, tc, &tc_path)
    }

    /// The text encoder from memory (what a browser fetched): `text_encoder/config.json`'s
    /// text, its weights, the tokenizer (its length is set from the config), and
    /// `tokenizer/tokenizer_config.json`'s text where the pipeline has one.
    pub fn from_parts(
        config: &str,
        w: &Weights,
        tokenizer: ClipTokenizer,
        tokenizer_config: Option<&str>,
    ) -> Result<Self> {
        let config: TextEncoderConfig = parse_json(config, Path::new("config.json"), TEXT_CONFIG)?;
        let tc_path = Path::new("tokenizer_config.json");
        let tc = tokenizer_config
            .map(|text| parse_json(text, tc_path, "tokenizer config"))
            .transpose()?;
        TextEncoder::build(config, w, tokenizer, tc, tc_path)
    }

    fn build(
        config: TextEncoderConfig,
        w: &Weights,
        tokenizer: ClipTokenizer,
        tc: Option<TokenizerConfig>,
        tc_path: &Path,
    ) -> Result<Self> {
        config.text.check("")?;
        tessera_nn::config::positive("projection_dim", config.projection_dim)?;
        let t = &config.text;
        let tokenizer = tokenizer.with_max_len(t.max_position_embeddings)?;
        let tower = ClipTextTransformer::new(t, &w.pp("text_model"))?;
        let projection = Linear::load(
            &w.pp("text_projection"),
            t.hidden_size,
            config.projection_dim,
            false,
        )?;
        let pad = match tc.and_then(|tc| tc.pad_token) {
            Some(TokenSpec::Plain(s)) | Some(TokenSpec::Added { content: s }) => s,
            None => "<|endoftext|>".into(),
        };
        let pad_id = tokenizer.token_id(&pad).ok_or_else(|| NnError::Json {
            path: tc_path.to_path_buf(),
            what: "tokenizer config",
            detail: format!("pad_token {pad:?} is not in the vocabulary"),
        })?;
        Ok(TextEncoder {
            tower,
            projection,
            tokenizer,
            pad_id,
        })
    }

    /// Widths of the hidden states and of the projected pooled output.
    pub fn dims(&self) -> (usize, usize) {
        (self.tower.config().hidden_size, self.projection.out_dim())
    }

    /// The token ids of each prompt, padded to the full length.
    pub fn tokenize(&self, prompts: &[&str]) -> Result<Vec<Vec<u32>>> {
        let mut ids = self.tokenizer.encode(prompts)?;
        for s in &mut ids {
            s.resize(self.tower.config().max_position_embeddings, self.pad_id);
        }
        Ok(ids)
    }

    /// The embeddings of already tokenized, equally long sequences.
    pub fn encode_ids(&self, ids: &[Vec<u32>]) -> Result<TextEmbeddings> {
        let (out, hidden_states) = self.tower.forward_hidden(ids)?;
        Ok(TextEmbeddings {
            hidden_states,
            pooled: self.projection.forward(&out.pooler_output)?,
        })
    }

    /// The embeddings of `prompts`.
    pub fn encode(&self, prompts: &[&str]) -> Result<TextEmbeddings> {
        self.encode_ids(&self.tokenize(prompts)?)
    }
}

/// Settings of [`Amused::generate`] (diffusers' defaults).
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// Unmasking steps.
    pub steps: usize,
    /// Classifier-free guidance scale; at most 1 runs without the unconditional half.
    pub guidance_scale: f32,
    /// What to steer away from (the empty prompt when `None`).
    pub negative_prompt: Option<String>,
    /// Image size `(width, height)` in pixels (multiples of the VQ scale factor); the
    /// transformer's native size when `None`.
    pub size: Option<(usize, usize)>,
    /// Re-masking temperature, linearly from the first to the second over the steps.
    pub temperature: (f32, f32),
    /// Micro-conditioning: the aesthetic score.
    pub aesthetic_score: f32,
    /// Micro-conditioning: the crop's top-left corner.
    pub crop: (f32, f32),
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            steps: 12,
            guidance_scale: 10.0,
            negative_prompt: None,
            size: None,
            temperature: (2.0, 0.0),
            aesthetic_score: 6.0,
            crop: (0.0, 0.0),
        }
    }
}

/// Generated images: `[batch, height, width, 3]` RGB in [0, 1], and their tokens.
pub struct Images {
    /// Pixel values, row-major, channels last.
    pub pixels: Vec<f32>,
    /// Images.
    pub batch: usize,
    /// Height in pixels.
    pub height: usize,
    /// Width in pixels.
    pub width: usize,
    /// The final token grid of each image, `[batch, height / s, width / s]`.
    pub tokens: Vec<u32>,
}

impl Images {
    /// Image `i` as 8-bit RGB (`round(255 · v)`, as diffusers' `numpy_to_pil`).
    pub fn rgb8(&self, i: usize) -> Vec<u8> {
        let n = self.height * self.width * 3;
        self.pixels[i * n..(i + 1) * n]
            .iter()
            .map(|v| (v * 255.0).round().clamp(0.0, 255.0) as u8)
            .collect()
    }
}

#[derive(Deserialize)]
struct ModelIndex {
    #[serde(rename = "_class_name")]
    class_name: Option<String>,
}

/// An aMUSEd pipeline folder loaded for generation.
pub struct Amused {
    text: TextEncoder,
    transformer: UVit2D,
    vqvae: VqDecoder,
    scheduler: AmusedScheduler,
}

/// The largest image side generation accepts, in pixels.
pub const MAX_SIDE: usize = 4096;

fn part(dir: &Path, name: &str) -> Result<PathBuf> {
    let p = dir.join(name);
    if !p.is_dir() {
        return Err(NnError::Folder {
            dir: dir.to_path_buf(),
            detail: format!(
                "no {name}/ folder: an aMUSEd pipeline folder has text_encoder/, tokenizer/, \
                 transformer/, vqvae/ and scheduler/"
            ),
        });
    }
    Ok(p)
}

impl Amused {
    /// A pipeline folder (`model_index.json` and its parts) as `dtype`; the VQ decoder runs in
    /// f32 always (diffusers' `force_upcast`).
    pub fn load(gpu: &Arc<Gpu>, dir: &Path, dtype: DType) -> Result<Self> {
        if !dir.is_dir() {
            return Err(NnError::Folder {
                dir: dir.to_path_buf(),
                detail: "no such model folder: point --model at an aMUSEd pipeline folder".into(),
            });
        }
        let index = dir.join("model_index.json");
        if index.is_file() {
            let idx: ModelIndex = read_json(&index, "pipeline index")?;
            if let Some(name) = idx.class_name {
                if name != "AmusedPipeline" {
                    return Err(NnError::config(
                        "_class_name",
                        format!(
                            "{name:?} in model_index.json: only AmusedPipeline folders run here"
                        ),
                    ));
                }
            }
        }
        let text = TextEncoder::load(
            gpu,
            &part(dir, "text_encoder")?,
            &part(dir, "tokenizer")?,
            dtype,
        )?;
        let tdir = part(dir, "transformer")?;
        let transformer = UVit2D::new(
            &UVit2DConfig::load(&tdir)?,
            &Weights::open(gpu, &tdir, dtype)?,
        )?;
        let vdir = part(dir, "vqvae")?;
        let vqvae = VqDecoder::new(
            &VqConfig::load(&vdir)?,
            &Weights::open(gpu, &vdir, DType::F32)?,
        )?;
        let scheduler = AmusedScheduler::load(&part(dir, "scheduler")?)?;
        Amused::from_parts(text, transformer, vqvae, scheduler)
    }

    /// A pipeline from its parts, built from memory where a browser fetched them
    /// ([`TextEncoder::from_parts`], [`UVit2D::new`] and [`VqDecoder::new`] over
    /// [`Weights::from_bytes`], the configs' `from_json`); refuses parts that do not fit
    /// together.
    pub fn from_parts(
        text: TextEncoder,
        transformer: UVit2D,
        vqvae: VqDecoder,
        scheduler: AmusedScheduler,
    ) -> Result<Self> {
        let tc = transformer.config();
        if scheduler.mask_token_id as usize >= tc.vocab_size
            || (scheduler.mask_token_id as usize) < tc.codebook_size
        {
            return Err(NnError::config(
                "mask_token_id",
                format!(
                    "{} is not a token between the codebook ({}) and the vocabulary's end ({})",
                    scheduler.mask_token_id, tc.codebook_size, tc.vocab_size
                ),
            ));
        }
        if text.dims() != (tc.encoder_hidden_size, tc.cond_embed_dim) {
            return Err(NnError::config(
                "encoder_hidden_size",
                format!(
                    "the transformer takes text states of {} and pooled embeddings of {}; the \
                     text encoder gives {} and {}",
                    tc.encoder_hidden_size,
                    tc.cond_embed_dim,
                    text.dims().0,
                    text.dims().1
                ),
            ));
        }
        if vqvae.config().out_channels != 3 {
            return Err(NnError::config(
                "out_channels",
                format!(
                    "the vqvae decodes {} channels, not RGB (3)",
                    vqvae.config().out_channels
                ),
            ));
        }
        if tc.codebook_size != vqvae.config().num_vq_embeddings {
            return Err(NnError::config(
                "codebook_size",
                format!(
                    "the transformer's {} differs from the vqvae's num_vq_embeddings {}",
                    tc.codebook_size,
                    vqvae.config().num_vq_embeddings
                ),
            ));
        }
        Ok(Amused {
            text,
            transformer,
            vqvae,
            scheduler,
        })
    }

    /// The text encoder.
    pub fn text_encoder(&self) -> &TextEncoder {
        &self.text
    }

    /// The transformer.
    pub fn transformer(&self) -> &UVit2D {
        &self.transformer
    }

    /// The VQ-GAN decoder.
    pub fn vqvae(&self) -> &VqDecoder {
        &self.vqvae
    }

    /// The scheduler.
    pub fn scheduler(&self) -> &AmusedScheduler {
        &self.scheduler
    }

    /// The image size `(width, height)` the options ask for, checked.
    pub fn image_size(&self, opts: &GenerateOptions) -> Result<(usize, usize)> {
        let s = self.vqvae.config().scale_factor();
        let native = self.transformer.config().sample_size * s;
        let (w, h) = opts.size.unwrap_or((native, native));
        let step = if self.transformer.config().downsample {
            2 * s
        } else {
            s
        };
        if w == 0 || h == 0 || w % step != 0 || h % step != 0 || w > MAX_SIDE || h > MAX_SIDE {
            return Err(NnError::Input(format!(
                "image size {w}×{h}: each side must be a multiple of {step} pixels, at most {MAX_SIDE}"
            )));
        }
        Ok((w, h))
    }

    /// Images for `prompts`, one each, drawing randomness from `noise`.
    pub fn generate(
        &self,
        prompts: &[&str],
        opts: &GenerateOptions,
        noise: &mut dyn Noise,
    ) -> Result<Images> {
        wait(self.generate_with_async(prompts, opts, noise, &mut |_, _| {}))
    }

    /// [`Amused::generate`] as a future, which a browser awaits.
    pub async fn generate_async(
        &self,
        prompts: &[&str],
        opts: &GenerateOptions,
        noise: &mut dyn Noise,
    ) -> Result<Images> {
        self.generate_with_async(prompts, opts, noise, &mut |_, _| {})
            .await
    }

    /// [`Amused::generate`], calling `on_step(done, steps)` after each step (progress: a
    /// 256×256 image takes minutes on a CPU driver). Prompts past one batch (what one binding
    /// holds of a step's logits) count their steps again.
    pub fn generate_with(
        &self,
        prompts: &[&str],
        opts: &GenerateOptions,
        noise: &mut dyn Noise,
        on_step: &mut dyn FnMut(usize, usize),
    ) -> Result<Images> {
        wait(self.generate_with_async(prompts, opts, noise, on_step))
    }

    /// [`Amused::generate_with`] as a future, which a browser awaits.
    pub async fn generate_with_async(
        &self,
        prompts: &[&str],
        opts: &GenerateOptions,
        noise: &mut dyn Noise,
        on_step: &mut dyn FnMut(usize, usize),
    ) -> Result<Images> {
        if prompts.is_empty() {
            return Err(NnError::Input("no prompt to generate from".into()));
        }
        if opts.steps == 0 || opts.steps > 1000 {
            return Err(NnError::Input(format!(
                "{} steps: give 1 to 1000",
                opts.steps
            )));
        }
        if !opts.guidance_scale.is_finite()
            || !opts.aesthetic_score.is_finite()
            || !opts.temperature.0.is_finite()
            || !opts.temperature.1.is_finite()
        {
            return Err(NnError::Input(
                "guidance, temperature and aesthetic score must be finite".into(),
            ));
        }
        let (width, height) = self.image_size(opts)?;
        let s = self.vqvae.config().scale_factor();
        let grid = (height / s, width / s);
        let seq = grid.0 * grid.1;
        let guided = opts.guidance_scale > 1.0;
        // What must fit one buffer binding: a part of the VQ-GAN's activations per image (one
        // GroupNorm group, or the image), and the logits of a step; prompts past the latter go
        // in several batches.
        let gpu = self.transformer.gpu();
        let limit = gpu.max_binding();
        let vq_bytes = self.vqvae.smallest_part_bytes(grid);
        let logits_bytes = ((1 + guided as usize)
            * seq
            * self.transformer.config().codebook_size
            * self.transformer.dtype().size()) as u64;
        if vq_bytes > limit || logits_bytes > limit {
            return Err(NnError::Input(format!(
                "a {width}×{height} image needs {} MiB in one buffer ({}); this adapter binds at \
                 most {} MiB: ask for a smaller image",
                vq_bytes.max(logits_bytes) >> 20,
                if vq_bytes > logits_bytes {
                    "one GroupNorm group of the VQ-GAN's activations"
                } else {
                    "a step's logits"
                },
                limit >> 20
            )));
        }
        let per_batch = (limit / logits_bytes).max(1) as usize;
        let mut all: Option<Images> = None;
        for chunk in prompts.chunks(per_batch) {
            let part = self
                .generate_batch(chunk, opts, (width, height), grid, noise, on_step)
                .await?;
            let Some(all) = all.as_mut() else {
                all = Some(part);
                continue;
            };
            all.pixels.extend(part.pixels);
            all.tokens.extend(part.tokens);
            all.batch += part.batch;
        }
        Ok(all.expect("at least one prompt"))
    }

    /// One batch of [`Amused::generate_with_async`], its checks passed: the prompts' steps
    /// and images of `width × height`, `grid` tokens (rows, columns).
    async fn generate_batch(
        &self,
        prompts: &[&str],
        opts: &GenerateOptions,
        (width, height): (usize, usize),
        grid: (usize, usize),
        noise: &mut dyn Noise,
        on_step: &mut dyn FnMut(usize, usize),
    ) -> Result<Images> {
        let seq = grid.0 * grid.1;
        let guided = opts.guidance_scale > 1.0;
        let b = prompts.len();

        let mut ids = self.text.tokenize(prompts)?;
        if guided {
            let negative = opts.negative_prompt.as_deref().unwrap_or("");
            let mut neg = self.text.tokenize(&vec![negative; b])?;
            neg.append(&mut ids);
            ids = neg;
        }
        let text = self.text.encode_ids(&ids)?;
        let micro: [f32; MICRO_CONDS] = [
            width as f32,
            height as f32,
            opts.crop.0,
            opts.crop.1,
            opts.aesthetic_score,
        ];
        let rows = ids.len();
        let cond =
            self.transformer
                .condition(&text.hidden_states, &text.pooled, &vec![micro; rows])?;
        drop(text);

        let mask = self.scheduler.mask_token_id;
        let mut latents = vec![mask; b * seq];
        let temperatures = linspace(opts.temperature.0, opts.temperature.1, opts.steps);
        let mut input = Vec::with_capacity(rows * seq);
        for (i, &temperature) in temperatures.iter().enumerate() {
            input.clear();
            for _ in 0..rows / b {
                input.extend_from_slice(&latents);
            }
            let logits = self.transformer.forward(&input, grid, &cond)?;
            let uniforms = noise.uniforms(b * seq);
            let (drawn, probs) = logits
                .sample_rows_async(&uniforms, guided.then_some(opts.guidance_scale))
                .await?;
            drop(logits);
            let gumbel = if i + 1 < opts.steps {
                noise.uniforms(b * seq)
            } else {
                vec![0.5; b * seq]
            };
            for j in 0..b {
                let r = j * seq..(j + 1) * seq;
                self.scheduler.step(
                    i,
                    opts.steps,
                    &mut latents[r.clone()],
                    &drawn[r.clone()],
                    &probs[r.clone()],
                    &gumbel[r],
                    temperature,
                )?;
            }
            on_step(i + 1, opts.steps);
        }
        // One image at a time: the VQ-GAN's activations are checked to fit a binding per image
        // (GroupNorm and the convolutions are per image, so the pixels are the same).
        let mut pixels = Vec::with_capacity(b * height * width * 3);
        for ids in latents.chunks(seq) {
            let image = self.vqvae.decode(ids, 1, grid)?;
            // [1, 3, h, w] → [1, h, w, 3], clamped to [0, 1].
            let nhwc = image.transpose(1, 3)?.transpose(1, 2)?.contiguous()?;
            let values = nhwc.to_vec_async().await?;
            pixels.extend(values.into_iter().map(|v| v.clamp(0.0, 1.0)));
        }
        Ok(Images {
            pixels,
            batch: b,
            height,
            width,
            tokens: latents,
        })
    }
}
