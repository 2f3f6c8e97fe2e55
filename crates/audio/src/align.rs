//! Token- and word-level timestamps, as transformers finds them: the cross-attention of the
//! checkpoint's alignment heads, standardised over the tokens, smoothed by a median filter
//! along time and averaged over the heads, is aligned with the audio by dynamic time warping
//! (`WhisperForConditionalGeneration._extract_token_timestamps`); the tokens are grouped into
//! words as the ASR pipeline's `return_timestamps="word"` groups them
//! (`_combine_tokens_into_words`).
//!
//! The matrices are small (tokens × at most 1500 positions per head), so the standardisation,
//! filter and warping run on the CPU; the attention itself comes from the GPU
//! ([`crate::WhisperDecoder::cross_attention_weights`]).

use crate::error::{AudioError, Result};
use crate::transcribe::TIME_PRECISION;
use crate::whisper::WhisperConfig;

/// Which cross-attention heads align tokens with the audio, and how their attention is
/// smoothed: what token timestamps need from a checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct Alignment {
    /// `(layer, head)` pairs of the decoder: `generation_config.json`'s `alignment_heads`
    /// (see [`crate::WhisperGeneration::alignment`]).
    pub heads: Vec<(usize, usize)>,
    /// The median filter's width along time (`config.json`'s `median_filter_width`, 7):
    /// odd.
    pub median_filter_width: usize,
    /// The recording's length in mel frames, `⌈samples / 160⌉` (what transformers reads from
    /// the feature extractor's attention mask): each window's attention is cut to the frames
    /// of the recording it holds. `None` aligns against whole 30 s windows, as transformers
    /// does without an attention mask.
    pub frames: Option<usize>,
}

impl Alignment {
    /// Refuses a filter width that is not odd, an empty head list and heads that `config`'s
    /// decoder does not have.
    pub fn check(&self, config: &WhisperConfig) -> Result<()> {
        check_heads(&self.heads, config)?;
        if self.median_filter_width == 0 || self.median_filter_width % 2 == 0 {
            return Err(AudioError::Unsupported(format!(
                "the median filter's width must be odd, got {}",
                self.median_filter_width
            )));
        }
        if self.heads.is_empty() {
            return Err(AudioError::Unsupported(
                "token timestamps need at least one alignment head".into(),
            ));
        }
        Ok(())
    }
}

/// Refuses `(layer, head)` pairs past `config`'s decoder.
pub(crate) fn check_heads(heads: &[(usize, usize)], config: &WhisperConfig) -> Result<()> {
    let (layers, h) = (config.decoder_layers, config.decoder_attention_heads);
    match heads.iter().find(|&&(l, j)| l >= layers || j >= h) {
        Some(&(l, j)) => Err(AudioError::Unsupported(format!(
            "alignment head ({l}, {j}) is not one of the decoder's {layers} layers × {h} heads"
        ))),
        None => Ok(()),
    }
}

/// transformers' `_median_filter` along each row of `rows` × `cols` values: the median of
/// `width` (odd) values around each, the rows' ends mirrored (PyTorch's `reflect` padding:
/// the edge value itself not repeated). Rows of at most `width / 2` values are left as they
/// are.
pub fn median_filter(values: &[f32], cols: usize, width: usize) -> Vec<f32> {
    let pad = width / 2;
    if cols <= pad {
        return values.to_vec();
    }
    let mut out = Vec::with_capacity(values.len());
    let mut window = vec![0f32; width];
    for row in values.chunks(cols) {
        let at = |i: isize| -> f32 {
            let last = cols as isize - 1;
            let i = if i < 0 {
                -i
            } else if i > last {
                2 * last - i
            } else {
                i
            };
            row[i as usize]
        };
        for c in 0..cols as isize {
            for (k, w) in window.iter_mut().enumerate() {
                *w = at(c + k as isize - pad as isize);
            }
            // torch's sort puts NaN last.
            window.sort_by(|a, b| {
                a.partial_cmp(b)
                    .unwrap_or_else(|| a.is_nan().cmp(&b.is_nan()))
            });
            out.push(window[pad]);
        }
    }
    out
}

