//! The Whisper decoder, laid out as transformers' `WhisperDecoder` with the language-model head
//! of `WhisperForConditionalGeneration` (tied to the token embedding), and greedy decoding with
//! a key/value cache.
//!
//! A layer: `h = x + self_attn(ln1(x))` (causal), `h = h + cross_attn(ln2(h), encoder)`,
//! `out = h + mlp(ln3(h))`; learned positions; a final LayerNorm; logits `x · embed_tokensᵀ`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use tessera_kernels::copy::StridedView;
use tessera_kernels::{wait, DType, Gpu};
use tessera_nn::config::{activation, head_dim, parse_json, positive, read_json, ModelConfig};
use tessera_nn::{Embedding, LayerNorm, Linear, Mlp, NnError, Noise, Weights};
use tessera_tensor::{Activation, AttentionOptions, MatmulOptions, PackedMatrix, Tensor};

use crate::align::{
    check_heads, combine_into_words, round_hundredths, Alignment, Word, WordTokens,
};
use crate::error::{AudioError, Result};
use crate::transcribe::Segment;
use crate::whisper::WhisperConfig;

/// One decoder layer.
struct DecoderLayer {
    self_norm: LayerNorm,
    /// q, k and v of the self-attention in one `[3·d, d]` projection (k without bias).
    self_qkv: Linear,
    self_out: Linear,
    cross_norm: LayerNorm,
    cross_q: Linear,
    /// k and v of the cross-attention in one `[2·d, d]` projection, run once per audio.
    cross_kv: Linear,
    cross_out: Linear,
    mlp_norm: LayerNorm,
    mlp: Mlp,
}

/// A layer's cross-attention keys and values.
#[derive(Clone)]
enum CrossKv {
    /// `[batch, positions, heads, head_dim]` each, for the fused attention kernel.
    Heads(Tensor, Tensor),
    /// Per batch entry, packed once as matmul weights: the keys `[positions, d_model]` and the
    /// values transposed, `[d_model, positions]`. See [`packed_attention`].
    Packed(Vec<(PackedMatrix, PackedMatrix)>),
}

/// What the decoder keeps between steps: each layer's self-attention keys and values so far
/// (a `[batch, capacity, 2·heads, head_dim]` buffer, the first `len` positions filled) and the
/// encoder's keys and values.
pub struct DecoderCache {
    self_kv: Vec<Option<Tensor>>,
    cross_kv: Vec<CrossKv>,
    /// `[heads, d_model]`: row h is 1 on head h's columns, 0 elsewhere.
    head_mask: Tensor,
    len: usize,
    batch: usize,
}

