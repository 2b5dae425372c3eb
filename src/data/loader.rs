//! Batches of a folder of photos, decoded and augmented on worker threads ahead of the GPU.
//!
//! A producer thread walks the steps of a run in order; the images of each step are decoded and
//! augmented on a pool of `workers` threads (rayon), normalised into one CHW batch and sent
//! through a queue of at most `ahead` ready batches, so decoding overlaps the GPU's steps while
//! memory stays bounded. Every image's augmentation is drawn from a generator seeded by (seed,
//! step, position in the batch), so the batches do not depend on how the threads interleave, and
//! a resumed run gets the batches an uninterrupted one would have.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};

use anyhow::{Result, bail};
use rayon::prelude::*;

use crate::data::augment::Augment;
use crate::data::folder::ImageFolder;
use crate::data::image::{self, Partial};
use crate::rng::Rng;

/// What the batches of a run are made of.
#[derive(Clone, Debug)]
pub struct BatchSpec {
    pub batch: usize,
    /// Images are `size` x `size`.
    pub size: u32,
    pub augment: Augment,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub seed: u64,
    /// Refuse an unreadable image instead of skipping it.
    pub strict: bool,
}

/// One step's images, `[batch, 3, size, size]` normalised, and their labels.
pub struct Batch {
    pub step: usize,
    pub images: Vec<f32>,
    pub labels: Vec<u32>,
    /// Images that could not be read: their position in the batch and the error, which names
    /// the file. In training another image of the batch stands in; in evaluation it is zeros.
    pub skipped: Vec<(usize, String)>,
    /// Seconds the batch took to make (decode, augment, normalise), on however many threads.
    pub seconds: f64,
}

/// The batches of steps `start..end`, in order, produced ahead on worker threads.
pub struct Loader {
    batches: Receiver<Result<Batch>>,
}

impl Loader {
    /// Starts producing; `order(epoch)` gives the images of an epoch (indices into `folder`) in
    /// the order they are used, `batch` at a time, the last incomplete batch of an epoch dropped.
    pub fn spawn(
        folder: Arc<ImageFolder>,
        spec: BatchSpec,
        order: impl Fn(usize) -> Vec<usize> + Send + 'static,
        (start, end): (usize, usize),
        workers: usize,
        ahead: usize,
    ) -> Result<Self> {
        let per_epoch = folder.images.len() / spec.batch;
        if per_epoch == 0 {
            bail!("a batch of {} is more than the {} images of the folder", spec.batch, folder.images.len());
        }
        let pool = rayon::ThreadPoolBuilder::new().num_threads(workers.max(1)).build()?;
        let (send, batches) = sync_channel(ahead.max(1));
        std::thread::spawn(move || {
            let mut epoch_order = (usize::MAX, Vec::new());
            for step in start..end {
                let epoch = step / per_epoch;
                if epoch_order.0 != epoch {
                    epoch_order = (epoch, order(epoch));
                }
                let at = (step % per_epoch) * spec.batch;
                let indices = &epoch_order.1[at..at + spec.batch];
                let batch = pool.install(|| make_batch(&folder, &spec, step, indices));
                let failed = batch.is_err();
                // The consumer has gone (it stopped early): so does the producer.
                if send.send(batch).is_err() || failed {
                    return;
                }
            }
        });
        Ok(Self { batches })
    }

    /// The next step's batch; an error where a worker failed or the producer stopped.
    pub fn next(&self) -> Result<Batch> {
        match self.batches.recv() {
            Ok(batch) => batch,
            Err(_) => bail!("the image loader stopped before the run's last step"),
        }
    }
}

/// Decodes, augments and normalises `indices` of `folder` for `step`, in parallel on the current
/// pool. An unreadable image is replaced by the next readable one of the batch (cyclically), unless
/// `spec.strict`; a batch with no readable image is an error.
pub fn make_batch(folder: &ImageFolder, spec: &BatchSpec, step: usize, indices: &[usize]) -> Result<Batch> {
    let started = std::time::Instant::now();
    let plane = (spec.size * spec.size) as usize;
    let decoded: Vec<Result<Vec<f32>>> = indices
        .par_iter()
        .enumerate()
        .map(|(position, &i)| {
            let path: &PathBuf = &folder.images[i].0;
            let img = image::load(path, Partial::Refuse)?;
            let mut rng = augmentation_rng(spec.seed, step, position);
            let out = spec.augment.apply(&img, spec.size, Some(&mut rng));
            Ok(image::normalize(&out, spec.mean, spec.std))
        })
        .collect();
    let mut skipped = Vec::new();
    for (position, result) in decoded.iter().enumerate() {
        if let Err(e) = result {
            if spec.strict {
                bail!("{e:#}");
            }
            skipped.push((position, format!("{e:#}")));
        }
    }
    let good: Vec<usize> = (0..decoded.len()).filter(|&i| decoded[i].is_ok()).collect();
    if good.is_empty() {
        let errors: Vec<&str> = skipped.iter().map(|(_, e)| e.as_str()).collect();
        bail!("no image of step {step}'s batch could be read: {}", errors.join("; "));
    }
    let mut images = Vec::with_capacity(indices.len() * 3 * plane);
    let mut labels = Vec::with_capacity(indices.len());
    for position in 0..indices.len() {
        let source = *good.iter().find(|&&g| g >= position).unwrap_or(&good[0]);
        images.extend_from_slice(decoded[source].as_ref().expect("a readable image"));
        labels.push(folder.images[indices[source]].1);
    }
    Ok(Batch { step, images, labels, skipped, seconds: started.elapsed().as_secs_f64() })
}

/// The generator of one image's augmentation: a function of (seed, step, position) alone.
fn augmentation_rng(seed: u64, step: usize, position: usize) -> Rng {
    let mixed =
        (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (position as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    Rng::new(seed ^ mixed.rotate_left(17))
}
