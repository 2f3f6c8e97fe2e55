//! aMUSEd against diffusers on the pipeline folder tools/make_amused_fixtures.py writes (tiny
//! random weights; diffusers' random draws replaced by saved uniforms): the text encoder, the
//! transformer (with and without down/upsampling), the VQ-GAN decoder, a scheduler step, the
//! whole pipeline; the sampling and GRN kernels against their CPU references; bad input.

use std::collections::VecDeque;

use tessera::kernels::grn::grn_cpu;
use tessera::kernels::sample::{sample_cpu, Guidance};
use tessera::muse::{
    Amused, AmusedScheduler, GenerateOptions, Noise, SeededNoise, TextEncoder, UVit2D,
    UVit2DConfig, VqConfig, VqDecoder,
};
use tessera::nn::Weights;
use tessera::{DType, Tensor};

use crate::common::{f16_or_clear_error, gpu, rel_error, values};
use crate::models::{model_dir, Reference};

const TOL: f32 = 1e-3;

/// `[b, c, h, w]` → `[b, h·w, c]`.
fn channels_last(shape: &[usize], v: &[f32]) -> Vec<f32> {
    let (b, c, hw) = (shape[0], shape[1], shape[2] * shape[3]);
    let mut out = vec![0.0; v.len()];
    for i in 0..b {
        for ch in 0..c {
            for p in 0..hw {
                out[(i * hw + p) * c + ch] = v[(i * c + ch) * hw + p];
            }
        }
    }
    out
}

fn text_inputs(dtype: DType) -> (Tensor, Tensor) {
    let r = Reference::load("amused");
    let (hs, h) = r.get("text_hidden_states");
    let (ps, p) = r.get("text_embeds");
    let g = gpu();
    (
        Tensor::from_slice(&g, &h, &hs, dtype).unwrap(),
        Tensor::from_slice(&g, &p, &ps, dtype).unwrap(),
    )
}

fn micro_conds(r: &Reference) -> Vec<[f32; 5]> {
    let (_, m) = r.get("micro_conds");
    m.chunks(5).map(|c| c.try_into().unwrap()).collect()
}

fn transformer(folder: &str, dtype: DType) -> UVit2D {
    let dir = model_dir(folder).join("transformer");
    let w = Weights::open(&gpu(), &dir, dtype).unwrap();
    UVit2D::new(&UVit2DConfig::load(&dir).unwrap(), &w).unwrap()
}

#[test]
fn amused_text_encoder_matches_transformers() {
    let r = Reference::load("amused");
    let dir = model_dir("amused");
    let enc = TextEncoder::load(
        &gpu(),
        &dir.join("text_encoder"),
        &dir.join("tokenizer"),
        DType::F32,
    )
    .unwrap();
    let ids = enc.tokenize(&["a photo of a cat", ""]).unwrap();
    let (_, want_ids) = r.ints("text_input_ids");
    assert_eq!(ids.concat(), want_ids, "padded to 77 with the pad token");
    let out = enc.encode_ids(&ids).unwrap();
    let (_, want) = r.get("text_hidden_states");
    let e = rel_error(&out.hidden_states.to_vec().unwrap(), &want);
    assert!(e < TOL, "penultimate hidden states: {e}");
    let (_, want) = r.get("text_embeds");
    let e = rel_error(&out.pooled.to_vec().unwrap(), &want);
    assert!(e < TOL, "text_embeds: {e}");
}

fn check_transformer(folder: &str, dtype: DType, tol: f32) {
    let r = Reference::load("amused");
    let model = transformer(folder, dtype);
    let (text, pooled) = text_inputs(dtype);
    let cond = model.condition(&text, &pooled, &micro_conds(&r)).unwrap();
    let (_, ids) = r.ints("transformer_input_ids");
    let logits = model.forward(&ids, (4, 4), &cond).unwrap();
    assert_eq!(logits.shape(), [2, 16, 32]);
    let (s, want) = Reference::load(folder).get("transformer_logits");
    let e = rel_error(&logits.to_vec().unwrap(), &channels_last(&s, &want));
    assert!(e < tol, "{folder} {dtype:?} logits: {e}");
}

