//! Launcher and CPU reference for `shaders/pack.wgsl`: a strided 2-D view of a buffer packed
//! into an rgba32float texture, four columns per texel.

use bytemuck::{Pod, Zeroable};

use crate::dtype::DType;
use crate::error::{KernelError, Result};
use crate::pool::{GpuBuffer, PooledTexture};
use crate::runtime::{Binding, Gpu, KernelKey, TEXTURE_FORMAT};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    row_stride: u32,
    col_stride: u32,
    offset: u32,
    width: u32,
    _pad: [u32; 2],
}

/// Where the matrix to pack lies in its buffer: element `(r, c)` is at
/// `offset + r·row_stride + c·col_stride`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackView {
    /// Rows (texture height).
    pub rows: usize,
    /// Columns (four per texel, zero-padded).
    pub cols: usize,
    /// Elements between consecutive rows.
    pub row_stride: usize,
    /// Elements between consecutive columns.
    pub col_stride: usize,
    /// Element offset of `(0, 0)`.
    pub offset: usize,
}

/// Records the packing of `view` of `src` into a new `ceil(cols/4) × rows` texture.
///
/// Row-major views whose rows fill whole 256-byte copy rows are copied as they are (into an
/// rgba16float texture for f16), with no shader reading the buffer; others go through the
/// `pack_rows` kernel into rgba32float.
pub fn pack_rows(
    gpu: &Gpu,
    dtype: DType,
    src: &GpuBuffer,
    view: &PackView,
) -> Result<PooledTexture> {
    let width = view.cols.div_ceil(4);
    let last = view.offset + (view.rows - 1) * view.row_stride + (view.cols - 1) * view.col_stride;
    if view.rows == 0 || view.cols == 0 || (last + 1) * dtype.size() > src.len_bytes() as usize {
        return Err(KernelError::Shape {
            op: "pack",
            detail: format!("view {view:?} is empty or reaches past its buffer"),
        });
    }
    let row_bytes = view.cols * dtype.size();
    let texel_bytes = 4 * dtype.size();
    let copyable = view.col_stride == 1
        && view.row_stride == view.cols
        && row_bytes % wgpu::COPY_BYTES_PER_ROW_ALIGNMENT as usize == 0
        && (view.offset * dtype.size()) % texel_bytes == 0;
    if copyable {
        let format = match dtype {
            DType::F32 => wgpu::TextureFormat::Rgba32Float,
            DType::F16 => wgpu::TextureFormat::Rgba16Float,
        };
        let texture = gpu.texture("pack", width as u32, view.rows as u32, format)?;
        gpu.copy_to_texture(
            src,
            (view.offset * dtype.size()) as u64,
            row_bytes as u32,
            &texture,
        );
        return Ok(texture);
    }
    let texture = gpu.texture("pack", width as u32, view.rows as u32, TEXTURE_FORMAT)?;
    let kernel = gpu.kernel(&KernelKey {
        shader: "pack",
        source: crate::modules::PACK,
        entry: "pack_rows",
        dtype,
        constants: vec![],
        bindings: &[
            (0, Binding::Read),
            (1, Binding::StorageTexture),
            (2, Binding::Params),
        ],
    })?;
    let params = Params {
        rows: view.rows as u32,
        cols: view.cols as u32,
        row_stride: view.row_stride as u32,
        col_stride: view.col_stride as u32,
        offset: view.offset as u32,
        width: width as u32,
        _pad: [0; 2],
    };
    gpu.dispatch(
        &kernel,
        &[src.into(), crate::Resource::Texture(texture.view())],
        bytemuck::bytes_of(&params),
        [width.div_ceil(64) as u32, view.rows.div_ceil(4) as u32, 1],
    )?;
    Ok(texture)
}

/// CPU reference of [`pack_rows`]: the texture's texels, row by row, as f32.
pub fn pack_rows_cpu(src: &[f32], view: &PackView) -> Vec<[f32; 4]> {
    let width = view.cols.div_ceil(4);
    let mut out = Vec::with_capacity(width * view.rows);
    for r in 0..view.rows {
        for x in 0..width {
            let mut t = [0f32; 4];
            for (j, v) in t.iter_mut().enumerate() {
                let c = 4 * x + j;
                if c < view.cols {
                    *v = src[view.offset + r * view.row_stride + c * view.col_stride];
                }
            }
            out.push(t);
        }
    }
    out
}