impl DecoderCache {
    /// A fresh cache (no tokens yet) of batch entry 0 repeated `n` times, beam search's beams
    /// over one audio: the encoder's keys and values are shared, not computed again.
    fn repeat_first(&self, n: usize) -> Result<DecoderCache> {
        debug_assert!(self.is_empty(), "beams start from a cache without tokens");
        let first = |t: &Tensor| -> Result<Tensor> {
            let one = t.narrow(0, 0, 1)?;
            Ok(Tensor::concat(&vec![&one; n], 0)?)
        };
        let cross_kv = self
            .cross_kv
            .iter()
            .map(|kv| match kv {
                CrossKv::Heads(k, v) => Ok(CrossKv::Heads(first(k)?, first(v)?)),
                CrossKv::Packed(p) => Ok(CrossKv::Packed(vec![p[0].clone(); n])),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(self.emptied(cross_kv, n))
    }

    /// A cache of this one's layers and heads without tokens, over `cross_kv` of `batch`
    /// audios.
    fn emptied(&self, cross_kv: Vec<CrossKv>, batch: usize) -> DecoderCache {
        DecoderCache {
            self_kv: self.self_kv.iter().map(|_| None).collect(),
            cross_kv,
            head_mask: self.head_mask.clone(),
            len: 0,
            batch,
        }
    }

    /// Keeps batch entry `rows[i]` as entry `i` of the self-attention keys and values (the
    /// cross-attention's are the same for every beam). A gather of whole rows on the GPU.
    fn reorder(&mut self, rows: &[u32]) -> Result<()> {
        if rows.iter().enumerate().all(|(i, &r)| i == r as usize) {
            return Ok(());
        }
        for t in self.self_kv.iter_mut().flatten() {
            let shape = t.shape().to_vec();
            let per_row = shape[1..].iter().product::<usize>();
            *t = t
                .reshape(&[shape[0], per_row])?
                .embedding(rows)?
                .reshape(&shape)?;
        }
        Ok(())
    }

    fn gpu(&self) -> &Arc<Gpu> {
        self.head_mask.gpu()
    }

    /// Tokens decoded so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no token has been decoded yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// What decoding attends to: an audio's encoder states (`[batch, positions, d_model]`, whose
/// cross-attention keys and values each call projects: [`WhisperDecoder::start`]), or a
/// [`DecoderCache`] started on them, which calls then share — a window decoded again at
/// another temperature, its no-speech probability and its word alignment project the states
/// once.
pub trait Encoded {
    /// Batch entries (audios).
    fn batch(&self) -> usize;
    /// What it is, for messages.
    fn describe(&self) -> String;
    /// A cache of `decoder` on these states, without tokens.
    fn fresh(&self, decoder: &WhisperDecoder) -> Result<DecoderCache>;
}

impl Encoded for Tensor {
    fn batch(&self) -> usize {
        self.shape().first().copied().unwrap_or(0)
    }

    fn describe(&self) -> String {
        format!("encoder states {:?}", self.shape())
    }

    fn fresh(&self, decoder: &WhisperDecoder) -> Result<DecoderCache> {
        decoder.start(self)
    }
}

impl Encoded for DecoderCache {
    fn batch(&self) -> usize {
        self.batch
    }

    fn describe(&self) -> String {
        format!("a decoder cache of {} audios", self.batch)
    }

    /// The same cross-attention keys and values (shared, not copied), no tokens.
    fn fresh(&self, decoder: &WhisperDecoder) -> Result<DecoderCache> {
        let (h, d) = (
            decoder.config.decoder_attention_heads,
            decoder.config.d_model,
        );
        if self.cross_kv.len() != decoder.layers.len() || self.head_mask.shape() != [h, d] {
            return Err(AudioError::Unsupported(format!(
                "a cache of {} layers and {:?} heads × width is not this decoder's ({} × [{h}, {d}])",
                self.cross_kv.len(),
                self.head_mask.shape(),
                decoder.layers.len()
            )));
        }
        Ok(self.emptied(self.cross_kv.clone(), self.batch))
    }
}

/// transformers' `WhisperDecoder` and the tied output projection.
pub struct WhisperDecoder {
    config: WhisperConfig,
    embed_tokens: Embedding,
    /// Weights' and activations' dtype.
    dtype: DType,
    embed_positions: Tensor,
    layers: Vec<DecoderLayer>,
    layer_norm: LayerNorm,
    lm_head: Linear,
}

impl WhisperDecoder {
    /// The decoder from weights under its own keys (`embed_tokens.…`, `layers.i.…`).
    pub fn new(config: &WhisperConfig, w: &Weights) -> Result<Self> {
        config.validate()?;
        config.check_decoder()?;
        let (d, ffn, vocab) = (config.d_model, config.decoder_ffn_dim, config.vocab_size);
        let act = activation("activation_function", &config.activation_function)?;
        let eps = 1e-5;
        let layers = (0..config.decoder_layers)
            .map(|i| {
                let l = w.pp("layers").pp(i);
                let s = l.pp("self_attn");
                let c = l.pp("encoder_attn");
                Ok(DecoderLayer {
                    self_norm: LayerNorm::load(&l.pp("self_attn_layer_norm"), d, eps)?,
                    self_qkv: Linear::load_stacked(
                        &[&s.pp("q_proj"), &s.pp("k_proj"), &s.pp("v_proj")],
                        &[true, false, true],
                        d,
                        d,
                    )?,
                    self_out: Linear::load(&s.pp("out_proj"), d, d, true)?,
                    cross_norm: LayerNorm::load(&l.pp("encoder_attn_layer_norm"), d, eps)?,
                    cross_q: Linear::load(&c.pp("q_proj"), d, d, true)?,
                    cross_kv: Linear::load_stacked(
                        &[&c.pp("k_proj"), &c.pp("v_proj")],
                        &[false, true],
                        d,
                        d,
                    )?,
                    cross_out: Linear::load(&c.pp("out_proj"), d, d, true)?,
                    mlp_norm: LayerNorm::load(&l.pp("final_layer_norm"), d, eps)?,
                    mlp: Mlp::new(
                        Linear::load(&l.pp("fc1"), d, ffn, true)?,
                        Linear::load(&l.pp("fc2"), ffn, d, true)?,
                        act,
                    ),
                })
            })
            .collect::<tessera_nn::Result<Vec<_>>>()?;
        // The token table is also the output projection (tied). Past a buffer binding (large
        // checkpoints in f32 on 128 MiB bindings) the lookups read a host copy and the
        // projection runs in blocks of rows.
        Ok(WhisperDecoder {
            lm_head: Linear::load_rows(w, "embed_tokens.weight", vocab, d)?,
            embed_tokens: Embedding::load(w, "embed_tokens.weight", vocab, d)?,
            dtype: w.dtype(),
            embed_positions: w.get("embed_positions.weight", &[config.max_target_positions, d])?,
            layers,
            layer_norm: LayerNorm::load(&w.pp("layer_norm"), d, eps)?,
            config: config.clone(),
        })
    }

    /// The decoder of a WhisperModel or WhisperForConditionalGeneration folder as `dtype`.
    pub fn load(gpu: &Arc<Gpu>, dir: &Path, dtype: DType) -> Result<Self> {
        let config = WhisperConfig::load(dir)?;
        WhisperDecoder::from_checkpoint(&config, &Weights::open(gpu, dir, dtype)?)
    }

    /// The decoder from a whole WhisperModel or WhisperForConditionalGeneration checkpoint's
    /// weights (such as [`Weights::from_bytes`] of fetched files).
    pub fn from_checkpoint(config: &WhisperConfig, w: &Weights) -> Result<Self> {
        let part = crate::whisper::part_of(w, "decoder", "embed_tokens.weight")?;
        WhisperDecoder::new(config, &part)
    }

    /// The config.
    pub fn config(&self) -> &WhisperConfig {
        &self.config
    }

    fn heads(&self) -> (usize, usize) {
        let h = self.config.decoder_attention_heads;
        (h, self.config.d_model / h)
    }

    /// A cache holding the cross-attention keys and values of `encoder_out`
    /// (`[batch, positions, d_model]`, the encoder's last hidden state) and no tokens yet.
    pub fn start(&self, encoder_out: &Tensor) -> Result<DecoderCache> {
        let s = encoder_out.shape();
        let d = self.config.d_model;
        if s.len() != 3 || s[2] != d || s[0] == 0 || s[1] == 0 {
            return Err(AudioError::Unsupported(format!(
                "the decoder attends to encoder states [batch, positions, {d}], got {s:?}"
            )));
        }
        let (b, positions) = (s[0], s[1]);
        let (h, hd) = self.heads();
        let encoder_out = if encoder_out.dtype() == self.dtype {
            encoder_out.clone()
        } else {
            encoder_out.to_dtype(self.dtype)?
        };
        let cross_kv = self
            .layers
            .iter()
            .map(|l| {
                let kv = l.cross_kv.forward(&encoder_out)?;
                let mut packed = Vec::with_capacity(b);
                for bi in 0..b {
                    let half = |from: usize| -> Result<Tensor> {
                        Ok(kv
                            .narrow(0, bi, 1)?
                            .narrow(2, from, d)?
                            .reshape(&[positions, d])?)
                    };
                    let keys = half(0)?.contiguous()?.pack_weight()?;
                    let values = half(d)?.t()?.contiguous()?.pack_weight()?;
                    match (keys, values) {
                        (Some(keys), Some(values)) => packed.push((keys, values)),
                        // Adapters whose matmuls read buffers take the fused kernel.
                        _ => {
                            let kv = kv.reshape(&[b, positions, 2 * h, hd])?;
                            return Ok(CrossKv::Heads(kv.narrow(2, 0, h)?, kv.narrow(2, h, h)?));
                        }
                    }
                }
                Ok(CrossKv::Packed(packed))
            })
            .collect::<Result<Vec<_>>>()?;
        let mask: Vec<f32> = (0..h * d)
            .map(|i| f32::from(u8::from(i / d == (i % d) / hd)))
            .collect();
        let head_mask = Tensor::from_slice(encoder_out.gpu(), &mask, &[h, d], self.dtype)?;
        Ok(DecoderCache {
            self_kv: (0..self.layers.len()).map(|_| None).collect(),
            cross_kv,
            head_mask,
            len: 0,
            batch: b,
        })
    }

    /// Runs `ids` (`[batch][tokens]`, the same number per batch entry), the tokens that follow
    /// those already in `cache`, and returns the logits `[batch, tokens, vocab]` (only the last
    /// position's with `last_only`). The cache then holds them too.
    pub fn forward(
        &self,
        cache: &mut DecoderCache,
        ids: &[Vec<u32>],
        last_only: bool,
    ) -> Result<Tensor> {
        let logits = self.forward_capturing(cache, ids, last_only, &mut [], self.layers.len())?;
        Ok(logits.expect("every layer ran"))
    }

    /// The cross-attention probabilities of `heads` (`(layer, head)` pairs, transformers'
    /// `alignment_heads`) while the decoder reads `tokens` after a fresh start on
    /// `encoder_out` (one audio, `[1, positions, d_model]`): `[heads.len(), tokens.len(),
    /// positions]` row-major. Row `i` of a head is what token `i`'s query attends to — the
    /// rows transformers' `generate(output_attentions=True)` collects step by step, here in
    /// one pass over the whole sequence (the causal mask makes each row the same).
    pub fn cross_attention_weights(
        &self,
        encoder_out: &impl Encoded,
        tokens: &[u32],
        heads: &[(usize, usize)],
    ) -> Result<Vec<f32>> {
        wait(self.cross_attention_weights_async(encoder_out, tokens, heads))
    }

    /// [`WhisperDecoder::cross_attention_weights`] as a future, which a browser awaits.
    pub async fn cross_attention_weights_async(
        &self,
        encoder_out: &impl Encoded,
        tokens: &[u32],
        heads: &[(usize, usize)],
    ) -> Result<Vec<f32>> {
        check_heads(heads, &self.config)?;
        if encoder_out.batch() != 1 {
            return Err(AudioError::Unsupported(format!(
                "cross-attention weights are taken for one audio, not {}",
                encoder_out.describe()
            )));
        }
        let mut cache = encoder_out.fresh(self)?;
        let mut captured: Vec<(usize, usize, Option<Tensor>)> =
            heads.iter().map(|&(l, j)| (l, j, None)).collect();
        // Only the layers up to the last alignment head run; the cache is dropped after.
        let layers = heads.iter().map(|&(l, _)| l + 1).max().unwrap_or(0);
        self.forward_capturing(&mut cache, &[tokens.to_vec()], true, &mut captured, layers)?;
        let mut out = Vec::new();
        for (_, _, w) in captured {
            out.extend(w.expect("every layer ran").to_vec_async().await?);
        }
        Ok(out)
    }

    /// [`WhisperDecoder::forward`] through the first `layers` layers, keeping in `capture`'s
    /// third field the cross-attention probabilities `[tokens, positions]` of batch entry 0 at
    /// each of its (layer, head). The logits when every layer ran; with fewer, `None`, and a
    /// cache that holds no keys for the later layers (not to be decoded from again).
    fn forward_capturing(
        &self,
        cache: &mut DecoderCache,
        ids: &[Vec<u32>],
        last_only: bool,
        capture: &mut [(usize, usize, Option<Tensor>)],
        layers: usize,
    ) -> Result<Option<Tensor>> {
        let n = ids.first().map_or(0, Vec::len);
        let (b, d, vocab) = (cache.batch, self.config.d_model, self.config.vocab_size);
        if ids.len() != b || n == 0 || ids.iter().any(|r| r.len() != n) {
            return Err(AudioError::Unsupported(format!(
                "the decoder takes {b} rows of the same number (at least 1) of token ids"
            )));
        }
        let max = self.config.max_target_positions;
        if cache.len + n > max {
            return Err(AudioError::Unsupported(format!(
                "{} tokens are past the decoder's {max} positions (max_target_positions)",
                cache.len + n
            )));
        }
        if let Some(&bad) = ids.iter().flatten().find(|&&t| t as usize >= vocab) {
            return Err(AudioError::Unsupported(format!(
                "token id {bad} is past the vocabulary of {vocab}"
            )));
        }
        let flat: Vec<u32> = ids.iter().flatten().copied().collect();
        let tokens = self.embed_tokens.forward(&flat)?.reshape(&[b, n, d])?;
        let positions = self.embed_positions.narrow(0, cache.len, n)?;
        let mut x = tokens.add(&positions)?;
        drop(tokens);
        let (h, hd) = self.heads();
        for (i, layer) in self.layers.iter().enumerate().take(layers) {
            // Self-attention over the cached tokens and these.
            let qkv = layer
                .self_qkv
                .forward(&layer.self_norm.forward(&x)?)?
                .reshape(&[b, n, 3 * h, hd])?;
            // The new keys and values (adjacent in `qkv`) are written after the cached ones in
            // place, in one copy; attention reads the filled part as two views.
            let kv_new = qkv.narrow(2, h, 2 * h)?;
            let kv = match grow_kv(cache.self_kv[i].take(), cache.len, cache.len + n, max)? {
                Some(kv) => kv,
                None => kv_buffer(x.gpu(), b, cache.len + n, max, 2 * h, hd, x.dtype())?,
            };
            kv_new.copy_into_view(
                &kv,
                &StridedView {
                    shape: vec![b, n, 2 * h, hd],
                    strides: vec![kv.shape()[1] * 2 * h * hd, 2 * h * hd, hd, 1],
                    offset: cache.len * 2 * h * hd,
                },
            )?;
            let filled = kv.narrow(1, 0, cache.len + n)?;
            let ctx = Tensor::attention(
                &qkv.narrow(2, 0, h)?,
                &filled.narrow(2, 0, h)?,
                &filled.narrow(2, h, h)?,
                &AttentionOptions {
                    causal: true,
                    ..AttentionOptions::default()
                },
            )?;
            cache.self_kv[i] = Some(kv);
            x = layer.self_out.forward_with(
                &ctx.reshape(&[b, n, d])?,
                Activation::None,
                Some(&x),
            )?;
            // Cross-attention to the encoder.
            let q = layer
                .cross_q
                .forward(&layer.cross_norm.forward(&x)?)?
                .reshape(&[b, n, h, hd])?;
            for (_, j, w) in capture.iter_mut().filter(|c| c.0 == i) {
                *w = Some(cross_probabilities(
                    &q,
                    &cache.cross_kv[i],
                    &cache.head_mask,
                    *j,
                )?);
            }
            let ctx = match &cache.cross_kv[i] {
                CrossKv::Heads(k, v) => Tensor::attention(&q, k, v, &AttentionOptions::default())?,
                CrossKv::Packed(packed) => packed_attention(&q, packed, &cache.head_mask)?,
            };
            x = layer.cross_out.forward_with(
                &ctx.reshape(&[b, n, d])?,
                Activation::None,
                Some(&x),
            )?;
            let normed = layer.mlp_norm.forward(&x)?;
            x = layer.mlp.forward(normed, Some(&x))?;
        }
        cache.len += n;
        if layers < self.layers.len() {
            return Ok(None);
        }
        let x = if last_only && n > 1 {
            x.narrow(1, n - 1, 1)?.contiguous()?
        } else {
            x
        };
        let x = self.layer_norm.forward(&x)?;
        Ok(Some(self.lm_head.forward(&x)?))
    }

    /// Greedy decoding of each batch entry of `encoder_out` from `options.prompt`: at every
    /// step the most likely token, with `suppress_tokens` never chosen and
    /// `begin_suppress_tokens` not chosen first (transformers' logits processors of the same
    /// names). Stops at `eos_token_id` (kept), after `max_new_tokens`, or when the tokens fill
    /// the decoder's `max_target_positions`. Returns the prompt and the tokens after it, per
    /// batch entry.
    pub fn greedy(
        &self,
        encoder_out: &impl Encoded,
        options: &GreedyOptions,
    ) -> Result<Vec<Vec<u32>>> {
        wait(self.greedy_async(encoder_out, options))
    }

    /// [`WhisperDecoder::greedy`] as a future, which a browser awaits.
    pub async fn greedy_async(
        &self,
        encoder_out: &impl Encoded,
        options: &GreedyOptions,
    ) -> Result<Vec<Vec<u32>>> {
        // A malformed `encoder_out` is refused by `start`, with its shape.
        let batch = encoder_out.batch().max(1);
        self.greedy_prompts_async(encoder_out, &vec![options.prompt.clone(); batch], options)
            .await
    }

    /// [`WhisperDecoder::greedy`] with a prompt per batch entry (all of one length: windows of
    /// different detected languages decode together); `options.prompt` is not used.
    pub fn greedy_prompts(
        &self,
        encoder_out: &impl Encoded,
        prompts: &[Vec<u32>],
        options: &GreedyOptions,
    ) -> Result<Vec<Vec<u32>>> {
        wait(self.greedy_prompts_async(encoder_out, prompts, options))
    }

    /// [`WhisperDecoder::greedy_prompts`] as a future, which a browser awaits.
    pub async fn greedy_prompts_async(
        &self,
        encoder_out: &impl Encoded,
        prompts: &[Vec<u32>],
        options: &GreedyOptions,
    ) -> Result<Vec<Vec<u32>>> {
        Ok(self
            .decode_greedy(encoder_out, prompts, options, false)
            .await?
            .into_iter()
            .map(|(tokens, _)| tokens)
            .collect())
    }

    /// [`WhisperDecoder::greedy_prompts`] with each decoded token's log-probability under the
    /// processed logits (suppressions and timestamp rules applied), as transformers'
    /// `output_scores` give it for the average log-probability of Whisper's fallback.
    pub fn greedy_scored(
        &self,
        encoder_out: &impl Encoded,
        prompts: &[Vec<u32>],
        options: &GreedyOptions,
    ) -> Result<Vec<(Vec<u32>, Vec<f32>)>> {
        wait(self.greedy_scored_async(encoder_out, prompts, options))
    }

    /// [`WhisperDecoder::greedy_scored`] as a future, which a browser awaits.
    pub async fn greedy_scored_async(
        &self,
        encoder_out: &impl Encoded,
        prompts: &[Vec<u32>],
        options: &GreedyOptions,
    ) -> Result<Vec<(Vec<u32>, Vec<f32>)>> {
        self.decode_greedy(encoder_out, prompts, options, true)
            .await
    }

    async fn decode_greedy(
        &self,
        encoder_out: &impl Encoded,
        prompts: &[Vec<u32>],
        options: &GreedyOptions,
        scored: bool,
    ) -> Result<Vec<(Vec<u32>, Vec<f32>)>> {
        let len = prompts.first().map_or(0, Vec::len);
        if len == 0 || prompts.iter().any(|p| p.len() != len) {
            return Err(AudioError::Unsupported(
                "greedy decoding needs prompts of one length, at least the start token".into(),
            ));
        }
        let max = self.config.max_target_positions;
        if len > max {
            return Err(AudioError::Unsupported(format!(
                "a prompt of {len} tokens is past the decoder's {max} positions"
            )));
        }
        let mut cache = encoder_out.fresh(self)?;
        let b = cache.batch;
        if prompts.len() != b {
            return Err(AudioError::Unsupported(format!(
                "{} prompts for {b} batch entries",
                prompts.len()
            )));
        }
        let mut out = prompts.to_vec();
        let mut logprobs = vec![Vec::new(); b];
        let mut done = vec![false; b];
        let mut next = prompts.to_vec();
        let vocab = self.config.vocab_size;
        let suppression = |tokens: &[&[u32]]| -> Result<Option<Tensor>> {
            if tokens.iter().all(|t| t.is_empty()) {
                return Ok(None);
            }
            let mut bias = vec![0f32; vocab];
            for &t in tokens.iter().copied().flatten() {
                if let Some(v) = bias.get_mut(t as usize) {
                    *v = f32::NEG_INFINITY;
                }
            }
            Ok(Some(Tensor::from_slice(
                cache.gpu(),
                &bias,
                &[vocab],
                self.dtype,
            )?))
        };
        let per_row = scored || options.timestamps.is_some();
        let (mask, first_mask) = if per_row {
            (None, None)
        } else {
            (
                suppression(&[&options.suppress_tokens])?,
                suppression(&[&options.suppress_tokens, &options.begin_suppress_tokens])?,
            )
        };
        if let Some(rules) = &options.timestamps {
            rules.check(vocab)?;
        }
        for step in 0..options.max_new_tokens {
            // At most `max` tokens in all, prompt included (transformers' max_length).
            if len + step >= max {
                break;
            }
            let logits = self.forward(&mut cache, &next, true)?;
            let (tokens, scores) = if per_row {
                // A row of −∞ masks per batch entry (the suppressed tokens, the timestamp rules
                // on the row's tokens so far), added, decided on and picked in one pass on the
                // GPU; the pick's log-probability comes back with it.
                let mut bias = vec![0f32; b * vocab];
                for (bi, row) in bias.chunks_mut(vocab).enumerate() {
                    let suppressed = options.suppress_tokens.iter();
                    let at_begin = options.begin_suppress_tokens.iter().filter(|_| step == 0);
                    for &t in suppressed.chain(at_begin) {
                        if let Some(v) = row.get_mut(t as usize) {
                            *v = f32::NEG_INFINITY;
                        }
                    }
                    if let Some(rules) = &options.timestamps {
                        rules.mask(&out[bi][len..], row);
                    }
                }
                let bias = Tensor::from_slice(cache.gpu(), &bias, logits.shape(), DType::F32)?;
                let split = options.timestamps.map_or(vocab, |r| r.begin() as usize);
                logits.timestamp_pick_async(&bias, split).await?
            } else {
                // Suppressed tokens get −∞ added on the GPU and the arg-max is taken there:
                // one id per row comes back instead of the vocabulary's logits.
                let masked = match (step, &first_mask, &mask) {
                    (0, Some(m), _) | (_, _, Some(m)) => logits.add(m)?,
                    _ => logits,
                };
                (masked.argmax_async().await?, Vec::new())
            };
            for (bi, &token) in tokens.iter().enumerate() {
                if !done[bi] {
                    out[bi].push(token);
                    if let Some(&score) = scores.get(bi) {
                        logprobs[bi].push(score);
                    }
                    done[bi] = Some(token) == options.eos_token_id;
                }
                // Finished rows keep decoding (the batch shares one cache) but keep nothing.
                next[bi] = vec![token];
            }
            if done.iter().all(|&d| d) {
                break;
            }
        }
        Ok(out.into_iter().zip(logprobs).collect())
    }
}

impl WhisperDecoder {
    /// Decodes each batch entry of `encoder_out` from `options.prompt`: greedily, or with
    /// `options.beams` by beam search (one batch entry at a time, its beams as the batch).
    /// Returns the prompt and the tokens after it, per batch entry.
    pub fn generate(&self, encoder_out: &Tensor, options: &GreedyOptions) -> Result<Vec<Vec<u32>>> {
        wait(self.generate_async(encoder_out, options))
    }

    /// [`WhisperDecoder::generate`] as a future, which a browser awaits.
    pub async fn generate_async(
        &self,
        encoder_out: &Tensor,
        options: &GreedyOptions,
    ) -> Result<Vec<Vec<u32>>> {
        let Some(beams) = options.beams else {
            return self.greedy_async(encoder_out, options).await;
        };
        let batch = encoder_out.shape().first().copied().unwrap_or(1).max(1);
        let mut out = Vec::with_capacity(batch);
        for bi in 0..batch {
            let one = encoder_out.narrow(0, bi, 1)?;
            out.push(self.beam_search_async(&one, options, &beams).await?.0);
        }
        Ok(out)
    }

    /// transformers' beam search (`GenerationMixin._beam_search` with `early_stopping=False`,
    /// one sequence returned) over one audio's encoder states `[1, positions, d_model]`: each
    /// step every beam's logits go through log-softmax, the suppressions and the timestamp rule
    /// of `options`; the `2·num_beams` best continuations of all beams by summed log-probability
    /// are kept; those ending in the end token (or at the length limit) among the first
    /// `num_beams` join the finished set, scored by length-penalised log-probability; the best
    /// `num_beams` others continue. Decoding stops when no running beam can beat the worst of
    /// `num_beams` finished ones, or at the length limit. Returns the best finished sequence,
    /// prompt included, and its score (transformers' `sequences_scores`).
    ///
    /// The beams' logits are read back each step (`num_beams × vocab` floats, 1 MB for
    /// Whisper at 5 beams) and ranked on the CPU in f32, as torch does.
    pub fn beam_search(
        &self,
        encoder_out: &impl Encoded,
        options: &GreedyOptions,
        beam: &BeamOptions,
    ) -> Result<(Vec<u32>, f32)> {
        wait(self.beam_search_async(encoder_out, options, beam))
    }

    /// [`WhisperDecoder::beam_search`] as a future, which a browser awaits.
    pub async fn beam_search_async(
        &self,
        encoder_out: &impl Encoded,
        options: &GreedyOptions,
        beam: &BeamOptions,
    ) -> Result<(Vec<u32>, f32)> {
        let beams = beam.num_beams;
        let prompt = &options.prompt;
        let len = prompt.len();
        let vocab = self.config.vocab_size;
        let max = self.config.max_target_positions;
        if !(2..=64).contains(&beams) {
            return Err(AudioError::Unsupported(format!(
                "beam search takes 2 to 64 beams, not {beams}"
            )));
        }
        if encoder_out.batch() != 1 {
            return Err(AudioError::Unsupported(format!(
                "beam search decodes one audio at a time, got {}",
                encoder_out.describe()
            )));
        }
        if len == 0 || len > max {
            return Err(AudioError::Unsupported(format!(
                "a prompt of {len} tokens: beam search needs 1 to {max} (the decoder's positions)"
            )));
        }
        if let Some(rules) = &options.timestamps {
            rules.check(vocab)?;
        }
        // transformers' max_length: the prompt and max_new_tokens, within the positions.
        let max_length = (len + options.max_new_tokens).min(max);
        if max_length <= len {
            return Ok((prompt.clone(), 0.0));
        }
        let mut cache = encoder_out.fresh(self)?.repeat_first(beams)?;
        let eos = options.eos_token_id;
        let lp = beam.length_penalty;
        let keep = 2 * beams;
        let mut running: Vec<Vec<u32>> = vec![prompt.clone(); beams];
        let mut running_scores = vec![-1.0e9f32; beams];
        running_scores[0] = 0.0;
        // The finished set: (score, tokens, finished), `beams` slots.
        let mut finished: Vec<(f32, Vec<u32>, bool)> = vec![(-1.0e9, prompt.clone(), false); beams];
        let mut improvable = true;
        let mut next: Vec<Vec<u32>> = running.clone();
        let mut cur = len;
        loop {
            let logits = self
                .forward(&mut cache, &next, true)?
                .to_vec_async()
                .await?;
            // Every beam's processed log-probabilities plus its running score.
            let mut candidates: Vec<(f32, usize)> = Vec::with_capacity(beams * vocab);
            for (r, row) in logits.chunks_exact(vocab).enumerate() {
                let mut lp_row = log_softmax(row);
                for &t in options
                    .suppress_tokens
                    .iter()
                    .chain(options.begin_suppress_tokens.iter().filter(|_| cur == len))
                {
                    if let Some(v) = lp_row.get_mut(t as usize) {
                        *v = f32::NEG_INFINITY;
                    }
                }
                if let Some(rules) = &options.timestamps {
                    rules.mask(&running[r][len..], &mut lp_row);
                    rules.decide(&mut lp_row);
                }
                let score = running_scores[r];
                candidates.extend(
                    lp_row
                        .iter()
                        .enumerate()
                        .map(|(t, &v)| (v + score, r * vocab + t)),
                );
            }
            // The `keep` best, ties to the lower flat index.
            let top = top_k(&mut candidates, keep);
            let hits: Vec<bool> = top
                .iter()
                .map(|&(_, i)| Some((i % vocab) as u32) == eos || cur + 1 >= max_length)
                .collect();
            let seqs: Vec<Vec<u32>> = top
                .iter()
                .map(|&(_, i)| {
                    let mut s = running[i / vocab].clone();
                    s.push((i % vocab) as u32);
                    s
                })
                .collect();
            // The next running beams: the best that did not finish.
            let mut open: Vec<(f32, usize)> = top
                .iter()
                .zip(&hits)
                .enumerate()
                .map(|(c, (&(v, _), &h))| (v + f32::from(u8::from(h)) * -1.0e9, c))
                .collect();
            let chosen = top_k(&mut open, beams);
            let order: Vec<u32> = chosen
                .iter()
                .map(|&(_, c)| (top[c].1 / vocab) as u32)
                .collect();
            running = chosen.iter().map(|&(_, c)| seqs[c].clone()).collect();
            running_scores = chosen.iter().map(|&(v, _)| v).collect();
            // The finished set: candidates among the first `beams` that finished, scored with
            // the length penalty, merged with the set so far.
            let penalty = ((cur + 1 - len) as f32).powf(lp);
            let mut merged: Vec<(f32, usize)> =
                finished.iter().enumerate().map(|(i, f)| (f.0, i)).collect();
            for (c, (&(v, _), &h)) in top.iter().zip(&hits).enumerate() {
                let did = h && c < beams;
                let mut s = v / penalty;
                if !improvable {
                    s += -1.0e9;
                }
                if !did {
                    s += -1.0e9;
                }
                merged.push((s, beams + c));
            }
            let best = top_k(&mut merged, beams);
            finished = best
                .iter()
                .map(|&(s, i)| {
                    if i < beams {
                        (s, finished[i].1.clone(), finished[i].2)
                    } else {
                        let c = i - beams;
                        (s, seqs[c].clone(), hits[c] && c < beams)
                    }
                })
                .collect();
            cache.reorder(&order)?;
            cur += 1;
            // Can a running beam still beat the finished ones? (transformers' heuristic: the
            // best running score at the current length against the worst finished score, once
            // every slot holds a finished sequence.)
            let best_running = running_scores[0] / ((cur - len) as f32).powf(lp);
            let worst = finished.iter().map(|f| f.0).fold(f32::INFINITY, f32::min);
            improvable = improvable
                && finished
                    .iter()
                    .any(|f| best_running > if f.2 { worst } else { -1.0e9 });
            if !improvable || hits.iter().all(|&h| h) {
                break;
            }
            next = running.iter().map(|s| vec![s[s.len() - 1]]).collect();
        }
        let (score, tokens, _) = finished.swap_remove(0);
        Ok((tokens, score))
    }

    /// The probability of `token` after the first `at + 1` tokens of `prompt` over one audio's
    /// encoder states, from the raw logits (transformers' `WhisperNoSpeechDetection`: the
    /// `<|nospeech|>` token's probability at the start token).
    pub fn token_probability(
        &self,
        encoder_out: &impl Encoded,
        prompt: &[u32],
        at: usize,
        token: u32,
    ) -> Result<f32> {
        wait(self.token_probability_async(encoder_out, prompt, at, token))
    }

    /// [`WhisperDecoder::token_probability`] as a future, which a browser awaits.
    pub async fn token_probability_async(
        &self,
        encoder_out: &impl Encoded,
        prompt: &[u32],
        at: usize,
        token: u32,
    ) -> Result<f32> {
        let vocab = self.config.vocab_size;
        if at >= prompt.len() || token as usize >= vocab {
            return Err(AudioError::Unsupported(format!(
                "token {token} at position {at} of a {}-token prompt over a vocabulary of {vocab}",
                prompt.len()
            )));
        }
        let mut cache = encoder_out.fresh(self)?;
        let logits = self
            .forward(&mut cache, &[prompt[..=at].to_vec()], true)?
            .to_vec_async()
            .await?;
        let row = &logits[logits.len() - vocab..];
        let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f32 = row.iter().map(|&v| (v - m).exp()).sum();
        Ok((row[token as usize] - m).exp() / sum)
    }

    /// Decoding one audio by sampling (transformers' `do_sample=True` at `temperature`): each
    /// step the logits get the suppressions and timestamp rules of `options`, are divided by
    /// the temperature, and one token is drawn from their softmax by the inverse of the
    /// cumulative distribution at a uniform from `noise`. Returns the prompt and the tokens
    /// after it, and each token's log-probability under the processed logits before the
    /// temperature (what transformers averages for the fallback). The logits are read back and
    /// processed on the CPU: sampling only runs when greedy decoding of a window failed the
    /// fallback thresholds.
    pub fn sample(
        &self,
        encoder_out: &impl Encoded,
        options: &GreedyOptions,
        temperature: f32,
        noise: &mut dyn Noise,
    ) -> Result<(Vec<u32>, Vec<f32>)> {
        wait(self.sample_async(encoder_out, options, temperature, noise))
    }

    /// [`WhisperDecoder::sample`] as a future, which a browser awaits.
    pub async fn sample_async(
        &self,
        encoder_out: &impl Encoded,
        options: &GreedyOptions,
        temperature: f32,
        noise: &mut dyn Noise,
    ) -> Result<(Vec<u32>, Vec<f32>)> {
        let prompt = &options.prompt;
        let len = prompt.len();
        let (vocab, max) = (self.config.vocab_size, self.config.max_target_positions);
        if !(temperature > 0.0 && temperature.is_finite()) {
            return Err(AudioError::Unsupported(format!(
                "sampling needs a positive temperature, not {temperature}"
            )));
        }
        if encoder_out.batch() != 1 || len == 0 || len > max {
            return Err(AudioError::Unsupported(format!(
                "sampling decodes one audio ([1, positions, d_model], got {}) from a prompt \
                 of 1 to {max} tokens (got {len})",
                encoder_out.describe()
            )));
        }
        if let Some(rules) = &options.timestamps {
            rules.check(vocab)?;
        }
        let mut cache = encoder_out.fresh(self)?;
        let mut out = prompt.clone();
        let mut logprobs = Vec::new();
        let mut next = prompt.clone();
        for step in 0..options.max_new_tokens {
            if len + step >= max {
                break;
            }
            let mut row = self
                .forward(&mut cache, &[next], true)?
                .to_vec_async()
                .await?;
            for &t in options
                .suppress_tokens
                .iter()
                .chain(options.begin_suppress_tokens.iter().filter(|_| step == 0))
            {
                if let Some(v) = row.get_mut(t as usize) {
                    *v = f32::NEG_INFINITY;
                }
            }
            if let Some(rules) = &options.timestamps {
                rules.mask(&out[len..], &mut row);
                rules.decide(&mut row);
            }
            let processed = log_softmax(&row);
            let scaled: Vec<f32> = row.iter().map(|&v| v / temperature).collect();
            let m = scaled.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let weights: Vec<f64> = scaled.iter().map(|&v| f64::from((v - m).exp())).collect();
            let total: f64 = weights.iter().sum();
            let goal = f64::from(noise.uniforms(1)[0]) * total;
            let mut acc = 0.0;
            let mut token = weights.iter().rposition(|&w| w > 0.0).unwrap_or(0);
            for (j, w) in weights.iter().enumerate() {
                acc += w;
                if acc > goal {
                    token = j;
                    break;
                }
            }
            out.push(token as u32);
            logprobs.push(processed[token]);
            if Some(token as u32) == options.eos_token_id {
                break;
            }
            next = vec![token as u32];
        }
        Ok((out, logprobs))
    }
}

/// Whether a token's text has the form of Whisper's special tokens, `<|…|>` (`<|en|>`,
/// `<|1.00|>`), whether or not its tokenizer.json marks it special.
fn special_form(token: &str) -> bool {
    token.len() > 4 && token.starts_with("<|") && token.ends_with("|>")
}

/// log-softmax of a row in f32, as torch computes it: `x − max − ln Σ exp(x − max)`.
fn log_softmax(row: &[f32]) -> Vec<f32> {
    let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if m == f32::NEG_INFINITY {
        return row.to_vec();
    }
    let sum: f32 = row.iter().map(|&v| (v - m).exp()).sum();
    let ln = sum.ln();
    row.iter().map(|&v| v - m - ln).collect()
}

/// The `k` largest `(value, index)` pairs, best first, ties to the lower index (NaN last).
fn top_k(items: &mut [(f32, usize)], k: usize) -> Vec<(f32, usize)> {
    let order = |a: &(f32, usize), b: &(f32, usize)| {
        b.0.partial_cmp(&a.0)
            .unwrap_or_else(|| a.0.is_nan().cmp(&b.0.is_nan()))
            .then(a.1.cmp(&b.1))
    };
    let k = k.min(items.len());
    if k < items.len() {
        items.select_nth_unstable_by(k, order);
    }
    let mut top = items[..k].to_vec();
    top.sort_by(order);
    top
}

impl WhisperDecoder {
    /// The most likely of `languages` (token ids) after the start token, per batch entry of
    /// `encoder_out`, as transformers' `detect_language` picks it.
    pub fn detect_language(
        &self,
        encoder_out: &impl Encoded,
        start: u32,
        languages: &[u32],
    ) -> Result<Vec<u32>> {
        wait(self.detect_language_async(encoder_out, start, languages))
    }

    /// [`WhisperDecoder::detect_language`] as a future, which a browser awaits.
    pub async fn detect_language_async(
        &self,
        encoder_out: &impl Encoded,
        start: u32,
        languages: &[u32],
    ) -> Result<Vec<u32>> {
        let vocab = self.config.vocab_size;
        if languages.is_empty() || languages.iter().any(|&t| t as usize >= vocab) {
            return Err(AudioError::Unsupported(format!(
                "language detection needs language tokens inside the vocabulary of {vocab}"
            )));
        }
        let mut cache = encoder_out.fresh(self)?;
        let rows = vec![vec![start]; cache.batch];
        let logits = self
            .forward(&mut cache, &rows, true)?
            .to_vec_async()
            .await?;
        Ok(logits
            .chunks_exact(vocab)
            .map(|row| {
                let scores: Vec<f32> = languages.iter().map(|&t| row[t as usize]).collect();
                languages[argmax(&scores) as usize]
            })
            .collect())
    }
}

/// A Whisper checkpoint's `tokenizer.json`, to turn token ids into text.
pub struct WhisperTokenizer(tokenizers::Tokenizer);

impl WhisperTokenizer {
    /// The text of a `tokenizer.json` (what a browser fetched).
    pub fn from_bytes(json: &[u8]) -> Result<Self> {
        tokenizers::Tokenizer::from_bytes(json)
            .map(WhisperTokenizer)
            .map_err(|e| {
                AudioError::Model(NnError::Json {
                    path: "tokenizer.json".into(),
                    what: "tokenizer",
                    detail: e.to_string(),
                })
            })
    }

    /// `tokenizer.json` in `dir`.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        tokenizers::Tokenizer::from_file(&path)
            .map(WhisperTokenizer)
            .map_err(|e| {
                AudioError::Model(NnError::Folder {
                    dir: dir.to_path_buf(),
                    detail: format!("cannot read tokenizer.json: {e}"),
                })
            })
    }

    /// transformers' `get_prompt_ids`: `<|startofprev|>` and the tokens of `" " + text`
    /// (trimmed), to prompt decoding with a vocabulary or style. Text that tokenizes to a
    /// special token (`<|en|>`, a timestamp, ...) is refused.
    pub fn prompt_ids(&self, text: &str) -> Result<Vec<u32>> {
        let prev = self.0.token_to_id("<|startofprev|>").ok_or_else(|| {
            AudioError::Unsupported("the tokenizer has no <|startofprev|> to prompt with".into())
        })?;
        let encoding = self
            .0
            .encode(format!(" {}", text.trim()), false)
            .map_err(|e| AudioError::Unsupported(format!("cannot tokenize the prompt: {e}")))?;
        if let Some(t) = encoding.get_tokens().iter().find(|t| special_form(t)) {
            return Err(AudioError::Unsupported(format!(
                "the prompt holds the special token {t}, which prompts may not"
            )));
        }
        let mut ids = vec![prev];
        ids.extend_from_slice(encoding.get_ids());
        Ok(ids)
    }

    /// The text of `ids`, special tokens (start, language, task, timestamps, end) left out —
    /// timestamps too where the tokenizer does not mark them special (`<|1.00|>` is an added
    /// token of either kind in the Hub's files).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let text: Vec<u32> = ids
            .iter()
            .copied()
            .filter(|&id| self.0.id_to_token(id).is_none_or(|t| !special_form(&t)))
            .collect();
        self.0
            .decode(&text, true)
            .map_err(|e| AudioError::Unsupported(format!("cannot decode tokens: {e}")))
    }

    /// transformers' `_combine_tokens_into_words` on `tokens` (text tokens): see
    /// [`combine_into_words`]. `language` as a code (`en`, `ja`), `None` for English.
    pub fn words(&self, tokens: &[u32], language: Option<&str>) -> Result<Vec<WordTokens>> {
        let eos = self.0.token_to_id("<|endoftext|>").unwrap_or(u32::MAX);
        combine_into_words(tokens, language, eos, &|ids| self.decode(ids))
    }

    /// The words of `segment` with their times, as transformers' ASR pipeline gives them with
    /// `return_timestamps="word"`: its text tokens grouped by [`WhisperTokenizer::words`]; a
    /// token lasts from the time of the token before it (the segment's start for its first)
    /// to its own ([`Segment::token_times`], rounded to hundredths), and a word from its first
    /// token's start to its last token's end. Empty where the segment has no token times.
    pub fn segment_words(&self, segment: &Segment, language: Option<&str>) -> Result<Vec<Word>> {
        let times = &segment.token_times;
        if times.len() != segment.tokens.len() {
            return Ok(Vec::new());
        }
        let mut text = Vec::new();
        let mut spans = Vec::new();
        for (i, &id) in segment.tokens.iter().enumerate() {
            if self.0.id_to_token(id).is_some_and(|t| special_form(&t)) {
                continue;
            }
            let start = if i == 0 { segment.start } else { times[i - 1] };
            text.push(id);
            spans.push((round_hundredths(start), round_hundredths(times[i])));
        }
        Ok(self
            .words(&text, language)?
            .into_iter()
            .map(|w| Word {
                start: spans[w.tokens[0]].0,
                end: spans[w.tokens[w.tokens.len() - 1]].1,
                tokens: w.tokens.iter().map(|&k| text[k]).collect(),
                text: w.text,
            })
            .collect())
    }
}

/// An empty self-attention cache `[batch, capacity, 2·heads, head_dim]` (each position's keys,
/// then its values) for at least `needed` tokens: twice that (at least 32), within the
/// decoder's `max` positions, so that a step appends in place and the buffer is reallocated
/// only a few times per sequence.
fn kv_buffer(
    gpu: &Arc<Gpu>,
    batch: usize,
    needed: usize,
    max: usize,
    heads2: usize,
    head_dim: usize,
    dtype: DType,
) -> Result<Tensor> {
    let capacity = (2 * needed).max(32).min(max).max(needed);
    Ok(Tensor::empty(
        gpu,
        &[batch, capacity, heads2, head_dim],
        dtype,
    )?)
}

/// The cached buffer when it holds `needed` tokens, else a larger one with the first `len`
/// tokens copied over; `None` without a cache.
fn grow_kv(
    cached: Option<Tensor>,
    len: usize,
    needed: usize,
    max: usize,
) -> Result<Option<Tensor>> {
    let Some(kv) = cached else {
        return Ok(None);
    };
    let s = kv.shape().to_vec();
    if s[1] >= needed {
        return Ok(Some(kv));
    }
    let grown = kv_buffer(kv.gpu(), s[0], needed, max, s[2], s[3], kv.dtype())?;
    let cap = grown.shape()[1];
    kv.narrow(1, 0, len)?.copy_into_view(
        &grown,
        &StridedView {
            shape: vec![s[0], len, s[2], s[3]],
            strides: vec![cap * s[2] * s[3], s[2] * s[3], s[3], 1],
            offset: 0,
        },
    )?;
    Ok(Some(grown))
}

/// `softmax(q·kᵀ/√head_dim)·v` per head of `q` `[batch, n, heads, head_dim]` against the keys
/// and values of [`CrossKv::Packed`]: `[batch, n, d_model]`.
///
/// For CPU drivers, where a decoding step's one query would waste the fused kernel's blocks of
/// 32 and a loop over heads costs ~6 dispatches each: every query row is spread into `heads`
/// rows, row h keeping only head h's columns (`head_mask`), so one matmul against all keys
/// gives every head's scores (`[n·heads, positions]`), one softmax normalises them, and one
/// matmul against all values gives `[n·heads, d_model]`, of which row h's head-h block is head
/// h's context. The blocks off the diagonal are `heads`× the work of the product itself: on
/// lavapipe whisper-base's 28-token decode went from 5.0 s (fused kernel) and 2.8 s (loop over
/// heads) to the figure in BENCHMARKS.md.
fn packed_attention(
    q: &Tensor,
    packed: &[(PackedMatrix, PackedMatrix)],
    head_mask: &Tensor,
) -> Result<Tensor> {
    let &[_, n, h, hd] = q.shape() else {
        unreachable!("the decoder reshapes q to 4 axes")
    };
    let d = h * hd;
    let scale = MatmulOptions {
        alpha: Some(1.0 / (hd as f32).sqrt()),
        ..MatmulOptions::default()
    };
    // Row (i, h) of the output's [n·h·h, hd] view holds query i's head-h context at block h.
    let diagonal: Vec<u32> = (0..n * h).map(|row| (row * h + row % h) as u32).collect();
    let rows = packed
        .iter()
        .enumerate()
        .map(|(bi, (keys, values))| {
            let spread = q
                .narrow(0, bi, 1)?
                .reshape(&[n, 1, d])?
                .mul(&head_mask.reshape(&[1, h, d])?)?
                .reshape(&[n * h, d])?;
            let probs = spread.matmul_packed(keys, &scale)?.softmax(1.0)?;
            let blocks = probs
                .matmul_packed(values, &MatmulOptions::default())?
                .reshape(&[n * h * h, hd])?;
            Ok(blocks.embedding(&diagonal)?.reshape(&[1, n, d])?)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::concat(&rows.iter().collect::<Vec<_>>(), 0)?)
}

/// `softmax(q·kᵀ/√head_dim)` of head `j` for batch entry 0 of `q` (`[batch, n, heads,
/// head_dim]`) against a layer's cross-attention keys: `[n, positions]`. The packed keys are
/// read as [`packed_attention`] reads them (q spread to head j's columns).
fn cross_probabilities(q: &Tensor, kv: &CrossKv, head_mask: &Tensor, j: usize) -> Result<Tensor> {
    let &[_, n, h, hd] = q.shape() else {
        unreachable!("the decoder reshapes q to 4 axes")
    };
    let scale = MatmulOptions {
        alpha: Some(1.0 / (hd as f32).sqrt()),
        ..MatmulOptions::default()
    };
    let q = q.narrow(0, 0, 1)?;
    let scores = match kv {
        CrossKv::Heads(k, _) => {
            let positions = k.shape()[1];
            let qj = q.narrow(2, j, 1)?.contiguous()?.reshape(&[n, hd])?;
            let kj = k
                .narrow(0, 0, 1)?
                .narrow(2, j, 1)?
                .contiguous()?
                .reshape(&[positions, hd])?;
            qj.matmul_with(&kj.t()?, &scale)?
        }
        CrossKv::Packed(packed) => q
            .reshape(&[n, h * hd])?
            .mul(&head_mask.narrow(0, j, 1)?)?
            .matmul_packed(&packed[0].0, &scale)?,
    };
    Ok(scores.softmax(1.0)?)
}

/// The index of the largest value, the lower on ties (NaN never wins).
fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] || row[best].is_nan() {
            best = i;
        }
    }
    best as u32
}