/// transformers' `_dynamic_time_warping` of a `rows` × `cols` cost matrix (row-major): the
/// cheapest monotonic path from the first cell to the last, as (row, column) index pairs in
/// order. Costs accumulate in f32 as numpy's `float32` table holds them; ties prefer the
/// diagonal, then the step down a row, then along a row, as transformers' comparisons do.
/// A matrix without columns, or with NaN, leaves the path at index −1 (along the table's edge).
pub fn dynamic_time_warping(matrix: &[f64], rows: usize, cols: usize) -> (Vec<isize>, Vec<isize>) {
    let (n, m) = (rows + 1, cols + 1);
    let mut cost = vec![f32::INFINITY; n * m];
    let mut trace = vec![-1i8; n * m];
    cost[0] = 0.0;
    for j in 1..m {
        for i in 1..n {
            let c0 = cost[(i - 1) * m + j - 1];
            let c1 = cost[(i - 1) * m + j];
            let c2 = cost[i * m + j - 1];
            let (c, t) = if c0 < c1 && c0 < c2 {
                (c0, 0)
            } else if c1 < c0 && c1 < c2 {
                (c1, 1)
            } else {
                (c2, 2)
            };
            cost[i * m + j] = (matrix[(i - 1) * cols + j - 1] + f64::from(c)) as f32;
            trace[i * m + j] = t;
        }
    }
    for t in &mut trace[..m] {
        *t = 2;
    }
    for i in 0..n {
        trace[i * m] = 1;
    }
    let (mut i, mut j) = (rows, cols);
    let (mut text, mut time) = (Vec::new(), Vec::new());
    while i > 0 || j > 0 {
        text.push(i as isize - 1);
        time.push(j as isize - 1);
        match trace[i * m + j] {
            0 => {
                i -= 1;
                j -= 1;
            }
            1 => i -= 1,
            _ => j -= 1,
        }
    }
    text.reverse();
    time.reverse();
    (text, time)
}

/// The matrix dynamic time warping aligns (before its negation): the last `rows` rows of each
/// head's attention `weights` (`[heads, stored rows, positions]`, see
/// [`crate::WhisperDecoder::cross_attention_weights`]; the rows before them, the prompt's, are
/// left out) cut to the first `cols` positions, each (head, position) standardised over the
/// rows (mean 0, standard deviation 1, as torch's `std(unbiased=False)`), median-filtered
/// along the positions and averaged over the heads: `[rows, cols]`.
pub fn alignment_matrix(
    weights: &[f32],
    heads: usize,
    rows: usize,
    positions: usize,
    cols: usize,
    median_filter_width: usize,
) -> Vec<f32> {
    let cols = cols.min(positions);
    let mut sum = vec![0f32; rows * cols];
    let block = weights.len() / heads.max(1);
    for head in weights.chunks(block.max(1)).take(heads) {
        let head = &head[head.len() - rows * positions..];
        let mut w = vec![0f32; rows * cols];
        for c in 0..cols {
            let column = || (0..rows).map(|r| f64::from(head[r * positions + c]));
            let mean = column().sum::<f64>() / rows as f64;
            let var = column().map(|x| (x - mean) * (x - mean)).sum::<f64>() / rows as f64;
            let (mean, std) = (mean as f32, var.sqrt() as f32);
            for r in 0..rows {
                w[r * cols + c] = (head[r * positions + c] - mean) / std;
            }
        }
        for (s, v) in sum
            .iter_mut()
            .zip(median_filter(&w, cols, median_filter_width))
        {
            *s += v;
        }
    }
    sum.iter().map(|s| s / heads as f32).collect()
}

