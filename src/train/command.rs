//! `train cifar10`, `train folder DIR`, `eval cifar10`, `eval folder DIR`: flags to a recipe, a
//! start and the sets, then the one training loop ([`super::train`]) or the evaluator.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail, ensure};
use clap::{Args, Subcommand};

use super::sets::{FolderEval, FolderTrain};
use super::{Evaluation, Evaluator, FolderRecipe, Outputs, Recipe, Schedule, Start, TrainSet};
use crate::args;
use crate::checkpoint::Checkpoint;
use crate::data::augment::{Augment, eval_resize};
use crate::data::cifar::{self, Cifar10};
use crate::data::folder::{ImageFolder, ValSplit};
use crate::gpu::{AdapterChoice, Gpu};
use crate::infer::{self, FolderWeights, Tag};
use crate::model::{Arch, ResNet};
use crate::paths::weights_dir;

#[derive(Subcommand)]
pub enum TrainCommand {
    /// A CIFAR ResNet or plain net with the paper's recipe
    Cifar10(CifarArgs),
    /// A torchvision ResNet on a folder of photos (DIR/<class>/<image>), from scratch or fine-tuned
    Folder(FolderArgs),
}

#[derive(Subcommand)]
pub enum EvalCommand {
    /// Weights on the CIFAR-10 test set
    Cifar10(EvalCifarArgs),
    /// A checkpoint of `train folder` on a folder of photos: top-1, top-5, the most confused classes
    Folder(EvalFolderArgs),
}

/// What every training run takes.
#[derive(Args)]
pub struct RunArgs {
    /// Train for this many epochs (instead of --steps) [default: cifar10 164 (64000 steps); folder 10
    /// with --init, 90 without]
    #[arg(long, conflicts_with = "steps", value_parser = args::positive)]
    epochs: Option<f32>,
    /// Train for this many SGD steps
    #[arg(long, value_parser = args::count)]
    steps: Option<usize>,
    /// Images per SGD step [default: cifar10 128; folder 32 with --init, 256 without]
    #[arg(long, value_parser = args::count)]
    batch_size: Option<usize>,
    /// Peak learning rate, above 0 [default: 0.1; folder with --init 0.01]
    #[arg(long, value_parser = args::positive)]
    lr: Option<f32>,
    /// SGD momentum, in [0, 1) [default: 0.9]
    #[arg(long, value_parser = args::momentum)]
    momentum: Option<f32>,
    /// L2 weight decay on every parameter, at least 0 [default: 1e-4]
    #[arg(long, value_parser = args::non_negative)]
    weight_decay: Option<f32>,
    /// Learning-rate schedule: paper (/10 at 50 % and 75 % of the steps), cosine or constant
    /// [default: paper; folder with --init cosine]
    #[arg(long, value_enum)]
    schedule: Option<Schedule>,
    /// Divide the rate by 10 at each of these epochs (30,60 as torchvision's ImageNet recipe);
    /// sets --schedule drops
    #[arg(long, value_delimiter = ',', value_parser = args::positive, conflicts_with = "schedule")]
    lr_drops: Option<Vec<f32>>,
    /// Seed of the initial weights, the shuffle, the augmentation and the split [default: 0]
    #[arg(long)]
    seed: Option<u64>,
    /// Continue a run from a checkpoint: weights, optimizer, step and recipe
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Write the final state here
    #[arg(long)]
    save: Option<PathBuf>,
    /// last.safetensors, best.safetensors, log.jsonl and curves.png go here [default: runs/MODEL,
    /// folder runs/DIRNAME-MODEL]
    #[arg(long)]
    checkpoint_dir: Option<PathBuf>,
    /// Evaluate (and checkpoint) every N steps [default: every epoch]
    #[arg(long, value_parser = args::count)]
    eval_every: Option<usize>,
    /// Also write the JSON-lines log here
    #[arg(long)]
    json_log: Option<PathBuf>,
    #[command(flatten)]
    adapter: AdapterChoice,
}

