//! Tensor upload/download, views and copies.

use tessera::kernels::copy::{copy_strided_cpu, StridedView};
use tessera::{DType, Tensor, TensorError};

use crate::common::{f16_or_clear_error, gpu, values};

#[test]
fn round_trips_f32_and_f16() {
    let gpu = gpu();
    let data = values(1001, 1);
    let t = Tensor::from_slice(&gpu, &data, &[7, 11, 13], DType::F32).unwrap();
    assert_eq!(t.to_vec().unwrap(), data);
    if f16_or_clear_error(&gpu) {
        // Odd element count: the f16 buffer is padded to 4 bytes.
        let h = Tensor::from_slice(&gpu, &data, &[1001], DType::F16).unwrap();
        let back = h.to_vec().unwrap();
        for (b, d) in back.iter().zip(&data) {
            assert_eq!(*b, half::f16::from_f32(*d).to_f32());
        }
    }
}

#[test]
fn transpose_is_a_view_and_contiguous_copies() {
    let gpu = gpu();
    let data = values(2 * 3 * 5 * 7, 2);
    let t = Tensor::from_slice(&gpu, &data, &[2, 3, 5, 7], DType::F32).unwrap();
    let v = t.transpose(1, 3).unwrap();
    assert_eq!(v.shape(), &[2, 7, 5, 3]);
    assert!(!v.is_contiguous());
    let want = copy_strided_cpu(
        &data,
        &StridedView {
            shape: vec![2, 7, 5, 3],
            strides: vec![105, 1, 7, 35],
            offset: 0,
        },
    );
    assert_eq!(v.to_vec().unwrap(), want);
    let r = v.reshape(&[14, 15]).unwrap();
    assert!(r.is_contiguous());
    assert_eq!(r.to_vec().unwrap(), want);
}

#[test]
fn f16_transpose_copy() {
    let gpu = gpu();
    if !f16_or_clear_error(&gpu) {
        return;
    }
    let data: Vec<f32> = (0..15).map(|i| i as f32).collect();
    let t = Tensor::from_slice(&gpu, &data, &[3, 5], DType::F16).unwrap();
    let got = t.t().unwrap().contiguous().unwrap().to_vec().unwrap();
    let want: Vec<f32> = (0..5)
        .flat_map(|c| (0..3).map(move |r| (r * 5 + c) as f32))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn shape_errors() {
    let gpu = gpu();
    let err = Tensor::from_slice(&gpu, &[1.0, 2.0, 3.0], &[2, 2], DType::F32).unwrap_err();
    assert!(matches!(err, TensorError::Shape { .. }), "{err}");
    let err = Tensor::from_slice(&gpu, &[1.0; 32], &[2, 2, 2, 2, 2], DType::F32).unwrap_err();
    assert!(err.to_string().contains("1 to 4 dimensions"), "{err}");
    let t = Tensor::from_slice(&gpu, &[1.0; 6], &[2, 3], DType::F32).unwrap();
    assert!(t.reshape(&[4, 2]).is_err());
    assert!(t.transpose(0, 2).is_err());
    let one_d = Tensor::from_slice(&gpu, &[1.0; 3], &[3], DType::F32).unwrap();
    assert!(one_d.t().is_err());
}

#[test]
fn to_dtype_rounds_like_half() {
    let gpu = gpu();
    // 1027 elements: not a multiple of the workgroup or of two halves per word.
    let data: Vec<f32> = values(1027, 21).iter().map(|v| v * 70000.0).collect();
    let t = Tensor::from_slice(&gpu, &data, &[13, 79], DType::F32).unwrap();
    let same = t.t().unwrap().to_dtype(DType::F32).unwrap();
    assert!(same.is_contiguous());
    assert_eq!(same.shape(), &[79, 13]);
    if !f16_or_clear_error(&gpu) {
        return;
    }
    let half = t.to_dtype(DType::F16).unwrap();
    assert_eq!(half.dtype(), DType::F16);
    let want: Vec<f32> = data
        .iter()
        .map(|&v| half::f16::from_f32(v).to_f32())
        .collect();
    let got = half.to_vec().unwrap();
    for (g, w) in got.iter().zip(&want) {
        // Round-to-nearest on both sides, overflow to infinity included.
        assert!(g == w || (g.is_infinite() && w.is_infinite()), "{g} vs {w}");
    }
    let back = half.to_dtype(DType::F32).unwrap();
    assert_eq!(back.dtype(), DType::F32);
    assert_eq!(back.to_vec().unwrap(), got);
}
