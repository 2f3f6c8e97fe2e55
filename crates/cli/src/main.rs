//! The `tessera` command line.

mod audio;
mod bench;
mod bench_attention;
mod bench_mel;
mod bench_models;
mod info;
mod models;
mod muse;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tessera",
    version,
    about = "Multimodal inference on any GPU, kernels in WGSL"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show the adapter Tessera picks: name, backend, driver, features and key limits.
    Info {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// ViT image classification.
    #[command(subcommand)]
    Vit(models::VitCommand),
    /// CLIP embeddings and zero-shot classification.
    #[command(subcommand)]
    Clip(models::ClipCommand),
    /// Audio: Whisper's log-mel, encoder and transcription.
    #[command(subcommand)]
    Audio(audio::AudioCommand),
    /// aMUSEd text-to-image.
    #[command(subcommand)]
    Muse(muse::MuseCommand),
    /// Measure kernels on this adapter.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info { json } => info::run(json),
        Command::Vit(cmd) => models::run_vit(cmd),
        Command::Clip(cmd) => models::run_clip(cmd),
        Command::Audio(cmd) => audio::run(cmd),
        Command::Muse(cmd) => muse::run(cmd),
        Command::Bench(cmd) => bench::run(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
