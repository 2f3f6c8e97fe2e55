//! The matmul kernels against the CPU reference on awkward and real shapes.

use tessera::kernels::matmul::{choose_variant, matmul_cpu, MatmulSpec, MatmulVariant};
use tessera::{Activation, DType, MatmulOptions, Tensor, TensorError};

use crate::common::{f16_or_clear_error, gpu, rel_error, values};

/// f32 storage, f32 accumulation: 1e-4 of the output's scale.
const F32_TOL: f32 = 1e-4;
/// f16 storage: inputs and output rounded to f16 (2^-11 relative), f32 accumulation; against
/// the f64 reference on the same rounded inputs.
const F16_TOL: f32 = 5e-3;

fn tolerance(dtype: DType) -> f32 {
    match dtype {
        DType::F32 => F32_TOL,
        DType::F16 => F16_TOL,
    }
}

#[allow(clippy::too_many_arguments)]
fn check(
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    trans_b: bool,
    broadcast_b: bool,
    variant: MatmulVariant,
    dtype: DType,
) {
    let gpu = gpu();
    let a = values(batch * m * k, 1 + m as u64);
    let b_batch = if broadcast_b { 1 } else { batch };
    let b = values(b_batch * n * k, 2 + n as u64);
    let round = |v: &[f32]| -> Vec<f32> {
        match dtype {
            DType::F32 => v.to_vec(),
            DType::F16 => v.iter().map(|x| half::f16::from_f32(*x).to_f32()).collect(),
        }
    };
    let (a, b) = (round(&a), round(&b));
    let ta = Tensor::from_slice(&gpu, &a, &[batch, m, k], dtype).unwrap();
    let b_shape = |x: usize, y: usize| -> Vec<usize> {
        if broadcast_b {
            vec![x, y]
        } else {
            vec![batch, x, y]
        }
    };
    let tb = if trans_b {
        Tensor::from_slice(&gpu, &b, &b_shape(n, k), dtype)
            .unwrap()
            .t()
            .unwrap()
    } else {
        Tensor::from_slice(&gpu, &b, &b_shape(k, n), dtype).unwrap()
    };
    let opts = MatmulOptions {
        variant,
        ..MatmulOptions::default()
    };
    let got = ta.matmul_with(&tb, &opts).unwrap();
    assert_eq!(got.shape(), &[batch, m, n]);
    let spec = MatmulSpec {
        batch,
        trans_b,
        broadcast_b,
        ..MatmulSpec::new(m, n, k)
    };
    let want = matmul_cpu(&spec, &a, &b, None, None);
    let err = rel_error(&got.to_vec().unwrap(), &want);
    assert!(
        err <= tolerance(dtype),
        "{variant:?} {dtype} batch={batch} m={m} n={n} k={k} trans_b={trans_b} \
         broadcast={broadcast_b}: relative error {err}"
    );
}

const AWKWARD: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (2, 3, 1),
    (7, 13, 5),
    (13, 7, 77),
    (33, 65, 17),
    (77, 77, 64),
    (64, 64, 64),
    (65, 31, 130),
    (197, 40, 97),
    (3, 4097, 9),
];

#[test]
fn register_kernel_matches_reference_on_awkward_shapes() {
    for &(m, n, k) in AWKWARD {
        for trans_b in [true, false] {
            check(
                1,
                m,
                n,
                k,
                trans_b,
                true,
                MatmulVariant::Register,
                DType::F32,
            );
        }
    }
}

#[test]
fn tiled_kernel_matches_reference_on_awkward_shapes() {
    for &(m, n, k) in AWKWARD {
        for trans_b in [true, false] {
            for variant in [MatmulVariant::Tiled, MatmulVariant::TiledLarge] {
                check(1, m, n, k, trans_b, true, variant, DType::F32);
            }
        }
    }
}

#[test]
fn texture_kernel_matches_reference_on_awkward_shapes() {
    for &(m, n, k) in AWKWARD {
        for trans_b in [true, false] {
            check(
                1,
                m,
                n,
                k,
                trans_b,
                true,
                MatmulVariant::Texture,
                DType::F32,
            );
        }
    }
}

