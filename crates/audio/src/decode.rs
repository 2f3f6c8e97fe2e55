//! Audio files in: any format symphonia decodes (WAV 8/16/24/32-bit PCM and float, FLAC, MP3,
//! OGG/Vorbis, ...), mixed down to mono and resampled to 16 kHz with rubato's FFT resampler.

use std::fs::File;
use std::path::Path;

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};
use symphonia::core::codecs::audio::AudioDecoderOptions;
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, TrackType};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;

use crate::error::{AudioError, Result};

/// The lowest sample rate [`decode_file`] and [`resample`] accept, in Hz.
pub const MIN_SAMPLE_RATE: u32 = 1_000;
/// The highest sample rate [`decode_file`] and [`resample`] accept, in Hz (twice the highest
/// studio rate, 384 kHz). A header past these limits is corrupt more often than not, and
/// resampling from it would take minutes or more memory than the machine has.
pub const MAX_SAMPLE_RATE: u32 = 768_000;

/// Mono samples and their rate.
#[derive(Clone, Debug, PartialEq)]
pub struct Audio {
    /// Samples in [-1, 1].
    pub samples: Vec<f32>,
    /// Samples per second.
    pub sample_rate: u32,
}

/// Decodes `path` and mixes every channel down to mono (their mean).
pub fn decode_file(path: &Path) -> Result<Audio> {
    let fail = |reason: String| AudioError::Decode {
        path: path.display().to_string(),
        reason,
    };
    let file = File::open(path).map_err(|e| fail(e.to_string()))?;
    let mut hint = Hint::new();
    if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
        hint.with_extension(ext);
    }
    let stream = MediaSourceStream::new(Box::new(file), Default::default());
    let mut format = symphonia::default::get_probe()
        .probe(
            &hint,
            stream,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .map_err(|e| fail(format!("not a supported audio format ({e})")))?;
    let track = format
        .default_track(TrackType::Audio)
        .ok_or_else(|| fail("no audio track".into()))?;
    let params = track
        .codec_params
        .as_ref()
        .and_then(|p| p.audio())
        .ok_or_else(|| fail("no audio codec parameters".into()))?;
    let mut decoder = symphonia::default::get_codecs()
        .make_audio_decoder(params, &AudioDecoderOptions::default())
        .map_err(|e| fail(format!("unsupported codec ({e})")))?;
    let track_id = track.id;
    let mut mono = Vec::new();
    let mut rate = params.sample_rate;
    let mut interleaved: Vec<f32> = Vec::new();
    loop {
        let packet = match format.next_packet() {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(SymphoniaError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                break
            }
            Err(e) => return Err(fail(e.to_string())),
        };
        if packet.track_id != track_id {
            continue;
        }
        match decoder.decode(&packet) {
            Ok(buf) => {
                let channels = buf.spec().channels().count().max(1);
                rate = Some(buf.spec().rate());
                interleaved.resize(buf.samples_interleaved(), 0.0);
                buf.copy_to_slice_interleaved(&mut interleaved);
                mono.extend(
                    interleaved
                        .chunks_exact(channels)
                        .map(|frame| frame.iter().sum::<f32>() / channels as f32),
                );
            }
            // A corrupt packet is skipped, as players do.
            Err(SymphoniaError::DecodeError(_)) => continue,
            Err(e) => return Err(fail(e.to_string())),
        }
    }
    let sample_rate = rate.ok_or_else(|| fail("the sample rate is unknown".into()))?;
    if !(MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&sample_rate) {
        return Err(fail(format!(
            "the sample rate {sample_rate} Hz is outside the {MIN_SAMPLE_RATE}–{MAX_SAMPLE_RATE} Hz \
             Tessera reads (a corrupt header?)"
        )));
    }
    if let Some((index, value)) = first_non_finite(&mono) {
        return Err(fail(format!(
            "sample {index} is {value}, not a finite number (a corrupt float file?)"
        )));
    }
    Ok(Audio {
        samples: mono,
        sample_rate,
    })
}

/// `samples` at `from` Hz resampled to `to` Hz (band-limited FFT resampling; the resampler's
/// delay is trimmed, so the output is aligned with the input).
pub fn resample(samples: &[f32], from: u32, to: u32) -> Result<Vec<f32>> {
    let unsupported =
        |e: String| AudioError::Unsupported(format!("resampling {from} Hz to {to} Hz: {e}"));
    for rate in [from, to] {
        if !(MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&rate) {
            return Err(unsupported(format!(
                "rates from {MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE} Hz are supported"
            )));
        }
    }
    if let Some((index, value)) = first_non_finite(samples) {
        return Err(AudioError::NonFinite { index, value });
    }
    if from == to || samples.is_empty() {
        return Ok(samples.to_vec());
    }
    // Both sides fixed: with a fixed input side rubato 4's process_all left a glitch in the
    // first few hundred output samples (measured against soxr on a 44.1 kHz chirp).
    let mut resampler = Fft::<f32>::new(from as usize, to as usize, 1024, 1, FixedSync::Both)
        .map_err(|e| unsupported(e.to_string()))?;
    let mut out = vec![0f32; resampler.process_all_needed_output_len(samples.len())];
    let input =
        InterleavedSlice::new(samples, 1, samples.len()).map_err(|e| unsupported(e.to_string()))?;
    let capacity = out.len();
    let mut output =
        InterleavedSlice::new_mut(&mut out, 1, capacity).map_err(|e| unsupported(e.to_string()))?;
    let (_, written) = resampler
        .process_all_into_buffer(&input, &mut output, samples.len(), None)
        .map_err(|e| unsupported(e.to_string()))?;
    out.truncate(written);
    Ok(out)
}

/// The first sample that is NaN or infinite, with its index.
pub(crate) fn first_non_finite(samples: &[f32]) -> Option<(usize, f32)> {
    samples
        .iter()
        .position(|v| !v.is_finite())
        .map(|i| (i, samples[i]))
}

/// Decodes `path` to mono 16 kHz, Whisper's input.
pub fn load_16k(path: &Path) -> Result<Vec<f32>> {
    let audio = decode_file(path)?;
    resample(&audio.samples, audio.sample_rate, crate::SAMPLE_RATE as u32)
}
