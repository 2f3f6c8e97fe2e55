//! Criterion benches of the kernels on the adapter `Gpu::shared()` picks. Each sample records
//! the op, submits and waits, so the figures include dispatch overhead. Throughput is in FLOPs
//! for matmul, attention and convolution ("elements" in criterion's output are floating-point
//! operations) and in elements for the memory-bound kernels (the token draw: logits read).

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tessera::kernels::matmul::MatmulSpec;
use tessera::tensor::{Normalize, PatchEmbed, Pixels};
use tessera::{
    Activation, AttentionLayout, AttentionOptions, ConvOptions, DType, Gpu, MatmulOptions, Tensor,
};

fn values(len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect()
}

fn gpu() -> Arc<Gpu> {
    Gpu::shared().expect("the kernel benches need a GPU adapter")
}

fn tensor(gpu: &Arc<Gpu>, shape: &[usize]) -> Tensor {
    Tensor::from_slice(gpu, &values(shape.iter().product()), shape, DType::F32).unwrap()
}

fn group<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let adapter = gpu().summary().name;
    let mut g = c.benchmark_group(format!("{name} [{adapter}]"));
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(3));
    g
}

fn bench_matmul(c: &mut Criterion) {
    let gpu = gpu();
    let mut g = group(c, "matmul_nt_f32");
    for (m, n, k) in [
        (1024, 1024, 1024),
        (2048, 2048, 2048),
        (197, 3072, 768),
        (1500, 1536, 384),
        (77, 2048, 512),
        (1, 4096, 4096),
    ] {
        let a = tensor(&gpu, &[m, k]);
        let w = tensor(&gpu, &[n, k]);
        g.throughput(Throughput::Elements(MatmulSpec::new(m, n, k).flops() as u64));
        g.bench_function(BenchmarkId::from_parameter(format!("{m}x{n}x{k}")), |b| {
            b.iter(|| {
                a.linear(&w, None).unwrap();
                gpu.sync().unwrap();
            })
        });
    }
    g.finish();
}

fn bench_attention(c: &mut Criterion) {
    let gpu = gpu();
    let mut g = group(c, "attention_f32");
    for (batch, heads, s, d) in [
        (1, 6, 1500, 64),
        (8, 8, 77, 64),
        (1, 12, 197, 64),
        (1, 8, 4096, 64),
    ] {
        let make = || tensor(&gpu, &[batch * heads, s, d]);
        let (q, k, v) = (make(), make(), make());
        let split = |t: &Tensor| t.unflatten(0, &[batch, heads]).unwrap();
        let (q4, k4, v4) = (split(&q), split(&k), split(&v));
        let opts = AttentionOptions {
            layout: AttentionLayout::Bhsd,
            ..AttentionOptions::default()
        };
        g.throughput(Throughput::Elements((4 * batch * heads * s * s * d) as u64));
        let id = format!("{batch}x{heads}x{s}x{d}");
        g.bench_function(BenchmarkId::new("fused", &id), |b| {
            b.iter(|| {
                Tensor::attention(&q4, &k4, &v4, &opts).unwrap();
                gpu.sync().unwrap();
            })
        });
        // The S×S scores of 4096 exceed the storage binding limit of most adapters.
        if s <= 2048 {
            let scale = 1.0 / (d as f32).sqrt();
            g.bench_function(BenchmarkId::new("unfused", &id), |b| {
                b.iter(|| {
                    let scores = q
                        .matmul_with(
                            &k.t().unwrap(),
                            &MatmulOptions {
                                alpha: Some(scale),
                                ..MatmulOptions::default()
                            },
                        )
                        .unwrap();
                    scores.softmax(1.0).unwrap().matmul(&v).unwrap();
                    gpu.sync().unwrap();
                })
            });
        }
    }
    g.finish();
}

