//! tessera-clip: transformers' `CLIPModel` (vision and text towers, projections, logit scale)
//! from Hugging Face model folders, and CLIP's BPE tokenizer through the `tokenizers` crate.
#![warn(missing_docs)]

mod model;
mod tokenizer;

pub use model::{
    ClipConfig, ClipModel, ClipTextConfig, ClipTextTransformer, ClipVisionConfig,
    ClipVisionTransformer, TowerOutput,
};
pub use tokenizer::ClipTokenizer;
