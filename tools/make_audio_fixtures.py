"""Reference log-mel spectrograms from openai-whisper and transformers' WhisperFeatureExtractor.

Run from the repository root with the tools venv (see tools/README.md):

    tools/.venv/bin/python tools/make_audio_fixtures.py

Writes tests/fixtures/log_mel.safetensors: 16 kHz test signals (tone, chirp, silence, clipping,
a clip shorter than one frame, espeak-ng speech when espeak-ng is installed), whisper's mel
filters, and for each signal the first 320 frames and the last frame of
`whisper.log_mel_spectrogram(whisper.pad_or_trim(x), n_mels)` and of the feature extractor's
`input_features`, for 80 mels (and 128 for some).
"""

import os
import shutil
import subprocess
import tempfile

import numpy as np
import soundfile
import torch
import whisper
from safetensors.numpy import save_file
from transformers import WhisperFeatureExtractor

SR = 16000
FRAMES = 320
rng = np.random.default_rng(0)
t = lambda seconds: np.arange(int(seconds * SR)) / SR  # noqa: E731

signals = {
    "tone": 0.5 * np.sin(2 * np.pi * 440 * t(1.5)),
    "chirp": 0.4 * np.sin(2 * np.pi * (100 * t(2.0) + (6000 - 100) / (2 * 2.0) * t(2.0) ** 2)),
    "silence": np.zeros(SR),
    "clipping": np.clip(3 * np.sin(2 * np.pi * 220 * t(1.0)), -1, 1),
    "short": 0.1 * rng.standard_normal(100),
}
if shutil.which("espeak-ng"):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "speech.wav")
        subprocess.run(
            ["espeak-ng", "-w", path, "Tessera computes the log mel spectrogram on the GPU."],
            check=True,
        )
        audio, rate = soundfile.read(path, dtype="float32")
        # espeak-ng speaks at 22050 Hz; the reference is computed on librosa's resampling to 16 kHz
        import librosa

        signals["speech"] = librosa.resample(audio, orig_sr=rate, target_sr=SR, res_type="soxr_hq")

out = {}
for n_mels in (80, 128):
    out[f"filters.{n_mels}"] = whisper.audio.mel_filters("cpu", n_mels).numpy().astype(np.float32)
for name, x in signals.items():
    x = x.astype(np.float32)
    out[f"{name}.audio"] = x
    for n_mels in (80, 128) if name in ("tone", "chirp") else (80,):
        ref = whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(x)), n_mels=n_mels)
        ref = ref.numpy()
        out[f"{name}.whisper{n_mels}.head"] = np.ascontiguousarray(ref[:, :FRAMES])
        out[f"{name}.whisper{n_mels}.last"] = np.ascontiguousarray(ref[:, -1])
    fe = WhisperFeatureExtractor(feature_size=80)
    hf = fe(x, sampling_rate=SR, return_tensors="np")["input_features"][0]
    out[f"{name}.hf80.head"] = np.ascontiguousarray(hf[:, :FRAMES]).astype(np.float32)
    out[f"{name}.hf80.last"] = np.ascontiguousarray(hf[:, -1]).astype(np.float32)

save_file(out, "tests/fixtures/log_mel.safetensors")
print(sorted((k, v.shape) for k, v in out.items()))
