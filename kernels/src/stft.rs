//! Launchers for `shaders/stft.wgsl` and `shaders/mel.wgsl` — Whisper's log-mel front end
//! around two matmuls (the DFT against a cos/−sin basis, then the mel filterbank) — with the
//! filterbank and basis computed as librosa and torch.stft do, and a CPU reference.

use bytemuck::{Pod, Zeroable};

use crate::dtype::DType;
use crate::error::{KernelError, Result};
use crate::pool::GpuBuffer;
use crate::runtime::{Binding, Gpu, KernelKey, IN_OUT_BINDINGS};

/// Whisper's sample rate.
pub const SAMPLE_RATE: usize = 16_000;
/// Whisper's FFT size.
pub const N_FFT: usize = 400;
/// Whisper's hop between frames.
pub const HOP: usize = 160;
/// Frequency bins of an `N_FFT` real DFT.
pub const BINS: usize = N_FFT / 2 + 1;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct StftParams {
    clips: u32,
    samples: u32,
    frames: u32,
    n_fft: u32,
    hop: u32,
    bins: u32,
    total: u32,
    row_pitch: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct MelParams {
    clips: u32,
    frames: u32,
    mels: u32,
    out_frames: u32,
    partials: u32,
    row_pitch: u32,
    _pad: [u32; 2],
}

const PER_WORKGROUP: usize = 64 * 16;

/// Records one stft.wgsl entry over `total` outputs from `src` into `out`.
fn launch_stft(
    gpu: &Gpu,
    entry: &'static str,
    dtype: DType,
    (clips, samples, frames): (usize, usize, usize),
    total: usize,
    src: &GpuBuffer,
    out: &GpuBuffer,
) -> Result<()> {
    let (grid, row_pitch) = gpu.grid_1d(total, 256);
    let params = StftParams {
        clips: clips as u32,
        samples: samples as u32,
        frames: frames as u32,
        n_fft: N_FFT as u32,
        hop: HOP as u32,
        bins: BINS as u32,
        total: total as u32,
        row_pitch,
    };
    let kernel = gpu.kernel(&KernelKey {
        shader: "stft",
        source: crate::modules::STFT,
        entry,
        dtype,
        constants: vec![],
        bindings: IN_OUT_BINDINGS,
    })?;
    gpu.dispatch(
        &kernel,
        &[src.into(), out.into()],
        bytemuck::bytes_of(&params),
        grid,
    )
}

/// Frames of each clip: `1 + samples / HOP` centred frames (reflect padding of `N_FFT/2`).
pub fn frame_count(samples: usize) -> usize {
    1 + samples / HOP
}

/// Records windowed, reflect-padded frames `[clips, frame_count, N_FFT]` of `clips` clips of
/// `samples` f32 samples each.
pub fn frames(
    gpu: &Gpu,
    dtype: DType,
    pcm: &GpuBuffer,
    clips: usize,
    samples: usize,
    out: &GpuBuffer,
) -> Result<()> {
    if samples <= N_FFT / 2 {
        return Err(KernelError::Shape {
            op: "stft",
            detail: format!(
                "reflect padding needs more than {} samples, got {samples}",
                N_FFT / 2
            ),
        });
    }
    let frames = frame_count(samples);
    let total = clips * frames * N_FFT;
    if ((clips * samples * 4) as u64) > pcm.len_bytes()
        || ((total * dtype.size()) as u64) > out.len_bytes()
    {
        return Err(KernelError::Shape {
            op: "stft",
            detail: "buffers too small".into(),
        });
    }
    launch_stft(
        gpu,
        "frames",
        dtype,
        (clips, samples, frames),
        total,
        pcm,
        out,
    )
}

/// Records `power[r, k] = spec[r, k]² + spec[r, BINS + k]²` for `rows` rows of an f32
/// `[rows, 2·BINS]` DFT.
pub fn power(
    gpu: &Gpu,
    dtype: DType,
    spec: &GpuBuffer,
    rows: usize,
    out: &GpuBuffer,
) -> Result<()> {
    let total = rows * BINS;
    if ((rows * 2 * BINS * 4) as u64) > spec.len_bytes()
        || ((total * dtype.size()) as u64) > out.len_bytes()
    {
        return Err(KernelError::Shape {
            op: "stft",
            detail: "buffers too small".into(),
        });
    }
    launch_stft(gpu, "power", dtype, (1, 0, rows), total, spec, out)
}

/// Records Whisper's normalisation of f32 mel energies `[clips, frames, mels]` (overwritten
/// with their log10) into `out` `[clips, mels, frames − 1]`.
pub fn log_mel(
    gpu: &Gpu,
    dtype: DType,
    mel: &GpuBuffer,
    clips: usize,
    frames: usize,
    mels: usize,
    out: &GpuBuffer,
) -> Result<()> {
    if frames < 2 || mels == 0 || clips == 0 {
        return Err(KernelError::Shape {
            op: "log_mel",
            detail: format!("needs at least 2 frames and 1 mel, got {frames} and {mels}"),
        });
    }
    let out_frames = frames - 1;
    if ((clips * frames * mels * 4) as u64) > mel.len_bytes()
        || ((clips * mels * out_frames * dtype.size()) as u64) > out.len_bytes()
    {
        return Err(KernelError::Shape {
            op: "log_mel",
            detail: "buffers too small".into(),
        });
    }
    let partials = (frames * mels).div_ceil(PER_WORKGROUP);
    let maxima = gpu.alloc("log_mel", ((clips * (partials + 1)) * 4) as u64)?;
    let key = |entry| KernelKey {
        shader: "mel",
        source: crate::modules::MEL,
        entry,
        dtype,
        constants: vec![],
        bindings: &[
            (0, Binding::ReadWrite),
            (1, Binding::ReadWrite),
            (2, Binding::ReadWrite),
            (3, Binding::Params),
        ],
    };
    let (grid, row_pitch) = gpu.grid_1d(clips * mels * out_frames, 256);
    let params = MelParams {
        clips: clips as u32,
        frames: frames as u32,
        mels: mels as u32,
        out_frames: out_frames as u32,
        partials: partials as u32,
        row_pitch,
        _pad: [0; 2],
    };
    let bytes = bytemuck::bytes_of(&params);
    let buffers = [mel.into(), (&maxima).into(), out.into()];
    gpu.dispatch(
        &*gpu.kernel(&key("log_partial_max"))?,
        &buffers,
        bytes,
        [partials as u32, clips as u32, 1],
    )?;
    gpu.dispatch(
        &*gpu.kernel(&key("clip_max"))?,
        &buffers,
        bytes,
        [clips as u32, 1, 1],
    )?;
    gpu.dispatch(&*gpu.kernel(&key("normalize"))?, &buffers, bytes, grid)
}

/// The real-DFT basis `[2·BINS, N_FFT]`: rows `cos(2πki/N)` for k in 0..BINS, then
/// `−sin(2πki/N)`, so `frames · basisᵀ` is `[re | im]` of torch.stft.
pub fn dft_basis() -> Vec<f32> {
    let mut basis = vec![0f32; 2 * BINS * N_FFT];
    for k in 0..BINS {
        for i in 0..N_FFT {
            // Reduce k·i mod N first so the angle stays exact.
            let angle = 2.0 * std::f64::consts::PI * ((k * i) % N_FFT) as f64 / N_FFT as f64;
            basis[k * N_FFT + i] = angle.cos() as f32;
            basis[(BINS + k) * N_FFT + i] = (-angle.sin()) as f32;
        }
    }
    basis
}

fn hz_to_mel(f: f64) -> f64 {
    // Slaney: linear below 1 kHz, logarithmic above.
    let f_sp = 200.0 / 3.0;
    let min_log_hz = 1000.0;
    let min_log_mel = min_log_hz / f_sp;
    let logstep = 6.4f64.ln() / 27.0;
    if f >= min_log_hz {
        min_log_mel + (f / min_log_hz).ln() / logstep
    } else {
        f / f_sp
    }
}

fn mel_to_hz(m: f64) -> f64 {
    let f_sp = 200.0 / 3.0;
    let min_log_hz = 1000.0;
    let min_log_mel = min_log_hz / f_sp;
    let logstep = 6.4f64.ln() / 27.0;
    if m >= min_log_mel {
        min_log_hz * (logstep * (m - min_log_mel)).exp()
    } else {
        f_sp * m
    }
}

/// `librosa.filters.mel(sr=16000, n_fft=400, n_mels, htk=False, norm="slaney")` as f32,
/// `[n_mels, BINS]`.
pub fn mel_filters(n_mels: usize) -> Vec<f32> {
    let sr = SAMPLE_RATE as f64;
    let fft_freqs: Vec<f64> = (0..BINS).map(|k| k as f64 * sr / N_FFT as f64).collect();
    let (lo, hi) = (hz_to_mel(0.0), hz_to_mel(sr / 2.0));
    let mel_f: Vec<f64> = (0..n_mels + 2)
        .map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (n_mels + 1) as f64))
        .collect();
    let mut weights = vec![0f32; n_mels * BINS];
    for m in 0..n_mels {
        let enorm = 2.0 / (mel_f[m + 2] - mel_f[m]);
        for (k, &f) in fft_freqs.iter().enumerate() {
            let lower = (f - mel_f[m]) / (mel_f[m + 1] - mel_f[m]);
            let upper = (mel_f[m + 2] - f) / (mel_f[m + 2] - mel_f[m + 1]);
            weights[m * BINS + k] = (lower.min(upper).max(0.0) * enorm) as f32;
        }
    }
    weights
}

