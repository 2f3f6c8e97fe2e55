"""Token- and word-level timestamps of transformers' Whisper, on the timestamp fixture.

Run after make_whisper_timestamp_fixtures.py: it loads that checkpoint
(tests/fixtures/models/whisper_timestamps), gives its generation config alignment heads (written
back to generation_config.json; make_whisper_timestamp_fixtures.py writes the same ones), and
records what transformers computes from the cross-attention of those heads:

  generate(return_timestamps=True, return_token_timestamps=True, return_segments=True) with the
  feature extractor's attention mask (so the attention is cropped to the recording), on the
  timestamp fixture's 12 s and 75 s clips (greedy), the 75 s clip by beam search (4 beams), and
  a 4 s clip whose later windows start past its end (transformers then cuts the attention with
  a negative bound):
  every segment's tokens and their `token_timestamps`; and the matrix dynamic time warping
  aligned in the 12 s clip's first window.

  `_median_filter` and `_dynamic_time_warping` on small random matrices.

  `_combine_tokens_into_words` (the ASR pipeline's word grouping) on hand-made token sequences
  with a byte-level tokenizer of the same ids (tokenizer_words.json: words that start with a
  space, word pieces, punctuation, and a character split over two tokens), by spaces and by
  characters (the languages written without spaces).

Written to tests/fixtures/models/whisper_timestamps/: tokenizer_words.json,
words_reference.safetensors (<case>_tokens, <case>_lengths, <case>_times, short_matrix) and
words_reference.json.

    tools/.venv/bin/python tools/make_whisper_word_fixtures.py
"""

import json

import numpy as np
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizer
from transformers.models.whisper import generation_whisper
from transformers.models.whisper.tokenization_whisper import _combine_tokens_into_words

from make_whisper_timestamp_fixtures import (ALIGNMENT_HEADS, BEAMS, EN, EOS, MAX_NEW_TOKENS, NOTS,
                                             PATH, SOT, TS_BEGIN, clip, special_names)

SYLLABLES = [c + v for c in "tkmrsnpl" for v in "aeiou"]
# Byte-level forms ("Ġ" is a space): words with a leading space, pieces, punctuation, and "é"
# (bytes C3 A9, "Ã" "©") split over two tokens, once after a space.
WORD_TEXTS = (["Ġ" + s for s in SYLLABLES[:18]] + SYLLABLES[18:36]
              + [",", ".", "?", "Ġ(", ")", "'", "Ġ\"", "-", "Ġ-", "ĠÃ", "©", "Ã", "Ġ!"])


def word_tokenizer():
    vocab = {t: i for i, t in enumerate(WORD_TEXTS)}
    names = special_names()
    vocab.update({v: k for k, v in names.items()})
    tok = Tokenizer(models.BPE(vocab, []))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([names[k] for k in sorted(names)])
    tok.save(f"{PATH}/tokenizer_words.json")
    return WhisperTokenizer(tokenizer_file=f"{PATH}/tokenizer_words.json")


def main():
    torch.manual_seed(11)
    model = WhisperForConditionalGeneration.from_pretrained(PATH, attn_implementation="eager")
    model.generation_config.alignment_heads = ALIGNMENT_HEADS
    model.generation_config.save_pretrained(PATH)
    fe = WhisperFeatureExtractor.from_pretrained(PATH)

    matrices = []
    dtw = generation_whisper._dynamic_time_warping

    def recording(matrix):
        matrices.append(matrix.copy())
        return dtw(matrix)

    generation_whisper._dynamic_time_warping = recording
    tensors = {}
    for case, seconds, beams in [("short", 12, 1), ("long", 75, 1), ("long_beams", 75, BEAMS),
                                 ("tiny", 4, 1)]:
        pcm = clip(seconds)
        inputs = fe(pcm, sampling_rate=16000, return_tensors="pt", return_attention_mask=True,
                    **({} if seconds <= 30 else {"truncation": False, "padding": "longest"}))
        matrices.clear()
        with torch.no_grad():
            out = model.generate(inputs["input_features"], attention_mask=inputs["attention_mask"],
                                 language="en", task="transcribe", return_timestamps=True,
                                 return_token_timestamps=True, return_segments=True,
                                 max_new_tokens=MAX_NEW_TOKENS, num_beams=beams)
        segs = out["segments"][0]
        tensors[f"{case}_tokens"] = torch.tensor([int(t) for s in segs for t in s["tokens"].tolist()],
                                                 dtype=torch.int32)
        tensors[f"{case}_lengths"] = torch.tensor([len(s["tokens"]) for s in segs], dtype=torch.int32)
        tensors[f"{case}_times"] = torch.cat([s["token_timestamps"] for s in segs]).to(torch.float32)
        tensors[f"{case}_frames"] = inputs["attention_mask"].sum(-1).to(torch.int32)
        print(case, len(segs), "segments", [float(s["start"]) for s in segs],
              tensors[f"{case}_times"][:12].tolist())
        if case == "short":
            # DTW gets the negated matrix in f64; kept as the f32 values it came from.
            tensors["short_matrix"] = torch.from_numpy(-matrices[0]).to(torch.float32).contiguous()
    generation_whisper._dynamic_time_warping = dtw

    rng = np.random.default_rng(5)
    filters = []
    for rows, cols in [(3, 11), (5, 4), (2, 3), (4, 30)]:
        x = rng.standard_normal((rows, cols)).astype(np.float32)
        y = generation_whisper._median_filter(torch.from_numpy(x)[None, None], 7)[0, 0]
        filters.append({"input": x.tolist(), "output": y.tolist()})
    warps = []
    for rows, cols in [(1, 1), (1, 5), (4, 1), (6, 9), (12, 40), (3, 3)]:
        x = rng.standard_normal((rows, cols))
        if rows == 3:
            x[:] = 0.25  # all ties
        text, time = dtw(x)
        warps.append({"matrix": x.tolist(), "text": text.tolist(), "time": time.tolist()})

    tok = word_tokenizer()
    groups = []
    for tokens, language in [
        ([0, 21, 36, 3, 39, 5, 40, 37], "english"),
        ([18, 0, 19, 20, 38, 1, 41, 22, 42, 23, 42], "english"),
        ([45, 46, 2, 47, 46, 24, 43, 25, 44, 6, 48], "english"),
        ([36, 0, 37, 37, 1, 39, 40, 7], "english"),
        ([0, 47, 46, 21, 45, 46, 36], "japanese"),
        ([47, 47, 46, 46, 3], "chinese"),
        ([2], "english"),
    ]:
        words, _, indices = _combine_tokens_into_words(tok, tokens, language)
        groups.append({"tokens": tokens, "language": language, "words": words,
                       "indices": indices})
        print(language, tokens, words, indices)

    save_file(tensors, f"{PATH}/words_reference.safetensors")
    with open(f"{PATH}/words_reference.json", "w") as f:
        json.dump({"alignment_heads": ALIGNMENT_HEADS, "median_filters": filters,
                   "warps": warps, "groups": groups}, f)


if __name__ == "__main__":
    main()
