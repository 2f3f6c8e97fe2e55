//! Tessera in a browser: opens a WebGPU device, runs kernels of both families (the CPU
//! drivers' texture kernels and the GPU family's buffer and workgroup-memory kernels) on
//! awkward shapes, and checks each against a plain-Rust reference. `run()` resolves to a
//! report, one line per check; a failed check rejects with its line. `run_vit()` loads a ViT
//! checkpoint from fetched bytes and checks its logits against transformers'.

use std::sync::Arc;

use tessera::{Activation, DType, Gpu, GpuOptions, KernelFamily, MatmulOptions, Tensor};
use wasm_bindgen::prelude::*;

/// Deterministic values in [-1, 1).
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn max_error(got: &[f32], want: &[f64]) -> f64 {
    let scale = want.iter().fold(1e-6f64, |m, v| m.max(v.abs()));
    got.iter()
        .zip(want)
        .map(|(g, w)| (f64::from(*g) - w).abs() / scale)
        .fold(0.0, f64::max)
}

async fn checks(family: KernelFamily) -> Result<Vec<String>, String> {
    let options = GpuOptions {
        kernels: family,
        ..GpuOptions::default()
    };
    let gpu = Arc::new(Gpu::new_async(&options).await.map_err(|e| e.to_string())?);
    let info = gpu.info().clone();
    let mut lines = vec![format!(
        "{family:?} kernels on {} ({:?}, {:?})",
        info.name, info.backend, info.device_type
    )];
    let err = |e: tessera::TensorError| e.to_string();

    // C = gelu(A·Bᵀ + bias), B in Linear layout, awkward sizes.
    let (m, n, k) = (77, 65, 33);
    let (a, b, bias) = (values(m * k, 1), values(n * k, 2), values(n, 3));
    let ta = Tensor::from_slice(&gpu, &a, &[m, k], DType::F32).map_err(err)?;
    let tb = Tensor::from_slice(&gpu, &b, &[n, k], DType::F32).map_err(err)?;
    let tbias = Tensor::from_slice(&gpu, &bias, &[n], DType::F32).map_err(err)?;
    let c = ta
        .matmul_with(
            &tb.t().map_err(err)?,
            &MatmulOptions {
                bias: Some(&tbias),
                activation: Activation::GeluErf,
                ..MatmulOptions::default()
            },
        )
        .map_err(err)?;
    let got = c.to_vec_async().await.map_err(err)?;
    let mut want = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            let s: f64 = (0..k)
                .map(|kk| f64::from(a[i * k + kk]) * f64::from(b[j * k + kk]))
                .sum();
            want[i * n + j] = Activation::GeluErf.apply(s + f64::from(bias[j]));
        }
    }
    let e = max_error(&got, &want);
    lines.push(format!(
        "matmul {m}x{n}x{k} + bias, gelu: max error {e:.2e}"
    ));
    if e > 1e-4 {
        return Err(lines.join("\n"));
    }

    // Softmax over rows of 1500 (Whisper's positions).
    let (rows, cols) = (5, 1500);
    let x = values(rows * cols, 4);
    let t = Tensor::from_slice(&gpu, &x, &[rows, cols], DType::F32).map_err(err)?;
    let got = t
        .softmax(0.7)
        .map_err(err)?
        .to_vec_async()
        .await
        .map_err(err)?;
    let mut want = vec![0f64; rows * cols];
    for r in 0..rows {
        let row = &x[r * cols..(r + 1) * cols];
        let m = row.iter().fold(f64::MIN, |m, &v| m.max(0.7 * f64::from(v)));
        let sum: f64 = row.iter().map(|&v| (0.7 * f64::from(v) - m).exp()).sum();
        for (c, &v) in row.iter().enumerate() {
            want[r * cols + c] = (0.7 * f64::from(v) - m).exp() / sum;
        }
    }
    let e = max_error(&got, &want);
    lines.push(format!("softmax {rows}x{cols}: max error {e:.2e}"));
    if e > 1e-4 {
        return Err(lines.join("\n"));
    }

    // Causal attention, 3 heads of 64 over 37 tokens.
    let (heads, len, dim) = (3, 37, 64);
    let (q, kk, v) = (
        values(len * heads * dim, 5),
        values(len * heads * dim, 6),
        values(len * heads * dim, 7),
    );
    let shape = [1, len, heads, dim];
    let tq = Tensor::from_slice(&gpu, &q, &shape, DType::F32).map_err(err)?;
    let tk = Tensor::from_slice(&gpu, &kk, &shape, DType::F32).map_err(err)?;
    let tv = Tensor::from_slice(&gpu, &v, &shape, DType::F32).map_err(err)?;
    let out = Tensor::attention(
        &tq,
        &tk,
        &tv,
        &tessera::AttentionOptions {
            causal: true,
            ..tessera::AttentionOptions::default()
        },
    )
    .map_err(err)?;
    let got = out.to_vec_async().await.map_err(err)?;
    let scale = 1.0 / (dim as f64).sqrt();
    let at = |x: &[f32], t: usize, h: usize, d: usize| f64::from(x[(t * heads + h) * dim + d]);
    let mut want = vec![0f64; len * heads * dim];
    for h in 0..heads {
        for i in 0..len {
            let scores: Vec<f64> = (0..=i)
                .map(|j| {
                    scale
                        * (0..dim)
                            .map(|d| at(&q, i, h, d) * at(&kk, j, h, d))
                            .sum::<f64>()
                })
                .collect();
            let m = scores.iter().cloned().fold(f64::MIN, f64::max);
            let sum: f64 = scores.iter().map(|s| (s - m).exp()).sum();
            for d in 0..dim {
                want[(i * heads + h) * dim + d] = scores
                    .iter()
                    .enumerate()
                    .map(|(j, s)| (s - m).exp() / sum * at(&v, j, h, d))
                    .sum();
            }
        }
    }
    let e = max_error(&got, &want);
    lines.push(format!(
        "causal attention {heads}x{len}x{dim}: max error {e:.2e}"
    ));
    if e > 1e-4 {
        return Err(lines.join("\n"));
    }
    // The blocking read says what to use instead.
    match c.to_vec() {
        Err(e) if e.to_string().contains("new_async") => {
            lines.push("blocking read refused with a pointer to the async one".into())
        }
        other => return Err(format!("blocking read in a browser gave {other:?}")),
    }
    Ok(lines)
}

