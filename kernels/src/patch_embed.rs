//! Launcher for `shaders/patch_embed.wgsl` (normalise + patchify) and the bicubic resampling
//! of position embeddings to another patch grid, as PyTorch's `interpolate(mode="bicubic",
//! align_corners=False)` computes it.

use bytemuck::{Pod, Zeroable};

use crate::dtype::DType;
use crate::error::{KernelError, Result};
use crate::matmul::PackedRows;
use crate::pool::GpuBuffer;
use crate::runtime::{Binding, Gpu, KernelKey, Resource};

/// How pixels become model inputs: `(rescale · x − mean[c]) / std[c]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Normalize {
    /// Factor before the mean is taken off (1/255 for 8-bit pixels).
    pub rescale: f32,
    /// Per-channel mean (RGB).
    pub mean: [f32; 3],
    /// Per-channel standard deviation (RGB).
    pub std: [f32; 3],
}

/// A batch of `[batch, height, width, 3]` images, already resized.
#[derive(Clone, Copy, Debug)]
pub struct ImageBatch {
    /// Images.
    pub batch: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// Pixels are bytes (else f32).
    pub u8: bool,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    mean: [f32; 4],
    inv_std: [f32; 4],
    batch: u32,
    height: u32,
    width: u32,
    patch: u32,
    grid_w: u32,
    patches: u32,
    rescale: f32,
    row_pitch: u32,
}

/// Records the patch rows `[batch, 1 + patches, 3·patch²]` of `pixels` into `cols` (row 0 of
/// each image zero).
pub fn patchify(
    gpu: &Gpu,
    dtype: DType,
    images: &ImageBatch,
    pixels: &GpuBuffer,
    norm: &Normalize,
    patch: usize,
    cols: &GpuBuffer,
) -> Result<()> {
    let rows = patch_rows(images, patch)?;
    let total = images.batch * rows * 3 * patch * patch;
    if ((total * dtype.size()) as u64) > cols.len_bytes() {
        return Err(KernelError::Shape {
            op: "patch_embed",
            detail: "patch buffer too small".into(),
        });
    }
    let (grid, row_pitch) = gpu.grid_1d(total, 256);
    let kernel = patch_kernel(gpu, dtype, images, false)?;
    let params = patch_params(images, pixels, norm, patch, row_pitch)?;
    let [b8, b32] = pixel_sources(gpu, images, pixels);
    gpu.dispatch(
        &kernel,
        &[b8.into(), b32.into(), cols.into()],
        bytemuck::bytes_of(&params),
        grid,
    )
}

/// [`patchify`] of one image written packed for the texture matmuls: `cols` is
/// `[1 + patches, 3·patch²]`.
pub fn patchify_packed(
    gpu: &Gpu,
    dtype: DType,
    images: &ImageBatch,
    pixels: &GpuBuffer,
    norm: &Normalize,
    patch: usize,
    cols: &PackedRows,
) -> Result<()> {
    let rows = patch_rows(images, patch)?;
    let width = 3 * patch * patch;
    if images.batch != 1 || cols.shape() != (rows, width) || cols.dtype() != dtype {
        return Err(KernelError::Shape {
            op: "patch_embed",
            detail: format!(
                "packed patches {cols:?} do not match one image of {rows} rows of {width}"
            ),
        });
    }
    let kernel = patch_kernel(gpu, dtype, images, true)?;
    let params = patch_params(images, pixels, norm, patch, 0)?;
    let [b8, b32] = pixel_sources(gpu, images, pixels);
    gpu.dispatch(
        &kernel,
        &[
            b8.into(),
            b32.into(),
            Resource::Texture(cols.texture().array_view()),
        ],
        bytemuck::bytes_of(&params),
        [
            width.div_ceil(4).div_ceil(64) as u32,
            rows.div_ceil(4) as u32,
            1,
        ],
    )
}

/// The patchify kernel writing a buffer, or with `packed` a packed texture.
fn patch_kernel(
    gpu: &Gpu,
    dtype: DType,
    images: &ImageBatch,
    packed: bool,
) -> Result<std::sync::Arc<crate::runtime::Kernel>> {
    gpu.kernel(&KernelKey {
        shader: "patch_embed",
        source: crate::modules::PATCH_EMBED,
        entry: if packed {
            "patchify_packed"
        } else {
            "patchify"
        },
        dtype,
        constants: vec![("U8", images.u8 as u32 as f64)],
        bindings: if packed {
            &[
                (0, Binding::Read),
                (1, Binding::Read),
                (3, Binding::Params),
                (4, Binding::StorageTexture),
            ]
        } else {
            &[
                (0, Binding::Read),
                (1, Binding::Read),
                (2, Binding::ReadWrite),
                (3, Binding::Params),
            ]
        },
    })
}

