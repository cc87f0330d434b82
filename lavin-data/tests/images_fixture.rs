//! Image preprocessing against images/preprocess.safetensors, and PIL mode conversions.

mod common;

use std::io::Cursor;

use common::{safetensors, CASE};
use image::{DynamicImage, ImageBuffer, ImageFormat, Luma, LumaA, Rgb, Rgba};
use lavin_data::image::{decode_rgb, resize_to, ImageOptions, IMAGE_SIZE};
use lavin_data::{preprocess_bytes, preprocess_image};

#[test]
fn fixture_images_match_pil() {
    let st = safetensors("images/preprocess.safetensors");
    for k in 0..3 {
        let path = format!("{CASE}/images/image{k}.png");
        let bytes = std::fs::read(&path).unwrap();
        let rgb = decode_rgb(&bytes, path.as_ref(), ImageOptions::default()).unwrap();
        let resized = resize_to(&rgb, IMAGE_SIZE, IMAGE_SIZE);
        let want = &st[&format!("resized.image{k}")];
        assert_eq!(want.shape, vec![224, 224, 3]);
        let mism = resized
            .data
            .iter()
            .zip(&want.bytes)
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(mism, 0, "resized.image{k}: {mism} bytes differ");
        let got = preprocess_image(&path).unwrap();
        let want = st[&format!("image{k}")].f32s();
        let err = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(err <= 1e-6, "image{k}: max abs err {err}");
    }
}

fn png(img: DynamicImage) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png).unwrap();
    out.into_inner()
}

fn rgb_of(bytes: &[u8]) -> Vec<u8> {
    decode_rgb(bytes, "test.png".as_ref(), ImageOptions::default())
        .unwrap()
        .data
}

#[test]
fn pil_convert_rgb_rules() {
    // RGBA: alpha dropped, not composited.
    let rgba = ImageBuffer::from_fn(2, 1, |x, _| Rgba([10 + x as u8, 20, 30, 0]));
    assert_eq!(
        rgb_of(&png(DynamicImage::ImageRgba8(rgba))),
        [10, 20, 30, 11, 20, 30]
    );
    // L: replicated.
    let l = ImageBuffer::from_fn(2, 1, |x, _| Luma([7 + x as u8]));
    assert_eq!(
        rgb_of(&png(DynamicImage::ImageLuma8(l))),
        [7, 7, 7, 8, 8, 8]
    );
    // LA: alpha dropped.
    let la = ImageBuffer::from_fn(1, 1, |_, _| LumaA([200u8, 0]));
    assert_eq!(rgb_of(&png(DynamicImage::ImageLumaA8(la))), [200, 200, 200]);
    // 16-bit gray = PIL I;16: clipped at 255, not scaled.
    let l16 = ImageBuffer::from_fn(3, 1, |x, _| Luma([[100u16, 255, 40000][x as usize]]));
    assert_eq!(
        rgb_of(&png(DynamicImage::ImageLuma16(l16))),
        [100, 100, 100, 255, 255, 255, 255, 255, 255]
    );
    // 16-bit RGB: PIL keeps the high byte.
    let rgb16 = ImageBuffer::from_fn(1, 1, |_, _| Rgb([0x1234u16, 0xFF00, 0x00FF]));
    assert_eq!(
        rgb_of(&png(DynamicImage::ImageRgb16(rgb16))),
        [0x12, 0xFF, 0x00]
    );
    // 16-bit LA: high byte.
    let la16 = ImageBuffer::from_fn(1, 1, |_, _| LumaA([0xAB00u16, 0]));
    assert_eq!(
        rgb_of(&png(DynamicImage::ImageLumaA16(la16))),
        [0xAB, 0xAB, 0xAB]
    );
}

#[test]
fn palette_png_expands_through_palette() {
    // Hand-made 2x1 indexed PNG: palette [red, blue], pixels [1, 0].
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, 2, 1);
        enc.set_color(png::ColorType::Indexed);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_palette(vec![255, 0, 0, 0, 0, 255]);
        enc.set_trns(vec![0u8, 255]);
        let mut w = enc.write_header().unwrap();
        w.write_image_data(&[1, 0]).unwrap();
    }
    assert_eq!(rgb_of(&out), [0, 0, 255, 255, 0, 0]);
}

#[test]
fn other_formats_decode() {
    let img = DynamicImage::ImageRgb8(ImageBuffer::from_fn(30, 20, |x, y| {
        Rgb([x as u8 * 8, y as u8 * 12, 90])
    }));
    for fmt in [ImageFormat::Bmp, ImageFormat::Gif, ImageFormat::Jpeg] {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, fmt).unwrap();
        let v = preprocess_bytes(out.get_ref(), format!("x.{fmt:?}")).unwrap();
        assert_eq!(v.len(), 3 * 224 * 224, "{fmt:?}");
    }
}

#[test]
fn bad_inputs_name_the_file() {
    let e = preprocess_bytes(b"definitely not an image", "notes.txt")
        .unwrap_err()
        .to_string();
    assert!(e.contains("notes.txt"), "{e}");
    let good = std::fs::read(format!("{CASE}/images/image0.png")).unwrap();
    let e = preprocess_bytes(&good[..good.len() / 2], "cut.png")
        .unwrap_err()
        .to_string();
    assert!(e.contains("cut.png"), "{e}");
    let e = preprocess_image("/no/such/image.png")
        .unwrap_err()
        .to_string();
    assert!(e.contains("/no/such/image.png"), "{e}");
    let opts = ImageOptions { max_pixels: 1000 };
    let e = decode_rgb(&good, "big.png".as_ref(), opts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("big.png") && e.contains("300x200"), "{e}");
}
