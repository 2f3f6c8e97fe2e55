//! Token- and word-level timestamps against transformers (tools/make_whisper_word_fixtures.py):
//! the median filter, dynamic time warping, the matrix they align, every token's time in
//! transcriptions of a 12 s and a 75 s clip (greedy and beam search), and the grouping of
//! tokens into words.

use std::sync::Arc;

use serde_json::Value;
use tessera::audio::{
    alignment_matrix, dynamic_time_warping, long_form_features, median_filter, transcribe,
    window_features, Alignment, BeamOptions, Segment, TranscribeOptions, WhisperDecoder,
    WhisperEncoder, WhisperGeneration, WhisperTokenizer,
};
use tessera::{DType, Gpu};

use crate::common::gpu;
use crate::models::{model_dir, temp_dir, Reference};
use crate::timestamps::clip;

const MODEL: &str = "whisper_timestamps";

fn reference_json() -> Value {
    let text = std::fs::read_to_string(model_dir(MODEL).join("words_reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn matrix(v: &Value) -> (Vec<f64>, usize, usize) {
    let rows = v.as_array().unwrap();
    let cols = rows[0].as_array().unwrap().len();
    let flat = rows
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()))
        .collect();
    (flat, rows.len(), cols)
}

fn usizes(v: &Value) -> Vec<isize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap() as isize)
        .collect()
}

#[test]
fn median_filter_and_time_warping_as_transformers() {
    let json = reference_json();
    for case in json["median_filters"].as_array().unwrap() {
        let (input, rows, cols) = matrix(&case["input"]);
        let input: Vec<f32> = input.iter().map(|&x| x as f32).collect();
        let (want, _, _) = matrix(&case["output"]);
        let got = median_filter(&input, cols, 7);
        assert_eq!(got.len(), rows * cols);
        // The median is one of the inputs: equal in f32.
        let want: Vec<f32> = want.iter().map(|&w| w as f32).collect();
        assert_eq!(got, want, "{rows}x{cols}");
    }
    for case in json["warps"].as_array().unwrap() {
        let (m, rows, cols) = matrix(&case["matrix"]);
        let (text, time) = dynamic_time_warping(&m, rows, cols);
        assert_eq!(text, usizes(&case["text"]), "{rows}x{cols}");
        assert_eq!(time, usizes(&case["time"]), "{rows}x{cols}");
    }
}

#[test]
fn words_grouped_as_transformers() {
    let json = reference_json();
    // The byte-level tokenizer of the same ids: spaces, pieces, punctuation, split characters.
    let folder = temp_dir("word_tokenizer");
    std::fs::copy(
        model_dir(MODEL).join("tokenizer_words.json"),
        folder.join("tokenizer.json"),
    )
    .unwrap();
    let tokenizer = WhisperTokenizer::load(&folder).unwrap();
    for case in json["groups"].as_array().unwrap() {
        let tokens: Vec<u32> = usizes(&case["tokens"]).iter().map(|&t| t as u32).collect();
        let language = match case["language"].as_str().unwrap() {
            "english" => "en",
            "japanese" => "ja",
            "chinese" => "zh",
            other => panic!("{other}"),
        };
        let words = tokenizer.words(&tokens, Some(language)).unwrap();
        let texts: Vec<&str> = words.iter().map(|w| w.text.as_str()).collect();
        let want: Vec<&str> = case["words"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_str().unwrap())
            .collect();
        assert_eq!(texts, want, "{tokens:?} ({language})");
        let indices: Vec<Vec<isize>> = words
            .iter()
            .map(|w| w.tokens.iter().map(|&k| k as isize).collect())
            .collect();
        let want: Vec<Vec<isize>> = case["indices"]
            .as_array()
            .unwrap()
            .iter()
            .map(usizes)
            .collect();
        assert_eq!(indices, want, "{tokens:?} ({language})");
    }
}

