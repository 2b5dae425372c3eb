//! Photos for `infer`: decoding with EXIF orientation, and torchvision's ImageNet eval transform.
//!
//! torchvision's eval transform on a PIL image is
//!
//! ```text
//! Resize(256) -> CenterCrop(224) -> ToTensor() -> Normalize(IMAGENET_MEAN, IMAGENET_STD)
//! ```
//!
//! `Resize` on a PIL image is Pillow's `Image.resize(size, BILINEAR)`: an antialiased "triangle"
//! filter whose support widens with the downscale factor, computed separably (horizontal pass, then
//! vertical) in 22-bit fixed point with a round to uint8 after each pass. [`resize_and_center_crop`]
//! reproduces that arithmetic (Pillow's `src/libImaging/Resample.c`) so that its uint8 output is the
//! image torchvision hands to `ToTensor`; `tests/preprocess.rs` checks it pixel for pixel against
//! torchvision's output.
//!
//! One deliberate difference: [`load`] applies the EXIF orientation (a phone photo shot in portrait
//! comes out upright), which `PIL.Image.open` alone does not.

use std::io::{Cursor, ErrorKind};
use std::path::Path;

use anyhow::{anyhow, bail};
use image::error::LimitErrorKind;
use image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits, RgbImage};

/// ImageNet channel means (R, G, B) of pixel values in [0, 1], as torchvision normalises them.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations (R, G, B), as torchvision normalises them.
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Largest width or height [`load`] accepts; bigger images are refused from their header.
pub const MAX_SIDE: u32 = 16384;
/// Largest decoded image [`load`] accepts, in bytes (before conversion to RGB8); also the largest
/// file it reads.
pub const MAX_DECODED_BYTES: u64 = 1 << 30;

/// What [`load`] does with an image whose data ends before its last pixel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Partial {
    /// Unreadable, as Pillow says (`image file is truncated`).
    Refuse,
    /// Decoded as far as the data goes; the decoder fills the rest with grey.
    Accept,
}

/// The 1000 ImageNet-1k class names in class-index order, as torchvision names them
/// (`labels()[281] == "tabby"`). From `assets/imagenet_classes.txt`, written by
/// `assets/make_imagenet_classes.py`.
pub fn labels() -> Vec<&'static str> {
    include_str!("../../assets/imagenet_classes.txt").lines().collect()
}

/// Decodes an image file of any format the `image` crate reads (JPEG, PNG, WebP, GIF, BMP, TIFF,
/// ...; recognised by content, not by extension), turns it upright according to its EXIF
/// orientation, and converts it to 8-bit RGB (alpha is dropped, grey is replicated, as PIL's
/// `convert("RGB")` does).
///
/// Images wider or taller than [`MAX_SIDE`] or decoding to more than [`MAX_DECODED_BYTES`] are
/// refused before their pixels are allocated, and a JPEG whose data ends early unless `partial`
/// accepts it. Every error is one line that starts with the path.
pub fn load(path: &Path, partial: Partial) -> anyhow::Result<RgbImage> {
    let name = path.display();
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => bail!("{name}: no such file"),
        Err(e) => bail!("{name}: cannot open: {e}"),
    };
    if meta.is_dir() {
        bail!("{name}: is a directory, not an image");
    }
    if meta.len() == 0 {
        bail!("{name}: empty file, not an image");
    }
    if meta.len() > MAX_DECODED_BYTES {
        bail!("{name}: file too large: {} MiB, over the {} MiB limit", meta.len() >> 20, MAX_DECODED_BYTES >> 20);
    }
    let bytes = std::fs::read(path).map_err(|e| anyhow!("{name}: cannot read: {e}"))?;

    let mut reader =
        ImageReader::new(Cursor::new(&bytes)).with_guessed_format().map_err(|e| anyhow!("{name}: cannot read: {e}"))?;
    let format = match reader.format() {
        Some(format) => format,
        // TGA is the one readable format without a signature to recognise it by.
        None if ImageFormat::from_path(path).ok() == Some(ImageFormat::Tga) => {
            reader.set_format(ImageFormat::Tga);
            ImageFormat::Tga
        }
        None => bail!(
            "{name}: not an image (its contents match no known image format; \
             JPEG, PNG, WebP, GIF, BMP and TIFF are read)"
        ),
    };

    if format == ImageFormat::Jpeg && partial == Partial::Refuse && jpeg_ends_early(&bytes) {
        bail!("{name}: truncated Jpeg data: the file ends before the image does");
    }

    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODED_BYTES);
    reader.limits(limits);

    // The decoder reads the header only; `into_decoder` checks the dimensions against the limits.
    let mut decoder = reader.into_decoder().map_err(|e| decode_error(path, format, e))?;
    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 {
        bail!("{name}: image has no pixels ({width}x{height})");
    }
    let bytes = decoder.total_bytes();
    if bytes > MAX_DECODED_BYTES {
        bail!(
            "{name}: image too large: {width}x{height} decodes to {} MiB, over the {} MiB limit",
            bytes >> 20,
            MAX_DECODED_BYTES >> 20
        );
    }
    let orientation = decoder.orientation().map_err(|e| decode_error(path, format, e))?;
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| decode_error(path, format, e))?;
    img.apply_orientation(orientation);
    Ok(img.into_rgb8())
}

