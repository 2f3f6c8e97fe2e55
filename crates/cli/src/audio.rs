//! `tessera audio`: Whisper's log-mel of an audio file (as JSON or a picture), the encoder's
//! hidden states, and transcription.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Subcommand;
use serde_json::json;
use tessera::audio::{
    load_16k, long_form_features, transcribe as transcribe_segments, windows, BeamOptions, LogMel,
    WhisperDecoder, WhisperEncoder, WhisperGeneration, WhisperTokenizer, CHUNK_FRAMES,
    CHUNK_SAMPLES,
};
use tessera::Gpu;

use crate::bench::BoxError;
use crate::models::ModelArgs;

#[derive(Subcommand)]
pub enum AudioCommand {
    /// The log-mel spectrogram of the first 30 s window of AUDIO (any common format, any rate).
    Mel {
        /// Mel bands: 80 (Whisper) or 128 (Whisper large-v3).
        #[arg(long, default_value_t = 80, value_parser = parse_mels)]
        n_mels: usize,
        /// Print {"n_mels", "n_frames", "mel": [[...] one row per mel band]} on stdout.
        #[arg(long)]
        json: bool,
        /// Also write the spectrogram as a PNG (time left to right, low frequencies at the bottom).
        #[arg(long, value_name = "FILE")]
        png: Option<PathBuf>,
        /// The audio file.
        audio: PathBuf,
    },
    /// The Whisper encoder's last hidden state for the first 30 s window of AUDIO.
    Encode {
        #[command(flatten)]
        model: ModelArgs,
        /// The audio file.
        audio: PathBuf,
    },
    /// Transcribe (or translate into English) AUDIO with a Whisper checkpoint: greedy decoding
    /// of each 30 s window; text where the folder has tokenizer.json, else token ids.
    Transcribe {
        #[command(flatten)]
        model: ModelArgs,
        /// The spoken language (en, de, ...) of a multilingual checkpoint; detected per window
        /// when left out (with --timestamps, once from the first window).
        #[arg(long)]
        language: Option<String>,
        /// transcribe, or translate (into English) on multilingual checkpoints.
        #[arg(long, default_value = "transcribe")]
        task: String,
        /// Most tokens decoded per window (at most the decoder's positions).
        #[arg(long, default_value_t = 224)]
        max_tokens: usize,
        /// Beam search with this many beams (transformers' num_beams) instead of greedy
        /// decoding; 1 is greedy.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
        beams: u32,
        /// With --beams: finished sequences are ranked by log-probability over length to this
        /// power.
        #[arg(long, default_value_t = 1.0)]
        length_penalty: f32,
        /// Segments with start and end times: decoding with timestamp tokens, each window
        /// starting where the last finished segment ended (transformers' long-form algorithm).
        #[arg(long)]
        timestamps: bool,
        /// Also write the segments as subtitles: SubRip for FILE.srt, WebVTT for FILE.vtt
        /// (implies --timestamps).
        #[arg(long, value_name = "FILE")]
        subtitles: Option<PathBuf>,
        /// The audio file.
        audio: PathBuf,
    },
}

/// How a transcription's segments are written as subtitles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Subtitles {
    Srt,
    Vtt,
}

impl Subtitles {
    fn of(path: &Path) -> Result<Self, BoxError> {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("srt") => Ok(Subtitles::Srt),
            Some(e) if e.eq_ignore_ascii_case("vtt") => Ok(Subtitles::Vtt),
            _ => Err(format!(
                "subtitles go to a .srt or .vtt file, not {}",
                path.display()
            )
            .into()),
        }
    }

    /// `HH:MM:SS,mmm` (SubRip) or `HH:MM:SS.mmm` (WebVTT).
    fn time(self, seconds: f64) -> String {
        let ms = (seconds.max(0.0) * 1000.0).round() as u64;
        let sep = if self == Subtitles::Srt { ',' } else { '.' };
        format!(
            "{:02}:{:02}:{:02}{sep}{:03}",
            ms / 3_600_000,
            ms / 60_000 % 60,
            ms / 1000 % 60,
            ms % 1000
        )
    }

    fn render(self, cues: &[(f64, f64, String)]) -> String {
        let mut out = String::new();
        if self == Subtitles::Vtt {
            out.push_str("WEBVTT\n\n");
        }
        for (i, (start, end, text)) in cues.iter().enumerate() {
            if self == Subtitles::Srt {
                out.push_str(&format!("{}\n", i + 1));
            }
            out.push_str(&format!(
                "{} --> {}\n{}\n\n",
                self.time(*start),
                self.time(*end),
                text.trim()
            ));
        }
        out
    }
}

