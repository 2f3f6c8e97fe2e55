//! Convolutions (im2col + the matmul with its fused epilogue) and nearest upsampling.

use tessera_kernels::conv::{
    depthwise, im2col, im2col_input_texture, im2col_packed, ConvSpec, DepthwiseArgs,
};
use tessera_kernels::copy::{copy_strided, StridedView};
use tessera_kernels::matmul::Activation;

use crate::error::{Result, TensorError};
use crate::tensor::{MatmulOptions, PackedMatrix, Tensor};

/// Options of [`Tensor::conv2d`] and [`Tensor::conv1d`] (for 1-D only the second of each pair
/// is used).
#[derive(Clone, Copy, Debug)]
pub struct ConvOptions<'a> {
    /// Stride (rows, columns).
    pub stride: (usize, usize),
    /// Zero padding on each side (rows, columns).
    pub padding: (usize, usize),
    /// Channel groups; the input channel count for depthwise.
    pub groups: usize,
    /// Per output channel.
    pub bias: Option<&'a Tensor>,
    /// Applied after the bias (fused).
    pub activation: Activation,
    /// Return `[N, H_out·W_out, C_out]` (channels last, as a transformer stem wants it)
    /// instead of `[N, C_out, H_out, W_out]`.
    pub channels_last: bool,
}

impl Default for ConvOptions<'_> {
    fn default() -> Self {
        ConvOptions {
            stride: (1, 1),
            padding: (0, 0),
            groups: 1,
            bias: None,
            activation: Activation::None,
            channels_last: false,
        }
    }
}