#[test]
fn uvit_logits_match_diffusers() {
    check_transformer("amused", DType::F32, TOL);
    if f16_or_clear_error(&gpu()) {
        check_transformer("amused", DType::F16, 3e-2);
    }
}

#[test]
fn uvit_with_down_and_upsampling_matches_diffusers() {
    check_transformer("amused_updown", DType::F32, TOL);
}

#[test]
fn vq_decoder_matches_diffusers() {
    let r = Reference::load("amused");
    let dir = model_dir("amused").join("vqvae");
    let w = Weights::open(&gpu(), &dir, DType::F32).unwrap();
    let vq = VqDecoder::new(&VqConfig::load(&dir).unwrap(), &w).unwrap();
    assert_eq!(vq.config().scale_factor(), 4);
    for name in ["vq", "vq_wide"] {
        let (s, tokens) = r.ints(&format!("{name}_tokens"));
        let img = vq.decode(&tokens, s[0], (s[1], s[2])).unwrap();
        let (ws, want) = r.get(&format!("{name}_image"));
        assert_eq!(img.shape(), ws.as_slice());
        let e = rel_error(&img.to_vec().unwrap(), &want);
        assert!(e < TOL, "{name}: {e}");
    }
}

/// With buffers capped below the decoder's activations (as aMUSEd-512's 512×512 levels pass
/// WebGPU's and lavapipe's 128 MiB), activations are held in channel parts: the same image.
#[test]
fn vq_decoder_in_parts_past_a_binding_matches_diffusers() {
    let r = Reference::load("amused");
    let dir = model_dir("amused").join("vqvae");
    // 40 KiB: every weight fits (the largest is 36 KiB), the 16×16 level's 64 KiB
    // activations of 32 channels do not.
    let options = tessera::GpuOptions {
        max_binding: Some(40 << 10),
        ..tessera::GpuOptions::from_env().unwrap()
    };
    let g = std::sync::Arc::new(tessera::Gpu::new(&options).unwrap());
    let w = Weights::open(&g, &dir, DType::F32).unwrap();
    let vq = VqDecoder::new(&VqConfig::load(&dir).unwrap(), &w).unwrap();
    let (s, tokens) = r.ints("vq_tokens");
    assert!(vq.largest_activation_bytes((s[1], s[2])) * s[0] as u64 > 40 << 10);
    let img = vq.decode(&tokens, s[0], (s[1], s[2])).unwrap();
    let (ws, want) = r.get("vq_image");
    assert_eq!(img.shape(), ws.as_slice());
    let e = rel_error(&img.to_vec().unwrap(), &want);
    assert!(e < TOL, "{e}");
    // One GroupNorm group of the largest level must still fit a binding: 4 channels of a
    // 64×64 image are 64 KiB.
    assert!(vq.smallest_part_bytes((16, 16)) > 40 << 10);
    let e = vq
        .decode(&vec![0; 256], 1, (16, 16))
        .unwrap_err()
        .to_string();
    assert!(e.contains("ask for a smaller image"), "{e}");
}

#[test]
fn scheduler_step_matches_diffusers() {
    let r = Reference::load("amused");
    let sched = AmusedScheduler::load(&model_dir("amused").join("scheduler")).unwrap();
    // Guided logits from the transformer's two rows, guidance 3, as the fixture computed them.
    let (s, logits) = r.get("transformer_logits");
    let logits = Tensor::from_slice(
        &gpu(),
        &channels_last(&s, &logits),
        &[2, 16, 32],
        DType::F32,
    )
    .unwrap();
    let (_, uniforms) = r.get("step_multinomial");
    let (drawn, probs) = logits.sample_rows(&uniforms, Some(3.0)).unwrap();
    let (_, mut sample) = r.ints("step_sample");
    let (_, gumbel) = r.get("step_gumbel");
    let temps = tessera::muse::linspace(2.0, 0.0, 12);
    // diffusers' timesteps run 11..0; the fixture stepped at timesteps[3], step index 3.
    let pred = sched
        .step(3, 12, &mut sample, &drawn, &probs, &gumbel, temps[3])
        .unwrap();
    assert_eq!(pred, r.ints("step_pred_original").1);
    assert_eq!(sample, r.ints("step_prev_sample").1);
    assert!(sample.contains(&39) && sample.iter().any(|&t| t != 39));
}