/// How [`WhisperDecoder::greedy`] decodes.
#[derive(Clone, Debug, Default)]
pub struct GreedyOptions {
    /// The tokens decoding starts from: the start token, then language, task and
    /// timestamp tokens as the checkpoint has them (see [`WhisperGeneration::prompt`]).
    pub prompt: Vec<u32>,
    /// Most tokens decoded after the prompt.
    pub max_new_tokens: usize,
    /// Tokens never chosen.
    pub suppress_tokens: Vec<u32>,
    /// Tokens not chosen first.
    pub begin_suppress_tokens: Vec<u32>,
    /// The token that ends decoding.
    pub eos_token_id: Option<u32>,
    /// Decode with timestamp tokens under Whisper's rules (the prompt then leaves out
    /// `<|notimestamps|>`); `None` decodes text only.
    pub timestamps: Option<TimestampRules>,
    /// Beam search instead of greedy decoding ([`WhisperDecoder::generate`]).
    pub beams: Option<BeamOptions>,
}

/// Beam search settings, as transformers' `generate(num_beams=…, length_penalty=…)` with
/// `early_stopping=False`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BeamOptions {
    /// Beams kept (2 or more; transformers' `num_beams`).
    pub num_beams: usize,
    /// Finished sequences are ranked by their summed log-probability over (decoded length) to
    /// this power (transformers' default 1.0).
    pub length_penalty: f32,
}

