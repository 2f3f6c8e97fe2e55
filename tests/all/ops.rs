//! Elementwise, normalisation, softmax, embedding and concat kernels against their CPU
//! references on awkward and real shapes.

use tessera::kernels::copy::{copy_strided_cpu, StridedView};
use tessera::kernels::elementwise::{binary_cpu, unary_cpu, BinaryOp};
use tessera::kernels::embedding::{embedding_cpu, sinusoids};
use tessera::kernels::norm::{norm_cpu, NormKind, NormSpec};
use tessera::kernels::topk::topk_cpu;
use tessera::{Activation, DType, Tensor, TensorError};

use crate::common::{f16_or_clear_error, gpu, rel_error, values};

const TOL: f32 = 1e-4;
const ACTS: [Activation; 7] = [
    Activation::None,
    Activation::Relu,
    Activation::GeluErf,
    Activation::GeluTanh,
    Activation::QuickGelu,
    Activation::Silu,
    Activation::Tanh,
];

#[test]
fn activations_and_scale_over_views() {
    let gpu = gpu();
    let data: Vec<f32> = values(3 * 5 * 7, 1).iter().map(|v| v * 6.0).collect();
    let t = Tensor::from_slice(&gpu, &data, &[3, 5, 7], DType::F32).unwrap();
    let view = t.transpose(0, 2).unwrap();
    let v = StridedView {
        shape: vec![7, 5, 3],
        strides: vec![1, 7, 35],
        offset: 0,
    };
    for act in ACTS {
        let got = view.map(act, 0.5).unwrap();
        assert_eq!(got.shape(), &[7, 5, 3]);
        let want = unary_cpu(&data, &v, act, 0.5);
        let err = rel_error(&got.to_vec().unwrap(), &want);
        assert!(err <= TOL, "{act:?}: {err}");
    }
}

#[test]
fn binary_ops_broadcast() {
    let gpu = gpu();
    let cases: &[(&[usize], &[usize])] = &[
        (&[2, 3, 4], &[4]),
        (&[2, 1, 4], &[3, 1]),
        (&[1], &[5, 7]),
        (&[197, 768], &[768]),
        (&[2, 3, 5, 7], &[2, 1, 5, 1]),
    ];
    for (i, &(sa, sb)) in cases.iter().enumerate() {
        let a = values(sa.iter().product(), 10 + i as u64);
        let b = values(sb.iter().product(), 20 + i as u64);
        let ta = Tensor::from_slice(&gpu, &a, sa, DType::F32).unwrap();
        let tb = Tensor::from_slice(&gpu, &b, sb, DType::F32).unwrap();
        let shape = tessera::tensor::broadcast_shape("test", sa, sb).unwrap();
        let view = |s: &[usize]| {
            let full = StridedView::contiguous(s);
            let pad = shape.len() - s.len();
            StridedView {
                shape: shape.clone(),
                strides: (0..shape.len())
                    .map(|d| {
                        if d < pad || s[d - pad] == 1 {
                            0
                        } else {
                            full.strides[d - pad]
                        }
                    })
                    .collect(),
                offset: 0,
            }
        };
        for op in [
            BinaryOp::Add,
            BinaryOp::Mul,
            BinaryOp::Sub,
            BinaryOp::GeluMul,
        ] {
            let got = ta.binary(op, &tb, Activation::GeluErf).unwrap();
            assert_eq!(got.shape(), &shape[..]);
            let want = binary_cpu(op, Activation::GeluErf, &a, &view(sa), &b, &view(sb));
            let err = rel_error(&got.to_vec().unwrap(), &want);
            assert!(err <= TOL, "{sa:?} {op:?} {sb:?}: {err}");
        }
    }
    let ta = Tensor::from_slice(&gpu, &values(6, 1), &[2, 3], DType::F32).unwrap();
    let tb = Tensor::from_slice(&gpu, &values(4, 2), &[4], DType::F32).unwrap();
    let err = ta.add(&tb).unwrap_err();
    assert!(err.to_string().contains("do not broadcast"), "{err}");
}

#[test]
fn add_reads_transposed_views_in_place() {
    let gpu = gpu();
    let a = values(12, 3);
    let ta = Tensor::from_slice(&gpu, &a, &[3, 4], DType::F32).unwrap();
    let sum = ta.t().unwrap().add(&ta.t().unwrap()).unwrap();
    let want: Vec<f32> = (0..4)
        .flat_map(|c| (0..3).map(move |r| (r, c)))
        .map(|(r, c)| 2.0 * a[r * 4 + c])
        .collect();
    assert!(rel_error(&sum.to_vec().unwrap(), &want) <= TOL);
}

