//! tessera-audio: Whisper's audio front end — decoding, resampling to 16 kHz, and the log-mel
//! spectrogram computed on the GPU, the Whisper encoder, and the decoder with greedy decoding.
#![warn(missing_docs)]

mod align;
mod cpu;
mod decode;
mod decoder;
mod error;
mod mel;
mod transcribe;
mod whisper;

pub use align::{
    alignment_matrix, combine_into_words, dynamic_time_warping, median_filter, token_timestamps,
    Alignment, Word, WordTokens,
};
pub use cpu::log_mel_cpu_fft;
pub use decode::{decode_file, load_16k, resample, Audio, MAX_SAMPLE_RATE, MIN_SAMPLE_RATE};
pub use decoder::{
    BeamOptions, DecoderCache, Encoded, GreedyOptions, TimestampRules, WhisperDecoder,
    WhisperGeneration, WhisperTokenizer,
};
pub use error::{AudioError, Result};
pub use mel::{pad_or_trim, windows, LogMel, CHUNK_FRAMES, CHUNK_SAMPLES};
pub use tessera_kernels::stft::{mel_filters, HOP, SAMPLE_RATE};
pub use transcribe::{
    compression_ratio, long_form_features, long_form_features_async, split_segments, transcribe,
    transcribe_async, window_features, Progress, Segment, TranscribeOptions, WindowReport,
    TIME_PRECISION,
};
pub use whisper::{WhisperConfig, WhisperEncoder};
