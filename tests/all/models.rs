//! ViT, CLIP and Whisper (encoder, decoder, greedy decoding) against transformers on the model
//! folders tools/make_model_fixtures.py and tools/make_whisper_decoder_fixtures.py write (tiny random weights, f32/f16/bf16 files, a sharded
//! checkpoint, the real CLIP vocabulary).

use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use tessera::audio::{
    load_16k, GreedyOptions, WhisperDecoder, WhisperEncoder, WhisperGeneration, WhisperTokenizer,
    CHUNK_SAMPLES,
};
use tessera::clip::{ClipModel, ClipTokenizer};
use tessera::nn::{load_image, ImageProcessor, Weights};
use tessera::tensor::{Normalize, Pixels};
use tessera::vit::{ViTForImageClassification, ViTModel};
use tessera::{DType, Tensor};

use crate::common::{f16_or_clear_error, gpu, rel_error};

const F32_TOL: f32 = 1e-3;
const F16_TOL: f32 = 2e-2;

pub fn model_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(name)
}

pub fn image_paths() -> Vec<PathBuf> {
    ["gradient.png", "noise.png", "waves.jpg"]
        .iter()
        .map(|n| model_dir("images").join(n))
        .collect()
}

/// A model folder's reference.safetensors.
pub struct Reference(Vec<u8>);

impl Reference {
    pub fn load(model: &str) -> Self {
        Self::file(model, "reference.safetensors")
    }

    /// Another safetensors file of a model folder.
    pub fn file(model: &str, file: &str) -> Self {
        Reference(std::fs::read(model_dir(model).join(file)).unwrap())
    }

    /// An f64 tensor.
    pub fn f64s(&self, name: &str) -> Vec<f64> {
        let st = SafeTensors::deserialize(&self.0).unwrap();
        let t = st.tensor(name).unwrap();
        assert_eq!(t.dtype(), Dtype::F64, "{name}");
        t.data()
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }

    /// A tensor of 4-byte elements of `dtype`: its shape and its words.
    fn words(&self, name: &str, dtype: Dtype) -> (Vec<usize>, Vec<[u8; 4]>) {
        let st = SafeTensors::deserialize(&self.0).unwrap();
        let t = st.tensor(name).unwrap();
        assert_eq!(t.dtype(), dtype, "{name}");
        let words = t
            .data()
            .chunks_exact(4)
            .map(|b| [b[0], b[1], b[2], b[3]])
            .collect();
        (t.shape().to_vec(), words)
    }

    pub fn get(&self, name: &str) -> (Vec<usize>, Vec<f32>) {
        let (shape, words) = self.words(name, Dtype::F32);
        (shape, words.into_iter().map(f32::from_le_bytes).collect())
    }

    /// An int32 tensor (token ids) as u32.
    pub fn ints(&self, name: &str) -> (Vec<usize>, Vec<u32>) {
        let (shape, words) = self.words(name, Dtype::I32);
        let ids = words
            .into_iter()
            .map(|w| i32::from_le_bytes(w) as u32)
            .collect();
        (shape, ids)
    }

    /// `pixel_values` `[B, 3, H, W]` as HWC images, with the identity normalisation.
    pub fn pixels_hwc(&self, name: &str) -> (Vec<f32>, usize, (usize, usize)) {
        let (s, v) = self.get(name);
        let (b, h, w) = (s[0], s[2], s[3]);
        let mut out = vec![0.0; v.len()];
        for i in 0..b {
            for c in 0..3 {
                for y in 0..h {
                    for x in 0..w {
                        out[((i * h + y) * w + x) * 3 + c] = v[((i * 3 + c) * h + y) * w + x];
                    }
                }
            }
        }
        (out, b, (h, w))
    }
}

pub const IDENTITY: Normalize = Normalize {
    rescale: 1.0,
    mean: [0.0; 3],
    std: [1.0; 3],
};

fn check(name: &str, got: &Tensor, want: &(Vec<usize>, Vec<f32>), tol: f32) {
    let mut want_shape = want.0.clone();
    if want_shape.len() == 3 && want_shape[0] == 1 && got.shape().len() == 2 {
        want_shape.remove(0);
    }
    assert_eq!(got.shape(), &want_shape[..], "{name}: shape");
    let err = rel_error(&got.to_vec().unwrap(), &want.1);
    assert!(err <= tol, "{name}: relative error {err} > {tol}");
}