fn bench_rows(c: &mut Criterion) {
    let gpu = gpu();
    let mut g = group(c, "rows_f32");
    for (rows, cols) in [(197, 768), (1500, 384), (8 * 12 * 77, 77)] {
        let x = tensor(&gpu, &[rows, cols]);
        let r = tensor(&gpu, &[rows, cols]);
        let w = tensor(&gpu, &[cols]);
        g.throughput(Throughput::Elements((rows * cols) as u64));
        let id = format!("{rows}x{cols}");
        g.bench_function(BenchmarkId::new("add_layer_norm", &id), |b| {
            b.iter(|| {
                x.add_layer_norm(&r, Some(&w), Some(&w), 1e-5).unwrap();
                gpu.sync().unwrap();
            })
        });
        g.bench_function(BenchmarkId::new("softmax", &id), |b| {
            b.iter(|| {
                x.softmax(1.0).unwrap();
                gpu.sync().unwrap();
            })
        });
        g.bench_function(BenchmarkId::new("gelu", &id), |b| {
            b.iter(|| {
                x.activation(Activation::GeluErf).unwrap();
                gpu.sync().unwrap();
            })
        });
        g.bench_function(BenchmarkId::new("add_broadcast", &id), |b| {
            b.iter(|| {
                x.add(&w).unwrap();
                gpu.sync().unwrap();
            })
        });
        g.bench_function(BenchmarkId::new("rms_norm", &id), |b| {
            b.iter(|| {
                x.rms_norm(Some(&w), 1e-6).unwrap();
                gpu.sync().unwrap();
            })
        });
        g.bench_function(BenchmarkId::new("concat_last_axis", &id), |b| {
            b.iter(|| {
                Tensor::concat(&[&x, &r], 1).unwrap();
                gpu.sync().unwrap();
            })
        });
        g.bench_function(BenchmarkId::new("top5", &id), |b| {
            b.iter(|| x.topk(5).unwrap())
        });
    }
    g.finish();
}

fn bench_image_and_tokens(c: &mut Criterion) {
    let gpu = gpu();
    let mut g = group(c, "image_and_tokens_f32");
    // A VQ-GAN decoder block's GroupNorm and upsampling, and CLIP text's token lookup.
    let x = tensor(&gpu, &[1, 128, 64, 64]);
    let w = tensor(&gpu, &[128]);
    g.throughput(Throughput::Elements(128 * 64 * 64));
    g.bench_function("group_norm_32_groups_128x64x64", |b| {
        b.iter(|| {
            x.group_norm(32, Some(&w), Some(&w), 1e-6).unwrap();
            gpu.sync().unwrap();
        })
    });
    g.bench_function("upsample_nearest2x_128x64x64", |b| {
        b.iter(|| {
            x.upsample_nearest2x().unwrap();
            gpu.sync().unwrap();
        })
    });
    let table = tensor(&gpu, &[49408, 512]);
    let ids: Vec<u32> = (0..8 * 77).map(|i| (i * 7919 % 49408) as u32).collect();
    g.throughput(Throughput::Elements((ids.len() * 512) as u64));
    g.bench_function("embedding_8x77_of_49408x512", |b| {
        b.iter(|| {
            table.embedding(&ids).unwrap();
            gpu.sync().unwrap();
        })
    });
    g.finish();
}

fn bench_conv(c: &mut Criterion) {
    let gpu = gpu();
    let mut g = group(c, "conv_f32");
    // Whisper-tiny's stem on 30 s, and a VQ-GAN decoder 3x3 at 64x64.
    let mel = tensor(&gpu, &[1, 80, 3000]);
    let w1 = tensor(&gpu, &[384, 80, 3]);
    let w2 = tensor(&gpu, &[384, 384, 3]);
    let stem = |stride| ConvOptions {
        stride: (1, stride),
        padding: (0, 1),
        activation: Activation::GeluErf,
        ..ConvOptions::default()
    };
    g.throughput(Throughput::Elements(
        2 * 3000 * 384 * 80 * 3 + 2 * 1500 * 384 * 384 * 3,
    ));
    g.bench_function("whisper_tiny_stem", |b| {
        b.iter(|| {
            let h = mel.conv1d(&w1, &stem(1)).unwrap();
            h.conv1d(&w2, &stem(2)).unwrap();
            gpu.sync().unwrap();
        })
    });
    let x = tensor(&gpu, &[1, 128, 64, 64]);
    let w = tensor(&gpu, &[128, 128, 3, 3]);
    let opts = ConvOptions {
        padding: (1, 1),
        ..ConvOptions::default()
    };
    g.throughput(Throughput::Elements(2 * 64 * 64 * 128 * 128 * 9));
    g.bench_function("conv3x3_128ch_64x64", |b| {
        b.iter(|| {
            x.conv2d(&w, &opts).unwrap();
            gpu.sync().unwrap();
        })
    });
    // The VQ-GAN's full-resolution 3×3: a column matrix past one binding, made in bands.
    let x = tensor(&gpu, &[1, 128, 256, 256]);
    g.throughput(Throughput::Elements(2 * 256 * 256 * 128 * 128 * 9));
    g.bench_function("conv3x3_128ch_256x256", |b| {
        b.iter(|| {
            x.conv2d(&w, &opts).unwrap();
            gpu.sync().unwrap();
        })
    });
    // aMUSEd's ConvNeXt depthwise 3×3 on a channels-last [2, 16, 16, 768] seen as NCHW.
    let nhwc = tensor(&gpu, &[2, 16, 16, 768]);
    let nchw = nhwc.transpose(1, 3).unwrap().transpose(2, 3).unwrap();
    let dw = tensor(&gpu, &[768, 1, 3, 3]);
    let dw_opts = ConvOptions {
        padding: (1, 1),
        groups: 768,
        channels_last: true,
        ..ConvOptions::default()
    };
    g.throughput(Throughput::Elements(2 * 2 * 256 * 768 * 9));
    g.bench_function("depthwise3x3_768ch_16x16_batch2", |b| {
        b.iter(|| {
            nchw.conv2d(&dw, &dw_opts).unwrap();
            gpu.sync().unwrap();
        })
    });
    g.finish();
}

