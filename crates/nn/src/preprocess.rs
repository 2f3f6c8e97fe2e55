//! Image preprocessing as a model folder's `preprocessor_config.json` describes it (transformers'
//! ViT and CLIP image processors): resize, centre crop, then rescale and normalise, the last two
//! fused into the patch-embedding kernel.

use std::path::Path;

use image::{ImageReader, RgbImage};
use serde::Deserialize;
use tessera_tensor::Normalize;

use crate::config::{parse_json, read_json};
use crate::error::{NnError, Result};
use crate::resample::{resize, Filter};

/// The longest side, in pixels, an image processor resizes or crops to. Past it a config is
/// corrupt more likely than meant, and one image would take gigabytes.
pub const MAX_IMAGE_SIDE: u32 = 16_384;

/// A size as the configs write it: `{"height", "width"}`, `{"shortest_edge"}` or a number.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
enum SizeSpec {
    HeightWidth { height: u32, width: u32 },
    ShortestEdge { shortest_edge: u32 },
    Square(u32),
}

#[derive(Deserialize)]
struct RawConfig {
    image_processor_type: Option<String>,
    do_resize: Option<bool>,
    size: Option<SizeSpec>,
    resample: Option<u32>,
    do_center_crop: Option<bool>,
    crop_size: Option<SizeSpec>,
    do_rescale: Option<bool>,
    rescale_factor: Option<f32>,
    do_normalize: Option<bool>,
    image_mean: Option<[f32; 3]>,
    image_std: Option<[f32; 3]>,
}

/// Where the resized image's size comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resize {
    /// Exactly this (height, width).
    Exact(u32, u32),
    /// The shorter side to this length, aspect ratio kept (then usually a centre crop).
    ShortestEdge(u32),
}

/// The preprocessing of one model: what transformers' image processor does to an RGB image
/// before `pixel_values`.
#[derive(Clone, Debug)]
pub struct ImageProcessor {
    /// Resize step (`None`: images must already have the model's size).
    pub resize: Option<Resize>,
    /// PIL's resampling filter code (0 nearest, 1 lanczos, 2 bilinear, 3 bicubic, 4 box,
    /// 5 hamming).
    pub resample: u32,
    /// Centre crop to (height, width).
    pub crop: Option<(u32, u32)>,
    /// Rescale and normalisation, applied on the GPU.
    pub normalize: Normalize,
}

/// A batch of preprocessed images: `[batch, height, width, 3]` RGB bytes.
#[derive(Clone, Debug)]
pub struct ProcessedImages {
    /// The pixels, HWC, one image after another.
    pub pixels: Vec<u8>,
    /// Images.
    pub batch: usize,
    /// Rows per image.
    pub height: usize,
    /// Columns per image.
    pub width: usize,
}

const IMAGENET_STANDARD: [f32; 3] = [0.5, 0.5, 0.5];
/// CLIP's normalisation (`OPENAI_CLIP_MEAN`, `OPENAI_CLIP_STD`).
const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

/// Reads an image file (PNG, JPEG) as 8-bit RGB; alpha is dropped and grey replicated, as PIL's
/// `convert("RGB")`.
pub fn load_image(path: &Path) -> Result<RgbImage> {
    let what = format!("image {}", path.display());
    let reader =
        ImageReader::open(path).map_err(|e| NnError::Input(format!("cannot read {what}: {e}")))?;
    decode(reader, &what)
}

/// [`load_image`] of an image file's bytes (what a browser fetched, or an upload).
pub fn decode_image(bytes: &[u8]) -> Result<RgbImage> {
    decode(ImageReader::new(std::io::Cursor::new(bytes)), "the image")
}

/// The image `reader` holds, its format told by its first bytes (else by the file's name).
fn decode<R: std::io::BufRead + std::io::Seek>(
    reader: ImageReader<R>,
    what: &str,
) -> Result<RgbImage> {
    let err = |e: &dyn std::fmt::Display| NnError::Input(format!("cannot read {what}: {e}"));
    let reader = reader.with_guessed_format().map_err(|e| err(&e))?;
    Ok(reader.decode().map_err(|e| err(&e))?.to_rgb8())
}