fn dtypes() -> Vec<(DType, f32)> {
    let mut out = vec![(DType::F32, F32_TOL)];
    if f16_or_clear_error(&gpu()) {
        out.push((DType::F16, F16_TOL));
    }
    out
}

/// A checkpoint handed over as bytes (what a browser fetches) loads as the folder does.
#[test]
fn vit_from_checkpoint_bytes_matches_transformers() {
    let r = Reference::load("vit");
    let (pixels, batch, size) = r.pixels_hwc("pixel_values");
    let dir = model_dir("vit");
    let config: tessera::vit::ViTConfig =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let w = Weights::from_bytes(
        &gpu(),
        vec![("vit.safetensors".into(), bytes.clone())],
        DType::F32,
    )
    .unwrap();
    let model = ViTForImageClassification::new(&config, &w).unwrap();
    let (logits, _) = model
        .forward_pixels(Pixels::F32(&pixels), batch, size, &IDENTITY)
        .unwrap();
    check("logits", &logits, &r.get("logits"), F32_TOL);
    // Truncated bytes are refused with the name they came under.
    let e = Weights::from_bytes(
        &gpu(),
        vec![("vit.safetensors".into(), bytes[..100].to_vec())],
        DType::F32,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        e.contains("vit.safetensors") && e.contains("truncated"),
        "{e}"
    );
}

#[test]
fn vit_classifier_matches_transformers() {
    let r = Reference::load("vit");
    let (pixels, batch, size) = r.pixels_hwc("pixel_values");
    for (dtype, tol) in dtypes() {
        let (model, _) = ViTForImageClassification::load(&gpu(), &model_dir("vit"), dtype).unwrap();
        assert_eq!(model.labels()[1], "golden retriever");
        let (logits, out) = model
            .forward_pixels(Pixels::F32(&pixels), batch, size, &IDENTITY)
            .unwrap();
        check("logits", &logits, &r.get("logits"), tol);
        check(
            "last_hidden_state",
            &out.last_hidden_state,
            &r.get("last_hidden_state"),
            tol,
        );
    }
}

#[test]
fn vit_model_with_pooler_from_f16_file() {
    let r = Reference::load("vit_base");
    let (pixels, batch, size) = r.pixels_hwc("pixel_values");
    for (dtype, tol) in dtypes() {
        let (model, _) = ViTModel::load(&gpu(), &model_dir("vit_base"), dtype).unwrap();
        let out = model
            .forward_pixels(Pixels::F32(&pixels), batch, size, &IDENTITY)
            .unwrap();
        check(
            "last_hidden_state",
            &out.last_hidden_state,
            &r.get("last_hidden_state"),
            tol,
        );
        check(
            "pooler_output",
            out.pooler_output
                .as_ref()
                .expect("the checkpoint has a pooler"),
            &r.get("pooler_output"),
            tol,
        );
    }
}

/// Our preprocessing's pixel values `[B, 3, H, W]` (CHW, normalised on the CPU) for comparison.
fn processed_chw(processor: &ImageProcessor) -> Vec<f32> {
    let images: Vec<_> = image_paths()
        .iter()
        .map(|p| load_image(p).unwrap())
        .collect();
    let batch = processor.process(&images).unwrap();
    let (h, w) = (batch.height, batch.width);
    let n = &processor.normalize;
    let mut out = vec![0.0; batch.pixels.len()];
    for i in 0..batch.batch {
        for c in 0..3 {
            for y in 0..h {
                for x in 0..w {
                    let v = batch.pixels[((i * h + y) * w + x) * 3 + c] as f32;
                    out[((i * 3 + c) * h + y) * w + x] = (v * n.rescale - n.mean[c]) / n.std[c];
                }
            }
        }
    }
    out
}

/// Largest difference in 8-bit pixel steps after normalisation.
fn pixel_steps(got: &[f32], want: &[f32], processor: &ImageProcessor) -> f32 {
    let std = processor.normalize.std.iter().fold(0f32, |m, &s| m.max(s));
    let step = processor.normalize.rescale / std;
    got.iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0, f32::max)
        / step
}