#[test]
fn texture_subgroup_kernel_matches_reference_on_awkward_shapes() {
    if !gpu().has_subgroup_size(8) {
        // Elsewhere the variant must refuse clearly, and Auto must not pick it.
        let gpu = gpu();
        let a = Tensor::from_slice(&gpu, &values(6, 1), &[2, 3], DType::F32).unwrap();
        let b = Tensor::from_slice(&gpu, &values(6, 2), &[3, 2], DType::F32).unwrap();
        let opts = MatmulOptions {
            variant: MatmulVariant::TextureSubgroup,
            ..MatmulOptions::default()
        };
        let err = a.matmul_with(&b, &opts).unwrap_err();
        assert!(err.to_string().contains("SUBGROUP"), "{err}");
        return;
    }
    for &(m, n, k) in AWKWARD {
        for trans_b in [true, false] {
            check(
                1,
                m,
                n,
                k,
                trans_b,
                true,
                MatmulVariant::TextureSubgroup,
                DType::F32,
            );
        }
    }
    // Row counts around the 16-row subgroup block, its 8-row half (a last block of at most 8
    // rows runs a loop of its own) and the 64-row workgroup.
    for m in [8, 9, 15, 16, 17, 24, 25, 63, 64, 65, 129, 264, 300] {
        check(
            1,
            m,
            33,
            20,
            true,
            true,
            MatmulVariant::TextureSubgroup,
            DType::F32,
        );
    }
}

#[test]
fn gemv_matches_reference() {
    for &(n, k) in &[(1, 1), (5, 3), (4097, 31), (1500, 384), (13, 4097)] {
        for trans_b in [true, false] {
            check(1, 1, n, k, trans_b, true, MatmulVariant::Gemv, DType::F32);
            check(1, 1, n, k, trans_b, true, MatmulVariant::Auto, DType::F32);
        }
    }
    // One row per batch entry, each with its own B, and f16 storage (on CPU drivers, the
    // texture kernels' one-row entry point).
    for (n, k) in [(300, 70), (9, 4)] {
        check(3, 1, n, k, true, false, MatmulVariant::Auto, DType::F32);
        check(2, 1, n, k, false, true, MatmulVariant::Auto, DType::F32);
        if gpu().supports_f16() {
            check(2, 1, n, k, true, false, MatmulVariant::Auto, DType::F16);
        }
    }
}

#[test]
fn real_model_shapes() {
    // ViT-B/16 MLP at 197 tokens, Whisper-tiny attention projection at 1500 frames,
    // CLIP text at 77 tokens.
    check(
        1,
        197,
        768,
        768,
        true,
        true,
        MatmulVariant::Auto,
        DType::F32,
    );
    check(
        1,
        1500,
        384,
        384,
        true,
        true,
        MatmulVariant::Auto,
        DType::F32,
    );
    check(
        1,
        77,
        512,
        2048,
        true,
        true,
        MatmulVariant::Auto,
        DType::F32,
    );
    check(
        1,
        197,
        768,
        768,
        false,
        true,
        MatmulVariant::Texture,
        DType::F32,
    );
}

#[test]
fn batched_and_broadcast() {
    for variant in [
        MatmulVariant::Register,
        MatmulVariant::Tiled,
        MatmulVariant::TiledLarge,
        MatmulVariant::Texture,
    ]
    .into_iter()
    .chain(
        gpu()
            .has_subgroup_size(8)
            .then_some(MatmulVariant::TextureSubgroup),
    ) {
        for trans_b in [true, false] {
            check(3, 7, 13, 5, trans_b, false, variant, DType::F32);
            check(4, 33, 9, 70, trans_b, true, variant, DType::F32);
        }
    }
    check(5, 1, 13, 77, true, false, MatmulVariant::Gemv, DType::F32);
}

#[test]
fn f16_storage_matches_reference() {
    if !f16_or_clear_error(&gpu()) {
        return;
    }
    for variant in [
        MatmulVariant::Register,
        MatmulVariant::Tiled,
        MatmulVariant::TiledLarge,
        MatmulVariant::Texture,
    ]
    .into_iter()
    .chain(
        gpu()
            .has_subgroup_size(8)
            .then_some(MatmulVariant::TextureSubgroup),
    ) {
        for &(m, n, k) in &[(7, 13, 5), (65, 31, 130), (197, 64, 768)] {
            check(1, m, n, k, true, true, variant, DType::F16);
            check(2, m, n, k, false, false, variant, DType::F16);
        }
    }
    check(1, 1, 4097, 31, true, true, MatmulVariant::Gemv, DType::F16);
}

