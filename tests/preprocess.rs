//! Photo loading and torchvision's ImageNet eval transform, against torchvision itself.
//!
//! Fixtures: tests/fixtures/make_preprocess_golden.py (synthetic images, their torchvision
//! `Resize` + `CenterCrop` output as lossless PNG, and the normalised tensors as f32).
//!
//! Bounds: the uint8 stage (resize + crop, what torchvision hands to `ToTensor`) must equal
//! torchvision's exactly, i.e. a max abs difference of 0 (in [0,1] units: 0/255); the normalised
//! f32 tensor must agree within 1e-6 (f32 rounding of `(v / 255 - mean) / std`).

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{ImageFormat, RgbImage, RgbaImage};
use resnet_wgpu::data::image::{
    IMAGENET_MEAN, IMAGENET_STD, Partial, labels, load, preprocess, resize_and_center_crop,
};
use safetensors::SafeTensors;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn load_fixture(name: &str) -> RgbImage {
    load(&fixture(name), Partial::Refuse).unwrap_or_else(|e| panic!("{e:#}"))
}

/// A scratch file under the target directory with the given bytes.
fn scratch(name: &str, bytes: &[u8]) -> PathBuf {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn normalized(name: &str) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(fixture("preprocess_normalized.safetensors")).unwrap();
    let tensors = SafeTensors::deserialize(&bytes).unwrap();
    let view = tensors.tensor(name).unwrap();
    assert_eq!(view.dtype(), safetensors::Dtype::F32);
    let values = view.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    (view.shape().to_vec(), values)
}

/// Asserts two uint8 images are identical, reporting how many pixels differ and by how much.
fn assert_same_pixels(what: &str, ours: &RgbImage, torch: &RgbImage) {
    assert_eq!(ours.dimensions(), torch.dimensions(), "{what}: size");
    let diffs: Vec<u8> =
        ours.as_raw().iter().zip(torch.as_raw()).map(|(&a, &b)| a.abs_diff(b)).filter(|&d| d > 0).collect();
    assert!(
        diffs.is_empty(),
        "{what}: {} of {} values differ from torchvision's, by up to {}/255",
        diffs.len(),
        ours.as_raw().len(),
        diffs.iter().max().unwrap()
    );
}

#[test]
fn resize_and_center_crop_matches_torchvision_downscale() {
    // 335x250 -> Resize(256) -> 343x256 -> CenterCrop(224) at left 60 (round(59.5), half to even).
    let photo = load_fixture("preprocess_photo.png");
    assert_eq!(photo.dimensions(), (335, 250));
    let ours = resize_and_center_crop(&photo, 256, 224);
    assert_same_pixels("photo", &ours, &load_fixture("preprocess_photo_expected.png"));
}

#[test]
fn resize_and_center_crop_matches_torchvision_upscale() {
    // 45x37 -> Resize(64) -> 77x64 -> CenterCrop(56) at left 10 (round(10.5), half to even).
    let small = load_fixture("preprocess_small.png");
    assert_eq!(small.dimensions(), (45, 37));
    let ours = resize_and_center_crop(&small, 64, 56);
    assert_same_pixels("small", &ours, &load_fixture("preprocess_small_expected.png"));
}

#[test]
fn short_side_equal_to_resize_is_not_resampled() {
    // 256x300: torchvision returns the image itself from Resize(256); the crop is a plain copy at
    // left round(32 / 2) = 16, top round(76 / 2) = 38.
    let img = load_fixture("preprocess_short256.png");
    assert_eq!(img.dimensions(), (256, 300));
    let ours = resize_and_center_crop(&img, 256, 224);
    assert_same_pixels("short256", &ours, &load_fixture("preprocess_short256_expected.png"));
    let copy = image::imageops::crop_imm(&img, 16, 38, 224, 224).to_image();
    assert_same_pixels("short256 copy", &ours, &copy);

    // The float path too: exactly v / 255, no resampling in between.
    let flat = preprocess(&img, 256, 224, [0.0; 3], [1.0; 3]);
    for (c, plane) in flat.chunks_exact(224 * 224).enumerate() {
        for (i, &v) in plane.iter().enumerate() {
            let px = copy.get_pixel(i as u32 % 224, i as u32 / 224);
            assert_eq!(v, px[c] as f32 / 255.0);
        }
    }
}

