//! Convolutions and upsampling against the CPU reference.

use tessera::kernels::conv::{conv_cpu, ConvSpec};
use tessera::{Activation, ConvOptions, DType, Tensor};

use crate::common::{gpu, rel_error, values};

const TOL: f32 = 1e-4;

#[allow(clippy::too_many_arguments)]
fn conv2d_case(
    n: usize,
    c: usize,
    (h, w): (usize, usize),
    out: usize,
    kernel: (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
    groups: usize,
    act: Activation,
) {
    let gpu = gpu();
    let spec = ConvSpec {
        n,
        channels: c,
        height: h,
        width: w,
        out_channels: out,
        kernel,
        stride,
        padding,
        groups,
    };
    let x = values(n * c * h * w, 1 + c as u64);
    let wt = values(out * c / groups * kernel.0 * kernel.1, 2 + out as u64);
    let b = values(out, 3);
    let tx = Tensor::from_slice(&gpu, &x, &[n, c, h, w], DType::F32).unwrap();
    let tw = Tensor::from_slice(
        &gpu,
        &wt,
        &[out, c / groups, kernel.0, kernel.1],
        DType::F32,
    )
    .unwrap();
    let tb = Tensor::from_slice(&gpu, &b, &[out], DType::F32).unwrap();
    let want = conv_cpu(&spec, &x, &wt, Some(&b), act);
    let (oh, ow) = spec.out_size();
    for channels_last in [false, true] {
        let opts = ConvOptions {
            stride,
            padding,
            groups,
            bias: Some(&tb),
            activation: act,
            channels_last,
        };
        let got = tx.conv2d(&tw, &opts).unwrap();
        let got = if channels_last {
            assert_eq!(got.shape(), &[n, oh * ow, out]);
            got.transpose(1, 2).unwrap().to_vec().unwrap()
        } else {
            assert_eq!(got.shape(), &[n, out, oh, ow]);
            got.to_vec().unwrap()
        };
        let err = rel_error(&got, &want);
        assert!(err <= TOL, "{spec:?} channels_last={channels_last}: {err}");
    }
}

#[test]
fn conv2d_kernels_strides_and_groups() {
    let none = Activation::None;
    conv2d_case(2, 3, (9, 7), 5, (3, 3), (1, 1), (1, 1), 1, none);
    conv2d_case(1, 4, (8, 8), 6, (3, 3), (2, 2), (1, 1), 1, Activation::Silu);
    conv2d_case(2, 6, (5, 5), 4, (1, 1), (1, 1), (0, 0), 1, none);
    conv2d_case(1, 8, (7, 6), 4, (3, 3), (1, 1), (1, 1), 2, Activation::Relu);
    conv2d_case(1, 6, (6, 9), 6, (3, 3), (2, 2), (1, 1), 6, none);
    // Patch embedding: kernel = stride = patch.
    conv2d_case(1, 3, (32, 32), 16, (16, 16), (16, 16), (0, 0), 1, none);
}

#[test]
fn depthwise_conv2d_reads_strided_views() {
    conv2d_case(
        2,
        24,
        (5, 7),
        24,
        (3, 3),
        (1, 1),
        (1, 1),
        24,
        Activation::GeluErf,
    );
    conv2d_case(1, 5, (8, 8), 5, (2, 2), (2, 2), (0, 0), 5, Activation::None);
    // A channels-last tensor seen as NCHW through its strides (ConvNeXt's depthwise layer).
    let gpu = gpu();
    let (n, h, w, c) = (2, 4, 6, 16);
    let nhwc = values(n * h * w * c, 11);
    let wt = values(c * 9, 12);
    let mut nchw = vec![0.0; nhwc.len()];
    for i in 0..n {
        for y in 0..h {
            for x in 0..w {
                for ch in 0..c {
                    nchw[((i * c + ch) * h + y) * w + x] = nhwc[((i * h + y) * w + x) * c + ch];
                }
            }
        }
    }
    let spec = ConvSpec {
        n,
        channels: c,
        height: h,
        width: w,
        out_channels: c,
        kernel: (3, 3),
        stride: (1, 1),
        padding: (1, 1),
        groups: c,
    };
    let want = conv_cpu(&spec, &nchw, &wt, None, Activation::None);
    let t = Tensor::from_slice(&gpu, &nhwc, &[n, h, w, c], DType::F32).unwrap();
    let view = t.transpose(1, 3).unwrap().transpose(2, 3).unwrap();
    let tw = Tensor::from_slice(&gpu, &wt, &[c, 1, 3, 3], DType::F32).unwrap();
    let opts = ConvOptions {
        padding: (1, 1),
        groups: c,
        ..ConvOptions::default()
    };
    let got = view.conv2d(&tw, &opts).unwrap().to_vec().unwrap();
    assert!(rel_error(&got, &want) < TOL);
    let wt16 = Tensor::from_slice(&gpu, &wt, &[c, 1, 3, 3], DType::F32).unwrap();
    if gpu.supports_f16() {
        let t16 = t.to_dtype(DType::F16).unwrap();
        let v16 = t16.transpose(1, 3).unwrap().transpose(2, 3).unwrap();
        assert!(
            v16.conv2d(&wt16, &opts).is_err(),
            "mixed dtypes are refused"
        );
        let got = v16
            .conv2d(&wt16.to_dtype(DType::F16).unwrap(), &opts)
            .unwrap()
            .to_vec()
            .unwrap();
        assert!(rel_error(&got, &want) < 1e-2);
    }
}

#[test]
fn conv2d_past_one_binding_runs_in_bands() {
    // 256×256 outputs × 64·3·3 values: a column matrix past a 128 MiB binding (lavapipe's,
    // WebGPU's default), so there it is made in bands of rows (two or more per image, and per
    // group).
    conv2d_case(
        2,
        64,
        (256, 256),
        8,
        (3, 3),
        (1, 1),
        (1, 1),
        1,
        Activation::Silu,
    );
    conv2d_case(
        1,
        128,
        (256, 256),
        4,
        (3, 3),
        (1, 1),
        (1, 1),
        2,
        Activation::None,
    );
}

#[test]
fn conv1d_whisper_stem() {
    let gpu = gpu();
    let (n, mels, frames, width) = (2, 8, 30, 12);
    let x = values(n * mels * frames, 5);
    let w1 = values(width * mels * 3, 6);
    let b1 = values(width, 7);
    let w2 = values(width * width * 3, 8);
    let b2 = values(width, 9);
    let t = |d: &[f32], s: &[usize]| Tensor::from_slice(&gpu, d, s, DType::F32).unwrap();
    let (tw1, tb1, tw2, tb2) = (
        t(&w1, &[width, mels, 3]),
        t(&b1, &[width]),
        t(&w2, &[width, width, 3]),
        t(&b2, &[width]),
    );
    let conv = |stride, bias| ConvOptions {
        stride: (1, stride),
        padding: (0, 1),
        bias: Some(bias),
        activation: Activation::GeluErf,
        ..ConvOptions::default()
    };
    let h = t(&x, &[n, mels, frames])
        .conv1d(&tw1, &conv(1, &tb1))
        .unwrap();
    assert_eq!(h.shape(), &[n, width, frames]);
    let y = h
        .conv1d(
            &tw2,
            &ConvOptions {
                channels_last: true,
                ..conv(2, &tb2)
            },
        )
        .unwrap();
    assert_eq!(y.shape(), &[n, frames / 2, width]);
    let spec = |c, l, s| ConvSpec {
        n,
        channels: c,
        height: 1,
        width: l,
        out_channels: width,
        kernel: (1, 3),
        stride: (1, s),
        padding: (0, 1),
        groups: 1,
    };
    let want1 = conv_cpu(
        &spec(mels, frames, 1),
        &x,
        &w1,
        Some(&b1),
        Activation::GeluErf,
    );
    let want2 = conv_cpu(
        &spec(width, frames, 2),
        &want1,
        &w2,
        Some(&b2),
        Activation::GeluErf,
    );
    assert!(rel_error(&h.to_vec().unwrap(), &want1) <= TOL);
    let got = y.transpose(1, 2).unwrap().to_vec().unwrap();
    assert!(rel_error(&got, &want2) <= TOL);
}

#[test]
fn upsample_nearest_doubles_rows_and_columns() {
    let gpu = gpu();
    let (n, c, h, w) = (2, 3, 4, 5);
    let x = values(n * c * h * w, 10);
    let t = Tensor::from_slice(&gpu, &x, &[n, c, h, w], DType::F32).unwrap();
    let got = t.upsample_nearest2x().unwrap();
    assert_eq!(got.shape(), &[n, c, 2 * h, 2 * w]);
    let got = got.to_vec().unwrap();
    for nc in 0..n * c {
        for y in 0..2 * h {
            for xx in 0..2 * w {
                assert_eq!(
                    got[(nc * 2 * h + y) * 2 * w + xx],
                    x[(nc * h + y / 2) * w + xx / 2]
                );
            }
        }
    }
}

#[test]
fn conv_shape_errors() {
    let gpu = gpu();
    let t = |s: &[usize]| {
        Tensor::from_slice(&gpu, &values(s.iter().product(), 1), s, DType::F32).unwrap()
    };
    let x = t(&[1, 4, 5, 5]);
    let err = x
        .conv2d(&t(&[2, 3, 3, 3]), &ConvOptions::default())
        .unwrap_err();
    assert!(err.to_string().contains("input channels"), "{err}");
    let err = x
        .conv2d(
            &t(&[3, 2, 3, 3]),
            &ConvOptions {
                groups: 2,
                ..ConvOptions::default()
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("groups"), "{err}");
    let err = x
        .conv2d(&t(&[2, 4, 7, 7]), &ConvOptions::default())
        .unwrap_err();
    assert!(err.to_string().contains("larger than"), "{err}");
    assert!(t(&[1, 4, 5])
        .conv2d(&t(&[2, 4, 1, 1]), &ConvOptions::default())
        .is_err());
    assert!(t(&[4, 5]).upsample_nearest2x().is_err());
}
