//! Launcher and CPU reference for `shaders/topk.wgsl`: the k largest values of each row and
//! their indices (ties keep the lower index), arg-max for k = 1.

use bytemuck::{Pod, Zeroable};

use crate::dtype::DType;
use crate::error::{KernelError, Result};
use crate::pool::GpuBuffer;
use crate::runtime::{Binding, Gpu, KernelKey};

/// Largest k the kernel takes.
pub const MAX_K: usize = 256;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    k: u32,
    row_pitch: u32,
}

/// Records the top `k` of each of `rows` rows of `cols` into `values` (dtype) and `indices`
/// (u32), `[rows, k]` each, best first.
#[allow(clippy::too_many_arguments)]
pub fn topk(
    gpu: &Gpu,
    dtype: DType,
    x: &GpuBuffer,
    rows: usize,
    cols: usize,
    k: usize,
    values: &GpuBuffer,
    indices: &GpuBuffer,
) -> Result<()> {
    if k == 0 || k > cols.min(MAX_K) {
        return Err(KernelError::Shape {
            op: "topk",
            detail: format!("k = {k} must be between 1 and min({cols} columns, {MAX_K})"),
        });
    }
    // llvmpipe ends an invocation's loops after 65535 iterations in total.
    let iterations = k * (cols.div_ceil(64) + 8);
    gpu.check_loop_iterations(
        "topk",
        "loop iterations of a CPU driver (k × columns / 64)",
        iterations,
    )?;
    if ((rows * cols * dtype.size()) as u64) > x.len_bytes()
        || ((rows * k * dtype.size()) as u64) > values.len_bytes()
        || ((rows * k * 4) as u64) > indices.len_bytes()
    {
        return Err(KernelError::Shape {
            op: "topk",
            detail: "buffers too small".into(),
        });
    }
    if rows == 0 {
        return Ok(());
    }
    let kernel = gpu.kernel(&KernelKey {
        shader: "topk",
        source: crate::modules::TOPK,
        entry: "topk",
        dtype,
        constants: vec![],
        bindings: &[
            (0, Binding::Read),
            (1, Binding::ReadWrite),
            (2, Binding::ReadWrite),
            (3, Binding::Params),
        ],
    })?;
    let (grid, row_pitch) = gpu.grid_1d(rows, 1);
    let params = Params {
        rows: rows as u32,
        cols: cols as u32,
        k: k as u32,
        row_pitch,
    };
    gpu.dispatch(
        &kernel,
        &[x.into(), values.into(), indices.into()],
        bytemuck::bytes_of(&params),
        grid,
    )
}

/// CPU reference of [`topk`]: per row, `(value, index)` best first.
pub fn topk_cpu(x: &[f32], cols: usize, k: usize) -> Vec<Vec<(f32, u32)>> {
    x.chunks(cols)
        .map(|row| {
            let mut idx: Vec<usize> = (0..cols).collect();
            idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            idx[..k].iter().map(|&i| (row[i], i as u32)).collect()
        })
        .collect()
}
