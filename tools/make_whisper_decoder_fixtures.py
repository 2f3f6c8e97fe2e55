"""Reference outputs of the Whisper decoder for the fixture checkpoints made by
make_model_fixtures.py (run that first): transformers' WhisperForConditionalGeneration on the
same weights gives

  decoder_input_ids, logits   a teacher-forced forward over a fixed token sequence
  greedy_ids                  greedy decoding from the start token, with suppress_tokens and
                              begin_suppress_tokens masked as transformers' logits processors do

written to tests/fixtures/models/<name>/decoder_reference.safetensors. The toy checkpoints'
64-token vocabulary also gets a tokenizer.json (a word-level vocabulary of syllables with the
special tokens Whisper's has), and decoder_reference.json the text the `tokenizers` library
decodes from the greedy tokens, special tokens skipped.

    python tools/make_whisper_decoder_fixtures.py
"""

import json

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from safetensors.torch import load_file, save_file
from transformers import WhisperForConditionalGeneration

ROOT = "tests/fixtures/models"
PROMPT_IDS = [1, 5, 9, 33, 60, 2, 17, 40]
SUPPRESS = [5, 7]
BEGIN_SUPPRESS = [2, 11]


def greedy(model, encoder_out, start, eos, max_len):
    ids = [start]
    while len(ids) < max_len:
        with torch.no_grad():
            logits = model(encoder_outputs=(encoder_out,), decoder_input_ids=torch.tensor([ids])).logits[0, -1]
        logits[SUPPRESS] = -float("inf")
        if len(ids) == 1:
            logits[BEGIN_SUPPRESS] = -float("inf")
        nxt = int(torch.argmax(logits))
        ids.append(nxt)
        if nxt == eos:
            break
    return ids


def toy_tokenizer(path):
    specials = {0: "<|pad|>", 1: "<|startoftranscript|>", 2: "<|endoftext|>", 3: "<|notimestamps|>"}
    syllables = [c + v for c in "tkmrsnpl" for v in "aeiou"]
    vocab = {specials.get(i, syllables[i % len(syllables)] + ("" if i < 44 else "x")): i for i in range(64)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|pad|>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(list(specials.values()))
    tok.save(f"{path}/tokenizer.json")
    return tok


def main():
    for name in ["whisper", "whisper_v3"]:
        path = f"{ROOT}/{name}"
        model = WhisperForConditionalGeneration.from_pretrained(path, dtype=torch.float32).eval()
        ref = load_file(f"{path}/reference.safetensors")
        with torch.no_grad():
            encoder_out = model.get_encoder()(ref["input_features"]).last_hidden_state
            assert torch.allclose(encoder_out, ref["last_hidden_state"], atol=1e-4)
            ids = torch.tensor([PROMPT_IDS])
            logits = model(encoder_outputs=(encoder_out,), decoder_input_ids=ids).logits
        cfg = model.config
        out = greedy(model, encoder_out, cfg.decoder_start_token_id, cfg.eos_token_id, cfg.max_target_positions)
        print(name, "greedy", out)
        if name == "whisper":
            text = toy_tokenizer(path).decode(out, skip_special_tokens=True)
            print(name, "text", repr(text))
            with open(f"{path}/decoder_reference.json", "w") as f:
                json.dump({"greedy_text": text}, f)
        save_file({
            "decoder_input_ids": ids.to(torch.int32).contiguous(),
            "logits": logits.contiguous(),
            "greedy_ids": torch.tensor(out, dtype=torch.int32),
            "suppress_tokens": torch.tensor(SUPPRESS, dtype=torch.int32),
            "begin_suppress_tokens": torch.tensor(BEGIN_SUPPRESS, dtype=torch.int32),
        }, f"{path}/decoder_reference.safetensors")


if __name__ == "__main__":
    main()
