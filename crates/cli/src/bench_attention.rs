//! `tessera bench attention`: the fused kernel against the unfused matmul → softmax → matmul
//! path on the same shapes, with the extra device memory each needs.

use std::sync::Arc;

use serde::Serialize;
use tessera::{AttentionLayout, AttentionOptions, DType, Gpu, MatmulOptions, Tensor};

use crate::bench::{median_time, pseudo_random, BoxError};

pub const DEFAULT_SHAPES: &str = "1x6x1500x64,8x8x77x64,1x12x197x64,1x8x4096x64";

#[derive(Serialize)]
struct Row {
    kernel: &'static str,
    path: &'static str,
    b: usize,
    h: usize,
    s: usize,
    d: usize,
    dtype: String,
    median_ms: f64,
    gflops: f64,
    /// Device memory the call allocated beyond its inputs (peak), in bytes.
    bytes: u64,
}

fn parse(s: &str) -> Result<Vec<[usize; 4]>, BoxError> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let dims: Result<Vec<usize>, _> = p.trim().split('x').map(str::parse).collect();
            match dims.as_deref() {
                Ok(&[b, h, s, d]) if b > 0 && h > 0 && s > 0 && d > 0 => Ok([b, h, s, d]),
                _ => Err(format!(
                    "shape '{p}' is not BxHxSxD with every size at least 1 (e.g. 1x6x1500x64)"
                )
                .into()),
            }
        })
        .collect()
}

/// softmax(scale·QKᵀ)·V through the separate kernels, the S×S scores in memory.
fn unfused(q: &Tensor, k: &Tensor, v: &Tensor, scale: f32) -> Result<Tensor, BoxError> {
    let scores = q.matmul_with(
        &k.t()?,
        &MatmulOptions {
            alpha: Some(scale),
            ..MatmulOptions::default()
        },
    )?;
    Ok(scores.softmax(1.0)?.matmul(v)?)
}

fn measure(
    gpu: &Arc<Gpu>,
    mut step: impl FnMut() -> Result<(), BoxError>,
) -> Result<(f64, u64), BoxError> {
    gpu.sync()?;
    let base = gpu.pool_stats().live_bytes;
    gpu.reset_peak();
    step()?;
    gpu.sync()?;
    let bytes = gpu.pool_stats().peak_live_bytes.saturating_sub(base);
    let t = median_time(gpu, step)?;
    Ok((t.as_secs_f64() * 1e3, bytes))
}

pub fn run(gpu: &Arc<Gpu>, dtype: DType, shapes: &str, json: bool) -> Result<(), BoxError> {
    let shapes = parse(shapes)?;
    gpu.check_dtype("bench attention", dtype)?;
    let mut rows = Vec::new();
    for [b, h, s, d] in shapes {
        let make = |seed| -> Result<Tensor, BoxError> {
            Ok(Tensor::from_slice(
                gpu,
                &pseudo_random(b * h * s * d, seed),
                &[b * h, s, d],
                dtype,
            )?)
        };
        let (q, k, v) = (make(1)?, make(2)?, make(3)?);
        let heads = |t: &Tensor| t.unflatten(0, &[b, h]);
        let (q4, k4, v4) = (heads(&q)?, heads(&k)?, heads(&v)?);
        let scale = 1.0 / (d as f32).sqrt();
        let flops = 4.0 * (b * h * s * s * d) as f64;
        let opts = AttentionOptions {
            layout: AttentionLayout::Bhsd,
            ..AttentionOptions::default()
        };
        let mut push = |path, (ms, bytes): (f64, u64)| {
            eprintln!("{b}x{h}x{s}x{d} {path}: {ms:.3} ms, {bytes} bytes");
            rows.push(Row {
                kernel: "attention",
                path,
                b,
                h,
                s,
                d,
                dtype: dtype.to_string(),
                median_ms: ms,
                gflops: flops / ms / 1e6,
                bytes,
            });
        };
        push(
            "fused",
            measure(gpu, || {
                Tensor::attention(&q4, &k4, &v4, &opts)?;
                Ok(())
            })?,
        );
        match measure(gpu, || {
            unfused(&q, &k, &v, scale)?;
            Ok(())
        }) {
            Ok(m) => push("unfused", m),
            Err(e) => eprintln!("{b}x{h}x{s}x{d} unfused: not run ({e})"),
        }
    }
    if json {
        println!("{}", serde_json::to_string(&rows)?);
    } else {
        let a = gpu.summary();
        println!("adapter: {} ({})", a.name, a.backend);
        println!(
            "{:<9} {:<8} {:>3} {:>3} {:>5} {:>4} {:>5} {:>11} {:>9} {:>12}",
            "kernel", "path", "B", "H", "S", "D", "dtype", "median ms", "GFLOP/s", "extra bytes"
        );
        for r in &rows {
            println!(
                "{:<9} {:<8} {:>3} {:>3} {:>5} {:>4} {:>5} {:>11.3} {:>9.2} {:>12}",
                r.kernel, r.path, r.b, r.h, r.s, r.d, r.dtype, r.median_ms, r.gflops, r.bytes
            );
        }
    }
    Ok(())
}
