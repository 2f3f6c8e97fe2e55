//! Launcher and CPU reference for `shaders/pack.wgsl`: a strided view of a buffer packed into
//! an rgba32float (f32) or rgba16float (f16) array texture, four columns per texel.

use bytemuck::{Pod, Zeroable};

use crate::dtype::DType;
use crate::error::{KernelError, Result};
use crate::pool::{GpuBuffer, PooledTexture};
use crate::runtime::{Binding, Gpu, KernelKey, Resource};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    row_stride: u32,
    col_stride: u32,
    offset: u32,
    width: u32,
    layer_div: u32,
    outer_stride: u32,
    inner_stride: u32,
    quads: u32,
    _pad: [u32; 2],
}

/// Where the matrices to pack lie in their buffer: element `(z, r, c)` of layer `z` is at
/// `offset + (z / layer_div)·outer_stride + (z % layer_div)·inner_stride + r·row_stride +
/// c·col_stride`.
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
    /// Element offset of `(0, 0, 0)`.
    pub offset: usize,
    /// Texture layers.
    pub layers: usize,
    /// Layers per outer step (e.g. heads, for layer = batch·heads + head).
    pub layer_div: usize,
    /// Elements between outer steps of the layer index.
    pub outer_stride: usize,
    /// Elements between inner steps of the layer index.
    pub inner_stride: usize,
}

impl PackView {
    /// One `rows × cols` matrix.
    pub fn matrix(
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
        offset: usize,
    ) -> Self {
        PackView {
            rows,
            cols,
            row_stride,
            col_stride,
            offset,
            layers: 1,
            layer_div: 1,
            outer_stride: 0,
            inner_stride: 0,
        }
    }

    fn at(&self, z: usize, r: usize, c: usize) -> usize {
        self.offset
            + (z / self.layer_div) * self.outer_stride
            + (z % self.layer_div) * self.inner_stride
            + r * self.row_stride
            + c * self.col_stride
    }

    /// Whether the layers are whole row-major matrices one after another from `offset`.
    fn is_dense(&self) -> bool {
        let layer = self.rows * self.cols;
        self.col_stride == 1
            && self.row_stride == self.cols
            && (self.layers == 1
                || (self.inner_stride == layer
                    && (self.layers <= self.layer_div
                        || self.outer_stride == layer * self.layer_div)))
    }
}

/// How packed rows of four columns per texel sit in their texture.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PackLayout {
    /// Row r is texture row r: `ceil(cols/4) × rows` texels.
    #[default]
    Rows,
    /// Rows in groups of four interleaved texel by texel: texture row q holds rows 4q..4q+3,
    /// its texel 4x + j being texel x of row 4q + j (`4·ceil(cols/4) × ceil(rows/4)` texels).
    /// The texture matmuls read packed weights (op(B)) this way: an invocation's four columns
    /// at one step of k are one 64-byte line, and a subgroup's 32 columns come from 8 texture
    /// rows instead of 32 (on lavapipe, 1024³ in f32 with a packed weight: 28–31 → 33–34
    /// GFLOP/s). Interleaving costs a kernel pass where `Rows` costs a buffer copy, so a B
    /// packed per call is interleaved only for products with many rows.
    Quads,
}

impl PackLayout {
    /// The texture extent `[width, height]` (before padding) of `rows × cols`.
    pub fn extent(self, rows: usize, cols: usize) -> [usize; 2] {
        let g = self.group();
        [g * cols.div_ceil(4), rows.div_ceil(g)]
    }

    /// Rows per texture row.
    pub fn group(self) -> usize {
        match self {
            PackLayout::Rows => 1,
            PackLayout::Quads => 4,
        }
    }

    /// The texture size holding `layers` of `rows × cols` on `gpu`, padded by [`padded_width`].
    pub(crate) fn size(
        self,
        gpu: &Gpu,
        dtype: DType,
        rows: usize,
        cols: usize,
        layers: usize,
    ) -> [u32; 3] {
        let [width, height] = self.extent(rows, cols);
        [
            padded_width(gpu, width, dtype) as u32,
            height as u32,
            layers as u32,
        ]
    }
}

