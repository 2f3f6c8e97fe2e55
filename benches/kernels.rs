//! Criterion benches of the kernels on the adapter `Gpu::shared()` picks. Each sample records
//! the kernel, submits and waits, so the figures include dispatch overhead. Throughput is
//! reported in FLOPs ("elements" in criterion's output are floating-point operations).

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tessera::kernels::matmul::{MatmulSpec, MatmulVariant};
use tessera::{DType, Gpu, MatmulOptions, Tensor};

fn values(len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect()
}

fn bench_matmul(c: &mut Criterion) {
    let gpu: Arc<Gpu> = Gpu::shared().expect("the kernel benches need a GPU adapter");
    let name = gpu.summary().name;
    let mut group = c.benchmark_group(format!("matmul_nt_f32 [{name}]"));
    group.sample_size(10);
    let shapes = [
        (1024, 1024, 1024),
        (2048, 2048, 2048),
        (197, 3072, 768),
        (1500, 1536, 384),
        (77, 2048, 512),
        (1, 4096, 4096),
    ];
    for (m, n, k) in shapes {
        let a = Tensor::from_slice(&gpu, &values(m * k), &[m, k], DType::F32).unwrap();
        let w = Tensor::from_slice(&gpu, &values(n * k), &[n, k], DType::F32).unwrap();
        let wt = w.t().unwrap();
        group.throughput(Throughput::Elements(MatmulSpec::new(m, n, k).flops() as u64));
        group.bench_function(
            BenchmarkId::from_parameter(format!("{m}x{n}x{k}")),
            |bench| {
                bench.iter(|| {
                    let opts = MatmulOptions {
                        variant: MatmulVariant::Auto,
                        ..MatmulOptions::default()
                    };
                    a.matmul_with(&wt, &opts).unwrap();
                    gpu.sync().unwrap();
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench_matmul);
criterion_main!(benches);
