//! `tessera bench`: median latency and throughput of kernels on this adapter.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Subcommand, ValueEnum};
use serde::Serialize;
use tessera::kernels::matmul::{choose_variant, MatmulSpec, MatmulVariant};
use tessera::{DType, Gpu, GpuOptions, MatmulOptions, Tensor};

const DEFAULT_SHAPES: &str =
    "1024x1024x1024,2048x2048x2048,197x3072x768,1500x1536x384,77x2048x512,1x4096x4096";

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Whisper's log-mel on the GPU against a CPU realfft baseline.
    Mel {
        /// Comma-separated lengths of audio in seconds.
        #[arg(long, default_value = "30,600", value_delimiter = ',')]
        seconds: Vec<f64>,
        /// Mel bands.
        #[arg(long, default_value_t = 80)]
        n_mels: usize,
        /// Print one JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Real-size models with random weights: latency, model GFLOP/s against the matmul's, and
    /// peak memory against weights + 2 × the largest activation.
    Models {
        /// Storage type.
        #[arg(long, default_value = "f32")]
        dtype: DType,
        /// Comma-separated models (vit-b16, vit-b16-b8, clip-b32-image, clip-b32-text,
        /// whisper-tiny, whisper-base, whisper-base-decode, whisper-base-decode-timestamps,
        /// whisper-base-decode-beams, whisper-base-align, amused-256-step, amused-256-vqgan,
        /// amused-512-vqgan).
        #[arg(
            long,
            default_value = "vit-b16,vit-b16-b8,clip-b32-image,clip-b32-text,whisper-tiny,whisper-base,whisper-base-decode",
            value_delimiter = ','
        )]
        models: Vec<String>,
        /// Print one JSON array instead of a table.
        #[arg(long)]
        json: bool,
        /// Also run each model once more waiting for every kernel, and print where the time
        /// went, kernel by kernel, to stderr.
        #[arg(long)]
        profile: bool,
    },
    /// Fused attention against matmul → softmax → matmul, for each shape BxHxSxD.
    Attention {
        /// Storage type.
        #[arg(long, default_value = "f32")]
        dtype: DType,
        /// Comma-separated BxHxSxD shapes (batch, heads, sequence, head_dim).
        #[arg(long, default_value = crate::bench_attention::DEFAULT_SHAPES)]
        shapes: String,
        /// Print one JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// C = A·Bᵀ (B in Linear layout [N, K]) for each shape MxNxK.
    Matmul {
        /// Storage type.
        #[arg(long, default_value = "f32")]
        dtype: DType,
        /// Comma-separated MxNxK shapes.
        #[arg(long, default_value = DEFAULT_SHAPES)]
        shapes: String,
        /// Read B as [N, K] (nt, Linear layout) or [K, N] (nn).
        #[arg(long, value_enum, default_value = "nt")]
        layout: Layout,
        /// Kernel variant; auto picks by adapter and shape.
        #[arg(long, value_enum, default_value = "auto")]
        variant: Variant,
        /// Print one JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Two shader folders side by side: one device each, their matmul calls alternated, so
    /// both see the same moments of a busy machine. Prints each folder's median per shape and
    /// the median (and quartiles) of the per-round ratio of their times.
    Compare {
        /// Two comma-separated folders of WGSL files named as in `shaders/`; `builtin` is the
        /// copies compiled in.
        #[arg(long, value_delimiter = ',', num_args = 1..)]
        shaders: Vec<String>,
        /// Storage type.
        #[arg(long, default_value = "f32")]
        dtype: DType,
        /// Comma-separated MxNxK shapes (C = A·Bᵀ, B in Linear layout).
        #[arg(long, default_value = "1024x1024x1024")]
        shapes: String,
        /// Calls of each folder per shape, alternated.
        #[arg(long, default_value_t = 20)]
        rounds: usize,
        /// Print one JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Layout {
    Nt,
    Nn,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Variant {
    Auto,
    Register,
    Tiled,
    TiledLarge,
    Texture,
    TextureSubgroup,
    Gemv,
}

impl From<Variant> for MatmulVariant {
    fn from(v: Variant) -> Self {
        match v {
            Variant::Auto => MatmulVariant::Auto,
            Variant::Register => MatmulVariant::Register,
            Variant::Tiled => MatmulVariant::Tiled,
            Variant::TiledLarge => MatmulVariant::TiledLarge,
            Variant::Texture => MatmulVariant::Texture,
            Variant::TextureSubgroup => MatmulVariant::TextureSubgroup,
            Variant::Gemv => MatmulVariant::Gemv,
        }
    }
}

#[derive(Serialize)]
pub(crate) struct Row {
    kernel: &'static str,
    m: usize,
    n: usize,
    k: usize,
    dtype: String,
    median_ms: f64,
    pub gflops: f64,
}

pub type BoxError = Box<dyn std::error::Error>;

fn parse_shapes(s: &str) -> Result<Vec<[usize; 3]>, BoxError> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let dims: Vec<usize> = p
                .trim()
                .split('x')
                .map(|d| d.parse::<usize>())
                .collect::<Result<_, _>>()
                .map_err(|_| format!("shape '{p}' is not MxNxK (e.g. 1024x1024x1024)"))?;
            match dims[..] {
                [m, n, k] if m > 0 && n > 0 && k > 0 => Ok([m, n, k]),
                _ => Err(format!("shape '{p}' is not MxNxK with every size at least 1").into()),
            }
        })
        .collect()
}