#[derive(Args)]
pub struct CifarArgs {
    /// Folder with the CIFAR-10 binary files (downloaded there when missing)
    #[arg(long)]
    data: Option<PathBuf>,
    /// resnet20|32|44|56|110 or plain20|32|44|56|110 (any depth 6n+2) [default: resnet20]
    #[arg(long)]
    model: Option<String>,
    /// a: the paper's parameter-free shortcut; b: 1x1 conv + BN projection where shapes change
    #[arg(long)]
    shortcut: Option<char>,
    /// No random crops and flips
    #[arg(long)]
    no_augment: bool,
    /// Keep the file order (data_batch_1's first record first)
    #[arg(long)]
    no_shuffle: bool,
    /// Hold out the last N training images and test on them (the paper's 45k/5k split: 5000)
    #[arg(long)]
    val_split: Option<usize>,
    /// Per-channel mean of the normalisation [default: CIFAR-10's]
    #[arg(long, value_parser = args::triple)]
    mean: Option<[f32; 3]>,
    /// Per-channel std of the normalisation [default: CIFAR-10's]
    #[arg(long, value_parser = args::positive_triple)]
    std: Option<[f32; 3]>,
    /// Start from these weights (safetensors with torchvision names)
    #[arg(long, conflicts_with = "resume")]
    init: Option<PathBuf>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args)]
pub struct FolderArgs {
    /// DIR/<class>/<image>, or DIR/train/<class>/... and DIR/val/<class>/...
    dir: PathBuf,
    /// resnet18, resnet34, resnet50, resnet101 or resnet152 [default: resnet18]
    #[arg(long)]
    model: Option<String>,
    /// Images are SIZE x SIZE (32 to 1024)
    #[arg(long, default_value_t = 224, value_parser = args::input_size, conflicts_with = "resume")]
    size: u32,
    /// standard: torchvision's RandomResizedCrop and flip; paper: the paper's scale augmentation
    /// (shorter side in [256, 480]), crop and flip; none: the evaluation transform
    #[arg(long, value_enum, default_value = "standard", conflicts_with = "resume")]
    augment: Augment,
    /// Where DIR has no train/ and val/: hold out this share of every class (0.1) or this many
    /// images (500) for validation, picked by --seed [default: 0.1]
    #[arg(long, conflicts_with = "resume")]
    val_split: Option<ValSplit>,
    /// Start from torchvision's weights (tv1, tv2) or a file (safetensors or .pth with
    /// torchvision's names); an fc of another number of classes is replaced by a fresh one
    #[arg(long, conflicts_with = "resume")]
    init: Option<String>,
    /// Train the fc layer only (the backward stops at it)
    #[arg(long, conflicts_with = "resume")]
    freeze_backbone: bool,
    /// Batch norm normalises with the running statistics and keeps them (frozen batch norm, for
    /// small batches or a few photos)
    #[arg(long, conflicts_with = "resume")]
    bn_eval: bool,
    /// Threads that decode and augment photos [default: the cores]
    #[arg(long, value_parser = args::count)]
    workers: Option<usize>,
    /// Stop at the first unreadable image instead of skipping it with a warning
    #[arg(long)]
    strict: bool,
    /// Per-channel mean of the normalisation [default: ImageNet's]
    #[arg(long, value_parser = args::triple, conflicts_with = "resume")]
    mean: Option<[f32; 3]>,
    /// Per-channel std of the normalisation [default: ImageNet's]
    #[arg(long, value_parser = args::positive_triple, conflicts_with = "resume")]
    std: Option<[f32; 3]>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args)]
pub struct EvalCifarArgs {
    /// Folder with the CIFAR-10 binary files (downloaded there when missing)
    #[arg(long)]
    data: Option<PathBuf>,
    /// resnet20|32|44|56|110 or plain20|32|44|56|110 (any depth 6n+2)
    #[arg(long)]
    model: String,
    /// a: the paper's parameter-free shortcut; b: 1x1 conv + BN projection where shapes change
    #[arg(long, default_value = "a")]
    shortcut: char,
    /// Weights (safetensors with torchvision names), e.g. a checkpoint of `train`
    #[arg(long)]
    weights: PathBuf,
    /// [default: the weights' metadata, else CIFAR-10's]
    #[arg(long, value_parser = args::triple)]
    mean: Option<[f32; 3]>,
    /// [default: the weights' metadata, else CIFAR-10's]
    #[arg(long, value_parser = args::positive_triple)]
    std: Option<[f32; 3]>,
    /// Images per evaluation batch
    #[arg(long, default_value_t = 500, value_parser = args::count)]
    batch_size: usize,
    /// Print one JSON document: {"model", "images", "correct", "accuracy", "loss"}
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    adapter: AdapterChoice,
}