fn transcribe_case(
    gpu: &Arc<Gpu>,
    seconds: usize,
    beams: Option<usize>,
    alignment: &Alignment,
) -> (Vec<Segment>, WhisperEncoder, WhisperDecoder) {
    let dir = model_dir(MODEL);
    let encoder = WhisperEncoder::load(gpu, &dir, DType::F32).unwrap();
    let decoder = WhisperDecoder::load(gpu, &dir, DType::F32).unwrap();
    let generation = WhisperGeneration::load(&dir).unwrap();
    let prompt = generation
        .timestamp_prompt(Some("en"), "transcribe")
        .unwrap();
    let mut options = generation.greedy_options(prompt, 40);
    options.timestamps = Some(generation.timestamp_rules().unwrap());
    options.beams = beams.map(|num_beams| BeamOptions {
        num_beams,
        length_penalty: 1.0,
    });
    let front = encoder.log_mel(gpu).unwrap();
    let samples = clip(seconds);
    let (features, n) = long_form_features(&front, &samples).unwrap();
    let context = TranscribeOptions {
        alignment: Some(Alignment {
            frames: Some(samples.len().div_ceil(160)),
            ..alignment.clone()
        }),
        ..TranscribeOptions::default()
    };
    let segments = transcribe(
        &encoder,
        &decoder,
        &features,
        n,
        &options,
        &context,
        &mut |_, _, _| {},
    )
    .unwrap();
    (segments, encoder, decoder)
}

#[test]
fn token_timestamps_as_transformers() {
    let gpu = gpu();
    let json = reference_json();
    let reference = Reference::file(MODEL, "words_reference.safetensors");
    let dir = model_dir(MODEL);
    let generation = WhisperGeneration::load(&dir).unwrap();
    let config = WhisperDecoder::load(&gpu, &dir, DType::F32)
        .unwrap()
        .config()
        .clone();
    let alignment = generation.alignment(&config, None);
    let heads: Vec<(usize, usize)> =
        serde_json::from_value(json["alignment_heads"].clone()).unwrap();
    assert_eq!(alignment.heads, heads);
    assert_eq!(alignment.median_filter_width, 7);
    for (case, seconds, beams) in [
        ("short", 12, None),
        ("long", 75, None),
        ("long_beams", 75, Some(4)),
        // Windows after the first start past the clip's end.
        ("tiny", 4, None),
    ] {
        let (segments, encoder, decoder) = transcribe_case(&gpu, seconds, beams, &alignment);
        let (_, frames) = reference.ints(&format!("{case}_frames"));
        assert_eq!(frames[0] as usize, (seconds * 16000).div_ceil(160));
        let (_, tokens) = reference.ints(&format!("{case}_tokens"));
        let (_, lengths) = reference.ints(&format!("{case}_lengths"));
        let (_, times) = reference.get(&format!("{case}_times"));
        assert_eq!(segments.len(), lengths.len(), "{case}");
        let got_tokens: Vec<u32> = segments.iter().flat_map(|s| s.tokens.clone()).collect();
        assert_eq!(got_tokens, tokens, "{case}");
        let got: Vec<f64> = segments
            .iter()
            .flat_map(|s| s.token_times.clone())
            .collect();
        assert_eq!(got.len(), times.len(), "{case}");
        let off: Vec<(usize, f64, f32)> = got
            .iter()
            .zip(&times)
            .enumerate()
            .filter(|(_, (g, w))| (**g - f64::from(**w)).abs() > 1e-6)
            .map(|(i, (g, w))| (i, *g, *w))
            .collect();
        assert!(off.is_empty(), "{case}: token times differ at {off:?}");

        if case == "short" {
            // The matrix the first window's warping aligned: the rows after the prompt.
            let (shape, want) = reference.get("short_matrix");
            let (rows, cols) = (shape[0], shape[1]);
            let prompt = generation
                .timestamp_prompt(Some("en"), "transcribe")
                .unwrap();
            let first = &segments[0];
            let window: Vec<u32> = segments
                .iter()
                .filter(|s| s.window.seek == first.window.seek)
                .flat_map(|s| s.tokens.clone())
                .collect();
            let mut fed = prompt.clone();
            fed.extend_from_slice(&window);
            // The end token was read too when the window's decoding ended with it.
            let fed_rows = rows + prompt.len();
            fed.truncate(fed_rows);
            assert_eq!(fed.len(), fed_rows, "{case}");
            let front = encoder.log_mel(&gpu).unwrap();
            let (features, n) = long_form_features(&front, &clip(seconds)).unwrap();
            let (input, _) = window_features(&gpu, &features, 80, n, 0).unwrap();
            let states = encoder.forward(&input).unwrap();
            let weights = decoder
                .cross_attention_weights(&states, &fed, &alignment.heads)
                .unwrap();
            let positions = states.shape()[1];
            assert_eq!(weights.len(), heads.len() * fed_rows * positions);
            // The rows after the prompt's, read in place.
            let m = alignment_matrix(&weights, heads.len(), rows, positions, cols, 7);
            let err = m
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            eprintln!("alignment matrix: largest difference {err}");
            assert!(err < 1e-3, "alignment matrix: {err}");
        }
    }
}

