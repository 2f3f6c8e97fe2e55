"""A tiny aMUSEd pipeline folder (diffusers' AmusedPipeline layout) with random weights, and the
outputs diffusers computes from it.

Run from the repository root with the tools venv (see tools/README.md):

    tools/.venv/bin/python tools/make_amused_fixtures.py

Writes tests/fixtures/models/amused/:
  model_index.json, text_encoder/ (CLIPTextModelWithProjection, f16), tokenizer/ (the real CLIP
  BPE vocabulary, pad token "!"), transformer/ (UVit2DModel, f32), vqvae/ (VQModel, f32),
  scheduler/ (AmusedScheduler), reference.safetensors
and tests/fixtures/models/amused_updown/transformer/ (a UVit2DModel with its down- and upsampling
blocks) with its own reference.safetensors.

Randomness: diffusers samples with torch.multinomial and Gumbel noise from torch's generator.
The reference replaces both with draws from uniforms saved in the file (torch.multinomial by the
inverse of the cumulative distribution, `gumbel_noise` by the same formula on the saved uniforms),
so a port that takes the same uniforms must give the same tokens and image.
"""

import json
import os
import shutil

import torch
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer

import diffusers.schedulers.scheduling_amused as sched_mod
from diffusers import AmusedPipeline, AmusedScheduler, UVit2DModel, VQModel
from make_model_fixtures import round_to

ROOT = "tests/fixtures/models"
torch.manual_seed(0)


