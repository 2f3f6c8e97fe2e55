//! Whisper's log-mel spectrogram on the GPU: frames → DFT (a matmul against a cos/−sin basis,
//! as n_fft = 400 is not a power of two) → power → mel filterbank (a matmul) → log10, clamp to
//! max − 8 and (x + 4)/4, the max a GPU reduction.

use std::sync::Arc;

use tessera_kernels::stft::{self, dft_basis, frame_count, mel_filters, BINS, N_FFT};
use tessera_kernels::{DType, Gpu};
use tessera_tensor::Tensor;

use crate::error::{AudioError, Result};

/// Samples in Whisper's 30 s window at 16 kHz.
pub const CHUNK_SAMPLES: usize = 480_000;
/// Mel frames in Whisper's 30 s window.
pub const CHUNK_FRAMES: usize = 3000;

/// `samples` zero-padded or cut to `len`, as `whisper.pad_or_trim`.
pub fn pad_or_trim(samples: &[f32], len: usize) -> Vec<f32> {
    let mut out = samples[..samples.len().min(len)].to_vec();
    out.resize(len, 0.0);
    out
}

/// Consecutive 30 s windows of 16 kHz audio (the last zero-padded); one window for silence or
/// an empty clip.
pub fn windows(samples: &[f32]) -> Vec<Vec<f32>> {
    if samples.is_empty() {
        return vec![vec![0.0; CHUNK_SAMPLES]];
    }
    samples
        .chunks(CHUNK_SAMPLES)
        .map(|c| pad_or_trim(c, CHUNK_SAMPLES))
        .collect()
}

/// The log-mel front end for one mel count, with its DFT basis and filterbank on the GPU.
pub struct LogMel {
    gpu: Arc<Gpu>,
    basis: Tensor,
    filters: Tensor,
    n_mels: usize,
}

impl LogMel {
    /// The front end with `n_mels` Slaney mel bands (Whisper uses 80, large-v3 128).
    pub fn new(gpu: &Arc<Gpu>, n_mels: usize) -> Result<Self> {
        if n_mels == 0 || n_mels > 256 {
            return Err(AudioError::Unsupported(format!(
                "{n_mels} mel bands: use 80 or 128 (Whisper), at most 256"
            )));
        }
        Ok(LogMel {
            gpu: gpu.clone(),
            basis: Tensor::from_slice(gpu, &dft_basis(), &[2 * BINS, N_FFT], DType::F32)?,
            filters: Tensor::from_slice(gpu, &mel_filters(n_mels), &[n_mels, BINS], DType::F32)?,
            n_mels,
        })
    }

    /// The GPU it runs on.
    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    /// Mel bands.
    pub fn n_mels(&self) -> usize {
        self.n_mels
    }

    /// Whisper's input features of each 16 kHz clip, padded or cut to 30 s:
    /// `[clips, n_mels, 3000]`, all clips in one batch.
    pub fn whisper_features(&self, clips: &[&[f32]]) -> Result<Tensor> {
        let padded: Vec<Vec<f32>> = clips
            .iter()
            .map(|c| pad_or_trim(c, CHUNK_SAMPLES))
            .collect();
        let refs: Vec<&[f32]> = padded.iter().map(Vec::as_slice).collect();
        self.compute(&refs)
    }

    /// The log-mel of clips of one length (more than 200 samples): `[clips, n_mels, frames]`
    /// with `frames = samples / 160` (the last STFT frame dropped, as Whisper does).
    pub fn compute(&self, clips: &[&[f32]]) -> Result<Tensor> {
        let len = clips.first().map_or(0, |c| c.len());
        if clips.is_empty() || clips.iter().any(|c| c.len() != len) {
            return Err(AudioError::Unsupported(
                "log-mel batches need at least one clip and clips of one length".into(),
            ));
        }
        let gpu = &self.gpu;
        if let Some((index, value)) = clips
            .iter()
            .find_map(|c| crate::decode::first_non_finite(c))
        {
            return Err(AudioError::NonFinite { index, value });
        }
        let pcm: Vec<f32> = clips.iter().flat_map(|c| c.iter().copied()).collect();
        let upload = gpu.upload("log_mel", bytemuck::cast_slice(&pcm))?;
        let frames = frame_count(len);
        let rows = clips.len() * frames;
        let framed = Tensor::empty(gpu, &[rows, N_FFT], DType::F32)?;
        stft::frames(gpu, DType::F32, &upload, clips.len(), len, framed.buffer())?;
        let spectrum = framed.linear(&self.basis, None)?;
        let power = Tensor::empty(gpu, &[rows, BINS], DType::F32)?;
        stft::power(gpu, DType::F32, spectrum.buffer(), rows, power.buffer())?;
        let mel = power.linear(&self.filters, None)?;
        let out = Tensor::empty(gpu, &[clips.len(), self.n_mels, frames - 1], DType::F32)?;
        stft::log_mel(
            gpu,
            DType::F32,
            mel.buffer(),
            clips.len(),
            frames,
            self.n_mels,
            out.buffer(),
        )?;
        Ok(out)
    }
}