#[test]
fn image_preprocessing_matches_transformers() {
    for (model, default) in [
        ("vit", ImageProcessor::vit_default()),
        ("clip", ImageProcessor::clip_default()),
    ] {
        let processor = ImageProcessor::load(&model_dir(model), default).unwrap();
        let got = processed_chw(&processor);
        let r = Reference::load(model);
        let (_, pil) = r.get("pixel_values");
        let (_, tv) = r.get("pixel_values_torchvision");
        // Per image: the PNGs decode identically and Pillow's resampling is reproduced exactly;
        // JPEG decoders (libjpeg-turbo in Pillow, zune-jpeg here) upsample chroma differently.
        let per = got.len() / 3;
        for (i, limit) in [(0, 0.01), (1, 0.01), (2, 4.0)] {
            let r = i * per..(i + 1) * per;
            let pil_steps = pixel_steps(&got[r.clone()], &pil[r.clone()], &processor);
            let tv_steps = pixel_steps(&got[r.clone()], &tv[r], &processor);
            eprintln!("{model} image {i}: {pil_steps} steps from PIL, {tv_steps} from torchvision");
            assert!(
                pil_steps <= limit,
                "{model} image {i}: {pil_steps} > {limit} steps"
            );
        }
    }
}

#[test]
fn vit_classifies_image_files() {
    let gpu = gpu();
    let (model, processor) =
        ViTForImageClassification::load(&gpu, &model_dir("vit"), DType::F32).unwrap();
    let images: Vec<_> = image_paths()
        .iter()
        .map(|p| load_image(p).unwrap())
        .collect();
    let batch = processor.process(&images).unwrap();
    let (logits, _) = model.forward(&batch, &processor.normalize).unwrap();
    let r = Reference::load("vit");
    // Resampling differs from PIL's by a pixel step here and there.
    check("logits from files", &logits, &r.get("logits"), 2e-2);
}

#[test]
fn clip_matches_transformers() {
    let r = Reference::load("clip");
    let (pixels, batch, size) = r.pixels_hwc("pixel_values");
    let texts: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(model_dir("clip").join("texts.json")).unwrap(),
    )
    .unwrap();
    let ids: Vec<Vec<u32>> = serde_json::from_value(texts["input_ids"].clone()).unwrap();
    for (dtype, tol) in dtypes() {
        let (model, _, _) = ClipModel::load(&gpu(), &model_dir("clip"), dtype).unwrap();
        let image = model
            .image_embeds_pixels(Pixels::F32(&pixels), batch, size, &IDENTITY)
            .unwrap();
        let text = model.text_embeds(&ids).unwrap();
        check("image_embeds", &image, &r.get("image_embeds"), tol);
        check("text_embeds", &text, &r.get("text_embeds"), tol);
        let logits = model.logits_per_image(&image, &text).unwrap();
        check("logits_per_image", &logits, &r.get("logits_per_image"), tol);
        // Rows past each text's end are padding (transformers masks them, we pad causally).
        let text_out = model.text_model().forward(&ids).unwrap();
        let (shape, want) = r.get("text_last_hidden_state");
        assert_eq!(text_out.last_hidden_state.shape(), &shape[..]);
        let got = text_out.last_hidden_state.to_vec().unwrap();
        let (len, d) = (shape[1], shape[2]);
        let valid = |v: &[f32]| -> Vec<f32> {
            ids.iter()
                .enumerate()
                .flat_map(|(b, s)| v[b * len * d..(b * len + s.len()) * d].to_vec())
                .collect()
        };
        let err = rel_error(&valid(&got), &valid(&want));
        assert!(err <= tol, "text last_hidden_state: {err}");
        let probs = model.probs(&image, &text).unwrap().to_vec().unwrap();
        let row: f32 = probs[..ids.len()].iter().sum();
        assert!((row - 1.0).abs() < 1e-3, "probabilities sum to {row}");
    }
}

#[test]
fn clip_tokenizer_matches_transformers() {
    let texts: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(model_dir("clip").join("texts.json")).unwrap(),
    )
    .unwrap();
    let strings: Vec<String> = serde_json::from_value(texts["texts"].clone()).unwrap();
    let want: Vec<Vec<u32>> = serde_json::from_value(texts["input_ids"].clone()).unwrap();
    let refs: Vec<&str> = strings.iter().map(String::as_str).collect();
    let from_json = ClipTokenizer::load(&model_dir("clip"), 77).unwrap();
    assert_eq!(from_json.encode(&refs).unwrap(), want);
    assert_eq!(want.last().unwrap().len(), 77, "the long text is cut to 77");
    // vocab.json + merges.txt alone give the same ids.
    let dir = temp_dir("clip_vocab_only");
    for f in ["vocab.json", "merges.txt"] {
        std::fs::copy(model_dir("clip").join(f), dir.join(f)).unwrap();
    }
    let from_vocab = ClipTokenizer::load(&dir, 77).unwrap();
    assert_eq!(from_vocab.encode(&refs).unwrap(), want);
}

