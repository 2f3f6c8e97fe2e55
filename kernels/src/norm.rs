//! Launcher and CPU reference for `shaders/norm.wgsl`: LayerNorm, RMSNorm, GroupNorm and
//! softmax over the last axis, optionally after a fused residual add.

use bytemuck::{Pod, Zeroable};

use crate::dtype::DType;
use crate::error::{KernelError, Result};
use crate::matmul::{Activation, PackedRows};
use crate::pack::{copies_as_is, PackLayout, PackView};
use crate::pool::{GpuBuffer, PooledTexture};
use crate::runtime::{Binding, Gpu, KernelKey, Resource};

const BINDINGS: &[(u32, Binding)] = &[
    (0, Binding::Read),
    (1, Binding::Read),
    (2, Binding::Read),
    (3, Binding::Read),
    (4, Binding::ReadWrite),
    (5, Binding::ReadWrite),
    (6, Binding::Params),
];

/// out, sum, params, then x, residual, weight and bias as textures.
const TEXEL_BINDINGS: &[(u32, Binding)] = &[
    (4, Binding::ReadWrite),
    (5, Binding::ReadWrite),
    (6, Binding::Params),
    (7, Binding::ReadTexture),
    (8, Binding::ReadTexture),
    (9, Binding::ReadTexture),
    (10, Binding::ReadTexture),
];

/// What a row is normalised by.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NormKind {
    /// `(x − mean) / sqrt(var + eps) · weight + bias`.
    LayerNorm {
        /// Added to the variance.
        eps: f32,
    },
    /// `x / sqrt(mean(x²) + eps) · weight`.
    RmsNorm {
        /// Added to the mean square.
        eps: f32,
    },
    /// `exp(scale·x − max) / Σ exp(scale·x − max)`.
    Softmax {
        /// Applied to the inputs before the exponential.
        scale: f32,
    },
}

/// Rows to normalise: `rows × cols`, row-major. For GroupNorm, a row is one group of one sample
/// (`cols = channels / groups · hw`) and the affine parameters are per channel.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NormSpec {
    /// The normalisation.
    pub kind: NormKind,
    /// Number of rows.
    pub rows: usize,
    /// Elements per row.
    pub cols: usize,
    /// GroupNorm: groups per sample and elements per channel; `None` for per-column affine.
    pub groups: Option<(usize, usize)>,
    /// Rows sharing one row of weight and bias, which then hold one row per block of rows
    /// (adaptive norms: a row per batch element); `None`: every row shares the one row.
    pub affine_rows: Option<usize>,
    /// Applied to the output (not to softmax's).
    pub activation: Activation,
}

/// The buffers of a normalisation.
pub struct NormArgs<'a> {
    /// Input rows.
    pub x: &'a GpuBuffer,
    /// Added to `x` first; the sum is written to `sum`.
    pub residual: Option<(&'a GpuBuffer, &'a GpuBuffer)>,
    /// Scale per column (per channel for GroupNorm).
    pub weight: Option<&'a GpuBuffer>,
    /// Shift per column (per channel for GroupNorm); LayerNorm only.
    pub bias: Option<&'a GpuBuffer>,
    /// Output rows.
    pub out: &'a GpuBuffer,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    eps: f32,
    groups: u32,
    row_pitch: u32,
    scale: f32,
    affine_rows: u32,
    _pad: u32,
}

