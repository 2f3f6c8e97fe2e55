//! `tessera bench mel`: Whisper's log-mel of 30 s and 10 min of audio on the GPU against the
//! CPU baseline (realfft and the same filterbank, what a Rust user would write).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tessera::audio::{log_mel_cpu_fft, windows, LogMel};
use tessera::Gpu;

use crate::bench::{median_time, pseudo_random, BoxError};

#[derive(Serialize)]
struct Row {
    kernel: &'static str,
    path: &'static str,
    seconds_of_audio: f64,
    median_ms: f64,
    realtime_factor: f64,
}

fn cpu_median(mut step: impl FnMut()) -> Duration {
    step();
    let mut samples = Vec::new();
    let start = Instant::now();
    while samples.len() < 3 || (start.elapsed() < Duration::from_secs(2) && samples.len() < 20) {
        let t = Instant::now();
        step();
        samples.push(t.elapsed());
    }
    samples.sort();
    samples[samples.len() / 2]
}

pub fn run(gpu: &Arc<Gpu>, seconds: &[f64], n_mels: usize, json: bool) -> Result<(), BoxError> {
    let front = LogMel::new(gpu, n_mels)?;
    let mut rows = Vec::new();
    for &secs in seconds {
        if secs.is_nan() || secs <= 0.0 {
            return Err(format!("seconds of audio must be positive, got {secs}").into());
        }
        let audio: Vec<f32> = pseudo_random((secs * 16_000.0) as usize, 7)
            .iter()
            .map(|v| v * 0.3)
            .collect();
        let chunks = windows(&audio);
        let refs: Vec<&[f32]> = chunks.iter().map(Vec::as_slice).collect();
        let gpu_t = median_time(gpu, || {
            front.compute(&refs)?;
            Ok(())
        })?;
        let cpu_t = cpu_median(|| {
            for c in &refs {
                std::hint::black_box(log_mel_cpu_fft(c, n_mels));
            }
        });
        for (path, t) in [("gpu", gpu_t), ("cpu", cpu_t)] {
            let ms = t.as_secs_f64() * 1e3;
            eprintln!("{secs} s {path}: {ms:.1} ms");
            rows.push(Row {
                kernel: "mel",
                path,
                seconds_of_audio: secs,
                median_ms: ms,
                realtime_factor: secs / t.as_secs_f64(),
            });
        }
    }
    if json {
        println!("{}", serde_json::to_string(&rows)?);
    } else {
        let a = gpu.summary();
        println!(
            "adapter: {} ({}); cpu: realfft, same filterbank, 1 thread",
            a.name, a.backend
        );
        println!(
            "{:<5} {:<4} {:>9} {:>11} {:>15}",
            "kernel", "path", "seconds", "median ms", "realtime factor"
        );
        for r in &rows {
            println!(
                "{:<5} {:<4} {:>9.1} {:>11.1} {:>15.1}",
                r.kernel, r.path, r.seconds_of_audio, r.median_ms, r.realtime_factor
            );
        }
    }
    Ok(())
}
