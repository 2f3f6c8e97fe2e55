//! Fused attention against the naive softmax(QKᵀ·scale + mask)·V reference.

use tessera::kernels::attention::{attention_cpu, AttentionSpec, AttentionVariant, HeadView};
use tessera::{AttentionLayout, AttentionOptions, DType, Tensor};

use crate::common::{f16_or_clear_error, gpu, rel_error, values};

const TOL: f32 = 1e-4;

struct Case {
    batch: usize,
    heads: usize,
    q_len: usize,
    k_len: usize,
    dim: usize,
    layout: AttentionLayout,
    causal: bool,
    key_lens: Option<Vec<u32>>,
    bias_batch: Option<usize>,
    dtype: DType,
}

impl Case {
    fn new(batch: usize, heads: usize, q_len: usize, k_len: usize, dim: usize) -> Self {
        Case {
            batch,
            heads,
            q_len,
            k_len,
            dim,
            layout: AttentionLayout::Bshd,
            causal: false,
            key_lens: None,
            bias_batch: None,
            dtype: DType::F32,
        }
    }

    /// Runs the case on every attention kernel this adapter has.
    fn run(&self) {
        let gpu = gpu();
        self.run_with(AttentionVariant::Tiled);
        if gpu.has_subgroup_size(8) {
            self.run_with(AttentionVariant::TextureSubgroup);
        }
    }

    fn run_with(&self, variant: AttentionVariant) {
        let gpu = gpu();
        let (b, h, d) = (self.batch, self.heads, self.dim);
        let round = |v: Vec<f32>| -> Vec<f32> {
            match self.dtype {
                DType::F32 => v,
                DType::F16 => v.iter().map(|x| half::f16::from_f32(*x).to_f32()).collect(),
            }
        };
        let make = |s: usize, seed: u64| {
            let data = round(
                values(b * h * s * d, seed)
                    .iter()
                    .map(|v| v * 2.0)
                    .collect(),
            );
            let (shape, view) = match self.layout {
                AttentionLayout::Bshd => ([b, s, h, d], HeadView::bshd(s, h, d)),
                AttentionLayout::Bhsd => ([b, h, s, d], HeadView::bhsd(s, h, d)),
            };
            let t = Tensor::from_slice(&gpu, &data, &shape, self.dtype).unwrap();
            (data, view, t)
        };
        let (q, qv, tq) = make(self.q_len, 1 + self.q_len as u64);
        let (k, kv, tk) = make(self.k_len, 2 + self.k_len as u64);
        let (v, vv, tv) = make(self.k_len, 3 + d as u64);
        let bias = self.bias_batch.map(|bb| {
            let data = round(values(bb * h * self.q_len * self.k_len, 4));
            let t = Tensor::from_slice(&gpu, &data, &[bb, h, self.q_len, self.k_len], self.dtype)
                .unwrap();
            let view = HeadView {
                offset: 0,
                batch: if bb == 1 {
                    0
                } else {
                    h * self.q_len * self.k_len
                },
                head: self.q_len * self.k_len,
                seq: self.k_len,
            };
            (data, view, t)
        });
        let opts = AttentionOptions {
            layout: self.layout,
            scale: None,
            causal: self.causal,
            key_lens: self.key_lens.as_deref(),
            bias: bias.as_ref().map(|x| &x.2),
            variant,
        };
        let got = Tensor::attention(&tq, &tk, &tv, &opts).unwrap();
        assert_eq!(got.shape(), &[b, self.q_len, h, d]);
        let spec = AttentionSpec {
            batch: b,
            heads: h,
            q_len: self.q_len,
            k_len: self.k_len,
            head_dim: d,
            scale: 1.0 / (d as f32).sqrt(),
            causal: self.causal,
            dtype: self.dtype,
            variant,
        };
        let want = attention_cpu(
            &spec,
            (&q, qv),
            (&k, kv),
            (&v, vv),
            bias.as_ref().map(|x| (&x.0[..], x.1)),
            self.key_lens.as_deref(),
        );
        let got = got.to_vec().unwrap();
        assert!(got.iter().all(|x| x.is_finite()), "non-finite output");
        let tol = if self.dtype == DType::F32 { TOL } else { 5e-3 };
        let err = rel_error(&got, &want);
        assert!(
            err <= tol,
            "{variant:?} b={b} h={h} q={} k={} d={d} {:?} causal={} lens={:?} bias={:?}: {err}",
            self.q_len,
            self.k_len,
            self.layout,
            self.causal,
            self.key_lens,
            self.bias_batch
        );
    }
}

