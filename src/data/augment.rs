//! Training augmentations of photos, torchvision's conventions, drawn from a seeded [`Rng`] so that
//! a run's batches depend only on its seed and step (resume continues bit for bit):
//!
//! - [`Augment::Standard`]: `RandomResizedCrop(size, scale=(0.08, 1), ratio=(3/4, 4/3))` and
//!   `RandomHorizontalFlip()`, what torchvision's reference recipe trains ImageNet with;
//! - [`Augment::Paper`]: the ResNet paper's ImageNet recipe, the shorter side resized to a random
//!   length in [256, 480] (scaled by `size / 224`), a random `size` crop and a flip;
//! - [`Augment::None`]: the evaluation transform (shorter side to `size * 256 / 224`, center crop).

use image::RgbImage;

use crate::data::image::{resize_and_center_crop, resize_exact, resize_window};
use crate::rng::Rng;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Augment {
    Standard,
    Paper,
    None,
}

/// A window of an image: `(x, y, width, height)`.
pub type Window = (u32, u32, u32, u32);

/// The shorter side the evaluation transform resizes to for a `size` crop: 256 for 224, as
/// torchvision's ImageNet evaluation.
pub fn eval_resize(size: u32) -> u32 {
    (size as f64 * 256.0 / 224.0).round() as u32
}

impl Augment {
    /// `img` augmented to `size` x `size`; `rng` is `None` for evaluation, which is
    /// [`Augment::None`] whatever `self` is.
    pub fn apply(self, img: &RgbImage, size: u32, rng: Option<&mut Rng>) -> RgbImage {
        let Some(rng) = rng else {
            return resize_and_center_crop(img, eval_resize(size), size);
        };
        let out = match self {
            Augment::None => return resize_and_center_crop(img, eval_resize(size), size),
            Augment::Standard => {
                let (x, y, w, h) = random_resized_crop(img.width(), img.height(), rng);
                resize_exact(&image::imageops::crop_imm(img, x, y, w, h).to_image(), size, size)
            }
            Augment::Paper => {
                let scale = size as f64 / 224.0;
                let short = ((256.0 + rng.below(225) as f64) * scale).round() as u32;
                let (width, height) = shorter_side(img.width(), img.height(), short.max(size));
                let (x, y) = (rng.below((width - size + 1) as usize), rng.below((height - size + 1) as usize));
                resize_window(img, (width, height), (x as u32, y as u32), (size, size))
            }
        };
        if rng.uniform() < 0.5 { image::imageops::flip_horizontal(&out) } else { out }
    }
}

/// The size of a `width` x `height` image with its shorter side resized to `short`, the other in
/// proportion (truncated, as torchvision).
fn shorter_side(width: u32, height: u32, short: u32) -> (u32, u32) {
    let long = |l: u32, s: u32| ((short as f64 * l as f64 / s as f64) as u32).max(short);
    if width <= height { (short, long(height, width)) } else { (long(width, height), short) }
}

/// torchvision's `RandomResizedCrop.get_params` with scale (0.08, 1) and ratio (3/4, 4/3): up to
/// ten draws of an area and a log-uniform aspect ratio whose window fits, else the center window
/// of the whole image with its ratio clamped to the range.
pub fn random_resized_crop(width: u32, height: u32, rng: &mut Rng) -> Window {
    let area = width as f64 * height as f64;
    let (log_lo, log_hi) = ((3.0f64 / 4.0).ln(), (4.0f64 / 3.0).ln());
    for _ in 0..10 {
        let target = area * (0.08 + rng.uniform() * (1.0 - 0.08));
        let ratio = (log_lo + rng.uniform() * (log_hi - log_lo)).exp();
        let w = (target * ratio).sqrt().round() as u32;
        let h = (target / ratio).sqrt().round() as u32;
        if 0 < w && w <= width && 0 < h && h <= height {
            let y = rng.below((height - h + 1) as usize) as u32;
            let x = rng.below((width - w + 1) as usize) as u32;
            return (x, y, w, h);
        }
    }
    let in_ratio = width as f64 / height as f64;
    let (w, h) = if in_ratio < 3.0 / 4.0 {
        (width, ((width as f64 / (3.0 / 4.0)).round() as u32).min(height))
    } else if in_ratio > 4.0 / 3.0 {
        (((height as f64 * (4.0 / 3.0)).round() as u32).min(width), height)
    } else {
        (width, height)
    };
    ((width - w) / 2, (height - h) / 2, w.max(1), h.max(1))
}
