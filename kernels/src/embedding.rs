//! Launcher and CPU reference for `shaders/embedding.wgsl`: rows of a table gathered by id.

use bytemuck::{Pod, Zeroable};

use crate::dtype::DType;
use crate::error::{KernelError, Result};
use crate::pool::GpuBuffer;
use crate::runtime::{Binding, Gpu, KernelKey};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    tokens: u32,
    dim: u32,
    vocab: u32,
    row_pitch: u32,
}

/// Records `out[t] = table[ids[t]]` for a `[vocab, dim]` table; every id must be below `vocab`.
pub fn embedding(
    gpu: &Gpu,
    dtype: DType,
    table: &GpuBuffer,
    vocab: usize,
    dim: usize,
    ids: &[u32],
    out: &GpuBuffer,
) -> Result<()> {
    if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
        return Err(KernelError::Shape {
            op: "embedding",
            detail: format!("token id {bad} is outside the vocabulary of {vocab}"),
        });
    }
    if vocab == 0 || dim == 0 || ((vocab * dim * dtype.size()) as u64) > table.len_bytes() {
        return Err(KernelError::Shape {
            op: "embedding",
            detail: format!(
                "table of {} bytes is not [{vocab}, {dim}]",
                table.len_bytes()
            ),
        });
    }
    if ((ids.len() * dim * dtype.size()) as u64) > out.len_bytes() {
        return Err(KernelError::Shape {
            op: "embedding",
            detail: format!("output holds {} bytes", out.len_bytes()),
        });
    }
    if ids.is_empty() {
        return Ok(());
    }
    let id_buffer = gpu.upload("embedding", bytemuck::cast_slice(ids))?;
    let (grid, row_pitch) = gpu.grid_1d(ids.len() * dim, 256);
    let kernel = gpu.kernel(&KernelKey {
        shader: "embedding",
        source: crate::modules::EMBEDDING,
        entry: "gather_rows",
        dtype,
        constants: vec![],
        bindings: &[
            (0, Binding::Read),
            (1, Binding::Read),
            (2, Binding::ReadWrite),
            (3, Binding::Params),
        ],
    })?;
    let params = Params {
        tokens: ids.len() as u32,
        dim: dim as u32,
        vocab: vocab as u32,
        row_pitch,
    };
    gpu.dispatch(
        &kernel,
        &[table.into(), (&id_buffer).into(), out.into()],
        bytemuck::bytes_of(&params),
        grid,
    )
}

/// CPU reference of [`embedding`].
pub fn embedding_cpu(table: &[f32], dim: usize, ids: &[u32]) -> Vec<f32> {
    ids.iter()
        .flat_map(|&id| {
            table[id as usize * dim..(id as usize + 1) * dim]
                .iter()
                .copied()
        })
        .collect()
}

/// The sinusoidal position table `[length, channels]` Whisper's encoder uses: the first half
/// of the channels `sin(t · exp(−i·ln(10000)/(channels/2 − 1)))`, the second half the cosines.
pub fn sinusoids(length: usize, channels: usize) -> Result<Vec<f32>> {
    if channels < 4 || channels % 2 != 0 {
        return Err(KernelError::Shape {
            op: "sinusoids",
            detail: format!("channels must be even and at least 4, got {channels}"),
        });
    }
    let half = channels / 2;
    let increment = (10000f64).ln() / (half - 1) as f64;
    let mut out = vec![0f32; length * channels];
    for t in 0..length {
        for i in 0..half {
            let angle = t as f64 * (-increment * i as f64).exp();
            out[t * channels + i] = angle.sin() as f32;
            out[t * channels + half + i] = angle.cos() as f32;
        }
    }
    Ok(out)
}