fn parse_mels(s: &str) -> Result<usize, String> {
    match s {
        "80" => Ok(80),
        "128" => Ok(128),
        _ => Err(format!("{s} mel bands are not supported: use 80 or 128")),
    }
}

pub fn run(cmd: AudioCommand) -> Result<(), BoxError> {
    match cmd {
        AudioCommand::Mel {
            n_mels,
            json,
            png,
            audio,
        } => {
            let start = Instant::now();
            let samples = load_16k(&audio)?;
            let gpu = Gpu::shared()?;
            let front = LogMel::new(&gpu, n_mels)?;
            let first = windows(&samples).swap_remove(0);
            let mel = front.whisper_features(&[&first])?.to_vec()?;
            eprintln!(
                "{}: {:.2} s of audio, {n_mels} mels x {CHUNK_FRAMES} frames in {:.1} ms on {}",
                audio.display(),
                samples.len() as f64 / 16_000.0,
                start.elapsed().as_secs_f64() * 1e3,
                gpu.summary().name
            );
            if let Some(path) = &png {
                write_png(path, &mel, n_mels, CHUNK_FRAMES)?;
            }
            if json {
                let rows: Vec<&[f32]> = mel.chunks(CHUNK_FRAMES).collect();
                println!(
                    "{}",
                    json!({"n_mels": n_mels, "n_frames": CHUNK_FRAMES, "mel": rows})
                );
            } else if png.is_none() {
                let (lo, hi) = mel
                    .iter()
                    .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
                println!("log-mel {n_mels} x {CHUNK_FRAMES}, values {lo:.3} to {hi:.3}");
                println!("use --json for the values or --png FILE for a picture");
            }
            Ok(())
        }
        AudioCommand::Transcribe {
            model,
            language,
            task,
            max_tokens,
            beams,
            length_penalty,
            timestamps,
            subtitles,
            audio,
        } => {
            let beams = (beams > 1).then_some(BeamOptions {
                num_beams: beams as usize,
                length_penalty,
            });
            if timestamps || subtitles.is_some() {
                let format = subtitles.as_deref().map(Subtitles::of).transpose()?;
                let subtitles = subtitles.zip(format);
                transcribe_timestamped(
                    &model,
                    language.as_deref(),
                    &task,
                    (max_tokens, beams),
                    &audio,
                    subtitles,
                )
            } else {
                transcribe(
                    &model,
                    language.as_deref(),
                    &task,
                    (max_tokens, beams),
                    &audio,
                )
            }
        }
        AudioCommand::Encode { model: args, audio } => {
            let samples = load_16k(&audio)?;
            let gpu = Gpu::shared()?;
            let start = Instant::now();
            let encoder = WhisperEncoder::load(&gpu, &args.model, args.dtype.into())?;
            eprintln!(
                "loaded the Whisper encoder in {:.0} ms on {}",
                start.elapsed().as_secs_f64() * 1e3,
                gpu.summary().name
            );
            let start = Instant::now();
            let first = windows(&samples).swap_remove(0);
            let features = encoder.log_mel(&gpu)?.whisper_features(&[&first])?;
            let hidden = encoder.forward(&features)?;
            let (t, d) = (hidden.shape()[1], hidden.shape()[2]);
            let values = hidden.to_vec()?;
            eprintln!(
                "encoded {:.2} s of audio in {:.1} ms",
                samples.len() as f64 / 16_000.0,
                start.elapsed().as_secs_f64() * 1e3
            );
            if args.json {
                let rows: Vec<&[f32]> = values.chunks(d).collect();
                println!("{}", json!({"shape": [t, d], "last_hidden_state": rows}));
            } else {
                let (lo, hi) = values
                    .iter()
                    .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
                println!("last_hidden_state {t} x {d}, values {lo:.3} to {hi:.3}");
                println!("use --json for the values");
            }
            Ok(())
        }
    }
}