/// transformers' `_extract_token_timestamps` for one decoding: the time (seconds within the
/// window) of each of `tokens` tokens — the prompt's `prompt_len` first, then those generated —
/// from the attention `weights` (`[heads, tokens − 1, positions]`: every token but the last
/// read by the decoder). The prompt's tokens get 0; the rows of the generated tokens are aligned
/// by [`alignment_matrix`] and [`dynamic_time_warping`] and each gets the time of the first
/// position its row reaches; the last token repeats the time before it.
///
/// `frames` is the recording's mel frames from the window's start on (`None`: the whole
/// window): the attention is cut to its first `frames / 2` positions as transformers slices
/// it. A window that starts past the recording's end (a negative count: clips under 30 s are
/// padded to 30 s) is cut as transformers' two slices with a negative bound cut it — all but
/// the last `2 · ⌈−frames / 2⌉` positions —, and an empty cut aligns every row before the
/// first position (−0.02 s).
pub fn token_timestamps(
    weights: &[f32],
    heads: usize,
    tokens: usize,
    prompt_len: usize,
    positions: usize,
    frames: Option<isize>,
    median_filter_width: usize,
) -> Vec<f32> {
    let fed = tokens.saturating_sub(1);
    let mut times = vec![0f32; tokens];
    let rows = fed.saturating_sub(prompt_len);
    if rows == 0 {
        return times;
    }
    // transformers slices `[..., : frames // 2]` twice (for the batch, then for the entry):
    // floor division, and a negative bound counts from the end each time.
    let cols = match frames.map(|f| f.div_euclid(2)) {
        None => positions,
        Some(end) if end >= 0 => (end as usize).min(positions),
        Some(end) => positions.saturating_sub(2 * end.unsigned_abs()),
    };
    // The generated tokens' rows of every head (the last `rows` of its `fed`).
    let matrix = alignment_matrix(
        &weights[..heads * fed * positions],
        heads,
        rows,
        positions,
        cols,
        median_filter_width,
    );
    let negated: Vec<f64> = matrix.iter().map(|&v| -f64::from(v)).collect();
    let (text, time) = dynamic_time_warping(&negated, rows, cols);
    let mut jumps = Vec::with_capacity(rows);
    for (k, (&row, &col)) in text.iter().zip(&time).enumerate() {
        if k == 0 || row != text[k - 1] {
            jumps.push((col as f64 * TIME_PRECISION) as f32);
        }
    }
    let last = *jumps.last().expect("a path through at least one row");
    for (t, j) in times[prompt_len..]
        .iter_mut()
        .zip(jumps.iter().chain([&last]))
    {
        *t = *j;
    }
    times
}

/// Languages written without spaces between words, whose tokens are grouped into characters
/// rather than words (transformers' list: Chinese, Japanese, Thai, Lao, Burmese, Cantonese).
const UNSPACED: [&str; 6] = ["zh", "ja", "th", "lo", "my", "yue"];

/// Punctuation that joins the word after it (transformers' `prepend_punctuations`).
const PREPENDED: &str = "\"'“¡¿([{-";
/// Punctuation that joins the word before it (transformers' `append_punctuations`).
const APPENDED: &str = "\"'.。,，!！?？:：”)]}、";
/// What counts as a punctuation token when splitting at spaces.
const PUNCTUATION: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

/// A word of a transcript: its text (a leading space included, as the tokens decode) and the
/// indices of its tokens in the sequence it was grouped from.
#[derive(Clone, Debug, PartialEq)]
pub struct WordTokens {
    /// The word's text.
    pub text: String,
    /// Indices of its tokens.
    pub tokens: Vec<usize>,
}

/// A word with its time in the recording.
#[derive(Clone, Debug, PartialEq)]
pub struct Word {
    /// The word's text (a leading space included, as the tokens decode).
    pub text: String,
    /// Start, seconds from the start of the recording.
    pub start: f64,
    /// End, seconds from the start of the recording.
    pub end: f64,
    /// Its token ids.
    pub tokens: Vec<u32>,
}

