use std::time::Instant;
use tessera::{ConvOptions, DType, Gpu, Tensor};
fn main() {
    let gpu = Gpu::shared().unwrap();
    let (c, h) = (128, 256);
    let x: Vec<f32> = (0..c * h * h).map(|i| (i % 97) as f32 / 97.0).collect();
    let w: Vec<f32> = (0..c * c * 9).map(|i| (i % 89) as f32 / 890.0).collect();
    let x = Tensor::from_slice(&gpu, &x, &[1, c, h, h], DType::F32).unwrap();
    let w = Tensor::from_slice(&gpu, &w, &[c, c, 3, 3], DType::F32).unwrap();
    let opts = ConvOptions {
        padding: (1, 1),
        ..Default::default()
    };
    for r in 0..4 {
        let t = Instant::now();
        let y = x.conv2d(&w, &opts).unwrap();
        gpu.sync().unwrap();
        let s = t.elapsed().as_secs_f64();
        drop(y);
        let gf = 2.0 * (h * h * c * c * 9) as f64 / s / 1e9;
        eprintln!("round {r}: {:.0} ms, {gf:.1} GFLOP/s", s * 1e3);
    }
    gpu.set_profiling(true);
    let y = x.conv2d(&w, &opts).unwrap();
    gpu.sync().unwrap();
    drop(y);
    for t in gpu.take_profile() {
        eprintln!("{} {} {:.0} ms", t.kernel, t.calls, t.seconds * 1e3);
    }
}
#[allow(dead_code)]
fn unused() {}