#[test]
fn whisper_encoder_matches_transformers() {
    // whisper: WhisperModel, 80 mels, f32 file; whisper_v3: WhisperForConditionalGeneration,
    // 128 mels, f16 weights in three shards.
    for name in ["whisper", "whisper_v3"] {
        let r = Reference::load(name);
        let (shape, feats) = r.get("input_features");
        let want = r.get("last_hidden_state");
        for (dtype, tol) in dtypes() {
            let gpu = gpu();
            let encoder = WhisperEncoder::load(&gpu, &model_dir(name), dtype).unwrap();
            let input = Tensor::from_slice(&gpu, &feats, &shape, DType::F32).unwrap();
            let out = encoder.forward(&input).unwrap();
            check(name, &out, &want, tol);
        }
    }
}

/// A decoder_reference.safetensors tensor of token ids.
fn decoder_ids(name: &str, key: &str) -> Vec<u32> {
    let bytes = std::fs::read(model_dir(name).join("decoder_reference.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(key).unwrap();
    assert_eq!(t.dtype(), Dtype::I32, "{key}");
    t.data()
        .chunks_exact(4)
        .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u32)
        .collect()
}

fn decoder_logits(name: &str) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(model_dir(name).join("decoder_reference.safetensors")).unwrap();
    Reference(bytes).get("logits")
}

#[test]
fn whisper_decoder_matches_transformers() {
    for name in ["whisper", "whisper_v3"] {
        let r = Reference::load(name);
        let (shape, feats) = r.get("input_features");
        let ids = decoder_ids(name, "decoder_input_ids");
        let want = decoder_logits(name);
        for (dtype, tol) in dtypes() {
            let gpu = gpu();
            let encoder = WhisperEncoder::load(&gpu, &model_dir(name), dtype).unwrap();
            let decoder = WhisperDecoder::load(&gpu, &model_dir(name), dtype).unwrap();
            let input = Tensor::from_slice(&gpu, &feats, &shape, DType::F32).unwrap();
            let states = encoder.forward(&input).unwrap();

            // Teacher-forced, all tokens in one call.
            let mut cache = decoder.start(&states).unwrap();
            let logits = decoder
                .forward(&mut cache, std::slice::from_ref(&ids), false)
                .unwrap();
            check(name, &logits, &want, tol);
            assert_eq!(cache.len(), ids.len());

            // The same tokens three, then one at a time through the key/value cache.
            let mut cache = decoder.start(&states).unwrap();
            let mut got = decoder
                .forward(&mut cache, &[ids[..3].to_vec()], false)
                .unwrap()
                .to_vec()
                .unwrap();
            for &t in &ids[3..] {
                let step = decoder.forward(&mut cache, &[vec![t]], true).unwrap();
                got.extend(step.to_vec().unwrap());
            }
            let err = rel_error(&got, &want.1);
            assert!(err <= tol, "{name} {dtype} cached: relative error {err}");

            // Only the last position's logits.
            let mut cache = decoder.start(&states).unwrap();
            let last = decoder
                .forward(&mut cache, std::slice::from_ref(&ids), true)
                .unwrap();
            let vocab = decoder.config().vocab_size;
            assert_eq!(last.shape(), &[1, 1, vocab]);
            let err = rel_error(&last.to_vec().unwrap(), &want.1[want.1.len() - vocab..]);
            assert!(err <= tol, "{name} {dtype} last: relative error {err}");
        }
    }
}

