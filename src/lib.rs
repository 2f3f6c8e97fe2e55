#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod model_bench;

pub use tessera_audio as audio;
pub use tessera_clip as clip;
pub use tessera_kernels as kernels;
pub use tessera_kernels::{Backend, DType, Gpu, GpuOptions, KernelError, KernelFamily};
pub use tessera_muse as muse;
pub use tessera_nn as nn;
pub use tessera_tensor as tensor;
pub use tessera_tensor::{
    Activation, AttentionLayout, AttentionOptions, BinaryOp, ConvOptions, MatmulOptions, Tensor,
    TensorError,
};
pub use tessera_vit as vit;
