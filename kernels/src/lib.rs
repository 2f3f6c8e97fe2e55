//! tessera-kernels: the GPU runtime and Tessera's hand-written WGSL compute kernels.
//!
//! Each kernel family has a WGSL file in `shaders/`, a module here with its params struct,
//! launcher and plain-Rust CPU reference. Launchers record dispatches on a [`Gpu`]; nothing
//! runs until [`Gpu::flush`], [`Gpu::sync`] or a read-back.
#![warn(missing_docs)]

pub mod attention;
pub mod cast;
pub mod conv;
pub mod copy;
mod dtype;
pub mod elementwise;
pub mod embedding;
mod error;
pub mod grn;
pub mod matmul;
pub mod norm;
pub mod pack;
pub mod patch_embed;
mod pool;
mod runtime;
pub mod sample;
pub mod stft;
pub mod timestamp;
pub mod topk;

pub use dtype::{for_browser, specialize, DType};
pub use error::{KernelError, Result};
pub use pool::{GpuBuffer, PoolStats, PooledTexture};
pub use runtime::wait;
pub use runtime::{
    AdapterSummary, Backend, Binding, Gpu, GpuOptions, Kernel, KernelFamily, KernelKey, KernelTime,
    Resource, IN_OUT_BINDINGS,
};
pub use wgpu;

/// One WGSL file: its name without `.wgsl` and its text.
pub type ShaderFile = (&'static str, &'static str);

macro_rules! shader_file {
    ($name:literal) => {
        (
            $name,
            include_str!(concat!("../../shaders/", $name, ".wgsl")),
        )
    };
}

/// The shader modules kernels are built from, each the concatenation of its files in order
/// (the matmul kernels share `matmul_epilogue.wgsl`).
pub mod modules {
    use super::ShaderFile;

    const ACTIVATION: ShaderFile = shader_file!("activation");
    const STRIDED: ShaderFile = shader_file!("strided");
    const MATMUL_EPILOGUE: ShaderFile = shader_file!("matmul_epilogue");

    const ATTENTION_COMMON: ShaderFile = shader_file!("attention_common");

    /// Fused attention through workgroup memory.
    pub const ATTENTION: &[ShaderFile] = &[ATTENTION_COMMON, shader_file!("attention")];
    /// Fused attention through textures and subgroup broadcasts (needs SUBGROUP).
    pub const ATTENTION_SUBGROUP: &[ShaderFile] =
        &[ATTENTION_COMMON, shader_file!("attention_subgroup")];
    /// Strided copy.
    pub const COPY: &[ShaderFile] = &[STRIDED, shader_file!("copy")];
    /// Buffer view to texture packing.
    pub const PACK: &[ShaderFile] = &[shader_file!("pack")];
    /// Activations and broadcasting binary ops.
    pub const ELEMENTWISE: &[ShaderFile] = &[ACTIVATION, STRIDED, shader_file!("elementwise")];
    /// Depthwise convolution, direct.
    pub const DEPTHWISE: &[ShaderFile] = &[ACTIVATION, shader_file!("depthwise")];
    /// Receptive fields of a convolution as matrix rows.
    pub const IM2COL: &[ShaderFile] = &[shader_file!("im2col")];
    /// Embedding lookup by token id.
    pub const EMBEDDING: &[ShaderFile] = &[shader_file!("embedding")];
    /// Normalise + patchify for the patch embedding.
    pub const PATCH_EMBED: &[ShaderFile] = &[shader_file!("patch_embed")];
    /// LayerNorm, RMSNorm, GroupNorm and softmax over rows.
    pub const NORM: &[ShaderFile] = &[ACTIVATION, shader_file!("norm")];
    /// STFT framing and power spectrum.
    pub const STFT: &[ShaderFile] = &[shader_file!("stft")];
    /// Whisper's log-mel normalisation.
    pub const MEL: &[ShaderFile] = &[shader_file!("mel")];
    /// f16 → f32 conversion.
    pub const CAST_WIDEN: &[ShaderFile] = &[shader_file!("cast_widen")];
    /// f32 → f16 conversion.
    pub const CAST_NARROW: &[ShaderFile] = &[shader_file!("cast_narrow")];
    /// Global response normalisation (ConvNeXt-V2).
    pub const GRN: &[ShaderFile] = &[shader_file!("grn")];
    /// Masked-token sampling with classifier-free guidance.
    pub const SAMPLE: &[ShaderFile] = &[shader_file!("sample")];
    /// Whisper's timestamp rule and greedy pick.
    pub const TIMESTAMP_PICK: &[ShaderFile] = &[shader_file!("timestamp_pick")];
    /// Top-k and arg-max over rows.
    pub const TOPK: &[ShaderFile] = &[shader_file!("topk")];
    /// Storage-buffer and texture matmuls, GEMV.
    pub const MATMUL: &[ShaderFile] = &[ACTIVATION, MATMUL_EPILOGUE, shader_file!("matmul")];
    /// The texture matmul with subgroup broadcasts (needs SUBGROUP).
    pub const MATMUL_SUBGROUP: &[ShaderFile] =
        &[ACTIVATION, MATMUL_EPILOGUE, shader_file!("matmul_subgroup")];
}

/// Every shader module by name, for validation and tooling.
pub const SHADERS: &[(&str, &[ShaderFile])] = &[
    ("attention", modules::ATTENTION),
    ("attention_subgroup", modules::ATTENTION_SUBGROUP),
    ("copy", modules::COPY),
    ("cast_widen", modules::CAST_WIDEN),
    ("cast_narrow", modules::CAST_NARROW),
    ("elementwise", modules::ELEMENTWISE),
    ("embedding", modules::EMBEDDING),
    ("im2col", modules::IM2COL),
    ("depthwise", modules::DEPTHWISE),
    ("norm", modules::NORM),
    ("patch_embed", modules::PATCH_EMBED),
    ("topk", modules::TOPK),
    ("grn", modules::GRN),
    ("sample", modules::SAMPLE),
    ("timestamp_pick", modules::TIMESTAMP_PICK),
    ("stft", modules::STFT),
    ("mel", modules::MEL),
    ("pack", modules::PACK),
    ("matmul", modules::MATMUL),
    ("matmul_subgroup", modules::MATMUL_SUBGROUP),
];
