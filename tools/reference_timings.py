"""PyTorch reference timings for the shapes and models of `tessera bench matmul` and
`tessera bench models`, on the same machine, for BENCHMARKS.md.

    python tools/reference_timings.py [--device cuda|cpu] [--dtype f32|f16] > timings.json

Matmuls are C = A·Bᵀ with B as [N, K] (torch.nn.functional.linear, as Tessera's benchmark).
Models are the transformers implementations built from the same configs with random weights
(ViT-B/16 at batch 1 and 8, CLIP ViT-B/32 image tower and text tower at 8 × 77 tokens, Whisper
tiny and base encoders on 30 s), in eval mode without gradients, eager. f32 runs with TF32
off, so the products are the f32 arithmetic Tessera does. Each figure is the median of the
wall time of one call including a device synchronisation, after warm-up runs.
"""

import argparse
import json
import statistics
import sys
import time

import torch
import transformers

MATMULS = [
    (1024, 1024, 1024),
    (2048, 2048, 2048),
    (197, 3072, 768),
    (1500, 1536, 384),
    (77, 2048, 512),
    (1, 4096, 4096),
]


def median_ms(fn, sync, warmup=5, min_runs=10, budget_s=2.0):
    for _ in range(warmup):
        fn()
    sync()
    samples = []
    start = time.perf_counter()
    while len(samples) < min_runs or (time.perf_counter() - start < budget_s and len(samples) < 200):
        t = time.perf_counter()
        fn()
        sync()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples) * 1e3


def models(device, dtype):
    out = {}
    vit = transformers.ViTConfig(num_labels=1000)
    out["vit-b16"] = (transformers.ViTForImageClassification(vit), "pixels", 1, 224)
    out["vit-b16-b8"] = (out["vit-b16"][0], "pixels", 8, 224)
    clip = transformers.CLIPModel(transformers.CLIPConfig())
    out["clip-b32-image"] = (clip.vision_model, "pixels", 1, 224)
    out["clip-b32-text"] = (clip.text_model, "ids", 8, 77)
    for name, (d, layers, heads, ffn) in {
        "whisper-tiny": (384, 4, 6, 1536),
        "whisper-base": (512, 6, 8, 2048),
    }.items():
        cfg = transformers.WhisperConfig(
            d_model=d,
            encoder_layers=layers,
            encoder_attention_heads=heads,
            decoder_attention_heads=heads,
            encoder_ffn_dim=ffn,
            decoder_layers=1,
        )
        out[name] = (transformers.WhisperModel(cfg).get_encoder(), "mel", 1, 3000)
    for name, (model, kind, batch, size) in out.items():
        model = model.to(device=device, dtype=dtype).eval()
        if kind == "pixels":
            x = torch.rand(batch, 3, size, size, device=device, dtype=dtype)
        elif kind == "ids":
            x = torch.randint(0, 49407, (batch, size), device=device)
        else:
            x = torch.rand(batch, 80, size, device=device, dtype=dtype) - 0.5
        yield name, batch, model, x


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="f32", choices=["f32", "f16"])
    args = ap.parse_args()
    device = torch.device(args.device)
    dtype = torch.float32 if args.dtype == "f32" else torch.float16
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    rows = []
    with torch.no_grad():
        for m, n, k in MATMULS:
            a = torch.randn(m, k, device=device, dtype=dtype)
            b = torch.randn(n, k, device=device, dtype=dtype)
            ms = median_ms(lambda: torch.nn.functional.linear(a, b), sync)
            rows.append({
                "kernel": "torch.linear", "m": m, "n": n, "k": k, "dtype": args.dtype,
                "median_ms": ms, "gflops": 2 * m * n * k / ms / 1e6,
            })
            print(f"{m}x{n}x{k}: {ms:.4f} ms", file=sys.stderr)
        for model_name, batch, model, x in models(device, dtype):
            ms = median_ms(lambda: model(x), sync)
            rows.append({"model": model_name, "batch": batch, "dtype": args.dtype, "median_ms": ms})
            print(f"{model_name}: {ms:.3f} ms", file=sys.stderr)
    json.dump({"device": name, "torch": torch.__version__,
               "transformers": transformers.__version__, "rows": rows}, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
