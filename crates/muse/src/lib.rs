//! aMUSEd (Muse-style masked-token text-to-image) from diffusers pipeline folders on Tessera:
//! the CLIP text encoder ([`TextEncoder`]), the masked-token transformer ([`UVit2D`]), the
//! scheduler that unmasks tokens over the steps ([`AmusedScheduler`]) and the VQ-GAN decoder
//! ([`VqDecoder`]), put together in [`Amused::generate`].

#![warn(missing_docs)]

mod pipeline;
mod scheduler;
mod transformer;
mod vq;

pub use pipeline::{Amused, GenerateOptions, Images, TextEmbeddings, TextEncoder, MAX_SIDE};
pub use scheduler::{linspace, AmusedScheduler, MaskingSchedule};
pub use tessera_nn::{Noise, SeededNoise};
pub use transformer::{Conditioning, UVit2D, UVit2DConfig, MICRO_CONDS};
pub use vq::{VqConfig, VqDecoder};
