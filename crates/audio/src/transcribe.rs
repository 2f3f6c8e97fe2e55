//! Transcription with timestamps: transformers' sequential algorithm of
//! `WhisperForConditionalGeneration.generate(..., return_timestamps=True)`, for clips of any
//! length. The log-mel of the whole recording is computed once; a 30 s window of it from
//! `seek` is encoded and decoded with the timestamp rules; the tokens split into segments at
//! their timestamp pairs; and `seek` moves to the last closed segment's end (or past the whole
//! window when the decoding ends with a single timestamp or none), until it passes the end.

use std::sync::Arc;

use crate::align::{token_timestamps, Alignment};
use crate::decoder::{GreedyOptions, WhisperDecoder};
use crate::error::{AudioError, Result};
use crate::mel::{LogMel, CHUNK_FRAMES, CHUNK_SAMPLES};
use crate::whisper::WhisperEncoder;
use tessera_kernels::stft::{BINS, HOP, N_FFT};
use tessera_kernels::{wait, DType, Gpu};
use tessera_nn::SeededNoise;
use tessera_tensor::Tensor;

/// Seconds per timestamp token step.
pub const TIME_PRECISION: f64 = 0.02;
/// Seconds per mel frame.
const FRAME_SECONDS: f64 = 0.01;
/// Mel frames per encoder position (the two convolutions' strides).
const INPUT_STRIDE: usize = 2;

/// A stretch of speech between two timestamps.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Segment {
    /// Start, seconds from the start of the recording.
    pub start: f64,
    /// End, seconds from the start of the recording.
    pub end: f64,
    /// The decoded tokens, timestamps included (the opening one first).
    pub tokens: Vec<u32>,
    /// Each token's time, seconds from the start of the recording, where
    /// [`TranscribeOptions::alignment`] asked for them (transformers'
    /// `return_token_timestamps`; see [`crate::token_timestamps`]); else empty.
    pub token_times: Vec<f64>,
    /// How its window was decoded, shared by the window's segments ([`transcribe`] fills it
    /// in; [`split_segments`] leaves the default).
    pub window: WindowReport,
}

/// How a window was decoded, for judging its segments as openai-whisper's output does.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WindowReport {
    /// The window's start, in mel frames (openai-whisper's `seek`).
    pub seek: usize,
    /// The temperature of the kept decoding (0: greedy or beam search).
    pub temperature: f32,
    /// Its average token log-probability (the beam score after beam search).
    pub avg_logprob: f64,
    /// Its tokens' zlib compression ratio ([`compression_ratio`]).
    pub compression_ratio: f64,
    /// `<|nospeech|>`'s probability at the start token, where a no-speech threshold asked
    /// for it.
    pub no_speech_prob: Option<f32>,
}

/// Splits one window's decoded tokens (prompt and end token left out) into segments, as
/// transformers' `_retrieve_segment`: a segment ends at each pair of consecutive timestamps.
/// `offset` is the window's start in seconds and `window_frames` the mel frames it holds.
/// Returns the segments and the mel frames to advance: to the last closed segment's end, or
/// the whole window when the tokens end with a single timestamp or hold no pair.
pub fn split_segments(
    tokens: &[u32],
    timestamp_begin: u32,
    offset: f64,
    window_frames: usize,
) -> (Vec<Segment>, usize) {
    let is_stamp: Vec<bool> = tokens.iter().map(|&t| t >= timestamp_begin).collect();
    let n = tokens.len();
    let single_ending = n >= 2 && !is_stamp[n - 2] && is_stamp[n - 1];
    let mut slices: Vec<usize> = (0..n.saturating_sub(1))
        .filter(|&i| is_stamp[i] && is_stamp[i + 1])
        .map(|i| i + 1)
        .collect();
    let at = |pos: u32| offset + (pos - timestamp_begin) as f64 * TIME_PRECISION;
    if slices.is_empty() {
        // No pair: the whole window is one segment, ending at its last timestamp if that is
        // past <|0.00|>, else at the window's end.
        // In f32, as torch computes it from the frame count (a long tensor times a float).
        let mut end_pos =
            (window_frames as f32 * FRAME_SECONDS as f32 / TIME_PRECISION as f32) as i64 as f64;
        if let Some(&last) = tokens.iter().rev().find(|&&t| t >= timestamp_begin) {
            if last != timestamp_begin {
                end_pos = (last - timestamp_begin) as f64;
            }
        }
        let segment = Segment {
            start: offset,
            end: offset + end_pos * TIME_PRECISION,
            tokens: tokens.to_vec(),
            ..Segment::default()
        };
        return (vec![segment], window_frames);
    }
    if single_ending {
        slices.push(n);
    } else {
        // The last segment keeps its closing timestamp, to tell it from a single ending.
        *slices.last_mut().expect("at least one slice") += 1;
    }
    let mut segments = Vec::with_capacity(slices.len());
    let mut from = 0;
    for (i, &to) in slices.iter().enumerate() {
        let piece = &tokens[from..to];
        let last = i + 1 == slices.len();
        let end = if !last || single_ending {
            piece[piece.len() - 1]
        } else {
            piece[piece.len() - 2]
        };
        segments.push(Segment {
            start: at(piece[0]),
            end: at(end),
            tokens: piece.to_vec(),
            ..Segment::default()
        });
        from = to;
    }
    let advance = if single_ending {
        window_frames
    } else {
        (tokens[from - 2] - timestamp_begin) as usize * INPUT_STRIDE
    };
    (segments, advance)
}

