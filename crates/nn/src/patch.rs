//! The patch embedding of ViT and CLIP's vision tower, built per image size.

use std::sync::{Arc, Mutex};

use tessera_tensor::{PatchEmbed, Tensor};

use crate::error::Result;
use crate::weights::Weights;

/// A patch embedding and the (height, width) it was built for.
type SizedEmbed = ((usize, usize), Arc<PatchEmbed>);

/// The checkpoint's patch embedding (conv weight, optional bias, class token, position table)
/// and the [`PatchEmbed`] of the last image size used: other sizes than the checkpoint's grid
/// resample the positions bicubically (`interpolate_pos_encoding=True`).
pub struct PatchEmbedding {
    weight: Tensor,
    /// The conv bias and its values.
    bias: Option<(Tensor, Vec<f32>)>,
    /// The class token and position table stay on the host: each image size's table is made
    /// from them without reading the GPU back.
    class: Vec<f32>,
    positions: Vec<f32>,
    cached: Mutex<Option<SizedEmbed>>,
}

/// Where the tensors of a [`PatchEmbedding`] live, each relative to one [`Weights`].
pub struct PatchEmbeddingKeys<'a> {
    /// Conv weight `[hidden, 3, p, p]`.
    pub weight: &'a str,
    /// Conv bias `[hidden]`, if the model has one.
    pub bias: Option<&'a str>,
    /// Class token (`[hidden]` or `[1, 1, hidden]`).
    pub class: &'a str,
    /// Position table (`[1 + g², hidden]` or `[1, 1 + g², hidden]`).
    pub positions: &'a str,
    /// Whether class token and positions carry the leading 1s (ViT) or not (CLIP).
    pub batched: bool,
}

impl PatchEmbedding {
    /// Loads the embedding of a `hidden`-wide model with `patch`-sized patches trained on
    /// `image`-sized square images.
    pub fn load(
        w: &Weights,
        keys: &PatchEmbeddingKeys<'_>,
        hidden: usize,
        patch: usize,
        image: usize,
    ) -> Result<Self> {
        let rows = (image / patch).pow(2) + 1;
        let (class, positions) = if keys.batched {
            (
                w.get_host(keys.class, &[1, 1, hidden])?,
                w.get_host(keys.positions, &[1, rows, hidden])?,
            )
        } else {
            (
                w.get_host(keys.class, &[hidden])?,
                w.get_host(keys.positions, &[rows, hidden])?,
            )
        };
        let bias = match keys.bias {
            Some(b) => Some((w.get(b, &[hidden])?, w.get_host(b, &[hidden])?)),
            None => None,
        };
        Ok(PatchEmbedding {
            weight: w.get(keys.weight, &[hidden, 3, patch, patch])?,
            bias,
            class,
            positions,
            cached: Mutex::new(None),
        })
    }

    /// The embedding for images of `size` = (height, width).
    pub fn at_size(&self, size: (usize, usize)) -> Result<Arc<PatchEmbed>> {
        let mut cached = self.cached.lock().expect("patch embedding cache");
        if let Some((s, pe)) = cached.as_ref() {
            if *s == size {
                return Ok(pe.clone());
            }
        }
        let pe = Arc::new(PatchEmbed::from_host(
            &self.weight,
            self.bias.as_ref().map(|(t, v)| (t, v.as_slice())),
            &self.class,
            &self.positions,
            size,
        )?);
        *cached = Some((size, pe.clone()));
        Ok(pe)
    }
}
