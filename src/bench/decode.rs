//! `bench decode DIR`: how fast the photo-folder loader feeds training, per worker count, so that
//! a user can size `--workers` against the GPU's images/s.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;

use crate::data::augment::Augment;
use crate::data::folder::ImageFolder;
use crate::data::image::{IMAGENET_MEAN, IMAGENET_STD};
use crate::data::loader::{BatchSpec, Loader};
use crate::rng::Rng;

#[derive(clap::Args, Debug)]
pub struct DecodeArgs {
    /// A folder of labelled photos, DIR/<class>/<image> (DIR/train is used where it exists)
    pub dir: PathBuf,
    /// Worker counts to time, comma-separated [default: 1, 2, 4, ... up to the cores]
    #[arg(long, value_delimiter = ',', value_parser = crate::args::count)]
    pub workers: Vec<usize>,
    /// Images per batch
    #[arg(long, default_value_t = 32, value_parser = crate::args::count)]
    pub batch: usize,
    /// Side of the training images
    #[arg(long, default_value_t = 224, value_parser = crate::args::side)]
    pub size: u32,
    /// Batches timed per worker count
    #[arg(long, default_value_t = 8, value_parser = crate::args::count)]
    pub batches: usize,
    #[arg(long, value_enum, default_value = "standard")]
    pub augment: Augment,
}

/// Images/s of the loader for each worker count: `batches` batches of `spec.batch` images of a
/// seeded shuffle of `folder`, timed from the start to the last batch received.
pub fn decode_rates(
    folder: Arc<ImageFolder>,
    spec: &BatchSpec,
    workers: &[usize],
    batches: usize,
) -> Result<Vec<(usize, f64)>> {
    let len = folder.images.len();
    let mut rates = Vec::new();
    for &count in workers {
        let seed = spec.seed;
        let order = move |epoch: usize| {
            let mut order: Vec<usize> = (0..len).collect();
            Rng::new(seed ^ epoch as u64).shuffle(&mut order);
            order
        };
        let start = Instant::now();
        let loader = Loader::spawn(folder.clone(), spec.clone(), order, (0, batches), count, 2)?;
        for _ in 0..batches {
            loader.next()?;
        }
        rates.push((count, (batches * spec.batch) as f64 / start.elapsed().as_secs_f64()));
    }
    Ok(rates)
}

/// `bench decode`: scans the folder, times the loader and prints one line a worker count.
pub fn run(args: &DecodeArgs) -> Result<()> {
    let (folder, _) = ImageFolder::scan_dataset(&args.dir)?;
    eprintln!("{}: {} classes, {} images", args.dir.display(), folder.classes.len(), folder.images.len());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = if args.workers.is_empty() {
        std::iter::successors(Some(1), |&w| Some(w * 2)).take_while(|&w| w <= cores).collect()
    } else {
        args.workers.clone()
    };
    let spec = BatchSpec {
        batch: args.batch,
        size: args.size,
        augment: args.augment,
        mean: IMAGENET_MEAN,
        std: IMAGENET_STD,
        seed: 0,
        strict: false,
    };
    for (count, rate) in decode_rates(Arc::new(folder), &spec, &workers, args.batches)? {
        println!(
            "{count} workers: {rate:.1} images/s (decode and {} augmentation to {}x{})",
            format!("{:?}", args.augment).to_lowercase(),
            args.size,
            args.size
        );
    }
    Ok(())
}