#[test]
fn sequence_lengths_and_layouts() {
    for s in [1, 7, 77, 197] {
        for layout in [AttentionLayout::Bshd, AttentionLayout::Bhsd] {
            Case {
                layout,
                ..Case::new(2, 3, s, s, 64)
            }
            .run();
        }
    }
}

#[test]
fn whisper_length_1500() {
    Case::new(1, 2, 1500, 1500, 64).run();
}

#[test]
fn long_keys_span_several_dispatches_on_cpu_drivers() {
    // More keys than one dispatch covers on llvmpipe, for both kernels.
    Case::new(1, 1, 20, 9000, 64).run();
    Case {
        causal: true,
        ..Case::new(1, 1, 70, 4096, 128)
    }
    .run();
}

#[test]
fn head_dims() {
    for d in [4, 32, 64, 80, 96, 128] {
        Case::new(1, 2, 33, 40, d).run();
    }
}

#[test]
fn cross_attention_lengths() {
    for (q, k) in [(7, 33), (1, 77), (100, 3), (65, 130)] {
        Case::new(2, 2, q, k, 32).run();
    }
}

#[test]
fn causal_masks() {
    for (q, k) in [(77, 77), (1, 77), (5, 20), (130, 130)] {
        Case {
            causal: true,
            ..Case::new(1, 2, q, k, 64)
        }
        .run();
    }
}

#[test]
fn key_lengths_and_fully_masked_rows() {
    Case {
        key_lens: Some(vec![5, 77, 0]),
        ..Case::new(3, 2, 9, 77, 32)
    }
    .run();
    // A causal mask with fewer keys visible than queries leaves the first rows empty: zeros.
    Case {
        key_lens: Some(vec![3]),
        causal: true,
        ..Case::new(1, 1, 10, 10, 16)
    }
    .run();
}

#[test]
fn additive_bias_broadcasts() {
    for bias_batch in [1, 2] {
        Case {
            bias_batch: Some(bias_batch),
            ..Case::new(2, 3, 19, 23, 32)
        }
        .run();
    }
}

/// Many (batch, head) pairs with few queries: 4, 8 and 16 invocations per query (the split
/// counts of real model shapes on GPUs), each split taking several groups of keys.
#[test]
fn split_counts() {
    for q in [64, 32, 16] {
        Case::new(16, 16, q, 100, 8).run();
    }
}

#[test]
fn f16_storage() {
    if !f16_or_clear_error(&gpu()) {
        return;
    }
    Case {
        dtype: DType::F16,
        causal: true,
        ..Case::new(2, 2, 77, 77, 64)
    }
    .run();
}

/// The CPU reference of unmasked self-attention over Q, K and V in one buffer, `view(i)`
/// placing the i-th of them, for `[batch, seq, heads, head_dim]`.
fn self_attention_cpu(
    data: &[f32],
    [b, s, h, d]: [usize; 4],
    view: impl Fn(usize) -> HeadView,
) -> Vec<f32> {
    let spec = AttentionSpec {
        batch: b,
        heads: h,
        q_len: s,
        k_len: s,
        head_dim: d,
        scale: 1.0 / (d as f32).sqrt(),
        causal: false,
        dtype: DType::F32,
        variant: AttentionVariant::Auto,
    };
    attention_cpu(
        &spec,
        (data, view(0)),
        (data, view(1)),
        (data, view(2)),
        None,
        None,
    )
}

