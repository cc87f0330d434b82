//! Image preprocessing equal to LaVIN's torchvision pipeline on PIL:
//! `Image.open(f).convert('RGB')`, `Resize((224, 224), BICUBIC)`, `ToTensor()`,
//! `Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)`.
//!
//! The resize is Pillow's fixed-point antialiased bicubic (22-bit weights, uint8
//! intermediate, horizontal pass first), which a float bicubic misses by up to 0.4.
//!
//! Mode conversion follows PIL's `convert('RGB')`: alpha is dropped (never composited),
//! gray is replicated, palettes are expanded (by the decoder). Bit depths as PIL reads PNGs:
//! 16-bit gray is PIL mode `I;16`, whose RGB conversion *clips* to 255
//! (`v > 255 -> 255`); 16-bit gray+alpha and 16-bit RGB(A) are read by PIL with their high
//! byte (`v >> 8`). GIF: first frame, transparent pixels keep their palette colour as in PIL.
//! Known gaps: CMYK JPEGs are converted by the `image` crate's decoder (not PIL's formula);
//! GIF areas outside a first frame smaller than the canvas are black here.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageReader, Limits};

/// Side of the square CLIP input.
pub const IMAGE_SIZE: usize = 224;
/// timm's `IMAGENET_DEFAULT_MEAN` (LaVIN uses ImageNet's, not CLIP's, statistics).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// timm's `IMAGENET_DEFAULT_STD`.
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];
/// PIL's decompression-bomb error threshold: 2 x `Image.MAX_IMAGE_PIXELS` (89,478,485).
pub const DEFAULT_MAX_PIXELS: u64 = 2 * 89_478_485;

/// Image loading/preprocessing errors; each names the file (or the caller's label).
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}: cannot read image: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a supported image (PNG, JPEG, WebP, GIF, BMP): {msg}")]
    Decode { path: PathBuf, msg: String },
    #[error("{path}: image of {width}x{height} pixels exceeds the limit of {limit} pixels (decompression bomb?)")]
    TooLarge {
        path: PathBuf,
        width: u32,
        height: u32,
        limit: u64,
    },
}

/// Options of the decoder.
#[derive(Debug, Clone, Copy)]
pub struct ImageOptions {
    /// Refuse images with more pixels than this (before decoding them).
    pub max_pixels: u64,
}

impl Default for ImageOptions {
    fn default() -> Self {
        Self {
            max_pixels: DEFAULT_MAX_PIXELS,
        }
    }
}

/// An 8-bit RGB image, row-major HWC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rgb8 {
    pub width: usize,
    pub height: usize,
    /// `height * width * 3` bytes.
    pub data: Vec<u8>,
}

/// Full pipeline from a file: a `[3, 224, 224]` CHW `Vec<f32>`.
pub fn preprocess_image(path: impl AsRef<Path>) -> Result<Vec<f32>, ImageError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| ImageError::Io {
        path: path.to_owned(),
        source,
    })?;
    preprocess_bytes(&bytes, path)
}

/// Full pipeline from encoded bytes; `name` labels errors.
pub fn preprocess_bytes(bytes: &[u8], name: impl AsRef<Path>) -> Result<Vec<f32>, ImageError> {
    let rgb = decode_rgb(bytes, name.as_ref(), ImageOptions::default())?;
    Ok(normalize(&resize_to(&rgb, IMAGE_SIZE, IMAGE_SIZE)))
}

/// The text-only input: an all-zero `[3, 224, 224]`.
pub fn zero_image() -> Vec<f32> {
    vec![0.0; 3 * IMAGE_SIZE * IMAGE_SIZE]
}

