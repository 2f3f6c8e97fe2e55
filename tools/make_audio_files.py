"""Audio files in several formats for the decoding tests, and a 44.1 kHz stereo reference.

Run from the repository root with the tools venv (see tools/README.md):

    tools/.venv/bin/python tools/make_audio_files.py

Writes tests/fixtures/audio/: a 0.5 s 440 Hz tone at 16 kHz as WAV (8-bit unsigned, 16-, 24-
and 32-bit PCM, 32-bit float), FLAC, OGG/Vorbis and MP3; a 1 s 44.1 kHz stereo chirp (float WAV); and
chirp44k.safetensors with whisper's 80-mel log-mel (first 120 frames) of that chirp mixed to
mono and resampled to 16 kHz by librosa (soxr_hq), the path Whisper users take.
"""

import os

import librosa
import numpy as np
import soundfile
import torch
import whisper
from safetensors.numpy import save_file

DIR = "tests/fixtures/audio"
os.makedirs(DIR, exist_ok=True)
t16 = np.arange(8000) / 16000
tone = (0.5 * np.sin(2 * np.pi * 440 * t16)).astype(np.float32)
for name, subtype, fmt in [
    ("tone_u8.wav", "PCM_U8", "WAV"),
    ("tone_16.wav", "PCM_16", "WAV"),
    ("tone_24.wav", "PCM_24", "WAV"),
    ("tone_32.wav", "PCM_32", "WAV"),
    ("tone_f32.wav", "FLOAT", "WAV"),
    ("tone.flac", "PCM_16", "FLAC"),
    ("tone.ogg", "VORBIS", "OGG"),
    ("tone.mp3", "MPEG_LAYER_III", "MP3"),
]:
    soundfile.write(os.path.join(DIR, name), tone, 16000, subtype=subtype, format=fmt)

t44 = np.arange(44100) / 44100
left = 0.4 * np.sin(2 * np.pi * (200 * t44 + 3000 * t44**2))
right = 0.3 * np.sin(2 * np.pi * 660 * t44)
stereo = np.stack([left, right], axis=1).astype(np.float32)
soundfile.write(os.path.join(DIR, "chirp44k_stereo.wav"), stereo, 44100, subtype="FLOAT")
mono = stereo.mean(axis=1)
at16k = librosa.resample(mono, orig_sr=44100, target_sr=16000, res_type="soxr_hq")
ref = whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(at16k)), n_mels=80).numpy()
save_file(
    {"tone": tone, "mel_head": np.ascontiguousarray(ref[:, :120])},
    os.path.join(DIR, "reference.safetensors"),
)
print(sorted(os.listdir(DIR)))
