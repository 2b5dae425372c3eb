//! The `resnet-wgpu` command line.

use std::path::PathBuf;

use anyhow::{Context, Result, ensure};
use clap::{Args, Parser, Subcommand, ValueEnum};
use resnet_wgpu::checkpoint::Checkpoint;
use resnet_wgpu::data::cifar::{self, Cifar10};
use resnet_wgpu::gpu::{AdapterChoice, Gpu};
use resnet_wgpu::model::ResNet;
use resnet_wgpu::train::{self, Outputs, Recipe, Schedule, Start};
use resnet_wgpu::{adapters, args, bench, infer, plot, reproduce};

#[derive(Parser)]
#[command(name = "resnet-wgpu", version, about = "Deep residual networks on any GPU through wgpu and WGSL")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Dataset {
    Cifar10,
}

#[derive(Args)]
struct TrainArgs {
    dataset: Dataset,
    /// Folder with the CIFAR-10 binary files (downloaded there when missing)
    #[arg(long)]
    data: Option<PathBuf>,
    /// resnet20|32|44|56|110 or plain20|32|44|56|110 (any depth 6n+2)
    #[arg(long)]
    model: Option<String>,
    /// a: the paper's parameter-free shortcut; b: 1x1 conv + BN projection where shapes change
    #[arg(long)]
    shortcut: Option<char>,
    /// Train for this many epochs (instead of --steps)
    #[arg(long, conflicts_with = "steps", value_parser = args::positive)]
    epochs: Option<f32>,
    /// Train for this many SGD steps [default: 64000]
    #[arg(long, value_parser = args::count)]
    steps: Option<usize>,
    /// Images per SGD step [default: 128]
    #[arg(long, value_parser = args::count)]
    batch_size: Option<usize>,
    /// Peak learning rate, above 0 [default: 0.1]
    #[arg(long, value_parser = args::positive)]
    lr: Option<f32>,
    /// SGD momentum, in [0, 1) [default: 0.9]
    #[arg(long, value_parser = args::momentum)]
    momentum: Option<f32>,
    /// L2 weight decay on every parameter, at least 0 [default: 1e-4]
    #[arg(long, value_parser = args::non_negative)]
    weight_decay: Option<f32>,
    /// Learning-rate schedule: paper (/10 at 50 % and 75 % of the steps), cosine or constant [default: paper]
    #[arg(long, value_enum)]
    schedule: Option<Schedule>,
    /// Seed of the initial weights, the shuffle and the augmentation [default: 0]
    #[arg(long)]
    seed: Option<u64>,
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
    /// Continue a run from a checkpoint: weights, optimizer, step and recipe
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Write the final state here
    #[arg(long)]
    save: Option<PathBuf>,
    /// last.safetensors, best.safetensors, log.jsonl and curves.png go here [default: runs/MODEL]
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
struct EvalArgs {
    dataset: Dataset,
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

#[derive(Subcommand)]
enum Command {
    /// Train a CIFAR ResNet with the paper's recipe
    Train(TrainArgs),
    /// Evaluate weights on the CIFAR-10 test set
    Eval(EvalArgs),
    /// Draw the error curves of several training runs (their log.jsonl) into one PNG
    Plot {
        /// JSON-lines logs written by `train` (runs/MODEL/log.jsonl)
        #[arg(required = true)]
        logs: Vec<PathBuf>,
        /// The PNG to write
        #[arg(short, long, default_value = "curves.png")]
        output: PathBuf,
    },
    /// Classify photos with an ImageNet-pretrained ResNet (torchvision weights)
    Infer(infer::InferArgs),
    /// Benchmark training and inference (images/s, per-layer GPU time, share of peak); `bench compare`
    Bench(bench::BenchArgs),
    /// The paper's CIFAR-10 experiments, one command each: `reproduce figure6`, `reproduce table6`
    #[command(subcommand)]
    Reproduce(reproduce::ReproduceCommand),
    /// List every adapter wgpu finds, with what matters here, and which one the other commands pick
    Adapters(adapters::AdaptersArgs),
}

fn main() {
    // EGL (the GL backend's probe) wants a runtime folder and says so on every probe without one.
    if std::env::var_os("XDG_RUNTIME_DIR").is_none_or(|d| d.is_empty()) {
        let dir = std::env::temp_dir().join("resnet-wgpu-runtime");
        if std::fs::create_dir_all(&dir).is_ok() {
            // SAFETY: no other thread exists yet.
            unsafe { std::env::set_var("XDG_RUNTIME_DIR", &dir) };
        }
    }
    let _ = ctrlc::set_handler(|| train::INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst));
    if let Err(error) = run(Cli::parse()) {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

/// A mean or std from checkpoint metadata (`0.485,0.456,0.406`).
fn meta_triple(ck: &Checkpoint, key: &str) -> Option<[f32; 3]> {
    args::triple(ck.meta(key)?).ok()
}

fn run_train(args: TrainArgs) -> Result<()> {
    let resumed = match &args.resume {
        Some(path) => Some(Checkpoint::read(path)?),
        None => None,
    };
    let mut recipe = match &resumed {
        Some(ck) => {
            let json = ck.meta("recipe").with_context(|| {
                format!(
                    "{} is not a training checkpoint (no recipe in its metadata)",
                    args.resume.as_ref().unwrap().display()
                )
            })?;
            serde_json::from_str(json).context("reading the recipe of the checkpoint")?
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
    set(&mut r.shortcut, args.shortcut);
    set(&mut r.batch_size, args.batch_size);
    set(&mut r.lr, args.lr);
    set(&mut r.momentum, args.momentum);
    set(&mut r.weight_decay, args.weight_decay);
    set(&mut r.schedule, args.schedule);
    set(&mut r.seed, args.seed);
    set(&mut r.val_split, args.val_split);
    set(&mut r.mean, args.mean);
    set(&mut r.std, args.std);
    set(&mut r.steps, args.steps);
    r.augment &= !args.no_augment;
    r.shuffle &= !args.no_shuffle;
    recipe.arch()?;

    let dir = args.data.clone().unwrap_or_else(cifar::default_dir);
    let (train_set, test_set) = train::dataset(&dir)?;
    let (train_set, test_set) = match recipe.val_split {
        0 => (train_set, test_set),
        n => train_set.split_last(n)?,
    };
    if let Some(epochs) = args.epochs {
        recipe.steps = (epochs as f64 * (train_set.len() / recipe.batch_size) as f64).round() as usize;
    }
    let start = match (args.init, args.resume, resumed) {
        (Some(path), _, _) => {
            let ck = Checkpoint::read(&path)?;
            Start::Init(path, ck)
        }
        (_, Some(path), Some(ck)) => Start::Resume(path, ck),
        _ => Start::Fresh,
    };
    let out = Outputs {
        save: args.save,
        checkpoint_dir: args.checkpoint_dir.unwrap_or_else(|| PathBuf::from("runs").join(&recipe.model)),
        eval_every: args.eval_every,
        json_log: args.json_log,
    };
    let gpu = Gpu::open(&args.adapter)?;
    let summary = train::train(&gpu, &recipe, &train_set, &test_set, start, &out)?;
    for line in train::summary_lines(&recipe, &summary) {
        eprintln!("{line}");
    }
    eprintln!("checkpoints, log.jsonl and curves.png are in {}", out.checkpoint_dir.display());
    Ok(())
}

fn run_eval(args: EvalArgs) -> Result<()> {
    let ck = Checkpoint::read(&args.weights)?;
    if let Some(arch) = ck.meta("arch") {
        ensure!(arch == args.model, "{} holds a {arch}, not a {}", args.weights.display(), args.model);
    }
    let shortcut = ck.meta("shortcut").and_then(|s| s.chars().next()).unwrap_or(args.shortcut);
    let recipe = Recipe { shortcut, ..Recipe::paper(&args.model) };
    let mean = args.mean.or_else(|| meta_triple(&ck, "mean")).unwrap_or(cifar::MEAN);
    let std = args.std.or_else(|| meta_triple(&ck, "std")).unwrap_or(cifar::STD);
    let dir = args.data.clone().unwrap_or_else(cifar::default_dir);
    cifar::ensure_downloaded(&dir, cifar::URL, &resnet_wgpu::data::download::Checksum::Md5(cifar::MD5.into()))?;
    let test_set = Cifar10::load_test(&dir)?;
    let gpu = Gpu::open(&args.adapter)?;
    let model = ResNet::new(&gpu, recipe.arch()?)?;
    model.restore(&gpu, &ck, false, &args.weights)?;
    let eval = train::Evaluator::new(&gpu, &model, test_set.len(), args.batch_size)?.run(&gpu, &test_set, mean, std)?;
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

/// One chart of every run's train and test error, labelled by model (by file when models repeat).
fn run_plot(logs: &[PathBuf], output: &std::path::Path) -> Result<()> {
    let mut runs = logs.iter().map(|path| plot::read_log(path)).collect::<Result<Vec<_>>>()?;
    let labels: Vec<String> = runs.iter().map(|r| r.label.clone()).collect();
    for (run, path) in runs.iter_mut().zip(logs) {
        if labels.iter().filter(|l| **l == run.label).count() > 1 {
            run.label = format!("{} ({})", run.label, path.display());
        }
    }
    plot::plot_error(&runs, output)?;
    eprintln!("wrote {}", output.display());
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train(args) => run_train(args),
        Command::Eval(args) => run_eval(args),
        Command::Adapters(args) => adapters::adapters(&args),
        Command::Infer(args) => infer::run(&args),
        Command::Plot { logs, output } => run_plot(&logs, &output),
        Command::Bench(args) => bench::run(&args),
        Command::Reproduce(command) => reproduce::run(&command),
    }
}

/// `*slot = v` where a flag gave `v`.
fn set<T>(slot: &mut T, v: Option<T>) {
    if let Some(v) = v {
        *slot = v;
    }
}
