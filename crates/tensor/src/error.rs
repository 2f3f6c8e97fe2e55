//! Errors of tensor operations.

use tessera_kernels::{DType, KernelError};

/// What can go wrong in a tensor operation.
#[derive(Debug, thiserror::Error)]
pub enum TensorError {
    /// Shapes that do not fit the operation.
    #[error("{op}: {detail}")]
    Shape {
        /// The operation.
        op: &'static str,
        /// What does not fit.
        detail: String,
    },
    /// Operands with different element types.
    #[error("{op}: dtype mismatch, {left} vs {right}; convert one with to_dtype()")]
    DType {
        /// The operation.
        op: &'static str,
        /// First operand's dtype.
        left: DType,
        /// Second operand's dtype.
        right: DType,
    },
    /// Operands on different devices.
    #[error("{op}: operands live on different GPU devices")]
    Device {
        /// The operation.
        op: &'static str,
    },
    /// The GPU runtime or a kernel failed.
    #[error(transparent)]
    Kernel(#[from] KernelError),
}

/// Result with [`TensorError`].
pub type Result<T, E = TensorError> = std::result::Result<T, E>;