/// Whether JPEG `bytes` end before the image does: walking the segments from the start (each
/// header segment skipped by its length, so markers inside an EXIF thumbnail are not seen), the
/// data runs out before the end-of-image marker. Inside a scan's entropy-coded data every 0xFF is
/// followed by 0x00 (stuffing), a restart marker or the next marker.
fn jpeg_ends_early(b: &[u8]) -> bool {
    const EOI: u8 = 0xD9;
    const SOS: u8 = 0xDA;
    let (mut i, mut in_scan) = (2, false);
    while i + 1 < b.len() {
        if b[i] != 0xFF {
            if !in_scan {
                // Not a marker where one belongs: the decoder reports what is wrong.
                return false;
            }
            i += 1;
            continue;
        }
        match b[i + 1] {
            // A stuffed 0xFF in a scan, or a fill byte before a marker.
            0x00 | 0xFF => i += 1,
            // Restart markers and TEM carry no length.
            0xD0..=0xD7 | 0x01 => i += 2,
            EOI => return false,
            code => {
                let Some(len) = b.get(i + 2..i + 4).map(|l| u16::from_be_bytes([l[0], l[1]]) as usize) else {
                    return true;
                };
                i += 2 + len;
                in_scan = code == SOS;
            }
        }
    }
    true
}

/// One line naming the file and what went wrong, for an error of the `image` crate.
fn decode_error(path: &Path, format: ImageFormat, e: ImageError) -> anyhow::Error {
    let name = path.display();
    let detail = e.to_string().replace('\n', " ");
    match &e {
        ImageError::Limits(limit) => match limit.kind() {
            LimitErrorKind::DimensionError => {
                anyhow!("{name}: image too large: over {MAX_SIDE}x{MAX_SIDE} pixels, refused before decoding")
            }
            LimitErrorKind::InsufficientMemory => {
                anyhow!("{name}: image too large: decoding needs more than {} MiB", MAX_DECODED_BYTES >> 20)
            }
            _ => anyhow!("{name}: {format:?} image refused: {detail}"),
        },
        ImageError::Unsupported(_) => anyhow!("{name}: unsupported {format:?} image: {detail}"),
        ImageError::Decoding(_) | ImageError::IoError(_) => {
            anyhow!("{name}: corrupt or truncated {format:?} data: {detail}")
        }
        _ => anyhow!("{name}: cannot decode {format:?} image: {detail}"),
    }
}

/// An evaluation transform, as a checkpoint of `train folder` records it for `infer` and `eval`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvalTransform {
    /// The shorter side after resizing.
    pub resize: u32,
    /// The side of the center crop (the model's input).
    pub crop: u32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// torchvision's eval transform, `Resize(resize)`, `CenterCrop(crop)`, `ToTensor()`,
/// `Normalize(mean, std)`, on `img`: a CHW tensor `[3, crop, crop]` of
/// `(pixel / 255 - mean[c]) / std[c]`, computed in f32 in that order as torch does.
pub fn preprocess(img: &RgbImage, resize: u32, crop: u32, mean: [f32; 3], std: [f32; 3]) -> Vec<f32> {
    normalize(&resize_and_center_crop(img, resize, crop), mean, std)
}

/// `ToTensor()` then `Normalize(mean, std)`: a CHW tensor of `(pixel / 255 - mean[c]) / std[c]`,
/// in f32 in that order as torch computes it.
pub fn normalize(img: &RgbImage, mean: [f32; 3], std: [f32; 3]) -> Vec<f32> {
    let plane = img.width() as usize * img.height() as usize;
    let mut out = vec![0.0f32; 3 * plane];
    for (i, px) in img.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + i] = (px[c] as f32 / 255.0 - mean[c]) / std[c];
        }
    }
    out
}