/// Whisper's log-mel of a whole recording as transformers' feature extractor gives it to
/// `generate`: `[n_mels, frames]` row-major and the frame count. Clips of at most 30 s are
/// padded to 30 s (3000 frames); longer ones give `samples / 160` frames, normalised against
/// the whole recording's loudest frame. Recordings whose frames would pass a buffer binding
/// are computed in pieces of whole 30 s windows, each normalised on its own.
pub fn long_form_features(front: &LogMel, samples: &[f32]) -> Result<(Vec<f32>, usize)> {
    wait(long_form_features_async(front, samples))
}

/// [`long_form_features`] as a future, which a browser awaits.
pub async fn long_form_features_async(
    front: &LogMel,
    samples: &[f32],
) -> Result<(Vec<f32>, usize)> {
    if samples.len() <= CHUNK_SAMPLES {
        let features = front.whisper_features(&[samples])?;
        return Ok((features.to_vec_async().await?, CHUNK_FRAMES));
    }
    let binding = front.gpu().max_binding() as usize;
    // The largest per-frame buffer: the DFT's [frames, 2·BINS] f32 (the frames' N_FFT is less).
    let frame_bytes = (2 * BINS).max(N_FFT) * 4;
    let windows_per_piece = (binding / frame_bytes / CHUNK_FRAMES).max(1);
    let piece = windows_per_piece * CHUNK_SAMPLES;
    let n_mels = front.n_mels();
    let frames = samples.len() / HOP;
    let mut rows = vec![Vec::with_capacity(frames); n_mels];
    for chunk in samples.chunks(piece) {
        // A tail too short for the STFT's reflect padding is left out: it holds no frame
        // the whole-recording mel would give beyond the padding.
        if chunk.len() <= N_FFT / 2 {
            continue;
        }
        let mel = front.compute(&[chunk])?.to_vec_async().await?;
        let len = chunk.len() / HOP;
        for (row, values) in rows.iter_mut().zip(mel.chunks(len)) {
            row.extend_from_slice(values);
        }
    }
    let frames = rows[0].len();
    Ok((rows.concat(), frames))
}

/// The 30 s window of `features` (`[n_mels, frames]`) from frame `seek`, as `[1, n_mels, 3000]`
/// on `gpu`, zero past the recording's end (transformers pads the normalised log-mel with
/// zeros); and the frames it holds of the recording.
pub fn window_features(
    gpu: &Arc<Gpu>,
    features: &[f32],
    n_mels: usize,
    frames: usize,
    seek: usize,
) -> Result<(Tensor, usize)> {
    let take = frames.saturating_sub(seek).min(CHUNK_FRAMES);
    let mut window = vec![0f32; n_mels * CHUNK_FRAMES];
    for (m, row) in window.chunks_mut(CHUNK_FRAMES).enumerate() {
        let from = m * frames + seek;
        row[..take].copy_from_slice(&features[from..from + take]);
    }
    let input = Tensor::from_slice(gpu, &window, &[1, n_mels, CHUNK_FRAMES], DType::F32)?;
    Ok((input, take))
}

/// Progress of [`transcribe`]: mel frames done and in all, and the segments so far.
pub type Progress<'a> = dyn FnMut(usize, usize, &[Segment]) + 'a;

