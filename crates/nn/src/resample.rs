//! Image resizing as Pillow does it (`Image.resize`, which transformers' image processors call):
//! separable convolution, horizontal pass first, 8-bit results after each pass, coefficients in
//! 22-bit fixed point. The `image` crate's filters differ from Pillow's by several pixel steps;
//! matching them keeps pixel values equal to the reference's.

use image::RgbImage;

/// Fixed-point precision of Pillow's 8-bit resampling (`PRECISION_BITS`).
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's resampling filters by their `PIL.Image.Resampling` codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    /// 0: nearest neighbour.
    Nearest,
    /// 1: Lanczos (a = 3).
    Lanczos,
    /// 2: bilinear (triangle).
    Bilinear,
    /// 3: bicubic (a = −0.5).
    Bicubic,
    /// 4: box.
    Box,
    /// 5: Hamming.
    Hamming,
}

impl Filter {
    /// The filter of a PIL resample code.
    pub fn from_code(code: u32) -> Option<Filter> {
        Some(match code {
            0 => Filter::Nearest,
            1 => Filter::Lanczos,
            2 => Filter::Bilinear,
            3 => Filter::Bicubic,
            4 => Filter::Box,
            5 => Filter::Hamming,
            _ => return None,
        })
    }

    fn support(self) -> f64 {
        match self {
            Filter::Nearest | Filter::Box => 0.5,
            Filter::Bilinear | Filter::Hamming => 1.0,
            Filter::Bicubic => 2.0,
            Filter::Lanczos => 3.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        let sinc = |x: f64| {
            if x == 0.0 {
                1.0
            } else {
                let px = x * std::f64::consts::PI;
                px.sin() / px
            }
        };
        match self {
            Filter::Nearest | Filter::Box => {
                if x > -0.5 && x <= 0.5 {
                    1.0
                } else {
                    0.0
                }
            }
            Filter::Bilinear => (1.0 - x.abs()).max(0.0),
            Filter::Hamming => {
                let x = x.abs();
                if x == 0.0 {
                    1.0
                } else if x >= 1.0 {
                    0.0
                } else {
                    let px = x * std::f64::consts::PI;
                    px.sin() / px * (0.54 + 0.46 * px.cos())
                }
            }
            Filter::Bicubic => {
                const A: f64 = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            Filter::Lanczos => {
                if x > -3.0 && x < 3.0 {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
        }
    }
}

/// Per output index: the first input index and its fixed-point weights (`precompute_coeffs` and
/// `normalize_coeffs_8bpc`).
fn coefficients(in_size: usize, out_size: usize, filter: Filter) -> Vec<(usize, Vec<i32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            // C's (int) truncates toward zero; a negative start clamps to 0 either way.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let weights: Vec<f64> = (xmin..xmax.max(xmin))
                .map(|x| filter.weight((x as f64 - center + 0.5) * ss))
                .collect();
            let total: f64 = weights.iter().sum();
            let one = (1u32 << PRECISION_BITS) as f64;
            let fixed = weights
                .iter()
                .map(|w| {
                    let k = if total != 0.0 { w / total } else { *w };
                    if k < 0.0 {
                        (-0.5 + k * one) as i32
                    } else {
                        (0.5 + k * one) as i32
                    }
                })
                .collect();
            (xmin, fixed)
        })
        .collect()
}

fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// `img` resized to `width` × `height` with Pillow's `resample` filter.
pub fn resize(img: &RgbImage, width: u32, height: u32, filter: Filter) -> RgbImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (nw, nh) = (width as usize, height as usize);
    if filter == Filter::Nearest {
        // Pillow's nearest resize samples the source pixel under each output centre.
        return RgbImage::from_fn(width, height, |x, y| {
            let sx = (((x as f64 + 0.5) * w as f64 / nw as f64) as usize).min(w - 1);
            let sy = (((y as f64 + 0.5) * h as f64 / nh as f64) as usize).min(h - 1);
            *img.get_pixel(sx as u32, sy as u32)
        });
    }
    let src = img.as_raw();
    let half = 1i32 << (PRECISION_BITS - 1);
    // Horizontal pass over every row (rows the vertical pass skips cost little at these sizes).
    let tmp: Vec<u8> = if nw != w {
        let coeffs = coefficients(w, nw, filter);
        let mut out = vec![0u8; h * nw * 3];
        for y in 0..h {
            for (x, (xmin, k)) in coeffs.iter().enumerate() {
                for c in 0..3 {
                    let acc = k.iter().enumerate().fold(half, |acc, (i, &kk)| {
                        acc + src[(y * w + xmin + i) * 3 + c] as i32 * kk
                    });
                    out[(y * nw + x) * 3 + c] = clip8(acc);
                }
            }
        }
        out
    } else {
        src.clone()
    };
    let out: Vec<u8> = if nh != h {
        let coeffs = coefficients(h, nh, filter);
        let mut out = vec![0u8; nh * nw * 3];
        for (y, (ymin, k)) in coeffs.iter().enumerate() {
            for x in 0..nw {
                for c in 0..3 {
                    let acc = k.iter().enumerate().fold(half, |acc, (i, &kk)| {
                        acc + tmp[((ymin + i) * nw + x) * 3 + c] as i32 * kk
                    });
                    out[(y * nw + x) * 3 + c] = clip8(acc);
                }
            }
        }
        out
    } else {
        tmp
    };
    RgbImage::from_raw(width, height, out).expect("the buffer has width × height pixels")
}
