//! tessera-tensor: [`Tensor`], a device buffer with a shape, strides and a dtype, and the ops
//! models use, as methods that check shapes and return errors instead of panicking.
#![warn(missing_docs)]

mod attention;
mod conv;
mod error;
mod ops;
mod patch_embed;
mod tensor;

pub use attention::{AttentionLayout, AttentionOptions};
pub use conv::ConvOptions;
pub use error::{Result, TensorError};
pub use ops::broadcast_shape;
pub use patch_embed::{PatchEmbed, Pixels};
pub use tensor::{MatmulOptions, PackedMatrix, Tensor, MAX_DIMS};
pub use tessera_kernels::attention::AttentionVariant;
pub use tessera_kernels::elementwise::BinaryOp;
pub use tessera_kernels::matmul::{Activation, MatmulVariant};
pub use tessera_kernels::patch_embed::Normalize;
pub use tessera_kernels::{DType, Gpu};