impl Tensor {
    /// `torch.nn.functional.conv2d`: input `[N, C, H, W]`, weight `[C_out, C/groups, kh, kw]`.
    pub fn conv2d(&self, weight: &Tensor, opts: &ConvOptions<'_>) -> Result<Tensor> {
        const OP: &str = "conv2d";
        let (s, w) = (self.shape(), weight.shape());
        if s.len() != 4 || w.len() != 4 {
            return Err(TensorError::Shape {
                op: OP,
                detail: format!("input must be [N, C, H, W] and weight [C_out, C/groups, kh, kw], got {s:?} and {w:?}"),
            });
        }
        self.same_device(OP, weight)?;
        let spec = ConvSpec {
            n: s[0],
            channels: s[1],
            height: s[2],
            width: s[3],
            out_channels: w[0],
            kernel: (w[2], w[3]),
            stride: opts.stride,
            padding: opts.padding,
            groups: opts.groups,
        };
        spec.check()?;
        if w[1] * opts.groups != s[1] {
            return Err(TensorError::Shape {
                op: OP,
                detail: format!(
                    "weight {w:?} takes {} input channels per group, the input has {} in {} groups",
                    w[1], s[1], opts.groups
                ),
            });
        }
        if let Some(b) = opts.bias {
            self.same_device(OP, b)?;
            if b.shape() != [w[0]] {
                return Err(TensorError::Shape {
                    op: OP,
                    detail: format!("bias must be [{}], got {:?}", w[0], b.shape()),
                });
            }
        }
        if opts.groups == s[1] && w[0] == s[1] && w[1] == 1 {
            return self.depthwise(weight, &spec, opts);
        }
        let input = self.contiguous()?;
        let weight = weight.contiguous()?;
        let (oh, ow) = spec.out_size();
        let (g, rows, patch) = (spec.groups, spec.n * oh * ow, spec.patch_len());
        let og = spec.out_channels / g;
        // One group: bias and activation ride in the matmul epilogue. Several: the bias slice
        // differs per group, so they follow as one broadcast add.
        let fused = g == 1;
        let epilogue = MatmulOptions {
            bias: opts.bias.filter(|_| fused),
            activation: if fused {
                opts.activation
            } else {
                Activation::None
            },
            ..MatmulOptions::default()
        };
        // Where matmuls run on packed operands (CPU drivers), one group's columns are written
        // packed: the im2col matrix, often the largest activation of a stem, then exists once.
        let packed_weight = match g {
            1 => weight.reshape(&[og, patch])?.pack_weight()?,
            _ => None,
        };
        // The column matrix of a large convolution (a VQ-GAN's full-resolution layers) can
        // exceed a binding, or (packed) a texture's height: then it is made and multiplied in
        // bands of output rows, each inside one image, each product copied into place.
        let hw = oh * ow;
        let elem = self.dtype().size();
        let limits = self.gpu().limits();
        let mut max_rows = limits.max_storage_buffer_binding_size as usize / (g * patch * elem);
        if packed_weight.is_some() {
            max_rows = max_rows.min(limits.max_texture_dimension_2d as usize);
        }
        let band_rows = if rows <= max_rows {
            rows
        } else {
            max_rows.min(hw)
        };
        if band_rows == 0 {
            return Err(TensorError::Shape {
                op: OP,
                detail: format!(
                    "one receptive field of {patch} values per group × {g} groups exceeds the \
                     adapter's largest binding ({} bytes)",
                    limits.max_storage_buffer_binding_size
                ),
            });
        }
        let bands: Vec<std::ops::Range<usize>> = if band_rows == rows {
            std::iter::once(0..rows).collect()
        } else {
            (0..spec.n)
                .flat_map(|n| {
                    (0..hw)
                        .step_by(band_rows)
                        .map(move |p| n * hw + p..n * hw + (p + band_rows).min(hw))
                })
                .collect()
        };
        // Where the columns are written packed, the input is read through a texture too
        // (packed once for all bands).
        let input_tex = match packed_weight {
            Some(_) => im2col_input_texture(self.gpu(), self.dtype(), &spec, input.buffer())?,
            None => None,
        };
        // A band's product, `[G, band, og]` in memory.
        let band_product = |band: std::ops::Range<usize>| -> Result<Tensor> {
            let b = band.len();
            let packed = match &packed_weight {
                Some(w) => PackedMatrix::empty(self.gpu(), self.dtype(), b, patch)?.map(|c| (c, w)),
                None => None,
            };
            if let Some((cols, w)) = packed {
                im2col_packed(
                    self.gpu(),
                    self.dtype(),
                    &spec,
                    input.buffer(),
                    input_tex.as_ref(),
                    cols.rows(),
                    band,
                )?;
                return cols.matmul_packed(w, &epilogue);
            }
            let cols = Tensor::empty(self.gpu(), &[g, b, patch], self.dtype())?;
            im2col(
                self.gpu(),
                self.dtype(),
                &spec,
                input.buffer(),
                cols.buffer(),
                band,
            )?;
            if g == 1 {
                cols.reshape(&[b, patch])?
                    .matmul_with(&weight.reshape(&[og, patch])?.t()?, &epilogue)
            } else {
                cols.matmul_with(&weight.reshape(&[g, og, patch])?.t()?, &epilogue)
            }
        };
        let out = if opts.channels_last && g == 1 {
            if bands.len() == 1 {
                band_product(0..rows)?.reshape(&[spec.n, hw, og])?
            } else {
                let out = Tensor::empty(self.gpu(), &[spec.n, hw, og], self.dtype())?;
                for band in bands {
                    let (start, b) = (band.start, band.len());
                    band_product(band)?.copy_into_view(
                        &out,
                        &StridedView {
                            shape: vec![b, og],
                            strides: vec![og, 1],
                            offset: start * og,
                        },
                    )?;
                }
                out
            }
        } else {
            let out = Tensor::empty(self.gpu(), &[spec.n, g, og, hw], self.dtype())?;
            for band in bands {
                let (start, b) = (band.start, band.len());
                let product = band_product(band)?;
                if b == rows {
                    // Whole images: [G, N, HW, og] → [N, G, og, HW].
                    copy_strided(
                        self.gpu(),
                        self.dtype(),
                        product.buffer(),
                        &StridedView {
                            shape: vec![spec.n, g, og, hw],
                            strides: vec![hw * og, spec.n * hw * og, 1, og],
                            offset: 0,
                        },
                        out.buffer(),
                        &StridedView::contiguous(&[spec.n, g, og, hw]),
                    )?;
                } else {
                    // Part of image n: [G, band, og] → out[n, :, :, p0..p0 + band].
                    let (n, p0) = (start / hw, start % hw);
                    product
                        .reshape(&[g, b, og])?
                        .transpose(1, 2)?
                        .copy_into_view(
                            &out,
                            &StridedView {
                                shape: vec![g, og, b],
                                strides: vec![og * hw, hw, 1],
                                offset: n * g * og * hw + p0,
                            },
                        )?;
                }
            }
            out.reshape(&[spec.n, spec.out_channels, oh, ow])?
        };
        let out = match (fused, opts.bias) {
            (false, Some(bias)) => out.binary(
                tessera_kernels::elementwise::BinaryOp::Add,
                &bias.reshape(&[spec.out_channels, 1, 1])?,
                opts.activation,
            )?,
            (false, None) if opts.activation != Activation::None => {
                out.activation(opts.activation)?
            }
            _ => out,
        };
        if opts.channels_last && g > 1 {
            return out
                .reshape(&[spec.n, spec.out_channels, hw])?
                .transpose(1, 2)?
                .contiguous();
        }
        Ok(out)
    }

