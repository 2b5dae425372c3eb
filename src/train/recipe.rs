//! What determines a run's numbers: the [`Recipe`], stored in every checkpoint so that
//! `--resume` continues the same run.

use anyhow::{Result, bail, ensure};
use serde::{Deserialize, Serialize};

use crate::data::augment::{Augment, eval_resize};
use crate::data::cifar;
#[cfg(doc)]
use crate::data::folder::ImageFolder;
use crate::data::folder::ValSplit;
use crate::data::image::{EvalTransform, IMAGENET_MEAN, IMAGENET_STD};
use crate::model::{Arch, Shortcut};
use crate::rng::Rng;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// lr divided by 10 at 50 % and 75 % of the steps (32k and 48k of 64k).
    Paper,
    /// Cosine decay from lr to 0.
    Cosine,
    Constant,
    /// lr divided by 10 at each step of `Recipe::lr_drops` (`--lr-drops`, given in epochs).
    Drops,
}

/// Everything that determines a run's numbers; stored in checkpoints so `--resume` continues it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Recipe {
    pub model: String,
    pub shortcut: char,
    pub steps: usize,
    pub batch_size: usize,
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    pub schedule: Schedule,
    /// The steps at which [`Schedule::Drops`] divides the rate by 10.
    #[serde(default)]
    pub lr_drops: Vec<usize>,
    pub seed: u64,
    pub augment: bool,
    pub shuffle: bool,
    pub val_split: usize,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// The paper trains ResNet-110 at lr 0.01 for its first 400 iterations.
    pub warmup_steps: usize,
    /// Training on a folder of photos (`train folder`) rather than CIFAR-10; `augment`,
    /// `shortcut` and `val_split` above are CIFAR's and unused then.
    #[serde(default)]
    pub folder: Option<FolderRecipe>,
}

/// What `train folder` adds to a recipe.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FolderRecipe {
    /// Images are `size` x `size`.
    pub size: u32,
    pub augment: Augment,
    /// The class names in label order (sorted folder names, as torchvision's `ImageFolder`).
    pub classes: Vec<String>,
    /// Where the folder has no `train/` and `val/`: the share held out for validation.
    pub val_split: Option<ValSplit>,
    /// [`ImageFolder::fingerprint`] of the folder that `val_split` divided, so that a resumed run
    /// or `eval folder` splits only the same files.
    #[serde(default)]
    pub fingerprint: String,
    /// Only the fc layer trains; the backward stops at it.
    pub freeze_backbone: bool,
    /// Batch norm normalises with its running statistics and leaves them unchanged.
    pub bn_eval: bool,
}

impl Recipe {
    /// The paper's recipe for `model`: batch 128, 64k steps, lr 0.1 (/10 at 32k and 48k),
    /// momentum 0.9, weight decay 1e-4, augmentation, CIFAR-10 mean/std.
    pub fn paper(model: &str) -> Self {
        Self {
            model: model.into(),
            shortcut: 'a',
            steps: 64_000,
            batch_size: 128,
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 1e-4,
            schedule: Schedule::Paper,
            lr_drops: Vec::new(),
            seed: 0,
            augment: true,
            shuffle: true,
            val_split: 0,
            mean: cifar::MEAN,
            std: cifar::STD,
            warmup_steps: if model == "resnet110" { 400 } else { 0 },
            folder: None,
        }
    }

    /// `train folder`'s defaults for `model` (resnet18..152): fine-tuning pretrained weights
    /// (`fine_tune`) at lr 0.01 with cosine decay and batch 32, or training from scratch with the
    /// paper's ImageNet recipe (lr 0.1, /10 at 50 % and 75 % of the steps, batch 256); momentum
    /// 0.9, weight decay 1e-4, ImageNet's mean and std, either way.
    pub fn folder(model: &str, fine_tune: bool, folder: FolderRecipe) -> Self {
        Self {
            shortcut: 'b',
            batch_size: if fine_tune { 32 } else { 256 },
            lr: if fine_tune { 0.01 } else { 0.1 },
            schedule: if fine_tune { Schedule::Cosine } else { Schedule::Paper },
            augment: false,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
            warmup_steps: 0,
            folder: Some(folder),
            ..Self::paper(model)
        }
    }

    pub fn arch(&self) -> Result<Arch> {
        if let Some(folder) = &self.folder {
            let mut arch = Arch::parse(&self.model, Shortcut::B)?;
            ensure!(
                arch.imagenet,
                "train folder trains torchvision's resnet18, resnet34, resnet50, resnet101 or resnet152, not {}",
                self.model
            );
            arch.classes = folder.classes.len();
            arch.image = folder.size as usize;
            return Ok(arch);
        }
        let shortcut = match self.shortcut {
            'a' => Shortcut::A,
            'b' => Shortcut::B,
            other => bail!("unknown shortcut {other:?}: expected a or b"),
        };
        let arch = Arch::cifar(&self.model, shortcut)?;
        Ok(arch)
    }

    /// The evaluation transform of a folder run: the shorter side to 256/224 of the size, a center
    /// crop of the size, as `infer` and torchvision's ImageNet evaluation.
    pub fn eval_transform(&self) -> Option<EvalTransform> {
        let size = self.folder.as_ref()?.size;
        Some(EvalTransform { resize: eval_resize(size), crop: size, mean: self.mean, std: self.std })
    }

    /// What a folder run's checkpoints tell `infer` and `eval folder`: `classes` (a JSON list of
    /// the class names in label order) and `transform` (the evaluation transform, JSON).
    pub fn metadata(&self) -> Vec<(String, String)> {
        match (&self.folder, self.eval_transform()) {
            (Some(folder), Some(transform)) => vec![
                ("classes".into(), serde_json::to_string(&folder.classes).expect("strings serialise")),
                ("transform".into(), serde_json::to_string(&transform).expect("numbers serialise")),
            ],
            _ => Vec::new(),
        }
    }

    /// The learning rate of step `step` (from 0).
    pub fn lr_at(&self, step: usize) -> f32 {
        if step < self.warmup_steps {
            return self.lr / 10.0;
        }
        let t = step as f64 / self.steps as f64;
        match self.schedule {
            Schedule::Constant => self.lr,
            Schedule::Cosine => (self.lr as f64 * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())) as f32,
            Schedule::Paper if t < 0.5 => self.lr,
            Schedule::Paper if t < 0.75 => self.lr / 10.0,
            Schedule::Paper => self.lr / 100.0,
            Schedule::Drops => {
                let drops = self.lr_drops.iter().filter(|&&d| d <= step).count();
                (self.lr as f64 / 10f64.powi(drops as i32)) as f32
            }
        }
    }

    /// The order of the training images in epoch `epoch`.
    pub fn epoch_order(&self, epoch: usize, len: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..len).collect();
        if self.shuffle {
            Rng::new(self.seed ^ (epoch as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407)).shuffle(&mut order);
        }
        order
    }

    pub fn augmentation(&self, step: usize) -> Option<Rng> {
        self.augment.then(|| Rng::new(self.seed ^ (step as u64 + 1).wrapping_mul(0x9FB2_1C65_1E98_DF25)))
    }
}
