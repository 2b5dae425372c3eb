//! The `resnet-wgpu` command line.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use resnet_wgpu::train;
use resnet_wgpu::train::command::{self, EvalCommand, TrainCommand};
use resnet_wgpu::{adapters, bench, infer, plot, reproduce};

#[derive(Parser)]
#[command(name = "resnet-wgpu", version, about = "Deep residual networks on any GPU through wgpu and WGSL")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a CIFAR ResNet with the paper's recipe, or an ImageNet ResNet on a folder of photos
    #[command(subcommand)]
    Train(TrainCommand),
    /// Evaluate weights on the CIFAR-10 test set or on a folder of photos
    #[command(subcommand)]
    Eval(EvalCommand),
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
        Command::Train(command) => command::train(command),
        Command::Eval(command) => command::eval(command),
        Command::Adapters(args) => adapters::adapters(&args),
        Command::Infer(args) => infer::run(&args),
        Command::Plot { logs, output } => run_plot(&logs, &output),
        Command::Bench(args) => bench::run(&args),
        Command::Reproduce(command) => reproduce::run(&command),
    }
}