/// The uint8 stage of [`preprocess`]: torchvision's `Resize(resize)` then `CenterCrop(crop)` on a
/// PIL image, i.e. exactly the image `ToTensor` receives.
///
/// Resize scales the shorter side to `resize` and the longer one to
/// `int(resize * long / short)` (truncated, as torchvision computes it), with Pillow's
/// antialiased bilinear filter; an image whose shorter side already is `resize` is not resampled.
/// CenterCrop takes the `crop`x`crop` window at offsets `int(round((size - crop) / 2))` (Python's
/// round, half to even), padding with black where the image is smaller than `crop`.
///
/// Only the pixels inside the crop are computed. Each resized pixel depends on its own filter taps
/// alone, so they are the same values as cropping a full resize, at a cost bounded by the crop
/// (a 1x16384 image would otherwise resize to 256x4194304).
pub fn resize_and_center_crop(img: &RgbImage, resize: u32, crop: u32) -> RgbImage {
    assert!(resize > 0 && crop > 0, "resize ({resize}) and crop ({crop}) must both be positive.");
    assert!(img.width() > 0 && img.height() > 0, "cannot preprocess an empty {}x{} image.", img.width(), img.height());
    let (width, height) = resized_size(img.width(), img.height(), resize);
    let (x, y) = (crop_span(width, crop), crop_span(height, crop));
    let window = resample_bilinear(img, (width, height), (x.src, y.src), (x.len, y.len));
    if x.len == crop && y.len == crop {
        return window;
    }
    let mut out = RgbImage::new(crop, crop); // black padding, as torchvision's `pad(fill=0)`
    image::imageops::replace(&mut out, &window, x.dst as i64, y.dst as i64);
    out
}

/// `img` resized to exactly `width` x `height` with Pillow's antialiased bilinear filter, as
/// torchvision's `Resize((height, width))` on a PIL image.
pub fn resize_exact(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    assert!(width > 0 && height > 0, "cannot resize to an empty {width}x{height} image.");
    resample_bilinear(img, (width, height), (0, 0), (width, height))
}

/// The `window` (width, height) at `at` of `img` resized to `size` as [`resize_exact`] resizes
/// it, computing only the window's pixels (a 20000x1 strip resized to a shorter side of 480 would
/// otherwise take gigabytes).
pub fn resize_window(img: &RgbImage, size: (u32, u32), at: (u32, u32), window: (u32, u32)) -> RgbImage {
    resample_bilinear(img, size, at, window)
}

/// torchvision's `_compute_resized_output_size` for an int size: (width, height) after
/// `Resize(resize)`. `long * resize` is exact in f64 and the division is correctly rounded, as
/// Python's int / int is, so the truncation agrees with Python's `int(...)`.
fn resized_size(width: u32, height: u32, resize: u32) -> (u32, u32) {
    let (short, long) = if width <= height { (width, height) } else { (height, width) };
    let new_long = (resize as f64 * long as f64 / short as f64) as u32;
    if width <= height { (resize, new_long) } else { (new_long, resize) }
}

/// One axis of torchvision's `center_crop`: `len` pixels from `src` in the resized image land at
/// `dst` in the crop.
struct CropSpan {
    src: u32,
    dst: u32,
    len: u32,
}

/// A crop no larger than the image starts at `int(round((size - crop) / 2))`; a larger one pads
/// `(crop - size) / 2` zeros before the image (and the rest after).
fn crop_span(size: u32, crop: u32) -> CropSpan {
    if crop > size {
        CropSpan { src: 0, dst: (crop - size) / 2, len: size }
    } else {
        CropSpan { src: round_half_even_half(size - crop), dst: 0, len: crop }
    }
}

/// Python's `int(round(d / 2.0))` for a non-negative integer `d`: halves go to the even neighbour
/// (`round(59.5) == 60`, `round(10.5) == 10`).
fn round_half_even_half(d: u32) -> u32 {
    let half = d / 2;
    if d % 2 == 1 && half % 2 == 1 { half + 1 } else { half }
}

/// Pillow keeps 8-bit resampling weights in fixed point scaled by 2^22 (`PRECISION_BITS`).
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Resampling taps along one axis for outputs `first .. first + count` of `out_size`, Pillow's
/// `precompute_coeffs` + `normalize_coeffs_8bpc` for the bilinear filter. Output `first + i` reads
/// inputs `start[i] .. start[i] + len[i]` with `weights(i)`.
struct Taps {
    ksize: usize,
    start: Vec<usize>,
    len: Vec<usize>,
    /// [count * ksize] weights in 2^-22 units; those of one output sum to about 2^22.
    weight: Vec<i32>,
}

