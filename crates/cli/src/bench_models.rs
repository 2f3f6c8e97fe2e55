//! `tessera bench models`: forward latency of real-size models with random weights, their
//! GFLOP/s against the 1024³ matmul's on the same adapter, and peak GPU memory.

use std::sync::Arc;

use serde::Serialize;
use tessera::model_bench::{ModelBench, MODELS};
use tessera::{DType, Gpu};

use crate::bench::{bench_matmul, median_time, BoxError, Layout};

#[derive(Serialize)]
struct Row {
    model: String,
    batch: usize,
    dtype: String,
    median_ms: f64,
    gflop: f64,
    gflops: f64,
    /// Model GFLOP/s over the 1024³ matmul's.
    matmul_fraction: f64,
    weights_mb: f64,
    peak_mb: f64,
    largest_activation_mb: f64,
    /// (peak − weights) / largest activation; the goal is ≤ 2.
    activation_peak_ratio: f64,
}

const MB: f64 = 1024.0 * 1024.0;

pub fn run(
    gpu: &Arc<Gpu>,
    dtype: DType,
    models: &[String],
    json: bool,
    profile: bool,
) -> Result<(), BoxError> {
    gpu.check_dtype("bench models", dtype)?;
    if let Some(bad) = models.iter().find(|m| !MODELS.contains(&m.as_str())) {
        return Err(format!("unknown model '{bad}': choose from {}", MODELS.join(", ")).into());
    }
    let matmul = bench_matmul(
        gpu,
        dtype,
        &[[1024, 1024, 1024]],
        Layout::Nt,
        Default::default(),
    )?[0]
        .gflops;
    let mut rows = Vec::new();
    for name in models {
        gpu.trim_pool();
        let before = gpu.pool_stats().live_bytes;
        let bench = ModelBench::new(gpu, name, dtype).map_err(|e| e.to_string())?;
        // The warm-up inside median_time builds pipelines and what models build on first use
        // (the patch embedding at the image size); after it, the live buffers are the model's
        // and the peak of another run is the weights plus that run's activations.
        let t = median_time(gpu, || {
            bench.run().map_err(|e| e.to_string())?;
            Ok(())
        })?;
        let weights = gpu.pool_stats().live_bytes - before;
        gpu.reset_peak();
        bench.run().map_err(|e| e.to_string())?.to_vec()?;
        let peak = gpu.pool_stats().peak_live_bytes - before;
        let secs = t.as_secs_f64();
        let gflops = bench.flops / secs / 1e9;
        eprintln!("{name}: {:.1} ms, {gflops:.1} GFLOP/s", secs * 1e3);
        rows.push(Row {
            model: bench.name.to_string(),
            batch: bench.batch,
            dtype: dtype.to_string(),
            median_ms: secs * 1e3,
            gflop: bench.flops / 1e9,
            gflops,
            matmul_fraction: gflops / matmul,
            weights_mb: weights as f64 / MB,
            peak_mb: peak as f64 / MB,
            largest_activation_mb: bench.largest_activation_bytes as f64 / MB,
            activation_peak_ratio: (peak - weights) as f64 / bench.largest_activation_bytes as f64,
        });
        if profile {
            print_profile(gpu, &bench, secs)?;
        }
        drop(bench);
    }
    if json {
        println!("{}", serde_json::to_string(&rows)?);
        return Ok(());
    }
    let s = gpu.summary();
    println!(
        "adapter: {} ({}); matmul 1024³ {dtype}: {matmul:.1} GFLOP/s",
        s.name, s.backend
    );
    // The name column as wide as the longest name.
    let w = rows.iter().map(|r| r.model.len()).max().unwrap_or(0).max(5);
    println!(
        "{:<w$} {:>5} {:>11} {:>7} {:>8} {:>8} {:>10} {:>8} {:>11}",
        "model",
        "batch",
        "median ms",
        "GFLOP",
        "GFLOP/s",
        "of mm",
        "weights MB",
        "peak MB",
        "act. ratio"
    );
    for r in &rows {
        println!(
            "{:<w$} {:>5} {:>11.1} {:>7.1} {:>8.1} {:>7.0}% {:>10.1} {:>8.1} {:>11.2}",
            r.model,
            r.batch,
            r.median_ms,
            r.gflop,
            r.gflops,
            r.matmul_fraction * 100.0,
            r.weights_mb,
            r.peak_mb,
            r.activation_peak_ratio
        );
    }
    Ok(())
}

/// One more forward pass of `bench` with every kernel waited for, as a table on stderr: where
/// the time goes (each dispatch's wall time includes its submit and wait, so the total exceeds
/// the batched run's `batched_secs`).
fn print_profile(gpu: &Gpu, bench: &ModelBench, batched_secs: f64) -> Result<(), BoxError> {
    gpu.sync()?;
    gpu.set_profiling(true);
    let run = bench
        .run()
        .map_err(|e| e.to_string())
        .and_then(|_| gpu.sync().map_err(|e| e.to_string()));
    let times = gpu.take_profile();
    gpu.set_profiling(false);
    run?;
    let total: f64 = times.iter().map(|t| t.seconds).sum();
    eprintln!(
        "{}: {:.1} ms with every kernel waited for ({:.1} ms batched)",
        bench.name,
        total * 1e3,
        batched_secs * 1e3
    );
    eprintln!(
        "  {:<40} {:>6} {:>10} {:>6}",
        "kernel", "calls", "ms", "share"
    );
    for t in &times {
        eprintln!(
            "  {:<40} {:>6} {:>10.1} {:>5.1}%",
            t.kernel,
            t.calls,
            t.seconds * 1e3,
            100.0 * t.seconds / total
        );
    }
    Ok(())
}