/// How [`transcribe`] prompts and checks each window, beyond the decoding options: what a
/// window is prompted with before its start, language and task tokens (transformers'
/// `prompt_ids` and `condition_on_prev_tokens`, with `prompt_condition_type="first-segment"`),
/// and the temperature fallback (transformers' `temperature=(…)`,
/// `compression_ratio_threshold`, `logprob_threshold`, `no_speech_threshold`).
#[derive(Clone, Debug, PartialEq)]
pub struct TranscribeOptions {
    /// `<|startofprev|>` and the tokens of a text that sets the vocabulary and style
    /// ([`crate::WhisperTokenizer::prompt_ids`]). Without `previous_text` it precedes every
    /// window; with it, it counts as the text before the first window.
    pub prompt_ids: Option<Vec<u32>>,
    /// `<|startofprev|>` ([`crate::WhisperGeneration::prev_sot_token`]) to prompt every window
    /// with the tokens of the segments before it (the last `max_target_positions / 2 − 1`,
    /// a closing timestamp pair kept single), as openai-whisper's
    /// `condition_on_previous_text` — unless the window before was decoded at a temperature of
    /// 0.5 or more. `None` decodes each window on its own.
    pub previous_text: Option<u32>,
    /// The temperatures a window is decoded at, in turn, while it fails a threshold: 0 is
    /// greedy (or beam search), above 0 sampling. Transformers' default is `[0.0]`;
    /// openai-whisper's `[0.0, 0.2, 0.4, 0.6, 0.8, 1.0]`.
    pub temperatures: Vec<f32>,
    /// A decoding whose tokens (as little-endian bytes) compress by more than this with zlib
    /// is repetitive: fall back (openai-whisper: 2.4).
    pub compression_ratio_threshold: Option<f64>,
    /// A decoding whose average token log-probability is below this falls back
    /// (openai-whisper: −1).
    pub logprob_threshold: Option<f64>,
    /// With `logprob_threshold`: a window whose `<|nospeech|>` probability at the start token
    /// passes this while its average log-probability is below `logprob_threshold` is silence,
    /// skipped without segments (openai-whisper: 0.6).
    pub no_speech_threshold: Option<f64>,
    /// The seed of the sampling draws (SplitMix64).
    pub seed: u64,
    /// Time every token ([`Segment::token_times`]) from the cross-attention of these heads
    /// (transformers' `return_token_timestamps=True`); `None` leaves them out.
    pub alignment: Option<Alignment>,
}

impl Default for TranscribeOptions {
    fn default() -> Self {
        TranscribeOptions {
            prompt_ids: None,
            previous_text: None,
            temperatures: vec![0.0],
            compression_ratio_threshold: None,
            logprob_threshold: None,
            no_speech_threshold: None,
            seed: 0,
            alignment: None,
        }
    }
}

impl TranscribeOptions {
    /// The tokens before a window's start token after the segments `history` (their tokens;
    /// with `previous_text`, the prompt text's first), for timestamps from `begin` and a
    /// decoder of `max_positions` positions.
    pub fn prefix(&self, history: &[Vec<u32>], begin: u32, max_positions: usize) -> Vec<u32> {
        window_prefix(
            self.previous_text,
            &self.prompt_ids,
            history,
            begin,
            max_positions,
        )
    }
}

fn window_prefix(
    previous_text: Option<u32>,
    prompt_ids: &Option<Vec<u32>>,
    history: &[Vec<u32>],
    begin: u32,
    max_positions: usize,
) -> Vec<u32> {
    match (previous_text, prompt_ids) {
        (Some(prev), _) if !history.is_empty() => {
            let mut tokens: Vec<u32> = Vec::new();
            for t in history {
                // A segment closed by a timestamp pair continues from one of them.
                let closed = t.len() > 2 && t[t.len() - 2] >= begin;
                tokens.extend_from_slice(if closed { &t[..t.len() - 1] } else { t });
            }
            let keep = tokens.len().min(max_positions / 2 - 1);
            let mut prefix = vec![prev];
            prefix.extend_from_slice(&tokens[tokens.len() - keep..]);
            prefix
        }
        (_, Some(prompt)) => prompt.clone(),
        _ => Vec::new(),
    }
}

/// transformers' `_retrieve_compression_ratio`: the tokens as little-endian integers of
/// `⌊log2(vocab) / 8⌋ + 1` bytes, over their zlib-compressed length (level 6).
pub fn compression_ratio(tokens: &[u32], vocab: usize) -> f64 {
    use std::io::Write;
    let width = ((vocab as f64).log2() / 8.0) as usize + 1;
    let bytes: Vec<u8> = tokens
        .iter()
        .flat_map(|t| {
            t.to_le_bytes()
                .into_iter()
                .chain(std::iter::repeat(0))
                .take(width)
        })
        .collect();
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let compressed = z
        .write_all(&bytes)
        .and_then(|_| z.finish())
        .map(|c| c.len())
        .unwrap_or(bytes.len());
    bytes.len() as f64 / compressed as f64
}

