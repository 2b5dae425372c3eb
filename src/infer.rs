//! `infer IMAGE...`: torchvision's ImageNet ResNets classify photos.
//!
//! One call goes: the model name and the weights are checked before anything touches the GPU
//! (every expected tensor present with its shape, nothing unexpected); BN is folded into the convs
//! and the weights are uploaded once ([`Classifier`]); the photos are decoded and preprocessed as
//! torchvision's eval transform does (`data::image`), a few at a time on CPU threads, and go
//! through the network in batches of `--batch-size`: one plan for the full batches and, when the
//! count does not divide, a second plan for the remainder, both on the same weights. Only the
//! logits come back from the GPU; softmax and top-K are computed on the CPU in f64.
//!
//! Weights are `tv1` or `tv2` (torchvision's `IMAGENET1K_V1` / `_V2` files, downloaded on first
//! use into the cache, [`weights_dir`]) or a file: safetensors with torchvision's `state_dict`
//! names (as timm's `resnet50.tv_in1k` also has) or torchvision's own `.pth`, told apart by their
//! contents.
//!
//! **Several images.** An image that cannot be read or decoded (missing, empty, corrupt, not an
//! image) is reported on stderr in one line that names it, and the other images are still
//! classified; the command then exits non-zero with a last line naming every image that failed.
//! With `--json` the document on stdout lists the images that succeeded.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use serde_json::json;

use crate::checkpoint::Checkpoint;
use crate::data::download::{Checksum, download};
use crate::data::image::{self, EvalTransform, IMAGENET_MEAN, IMAGENET_STD, Partial};
use crate::gpu::{AdapterChoice, AdapterJson, Gpu};
use crate::model::{Arch, Arena, Shortcut};
use crate::paths::weights_dir;
use crate::plan::InferStep;
use crate::pth;

/// The ImageNet models `infer` runs.
pub const MODELS: [&str; 5] = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"];

/// Where torchvision publishes its weights; `RESNET_WGPU_WEIGHTS_URL` overrides it.
pub const WEIGHTS_URL: &str = "https://download.pytorch.org/models";

/// Images per batch when `--batch-size` is not given: all of them, up to this many.
pub const DEFAULT_MAX_BATCH: usize = 16;

#[derive(clap::Args, Debug)]
pub struct InferArgs {
    /// Photos to classify (JPEG, PNG, WebP, ...)
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// resnet18, resnet34, resnet50, resnet101 or resnet152 [default: the weights' metadata, else
    /// resnet50]
    #[arg(long)]
    pub model: Option<String>,
    /// tv1 or tv2: torchvision's IMAGENET1K_V1 or _V2 weights (tv2 for resnet50/101/152 only),
    /// downloaded on first use into $RESNET_WGPU_CACHE/weights (default: the user cache folder's
    /// resnet-wgpu/weights) from $RESNET_WGPU_WEIGHTS_URL (default: download.pytorch.org/models);
    /// or a file: safetensors with torchvision's state_dict names, or torchvision's .pth; a
    /// checkpoint of `train folder` brings its class names and evaluation transform
    #[arg(long, default_value = "tv1")]
    pub weights: String,
    /// Show the K most probable classes of each image
    #[arg(long, default_value_t = 5, value_parser = crate::args::count)]
    pub top: usize,
    /// Print one JSON document on stdout and nothing else: {"model", "weights", "adapter",
    /// "results": [{"image", "top": [{"index", "label", "prob"}], "logits"}]}
    #[arg(long)]
    pub json: bool,
    /// Images per GPU batch [default: all of them, at most 16]
    #[arg(long, value_parser = crate::args::count)]
    pub batch_size: Option<usize>,
    /// Shorter side after resizing (1 to 4096), before the 224x224 center crop [default: 256; 232
    /// for tv2]
    #[arg(long, value_parser = crate::args::side)]
    pub resize: Option<u32>,
    /// Classify images whose data ends early (a truncated download) as far as they go, the rest
    /// grey, instead of reporting them unreadable
    #[arg(long)]
    pub accept_partial: bool,
    #[command(flatten)]
    pub adapter: AdapterChoice,
}

/// Which of torchvision's published weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tag {
    /// `IMAGENET1K_V1`, the original recipe; evaluated after `Resize(256)`.
    Tv1,
    /// `IMAGENET1K_V2`, the 2021 recipe; evaluated after `Resize(232)`.
    Tv2,
}