#[test]
fn large_batch_is_split_across_dispatches() {
    // More batch entries than one dispatch dimension allows (65535 on most adapters).
    let gpu = gpu();
    let batch = gpu.limits().max_compute_workgroups_per_dimension as usize + 7;
    let a = values(batch * 2, 5);
    let b = values(batch * 2, 6);
    let ta = Tensor::from_slice(&gpu, &a, &[batch, 1, 2], DType::F32).unwrap();
    let tb = Tensor::from_slice(&gpu, &b, &[batch, 2, 1], DType::F32).unwrap();
    let got = ta.matmul(&tb).unwrap().to_vec().unwrap();
    let want: Vec<f32> = (0..batch)
        .map(|i| a[2 * i] * b[2 * i] + a[2 * i + 1] * b[2 * i + 1])
        .collect();
    assert!(rel_error(&got, &want) <= F32_TOL);
}

#[test]
fn fused_epilogue_bias_activation_residual_scale() {
    let gpu = gpu();
    let (m, n, k) = (37, 29, 45);
    let a = values(m * k, 11);
    let w = values(n * k, 12);
    let bias = values(n, 13);
    let res = values(m * n, 14);
    let ta = Tensor::from_slice(&gpu, &a, &[m, k], DType::F32).unwrap();
    let tw = Tensor::from_slice(&gpu, &w, &[n, k], DType::F32).unwrap();
    let tbias = Tensor::from_slice(&gpu, &bias, &[n], DType::F32).unwrap();
    let tres = Tensor::from_slice(&gpu, &res, &[m, n], DType::F32).unwrap();
    for act in [
        Activation::None,
        Activation::Relu,
        Activation::GeluErf,
        Activation::GeluTanh,
        Activation::QuickGelu,
        Activation::Silu,
        Activation::Tanh,
    ] {
        for variant in [
            MatmulVariant::Register,
            MatmulVariant::Tiled,
            MatmulVariant::TiledLarge,
            MatmulVariant::Texture,
        ]
        .into_iter()
        .chain(
            gpu.has_subgroup_size(8)
                .then_some(MatmulVariant::TextureSubgroup),
        ) {
            let opts = MatmulOptions {
                bias: Some(&tbias),
                residual: Some(&tres),
                activation: act,
                alpha: Some(0.75),
                variant,
            };
            let got = ta.matmul_with(&tw.t().unwrap(), &opts).unwrap();
            let spec = MatmulSpec {
                trans_b: true,
                alpha: 0.75,
                activation: act,
                ..MatmulSpec::new(m, n, k)
            };
            let want = matmul_cpu(&spec, &a, &w, Some(&bias), Some(&res));
            let err = rel_error(&got.to_vec().unwrap(), &want);
            assert!(err <= F32_TOL, "{act:?} {variant:?}: {err}");
        }
    }
}

#[test]
fn linear_matches_reference_over_leading_dims() {
    let gpu = gpu();
    let (b, s, i, o) = (2, 5, 24, 10);
    let x = values(b * s * i, 21);
    let w = values(o * i, 22);
    let bias = values(o, 23);
    let tx = Tensor::from_slice(&gpu, &x, &[b, s, i], DType::F32).unwrap();
    let tw = Tensor::from_slice(&gpu, &w, &[o, i], DType::F32).unwrap();
    let tb = Tensor::from_slice(&gpu, &bias, &[o], DType::F32).unwrap();
    let got = tx.linear(&tw, Some(&tb)).unwrap();
    assert_eq!(got.shape(), &[b, s, o]);
    let spec = MatmulSpec {
        trans_b: true,
        ..MatmulSpec::new(b * s, o, i)
    };
    let want = matmul_cpu(&spec, &x, &w, Some(&bias), None);
    assert!(rel_error(&got.to_vec().unwrap(), &want) <= F32_TOL);
}