#[test]
fn fused_qkv_slices_are_read_in_place() {
    let gpu = gpu();
    // 3 heads of 16: rows 576 bytes apart, staged by a kernel on CPU drivers; 2 heads of 64:
    // rows 1536 bytes apart, whole 256-byte lines, staged by one copy per head.
    for (b, s, h, d) in [(2, 13, 3, 16), (2, 13, 2, 64)] {
        let qkv = values(b * s * 3 * h * d, 9);
        let t = Tensor::from_slice(&gpu, &qkv, &[b, s, 3 * h * d], DType::F32).unwrap();
        let split = |i: usize| {
            t.narrow(2, i * h * d, h * d)
                .unwrap()
                .unflatten(2, &[h, d])
                .unwrap()
        };
        let got = Tensor::attention(
            &split(0),
            &split(1),
            &split(2),
            &AttentionOptions::default(),
        )
        .unwrap()
        .to_vec()
        .unwrap();
        let want = self_attention_cpu(&qkv, [b, s, h, d], |i| HeadView {
            offset: i * h * d,
            batch: s * 3 * h * d,
            head: d,
            seq: 3 * h * d,
        });
        assert!(rel_error(&got, &want) <= TOL, "{h} heads of {d}");
    }
}

/// Views whose offset and row stride are not multiples of 4 elements: the buffer kernel reads
/// K and V four at a time and copies such views first.
#[test]
fn unaligned_views_match_the_reference() {
    let gpu = gpu();
    let (b, s, h, d) = (2, 9, 2, 16);
    let width = 3 * h * d + 3;
    let data = values(b * s * width, 12);
    let t = Tensor::from_slice(&gpu, &data, &[b, s, width], DType::F32).unwrap();
    let split = |i: usize| {
        t.narrow(2, 1 + i * h * d, h * d)
            .unwrap()
            .unflatten(2, &[h, d])
            .unwrap()
    };
    let want = self_attention_cpu(&data, [b, s, h, d], |i| HeadView {
        offset: 1 + i * h * d,
        batch: s * width,
        head: d,
        seq: width,
    });
    for variant in [AttentionVariant::Tiled, AttentionVariant::Auto] {
        let opts = AttentionOptions {
            variant,
            ..AttentionOptions::default()
        };
        let got = Tensor::attention(&split(0), &split(1), &split(2), &opts)
            .unwrap()
            .to_vec()
            .unwrap();
        assert!(rel_error(&got, &want) <= TOL, "{variant:?}");
    }
}

#[test]
fn bad_inputs_are_errors() {
    let gpu = gpu();
    let t = |shape: &[usize]| {
        Tensor::from_slice(&gpu, &values(shape.iter().product(), 1), shape, DType::F32).unwrap()
    };
    let q = t(&[1, 4, 2, 8]);
    let k = t(&[1, 5, 2, 8]);
    let opts = AttentionOptions::default();
    let err = Tensor::attention(&q, &t(&[1, 5, 3, 8]), &k, &opts).unwrap_err();
    assert!(err.to_string().contains("disagree"), "{err}");
    let big = t(&[1, 2, 1, 132]);
    let err = Tensor::attention(&big, &big, &big, &opts).unwrap_err();
    assert!(err.to_string().contains("head_dim 132"), "{err}");
    let odd = t(&[1, 2, 1, 6]);
    assert!(Tensor::attention(&odd, &odd, &odd, &opts).is_err());
    let bias = t(&[1, 2, 4, 4]);
    let with_bias = AttentionOptions {
        bias: Some(&bias),
        ..opts
    };
    assert!(Tensor::attention(&q, &k, &k, &with_bias).is_err());
    let lens = [1u32, 2];
    let with_lens = AttentionOptions {
        key_lens: Some(&lens),
        ..opts
    };
    let err = Tensor::attention(&q, &k, &k, &with_lens).unwrap_err();
    assert!(
        err.to_string().contains("2 key lengths for a batch of 1"),
        "{err}"
    );
    assert!(t(&[2, 6]).narrow(1, 4, 3).is_err());
    assert!(t(&[2, 6]).unflatten(1, &[4, 2]).is_err());
}