#[test]
fn preprocess_matches_torchvision_normalized() {
    const BOUND: f32 = 1e-6;
    // The whole transform of the small image, [3, 56, 56].
    let (shape, torch) = normalized("small");
    assert_eq!(shape, [3, 56, 56]);
    let ours = preprocess(&load_fixture("preprocess_small.png"), 64, 56, IMAGENET_MEAN, IMAGENET_STD);
    assert_eq!(ours.len(), torch.len());
    let worst = ours.iter().zip(&torch).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(worst <= BOUND, "small: max |ours - torch| = {worst:e}");

    // The photo's [3, 224, 224] tensor against torchvision's at rows and columns 0, 7, 14, ...
    let (shape, torch) = normalized("photo_s7");
    assert_eq!(shape, [3, 32, 32]);
    let ours = preprocess(&load_fixture("preprocess_photo.png"), 256, 224, IMAGENET_MEAN, IMAGENET_STD);
    assert_eq!(ours.len(), 3 * 224 * 224);
    let mut worst = 0.0f32;
    for c in 0..3 {
        for i in 0..32 {
            for j in 0..32 {
                let a = ours[(c * 224 + 7 * i) * 224 + 7 * j];
                let b = torch[(c * 32 + i) * 32 + j];
                worst = worst.max((a - b).abs());
            }
        }
    }
    assert!(worst <= BOUND, "photo: max |ours - torch| = {worst:e}");
}

#[test]
fn crop_larger_than_image_is_zero_padded() {
    // torchvision pads with black: 10 wide, crop 13 -> 1 column before, 2 after.
    let img = RgbImage::from_pixel(10, 10, image::Rgb([200, 100, 50]));
    let out = resize_and_center_crop(&img, 10, 13);
    assert_eq!(out.dimensions(), (13, 13));
    assert_eq!(out.get_pixel(0, 5).0, [0, 0, 0]);
    assert_eq!(out.get_pixel(1, 1).0, [200, 100, 50]);
    assert_eq!(out.get_pixel(10, 10).0, [200, 100, 50]);
    assert_eq!(out.get_pixel(11, 5).0, [0, 0, 0]);
}

#[test]
fn extreme_aspect_ratio_costs_only_the_crop() {
    // 1x16384 resizes to 256x4194304 (3 GB as a full image); only the 224x224 crop is computed.
    let img = RgbImage::from_pixel(1, 16384, image::Rgb([17, 128, 240]));
    let out = resize_and_center_crop(&img, 256, 224);
    assert_eq!(out.dimensions(), (224, 224));
    assert!(out.pixels().all(|p| p.0 == [17, 128, 240]));
}

/// The error for `path`, which must be one line naming the file and containing `expect`.
fn load_error(path: &Path, expect: &str) -> String {
    let msg = format!("{:#}", load(path, Partial::Refuse).expect_err("load should fail"));
    let file = path.file_name().unwrap().to_str().unwrap();
    assert!(!msg.contains('\n'), "not one line: {msg:?}");
    assert!(msg.contains(file), "does not name {file}: {msg:?}");
    assert!(msg.contains(expect), "expected {expect:?} in {msg:?}");
    msg
}

#[test]
fn load_rejects_missing_empty_and_non_images() {
    load_error(&Path::new(env!("CARGO_TARGET_TMPDIR")).join("no_such_photo.jpg"), "no such file");
    load_error(&scratch("empty_photo.jpg", b""), "empty file");
    load_error(&scratch("notes.jpg", b"shopping list: milk, eggs, bread\n"), "not an image");
}

#[test]
fn load_rejects_truncated_png() {
    let bytes = std::fs::read(fixture("preprocess_photo.png")).unwrap();
    let path = scratch("truncated.png", &bytes[..bytes.len() / 2]);
    load_error(&path, "corrupt or truncated");
}

