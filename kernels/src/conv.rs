//! Launcher for `shaders/im2col.wgsl` and the CPU reference of grouped 2-D convolution (1-D is
//! height 1); the convolution itself is im2col followed by the matmul with its fused epilogue.

use std::ops::Range;

use bytemuck::{Pod, Zeroable};

use crate::dtype::DType;
use crate::error::{KernelError, Result};
use crate::matmul::{Activation, PackedRows};
use crate::pack::PackLayout;
use crate::pool::GpuBuffer;
use crate::runtime::{Binding, Gpu, KernelKey, Resource, IN_OUT_BINDINGS};

/// A grouped 2-D convolution of a `[n, channels, height, width]` input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvSpec {
    /// Batch.
    pub n: usize,
    /// Input channels.
    pub channels: usize,
    /// Input height (1 for 1-D).
    pub height: usize,
    /// Input width (the length for 1-D).
    pub width: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel size (rows, columns).
    pub kernel: (usize, usize),
    /// Stride (rows, columns).
    pub stride: (usize, usize),
    /// Zero padding (rows, columns) on each side.
    pub padding: (usize, usize),
    /// Channel groups (channels for depthwise).
    pub groups: usize,
}

impl ConvSpec {
    /// Output height and width.
    pub fn out_size(&self) -> (usize, usize) {
        let o = |size: usize, k: usize, s: usize, p: usize| (size + 2 * p - k) / s + 1;
        (
            o(self.height, self.kernel.0, self.stride.0, self.padding.0),
            o(self.width, self.kernel.1, self.stride.1, self.padding.1),
        )
    }

    /// Fails unless the sizes make a valid convolution.
    pub fn check(&self) -> Result<()> {
        let bad = |detail: String| Err(KernelError::Shape { op: "conv", detail });
        let (kh, kw) = self.kernel;
        if [
            self.n,
            self.channels,
            self.height,
            self.width,
            self.out_channels,
            kh,
            kw,
        ]
        .contains(&0)
            || self.stride.0 == 0
            || self.stride.1 == 0
            || self.groups == 0
        {
            return bad(format!(
                "every size, stride and group count must be at least 1: {self:?}"
            ));
        }
        if self.channels % self.groups != 0 || self.out_channels % self.groups != 0 {
            return bad(format!(
                "{} input and {} output channels do not split into {} groups",
                self.channels, self.out_channels, self.groups
            ));
        }
        if self.height + 2 * self.padding.0 < kh || self.width + 2 * self.padding.1 < kw {
            return bad(format!(
                "the {kh}x{kw} kernel is larger than the padded {}x{} input",
                self.height + 2 * self.padding.0,
                self.width + 2 * self.padding.1
            ));
        }
        Ok(())
    }