/// torchvision's weight files. The 8 hex digits in each name are the start of its SHA-256.
const TORCHVISION_FILES: [(&str, Tag, &str); 8] = [
    ("resnet18", Tag::Tv1, "resnet18-f37072fd.pth"),
    ("resnet34", Tag::Tv1, "resnet34-b627a593.pth"),
    ("resnet50", Tag::Tv1, "resnet50-0676ba61.pth"),
    ("resnet101", Tag::Tv1, "resnet101-63fe2227.pth"),
    ("resnet152", Tag::Tv1, "resnet152-394f9c45.pth"),
    ("resnet50", Tag::Tv2, "resnet50-11ad3fa6.pth"),
    ("resnet101", Tag::Tv2, "resnet101-cd907fc2.pth"),
    ("resnet152", Tag::Tv2, "resnet152-f82ba261.pth"),
];

/// A weights file to download: its name (on the server and in the cache), the hex digits its
/// SHA-256 starts with, and the resize its model was evaluated with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightsFile {
    pub name: String,
    pub sha256_prefix: String,
    pub resize: u32,
}

impl Tag {
    /// `tv1` or `tv2`; anything else is not a tag (but a file name).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "tv1" => Some(Tag::Tv1),
            "tv2" => Some(Tag::Tv2),
            _ => None,
        }
    }

    /// torchvision's eval resize for these weights.
    pub fn resize(self) -> u32 {
        match self {
            Tag::Tv1 => 256,
            Tag::Tv2 => 232,
        }
    }
}

/// torchvision's file of `model`'s `tag` weights; an error when torchvision publishes none (there
/// is no V2 of ResNet-18 and ResNet-34).
pub fn torchvision_file(model: &str, tag: Tag) -> Result<WeightsFile> {
    let Some(&(_, _, name)) = TORCHVISION_FILES.iter().find(|(m, t, _)| *m == model && *t == tag) else {
        let has: Vec<&str> = TORCHVISION_FILES
            .iter()
            .filter(|(m, _, _)| *m == model)
            .map(|(_, t, _)| if *t == Tag::Tv1 { "tv1" } else { "tv2" })
            .collect();
        if has.is_empty() {
            bail!("torchvision publishes no weights for {model:?}; models: {}", MODELS.join(", "));
        }
        bail!(
            "torchvision publishes no {} weights for {model}, only {} (V2 weights exist for resnet50, resnet101 and resnet152)",
            if tag == Tag::Tv1 { "tv1" } else { "tv2" },
            has.join(", ")
        );
    };
    let digits = name.trim_end_matches(".pth").rsplit('-').next().expect("a name with a dash");
    Ok(WeightsFile { name: name.into(), sha256_prefix: digits.into(), resize: tag.resize() })
}

/// The resize torchvision evaluates a file of its own with (232 for the V2 files, by name), else 256.
pub fn resize_for_file(path: &Path) -> u32 {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    TORCHVISION_FILES.iter().find(|(_, _, file)| *file == name).map_or(256, |(_, tag, _)| tag.resize())
}

/// `$RESNET_WGPU_WEIGHTS_URL`, else [`WEIGHTS_URL`].
pub fn weights_url() -> String {
    std::env::var("RESNET_WGPU_WEIGHTS_URL").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| WEIGHTS_URL.into())
}

/// The path of `file` in `dir`, downloaded from `base_url/<name>` first if it is not there: with a
/// progress bar on stderr, its SHA-256 prefix checked before it is renamed into place, so a file in
/// `dir` is whole (or was put there by hand) and is used as it is. Offline, the error names the
/// address and where to save the file.
pub fn fetch(file: &WeightsFile, base_url: &str, dir: &Path) -> Result<PathBuf> {
    let dest = dir.join(&file.name);
    if dest.is_file() {
        return Ok(dest);
    }
    let url = format!("{}/{}", base_url.trim_end_matches('/'), file.name);
    eprintln!("downloading {url} to {}", dest.display());
    download(&url, &dest, &Checksum::Sha256Prefix(file.sha256_prefix.clone()))?;
    Ok(dest)
}

