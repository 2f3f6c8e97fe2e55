//! `tessera muse generate`: text to image with an aMUSEd pipeline folder.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Subcommand;
use serde_json::json;
use tessera::muse::{Amused, GenerateOptions, SeededNoise};
use tessera::Gpu;

use crate::bench::BoxError;
use crate::models::DtypeArg;

#[derive(Subcommand)]
pub enum MuseCommand {
    /// Generate an image per prompt with an aMUSEd pipeline folder (model_index.json,
    /// text_encoder/, tokenizer/, transformer/, vqvae/, scheduler/) and write PNGs.
    Generate {
        /// The pipeline folder.
        #[arg(long, value_name = "DIR")]
        model: PathBuf,
        /// What to draw; repeat for a batch (one image each).
        #[arg(long = "prompt", value_name = "STR", required = true)]
        prompts: Vec<String>,
        /// What to steer away from (the empty prompt by default).
        #[arg(long, value_name = "STR")]
        negative_prompt: Option<String>,
        /// Unmasking steps.
        #[arg(long, default_value_t = 12)]
        steps: usize,
        /// Classifier-free guidance scale (at most 1: no guidance).
        #[arg(long, default_value_t = 10.0)]
        guidance: f32,
        /// Seed of the random draws: the same seed gives the same image.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Image width in pixels (the model's native size by default).
        #[arg(long)]
        width: Option<usize>,
        /// Image height in pixels (the model's native size by default).
        #[arg(long)]
        height: Option<usize>,
        /// Micro-conditioning aesthetic score.
        #[arg(long, default_value_t = 6.0)]
        aesthetic_score: f32,
        /// Output PNG; with several prompts, FILE-1.png, FILE-2.png, ...
        #[arg(long, value_name = "FILE", default_value = "tessera.png")]
        out: PathBuf,
        /// Transformer and text encoder as f32 or f16 (the VQ decoder runs in f32).
        #[arg(long, value_enum, default_value_t = DtypeArg::F32)]
        dtype: DtypeArg,
        /// Print a JSON summary on stdout.
        #[arg(long)]
        json: bool,
    },
}

/// Where image `i` of `n` goes.
fn out_path(out: &Path, i: usize, n: usize) -> PathBuf {
    if n == 1 {
        return out.to_path_buf();
    }
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    out.with_file_name(format!("{stem}-{}.png", i + 1))
}

pub fn run(cmd: MuseCommand) -> Result<(), BoxError> {
    let MuseCommand::Generate {
        model,
        prompts,
        negative_prompt,
        steps,
        guidance,
        seed,
        width,
        height,
        aesthetic_score,
        out,
        dtype,
        json,
    } = cmd;
    if out
        .extension()
        .is_none_or(|e| !e.eq_ignore_ascii_case("png"))
    {
        return Err(format!(
            "--out {}: the output is a PNG file (name it .png)",
            out.display()
        )
        .into());
    }
    let gpu = Gpu::shared()?;
    let start = Instant::now();
    let pipe = Amused::load(&gpu, &model, dtype.into())?;
    eprintln!(
        "loaded aMUSEd in {:.0} ms on {}",
        start.elapsed().as_secs_f64() * 1e3,
        gpu.summary().name
    );
    let native = pipe.image_size(&GenerateOptions::default())?;
    let opts = GenerateOptions {
        steps,
        guidance_scale: guidance,
        negative_prompt,
        size: Some((width.unwrap_or(native.0), height.unwrap_or(native.1))),
        aesthetic_score,
        ..GenerateOptions::default()
    };
    pipe.image_size(&opts)?;
    let start = Instant::now();
    let texts: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let mut progress = |done: usize, all: usize| {
        eprintln!("step {done}/{all} ({:.1} s)", start.elapsed().as_secs_f64());
    };
    let images = pipe.generate_with(&texts, &opts, &mut SeededNoise::new(seed), &mut progress)?;
    let seconds = start.elapsed().as_secs_f64();
    let mut written = Vec::new();
    for (i, prompt) in prompts.iter().enumerate() {
        let path = out_path(&out, i, prompts.len());
        let rgb = tessera::nn::image::RgbImage::from_raw(
            images.width as u32,
            images.height as u32,
            images.rgb8(i),
        )
        .expect("width · height · 3 bytes");
        rgb.save(&path)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        eprintln!("{}: {prompt:?}", path.display());
        written.push(
            json!({"prompt": prompt, "path": path, "width": images.width, "height": images.height}),
        );
    }
    eprintln!(
        "{} image(s) of {}×{} in {seconds:.1} s ({steps} steps)",
        prompts.len(),
        images.width,
        images.height
    );
    if json {
        println!(
            "{}",
            json!({
                "adapter": gpu.summary().name,
                "seed": seed,
                "steps": steps,
                "guidance": guidance,
                "seconds": seconds,
                "images": written,
            })
        );
    }
    Ok(())
}