    /// A depthwise convolution, direct, reading this tensor through its strides.
    fn depthwise(
        &self,
        weight: &Tensor,
        spec: &ConvSpec,
        opts: &ConvOptions<'_>,
    ) -> Result<Tensor> {
        if weight.dtype() != self.dtype() || opts.bias.is_some_and(|b| b.dtype() != self.dtype()) {
            return Err(TensorError::Shape {
                op: "conv2d",
                detail: format!(
                    "the input is {:?}, the weight {:?}: convert one first",
                    self.dtype(),
                    weight.dtype()
                ),
            });
        }
        let (oh, ow) = spec.out_size();
        let (n, c) = (spec.n, spec.channels);
        let shape = if opts.channels_last {
            vec![n, oh * ow, c]
        } else {
            vec![n, c, oh, ow]
        };
        let out = Tensor::empty(self.gpu(), &shape, self.dtype())?;
        let weight = weight.contiguous()?;
        let bias = opts.bias.map(Tensor::contiguous).transpose()?;
        depthwise(
            self.gpu(),
            self.dtype(),
            spec,
            opts.activation,
            &DepthwiseArgs {
                input: self.buffer(),
                view: &self.view(),
                weight: weight.buffer(),
                bias: bias.as_ref().map(Tensor::buffer),
                out: out.buffer(),
                channels_last: opts.channels_last,
            },
        )?;
        Ok(out)
    }

    /// `torch.nn.functional.conv1d`: input `[N, C, L]`, weight `[C_out, C/groups, k]`; stride
    /// and padding are the second of `opts`' pairs. The result is `[N, C_out, L_out]`, or
    /// `[N, L_out, C_out]` with `channels_last`.
    pub fn conv1d(&self, weight: &Tensor, opts: &ConvOptions<'_>) -> Result<Tensor> {
        let (s, w) = (self.shape(), weight.shape());
        if s.len() != 3 || w.len() != 3 {
            return Err(TensorError::Shape {
                op: "conv1d",
                detail: format!(
                    "input must be [N, C, L] and weight [C_out, C/groups, k], got {s:?} and {w:?}"
                ),
            });
        }
        let opts2 = ConvOptions {
            stride: (1, opts.stride.1),
            padding: (0, opts.padding.1),
            ..*opts
        };
        let out = self
            .reshape(&[s[0], s[1], 1, s[2]])?
            .conv2d(&weight.reshape(&[w[0], w[1], 1, w[2]])?, &opts2)?;
        if opts.channels_last {
            return Ok(out);
        }
        let l = out.shape()[3];
        out.reshape(&[s[0], w[0], l])
    }

    /// Nearest-neighbour upsampling ×2 of `[N, C, H, W]` (`torch.nn.Upsample(scale_factor=2)`).
    pub fn upsample_nearest2x(&self) -> Result<Tensor> {
        let s = self.shape();
        if s.len() != 4 {
            return Err(TensorError::Shape {
                op: "upsample",
                detail: format!("input must be [N, C, H, W], got {s:?}"),
            });
        }
        let (nch, h, w) = (s[0] * s[1] * s[2], s[2], s[3]);
        let x = self.contiguous()?;
        // Columns doubled: [NCH, W, 2] from [NCH, W, 1].
        let wide = Tensor::empty(self.gpu(), &[nch, 2 * w], self.dtype())?;
        copy_strided(
            self.gpu(),
            self.dtype(),
            x.buffer(),
            &StridedView {
                shape: vec![nch, w, 2],
                strides: vec![w, 1, 0],
                offset: 0,
            },
            wide.buffer(),
            &StridedView::contiguous(&[nch, w, 2]),
        )?;
        // Rows doubled: [NC, H, 2, 2W] from [NC, H, 1, 2W].
        let nc = s[0] * s[1];
        let out = Tensor::empty(self.gpu(), &[s[0], s[1], 2 * h, 2 * w], self.dtype())?;
        copy_strided(
            self.gpu(),
            self.dtype(),
            wide.buffer(),
            &StridedView {
                shape: vec![nc, h, 2, 2 * w],
                strides: vec![h * 2 * w, 2 * w, 0, 1],
                offset: 0,
            },
            out.buffer(),
            &StridedView::contiguous(&[nc, h, 2, 2 * w]),
        )?;
        Ok(out)
    }
}