impl Default for BeamOptions {
    fn default() -> Self {
        BeamOptions {
            num_beams: 5,
            length_penalty: 1.0,
        }
    }
}

/// Whisper's timestamp rules, as transformers' `WhisperTimeStampLogitsProcessor` applies them
/// to each step's logits: `<|notimestamps|>` is never chosen; the first token is a timestamp
/// (at most `max_initial_index` steps of 0.02 s in); timestamps come in pairs (after a text
/// token's closing timestamp the next one opens the following segment) except right before the
/// end token; they never decrease; and when the timestamps' summed probability exceeds every
/// text token's, a timestamp is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimestampRules {
    /// `<|notimestamps|>`: the timestamp tokens `<|0.00|>`, `<|0.02|>`, ... follow it.
    pub no_timestamps: u32,
    /// The end token; the text tokens lie below it.
    pub eos: u32,
    /// The latest first timestamp, in steps from `<|0.00|>` (transformers'
    /// `max_initial_timestamp_index`; 50, one second, in the released checkpoints).
    pub max_initial_index: Option<u32>,
}

impl TimestampRules {
    /// `<|0.00|>`, the first timestamp token.
    pub fn begin(&self) -> u32 {
        self.no_timestamps + 1
    }

    fn check(&self, vocab: usize) -> Result<()> {
        if self.begin() as usize >= vocab || self.eos >= self.no_timestamps {
            return Err(AudioError::Unsupported(format!(
                "timestamps need <|notimestamps|> ({}) after the end token ({}) and timestamp \
                 tokens after it inside the vocabulary of {vocab}",
                self.no_timestamps, self.eos
            )));
        }
        Ok(())
    }