/// Replays the uniforms diffusers drew, in the order it drew them.
struct Replay(VecDeque<Vec<f32>>);

impl Noise for Replay {
    fn uniforms(&mut self, n: usize) -> Vec<f32> {
        let u = self.0.pop_front().expect("more draws than diffusers made");
        assert_eq!(u.len(), n);
        u
    }
}

#[test]
fn amused_pipeline_matches_diffusers_given_its_draws() {
    let r = Reference::load("amused");
    let pipe = Amused::load(&gpu(), &model_dir("amused"), DType::F32).unwrap();
    let (_, multinomial) = r.get("pipe_multinomial");
    let (_, gumbel) = r.get("pipe_gumbel");
    let mut draws = VecDeque::new();
    for i in 0..6 {
        draws.push_back(multinomial[i * 16..(i + 1) * 16].to_vec());
        if i < 5 {
            draws.push_back(gumbel[i * 16..(i + 1) * 16].to_vec());
        }
    }
    let opts = GenerateOptions {
        steps: 6,
        guidance_scale: 4.0,
        ..GenerateOptions::default()
    };
    let mut replay = Replay(draws);
    let images = pipe
        .generate(&["a photo of a cat"], &opts, &mut replay)
        .unwrap();
    assert!(replay.0.is_empty(), "every draw used");
    assert_eq!(images.tokens, r.ints("pipe_tokens").1);
    assert_eq!((images.height, images.width), (16, 16));
    let (_, want) = r.get("pipe_image");
    let e = rel_error(&images.pixels, &want);
    assert!(e < TOL, "image: {e}");
    let rgb = images.rgb8(0);
    assert_eq!(rgb.len(), 16 * 16 * 3);
}

#[test]
fn amused_seeds_are_reproducible() {
    let pipe = Amused::load(&gpu(), &model_dir("amused"), DType::F32).unwrap();
    let opts = GenerateOptions {
        steps: 4,
        size: Some((24, 16)),
        ..GenerateOptions::default()
    };
    let run = |seed| {
        pipe.generate(
            &["a red cube", "a blue sphere"],
            &opts,
            &mut SeededNoise::new(seed),
        )
        .unwrap()
    };
    let (a, b, c) = (run(7), run(7), run(8));
    let mut seen = Vec::new();
    let d = pipe
        .generate_with(
            &["a red cube", "a blue sphere"],
            &opts,
            &mut SeededNoise::new(7),
            &mut |i, n| seen.push((i, n)),
        )
        .unwrap();
    assert_eq!(
        seen,
        [(1, 4), (2, 4), (3, 4), (4, 4)],
        "progress after each step"
    );
    assert_eq!(d.tokens, a.tokens);
    assert_eq!((a.batch, a.height, a.width), (2, 16, 24));
    assert_eq!(a.tokens, b.tokens);
    assert_eq!(a.pixels, b.pixels);
    assert_ne!(a.tokens, c.tokens);
    assert!(a.tokens.iter().all(|&t| t < 32), "no mask token left");
}

