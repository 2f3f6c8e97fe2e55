//! `tessera vit classify`, `tessera clip embed`, `tessera clip rank`: ViT and CLIP on image files
//! and text, from Hugging Face model folders.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;
use tessera::clip::ClipModel;
use tessera::nn::image::RgbImage;
use tessera::nn::load_image;
use tessera::vit::ViTForImageClassification;
use tessera::{DType, Gpu};

use crate::bench::BoxError;

/// Compute dtype of a model.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum DtypeArg {
    /// 32-bit floats.
    F32,
    /// 16-bit floats (needs SHADER_F16), f32 accumulation.
    F16,
}

impl From<DtypeArg> for DType {
    fn from(d: DtypeArg) -> DType {
        match d {
            DtypeArg::F32 => DType::F32,
            DtypeArg::F16 => DType::F16,
        }
    }
}

/// The options every model command takes.
#[derive(Args)]
pub struct ModelArgs {
    /// A Hugging Face model folder (config.json, model.safetensors or its index, preprocessor and
    /// tokenizer files).
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Weights and activations as f32 or f16.
    #[arg(long, value_enum, default_value_t = DtypeArg::F32)]
    pub dtype: DtypeArg,
    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum VitCommand {
    /// Classify images with a ViTForImageClassification checkpoint.
    Classify {
        #[command(flatten)]
        model: ModelArgs,
        /// Labels to list per image.
        #[arg(long, default_value_t = 5)]
        top_k: usize,
        /// Image files (PNG, JPEG).
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum ClipCommand {
    /// L2-normalised image and text embeddings of a CLIPModel checkpoint.
    Embed {
        #[command(flatten)]
        model: ModelArgs,
        /// An image file; repeat for more.
        #[arg(long = "image", value_name = "PATH")]
        images: Vec<PathBuf>,
        /// A text; repeat for more.
        #[arg(long = "text", value_name = "STR")]
        texts: Vec<String>,
    },
    /// Zero-shot classification: how well each text describes the image.
    Rank {
        #[command(flatten)]
        model: ModelArgs,
        /// The image file.
        #[arg(long, value_name = "PATH")]
        image: PathBuf,
        /// A candidate description; give at least two.
        #[arg(long = "text", value_name = "STR", required = true, num_args = 1)]
        texts: Vec<String>,
    },
}

/// Decodes `images` first (a bad path fails before the model loads), then opens the adapter
/// and loads the model, reporting the load time on stderr.
fn setup<T, E: Into<BoxError>>(
    what: &str,
    images: &[PathBuf],
    load: impl FnOnce(&Arc<Gpu>) -> Result<T, E>,
) -> Result<(Vec<RgbImage>, Arc<Gpu>, T), BoxError> {
    let pictures = images
        .iter()
        .map(|p| load_image(p))
        .collect::<Result<Vec<_>, _>>()?;
    let gpu = Gpu::shared()?;
    let start = Instant::now();
    let model = load(&gpu).map_err(Into::into)?;
    eprintln!(
        "loaded {what} in {:.0} ms on {}",
        start.elapsed().as_secs_f64() * 1e3,
        gpu.summary().name
    );
    Ok((pictures, gpu, model))
}

fn rows(values: &[f32], width: usize) -> Vec<&[f32]> {
    values.chunks(width).collect()
}

pub fn run_vit(cmd: VitCommand) -> Result<(), BoxError> {
    let VitCommand::Classify {
        model: args,
        top_k,
        images,
    } = cmd;
    let (pictures, _, (model, processor)) = setup("ViT", &images, |gpu| {
        ViTForImageClassification::load(gpu, &args.model, args.dtype.into())
    })?;
    let start = Instant::now();
    let batch = processor.process(&pictures)?;
    let (logits, _) = model.forward(&batch, &processor.normalize)?;
    let probs = logits.softmax(1.0)?.to_vec()?;
    let logits = logits.to_vec()?;
    eprintln!(
        "classified {} images in {:.1} ms",
        images.len(),
        start.elapsed().as_secs_f64() * 1e3
    );
    let labels = model.labels();
    let k = top_k.min(labels.len());
    let mut results = Vec::new();
    for (i, path) in images.iter().enumerate() {
        let p = &probs[i * labels.len()..(i + 1) * labels.len()];
        let mut order: Vec<usize> = (0..labels.len()).collect();
        order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
        let top: Vec<_> = order[..k]
            .iter()
            .map(|&j| json!({"index": j, "label": labels[j], "prob": p[j]}))
            .collect();
        if !args.json {
            println!("{}", path.display());
            for &j in &order[..k] {
                println!("  {:>6.2}%  {}", p[j] * 100.0, labels[j]);
            }
        }
        results.push(json!({
            "image": path.display().to_string(),
            "logits": &logits[i * labels.len()..(i + 1) * labels.len()],
            "top": top,
        }));
    }
    if args.json {
        println!("{}", json!({ "results": results }));
    }
    Ok(())
}

pub fn run_clip(cmd: ClipCommand) -> Result<(), BoxError> {
    match cmd {
        ClipCommand::Embed {
            model: args,
            images,
            texts,
        } => {
            if images.is_empty() && texts.is_empty() {
                return Err("nothing to embed: give --image PATH and/or --text STR".into());
            }
            let (pictures, _, (model, processor, tokenizer)) = setup("CLIP", &images, |gpu| {
                ClipModel::load(gpu, &args.model, args.dtype.into())
            })?;
            let start = Instant::now();
            let dim = model.config().projection_dim;
            let image_embeds = if pictures.is_empty() {
                Vec::new()
            } else {
                let batch = processor.process(&pictures)?;
                model.image_embeds(&batch, &processor.normalize)?.to_vec()?
            };
            let text_embeds = if texts.is_empty() {
                Vec::new()
            } else {
                let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                model.text_embeds(&tokenizer.encode(&refs)?)?.to_vec()?
            };
            eprintln!(
                "embedded {} images and {} texts in {:.1} ms",
                images.len(),
                texts.len(),
                start.elapsed().as_secs_f64() * 1e3
            );
            if args.json {
                println!(
                    "{}",
                    json!({
                        "image_embeds": rows(&image_embeds, dim),
                        "text_embeds": rows(&text_embeds, dim),
                    })
                );
            } else {
                let show = |name: String, v: &[f32]| {
                    let head: Vec<String> = v.iter().take(4).map(|x| format!("{x:.4}")).collect();
                    println!("{name}: [{}, ...] ({dim} values)", head.join(", "));
                };
                for (p, v) in images.iter().zip(rows(&image_embeds, dim)) {
                    show(format!("image {}", p.display()), v);
                }
                for (t, v) in texts.iter().zip(rows(&text_embeds, dim)) {
                    show(format!("text {t:?}"), v);
                }
            }
            Ok(())
        }
        ClipCommand::Rank {
            model: args,
            image,
            texts,
        } => {
            if texts.len() < 2 {
                return Err("rank needs at least two --text candidates".into());
            }
            let (pictures, _, (model, processor, tokenizer)) =
                setup("CLIP", std::slice::from_ref(&image), |gpu| {
                    ClipModel::load(gpu, &args.model, args.dtype.into())
                })?;
            let start = Instant::now();
            let batch = processor.process(&pictures)?;
            let image_embeds = model.image_embeds(&batch, &processor.normalize)?;
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let text_embeds = model.text_embeds(&tokenizer.encode(&refs)?)?;
            let probs = model.probs(&image_embeds, &text_embeds)?.to_vec()?;
            eprintln!(
                "ranked {} texts in {:.1} ms",
                texts.len(),
                start.elapsed().as_secs_f64() * 1e3
            );
            if args.json {
                println!("{}", json!({ "probs": probs }));
            } else {
                let mut order: Vec<usize> = (0..texts.len()).collect();
                order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
                println!("{}", image.display());
                for i in order {
                    println!("  {:>6.2}%  {}", probs[i] * 100.0, texts[i]);
                }
            }
            Ok(())
        }
    }
}
