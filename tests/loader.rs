//! The photo-folder loader: batches in step order with the right labels, the same batches for a
//! seed however the workers interleave and wherever a run starts, unreadable files skipped with
//! their name (or refused with --strict).

mod common;

use std::sync::Arc;

use common::{photo_folder, temp_dir};
use resnet_wgpu::data::augment::Augment;
use resnet_wgpu::data::folder::ImageFolder;
use resnet_wgpu::data::loader::{Batch, BatchSpec, Loader, make_batch};

fn spec(strict: bool) -> BatchSpec {
    BatchSpec { batch: 4, size: 16, augment: Augment::Standard, mean: [0.5; 3], std: [0.25; 3], seed: 3, strict }
}

fn batches(loader: &Loader, n: usize) -> Vec<Batch> {
    (0..n).map(|_| loader.next().unwrap()).collect()
}

#[test]
fn batches_come_in_step_order_with_their_labels_and_repeat_for_a_seed() {
    let root = temp_dir("loader-order");
    let folder = Arc::new(photo_folder(&root));
    let order = |epoch: usize| (0..12).map(|i| (i * 5 + epoch) % 12).collect::<Vec<_>>();
    let all = batches(&Loader::spawn(folder.clone(), spec(false), order, (0, 6), 3, 2).unwrap(), 6);
    for (step, batch) in all.iter().enumerate() {
        assert_eq!(batch.step, step);
        assert_eq!(batch.images.len(), 4 * 3 * 16 * 16);
        let epoch_order = order(step / 3);
        let want: Vec<u32> = epoch_order[(step % 3) * 4..][..4].iter().map(|&i| folder.images[i].1).collect();
        assert_eq!(batch.labels, want, "step {step}");
        // Each image's red channel tells its class: (200/255 - 0.5) / 0.25 for class 0.
        for (k, &label) in batch.labels.iter().enumerate() {
            let red = batch.images[k * 3 * 256];
            assert_eq!(red > 0.0, label == 0, "step {step} image {k}: red {red}, label {label}");
        }
    }
    // One worker or four, from step 0 or resumed at step 4: the same bits.
    let again = batches(&Loader::spawn(folder.clone(), spec(false), order, (0, 6), 1, 1).unwrap(), 6);
    let resumed = batches(&Loader::spawn(folder, spec(false), order, (4, 6), 4, 3).unwrap(), 2);
    for (a, b) in all.iter().zip(&again).chain(all[4..].iter().zip(&resumed)) {
        assert!(a.images == b.images && a.labels == b.labels, "step {} differs", a.step);
    }
}

#[test]
fn unreadable_files_are_skipped_by_name_or_refused_with_strict() {
    let root = temp_dir("loader-bad");
    let mut folder = photo_folder(&root);
    let bad = root.join("class1/broken.png");
    std::fs::write(&bad, b"not a png at all").unwrap();
    folder = ImageFolder { images: vec![(bad.clone(), 1), folder.images[0].clone()], ..folder };

    let batch = make_batch(&folder, &BatchSpec { batch: 2, ..spec(false) }, 0, &[0, 1]).unwrap();
    assert_eq!(batch.skipped.len(), 1);
    assert!(batch.skipped[0].1.contains("broken.png"), "{:?}", batch.skipped);
    assert_eq!(batch.labels, [0, 0], "the readable image stands in for the broken one");

    let message =
        format!("{:#}", make_batch(&folder, &BatchSpec { batch: 2, ..spec(true) }, 0, &[0, 1]).err().unwrap());
    assert!(message.contains("broken.png"), "{message}");
    let message = format!("{:#}", make_batch(&folder, &spec(false), 0, &[0, 0]).err().unwrap());
    assert!(message.contains("no image of step 0's batch could be read"), "{message}");

    let message = format!(
        "{:#}",
        Loader::spawn(Arc::new(folder), BatchSpec { batch: 3, ..spec(false) }, |_| vec![0, 1], (0, 1), 1, 1)
            .err()
            .unwrap()
    );
    assert!(message.contains("a batch of 3 is more than the 2 images"), "{message}");
}

#[test]
fn grey_sixteen_bit_alpha_and_single_pixel_images_all_become_rgb_batches() {
    let root = temp_dir("loader-kinds");
    let dir = root.join("a");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(root.join("b")).unwrap();
    image::GrayImage::from_pixel(9, 7, image::Luma([128])).save(dir.join("grey.png")).unwrap();
    image::ImageBuffer::<image::Rgb<u16>, _>::from_pixel(6, 6, image::Rgb([65535u16, 0, 32768]))
        .save(dir.join("sixteen.png"))
        .unwrap();
    image::RgbaImage::from_pixel(5, 8, image::Rgba([10, 20, 30, 0])).save(dir.join("alpha.png")).unwrap();
    image::RgbImage::from_pixel(1, 1, image::Rgb([255, 255, 255])).save(root.join("b/one.png")).unwrap();
    let folder = ImageFolder::scan(&root).unwrap();
    for augment in [Augment::Standard, Augment::Paper, Augment::None] {
        let spec = BatchSpec { augment, mean: [0.0; 3], std: [1.0; 3], ..spec(true) };
        let batch = make_batch(&folder, &spec, 0, &[0, 1, 2, 3]).unwrap();
        let plane = 16 * 16;
        // Sorted: alpha, grey, sixteen (class a), one (class b); the value of each image's first pixel.
        let first = |k: usize| [0, 1, 2].map(|c| batch.images[k * 3 * plane + c * plane]);
        assert_eq!(first(1), [128.0 / 255.0; 3], "{augment:?}: grey replicated");
        assert_eq!(first(2), [1.0, 0.0, 128.0 / 255.0], "{augment:?}: 16 bits to 8");
        assert_eq!(first(0), [10.0 / 255.0, 20.0 / 255.0, 30.0 / 255.0], "{augment:?}: alpha dropped");
        assert_eq!(first(3), [1.0; 3], "{augment:?}: one pixel stretched");
        assert_eq!(batch.labels, [0, 0, 0, 1]);
    }
}
