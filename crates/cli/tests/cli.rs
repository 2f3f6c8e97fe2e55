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