/// 30 s windows encoded and decoded as one batch. On lavapipe, whisper-base decoding 28 tokens
/// took 2.0 s for one window and 6.3–6.5 s for four (1.27× the windows per second: the
/// commands a step records are shared, the one-row matmuls become 8-row blocks); four windows'
/// encoder activations stay near 100 MB for whisper-base.
const WINDOWS_PER_BATCH: usize = 4;

/// `tessera audio transcribe`.
fn transcribe(
    args: &ModelArgs,
    language: Option<&str>,
    task: &str,
    (max_tokens, beams): (usize, Option<BeamOptions>),
    audio: &Path,
) -> Result<(), BoxError> {
    let samples = load_16k(audio)?;
    let gpu = Gpu::shared()?;
    let start = Instant::now();
    let dtype = args.dtype.into();
    let encoder = WhisperEncoder::load(&gpu, &args.model, dtype)?;
    let decoder = WhisperDecoder::load(&gpu, &args.model, dtype)?;
    let generation = WhisperGeneration::load(&args.model)?;
    let tokenizer = if args.model.join("tokenizer.json").is_file() {
        Some(WhisperTokenizer::load(&args.model)?)
    } else {
        None
    };
    // Checked before any window is encoded.
    let base = generation.prompt(language, task)?;
    let multilingual = generation.multilingual();
    let languages = generation.language_tokens();
    let detect = multilingual && language.is_none() && !languages.is_empty();
    eprintln!(
        "loaded Whisper in {:.0} ms on {}",
        start.elapsed().as_secs_f64() * 1e3,
        gpu.summary().name
    );
    let start = Instant::now();
    let front = encoder.log_mel(&gpu)?;
    let mut out = Vec::new();
    let windows = windows(&samples);
    for (g, group) in windows.chunks(WINDOWS_PER_BATCH).enumerate() {
        let refs: Vec<&[f32]> = group.iter().map(Vec::as_slice).collect();
        let states = encoder.forward(&front.whisper_features(&refs)?)?;
        let prompts: Vec<Vec<u32>> = if detect {
            let detected = decoder.detect_language(&states, base[0], &languages)?;
            detected
                .into_iter()
                .map(|token| {
                    let mut prompt = base.clone();
                    prompt.insert(1, token);
                    prompt
                })
                .collect()
        } else {
            vec![base.clone(); group.len()]
        };
        let mut options = generation.greedy_options(Vec::new(), max_tokens);
        let decoded = match beams {
            None => decoder.greedy_prompts(&states, &prompts, &options)?,
            // Beam search takes the windows one at a time, each its own prompt.
            Some(beams) => {
                options.beams = Some(beams);
                let mut out = Vec::with_capacity(prompts.len());
                for (i, prompt) in prompts.iter().enumerate() {
                    options.prompt = prompt.clone();
                    out.extend(decoder.generate(&states.narrow(0, i, 1)?, &options)?);
                }
                out
            }
        };
        for (i, (mut tokens, prompt)) in decoded.into_iter().zip(&prompts).enumerate() {
            tokens.drain(..prompt.len());
            if tokens.last().copied() == generation.eos_token_id {
                tokens.pop();
            }
            let text = tokenizer.as_ref().map(|t| t.decode(&tokens)).transpose()?;
            let language = prompt.get(1).filter(|_| multilingual).and_then(|id| {
                generation
                    .lang_to_id
                    .iter()
                    .flatten()
                    .find(|(_, v)| *v == id)
                    .map(|(k, _)| k.trim_matches(['<', '|', '>']).to_string())
            });
            let window = g * WINDOWS_PER_BATCH + i;
            out.push((
                window as f64 * CHUNK_SAMPLES as f64 / 16_000.0,
                tokens,
                text,
                language,
            ));
        }
    }
    eprintln!(
        "transcribed {:.2} s of audio in {:.1} ms{}",
        samples.len() as f64 / 16_000.0,
        start.elapsed().as_secs_f64() * 1e3,
        if tokenizer.is_none() {
            " (no tokenizer.json: token ids only)"
        } else {
            ""
        }
    );
    if args.json {
        let windows: Vec<_> = out
            .iter()
            .map(|(at, tokens, text, language)| {
                json!({"start_s": at, "language": language, "tokens": tokens, "text": text})
            })
            .collect();
        println!("{}", json!({ "windows": windows }));
    } else {
        for (_, tokens, text, _) in &out {
            match text {
                Some(text) => println!("{}", text.trim()),
                None => println!("{tokens:?}"),
            }
        }
    }
    Ok(())
}

