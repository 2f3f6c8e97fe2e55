"""Model folders for the model tests: tiny random instances of the transformers classes, saved as
Hub-style folders (config.json, safetensors, preprocessor and tokenizer files) with their inputs and
the outputs transformers computes.

Run from the repository root with the tools venv (see tools/README.md):

    tools/.venv/bin/python tools/make_model_fixtures.py

Writes under tests/fixtures/models/:
  vit/          ViTForImageClassification, f32 weights, 5 labels
  vit_base/     ViTModel with its pooler, f16 weights
  clip/         CLIPModel, bf16 weights, the real CLIP BPE vocabulary (open_clip's), tokenizer.json
                and vocab.json + merges.txt
  whisper/      WhisperModel, 80 mel bins, f32 weights
  whisper_v3/   WhisperForConditionalGeneration, 128 mel bins, f16 weights in sharded safetensors
  images/       PNG and JPEG inputs; speech.wav (espeak-ng) for Whisper
Each model folder has reference.safetensors with the inputs and transformers' outputs.
"""

import gzip
import json
import os
import subprocess

import numpy as np
import soundfile as sf
import torch
from PIL import Image
from safetensors.torch import save_file
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPImageProcessorPil,
    CLIPModel,
    CLIPTokenizer,
    ViTConfig,
    ViTForImageClassification,
    ViTImageProcessor,
    ViTImageProcessorPil,
    ViTModel,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperModel,
)

ROOT = "tests/fixtures/models"
torch.manual_seed(0)
rng = np.random.default_rng(0)


def randomize(model):
    """Non-trivial values everywhere: LayerNorm weights near 1, biases and embeddings random,
    matrices scaled by fan-in so attention is far from uniform."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "embed_positions" in name:
                continue  # Whisper's sinusoids, as in the real checkpoints
            if "norm" in name or "layrnorm" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p) if name.endswith("weight") else 0.2 * torch.randn_like(p))
            elif name.endswith("logit_scale"):
                continue
            elif p.dim() >= 2 and "embedding" not in name:
                fan_in = p[0].numel()
                p.copy_(torch.randn_like(p) / fan_in**0.5)
            else:
                p.copy_(0.5 * torch.randn_like(p))
    return model.eval()


def round_to(model, dtype):
    """Round the weights through the checkpoint dtype so the f32 reference sees what the file holds."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(dtype).to(torch.float32))
        for b in model.buffers():
            if b.is_floating_point():
                b.copy_(b.to(dtype).to(torch.float32))
    return model


def save_model(model, path, dtype, **kw):
    os.makedirs(path, exist_ok=True)
    model.to(dtype).save_pretrained(path, **kw)
    model.to(torch.float32)


def images():
    os.makedirs(f"{ROOT}/images", exist_ok=True)
    y, x = np.mgrid[0:40, 0:48]
    a = np.stack([x * 5, y * 6, (x + y) * 3], -1) + rng.integers(0, 40, size=(40, 48, 3))
    Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(f"{ROOT}/images/gradient.png")
    b = rng.integers(0, 256, size=(27, 21, 3), dtype=np.uint8)
    Image.fromarray(b).save(f"{ROOT}/images/noise.png")
    y, x = np.mgrid[0:50, 0:64]
    c = np.stack([128 + 100 * np.sin(x / 5), 128 + 100 * np.cos(y / 7), 80 + 0 * x], -1)
    Image.fromarray(c.astype(np.uint8)).save(f"{ROOT}/images/waves.jpg", quality=95)
    # The reference decodes the files exactly as the user's would be.
    return [f"{ROOT}/images/{n}" for n in ["gradient.png", "noise.png", "waves.jpg"]]


def load_rgb(paths):
    return [Image.open(p).convert("RGB") for p in paths]