/// Reads weights with torchvision's `state_dict` names from safetensors or from a `torch.save`
/// file (`.pth`), whichever the contents are: safetensors starts with an 8-byte header length and
/// the header's `{`; a zip archive (`PK`) or a bare pickle (0x80, a legacy `.pth`) is read as `.pth`.
pub fn read_weights(path: &Path) -> Result<Checkpoint> {
    let mut head = Vec::new();
    File::open(path)
        .and_then(|f| f.take(9).read_to_end(&mut head))
        .with_context(|| format!("cannot read weights file {}", path.display()))?;
    let safetensors = head.get(8) == Some(&b'{');
    if !safetensors && (head.starts_with(b"PK") || head.first() == Some(&0x80)) {
        let tensors = pth::read_state_dict(path)?;
        let tensors = tensors.into_iter().map(|(name, shape, values)| (name, (shape, values))).collect();
        return Ok(Checkpoint { tensors, ..Default::default() });
    }
    Checkpoint::read(path).context("weights are read from safetensors files and from torch.save's .pth files")
}

/// The ImageNet ResNet of that name, or an error listing those `infer` knows.
pub fn imagenet_arch(model: &str) -> Result<Arch> {
    ensure!(MODELS.contains(&model), "unknown model {model:?}: infer runs {}", MODELS.join(", "));
    Arch::parse(model, Shortcut::B)
}

/// Checks that `ck` holds exactly `arch`'s tensors with their shapes (`num_batches_tracked` is
/// ignored); the error names `source`, the tensor and both shapes.
pub fn check_weights(arch: &Arch, ck: &Checkpoint, source: &Path) -> Result<()> {
    let mut expected = arch.parameters();
    expected.extend(arch.buffers());
    ck.check(&expected, &arch.name, source)
        .with_context(|| format!("the weights do not fit {} (are they another model's?)", arch.name))
}

/// What a checkpoint of `train folder` says about itself: the model, its class names and the
/// evaluation transform.
pub struct FolderWeights {
    pub arch: Arch,
    pub classes: Vec<String>,
    pub transform: EvalTransform,
}

impl FolderWeights {
    /// Reads the metadata of `ck` (from `source`); `None` where it has no class names.
    pub fn of(ck: &Checkpoint, source: &Path) -> Result<Option<Self>> {
        let Some(classes) = ck.meta("classes") else { return Ok(None) };
        let bad = |what: &str| format!("{}: the {what} in its metadata is not readable", source.display());
        let classes: Vec<String> = serde_json::from_str(classes).with_context(|| bad("class list"))?;
        let transform: EvalTransform = serde_json::from_str(ck.meta("transform").with_context(|| bad("transform"))?)
            .with_context(|| bad("transform"))?;
        let model = ck.meta("arch").with_context(|| bad("model name"))?;
        let mut arch = Arch::parse(model, Shortcut::B)?;
        ensure!(arch.imagenet, "{}: {model} is not an ImageNet ResNet", source.display());
        ensure!(
            classes.len() >= 2,
            "{}: its metadata names {} classes; a classifier has two or more",
            source.display(),
            classes.len()
        );
        arch.classes = classes.len();
        arch.image = transform.crop as usize;
        Ok(Some(Self { arch, classes, transform }))
    }
}

/// A network ready to classify: folded weights on the GPU and a plan per batch size, built on
/// first use and kept (a call of [`classify`] needs at most two: full batches and the remainder).
pub struct Classifier {
    pub arch: Arch,
    weights: Arena,
    plans: Vec<InferStep>,
}

impl Classifier {
    /// Checks `ck` against `arch`, folds BN into the convs and uploads the weights; `source`
    /// names the weights in errors.
    pub fn new(gpu: &Gpu, arch: Arch, ck: &Checkpoint, source: &Path) -> Result<Self> {
        check_weights(&arch, ck, source)?;
        let weights = InferStep::fold(gpu, &arch, ck, source)?;
        Ok(Self { arch, weights, plans: Vec::new() })
    }

    /// Values in one preprocessed image, `3 * image * image`.
    pub fn image_len(&self) -> usize {
        3 * self.arch.image * self.arch.image
    }

    /// The plan for a batch of `batch`, planned on first use.
    pub fn plan(&mut self, gpu: &Gpu, batch: usize) -> Result<&InferStep> {
        let i = match self.plans.iter().position(|p| p.input.shape[0] == batch) {
            Some(i) => i,
            None => {
                self.plans.push(InferStep::plan(gpu, &self.arch, self.weights.clone(), batch)?);
                self.plans.len() - 1
            }
        };
        Ok(&self.plans[i])
    }

    /// The logits `[n, classes]` of `n` preprocessed images (`inputs` is `[n, 3, image, image]`),
    /// as one batch.
    pub fn run_batch(&mut self, gpu: &Gpu, inputs: &[f32]) -> Result<Vec<f32>> {
        let per = self.image_len();
        assert!(
            !inputs.is_empty() && inputs.len().is_multiple_of(per),
            "a batch is a whole number of images of {per} values, not {} values.",
            inputs.len()
        );
        let plan = self.plan(gpu, inputs.len() / per)?;
        gpu.write(&plan.input, inputs);
        plan.run(gpu)?;
        gpu.read(&plan.logits)
    }