    /// Columns of the im2col matrix: `channels/groups · kh · kw`.
    pub fn patch_len(&self) -> usize {
        self.channels / self.groups * self.kernel.0 * self.kernel.1
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    channels: u32,
    height: u32,
    width: u32,
    groups: u32,
    kh: u32,
    kw: u32,
    out_h: u32,
    out_w: u32,
    stride_h: u32,
    stride_w: u32,
    pad_h: u32,
    pad_w: u32,
    total: u32,
    row_pitch: u32,
    row0: u32,
    band_rows: u32,
    _pad: [u32; 3],
}

/// Records im2col of `input` into `cols` (`[groups, band rows, patch_len]`) for the output
/// rows (`(n·out_h + y)·out_w + x`) in `band`.
pub fn im2col(
    gpu: &Gpu,
    dtype: DType,
    spec: &ConvSpec,
    input: &GpuBuffer,
    cols: &GpuBuffer,
    band: Range<usize>,
) -> Result<()> {
    spec.check()?;
    check_band(spec, &band)?;
    let total = spec.groups * band.len() * spec.patch_len();
    if ((total * dtype.size()) as u64) > cols.len_bytes() {
        return Err(KernelError::Shape {
            op: "conv",
            detail: format!("the column buffer is too small for {spec:?}"),
        });
    }
    let (grid, row_pitch) = gpu.grid_1d(total, 256);
    let params = im2col_params(dtype, spec, input, total, row_pitch, &band)?;
    let kernel = gpu.kernel(&KernelKey {
        shader: "im2col",
        source: crate::modules::IM2COL,
        entry: "im2col",
        dtype,
        constants: vec![],
        bindings: IN_OUT_BINDINGS,
    })?;
    gpu.dispatch(
        &kernel,
        &[input.into(), cols.into()],
        bytemuck::bytes_of(&params),
        grid,
    )
}

/// [`im2col`] of a one-group convolution written packed for the texture matmuls: `cols` is
/// `[band rows, patch_len]`. With `input_tex` (the input packed as `[n·channels,
/// height·width]`, see [`im2col_input_texture`]) the input is read from that texture.
#[allow(clippy::too_many_arguments)]
pub fn im2col_packed(
    gpu: &Gpu,
    dtype: DType,
    spec: &ConvSpec,
    input: &GpuBuffer,
    input_tex: Option<&PackedRows>,
    cols: &PackedRows,
    band: Range<usize>,
) -> Result<()> {
    spec.check()?;
    check_band(spec, &band)?;
    let rows = band.len();
    if spec.groups != 1 || cols.shape() != (rows, spec.patch_len()) || cols.dtype() != dtype {
        return Err(KernelError::Shape {
            op: "conv",
            detail: format!("packed columns {cols:?} do not match {spec:?} in one group"),
        });
    }
    let planes = (spec.n * spec.channels, spec.height * spec.width);
    if let Some(t) = input_tex {
        if t.shape() != planes || t.dtype() != dtype {
            return Err(KernelError::Shape {
                op: "conv",
                detail: format!("the packed input {t:?} is not {planes:?} planes of {spec:?}"),
            });
        }
    }
    let params = im2col_params(dtype, spec, input, rows * spec.patch_len(), 0, &band)?;
    let kernel = gpu.kernel(&KernelKey {
        shader: "im2col",
        source: crate::modules::IM2COL,
        entry: if input_tex.is_some() {
            "im2col_packed_tex"
        } else {
            "im2col_packed"
        },
        dtype,
        constants: vec![],
        bindings: &[
            (0, Binding::Read),
            (2, Binding::Params),
            (3, Binding::StorageTexture),
            (4, Binding::ReadTexture),
        ],
    })?;
    let none = gpu.dummy_texture(dtype)?;
    let tex = input_tex.map_or(&none, PackedRows::texture);
    gpu.dispatch(
        &kernel,
        &[
            input.into(),
            Resource::Texture(cols.texture().array_view()),
            Resource::Texture(tex.view()),
        ],
        bytemuck::bytes_of(&params),
        [
            rows.div_ceil(64) as u32,
            spec.patch_len().div_ceil(4).div_ceil(4) as u32,
            1,
        ],
    )
}

/// The input of a one-group convolution packed as `[n·channels, height·width]` rows for
/// [`im2col_packed`] to read through a texture, where its planes fit one; `None` otherwise.
pub fn im2col_input_texture(
    gpu: &Gpu,
    dtype: DType,
    spec: &ConvSpec,
    input: &GpuBuffer,
) -> Result<Option<PackedRows>> {
    let (rows, cols) = (spec.n * spec.channels, spec.height * spec.width);
    if !PackedRows::fits(gpu, rows, cols, PackLayout::Rows) {
        return Ok(None);
    }
    PackedRows::pack(gpu, dtype, input, rows, cols, PackLayout::Rows).map(Some)
}

/// Checks that `band` is a non-empty range of the output rows.
fn check_band(spec: &ConvSpec, band: &Range<usize>) -> Result<()> {
    let (out_h, out_w) = spec.out_size();
    let rows = spec.n * out_h * out_w;
    if band.is_empty() || band.end > rows {
        return Err(KernelError::Shape {
            op: "conv",
            detail: format!("rows {band:?} are not a band of the {rows} output rows"),
        });
    }
    Ok(())
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct DepthwiseParams {
    n: u32,
    channels: u32,
    height: u32,
    width: u32,
    kh: u32,
    kw: u32,
    out_h: u32,
    out_w: u32,
    stride_h: u32,
    stride_w: u32,
    pad_h: u32,
    pad_w: u32,
    strides: [u32; 4],
    offset: u32,
    has_bias: u32,
    channels_last: u32,
    total: u32,
    row_pitch: u32,
    _pad: [u32; 3],
}

/// The buffers of a [`depthwise`] convolution.
pub struct DepthwiseArgs<'a> {
    /// The input, read through `view` (`[n, channels, height, width]`, any strides).
    pub input: &'a GpuBuffer,
    /// Its view.
    pub view: &'a crate::copy::StridedView,
    /// `[channels, 1, kh, kw]`.
    pub weight: &'a GpuBuffer,
    /// `[channels]`.
    pub bias: Option<&'a GpuBuffer>,
    /// `[n, channels, out_h, out_w]`, or `[n, out_h·out_w, channels]` with `channels_last`.
    pub out: &'a GpuBuffer,
    /// The output's layout.
    pub channels_last: bool,
}

/// Records a depthwise convolution (`spec.groups == spec.channels == spec.out_channels`),
/// direct, with the bias and `act` fused.
pub fn depthwise(
    gpu: &Gpu,
    dtype: DType,
    spec: &ConvSpec,
    act: Activation,
    args: &DepthwiseArgs<'_>,
) -> Result<()> {
    spec.check()?;
    let c = spec.channels;
    let view = args.view;
    if spec.groups != c
        || spec.out_channels != c
        || view.shape != [spec.n, c, spec.height, spec.width]
        || view.strides.len() != 4
    {
        return Err(KernelError::Shape {
            op: "conv",
            detail: format!("{spec:?} over {view:?} is not a depthwise convolution"),
        });
    }
    let (out_h, out_w) = spec.out_size();
    let total = spec.n * c * out_h * out_w;
    args.input.check_holds("conv", "input", view.end(), dtype)?;
    args.weight
        .check_holds("conv", "weight", c * spec.kernel.0 * spec.kernel.1, dtype)?;
    if let Some(b) = args.bias {
        b.check_holds("conv", "bias", c, dtype)?;
    }
    args.out.check_holds("conv", "out", total, dtype)?;
    if u32::try_from(view.end().max(total)).is_err() {
        return Err(KernelError::Shape {
            op: "conv",
            detail: format!("{spec:?} over {view:?} exceeds the 32-bit index range"),
        });
    }
    let (grid, row_pitch) = gpu.grid_1d(total, 256);
    let s = &view.strides;
    let params = DepthwiseParams {
        n: spec.n as u32,
        channels: c as u32,
        height: spec.height as u32,
        width: spec.width as u32,
        kh: spec.kernel.0 as u32,
        kw: spec.kernel.1 as u32,
        out_h: out_h as u32,
        out_w: out_w as u32,
        stride_h: spec.stride.0 as u32,
        stride_w: spec.stride.1 as u32,
        pad_h: spec.padding.0 as u32,
        pad_w: spec.padding.1 as u32,
        strides: [s[0] as u32, s[1] as u32, s[2] as u32, s[3] as u32],
        offset: view.offset as u32,
        has_bias: args.bias.is_some() as u32,
        channels_last: args.channels_last as u32,
        total: total as u32,
        row_pitch,
        _pad: [0; 3],
    };
    let kernel = gpu.kernel(&KernelKey {
        shader: "depthwise",
        source: crate::modules::DEPTHWISE,
        entry: "depthwise",
        dtype,
        constants: vec![("ACT", act.code() as f64)],
        bindings: &[
            (0, Binding::Read),
            (1, Binding::Read),
            (2, Binding::Read),
            (3, Binding::ReadWrite),
            (4, Binding::Params),
        ],
    })?;
    gpu.dispatch(
        &kernel,
        &[
            args.input.into(),
            args.weight.into(),
            args.bias.unwrap_or(gpu.dummy()).into(),
            args.out.into(),
        ],
        bytemuck::bytes_of(&params),
        grid,
    )
}

/// The kernel's params for a checked `spec`, after checking the input's size.
fn im2col_params(
    dtype: DType,
    spec: &ConvSpec,
    input: &GpuBuffer,
    total: usize,
    row_pitch: u32,
    band: &Range<usize>,
) -> Result<Params> {
    let (out_h, out_w) = spec.out_size();
    let need_in = spec.n * spec.channels * spec.height * spec.width;
    if ((need_in * dtype.size()) as u64) > input.len_bytes() {
        return Err(KernelError::Shape {
            op: "conv",
            detail: format!("the input buffer is too small for {spec:?}"),
        });
    }
    if u32::try_from(total).is_err() {
        return Err(KernelError::Shape {
            op: "conv",
            detail: format!("{total} column elements exceed the 32-bit index range"),
        });
    }
    Ok(Params {
        n: spec.n as u32,
        channels: spec.channels as u32,
        height: spec.height as u32,
        width: spec.width as u32,
        groups: spec.groups as u32,
        kh: spec.kernel.0 as u32,
        kw: spec.kernel.1 as u32,
        out_h: out_h as u32,
        out_w: out_w as u32,
        stride_h: spec.stride.0 as u32,
        stride_w: spec.stride.1 as u32,
        pad_h: spec.padding.0 as u32,
        pad_w: spec.padding.1 as u32,
        total: total as u32,
        row_pitch,
        row0: band.start as u32,
        band_rows: band.len() as u32,
        _pad: [0; 3],
    })
}

/// CPU reference: `act(conv(input, weight) + bias)` as `torch.nn.functional.conv2d` computes
/// it, output `[n, out_channels, out_h, out_w]`.
pub fn conv_cpu(
    spec: &ConvSpec,
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
) -> Vec<f32> {
    let (oh, ow) = spec.out_size();
    let (kh, kw) = spec.kernel;
    let cg = spec.channels / spec.groups;
    let og = spec.out_channels / spec.groups;
    let mut out = vec![0f32; spec.n * spec.out_channels * oh * ow];
    for n in 0..spec.n {
        for o in 0..spec.out_channels {
            let g = o / og;
            for y in 0..oh {
                for x in 0..ow {
                    let mut s = bias.map_or(0.0, |b| b[o] as f64);
                    for c in 0..cg {
                        for i in 0..kh {
                            for j in 0..kw {
                                let iy = (y * spec.stride.0 + i) as isize - spec.padding.0 as isize;
                                let ix = (x * spec.stride.1 + j) as isize - spec.padding.1 as isize;
                                if iy < 0
                                    || ix < 0
                                    || iy >= spec.height as isize
                                    || ix >= spec.width as isize
                                {
                                    continue;
                                }
                                let ch = g * cg + c;
                                let iv = input[((n * spec.channels + ch) * spec.height
                                    + iy as usize)
                                    * spec.width
                                    + ix as usize];
                                let wv = weight[((o * cg + c) * kh + i) * kw + j];
                                s += iv as f64 * wv as f64;
                            }
                        }
                    }
                    out[((n * spec.out_channels + o) * oh + y) * ow + x] = act.apply(s) as f32;
                }
            }
        }
    }
    out
}
