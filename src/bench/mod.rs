//! `bench` and `adapters`: cross-vendor GPU benchmarking of whole training and inference steps.
//!
//! For every adapter, `bench` first checks the kernels against their CPU twins in `reference`
//! (a fast wrong kernel must not post a number), then measures the adapter's own fp32 FMA rate
//! and copy bandwidth with two microbenchmarks, then times each configuration (model, mode,
//! batch): `warmup` untimed steps, then `iters` timed steps, each submitted alone and waited for.
//! Times come from GPU timestamp queries written at compute pass boundaries where the adapter has
//! them, else from the wall clock around submit + wait; either way they exclude recording the
//! command buffer on the CPU.
//!
//! FLOPs are counted from the architecture, not measured: 2 x the multiply-adds of every conv and
//! the fc for one image forward, and for a training step 3x that (the forward and the two
//! backward GEMMs, input gradient and weight gradient). BN, ReLU, pooling, the loss and the
//! optimizer are not counted.
//!
//! Bytes (`gbs`, `% BW`) are the sizes of the tensors each dispatch binds, every tensor counted
//! once per dispatch: the least memory traffic of the step, as a share of the copy bandwidth.

mod compare;
mod decode;
mod flops;
mod measure;
mod peak;
mod report;
mod selfcheck;
mod tables;

pub use crate::gpu::AdapterJson;
pub use compare::{compare_files, compare_table, read_reports};
pub use decode::decode_rates;
pub use flops::{ConvShape, convs, flop_per_image, forward_macs};
pub use measure::{bench_adapter, measure};
pub use peak::{PEAK_FMA_WGSL, measure_peak, peak_fma, peak_fma_reference};
pub use report::{Kind, LayerTime, Measurement, Peak, Report, block_of};
pub use selfcheck::self_check;
pub use tables::{human_tables, layer_tables};

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};

use crate::gpu::timing::{Submitted, Timestamps, submit};
use crate::gpu::{self, AdapterChoice, Gpu};
use crate::kernels::Dispatch;
use crate::model::{Arch, Shortcut};

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: Option<BenchCommand>,
    /// Models, comma-separated: resnet18|34|50|101|152 (ImageNet), resnetD or plainD with D = 6n+2
    /// (CIFAR). Without --model, --batch and --mode a representative suite runs; with any of them
    /// the others default to resnet20, 32 and both
    #[arg(long, value_delimiter = ',')]
    pub model: Vec<String>,
    /// CIFAR shortcut: a (the paper's, parameter-free) or b (1x1 conv + BN projection)
    #[arg(long, value_enum, default_value = "a")]
    pub shortcut: ShortcutArg,
    /// Batch sizes, comma-separated, e.g. 1,8,32
    #[arg(long, value_delimiter = ',', value_parser = crate::args::count)]
    pub batch: Vec<usize>,
    /// train: forward, loss, backward and SGD; infer: forward with BN folded into the convs
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
    #[command(flatten)]
    pub adapter: AdapterChoice,
    /// Benchmark every adapter on --backend (default: all backends), one after the other
    #[arg(long, conflicts_with = "adapter")]
    pub all_adapters: bool,
    /// Untimed steps before timing [default: 3; 1 on software adapters]
    #[arg(long)]
    pub warmup: Option<usize>,
    /// Timed steps per configuration [default: 20; 5 on software adapters]
    #[arg(long, value_parser = crate::args::count)]
    pub iters: Option<usize>,
    /// Also time every layer (a compute pass each, with timestamp queries), rolled up per block and
    /// per kernel kind
    #[arg(long)]
    pub per_layer: bool,
    /// Write the results as JSON to FILE; `-` writes them to stdout, and nothing else goes there
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// auto: GPU timestamp queries where the adapter has them, else the wall clock
    #[arg(long, value_enum, default_value = "auto")]
    pub timer: TimerArg,
}

#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// Print a side-by-side table of `bench --json` files, with ratios to the first
    Compare(CompareArgs),
    /// Time the photo-folder loader (decode and augment) per worker count, to size --workers
    Decode(decode::DecodeArgs),
}