    /// The last rule on a row of (masked) log-probabilities: when the timestamps' summed
    /// probability beats every text token's, the text tokens are set to −∞. (The GPU's
    /// `Tensor::timestamp_pick` decides the same for greedy decoding.)
    pub fn decide(&self, row: &mut [f32]) {
        let begin = (self.begin() as usize).min(row.len());
        let lse = |xs: &[f32]| {
            let m = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            if m == f32::NEG_INFINITY {
                return m;
            }
            m + xs.iter().map(|&v| (v - m).exp()).sum::<f32>().ln()
        };
        let all = lse(row);
        let stamps = lse(&row[begin..]) - all;
        let text = row[..begin]
            .iter()
            .copied()
            .fold(f32::NEG_INFINITY, f32::max)
            - all;
        if stamps > text {
            row[..begin].fill(f32::NEG_INFINITY);
        }
    }

    /// Sets to −∞ the entries of `bias` (one per vocabulary token) that the rules forbid after
    /// `generated` (the tokens decoded after the prompt).
    pub fn mask(&self, generated: &[u32], bias: &mut [f32]) {
        let vocab = bias.len();
        let begin = (self.begin() as usize).min(vocab);
        let mut forbid = |lo: usize, hi: usize| {
            for v in &mut bias[lo.min(vocab)..hi.min(vocab)] {
                *v = f32::NEG_INFINITY;
            }
        };
        forbid(self.no_timestamps as usize, self.no_timestamps as usize + 1);
        let is_stamp = |t: &u32| *t >= self.begin();
        let last = generated.last().is_some_and(is_stamp);
        let penultimate = generated.len() < 2 || is_stamp(&generated[generated.len() - 2]);
        if last {
            if penultimate {
                // A closed pair: text (or the end) must follow.
                forbid(begin, vocab);
            } else {
                // A segment's closing timestamp: the next opens a segment, or the end.
                forbid(0, self.eos as usize);
            }
        }
        if let Some(&latest) = generated.iter().rev().find(|t| is_stamp(t)) {
            // Never earlier than the latest; the same one only to open the next segment.
            let from = if last && !penultimate {
                latest
            } else {
                latest + 1
            };
            forbid(begin, from as usize);
        }
        if generated.is_empty() {
            forbid(0, begin);
            if let Some(index) = self.max_initial_index {
                forbid(begin + index as usize + 1, vocab);
            }
        }
    }
}