#[test]
fn extreme_activations_stay_finite() {
    let gpu = gpu();
    let a = [100.0f32, -100.0, 30.0, -30.0];
    let ta = Tensor::from_slice(&gpu, &a, &[4, 1], DType::F32).unwrap();
    let one = Tensor::from_slice(&gpu, &[1.0], &[1, 1], DType::F32).unwrap();
    for act in [
        Activation::GeluErf,
        Activation::GeluTanh,
        Activation::QuickGelu,
        Activation::Silu,
    ] {
        let opts = MatmulOptions {
            activation: act,
            ..MatmulOptions::default()
        };
        let got = ta.matmul_with(&one, &opts).unwrap().to_vec().unwrap();
        for (g, x) in got.iter().zip(a) {
            let want = act.apply(x as f64) as f32;
            assert!(
                (g - want).abs() <= 1e-3 * want.abs().max(1.0),
                "{act:?}({x}) = {g}, want {want}"
            );
        }
    }
}

#[test]
fn bad_shapes_are_errors() {
    let gpu = gpu();
    let a = Tensor::from_slice(&gpu, &values(6, 1), &[2, 3], DType::F32).unwrap();
    let b = Tensor::from_slice(&gpu, &values(8, 2), &[4, 2], DType::F32).unwrap();
    let err = a.matmul(&b).unwrap_err();
    assert!(matches!(err, TensorError::Shape { .. }), "{err}");
    assert!(err.to_string().contains("inner dimensions"), "{err}");

    let v = Tensor::from_slice(&gpu, &values(3, 3), &[3], DType::F32).unwrap();
    assert!(matches!(a.matmul(&v), Err(TensorError::Shape { .. })));

    let bias = Tensor::from_slice(&gpu, &values(5, 4), &[5], DType::F32).unwrap();
    let w = Tensor::from_slice(&gpu, &values(12, 5), &[4, 3], DType::F32).unwrap();
    let err = a.linear(&w, Some(&bias)).unwrap_err();
    assert!(err.to_string().contains("bias must be [4]"), "{err}");

    let batched_a = Tensor::from_slice(&gpu, &values(12, 6), &[2, 2, 3], DType::F32).unwrap();
    let batched_b = Tensor::from_slice(&gpu, &values(27, 7), &[3, 3, 3], DType::F32).unwrap();
    let err = batched_a.matmul(&batched_b).unwrap_err();
    assert!(err.to_string().contains("batch dimensions differ"), "{err}");

    if gpu.supports_f16() {
        let h = Tensor::from_slice(&gpu, &values(6, 8), &[3, 2], DType::F16).unwrap();
        assert!(matches!(a.matmul(&h), Err(TensorError::DType { .. })));
    }
}

#[test]
fn gemv_variant_refuses_more_than_one_row() {
    let gpu = gpu();
    let a = Tensor::from_slice(&gpu, &values(6, 1), &[2, 3], DType::F32).unwrap();
    let b = Tensor::from_slice(&gpu, &values(6, 2), &[3, 2], DType::F32).unwrap();
    let opts = MatmulOptions {
        variant: MatmulVariant::Gemv,
        ..MatmulOptions::default()
    };
    let err = a.matmul_with(&b, &opts).unwrap_err();
    assert!(err.to_string().contains("M = 1"), "{err}");
}

#[test]
fn columns_beyond_one_texture_read_b_in_quads() {
    // More op(B) rows than a texture has: the texture kernels read B in quads of rows, for
    // one row of A (the row entry point) and for several, B in either layout.
    let gpu = gpu();
    let n = gpu.limits().max_texture_dimension_2d as usize + 3;
    if gpu.cpu_kernels() {
        let variant = choose_variant(&gpu, &MatmulSpec::new(1, n, 9));
        assert!(
            matches!(
                variant,
                MatmulVariant::Texture | MatmulVariant::TextureSubgroup
            ),
            "{variant:?}"
        );
    }
    // K = 64: rows of 256 bytes, which the packing copies rather than runs a kernel for.
    for (m, k) in [(1, 9), (3, 9), (1, 64), (2, 64)] {
        for trans_b in [true, false] {
            check(1, m, n, k, trans_b, true, MatmulVariant::Auto, DType::F32);
        }
    }
}