fn norm_case(kind: NormKind, rows: usize, cols: usize, affine: bool, residual: bool) {
    let gpu = gpu();
    let x: Vec<f32> = values(rows * cols, 30 + cols as u64)
        .iter()
        .map(|v| v * 3.0 + 0.5)
        .collect();
    let r = values(rows * cols, 31);
    let w = values(cols, 32);
    let b = values(cols, 33);
    let tx = Tensor::from_slice(&gpu, &x, &[rows, cols], DType::F32).unwrap();
    let tr = Tensor::from_slice(&gpu, &r, &[rows, cols], DType::F32).unwrap();
    let tw = Tensor::from_slice(&gpu, &w, &[cols], DType::F32).unwrap();
    let tb = Tensor::from_slice(&gpu, &b, &[cols], DType::F32).unwrap();
    let (wt, bt) = if affine {
        (Some(&tw), Some(&tb))
    } else {
        (None, None)
    };
    let spec = NormSpec {
        kind,
        rows,
        cols,
        groups: None,
        affine_rows: None,
        activation: Activation::None,
    };
    let (got, sum) = match kind {
        NormKind::LayerNorm { eps } if residual => {
            let (s, o) = tx.add_layer_norm(&tr, wt, bt, eps).unwrap();
            (o, Some(s))
        }
        NormKind::LayerNorm { eps } => (tx.layer_norm(wt, bt, eps).unwrap(), None),
        NormKind::RmsNorm { eps } => (tx.rms_norm(wt, eps).unwrap(), None),
        NormKind::Softmax { scale } => (tx.softmax(scale).unwrap(), None),
    };
    let bias = match kind {
        NormKind::LayerNorm { .. } if affine => Some(&b[..]),
        _ => None,
    };
    let weight = match kind {
        NormKind::Softmax { .. } => None,
        _ if affine => Some(&w[..]),
        _ => None,
    };
    let want = norm_cpu(&spec, &x, residual.then_some(&r[..]), weight, bias);
    let err = rel_error(&got.to_vec().unwrap(), &want);
    assert!(err <= TOL, "{kind:?} {rows}x{cols} affine={affine}: {err}");
    if let Some(sum) = sum {
        let want: Vec<f32> = x.iter().zip(&r).map(|(a, b)| a + b).collect();
        assert!(rel_error(&sum.to_vec().unwrap(), &want) <= 1e-6);
    }
}

#[test]
fn layer_norm_matches_reference() {
    // 20000 columns: the workgroup-per-row kernel also on CPU drivers (one row per invocation
    // serves shorter rows there).
    for &(rows, cols) in &[
        (1, 1),
        (3, 7),
        (5, 63),
        (4, 65),
        (197, 768),
        (2, 1500),
        (2, 20000),
    ] {
        for affine in [true, false] {
            norm_case(NormKind::LayerNorm { eps: 1e-5 }, rows, cols, affine, false);
        }
        norm_case(NormKind::LayerNorm { eps: 1e-6 }, rows, cols, true, true);
    }
}

#[test]
fn rms_norm_and_softmax_match_reference() {
    for &(rows, cols) in &[(1, 1), (3, 7), (4, 65), (77, 512), (2, 1500), (2, 20000)] {
        norm_case(NormKind::RmsNorm { eps: 1e-6 }, rows, cols, true, false);
        norm_case(NormKind::RmsNorm { eps: 1e-6 }, rows, cols, false, false);
        norm_case(NormKind::Softmax { scale: 1.0 }, rows, cols, false, false);
        norm_case(NormKind::Softmax { scale: 0.125 }, rows, cols, false, false);
    }
}

#[test]
fn softmax_of_large_values_is_finite_and_sums_to_one() {
    let gpu = gpu();
    let t = Tensor::from_slice(&gpu, &[1000.0, 999.0, -1000.0, 0.0], &[1, 4], DType::F32).unwrap();
    let p = t.softmax(1.0).unwrap().to_vec().unwrap();
    assert!(p.iter().all(|v| v.is_finite()));
    assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    assert!((p[0] - 1.0 / (1.0 + (-1f32).exp())).abs() < 1e-6);
}