/// CRC-32 (IEEE, reflected), as PNG chunks carry it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// A PNG whose valid IHDR claims `width`x`height` pixels, then a token IDAT (an empty zlib
/// stream, far too short for the claimed pixels) and IEND.
fn png_header_only(width: u32, height: u32, bit_depth: u8, color_type: u8) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8; 4], data: &[u8]| {
        png.extend((data.len() as u32).to_be_bytes());
        let start = png.len();
        png.extend(kind);
        png.extend(data);
        let crc = crc32(&png[start..]);
        png.extend(crc.to_be_bytes());
    };
    let mut ihdr = Vec::new();
    ihdr.extend(width.to_be_bytes());
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([bit_depth, color_type, 0, 0, 0]);
    chunk(b"IHDR", &ihdr);
    chunk(b"IDAT", &[0x78, 0x9C, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
    chunk(b"IEND", &[]);
    png
}

#[test]
fn load_refuses_huge_images_from_the_header() {
    // 100000x100000 RGB would be 30 GB: refused on its dimensions before any pixel is allocated.
    let path = scratch("bomb.png", &png_header_only(100_000, 100_000, 8, 2));
    let msg = load_error(&path, "too large");
    assert!(msg.contains("16384"), "{msg}");
    // 16000x16000 is within the side limit, but as 16-bit RGBA it decodes to 2 GiB > 1 GiB.
    let path = scratch("bomb16.png", &png_header_only(16_000, 16_000, 16, 6));
    let msg = load_error(&path, "too large");
    assert!(msg.contains("16000x16000"), "{msg}");
}

#[test]
fn load_drops_alpha() {
    let rgba = RgbaImage::from_fn(5, 3, |x, y| image::Rgba([x as u8 * 40, y as u8 * 90, 7, 128]));
    let mut png = Vec::new();
    rgba.write_to(&mut Cursor::new(&mut png), ImageFormat::Png).unwrap();
    let rgb = load(&scratch("alpha.png", &png), Partial::Refuse).unwrap();
    assert_eq!(rgb.dimensions(), (5, 3));
    assert_eq!(rgb.get_pixel(4, 2).0, [160, 180, 7]);
}

/// An APP1 segment holding a little-endian EXIF block with one tag: Orientation = `orientation`.
fn exif_app1(orientation: u16) -> Vec<u8> {
    let mut tiff = Vec::new();
    tiff.extend(b"II*\0"); // little-endian TIFF header
    tiff.extend(8u32.to_le_bytes()); // offset of IFD0
    tiff.extend(1u16.to_le_bytes()); // one entry
    tiff.extend(0x0112u16.to_le_bytes()); // tag: Orientation
    tiff.extend(3u16.to_le_bytes()); // type: SHORT
    tiff.extend(1u32.to_le_bytes()); // count
    tiff.extend(orientation.to_le_bytes());
    tiff.extend([0, 0]); // value padded to 4 bytes
    tiff.extend(0u32.to_le_bytes()); // no next IFD
    let mut payload = b"Exif\0\0".to_vec();
    payload.extend(tiff);
    let mut app1 = vec![0xFF, 0xE1];
    app1.extend((payload.len() as u16 + 2).to_be_bytes());
    app1.extend(payload);
    app1
}

#[test]
fn load_applies_exif_orientation() {
    // 40x24, left half red, right half blue. Orientation 6 means "rotate 90 degrees clockwise to
    // display": the result is 24x40 with the red half on top.
    let img =
        RgbImage::from_fn(40, 24, |x, _| if x < 20 { image::Rgb([230, 20, 20]) } else { image::Rgb([20, 20, 230]) });
    let mut jpeg = Vec::new();
    img.write_to(&mut Cursor::new(&mut jpeg), ImageFormat::Jpeg).unwrap();
    assert_eq!(jpeg[..2], [0xFF, 0xD8]);

    let plain = load(&scratch("upright.jpg", &jpeg), Partial::Refuse).unwrap();
    assert_eq!(plain.dimensions(), (40, 24));

    // Splice the APP1 segment in right after SOI.
    let mut rotated = jpeg[..2].to_vec();
    rotated.extend(exif_app1(6));
    rotated.extend(&jpeg[2..]);
    let out = load(&scratch("rotated.jpg", &rotated), Partial::Refuse).unwrap();
    assert_eq!(out.dimensions(), (24, 40), "width and height not swapped");
    let (top, bottom) = (out.get_pixel(12, 5), out.get_pixel(12, 34));
    assert!(top[0] > 180 && top[2] < 80, "top should be red: {top:?}");
    assert!(bottom[2] > 180 && bottom[0] < 80, "bottom should be blue: {bottom:?}");
}

/// A JPEG cut to a third is refused as truncated (as Pillow refuses it) unless partial images are
/// accepted; a whole one with bytes after its end is read.
#[test]
fn truncated_jpegs_are_refused_unless_partial_images_are_accepted() {
    let mut rng = resnet_wgpu::rng::Rng::new(3);
    let img = RgbImage::from_fn(96, 64, |_, _| image::Rgb([0, 0, 0].map(|_: u8| rng.below(256) as u8)));
    let mut jpeg = Vec::new();
    img.write_to(&mut Cursor::new(&mut jpeg), ImageFormat::Jpeg).unwrap();

    let cut = scratch("cut.jpg", &jpeg[..jpeg.len() / 3]);
    let message = format!("{:#}", load(&cut, Partial::Refuse).unwrap_err());
    assert!(message.contains("cut.jpg: truncated Jpeg data"), "{message}");
    assert_eq!(load(&cut, Partial::Accept).unwrap().dimensions(), (96, 64));

    let mut trailing = jpeg.clone();
    trailing.extend_from_slice(&[0xFF, 0xDA, 0, 4, 1, 2, 3]);
    assert_eq!(load(&scratch("trailing.jpg", &trailing), Partial::Refuse).unwrap().dimensions(), (96, 64));
}

#[test]
fn labels_are_torchvisions_imagenet_classes() {
    let labels = labels();
    assert_eq!(labels.len(), 1000);
    assert_eq!(labels[0], "tench");
    assert_eq!(labels[281], "tabby");
    assert_eq!(labels[282], "tiger cat");
    assert_eq!(labels[999], "toilet tissue");
    assert!(labels.iter().all(|l| !l.is_empty() && l.trim() == *l));
}