/// The cross-attention weights through both kernel families (CPU drivers' packed keys, real
/// GPUs' per-head matmul): rows that sum to 1, the same on both.
#[test]
fn cross_attention_weights_on_both_kernel_families() {
    let cpu_family = gpu();
    let options = tessera::GpuOptions {
        kernels: tessera::KernelFamily::Gpu,
        ..tessera::GpuOptions::from_env().unwrap()
    };
    let gpu_family = Arc::new(Gpu::new(&options).unwrap());
    let dir = model_dir(MODEL);
    let encoder = WhisperEncoder::load(&cpu_family, &dir, DType::F32).unwrap();
    let front = encoder.log_mel(&cpu_family).unwrap();
    let (features, n) = long_form_features(&front, &clip(12)).unwrap();
    let (input, _) = window_features(&cpu_family, &features, 80, n, 0).unwrap();
    let states = encoder.forward(&input).unwrap();
    let (shape, values) = (states.shape().to_vec(), states.to_vec().unwrap());
    let tokens = [50, 51, 54, 59, 3, 9, 20, 100, 100, 12];
    let heads = [(1, 3), (0, 0), (1, 1)];
    let mut results = Vec::new();
    for g in [&cpu_family, &gpu_family] {
        let decoder = WhisperDecoder::load(g, &dir, DType::F32).unwrap();
        let states = tessera::Tensor::from_slice(g, &values, &shape, DType::F32).unwrap();
        results.push(
            decoder
                .cross_attention_weights(&states, &tokens, &heads)
                .unwrap(),
        );
        // Heads past the decoder are refused before anything runs.
        let e = decoder
            .cross_attention_weights(&states, &tokens, &[(0, 1), (2, 0)])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("alignment head (2, 0)") && e.contains("2 layers × 4 heads"),
            "{e}"
        );
    }
    let positions = shape[1];
    assert_eq!(results[0].len(), heads.len() * tokens.len() * positions);
    for row in results[0].chunks(positions) {
        let sum: f32 = row.iter().sum();
        assert!((sum - 1.0).abs() < 1e-4, "{sum}");
    }
    let err = results[0]
        .iter()
        .zip(&results[1])
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(err < 1e-6, "kernel families differ by {err}");
}