#[test]
fn sample_rows_matches_cpu_reference() {
    let g = gpu();
    for (rows, cols, guidance) in [
        (3, 1, None),
        (5, 7, None),
        (4, 100, Some(2.5)),
        (6, 8192, Some(10.0)),
        (2, 8193, None),
    ] {
        let stored = if guidance.is_some() { 2 * rows } else { rows };
        let logits: Vec<f32> = values(stored * cols, cols as u64)
            .iter()
            .map(|v| 4.0 * v)
            .collect();
        let uniforms: Vec<f32> = values(rows, 99).iter().map(|v| (v + 1.0) / 2.0).collect();
        let t = Tensor::from_slice(&g, &logits, &[stored, cols], DType::F32).unwrap();
        let (idx, probs) = t.sample_rows(&uniforms, guidance).unwrap();
        let want = sample_cpu(
            &logits,
            rows,
            cols,
            guidance.map(|scale| Guidance {
                cond_offset: rows,
                scale,
            }),
            &uniforms,
        );
        for r in 0..rows {
            assert_eq!(idx[r], want[r].0, "{rows}×{cols} row {r}");
            assert!((probs[r] - want[r].1).abs() < 1e-5 * want[r].1.max(1e-3) + 1e-6);
        }
    }
    let t = Tensor::from_slice(&g, &[0.0; 6], &[3, 2], DType::F32).unwrap();
    assert!(
        t.sample_rows(&[0.5; 2], Some(2.0)).is_err(),
        "odd row count with guidance"
    );
    assert!(t.sample_rows(&[0.5; 2], None).is_err(), "uniform count");
}

#[test]
fn grn_matches_cpu_reference() {
    let g = gpu();
    for (b, p, c) in [(1, 1, 1), (2, 16, 96), (3, 7, 130)] {
        let x = values(b * p * c, 5);
        let (gamma, beta) = (values(c, 6), values(c, 7));
        let t = Tensor::from_slice(&g, &x, &[b, p, c], DType::F32).unwrap();
        let gt = Tensor::from_slice(&g, &gamma, &[c], DType::F32).unwrap();
        let bt = Tensor::from_slice(&g, &beta, &[c], DType::F32).unwrap();
        let got = t.grn(&gt, &bt).unwrap().to_vec().unwrap();
        let e = rel_error(&got, &grn_cpu(&x, [b, p, c], &gamma, &beta));
        assert!(e < 1e-5, "[{b}, {p}, {c}]: {e}");
    }
}

fn copy_pipeline(to: &std::path::Path) {
    let from = model_dir("amused");
    for part in [
        "",
        "text_encoder",
        "tokenizer",
        "transformer",
        "vqvae",
        "scheduler",
    ] {
        std::fs::create_dir_all(to.join(part)).unwrap();
        for f in std::fs::read_dir(from.join(part)).unwrap() {
            let f = f.unwrap();
            if f.file_type().unwrap().is_file() {
                std::fs::copy(f.path(), to.join(part).join(f.file_name())).unwrap();
            }
        }
    }
}