#[derive(Args)]
pub struct EvalFolderArgs {
    /// DIR/<class>/<image>: DIR/val where DIR has train/ and val/, else the images the run held
    /// out of DIR with --val-split (all of DIR with --all, or where the run had train/ and val/)
    dir: PathBuf,
    /// A checkpoint of `train folder` (its metadata names the model, the classes and the transform)
    #[arg(long)]
    weights: PathBuf,
    /// Every image of DIR, not only those the run held out with --val-split
    #[arg(long)]
    all: bool,
    /// Images per evaluation batch
    #[arg(long, default_value_t = 32, value_parser = args::count)]
    batch_size: usize,
    /// Threads that decode photos [default: the cores]
    #[arg(long, value_parser = args::count)]
    workers: Option<usize>,
    /// Stop at the first unreadable image instead of skipping it with a warning
    #[arg(long)]
    strict: bool,
    /// Print one JSON document: {"model", "weights", "images", "correct", "top1", "top5" (null with
    /// five classes or fewer), "loss",
    /// "skipped", "classes": [{"name", "images", "accuracy"}], "confused": [{"truth", "predicted", "images"}]}
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    adapter: AdapterChoice,
}

pub fn train(command: TrainCommand) -> Result<()> {
    match command {
        TrainCommand::Cifar10(args) => train_cifar(args),
        TrainCommand::Folder(args) => train_folder(args),
    }
}

pub fn eval(command: EvalCommand) -> Result<()> {
    match command {
        EvalCommand::Cifar10(args) => eval_cifar(args),
        EvalCommand::Folder(args) => eval_folder(args),
    }
}

/// The checkpoint `--resume` names and the recipe it holds.
fn resumed(path: &Option<PathBuf>) -> Result<Option<(PathBuf, Checkpoint, Recipe)>> {
    let Some(path) = path else { return Ok(None) };
    let ck = Checkpoint::read(path)?;
    let json = ck
        .meta("recipe")
        .with_context(|| format!("{} is not a training checkpoint (no recipe in its metadata)", path.display()))?;
    let recipe = serde_json::from_str(json).context("reading the recipe of the checkpoint")?;
    Ok(Some((path.clone(), ck, recipe)))
}

impl RunArgs {
    /// The flags that override the recipe's.
    fn apply(&self, r: &mut Recipe) {
        set(&mut r.batch_size, self.batch_size);
        set(&mut r.lr, self.lr);
        set(&mut r.momentum, self.momentum);
        set(&mut r.weight_decay, self.weight_decay);
        set(&mut r.schedule, self.schedule);
        set(&mut r.seed, self.seed);
        set(&mut r.steps, self.steps);
    }

    /// Trains and prints the summary.
    fn run(
        self,
        recipe: &mut Recipe,
        sets: (&dyn TrainSet, &dyn super::EvalSet),
        start: Start,
        dir: PathBuf,
    ) -> Result<()> {
        let steps_of = |epochs: f32| (epochs as f64 * (sets.0.images() / recipe.batch_size) as f64).round() as usize;
        if let Some(epochs) = self.epochs {
            recipe.steps = steps_of(epochs).max(1);
        }
        if let Some(drops) = &self.lr_drops {
            recipe.schedule = Schedule::Drops;
            recipe.lr_drops = drops.iter().map(|&e| steps_of(e)).collect();
        }
        ensure!(
            recipe.schedule != Schedule::Drops || !recipe.lr_drops.is_empty(),
            "--schedule drops needs the epochs to drop at: --lr-drops 30,60"
        );
        let out = Outputs {
            save: self.save,
            checkpoint_dir: self.checkpoint_dir.unwrap_or(dir),
            eval_every: self.eval_every,
            json_log: self.json_log,
        };
        let gpu = Gpu::open(&self.adapter)?;
        let summary = super::train(&gpu, recipe, sets.0, sets.1, start, &out)?;
        for line in super::summary_lines(recipe, &summary) {
            eprintln!("{line}");
        }
        eprintln!("checkpoints, log.jsonl and curves.png are in {}", out.checkpoint_dir.display());
        Ok(())
    }
}