impl Taps {
    fn bilinear(in_size: u32, out_size: u32, first: u32, count: u32) -> Taps {
        // The triangle filter has support 1; when shrinking it is stretched by the scale factor,
        // which is what makes the resize antialiased.
        let scale = in_size as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = filterscale;
        // Pillow multiplies by the reciprocal rather than dividing; kept for identical rounding.
        let ss = 1.0 / filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let count = count as usize;
        let mut taps = Taps {
            ksize,
            start: Vec::with_capacity(count),
            len: Vec::with_capacity(count),
            weight: vec![0; count * ksize],
        };
        let mut w = vec![0.0f64; ksize];
        for i in 0..count {
            let center = ((first as usize + i) as f64 + 0.5) * scale;
            // `as` truncates toward zero like C's (int) cast; both ends are then clamped.
            let lo = ((center - support + 0.5) as i64).max(0);
            let hi = ((center + support + 0.5) as i64).min(in_size as i64);
            let len = (hi - lo).max(0) as usize;
            let mut total = 0.0f64;
            for (x, wx) in w[..len].iter_mut().enumerate() {
                let t = (((x as i64 + lo) as f64 - center + 0.5) * ss).abs();
                *wx = if t < 1.0 { 1.0 - t } else { 0.0 };
                total += *wx;
            }
            let row = &mut taps.weight[i * ksize..][..len];
            for (k, &wx) in row.iter_mut().zip(&w[..len]) {
                let wx = if total != 0.0 { wx / total } else { wx };
                // Round half away from zero (the weights here are never negative).
                *k = (0.5 + wx * (1 << PRECISION_BITS) as f64) as i32;
            }
            taps.start.push(lo as usize);
            taps.len.push(len);
        }
        taps
    }

    fn weights(&self, i: usize) -> &[i32] {
        &self.weight[i * self.ksize..][..self.len[i]]
    }
}

/// Pillow's `clip8`: drop the 22 fraction bits (the sum started at 2^21, so this rounds) and clamp.
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// The `w`x`h` window at `(x0, y0)` of Pillow's `ImagingResample(img, (width, height), BILINEAR)`
/// for RGB8: a horizontal pass into uint8, then a vertical pass into uint8. An axis whose size
/// does not change is not resampled, so at the image's own size this is an exact copy.
///
/// The accumulators cannot overflow i32: the weights are non-negative and sum to at most
/// 2^22 + ksize / 2, so a sum stays below 2^21 + 255 * (2^22 + ksize) < 2^31.
fn resample_bilinear(
    img: &RgbImage,
    (width, height): (u32, u32),
    (x0, y0): (u32, u32),
    (w, h): (u32, u32),
) -> RgbImage {
    let (in_w, in_h) = img.dimensions();
    assert!(
        x0 + w <= width && y0 + h <= height,
        "window {w}x{h} at ({x0}, {y0}) is outside the {width}x{height} image."
    );
    let horiz = (width != in_w).then(|| Taps::bilinear(in_w, width, x0, w));
    let vert = (height != in_h).then(|| Taps::bilinear(in_h, height, y0, h));
    let half = 1i32 << (PRECISION_BITS - 1);
    let row_len = w as usize * 3;

    // Horizontal pass over the source rows the vertical pass will read.
    let (first, end) = match &vert {
        Some(v) => (v.start[0], v.start[h as usize - 1] + v.len[h as usize - 1]),
        None => (y0 as usize, (y0 + h) as usize),
    };
    let mut tmp = RgbImage::new(w, (end - first) as u32);
    let src = img.as_raw();
    let in_row_len = in_w as usize * 3;
    for (y, out_row) in tmp.chunks_exact_mut(row_len).enumerate() {
        let in_row = &src[(first + y) * in_row_len..][..in_row_len];
        let Some(horiz) = &horiz else {
            out_row.copy_from_slice(&in_row[x0 as usize * 3..][..row_len]);
            continue;
        };
        for (x, out_px) in out_row.chunks_exact_mut(3).enumerate() {
            let mut acc = [half; 3];
            let start = horiz.start[x];
            for (j, &k) in horiz.weights(x).iter().enumerate() {
                let px = &in_row[(start + j) * 3..][..3];
                for (a, &p) in acc.iter_mut().zip(px) {
                    *a += p as i32 * k;
                }
            }
            for (o, &a) in out_px.iter_mut().zip(&acc) {
                *o = clip8(a);
            }
        }
    }
    let Some(vert) = vert else {
        return tmp;
    };

    // Vertical pass: each output row is a weighted sum of whole rows of `tmp`.
    let src = tmp.as_raw();
    let mut out = RgbImage::new(w, h);
    let mut acc = vec![0i32; row_len];
    for (y, out_row) in out.chunks_exact_mut(row_len).enumerate() {
        acc.fill(half);
        let start = vert.start[y] - first;
        for (j, &k) in vert.weights(y).iter().enumerate() {
            let in_row = &src[(start + j) * row_len..][..row_len];
            for (a, &p) in acc.iter_mut().zip(in_row) {
                *a += p as i32 * k;
            }
        }
        for (o, &a) in out_row.iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
    out
}
