//! Launcher and CPU reference for `shaders/grn.wgsl`: global response normalisation
//! (ConvNeXt-V2's `GlobalResponseNorm`) of channels-last `[batch, positions, channels]`.

use bytemuck::{Pod, Zeroable};

use crate::dtype::DType;
use crate::error::Result;
use crate::pool::GpuBuffer;
use crate::runtime::{Binding, Gpu, KernelKey};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    batch: u32,
    positions: u32,
    channels: u32,
    row_pitch: u32,
}

/// The buffers of a [`grn`].
pub struct GrnArgs<'a> {
    /// `[batch, positions, channels]`.
    pub x: &'a GpuBuffer,
    /// γ, `[channels]`.
    pub gamma: &'a GpuBuffer,
    /// β, `[channels]`.
    pub beta: &'a GpuBuffer,
    /// f32 scratch of `batch · channels`.
    pub norms: &'a GpuBuffer,
    /// Like `x`.
    pub out: &'a GpuBuffer,
}

/// Records `out = γ·(x·nx) + β + x` with `nx = ‖x‖₂ over positions / (its mean over channels
/// + 1e-6)`, per batch and channel.
pub fn grn(
    gpu: &Gpu,
    dtype: DType,
    [batch, positions, channels]: [usize; 3],
    args: &GrnArgs<'_>,
) -> Result<()> {
    const OP: &str = "grn";
    let n = batch * positions * channels;
    args.x.check_holds(OP, "x", n, dtype)?;
    args.out.check_holds(OP, "out", n, dtype)?;
    args.gamma.check_holds(OP, "gamma", channels, dtype)?;
    args.beta.check_holds(OP, "beta", channels, dtype)?;
    args.norms
        .check_holds(OP, "norms", batch * channels, DType::F32)?;
    gpu.check_loop_iterations(OP, "loop iterations of a CPU driver (positions)", positions)?;
    if n == 0 {
        return Ok(());
    }
    let kernel = |entry: &'static str| {
        gpu.kernel(&KernelKey {
            shader: "grn",
            source: crate::modules::GRN,
            entry,
            dtype,
            constants: vec![],
            bindings: &[
                (0, Binding::Read),
                (1, Binding::Read),
                (2, Binding::Read),
                (3, Binding::ReadWrite),
                (4, Binding::ReadWrite),
                (5, Binding::Params),
            ],
        })
    };
    let resources = [
        args.x.into(),
        args.gamma.into(),
        args.beta.into(),
        args.norms.into(),
        args.out.into(),
    ];
    let (grid, row_pitch) = gpu.grid_1d(n, 64);
    let params = Params {
        batch: batch as u32,
        positions: positions as u32,
        channels: channels as u32,
        row_pitch,
    };
    let params = bytemuck::bytes_of(&params);
    gpu.dispatch(
        &*kernel("grn_norms")?,
        &resources,
        params,
        [channels.div_ceil(64) as u32, batch as u32, 1],
    )?;
    gpu.dispatch(
        &*kernel("grn_scale")?,
        &resources,
        params,
        [batch as u32, 1, 1],
    )?;
    gpu.dispatch(&*kernel("grn_apply")?, &resources, params, grid)
}

/// CPU reference of [`grn`].
pub fn grn_cpu(
    x: &[f32],
    [batch, positions, channels]: [usize; 3],
    gamma: &[f32],
    beta: &[f32],
) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    for b in 0..batch {
        let base = b * positions * channels;
        let gx: Vec<f64> = (0..channels)
            .map(|c| {
                (0..positions)
                    .map(|i| (x[base + i * channels + c] as f64).powi(2))
                    .sum::<f64>()
                    .sqrt()
            })
            .collect();
        let mean = gx.iter().sum::<f64>() / channels as f64;
        for i in 0..positions {
            for c in 0..channels {
                let v = x[base + i * channels + c] as f64;
                let nx = gx[c] / (mean + 1e-6);
                out[base + i * channels + c] =
                    (gamma[c] as f64 * (v * nx) + beta[c] as f64 + v) as f32;
            }
        }
    }
    out
}
