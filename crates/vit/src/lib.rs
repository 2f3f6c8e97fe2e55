//! tessera-vit: `ViTModel` and `ViTForImageClassification` as transformers' `modeling_vit.py`
//! computes them, from Hugging Face model folders.
#![warn(missing_docs)]

mod model;

pub use model::{ViTConfig, ViTForImageClassification, ViTModel, ViTOutput};
