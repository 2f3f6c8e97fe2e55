//! Errors of the audio front end.

use tessera_kernels::KernelError;
use tessera_tensor::TensorError;

/// What can go wrong between an audio file and its spectrogram.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    /// A file could not be opened or decoded.
    #[error("cannot read audio file {path}: {reason}")]
    Decode {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// Samples that are not all finite numbers.
    #[error("sample {index} of the audio is {value}: audio must hold finite numbers")]
    NonFinite {
        /// Where the first one is.
        index: usize,
        /// What it is (NaN or ±infinity).
        value: f32,
    },
    /// A setting Tessera does not support.
    #[error("{0}")]
    Unsupported(String),
    /// Loading or running the model failed.
    #[error(transparent)]
    Model(#[from] tessera_nn::NnError),
    /// A tensor operation failed.
    #[error(transparent)]
    Tensor(#[from] TensorError),
    /// The GPU runtime failed.
    #[error(transparent)]
    Kernel(#[from] KernelError),
}

/// Result with [`AudioError`].
pub type Result<T, E = AudioError> = std::result::Result<T, E>;