/// Runs `step` (which records work) until enough samples are taken; returns the median time
/// of record + submit + wait per step. Steps shorter than [`SHORT_STEP`] (fast GPUs) are
/// recorded several to a sample, so the figure is the step's own time and not the ~50–100 µs
/// of one submit and wait.
pub fn median_time(
    gpu: &Gpu,
    mut step: impl FnMut() -> Result<(), BoxError>,
) -> Result<Duration, BoxError> {
    // One warm-up builds the pipelines and fills the pools; a second tells how long a step is.
    let warm = Instant::now();
    step()?;
    gpu.sync()?;
    // Runs of many seconds take 3 samples at most after the warm-up.
    let min_samples = if warm.elapsed() > Duration::from_secs(5) {
        1
    } else {
        3
    };
    let one = Instant::now();
    step()?;
    gpu.sync()?;
    let one = one.elapsed();
    let per_sample = if one < SHORT_STEP {
        (SHORT_STEP.as_secs_f64() / one.as_secs_f64().max(1e-6)).ceil() as u32
    } else {
        1
    }
    .min(100);
    let mut samples = Vec::new();
    let start = Instant::now();
    while samples.len() < min_samples
        || (start.elapsed() < Duration::from_secs(2) && samples.len() < 50)
    {
        let t = Instant::now();
        for _ in 0..per_sample {
            step()?;
        }
        gpu.sync()?;
        samples.push(t.elapsed() / per_sample);
    }
    samples.sort();
    Ok(samples[samples.len() / 2])
}

/// Steps shorter than this are timed several to a sample.
const SHORT_STEP: Duration = Duration::from_millis(2);

pub fn pseudo_random(len: usize, seed: u32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(2654435761).max(1);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state as f32 / u32::MAX as f32) * 2.0 - 1.0
        })
        .collect()
}

pub(crate) fn bench_matmul(
    gpu: &Arc<Gpu>,
    dtype: DType,
    shapes: &[[usize; 3]],
    layout: Layout,
    variant: MatmulVariant,
) -> Result<Vec<Row>, BoxError> {
    let mut rows = Vec::new();
    for &[m, n, k] in shapes {
        let a = Tensor::from_slice(gpu, &pseudo_random(m * k, 1), &[m, k], dtype)?;
        let b = match layout {
            Layout::Nt => Tensor::from_slice(gpu, &pseudo_random(n * k, 2), &[n, k], dtype)?.t()?,
            Layout::Nn => Tensor::from_slice(gpu, &pseudo_random(n * k, 2), &[k, n], dtype)?,
        };
        let opts = MatmulOptions {
            variant,
            ..MatmulOptions::default()
        };
        let t = median_time(gpu, || {
            a.matmul_with(&b, &opts)?;
            Ok(())
        })?;
        let spec = MatmulSpec::new(m, n, k);
        let ms = t.as_secs_f64() * 1e3;
        let chosen = choose_variant(gpu, &MatmulSpec { variant, ..spec });
        eprintln!("{m}x{n}x{k}: {chosen:?} kernel, {ms:.3} ms");
        rows.push(Row {
            kernel: "matmul",
            m,
            n,
            k,
            dtype: dtype.to_string(),
            median_ms: ms,
            gflops: spec.flops() / t.as_secs_f64() / 1e9,
        });
    }
    Ok(rows)
}

