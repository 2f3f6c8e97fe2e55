//! Whisper with timestamps against transformers (tools/make_whisper_timestamp_fixtures.py): the
//! timestamp rule's masks, the GPU pick against its CPU reference, the split of a window's
//! tokens into segments, the whole-recording log-mel, and transcriptions of a 12 s and a 75 s
//! clip (transformers' sequential algorithm) token for token.

use serde_json::Value;
use tessera::audio::{
    compression_ratio, long_form_features, split_segments, transcribe, BeamOptions, Segment,
    TimestampRules, TranscribeOptions, WhisperDecoder, WhisperEncoder, WhisperGeneration,
    WhisperTokenizer,
};
use tessera::kernels::timestamp::timestamp_pick_cpu;
use tessera::{DType, Tensor};

use crate::common::{f16_or_clear_error, gpu, values};
use crate::models::{model_dir, Reference};

const MODEL: &str = "whisper_timestamps";

fn reference_json() -> Value {
    let text = std::fs::read_to_string(model_dir(MODEL).join("timestamps_reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect()
}

/// The fixture clip: five pitches stepping every 1.5 s under a slow swell (the formula of the
/// fixture script, in f64 rounded to f32).
pub fn clip(seconds: usize) -> Vec<f32> {
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

#[test]
fn timestamp_rules_mask_as_transformers() {
    let generation = WhisperGeneration::load(&model_dir(MODEL)).unwrap();
    let rules = generation.timestamp_rules().unwrap();
    assert_eq!(
        rules,
        TimestampRules {
            no_timestamps: 58,
            eos: 49,
            max_initial_index: Some(50)
        }
    );
    let vocab = 1560;
    let reference = reference_json();
    for case in reference["rule_masks"].as_array().unwrap() {
        let history = ids(&case["history"]);
        let mut bias = vec![0f32; vocab];
        rules.mask(&history, &mut bias);
        let mut want = vec![false; vocab];
        for range in case["masked"].as_array().unwrap() {
            let r = ids(range);
            want[r[0] as usize..r[1] as usize].fill(true);
        }
        let got: Vec<bool> = bias.iter().map(|v| *v == f32::NEG_INFINITY).collect();
        assert_eq!(got, want, "after {history:?}");
    }
}

#[test]
fn timestamp_pick_matches_cpu_reference() {
    let g = gpu();
    for (rows, cols, split) in [
        (1, 1, 0),
        (3, 7, 3),
        (4, 100, 100),
        (5, 1560, 59),
        (2, 51866, 50365),
        (3, 300, 0),
    ] {
        for scale in [0.5f32, 6.0] {
            let logits: Vec<f32> = values(rows * cols, cols as u64 + rows as u64)
                .iter()
                .map(|v| scale * v)
                .collect();
            // Masks of a few kinds: none, text masked, timestamps masked, a whole row masked.
            let mut bias = vec![0f32; rows * cols];
            for (r, row) in bias.chunks_mut(cols).enumerate() {
                match r % 4 {
                    1 => row[..split].fill(f32::NEG_INFINITY),
                    2 => row[split..].fill(f32::NEG_INFINITY),
                    3 if rows > 3 => row.fill(f32::NEG_INFINITY),
                    _ => row
                        .iter_mut()
                        .step_by(3)
                        .for_each(|v| *v = f32::NEG_INFINITY),
                }
            }
            let want = timestamp_pick_cpu(&logits, &bias, cols, split);
            let t = Tensor::from_slice(&g, &logits, &[rows, cols], DType::F32).unwrap();
            let b = Tensor::from_slice(&g, &bias, &[rows, cols], DType::F32).unwrap();
            let check = |got: (Vec<u32>, Vec<f32>), want: &[(u32, f32)], what: &str| {
                let ids: Vec<u32> = want.iter().map(|w| w.0).collect();
                assert_eq!(got.0, ids, "{what}");
                for (r, (&lp, w)) in got.1.iter().zip(want).enumerate() {
                    assert!(
                        (lp - w.1).abs() <= 1e-4 * w.1.abs().max(1.0),
                        "{what} row {r}: log-probability {lp} vs {}",
                        w.1
                    );
                }
            };
            let what = format!("{rows}×{cols} split {split} scale {scale}");
            check(t.timestamp_pick(&b, split).unwrap(), &want, &what);
            if f16_or_clear_error(&g) && cols < 2000 {
                // f16 logits: against the reference on the same rounded values.
                let t16 = Tensor::from_slice(&g, &logits, &[rows, cols], DType::F16).unwrap();
                let rounded = t16.to_vec().unwrap();
                let want16 = timestamp_pick_cpu(&rounded, &bias, cols, split);
                check(t16.timestamp_pick(&b, split).unwrap(), &want16, &what);
            }
        }
    }
    // The decision itself: one timestamp column against many below the best text column,
    // and many timestamps whose summed probability beats a better text column.
    let row = [2.0f32, 0.0, 1.9, 1.9, 1.9];
    let t = Tensor::from_slice(&g, &row, &[1, 5], DType::F32).unwrap();
    let zero = Tensor::from_slice(&g, &[0f32; 5], &[1, 5], DType::F32).unwrap();
    let (pick, logprob) = t.timestamp_pick(&zero, 2).unwrap();
    assert_eq!(pick, [2], "summed probability wins");
    // The text columns masked: 1.9 against three of 1.9.
    assert!(
        (logprob[0] - (1.0f32 / 3.0).ln()).abs() < 1e-5,
        "{logprob:?}"
    );
    let (pick, logprob) = t.timestamp_pick(&zero, 4).unwrap();
    assert_eq!(pick, [0], "one timestamp loses");
    let lse = row.iter().map(|v| v.exp()).sum::<f32>().ln();
    assert!((logprob[0] - (2.0 - lse)).abs() < 1e-5, "{logprob:?}");
    let bad = Tensor::from_slice(&g, &[0f32; 4], &[1, 4], DType::F32).unwrap();
    assert!(t.timestamp_pick(&bad, 2).is_err(), "bias of another shape");
    assert!(t.timestamp_pick(&zero, 6).is_err(), "split past the row");
}

#[test]
fn previous_text_prompt_as_transformers() {
    let case = &reference_json()["previous_case"];
    let history: Vec<Vec<u32>> = case["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(ids)
        .collect();
    let context = TranscribeOptions {
        previous_text: Some(56),
        ..TranscribeOptions::default()
    };
    let prefix = context.prefix(&history, 59, 448);
    assert_eq!(prefix, ids(&case["prefix"]));
    assert_eq!(prefix.len(), 224, "<|startofprev|> and the last 223 tokens");
    // Before any segment: nothing, or the prompt text alone.
    assert!(context.prefix(&[], 59, 448).is_empty());
    let prompted = TranscribeOptions {
        prompt_ids: Some(vec![56, 1, 2]),
        ..TranscribeOptions::default()
    };
    assert_eq!(prompted.prefix(&history, 59, 448), [56, 1, 2]);
}

#[test]
fn compression_ratio_as_transformers() {
    for case in reference_json()["compression_ratios"].as_array().unwrap() {
        let tokens = ids(&case["tokens"]);
        let want = case["ratio"].as_f64().unwrap();
        let got = compression_ratio(&tokens, 1560);
        assert!(
            (got - want).abs() < 1e-12,
            "{} tokens: {got} vs {want}",
            tokens.len()
        );
    }
}

/// Sampling at a temperature (the fallback's later tries): reproducible for a seed, under the
/// timestamp rules; a window that fails a threshold at every temperature keeps the last try.
#[test]
fn sampled_fallback_is_seeded_and_keeps_the_rules() {
    let (encoder, decoder, generation) = load();
    let front = encoder.log_mel(encoder.gpu()).unwrap();
    let (features, n) = long_form_features(&front, &clip(12)).unwrap();
    let prompt = generation
        .timestamp_prompt(Some("en"), "transcribe")
        .unwrap();
    let mut options = generation.greedy_options(prompt, 40);
    options.timestamps = Some(generation.timestamp_rules().unwrap());
    let run = |t: &TranscribeOptions| {
        transcribe(
            &encoder,
            &decoder,
            &features,
            n,
            &options,
            t,
            &mut |_, _, _| {},
        )
        .unwrap()
    };
    let greedy = run(&TranscribeOptions::default());
    // Every decoding is below a log-probability of 0: every window tries every temperature.
    let fallback = TranscribeOptions {
        temperatures: vec![0.0, 0.6, 1.0],
        logprob_threshold: Some(0.0),
        seed: 7,
        ..TranscribeOptions::default()
    };
    let a = run(&fallback);
    assert_eq!(a, run(&fallback), "the same seed, the same segments");
    assert!(
        a.iter().all(|s| s.window.temperature == 1.0),
        "the last try kept"
    );
    assert_ne!(a, greedy, "sampled at 1.0, not the greedy decoding");
    let b = run(&TranscribeOptions {
        seed: 8,
        ..fallback.clone()
    });
    assert_ne!(a, b, "another seed, other draws");
    for segments in [&a, &b] {
        assert!(!segments.is_empty());
        for s in segments.iter() {
            assert!(s.start <= s.end, "{s:?}");
            // Each segment opens with a timestamp.
            assert!(s.tokens.first().is_some_and(|&t| t >= 59), "{s:?}");
        }
        assert!(segments.windows(2).all(|w| w[0].start <= w[1].start));
    }
    // Settings that cannot work are errors.
    let bad = |t: TranscribeOptions| {
        transcribe(
            &encoder,
            &decoder,
            &features,
            n,
            &options,
            &t,
            &mut |_, _, _| {},
        )
        .unwrap_err()
        .to_string()
    };
    let e = bad(TranscribeOptions {
        temperatures: vec![],
        ..TranscribeOptions::default()
    });
    assert!(e.contains("temperatures"), "{e}");
    let e = bad(TranscribeOptions {
        temperatures: vec![0.0, -1.0],
        ..TranscribeOptions::default()
    });
    assert!(e.contains("temperatures"), "{e}");
    let e = bad(TranscribeOptions {
        no_speech_threshold: Some(0.6),
        ..TranscribeOptions::default()
    });
    assert!(e.contains("log-probability threshold"), "{e}");
}

#[test]
fn split_segments_as_transformers() {
    let reference = reference_json();
    for case in reference["split_cases"].as_array().unwrap() {
        let tokens = ids(&case["tokens"]);
        let seek = case["seek"].as_u64().unwrap() as f64;
        let frames = case["frames"].as_u64().unwrap() as usize;
        let (got, advance) = split_segments(&tokens, 59, seek * 0.02 / 2.0, frames);
        let want: Vec<Segment> = case["segments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| Segment {
                start: s["start"].as_f64().unwrap(),
                end: s["end"].as_f64().unwrap(),
                tokens: ids(&s["tokens"]),
                ..Segment::default()
            })
            .collect();
        assert_eq!(got, want, "{tokens:?}");
        assert_eq!(
            advance as u64,
            case["advance"].as_u64().unwrap(),
            "{tokens:?}"
        );
    }
}

fn load() -> (WhisperEncoder, WhisperDecoder, WhisperGeneration) {
    let g = gpu();
    let dir = model_dir(MODEL);
    (
        WhisperEncoder::load(&g, &dir, DType::F32).unwrap(),
        WhisperDecoder::load(&g, &dir, DType::F32).unwrap(),
        WhisperGeneration::load(&dir).unwrap(),
    )
}

#[test]
fn transcribes_with_timestamps_as_transformers() {
    let (encoder, decoder, generation) = load();
    let reference = Reference::file(MODEL, "timestamps_reference.safetensors");
    let json = reference_json();
    let stride = json["feature_stride"].as_u64().unwrap() as usize;
    let front = encoder.log_mel(encoder.gpu()).unwrap();
    let prompt = generation
        .timestamp_prompt(Some("en"), "transcribe")
        .unwrap();
    assert_eq!(prompt, ids(&json["prompt"]));
    let max_new = json["max_new_tokens"].as_u64().unwrap() as usize;
    let mut options = generation.greedy_options(prompt, max_new);
    options.timestamps = Some(generation.timestamp_rules().unwrap());
    // The prompt text's tokens, as the fixture script made them.
    let tokenizer = WhisperTokenizer::load(&model_dir(MODEL)).unwrap();
    let prompt_ids = tokenizer
        .prompt_ids(json["prompt_text"].as_str().unwrap())
        .unwrap();
    assert_eq!(prompt_ids, ids(&json["prompt_ids"]));
    let previous = generation.prev_sot_token();
    assert_eq!(previous, Some(56));
    let with_prompt = Some(prompt_ids.clone());
    let skip = &json["skip_thresholds"];
    let skipping = TranscribeOptions {
        logprob_threshold: skip["logprob_threshold"].as_f64(),
        no_speech_threshold: skip["no_speech_threshold"].as_f64(),
        compression_ratio_threshold: skip["compression_ratio_threshold"].as_f64(),
        ..TranscribeOptions::default()
    };
    let cases = [
        ("short", 12, None, None, None, None),
        ("long", 75, None, None, None, None),
        ("long_beams", 75, Some(4), None, None, None),
        ("long_previous", 75, None, None, previous, None),
        (
            "long_prompt_previous",
            75,
            None,
            with_prompt.clone(),
            previous,
            None,
        ),
        ("short_prompt", 12, None, with_prompt.clone(), None, None),
        ("long_skip", 75, None, None, None, Some(&skipping)),
    ];
    for (case, seconds, beams, prompt_ids, previous_text, thresholds) in cases {
        let frames = if seconds > 30 { seconds * 100 } else { 3000 };
        options.beams = beams.map(|num_beams| BeamOptions {
            num_beams,
            length_penalty: 1.0,
        });
        let context = TranscribeOptions {
            prompt_ids,
            previous_text,
            ..thresholds.cloned().unwrap_or_default()
        };
        let (features, n) = long_form_features(&front, &clip(seconds)).unwrap();
        assert_eq!(n, frames, "{case}");
        // The front end: every `stride`-th frame, normalised against the whole recording.
        if matches!(case, "short" | "long") {
            let (shape, want) = reference.get(&format!("{case}_features"));
            let kept = shape[1];
            let mut err = 0f32;
            for m in 0..80 {
                for j in 0..kept {
                    err = err.max((features[m * n + j * stride] - want[m * kept + j]).abs());
                }
            }
            assert!(err < 2e-3, "{case} features: {err}");
        }

        let mut seen = Vec::new();
        let segments = transcribe(
            &encoder,
            &decoder,
            &features,
            n,
            &options,
            &context,
            &mut |done, all, so_far: &[Segment]| seen.push((done, all, so_far.len())),
        )
        .unwrap();
        let (_, tokens) = reference.ints(&format!("{case}_tokens"));
        let (_, lengths) = reference.ints(&format!("{case}_lengths"));
        let starts = reference.f64s(&format!("{case}_start"));
        let ends = reference.f64s(&format!("{case}_end"));
        assert_eq!(segments.len(), lengths.len(), "{case}: segment count");
        let mut at = 0;
        for (i, s) in segments.iter().enumerate() {
            let len = lengths[i] as usize;
            assert_eq!(s.tokens, tokens[at..at + len], "{case} segment {i}");
            assert!(
                (s.start - starts[i]).abs() < 1e-9,
                "{case} {i}: {}",
                s.start
            );
            assert!((s.end - ends[i]).abs() < 1e-9, "{case} {i}: {}", s.end);
            at += len;
        }
        // Each segment's window: where it started, decoded greedily at temperature 0.
        for s in &segments {
            let w = &s.window;
            assert_eq!(w.temperature, 0.0, "{case}");
            assert!(
                w.seek < n && s.start + 1e-9 >= w.seek as f64 * 0.01,
                "{case}: {s:?}"
            );
            assert!(
                w.avg_logprob < 0.0 && w.compression_ratio > 0.0,
                "{case}: {w:?}"
            );
        }
        if case == "long_skip" {
            // The kept window's figures are those transformers' fallback check saw.
            let judged = &json["skip_judged"][0];
            assert!(!judged["skip"].as_bool().unwrap());
            for s in &segments {
                let w = &s.window;
                assert_eq!(w.seek, 0);
                let lp = judged["avg_logprob"].as_f64().unwrap();
                assert!((w.avg_logprob - lp).abs() < 1e-4, "{w:?} vs {lp}");
                let cr = judged["compression_ratio"].as_f64().unwrap();
                assert!((w.compression_ratio - cr).abs() < 1e-12, "{w:?} vs {cr}");
                let ns = judged["no_speech_prob"].as_f64().unwrap();
                let got = f64::from(w.no_speech_prob.unwrap());
                assert!((got - ns).abs() < 1e-4 * ns, "{got} vs {ns}");
            }
        }
        // Progress: from 0, never backwards, ending with every frame done.
        assert_eq!(seen.first(), Some(&(0, n, 0)));
        assert_eq!(seen.last(), Some(&(n, n, segments.len())));
        assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "{case}: {seen:?}");
        if case == "long" {
            let texts: Vec<String> = segments
                .iter()
                .map(|s| tokenizer.decode(&s.tokens).unwrap())
                .collect();
            let want: Vec<String> = json["long_texts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_string())
                .collect();
            assert_eq!(texts, want);
        }
    }
}

#[test]
fn text_decoding_greedy_and_beam_search_as_transformers() {
    let (encoder, decoder, generation) = load();
    let reference = Reference::file(MODEL, "timestamps_reference.safetensors");
    let front = encoder.log_mel(encoder.gpu()).unwrap();
    let states = encoder
        .forward(&front.whisper_features(&[&clip(12)]).unwrap())
        .unwrap();
    let prompt = generation.prompt(Some("en"), "transcribe").unwrap();
    let max_new = reference_json()["max_new_tokens"].as_u64().unwrap() as usize;
    let mut options = generation.greedy_options(prompt.clone(), max_new);
    // The fixture suppresses the timestamps too (see its script).
    options.suppress_tokens.extend(59..1560);
    for (case, beams) in [
        ("text_greedy", None),
        (
            "text_beams4",
            Some(BeamOptions {
                num_beams: 4,
                length_penalty: 1.0,
            }),
        ),
        (
            "text_beams2",
            Some(BeamOptions {
                num_beams: 2,
                length_penalty: 0.5,
            }),
        ),
    ] {
        options.beams = beams;
        let mut got = decoder.generate(&states, &options).unwrap().swap_remove(0);
        assert_eq!(got[..prompt.len()], prompt);
        got.drain(..prompt.len());
        if got.last() == Some(&49) {
            got.pop();
        }
        assert_eq!(got, reference.ints(case).1, "{case}");
    }
    // Bad settings are errors.
    options.beams = Some(BeamOptions {
        num_beams: 1,
        length_penalty: 1.0,
    });
    assert!(decoder.generate(&states, &options).is_err(), "one beam");
}

#[test]
fn timestamp_input_is_checked() {
    let (encoder, decoder, generation) = load();
    let prompt = generation
        .timestamp_prompt(Some("en"), "transcribe")
        .unwrap();
    let text_only = generation.greedy_options(prompt.clone(), 4);
    let features = vec![0f32; 80 * 3000];
    let e = transcribe(
        &encoder,
        &decoder,
        &features,
        3000,
        &text_only,
        &TranscribeOptions::default(),
        &mut |_, _, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("timestamp rules"), "{e}");
    let mut options = text_only.clone();
    options.timestamps = Some(generation.timestamp_rules().unwrap());
    let e = transcribe(
        &encoder,
        &decoder,
        &features,
        2999,
        &options,
        &TranscribeOptions::default(),
        &mut |_, _, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("80 mel bands of 2999 frames"), "{e}");
    // Rules whose timestamps fall outside the vocabulary.
    let mut outside = options.clone();
    outside.timestamps = Some(TimestampRules {
        no_timestamps: 1559,
        ..options.timestamps.unwrap()
    });
    let e = transcribe(
        &encoder,
        &decoder,
        &features,
        3000,
        &outside,
        &TranscribeOptions::default(),
        &mut |_, _, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("inside the vocabulary"), "{e}");
    // A checkpoint without <|notimestamps|> cannot decode timestamps.
    let plain = WhisperGeneration::load(&model_dir("whisper")).unwrap();
    assert!(plain.timestamp_rules().is_err());
    assert!(plain.timestamp_prompt(None, "transcribe").is_err());
    // Text-only decoding of the same checkpoint keeps <|notimestamps|> in its prompt.
    assert_eq!(
        generation.prompt(Some("en"), "transcribe").unwrap(),
        [50, 51, 54, 58]
    );
}

#[test]
fn text_leaves_timestamps_out_even_when_not_special() {
    // The fixture's tokenizer marks timestamps special; a copy that does not.
    let dir = std::env::temp_dir().join(format!("tessera-ts-tok-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = std::fs::read_to_string(model_dir(MODEL).join("tokenizer.json")).unwrap();
    let mut json: Value = serde_json::from_str(&text).unwrap();
    let mut changed = 0;
    for t in json["added_tokens"].as_array_mut().unwrap() {
        if t["content"].as_str().unwrap().starts_with("<|0.") {
            t["special"] = Value::Bool(false);
            changed += 1;
        }
    }
    assert!(changed >= 50);
    std::fs::write(dir.join("tokenizer.json"), json.to_string()).unwrap();
    let plain = WhisperTokenizer::load(&dir).unwrap();
    let special = WhisperTokenizer::load(&model_dir(MODEL)).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    // <|0.20|> te ni <|0.96|>: the words only, from both.
    let ids = [69, 0, 1, 107];
    let words = special.decode(&[0, 1]).unwrap();
    assert_eq!(words.split_whitespace().count(), 2, "{words}");
    assert_eq!(special.decode(&ids).unwrap(), words);
    assert_eq!(plain.decode(&ids).unwrap(), words);
    // Prompt texts: <|startofprev|> first; special tokens refused.
    assert_eq!(special.prompt_ids(" ta  ke ").unwrap(), [56, 0, 6]);
    let e = special.prompt_ids("ta <|en|> ke").unwrap_err().to_string();
    assert!(e.contains("<|en|>"), "{e}");
}

/// A token table past the adapter's binding (Whisper large's 51866 × 1280 in f32 against
/// 128 MiB): lookups from a host copy, the tied output projection in blocks of rows. Here an
/// adapter capped at 192 KiB and this checkpoint's 195 KiB table; the logits and decodings
/// must be those of the same decoder in one piece.
#[test]
fn decoder_with_its_token_table_past_a_binding() {
    let g = gpu();
    let capped = std::sync::Arc::new(
        tessera::Gpu::new(&tessera::GpuOptions {
            max_binding: Some(192 * 1024),
            ..tessera::GpuOptions::from_env().unwrap()
        })
        .unwrap(),
    );
    assert_eq!(
        capped.limits().max_storage_buffer_binding_size,
        192 * 1024,
        "the cap is the adapter's limit now"
    );
    let dir = model_dir(MODEL);
    let whole = WhisperDecoder::load(&g, &dir, DType::F32).unwrap();
    let split = WhisperDecoder::load(&capped, &dir, DType::F32).unwrap();
    // Encoder states of 700 positions (1500 would pass the cap in the cross-attention).
    let states = values(700 * 32, 5);
    let on = |gpu: &std::sync::Arc<tessera::Gpu>| {
        Tensor::from_slice(gpu, &states, &[1, 700, 32], DType::F32).unwrap()
    };
    let ids = vec![vec![50, 51, 54, 60, 3, 4, 1559]];
    let logits = |d: &WhisperDecoder, s: &Tensor| {
        let mut cache = d.start(s).unwrap();
        d.forward(&mut cache, &ids, false)
            .unwrap()
            .to_vec()
            .unwrap()
    };
    let (a, b) = (logits(&whole, &on(&g)), logits(&split, &on(&capped)));
    assert_eq!(a.len(), 7 * 1560);
    let e = crate::common::rel_error(&b, &a);
    assert!(e < 1e-5, "{e}");
    let generation = WhisperGeneration::load(&dir).unwrap();
    let mut options = generation.greedy_options(
        generation
            .timestamp_prompt(Some("en"), "transcribe")
            .unwrap(),
        24,
    );
    options.timestamps = Some(generation.timestamp_rules().unwrap());
    let want = whole.greedy(&on(&g), &options).unwrap();
    assert_eq!(split.greedy(&on(&capped), &options).unwrap(), want);
    assert!(want[0].len() > 10, "{want:?}");
}