#[test]
fn whisper_greedy_decoding_matches_transformers() {
    for name in ["whisper", "whisper_v3"] {
        let r = Reference::load(name);
        let (shape, feats) = r.get("input_features");
        let want = decoder_ids(name, "greedy_ids");
        let gpu = gpu();
        let encoder = WhisperEncoder::load(&gpu, &model_dir(name), DType::F32).unwrap();
        let decoder = WhisperDecoder::load(&gpu, &model_dir(name), DType::F32).unwrap();
        let input = Tensor::from_slice(&gpu, &feats, &shape, DType::F32).unwrap();
        let states = encoder.forward(&input).unwrap();
        let generation = WhisperGeneration::load(&model_dir(name)).unwrap();
        let mut options =
            generation.greedy_options(generation.prompt(None, "transcribe").unwrap(), 100);
        assert_eq!(options.prompt, [1]);
        options.suppress_tokens = decoder_ids(name, "suppress_tokens");
        options.begin_suppress_tokens = decoder_ids(name, "begin_suppress_tokens");
        let got = decoder.greedy(&states, &options).unwrap();
        assert_eq!(got, std::slice::from_ref(&want), "{name}");

        if name == "whisper" {
            // The text `tokenizers` decodes from the same tokens, special tokens skipped.
            let text: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(model_dir(name).join("decoder_reference.json")).unwrap(),
            )
            .unwrap();
            let tokenizer = WhisperTokenizer::load(&model_dir(name)).unwrap();
            assert_eq!(tokenizer.decode(&want).unwrap(), text["greedy_text"]);
        }

        // A batch of two copies of the audio decodes each the same; a short budget stops early.
        let both = Tensor::concat(&[&states, &states], 0).unwrap();
        options.max_new_tokens = 5;
        let got = decoder.greedy(&both, &options).unwrap();
        assert_eq!(got, [want[..6].to_vec(), want[..6].to_vec()], "{name}");

        // Rows with prompts of their own decode as they would alone.
        let prompts = [vec![1, 62], vec![1, 9]];
        let options = generation.greedy_options(Vec::new(), 6);
        let together = decoder.greedy_prompts(&both, &prompts, &options).unwrap();
        for (row, prompt) in together.iter().zip(&prompts) {
            let alone = GreedyOptions {
                prompt: prompt.clone(),
                ..options.clone()
            };
            assert_eq!(row, &decoder.greedy(&states, &alone).unwrap()[0], "{name}");
            assert_eq!(row.len(), 8);
        }
        let e = decoder
            .greedy_prompts(&both, &[vec![1], vec![1, 2]], &options)
            .unwrap_err()
            .to_string();
        assert!(e.contains("one length"), "{e}");

        // Language detection: the most likely of the candidates after the start token, read
        // off transformers' logits at the first position.
        let logits = decoder_logits(name).1;
        assert_eq!(decoder_ids(name, "decoder_input_ids")[0], 1);
        let candidates = [10u32, 20, 30, 40, 50];
        let best = *candidates
            .iter()
            .max_by(|&&a, &&b| logits[a as usize].total_cmp(&logits[b as usize]))
            .unwrap();
        let got = decoder.detect_language(&both, 1, &candidates).unwrap();
        assert_eq!(got, [best, best], "{name}");
    }
}

#[test]
fn whisper_generation_settings_build_the_prompt() {
    // A multilingual checkpoint's generation_config.json, as the Hub's have them.
    let dir = copy_model("whisper", "generation");
    std::fs::write(
        dir.join("generation_config.json"),
        r#"{"decoder_start_token_id": 1, "eos_token_id": 2, "no_timestamps_token_id": 3,
            "is_multilingual": true, "lang_to_id": {"<|en|>": 10, "<|de|>": 11},
            "task_to_id": {"transcribe": 20, "translate": 21},
            "suppress_tokens": [5, 7], "begin_suppress_tokens": [2]}"#,
    )
    .unwrap();
    let g = WhisperGeneration::load(&dir).unwrap();
    assert_eq!(g.prompt(Some("de"), "transcribe").unwrap(), [1, 11, 20, 3]);
    assert_eq!(
        g.prompt(Some("<|en|>"), "translate").unwrap(),
        [1, 10, 21, 3]
    );
    assert_eq!(g.prompt(None, "transcribe").unwrap(), [1, 20, 3]);
    assert_eq!(g.language_tokens(), [10, 11]);
    let e = g.prompt(Some("xx"), "transcribe").unwrap_err().to_string();
    assert!(e.contains("'xx'"), "{e}");
    let e = g.prompt(Some("en"), "summarize").unwrap_err().to_string();
    assert!(
        e.contains("summarize") && e.contains("transcribe, translate"),
        "{e}"
    );
    let options = g.greedy_options(vec![1], 9);
    assert_eq!(options.suppress_tokens, [5, 7]);
    assert_eq!(options.begin_suppress_tokens, [2]);
    assert_eq!(options.eos_token_id, Some(2));
    // Without one, config.json's settings.
    let g = WhisperGeneration::load(&model_dir("whisper")).unwrap();
    assert_eq!(g.prompt(None, "transcribe").unwrap(), [1]);
    assert_eq!(g.greedy_options(vec![1], 9).eos_token_id, Some(2));
}