/// The decoding settings of a Whisper folder: `generation_config.json` where it has one, over
/// `config.json`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct WhisperGeneration {
    /// `<|startoftranscript|>`.
    pub decoder_start_token_id: Option<u32>,
    /// `<|endoftext|>`.
    pub eos_token_id: Option<u32>,
    /// Tokens never generated.
    pub suppress_tokens: Option<Vec<u32>>,
    /// Tokens not generated first.
    pub begin_suppress_tokens: Option<Vec<u32>>,
    /// `<|notimestamps|>`.
    pub no_timestamps_token_id: Option<u32>,
    /// Language tokens by name (`"<|en|>"`).
    pub lang_to_id: Option<HashMap<String, u32>>,
    /// Task tokens by name (`"transcribe"`, `"translate"`).
    pub task_to_id: Option<HashMap<String, u32>>,
    /// Whether the checkpoint is multilingual (takes language and task tokens).
    pub is_multilingual: Option<bool>,
    /// The latest first timestamp, in 0.02 s steps (see [`TimestampRules`]).
    pub max_initial_timestamp_index: Option<u32>,
    /// `<|startofprev|>`.
    pub prev_sot_token_id: Option<u32>,
    /// The `(layer, head)` pairs of the decoder whose cross-attention aligns tokens with the
    /// audio (word timestamps).
    pub alignment_heads: Option<Vec<(usize, usize)>>,
    /// The width of the median filter over the alignment heads' attention (`config.json`).
    pub median_filter_width: Option<usize>,
}