#[test]
fn rows_beyond_one_texture_go_in_slabs() {
    let gpu = gpu();
    let m = gpu.limits().max_texture_dimension_2d as usize + 77;
    let (n, k) = (5, 12);
    let a = values(m * k, 91);
    let w = values(n * k, 92);
    let bias = values(n, 93);
    let res = values(m * n, 94);
    let ta = Tensor::from_slice(&gpu, &a, &[m, k], DType::F32).unwrap();
    let tw = Tensor::from_slice(&gpu, &w, &[n, k], DType::F32).unwrap();
    let tb = Tensor::from_slice(&gpu, &bias, &[n], DType::F32).unwrap();
    let tr = Tensor::from_slice(&gpu, &res, &[m, n], DType::F32).unwrap();
    let spec = MatmulSpec {
        trans_b: true,
        activation: Activation::Relu,
        ..MatmulSpec::new(m, n, k)
    };
    let want = matmul_cpu(&spec, &a, &w, Some(&bias), Some(&res));
    let mut variants = vec![MatmulVariant::Texture, MatmulVariant::Auto];
    if gpu.has_subgroup_size(8) {
        variants.push(MatmulVariant::TextureSubgroup);
    }
    for variant in variants {
        let opts = MatmulOptions {
            bias: Some(&tb),
            residual: Some(&tr),
            activation: Activation::Relu,
            alpha: None,
            variant,
        };
        let got = ta.matmul_with(&tw.t().unwrap(), &opts).unwrap();
        let err = rel_error(&got.to_vec().unwrap(), &want);
        assert!(err <= F32_TOL, "{variant:?}: {err}");
    }
}

#[test]
fn packed_weights_match_the_reference() {
    let gpu = gpu();
    let w = Tensor::from_slice(&gpu, &values(64 * 96, 3), &[64, 96], DType::F32).unwrap();
    let Some(packed) = w.pack_weight().unwrap() else {
        // Adapters whose matmuls read buffers keep weights as they are.
        assert!(
            !gpu.cpu_kernels(),
            "CPU drivers run texture matmuls and pack weights"
        );
        return;
    };
    assert_eq!(packed.shape(), [64, 96]);
    for (lead, m, n, k) in [
        (vec![], 1, 7, 13),
        (vec![], 1, 517, 40),
        // More columns than one texture has rows: fits in quads only.
        (vec![], 3, 20_001, 12),
        (vec![], 77, 50, 33),
        (vec![3], 197, 64, 96),
        (vec![2, 2], 5, 257, 130),
    ] {
        let mut shape = lead.clone();
        shape.extend([m, k]);
        let rows: usize = shape[..shape.len() - 1].iter().product();
        let a = Tensor::from_slice(&gpu, &values(rows * k, 1), &shape, DType::F32).unwrap();
        let wv = values(n * k, 2);
        let w = Tensor::from_slice(&gpu, &wv, &[n, k], DType::F32).unwrap();
        let bias = Tensor::from_slice(&gpu, &values(n, 4), &[n], DType::F32).unwrap();
        let mut out_shape = lead.clone();
        out_shape.extend([m, n]);
        let residual =
            Tensor::from_slice(&gpu, &values(rows * n, 5), &out_shape, DType::F32).unwrap();
        let opts = MatmulOptions {
            bias: Some(&bias),
            residual: Some(&residual),
            activation: Activation::GeluErf,
            ..MatmulOptions::default()
        };
        let packed = w.pack_weight().unwrap().unwrap();
        let got = a.matmul_packed(&packed, &opts).unwrap();
        assert_eq!(got.shape(), &out_shape[..]);
        let spec = MatmulSpec {
            trans_b: true,
            activation: Activation::GeluErf,
            ..MatmulSpec::new(rows, n, k)
        };
        let want = matmul_cpu(
            &spec,
            &a.to_vec().unwrap(),
            &wv,
            Some(&bias.to_vec().unwrap()),
            Some(&residual.to_vec().unwrap()),
        );
        let err = rel_error(&got.to_vec().unwrap(), &want);
        assert!(err <= F32_TOL, "{lead:?} {m}x{n}x{k}: {err}");
    }
    // The packed weight's K must be the input's last axis.
    let a = Tensor::from_slice(&gpu, &values(10 * 95, 1), &[10, 95], DType::F32).unwrap();
    let err = a
        .matmul_packed(&packed, &MatmulOptions::default())
        .unwrap_err();
    assert!(matches!(err, TensorError::Shape { .. }), "{err}");
}