/// One decoding of a window: the tokens after the prompt (end token included), whether it
/// failed a threshold, whether the window is silence.
struct Attempt {
    tokens: Vec<u32>,
    needs_fallback: bool,
    skip: bool,
    avg_logprob: f64,
    compression_ratio: f64,
}

/// transformers' `_need_fallback` on one decoding: `score` is the beam score where beam
/// search ran, else the average of `logprobs`.
fn judge(
    tokens: Vec<u32>,
    logprobs: &[f32],
    score: Option<f32>,
    no_speech: Option<f32>,
    vocab: usize,
    t: &TranscribeOptions,
) -> Attempt {
    let mut needs_fallback = false;
    let ratio = compression_ratio(&tokens, vocab);
    if let Some(limit) = t.compression_ratio_threshold {
        needs_fallback |= ratio > limit;
    }
    let avg = match score {
        Some(s) => f64::from(s),
        // In f32, as torch sums the log-probabilities.
        None => f64::from(logprobs.iter().sum::<f32>() / tokens.len().max(1) as f32),
    };
    let mut skip = false;
    if let Some(limit) = t.logprob_threshold {
        needs_fallback |= avg < limit;
        if let (Some(nst), Some(p)) = (t.no_speech_threshold, no_speech) {
            if avg < limit && f64::from(p) > nst {
                needs_fallback = false;
                skip = true;
            }
        }
    }
    Attempt {
        tokens,
        needs_fallback,
        skip,
        avg_logprob: avg,
        compression_ratio: ratio,
    }
}

/// Transcribes `features` (`[n_mels, frames]`, see [`long_form_features`]) with timestamps:
/// window by window from `seek` 0, each decoded (greedily, or by beam search with
/// `options.beams`) from `options.prompt` (start, language and task tokens, no
/// `<|notimestamps|>`) after the tokens `transcription` adds, under `options.timestamps`, and
/// decoded again at the next temperature while it fails a threshold, as transformers'
/// `generate(return_timestamps=True, …)`. Returns every segment in order.
pub fn transcribe(
    encoder: &WhisperEncoder,
    decoder: &WhisperDecoder,
    features: &[f32],
    frames: usize,
    options: &GreedyOptions,
    transcription: &TranscribeOptions,
    progress: &mut Progress,
) -> Result<Vec<Segment>> {
    wait(transcribe_async(
        encoder,
        decoder,
        features,
        frames,
        options,
        transcription,
        progress,
    ))
}

