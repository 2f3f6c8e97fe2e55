"""A Whisper checkpoint with timestamp tokens and transformers' transcriptions with timestamps.

The other Whisper fixtures have a 64-token vocabulary without timestamps. This one has Whisper's
layout in small: 49 text tokens, <|endoftext|> (49), <|startoftranscript|> (50), two languages,
the two tasks, <|startoflm|>, <|startofprev|>, <|nospeech|>, <|notimestamps|> (58), then the
1501 timestamps <|0.00|> ... <|30.00|> (59..1559). The weights are random (randomize() of
make_model_fixtures.py, the token table scaled up so the logits are far apart and an arg-max
does not hang on rounding).

transformers' `generate(return_timestamps=True, return_segments=True)` (greedy, language en)
transcribes two synthetic clips whose samples the Rust tests compute with the same formula:

  short   12 s: one padded 30 s window, decoded again from its last timestamp as
          transformers' sequential algorithm does
  long    75 s: long-form, the mel of the whole clip sliced into windows from `seek`
  long_beams  the same with beam search (4 beams)
  long_previous         each window prompted with the segments before it
                        (condition_on_prev_tokens=True)
  long_prompt_previous  the same after a prompt text (prompt_ids)
  short_prompt          the short clip with the prompt text before every window
  long_skip             fallback thresholds (one temperature) that skip windows as silence

and without timestamps, on the short clip: greedy decoding and beam search (4 beams, and 2 beams
with length penalty 0.5), the whole sequences (text_greedy, text_beams4, text_beams2),
and `_retrieve_segment` splits a few hand-made token sequences. Written to
tests/fixtures/models/whisper_timestamps/:
  config.json, generation_config.json, model.safetensors, tokenizer.json, preprocessor_config.json
  timestamps_reference.safetensors  per case: <case>_tokens (all segments' tokens, concatenated),
                                    <case>_lengths, <case>_start, <case>_end (f64), and
                                    <case>_features (every 50th frame of the input features)
  timestamps_reference.json         the split cases, the timestamp rule's masks after a few
                                    histories, the text of the long clip's segments, the prompt
                                    text's tokens, and the previous-text prompt of a long history

    tools/.venv/bin/python tools/make_whisper_timestamp_fixtures.py
"""

import json
import math
import os

import numpy as np
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    GenerationConfig,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
)
from transformers.generation.logits_process import WhisperTimeStampLogitsProcessor
from transformers.generation.logits_process import WhisperNoSpeechDetection
from transformers.models.whisper.generation_whisper import (
    _get_attr_from_logit_processors,
    _pad_to_max_length,
)

from make_model_fixtures import randomize

PATH = "tests/fixtures/models/whisper_timestamps"
TEXT = 49
EOS, SOT, EN, DE, TRANSLATE, TRANSCRIBE, SOLM, SOPREV, NOSPEECH, NOTS = range(49, 59)
TS_BEGIN = NOTS + 1
VOCAB = TS_BEGIN + 1501
MAX_NEW_TOKENS = 40
EMBED_SCALE = 1.0
EOS_LIFT = 0.6
# Every 50th frame of the input features is kept for the front end's test.
FEATURE_STRIDE = 50
BEAMS = 4
# The text the prompt_ids cases prompt with.
PROMPT_TEXT = "  ta ke tax "
# Fallback thresholds of the long_skip case, between this model's windows: the first keeps its
# segments, the others are skipped as silence (their no-speech probability ~3.5e-4 passes 3e-4
# while their average log-probability is below the threshold).
# The decoder heads whose cross-attention aligns tokens with the audio (word timestamps; see
# make_whisper_word_fixtures.py).
ALIGNMENT_HEADS = [[0, 1], [1, 0], [1, 3]]
SKIP = {"temperature": (0.0,), "logprob_threshold": -2.3045, "no_speech_threshold": 3e-4,
        "compression_ratio_threshold": 1.8}