#[test]
fn whisper_decoder_refuses_bad_input() {
    let gpu = gpu();
    let decoder = WhisperDecoder::load(&gpu, &model_dir("whisper"), DType::F32).unwrap();
    let states = Tensor::zeros(&gpu, &[1, 10, 32], DType::F32).unwrap();
    let mut cache = decoder.start(&states).unwrap();
    let e = decoder
        .forward(&mut cache, &[vec![64]], false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("token id 64") && e.contains("64"), "{e}");
    let e = decoder
        .forward(&mut cache, &[vec![1; 33]], false)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("33 tokens") && e.contains("max_target_positions"),
        "{e}"
    );
    let e = decoder
        .forward(&mut cache, &[vec![1], vec![1]], false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("1 rows"), "{e}");
    let wrong = Tensor::zeros(&gpu, &[1, 10, 31], DType::F32).unwrap();
    let e = decoder.start(&wrong).err().unwrap().to_string();
    assert!(e.contains("[1, 10, 31]"), "{e}");
    // Decoding stops at the last position instead of failing.
    let generation = WhisperGeneration::load(&model_dir("whisper")).unwrap();
    let options = generation.greedy_options(vec![1], 1000);
    let out = decoder.greedy(&states, &options).unwrap();
    assert_eq!(out[0].len(), 32);
    // English-only settings take no language.
    let e = generation
        .prompt(Some("en"), "transcribe")
        .unwrap_err()
        .to_string();
    assert!(e.contains("English-only"), "{e}");
}