/// [`transcribe`] as a future, which a browser awaits.
pub async fn transcribe_async(
    encoder: &WhisperEncoder,
    decoder: &WhisperDecoder,
    features: &[f32],
    frames: usize,
    options: &GreedyOptions,
    transcription: &TranscribeOptions,
    progress: &mut Progress<'_>,
) -> Result<Vec<Segment>> {
    let rules = options.timestamps.ok_or_else(|| {
        AudioError::Unsupported("transcribing with timestamps needs timestamp rules".into())
    })?;
    let n_mels = encoder.config().num_mel_bins;
    if frames == 0 || features.len() != n_mels * frames {
        return Err(AudioError::Unsupported(format!(
            "{} feature values are not {n_mels} mel bands of {frames} frames",
            features.len()
        )));
    }
    let t = transcription;
    if t.temperatures.is_empty() || t.temperatures.iter().any(|x| !(*x >= 0.0 && x.is_finite())) {
        return Err(AudioError::Unsupported(format!(
            "temperatures {:?}: at least one, each 0 or more",
            t.temperatures
        )));
    }
    if let Some(a) = &t.alignment {
        a.check(decoder.config())?;
    }
    if t.no_speech_threshold.is_some() && t.logprob_threshold.is_none() {
        return Err(AudioError::Unsupported(
            "a no-speech threshold needs a log-probability threshold too".into(),
        ));
    }
    let gpu = encoder.gpu();
    let begin = rules.begin();
    let vocab = decoder.config().vocab_size;
    let max_positions = decoder.config().max_target_positions;
    // The text before the first window, as transformers keeps the prompt: a segment of its
    // own, `<|startofprev|>` left out.
    let mut history: Vec<Vec<u32>> = match (&t.prompt_ids, t.previous_text) {
        (Some(prompt), Some(prev)) => {
            vec![prompt.strip_prefix(&[prev]).unwrap_or(prompt).to_vec()]
        }
        _ => Vec::new(),
    };
    let mut noise = SeededNoise::new(t.seed);
    let mut condition = t.previous_text;
    let mut window_options = options.clone();
    let mut segments = Vec::new();
    let mut seek = 0;
    while seek < frames {
        progress(seek, frames, &segments);
        let (input, take) = window_features(gpu, features, n_mels, frames, seek)?;
        let encoded = encoder.forward(&input)?;
        let positions = encoded.shape()[1];
        // The cross-attention keys and values, projected once for every use of the window.
        let states = decoder.start(&encoded)?;
        drop(encoded);
        let mut prompt = window_prefix(condition, &t.prompt_ids, &history, begin, max_positions);
        let sot = prompt.len();
        prompt.extend_from_slice(&options.prompt);
        window_options.prompt = prompt;
        let len = window_options.prompt.len();
        // `<|nospeech|>` (the token before `<|notimestamps|>`) at the start token, raw logits.
        let no_speech = match t.no_speech_threshold {
            Some(_) => Some(
                decoder
                    .token_probability_async(
                        &states,
                        &window_options.prompt,
                        sot,
                        rules.no_timestamps - 1,
                    )
                    .await?,
            ),
            None => None,
        };
        let mut attempt = None;
        let mut last_temperature = 0.0;
        for (i, &temperature) in t.temperatures.iter().enumerate() {
            let (tokens, logprobs, score) = if temperature > 0.0 {
                let (tokens, logprobs) = decoder
                    .sample_async(&states, &window_options, temperature, &mut noise)
                    .await?;
                (tokens, logprobs, None)
            } else if let Some(beams) = window_options.beams {
                let (tokens, score) = decoder
                    .beam_search_async(&states, &window_options, &beams)
                    .await?;
                (tokens, Vec::new(), Some(score))
            } else {
                let (tokens, logprobs) = decoder
                    .greedy_scored_async(&states, &[window_options.prompt.clone()], &window_options)
                    .await?
                    .swap_remove(0);
                (tokens, logprobs, None)
            };
            let generated = tokens[len..].to_vec();
            let a = judge(generated, &logprobs, score, no_speech, vocab, t);
            last_temperature = temperature;
            let settled = !a.needs_fallback || i + 1 == t.temperatures.len();
            attempt = Some(a);
            if settled {
                break;
            }
        }
        let Attempt {
            mut tokens,
            skip,
            avg_logprob,
            compression_ratio,
            ..
        } = attempt.expect("at least one temperature");
        // transformers conditions the next window only after a low-temperature decoding.
        condition = t.previous_text.filter(|_| last_temperature < 0.5);
        if skip {
            seek += take;
            continue;
        }
        // The window's token times (its prompt's first), from the decoding with its end token.
        let times = match &t.alignment {
            Some(a) => {
                let mut all = window_options.prompt.clone();
                all.extend_from_slice(&tokens);
                // Every token but the last is read; rows only for those after the prompt.
                let weights = if all.len() > len + 1 {
                    decoder
                        .cross_attention_weights_async(&states, &all[..all.len() - 1], &a.heads)
                        .await?
                } else {
                    Vec::new()
                };
                token_timestamps(
                    &weights,
                    a.heads.len(),
                    all.len(),
                    len,
                    positions,
                    a.frames.map(|f| f as isize - seek as isize),
                    a.median_filter_width,
                )
            }
            None => Vec::new(),
        };
        if tokens.last().copied() == options.eos_token_id {
            tokens.pop();
        }
        let offset = seek as f64 * TIME_PRECISION / INPUT_STRIDE as f64;
        let (mut found, advance) = split_segments(&tokens, begin, offset, take);
        if !times.is_empty() {
            // Each segment's tokens follow the last's; times in f32 as torch adds the offset.
            let mut at = len;
            for s in &mut found {
                s.token_times = times[at..at + s.tokens.len()]
                    .iter()
                    .map(|&x| f64::from(x + offset as f32))
                    .collect();
                at += s.tokens.len();
            }
        }
        history.extend(found.iter().map(|s| s.tokens.clone()));
        let report = WindowReport {
            seek,
            temperature: last_temperature,
            avg_logprob,
            compression_ratio,
            no_speech_prob: no_speech,
        };
        segments.extend(found.into_iter().map(|s| Segment {
            window: report.clone(),
            ..s
        }));
        // The rules make a closed segment end after <|0.00|>, so `advance` is at least 2;
        // the guard only keeps a malformed decoding from looping.
        seek += advance.max(1);
    }
    progress(frames, frames, &segments);
    Ok(segments)
}
