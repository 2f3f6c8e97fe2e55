//! Integration tests, one binary: shader validation (no GPU), then kernels and tensors on the
//! adapter `Gpu::shared()` picks (lavapipe in CI). A test that needs a GPU fails without one.

mod attention;
mod audio;
mod browser;
mod common;
mod conv;
mod matmul;
mod models;
mod muse;
mod ops;
mod patch_embed;
mod runtime;
mod shaders;
mod tensor;
mod timestamps;
mod words;