/// Every shader module, in f32 (and f16 where the adapter has it), compiled by the browser's
/// WGSL compiler, which checks more than naga (barriers only in uniform control flow, through
/// calls and early returns): one line per module that it refuses.
async fn shaders() -> Result<Vec<String>, String> {
    use tessera::kernels::{for_browser, specialize, wgpu, SHADERS};
    let gpu = Gpu::new_async(&GpuOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let mut dtypes = vec![DType::F32];
    if gpu.supports_f16() {
        dtypes.push(DType::F16);
    }
    let mut refused = Vec::new();
    let mut count = 0;
    let subgroups = gpu.features().contains(wgpu::Features::SUBGROUP);
    let mut skipped = 0;
    for (name, files) in SHADERS {
        let source: String = files.iter().map(|(_, text)| format!("{text}\n")).collect();
        if for_browser(&source).starts_with("enable subgroups") && !subgroups {
            skipped += 1;
            continue;
        }
        for &dtype in &dtypes {
            let scope = gpu.device().push_error_scope(wgpu::ErrorFilter::Validation);
            let _module = gpu
                .device()
                .create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(name),
                    source: wgpu::ShaderSource::Wgsl(
                        for_browser(&specialize(&source, dtype)).into(),
                    ),
                });
            count += 1;
            if let Some(e) = scope.pop().await {
                refused.push(format!("{name} ({dtype}): {e}"));
            }
        }
    }
    let mut lines = vec![format!(
        "{count} shader modules compiled by the browser ({}), {} refused{}",
        dtypes
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        refused.len(),
        if skipped > 0 {
            format!(", {skipped} left out (they need subgroups, which this adapter lacks)")
        } else {
            String::new()
        }
    )];
    if !refused.is_empty() {
        lines.extend(refused);
        return Err(lines.join("\n"));
    }
    Ok(lines)
}

