//! tessera-kernels: the GPU runtime and Tessera's hand-written WGSL compute kernels.
//!
//! Each kernel family has a WGSL file in `shaders/`, a module here with its params struct,
//! launcher and plain-Rust CPU reference. Launchers record dispatches on a [`Gpu`]; nothing
//! runs until [`Gpu::flush`], [`Gpu::sync`] or a read-back.
#![warn(missing_docs)]

pub mod copy;
mod dtype;
mod error;
pub mod matmul;
pub mod pack;
mod pool;
mod runtime;

pub use dtype::{specialize, DType};
pub use error::{KernelError, Result};
pub use pool::{GpuBuffer, PoolStats, PooledTexture};
pub use runtime::{
    AdapterSummary, Backend, Binding, Gpu, GpuOptions, Kernel, KernelKey, Resource, TEXTURE_FORMAT,
};
pub use wgpu;

/// Every shader file, by name, as WGSL source (the f32 form), for validation and tooling.
pub const SHADERS: &[(&str, &str)] = &[
    ("copy", include_str!("../../shaders/copy.wgsl")),
    ("matmul", include_str!("../../shaders/matmul.wgsl")),
    ("pack", include_str!("../../shaders/pack.wgsl")),
];