impl WhisperGeneration {
    /// `config.json`'s settings, each overridden by `generation_config.json`'s where present.
    pub fn load(dir: &Path) -> Result<Self> {
        let base: WhisperGeneration = read_json(&dir.join("config.json"), "model config")?;
        let path = dir.join("generation_config.json");
        if !path.is_file() {
            return Ok(base);
        }
        Ok(base.overridden_by(read_json(&path, "generation config")?))
    }

    /// [`WhisperGeneration::load`] from the texts of `config.json` and, where the checkpoint
    /// has one, `generation_config.json` (what a browser fetched).
    pub fn from_json(config: &str, generation_config: Option<&str>) -> Result<Self> {
        let base: WhisperGeneration = parse_json(config, Path::new("config.json"), "model config")?;
        Ok(match generation_config {
            Some(text) => base.overridden_by(parse_json(
                text,
                Path::new("generation_config.json"),
                "generation config",
            )?),
            None => base,
        })
    }

    /// These settings, each overridden by `g`'s where it has one.
    fn overridden_by(self, g: WhisperGeneration) -> WhisperGeneration {
        let base = self;
        WhisperGeneration {
            decoder_start_token_id: g.decoder_start_token_id.or(base.decoder_start_token_id),
            eos_token_id: g.eos_token_id.or(base.eos_token_id),
            suppress_tokens: g.suppress_tokens.or(base.suppress_tokens),
            begin_suppress_tokens: g.begin_suppress_tokens.or(base.begin_suppress_tokens),
            no_timestamps_token_id: g.no_timestamps_token_id.or(base.no_timestamps_token_id),
            lang_to_id: g.lang_to_id.or(base.lang_to_id),
            task_to_id: g.task_to_id.or(base.task_to_id),
            is_multilingual: g.is_multilingual.or(base.is_multilingual),
            max_initial_timestamp_index: g
                .max_initial_timestamp_index
                .or(base.max_initial_timestamp_index),
            prev_sot_token_id: g.prev_sot_token_id.or(base.prev_sot_token_id),
            alignment_heads: g.alignment_heads.or(base.alignment_heads),
            median_filter_width: g.median_filter_width.or(base.median_filter_width),
        }
    }