impl ImageProcessor {
    /// transformers' `ViTImageProcessor` defaults: 224×224 bilinear, mean and std 0.5.
    pub fn vit_default() -> Self {
        ImageProcessor {
            resize: Some(Resize::Exact(224, 224)),
            resample: 2,
            crop: None,
            normalize: Normalize {
                rescale: 1.0 / 255.0,
                mean: IMAGENET_STANDARD,
                std: IMAGENET_STANDARD,
            },
        }
    }

    /// transformers' `CLIPImageProcessor` defaults: shortest edge 224 bicubic, 224 centre crop,
    /// CLIP's mean and std.
    pub fn clip_default() -> Self {
        ImageProcessor {
            resize: Some(Resize::ShortestEdge(224)),
            resample: 3,
            crop: Some((224, 224)),
            normalize: Normalize {
                rescale: 1.0 / 255.0,
                mean: CLIP_MEAN,
                std: CLIP_STD,
            },
        }
    }

    /// `preprocessor_config.json` in `dir` over the defaults of its `image_processor_type`
    /// (ViT's for unknown types); `fallback` when the folder has no such file.
    pub fn load(dir: &Path, fallback: ImageProcessor) -> Result<Self> {
        let path = dir.join("preprocessor_config.json");
        if !path.is_file() {
            return Ok(fallback);
        }
        ImageProcessor::from_raw(read_json(&path, "image preprocessor config")?, fallback)
    }

    /// [`ImageProcessor::load`] from a `preprocessor_config.json`'s text (what a browser
    /// fetched).
    pub fn from_json(text: &str, fallback: ImageProcessor) -> Result<Self> {
        let raw = parse_json(
            text,
            Path::new("preprocessor_config.json"),
            "image preprocessor config",
        )?;
        ImageProcessor::from_raw(raw, fallback)
    }

    fn from_raw(raw: RawConfig, fallback: ImageProcessor) -> Result<Self> {
        let base = match raw.image_processor_type.as_deref() {
            Some(t) if t.starts_with("CLIP") => ImageProcessor::clip_default(),
            Some(t) if t.starts_with("ViT") => ImageProcessor::vit_default(),
            _ => fallback,
        };
        let resize = if raw.do_resize.unwrap_or(true) {
            match raw.size {
                Some(SizeSpec::HeightWidth { height, width }) => Some(Resize::Exact(height, width)),
                Some(SizeSpec::ShortestEdge { shortest_edge }) => {
                    Some(Resize::ShortestEdge(shortest_edge))
                }
                Some(SizeSpec::Square(s)) => Some(match base.resize {
                    Some(Resize::ShortestEdge(_)) => Resize::ShortestEdge(s),
                    _ => Resize::Exact(s, s),
                }),
                None => base.resize,
            }
        } else {
            None
        };
        let crop = match raw.do_center_crop {
            Some(false) => None,
            flag => match raw.crop_size {
                Some(SizeSpec::HeightWidth { height, width }) => Some((height, width)),
                Some(SizeSpec::Square(s)) => Some((s, s)),
                Some(SizeSpec::ShortestEdge { .. }) => {
                    return Err(NnError::config(
                        "crop_size",
                        "must be {\"height\", \"width\"} or a number",
                    ))
                }
                None if flag == Some(true) => base.crop.or(Some((224, 224))),
                None => base.crop,
            },
        };
        let resample = raw.resample.unwrap_or(base.resample);
        filter(resample)?;
        if [
            resize.map(|r| match r {
                Resize::Exact(h, w) => h.min(w),
                Resize::ShortestEdge(s) => s,
            }),
            crop.map(|c| c.0.min(c.1)),
        ]
        .contains(&Some(0))
        {
            return Err(NnError::config("size", "image sizes must be positive"));
        }
        let sides = [
            (
                "size",
                resize.map(|r| match r {
                    Resize::Exact(h, w) => h.max(w),
                    Resize::ShortestEdge(s) => s,
                }),
            ),
            ("crop_size", crop.map(|c| c.0.max(c.1))),
        ];
        for (field, side) in sides {
            if let Some(side) = side.filter(|&s| s > MAX_IMAGE_SIDE) {
                return Err(NnError::config(
                    field,
                    format!("{side} pixels is past the {MAX_IMAGE_SIDE} pixels Tessera resizes to"),
                ));
            }
        }
        let rescale = if raw.do_rescale.unwrap_or(true) {
            raw.rescale_factor.unwrap_or(1.0 / 255.0)
        } else {
            1.0
        };
        let (mean, std) = if raw.do_normalize.unwrap_or(true) {
            (
                raw.image_mean.unwrap_or(base.normalize.mean),
                raw.image_std.unwrap_or(base.normalize.std),
            )
        } else {
            ([0.0; 3], [1.0; 3])
        };
        if std.contains(&0.0) {
            return Err(NnError::config("image_std", "a standard deviation of 0"));
        }
        Ok(ImageProcessor {
            resize,
            resample,
            crop,
            normalize: Normalize { rescale, mean, std },
        })
    }

