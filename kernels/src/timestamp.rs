//! Launcher and CPU reference for `shaders/timestamp_pick.wgsl`: Whisper's greedy pick under
//! its timestamp rule (transformers' `WhisperTimeStampLogitsProcessor` then an arg-max), one
//! index per row of logits plus a per-row bias of −∞ masks.

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
    split: u32,
    row_pitch: u32,
}

/// Records, for each of `rows` rows of `cols` logits (`dtype`) plus `bias` (f32, same shape),
/// the picked column into `picked[row]`: the best column from `split` on when the log-sum-exp
/// of those columns exceeds the best column before `split`, else the best column of the row
/// (ties to the lower index); and into `picked[rows + row]` the bits of its log-probability
/// (f32) under the row with the masks and, when the timestamps won, the columns before `split`
/// masked. Columns at −∞ never win; an all-masked row gives 0 (log-probability −3.4e38).
#[allow(clippy::too_many_arguments)]
pub fn timestamp_pick(
    gpu: &Gpu,
    dtype: DType,
    logits: &GpuBuffer,
    bias: &GpuBuffer,
    rows: usize,
    cols: usize,
    split: usize,
    picked: &GpuBuffer,
) -> Result<()> {
    const OP: &str = "timestamp_pick";
    if cols == 0 || split > cols {
        return Err(KernelError::Shape {
            op: OP,
            detail: format!("split {split} must lie within rows of {cols} columns (at least 1)"),
        });
    }
    logits.check_holds(OP, "logits", rows * cols, dtype)?;
    bias.check_holds(OP, "bias", rows * cols, DType::F32)?;
    picked.check_holds(OP, "picked", 2 * rows, DType::F32)?;
    // llvmpipe ends an invocation's loops after 65535 iterations in total.
    let iterations = 2 * split.div_ceil(64) + 2 * (cols - split).div_ceil(64) + 64 + 32;
    gpu.check_loop_iterations(
        OP,
        "loop iterations of a CPU driver (columns / 64)",
        iterations,
    )?;
    if rows == 0 {
        return Ok(());
    }
    let kernel = gpu.kernel(&KernelKey {
        shader: "timestamp_pick",
        source: crate::modules::TIMESTAMP_PICK,
        entry: "timestamp_pick",
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
        split: split as u32,
        row_pitch,
    };
    gpu.dispatch(
        &kernel,
        &[logits.into(), bias.into(), picked.into()],
        bytemuck::bytes_of(&params),
        grid,
    )
}

/// CPU reference of [`timestamp_pick`], as transformers computes it (in f64): log-softmax of
/// the row, log-sum-exp of the columns from `split` on against the best column before it, an
/// arg-max over the row with the columns before `split` masked if the group won, and the
/// pick's log-probability under that processed row: `(index, log-probability)` per row.
pub fn timestamp_pick_cpu(
    logits: &[f32],
    bias: &[f32],
    cols: usize,
    split: usize,
) -> Vec<(u32, f32)> {
    logits
        .chunks(cols)
        .zip(bias.chunks(cols))
        .map(|(row, b)| {
            let mut x: Vec<f64> = row
                .iter()
                .zip(b)
                .map(|(&v, &m)| v as f64 + m as f64)
                .collect();
            let lse = |xs: &[f64]| {
                let m = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                if m == f64::NEG_INFINITY {
                    return m;
                }
                m + xs.iter().map(|v| (v - m).exp()).sum::<f64>().ln()
            };
            let all = lse(&x);
            let stamp = lse(&x[split..]) - all;
            let text = x[..split].iter().copied().fold(f64::NEG_INFINITY, f64::max) - all;
            if stamp > text {
                x[..split].fill(f64::NEG_INFINITY);
            }
            let mut best = 0;
            for j in 0..cols {
                if x[j] > x[best] {
                    best = j;
                }
            }
            let logprob = x[best] - lse(&x);
            let logprob = if logprob.is_finite() {
                logprob as f32
            } else {
                -3.402_823_5e38
            };
            (best as u32, logprob)
        })
        .collect()
}