fn train_cifar(args: CifarArgs) -> Result<()> {
    let resumed = resumed(&args.run.resume)?;
    let mut recipe = match &resumed {
        Some((path, _, recipe)) => {
            ensure!(
                recipe.folder.is_none(),
                "{} is a checkpoint of train folder, not of train cifar10",
                path.display()
            );
            recipe.clone()
        }
        None => Recipe::paper(args.model.as_deref().unwrap_or("resnet20")),
    };
    if let Some(model) = &args.model {
        ensure!(
            resumed.is_none() || *model == recipe.model,
            "--model {model} differs from the checkpoint's {}",
            recipe.model
        );
        recipe = Recipe { model: model.clone(), ..recipe };
    }
    let r = &mut recipe;
    args.run.apply(r);
    set(&mut r.shortcut, args.shortcut);
    set(&mut r.val_split, args.val_split);
    set(&mut r.mean, args.mean);
    set(&mut r.std, args.std);
    r.augment &= !args.no_augment;
    r.shuffle &= !args.no_shuffle;
    recipe.arch()?;

    let dir = args.data.clone().unwrap_or_else(cifar::default_dir);
    let (train_set, test_set) = super::dataset(&dir)?;
    let (train_set, test_set) = match recipe.val_split {
        0 => (train_set, test_set),
        n => train_set.split_last(n)?,
    };
    let start = match (args.init, resumed) {
        (Some(path), _) => {
            let ck = Checkpoint::read(&path)?;
            Start::Init(path, ck)
        }
        (_, Some((path, ck, _))) => Start::Resume(path, ck),
        _ => Start::Fresh,
    };
    let dir = PathBuf::from("runs").join(&recipe.model);
    args.run.run(&mut recipe, (&train_set, &test_set), start, dir)
}

/// The folder's training and validation images: `DIR/train` and `DIR/val`, or `DIR` split (then
/// also the split and the folder's fingerprint, which the recipe keeps), and in words where the
/// validation images are from.
type FolderSets = (ImageFolder, ImageFolder, Option<(ValSplit, String)>, String);

fn folder_sets(dir: &Path, split: Option<ValSplit>, seed: u64) -> Result<FolderSets> {
    let (train, val) = ImageFolder::scan_dataset(dir)?;
    if let Some(val) = val {
        ensure!(
            split.is_none(),
            "{} has train/ and val/ folders; --val-split splits a folder that has not",
            dir.display()
        );
        return Ok((train, val, None, format!("{}/val", dir.display())));
    }
    let split = split.unwrap_or(ValSplit::Fraction(0.1));
    let fingerprint = train.fingerprint(dir);
    let (train, val) = train.split(split, seed)?;
    ensure!(
        !val.images.is_empty(),
        "--val-split holds out no image of {}: validation needs one or more",
        dir.display()
    );
    let how = match split {
        ValSplit::Fraction(f) => format!("{:.0} % of every class", 100.0 * f),
        ValSplit::Count(n) => format!("about {n} images, rounded per class"),
    };
    Ok((train, val, Some((split, fingerprint)), format!("--val-split: {how}, seed {seed}")))
}

