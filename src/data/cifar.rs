//! CIFAR-10 in its official binary layout (<https://www.cs.toronto.edu/~kriz/cifar.html>):
//! `data_batch_1.bin`..`data_batch_5.bin` and `test_batch.bin`, each 10,000 records of 3,073 bytes:
//! one label byte (0..=9), then the 32x32 image as 1024 R, 1024 G, 1024 B bytes, rows top to bottom.
//! Batches for the GPU are NCHW f32, normalised per channel, with the ResNet paper's augmentation
//! (4-pixel zero padding, random 32x32 crop, random horizontal flip) on request.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};

use crate::data::download::{self, Checksum};
use crate::rng::Rng;

/// The official binary archive.
pub const URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";
/// MD5 of the archive at [`URL`], as published on the CIFAR page.
pub const MD5: &str = "c32a1d4ab5d03f1284b67883e8d87530";

/// Per-channel (R, G, B) mean and standard deviation of the CIFAR-10 training images, in [0, 1].
pub const MEAN: [f32; 3] = [0.4914, 0.4822, 0.4465];
pub const STD: [f32; 3] = [0.2470, 0.2435, 0.2616];

/// Image side, channels, bytes per image (C x H x W) and per record (label + image).
pub const SIDE: usize = 32;
pub const CHANNELS: usize = 3;
pub const IMAGE_BYTES: usize = CHANNELS * SIDE * SIDE;
pub const RECORD_BYTES: usize = 1 + IMAGE_BYTES;
/// Records in each official file.
pub const RECORDS_PER_FILE: usize = 10_000;
/// Zero pixels added on each side before the random crop.
pub const PAD: usize = 4;

pub const TRAIN_FILES: [&str; 5] =
    ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"];
pub const TEST_FILE: &str = "test_batch.bin";

/// Name of the archive file while it is downloaded, beside the data folder.
const ARCHIVE_NAME: &str = "cifar-10-binary.tar.gz";

/// A set of CIFAR-10 images in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cifar10 {
    /// [N, 3, 32, 32] raw bytes, CHW per image as in the files.
    pub images: Vec<u8>,
    /// [N], each 0..=9.
    pub labels: Vec<u8>,
}

impl Cifar10 {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Image `i` as [3, 32, 32] bytes.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * IMAGE_BYTES..(i + 1) * IMAGE_BYTES]
    }

    /// The 50,000 training images: the five data batches in order.
    pub fn load_train(dir: &Path) -> Result<Self> {
        Self::load_train_with(dir, RECORDS_PER_FILE)
    }

    /// The 10,000 test images.
    pub fn load_test(dir: &Path) -> Result<Self> {
        Self::load_test_with(dir, RECORDS_PER_FILE)
    }

    /// [`Self::load_train`] with files of `records_per_file` records (tests use tiny files).
    pub fn load_train_with(dir: &Path, records_per_file: usize) -> Result<Self> {
        let mut all = Cifar10 {
            images: Vec::with_capacity(TRAIN_FILES.len() * records_per_file * IMAGE_BYTES),
            labels: Vec::with_capacity(TRAIN_FILES.len() * records_per_file),
        };
        for name in TRAIN_FILES {
            let part = read_file(&dir.join(name), records_per_file)?;
            all.images.extend_from_slice(&part.images);
            all.labels.extend_from_slice(&part.labels);
        }
        Ok(all)
    }

    /// [`Self::load_test`] with a file of `records_per_file` records (tests use tiny files).
    pub fn load_test_with(dir: &Path, records_per_file: usize) -> Result<Self> {
        read_file(&dir.join(TEST_FILE), records_per_file)
    }

    /// Splits off the last `n` images as a held-out validation set: returns (first len-n, last n).
    pub fn split_last(mut self, n: usize) -> Result<(Self, Self)> {
        ensure!(n <= self.len(), "cannot hold out {n} images for validation from a set of {}", self.len());
        let keep = self.len() - n;
        let held = Cifar10 { images: self.images.split_off(keep * IMAGE_BYTES), labels: self.labels.split_off(keep) };
        Ok((self, held))
    }
}