    /// How token timestamps are found for a decoder of `config`'s sizes, for a recording of
    /// `frames` mel frames (see [`Alignment::frames`]): the checkpoint's `alignment_heads`, or
    /// where it names none (transformers then refuses), openai-whisper's default — every head
    /// of the decoder's second half of layers; and its median filter width (7 if unset).
    pub fn alignment(&self, config: &WhisperConfig, frames: Option<usize>) -> Alignment {
        let (layers, h) = (config.decoder_layers, config.decoder_attention_heads);
        let heads = self.alignment_heads.clone().unwrap_or_else(|| {
            (layers / 2..layers)
                .flat_map(|l| (0..h).map(move |j| (l, j)))
                .collect()
        });
        Alignment {
            heads,
            median_filter_width: self.median_filter_width.unwrap_or(7),
            frames,
        }
    }

    /// The prompt transformers' `generate` forces: the start token; for multilingual
    /// checkpoints the language token (`language` as `en` or `<|en|>`) and the task token;
    /// `<|notimestamps|>` where the checkpoint has one. A multilingual checkpoint without a
    /// `language` gets none here: see [`WhisperGeneration::language_tokens`] to detect it.
    pub fn prompt(&self, language: Option<&str>, task: &str) -> Result<Vec<u32>> {
        let mut prompt = self.timestamp_prompt_unchecked(language, task)?;
        prompt.extend(self.no_timestamps_token_id);
        Ok(prompt)
    }

    /// The prompt for decoding with timestamps: [`WhisperGeneration::prompt`] without
    /// `<|notimestamps|>` (which the checkpoint must have: timestamps are the tokens after it).
    pub fn timestamp_prompt(&self, language: Option<&str>, task: &str) -> Result<Vec<u32>> {
        self.timestamp_rules()?;
        self.timestamp_prompt_unchecked(language, task)
    }

    /// The timestamp rules of this checkpoint: needs `no_timestamps_token_id` and
    /// `eos_token_id`.
    pub fn timestamp_rules(&self) -> Result<TimestampRules> {
        match (self.no_timestamps_token_id, self.eos_token_id) {
            (Some(no_timestamps), Some(eos)) => Ok(TimestampRules {
                no_timestamps,
                eos,
                max_initial_index: self.max_initial_timestamp_index,
            }),
            _ => Err(AudioError::Unsupported(
                "timestamps need no_timestamps_token_id and eos_token_id in the generation config"
                    .into(),
            )),
        }
    }

    fn timestamp_prompt_unchecked(&self, language: Option<&str>, task: &str) -> Result<Vec<u32>> {
        let start = self.decoder_start_token_id.ok_or_else(|| {
            AudioError::Unsupported("the config has no decoder_start_token_id".into())
        })?;
        let mut prompt = vec![start];
        if self.multilingual() {
            if let Some(language) = language {
                prompt.push(self.language_token(language)?);
            }
            if let Some(tasks) = &self.task_to_id {
                let id = tasks.get(task).ok_or_else(|| {
                    let mut known: Vec<_> = tasks.keys().cloned().collect();
                    known.sort();
                    AudioError::Unsupported(format!(
                        "task '{task}' is not one of this checkpoint's: {}",
                        known.join(", ")
                    ))
                })?;
                prompt.push(*id);
            }
        } else if language.is_some() || task != "transcribe" {
            return Err(AudioError::Unsupported(
                "this checkpoint is English-only: it takes no language or task".into(),
            ));
        }
        Ok(prompt)
    }

    /// `<|startofprev|>`, which precedes the text a window is prompted with: the config's
    /// `prev_sot_token_id`, else (as transformers falls back) the second-to-last suppressed
    /// token.
    pub fn prev_sot_token(&self) -> Option<u32> {
        self.prev_sot_token_id.or_else(|| {
            let s = self.suppress_tokens.as_deref().unwrap_or_default();
            (s.len() >= 2).then(|| s[s.len() - 2])
        })
    }

    /// Whether the checkpoint takes language and task tokens: `is_multilingual`, else whether
    /// it names languages.
    pub fn multilingual(&self) -> bool {
        self.is_multilingual.unwrap_or(self.lang_to_id.is_some())
    }

    /// The token of `language` (`en` or `<|en|>`).
    pub fn language_token(&self, language: &str) -> Result<u32> {
        let key = if language.starts_with("<|") {
            language.to_string()
        } else {
            format!("<|{language}|>")
        };
        self.lang_to_id
            .as_ref()
            .and_then(|m| m.get(&key).copied())
            .ok_or_else(|| {
                AudioError::Unsupported(format!(
                    "language '{language}' is not one this checkpoint knows"
                ))
            })
    }

    /// Every language token, sorted.
    pub fn language_tokens(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self
            .lang_to_id
            .iter()
            .flat_map(|m| m.values().copied())
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Greedy options from these settings after `prompt`, at most `max_new_tokens` tokens.
    pub fn greedy_options(&self, prompt: Vec<u32>, max_new_tokens: usize) -> GreedyOptions {
        GreedyOptions {
            prompt,
            max_new_tokens,
            suppress_tokens: self.suppress_tokens.clone().unwrap_or_default(),
            begin_suppress_tokens: self.begin_suppress_tokens.clone().unwrap_or_default(),
            eos_token_id: self.eos_token_id,
            timestamps: None,
            beams: None,
        }
    }
}

impl WhisperConfig {
    /// Refuses decoder settings the decoder cannot run.
    pub fn check_decoder(&self) -> tessera_nn::Result<()> {
        positive("vocab_size", self.vocab_size)?;
        positive("decoder_ffn_dim", self.decoder_ffn_dim)?;
        positive("max_target_positions", self.max_target_positions)?;
        head_dim(
            "decoder_attention_heads",
            self.d_model,
            self.decoder_attention_heads,
        )?;
        Ok(())
    }
}