/// `tessera audio transcribe --timestamps`: segments over the whole recording, each window
/// decoded with timestamp tokens from where the last finished segment ended.
fn transcribe_timestamped(
    args: &ModelArgs,
    language: Option<&str>,
    task: &str,
    (max_tokens, beams): (usize, Option<BeamOptions>),
    audio: &Path,
    subtitles: Option<(PathBuf, Subtitles)>,
) -> Result<(), BoxError> {
    let samples = load_16k(audio)?;
    let gpu = Gpu::shared()?;
    let start = Instant::now();
    let dtype = args.dtype.into();
    let encoder = WhisperEncoder::load(&gpu, &args.model, dtype)?;
    let decoder = WhisperDecoder::load(&gpu, &args.model, dtype)?;
    let generation = WhisperGeneration::load(&args.model)?;
    let tokenizer = if args.model.join("tokenizer.json").is_file() {
        Some(WhisperTokenizer::load(&args.model)?)
    } else if subtitles.is_some() {
        return Err("subtitles need the checkpoint's tokenizer.json".into());
    } else {
        None
    };
    // Checked before anything is encoded.
    let mut prompt = generation.timestamp_prompt(language, task)?;
    let rules = generation.timestamp_rules()?;
    let languages = generation.language_tokens();
    let detect = generation.multilingual() && language.is_none() && !languages.is_empty();
    eprintln!(
        "loaded Whisper in {:.0} ms on {}",
        start.elapsed().as_secs_f64() * 1e3,
        gpu.summary().name
    );
    let start = Instant::now();
    let front = encoder.log_mel(&gpu)?;
    let (features, frames) = long_form_features(&front, &samples)?;
    if detect {
        // Once, from the first window (as transformers detects it for long-form audio).
        let n_mels = front.n_mels();
        let take = frames.min(CHUNK_FRAMES);
        let mut first = vec![0f32; n_mels * CHUNK_FRAMES];
        for (m, row) in first.chunks_mut(CHUNK_FRAMES).enumerate() {
            row[..take].copy_from_slice(&features[m * frames..m * frames + take]);
        }
        let first = tessera::Tensor::from_slice(
            &gpu,
            &first,
            &[1, n_mels, CHUNK_FRAMES],
            tessera::DType::F32,
        )?;
        let states = encoder.forward(&first)?;
        prompt.insert(
            1,
            decoder.detect_language(&states, prompt[0], &languages)?[0],
        );
    }
    let mut options = generation.greedy_options(prompt.clone(), max_tokens);
    options.timestamps = Some(rules);
    options.beams = beams;
    let segments = transcribe_segments(
        &encoder,
        &decoder,
        &features,
        frames,
        &options,
        &mut |done, all, _| eprintln!("{:.1} of {:.1} s", done as f64 * 0.01, all as f64 * 0.01),
    )?;
    eprintln!(
        "transcribed {:.2} s of audio in {:.1} ms, {} segments",
        samples.len() as f64 / 16_000.0,
        start.elapsed().as_secs_f64() * 1e3,
        segments.len()
    );
    let language = prompt
        .get(1)
        .filter(|_| generation.multilingual())
        .and_then(|id| {
            generation
                .lang_to_id
                .iter()
                .flatten()
                .find(|(_, v)| *v == id)
                .map(|(k, _)| k.trim_matches(['<', '|', '>']).to_string())
        });
    let texts: Vec<Option<String>> = segments
        .iter()
        .map(|s| tokenizer.as_ref().map(|t| t.decode(&s.tokens)).transpose())
        .collect::<Result<_, _>>()?;
    if let Some((path, format)) = &subtitles {
        // Cues end with the recording (the last window's timestamps can run past it).
        let duration = samples.len() as f64 / 16_000.0;
        let cues: Vec<(f64, f64, String)> = segments
            .iter()
            .zip(&texts)
            .filter(|(s, _)| s.start < duration)
            .map(|(s, t)| (s.start, s.end.min(duration), t.clone().unwrap_or_default()))
            .collect();
        std::fs::write(path, format.render(&cues))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if args.json {
        let out: Vec<_> = segments
            .iter()
            .zip(&texts)
            .map(|(s, text)| {
                json!({"start": s.start, "end": s.end, "tokens": s.tokens, "text": text})
            })
            .collect();
        println!("{}", json!({ "language": language, "segments": out }));
    } else {
        for (s, text) in segments.iter().zip(&texts) {
            let body = match text {
                Some(text) => text.trim().to_string(),
                None => format!("{:?}", s.tokens),
            };
            println!("[{:.2} --> {:.2}] {body}", s.start, s.end);
        }
    }
    Ok(())
}

/// Viridis, sampled at 9 points and interpolated linearly.
fn viridis(x: f32) -> [u8; 3] {
    const STOPS: [[f32; 3]; 9] = [
        [68.0, 1.0, 84.0],
        [71.0, 44.0, 122.0],
        [59.0, 81.0, 139.0],
        [44.0, 113.0, 142.0],
        [33.0, 144.0, 141.0],
        [39.0, 173.0, 129.0],
        [92.0, 200.0, 99.0],
        [170.0, 220.0, 50.0],
        [253.0, 231.0, 37.0],
    ];
    let p = x.clamp(0.0, 1.0) * (STOPS.len() - 1) as f32;
    let i = (p.floor() as usize).min(STOPS.len() - 2);
    let f = p - i as f32;
    let c = |k: usize| (STOPS[i][k] * (1.0 - f) + STOPS[i + 1][k] * f).round() as u8;
    [c(0), c(1), c(2)]
}

/// Writes `[n_mels, frames]` as an image, 3 pixel rows per band, brightest = loudest; through a
/// temporary file, so a failed write leaves nothing behind.
fn write_png(path: &Path, mel: &[f32], n_mels: usize, frames: usize) -> Result<(), BoxError> {
    const ROWS_PER_BAND: usize = 3;
    let (lo, hi) = mel
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    let span = (hi - lo).max(1e-6);
    let height = n_mels * ROWS_PER_BAND;
    let mut img = image::RgbImage::new(frames as u32, height as u32);
    for (x, y, px) in img.enumerate_pixels_mut() {
        // Row 0 is the top of the picture: the highest band.
        let band = n_mels - 1 - y as usize / ROWS_PER_BAND;
        let v = (mel[band * frames + x as usize] - lo) / span;
        *px = image::Rgb(viridis(v));
    }
    let tmp = path.with_extension("png.partial");
    img.save_with_format(&tmp, image::ImageFormat::Png)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(())
}
