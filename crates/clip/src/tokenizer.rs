//! CLIP's tokenizer: byte-level BPE with `</w>` word ends, lower-cased NFC text, `<|startoftext|>`
//! and `<|endoftext|>` around the tokens, cut to the text tower's length.

use std::path::Path;

use tessera_nn::{NnError, Result};
use tokenizers::models::bpe::BPE;
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
        let mut inner = if json.is_file() {
            Tokenizer::from_file(&json).map_err(|e| tok_err(&json, e))?
        } else {
            let (vocab, merges) = (dir.join("vocab.json"), dir.join("merges.txt"));
            if !vocab.is_file() || !merges.is_file() {
                return Err(NnError::Folder {
                    dir: dir.to_path_buf(),
                    detail: "no tokenizer.json, nor vocab.json and merges.txt: the text tower \
                             needs CLIP's tokenizer files"
                        .into(),
                });
            }
            Self::from_vocab(&vocab, &merges)?
        };
        inner
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                ..TruncationParams::default()
            }))
            .map_err(|e| tok_err(&json, e))?;
        inner.with_padding(None);
        Ok(ClipTokenizer { inner })
    }

    fn from_vocab(vocab: &Path, merges: &Path) -> Result<Tokenizer> {
        let path_str = |p: &Path| p.to_string_lossy().into_owned();
        let bpe = BPE::from_file(&path_str(vocab), &path_str(merges))
            .unk_token(EOS.into())
            .end_of_word_suffix("</w>".into())
            .build()
            .map_err(|e| tok_err(vocab, e))?;
        let id = |t: &str| {
            bpe.get_vocab()
                .get(t)
                .copied()
                .ok_or_else(|| tok_err(vocab, format!("the vocabulary has no {t} token")))
        };
        let (bos, eos) = (id(BOS)?, id(EOS)?);
        let mut tokenizer = Tokenizer::new(bpe);
        let spaces = Replace::new(ReplacePattern::Regex(r"\s+".into()), " ")
            .map_err(|e| tok_err(vocab, e))?;
        tokenizer
            .with_normalizer(Some(NormalizerSequence::new(vec![
                NFC.into(),
                spaces.into(),
                Lowercase.into(),
            ])))
            .map_err(|e| tok_err(vocab, e))?;
        let split = Split::new(
            SplitPattern::Regex(PATTERN.into()),
            SplitDelimiterBehavior::Removed,
            true,
        )
        .map_err(|e| tok_err(vocab, e))?;
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
