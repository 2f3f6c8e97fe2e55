"""Reference fixtures for the kernel tests, from the transformers implementations.

Run from the repository root with the tools venv (see tools/README.md):

    tools/.venv/bin/python tools/make_fixtures.py

Writes tests/fixtures/patch_embed.safetensors: tiny random ViT and CLIP vision embeddings
(weights, input images, the processor's pixel values and the embeddings transformers computes,
at the native size and at another size with interpolate_pos_encoding=True).
"""

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import CLIPImageProcessor, CLIPVisionConfig, ViTConfig, ViTImageProcessor
from transformers.models.clip.modeling_clip import CLIPVisionEmbeddings
from transformers.models.vit.modeling_vit import ViTEmbeddings

torch.manual_seed(0)
rng = np.random.default_rng(0)
out = {}


def vit():
    config = ViTConfig(hidden_size=32, num_attention_heads=4, patch_size=4, image_size=16, num_channels=3)
    emb = ViTEmbeddings(config).eval()
    with torch.no_grad():
        # Non-trivial values everywhere (the class token and positions start at zero).
        emb.cls_token.normal_()
        emb.position_embeddings.normal_()
        emb.patch_embeddings.projection.bias.normal_()
    proc = ViTImageProcessor(do_resize=False, image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.25, 0.3])
    out["vit.weight"] = emb.patch_embeddings.projection.weight.detach().clone()
    out["vit.bias"] = emb.patch_embeddings.projection.bias.detach().clone()
    out["vit.cls"] = emb.cls_token.detach().reshape(-1).clone()
    out["vit.pos"] = emb.position_embeddings.detach()[0].clone()
    for name, (h, w) in {"native": (16, 16), "resized": (24, 20)}.items():
        images = rng.integers(0, 256, size=(2, h, w, 3), dtype=np.uint8)
        pixel_values = proc(list(images), return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            emb_out = emb(pixel_values, interpolate_pos_encoding=(name != "native"))
        out[f"vit.{name}.image"] = torch.from_numpy(images)
        out[f"vit.{name}.out"] = emb_out.contiguous()


def clip():
    config = CLIPVisionConfig(hidden_size=32, num_attention_heads=4, patch_size=4, image_size=16)
    emb = CLIPVisionEmbeddings(config).eval()
    proc = CLIPImageProcessor(do_resize=False, do_center_crop=False, do_rescale=False)
    out["clip.weight"] = emb.patch_embedding.weight.detach().clone()
    out["clip.cls"] = emb.class_embedding.detach().clone()
    out["clip.pos"] = emb.position_embedding.weight.detach().clone()
    images = rng.random(size=(3, 16, 16, 3), dtype=np.float32)
    pixel_values = proc(list(images), return_tensors="pt", input_data_format="channels_last")[
        "pixel_values"
    ]
    with torch.no_grad():
        emb_out = emb(pixel_values)
    out["clip.native.image"] = torch.from_numpy(images)
    out["clip.native.out"] = emb_out.contiguous()


vit()
clip()
save_file(out, "tests/fixtures/patch_embed.safetensors")
print({k: tuple(v.shape) for k, v in out.items()})