#[derive(clap::Args, Debug)]
pub struct CompareArgs {
    /// Files written by `bench --json`; the first is the baseline
    #[arg(required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum ShortcutArg {
    A,
    B,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum ModeArg {
    Train,
    Infer,
    Both,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerArg {
    Auto,
    Timestamps,
    WallClock,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    match &args.command {
        Some(BenchCommand::Compare(compare)) => {
            print!("{}", compare_files(&compare.files)?);
            return Ok(());
        }
        Some(BenchCommand::Decode(decode)) => return decode::run(decode),
        None => {}
    }
    // Every model name is checked before any adapter is opened.
    for model in &args.model {
        Arch::parse(model, args.shortcut.into())?;
    }
    let adapters = if args.all_adapters { args.adapter.adapters()? } else { vec![args.adapter.select()?] };
    let count = adapters.len();
    let mut reports = Vec::new();
    let mut failures = Vec::new();
    for adapter in adapters {
        let name = gpu::describe(&adapter.get_info());
        match bench_adapter_from_args(adapter, args) {
            Ok(report) => reports.push(report),
            Err(error) if args.all_adapters => {
                eprintln!("error on {name}: {error:#}");
                failures.push(name);
            }
            Err(error) => return Err(error),
        }
    }

    let tables = human_tables(&reports);
    match args.json.as_deref() {
        Some(path) if path == Path::new("-") => {
            println!("{}", json_text(&reports, args.all_adapters)?);
            eprint!("{tables}");
        }
        Some(path) => {
            print!("{tables}");
            std::fs::write(path, json_text(&reports, args.all_adapters)? + "\n")
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
        None => print!("{tables}"),
    }
    ensure!(failures.is_empty(), "{} of {count} adapters failed: {}", failures.len(), failures.join("; "));
    Ok(())
}

/// One report per adapter; with `--all-adapters` a JSON array of them even if there is one.
fn json_text(reports: &[Report], all_adapters: bool) -> Result<String> {
    Ok(if all_adapters { serde_json::to_string_pretty(reports)? } else { serde_json::to_string_pretty(&reports[0])? })
}

impl From<ShortcutArg> for Shortcut {
    fn from(arg: ShortcutArg) -> Self {
        match arg {
            ShortcutArg::A => Shortcut::A,
            ShortcutArg::B => Shortcut::B,
        }
    }
}

fn bench_adapter_from_args(adapter: wgpu::Adapter, args: &BenchArgs) -> Result<Report> {
    let gpu = Gpu::from_adapter(adapter)?;
    eprintln!("adapter: {}", gpu.describe());
    let software = gpu::is_software(&gpu.info);
    let configs = if args.model.is_empty() && args.batch.is_empty() && args.mode.is_none() {
        if software {
            eprintln!(
                "software adapter: running the reduced suite (resnet20 batch 32 train and infer, resnet18 batch 1 \
                 infer, few iterations); choose others with --model, --batch and --mode"
            );
        }
        default_suite(software)
    } else {
        let models = if args.model.is_empty() { vec!["resnet20".to_string()] } else { args.model.clone() };
        let batches = if args.batch.is_empty() { vec![32] } else { args.batch.clone() };
        let modes = match args.mode.unwrap_or(ModeArg::Both) {
            ModeArg::Train => vec![Mode::Train],
            ModeArg::Infer => vec![Mode::Infer],
            ModeArg::Both => vec![Mode::Train, Mode::Infer],
        };
        let mut configs = Vec::new();
        for model in &models {
            for &batch in &batches {
                for &mode in &modes {
                    configs.push(Config { model: model.clone(), shortcut: args.shortcut.into(), mode, batch });
                }
            }
        }
        configs
    };
    let has_timestamps = gpu.features.contains(wgpu::Features::TIMESTAMP_QUERY);
    let timer = match args.timer {
        TimerArg::Auto => Timer::best(&gpu),
        TimerArg::WallClock => Timer::WallClock,
        TimerArg::Timestamps if has_timestamps => Timer::Timestamps,
        TimerArg::Timestamps => {
            bail!("adapter {} has no timestamp queries; use --timer auto or wall-clock", gpu.info.name)
        }
    };
    let defaults = Timing::defaults(software, timer);
    let options = Timing {
        warmup: args.warmup.unwrap_or(defaults.warmup),
        iters: args.iters.unwrap_or(defaults.iters),
        per_layer: args.per_layer,
        timer,
    };
    bench_adapter(&gpu, &configs, &options)
}

/// What a configuration times.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// `TrainStep`: forward, loss, backward and SGD in one command buffer.
    Train,
    /// `InferStep`: forward with BN folded into the convs.
    Infer,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Train => "train",
            Mode::Infer => "infer",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub model: String,
    /// The CIFAR shortcut; ImageNet models always have B, plain nets none.
    pub shortcut: Shortcut,
    pub mode: Mode,
    pub batch: usize,
}

impl Config {
    pub fn new(model: &str, mode: Mode, batch: usize) -> Self {
        Self { model: model.into(), shortcut: Shortcut::A, mode, batch }
    }
}

/// With no --model, --batch or --mode: on a GPU, CIFAR and ImageNet networks in both modes at a
/// latency batch (1) and a throughput batch, about a minute in all; on a software adapter, where a
/// ResNet-20 training step at batch 32 takes seconds, three configurations.
pub fn default_suite(software: bool) -> Vec<Config> {
    use Mode::{Infer, Train};
    let list: &[(&str, Mode, usize)] = if software {
        &[("resnet20", Train, 32), ("resnet20", Infer, 32), ("resnet18", Infer, 1)]
    } else {
        &[
            ("resnet20", Train, 128),
            ("resnet20", Infer, 1),
            ("resnet20", Infer, 128),
            ("resnet56", Train, 128),
            ("resnet18", Infer, 1),
            ("resnet18", Infer, 32),
            ("resnet18", Train, 32),
            ("resnet50", Infer, 1),
            ("resnet50", Infer, 32),
            ("resnet50", Train, 32),
        ]
    };
    list.iter().map(|&(model, mode, batch)| Config::new(model, mode, batch)).collect()
}

/// How steps are timed. `Timer::best` picks timestamps where the adapter has them; tests inject
/// `WallClock` to exercise the path of adapters without.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Timer {
    /// GPU timestamps at the beginning and end of each compute pass.
    Timestamps,
    /// The CPU clock around submit and `device.poll(wait)`; no per-layer times.
    WallClock,
}

impl Timer {
    pub fn best(gpu: &Gpu) -> Self {
        if gpu.features.contains(wgpu::Features::TIMESTAMP_QUERY) { Timer::Timestamps } else { Timer::WallClock }
    }
}

#[derive(Clone, Debug)]
pub struct Timing {
    pub warmup: usize,
    pub iters: usize,
    pub per_layer: bool,
    pub timer: Timer,
}

impl Timing {
    pub fn defaults(software: bool, timer: Timer) -> Self {
        let (warmup, iters) = if software { (1, 5) } else { (3, 20) };
        Self { warmup, iters, per_layer: false, timer }
    }
}

/// The q-quantile of `samples` with linear interpolation between order statistics (numpy's
/// default), so the median of an even count is the mean of the middle two.
pub fn percentile(samples: &[f64], q: f64) -> f64 {
    assert!(!samples.is_empty(), "a percentile of no samples was asked for");
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let x = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (x.floor() as usize, x.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (x - lo as f64)
}

/// The whole step in one compute pass: its milliseconds by timestamps, else by the wall clock.
pub(crate) fn submit_step(gpu: &Gpu, dispatches: &[Dispatch], stamps: Option<&Timestamps>) -> Result<Submitted> {
    submit(gpu, 1, stamps, |_, pass| {
        for d in dispatches {
            d.record(pass);
        }
    })
}
