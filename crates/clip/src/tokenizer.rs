//! CLIP's tokenizer: byte-level BPE with `</w>` word ends, lower-cased NFC text, `<|startoftext|>`
//! and `<|endoftext|>` around the tokens, cut to the text tower's length.

use std::collections::HashMap;
use std::path::Path;

use tessera_nn::{NnError, Result};
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::replace::{Replace, ReplacePattern};
use tokenizers::normalizers::{Lowercase, Sequence as NormalizerSequence, NFC};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{SplitDelimiterBehavior, Tokenizer, TruncationParams};

const BOS: &str = "<|startoftext|>";
const EOS: &str = "<|endoftext|>";
/// The pattern of transformers' CLIP tokenizer (and OpenAI's `SimpleTokenizer`).
const PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// Turns text into CLIP token ids.
pub struct ClipTokenizer {
    inner: Tokenizer,
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| NnError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn tok_err(path: &Path, e: impl std::fmt::Display) -> NnError {
    NnError::Json {
        path: path.to_path_buf(),
        what: "CLIP tokenizer file",
        detail: e.to_string(),
    }
}

impl ClipTokenizer {
    /// `tokenizer.json` in `dir`, or else `vocab.json` + `merges.txt` assembled the way
    /// transformers converts them; sequences are cut to `max_len` tokens (the end token kept).
    pub fn load(dir: &Path, max_len: usize) -> Result<Self> {
        let json = dir.join("tokenizer.json");
        if json.is_file() {
            return Self::json_at(&read(&json)?, &json, max_len);
        }
        let (vocab, merges) = (dir.join("vocab.json"), dir.join("merges.txt"));
        if !vocab.is_file() || !merges.is_file() {
            return Err(NnError::Folder {
                dir: dir.to_path_buf(),
                detail: "no tokenizer.json, nor vocab.json and merges.txt: the text tower \
                         needs CLIP's tokenizer files"
                    .into(),
            });
        }
        let inner = Self::bpe(&read(&vocab)?, &read(&merges)?, &vocab)?;
        Self::cut(inner, &vocab, max_len)
    }

    /// [`ClipTokenizer::load`] from a `tokenizer.json`'s bytes (what a browser fetched).
    pub fn from_bytes(tokenizer_json: &[u8], max_len: usize) -> Result<Self> {
        Self::json_at(tokenizer_json, Path::new("tokenizer.json"), max_len)
    }

    /// [`ClipTokenizer::load`] from the bytes of `vocab.json` and `merges.txt`.
    pub fn from_vocab(vocab: &[u8], merges: &[u8], max_len: usize) -> Result<Self> {
        let path = Path::new("vocab.json");
        Self::cut(Self::bpe(vocab, merges, path)?, path, max_len)
    }

    fn json_at(bytes: &[u8], path: &Path, max_len: usize) -> Result<Self> {
        let inner = Tokenizer::from_bytes(bytes).map_err(|e| tok_err(path, e))?;
        Self::cut(inner, path, max_len)
    }

    /// This tokenizer cutting sequences to `max_len` tokens instead (the end token kept).
    pub fn with_max_len(self, max_len: usize) -> Result<Self> {
        Self::cut(self.inner, Path::new("tokenizer"), max_len)
    }

    /// Sequences cut to `max_len` tokens, unpadded.
    fn cut(mut inner: Tokenizer, path: &Path, max_len: usize) -> Result<Self> {
        inner
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                ..TruncationParams::default()
            }))
            .map_err(|e| tok_err(path, e))?;
        inner.with_padding(None);
        Ok(ClipTokenizer { inner })
    }

    /// The BPE of `vocab.json` and `merges.txt` (`path` names the vocabulary in messages).
    fn bpe(vocab: &[u8], merges: &[u8], path: &Path) -> Result<Tokenizer> {
        let ids: HashMap<String, u32> =
            serde_json::from_slice(vocab).map_err(|e| tok_err(path, e))?;
        let merges_path = path.with_file_name("merges.txt");
        let merges = std::str::from_utf8(merges)
            .map_err(|e| tok_err(&merges_path, e))?
            .lines()
            .filter(|l| !l.starts_with("#version") && !l.is_empty())
            .enumerate()
            .map(|(i, line)| match line.split_once(' ') {
                Some((a, b)) if !b.contains(' ') => Ok((a.to_string(), b.to_string())),
                _ => Err(tok_err(
                    &merges_path,
                    format!("line {} is not a pair of tokens: {line:?}", i + 1),
                )),
            })
            .collect::<Result<Vec<_>>>()?;
        let vocab: Vocab = ids.into_iter().collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .unk_token(EOS.into())
            .end_of_word_suffix("</w>".into())
            .build()
            .map_err(|e| tok_err(path, e))?;
        let id = |t: &str| {
            bpe.get_vocab()
                .get(t)
                .copied()
                .ok_or_else(|| tok_err(path, format!("the vocabulary has no {t} token")))
        };
        let (bos, eos) = (id(BOS)?, id(EOS)?);
        let mut tokenizer = Tokenizer::new(bpe);
        let spaces = Replace::new(ReplacePattern::Regex(r"\s+".into()), " ")
            .map_err(|e| tok_err(path, e))?;
        tokenizer
            .with_normalizer(Some(NormalizerSequence::new(vec![
                NFC.into(),
                spaces.into(),
                Lowercase.into(),
            ])))
            .map_err(|e| tok_err(path, e))?;
        let split = Split::new(
            SplitPattern::Regex(PATTERN.into()),
            SplitDelimiterBehavior::Removed,
            true,
        )
        .map_err(|e| tok_err(path, e))?;
        tokenizer.with_pre_tokenizer(Some(PreSequence::new(vec![
            split.into(),
            ByteLevel::new(false, true, true).into(),
        ])));
        tokenizer.with_post_processor(Some(
            RobertaProcessing::new((EOS.into(), eos), (BOS.into(), bos))
                .trim_offsets(false)
                .add_prefix_space(false),
        ));
        tokenizer.with_decoder(Some(ByteLevel::default()));
        Ok(tokenizer)
    }

    /// The id of `token` in the vocabulary (special tokens included).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Token ids of each text, with the start and end tokens.
    pub fn encode(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        texts
            .iter()
            .map(|t| {
                self.inner
                    .encode(*t, true)
                    .map(|e| e.get_ids().to_vec())
                    .map_err(|e| NnError::Input(format!("cannot tokenize {t:?}: {e}")))
            })
            .collect()
    }
}
