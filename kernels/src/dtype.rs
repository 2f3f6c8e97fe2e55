//! Element types of device buffers.

use std::fmt;

/// Storage type of a tensor's elements. Arithmetic always accumulates in f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit float.
    F32,
    /// 16-bit IEEE float; needs the adapter feature `SHADER_F16`.
    F16,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 => 2,
        }
    }

    /// Format of the textures operands are staged in for this element type: four elements per
    /// texel, so an f16 operand takes half the memory of an f32 one.
    pub fn texel_format(self) -> wgpu::TextureFormat {
        match self {
            DType::F32 => wgpu::TextureFormat::Rgba32Float,
            DType::F16 => wgpu::TextureFormat::Rgba16Float,
        }
    }

    /// Little-endian elements of this type (as a buffer holds them) as f32.
    pub fn values(self, bytes: &[u8]) -> Vec<f32> {
        match self {
            DType::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            DType::F16 => bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32())
                .collect(),
        }
    }

    /// The WGSL scalar type name.
    pub fn wgsl(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.wgsl())
    }
}

impl std::str::FromStr for DType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(DType::F32),
            "f16" => Ok(DType::F16),
            other => Err(format!("unknown dtype '{other}': use f32 or f16")),
        }
    }
}

/// `source` as a browser's WGSL compiler takes it: modules that call subgroup built-ins
/// declare `enable subgroups;` (which browsers require and naga, natively, does not take).
pub fn for_browser(source: &str) -> String {
    // A built-in function (`subgroupBroadcast`) or value (`subgroup_invocation_id`), not a
    // comment's mention.
    let uses = source.match_indices("subgroup").any(|(i, _)| {
        let rest = &source[i + "subgroup".len()..];
        rest.starts_with(|c: char| c.is_ascii_uppercase())
            || rest.starts_with("_invocation_id")
            || rest.starts_with("_size")
    });
    if uses {
        format!("enable subgroups;\n{source}")
    } else {
        source.to_string()
    }
}

/// The WGSL source of a shader file with its element type alias set to `dtype`.
///
/// Every shader declares `alias T = f32;` once; for f16 the alias changes and `enable f16;`
/// is put first, and storage textures (declared `rgba32float`) become
/// [`DType::texel_format`]'s `rgba16float`. These are the only text substitutions Tessera
/// does on WGSL.
pub fn specialize(source: &str, dtype: DType) -> String {
    match dtype {
        DType::F32 => source.to_string(),
        DType::F16 => format!(
            "enable f16;\n{}",
            source
                .replacen("alias T = f32;", "alias T = f16;", 1)
                .replace("<rgba32float, ", "<rgba16float, ")
        ),
    }
}