#[test]
fn whisper_encoder_from_audio_file() {
    let gpu = gpu();
    let encoder = WhisperEncoder::load(&gpu, &model_dir("whisper"), DType::F32).unwrap();
    let samples = load_16k(&model_dir("images").join("speech.wav")).unwrap();
    let mel = encoder.log_mel(&gpu).unwrap();
    let feats = mel
        .whisper_features(&[&samples[..samples.len().min(CHUNK_SAMPLES)]])
        .unwrap();
    let out = encoder.forward(&feats).unwrap();
    let r = Reference::load("whisper");
    // Our log-mel is within 2e-3 of the feature extractor's; the encoder carries that on.
    check("from audio", &out, &r.get("last_hidden_state"), 1e-2);
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tessera-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A copy of a fixture folder to break.
fn copy_model(name: &str, tag: &str) -> PathBuf {
    let dir = temp_dir(tag);
    for entry in std::fs::read_dir(model_dir(name)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    dir
}

fn vit_error(dir: &Path) -> String {
    match ViTForImageClassification::load(&gpu(), dir, DType::F32) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_model_folders_give_clear_errors() {
    // No checkpoint at all.
    let dir = temp_dir("empty");
    std::fs::copy(
        model_dir("vit").join("config.json"),
        dir.join("config.json"),
    )
    .unwrap();
    let e = vit_error(&dir);
    assert!(e.contains("no model.safetensors"), "{e}");
    std::fs::write(dir.join("pytorch_model.bin"), b"x").unwrap();
    let e = vit_error(&dir);
    assert!(e.contains("pytorch_model.bin"), "{e}");

    // No config.
    let dir = copy_model("vit", "noconfig");
    std::fs::remove_file(dir.join("config.json")).unwrap();
    let e = vit_error(&dir);
    assert!(e.contains("config.json"), "{e}");

    // Truncated safetensors.
    let dir = copy_model("vit", "truncated");
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    std::fs::write(dir.join("model.safetensors"), &bytes[..bytes.len() - 100]).unwrap();
    let e = vit_error(&dir);
    assert!(e.contains("corrupt or truncated"), "{e}");
    // Garbage header.
    std::fs::write(
        dir.join("model.safetensors"),
        b"\xff\xff\xff\xff\xff\xff\xff\x7fgarbage",
    )
    .unwrap();
    let e = vit_error(&dir);
    assert!(e.contains("corrupt or truncated"), "{e}");

    // A config that disagrees with the weights: the key and both shapes are named.
    let dir = copy_model("vit", "shapes");
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    std::fs::write(
        dir.join("config.json"),
        config.replace("\"intermediate_size\": 64", "\"intermediate_size\": 48"),
    )
    .unwrap();
    let e = vit_error(&dir);
    assert!(
        e.contains("vit.encoder.layer.0.intermediate.dense.weight")
            && e.contains("[64, 32]")
            && e.contains("[48, 32]"),
        "{e}"
    );

    // Unsupported activation and malformed JSON.
    std::fs::write(
        dir.join("config.json"),
        config.replace("\"hidden_act\": \"gelu\"", "\"hidden_act\": \"mish\""),
    )
    .unwrap();
    let e = vit_error(&dir);
    assert!(e.contains("hidden_act") && e.contains("mish"), "{e}");
    std::fs::write(dir.join("config.json"), &config[..config.len() / 2]).unwrap();
    let e = vit_error(&dir);
    assert!(
        e.contains("config.json") && e.contains("not a valid"),
        "{e}"
    );

    // A missing weight is named.
    let dir = copy_model("whisper_v3", "shard");
    std::fs::remove_file(dir.join("model-00001-of-00003.safetensors")).unwrap();
    let e = WhisperEncoder::load(&gpu(), &dir, DType::F32)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("model-00001-of-00003.safetensors"), "{e}");
    let dir = copy_model("vit_base", "noclassifier");
    let e = vit_error(&dir);
    assert!(e.contains("no classifier head"), "{e}");

    // Wrong model family.
    let e = ClipModel::load(&gpu(), &model_dir("vit"), DType::F32)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("model_type") && e.contains("vit"), "{e}");

    // Preprocessor sizes past what one image can sensibly take: refused at load, and a
    // shortest-edge resize of a very long image refused before it allocates.
    let dir = copy_model("vit", "hugesize");
    let pre = std::fs::read_to_string(dir.join("preprocessor_config.json")).unwrap();
    let huge = pre.replace("\"height\": 32", "\"height\": 2147483648");
    assert_ne!(huge, pre);
    std::fs::write(dir.join("preprocessor_config.json"), huge).unwrap();
    let e = ImageProcessor::load(&dir, ImageProcessor::vit_default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("`size`") && e.contains("16384"), "{e}");
    let dir = copy_model("clip", "hugecrop");
    let pre = std::fs::read_to_string(dir.join("preprocessor_config.json")).unwrap();
    let huge = pre.replacen("\"height\": 32", "\"height\": 40000", 1);
    assert!(
        pre.contains("\"crop_size\": {\n    \"height\": 32"),
        "{pre}"
    );
    std::fs::write(dir.join("preprocessor_config.json"), huge).unwrap();
    let e = ImageProcessor::load(&dir, ImageProcessor::clip_default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("`crop_size`") && e.contains("40000"), "{e}");
    let clip = ImageProcessor::load(&model_dir("clip"), ImageProcessor::clip_default()).unwrap();
    let strip = tessera::nn::image::RgbImage::new(2, 20_000);
    let e = clip.process_one(&strip).unwrap_err().to_string();
    assert!(e.contains("2x20000") && e.contains("16384"), "{e}");

    // An unreadable image.
    let dir = temp_dir("badimage");
    std::fs::write(dir.join("x.png"), b"not a png").unwrap();
    let e = load_image(&dir.join("x.png")).unwrap_err().to_string();
    assert!(
        e.contains("cannot read image") && e.contains("x.png"),
        "{e}"
    );
}

#[test]
fn missing_weight_is_named() {
    // A checkpoint written without one tensor: rebuild the file without `layernorm.bias`.
    let dir = copy_model("vit", "missing");
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<(String, safetensors::tensor::TensorView<'_>)> = st
        .tensors()
        .into_iter()
        .filter(|(k, _)| k != "vit.layernorm.bias")
        .collect();
    safetensors::serialize_to_file(kept, None, &dir.join("model.safetensors")).unwrap();
    let e = vit_error(&dir);
    assert!(e.contains("`vit.layernorm.bias` is missing"), "{e}");
}

/// The models with the GPU family of kernels (buffer matmuls, workgroup-memory attention, one
/// workgroup per norm row) that `Auto` picks on real GPUs, run here on the CPU driver.
#[test]
fn models_match_with_the_gpu_kernel_family() {
    let options = tessera::GpuOptions {
        kernels: tessera::KernelFamily::Gpu,
        ..tessera::GpuOptions::from_env().unwrap()
    };
    let gpu = std::sync::Arc::new(tessera::Gpu::new(&options).unwrap());
    assert!(!gpu.cpu_kernels());

    let r = Reference::load("vit");
    let (pixels, batch, size) = r.pixels_hwc("pixel_values");
    let (model, _) = ViTForImageClassification::load(&gpu, &model_dir("vit"), DType::F32).unwrap();
    let (logits, _) = model
        .forward_pixels(Pixels::F32(&pixels), batch, size, &IDENTITY)
        .unwrap();
    check("vit logits", &logits, &r.get("logits"), F32_TOL);

    let r = Reference::load("clip");
    let texts: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(model_dir("clip").join("texts.json")).unwrap(),
    )
    .unwrap();
    let ids: Vec<Vec<u32>> = serde_json::from_value(texts["input_ids"].clone()).unwrap();
    let (model, _, _) = ClipModel::load(&gpu, &model_dir("clip"), DType::F32).unwrap();
    let text = model.text_embeds(&ids).unwrap();
    check("clip text_embeds", &text, &r.get("text_embeds"), F32_TOL);

    let r = Reference::load("whisper");
    let (shape, feats) = r.get("input_features");
    let encoder = WhisperEncoder::load(&gpu, &model_dir("whisper"), DType::F32).unwrap();
    let input = Tensor::from_slice(&gpu, &feats, &shape, DType::F32).unwrap();
    let out = encoder.forward(&input).unwrap();
    check("whisper", &out, &r.get("last_hidden_state"), F32_TOL);
    // The decoder's cross-attention through the fused kernel (CPU drivers take matmuls).
    let decoder = WhisperDecoder::load(&gpu, &model_dir("whisper"), DType::F32).unwrap();
    let mut cache = decoder.start(&out).unwrap();
    let ids = decoder_ids("whisper", "decoder_input_ids");
    let logits = decoder.forward(&mut cache, &[ids], false).unwrap();
    check(
        "whisper decoder",
        &logits,
        &decoder_logits("whisper"),
        F32_TOL,
    );
    // Step by step (each step's keys and values written into the cache in place, attention
    // reading it through strided views) and in a batch of two: transformers' greedy tokens.
    let generation = WhisperGeneration::load(&model_dir("whisper")).unwrap();
    let mut options = generation.greedy_options(vec![1], 100);
    options.suppress_tokens = decoder_ids("whisper", "suppress_tokens");
    options.begin_suppress_tokens = decoder_ids("whisper", "begin_suppress_tokens");
    let want = decoder_ids("whisper", "greedy_ids");
    let both = Tensor::concat(&[&out, &out], 0).unwrap();
    assert_eq!(
        decoder.greedy(&both, &options).unwrap(),
        [want.clone(), want]
    );
}

#[test]
fn clip_pools_at_the_end_token_by_transformers_rule() {
    use tessera::clip::{ClipTextConfig, ClipTextTransformer};
    use tessera::nn::Weights;
    let gpu = gpu();
    let w = Weights::random(&gpu, DType::F32).unwrap();
    let tower = |eos| {
        let config = ClipTextConfig {
            vocab_size: 100,
            hidden_size: 8,
            intermediate_size: 16,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            max_position_embeddings: 16,
            eos_token_id: eos,
            ..ClipTextConfig::default()
        };
        ClipTextTransformer::new(&config, &w).unwrap()
    };
    let ids = [98, 5, 7, 99, 3, 99];
    // eos_token_id 2 (the original configs): the first position of the highest id.
    assert_eq!(tower(2).eos_position(&ids), 3);
    // Otherwise the first position of that id, 0 if absent.
    assert_eq!(tower(7).eos_position(&ids), 2);
    assert_eq!(tower(42).eos_position(&ids), 0);
    // Longer than the positions: an error, not a panic.
    let long = vec![vec![1u32; 17]];
    assert!(tower(2).forward(&long).is_err());
}

#[test]
fn empty_images_and_batches_are_errors() {
    let processor = ImageProcessor::clip_default();
    let empty = tessera::nn::image::RgbImage::new(0, 5);
    let e = processor.process(&[empty]).unwrap_err().to_string();
    assert!(e.contains("0x5"), "{e}");
    let e = processor.process(&[]).unwrap_err().to_string();
    assert!(e.contains("no images"), "{e}");
}
