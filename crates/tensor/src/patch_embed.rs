//! The ViT/CLIP patch embedding: normalise + patchify, then one matmul whose epilogue adds the
//! conv bias, the class token and the position embeddings. Two dispatches per batch.

use std::sync::Arc;

use tessera_kernels::patch_embed::{
    patchify, patchify_packed, resize_bicubic, ImageBatch, Normalize,
};
use tessera_kernels::{DType, Gpu};

use crate::error::{Result, TensorError};
use crate::tensor::{MatmulOptions, PackedMatrix, Tensor};

/// Pixels of a `[batch, height, width, 3]` (HWC, RGB) image batch.
#[derive(Clone, Copy, Debug)]
pub enum Pixels<'a> {
    /// 8-bit pixels.
    U8(&'a [u8]),
    /// Float pixels.
    F32(&'a [f32]),
}

/// A patch embedding ready to run at one image size.
#[derive(Debug)]
pub struct PatchEmbed {
    weight: Tensor,
    /// The weight packed for the texture matmul, where the adapter runs that.
    packed: Option<PackedMatrix>,
    bias: Option<Tensor>,
    /// Row 0: class token + position 0 (less the conv bias, which the epilogue adds to every
    /// row); rows 1..: the patch positions.
    table: Tensor,
    patch: usize,
    image: (usize, usize),
}

impl PatchEmbed {
    /// From the conv weight `[hidden, 3, p, p]`, its optional bias `[hidden]`, the class token
    /// `[hidden]` and the position table `[1 + g·g, hidden]` of the checkpoint's square grid,
    /// for images of `image` = (height, width). Positions are resampled bicubically when the
    /// grid differs, as transformers does with `interpolate_pos_encoding=True`.
    pub fn new(
        weight: &Tensor,
        bias: Option<&Tensor>,
        class: &Tensor,
        positions: &Tensor,
        image: (usize, usize),
    ) -> Result<Self> {
        let p = positions.shape();
        if p.len() != 2 {
            return Err(TensorError::Shape {
                op: "patch_embed",
                detail: format!("positions must be [1 + g², hidden], got {p:?}"),
            });
        }
        let bias_values = bias.map(Tensor::to_vec).transpose()?;
        Self::from_host(
            weight,
            bias.zip(bias_values.as_deref()),
            &class.to_vec()?,
            &positions.to_vec()?,
            image,
        )
    }

    /// [`PatchEmbed::new`] from the class token, position table (row-major `[1 + g·g,
    /// hidden]`) and bias values on the host — what a loader has without reading anything
    /// back from the GPU (which a browser cannot wait for); the bias comes as its tensor and
    /// its values.
    pub fn from_host(
        weight: &Tensor,
        bias: Option<(&Tensor, &[f32])>,
        class: &[f32],
        positions: &[f32],
        image: (usize, usize),
    ) -> Result<Self> {
        const OP: &str = "patch_embed";
        let w = weight.shape();
        if w.len() != 4 || w[1] != 3 || w[2] != w[3] {
            return Err(TensorError::Shape {
                op: OP,
                detail: format!("weight must be [hidden, 3, p, p], got {w:?}"),
            });
        }
        let (hidden, patch) = (w[0], w[2]);
        if image.0 % patch != 0 || image.1 % patch != 0 || image.0 == 0 || image.1 == 0 {
            return Err(TensorError::Shape {
                op: OP,
                detail: format!(
                    "a {}x{} image does not split into {patch}x{patch} patches",
                    image.0, image.1
                ),
            });
        }
        let grid = (image.0 / patch, image.1 / patch);
        let rows = positions.len() / hidden;
        let side = (rows.saturating_sub(1) as f64).sqrt().round() as usize;
        if positions.len() % hidden != 0 || side * side + 1 != rows {
            return Err(TensorError::Shape {
                op: OP,
                detail: format!(
                    "positions must be [1 + g², {hidden}], got {} values",
                    positions.len()
                ),
            });
        }
        if class.len() != hidden
            || bias.is_some_and(|(b, v)| b.shape() != [hidden] || v.len() != hidden)
        {
            return Err(TensorError::Shape {
                op: OP,
                detail: format!("class token and bias must be [{hidden}]"),
            });
        }
        let (pos, cls) = (positions, class);
        let b = bias.map(|(_, v)| v);
        let bias = bias.map(|(t, _)| t);
        let mut table = Vec::with_capacity((grid.0 * grid.1 + 1) * hidden);
        table.extend((0..hidden).map(|d| cls[d] + pos[d] - b.as_ref().map_or(0.0, |b| b[d])));
        if (side, side) == grid {
            table.extend_from_slice(&pos[hidden..]);
        } else {
            table.extend(resize_bicubic(&pos[hidden..], (side, side), grid, hidden));
        }
        let gpu = weight.gpu();
        let rows = grid.0 * grid.1 + 1;
        let dtype = weight.dtype();
        let weight = weight.reshape(&[hidden, 3 * patch * patch])?;
        Ok(PatchEmbed {
            packed: weight.pack_weight()?,
            weight,
            bias: bias.cloned(),
            table: Tensor::from_slice(gpu, &table, &[rows, hidden], dtype)?,
            patch,
            image,
        })
    }

    /// The embeddings `[batch, 1 + patches, hidden]` of `batch` images of the configured size.
    pub fn forward(&self, pixels: Pixels<'_>, batch: usize, norm: &Normalize) -> Result<Tensor> {
        let gpu: &Arc<Gpu> = self.weight.gpu();
        let (h, w) = self.image;
        let expected = batch * h * w * 3;
        let (bytes, u8, len): (&[u8], bool, usize) = match pixels {
            Pixels::U8(p) => (p, true, p.len()),
            Pixels::F32(p) => (bytemuck::cast_slice(p), false, p.len()),
        };
        if len != expected || batch == 0 {
            return Err(TensorError::Shape {
                op: "patch_embed",
                detail: format!("{batch} images of {h}x{w}x3 need {expected} pixels, got {len}"),
            });
        }
        let upload = gpu.upload("patch_embed", bytes)?;
        let patches = self.table.shape()[0];
        let width = 3 * self.patch * self.patch;
        let dtype = self.weight.dtype();
        let images = ImageBatch {
            batch,
            height: h,
            width: w,
            u8,
        };
        let opts = MatmulOptions {
            bias: self.bias.as_ref(),
            residual: Some(&self.table),
            ..MatmulOptions::default()
        };
        // One image on packed matmuls (CPU drivers): the patch rows are written packed, so
        // they exist once instead of as a buffer and its staged copy.
        if let (1, Some(w)) = (batch, &self.packed) {
            if let Some(cols) = PackedMatrix::empty(gpu, dtype, patches, width)? {
                patchify_packed(gpu, dtype, &images, &upload, norm, self.patch, cols.rows())?;
                drop(upload);
                let out = cols.matmul_packed(w, &opts)?;
                return out.reshape(&[1, patches, out.shape()[1]]);
            }
        }
        let cols = Tensor::empty(gpu, &[batch, patches, width], dtype)?;
        patchify(
            gpu,
            dtype,
            &images,
            &upload,
            norm,
            self.patch,
            cols.buffer(),
        )?;
        match &self.packed {
            Some(w) => cols.matmul_packed(w, &opts),
            None => cols.matmul_with(&self.weight.t()?, &opts),
        }
    }

    /// Storage type of the weights.
    pub fn dtype(&self) -> DType {
        self.weight.dtype()
    }
}