/// Records the packing of `view` of `src` into a new texture laid out as `layout` says (layer z
/// of the texture holding layer z of the view).
///
/// The texture's format is [`DType::texel_format`]. [`PackLayout::Rows`] views whose rows are
/// whole texels starting 256-byte multiples apart are copied as they are ([`copies_as_is`]),
/// with no shader reading the buffer; others go through the `pack_rows` kernel.
pub fn pack_rows(
    gpu: &Gpu,
    dtype: DType,
    src: &GpuBuffer,
    view: &PackView,
    layout: PackLayout,
) -> Result<PooledTexture> {
    let width = view.cols.div_ceil(4);
    if view.rows == 0 || view.cols == 0 || view.layers == 0 || view.layer_div == 0 {
        return Err(KernelError::Shape {
            op: "pack",
            detail: format!("view {view:?} is empty"),
        });
    }
    let last = view.at(view.layers - 1, view.rows - 1, view.cols - 1);
    if (last + 1) * dtype.size() > src.len_bytes() as usize {
        return Err(KernelError::Shape {
            op: "pack",
            detail: format!("view {view:?} reaches past its buffer"),
        });
    }
    let size = layout.size(gpu, dtype, view.rows, view.cols, view.layers);
    let copyable = copies_as_is(view, dtype);
    let rows_fit = view.rows <= gpu.limits().max_texture_dimension_2d as usize;
    if copyable && layout == PackLayout::Quads && rows_fit {
        // Copied as rows, then interleaved texture to texture (more rows than a texture holds
        // go through the kernel, which writes quads directly).
        let rows = pack_rows(gpu, dtype, src, view, PackLayout::Rows)?;
        return quads_from_rows(gpu, dtype, &rows, view, size);
    }
    let texture = gpu.texture("pack", size, dtype.texel_format())?;
    if copyable && layout == PackLayout::Rows {
        // Layers back to back go in one copy; others (attention's heads sliced out of the
        // fused q/k/v buffer) one copy each.
        let (copies, layers) = if view.is_dense() {
            (1, view.layers)
        } else {
            (view.layers, 1)
        };
        for z in 0..copies {
            gpu.copy_to_texture(
                src,
                (view.at(z, 0, 0) * dtype.size()) as u64,
                (view.row_stride * dtype.size()) as u32,
                &texture,
                [width as u32, view.rows as u32, layers as u32],
                z as u32,
            );
        }
        return Ok(texture);
    }
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
        layer_div: view.layer_div as u32,
        outer_stride: view.outer_stride as u32,
        inner_stride: view.inner_stride as u32,
        quads: (layout == PackLayout::Quads) as u32,
        _pad: [0; 2],
    };
    gpu.dispatch(
        &kernel,
        &[src.into(), Resource::Texture(texture.array_view())],
        bytemuck::bytes_of(&params),
        [
            width.div_ceil(64) as u32,
            view.rows.div_ceil(4) as u32,
            view.layers as u32,
        ],
    )?;
    Ok(texture)
}

/// Records the [`PackLayout::Quads`] texture of `size` holding what `rows` holds in
/// [`PackLayout::Rows`].
fn quads_from_rows(
    gpu: &Gpu,
    dtype: DType,
    rows: &PooledTexture,
    view: &PackView,
    size: [u32; 3],
) -> Result<PooledTexture> {
    let texture = gpu.texture("pack", size, dtype.texel_format())?;
    let kernel = gpu.kernel(&KernelKey {
        shader: "pack",
        source: crate::modules::PACK,
        entry: "quads_from_rows",
        dtype,
        constants: vec![],
        bindings: &[
            (1, Binding::StorageTexture),
            (2, Binding::Params),
            (3, Binding::ReadTextureArray),
        ],
    })?;
    let width = view.cols.div_ceil(4);
    let params = Params {
        rows: view.rows as u32,
        width: width as u32,
        ..Params::zeroed()
    };
    gpu.dispatch(
        &kernel,
        &[
            Resource::Texture(texture.array_view()),
            Resource::Texture(rows.array_view()),
        ],
        bytemuck::bytes_of(&params),
        [
            width.div_ceil(64) as u32,
            view.rows.div_ceil(16) as u32,
            view.layers as u32,
        ],
    )?;
    Ok(texture)
}

/// Whether [`pack_rows`] copies `view` into its texture instead of running a kernel: rows of
/// whole texels, contiguous, starting 256-byte multiples apart (what texture copies take) on
/// texel boundaries.
pub(crate) fn copies_as_is(view: &PackView, dtype: DType) -> bool {
    let texel_aligned = |elements: usize| (elements * dtype.size()) % (4 * dtype.size()) == 0;
    view.col_stride == 1
        && view.cols % 4 == 0
        && (view.row_stride * dtype.size()) % wgpu::COPY_BYTES_PER_ROW_ALIGNMENT as usize == 0
        && (0..view.layers).all(|z| texel_aligned(view.at(z, 0, 0)))
}

/// The width of a texture holding rows of `width` texels of `dtype`: one 64-byte cache line
/// wider, where the limit allows, when a row is a multiple of 8 lines. Rows a large power of
/// two bytes apart (K = 1024 in f32 is 4 KiB) map to a few sets of a CPU's L1 cache, and the
/// texture matmul of CPU drivers, reading 48 rows at a time, thrashed it: 1024³ ran 15–20%
/// slower than 1040³ before this. Shorter rows (attention's 64 dims) are left alone. Kernels
/// never read the padding.
pub(crate) fn padded_width(gpu: &Gpu, width: usize, dtype: DType) -> usize {
    let per_line = 64 / (4 * dtype.size());
    let lines = width.div_ceil(per_line);
    if lines % 8 != 0 {
        return width;
    }
    let padded = (lines + 1) * per_line;
    if padded <= gpu.limits().max_texture_dimension_2d as usize {
        padded
    } else {
        width
    }
}

/// CPU reference of [`pack_rows`] in [`PackLayout::Rows`]: the texels, layer by layer and row
/// by row, as f32.
pub fn pack_rows_cpu(src: &[f32], view: &PackView) -> Vec<[f32; 4]> {
    let width = view.cols.div_ceil(4);
    let mut out = Vec::with_capacity(width * view.rows * view.layers);
    for z in 0..view.layers {
        for r in 0..view.rows {
            for x in 0..width {
                let mut t = [0f32; 4];
                for (j, v) in t.iter_mut().enumerate() {
                    let c = 4 * x + j;
                    if c < view.cols {
                        *v = src[view.at(z, r, c)];
                    }
                }
                out.push(t);
            }
        }
    }
    out
}