/// Reads one CIFAR-10 binary file that must hold exactly `expected_records` records.
fn read_file(path: &Path, expected_records: usize) -> Result<Cifar10> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => bail!(
            "CIFAR-10 file {} not found. `train` and `eval` download the dataset when run without \
             --data (network needed); otherwise put the official binary files \
             ({}, {TEST_FILE}, from {URL}) in {}",
            path.display(),
            TRAIN_FILES.join(", "),
            path.parent().unwrap_or(Path::new(".")).display()
        ),
        Err(e) => return Err(e).with_context(|| format!("could not open {}", path.display())),
    };
    let expected_size = (expected_records * RECORD_BYTES) as u64;
    let size = file.metadata().with_context(|| format!("could not read {}", path.display()))?.len();
    ensure!(
        size == expected_size,
        "{} is {size} bytes; a CIFAR-10 binary file is {expected_size} bytes \
         ({expected_records} records of {RECORD_BYTES}). Is it the binary version, whole?",
        path.display()
    );
    let mut bytes = Vec::with_capacity(size as usize);
    file.read_to_end(&mut bytes).with_context(|| format!("could not read {}", path.display()))?;
    ensure!(bytes.len() as u64 == expected_size, "{} changed size while it was read", path.display());

    let mut data = Cifar10 {
        images: Vec::with_capacity(expected_records * IMAGE_BYTES),
        labels: Vec::with_capacity(expected_records),
    };
    for (record, chunk) in bytes.chunks_exact(RECORD_BYTES).enumerate() {
        let label = chunk[0];
        ensure!(label <= 9, "{}: record {record} has label {label}; CIFAR-10 labels are 0..=9", path.display());
        data.labels.push(label);
        data.images.extend_from_slice(&chunk[1..]);
    }
    Ok(data)
}

/// Where `train` and `eval` keep CIFAR-10 by default:
/// `<user cache>/resnet-wgpu/cifar-10-batches-bin` (`~/.cache/...` on Linux), or under the current
/// folder when the system names no cache folder.
pub fn default_dir() -> PathBuf {
    dirs::cache_dir().unwrap_or_else(|| PathBuf::from(".cache")).join("resnet-wgpu").join("cifar-10-batches-bin")
}

/// Makes sure the six binary files are in `dir`. If any is missing, downloads the archive from
/// `url` (for the official one: `url = URL`, `checksum = Checksum::Md5(MD5.into())`) beside `dir`,
/// extracts the six `.bin` files into a temporary folder beside `dir`, moves them into `dir` and
/// deletes the archive. An archive already lying beside `dir` under the official name (put there
/// by hand) is used if its checksum matches. Nothing half-written is left on failure.
pub fn ensure_downloaded(dir: &Path, url: &str, checksum: &Checksum) -> Result<()> {
    let names: Vec<&str> = TRAIN_FILES.iter().copied().chain([TEST_FILE]).collect();
    if names.iter().all(|name| dir.join(name).is_file()) {
        return Ok(());
    }
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let dir_name = dir
        .file_name()
        .with_context(|| format!("{} does not name a folder", dir.display()))?
        .to_string_lossy()
        .into_owned();
    let archive = parent.join(ARCHIVE_NAME);

    if !(archive.is_file() && download::verify_file(&archive, checksum).is_ok()) {
        eprintln!("downloading CIFAR-10 from {url} into {}", dir.display());
        download::download(url, &archive, checksum)?;
    }

    let temp = parent.join(format!(".{dir_name}.extracting-{}", std::process::id()));
    let result = extract(&archive, &temp, &names).and_then(|()| move_into(&temp, dir, &names));
    let _ = fs::remove_dir_all(&temp);
    // The archive is deleted either way: if it passed its checksum but does not extract, keeping
    // it would only make the next run fail the same way.
    let _ = fs::remove_file(&archive);
    result.with_context(|| format!("could not unpack CIFAR-10 from {url}"))
}

/// Writes the entries of the `.tar.gz` at `archive` whose file names are in `names` into `out`
/// (created fresh), flat. Errors if any of `names` is missing from the archive.
fn extract(archive: &Path, out: &Path, names: &[&str]) -> Result<()> {
    let _ = fs::remove_dir_all(out);
    fs::create_dir_all(out).with_context(|| format!("could not create {}", out.display()))?;
    let file = File::open(archive).with_context(|| format!("could not open {}", archive.display()))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut found = vec![false; names.len()];
    let entries = tar.entries().with_context(|| format!("{} is not a .tar.gz archive", archive.display()))?;
    for entry in entries {
        let mut entry = entry.with_context(|| format!("{} is not a valid .tar.gz", archive.display()))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path()?.into_owned();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        // Only the six known names are written, and only into `out`: no path from the archive
        // is ever joined onto the file system.
        if let Some(i) = names.iter().position(|&n| n == name) {
            let dest = out.join(names[i]);
            let mut f = File::create(&dest).with_context(|| format!("could not create {}", dest.display()))?;
            io::copy(&mut entry, &mut f)
                .with_context(|| format!("could not extract {name} from {}", archive.display()))?;
            f.sync_all()?;
            found[i] = true;
        }
    }
    let missing: Vec<&str> = names.iter().zip(&found).filter(|&(_, &f)| !f).map(|(&n, _)| n).collect();
    ensure!(missing.is_empty(), "the archive {} lacks {}", archive.display(), missing.join(", "));
    Ok(())
}