/// Median milliseconds of a `size`³ f32 matmul on `family`'s kernels (one warm-up, then
/// `runs` calls, each awaited to its read-back).
async fn matmul_ms(family: KernelFamily, size: usize, runs: usize) -> Result<f64, String> {
    let options = GpuOptions {
        kernels: family,
        ..GpuOptions::default()
    };
    let gpu = Arc::new(Gpu::new_async(&options).await.map_err(|e| e.to_string())?);
    let err = |e: tessera::TensorError| e.to_string();
    let a = Tensor::from_slice(&gpu, &values(size * size, 8), &[size, size], DType::F32)
        .map_err(err)?;
    let b = Tensor::from_slice(&gpu, &values(size * size, 9), &[size, size], DType::F32)
        .map_err(err)?;
    let mut times = Vec::new();
    for i in 0..=runs {
        let start = js_sys::Date::now();
        let c = a.matmul(&b.t().map_err(err)?).map_err(err)?;
        // One value read back: the product has finished.
        c.narrow(0, 0, 1)
            .map_err(err)?
            .to_vec_async()
            .await
            .map_err(err)?;
        if i > 0 {
            times.push(js_sys::Date::now() - start);
        }
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Times a 512³ f32 matmul on both kernel families; resolves to one line each.
#[wasm_bindgen]
pub async fn bench() -> Result<String, JsValue> {
    let size = 512;
    let mut lines = Vec::new();
    for family in [KernelFamily::Cpu, KernelFamily::Gpu] {
        let ms = matmul_ms(family, size, 5)
            .await
            .map_err(|e| JsValue::from_str(&e))?;
        let gflops = 2.0 * (size as f64).powi(3) / (ms * 1e-3) / 1e9;
        lines.push(format!(
            "{family:?} kernels: matmul {size}³ f32 median {ms:.1} ms, {gflops:.2} GFLOP/s"
        ));
    }
    Ok(lines.join("\n"))
}

/// Runs the checks on both kernel families; resolves to the report.
#[wasm_bindgen]
pub async fn run() -> Result<String, JsValue> {
    let mut report = shaders().await.map_err(|e| JsValue::from_str(&e))?;
    for family in [KernelFamily::Cpu, KernelFamily::Gpu] {
        report.extend(checks(family).await.map_err(|e| JsValue::from_str(&e))?);
    }
    Ok(report.join("\n"))
}

/// Pixel values already normalised (the references' `pixel_values`).
const IDENTITY: tessera::tensor::Normalize = tessera::tensor::Normalize {
    rescale: 1.0,
    mean: [0.0; 3],
    std: [1.0; 3],
};

/// `[b, 3, h, w]` pixel values as `[b, h, w, 3]`, what the models take.
fn channels_last(nchw: &[f32], b: usize, h: usize, w: usize) -> Vec<f32> {
    let mut hwc = vec![0f32; nchw.len()];
    for i in 0..b {
        for c in 0..3 {
            for y in 0..h {
                for x in 0..w {
                    hwc[((i * h + y) * w + x) * 3 + c] = nchw[((i * 3 + c) * h + y) * w + x];
                }
            }
        }
    }
    hwc
}

/// The f32 tensor `name` of a safetensors file.
fn tensor(st: &safetensors::SafeTensors<'_>, name: &str) -> Result<(Vec<usize>, Vec<f32>), String> {
    let view = st.tensor(name).map_err(|e| format!("{name}: {e}"))?;
    if view.dtype() != safetensors::Dtype::F32 {
        return Err(format!("{name} is not f32"));
    }
    let values = view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok((view.shape().to_vec(), values))
}

async fn vit(config: &str, model: Vec<u8>, reference: &[u8]) -> Result<String, String> {
    use tessera::tensor::Pixels;
    use tessera::vit::{ViTConfig, ViTForImageClassification};
    let gpu = Arc::new(
        Gpu::new_async(&GpuOptions::default())
            .await
            .map_err(|e| e.to_string())?,
    );
    let config: ViTConfig = serde_json::from_str(config).map_err(|e| e.to_string())?;
    let weights = tessera::nn::Weights::from_bytes(
        &gpu,
        vec![("model.safetensors".into(), model)],
        DType::F32,
    )
    .map_err(|e| e.to_string())?;
    let model = ViTForImageClassification::new(&config, &weights).map_err(|e| e.to_string())?;
    let st = safetensors::SafeTensors::deserialize(reference).map_err(|e| e.to_string())?;
    let (s, nchw) = tensor(&st, "pixel_values")?;
    let (b, h, w) = (s[0], s[2], s[3]);
    let hwc = channels_last(&nchw, b, h, w);
    let (logits, _) = model
        .forward_pixels(Pixels::F32(&hwc), b, (h, w), &IDENTITY)
        .map_err(|e| e.to_string())?;
    let got = logits.to_vec_async().await.map_err(|e| e.to_string())?;
    let (_, want) = tensor(&st, "logits")?;
    let want: Vec<f64> = want.iter().map(|&v| f64::from(v)).collect();
    if got.len() != want.len() {
        return Err(format!(
            "{} logits, transformers has {}",
            got.len(),
            want.len()
        ));
    }
    let e = max_error(&got, &want);
    let line = format!(
        "ViT ({b} images, checkpoint fetched into memory): logits against transformers' \
         max relative error {e:.2e}"
    );
    if e > 1e-3 {
        return Err(line);
    }
    Ok(line)
}

/// Loads a ViT classifier from `config.json` text and `model.safetensors` bytes and checks its
/// logits on the reference file's pixels against the reference's (transformers').
#[wasm_bindgen]
pub async fn run_vit(
    config: String,
    model: Vec<u8>,
    reference: Vec<u8>,
) -> Result<String, JsValue> {
    vit(&config, model, &reference)
        .await
        .map_err(|e| JsValue::from_str(&e))
}

/// The integer tensor `name` (i32 or i64) of a safetensors file.
fn ints(st: &safetensors::SafeTensors<'_>, name: &str) -> Result<Vec<i64>, String> {
    let view = st.tensor(name).map_err(|e| format!("{name}: {e}"))?;
    let data = view.data();
    match view.dtype() {
        safetensors::Dtype::I32 => Ok(data
            .chunks_exact(4)
            .map(|b| i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            .collect()),
        safetensors::Dtype::I64 => Ok(data
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect()),
        other => Err(format!("{name} is {other:?}, not an integer tensor")),
    }
}

/// The Whisper fixture's clip: five pitches stepping every 1.5 s under a slow swell (the
/// formula of tools/make_whisper_timestamp_fixtures.py, as the integration tests have it).
fn clip(seconds: usize) -> Vec<f32> {
    use std::f64::consts::PI;
    (0..seconds * 16_000)
        .map(|i| {
            let t = i as f64 / 16000.0;
            let f = 220.0 * (1 + (i / 24000) % 5) as f64;
            let env = 0.5 * (1.0 + (2.0 * PI * 0.37 * t).sin());
            (env * 0.4 * (2.0 * PI * f * t).sin()) as f32
        })
        .collect()
}

/// Whisper's fetched files: `config.json` and `generation_config.json` (texts),
/// `tokenizer.json`, `model.safetensors`, `words` (`words_reference.safetensors`:
/// transformers' tokens, segment lengths and token times) and `texts`
/// (`timestamps_reference.json`: the segment texts of the greedy 75 s case).
async fn whisper(
    config_text: String,
    generation_text: String,
    tokenizer: Vec<u8>,
    model: Vec<u8>,
    words: Vec<u8>,
    texts: String,
) -> Result<String, String> {
    use tessera::audio::{
        long_form_features_async, transcribe_async, Alignment, BeamOptions, TranscribeOptions,
        WhisperConfig, WhisperDecoder, WhisperEncoder, WhisperGeneration, WhisperTokenizer,
    };
    use tessera::nn::config::ModelConfig;
    let e = |e: tessera::audio::AudioError| e.to_string();
    let gpu = Arc::new(
        Gpu::new_async(&GpuOptions::default())
            .await
            .map_err(|e| e.to_string())?,
    );
    let config = WhisperConfig::from_json(&config_text).map_err(|e| e.to_string())?;
    let weights = tessera::nn::Weights::from_bytes(
        &gpu,
        vec![("model.safetensors".into(), model)],
        DType::F32,
    )
    .map_err(|e| e.to_string())?;
    let encoder = WhisperEncoder::from_checkpoint(&config, &weights).map_err(e)?;
    let decoder = WhisperDecoder::from_checkpoint(&config, &weights).map_err(e)?;
    let generation =
        WhisperGeneration::from_json(&config_text, Some(&generation_text)).map_err(e)?;
    let tokenizer = WhisperTokenizer::from_bytes(&tokenizer).map_err(e)?;
    let reference = safetensors::SafeTensors::deserialize(&words).map_err(|e| e.to_string())?;
    let texts: serde_json::Value = serde_json::from_str(&texts).map_err(|e| e.to_string())?;
    let front = encoder.log_mel(&gpu).map_err(e)?;
    let prompt = generation
        .timestamp_prompt(Some("en"), "transcribe")
        .map_err(e)?;
    let mut options = generation.greedy_options(prompt, 40);
    options.timestamps = Some(generation.timestamp_rules().map_err(e)?);
    let samples = clip(75);
    let (features, frames) = long_form_features_async(&front, &samples)
        .await
        .map_err(e)?;
    let alignment = Alignment {
        frames: Some(samples.len().div_ceil(160)),
        ..generation.alignment(&config, None)
    };
    let mut lines = Vec::new();
    for (case, beams) in [("long", None), ("long_beams", Some(4))] {
        options.beams = beams.map(|num_beams| BeamOptions {
            num_beams,
            length_penalty: 1.0,
        });
        let context = TranscribeOptions {
            alignment: Some(alignment.clone()),
            ..TranscribeOptions::default()
        };
        let mut windows = 0;
        let segments = transcribe_async(
            &encoder,
            &decoder,
            &features,
            frames,
            &options,
            &context,
            &mut |_, _, _| windows += 1,
        )
        .await
        .map_err(e)?;
        let want_tokens = ints(&reference, &format!("{case}_tokens"))?;
        let want_lengths = ints(&reference, &format!("{case}_lengths"))?;
        let (_, want_times) = tensor(&reference, &format!("{case}_times"))?;
        let tokens: Vec<i64> = segments
            .iter()
            .flat_map(|s| s.tokens.iter().map(|&t| i64::from(t)))
            .collect();
        let lengths: Vec<i64> = segments.iter().map(|s| s.tokens.len() as i64).collect();
        if tokens != want_tokens || lengths != want_lengths {
            return Err(format!(
                "Whisper {case}: tokens {tokens:?} in segments of {lengths:?}; transformers \
                 {want_tokens:?} in {want_lengths:?}"
            ));
        }
        let times: Vec<f64> = segments
            .iter()
            .flat_map(|s| s.token_times.clone())
            .collect();
        let off = times
            .iter()
            .zip(&want_times)
            .map(|(g, w)| (g - f64::from(*w)).abs())
            .fold(0.0, f64::max);
        if times.len() != want_times.len() || off > 1e-6 {
            return Err(format!(
                "Whisper {case}: {} token times, largest difference {off:.2e} s from \
                 transformers' {}",
                times.len(),
                want_times.len()
            ));
        }
        let mut line = format!(
            "Whisper {case} (75 s, {} windows, checkpoint fetched into memory): {} segments, \
             {} tokens and their times as transformers (within {off:.1e} s)",
            windows - 1,
            segments.len(),
            tokens.len()
        );
        if case == "long" {
            let got: Vec<String> = segments
                .iter()
                .map(|s| tokenizer.decode(&s.tokens))
                .collect::<Result<_, _>>()
                .map_err(e)?;
            let want: Vec<String> =
                serde_json::from_value(texts["long_texts"].clone()).map_err(|e| e.to_string())?;
            if got != want {
                return Err(format!(
                    "Whisper long: texts {got:?}, transformers {want:?}"
                ));
            }
            line.push_str(", texts too");
        }
        lines.push(line);
    }
    Ok(lines.join("\n"))
}

/// Transcribes the fixture clip with timestamps and word-level token times, greedily and by
/// beam search, from a Whisper checkpoint's fetched files, against transformers.
#[wasm_bindgen]
pub async fn run_whisper(
    config: String,
    generation: String,
    tokenizer: Vec<u8>,
    model: Vec<u8>,
    words: Vec<u8>,
    texts: String,
) -> Result<String, JsValue> {
    whisper(config, generation, tokenizer, model, words, texts)
        .await
        .map_err(|e| JsValue::from_str(&e))
}

/// Replays the uniforms diffusers drew, in the order it drew them.
struct Replay(std::collections::VecDeque<Vec<f32>>);

impl tessera::muse::Noise for Replay {
    fn uniforms(&mut self, n: usize) -> Vec<f32> {
        match self.0.pop_front() {
            Some(u) if u.len() == n => u,
            // A wrong count shows in the comparison: the tokens cannot match.
            _ => vec![0.5; n],
        }
    }
}

/// The aMUSEd pipeline from its fetched files (`names[i]` holds `files[i]`, paths inside the
/// pipeline folder) generating from diffusers' recorded draws, against diffusers' tokens and
/// image.
async fn amused(
    mut files: std::collections::HashMap<String, Vec<u8>>,
    reference: &[u8],
) -> Result<String, String> {
    use tessera::clip::ClipTokenizer;
    use tessera::muse::{
        Amused, AmusedScheduler, GenerateOptions, TextEncoder, UVit2D, UVit2DConfig, VqConfig,
        VqDecoder,
    };
    use tessera::nn::Weights;
    let e = |e: tessera::nn::NnError| e.to_string();
    let mut take = |name: &str| files.remove(name).ok_or(format!("{name} was not fetched"));
    let text = |b: Vec<u8>| String::from_utf8(b).map_err(|e| e.to_string());
    let gpu = Arc::new(
        Gpu::new_async(&GpuOptions::default())
            .await
            .map_err(|e| e.to_string())?,
    );
    let weights = |name: &str, bytes: Vec<u8>, dtype| {
        Weights::from_bytes(&gpu, vec![(name.to_string(), bytes)], dtype).map_err(e)
    };
    let tokenizer = ClipTokenizer::from_vocab(
        &take("tokenizer/vocab.json")?,
        &take("tokenizer/merges.txt")?,
        77,
    )
    .map_err(e)?;
    let encoder = TextEncoder::from_parts(
        &text(take("text_encoder/config.json")?)?,
        &weights(
            "model.safetensors",
            take("text_encoder/model.safetensors")?,
            DType::F32,
        )?,
        tokenizer,
        Some(&text(take("tokenizer/tokenizer_config.json")?)?),
    )
    .map_err(e)?;
    let transformer = UVit2D::new(
        &UVit2DConfig::from_json(&text(take("transformer/config.json")?)?).map_err(e)?,
        &weights(
            "diffusion_pytorch_model.safetensors",
            take("transformer/diffusion_pytorch_model.safetensors")?,
            DType::F32,
        )?,
    )
    .map_err(e)?;
    let vqvae = VqDecoder::new(
        &VqConfig::from_json(&text(take("vqvae/config.json")?)?).map_err(e)?,
        &weights(
            "diffusion_pytorch_model.safetensors",
            take("vqvae/diffusion_pytorch_model.safetensors")?,
            DType::F32,
        )?,
    )
    .map_err(e)?;
    let scheduler =
        AmusedScheduler::from_json(&text(take("scheduler/scheduler_config.json")?)?).map_err(e)?;
    let pipe = Amused::from_parts(encoder, transformer, vqvae, scheduler).map_err(e)?;

    let st = safetensors::SafeTensors::deserialize(reference).map_err(|e| e.to_string())?;
    let (_, multinomial) = tensor(&st, "pipe_multinomial")?;
    let (_, gumbel) = tensor(&st, "pipe_gumbel")?;
    let mut draws = std::collections::VecDeque::new();
    for i in 0..6 {
        draws.push_back(multinomial[i * 16..(i + 1) * 16].to_vec());
        if i < 5 {
            draws.push_back(gumbel[i * 16..(i + 1) * 16].to_vec());
        }
    }
    let opts = GenerateOptions {
        steps: 6,
        guidance_scale: 4.0,
        ..GenerateOptions::default()
    };
    let mut replay = Replay(draws);
    let images = pipe
        .generate_async(&["a photo of a cat"], &opts, &mut replay)
        .await
        .map_err(e)?;
    let want_tokens = ints(&st, "pipe_tokens")?;
    let tokens: Vec<i64> = images.tokens.iter().map(|&t| i64::from(t)).collect();
    if tokens != want_tokens || !replay.0.is_empty() {
        return Err(format!(
            "aMUSEd: tokens {tokens:?} ({} draws unused), diffusers {want_tokens:?}",
            replay.0.len()
        ));
    }
    let (_, want) = tensor(&st, "pipe_image")?;
    let want: Vec<f64> = want.iter().map(|&v| f64::from(v)).collect();
    let err = max_error(&images.pixels, &want);
    let line = format!(
        "aMUSEd (6 steps with guidance, pipeline fetched into memory): tokens as diffusers, \
         {}x{} image within {err:.2e}",
        images.width, images.height
    );
    if images.pixels.len() != want.len() || err > 1e-3 {
        return Err(line);
    }
    Ok(line)
}

/// See [`amused`]: `names` are the files' paths in the pipeline folder.
#[wasm_bindgen]
pub async fn run_amused(
    names: Vec<String>,
    files: Vec<js_sys::Uint8Array>,
    reference: Vec<u8>,
) -> Result<String, JsValue> {
    let files = names
        .into_iter()
        .zip(files.iter().map(|f| f.to_vec()))
        .collect();
    amused(files, &reference)
        .await
        .map_err(|e| JsValue::from_str(&e))
}

/// CLIP's fetched files: `config.json`, `model.safetensors`, `tokenizer.json`,
/// `preprocessor_config.json`, `texts.json` (transformers' ids of its texts),
/// `reference.safetensors`, and the PNG fixtures the reference's first two images came from.
async fn clip_model(
    config_text: String,
    model: Vec<u8>,
    tokenizer: Vec<u8>,
    preprocessor: String,
    texts: String,
    reference: Vec<u8>,
    pngs: Vec<Vec<u8>>,
) -> Result<String, String> {
    use tessera::clip::{ClipConfig, ClipModel, ClipTokenizer};
    use tessera::nn::config::ModelConfig;
    use tessera::nn::{decode_image, ImageProcessor};
    use tessera::tensor::Pixels;
    let e = |e: tessera::nn::NnError| e.to_string();
    let gpu = Arc::new(
        Gpu::new_async(&GpuOptions::default())
            .await
            .map_err(|e| e.to_string())?,
    );
    let config = ClipConfig::from_json(&config_text).map_err(e)?;
    let weights = tessera::nn::Weights::from_bytes(
        &gpu,
        vec![("model.safetensors".into(), model)],
        DType::F32,
    )
    .map_err(e)?;
    let model = ClipModel::new(&config, &weights).map_err(e)?;
    let tokenizer =
        ClipTokenizer::from_bytes(&tokenizer, config.text_config.max_position_embeddings)
            .map_err(e)?;
    let processor =
        ImageProcessor::from_json(&preprocessor, ImageProcessor::clip_default()).map_err(e)?;
    let st = safetensors::SafeTensors::deserialize(&reference).map_err(|e| e.to_string())?;

    // The tokenizer: transformers' ids of every text (the real CLIP vocabulary).
    let texts: serde_json::Value = serde_json::from_str(&texts).map_err(|e| e.to_string())?;
    let strings: Vec<String> =
        serde_json::from_value(texts["texts"].clone()).map_err(|e| e.to_string())?;
    let want_ids: Vec<Vec<u32>> =
        serde_json::from_value(texts["input_ids"].clone()).map_err(|e| e.to_string())?;
    let refs: Vec<&str> = strings.iter().map(String::as_str).collect();
    let ids = tokenizer.encode(&refs).map_err(e)?;
    if ids != want_ids {
        return Err(format!(
            "CLIP tokenizer: {ids:?}, transformers {want_ids:?}"
        ));
    }

    // The image processor on decoded PNG bytes, against Pillow's pixel values.
    let (shape, pil) = tensor(&st, "pixel_values")?;
    let (h, w) = (shape[2], shape[3]);
    let images: Vec<_> = pngs
        .iter()
        .map(|b| decode_image(b))
        .collect::<Result<_, _>>()
        .map_err(e)?;
    let batch = processor.process(&images).map_err(e)?;
    if (batch.height, batch.width) != (h, w) {
        return Err(format!(
            "CLIP preprocessing: {}x{}",
            batch.width, batch.height
        ));
    }
    let n = &processor.normalize;
    let mut steps = 0f32;
    for i in 0..batch.batch {
        for c in 0..3 {
            for y in 0..h {
                for x in 0..w {
                    let v = f32::from(batch.pixels[((i * h + y) * w + x) * 3 + c]);
                    let got = (v * n.rescale - n.mean[c]) / n.std[c];
                    let want = pil[((i * 3 + c) * h + y) * w + x];
                    steps = steps.max((got - want).abs() * n.std[c] / n.rescale);
                }
            }
        }
    }
    if steps > 0.01 {
        return Err(format!(
            "CLIP preprocessing: {steps} pixel steps from Pillow's"
        ));
    }

    // The model on the reference's pixel values and the tokenized texts.
    let b = shape[0];
    let hwc = channels_last(&pil, b, h, w);
    let image = model
        .image_embeds_pixels(Pixels::F32(&hwc), b, (h, w), &IDENTITY)
        .map_err(e)?;
    let text = model.text_embeds(&ids).map_err(e)?;
    let logits = model.logits_per_image(&image, &text).map_err(e)?;
    let got = logits.to_vec_async().await.map_err(|e| e.to_string())?;
    let (_, want) = tensor(&st, "logits_per_image")?;
    let want: Vec<f64> = want.iter().map(|&v| f64::from(v)).collect();
    let err = max_error(&got, &want);
    let line = format!(
        "CLIP (checkpoint, tokenizer and processor fetched into memory): {} texts tokenized as \
         transformers, PNGs preprocessed within {steps:.3} pixel steps of Pillow, \
         logits_per_image within {err:.2e}",
        ids.len()
    );
    if got.len() != want.len() || err > 1e-3 {
        return Err(line);
    }
    Ok(line)
}

/// See [`clip_model`]; `pngs` holds the fixture images gradient.png and noise.png.
#[wasm_bindgen]
pub async fn run_clip(
    config: String,
    model: Vec<u8>,
    tokenizer: Vec<u8>,
    preprocessor: String,
    texts: String,
    reference: Vec<u8>,
    pngs: Vec<js_sys::Uint8Array>,
) -> Result<String, JsValue> {
    let pngs = pngs.iter().map(|p| p.to_vec()).collect();
    clip_model(
        config,
        model,
        tokenizer,
        preprocessor,
        texts,
        reference,
        pngs,
    )
    .await
    .map_err(|e| JsValue::from_str(&e))
}