/// Decodes and converts like PIL's `Image.open(..).convert('RGB')` (first frame).
pub fn decode_rgb(bytes: &[u8], name: &Path, opts: ImageOptions) -> Result<Rgb8, ImageError> {
    let derr = |msg: String| ImageError::Decode {
        path: name.to_owned(),
        msg,
    };
    let reader = || {
        ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| derr(e.to_string()))
    };
    let (width, height) = reader()?
        .into_dimensions()
        .map_err(|e| derr(e.to_string()))?;
    if u64::from(width) * u64::from(height) > opts.max_pixels {
        return Err(ImageError::TooLarge {
            path: name.to_owned(),
            width,
            height,
            limit: opts.max_pixels,
        });
    }
    let mut r = reader()?;
    let mut limits = Limits::default();
    // Room for the largest decoded layout (16-bit RGBA) of an allowed image.
    limits.max_alloc = Some(opts.max_pixels.saturating_mul(8).max(64 << 20));
    r.limits(limits);
    let img = r.decode().map_err(|e| derr(e.to_string()))?;
    Ok(to_rgb8(img))
}

/// PIL `convert('RGB')` from the decoded layout.
fn to_rgb8(img: DynamicImage) -> Rgb8 {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let n = w * h;
    let mut data = Vec::with_capacity(n * 3);
    let gray = |data: &mut Vec<u8>, v: u8| data.extend_from_slice(&[v, v, v]);
    match img {
        DynamicImage::ImageRgb8(b) => data = b.into_raw(),
        DynamicImage::ImageRgba8(b) => {
            for p in b.into_raw().chunks_exact(4) {
                data.extend_from_slice(&p[..3]);
            }
        }
        DynamicImage::ImageLuma8(b) => b.into_raw().into_iter().for_each(|v| gray(&mut data, v)),
        DynamicImage::ImageLumaA8(b) => b
            .into_raw()
            .chunks_exact(2)
            .for_each(|p| gray(&mut data, p[0])),
        // PIL I;16 -> RGB clips (Convert.c I16_RGB), it does not scale.
        DynamicImage::ImageLuma16(b) => b
            .into_raw()
            .into_iter()
            .for_each(|v| gray(&mut data, v.min(255) as u8)),
        // PIL reads 16-bit LA / RGB / RGBA PNGs as 8-bit modes from the high byte.
        DynamicImage::ImageLumaA16(b) => b
            .into_raw()
            .chunks_exact(2)
            .for_each(|p| gray(&mut data, (p[0] >> 8) as u8)),
        DynamicImage::ImageRgb16(b) => {
            data.extend(b.into_raw().into_iter().map(|v| (v >> 8) as u8))
        }
        DynamicImage::ImageRgba16(b) => {
            for p in b.into_raw().chunks_exact(4) {
                data.extend(p[..3].iter().map(|v| (v >> 8) as u8));
            }
        }
        // Float layouts (not produced by the enabled decoders): clamp and round.
        other => data = other.to_rgb8().into_raw(),
    }
    Rgb8 {
        width: w,
        height: h,
        data,
    }
}

/// Fixed-point bits of Pillow's 8-bit resampler (32 - 8 - 2).
const PRECISION_BITS: u32 = 22;

/// Per-output-sample taps: first input index, weights (fixed point).
struct Coeffs {
    start: Vec<usize>,
    weights: Vec<Vec<i32>>,
}

