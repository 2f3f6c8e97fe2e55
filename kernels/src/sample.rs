//! Launcher and CPU reference for `shaders/sample.wgsl`: one token drawn per row of logits
//! (after classifier-free guidance) by the inverse of the softmax's cumulative distribution at a
//! given uniform, with the drawn token's probability.

use bytemuck::{Pod, Zeroable};

use crate::dtype::DType;
use crate::error::{KernelError, Result};
use crate::pool::GpuBuffer;
use crate::runtime::{Binding, Gpu, KernelKey};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    row_pitch: u32,
    cond_offset: u32,
    guidance: f32,
    _pad: [u32; 3],
}

/// Classifier-free guidance of a sampling step: the conditional rows sit `cond_offset` rows
/// after the unconditional ones in the same buffer, and the step samples from
/// `uncond + scale · (cond − uncond)`.
#[derive(Clone, Copy, Debug)]
pub struct Guidance {
    /// Rows between an unconditional row and its conditional one.
    pub cond_offset: usize,
    /// The guidance scale.
    pub scale: f32,
}

/// Records the draw of one column per row of `logits` (`rows` rows of `cols`, or twice as many
/// with `guidance`) at `uniforms[row]` ∈ [0, 1): into `picked` (`2 · rows` u32), the column
/// index of each row, then the bits of its softmax probability (f32) — one read-back for both.
#[allow(clippy::too_many_arguments)]
pub fn sample(
    gpu: &Gpu,
    dtype: DType,
    logits: &GpuBuffer,
    rows: usize,
    cols: usize,
    guidance: Option<Guidance>,
    uniforms: &GpuBuffer,
    picked: &GpuBuffer,
) -> Result<()> {
    const OP: &str = "sample";
    let stored_rows = match guidance {
        Some(g) if g.cond_offset < rows => {
            return Err(KernelError::Shape {
                op: OP,
                detail: format!(
                    "conditional rows {} after the unconditional ones overlap {rows} rows",
                    g.cond_offset
                ),
            })
        }
        Some(g) => g.cond_offset + rows,
        None => rows,
    };
    if cols == 0 {
        return Err(KernelError::Shape {
            op: OP,
            detail: "rows must have at least one column".into(),
        });
    }
    logits.check_holds(OP, "logits", stored_rows * cols, dtype)?;
    uniforms.check_holds(OP, "uniforms", rows, DType::F32)?;
    // u32 and f32 words alike.
    picked.check_holds(OP, "picked", 2 * rows, DType::F32)?;
    // llvmpipe ends an invocation's loops after 65535 iterations in total: 3 passes over a
    // 64th of the row, and 64 more for the chunk sums.
    let iterations = 3 * cols.div_ceil(64) + 128;
    gpu.check_loop_iterations(
        OP,
        "loop iterations of a CPU driver (3 × columns / 64)",
        iterations,
    )?;
    if rows == 0 {
        return Ok(());
    }
    let kernel = gpu.kernel(&KernelKey {
        shader: "sample",
        source: crate::modules::SAMPLE,
        entry: "sample",
        dtype,
        constants: vec![],
        bindings: &[
            (0, Binding::Read),
            (1, Binding::Read),
            (2, Binding::ReadWrite),
            (3, Binding::Params),
        ],
    })?;
    let (grid, row_pitch) = gpu.grid_1d(rows, 1);
    let params = Params {
        rows: rows as u32,
        cols: cols as u32,
        row_pitch,
        cond_offset: guidance.map_or(0, |g| g.cond_offset as u32),
        guidance: guidance.map_or(1.0, |g| g.scale),
        _pad: [0; 3],
    };
    gpu.dispatch(
        &kernel,
        &[logits.into(), uniforms.into(), picked.into()],
        bytemuck::bytes_of(&params),
        grid,
    )
}

/// CPU reference of [`sample`] (in f64): `(index, probability)` per row.
pub fn sample_cpu(
    logits: &[f32],
    rows: usize,
    cols: usize,
    guidance: Option<Guidance>,
    uniforms: &[f32],
) -> Vec<(u32, f32)> {
    (0..rows)
        .map(|r| {
            let row: Vec<f64> = (0..cols)
                .map(|j| {
                    let u = logits[r * cols + j] as f64;
                    match guidance {
                        Some(g) => {
                            let c = logits[(r + g.cond_offset) * cols + j] as f64;
                            u + g.scale as f64 * (c - u)
                        }
                        None => u,
                    }
                })
                .collect();
            let m = row.iter().copied().fold(f64::MIN, f64::max);
            let e: Vec<f64> = row.iter().map(|v| (v - m).exp()).collect();
            let total: f64 = e.iter().sum();
            let goal = uniforms[r] as f64 * total;
            let mut acc = 0.0;
            let mut pick = cols - 1;
            for (j, v) in e.iter().enumerate() {
                acc += v;
                if acc > goal {
                    pick = j;
                    break;
                }
            }
            (pick as u32, (e[pick] / total) as f32)
        })
        .collect()
}
