//! The library builds for browsers (wasm32-unknown-unknown on WebGPU) and loads every model
//! family from memory, as a page does. tools/web runs it in a headless Chromium; this keeps it
//! building and correct where CI has no browser.

use std::path::Path;
use std::process::Command;

/// The wasm32 standard library, added through rustup when it is missing (as `cargo` fetches
/// crates): the quick start's test command then needs nothing more on a fresh machine.
fn ensure_target() {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    match installed {
        Ok(out) if !String::from_utf8_lossy(&out.stdout).contains("wasm32-unknown-unknown") => {
            let added = Command::new("rustup")
                .args(["target", "add", "wasm32-unknown-unknown"])
                .status();
            assert!(
                added.is_ok_and(|s| s.success()),
                "`rustup target add wasm32-unknown-unknown` failed"
            );
        }
        // Installed, or no rustup (a toolchain that has the target or not: the check says).
        _ => {}
    }
}

/// The library and tools/web's browser checks (a crate of its own, outside the workspace) type-check
/// for wasm32: the checks themselves need Chromium and run by hand (README), so CI at least
/// keeps them building against the library's API.
#[test]
fn library_builds_for_browsers() {
    ensure_target();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(env!("CARGO"))
        .args([
            "check",
            "--manifest-path",
            "tools/web/Cargo.toml",
            "--target",
            "wasm32-unknown-unknown",
            "--quiet",
        ])
        .current_dir(root)
        // Its own folder: no wait on the build lock of the tests' own target folder.
        .env("CARGO_TARGET_DIR", root.join("target").join("wasm-check"))
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "the library or tools/web does not build for wasm32-unknown-unknown (`rustup target \
         add wasm32-unknown-unknown` if the target is missing):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What a browser does instead of reading folders: every model family built from files in
/// memory (`from_json`, `from_bytes`, `from_checkpoint`, `from_parts`) computes what the
/// folder loaders' models compute, through the `_async` entry points a browser awaits (run
/// here to their end by `pollster`), and bad files in memory give the same clear errors.
mod from_memory {
    use std::sync::Arc;

    use tessera::audio::{
        long_form_features, long_form_features_async, transcribe, transcribe_async,
        TranscribeOptions, WhisperConfig, WhisperDecoder, WhisperEncoder, WhisperGeneration,
        WhisperTokenizer,
    };
    use tessera::clip::ClipTokenizer;
    use tessera::muse::{
        Amused, AmusedScheduler, GenerateOptions, SeededNoise, TextEncoder, UVit2D, UVit2DConfig,
        VqConfig, VqDecoder,
    };
    use tessera::nn::config::ModelConfig;
    use tessera::nn::{decode_image, load_image, ImageProcessor, Weights};
    use tessera::{DType, Gpu};

    use crate::common::gpu;
    use crate::models::{image_paths, model_dir};
    use crate::timestamps::clip;

    fn bytes(model: &str, file: &str) -> Vec<u8> {
        std::fs::read(model_dir(model).join(file)).unwrap()
    }

    fn text(model: &str, file: &str) -> String {
        String::from_utf8(bytes(model, file)).unwrap()
    }

    fn weights(gpu: &Arc<Gpu>, model: &str, file: &str) -> Weights {
        Weights::from_bytes(gpu, vec![(file.into(), bytes(model, file))], DType::F32).unwrap()
    }

    #[test]
    fn whisper_from_memory_transcribes_as_from_its_folder() {
        let g = gpu();
        let m = "whisper_timestamps";
        let dir = model_dir(m);
        let config = WhisperConfig::from_json(&text(m, "config.json")).unwrap();
        let w = weights(&g, m, "model.safetensors");
        let encoder = WhisperEncoder::from_checkpoint(&config, &w).unwrap();
        let decoder = WhisperDecoder::from_checkpoint(&config, &w).unwrap();
        let generation = WhisperGeneration::from_json(
            &text(m, "config.json"),
            Some(&text(m, "generation_config.json")),
        )
        .unwrap();
        // The settings as the folder's (compared through what they give: the language
        // table is a hash map, whose Debug order varies).
        let settings = |g: &WhisperGeneration| {
            let mut languages = g.language_tokens();
            languages.sort_unstable();
            format!(
                "{:?} {:?} {:?} {:?} {:?} {languages:?}",
                g.timestamp_prompt(Some("de"), "translate").ok(),
                g.timestamp_rules().ok(),
                g.greedy_options(vec![1], 5),
                g.prev_sot_token(),
                g.alignment(&config, None),
            )
        };
        let from_folder = WhisperGeneration::load(&dir).unwrap();
        assert_eq!(settings(&generation), settings(&from_folder));
        // Without generation_config.json: config.json's settings only.
        let base = WhisperGeneration::from_json(&text(m, "config.json"), None).unwrap();
        assert_ne!(settings(&base), settings(&generation));

        let prompt = generation
            .timestamp_prompt(Some("en"), "transcribe")
            .unwrap();
        let mut options = generation.greedy_options(prompt, 40);
        options.timestamps = Some(generation.timestamp_rules().unwrap());
        let samples = clip(40);
        let context = TranscribeOptions {
            alignment: Some(generation.alignment(&config, Some(samples.len() / 160))),
            ..TranscribeOptions::default()
        };
        let front = encoder.log_mel(&g).unwrap();
        let (features, frames) =
            pollster::block_on(long_form_features_async(&front, &samples)).unwrap();
        let memory = pollster::block_on(transcribe_async(
            &encoder,
            &decoder,
            &features,
            frames,
            &options,
            &context,
            &mut |_, _, _| {},
        ))
        .unwrap();

        let encoder = WhisperEncoder::load(&g, &dir, DType::F32).unwrap();
        let decoder = WhisperDecoder::load(&g, &dir, DType::F32).unwrap();
        let front = encoder.log_mel(&g).unwrap();
        let (folder_features, _) = long_form_features(&front, &samples).unwrap();
        assert_eq!(features, folder_features);
        let folder = transcribe(
            &encoder,
            &decoder,
            &features,
            frames,
            &options,
            &context,
            &mut |_, _, _| {},
        )
        .unwrap();
        assert!(!folder.is_empty());
        assert_eq!(format!("{memory:?}"), format!("{folder:?}"));

        let tokenizer = WhisperTokenizer::from_bytes(&bytes(m, "tokenizer.json")).unwrap();
        let from_folder = WhisperTokenizer::load(&dir).unwrap();
        for s in &folder {
            assert_eq!(
                tokenizer.decode(&s.tokens).unwrap(),
                from_folder.decode(&s.tokens).unwrap()
            );
        }
    }

    #[test]
    fn amused_from_memory_generates_as_from_its_folder() {
        let g = gpu();
        let m = "amused";
        let tokenizer = ClipTokenizer::from_vocab(
            &bytes(m, "tokenizer/vocab.json"),
            &bytes(m, "tokenizer/merges.txt"),
            // The text encoder sets its own length.
            5,
        )
        .unwrap();
        let text_encoder = TextEncoder::from_parts(
            &text(m, "text_encoder/config.json"),
            &weights(&g, m, "text_encoder/model.safetensors"),
            tokenizer,
            Some(&text(m, "tokenizer/tokenizer_config.json")),
        )
        .unwrap();
        let transformer = UVit2D::new(
            &UVit2DConfig::from_json(&text(m, "transformer/config.json")).unwrap(),
            &weights(&g, m, "transformer/diffusion_pytorch_model.safetensors"),
        )
        .unwrap();
        let vq = || {
            VqDecoder::new(
                &VqConfig::from_json(&text(m, "vqvae/config.json")).unwrap(),
                &weights(&g, m, "vqvae/diffusion_pytorch_model.safetensors"),
            )
            .unwrap()
        };
        let scheduler =
            AmusedScheduler::from_json(&text(m, "scheduler/scheduler_config.json")).unwrap();
        let memory = Amused::from_parts(text_encoder, transformer, vq(), scheduler).unwrap();
        let folder = Amused::load(&g, &model_dir(m), DType::F32).unwrap();
        let opts = GenerateOptions {
            steps: 4,
            guidance_scale: 3.0,
            ..GenerateOptions::default()
        };
        let prompts = ["a red cube", "a photo of a cat"];
        let got =
            pollster::block_on(memory.generate_async(&prompts, &opts, &mut SeededNoise::new(11)))
                .unwrap();
        let want = folder
            .generate(&prompts, &opts, &mut SeededNoise::new(11))
            .unwrap();
        assert_eq!(got.tokens, want.tokens);
        assert_eq!(got.pixels, want.pixels);
        // Different draws give different tokens (the comparison above can fail).
        let other = folder
            .generate(&prompts, &opts, &mut SeededNoise::new(12))
            .unwrap();
        assert_ne!(other.tokens, want.tokens);

        // Parts that do not fit together are refused: a text encoder whose tokenizer lacks
        // the pad token, a scheduler whose mask token is inside the codebook.
        let moved = text(m, "scheduler/scheduler_config.json")
            .replace("\"mask_token_id\": 39", "\"mask_token_id\": 3");
        assert!(moved.contains("\"mask_token_id\": 3,"), "{moved}");
        let scheduler = AmusedScheduler::from_json(&moved).unwrap();
        let err = Amused::from_parts(
            TextEncoder::from_parts(
                &text(m, "text_encoder/config.json"),
                &weights(&g, m, "text_encoder/model.safetensors"),
                ClipTokenizer::from_vocab(
                    &bytes(m, "tokenizer/vocab.json"),
                    &bytes(m, "tokenizer/merges.txt"),
                    77,
                )
                .unwrap(),
                None,
            )
            .unwrap(),
            UVit2D::new(
                &UVit2DConfig::from_json(&text(m, "transformer/config.json")).unwrap(),
                &weights(&g, m, "transformer/diffusion_pytorch_model.safetensors"),
            )
            .unwrap(),
            vq(),
            scheduler,
        )
        .err()
        .expect("a mask token inside the codebook")
        .to_string();
        assert!(err.contains("mask_token_id"), "{err}");
        let err = TextEncoder::from_parts(
            &text(m, "text_encoder/config.json"),
            &weights(&g, m, "text_encoder/model.safetensors"),
            ClipTokenizer::from_vocab(
                &bytes(m, "tokenizer/vocab.json"),
                &bytes(m, "tokenizer/merges.txt"),
                77,
            )
            .unwrap(),
            Some(r#"{"pad_token": "<|no such token|>"}"#),
        )
        .err()
        .expect("a pad token outside the vocabulary")
        .to_string();
        assert!(
            err.contains("tokenizer_config.json") && err.contains("<|no such token|>"),
            "{err}"
        );
    }

    #[test]
    fn clip_tokenizer_from_memory_as_from_its_folder() {
        let m = "clip";
        let texts = [
            "a photo of a cat",
            "Two  DOGS, playing!",
            "naïve café 123 — ok?",
        ];
        let folder = ClipTokenizer::load(&model_dir(m), 77).unwrap();
        let want = folder.encode(&texts).unwrap();
        let json = ClipTokenizer::from_bytes(&bytes(m, "tokenizer.json"), 77).unwrap();
        assert_eq!(json.encode(&texts).unwrap(), want);
        let vocab = ClipTokenizer::from_vocab(&bytes(m, "vocab.json"), &bytes(m, "merges.txt"), 77)
            .unwrap();
        assert_eq!(vocab.encode(&texts).unwrap(), want);
        // Cut to 4 tokens, the end token kept.
        let short = vocab.with_max_len(4).unwrap().encode(&texts).unwrap();
        assert!(short.iter().all(|ids| ids.len() == 4));
        assert_eq!(short[0][3], *want[0].last().unwrap());
    }

    #[test]
    fn images_and_their_processor_from_memory_as_from_files() {
        for (model, fallback) in [
            ("clip", ImageProcessor::clip_default()),
            ("vit", ImageProcessor::vit_default()),
        ] {
            let memory = ImageProcessor::from_json(
                &text(model, "preprocessor_config.json"),
                fallback.clone(),
            )
            .unwrap();
            let folder = ImageProcessor::load(&model_dir(model), fallback).unwrap();
            assert_eq!(format!("{memory:?}"), format!("{folder:?}"));
        }
        let defaults = ImageProcessor::from_json("{}", ImageProcessor::vit_default()).unwrap();
        assert_eq!(
            format!("{defaults:?}"),
            format!("{:?}", ImageProcessor::vit_default())
        );
        for path in image_paths() {
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(decode_image(&bytes).unwrap(), load_image(&path).unwrap());
        }
        let err = decode_image(b"GIF89a not really").unwrap_err().to_string();
        assert!(err.contains("cannot read the image"), "{err}");
        let err = ImageProcessor::from_json("{\"size\": 0}", ImageProcessor::vit_default())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("positive"), "{err}");
    }

    #[test]
    fn bad_files_in_memory_give_clear_errors() {
        let g = gpu();
        let err = WhisperConfig::from_json("{\"d_model\": ")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("config.json") && err.contains("model config"),
            "{err}"
        );
        let err = WhisperConfig::from_json(r#"{"model_type": "vit"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("'vit' is not a Whisper checkpoint"), "{err}");
        let err = WhisperGeneration::from_json("{}", Some(r#"{"eos_token_id": "x"}"#))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("generation_config.json"), "{err}");
        let err = WhisperTokenizer::from_bytes(b"{\"model\": 7}")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("tokenizer.json"), "{err}");
        // A checkpoint of another family: the missing key, and where the weights came from.
        let m = "whisper_timestamps";
        let config = WhisperConfig::from_json(&text(m, "config.json")).unwrap();
        let vit = weights(&g, "vit", "model.safetensors");
        let err = WhisperEncoder::from_checkpoint(&config, &vit)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("model.encoder.conv1.weight") && err.contains("(in memory)"),
            "{err}"
        );
        // A truncated checkpoint in memory.
        let mut cut = bytes(m, "model.safetensors");
        cut.truncate(cut.len() / 2);
        let err = Weights::from_bytes(&g, vec![("model.safetensors".into(), cut)], DType::F32)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("model.safetensors"), "{err}");
        let err = ClipTokenizer::from_vocab(br#"{"a": 0}"#, b"#version: 0.2\na b c\n", 77)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("merges.txt") && err.contains("line 1"),
            "{err}"
        );
        let err = ClipTokenizer::from_vocab(b"[]", b"", 77)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("vocab.json"), "{err}");
        let err = UVit2DConfig::from_json("{\"hidden_size\": }")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("config.json"), "{err}");
        // diffusers' defaults fill what a config leaves out; values are still checked.
        assert!(UVit2DConfig::from_json("{}").is_ok());
        let err = VqConfig::from_json("{\"latent_channels\": 0}")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("latent_channels"), "{err}");
        let err = AmusedScheduler::from_json("{\"mask_token_id\": \"x\"}")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("scheduler_config.json"), "{err}");
    }
}