    /// The logits of any number of preprocessed images, in batches of at most `batch`.
    pub fn logits(&mut self, gpu: &Gpu, inputs: &[f32], batch: usize) -> Result<Vec<f32>> {
        assert!(batch > 0, "the batch size must be at least 1.");
        let mut logits = Vec::new();
        for chunk in inputs.chunks(batch * self.image_len()) {
            logits.extend(self.run_batch(gpu, chunk)?);
        }
        Ok(logits)
    }
}

/// One image's result.
#[derive(Clone, Debug)]
pub struct Prediction {
    /// `[classes]` scores before softmax, as the GPU computed them.
    pub logits: Vec<f32>,
    /// The most probable classes, most probable first: (class index, softmax probability).
    pub top: Vec<(usize, f64)>,
}

impl Prediction {
    /// Softmax (in f64) of `logits` and the `k` most probable classes, ties in index order.
    pub fn new(logits: Vec<f32>, k: usize) -> Self {
        let max = logits.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
        let exp: Vec<f64> = logits.iter().map(|&x| (x as f64 - max).exp()).collect();
        let sum: f64 = exp.iter().sum();
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| exp[b].total_cmp(&exp[a]).then(a.cmp(&b)));
        let top = order.into_iter().take(k).map(|i| (i, exp[i] / sum)).collect();
        Self { logits, top }
    }
}

/// How [`classify`] preprocesses and batches.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Shorter side after resizing, before the center crop to the model's input size.
    pub resize: u32,
    /// The normalisation.
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// Images per GPU batch.
    pub batch: usize,
    /// Classes kept per image.
    pub top: usize,
    /// Whether an image whose data ends early is classified (as far as it goes) or refused.
    pub partial: Partial,
}