#[test]
fn amused_bad_input_gives_clear_errors() {
    let g = gpu();
    let err = |dir: &std::path::Path| Amused::load(&g, dir, DType::F32).err().unwrap().to_string();
    let tmp = std::env::temp_dir().join(format!("tessera-amused-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    copy_pipeline(&tmp);
    let edit = |file: &str, from: &str, to: &str| {
        let p = tmp.join(file);
        let s = std::fs::read_to_string(&p).unwrap();
        assert!(s.contains(from), "{file} has {from}");
        std::fs::write(&p, s.replacen(from, to, 1)).unwrap();
    };
    let pipe = Amused::load(&g, &tmp, DType::F32).unwrap();

    // Options.
    let gen = |opts: &GenerateOptions| {
        pipe.generate(&["x"], opts, &mut SeededNoise::new(1))
            .err()
            .unwrap()
            .to_string()
    };
    let e = gen(&GenerateOptions {
        size: Some((18, 16)),
        ..GenerateOptions::default()
    });
    assert!(e.contains("multiple of 4"), "{e}");
    let e = gen(&GenerateOptions {
        size: Some((8192, 16)),
        ..GenerateOptions::default()
    });
    assert!(e.contains("at most"), "{e}");
    // A 4096×4096 image: the VQ-GAN's activations at full size (32 channels) are 2 GiB, past
    // what lavapipe (128 MiB) binds; refused before any step runs.
    let limit = g.limits().max_storage_buffer_binding_size;
    if 32 * 4096 * 4096 * 4 > limit {
        let t = std::time::Instant::now();
        let e = gen(&GenerateOptions {
            size: Some((4096, 4096)),
            ..GenerateOptions::default()
        });
        assert!(e.contains("binds at most"), "{e}");
        assert!(t.elapsed().as_secs() < 5, "refused up front");
    }
    let e = gen(&GenerateOptions {
        steps: 0,
        ..GenerateOptions::default()
    });
    assert!(e.contains("steps"), "{e}");
    let e = gen(&GenerateOptions {
        guidance_scale: f32::NAN,
        ..GenerateOptions::default()
    });
    assert!(e.contains("finite"), "{e}");
    assert!(pipe
        .generate(&[], &GenerateOptions::default(), &mut SeededNoise::new(1))
        .is_err());
    let tok_err = pipe
        .vqvae()
        .decode(&[40; 16], 1, (4, 4))
        .err()
        .unwrap()
        .to_string();
    assert!(tok_err.contains("outside the codebook"), "{tok_err}");

    // Folders and configs: each edit is undone after its check.
    std::fs::rename(tmp.join("vqvae"), tmp.join("vq")).unwrap();
    assert!(err(&tmp).contains("no vqvae/ folder"), "{}", err(&tmp));
    std::fs::rename(tmp.join("vq"), tmp.join("vqvae")).unwrap();
    let cases = [
        (
            "scheduler/scheduler_config.json",
            "39",
            "40",
            "mask_token_id",
        ),
        (
            "vqvae/config.json",
            "\"mid_block_add_attention\": false",
            "\"mid_block_add_attention\": true",
            "mid_block_add_attention",
        ),
        (
            "transformer/config.json",
            "\"micro_cond_embed_dim\": 40",
            "\"micro_cond_embed_dim\": 41",
            "micro_cond_embed_dim",
        ),
        (
            "transformer/config.json",
            "\"block_out_channels\": 24",
            "\"block_out_channels\": 48",
            "shape",
        ),
        // The projection's weight no longer fits the text encoder's config.
        (
            "text_encoder/config.json",
            "\"projection_dim\": 24",
            "\"projection_dim\": 16",
            "shape",
        ),
        // The pooled width feeds cond_embed: its weight is named with both shapes.
        (
            "transformer/config.json",
            "\"cond_embed_dim\": 24",
            "\"cond_embed_dim\": 16",
            "cond_embed.linear_1.weight",
        ),
        (
            "model_index.json",
            "AmusedPipeline",
            "StableDiffusionPipeline",
            "AmusedPipeline",
        ),
    ];
    for (file, from, to, want) in cases {
        edit(file, from, to);
        let e = err(&tmp);
        assert!(e.contains(want), "{file} {to}: {e}");
        edit(file, to, from);
    }
    // A truncated transformer checkpoint.
    let ckpt = tmp.join("transformer/diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&ckpt).unwrap();
    std::fs::write(&ckpt, &bytes[..bytes.len() / 2]).unwrap();
    assert!(err(&tmp).contains("truncated"), "{}", err(&tmp));
    std::fs::write(&ckpt, &bytes).unwrap();
    assert!(Amused::load(&g, &tmp, DType::F32).is_ok(), "restored");
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn embedding_tables_past_a_binding_still_gather() {
    // CLIP-L's token table in f32 is 145 MiB, past lavapipe's 128 MiB binding: such a table
    // stays on the host. Either way the rows are the checkpoint's.
    let g = gpu();
    let (vocab, dim) = (40_000, 1024);
    let w = Weights::random(&g, DType::F32).unwrap();
    let table = tessera::nn::Embedding::load(&w, "token_embedding.weight", vocab, dim).unwrap();
    let ids = [0u32, 39_999, 17, 17, 25_000];
    let got = table.forward(&ids).unwrap().to_vec().unwrap();
    let host = w.get_host("token_embedding.weight", &[vocab, dim]).unwrap();
    for (k, &id) in ids.iter().enumerate() {
        let id = id as usize;
        assert_eq!(
            got[k * dim..(k + 1) * dim],
            host[id * dim..(id + 1) * dim],
            "row {id}"
        );
    }
    let e = table.forward(&[40_000]).unwrap_err().to_string();
    assert!(e.contains("outside the vocabulary"), "{e}");
}
