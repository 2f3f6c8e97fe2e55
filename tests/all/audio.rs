//! Whisper's log-mel on the GPU against openai-whisper and transformers' WhisperFeatureExtractor
//! (fixtures from tools/make_audio_fixtures.py), and against the CPU reference.

use safetensors::SafeTensors;
use tessera::audio::{mel_filters, LogMel};
use tessera::kernels::stft::log_mel_cpu;

use crate::common::{gpu, values};

const FIXTURE: &[u8] = include_bytes!("../fixtures/log_mel.safetensors");
/// The bound on the normalised log-mel at 16 kHz input.
const TOL: f32 = 2e-3;
const HEAD: usize = 320;

fn load(f: &SafeTensors<'_>, name: &str) -> Vec<f32> {
    f.tensor(name)
        .unwrap_or_else(|_| panic!("fixture lacks {name}"))
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn max_abs(a: impl Iterator<Item = f32>, b: impl Iterator<Item = f32>) -> f32 {
    a.zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn mel_filters_match_whisper() {
    let f = SafeTensors::deserialize(FIXTURE).unwrap();
    for n_mels in [80, 128] {
        let want = load(&f, &format!("filters.{n_mels}"));
        let got = mel_filters(n_mels);
        assert_eq!(got.len(), want.len());
        let err = max_abs(got.iter().copied(), want.iter().copied());
        assert!(err < 1e-6, "{n_mels} mels: {err}");
    }
}

#[test]
fn log_mel_matches_whisper_and_transformers() {
    let f = SafeTensors::deserialize(FIXTURE).unwrap();
    let names: Vec<&str> = ["tone", "chirp", "silence", "clipping", "short", "speech"]
        .into_iter()
        .filter(|n| f.tensor(&format!("{n}.audio")).is_ok())
        .collect();
    assert!(
        names.contains(&"speech"),
        "the fixture should include espeak-ng speech"
    );
    let audio: Vec<Vec<f32>> = names
        .iter()
        .map(|n| load(&f, &format!("{n}.audio")))
        .collect();
    let clips: Vec<&[f32]> = audio.iter().map(Vec::as_slice).collect();
    for n_mels in [80, 128] {
        let front = LogMel::new(&gpu(), n_mels).unwrap();
        // Every clip in one batch.
        let got = front.whisper_features(&clips).unwrap();
        assert_eq!(got.shape(), &[clips.len(), n_mels, 3000]);
        let got = got.to_vec().unwrap();
        for (c, name) in names.iter().enumerate() {
            let refs: &[&str] = if n_mels == 80 {
                &["whisper80", "hf80"]
            } else {
                &["whisper128"]
            };
            for r in refs {
                let Ok(_) = f.tensor(&format!("{name}.{r}.head")) else {
                    continue;
                };
                let head = load(&f, &format!("{name}.{r}.head"));
                let last = load(&f, &format!("{name}.{r}.last"));
                let clip = &got[c * n_mels * 3000..(c + 1) * n_mels * 3000];
                let got_head =
                    (0..n_mels).flat_map(|m| clip[m * 3000..m * 3000 + HEAD].iter().copied());
                let err = max_abs(got_head, head.iter().copied());
                assert!(err <= TOL, "{name} vs {r}: max abs error {err}");
                let got_last = (0..n_mels).map(|m| clip[m * 3000 + 2999]);
                let err = max_abs(got_last, last.iter().copied());
                assert!(err <= TOL, "{name} vs {r}, last frame: {err}");
            }
        }
    }
}

#[test]
fn log_mel_matches_cpu_reference_at_other_lengths() {
    let front = LogMel::new(&gpu(), 80).unwrap();
    for len in [201, 1000, 16_000 + 37] {
        let x: Vec<f32> = values(len, len as u64).iter().map(|v| v * 0.3).collect();
        let got = front.compute(&[&x]).unwrap();
        assert_eq!(got.shape(), &[1, 80, len / 160]);
        let got = got.to_vec().unwrap();
        let want = log_mel_cpu(&x, 80);
        let err = max_abs(got.iter().copied(), want.iter().copied());
        assert!(err <= TOL, "{len} samples: {err}");
        // The realfft baseline computes the same thing.
        let fft = tessera::audio::log_mel_cpu_fft(&x, 80);
        let err = max_abs(fft.into_iter(), want.into_iter());
        assert!(err <= TOL, "realfft baseline, {len} samples: {err}");
    }
}

#[test]
fn log_mel_refuses_bad_input() {
    let front = LogMel::new(&gpu(), 80).unwrap();
    assert!(front.compute(&[&[0.0; 150]]).is_err());
    assert!(front.compute(&[&[0.0; 1000], &[0.0; 999]]).is_err());
    assert!(front.compute(&[]).is_err());
    assert!(LogMel::new(&gpu(), 0).is_err());
    // A NaN would turn the whole spectrogram column into NaN without a word.
    let mut clip = vec![0.1f32; 1000];
    clip[999] = f32::NAN;
    let err = front
        .compute(&[&[0.0; 1000], &clip])
        .unwrap_err()
        .to_string();
    assert!(err.contains("sample 999 of the audio is NaN"), "{err}");
}

const FILES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/audio");

fn reference(name: &str) -> Vec<f32> {
    let bytes = std::fs::read(format!("{FILES}/reference.safetensors")).unwrap();
    let f = SafeTensors::deserialize(&bytes).unwrap();
    load(&f, name)
}

#[test]
fn decodes_wav_flac_and_ogg() {
    let tone = reference("tone");
    // Bound per format: quantisation of 8/16/24-bit PCM, exact float, lossy Vorbis.
    for (file, tol) in [
        ("tone_u8.wav", 1.0 / 127.0),
        ("tone_16.wav", 1.0 / 32767.0),
        ("tone_24.wav", 1e-6),
        ("tone_32.wav", 1e-6),
        ("tone_f32.wav", 0.0),
        ("tone.flac", 1.0 / 32767.0),
        ("tone.ogg", 0.05),
    ] {
        let audio = tessera::audio::decode_file(std::path::Path::new(&format!("{FILES}/{file}")))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(audio.sample_rate, 16_000, "{file}");
        assert_eq!(audio.samples.len(), tone.len(), "{file}");
        let err = max_abs(audio.samples.iter().copied(), tone.iter().copied());
        assert!(err <= tol, "{file}: {err}");
    }
}

#[test]
fn decodes_mp3() {
    // MP3 adds encoder delay and padding, so the check is on the signal, not sample by sample:
    // a 440 Hz tone of amplitude 0.5 (RMS 0.354), 0.5 s.
    let audio =
        tessera::audio::decode_file(std::path::Path::new(&format!("{FILES}/tone.mp3"))).unwrap();
    assert_eq!(audio.sample_rate, 16_000);
    let n = audio.samples.len();
    assert!((8000..=8000 + 2 * 1152).contains(&n), "{n} samples");
    let middle = &audio.samples[n / 4..3 * n / 4];
    let rms = (middle.iter().map(|x| x * x).sum::<f32>() / middle.len() as f32).sqrt();
    assert!((rms - 0.354).abs() < 0.02, "rms {rms}");
    let crossings = middle
        .windows(2)
        .filter(|w| w[0] < 0.0 && w[1] >= 0.0)
        .count();
    let hz = crossings as f32 * 16_000.0 / middle.len() as f32;
    assert!((hz - 440.0).abs() < 10.0, "{hz} Hz");
}

#[test]
fn long_audio_splits_into_30_second_windows() {
    let audio = vec![0.25f32; 70 * 16_000];
    let w = tessera::audio::windows(&audio);
    assert_eq!(w.len(), 3);
    assert!(w.iter().all(|c| c.len() == 480_000));
    assert_eq!(w[2][10 * 16_000 - 1], 0.25);
    assert_eq!(w[2][10 * 16_000], 0.0);
    assert_eq!(tessera::audio::windows(&[]).len(), 1);
}

#[test]
fn resampled_stereo_44k_matches_librosa_path() {
    // The reference resamples with soxr (librosa); ours with rubato's FFT resampler. Both are
    // band-limited; they differ by the resamplers' filters, so the bound is looser than the
    // 2e-3 of 16 kHz input.
    let x = tessera::audio::load_16k(std::path::Path::new(&format!(
        "{FILES}/chirp44k_stereo.wav"
    )))
    .unwrap();
    assert!((x.len() as i64 - 16_000).abs() <= 1, "{} samples", x.len());
    let front = LogMel::new(&gpu(), 80).unwrap();
    let got = front.whisper_features(&[&x]).unwrap().to_vec().unwrap();
    let want = reference("mel_head");
    let head = 120;
    let got_head = (0..80).flat_map(|m| got[m * 3000..m * 3000 + head].iter().copied());
    let got_head: Vec<f32> = got_head.collect();
    // The clip's first and last frames see the resamplers' edge handling (soxr and rubato pad
    // the ends differently), so the comparison covers the frames in between.
    let interior = |v: &[f32]| -> Vec<f32> {
        (0..80)
            .flat_map(|m| v[m * head + 2..m * head + 98].to_vec())
            .collect()
    };
    let err = max_abs(interior(&got_head).into_iter(), interior(&want).into_iter());
    assert!(err <= 0.02, "max abs error {err}");
}

#[test]
fn unreadable_files_are_clear_errors() {
    let missing = tessera::audio::decode_file(std::path::Path::new("/nonexistent/clip.wav"))
        .unwrap_err()
        .to_string();
    assert!(missing.contains("/nonexistent/clip.wav"), "{missing}");
    let dir = std::env::temp_dir().join(format!("tessera-audio-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let junk = dir.join("junk.wav");
    std::fs::write(&junk, b"RIFF\x10\x00\x00\x00WAVEjunkjunk").unwrap();
    let err = tessera::audio::decode_file(&junk).unwrap_err().to_string();
    assert!(err.contains("junk.wav"), "{err}");

    // Headers and samples that decode but cannot be used: a sample rate of 1 Hz would resample
    // into billions of samples, one of 352 MHz would take minutes, and a NaN sample would stop
    // the resampler's FFT.
    let wav = std::fs::read(format!("{FILES}/tone_f32.wav")).unwrap();
    assert_eq!(&wav[12..16], b"fmt ");
    let patched = |name: &str, edit: &dyn Fn(&mut Vec<u8>)| {
        let mut bytes = wav.clone();
        edit(&mut bytes);
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        tessera::audio::load_16k(&path).unwrap_err().to_string()
    };
    for rate in [1u32, 352_844_100] {
        let err = patched("rate.wav", &|b| {
            b[24..28].copy_from_slice(&rate.to_le_bytes())
        });
        assert!(
            err.contains("rate.wav") && err.contains(&format!("sample rate {rate} Hz")),
            "{err}"
        );
    }
    let data = wav.windows(4).position(|w| w == b"data").unwrap() + 8;
    let err = patched("nan.wav", &|b| {
        b[data + 40..data + 44].copy_from_slice(&f32::NAN.to_le_bytes())
    });
    assert!(
        err.contains("nan.wav") && err.contains("sample 10 is NaN"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();

    // The same checks on samples given directly.
    let mut samples = vec![0.25f32; 4000];
    samples[7] = f32::INFINITY;
    let err = tessera::audio::resample(&samples, 8000, 16000)
        .unwrap_err()
        .to_string();
    assert!(err.contains("sample 7") && err.contains("inf"), "{err}");
    let err = tessera::audio::resample(&samples[..5], 1, 16000)
        .unwrap_err()
        .to_string();
    assert!(err.contains("1 Hz to 16000 Hz"), "{err}");
}