#[test]
fn adaptive_norm_has_a_weight_and_bias_per_batch_element() {
    let g = gpu();
    // 256 columns: rows that CPU drivers read through textures; 77: through the buffer.
    for (b, rows, cols) in [(2, 16, 256), (3, 5, 77), (1, 1, 8)] {
        let x = values(b * rows * cols, 21);
        let (wt, bs) = (values(b * cols, 22), values(b * cols, 23));
        let t = Tensor::from_slice(&g, &x, &[b, rows, cols], DType::F32).unwrap();
        let tw = Tensor::from_slice(&g, &wt, &[b, cols], DType::F32).unwrap();
        let tb = Tensor::from_slice(&g, &bs, &[b, cols], DType::F32).unwrap();
        for layer_norm in [false, true] {
            let got = t.adaptive_norm(layer_norm, &tw, &tb, 1e-6).unwrap();
            let kind = if layer_norm {
                NormKind::LayerNorm { eps: 1e-6 }
            } else {
                NormKind::RmsNorm { eps: 1e-6 }
            };
            let spec = NormSpec {
                kind,
                rows: b * rows,
                cols,
                groups: None,
                affine_rows: Some(rows),
                activation: Activation::None,
            };
            let want = norm_cpu(&spec, &x, None, Some(&wt), Some(&bs));
            let err = rel_error(&got.to_vec().unwrap(), &want);
            assert!(
                err < 1e-5,
                "[{b}, {rows}, {cols}] layer_norm={layer_norm}: {err}"
            );
        }
    }
    let t = Tensor::from_slice(&g, &[0.0; 12], &[2, 2, 3], DType::F32).unwrap();
    let w = Tensor::from_slice(&g, &[0.0; 3], &[1, 3], DType::F32).unwrap();
    assert!(
        t.adaptive_norm(false, &w, &w, 1e-6).is_err(),
        "one row of weights for two"
    );
}

#[test]
fn group_norm_matches_reference() {
    let gpu = gpu();
    for &(n, c, h, w, groups) in &[(2, 32, 5, 7, 8), (1, 6, 3, 1, 3), (1, 64, 4, 4, 32)] {
        let x = values(n * c * h * w, 40 + c as u64);
        let wt = values(c, 41);
        let bs = values(c, 42);
        let tx = Tensor::from_slice(&gpu, &x, &[n, c, h, w], DType::F32).unwrap();
        let tw = Tensor::from_slice(&gpu, &wt, &[c], DType::F32).unwrap();
        let tb = Tensor::from_slice(&gpu, &bs, &[c], DType::F32).unwrap();
        for act in [Activation::None, Activation::Silu] {
            let got = tx
                .group_norm_with(groups, Some(&tw), Some(&tb), 1e-6, act)
                .unwrap();
            let spec = NormSpec {
                kind: NormKind::LayerNorm { eps: 1e-6 },
                rows: n * groups,
                cols: c / groups * h * w,
                groups: Some((groups, h * w)),
                affine_rows: None,
                activation: act,
            };
            let want = norm_cpu(&spec, &x, None, Some(&wt), Some(&bs));
            let err = rel_error(&got.to_vec().unwrap(), &want);
            assert!(err <= TOL, "{n}x{c}x{h}x{w}/{groups} {act:?}: {err}");
        }
    }
    let tx = Tensor::from_slice(&gpu, &values(12, 1), &[1, 6, 2], DType::F32).unwrap();
    assert!(tx.group_norm(4, None, None, 1e-5).is_err());
}

#[test]
fn norms_check_parameter_shapes() {
    let gpu = gpu();
    let tx = Tensor::from_slice(&gpu, &values(12, 1), &[3, 4], DType::F32).unwrap();
    let w = Tensor::from_slice(&gpu, &values(3, 2), &[3], DType::F32).unwrap();
    let err = tx.layer_norm(Some(&w), None, 1e-5).unwrap_err();
    assert!(
        matches!(err, TensorError::Shape { .. }) && err.to_string().contains("[4]"),
        "{err}"
    );
    let r = Tensor::from_slice(&gpu, &values(4, 3), &[4], DType::F32).unwrap();
    assert!(tx.add_layer_norm(&r, None, None, 1e-5).is_err());
}

#[test]
fn f16_norm_and_elementwise() {
    let gpu = gpu();
    if !f16_or_clear_error(&gpu) {
        return;
    }
    let (rows, cols) = (9, 384);
    let x: Vec<f32> = values(rows * cols, 50)
        .iter()
        .map(|v| half::f16::from_f32(*v).to_f32())
        .collect();
    let tx = Tensor::from_slice(&gpu, &x, &[rows, cols], DType::F16).unwrap();
    let spec = NormSpec {
        kind: NormKind::LayerNorm { eps: 1e-5 },
        rows,
        cols,
        groups: None,
        affine_rows: None,
        activation: Activation::None,
    };
    let got = tx.layer_norm(None, None, 1e-5).unwrap();
    let want = norm_cpu(&spec, &x, None, None, None);
    assert!(rel_error(&got.to_vec().unwrap(), &want) <= 2e-3);
    let got = tx.activation(Activation::GeluErf).unwrap();
    let want = unary_cpu(
        &x,
        &StridedView::contiguous(&[rows, cols]),
        Activation::GeluErf,
        1.0,
    );
    assert!(rel_error(&got.to_vec().unwrap(), &want) <= 2e-3);
}

