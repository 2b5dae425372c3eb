//! A folder of labelled photos in the layout torchvision's `ImageFolder` reads: `DIR/<class>/...`,
//! classes numbered in the sorted order of their folder names, every image file below a class
//! folder (recursively, links followed, each folder once) in sorted path order. Either `DIR/train`
//! and `DIR/val` with the same classes, or one folder that [`ImageFolder::split`] divides.
//!
//! Only paths are listed here, never pixels: a folder of a million photos scans in seconds.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};

use crate::rng::Rng;

/// The file extensions torchvision's `ImageFolder` takes for images (compared without case).
pub const IMAGE_EXTENSIONS: [&str; 9] = ["jpg", "jpeg", "png", "ppm", "bmp", "pgm", "tif", "tiff", "webp"];

/// The images of a labelled folder: `classes[label]` names the class of each `(path, label)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageFolder {
    pub classes: Vec<String>,
    pub images: Vec<(PathBuf, u32)>,
}

/// How many images [`ImageFolder::split`] holds out for validation.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValSplit {
    /// This share of every class (rounded; at least one image of a class of two or more, and never
    /// a class's last).
    Fraction(f64),
    /// This many images in all, spread over the classes in proportion.
    Count(usize),
}

impl std::str::FromStr for ValSplit {
    type Err = String;

    /// `0.1` (a fraction, below 1) or `5000` (a count).
    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(n) = s.parse::<usize>() {
            return Ok(ValSplit::Count(n));
        }
        match s.parse::<f64>() {
            Ok(f) if (0.0..1.0).contains(&f) => Ok(ValSplit::Fraction(f)),
            _ => Err(format!("expected a fraction in [0, 1) or a number of images, got {s:?}")),
        }
    }
}

impl ImageFolder {
    /// Lists the classes and images of `dir`. Errors name the folder: it is missing, holds no
    /// class folders, a class holds no image, or there is a single class.
    pub fn scan(dir: &Path) -> Result<Self> {
        let shown = dir.display();
        let entries = std::fs::read_dir(dir).with_context(|| format!("cannot read the image folder {shown}"))?;
        let mut classes: Vec<String> = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot read the image folder {shown}"))?;
            if entry.path().is_dir() {
                let name = entry.file_name();
                let name =
                    name.to_str().with_context(|| format!("{}: a class name is not UTF-8", entry.path().display()))?;
                classes.push(name.to_string());
            }
        }
        classes.sort();
        ensure!(
            !classes.is_empty(),
            "{shown} holds no class folders: put each class's images in a folder of its own, DIR/<class>/<image>"
        );
        ensure!(
            classes.len() >= 2,
            "{shown} holds one class folder ({}): a classifier needs two classes or more",
            classes[0]
        );
        let mut images = Vec::new();
        for (label, class) in classes.iter().enumerate() {
            let mut files = Vec::new();
            let mut seen = HashSet::new();
            list_images(&dir.join(class), &mut files, &mut seen)?;
            ensure!(
                !files.is_empty(),
                "class folder {} holds no images ({} files are read)",
                dir.join(class).display(),
                IMAGE_EXTENSIONS.join(", ")
            );
            files.sort();
            images.extend(files.into_iter().map(|f| (f, label as u32)));
        }
        Ok(Self { classes, images })
    }

    /// `DIR/train` and `DIR/val` where both exist (their classes must be the same), else `DIR` and
    /// no validation folder.
    pub fn scan_dataset(dir: &Path) -> Result<(Self, Option<Self>)> {
        let (train, val) = (dir.join("train"), dir.join("val"));
        if !(train.is_dir() && val.is_dir()) {
            return Ok((Self::scan(dir)?, None));
        }
        let (train, val) = (Self::scan(&train)?, Self::scan(&val)?);
        if train.classes != val.classes {
            let only =
                |a: &Self, b: &Self| a.classes.iter().filter(|c| !b.classes.contains(c)).cloned().collect::<Vec<_>>();
            bail!(
                "{}: train and val hold different classes (only in train: {:?}; only in val: {:?})",
                dir.display(),
                only(&train, &val),
                only(&val, &train)
            );
        }
        Ok((train, Some(val)))
    }

    /// What identifies the folder's contents, for a split to be redone exactly: the SHA-256 (hex,
    /// 16 digits) of every image's label and path relative to `root`, in order.
    pub fn fingerprint(&self, root: &Path) -> String {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        for (path, label) in &self.images {
            let relative = path.strip_prefix(root).unwrap_or(path);
            hasher.update(format!("{label}\t{}\n", relative.display()).as_bytes());
        }
        hasher.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
    }

    /// Images per class, in class order.
    pub fn counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for &(_, label) in &self.images {
            counts[label as usize] += 1;
        }
        counts
    }

    /// (train, validation): `split` of every class's images, picked by `seed`, held out; both keep
    /// the sorted order. The same folder, split and seed give the same sets.
    pub fn split(&self, split: ValSplit, seed: u64) -> Result<(Self, Self)> {
        let total = self.images.len();
        let share = match split {
            ValSplit::Fraction(f) => f,
            ValSplit::Count(n) => {
                ensure!(n < total, "cannot hold out {n} images for validation from a folder of {total}");
                n as f64 / total as f64
            }
        };
        let mut rng = Rng::new(seed);
        let mut held = vec![false; total];
        let mut start = 0;
        for count in self.counts() {
            let least = usize::from(share > 0.0 && count > 1);
            let want = ((share * count as f64).round() as usize).clamp(least, count.saturating_sub(1));
            let mut order: Vec<usize> = (start..start + count).collect();
            rng.shuffle(&mut order);
            for &i in &order[..want] {
                held[i] = true;
            }
            start += count;
        }
        let part = |held_out: bool| Self {
            classes: self.classes.clone(),
            images: self.images.iter().zip(&held).filter(|(_, h)| **h == held_out).map(|(x, _)| x.clone()).collect(),
        };
        Ok((part(false), part(true)))
    }
}

/// Appends every image file below `dir` (by extension) to `files`, each folder once (`seen`
/// holds their canonical paths, so a link back up the tree ends there).
fn list_images(dir: &Path, files: &mut Vec<PathBuf>, seen: &mut HashSet<PathBuf>) -> Result<()> {
    let canonical = dir.canonicalize().with_context(|| format!("cannot read folder {}", dir.display()))?;
    if !seen.insert(canonical) {
        return Ok(());
    }
    let entries = std::fs::read_dir(dir).with_context(|| format!("cannot read folder {}", dir.display()))?;
    for entry in entries {
        let path = entry.with_context(|| format!("cannot read folder {}", dir.display()))?.path();
        if path.is_dir() {
            list_images(&path, files, seen)?;
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
        {
            files.push(path);
        }
    }
    Ok(())
}
