//! tessera-nn: the layers the models share (Linear, LayerNorm, fused self-attention, MLP,
//! pre-LN transformer block), Hugging Face checkpoint loading by key name, and image
//! preprocessing as `preprocessor_config.json` describes it.
#![warn(missing_docs)]

pub mod config;
mod error;
mod layers;
mod noise;
mod patch;
mod preprocess;
mod resample;
mod weights;

pub use error::{NnError, Result};
pub use image;
pub use layers::{
    gather_rows, AttentionWeights, Embedding, LayerNorm, Linear, Mlp, PreLnBlock, SelfAttention,
};
pub use noise::{Noise, SeededNoise};
pub use patch::{PatchEmbedding, PatchEmbeddingKeys};
pub use preprocess::{
    decode_image, load_image, ImageProcessor, ProcessedImages, Resize, MAX_IMAGE_SIDE,
};
pub use resample::{resize, Filter};
pub use weights::{Weights, INDEX_FILE, SINGLE_FILE};