fn print_table(gpu: &Gpu, rows: &[Row]) {
    let s = gpu.summary();
    println!("adapter: {} ({})", s.name, s.backend);
    println!(
        "{:<8} {:>6} {:>6} {:>6} {:>5} {:>11} {:>9}",
        "kernel", "M", "N", "K", "dtype", "median ms", "GFLOP/s"
    );
    for r in rows {
        println!(
            "{:<8} {:>6} {:>6} {:>6} {:>5} {:>11.3} {:>9.1}",
            r.kernel, r.m, r.n, r.k, r.dtype, r.median_ms, r.gflops
        );
    }
}

/// One shape of `tessera bench compare`: times of the second shader folder over the first.
#[derive(Serialize)]
pub(crate) struct CompareRow {
    m: usize,
    n: usize,
    k: usize,
    dtype: String,
    shaders: [String; 2],
    median_ms: [f64; 2],
    /// Largest difference between the two folders' products, relative to the first's largest
    /// magnitude.
    max_rel_diff: f64,
    /// Median of the per-round ratios (second folder's time over the first's).
    ratio: f64,
    ratio_q1: f64,
    ratio_q3: f64,
}

/// `tessera bench compare`: on a machine whose speed drifts (a shared CPU running lavapipe
/// varies by 10–30% from minute to minute), medians taken one after the other can differ by
/// more than the change being measured; calls alternated round by round, and the ratio taken
/// within each round, see the same moments.
pub(crate) fn bench_compare(
    shaders: &[String],
    dtype: DType,
    shapes: &[[usize; 3]],
    rounds: usize,
) -> Result<Vec<CompareRow>, BoxError> {
    let [first, second] = shaders else {
        return Err(format!("--shaders takes two folders, got {}", shaders.len()).into());
    };
    if rounds == 0 {
        return Err("--rounds must be at least 1".into());
    }
    let options = GpuOptions::from_env()?;
    let mut gpus = Vec::new();
    for dir in [first, second] {
        let shader_dir = (dir != "builtin").then(|| std::path::PathBuf::from(dir));
        if let Some(d) = shader_dir.as_ref().filter(|d| !d.is_dir()) {
            return Err(format!("shader folder {} does not exist", d.display()).into());
        }
        let gpu = Arc::new(Gpu::new(&GpuOptions {
            shader_dir,
            ..options.clone()
        })?);
        gpu.check_dtype("bench compare", dtype)?;
        gpus.push(gpu);
    }
    let opts = MatmulOptions::default();
    let mut rows = Vec::new();
    for &[m, n, k] in shapes {
        let mut operands = Vec::new();
        let mut products = Vec::new();
        for gpu in &gpus {
            let a = Tensor::from_slice(gpu, &pseudo_random(m * k, 1), &[m, k], dtype)?;
            let b = Tensor::from_slice(gpu, &pseudo_random(n * k, 2), &[n, k], dtype)?.t()?;
            // The first call builds the pipelines (from this device's folder) and fills the pools.
            products.push(a.matmul_with(&b, &opts)?.to_vec()?);
            operands.push((a, b));
        }
        let max_rel_diff = relative_difference(&products[0], &products[1]);
        let tolerance = if dtype == DType::F16 { 2e-2 } else { 1e-4 };
        if max_rel_diff.is_nan() || max_rel_diff > tolerance {
            return Err(format!(
                "{m}x{n}x{k}: the product from {second} differs from the one from {first} by \
                 {max_rel_diff:.2e} of its largest entry (tolerance {tolerance:.0e}); \
                 a wrong kernel is not timed"
            )
            .into());
        }
        let mut times = [Vec::new(), Vec::new()];
        for _ in 0..rounds {
            for (i, (gpu, (a, b))) in gpus.iter().zip(&operands).enumerate() {
                let t = Instant::now();
                a.matmul_with(b, &opts)?;
                gpu.sync()?;
                times[i].push(t.elapsed().as_secs_f64());
            }
        }
        let mut ratios: Vec<f64> = times[1].iter().zip(&times[0]).map(|(b, a)| b / a).collect();
        ratios.sort_by(f64::total_cmp);
        let median = |v: &[f64]| {
            let mut v = v.to_vec();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        rows.push(CompareRow {
            m,
            n,
            k,
            dtype: dtype.to_string(),
            shaders: [first.clone(), second.clone()],
            median_ms: [median(&times[0]) * 1e3, median(&times[1]) * 1e3],
            max_rel_diff,
            ratio: ratios[ratios.len() / 2],
            ratio_q1: ratios[ratios.len() / 4],
            ratio_q3: ratios[3 * ratios.len() / 4],
        });
    }
    Ok(rows)
}

/// The largest |x - y| over the largest |x| (NaN or infinity where either holds one).
fn relative_difference(x: &[f32], y: &[f32]) -> f64 {
    if x.len() != y.len() {
        return f64::INFINITY;
    }
    if x.iter().chain(y).any(|v| !v.is_finite()) {
        return f64::NAN;
    }
    let scale = x.iter().fold(0f64, |s, v| s.max(v.abs() as f64));
    let diff = x
        .iter()
        .zip(y)
        .fold(0f64, |d, (a, b)| d.max((*a as f64 - *b as f64).abs()));
    diff / scale.max(f64::MIN_POSITIVE)
}

/// Runs `tessera bench compare` and prints its rows.
fn print_compare(
    shaders: &[String],
    dtype: DType,
    shapes: &str,
    rounds: usize,
    json: bool,
) -> Result<(), BoxError> {
    let rows = bench_compare(shaders, dtype, &parse_shapes(shapes)?, rounds)?;
    if json {
        println!("{}", serde_json::to_string(&rows)?);
    } else {
        println!(
            "{:>16} {:>5} {:>12} {:>12} {:>22} {:>10}",
            "MxNxK", "dtype", "first ms", "second ms", "second/first (q1-q3)", "max diff"
        );
        for r in &rows {
            println!(
                "{:>16} {:>5} {:>12.3} {:>12.3} {:>8.3} ({:.3}-{:.3}) {:>10.1e}",
                format!("{}x{}x{}", r.m, r.n, r.k),
                r.dtype,
                r.median_ms[0],
                r.median_ms[1],
                r.ratio,
                r.ratio_q1,
                r.ratio_q3,
                r.max_rel_diff
            );
        }
    }
    Ok(())
}

/// Runs one `tessera bench` subcommand.
pub fn run(cmd: BenchCommand) -> Result<(), BoxError> {
    // `compare` opens a device per shader folder; the others share the process-wide one.
    let gpu = Gpu::shared;
    match cmd {
        BenchCommand::Compare {
            shaders,
            dtype,
            shapes,
            rounds,
            json,
        } => print_compare(&shaders, dtype, &shapes, rounds, json)?,
        BenchCommand::Mel {
            seconds,
            n_mels,
            json,
        } => crate::bench_mel::run(&gpu()?, &seconds, n_mels, json)?,
        BenchCommand::Models {
            dtype,
            models,
            json,
            profile,
        } => crate::bench_models::run(&gpu()?, dtype, &models, json, profile)?,
        BenchCommand::Attention {
            dtype,
            shapes,
            json,
        } => crate::bench_attention::run(&gpu()?, dtype, &shapes, json)?,
        BenchCommand::Matmul {
            dtype,
            shapes,
            layout,
            variant,
            json,
        } => {
            let gpu = gpu()?;
            let shapes = parse_shapes(&shapes)?;
            gpu.check_dtype("bench matmul", dtype)?;
            let rows = bench_matmul(&gpu, dtype, &shapes, layout, variant.into())?;
            if json {
                println!("{}", serde_json::to_string(&rows)?);
            } else {
                print_table(&gpu, &rows);
            }
        }
    }
    Ok(())
}