/// The kernel's 8-bit and float pixel bindings: `pixels` at the one the batch uses.
fn pixel_sources<'a>(
    gpu: &'a Gpu,
    images: &ImageBatch,
    pixels: &'a GpuBuffer,
) -> [&'a GpuBuffer; 2] {
    if images.u8 {
        [pixels, gpu.dummy()]
    } else {
        [gpu.dummy(), pixels]
    }
}

/// Rows per image (class slot + patches), after checking the sizes.
fn patch_rows(images: &ImageBatch, patch: usize) -> Result<usize> {
    let ImageBatch { height, width, .. } = *images;
    if patch == 0 || height % patch != 0 || width % patch != 0 || height == 0 || width == 0 {
        return Err(KernelError::Shape {
            op: "patch_embed",
            detail: format!("a {height}x{width} image does not split into {patch}x{patch} patches"),
        });
    }
    Ok((height / patch) * (width / patch) + 1)
}

fn patch_params(
    images: &ImageBatch,
    pixels: &GpuBuffer,
    norm: &Normalize,
    patch: usize,
    row_pitch: u32,
) -> Result<Params> {
    let ImageBatch {
        batch,
        height,
        width,
        u8,
    } = *images;
    if norm.std.contains(&0.0) {
        return Err(KernelError::Shape {
            op: "patch_embed",
            detail: "image_std has a zero".into(),
        });
    }
    let pixel_bytes = batch * height * width * 3 * if u8 { 1 } else { 4 };
    if pixel_bytes as u64 > pixels.len_bytes() {
        return Err(KernelError::Shape {
            op: "patch_embed",
            detail: "pixel buffer too small".into(),
        });
    }
    let [m0, m1, m2] = norm.mean;
    let [s0, s1, s2] = norm.std;
    Ok(Params {
        mean: [m0, m1, m2, 0.0],
        inv_std: [1.0 / s0, 1.0 / s1, 1.0 / s2, 0.0],
        batch: batch as u32,
        height: height as u32,
        width: width as u32,
        patch: patch as u32,
        grid_w: (width / patch) as u32,
        patches: (patch_rows(images, patch)? - 1) as u32,
        rescale: norm.rescale,
        row_pitch,
    })
}

/// PyTorch's cubic convolution weights (A = −0.75) for a fractional offset `t`.
fn cubic_weights(t: f64) -> [f64; 4] {
    const A: f64 = -0.75;
    let near = |x: f64| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let far = |x: f64| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
}

/// `[in_h·in_w, dim]` row-major grid values resampled to `[out_h·out_w, dim]` by bicubic
/// interpolation with `align_corners=False` (borders clamped), as `torch.nn.functional.
/// interpolate(..., size=(out_h, out_w), mode="bicubic")`.
pub fn resize_bicubic(
    values: &[f32],
    (in_h, in_w): (usize, usize),
    (out_h, out_w): (usize, usize),
    dim: usize,
) -> Vec<f32> {
    let axis = |out_len: usize, in_len: usize| -> Vec<([usize; 4], [f64; 4])> {
        let scale = in_len as f64 / out_len as f64;
        (0..out_len)
            .map(|o| {
                let src = (o as f64 + 0.5) * scale - 0.5;
                let base = src.floor();
                let w = cubic_weights(src - base);
                let idx = [-1isize, 0, 1, 2]
                    .map(|k| (base as isize + k).clamp(0, in_len as isize - 1) as usize);
                (idx, w)
            })
            .collect()
    };
    let (ys, xs) = (axis(out_h, in_h), axis(out_w, in_w));
    let mut out = vec![0f32; out_h * out_w * dim];
    for (oy, (iy, wy)) in ys.iter().enumerate() {
        for (ox, (ix, wx)) in xs.iter().enumerate() {
            for d in 0..dim {
                let mut s = 0f64;
                for a in 0..4 {
                    for b in 0..4 {
                        s += wy[a] * wx[b] * values[(iy[a] * in_w + ix[b]) * dim + d] as f64;
                    }
                }
                out[(oy * out_w + ox) * dim + d] = s as f32;
            }
        }
    }
    out
}
