//! The sets a run trains and evaluates on: CIFAR-10, held in memory, and folders of photos,
//! streamed from disk through worker threads.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use rayon::prelude::*;

use super::{EvalSet, Recipe, TrainSet};
use crate::data::cifar::{self, Cifar10};
use crate::data::download::Checksum;
use crate::data::folder::ImageFolder;
use crate::data::image::{self, Partial};
use crate::data::loader::{Batch, BatchSpec, Loader};

/// Finds the six CIFAR-10 files in `dir`, downloading them when missing.
pub fn dataset(dir: &Path) -> Result<(Cifar10, Cifar10)> {
    cifar::ensure_downloaded(dir, cifar::URL, &Checksum::Md5(cifar::MD5.into()))?;
    Ok((Cifar10::load_train(dir)?, Cifar10::load_test(dir)?))
}

/// CIFAR-10 batches are made on the training thread: a batch of 128 takes well under a
/// millisecond.
impl TrainSet for Cifar10 {
    fn images(&self) -> usize {
        Cifar10::len(self)
    }

    fn batches<'a>(
        &'a self,
        recipe: &Recipe,
        steps: Range<usize>,
    ) -> Result<Box<dyn Iterator<Item = Result<Batch>> + 'a>> {
        let recipe = recipe.clone();
        let per_epoch = Cifar10::len(self) / recipe.batch_size;
        let mut order = (usize::MAX, Vec::new());
        Ok(Box::new(steps.map(move |step| {
            let started = Instant::now();
            let epoch = step / per_epoch;
            if order.0 != epoch {
                order = (epoch, recipe.epoch_order(epoch, Cifar10::len(self)));
            }
            let at = (step % per_epoch) * recipe.batch_size;
            let indices = &order.1[at..at + recipe.batch_size];
            let mut images = vec![0f32; indices.len() * cifar::IMAGE_BYTES];
            let mut labels = vec![0u32; indices.len()];
            let mut rng = recipe.augmentation(step);
            cifar::make_batch(self, indices, rng.as_mut(), recipe.mean, recipe.std, &mut images, &mut labels);
            Ok(Batch { step, images, labels, skipped: Vec::new(), seconds: started.elapsed().as_secs_f64() })
        })))
    }
}

impl EvalSet for Cifar10 {
    fn images(&self) -> usize {
        Cifar10::len(self)
    }

    fn classes(&self) -> usize {
        10
    }

    fn batch(&self, range: Range<usize>, mean: [f32; 3], std: [f32; 3]) -> Result<Batch> {
        let started = Instant::now();
        let indices: Vec<usize> = range.collect();
        let mut images = vec![0f32; indices.len() * cifar::IMAGE_BYTES];
        let mut labels = vec![0u32; indices.len()];
        cifar::make_batch(self, &indices, None, mean, std, &mut images, &mut labels);
        Ok(Batch { step: 0, images, labels, skipped: Vec::new(), seconds: started.elapsed().as_secs_f64() })
    }
}

/// The training images of a folder, decoded and augmented by `workers` threads ahead of the GPU.
pub struct FolderTrain {
    pub folder: Arc<ImageFolder>,
    pub workers: usize,
    /// Refuse an unreadable image rather than skip it.
    pub strict: bool,
}

/// Batches kept ready ahead of the GPU.
const AHEAD: usize = 3;

impl TrainSet for FolderTrain {
    fn images(&self) -> usize {
        self.folder.images.len()
    }

    fn batches<'a>(
        &'a self,
        recipe: &Recipe,
        steps: Range<usize>,
    ) -> Result<Box<dyn Iterator<Item = Result<Batch>> + 'a>> {
        let folder = recipe.folder.as_ref().context("a folder of photos needs a folder recipe")?;
        let spec = BatchSpec {
            batch: recipe.batch_size,
            size: folder.size,
            augment: folder.augment,
            mean: recipe.mean,
            std: recipe.std,
            seed: recipe.seed,
            strict: self.strict,
        };
        let (order, len) = (recipe.clone(), self.folder.images.len());
        let range = (steps.start, steps.end);
        let loader = Loader::spawn(
            Arc::clone(&self.folder),
            spec,
            move |e| order.epoch_order(e, len),
            range,
            self.workers,
            AHEAD,
        )?;
        Ok(Box::new(steps.map(move |_| loader.next())))
    }
}

/// The evaluation images of a folder: shorter side resized to `resize`, center crop `crop`.
pub struct FolderEval {
    pub folder: ImageFolder,
    pub resize: u32,
    pub crop: u32,
    pub strict: bool,
    pool: rayon::ThreadPool,
}

impl FolderEval {
    pub fn new(folder: ImageFolder, resize: u32, crop: u32, workers: usize, strict: bool) -> Result<Self> {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(workers.max(1)).build()?;
        Ok(Self { folder, resize, crop, strict, pool })
    }
}

impl EvalSet for FolderEval {
    fn images(&self) -> usize {
        self.folder.images.len()
    }

    fn classes(&self) -> usize {
        self.folder.classes.len()
    }

    fn batch(&self, range: Range<usize>, mean: [f32; 3], std: [f32; 3]) -> Result<Batch> {
        let started = Instant::now();
        let images = &self.folder.images[range];
        let decoded: Vec<Result<Vec<f32>>> = self.pool.install(|| {
            images
                .par_iter()
                .map(|(path, _)| {
                    let img = image::load(path, Partial::Refuse)?;
                    Ok(image::preprocess(&img, self.resize, self.crop, mean, std))
                })
                .collect()
        });
        let plane = 3 * (self.crop * self.crop) as usize;
        let mut batch = Batch {
            step: 0,
            images: Vec::with_capacity(images.len() * plane),
            labels: images.iter().map(|(_, label)| *label).collect(),
            skipped: Vec::new(),
            seconds: 0.0,
        };
        for (position, result) in decoded.into_iter().enumerate() {
            match result {
                Ok(values) => batch.images.extend(values),
                Err(e) if self.strict => bail!("{e:#}"),
                Err(e) => {
                    batch.images.extend(std::iter::repeat_n(0.0, plane));
                    batch.skipped.push((position, format!("{e:#}")));
                }
            }
        }
        batch.seconds = started.elapsed().as_secs_f64();
        Ok(batch)
    }
}