def clip(seconds):
    """The test clip: a tone stepping through five pitches every 1.5 s under a slow swell,
    computed in f64 and rounded to f32 (the Rust tests compute the same)."""
    out = np.empty(seconds * 16000, dtype=np.float32)
    for i in range(out.size):
        t = i / 16000
        f = 220.0 * (1 + (i // 24000) % 5)
        env = 0.5 * (1.0 + math.sin(2.0 * math.pi * 0.37 * t))
        out[i] = env * 0.4 * math.sin(2.0 * math.pi * f * t)
    return out


def special_names():
    """The special and timestamp tokens' names by id."""
    names = {EOS: "<|endoftext|>", SOT: "<|startoftranscript|>", EN: "<|en|>", DE: "<|de|>",
             TRANSLATE: "<|translate|>", TRANSCRIBE: "<|transcribe|>", SOLM: "<|startoflm|>",
             SOPREV: "<|startofprev|>", NOSPEECH: "<|nospeech|>", NOTS: "<|notimestamps|>"}
    for i in range(1501):
        names[TS_BEGIN + i] = f"<|{i * 0.02:.2f}|>"
    return names


def tokenizer():
    syllables = [c + v for c in "tkmrsnpl" for v in "aeiou"]
    names = special_names()
    vocab = {syllables[i % 40] + ("" if i < 40 else "x"): i for i in range(TEXT)}
    vocab.update({v: k for k, v in names.items()})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens([names[k] for k in sorted(names)])
    tok.save(f"{PATH}/tokenizer.json")
    return tok


def segments_of(out):
    segs = out["segments"][0]
    tokens = [int(t) for s in segs for t in s["tokens"].tolist()]
    lengths = [len(s["tokens"]) for s in segs]
    start = [float(s["start"]) for s in segs]
    end = [float(s["end"]) for s in segs]
    return tokens, lengths, start, end


def main():
    os.makedirs(PATH, exist_ok=True)
    torch.manual_seed(7)
    config = WhisperConfig(
        vocab_size=VOCAB, num_mel_bins=80, d_model=32, encoder_layers=2, encoder_attention_heads=4,
        encoder_ffn_dim=64, decoder_layers=2, decoder_attention_heads=4, decoder_ffn_dim=64,
        max_source_positions=1500, max_target_positions=448,
        decoder_start_token_id=SOT, pad_token_id=EOS, bos_token_id=EOS, eos_token_id=EOS,
        suppress_tokens=[3, 7, SOPREV], begin_suppress_tokens=[5, EOS],
    )
    model = randomize(WhisperForConditionalGeneration(config))
    with torch.no_grad():
        model.model.decoder.embed_tokens.weight.mul_(EMBED_SCALE)
        # Lift the end token's logit everywhere (the final norm's bias along its embedding), so
        # that decoding ends by itself now and then rather than only at the length limit.
        e = model.model.decoder.embed_tokens.weight[EOS]
        model.model.decoder.layer_norm.bias.add_(EOS_LIFT * e / e.dot(e))
    model.save_pretrained(PATH, safe_serialization=True)
    generation = GenerationConfig(
        decoder_start_token_id=SOT, eos_token_id=EOS, bos_token_id=EOS, pad_token_id=EOS,
        suppress_tokens=[3, 7, SOPREV], begin_suppress_tokens=[5, EOS],
        no_timestamps_token_id=NOTS, max_initial_timestamp_index=50, max_length=448,
        is_multilingual=True, lang_to_id={"<|en|>": EN, "<|de|>": DE},
        task_to_id={"translate": TRANSLATE, "transcribe": TRANSCRIBE},
        prev_sot_token_id=SOPREV, alignment_heads=ALIGNMENT_HEADS,
    )
    generation.save_pretrained(PATH)
    model.generation_config = generation
    fe = WhisperFeatureExtractor(feature_size=80)
    fe.save_pretrained(PATH)
    tok = tokenizer()

    # What transformers' fallback check sees of each decoding (average log-probability,
    # compression ratio, no-speech probability), recorded for the cases with thresholds.
    judged = []
    need_fallback = WhisperForConditionalGeneration._need_fallback

    def recording(self, seq, outputs, index, processors, config, vocab_size, temperature):
        result = need_fallback(self, seq, outputs, index, processors, config, vocab_size, temperature)
        if config.logprob_threshold is None:
            return result
        no_speech = _get_attr_from_logit_processors(processors, WhisperNoSpeechDetection, "no_speech_prob")
        judged.append({
            "avg_logprob": float(self._retrieve_avg_logprobs(outputs[index]["scores"], seq, temperature)),
            "compression_ratio": self._retrieve_compression_ratio(seq, vocab_size),
            "no_speech_prob": float(no_speech[index]), "skip": bool(result[1]),
        })
        return result

    WhisperForConditionalGeneration._need_fallback = recording

    tensors = {}
    texts = []
    prompt_ids = [SOPREV] + tok.encode(" " + PROMPT_TEXT.strip(), add_special_tokens=False).ids
    for case, seconds, beams, condition, prompt, thresholds in [
        ("short", 12, 1, False, None, {}),
        ("long", 75, 1, False, None, {}),
        ("long_beams", 75, BEAMS, False, None, {}),
        ("long_previous", 75, 1, True, None, {}),
        ("long_prompt_previous", 75, 1, True, prompt_ids, {}),
        ("short_prompt", 12, 1, False, prompt_ids, {}),
        ("long_skip", 75, 1, False, None, SKIP),
    ]:
        pcm = clip(seconds)
        if seconds <= 30:
            inputs = fe(pcm, sampling_rate=16000, return_tensors="pt")
        else:
            inputs = fe(pcm, sampling_rate=16000, return_tensors="pt", truncation=False,
                        padding="longest", return_attention_mask=True)
        feats = inputs["input_features"]
        with torch.no_grad():
            out = model.generate(feats, attention_mask=inputs.get("attention_mask"), language="en",
                                 task="transcribe", return_timestamps=True, return_segments=True,
                                 max_new_tokens=MAX_NEW_TOKENS, num_beams=beams,
                                 condition_on_prev_tokens=condition,
                                 prompt_ids=None if prompt is None else torch.tensor(prompt),
                                 **thresholds)
        tokens, lengths, start, end = segments_of(out)
        print(case, feats.shape, len(lengths), "segments", list(zip(start, end))[:6])
        tensors[f"{case}_tokens"] = torch.tensor(tokens, dtype=torch.int32)
        tensors[f"{case}_lengths"] = torch.tensor(lengths, dtype=torch.int32)
        tensors[f"{case}_start"] = torch.tensor(start, dtype=torch.float64)
        tensors[f"{case}_end"] = torch.tensor(end, dtype=torch.float64)
        if case in ("short", "long"):
            tensors[f"{case}_features"] = feats[0, :, ::FEATURE_STRIDE].contiguous()
        if case == "long":
            texts = [tok.decode([t for t in s["tokens"].tolist() if t < TS_BEGIN])
                     for s in out["segments"][0]]

    # Without timestamps on the short clip's window (the timestamp tokens suppressed too: this
    # random model would emit them after <|notimestamps|>, which real checkpoints do not, and
    # transformers would then split the output at them): the tokens after the prompt, end
    # token left out, greedy and by beam search for two beam counts and length penalties.
    feats = fe(clip(12), sampling_rate=16000, return_tensors="pt")["input_features"]
    text_only = list(generation.suppress_tokens) + list(range(TS_BEGIN, VOCAB))
    for name, beams, penalty in [("text_greedy", 1, 1.0), (f"text_beams{BEAMS}", BEAMS, 1.0),
                                 ("text_beams2", 2, 0.5)]:
        with torch.no_grad():
            out = model.generate(feats, language="en", task="transcribe", num_beams=beams,
                                 length_penalty=penalty, max_new_tokens=MAX_NEW_TOKENS,
                                 suppress_tokens=text_only)
        print(name, penalty, out[0].tolist())
        tensors[name] = out[0].to(torch.int32).contiguous()

    # _retrieve_segment on hand-made windows: (tokens, seek in frames, frames in the window).
    cases = []
    for tokens, seek, frames in [
        ([TS_BEGIN, 3, 4, TS_BEGIN + 100, TS_BEGIN + 100, 8, TS_BEGIN + 250], 0, 3000),
        ([TS_BEGIN + 5, 3, 4, TS_BEGIN + 100, TS_BEGIN + 120, 8, 9], 1800, 3000),
        ([TS_BEGIN + 5, 3, TS_BEGIN + 40, TS_BEGIN + 40, 8, TS_BEGIN + 90, TS_BEGIN + 95, 9,
          TS_BEGIN + 300, TS_BEGIN + 300], 4400, 2567),
        ([TS_BEGIN, 3, 4, 5], 0, 2999),
        ([TS_BEGIN + 2, 3, 4, TS_BEGIN + 77], 6000, 1234),
        ([3, 4, 5], 600, 3000),
        ([], 0, 17),
    ]:
        seq = torch.tensor(tokens, dtype=torch.long)
        time_offset = torch.tensor([seek], dtype=torch.float64) * 0.02 / 2
        segs, advance = WhisperForConditionalGeneration._retrieve_segment(
            seek_sequence=seq, seek_outputs=[None], time_offset=time_offset, timestamp_begin=TS_BEGIN,
            seek_num_frames=torch.tensor([frames]), time_precision=0.02, time_precision_features=0.01,
            input_stride=2, prev_idx=0, idx=0, return_token_timestamps=False,
            decoder_input_ids=torch.zeros((1, 4), dtype=torch.long))
        cases.append({
            "tokens": tokens, "seek": seek, "frames": frames, "advance": int(advance),
            "segments": [{"start": float(s["start"]), "end": float(s["end"]),
                          "tokens": [int(t) for t in s["tokens"].tolist()]} for s in segs],
        })
    # WhisperTimeStampLogitsProcessor's masks (its log-probability rule off) after hand-made
    # histories following the prompt [SOT, EN, TRANSCRIBE]: the masked token ranges.
    prompt = [SOT, EN, TRANSCRIBE]
    processor = WhisperTimeStampLogitsProcessor(generation, begin_index=len(prompt),
                                                _detect_timestamp_from_logprob=False)
    masks = []
    for history in [[], [TS_BEGIN + 3], [TS_BEGIN + 3, 4], [TS_BEGIN + 3, 4, TS_BEGIN + 90],
                    [TS_BEGIN + 3, 4, TS_BEGIN + 90, TS_BEGIN + 90],
                    [TS_BEGIN + 3, 4, TS_BEGIN + 90, TS_BEGIN + 90, 7, 8],
                    [TS_BEGIN, 4, 5, TS_BEGIN + 1500], [TS_BEGIN + 1500, 4]]:
        scores = processor(torch.tensor([prompt + history]), torch.zeros((1, VOCAB)))[0]
        masked = torch.isinf(scores).tolist()
        ranges = []
        for i, m in enumerate(masked):
            if m and (i == 0 or not masked[i - 1]):
                ranges.append([i, i + 1])
            elif m:
                ranges[-1][1] = i + 1
        masks.append({"history": history, "masked": ranges})
    # transformers' compression ratio (Python's zlib) of a few token sequences.
    ratios = []
    for n, period in [(40, 1), (40, 3), (120, 7), (224, 2), (448, 50)]:
        tokens = [(i * 7919) % VOCAB if i % period == 0 else 1 + i % 4 for i in range(n)]
        ratio = WhisperForConditionalGeneration._retrieve_compression_ratio(torch.tensor(tokens), VOCAB)
        ratios.append({"tokens": tokens, "ratio": ratio})

    # The previous-text prompt transformers builds from a long history (past the 223-token
    # cut-off): 70 segments of text closed by a timestamp pair or by a single timestamp.
    history = []
    for i in range(70):
        seg = [TS_BEGIN + i, i % 40, (i * 7) % 40, TS_BEGIN + i + 1]
        if i % 3 == 0:
            seg.append(TS_BEGIN + i + 1)
        history.append({"tokens": torch.tensor(seg)})
    prev = _pad_to_max_length([history], EOS, "cpu", padding_side="left", padding="longest",
                              bos_token_tensor=torch.tensor([SOPREV]), cut_off_length=448 // 2 - 1,
                              skip_ending_double_timestamps=True, timestamp_begin=TS_BEGIN)
    previous_case = {"history": [h["tokens"].tolist() for h in history], "prefix": prev[0].tolist()}
    save_file(tensors, f"{PATH}/timestamps_reference.safetensors")
    with open(f"{PATH}/timestamps_reference.json", "w") as f:
        json.dump({"split_cases": cases, "rule_masks": masks, "prompt": prompt,
                   "prompt_text": PROMPT_TEXT, "prompt_ids": prompt_ids,
                   "previous_case": previous_case, "compression_ratios": ratios,
                   "skip_thresholds": SKIP, "skip_judged": judged, "long_texts": texts, "max_new_tokens": MAX_NEW_TOKENS,
                   "feature_stride": FEATURE_STRIDE}, f)


if __name__ == "__main__":
    main()