def vit(paths):
    labels = ["tabby cat", "golden retriever", "sports car", "espresso", "volcano"]
    config = ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        image_size=32, patch_size=8, num_labels=5,
        id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)},
    )
    model = randomize(ViTForImageClassification(config))
    kw = dict(size={"height": 32, "width": 32}, resample=2, image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.25, 0.3])
    pil = ViTImageProcessorPil(**kw)
    fast = ViTImageProcessor(**kw)
    path = f"{ROOT}/vit"
    save_model(model, path, torch.float32)
    pil.save_pretrained(path)
    ims = load_rgb(paths)
    pv = pil(ims, return_tensors="pt")["pixel_values"]
    pv_fast = fast(ims, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        out = model(pixel_values=pv, output_hidden_states=True)
    save_file({
        "pixel_values": pv.contiguous(),
        "pixel_values_torchvision": pv_fast.contiguous(),
        "logits": out.logits.contiguous(),
        "last_hidden_state": model.vit.layernorm(out.hidden_states[-1]).contiguous(),
    }, f"{path}/reference.safetensors")

    base = round_to(randomize(ViTModel(config, add_pooling_layer=True)), torch.float16)
    path = f"{ROOT}/vit_base"
    save_model(base, path, torch.float16)
    pil.save_pretrained(path)
    with torch.no_grad():
        out = base(pixel_values=pv)
    save_file({
        "pixel_values": pv.contiguous(),
        "last_hidden_state": out.last_hidden_state.contiguous(),
        "pooler_output": out.pooler_output.contiguous(),
    }, f"{path}/reference.safetensors")


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def clip_tokenizer(path):
    """The real CLIP vocabulary, built from open_clip's BPE file the way its SimpleTokenizer does."""
    import open_clip

    bpe = os.path.join(os.path.dirname(open_clip.__file__), "bpe_simple_vocab_16e6.txt.gz")
    merges = gzip.open(bpe).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    tmp = "/tmp/clip_vocab"
    os.makedirs(tmp, exist_ok=True)
    with open(f"{tmp}/vocab.json", "w") as f:
        json.dump({t: i for i, t in enumerate(vocab)}, f, ensure_ascii=False)
    with open(f"{tmp}/merges.txt", "w") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    tok = CLIPTokenizer(vocab=f"{tmp}/vocab.json", merges=f"{tmp}/merges.txt", model_max_length=77)
    tok.save_pretrained(path)
    for name in ["vocab.json", "merges.txt"]:
        with open(f"{tmp}/{name}") as src, open(f"{path}/{name}", "w") as dst:
            dst.write(src.read())
    return tok


TEXTS = [
    "a photo of a cat",
    "A PHOTO of a DOG!!",
    "naïve café, 東京 and 🐱 emoji",
    "it's   don't\tmultiple spaces\nand newlines 123,456.78",
    "",
    "a very long caption " * 20,
]


def clip(paths):
    config = CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=77, hidden_act="quick_gelu",
                         bos_token_id=0, eos_token_id=2, pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8, hidden_act="quick_gelu"),
        projection_dim=16,
    )
    model = round_to(randomize(CLIPModel(config)), torch.bfloat16)
    path = f"{ROOT}/clip"
    save_model(model, path, torch.bfloat16)
    tok = clip_tokenizer(path)
    kw = dict(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    pil = CLIPImageProcessorPil(**kw)
    fast = CLIPImageProcessor(**kw)
    pil.save_pretrained(path)
    ims = load_rgb(paths)
    pv = pil(ims, return_tensors="pt")["pixel_values"]
    pv_fast = fast(ims, return_tensors="pt")["pixel_values"]
    enc = tok(TEXTS, padding=True, truncation=True, return_tensors="pt")
    with open(f"{path}/texts.json", "w") as f:
        json.dump({"texts": TEXTS, "input_ids": [
            [int(i) for i, m in zip(ids, mask) if m] for ids, mask in zip(enc["input_ids"], enc["attention_mask"])
        ]}, f, ensure_ascii=False, indent=1)
    with torch.no_grad():
        out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], pixel_values=pv)
    save_file({
        "pixel_values": pv.contiguous(),
        "pixel_values_torchvision": pv_fast.contiguous(),
        "image_embeds": out.image_embeds.contiguous(),
        "text_embeds": out.text_embeds.contiguous(),
        "logits_per_image": out.logits_per_image.contiguous(),
        "text_last_hidden_state": out.text_model_output.last_hidden_state.contiguous(),
        "vision_pooler_output": out.vision_model_output.pooler_output.contiguous(),
    }, f"{path}/reference.safetensors")


def speech():
    path = f"{ROOT}/images/speech.wav"
    subprocess.run(["espeak-ng", "-w", "/tmp/speech.wav", "Tessera runs Whisper on any GPU."], check=True)
    x, sr = sf.read("/tmp/speech.wav", dtype="float32")
    import librosa

    x = librosa.resample(x, orig_sr=sr, target_sr=16000)
    sf.write(path, x, 16000, subtype="PCM_16")
    x, _ = sf.read(path, dtype="float32")
    return path, x


def whisper(audio):
    def config(n_mels):
        return WhisperConfig(
            vocab_size=64, num_mel_bins=n_mels, d_model=32, encoder_layers=2, encoder_attention_heads=4,
            encoder_ffn_dim=64, decoder_layers=1, decoder_attention_heads=4, decoder_ffn_dim=64,
            max_source_positions=1500, max_target_positions=32,
            decoder_start_token_id=1, pad_token_id=0, bos_token_id=1, eos_token_id=2,
            suppress_tokens=[], begin_suppress_tokens=[],
        )

    for name, cls, n_mels, dtype, kw in [
        ("whisper", WhisperModel, 80, torch.float32, {}),
        ("whisper_v3", WhisperForConditionalGeneration, 128, torch.float16, {"max_shard_size": "60KB"}),
    ]:
        model = round_to(randomize(cls(config(n_mels))), dtype)
        path = f"{ROOT}/{name}"
        save_model(model, path, dtype, **kw)
        fe = WhisperFeatureExtractor(feature_size=n_mels)
        fe.save_pretrained(path)
        feats = fe(audio, sampling_rate=16000, return_tensors="pt")["input_features"]
        encoder = model.get_encoder()
        with torch.no_grad():
            out = encoder(feats).last_hidden_state
        save_file({"input_features": feats.contiguous(), "last_hidden_state": out.contiguous()},
                  f"{path}/reference.safetensors")


def main():
    paths = images()
    vit(paths)
    clip(paths)
    _, x = speech()
    whisper(x)


if __name__ == "__main__":
    main()