/// CPU reference of the whole front end for one clip (f64 DFT): `[n_mels, frames − 1]`.
pub fn log_mel_cpu(samples: &[f32], n_mels: usize) -> Vec<f32> {
    let n = samples.len();
    let frames = frame_count(n);
    let filters = mel_filters(n_mels);
    let pad = N_FFT / 2;
    let reflect = |s: isize| -> f64 {
        let mut s = s;
        if s < 0 {
            s = -s;
        }
        if s >= n as isize {
            s = 2 * (n as isize - 1) - s;
        }
        samples[s as usize] as f64
    };
    let (cos, sin): (Vec<f64>, Vec<f64>) = (0..N_FFT)
        .map(|j| {
            let a = 2.0 * std::f64::consts::PI * j as f64 / N_FFT as f64;
            (a.cos(), a.sin())
        })
        .unzip();
    let mut logs = vec![0f64; n_mels * (frames - 1)];
    for t in 0..frames - 1 {
        let frame: Vec<f64> = (0..N_FFT)
            .map(|i| {
                let w = 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / N_FFT as f64).cos();
                w * reflect((t * HOP + i) as isize - pad as isize)
            })
            .collect();
        let power: Vec<f64> = (0..BINS)
            .map(|k| {
                let (mut re, mut im) = (0.0, 0.0);
                for (i, x) in frame.iter().enumerate() {
                    re += x * cos[(k * i) % N_FFT];
                    im -= x * sin[(k * i) % N_FFT];
                }
                re * re + im * im
            })
            .collect();
        for m in 0..n_mels {
            let e: f64 = (0..BINS)
                .map(|k| filters[m * BINS + k] as f64 * power[k])
                .sum();
            logs[m * (frames - 1) + t] = e.max(1e-10).log10();
        }
    }
    let top = logs.iter().cloned().fold(f64::MIN, f64::max);
    logs.iter()
        .map(|&y| ((y.max(top - 8.0) + 4.0) / 4.0) as f32)
        .collect()
}