    /// One image resized and cropped.
    pub fn process_one(&self, image: &RgbImage) -> Result<RgbImage> {
        let (w, h) = image.dimensions();
        if w == 0 || h == 0 {
            return Err(NnError::Input(format!(
                "an image of {w}x{h} pixels has nothing to resize"
            )));
        }
        let mut out = match self.resize {
            None => image.clone(),
            Some(r) => {
                let (nh, nw) = match r {
                    Resize::Exact(h, w) => (h, w),
                    Resize::ShortestEdge(s) => {
                        // transformers' get_resize_output_image_size: the long side truncated.
                        let (short, long) = (w.min(h) as u64, w.max(h) as u64);
                        let long = s as u64 * long / short;
                        if long > MAX_IMAGE_SIDE as u64 {
                            return Err(NnError::Input(format!(
                                "a {w}x{h} image resized to a shortest edge of {s} would be \
                                 {long} pixels long, past the {MAX_IMAGE_SIDE} Tessera resizes \
                                 to: crop it closer to square first"
                            )));
                        }
                        let long = long as u32;
                        if w <= h {
                            (long, s)
                        } else {
                            (s, long)
                        }
                    }
                };
                if (nw, nh) == (w, h) {
                    image.clone()
                } else {
                    resize(image, nw, nh, filter(self.resample)?)
                }
            }
        };
        if let Some((ch, cw)) = self.crop {
            out = center_crop(&out, ch, cw);
        }
        Ok(out)
    }

    /// A batch of images, each resized and cropped to the same size.
    pub fn process(&self, images: &[RgbImage]) -> Result<ProcessedImages> {
        let mut pixels = Vec::new();
        let mut size = None;
        for image in images {
            let out = self.process_one(image)?;
            let dims = (out.height() as usize, out.width() as usize);
            if size.is_some_and(|s| s != dims) {
                return Err(NnError::Input(
                    "images of different sizes after preprocessing cannot share a batch (the \
                     preprocessor config has no fixed size)"
                        .into(),
                ));
            }
            size = Some(dims);
            pixels.extend_from_slice(out.as_raw());
        }
        let (height, width) = size.ok_or_else(|| NnError::Input("no images".into()))?;
        Ok(ProcessedImages {
            pixels,
            batch: images.len(),
            height,
            width,
        })
    }
}

fn filter(resample: u32) -> Result<Filter> {
    Filter::from_code(resample).ok_or_else(|| {
        NnError::config(
            "resample",
            format!("PIL filter {resample} does not exist: use 0 to 5 (2 bilinear, 3 bicubic)"),
        )
    })
}

/// transformers' `center_crop`: offsets `(size − crop) / 2` rounded down, zero padding where the
/// image is smaller than the crop.
fn center_crop(image: &RgbImage, ch: u32, cw: u32) -> RgbImage {
    let (w, h) = image.dimensions();
    let top = (h as i64 - ch as i64).div_euclid(2);
    let left = (w as i64 - cw as i64).div_euclid(2);
    RgbImage::from_fn(cw, ch, |x, y| {
        let (sx, sy) = (x as i64 + left, y as i64 + top);
        if sx < 0 || sy < 0 || sx >= w as i64 || sy >= h as i64 {
            image::Rgb([0, 0, 0])
        } else {
            *image.get_pixel(sx as u32, sy as u32)
        }
    })
}
