//! The `tessera` binary as users run it: output formats, exit codes, one-line errors.

use std::process::{Command, Output};

fn tessera(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run tessera")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The line tessera wrote itself (drivers may add their own noise to stderr).
fn error_line(o: &Output) -> String {
    stderr(o)
        .lines()
        .find(|l| l.starts_with("error: ") && !l.contains("XDG_RUNTIME_DIR"))
        .unwrap_or_else(|| panic!("no error line in stderr: {}", stderr(o)))
        .to_string()
}

#[test]
fn info_json_names_the_adapter() {
    let o = tessera(&["info", "--json"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert!(!v["adapter"].as_str().unwrap().is_empty());
    assert!(
        v["limits"]["max_storage_buffer_binding_size"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(v["features"].is_array());
}

#[test]
fn bench_matmul_json_has_the_documented_keys() {
    let o = tessera(
        &["bench", "matmul", "--json", "--shapes", "33x17x9,1x64x32"],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for (row, (m, n, k)) in rows.iter().zip([(33, 17, 9), (1, 64, 32)]) {
        let keys: Vec<&str> = row
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        for key in ["kernel", "m", "n", "k", "dtype", "median_ms", "gflops"] {
            assert!(keys.contains(&key), "missing {key} in {row}");
        }
        assert_eq!(row["kernel"], "matmul");
        assert_eq!(
            (row["m"].as_u64(), row["n"].as_u64(), row["k"].as_u64()),
            (Some(m), Some(n), Some(k))
        );
        assert_eq!(row["dtype"], "f32");
        assert!(row["median_ms"].as_f64().unwrap() > 0.0);
        assert!(row["gflops"].as_f64().unwrap() > 0.0);
    }
}

/// `tessera bench compare` of the compiled-in shaders against `dir` on one shape, which must
/// fail: its one-line error.
fn compare_fails(dir: &std::path::Path, shape: &str) -> String {
    let shaders = format!("builtin,{}", dir.display());
    let o = tessera(
        &["bench", "compare", "--shaders", &shaders, "--shapes", shape],
        &[],
    );
    assert!(!o.status.success(), "{}", stdout(&o));
    error_line(&o)
}

#[test]
fn bench_compare_alternates_two_shader_folders() {
    let repo_shaders = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shaders");
    let o = tessera(
        &[
            "bench",
            "compare",
            "--shaders",
            &format!("builtin,{repo_shaders}"),
            "--shapes",
            "40x24x16",
            "--rounds",
            "3",
            "--json",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row["shaders"][0], "builtin");
    assert_eq!(row["shaders"][1], repo_shaders);
    assert_eq!(
        (row["m"].as_u64(), row["n"].as_u64(), row["k"].as_u64()),
        (Some(40), Some(24), Some(16))
    );
    for i in 0..2 {
        assert!(row["median_ms"][i].as_f64().unwrap() > 0.0, "{row}");
    }
    let (q1, r, q3) = (
        row["ratio_q1"].as_f64().unwrap(),
        row["ratio"].as_f64().unwrap(),
        row["ratio_q3"].as_f64().unwrap(),
    );
    assert!(0.0 < q1 && q1 <= r && r <= q3 && q3.is_finite(), "{row}");
    // The same kernels from the two folders give the same product.
    let diff = row["max_rel_diff"].as_f64().unwrap();
    assert!((0.0..=1e-4).contains(&diff), "{row}");

    // A folder whose epilogue is off by one is refused before anything is timed.
    let broken =
        std::env::temp_dir().join(format!("tessera-cli-{}-broken-shaders", std::process::id()));
    std::fs::create_dir_all(&broken).unwrap();
    for entry in std::fs::read_dir(repo_shaders).unwrap() {
        let path = entry.unwrap().path();
        let mut text = std::fs::read_to_string(&path).unwrap();
        if path.ends_with("matmul_epilogue.wgsl") {
            let line = "let pre = p.alpha * acc + b;";
            assert!(
                text.contains(line),
                "the epilogue changed: update this test"
            );
            text = text.replace(line, "let pre = p.alpha * acc + b + 1.0;");
        }
        std::fs::write(broken.join(path.file_name().unwrap()), text).unwrap();
    }
    let line = compare_fails(&broken, "40x24x16");
    assert!(
        line.contains("differs") && line.contains("40x24x16"),
        "{line}"
    );
    std::fs::remove_dir_all(&broken).ok();

    // A folder without the shader files is an error naming the file, not a fallback to the
    // compiled-in copies.
    let empty = std::env::temp_dir().join(format!("tessera-cli-{}-no-shaders", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let line = compare_fails(&empty, "8x8x8");
    assert!(
        line.contains("cannot read") && line.contains(&*empty.to_string_lossy()),
        "{line}"
    );
    std::fs::remove_dir(&empty).ok();
    let o = tessera(&["bench", "compare", "--shaders", "builtin"], &[]);
    assert!(!o.status.success());
    assert!(error_line(&o).contains("two folders"));
}

#[test]
fn bench_matmul_table_in_f16() {
    let info = tessera(&["info", "--json"], &[]);
    let info: serde_json::Value = serde_json::from_str(stdout(&info).trim()).unwrap();
    let has_f16 = info["features"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f == "SHADER_F16");
    let o = tessera(
        &["bench", "matmul", "--dtype", "f16", "--shapes", "16x16x16"],
        &[],
    );
    if has_f16 {
        assert!(o.status.success(), "{}", stderr(&o));
        let out = stdout(&o);
        assert!(out.contains("GFLOP/s") && out.contains("f16"), "{out}");
    } else {
        assert!(!o.status.success());
        assert!(error_line(&o).contains("SHADER_F16"));
    }
}

#[test]
fn bad_shape_is_a_one_line_error() {
    let o = tessera(&["bench", "matmul", "--shapes", "12x0x3"], &[]);
    assert!(!o.status.success());
    let line = error_line(&o);
    assert!(line.contains("MxNxK"), "{line}");
    let o = tessera(&["bench", "matmul", "--shapes", "axbxc"], &[]);
    assert!(!o.status.success());
    assert!(error_line(&o).contains("axbxc"));
}

#[test]
fn unknown_backend_and_adapter_are_clear_errors() {
    let o = tessera(&["info"], &[("TESSERA_BACKEND", "cuda")]);
    assert!(!o.status.success());
    assert!(error_line(&o).contains("vulkan, metal, dx12 or gl"));
    let o = tessera(&["info"], &[("TESSERA_ADAPTER", "no-such-gpu")]);
    assert!(!o.status.success());
    let line = error_line(&o);
    assert!(
        line.contains("no-such-gpu") && line.contains("apt-get install mesa-vulkan-drivers"),
        "{line}"
    );
}

#[test]
fn gl_backend_runs_the_bench() {
    let o = tessera(
        &["bench", "matmul", "--json", "--shapes", "20x30x40"],
        &[("TESSERA_BACKEND", "gl")],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v[0]["m"], 20);
}

#[test]
fn bench_attention_json_compares_fused_and_unfused() {
    let o = tessera(
        &["bench", "attention", "--json", "--shapes", "2x3x40x32"],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let rows = v.as_array().unwrap();
    let paths: Vec<&str> = rows.iter().map(|r| r["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["fused", "unfused"]);
    for row in rows {
        assert_eq!(row["kernel"], "attention");
        assert_eq!(
            (
                row["b"].as_u64(),
                row["h"].as_u64(),
                row["s"].as_u64(),
                row["d"].as_u64()
            ),
            (Some(2), Some(3), Some(40), Some(32))
        );
        assert!(row["median_ms"].as_f64().unwrap() > 0.0);
        assert!(row["gflops"].as_f64().unwrap() > 0.0);
        assert!(row["bytes"].as_u64().unwrap() > 0);
    }
    // The unfused path holds the 40x40 scores per head; the fused one does not.
    assert!(rows[1]["bytes"].as_u64() > rows[0]["bytes"].as_u64());
    let o = tessera(&["bench", "attention", "--shapes", "2x3x40"], &[]);
    assert!(!o.status.success());
    assert!(error_line(&o).contains("BxHxSxD"));
}

const AUDIO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/audio");

#[test]
fn audio_mel_json_and_png() {
    let dir = std::env::temp_dir().join(format!("tessera-cli-mel-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let png = dir.join("mel.png");
    let o = tessera(
        &[
            "audio",
            "mel",
            "--json",
            "--png",
            png.to_str().unwrap(),
            &format!("{AUDIO}/chirp44k_stereo.wav"),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["n_mels"], 80);
    assert_eq!(v["n_frames"], 3000);
    let mel = v["mel"].as_array().unwrap();
    assert_eq!(mel.len(), 80);
    assert!(mel.iter().all(|row| row.as_array().unwrap().len() == 3000));
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let o = tessera(
        &[
            "audio",
            "mel",
            "--n-mels",
            "128",
            "--json",
            &format!("{AUDIO}/tone.flac"),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["mel"].as_array().unwrap().len(), 128);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn audio_mel_errors_name_the_cause() {
    let o = tessera(&["audio", "mel", "/nonexistent/talk.wav"], &[]);
    assert!(!o.status.success());
    assert!(error_line(&o).contains("/nonexistent/talk.wav"));
    let o = tessera(
        &[
            "audio",
            "mel",
            "--n-mels",
            "64",
            &format!("{AUDIO}/tone.flac"),
        ],
        &[],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("use 80 or 128"), "{}", stderr(&o));
}

#[test]
fn bench_mel_json_has_the_documented_keys() {
    let o = tessera(&["bench", "mel", "--json", "--seconds", "1"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for row in rows {
        assert_eq!(row["kernel"], "mel");
        assert_eq!(row["seconds_of_audio"], 1.0);
        assert!(row["median_ms"].as_f64().unwrap() > 0.0);
        assert!(row["realtime_factor"].as_f64().unwrap() > 0.0);
    }
}

fn fixture(path: &str) -> String {
    format!(
        "{}/../../tests/fixtures/models/{path}",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// A reference tensor `(shape, values)` of a fixture model folder.
fn reference(model: &str, name: &str) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(fixture(&format!("{model}/reference.safetensors"))).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    let v = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    (t.shape().to_vec(), v)
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .flat_map(|x| match x.as_array() {
            Some(row) => row.iter().map(|y| y.as_f64().unwrap() as f32).collect(),
            None => vec![x.as_f64().unwrap() as f32],
        })
        .collect()
}

fn assert_close(name: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    let scale = want.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    let err = got
        .iter()
        .zip(want)
        .fold(0f32, |m, (g, w)| m.max((g - w).abs()))
        / scale;
    assert!(err <= tol, "{name}: relative error {err} > {tol}");
}

#[test]
fn vit_classify_json_matches_transformers() {
    let images = [fixture("images/gradient.png"), fixture("images/noise.png")];
    let o = tessera(
        &[
            "vit",
            "classify",
            "--model",
            &fixture("vit"),
            "--top-k",
            "3",
            "--json",
            &images[0],
            &images[1],
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    let (_, logits) = reference("vit", "logits");
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["image"], images[i].as_str());
        let got = floats(&r["logits"]);
        assert_close("logits", &got, &logits[i * 5..(i + 1) * 5], 1e-3);
        let top = r["top"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        let best = (0..5).max_by(|&a, &b| got[a].total_cmp(&got[b])).unwrap();
        assert_eq!(top[0]["index"], best);
        assert!(top[0]["label"].as_str().is_some());
        assert!(top[0]["prob"].as_f64().unwrap() >= top[1]["prob"].as_f64().unwrap());
    }
}

fn clip_texts() -> Vec<String> {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("clip/texts.json")).unwrap())
            .unwrap();
    serde_json::from_value(v["texts"].clone()).unwrap()
}

#[test]
fn clip_embed_json_matches_transformers() {
    let texts = clip_texts();
    let o = tessera(
        &[
            "clip",
            "embed",
            "--model",
            &fixture("clip"),
            "--json",
            "--image",
            &fixture("images/gradient.png"),
            "--text",
            &texts[0],
            "--image",
            &fixture("images/noise.png"),
            "--text",
            &texts[2],
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let (_, image) = reference("clip", "image_embeds");
    let (_, text) = reference("clip", "text_embeds");
    assert_close(
        "image_embeds",
        &floats(&v["image_embeds"]),
        &image[..32],
        1e-3,
    );
    let want_text: Vec<f32> = [&text[..16], &text[32..48]].concat();
    assert_close("text_embeds", &floats(&v["text_embeds"]), &want_text, 1e-3);
}

#[test]
fn clip_rank_json_is_the_softmax_of_transformers_logits() {
    let texts = clip_texts();
    let o = tessera(
        &[
            "clip",
            "rank",
            "--model",
            &fixture("clip"),
            "--json",
            "--image",
            &fixture("images/noise.png"),
            "--text",
            &texts[0],
            "--text",
            &texts[1],
            "--text",
            &texts[3],
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let (_, logits) = reference("clip", "logits_per_image");
    let row: Vec<f32> = [0, 1, 3].iter().map(|&j| logits[6 + j]).collect();
    let max = row.iter().fold(f32::MIN, |m, &x| m.max(x));
    let sum: f32 = row.iter().map(|x| (x - max).exp()).sum();
    let want: Vec<f32> = row.iter().map(|x| (x - max).exp() / sum).collect();
    assert_close("probs", &floats(&v["probs"]), &want, 1e-3);
    // The table lists the most likely text first.
    let o = tessera(
        &[
            "clip",
            "rank",
            "--model",
            &fixture("clip"),
            "--image",
            &fixture("images/noise.png"),
            "--text",
            &texts[0],
            "--text",
            &texts[1],
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let best = if want[0] >= want[1] {
        &texts[0]
    } else {
        &texts[1]
    };
    let out = stdout(&o);
    assert!(
        out.lines().nth(1).unwrap().ends_with(best.as_str()),
        "{out}"
    );
}

#[test]
fn audio_encode_json_matches_transformers() {
    let o = tessera(
        &[
            "audio",
            "encode",
            "--model",
            &fixture("whisper"),
            "--json",
            &fixture("images/speech.wav"),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["shape"], serde_json::json!([1500, 32]));
    let (_, want) = reference("whisper", "last_hidden_state");
    // Through our log-mel, which is within 2e-3 of the feature extractor's.
    assert_close(
        "last_hidden_state",
        &floats(&v["last_hidden_state"]),
        &want,
        1e-2,
    );
}

#[test]
fn audio_transcribe_prints_the_library_greedy_tokens_and_their_text() {
    use std::path::Path;
    use tessera::audio::{
        load_16k, windows, WhisperDecoder, WhisperEncoder, WhisperGeneration, WhisperTokenizer,
    };
    let (model, audio) = (fixture("whisper"), fixture("images/speech.wav"));
    let o = tessera(
        &["audio", "transcribe", "--model", &model, "--json", &audio],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let windows_out = v["windows"].as_array().unwrap();
    assert_eq!(windows_out.len(), 1);
    let tokens: Vec<u32> = windows_out[0]["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect();

    // The same steps through the library (which tests/all/models.rs checks against
    // transformers): the CLI prints the tokens after the prompt, without the end token.
    let dir = Path::new(&model);
    let gpu = tessera::Gpu::shared().unwrap();
    let encoder = WhisperEncoder::load(&gpu, dir, tessera::DType::F32).unwrap();
    let decoder = WhisperDecoder::load(&gpu, dir, tessera::DType::F32).unwrap();
    let generation = WhisperGeneration::load(dir).unwrap();
    let samples = load_16k(Path::new(&audio)).unwrap();
    let window = windows(&samples).swap_remove(0);
    let features = encoder
        .log_mel(&gpu)
        .unwrap()
        .whisper_features(&[&window])
        .unwrap();
    let states = encoder.forward(&features).unwrap();
    let prompt = generation.prompt(None, "transcribe").unwrap();
    let options = generation.greedy_options(prompt.clone(), 224);
    let mut want = decoder.greedy(&states, &options).unwrap().swap_remove(0);
    want.drain(..prompt.len());
    if want.last().copied() == generation.eos_token_id {
        want.pop();
    }
    assert!(!want.is_empty());
    assert_eq!(tokens, want);
    let text = WhisperTokenizer::load(dir).unwrap().decode(&want).unwrap();
    assert_eq!(windows_out[0]["text"], text);
    assert!(!text.is_empty());

    // Five windows of the same audio (decoded as a batch of four and one of one) give the
    // same tokens, at 30 s steps.
    let wav = std::fs::read(&audio).unwrap();
    let data = wav.windows(4).position(|w| w == b"data").unwrap() + 8;
    assert_eq!(&wav[20..24], &[1, 0, 1, 0], "16-bit PCM mono");
    let mut pcm = wav[data..].to_vec();
    pcm.resize(30 * 16_000 * 2, 0);
    let pcm = pcm.repeat(5);
    let mut long = wav[..data - 8].to_vec();
    let riff = (long.len() + pcm.len()) as u32;
    long[4..8].copy_from_slice(&riff.to_le_bytes());
    long.extend_from_slice(b"data");
    long.extend_from_slice(&(pcm.len() as u32).to_le_bytes());
    long.extend_from_slice(&pcm);
    let dir = std::env::temp_dir().join(format!("tessera-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let long_path = dir.join("long.wav");
    std::fs::write(&long_path, long).unwrap();
    let o = tessera(
        &[
            "audio",
            "transcribe",
            "--model",
            &model,
            "--json",
            long_path.to_str().unwrap(),
        ],
        &[],
    );
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let windows_out = v["windows"].as_array().unwrap();
    assert_eq!(windows_out.len(), 5);
    for (i, w) in windows_out.iter().enumerate() {
        assert_eq!(w["start_s"], serde_json::json!(30.0 * i as f64));
        assert_eq!(w["tokens"], serde_json::json!(want));
    }

    // Plain output is the text; a budget of 3 tokens gives 3.
    let o = tessera(
        &[
            "audio",
            "transcribe",
            "--model",
            &model,
            "--max-tokens",
            "3",
            &audio,
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let words: Vec<&str> = text.split_whitespace().take(3).collect();
    assert_eq!(stdout(&o).trim(), words.join(" "));

    // An English-only checkpoint refuses a language, in one line.
    let o = tessera(
        &[
            "audio",
            "transcribe",
            "--model",
            &model,
            "--language",
            "de",
            &audio,
        ],
        &[],
    );
    assert!(!o.status.success());
    assert!(error_line(&o).contains("English-only"), "{}", stderr(&o));
}

/// A mono 16 kHz WAV of f32 samples.
fn f32_wav(samples: &[f32]) -> Vec<u8> {
    let data = (samples.len() * 4) as u32;
    let mut wav = Vec::with_capacity(44 + data as usize);
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    // IEEE float, mono, 16 kHz, 64000 bytes/s, 4-byte frames, 32 bits.
    for v in [3u16, 1] {
        wav.extend_from_slice(&v.to_le_bytes());
    }
    for v in [16_000u32, 64_000] {
        wav.extend_from_slice(&v.to_le_bytes());
    }
    for v in [4u16, 32] {
        wav.extend_from_slice(&v.to_le_bytes());
    }
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data.to_le_bytes());
    for s in samples {
        wav.extend_from_slice(&s.to_le_bytes());
    }
    wav
}

#[test]
fn audio_transcribe_timestamps_prints_the_library_segments_and_subtitles() {
    use std::path::Path;
    use tessera::audio::{
        load_16k, long_form_features, transcribe, GreedyOptions, TranscribeOptions, WhisperDecoder,
        WhisperEncoder, WhisperGeneration,
    };
    let model = fixture("whisper_timestamps");
    // 45 s of a stepped tone: two windows.
    let samples: Vec<f32> = (0..45 * 16_000)
        .map(|i| {
            let t = i as f64 / 16000.0;
            let f = 220.0 * (1 + (i / 24000) % 5) as f64;
            (0.3 * (2.0 * std::f64::consts::PI * f * t).sin()) as f32
        })
        .collect();
    let dir = std::env::temp_dir().join(format!("tessera-cli-ts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let audio = dir.join("tone.wav");
    std::fs::write(&audio, f32_wav(&samples)).unwrap();
    let (srt, vtt) = (dir.join("out.srt"), dir.join("out.vtt"));
    let audio_arg = audio.to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "audio",
            "transcribe",
            "--model",
            &model,
            "--max-tokens",
            "30",
        ];
        args.extend_from_slice(extra);
        args.push(audio_arg);
        tessera(&args, &[])
    };
    let o = run(&[
        "--timestamps",
        "--json",
        "--subtitles",
        srt.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();

    // The library on the same file (tests/all/timestamps.rs checks it against transformers);
    // the language is detected once from the first window.
    let gpu = tessera::Gpu::shared().unwrap();
    let dir_m = Path::new(&model);
    let encoder = WhisperEncoder::load(&gpu, dir_m, tessera::DType::F32).unwrap();
    let decoder = WhisperDecoder::load(&gpu, dir_m, tessera::DType::F32).unwrap();
    let generation = WhisperGeneration::load(dir_m).unwrap();
    let language = v["language"].as_str().unwrap();
    assert!(["en", "de"].contains(&language), "{language}");
    let prompt = generation
        .timestamp_prompt(Some(language), "transcribe")
        .unwrap();
    let mut options = generation.greedy_options(prompt, 30);
    options.timestamps = Some(generation.timestamp_rules().unwrap());
    let front = encoder.log_mel(&gpu).unwrap();
    let pcm = load_16k(&audio).unwrap();
    assert_eq!(pcm, samples, "f32 WAV read back exactly");
    let (features, frames) = long_form_features(&front, &pcm).unwrap();
    let want = transcribe(
        &encoder,
        &decoder,
        &features,
        frames,
        &options,
        &TranscribeOptions::default(),
        &mut |_, _, _| {},
    )
    .unwrap();
    let got = v["segments"].as_array().unwrap();
    assert_eq!(got.len(), want.len());
    assert!(want.len() >= 2, "{want:?}");
    for (g, w) in got.iter().zip(&want) {
        // JSON numbers parse back to within an ulp.
        assert!((g["start"].as_f64().unwrap() - w.start).abs() < 1e-9);
        assert!((g["end"].as_f64().unwrap() - w.end).abs() < 1e-9);
        assert_eq!(g["tokens"], serde_json::json!(w.tokens));
        let text = g["text"].as_str().unwrap();
        assert!(
            !text.contains("<|"),
            "timestamps left out of the text: {text}"
        );
    }

    // SubRip: numbered cues, comma milliseconds, ending with the recording.
    let subs = std::fs::read_to_string(&srt).unwrap();
    let cues: Vec<&str> = subs.trim_end().split("\n\n").collect();
    let inside = want.iter().filter(|s| s.start < 45.0).count();
    assert_eq!(cues.len(), inside, "{subs}");
    let first: Vec<&str> = cues[0].lines().collect();
    assert_eq!(first[0], "1");
    let ms = |s: f64| (s.min(45.0) * 1000.0).round() as u64;
    let stamp = |ms: u64| {
        format!(
            "{:02}:{:02}:{:02},{:03}",
            ms / 3_600_000,
            ms / 60_000 % 60,
            ms / 1000 % 60,
            ms % 1000
        )
    };
    assert_eq!(
        first[1],
        format!(
            "{} --> {}",
            stamp(ms(want[0].start)),
            stamp(ms(want[0].end))
        )
    );
    let last: Vec<&str> = cues[inside - 1].lines().collect();
    assert!(
        last[1].ends_with(&stamp(ms(want[inside - 1].end))),
        "{subs}"
    );

    // WebVTT: a header and dot milliseconds; plain output one line per segment.
    let o = run(&["--language", language, "--subtitles", vtt.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let subs = std::fs::read_to_string(&vtt).unwrap();
    assert!(subs.starts_with("WEBVTT\n\n"), "{subs}");
    assert!(
        subs.contains(&stamp(ms(want[0].end)).replace(',', ".")),
        "{subs}"
    );
    let lines: Vec<String> = stdout(&o).lines().map(String::from).collect();
    assert_eq!(lines.len(), want.len());
    assert!(
        lines[0].starts_with(&format!("[{:.2} --> {:.2}]", want[0].start, want[0].end)),
        "{}",
        lines[0]
    );

    // The command's segments are the library's for the same settings: beam search, a prompt
    // text with each window prompted by the text before it, the temperature fallback.
    let same_as_library = |flags: &[&str], options: &GreedyOptions, t: &TranscribeOptions| {
        let mut all = vec!["--timestamps", "--json", "--language", language];
        all.extend_from_slice(flags);
        let o = run(&all);
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
        let want = transcribe(
            &encoder,
            &decoder,
            &features,
            frames,
            options,
            t,
            &mut |_, _, _| {},
        )
        .unwrap();
        let got = v["segments"].as_array().unwrap();
        assert_eq!(got.len(), want.len(), "{flags:?}");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g["tokens"], serde_json::json!(w.tokens), "{flags:?}");
            // How the segment's window was decoded, as openai-whisper reports it.
            assert_eq!(g["seek"], serde_json::json!(w.window.seek));
            assert_eq!(g["temperature"], serde_json::json!(w.window.temperature));
            let lp = g["avg_logprob"].as_f64().unwrap();
            assert!((lp - w.window.avg_logprob).abs() < 1e-9, "{lp}");
            assert!(g["compression_ratio"].as_f64().unwrap() > 0.0);
            assert_eq!(g["no_speech_prob"], serde_json::Value::Null);
        }
    };
    let beams = GreedyOptions {
        beams: Some(tessera::audio::BeamOptions {
            num_beams: 3,
            length_penalty: 1.0,
        }),
        ..options.clone()
    };
    same_as_library(&["--beams", "3"], &beams, &TranscribeOptions::default());
    let o = run(&["--beams", "0"]);
    assert!(!o.status.success(), "no beams");

    let tokenizer = tessera::audio::WhisperTokenizer::load(dir_m).unwrap();
    let context = TranscribeOptions {
        prompt_ids: Some(tokenizer.prompt_ids("ta ke tax").unwrap()),
        previous_text: generation.prev_sot_token(),
        ..TranscribeOptions::default()
    };
    same_as_library(
        &["--condition-on-previous", "--prompt", "ta ke tax"],
        &options,
        &context,
    );
    // Fixed windows with the prompt text before each.
    let o = run(&["--json", "--language", language, "--prompt", "ta ke tax"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let first = tessera::audio::windows(&pcm).swap_remove(0);
    let states = encoder
        .forward(&front.whisper_features(&[&first]).unwrap())
        .unwrap();
    let init = generation.prompt(Some(language), "transcribe").unwrap();
    let prefix = tokenizer.prompt_ids("ta ke tax").unwrap();
    let text_options = generation.greedy_options([&prefix[..], &init[..]].concat(), 30);
    let mut want = decoder
        .greedy(&states, &text_options)
        .unwrap()
        .swap_remove(0);
    want.drain(..prefix.len() + init.len());
    if want.last().copied() == generation.eos_token_id {
        want.pop();
    }
    assert_eq!(v["windows"][0]["tokens"], serde_json::json!(want));
    let fallback = TranscribeOptions {
        temperatures: vec![0.0, 0.6],
        logprob_threshold: Some(-0.5),
        compression_ratio_threshold: Some(2.4),
        seed: 5,
        ..TranscribeOptions::default()
    };
    same_as_library(
        &[
            "--temperatures",
            "0,0.6",
            "--logprob-threshold",
            "-0.5",
            "--compression-ratio-threshold",
            "2.4",
            "--seed",
            "5",
        ],
        &options,
        &fallback,
    );
    // Word timestamps: each segment's token times and words are the library's.
    let o = run(&["--word-timestamps", "--json", "--language", language]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let aligned = TranscribeOptions {
        alignment: Some(generation.alignment(decoder.config(), Some(pcm.len().div_ceil(160)))),
        ..TranscribeOptions::default()
    };
    let want = transcribe(
        &encoder,
        &decoder,
        &features,
        frames,
        &options,
        &aligned,
        &mut |_, _, _| {},
    )
    .unwrap();
    let got = v["segments"].as_array().unwrap();
    assert_eq!(got.len(), want.len());
    let mut words_seen = 0;
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g["tokens"], serde_json::json!(w.tokens));
        // JSON numbers parse back to within an ulp.
        let close = |j: &serde_json::Value, x: f64| (j.as_f64().unwrap() - x).abs() < 1e-9;
        let times = g["token_times"].as_array().unwrap();
        assert_eq!(times.len(), w.token_times.len());
        assert!(times.iter().zip(&w.token_times).all(|(j, &x)| close(j, x)));
        let words = tokenizer.segment_words(w, Some(language)).unwrap();
        let json_words = g["words"].as_array().unwrap();
        assert_eq!(json_words.len(), words.len());
        for (j, word) in json_words.iter().zip(&words) {
            assert_eq!(j["word"], serde_json::json!(word.text));
            assert!(close(&j["start"], word.start) && close(&j["end"], word.end));
        }
        words_seen += words.len();
    }
    assert!(words_seen > 0, "{v}");
    // Plain output: each segment's line, then its words indented.
    let o = run(&["--word-timestamps", "--language", language]);
    assert!(o.status.success(), "{}", stderr(&o));
    let indented = stdout(&o)
        .lines()
        .filter(|l| l.starts_with("    ["))
        .count();
    assert_eq!(indented, words_seen, "{}", stdout(&o));

    let o = run(&["--logprob-threshold", "-1"]);
    assert!(!o.status.success());
    assert!(error_line(&o).contains("--timestamps"), "{}", stderr(&o));
    let o = run(&["--prompt", "ta <|en|>"]);
    assert!(!o.status.success());
    assert!(error_line(&o).contains("special token"), "{}", stderr(&o));

    // Subtitles to a file of another kind, and timestamps from a checkpoint without them.
    let o = run(&["--subtitles", dir.join("out.txt").to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(error_line(&o).contains(".srt or .vtt"), "{}", stderr(&o));
    let o = tessera(
        &[
            "audio",
            "transcribe",
            "--model",
            &fixture("whisper"),
            "--timestamps",
            audio_arg,
        ],
        &[],
    );
    assert!(!o.status.success());
    assert!(
        error_line(&o).contains("no_timestamps_token_id"),
        "{}",
        stderr(&o)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn model_command_errors_are_one_line() {
    let img = fixture("images/noise.png");
    let cases: [(&[&str], &str); 5] = [
        (
            &["vit", "classify", "--model", "/nonexistent", &img],
            "no such model folder",
        ),
        (
            &["vit", "classify", "--model", &fixture("clip"), &img],
            "model_type",
        ),
        (
            &[
                "vit",
                "classify",
                "--model",
                &fixture("vit"),
                "/nonexistent.png",
            ],
            "cannot read image",
        ),
        (
            &["clip", "embed", "--model", &fixture("clip")],
            "nothing to embed",
        ),
        (
            &[
                "audio",
                "encode",
                "--model",
                &fixture("vit"),
                &fixture("images/speech.wav"),
            ],
            "model_type",
        ),
    ];
    for (args, want) in cases {
        let o = tessera(args, &[]);
        assert!(!o.status.success(), "{args:?} should fail");
        let line = error_line(&o);
        assert!(line.contains(want), "{args:?}: {line}");
        assert!(stdout(&o).is_empty(), "{args:?} wrote to stdout");
    }
}

#[test]
fn bench_models_json_reports_efficiency_and_memory() {
    let o = tessera(
        &["bench", "models", "--models", "clip-b32-image", "--json"],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let row = &v.as_array().unwrap()[0];
    assert_eq!(row["model"], "clip-b32-image");
    // CLIP ViT-B/32 at 224: 4.4 G multiply-adds.
    let gflop = row["gflop"].as_f64().unwrap();
    assert!((8.5..9.0).contains(&gflop), "{gflop} GFLOP");
    for key in [
        "median_ms",
        "gflops",
        "matmul_fraction",
        "weights_mb",
        "peak_mb",
    ] {
        assert!(row[key].as_f64().unwrap() > 0.0, "{key}: {row}");
    }
    // Both towers of the 151 M-parameter model are on the GPU.
    let weights = row["weights_mb"].as_f64().unwrap();
    assert!((560.0..620.0).contains(&weights), "{weights} MB of weights");
    let o = tessera(&["bench", "models", "--models", "resnet50"], &[]);
    assert!(error_line(&o).contains("unknown model 'resnet50'"));
}

#[test]
fn muse_generate_writes_the_library_images_as_png() {
    use tessera::muse::{Amused, GenerateOptions, SeededNoise};
    let dir = std::env::temp_dir().join(format!("tessera-muse-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("img.png");
    let model = fixture("amused");
    let o = tessera(
        &[
            "muse",
            "generate",
            "--model",
            &model,
            "--prompt",
            "a red cube",
            "--prompt",
            "a cat",
            "--steps",
            "5",
            "--guidance",
            "3",
            "--seed",
            "11",
            "--width",
            "24",
            "--out",
            out.to_str().unwrap(),
            "--json",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let images = v["images"].as_array().unwrap();
    assert_eq!(images.len(), 2);
    assert_eq!(
        (images[0]["width"].as_u64(), images[0]["height"].as_u64()),
        (Some(24), Some(16))
    );

    let gpu = tessera::Gpu::shared().unwrap();
    let pipe = Amused::load(&gpu, std::path::Path::new(&model), tessera::DType::F32).unwrap();
    let opts = GenerateOptions {
        steps: 5,
        guidance_scale: 3.0,
        size: Some((24, 16)),
        ..GenerateOptions::default()
    };
    let want = pipe
        .generate(&["a red cube", "a cat"], &opts, &mut SeededNoise::new(11))
        .unwrap();
    for (i, entry) in images.iter().enumerate() {
        let path = dir.join(format!("img-{}.png", i + 1));
        assert_eq!(entry["path"].as_str(), Some(path.to_str().unwrap()));
        let png = image::open(&path).unwrap().to_rgb8();
        assert_eq!(png.dimensions(), (24, 16));
        assert_eq!(png.into_raw(), want.rgb8(i), "image {i}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn muse_generate_errors_are_one_line() {
    let model = fixture("amused");
    let cases: [(&[&str], &str); 4] = [
        (
            &[
                "muse",
                "generate",
                "--model",
                "/nonexistent",
                "--prompt",
                "x",
            ],
            "no such model folder",
        ),
        (
            &[
                "muse",
                "generate",
                "--model",
                &fixture("clip"),
                "--prompt",
                "x",
            ],
            "no text_encoder/ folder",
        ),
        (
            &[
                "muse", "generate", "--model", &model, "--prompt", "x", "--width", "30",
            ],
            "multiple of 4",
        ),
        (
            &[
                "muse",
                "generate",
                "--model",
                &model,
                "--prompt",
                "x",
                "--out",
                "/tmp/x.jpg",
            ],
            "PNG",
        ),
    ];
    for (args, want) in cases {
        let o = tessera(args, &[]);
        assert!(!o.status.success(), "{args:?} should fail");
        let line = error_line(&o);
        assert!(line.contains(want), "{args:?}: {line}");
        assert!(stdout(&o).is_empty(), "{args:?} wrote to stdout");
    }
}