fn train_folder(args: FolderArgs) -> Result<()> {
    let resumed = resumed(&args.run.resume)?;
    ensure!(
        resumed.is_none() || args.run.seed.is_none(),
        "--seed is the resumed run's own: it picked the validation images and orders the batches"
    );
    let seed = args.run.seed.or(resumed.as_ref().map(|(_, _, r)| r.seed)).unwrap_or(0);
    let split = match &resumed {
        Some((path, _, recipe)) => {
            let folder = recipe
                .folder
                .as_ref()
                .with_context(|| format!("{} is a checkpoint of train cifar10, not of train folder", path.display()))?;
            folder.val_split
        }
        None => args.val_split,
    };
    let (train, val, split, held) = folder_sets(&args.dir, split, seed)?;
    if let (Some((path, _, recipe)), Some((_, fingerprint))) = (&resumed, &split) {
        let there = &recipe.folder.as_ref().expect("checked above").fingerprint;
        ensure!(
            there == fingerprint,
            "{} holds other files than the folder {} split (fingerprint {fingerprint} here, {there} there): resuming \
             would move images between training and validation",
            args.dir.display(),
            path.display()
        );
    }
    eprintln!(
        "{}: {} classes, {} training images, {} validation images ({held})",
        args.dir.display(),
        train.classes.len(),
        train.images.len(),
        val.images.len()
    );
    let counts = train.counts();
    let shown: Vec<String> = train.classes.iter().zip(&counts).take(10).map(|(c, n)| format!("{c} {n}")).collect();
    let more = if counts.len() > 10 { format!(", and {} more", counts.len() - 10) } else { String::new() };
    eprintln!("  training images per class: {}{more}", shown.join(", "));

    let mut recipe = match &resumed {
        Some((path, _, recipe)) => {
            let folder = recipe.folder.as_ref().expect("checked above");
            ensure!(
                folder.classes == train.classes,
                "{} was trained on classes {:?}; {} holds {:?}",
                path.display(),
                folder.classes,
                args.dir.display(),
                train.classes
            );
            recipe.clone()
        }
        None => {
            ensure!(
                !args.freeze_backbone || args.init.is_some(),
                "--freeze-backbone trains the fc layer only: start from pretrained weights with --init tv1, tv2 or FILE"
            );
            let folder = FolderRecipe {
                size: args.size,
                augment: args.augment,
                classes: train.classes.clone(),
                val_split: split.as_ref().map(|(s, _)| *s),
                fingerprint: split.map(|(_, f)| f).unwrap_or_default(),
                freeze_backbone: args.freeze_backbone,
                bn_eval: args.bn_eval,
            };
            let model = args.model.as_deref().unwrap_or("resnet18");
            let mut recipe = Recipe::folder(model, args.init.is_some(), folder);
            let per_epoch = (train.images.len() / args.run.batch_size.unwrap_or(recipe.batch_size)).max(1);
            recipe.steps = per_epoch * if args.init.is_some() { 10 } else { 90 };
            recipe
        }
    };
    if let (Some(model), Some(_)) = (&args.model, &resumed) {
        ensure!(*model == recipe.model, "--model {model} differs from the checkpoint's {}", recipe.model);
    }
    args.run.apply(&mut recipe);
    set(&mut recipe.mean, args.mean);
    set(&mut recipe.std, args.std);
    let arch = recipe.arch()?;

    let start = match (&args.init, resumed) {
        (Some(init), _) => init_weights(init, &arch, recipe.seed)?,
        (_, Some((path, ck, _))) => Start::Resume(path, ck),
        _ => Start::Fresh,
    };
    let workers = args.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(4, |n| n.get()));
    let size = recipe.folder.as_ref().expect("a folder recipe").size;
    let train_set = FolderTrain { folder: Arc::new(train), workers, strict: args.strict };
    let val_set = FolderEval::new(val, eval_resize(size), size, workers, args.strict)?;
    let name = args.dir.canonicalize().ok().and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()));
    let dir = PathBuf::from("runs").join(format!("{}-{}", name.unwrap_or_else(|| "folder".into()), recipe.model));
    args.run.run(&mut recipe, (&train_set, &val_set), start, dir)
}

