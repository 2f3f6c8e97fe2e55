//! `tessera audio`: Whisper's log-mel of an audio file (as JSON or a picture), the encoder's
//! hidden states, and transcription.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Subcommand;
use serde_json::json;
use tessera::audio::{
    load_16k, long_form_features, transcribe as transcribe_segments, window_features, windows,
    BeamOptions, LogMel, TranscribeOptions, WhisperDecoder, WhisperEncoder, WhisperGeneration,
    WhisperTokenizer, Word, CHUNK_FRAMES, CHUNK_SAMPLES, HOP,
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
    /// (or beam search) of each 30 s window, or with --timestamps segments over the whole
    /// recording; text where the folder has tokenizer.json, else token ids.
    Transcribe(TranscribeArgs),
}

/// `tessera audio transcribe`'s options.
#[derive(clap::Args)]
pub struct TranscribeArgs {
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
    /// Text to prompt decoding with (names, spellings, style): before every window, or with
    /// --condition-on-previous as the text before the first (transformers' prompt_ids).
    #[arg(long, value_name = "TEXT")]
    prompt: Option<String>,
    /// Prompt each window with the text of the segments before it (openai-whisper's
    /// condition_on_previous_text; implies --timestamps).
    #[arg(long)]
    condition_on_previous: bool,
    /// With --timestamps: the temperatures a window is decoded at, in turn, while it fails a
    /// threshold below (0 greedy or beam search, above 0 sampling; openai-whisper:
    /// 0,0.2,0.4,0.6,0.8,1).
    #[arg(long, value_delimiter = ',', default_value = "0")]
    temperatures: Vec<f32>,
    /// With --timestamps: fall back when the window's tokens compress (zlib) by more than
    /// this (openai-whisper: 2.4).
    #[arg(long)]
    compression_ratio_threshold: Option<f64>,
    /// With --timestamps: fall back when the average token log-probability is below this
    /// (openai-whisper: -1).
    #[arg(long, allow_hyphen_values = true)]
    logprob_threshold: Option<f64>,
    /// With --timestamps and --logprob-threshold: skip a window as silence when its
    /// <|nospeech|> probability passes this and its log-probability is below the threshold
    /// (openai-whisper: 0.6).
    #[arg(long)]
    no_speech_threshold: Option<f64>,
    /// Seed of the sampled fallback decodings.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Segments with start and end times: decoding with timestamp tokens, each window
    /// starting where the last finished segment ended (transformers' long-form algorithm).
    #[arg(long)]
    timestamps: bool,
    /// Also write the segments as subtitles: SubRip for FILE.srt, WebVTT for FILE.vtt
    /// (implies --timestamps).
    #[arg(long, value_name = "FILE")]
    subtitles: Option<PathBuf>,
    /// Each segment's words with their start and end (from the cross-attention of the
    /// checkpoint's alignment heads, as transformers' return_timestamps="word"; implies
    /// --timestamps).
    #[arg(long)]
    word_timestamps: bool,
    /// The audio file.
    audio: PathBuf,
}

impl TranscribeArgs {
    fn beam_options(&self) -> Option<BeamOptions> {
        (self.beams > 1).then_some(BeamOptions {
            num_beams: self.beams as usize,
            length_penalty: self.length_penalty,
        })
    }