def randomize(model):
    """Non-trivial values everywhere: norm weights near 1, matrices scaled by fan-in."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight") and p.dim() == 1:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif p.dim() >= 2 and "embedding" not in name and "embeddings" not in name:
                fan_in = p[0].numel()
                p.copy_(torch.randn_like(p) / fan_in**0.5)
            else:
                p.copy_(0.5 * torch.randn_like(p))
    return model.eval()


def text_encoder(path):
    config = CLIPTextConfig(
        vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=4, max_position_embeddings=77, hidden_act="quick_gelu",
        projection_dim=24, bos_token_id=0, eos_token_id=2, pad_token_id=1,
    )
    model = round_to(randomize(CLIPTextModelWithProjection(config)), torch.float16)
    model.to(torch.float16).save_pretrained(path)
    return model.to(torch.float32)


def tokenizer(path):
    src = f"{ROOT}/clip"
    tok = CLIPTokenizer(vocab=f"{src}/vocab.json", merges=f"{src}/merges.txt", model_max_length=77,
                        pad_token="!")
    tok.save_pretrained(path)
    # Keep the folder small: vocab.json + merges.txt are what CLIPTokenizer reads.
    if os.path.exists(f"{path}/tokenizer.json"):
        os.remove(f"{path}/tokenizer.json")
    for name in ["vocab.json", "merges.txt"]:
        shutil.copy(f"{src}/{name}", f"{path}/{name}")
    return CLIPTokenizer.from_pretrained(path)


def transformer(updown):
    return randomize(UVit2DModel(
        hidden_size=32, use_bias=False, cond_embed_dim=24, micro_cond_encode_dim=8,
        micro_cond_embed_dim=40, encoder_hidden_size=32, vocab_size=40, codebook_size=32,
        in_channels=16, block_out_channels=24, num_res_blocks=2, downsample=updown,
        upsample=updown, block_num_heads=3, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=48, layer_norm_eps=1e-6, ln_elementwise_affine=True, sample_size=4,
    ))


def vqvae():
    model = VQModel(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(16, 32, 32), layers_per_block=1,
        act_fn="silu", latent_channels=8, norm_num_groups=8, num_vq_embeddings=32, vq_embed_dim=None,
        lookup_from_codebook=True, force_upcast=True, mid_block_add_attention=False, norm_type="group",
        sample_size=16,
    )
    model = randomize(model)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("bias"):
                p.copy_(0.2 * torch.randn_like(p))
    return model


class Draws:
    """Uniforms handed out in order and kept for the file."""

    def __init__(self, seed):
        self.gen = torch.Generator().manual_seed(seed)
        self.multinomial = []
        self.gumbel = []

    def multinomial_fn(self, probs, num_samples, generator=None):
        assert num_samples == 1
        u = torch.rand(probs.shape[0], generator=self.gen, dtype=torch.float64).to(torch.float32)
        self.multinomial.append(u)
        c = torch.cumsum(probs.double(), -1)
        target = (u.double() * c[:, -1])[:, None]
        idx = (c <= target).sum(-1).clamp(max=probs.shape[-1] - 1)
        return idx[:, None]

    def gumbel_fn(self, t, generator=None):
        noise = torch.rand(t.shape, generator=self.gen, dtype=torch.float64).to(torch.float32)
        self.gumbel.append(noise)
        return -torch.log((-torch.log(noise.clamp(1e-20))).clamp(1e-20))


def with_draws(draws, fn):
    real_multinomial, real_gumbel = torch.multinomial, sched_mod.gumbel_noise
    torch.multinomial, sched_mod.gumbel_noise = draws.multinomial_fn, draws.gumbel_fn
    try:
        return fn()
    finally:
        torch.multinomial, sched_mod.gumbel_noise = real_multinomial, real_gumbel


def main():
    path = f"{ROOT}/amused"
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    te = text_encoder(f"{path}/text_encoder")
    tok = tokenizer(f"{path}/tokenizer")
    tr = transformer(False)
    tr.save_pretrained(f"{path}/transformer")
    vq = vqvae()
    vq.save_pretrained(f"{path}/vqvae")
    sch = AmusedScheduler(mask_token_id=39, masking_schedule="cosine")
    sch.save_pretrained(f"{path}/scheduler")
    pipe = AmusedPipeline(vqvae=vq, tokenizer=tok, text_encoder=te, transformer=tr, scheduler=sch)
    pipe.save_config(path)
    pipe.set_progress_bar_config(disable=True)

    ref = {}
    prompts = ["a photo of a cat", ""]
    enc = tok(prompts, padding="max_length", truncation=True, max_length=77, return_tensors="pt")
    with torch.no_grad():
        out = te(enc.input_ids, return_dict=True, output_hidden_states=True)
    ref["text_input_ids"] = enc.input_ids.to(torch.int32)
    ref["text_embeds"] = out.text_embeds
    ref["text_hidden_states"] = out.hidden_states[-2]

    # One transformer call: some tokens masked, CFG-style batch of the two prompts.
    ids = torch.randint(0, 32, (2, 4, 4))
    ids[0, :2] = 39
    ids[1, 1:, 2:] = 39
    micro = torch.tensor([[16.0, 16.0, 0.0, 0.0, 6.0], [16.0, 16.0, 2.0, 3.0, 5.0]])
    with torch.no_grad():
        logits = tr(ids, encoder_hidden_states=out.hidden_states[-2], pooled_text_emb=out.text_embeds,
                    micro_conds=micro)
    ref.update(transformer_input_ids=ids.to(torch.int32), micro_conds=micro, transformer_logits=logits)

    # The VQ-GAN decoder on a square and a non-square grid of codebook indices.
    for name, shape in [("vq", (2, 4, 4)), ("vq_wide", (1, 3, 5))]:
        tokens = torch.randint(0, 32, shape)
        with torch.no_grad():
            img = vq.decode(tokens, force_not_quantize=True, shape=(*shape, 8)).sample
        ref[f"{name}_tokens"] = tokens.to(torch.int32)
        ref[f"{name}_image"] = img

    # One scheduler step on guided logits.
    sch.set_timesteps(12, (2, 0))
    guided = logits[:1] + 3.0 * (logits[1:] - logits[:1])
    draws = Draws(1)
    step = with_draws(draws, lambda: sch.step(guided, sch.timesteps[3], ids[1:], generator=None))
    ref.update(step_logits=guided, step_sample=ids[1:].to(torch.int32),
               step_multinomial=draws.multinomial[0], step_gumbel=draws.gumbel[0],
               step_prev_sample=step.prev_sample.to(torch.int32),
               step_pred_original=step.pred_original_sample.to(torch.int32))

    # The whole pipeline: 6 steps, guidance 4, output as numpy in [0, 1].
    draws = Draws(2)
    image = with_draws(draws, lambda: pipe("a photo of a cat", num_inference_steps=6, guidance_scale=4.0,
                                           output_type="np").images)
    latents = []
    draws2 = Draws(2)
    with_draws(draws2, lambda: pipe("a photo of a cat", num_inference_steps=6, guidance_scale=4.0,
                                    output_type="latent", callback=lambda i, t, l: latents.append(l.clone())))
    ref.update(pipe_image=torch.from_numpy(image).contiguous(),
               pipe_tokens=latents[-1].to(torch.int32),
               pipe_multinomial=torch.stack(draws.multinomial), pipe_gumbel=torch.stack(draws.gumbel))
    save_file({k: v.contiguous() for k, v in ref.items()}, f"{path}/reference.safetensors")

    # Down- and upsampling blocks (the 512-pixel checkpoints' layout).
    path = f"{ROOT}/amused_updown"
    shutil.rmtree(path, ignore_errors=True)
    tr2 = transformer(True)
    tr2.save_pretrained(f"{path}/transformer")
    with torch.no_grad():
        logits2 = tr2(ids, encoder_hidden_states=out.hidden_states[-2], pooled_text_emb=out.text_embeds,
                      micro_conds=micro)
    save_file({"transformer_logits": logits2.contiguous()}, f"{path}/reference.safetensors")
    print(json.dumps({k: list(v.shape) for k, v in ref.items()}))


if __name__ == "__main__":
    main()