/// Moves the extracted files from `temp` into `dir`: one rename of the folder when `dir` does not
/// exist yet, otherwise one rename per file (each replaces any older file whole).
fn move_into(temp: &Path, dir: &Path, names: &[&str]) -> Result<()> {
    if !dir.exists() {
        return fs::rename(temp, dir)
            .with_context(|| format!("could not move {} to {}", temp.display(), dir.display()));
    }
    for name in names {
        let (from, to) = (temp.join(name), dir.join(name));
        fs::rename(&from, &to).with_context(|| format!("could not move {} to {}", from.display(), to.display()))?;
    }
    Ok(())
}

/// Fills one batch: `images` [B, 3, 32, 32] f32 with `(x / 255 - mean[c]) / std[c]` and `labels`
/// [B], for B = `indices.len()` images of `data`.
///
/// With `augment`, each image is padded with 4 zero pixels on every side (zeros of the raw image,
/// so after normalisation they read `-mean / std`, as torchvision's `RandomCrop(32, padding=4)`
/// before `Normalize`), cropped to 32x32 at a random offset, and flipped left-right with
/// probability 1/2. Per image, in this order: `dy = rng.below(9)`, `dx = rng.below(9)`,
/// `flip = rng.below(2) == 1`, so the same generator state gives the same batch (resumed runs).
pub fn make_batch(
    data: &Cifar10,
    indices: &[usize],
    mut augment: Option<&mut Rng>,
    mean: [f32; 3],
    std: [f32; 3],
    images: &mut [f32],
    labels: &mut [u32],
) {
    assert_eq!(
        images.len(),
        indices.len() * IMAGE_BYTES,
        "make_batch: images must hold {} x 3 x 32 x 32 floats for {} indices.",
        indices.len(),
        indices.len()
    );
    assert_eq!(labels.len(), indices.len(), "make_batch: labels must hold one entry per index.");
    // Normalised value of every byte per channel; a padded pixel is byte 0.
    let mut table = [[0f32; 256]; CHANNELS];
    for (c, row) in table.iter_mut().enumerate() {
        for (v, out) in row.iter_mut().enumerate() {
            *out = (v as f32 / 255.0 - mean[c]) / std[c];
        }
    }

    for (b, &index) in indices.iter().enumerate() {
        assert!(index < data.len(), "make_batch: index {index} is past the end of a set of {} images.", data.len());
        labels[b] = data.labels[index] as u32;
        let src = data.image(index);
        let out = &mut images[b * IMAGE_BYTES..(b + 1) * IMAGE_BYTES];

        let Some(rng) = augment.as_deref_mut() else {
            for (i, (o, &v)) in out.iter_mut().zip(src).enumerate() {
                *o = table[i / (SIDE * SIDE)][v as usize];
            }
            continue;
        };
        let dy = rng.below(2 * PAD + 1);
        let dx = rng.below(2 * PAD + 1);
        let flip = rng.below(2) == 1;
        for c in 0..CHANNELS {
            let plane = &src[c * SIDE * SIDE..(c + 1) * SIDE * SIDE];
            for y in 0..SIDE {
                // Row of the source image, or None inside the padding.
                let sy = (y + dy).checked_sub(PAD).filter(|&s| s < SIDE);
                for x in 0..SIDE {
                    let xc = if flip { SIDE - 1 - x } else { x };
                    let sx = (xc + dx).checked_sub(PAD).filter(|&s| s < SIDE);
                    let v = match (sy, sx) {
                        (Some(sy), Some(sx)) => plane[sy * SIDE + sx],
                        _ => 0,
                    };
                    out[c * SIDE * SIDE + y * SIDE + x] = table[c][v as usize];
                }
            }
        }
    }
}
