//! Errors of model loading and running.

use std::path::PathBuf;

use tessera_kernels::KernelError;
use tessera_tensor::TensorError;

/// What can go wrong between a model folder and a forward pass.
#[derive(Debug, thiserror::Error)]
pub enum NnError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A JSON file (config, index, preprocessor) that does not parse.
    #[error("{path} is not a valid {what}: {detail}")]
    Json {
        /// The file.
        path: PathBuf,
        /// What the file should be.
        what: &'static str,
        /// The parser's message.
        detail: String,
    },
    /// A safetensors file that is corrupt, truncated or holds an unsupported dtype.
    #[error("{path}: {detail}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A model folder without the files a checkpoint needs.
    #[error("{dir}: {detail}")]
    Folder {
        /// The folder.
        dir: PathBuf,
        /// What is missing.
        detail: String,
    },
    /// A weight the model needs is not in the checkpoint.
    #[error("weight `{key}` is missing from the checkpoint in {dir}; is the folder the model its config.json describes?")]
    MissingWeight {
        /// The Hugging Face key.
        key: String,
        /// The model folder.
        dir: PathBuf,
    },
    /// A weight whose shape differs from what the config implies.
    #[error("weight `{key}` has shape {found:?} but the config implies {expected:?}")]
    WeightShape {
        /// The Hugging Face key.
        key: String,
        /// From the config.
        expected: Vec<usize>,
        /// In the file.
        found: Vec<usize>,
    },
    /// A config value Tessera does not support, or one that contradicts another.
    #[error("config `{field}`: {detail}")]
    Config {
        /// The config field.
        field: String,
        /// What is wrong and what is supported.
        detail: String,
    },
    /// Input that does not fit the model (an image that does not decode, too many tokens...).
    #[error("{0}")]
    Input(String),
    /// A tensor operation failed.
    #[error(transparent)]
    Tensor(#[from] TensorError),
    /// The GPU runtime failed.
    #[error(transparent)]
    Kernel(#[from] KernelError),
}

/// Result with [`NnError`].
pub type Result<T, E = NnError> = std::result::Result<T, E>;

impl NnError {
    /// A config error.
    pub fn config(field: impl Into<String>, detail: impl Into<String>) -> Self {
        NnError::Config {
            field: field.into(),
            detail: detail.into(),
        }
    }
}
