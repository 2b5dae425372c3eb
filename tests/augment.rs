//! Training augmentations: windows always inside the image whatever its shape, outputs of the
//! asked size, the same seed giving the same pixels, flips both ways, evaluation as `infer`'s.

use image::{Rgb, RgbImage};
use resnet_wgpu::data::augment::{Augment, eval_resize, random_resized_crop};
use resnet_wgpu::data::image::resize_and_center_crop;
use resnet_wgpu::rng::Rng;

#[test]
fn random_resized_crops_lie_inside_the_image_and_keep_the_area_and_ratio_bounds() {
    let mut rng = Rng::new(1);
    for &(width, height) in &[(1, 1), (1, 1000), (1000, 1), (7, 5), (640, 480), (4000, 3000)] {
        for _ in 0..500 {
            let (x, y, w, h) = random_resized_crop(width, height, &mut rng);
            assert!(w > 0 && h > 0 && x + w <= width && y + h <= height, "{width}x{height}: {x},{y} {w}x{h}");
            if width >= 100 && height >= 100 && (3 * width <= 4 * height) && (3 * height <= 4 * width) {
                // A drawn window, or the fallback of the whole image: both keep the bounds.
                let area = (w * h) as f64 / (width * height) as f64;
                assert!((0.07..=1.0).contains(&area), "{width}x{height}: area {area}");
                let ratio = w as f64 / h as f64;
                assert!((0.7..=1.4).contains(&ratio), "{width}x{height}: ratio {ratio}");
            }
        }
    }
}

#[test]
fn every_augmentation_gives_the_size_asked_and_the_same_pixels_for_a_seed() {
    let images = [
        RgbImage::new(1, 1),
        RgbImage::from_fn(3, 500, |x, y| Rgb([x as u8, y as u8, 9])),
        RgbImage::from_fn(64, 48, |x, y| Rgb([x as u8, y as u8, 0])),
    ];
    for augment in [Augment::Standard, Augment::Paper, Augment::None] {
        for img in &images {
            for size in [1, 32, 224] {
                let a = augment.apply(img, size, Some(&mut Rng::new(5)));
                assert_eq!(a.dimensions(), (size, size), "{augment:?} on {:?}", img.dimensions());
                assert!(
                    a == augment.apply(img, size, Some(&mut Rng::new(5))),
                    "{augment:?}: the same seed, other pixels"
                );
            }
        }
    }
}

#[test]
fn flips_happen_both_ways_and_evaluation_is_infers_transform() {
    // Red left half, blue right half: only a flip puts blue left of red.
    let img = RgbImage::from_fn(200, 200, |x, _| if x < 100 { Rgb([255, 0, 0]) } else { Rgb([0, 0, 255]) });
    let (mut kept, mut flipped) = (0, 0);
    for seed in 0..60 {
        let out = Augment::Standard.apply(&img, 32, Some(&mut Rng::new(seed)));
        let (left, right) = (out.get_pixel(0, 16), out.get_pixel(31, 16));
        if left[0] > 200 && right[2] > 200 {
            kept += 1;
        }
        if left[2] > 200 && right[0] > 200 {
            flipped += 1;
        }
    }
    assert!(kept > 0 && flipped > 0, "kept {kept}, flipped {flipped} of 60");

    assert_eq!(eval_resize(224), 256);
    let photo = RgbImage::from_fn(300, 200, |x, y| Rgb([(x % 256) as u8, (y % 256) as u8, 7]));
    for augment in [Augment::Standard, Augment::Paper, Augment::None] {
        assert!(augment.apply(&photo, 224, None) == resize_and_center_crop(&photo, 256, 224), "{augment:?}");
    }
}

#[test]
fn the_papers_crop_is_a_window_of_the_whole_resize_and_a_strip_costs_no_more_than_it() {
    use resnet_wgpu::data::image::resize_exact;
    let img = RgbImage::from_fn(90, 70, |x, y| Rgb([(3 * x) as u8, (5 * y) as u8, (x * y) as u8]));
    let window = resnet_wgpu::data::image::resize_window(&img, (331, 257), (40, 21), (64, 64));
    let whole = resize_exact(&img, 331, 257);
    assert!(window == image::imageops::crop_imm(&whole, 40, 21, 64, 64).to_image());
    // A 20000x1 strip: its shorter side goes to 256..480, the longer to millions of pixels, of
    // which only the crop is computed.
    let strip = RgbImage::from_pixel(20000, 1, Rgb([1, 2, 3]));
    let out = Augment::Paper.apply(&strip, 224, Some(&mut Rng::new(2)));
    assert_eq!(out.dimensions(), (224, 224));
}