/// transformers' `_combine_tokens_into_words`: `tokens` (text tokens) grouped into words by
/// `decode`, which turns token ids into text. Tokens that decode to whole characters are split
/// at a leading space and at punctuation (every language but those written without spaces —
/// `language` as a code, `en`, `ja`; `None` is English — whose words are single characters);
/// then opening punctuation joins the word after it and closing punctuation the word before.
/// Tokens at or past `eos` (special ones) stand alone.
pub fn combine_into_words(
    tokens: &[u32],
    language: Option<&str>,
    eos: u32,
    decode: &dyn Fn(&[u32]) -> Result<String>,
) -> Result<Vec<WordTokens>> {
    let mut words = split_on_unicode(tokens, decode)?;
    let unspaced = language.is_some_and(|l| UNSPACED.contains(&l.trim_matches(['<', '|', '>'])));
    if !unspaced {
        let mut spaced: Vec<WordTokens> = Vec::with_capacity(words.len());
        for w in words {
            let special = tokens[w.tokens[0]] >= eos;
            let with_space = w.text.starts_with(' ');
            // A substring test, as Python's `in` on strings (so "" counts).
            let punctuation = PUNCTUATION.contains(w.text.trim());
            match spaced.last_mut() {
                Some(last) if !(special || with_space || punctuation) => {
                    last.text.push_str(&w.text);
                    last.tokens.extend(w.tokens);
                }
                _ => spaced.push(w),
            }
        }
        words = spaced;
    }
    merge_punctuation(&mut words);
    Ok(words)
}

/// transformers' `_split_tokens_on_unicode`: consecutive tokens grouped until they decode to
/// whole characters (no U+FFFD that the whole sequence's text does not have there too).
fn split_on_unicode(
    tokens: &[u32],
    decode: &dyn Fn(&[u32]) -> Result<String>,
) -> Result<Vec<WordTokens>> {
    const REPLACEMENT: char = '\u{FFFD}';
    let full: Vec<char> = decode(tokens)?.chars().collect();
    let mut words = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut offset = 0;
    for i in 0..tokens.len() {
        current.push(i);
        let ids: Vec<u32> = current.iter().map(|&k| tokens[k]).collect();
        let decoded = decode(&ids)?;
        let complete = match decoded.chars().position(|c| c == REPLACEMENT) {
            None => true,
            Some(at) => full.get(offset + at).is_none_or(|&c| c == REPLACEMENT),
        };
        if complete {
            offset += decoded.chars().count();
            words.push(WordTokens {
                text: decoded,
                tokens: std::mem::take(&mut current),
            });
        }
    }
    Ok(words)
}

/// transformers' `_merge_punctuations`: opening punctuation after a space joins the next
/// word, closing punctuation joins the word before (unless that ends with a space).
fn merge_punctuation(words: &mut Vec<WordTokens>) {
    if words.is_empty() {
        return;
    }
    let mut i = words.len() as isize - 2;
    let mut j = words.len() - 1;
    while i >= 0 {
        let iu = i as usize;
        if words[iu].text.starts_with(' ') && PREPENDED.contains(words[iu].text.trim()) {
            let before = std::mem::replace(
                &mut words[iu],
                WordTokens {
                    text: String::new(),
                    tokens: Vec::new(),
                },
            );
            let after = &mut words[j];
            after.text = before.text + &after.text;
            let mut t = before.tokens;
            t.append(&mut after.tokens);
            after.tokens = t;
        } else {
            j = iu;
        }
        i -= 1;
    }
    let (mut i, mut j) = (0, 1);
    while j < words.len() {
        if !words[i].text.ends_with(' ') && APPENDED.contains(words[j].text.as_str()) {
            let after = std::mem::replace(
                &mut words[j],
                WordTokens {
                    text: String::new(),
                    tokens: Vec::new(),
                },
            );
            words[i].text.push_str(&after.text);
            words[i].tokens.extend(after.tokens);
        } else {
            i = j;
        }
        j += 1;
    }
    words.retain(|w| !w.text.is_empty());
}

/// A time rounded to hundredths as Python's `round(x, 2)` (to the nearest, ties to even, on
/// the value's exact decimal expansion — which is what Rust's formatting rounds too).
pub(crate) fn round_hundredths(x: f64) -> f64 {
    format!("{x:.2}").parse().unwrap_or(x)
}