/// Records the normalisation of every row.
pub fn norm(gpu: &Gpu, dtype: DType, spec: &NormSpec, args: &NormArgs<'_>) -> Result<()> {
    let NormSpec { rows, cols, .. } = *spec;
    if cols == 0 {
        return Err(KernelError::Shape {
            op: "norm",
            detail: "rows must have at least one element".into(),
        });
    }
    let (groups, hw) = spec.groups.unwrap_or((1, 0));
    if hw > 0 && (cols % hw != 0 || groups == 0) {
        return Err(KernelError::Shape {
            op: "norm",
            detail: format!("group rows of {cols} are not whole channels of {hw}"),
        });
    }
    let blocks = match spec.affine_rows {
        Some(0) => {
            return Err(KernelError::Shape {
                op: "norm",
                detail: "blocks of affine rows must have at least one row".into(),
            })
        }
        Some(_) if hw > 0 => {
            return Err(KernelError::Shape {
                op: "norm",
                detail: "GroupNorm has one affine row".into(),
            })
        }
        Some(r) => rows.div_ceil(r).max(1),
        None => 1,
    };
    let affine_len = (groups * cols).checked_div(hw).unwrap_or(cols) * blocks;
    args.x.check_holds("norm", "x", rows * cols, dtype)?;
    args.out.check_holds("norm", "out", rows * cols, dtype)?;
    if let Some((r, sum)) = args.residual {
        r.check_holds("norm", "residual", rows * cols, dtype)?;
        sum.check_holds("norm", "sum", rows * cols, dtype)?;
    }
    if let Some(w) = args.weight {
        w.check_holds("norm", "weight", affine_len, dtype)?;
    }
    if let Some(b) = args.bias {
        b.check_holds("norm", "bias", affine_len, dtype)?;
    }
    if rows == 0 {
        return Ok(());
    }
    if matches!(spec.kind, NormKind::Softmax { .. }) && spec.activation != Activation::None {
        return Err(KernelError::Shape {
            op: "norm",
            detail: "softmax takes no activation".into(),
        });
    }
    let (kind, eps, scale) = match spec.kind {
        NormKind::LayerNorm { eps } => (0, eps, 1.0),
        NormKind::RmsNorm { eps } => (1, eps, 1.0),
        NormKind::Softmax { scale } => (2, 0.0, scale),
    };
    // One invocation per row on CPU drivers when its loops stay well inside llvmpipe's 65535
    // iterations: three passes over the row.
    let serial = gpu.cpu_kernels() && 3 * cols < 50_000;
    // There, rows that copy into textures as they are (whole 256-byte rows) are read through
    // them: about 4× faster than storage-buffer reads on lavapipe.
    let texels = serial
        && hw == 0
        && copies_as_is(&PackView::matrix(rows, cols, cols, 1, 0), dtype)
        && PackedRows::fits(gpu, rows, cols, PackLayout::Rows);
    let kernel = gpu.kernel(&KernelKey {
        shader: "norm",
        source: crate::modules::NORM,
        entry: match (serial, texels) {
            (_, true) => "norm_rows_texels",
            (true, false) => "norm_rows_serial",
            (false, false) => "norm_rows",
        },
        dtype,
        constants: vec![
            ("KIND", kind as f64),
            ("HAS_RESIDUAL", args.residual.is_some() as u32 as f64),
            ("HAS_WEIGHT", args.weight.is_some() as u32 as f64),
            ("HAS_BIAS", args.bias.is_some() as u32 as f64),
            ("GROUP_HW", hw as f64),
            ("SERIAL", serial as u32 as f64),
            ("ACT", spec.activation.code() as f64),
        ],
        bindings: if texels { TEXEL_BINDINGS } else { BINDINGS },
    })?;
    let (grid, row_pitch) = gpu.grid_1d(rows, if serial { 64 } else { 1 });
    let params = Params {
        rows: rows as u32,
        cols: cols as u32,
        eps,
        groups: groups as u32,
        row_pitch,
        scale,
        affine_rows: spec.affine_rows.unwrap_or(0) as u32,
        _pad: 0,
    };
    let dummy = gpu.dummy();
    let (residual, sum) = args.residual.unwrap_or((dummy, gpu.dummy_rw()));
    if texels {
        let pack = |b: &GpuBuffer, rows: usize| {
            PackedRows::pack(gpu, dtype, b, rows, cols, PackLayout::Rows)
        };
        let x = pack(args.x, rows)?;
        let residual = args.residual.map(|(r, _)| pack(r, rows)).transpose()?;
        let weight = args.weight.map(|w| pack(w, blocks)).transpose()?;
        let bias = args.bias.map(|b| pack(b, blocks)).transpose()?;
        let none = gpu.dummy_texture(dtype)?;
        fn view<'a>(t: &'a Option<PackedRows>, none: &'a PooledTexture) -> Resource<'a> {
            Resource::Texture(t.as_ref().map_or(none, PackedRows::texture).view())
        }
        return gpu.dispatch(
            &kernel,
            &[
                args.out.into(),
                sum.into(),
                Resource::Texture(x.texture().view()),
                view(&residual, &none),
                view(&weight, &none),
                view(&bias, &none),
            ],
            bytemuck::bytes_of(&params),
            grid,
        );
    }
    gpu.dispatch(
        &kernel,
        &[
            args.x.into(),
            residual.into(),
            args.weight.unwrap_or(dummy).into(),
            args.bias.unwrap_or(dummy).into(),
            args.out.into(),
            sum.into(),
        ],
        bytemuck::bytes_of(&params),
        grid,
    )
}

/// CPU reference of [`norm`] in f64: the output rows (the sum is `x + residual`).
pub fn norm_cpu(
    spec: &NormSpec,
    x: &[f32],
    residual: Option<&[f32]>,
    weight: Option<&[f32]>,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let NormSpec { rows, cols, .. } = *spec;
    let (groups, hw) = spec.groups.unwrap_or((1, 0));
    let mut out = vec![0f32; rows * cols];
    for r in 0..rows {
        let row: Vec<f64> = (0..cols)
            .map(|j| x[r * cols + j] as f64 + residual.map_or(0.0, |res| res[r * cols + j] as f64))
            .collect();
        let n = cols as f64;
        let affine = |j: usize| match (cols.checked_div(hw), j.checked_div(hw)) {
            (Some(channels), Some(c)) => (r % groups) * channels + c,
            _ => j + spec.affine_rows.map_or(0, |a| r / a * cols),
        };
        match spec.kind {
            NormKind::Softmax { scale } => {
                let m = row
                    .iter()
                    .map(|v| v * scale as f64)
                    .fold(f64::MIN, f64::max);
                let e: Vec<f64> = row.iter().map(|v| (v * scale as f64 - m).exp()).collect();
                let s: f64 = e.iter().sum();
                for j in 0..cols {
                    out[r * cols + j] = (e[j] / s) as f32;
                }
            }
            NormKind::LayerNorm { eps } | NormKind::RmsNorm { eps } => {
                let mean = if matches!(spec.kind, NormKind::LayerNorm { .. }) {
                    row.iter().sum::<f64>() / n
                } else {
                    0.0
                };
                let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
                let inv = 1.0 / (var + eps as f64).sqrt();
                for j in 0..cols {
                    let mut v = (row[j] - mean) * inv;
                    if let Some(w) = weight {
                        v *= w[affine(j)] as f64;
                    }
                    if let Some(b) = bias {
                        v += b[affine(j)] as f64;
                    }
                    out[r * cols + j] = spec.activation.apply(v) as f32;
                }
            }
        }
    }
    out
}