/// Classifies the images at `paths`, calling `report(i, result)` once per image in order.
///
/// An image that cannot be loaded (missing, unreadable, empty, corrupt, not an image, too large)
/// gets an `Err` with one line naming it, and the others are still classified. Images are decoded
/// and preprocessed on a few CPU threads; the good ones go to the GPU in batches of
/// `options.batch`, the last batch through a plan of its own size. The error returned is the
/// GPU's, which ends the run.
pub fn classify(
    gpu: &Gpu,
    model: &mut Classifier,
    paths: &[PathBuf],
    options: Options,
    mut report: impl FnMut(usize, Result<Prediction>),
) -> Result<()> {
    assert!(options.batch > 0, "the batch size must be at least 1.");
    let crop = model.arch.image as u32;
    let workers = std::thread::available_parallelism().map_or(4, |n| n.get()).clamp(1, 8);
    // Results wait here until every image before them is done, so `report` sees input order.
    let mut done: BTreeMap<usize, Result<Prediction>> = BTreeMap::new();
    let mut next = 0;
    let (mut pending, mut inputs) = (Vec::new(), Vec::new());
    let mut flush = |done: &mut BTreeMap<usize, Result<Prediction>>| {
        while let Some(result) = done.remove(&next) {
            report(next, result);
            next += 1;
        }
    };
    let run = |model: &mut Classifier, pending: &mut Vec<usize>, inputs: &mut Vec<f32>, done: &mut BTreeMap<_, _>| {
        let logits = model.run_batch(gpu, inputs)?;
        let classes = model.arch.classes;
        for (j, &i) in pending.iter().enumerate() {
            done.insert(i, Ok(Prediction::new(logits[j * classes..][..classes].to_vec(), options.top)));
        }
        pending.clear();
        inputs.clear();
        anyhow::Ok(())
    };

    for (w, window) in paths.chunks(workers).enumerate() {
        let decoded: Vec<Result<Vec<f32>>> = std::thread::scope(|s| {
            let handles: Vec<_> = window
                .iter()
                .map(|path| {
                    s.spawn(move || -> Result<Vec<f32>> {
                        let img = image::load(path, options.partial)?;
                        Ok(image::preprocess(&img, options.resize, crop, options.mean, options.std))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("decoding an image panicked")).collect()
        });
        for (j, result) in decoded.into_iter().enumerate() {
            let i = w * workers + j;
            match result {
                Ok(values) => {
                    pending.push(i);
                    inputs.extend(values);
                }
                Err(e) => {
                    done.insert(i, Err(e));
                }
            }
            if pending.len() == options.batch {
                run(model, &mut pending, &mut inputs, &mut done)?;
            }
        }
        flush(&mut done);
    }
    if !pending.is_empty() {
        run(model, &mut pending, &mut inputs, &mut done)?;
    }
    flush(&mut done);
    Ok(())
}

/// One image's entry of `--json`'s `results`.
pub fn result_json(image: &Path, prediction: &Prediction, labels: &[&str]) -> serde_json::Value {
    let top: Vec<serde_json::Value> = prediction
        .top
        .iter()
        .map(|&(index, prob)| json!({"index": index, "label": labels.get(index).copied().unwrap_or(""), "prob": prob}))
        .collect();
    json!({"image": image.display().to_string(), "top": top, "logits": prediction.logits})
}

/// `resnet-wgpu infer`: see the module documentation.
pub fn run(args: &InferArgs) -> Result<()> {
    // Fail before fetching and reading weights when no image can possibly be read.
    if args.images.iter().all(|p| !p.is_file()) {
        let errors: Vec<String> =
            args.images.iter().filter_map(|p| image::load(p, Partial::Accept).err()).map(|e| e.to_string()).collect();
        bail!("{}", errors.join("; "));
    }

    let model = args.model.as_deref().unwrap_or("resnet50");
    let (path, resize) = match Tag::parse(&args.weights) {
        Some(tag) => {
            let file = torchvision_file(model, tag)?;
            (fetch(&file, &weights_url(), &weights_dir())?, file.resize)
        }
        None => {
            let path = PathBuf::from(&args.weights);
            let resize = resize_for_file(&path);
            (path, resize)
        }
    };
    let ck = read_weights(&path)?;
    // A checkpoint of `train folder` names its model, classes and transform; torchvision's
    // weights are ImageNet's.
    let imagenet = EvalTransform { resize, crop: 224, mean: IMAGENET_MEAN, std: IMAGENET_STD };
    let (arch, classes, transform) = match FolderWeights::of(&ck, &path)? {
        Some(trained) => {
            if let Some(model) = &args.model {
                ensure!(*model == trained.arch.name, "{} holds a {}, not a {model}", path.display(), trained.arch.name);
            }
            (trained.arch, trained.classes, trained.transform)
        }
        None => (imagenet_arch(model)?, image::labels().into_iter().map(str::to_string).collect(), imagenet),
    };
    let labels: Vec<&str> = classes.iter().map(String::as_str).collect();
    let resize = args.resize.unwrap_or(transform.resize);
    check_weights(&arch, &ck, &path)?;

    let gpu = Gpu::open(&args.adapter)?;
    let start = Instant::now();
    let mut model = Classifier::new(&gpu, arch, &ck, &path)?;
    drop(ck);
    let n = args.images.len();
    // Missing files are reported in turn; the batch need not hold them.
    let files = args.images.iter().filter(|p| p.is_file()).count().max(1);
    let batch = args.batch_size.unwrap_or(files.min(DEFAULT_MAX_BATCH)).min(n);
    let partial = if args.accept_partial { Partial::Accept } else { Partial::Refuse };
    let top = args.top.min(model.arch.classes);
    let options = Options { resize, mean: transform.mean, std: transform.std, batch, top, partial };
    let (mut results, mut failed) = (Vec::new(), Vec::new());
    classify(&gpu, &mut model, &args.images, options, |i, result| {
        let image = &args.images[i];
        match result {
            Ok(prediction) if args.json => results.push(result_json(image, &prediction, &labels)),
            Ok(prediction) => {
                println!("{}", image.display());
                for &(index, prob) in &prediction.top {
                    println!("  {:>6.2}%  {} ({index})", 100.0 * prob, labels.get(index).copied().unwrap_or("?"));
                }
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                failed.push(image.display().to_string());
            }
        }
    })?;
    let seconds = start.elapsed().as_secs_f64();
    eprintln!(
        "{} ({}): {} of {n} images in {seconds:.2} s, batches of {batch}, on {}",
        model.arch.name,
        args.weights,
        n - failed.len(),
        gpu.info.name
    );
    if args.json {
        let doc = json!({
            "model": model.arch.name,
            "weights": args.weights,
            "adapter": AdapterJson::new(&gpu.info),
            "results": results,
        });
        println!("{doc}");
    }
    if !failed.is_empty() {
        bail!("{} of {n} images could not be classified: {}", failed.len(), failed.join(", "));
    }
    Ok(())
}