/// Words of a segment take their times from the tokens' (the token before a word's first to
/// its last), grouped as transformers' pipeline groups them; bad alignment settings are refused.
#[test]
fn segment_words_and_alignment_checks() {
    let folder = temp_dir("segment_words");
    std::fs::copy(
        model_dir(MODEL).join("tokenizer_words.json"),
        folder.join("tokenizer.json"),
    )
    .unwrap();
    let tokenizer = WhisperTokenizer::load(&folder).unwrap();
    // <|1.00|> " ta" "se" "," " (" " ka" ")" <|2.00|>
    let segment = Segment {
        start: 11.0,
        end: 12.0,
        tokens: vec![59 + 50, 0, 21, 36, 39, 5, 40, 59 + 100],
        token_times: vec![11.0, 11.104, 11.3, 11.3, 11.52, 11.6, 11.996, 11.996],
        ..Segment::default()
    };
    let words = tokenizer.segment_words(&segment, Some("en")).unwrap();
    let got: Vec<(&str, f64, f64, Vec<u32>)> = words
        .iter()
        .map(|w| (w.text.as_str(), w.start, w.end, w.tokens.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (" tase,", 11.0, 11.3, vec![0, 21, 36]),
            (" ( ka)", 11.3, 12.0, vec![39, 5, 40]),
        ]
    );
    // Without token times there are no words.
    let bare = Segment {
        token_times: Vec::new(),
        ..segment
    };
    assert!(tokenizer.segment_words(&bare, None).unwrap().is_empty());

    let dir = model_dir(MODEL);
    let generation = WhisperGeneration::load(&dir).unwrap();
    let g = gpu();
    let decoder = WhisperDecoder::load(&g, &dir, DType::F32).unwrap();
    let config = decoder.config().clone();
    // Without alignment heads in the config: every head of the second half of the layers.
    let fallback = WhisperGeneration {
        alignment_heads: None,
        ..generation.clone()
    };
    let a = fallback.alignment(&config, Some(100));
    assert_eq!(a.heads, vec![(1, 0), (1, 1), (1, 2), (1, 3)]);
    assert_eq!(a.frames, Some(100));
    for (bad, want) in [
        (
            Alignment {
                median_filter_width: 6,
                ..a.clone()
            },
            "must be odd",
        ),
        (
            Alignment {
                heads: vec![(0, 4)],
                ..a.clone()
            },
            "alignment head (0, 4)",
        ),
        (
            Alignment {
                heads: Vec::new(),
                ..a.clone()
            },
            "at least one alignment head",
        ),
    ] {
        let e = bad.check(&config).unwrap_err().to_string();
        assert!(e.contains(want), "{e}");
    }
}

/// A cache started once on a window's states serves every decoding of it as the states
/// themselves do; a cache of another decoder is refused.
#[test]
fn decoding_from_a_started_cache() {
    let g = gpu();
    let dir = model_dir(MODEL);
    let encoder = WhisperEncoder::load(&g, &dir, DType::F32).unwrap();
    let decoder = WhisperDecoder::load(&g, &dir, DType::F32).unwrap();
    let generation = WhisperGeneration::load(&dir).unwrap();
    let front = encoder.log_mel(&g).unwrap();
    let (features, n) = long_form_features(&front, &clip(12)).unwrap();
    let (input, _) = window_features(&g, &features, 80, n, 0).unwrap();
    let states = encoder.forward(&input).unwrap();
    let started = decoder.start(&states).unwrap();
    let mut options = generation.greedy_options(
        generation
            .timestamp_prompt(Some("en"), "transcribe")
            .unwrap(),
        20,
    );
    options.timestamps = Some(generation.timestamp_rules().unwrap());
    let prompts = [options.prompt.clone()];
    assert_eq!(
        decoder.greedy_scored(&started, &prompts, &options).unwrap(),
        decoder.greedy_scored(&states, &prompts, &options).unwrap()
    );
    let beams = BeamOptions {
        num_beams: 3,
        length_penalty: 1.0,
    };
    assert_eq!(
        decoder.beam_search(&started, &options, &beams).unwrap(),
        decoder.beam_search(&states, &options, &beams).unwrap()
    );
    let tokens = [50, 51, 54, 59, 3, 9, 60];
    assert_eq!(
        decoder
            .cross_attention_weights(&started, &tokens, &[(1, 2)])
            .unwrap(),
        decoder
            .cross_attention_weights(&states, &tokens, &[(1, 2)])
            .unwrap()
    );
    // The one-layer decoder of the other fixture cannot use this cache.
    let other = WhisperDecoder::load(&g, &model_dir("whisper"), DType::F32).unwrap();
    let plain = tessera::audio::GreedyOptions {
        prompt: vec![1],
        timestamps: None,
        ..options.clone()
    };
    let e = other.greedy(&started, &plain).unwrap_err().to_string();
    assert!(e.contains("not this decoder's"), "{e}");
}
