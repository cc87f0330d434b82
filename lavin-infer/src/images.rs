//! Turning image files and uploads into [`ImageInput`]s, through `lavin_data`'s PIL-exact
//! pipeline (`convert('RGB')`, Pillow bicubic resize to 224x224, ImageNet normalisation).
//!
//! Decoding happens here, before a request is queued, so a bad image is the caller's error
//! (HTTP 400) and never reaches the model.

use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use lavin_data::image::{decode_rgb, normalize, resize_to, ImageOptions, IMAGE_SIZE};

use crate::generator::ImageInput;

/// Largest accepted image, in pixels (decompression bombs); lower than `lavin_data`'s default
/// because uploads come from the network.
pub const MAX_PIXELS: u64 = 64 * 1024 * 1024;

/// An image that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The file could not be read.
    #[error("cannot read image {name}: {source}")]
    Io {
        /// The file.
        name: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Not a decodable image, or too large (the message names the file or "upload").
    #[error(transparent)]
    Decode(#[from] lavin_data::ImageError),
    /// Bad base64 or data URL.
    #[error("image {name}: {reason}")]
    Encoding {
        /// Where it came from.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

/// Decodes and preprocesses image bytes; `name` labels errors.
pub fn image_from_bytes(name: &str, bytes: &[u8]) -> Result<ImageInput, ImageError> {
    let opts = ImageOptions {
        max_pixels: MAX_PIXELS,
    };
    let rgb = decode_rgb(bytes, Path::new(name), opts)?;
    let pixels = normalize(&resize_to(&rgb, IMAGE_SIZE, IMAGE_SIZE));
    Ok(ImageInput {
        name: name.to_string(),
        pixels: Arc::new(pixels),
    })
}

/// Reads and preprocesses an image file.
pub fn load_image_file(path: &Path) -> Result<ImageInput, ImageError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| ImageError::Io {
        name: name.clone(),
        source,
    })?;
    image_from_bytes(&name, &bytes)
}

/// Decodes an image given as a data URL (`data:image/png;base64,...`) or as raw base64.
pub fn image_from_data_url(name: &str, url: &str) -> Result<ImageInput, ImageError> {
    let enc_err = |reason: &str| ImageError::Encoding {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    let payload = if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest
            .split_once(',')
            .ok_or_else(|| enc_err("data URL without a ',' before its data"))?;
        if !meta.ends_with(";base64") {
            return Err(enc_err("only base64 data URLs are supported"));
        }
        data
    } else if url.starts_with("http://") || url.starts_with("https://") {
        return Err(enc_err(
            "remote image URLs are not fetched; send the image as a base64 data URL",
        ));
    } else {
        url
    };
    let cleaned: String = payload.chars().filter(|c| !c.is_whitespace()).collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(cleaned.as_bytes())
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(cleaned.as_bytes()))
        .map_err(|e| enc_err(&format!("invalid base64: {e}")))?;
    image_from_bytes(name, &bytes)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small PNG for tests.
    pub(crate) fn png_bytes(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbaImage::from_fn(w, h, |x, y| {
            image::Rgba([(x * 40) as u8, (y * 40) as u8, 128, 255])
        });
        let mut out = Vec::new();
        image::DynamicImage::ImageRgba8(img)
            .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn decodes_png_and_normalises() {
        // Through lavin_data's pipeline: 3 x 224 x 224, ImageNet statistics.
        let img = image_from_bytes("t.png", &png_bytes(5, 3)).unwrap();
        assert_eq!(img.pixels.len(), 3 * 224 * 224);
        // Blue channel is constant 128 -> (128/255 - 0.406) / 0.225.
        let b = img.pixels[2 * 224 * 224 + 1000];
        assert!((b - (128.0 / 255.0 - 0.406) / 0.225).abs() < 1e-4, "{b}");
    }

    #[test]
    fn data_url_and_raw_base64() {
        let b64 = base64::engine::general_purpose::STANDARD.encode(png_bytes(4, 4));
        assert!(image_from_data_url("u", &format!("data:image/png;base64,{b64}")).is_ok());
        assert!(image_from_data_url("u", &b64).is_ok());
        let e = image_from_data_url("u", "data:image/png;base64,!!!").unwrap_err();
        assert!(e.to_string().contains("invalid base64"), "{e}");
        let e = image_from_data_url("u", "https://x/y.png").unwrap_err();
        assert!(e.to_string().contains("remote image URLs"), "{e}");
        let not_image = base64::engine::general_purpose::STANDARD.encode(b"hello world");
        let e = image_from_data_url("upload", &not_image).unwrap_err();
        assert!(matches!(e, ImageError::Decode { .. }), "{e}");
    }

    #[test]
    fn missing_file_is_named() {
        let e = load_image_file(Path::new("/nonexistent/x.png")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/x.png"));
    }
}