/// `--init tv1|tv2|FILE`: the weights, checked against `arch`; an fc of another number of classes
/// is left out and the run initialises a fresh one ([`Start::FreshFc`]), said in one line.
pub fn init_weights(init: &str, arch: &Arch, seed: u64) -> Result<Start> {
    let path = match Tag::parse(init) {
        Some(tag) => {
            let file = infer::torchvision_file(&arch.name, tag)?;
            infer::fetch(&file, &infer::weights_url(), &weights_dir())?
        }
        None => PathBuf::from(init),
    };
    let mut ck = infer::read_weights(&path)?;
    let fc = vec![arch.classes, arch.features()];
    let had = ck.tensors.get("fc.weight").map(|(shape, _)| shape.clone());
    let keep = had.as_ref() == Some(&fc);
    if !keep {
        ck.tensors.remove("fc.weight");
        ck.tensors.remove("fc.bias");
    }
    let mut expected = arch.parameters();
    expected.extend(arch.buffers());
    expected.retain(|(name, _)| keep || !name.starts_with("fc."));
    ck.check(&expected, &arch.name, &path)
        .with_context(|| format!("--init: the weights do not fit {} (are they another model's?)", arch.name))?;
    if keep {
        eprintln!("{}: its fc layer fits {} classes and is kept", path.display(), fc[0]);
    } else {
        let had = had.map_or("no fc layer".into(), |s| format!("an fc layer of {} classes", s[0]));
        eprintln!(
            "{}: {had}, replaced by a fresh one of {} classes (seed {seed}); the rest is loaded",
            path.display(),
            fc[0]
        );
    }
    Ok(if keep { Start::Init(path, ck) } else { Start::FreshFc(path, ck) })
}

/// A mean or std from checkpoint metadata (`0.485,0.456,0.406`).
fn meta_triple(ck: &Checkpoint, key: &str) -> Option<[f32; 3]> {
    args::triple(ck.meta(key)?).ok()
}

fn eval_cifar(args: EvalCifarArgs) -> Result<()> {
    let ck = Checkpoint::read(&args.weights)?;
    if let Some(arch) = ck.meta("arch") {
        ensure!(arch == args.model, "{} holds a {arch}, not a {}", args.weights.display(), args.model);
    }
    let shortcut = ck.meta("shortcut").and_then(|s| s.chars().next()).unwrap_or(args.shortcut);
    let recipe = Recipe { shortcut, ..Recipe::paper(&args.model) };
    let mean = args.mean.or_else(|| meta_triple(&ck, "mean")).unwrap_or(cifar::MEAN);
    let std = args.std.or_else(|| meta_triple(&ck, "std")).unwrap_or(cifar::STD);
    let dir = args.data.clone().unwrap_or_else(cifar::default_dir);
    cifar::ensure_downloaded(&dir, cifar::URL, &crate::data::download::Checksum::Md5(cifar::MD5.into()))?;
    let test_set = Cifar10::load_test(&dir)?;
    let gpu = Gpu::open(&args.adapter)?;
    let model = ResNet::new(&gpu, recipe.arch()?)?;
    model.restore(&gpu, &ck, false, &args.weights)?;
    let eval = Evaluator::new(&gpu, &model, test_set.len(), args.batch_size)?.run(&gpu, &test_set, mean, std)?;
    let accuracy = eval.correct as f64 / eval.images as f64;
    if args.json {
        let doc = serde_json::json!({"model": args.model, "images": eval.images, "correct": eval.correct, "accuracy": accuracy, "loss": eval.loss});
        println!("{doc}");
    } else {
        println!(
            "{}: {}/{} correct, accuracy {:.2}%, error {:.2}%, loss {:.4}",
            args.model,
            eval.correct,
            eval.images,
            100.0 * accuracy,
            100.0 * (1.0 - accuracy),
            eval.loss
        );
    }
    Ok(())
}

fn eval_folder(args: EvalFolderArgs) -> Result<()> {
    let ck = Checkpoint::read(&args.weights)?;
    let Some(trained) = FolderWeights::of(&ck, &args.weights)? else {
        bail!(
            "{} names no classes in its metadata: eval folder evaluates checkpoints of train folder",
            args.weights.display()
        );
    };
    let (train, val) = ImageFolder::scan_dataset(&args.dir)?;
    // A run that split the folder held out these images: the same split of the same folder.
    let recipe: Option<Recipe> = ck.meta("recipe").and_then(|r| serde_json::from_str(r).ok());
    let split = recipe.as_ref().and_then(|r| {
        let folder = r.folder.as_ref()?;
        Some((folder.val_split?, r.seed, folder.fingerprint.clone()))
    });
    let (folder, shown) = match (val, split) {
        (Some(val), _) => (val, format!("{}/val", args.dir.display())),
        (None, Some((split, seed, there))) if !args.all => {
            let here = train.fingerprint(&args.dir);
            ensure!(
                here == there,
                "{} holds other files than the folder its run split (fingerprint {here} here, {there} there): its \
                 held-out images cannot be told apart; --all evaluates every image",
                args.dir.display()
            );
            let (_, held) = train.split(split, seed)?;
            let shown = format!("the {} images of {} its run held out", held.images.len(), args.dir.display());
            (held, shown)
        }
        (None, _) => (train, args.dir.display().to_string()),
    };
    ensure!(
        folder.classes == trained.classes,
        "{} was trained on classes {:?}; {shown} holds {:?}",
        args.weights.display(),
        trained.classes,
        folder.classes
    );
    let workers = args.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(4, |n| n.get()));
    let t = trained.transform;
    let set = FolderEval::new(folder, t.resize, t.crop, workers, args.strict)?;
    let gpu = Gpu::open(&args.adapter)?;
    let model = ResNet::new(&gpu, trained.arch.clone())?;
    model.restore(&gpu, &ck, false, &args.weights)?;
    let eval =
        Evaluator::new(&gpu, &model, set.folder.images.len(), args.batch_size)?.run(&gpu, &set, t.mean, t.std)?;
    for error in &eval.skipped {
        eprintln!("warning: skipped {error}");
    }
    report(&trained, &args, &shown, &eval);
    Ok(())
}