    /// The prompt text's tokens, `<|startofprev|>` first (the tokenizer is needed for them).
    fn prompt_ids(
        &self,
        tokenizer: Option<&WhisperTokenizer>,
    ) -> Result<Option<Vec<u32>>, BoxError> {
        match (&self.prompt, tokenizer) {
            (None, _) => Ok(None),
            (Some(text), Some(t)) => Ok(Some(t.prompt_ids(text)?)),
            (Some(_), None) => Err("--prompt needs the checkpoint's tokenizer.json".into()),
        }
    }
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
        AudioCommand::Transcribe(args) => {
            let fallback = args.temperatures != [0.0]
                || args.compression_ratio_threshold.is_some()
                || args.logprob_threshold.is_some()
                || args.no_speech_threshold.is_some();
            let segments = args.timestamps
                || args.subtitles.is_some()
                || args.condition_on_previous
                || args.word_timestamps;
            if fallback && !segments {
                return Err("temperatures and fallback thresholds work with --timestamps".into());
            }
            if segments {
                transcribe_timestamped(&args)
            } else {
                transcribe(&args)
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

/// A Whisper checkpoint loaded for transcription, with the recording.
struct Loaded {
    gpu: std::sync::Arc<Gpu>,
    encoder: WhisperEncoder,
    decoder: WhisperDecoder,
    generation: WhisperGeneration,
    tokenizer: Option<WhisperTokenizer>,
    samples: Vec<f32>,
}

impl Loaded {
    fn new(args: &TranscribeArgs) -> Result<Self, BoxError> {
        let samples = load_16k(&args.audio)?;
        let gpu = Gpu::shared()?;
        let start = Instant::now();
        let (dir, dtype) = (&args.model.model, args.model.dtype.into());
        let loaded = Loaded {
            encoder: WhisperEncoder::load(&gpu, dir, dtype)?,
            decoder: WhisperDecoder::load(&gpu, dir, dtype)?,
            generation: WhisperGeneration::load(dir)?,
            tokenizer: if dir.join("tokenizer.json").is_file() {
                Some(WhisperTokenizer::load(dir)?)
            } else {
                None
            },
            samples,
            gpu,
        };
        eprintln!(
            "loaded Whisper in {:.0} ms on {}",
            start.elapsed().as_secs_f64() * 1e3,
            loaded.gpu.summary().name
        );
        Ok(loaded)
    }

    /// The language a prompt's token names (`en`), for multilingual checkpoints.
    fn language_of(&self, token: Option<&u32>) -> Option<String> {
        let g = &self.generation;
        token.filter(|_| g.multilingual()).and_then(|id| {
            g.lang_to_id
                .iter()
                .flatten()
                .find(|(_, v)| *v == id)
                .map(|(k, _)| k.trim_matches(['<', '|', '>']).to_string())
        })
    }

    /// Whether a language is to be detected, and the candidates.
    fn detection(&self, args: &TranscribeArgs) -> Option<Vec<u32>> {
        let languages = self.generation.language_tokens();
        (self.generation.multilingual() && args.language.is_none() && !languages.is_empty())
            .then_some(languages)
    }

    fn seconds(&self) -> f64 {
        self.samples.len() as f64 / 16_000.0
    }
}

/// `tessera audio transcribe`: fixed 30 s windows, text only.
fn transcribe(args: &TranscribeArgs) -> Result<(), BoxError> {
    let m = Loaded::new(args)?;
    // Checked before any window is encoded.
    let base = m.generation.prompt(args.language.as_deref(), &args.task)?;
    let prefix = args.prompt_ids(m.tokenizer.as_ref())?.unwrap_or_default();
    let detect = m.detection(args);
    let start = Instant::now();
    let front = m.encoder.log_mel(&m.gpu)?;
    let mut out = Vec::new();
    let windows = windows(&m.samples);
    let mut options = m.generation.greedy_options(Vec::new(), args.max_tokens);
    for (g, group) in windows.chunks(WINDOWS_PER_BATCH).enumerate() {
        let refs: Vec<&[f32]> = group.iter().map(Vec::as_slice).collect();
        let encoded = m.encoder.forward(&front.whisper_features(&refs)?)?;
        // The cross-attention keys and values, projected once for detection and decoding.
        let states = m.decoder.start(&encoded)?;
        // Start, language, task (and <|notimestamps|>) per window; the prompt text before.
        let inits: Vec<Vec<u32>> = match &detect {
            Some(languages) => m
                .decoder
                .detect_language(&states, base[0], languages)?
                .into_iter()
                .map(|token| {
                    let mut init = base.clone();
                    init.insert(1, token);
                    init
                })
                .collect(),
            None => vec![base.clone(); group.len()],
        };
        let prompts: Vec<Vec<u32>> = inits.iter().map(|i| [&prefix[..], i].concat()).collect();
        let decoded = match args.beam_options() {
            None => m.decoder.greedy_prompts(&states, &prompts, &options)?,
            // Beam search takes the windows one at a time, each its own prompt.
            Some(beams) => {
                options.beams = Some(beams);
                let mut out = Vec::with_capacity(prompts.len());
                for (i, prompt) in prompts.iter().enumerate() {
                    options.prompt = prompt.clone();
                    out.extend(m.decoder.generate(&encoded.narrow(0, i, 1)?, &options)?);
                }
                out
            }
        };
        for (i, (mut tokens, init)) in decoded.into_iter().zip(&inits).enumerate() {
            tokens.drain(..prefix.len() + init.len());
            if tokens.last().copied() == m.generation.eos_token_id {
                tokens.pop();
            }
            let text = m
                .tokenizer
                .as_ref()
                .map(|t| t.decode(&tokens))
                .transpose()?;
            let window = g * WINDOWS_PER_BATCH + i;
            out.push((
                window as f64 * CHUNK_SAMPLES as f64 / 16_000.0,
                tokens,
                text,
                m.language_of(init.get(1)),
            ));
        }
    }
    eprintln!(
        "transcribed {:.2} s of audio in {:.1} ms{}",
        m.seconds(),
        start.elapsed().as_secs_f64() * 1e3,
        if m.tokenizer.is_none() {
            " (no tokenizer.json: token ids only)"
        } else {
            ""
        }
    );
    if args.model.json {
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
fn transcribe_timestamped(args: &TranscribeArgs) -> Result<(), BoxError> {
    let subtitles = match &args.subtitles {
        Some(path) => Some((path, Subtitles::of(path)?)),
        None => None,
    };
    let m = Loaded::new(args)?;
    if subtitles.is_some() && m.tokenizer.is_none() {
        return Err("subtitles need the checkpoint's tokenizer.json".into());
    }
    if args.word_timestamps && m.tokenizer.is_none() {
        return Err("word timestamps need the checkpoint's tokenizer.json".into());
    }
    // Checked before anything is encoded.
    let g = &m.generation;
    let mut init = g.timestamp_prompt(args.language.as_deref(), &args.task)?;
    let rules = g.timestamp_rules()?;
    let context = TranscribeOptions {
        prompt_ids: args.prompt_ids(m.tokenizer.as_ref())?,
        previous_text: match args.condition_on_previous {
            true => Some(g.prev_sot_token().ok_or(
                "conditioning on previous text needs prev_sot_token_id in the generation config",
            )?),
            false => None,
        },
        temperatures: args.temperatures.clone(),
        compression_ratio_threshold: args.compression_ratio_threshold,
        logprob_threshold: args.logprob_threshold,
        no_speech_threshold: args.no_speech_threshold,
        seed: args.seed,
        alignment: args
            .word_timestamps
            .then(|| g.alignment(m.decoder.config(), Some(m.samples.len().div_ceil(HOP)))),
    };
    let start = Instant::now();
    let front = m.encoder.log_mel(&m.gpu)?;
    let (features, frames) = long_form_features(&front, &m.samples)?;
    if let Some(languages) = m.detection(args) {
        // Once, from the first window (as transformers detects it for long-form audio).
        let (first, _) = window_features(&m.gpu, &features, front.n_mels(), frames, 0)?;
        let states = m.encoder.forward(&first)?;
        let token = m.decoder.detect_language(&states, init[0], &languages)?[0];
        init.insert(1, token);
    }
    let mut options = g.greedy_options(init.clone(), args.max_tokens);
    options.timestamps = Some(rules);
    options.beams = args.beam_options();
    let segments = transcribe_segments(
        &m.encoder,
        &m.decoder,
        &features,
        frames,
        &options,
        &context,
        &mut |done, all, _| eprintln!("{:.1} of {:.1} s", done as f64 * 0.01, all as f64 * 0.01),
    )?;
    eprintln!(
        "transcribed {:.2} s of audio in {:.1} ms, {} segments",
        m.seconds(),
        start.elapsed().as_secs_f64() * 1e3,
        segments.len()
    );
    let texts: Vec<Option<String>> = segments
        .iter()
        .map(|s| {
            m.tokenizer
                .as_ref()
                .map(|t| t.decode(&s.tokens))
                .transpose()
        })
        .collect::<Result<_, _>>()?;
    let language = m.language_of(init.get(1));
    // Each segment's words (empty without --word-timestamps).
    let words: Vec<Vec<Word>> = match (&m.tokenizer, args.word_timestamps) {
        (Some(t), true) => segments
            .iter()
            .map(|s| t.segment_words(s, language.as_deref()))
            .collect::<Result<_, _>>()?,
        _ => vec![Vec::new(); segments.len()],
    };
    if let Some((path, format)) = subtitles {
        // Cues end with the recording (the last window's timestamps can run past it).
        let duration = m.seconds();
        let cues: Vec<(f64, f64, String)> = segments
            .iter()
            .zip(&texts)
            .filter(|(s, _)| s.start < duration)
            .map(|(s, t)| (s.start, s.end.min(duration), t.clone().unwrap_or_default()))
            .collect();
        std::fs::write(path, format.render(&cues))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if args.model.json {
        let out: Vec<_> = segments
            .iter()
            .zip(&texts)
            .zip(&words)
            .map(|((s, text), words)| {
                let w = &s.window;
                let mut segment = json!({
                    "start": s.start, "end": s.end, "tokens": s.tokens, "text": text,
                    "seek": w.seek, "temperature": w.temperature, "avg_logprob": w.avg_logprob,
                    "compression_ratio": w.compression_ratio, "no_speech_prob": w.no_speech_prob,
                });
                if args.word_timestamps {
                    segment["token_times"] = json!(s.token_times);
                    segment["words"] = words
                        .iter()
                        .map(|w| json!({"word": w.text, "start": w.start, "end": w.end}))
                        .collect();
                }
                segment
            })
            .collect();
        println!("{}", json!({ "language": language, "segments": out }));
    } else {
        for ((s, text), words) in segments.iter().zip(&texts).zip(&words) {
            let body = match text {
                Some(text) => text.trim().to_string(),
                None => format!("{:?}", s.tokens),
            };
            println!("[{:.2} --> {:.2}] {body}", s.start, s.end);
            for w in words {
                println!("    [{:.2} --> {:.2}] {}", w.start, w.end, w.text.trim());
            }
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
