//! Whisper's log-mel on the CPU with realfft: the baseline a Rust user would write, for the
//! benchmarks, and a fallback where no GPU is wanted.

use realfft::RealFftPlanner;
use tessera_kernels::stft::{frame_count, mel_filters, BINS, HOP, N_FFT};

/// `[n_mels, samples / 160]` log-mel of one 16 kHz clip (more than 200 samples), computed as
/// Whisper does: centred reflect-padded frames, periodic Hann, |FFT|², Slaney mel, log10,
/// clamp to max − 8, (x + 4)/4.
pub fn log_mel_cpu_fft(samples: &[f32], n_mels: usize) -> Vec<f32> {
    let n = samples.len();
    let frames = frame_count(n) - 1;
    let filters = mel_filters(n_mels);
    let window: Vec<f32> = (0..N_FFT)
        .map(|i| 0.5 - 0.5 * (2.0 * std::f32::consts::PI * i as f32 / N_FFT as f32).cos())
        .collect();
    let fft = RealFftPlanner::<f32>::new().plan_fft_forward(N_FFT);
    let mut input = fft.make_input_vec();
    let mut spectrum = fft.make_output_vec();
    let mut power = vec![0f32; BINS];
    let mut out = vec![0f32; n_mels * frames];
    let reflect = |s: isize| -> f32 {
        let mut s = s.unsigned_abs();
        if s >= n {
            s = 2 * (n - 1) - s;
        }
        samples[s]
    };
    for t in 0..frames {
        for (i, v) in input.iter_mut().enumerate() {
            *v = window[i] * reflect((t * HOP + i) as isize - (N_FFT / 2) as isize);
        }
        fft.process(&mut input, &mut spectrum)
            .expect("buffers sized by the planner");
        for (p, c) in power.iter_mut().zip(&spectrum) {
            *p = c.norm_sqr();
        }
        for m in 0..n_mels {
            let e: f32 = filters[m * BINS..(m + 1) * BINS]
                .iter()
                .zip(&power)
                .map(|(f, p)| f * p)
                .sum();
            out[m * frames + t] = e.max(1e-10).log10();
        }
    }
    let top = out.iter().copied().fold(f32::MIN, f32::max);
    for v in &mut out {
        *v = (v.max(top - 8.0) + 4.0) / 4.0;
    }
    out
}