/// Prints `eval folder`'s figures: top-1, top-5, loss, the classes by accuracy and the most
/// confused pairs.
fn report(trained: &FolderWeights, args: &EvalFolderArgs, shown: &str, eval: &Evaluation) {
    let names = &trained.classes;
    let k = names.len();
    let per_class: Vec<(usize, usize)> =
        (0..k).map(|c| (eval.confusion[c * k..(c + 1) * k].iter().sum(), eval.confusion[c * k + c])).collect();
    let pairs = eval.confused_pairs(5);
    if args.json {
        let classes: Vec<serde_json::Value> = names
            .iter()
            .zip(&per_class)
            .map(|(name, &(n, right))| {
                serde_json::json!({"name": name, "images": n, "accuracy": if n > 0 { right as f64 / n as f64 } else { 0.0 }})
            })
            .collect();
        let confused: Vec<serde_json::Value> = pairs
            .iter()
            .map(|&(t, p, n)| serde_json::json!({"truth": names[t], "predicted": names[p], "images": n}))
            .collect();
        let doc = serde_json::json!({"model": trained.arch.name, "weights": args.weights.display().to_string(),
            "images": eval.images, "correct": eval.correct, "top1": 1.0 - eval.error(), "top5": eval.top5_error().map(|e| 1.0 - e),
            "loss": eval.loss, "skipped": eval.skipped.len(), "classes": classes, "confused": confused});
        println!("{doc}");
        return;
    }
    println!(
        "{} on {shown}: top-1 {:.2}% ({}/{}){}, loss {:.4}{}",
        trained.arch.name,
        100.0 * (1.0 - eval.error()),
        eval.correct,
        eval.images,
        eval.top5_error().map_or(String::new(), |e| format!(", top-5 {:.2}%", 100.0 * (1.0 - e))),
        eval.loss,
        if eval.skipped.is_empty() {
            String::new()
        } else {
            format!(", {} unreadable images skipped", eval.skipped.len())
        }
    );
    let mut order: Vec<usize> = (0..k).filter(|&c| per_class[c].0 > 0).collect();
    order.sort_by(|&a, &b| {
        let acc = |c: usize| per_class[c].1 as f64 / per_class[c].0 as f64;
        acc(a).total_cmp(&acc(b)).then(a.cmp(&b))
    });
    println!("worst classes:");
    for &c in order.iter().take(5) {
        let (n, right) = per_class[c];
        println!("  {:>6.2}%  {} ({right}/{n})", 100.0 * right as f64 / n as f64, names[c]);
    }
    if !pairs.is_empty() {
        println!("most confused (truth -> predicted):");
        for (t, p, n) in pairs {
            let share = 100.0 * n as f64 / per_class[t].0 as f64;
            println!("  {n:>5}  {} -> {} ({share:.1}% of {})", names[t], names[p], names[t]);
        }
    }
}

/// `*slot = v` where a flag gave `v`.
fn set<T>(slot: &mut T, v: Option<T>) {
    if let Some(v) = v {
        *slot = v;
    }
}
