//! The patch embedding against transformers' ViTEmbeddings and CLIPVisionEmbeddings
//! (fixtures from tools/make_fixtures.py), at the native size and with the position
//! embeddings resampled for another size.

use safetensors::{Dtype, SafeTensors};
use tessera::tensor::{Normalize, PatchEmbed, Pixels};
use tessera::{DType, Tensor};

use crate::common::{gpu, rel_error};

const FIXTURE: &[u8] = include_bytes!("../fixtures/patch_embed.safetensors");

struct Fixture(SafeTensors<'static>);

impl Fixture {
    fn load() -> Self {
        Fixture(SafeTensors::deserialize(FIXTURE).unwrap())
    }

    fn shape(&self, name: &str) -> Vec<usize> {
        self.0.tensor(name).unwrap().shape().to_vec()
    }

    fn f32(&self, name: &str) -> Vec<f32> {
        let t = self.0.tensor(name).unwrap();
        assert_eq!(t.dtype(), Dtype::F32, "{name}");
        t.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }

    fn u8(&self, name: &str) -> Vec<u8> {
        let t = self.0.tensor(name).unwrap();
        assert_eq!(t.dtype(), Dtype::U8, "{name}");
        t.data().to_vec()
    }

    fn tensor(&self, name: &str, dtype: DType) -> Tensor {
        Tensor::from_slice(&gpu(), &self.f32(name), &self.shape(name), dtype).unwrap()
    }
}

const VIT_NORM: Normalize = Normalize {
    rescale: 1.0 / 255.0,
    mean: [0.5, 0.4, 0.3],
    std: [0.2, 0.25, 0.3],
};

#[test]
fn vit_embeddings_match_transformers() {
    let f = Fixture::load();
    for dtype in [DType::F32, DType::F16] {
        if dtype == DType::F16 && !gpu().supports_f16() {
            continue;
        }
        let tol = if dtype == DType::F32 { 1e-4 } else { 2e-2 };
        for size in ["native", "resized"] {
            let image = f.shape(&format!("vit.{size}.image"));
            let embed = PatchEmbed::new(
                &f.tensor("vit.weight", dtype),
                Some(&f.tensor("vit.bias", dtype)),
                &f.tensor("vit.cls", dtype),
                &f.tensor("vit.pos", dtype),
                (image[1], image[2]),
            )
            .unwrap();
            let pixels = f.u8(&format!("vit.{size}.image"));
            let got = embed
                .forward(Pixels::U8(&pixels), image[0], &VIT_NORM)
                .unwrap();
            let want_name = format!("vit.{size}.out");
            assert_eq!(got.shape(), &f.shape(&want_name)[..]);
            let err = rel_error(&got.to_vec().unwrap(), &f.f32(&want_name));
            assert!(err <= tol, "{size} {dtype}: {err}");
        }
    }
}

#[test]
fn clip_embeddings_match_transformers() {
    let f = Fixture::load();
    let image = f.shape("clip.native.image");
    let embed = PatchEmbed::new(
        &f.tensor("clip.weight", DType::F32),
        None,
        &f.tensor("clip.cls", DType::F32),
        &f.tensor("clip.pos", DType::F32),
        (image[1], image[2]),
    )
    .unwrap();
    let norm = Normalize {
        rescale: 1.0,
        mean: [0.481_454_66, 0.457_827_5, 0.408_210_73],
        std: [0.268_629_54, 0.261_302_6, 0.275_777_1],
    };
    let pixels = f.f32("clip.native.image");
    let got = embed
        .forward(Pixels::F32(&pixels), image[0], &norm)
        .unwrap();
    let err = rel_error(&got.to_vec().unwrap(), &f.f32("clip.native.out"));
    assert!(err <= 1e-4, "{err}");
}

#[test]
fn patch_embed_rejects_bad_inputs() {
    let f = Fixture::load();
    let w = f.tensor("vit.weight", DType::F32);
    let cls = f.tensor("vit.cls", DType::F32);
    let pos = f.tensor("vit.pos", DType::F32);
    let err = PatchEmbed::new(&w, None, &cls, &pos, (18, 16)).unwrap_err();
    assert!(err.to_string().contains("does not split"), "{err}");
    let err = PatchEmbed::new(&w, None, &cls, &cls, (16, 16)).unwrap_err();
    assert!(err.to_string().contains("positions"), "{err}");
    let embed = PatchEmbed::new(&w, None, &cls, &pos, (16, 16)).unwrap();
    let err = embed
        .forward(Pixels::U8(&[0; 10]), 1, &VIT_NORM)
        .unwrap_err();
    assert!(err.to_string().contains("need 768 pixels"), "{err}");
}
