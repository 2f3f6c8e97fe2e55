//! Criterion benches of whole forward passes of real-size models with random weights
//! (`tessera::model_bench`): ViT-B/16 at 224 (batch 1 and 8), CLIP ViT-B/32 image (batch 1) and
//! text (8 × 77 tokens), Whisper tiny and base encoders on 30 s, Whisper base decoding, one
//! aMUSEd-256 transformer step and its VQ-GAN decoding. Throughput is in model FLOPs
//! ("elements" in criterion's output). Pick models by name:
//! `cargo bench --bench models -- whisper-tiny` (every model is still built once).

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tessera::model_bench::{ModelBench, MODELS};
use tessera::{DType, Gpu};

fn bench_models(c: &mut Criterion) {
    let gpu = Gpu::shared().expect("the model benches need a GPU adapter");
    let adapter = gpu.summary().name;
    let mut g = c.benchmark_group(format!("models_f32 [{adapter}]"));
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(100));
    g.measurement_time(Duration::from_secs(5));
    for &name in MODELS {
        // One model on the GPU at a time.
        let model = ModelBench::new(&gpu, name, DType::F32).expect("build the model");
        g.throughput(Throughput::Elements(model.flops as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                model.run().expect("forward");
                gpu.sync().expect("sync");
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_models);
criterion_main!(benches);