#[test]
fn embedding_gathers_rows_and_refuses_bad_ids() {
    let gpu = gpu();
    let (vocab, dim) = (50, 13);
    let table = values(vocab * dim, 60);
    let t = Tensor::from_slice(&gpu, &table, &[vocab, dim], DType::F32).unwrap();
    let ids = [0u32, 49, 7, 7, 23];
    let got = t.embedding(&ids).unwrap();
    assert_eq!(got.shape(), &[5, dim]);
    assert_eq!(got.to_vec().unwrap(), embedding_cpu(&table, dim, &ids));
    let err = t.embedding(&[3, 50]).unwrap_err();
    assert!(err.to_string().contains("token id 50"), "{err}");
    assert!(t.embedding(&[]).is_err());
}

#[test]
fn concat_joins_views_along_any_axis() {
    let gpu = gpu();
    let a = values(2 * 3 * 4, 70);
    let b = values(2 * 5 * 4, 71);
    let ta = Tensor::from_slice(&gpu, &a, &[2, 3, 4], DType::F32).unwrap();
    let tb = Tensor::from_slice(&gpu, &b, &[2, 5, 4], DType::F32).unwrap();
    let got = Tensor::concat(&[&ta, &tb], 1).unwrap();
    assert_eq!(got.shape(), &[2, 8, 4]);
    let mut want = Vec::new();
    for i in 0..2 {
        want.extend_from_slice(&a[i * 12..(i + 1) * 12]);
        want.extend_from_slice(&b[i * 20..(i + 1) * 20]);
    }
    assert_eq!(got.to_vec().unwrap(), want);
    // Along the last axis, from a transposed view.
    let c = Tensor::from_slice(&gpu, &values(8, 72), &[4, 2], DType::F32).unwrap();
    let ct = c.t().unwrap();
    let got = Tensor::concat(&[&ct, &ct], 1).unwrap();
    let tview = copy_strided_cpu(
        &values(8, 72),
        &StridedView {
            shape: vec![2, 4],
            strides: vec![1, 2],
            offset: 0,
        },
    );
    let want: Vec<f32> = (0..2)
        .flat_map(|r| {
            let row = tview[r * 4..(r + 1) * 4].to_vec();
            row.clone().into_iter().chain(row)
        })
        .collect();
    assert_eq!(got.to_vec().unwrap(), want);
    assert!(Tensor::concat(&[&ta, &c], 0).is_err());
    assert!(Tensor::concat(&[], 0).is_err());
}

#[test]
fn sinusoids_follow_whisper() {
    // Whisper: sin(t · exp(-i · ln(10000) / (C/2 - 1))) then the cosines.
    let table = sinusoids(1500, 384).unwrap();
    assert_eq!(table[0], 0.0);
    assert_eq!(table[192], 1.0);
    let inc = 10000f64.ln() / 191.0;
    let t = 1499.0f64;
    for i in [0usize, 5, 191] {
        let angle = t * (-inc * i as f64).exp();
        assert!((table[1499 * 384 + i] as f64 - angle.sin()).abs() < 1e-6);
        assert!((table[1499 * 384 + 192 + i] as f64 - angle.cos()).abs() < 1e-6);
    }
    assert!(sinusoids(4, 3).is_err());
    let gpu = gpu();
    let t = Tensor::sinusoids(&gpu, 10, 8, DType::F32).unwrap();
    assert_eq!(t.to_vec().unwrap(), sinusoids(10, 8).unwrap());
}

#[test]
fn topk_and_argmax_match_reference() {
    let gpu = gpu();
    for &(rows, cols, k) in &[
        (1, 1, 1),
        (3, 7, 3),
        (4, 1000, 5),
        (2, 50257, 10),
        (5, 65, 65),
    ] {
        let mut x = values(rows * cols, 80 + cols as u64);
        // Ties: the lower index must win.
        if cols > 3 {
            x[2] = 5.0;
            x[3] = 5.0;
        }
        let t = Tensor::from_slice(&gpu, &x, &[rows, cols], DType::F32).unwrap();
        let (v, i) = t.topk(k).unwrap();
        assert_eq!(v.shape(), &[rows, k]);
        let want = topk_cpu(&x, cols, k);
        let v = v.to_vec().unwrap();
        for r in 0..rows {
            for j in 0..k {
                assert_eq!(
                    (v[r * k + j], i[r * k + j]),
                    want[r][j],
                    "{rows}x{cols} k={k} row {r}"
                );
            }
        }
        let am = t.argmax().unwrap();
        assert_eq!(am, want.iter().map(|w| w[0].1).collect::<Vec<_>>());
    }
    let t = Tensor::from_slice(&gpu, &values(6, 1), &[2, 3], DType::F32).unwrap();
    assert!(t.topk(4).is_err());
    assert!(t.topk(0).is_err());
}