fn bench_masked_tokens(c: &mut Criterion) {
    let gpu = gpu();
    let mut g = group(c, "masked_tokens_f32");
    // aMUSEd-256's step: 256 tokens of 8192 logits, guided (two halves), drawn and read back;
    // its ConvNeXt GRN over [2, 256, 3072]; an adaptive RMSNorm of [2, 256, 1024].
    let logits = tensor(&gpu, &[2, 256, 8192]);
    let uniforms: Vec<f32> = (0..256).map(|i| (i * 61 % 97) as f32 / 97.0).collect();
    g.throughput(Throughput::Elements(2 * 256 * 8192));
    g.bench_function("sample_256_of_8192_guided", |b| {
        b.iter(|| logits.sample_rows(&uniforms, Some(10.0)).unwrap())
    });
    let h = tensor(&gpu, &[2, 256, 3072]);
    let gamma = tensor(&gpu, &[3072]);
    g.throughput(Throughput::Elements(2 * 256 * 3072));
    g.bench_function("grn_2x256x3072", |b| {
        b.iter(|| {
            h.grn(&gamma, &gamma).unwrap();
            gpu.sync().unwrap();
        })
    });
    let x = tensor(&gpu, &[2, 256, 1024]);
    let wb = tensor(&gpu, &[2, 1024]);
    g.throughput(Throughput::Elements(2 * 256 * 1024));
    g.bench_function("adaptive_rms_norm_2x256x1024", |b| {
        b.iter(|| {
            x.adaptive_norm(false, &wb, &wb, 1e-6).unwrap();
            gpu.sync().unwrap();
        })
    });
    g.finish();
}

fn bench_patch_embed(c: &mut Criterion) {
    let gpu = gpu();
    let mut g = group(c, "patch_embed_f32");
    // ViT-B/16 at 224, batch 8.
    let embed = PatchEmbed::new(
        &tensor(&gpu, &[768, 3, 16, 16]),
        Some(&tensor(&gpu, &[768])),
        &tensor(&gpu, &[768]),
        &tensor(&gpu, &[197, 768]),
        (224, 224),
    )
    .unwrap();
    let pixels: Vec<u8> = (0..8 * 224 * 224 * 3).map(|i| (i % 251) as u8).collect();
    let norm = Normalize {
        rescale: 1.0 / 255.0,
        mean: [0.5; 3],
        std: [0.5; 3],
    };
    g.throughput(Throughput::Elements(2 * 8 * 196 * 768 * 768));
    g.bench_function("vit_b16_224_batch8", |b| {
        b.iter(|| {
            embed.forward(Pixels::U8(&pixels), 8, &norm).unwrap();
            gpu.sync().unwrap();
        })
    });
    g.finish();
}

fn bench_mel(c: &mut Criterion) {
    let gpu = gpu();
    let mut g = group(c, "log_mel_80");
    let front = tessera::audio::LogMel::new(&gpu, 80).unwrap();
    for seconds in [30usize, 600] {
        let audio: Vec<f32> = values(seconds * 16_000).iter().map(|v| v * 0.3).collect();
        let chunks = tessera::audio::windows(&audio);
        let refs: Vec<&[f32]> = chunks.iter().map(Vec::as_slice).collect();
        // Throughput in seconds of audio.
        g.throughput(Throughput::Elements(seconds as u64));
        g.bench_function(BenchmarkId::new("gpu", format!("{seconds}s")), |b| {
            b.iter(|| {
                front.compute(&refs).unwrap();
                gpu.sync().unwrap();
            })
        });
        g.bench_function(
            BenchmarkId::new("cpu_realfft", format!("{seconds}s")),
            |b| {
                b.iter(|| {
                    for c in &refs {
                        std::hint::black_box(tessera::audio::log_mel_cpu_fft(c, 80));
                    }
                })
            },
        );
    }
    g.finish();
}

criterion_group!(
    benches,
    bench_mel,
    bench_matmul,
    bench_attention,
    bench_rows,
    bench_image_and_tokens,
    bench_conv,
    bench_masked_tokens,
    bench_patch_embed
);
criterion_main!(benches);