/// `act(x·w1ᵀ + b1)` written packed by one matmul and read as A by the next (the MLP on CPU
/// drivers): equal to the two products through buffers, in f32 and f16, including hidden
/// widths that are not a multiple of 4 (the packed rows' zero padding is the next K's).
#[test]
fn packed_activations_feed_the_next_matmul() {
    let gpu = gpu();
    let probe = Tensor::from_slice(&gpu, &values(8 * 8, 3), &[8, 8], DType::F32).unwrap();
    if probe.pack_weight().unwrap().is_none() {
        assert!(
            !gpu.cpu_kernels(),
            "CPU drivers run texture matmuls and pack weights"
        );
        return;
    }
    let mut dtypes = vec![DType::F32];
    if f16_or_clear_error(&gpu) {
        dtypes.push(DType::F16);
    }
    for dtype in dtypes {
        let round = |v: Vec<f32>| -> Vec<f32> {
            match dtype {
                DType::F32 => v,
                DType::F16 => v.iter().map(|x| half::f16::from_f32(*x).to_f32()).collect(),
            }
        };
        for (lead, k, hidden, n) in [
            (vec![1], 13, 7, 5),
            (vec![77], 33, 50, 30),
            (vec![2, 99], 96, 130, 64),
        ] {
            let rows: usize = lead.iter().product();
            let upload = |v: &[f32], shape: &[usize]| Tensor::from_slice(&gpu, v, shape, dtype);
            let (x, w1, b1) = (
                round(values(rows * k, 1)),
                round(values(hidden * k, 2)),
                round(values(hidden, 3)),
            );
            let (w2, b2, r) = (
                round(values(n * hidden, 4)),
                round(values(n, 5)),
                round(values(rows * n, 6)),
            );
            let mut x_shape = lead.clone();
            x_shape.push(k);
            let tx = upload(&x, &x_shape).unwrap();
            let pw1 = upload(&w1, &[hidden, k])
                .unwrap()
                .pack_weight()
                .unwrap()
                .unwrap();
            let pw2 = upload(&w2, &[n, hidden])
                .unwrap()
                .pack_weight()
                .unwrap()
                .unwrap();
            let (tb1, tb2) = (upload(&b1, &[hidden]).unwrap(), upload(&b2, &[n]).unwrap());
            let tr = upload(&r, &[rows, n]).unwrap();
            let h = tx
                .matmul_packed_to_packed(
                    &pw1,
                    &MatmulOptions {
                        bias: Some(&tb1),
                        activation: Activation::GeluErf,
                        ..MatmulOptions::default()
                    },
                )
                .unwrap()
                .expect("a few rows fit one texture");
            assert_eq!(h.shape(), [rows, hidden]);
            let got = h
                .matmul_packed(
                    &pw2,
                    &MatmulOptions {
                        bias: Some(&tb2),
                        residual: Some(&tr),
                        ..MatmulOptions::default()
                    },
                )
                .unwrap();
            assert_eq!(got.shape(), &[rows, n]);
            let first = MatmulSpec {
                trans_b: true,
                activation: Activation::GeluErf,
                ..MatmulSpec::new(rows, hidden, k)
            };
            let want_h = round(matmul_cpu(&first, &x, &w1, Some(&b1), None));
            let second = MatmulSpec {
                trans_b: true,
                ..MatmulSpec::new(rows, n, hidden)
            };
            let want = matmul_cpu(&second, &want_h, &w2, Some(&b2), Some(&r));
            let err = rel_error(&got.to_vec().unwrap(), &want);
            assert!(
                err <= tolerance(dtype),
                "{dtype} {lead:?} k={k} hidden={hidden} n={n}: {err}"
            );
            // The packed activation's columns must be the next weight's K.
            let err = h
                .matmul_packed(&pw1, &MatmulOptions::default())
                .unwrap_err();
            assert!(matches!(err, TensorError::Shape { .. }), "{err}");
        }
    }
}