/// Pillow's cubic kernel with a = -0.5, in its evaluation order.
fn bicubic(x: f64) -> f64 {
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

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for the bicubic filter.
fn coeffs(n_in: usize, n_out: usize) -> Coeffs {
    let scale = n_in as f64 / n_out as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    let ss = 1.0 / filterscale;
    let mut start = Vec::with_capacity(n_out);
    let mut weights = Vec::with_capacity(n_out);
    for i in 0..n_out {
        let center = (i as f64 + 0.5) * scale;
        // C `(int)` truncation, then clamping.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64)
            .min(n_in as i64)
            .max(xmin as i64) as usize;
        let mut k: Vec<f64> = (xmin..xmax)
            .map(|x| bicubic((x as f64 - center + 0.5) * ss))
            .collect();
        let ww: f64 = k.iter().sum();
        if ww != 0.0 {
            k.iter_mut().for_each(|w| *w /= ww);
        }
        let one = f64::from(1u32 << PRECISION_BITS);
        let fixed = k
            .iter()
            .map(|&w| {
                if w < 0.0 {
                    (-0.5 + w * one) as i32
                } else {
                    (0.5 + w * one) as i32
                }
            })
            .collect();
        start.push(xmin);
        weights.push(fixed);
    }
    Coeffs { start, weights }
}

/// `(2^21 + sum) >> 22`, clamped to a byte.
fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// PIL `resize((w, h), BICUBIC)` for 8-bit RGB: horizontal pass, then vertical; an axis
/// already at its size is not resampled. Like Pillow 13's `Image.resize`, an image more
/// than 100 times taller than wide that shrinks vertically is resampled vertically first.
pub fn resize_to(img: &Rgb8, out_w: usize, out_h: usize) -> Rgb8 {
    if img.height > img.width * 100 && out_h < img.height {
        let tall = resize_passes(img, img.width, out_h);
        return resize_passes(&tall, out_w, out_h);
    }
    resize_passes(img, out_w, out_h)
}

/// Pillow's `ImagingResampleInner`: horizontal pass (if needed), then vertical.
fn resize_passes(img: &Rgb8, out_w: usize, out_h: usize) -> Rgb8 {
    let mut cur = img.clone();
    if cur.width != out_w && cur.width > 0 {
        let c = coeffs(cur.width, out_w);
        let mut data = vec![0u8; cur.height * out_w * 3];
        for y in 0..cur.height {
            let row = &cur.data[y * cur.width * 3..(y + 1) * cur.width * 3];
            for x in 0..out_w {
                for ch in 0..3 {
                    let mut acc: i64 = 1 << (PRECISION_BITS - 1);
                    for (t, &w) in c.weights[x].iter().enumerate() {
                        acc += i64::from(row[(c.start[x] + t) * 3 + ch]) * i64::from(w);
                    }
                    data[(y * out_w + x) * 3 + ch] = clip8(acc);
                }
            }
        }
        cur = Rgb8 {
            width: out_w,
            height: cur.height,
            data,
        };
    }
    if cur.height != out_h && cur.height > 0 {
        let c = coeffs(cur.height, out_h);
        let stride = cur.width * 3;
        let mut data = vec![0u8; out_h * stride];
        for y in 0..out_h {
            for i in 0..stride {
                let mut acc: i64 = 1 << (PRECISION_BITS - 1);
                for (t, &w) in c.weights[y].iter().enumerate() {
                    acc += i64::from(cur.data[(c.start[y] + t) * stride + i]) * i64::from(w);
                }
                data[y * stride + i] = clip8(acc);
            }
        }
        cur = Rgb8 {
            width: cur.width,
            height: out_h,
            data,
        };
    }
    cur
}

/// `ToTensor` + `Normalize` in float32: `(v / 255 - mean) / std`, CHW.
pub fn normalize(img: &Rgb8) -> Vec<f32> {
    let n = img.width * img.height;
    let mut out = vec![0f32; 3 * n];
    for (i, px) in img.data.chunks_exact(3).enumerate() {
        for ch in 0..3 {
            out[ch * n + i] = (f32::from(px[ch]) / 255.0 - IMAGENET_MEAN[ch]) / IMAGENET_STD[ch];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (a, b) in [(300, 224), (64, 224), (225, 224), (1000, 224), (7, 224)] {
            let c = coeffs(a, b);
            for w in &c.weights {
                let s: i32 = w.iter().sum();
                assert!((s - (1 << 22)).abs() <= w.len() as i32, "{a}->{b}: {s}");
            }
        }
    }

    #[test]
    fn very_tall_images_shrink_vertically_first() {
        let (w, h) = (3, 400);
        let data = (0..w * h * 3).map(|i| ((i * 37) % 251) as u8).collect();
        let img = Rgb8 {
            width: w,
            height: h,
            data,
        };
        let want = resize_passes(&resize_passes(&img, w, 224), 224, 224);
        assert_eq!(resize_to(&img, 224, 224), want);
        assert_ne!(resize_passes(&img, 224, 224), want);
    }

    #[test]
    fn constant_image_stays_constant() {
        let img = Rgb8 {
            width: 50,
            height: 31,
            data: vec![77; 50 * 31 * 3],
        };
        let r = resize_to(&img, 224, 224);
        assert!(r.data.iter().all(|&v| v == 77));
    }
}
