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

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoint;
use crate::gpu::{self, AdapterChoice, Gpu, Tensor};
use crate::kernels::{Dispatch, Kernel};
use crate::layers::{self, BatchnormParams, ConvParams, SgdParams};
use crate::reference;
use crate::resnet::{Arch, BlockKind, InferStep, ResNet, Shortcut, TrainStep};
use crate::rng::Rng;

// ---------------------------------------------------------------------------------------------
// Command line

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
    #[arg(long, value_delimiter = ',')]
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
    #[arg(long)]
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
    if let Some(BenchCommand::Compare(compare)) = &args.command {
        print!("{}", compare_files(&compare.files)?);
        return Ok(());
    }
    ensure!(args.iters != Some(0), "--iters must be at least 1");
    ensure!(!args.batch.contains(&0), "--batch sizes must be at least 1");
    // Every model name is checked before any adapter is opened.
    for model in &args.model {
        Arch::parse(model, args.shortcut.into())?;
    }
    let adapters = if args.all_adapters {
        let backend = args.adapter.backend.clone().or_else(|| std::env::var("WGPU_BACKEND").ok());
        let backends = backend.as_deref().map(gpu::backends_from_name).transpose()?.unwrap_or(wgpu::Backends::all());
        let adapters = gpu::enumerate_adapters(backends);
        ensure!(!adapters.is_empty(), "no GPU adapter found; `resnet-wgpu adapters` says what wgpu sees");
        adapters
    } else {
        vec![args.adapter.select()?]
    };
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
    let defaults = Options::defaults(software, timer);
    let options = Options {
        warmup: args.warmup.unwrap_or(defaults.warmup),
        iters: args.iters.unwrap_or(defaults.iters),
        per_layer: args.per_layer,
        timer,
    };
    bench_adapter(&gpu, &configs, &options)
}

// ---------------------------------------------------------------------------------------------
// Configurations and options

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
pub struct Options {
    pub warmup: usize,
    pub iters: usize,
    pub per_layer: bool,
    pub timer: Timer,
}

impl Options {
    pub fn defaults(software: bool, timer: Timer) -> Self {
        let (warmup, iters) = if software { (1, 5) } else { (3, 20) };
        Self { warmup, iters, per_layer: false, timer }
    }
}

// ---------------------------------------------------------------------------------------------
// The JSON report

/// One adapter's results, as `bench --json FILE` writes them; with `--all-adapters` the file holds
/// a JSON array of these, one per adapter, in the order `adapters` lists them. Keys are stable:
/// new ones may be added, none renamed or removed.
///
/// ```text
/// {
///   "tool_version": "0.1.0",              resnet-wgpu's version
///   "adapter": {"name": "NVIDIA GeForce RTX 4090", "vendor": "NVIDIA", "backend": "vulkan",
///               "device_type": "discrete_gpu", "driver": "NVIDIA 550.54", "software": false},
///   "peak": {"fp32_gflops": 80123.4,      FMA microbenchmark on this adapter
///            "bandwidth_gbs": 912.3},     buffer-to-buffer copy, bytes read + written per second
///   "timer": "timestamps",                or "wall_clock"
///   "conv": "autotune",                   conv paths timed per layer shape (the default on GPUs),
///                                         or the one path every conv ran on: shared | direct | lanes
///   "warmup": 3, "iters": 20,             untimed and timed steps per result
///   "results": [{
///     "model": "resnet50", "shortcut": "b",   "a" | "b" | "plain"
///     "mode": "train",                    "train" (TrainStep) | "infer" (InferStep, BN folded)
///     "batch": 32,
///     "median_ms": 120.5, "p10_ms": 119.8, "p90_ms": 121.9,   per step
///     "images_per_s": 265.6,              batch / median
///     "flop_per_image": 24.5e9,           2 x conv and fc MACs forward; 3x that for train
///     "gflops": 6512.0, "pct_peak": 8.1,  achieved, and as % of peak.fp32_gflops
///     "gbs": 300.1, "pct_bandwidth": 32.9, bytes bound by the step's dispatches / median, % of peak
///     "memory_bytes": 8123456789,         storage buffers the model and the plan allocated
///     "encode_ms": 1.2,                   host time to record, finish and submit the step's
///                                         command buffer (median): the CPU's cost of a step
///     "layers": [                          with --per-layer and timestamps, else []
///       {"name": "layer2.0.conv1", "kind": "conv_forward", "ms": 1.25, "bytes": 3211264}
///     ]                                   one entry per timed pass, in execution order; kind is
///   }]                                    conv_forward | conv_backward_input | conv_backward_weight
/// }                                       | batchnorm | elementwise | optimizer | other
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub tool_version: String,
    pub adapter: AdapterJson,
    pub peak: Peak,
    pub timer: Timer,
    /// Absent from files written before it was added.
    #[serde(default)]
    pub conv: String,
    pub warmup: usize,
    pub iters: usize,
    pub results: Vec<Measurement>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AdapterJson {
    pub name: String,
    pub vendor: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub software: bool,
}

impl AdapterJson {
    pub fn new(info: &wgpu::AdapterInfo) -> Self {
        let driver = match (info.driver.as_str(), info.driver_info.as_str()) {
            ("", info) => info.to_string(),
            (driver, "") => driver.to_string(),
            (driver, info) => format!("{driver} ({info})"),
        };
        Self {
            name: info.name.clone(),
            vendor: vendor_name(info.vendor),
            backend: info.backend.to_str().into(),
            device_type: device_type_name(info.device_type).into(),
            driver,
            software: gpu::is_software(info),
        }
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Peak {
    pub fp32_gflops: f64,
    pub bandwidth_gbs: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Measurement {
    pub model: String,
    pub shortcut: String,
    pub mode: Mode,
    pub batch: usize,
    pub median_ms: f64,
    pub p10_ms: f64,
    pub p90_ms: f64,
    pub images_per_s: f64,
    pub flop_per_image: f64,
    pub gflops: f64,
    pub pct_peak: f64,
    pub gbs: f64,
    pub pct_bandwidth: f64,
    pub memory_bytes: u64,
    /// Absent from files of earlier versions (read as 0).
    #[serde(default)]
    pub encode_ms: f64,
    pub layers: Vec<LayerTime>,
}

/// The GPU time of one compute pass: consecutive dispatches with the same layer label and kind.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LayerTime {
    pub name: String,
    pub kind: Kind,
    /// Median over the timed steps.
    pub ms: f64,
    /// Bytes of the tensors the pass's dispatches bind.
    pub bytes: u64,
}

/// Kernel kinds for the per-layer roll-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    ConvForward,
    ConvBackwardInput,
    ConvBackwardWeight,
    Batchnorm,
    Elementwise,
    Optimizer,
    Other,
}

impl Kind {
    pub fn of(dispatch: &Dispatch) -> Self {
        match dispatch.kernel {
            Kernel::Conv2dRowsLanes | Kernel::Conv2dPointwiseLanes | Kernel::Conv2dPointwiseChannelsLanes
                if dispatch.flag("TRANSPOSED") =>
            {
                Kind::ConvBackwardInput
            }
            kernel => Kind::of_kernel(kernel),
        }
    }

    /// The kind of every dispatch of `kernel` (of the lanes kernels that also run `TRANSPOSED`,
    /// those of the forward).
    pub fn of_kernel(kernel: Kernel) -> Self {
        use Kernel::*;
        match kernel {
            Conv2dForward
            | Conv2dForwardLanes
            | Conv2dRowsLanes
            | Conv2dStridedLanes
            | Conv2dPointwiseLanes
            | Conv2dPointwiseChannelsLanes => Kind::ConvForward,
            Conv2dBackwardInput | Conv2dBackwardInputLanes | Conv2dBackwardInputStridedLanes => Kind::ConvBackwardInput,
            Conv2dBackwardWeight
            | Conv2dBackwardWeightLanes
            | Conv2dBackwardWeightRowsLanes
            | Conv2dBackwardWeightRowsVec4Lanes
            | SumSlices => Kind::ConvBackwardWeight,
            BatchnormForwardTrain
            | BatchnormForwardTrainVec4
            | BatchnormForwardEval
            | BatchnormForwardEvalVec4
            | BatchnormBackward
            | BatchnormBackwardVec4 => Kind::Batchnorm,
            ReluForward | ReluBackward | ReluBackwardVec4 | ReluMask | ReluMaskVec4 | Add | AddVec4
            | ShortcutAForward | ShortcutABackward => Kind::Elementwise,
            Sgd => Kind::Optimizer,
            MaxpoolForward
            | MaxpoolBackward
            | AvgpoolForward
            | AvgpoolBackward
            | LinearForward
            | LinearForwardVec4
            | LinearBackwardInput
            | LinearBackwardInputVec4
            | LinearBackwardWeight
            | LinearBackwardWeightVec4
            | SoftmaxCrossEntropy
            | Conv2dWeightPanel => Kind::Other,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Kind::ConvForward => "conv forward",
            Kind::ConvBackwardInput => "conv backward-input",
            Kind::ConvBackwardWeight => "conv backward-weight",
            Kind::Batchnorm => "batch norm",
            Kind::Elementwise => "elementwise",
            Kind::Optimizer => "optimizer",
            Kind::Other => "other (pool, fc, loss)",
        }
    }
}

/// The block a layer label belongs to: `layer2.0.conv1` -> `layer2.0`; the stem's and the
/// head's layers -> `stem` and `head`.
pub fn block_of(label: &str) -> &str {
    if label.starts_with("layer") {
        let mut dots = label.match_indices('.').map(|(i, _)| i);
        return match (dots.next(), dots.next()) {
            (Some(_), Some(end)) => &label[..end],
            _ => label,
        };
    }
    match label {
        "conv1" | "bn1" | "relu" | "maxpool" => "stem",
        "avgpool" | "fc" => "head",
        "sgd" => "optimizer",
        other => other,
    }
}

fn vendor_name(id: u32) -> String {
    let known = [
        (0x1002, "AMD"),
        (0x1010, "Imagination"),
        (0x10de, "NVIDIA"),
        (0x106b, "Apple"),
        (0x13b5, "ARM"),
        (0x1414, "Microsoft"),
        (0x1ae0, "Google"),
        (0x5143, "Qualcomm"),
        (0x8086, "Intel"),
        (0x10005, "Mesa"),
    ];
    match known.iter().find(|(k, _)| *k == id) {
        Some((_, name)) => name.to_string(),
        None if id == 0 => "unknown".into(),
        None => format!("0x{id:04x}"),
    }
}

fn device_type_name(t: wgpu::DeviceType) -> &'static str {
    match t {
        wgpu::DeviceType::DiscreteGpu => "discrete_gpu",
        wgpu::DeviceType::IntegratedGpu => "integrated_gpu",
        wgpu::DeviceType::VirtualGpu => "virtual_gpu",
        wgpu::DeviceType::Cpu => "cpu",
        wgpu::DeviceType::Other => "other",
    }
}

// ---------------------------------------------------------------------------------------------
// Benchmarking one adapter

/// Self-check, peak microbenchmarks, then every configuration; progress goes to stderr. A
/// configuration that cannot be planned (e.g. too large for the adapter) is reported and skipped;
/// a failed self-check fails the whole adapter.
pub fn bench_adapter(gpu: &Gpu, configs: &[Config], options: &Options) -> Result<Report> {
    self_check(gpu).with_context(|| {
        format!("self-check failed on {}: refusing to report timings of wrong kernels", gpu.info.name)
    })?;
    eprintln!("self-check: conv and BN kernels and ResNet-8 train and infer steps match the CPU reference");
    let peak = measure_peak(gpu, options.timer)?;
    eprintln!(
        "peak: {:.1} GFLOP/s fp32 (FMA microbenchmark), {:.1} GB/s copy bandwidth",
        peak.fp32_gflops, peak.bandwidth_gbs
    );
    if options.per_layer && options.timer == Timer::WallClock {
        eprintln!(
            "per-layer times need timestamp queries, which {} (with this --timer) does not offer: reporting \
             whole-step times only",
            gpu.info.name
        );
    }
    let mut results = Vec::new();
    for config in configs {
        let what = format!("{} {} batch {}", config.model, config.mode.name(), config.batch);
        match measure(gpu, config, options, &peak) {
            Ok(m) => {
                eprintln!(
                    "{what}: {} ms per step (p10 {}, p90 {}), {} images/s; encoding it takes {} ms on the CPU",
                    fmt3(m.median_ms),
                    fmt3(m.p10_ms),
                    fmt3(m.p90_ms),
                    fmt3(m.images_per_s),
                    fmt3(m.encode_ms)
                );
                results.push(m);
            }
            Err(error) => eprintln!("{what}: skipped: {error:#}"),
        }
    }
    Ok(Report {
        tool_version: env!("CARGO_PKG_VERSION").into(),
        adapter: AdapterJson::new(&gpu.info),
        peak,
        timer: options.timer,
        conv: gpu.conv_choice().into(),
        warmup: options.warmup,
        iters: options.iters,
        results,
    })
}

/// A planned step, with the model its dispatches bind. One exists at a time, so the size
/// difference of the variants does not matter.
#[allow(clippy::large_enum_variant)]
enum Plan {
    Train { _model: ResNet, step: TrainStep },
    Infer(InferStep),
}

impl Plan {
    /// Plans `mode` at `batch` with randomly initialised weights and random images; the returned
    /// bytes are the storage buffers the model (for train) and the plan allocated.
    fn new(gpu: &Gpu, arch: &Arch, mode: Mode, batch: usize) -> Result<(Self, u64)> {
        let mut rng = Rng::new(1);
        let images: Vec<f32> = (0..batch * 3 * arch.image * arch.image).map(|_| rng.normal() as f32).collect();
        match mode {
            Mode::Train => {
                let before = gpu.allocated_bytes();
                let model = ResNet::new(gpu, arch.clone())?;
                model.init(gpu, 0);
                let sgd = SgdParams { len: 0, lr: 0.01, momentum: 0.9, weight_decay: 1e-4 };
                let step = TrainStep::new(gpu, &model, batch, sgd)?;
                let memory = gpu.allocated_bytes() - before;
                let labels: Vec<u32> = (0..batch).map(|_| rng.below(arch.classes) as u32).collect();
                gpu.write(&step.input, &images);
                gpu.write(&step.labels, &labels);
                Ok((Plan::Train { _model: model, step }, memory))
            }
            Mode::Infer => {
                // The folded plan needs a checkpoint: read one back from a fresh model.
                let ck = {
                    let model = ResNet::new(gpu, arch.clone())?;
                    model.init(gpu, 0);
                    model.checkpoint(gpu, false)?
                };
                let before = gpu.allocated_bytes();
                let step = InferStep::new(gpu, arch, &ck, Path::new("randomly initialised weights"), batch)?;
                let memory = gpu.allocated_bytes() - before;
                gpu.write(&step.input, &images);
                Ok((Plan::Infer(step), memory))
            }
        }
    }

    fn dispatches(&self) -> &[Dispatch] {
        match self {
            Plan::Train { step, .. } => &step.dispatches,
            Plan::Infer(step) => &step.dispatches,
        }
    }
}

/// Times one configuration on `gpu`; `peak` turns the achieved rates into shares.
pub fn measure(gpu: &Gpu, config: &Config, options: &Options, peak: &Peak) -> Result<Measurement> {
    ensure!(options.iters > 0, "at least one timed step is needed");
    let arch = Arch::parse(&config.model, config.shortcut)?;
    let (plan, memory_bytes) = Plan::new(gpu, &arch, config.mode, config.batch)?;
    if let Plan::Train { step, .. } = &plan {
        let (m, mib) = (step.memory, |bytes: u64| bytes as f64 / (1 << 20) as f64);
        eprintln!(
            "{} train batch {} plan: {:.1} MiB saved by the forward for the backward, {:.1} MiB added by the \
             backward, {:.1} MiB of parameters, gradients, velocity and running statistics",
            config.model,
            config.batch,
            mib(m.saved),
            mib(m.backward),
            mib(memory_bytes - m.saved - m.spare - m.backward)
        );
    }
    let dispatches = plan.dispatches();
    for _ in 0..options.warmup {
        submit_step(gpu, dispatches, None)?;
    }
    let stamps = (options.timer == Timer::Timestamps).then(|| Timestamps::new(gpu, 1));
    let (mut samples, mut encodes) = (Vec::with_capacity(options.iters), Vec::with_capacity(options.iters));
    for _ in 0..options.iters {
        let step = submit_step(gpu, dispatches, stamps.as_ref())?;
        samples.push(step.ms[0]);
        encodes.push(step.encode_ms);
    }
    let layers = match options.timer {
        Timer::Timestamps if options.per_layer => time_layers(gpu, dispatches, options.iters)?,
        _ => Vec::new(),
    };

    let median_ms = percentile(&samples, 0.5);
    let seconds = median_ms / 1e3;
    let flop_per_image = flop_per_image(&arch, config.mode);
    let gflops = flop_per_image * config.batch as f64 / seconds / 1e9;
    let bytes: u64 = dispatches.iter().map(|d| d.bytes).sum();
    let gbs = bytes as f64 / seconds / 1e9;
    Ok(Measurement {
        model: config.model.clone(),
        shortcut: shortcut_name(arch.shortcut).into(),
        mode: config.mode,
        batch: config.batch,
        median_ms,
        p10_ms: percentile(&samples, 0.1),
        p90_ms: percentile(&samples, 0.9),
        images_per_s: config.batch as f64 / seconds,
        flop_per_image,
        gflops,
        pct_peak: 100.0 * gflops / peak.fp32_gflops,
        gbs,
        pct_bandwidth: 100.0 * gbs / peak.bandwidth_gbs,
        memory_bytes,
        encode_ms: percentile(&encodes, 0.5),
        layers,
    })
}

fn shortcut_name(shortcut: Shortcut) -> &'static str {
    match shortcut {
        Shortcut::A => "a",
        Shortcut::B => "b",
        Shortcut::Plain => "plain",
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

/// Splits a step into passes of consecutive dispatches with the same label and kind, times each
/// pass by its timestamps over `iters` steps, and returns the median of each.
fn time_layers(gpu: &Gpu, dispatches: &[Dispatch], iters: usize) -> Result<Vec<LayerTime>> {
    let mut passes: Vec<Range<usize>> = Vec::new();
    for (i, d) in dispatches.iter().enumerate() {
        match passes.last_mut() {
            Some(last)
                if dispatches[last.start].label == d.label && Kind::of(&dispatches[last.start]) == Kind::of(d) =>
            {
                last.end = i + 1
            }
            _ => passes.push(i..i + 1),
        }
    }
    let stamps = Timestamps::new(gpu, passes.len());
    let mut samples = vec![Vec::with_capacity(iters); passes.len()];
    for _ in 0..iters {
        for (pass, ms) in submit_passes(gpu, dispatches, &passes, &stamps)?.into_iter().enumerate() {
            samples[pass].push(ms);
        }
    }
    Ok(passes
        .iter()
        .zip(samples)
        .map(|(range, ms)| LayerTime {
            name: dispatches[range.start].label.clone(),
            kind: Kind::of(&dispatches[range.start]),
            ms: percentile(&ms, 0.5),
            bytes: dispatches[range.clone()].iter().map(|d| d.bytes).sum(),
        })
        .collect())
}

// ---------------------------------------------------------------------------------------------
// Timing

/// Timestamp queries for `passes` compute passes (two each, beginning and end), in as many query
/// sets as WebGPU's 4096-query limit needs, with the buffers to read them back.
pub(crate) struct Timestamps {
    sets: Vec<wgpu::QuerySet>,
    passes: usize,
    resolve: wgpu::Buffer,
    staging: wgpu::Buffer,
}

const PASSES_PER_SET: usize = wgpu::QUERY_SET_MAX_QUERIES as usize / 2;

impl Timestamps {
    fn new(gpu: &Gpu, passes: usize) -> Self {
        let sets = (0..passes.div_ceil(PASSES_PER_SET))
            .map(|j| {
                gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("bench timestamps"),
                    ty: wgpu::QueryType::Timestamp,
                    count: 2 * (passes - j * PASSES_PER_SET).min(PASSES_PER_SET) as u32,
                })
            })
            .collect();
        let buffer = |label, usage| {
            gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: 16 * passes as u64,
                usage,
                mapped_at_creation: false,
            })
        };
        Self {
            sets,
            passes,
            resolve: buffer("timestamp resolve", wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC),
            staging: buffer("timestamp readback", wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST),
        }
    }

    fn writes(&self, pass: usize) -> wgpu::ComputePassTimestampWrites<'_> {
        let index = 2 * (pass % PASSES_PER_SET) as u32;
        wgpu::ComputePassTimestampWrites {
            query_set: &self.sets[pass / PASSES_PER_SET],
            beginning_of_pass_write_index: Some(index),
            end_of_pass_write_index: Some(index + 1),
        }
    }

    /// Records the copy of every timestamp into the staging buffer (set j at byte 16 * 2048 * j,
    /// a multiple of the 256-byte resolve alignment).
    fn resolve(&self, encoder: &mut wgpu::CommandEncoder) {
        for (j, set) in self.sets.iter().enumerate() {
            let count = 2 * (self.passes - j * PASSES_PER_SET).min(PASSES_PER_SET) as u32;
            encoder.resolve_query_set(set, 0..count, &self.resolve, (16 * PASSES_PER_SET * j) as u64);
        }
        encoder.copy_buffer_to_buffer(&self.resolve, 0, &self.staging, 0, self.resolve.size());
    }

    /// Milliseconds of each pass, once the submission that resolved them is done.
    fn read(&self, gpu: &Gpu) -> Result<Vec<f64>> {
        let (sender, receiver) = std::sync::mpsc::channel();
        self.staging.map_async(wgpu::MapMode::Read, .., move |result| {
            let _ = sender.send(result);
        });
        gpu.device.poll(wgpu::PollType::wait_indefinitely()).context("waiting for the GPU")?;
        receiver.recv()?.context("mapping the timestamp buffer")?;
        let ns_per_tick = gpu.queue.get_timestamp_period() as f64;
        let ms = {
            let view = self.staging.get_mapped_range(..).context("reading the timestamp buffer")?;
            let ticks: &[u64] = bytemuck::cast_slice(&view);
            ticks.chunks(2).map(|pair| pair[1].saturating_sub(pair[0]) as f64 * ns_per_tick / 1e6).collect()
        };
        self.staging.unmap();
        Ok(ms)
    }
}

/// What `submit` measured.
pub(crate) struct Submitted {
    /// Each pass's milliseconds from its timestamps, or without them one wall-clock figure for the
    /// whole submission.
    pub(crate) ms: Vec<f64>,
    /// Host milliseconds from creating the command encoder to the return of `Queue::submit`.
    encode_ms: f64,
}

/// Records `passes` compute passes (the contents of pass i by `record(i, pass)`) into one command
/// buffer, submits it and waits.
pub(crate) fn submit(
    gpu: &Gpu,
    passes: usize,
    stamps: Option<&Timestamps>,
    mut record: impl FnMut(usize, &mut wgpu::ComputePass<'_>),
) -> Result<Submitted> {
    assert!(stamps.is_some() || passes == 1, "the wall clock times one pass per submission");
    let encode = Instant::now();
    let mut encoder = gpu.device.create_command_encoder(&Default::default());
    for i in 0..passes {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("bench"),
            timestamp_writes: stamps.map(|s| s.writes(i)),
        });
        record(i, &mut pass);
    }
    if let Some(stamps) = stamps {
        stamps.resolve(&mut encoder);
    }
    let commands = encoder.finish();
    let start = Instant::now();
    gpu.queue.submit([commands]);
    let encode_ms = encode.elapsed().as_secs_f64() * 1e3;
    gpu.device.poll(wgpu::PollType::wait_indefinitely()).context("waiting for the GPU")?;
    let wall_ms = start.elapsed().as_secs_f64() * 1e3;
    let ms = match stamps {
        Some(stamps) => stamps.read(gpu)?,
        None => vec![wall_ms],
    };
    Ok(Submitted { ms, encode_ms })
}

/// The whole step in one compute pass: its milliseconds by timestamps, else by the wall clock.
fn submit_step(gpu: &Gpu, dispatches: &[Dispatch], stamps: Option<&Timestamps>) -> Result<Submitted> {
    submit(gpu, 1, stamps, |_, pass| {
        for d in dispatches {
            d.record(pass);
        }
    })
}

/// The step split into `passes`, each timed by its timestamps.
fn submit_passes(gpu: &Gpu, dispatches: &[Dispatch], passes: &[Range<usize>], stamps: &Timestamps) -> Result<Vec<f64>> {
    submit(gpu, passes.len(), Some(stamps), |i, pass| {
        for d in &dispatches[passes[i].clone()] {
            d.record(pass);
        }
    })
    .map(|submitted| submitted.ms)
}

// ---------------------------------------------------------------------------------------------
// FLOPs from the architecture

/// One convolution: `c` input channels, `k` output channels, an `r` x `r` kernel, a `p` x `q`
/// output, and the stride that produced it.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvShape {
    pub c: usize,
    pub k: usize,
    pub r: usize,
    pub stride: usize,
    pub p: usize,
    pub q: usize,
}

impl ConvShape {
    pub fn macs(&self) -> u64 {
        (self.k * self.c * self.r * self.r * self.p * self.q) as u64
    }
}

/// Every conv of `arch` for one image, in `Arch::parameters` order (stem, then per block conv1..3
/// and the downsample projection), worked out here from the paper's rules rather than taken from
/// the planner, so that the count is an independent check.
pub fn convs(arch: &Arch) -> Vec<ConvShape> {
    let mut list = Vec::new();
    let mut conv = |c: usize, k: usize, r: usize, stride: usize, h: usize| {
        let p = (h + 2 * (r / 2) - r) / stride + 1;
        list.push(ConvShape { c, k, r, stride, p, q: p });
        p
    };
    // Stem: ImageNet 7x7/2 conv 64 then a 3x3/2 max pool (pad 1); CIFAR 3x3 conv 16.
    let (mut c, mut h) = if arch.imagenet {
        let h = conv(3, 64, 7, 2, arch.image);
        (64, (h + 2 - 3) / 2 + 1)
    } else {
        (16, conv(3, 16, 3, 1, arch.image))
    };
    for (s, &(blocks, width)) in arch.stages.iter().enumerate() {
        for i in 0..blocks {
            let stride = if s > 0 && i == 0 { 2 } else { 1 };
            let (inp, h_in) = (c, h);
            match arch.block {
                BlockKind::Basic => {
                    h = conv(c, width, 3, stride, h);
                    h = conv(width, width, 3, 1, h);
                    c = width;
                }
                BlockKind::Bottleneck => {
                    conv(c, width, 1, 1, h);
                    h = conv(width, width, 3, stride, h);
                    conv(width, 4 * width, 1, 1, h);
                    c = 4 * width;
                }
            }
            if arch.shortcut == Shortcut::B && (stride != 1 || inp != c) {
                conv(inp, c, 1, stride, h_in);
            }
        }
    }
    list
}

/// Multiply-adds of one image's forward: every conv and the fc.
pub fn forward_macs(arch: &Arch) -> u64 {
    let fc = arch.parameters().iter().find(|(n, _)| n == "fc.weight").map(|(_, s)| s[0] * s[1]).unwrap_or(0);
    convs(arch).iter().map(ConvShape::macs).sum::<u64>() + fc as u64
}

/// 2 FLOPs per multiply-add; a training step counts 3 forwards (forward, input gradient, weight
/// gradient).
pub fn flop_per_image(arch: &Arch, mode: Mode) -> f64 {
    let passes = match mode {
        Mode::Train => 3.0,
        Mode::Infer => 1.0,
    };
    2.0 * passes * forward_macs(arch) as f64
}

// ---------------------------------------------------------------------------------------------
// Self-check against the CPU reference

/// Checks, on `gpu`, the three conv kernels and the training BN kernels on small awkward shapes,
/// then a ResNet-8 training step's logits and loss and a folded inference step's logits at batch 2,
/// all against `reference` (f64). Fails with the first disagreement.
pub fn self_check(gpu: &Gpu) -> Result<()> {
    let mut rng = Rng::new(7);
    // (N, C, H, W, K, R, stride, pad): a strided 3x3 on odd sizes, a 1x1 with 17 channels.
    for [n, c, h, w, k, r, stride, pad] in [[2, 5, 7, 6, 6, 3, 2, 1], [3, 17, 5, 5, 9, 1, 1, 0]] {
        check_conv(gpu, &mut rng, [n, c, h, w], [k, c, r, r], stride, pad)?;
    }
    check_batchnorm(gpu, &mut rng, [3, 5, 4, 3])?;
    check_resnet8(gpu, &mut rng)
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// |gpu - cpu| <= 1e-4 * max(1, max |cpu|) everywhere, else an error naming the first element off.
fn check_close(what: &str, gpu: &[f32], cpu: &[f64]) -> Result<()> {
    ensure!(gpu.len() == cpu.len(), "{what}: {} values from the GPU, {} from the CPU", gpu.len(), cpu.len());
    let bound = 1e-4 * cpu.iter().fold(1.0f64, |m, x| m.max(x.abs()));
    for (i, (&g, &c)) in gpu.iter().zip(cpu).enumerate() {
        ensure!(
            (g as f64 - c).abs() <= bound && g.is_finite(),
            "{what}: element {i} is {g} on the GPU, {c} on the CPU (bound {bound:e})"
        );
    }
    Ok(())
}

fn check_conv(gpu: &Gpu, rng: &mut Rng, inp: [usize; 4], weight: [usize; 4], stride: usize, pad: usize) -> Result<()> {
    let params = ConvParams::new(&inp, &weight, stride, pad)?;
    let out_shape = params.out_shape();
    let (x, wt, dy) =
        (rng.vec(inp.iter().product()), rng.vec(weight.iter().product()), rng.vec(out_shape.iter().product()));
    let (x_t, w_t, dy_t) = (
        gpu.upload("check inp", &inp, &x)?,
        gpu.upload("check weight", &weight, &wt)?,
        gpu.upload("check dout", &out_shape, &dy)?,
    );
    let (out, dinp, dweight) =
        (gpu.zeros("check out", &out_shape)?, gpu.zeros("check dinp", &inp)?, gpu.zeros("check dweight", &weight)?);
    let (panel, layout) = layers::panel_for(gpu, &params, &w_t, false)?.unzip();
    let (panel_t, layout_t) = layers::panel_for(gpu, &params, &w_t, true)?.unzip();
    let mut dispatches: Vec<Dispatch> = layout.into_iter().chain(layout_t).collect();
    dispatches.extend([
        layers::conv2d_forward(gpu, &out, &x_t, &w_t, panel.as_ref(), stride, pad)?,
        layers::conv2d_backward_input(gpu, &dinp, &dy_t, &w_t, panel_t.as_ref(), stride, pad, false)?,
    ]);
    dispatches.extend(layers::conv2d_backward_weight(gpu, &dweight, &dy_t, &x_t, None, stride, pad)?);
    gpu.run(&dispatches.iter().collect::<Vec<_>>())?;
    let (x, wt, dy) = (f64s(&x), f64s(&wt), f64s(&dy));
    let mut want = [vec![0.0; out.len()], vec![0.0; dinp.len()], vec![0.0; dweight.len()]];
    reference::conv2d_forward(&mut want[0], &x, &wt, &params);
    reference::conv2d_backward_input(&mut want[1], &dy, &wt, &params);
    reference::conv2d_backward_weight(&mut want[2], &dy, &x, &params);
    let shape = format!("input {inp:?}, weight {weight:?}, stride {stride}, pad {pad}");
    for ((name, tensor), want) in
        [("conv2d_forward", &out), ("conv2d_backward_input", &dinp), ("conv2d_backward_weight", &dweight)]
            .into_iter()
            .zip(&want)
    {
        check_close(&format!("{name} ({shape})"), &gpu.read(tensor)?, want)?;
    }
    Ok(())
}

fn check_batchnorm(gpu: &Gpu, rng: &mut Rng, shape: [usize; 4]) -> Result<()> {
    let [n, c, h, w] = shape;
    let params = BatchnormParams::for_input(&shape)?;
    let (x, dy, weight, bias) = (rng.vec(n * c * h * w), rng.vec(n * c * h * w), rng.vec(c), rng.vec(c));
    let (running_mean, running_var) = (rng.vec(c), vec![1.5f32; c]);
    let up = |name: &str, shape: &[usize], v: &[f32]| gpu.upload(name, shape, v);
    let (x_t, dy_t, w_t, b_t) =
        (up("x", &shape, &x)?, up("dy", &shape, &dy)?, up("w", &[c], &weight)?, up("b", &[c], &bias)?);
    let (rm_t, rv_t) = (up("rm", &[c], &running_mean)?, up("rv", &[c], &running_var)?);
    let (out, mean, rstd) = (gpu.zeros("out", &shape)?, gpu.zeros("mean", &[c])?, gpu.zeros("rstd", &[c])?);
    let (dinp, dweight, dbias) = (gpu.zeros("dinp", &shape)?, gpu.zeros("dweight", &[c])?, gpu.zeros("dbias", &[c])?);
    gpu.run(&[
        &layers::batchnorm_forward_train(gpu, &out, &mean, &rstd, &rm_t, &rv_t, &x_t, &w_t, &b_t, None, false)?,
        &layers::batchnorm_backward(gpu, &dinp, &dweight, &dbias, &dy_t, &x_t, &w_t, &mean, &rstd, None)?,
    ])?;
    let (x, dy, weight, bias) = (f64s(&x), f64s(&dy), f64s(&weight), f64s(&bias));
    let (mut rm, mut rv) = (f64s(&running_mean), f64s(&running_var));
    let (mut want_out, mut want_mean, mut want_rstd) = (vec![0.0; x.len()], vec![0.0; c], vec![0.0; c]);
    reference::batchnorm_forward_train(
        &mut want_out,
        &mut want_mean,
        &mut want_rstd,
        &mut rm,
        &mut rv,
        &x,
        &weight,
        &bias,
        &params,
    );
    let (mut want_dinp, mut want_dweight, mut want_dbias) = (vec![0.0; x.len()], vec![0.0; c], vec![0.0; c]);
    reference::batchnorm_backward(
        &mut want_dinp,
        &mut want_dweight,
        &mut want_dbias,
        &dy,
        &x,
        &weight,
        &want_mean,
        &want_rstd,
        &params,
    );
    for (what, tensor, want) in [
        ("batchnorm_forward_train out", &out, &want_out),
        ("batchnorm_forward_train running_var", &rv_t, &rv),
        ("batchnorm_backward dinp", &dinp, &want_dinp),
        ("batchnorm_backward dweight", &dweight, &want_dweight),
        ("batchnorm_backward dbias", &dbias, &want_dbias),
    ] {
        check_close(&format!("{what} (input {shape:?})"), &gpu.read(tensor)?, want)?;
    }
    Ok(())
}

/// A ResNet-8 (option A) at batch 2 with random BN parameters and statistics: the training plan's
/// logits and loss, and the folded inference plan's logits, against `reference_forward`.
fn check_resnet8(gpu: &Gpu, rng: &mut Rng) -> Result<()> {
    let arch = Arch::cifar("resnet8", Shortcut::A)?;
    let batch = 2;
    let model = ResNet::new(gpu, arch.clone())?;
    model.init(gpu, 3);
    let mut values = std::collections::HashMap::new();
    for (name, shape) in arch.parameters().into_iter().chain(arch.buffers()) {
        let len: usize = shape.iter().product();
        let v: Vec<f32> = match name.rsplit('.').next() {
            Some("running_var") => (0..len).map(|_| 0.5 + rng.uniform() as f32).collect(),
            Some("running_mean" | "bias") => rng.vec(len).iter().map(|x| 0.2 * x).collect(),
            Some("weight") if shape.len() == 1 => (0..len).map(|_| 0.5 + rng.uniform() as f32).collect(),
            _ => continue,
        };
        values.insert(name, v);
    }
    model.load(gpu, &values)?;
    let ck = model.checkpoint(gpu, false)?;
    let images = rng.vec(batch * 3 * 32 * 32);
    let labels: Vec<u32> = (0..batch).map(|_| rng.below(arch.classes) as u32).collect();

    let step = TrainStep::new(gpu, &model, batch, SgdParams { len: 0, lr: 0.1, momentum: 0.9, weight_decay: 1e-4 })?;
    gpu.write(&step.input, &images);
    gpu.write(&step.labels, &labels);
    submit_step(gpu, &step.dispatches, None)?;
    let want = reference_forward(&arch, &ck, &f64s(&images), batch, true)?;
    check_close("ResNet-8 training step logits", &gpu.read(&step.logits)?, &want)?;
    let mut dlogits = vec![0.0; want.len()];
    let (loss, _) = reference::softmax_cross_entropy(&mut dlogits, &want, &labels, arch.classes);
    check_close("ResNet-8 training step loss", &gpu.read(&step.loss)?, &[loss])?;

    let infer = InferStep::new(gpu, &arch, &ck, Path::new("self-check weights"), batch)?;
    gpu.write(&infer.input, &images);
    submit_step(gpu, &infer.dispatches, None)?;
    let want = reference_forward(&arch, &ck, &f64s(&images), batch, false)?;
    check_close("ResNet-8 folded inference logits", &gpu.read(&infer.logits)?, &want)
}

/// The logits of a CIFAR ResNet with option-A or identity shortcuts, computed on the CPU with the
/// `reference` twins from `ck`'s tensors; `train` normalises with the batch's statistics.
fn reference_forward(arch: &Arch, ck: &Checkpoint, images: &[f64], batch: usize, train: bool) -> Result<Vec<f64>> {
    ensure!(!arch.imagenet && arch.shortcut == Shortcut::A, "the CPU forward covers CIFAR option-A networks");
    let get = |name: &str| -> Result<Vec<f64>> {
        Ok(f64s(&ck.tensors.get(name).with_context(|| format!("the checkpoint lacks {name}"))?.1))
    };
    let conv_bn =
        |x: &[f64], shape: [usize; 4], conv: &str, bn: &str, stride: usize| -> Result<(Vec<f64>, [usize; 4])> {
            let (weight_shape, weight) =
                ck.tensors.get(&format!("{conv}.weight")).with_context(|| format!("no {conv}"))?;
            let params = ConvParams::new(&shape, weight_shape, stride, weight_shape[2] / 2)?;
            let out_shape: [usize; 4] = params.out_shape().try_into().expect("a conv output has four dimensions");
            let mut y = vec![0.0; out_shape.iter().product()];
            reference::conv2d_forward(&mut y, x, &f64s(weight), &params);
            let k = out_shape[1];
            let bn_params = BatchnormParams::for_input(&out_shape)?;
            let (weight, bias) = (get(&format!("{bn}.weight"))?, get(&format!("{bn}.bias"))?);
            let (mut rm, mut rv) = (get(&format!("{bn}.running_mean"))?, get(&format!("{bn}.running_var"))?);
            let mut out = vec![0.0; y.len()];
            if train {
                let (mut mean, mut rstd) = (vec![0.0; k], vec![0.0; k]);
                reference::batchnorm_forward_train(
                    &mut out, &mut mean, &mut rstd, &mut rm, &mut rv, &y, &weight, &bias, &bn_params,
                );
            } else {
                reference::batchnorm_forward_eval(&mut out, &y, &weight, &bias, &rm, &rv, &bn_params);
            }
            Ok((out, out_shape))
        };
    let relu = |x: Vec<f64>| x.into_iter().map(|v| v.max(0.0)).collect::<Vec<f64>>();

    let (x, mut shape) = conv_bn(images, [batch, 3, arch.image, arch.image], "conv1", "bn1", 1)?;
    let mut x = relu(x);
    for (s, &(blocks, _)) in arch.stages.iter().enumerate() {
        for i in 0..blocks {
            let name = format!("layer{}.{i}", s + 1);
            let stride = if s > 0 && i == 0 { 2 } else { 1 };
            let (y, y_shape) = conv_bn(&x, shape, &format!("{name}.conv1"), &format!("{name}.bn1"), stride)?;
            let (y, y_shape) = conv_bn(&relu(y), y_shape, &format!("{name}.conv2"), &format!("{name}.bn2"), 1)?;
            let shortcut = if y_shape == shape {
                x
            } else {
                let params = layers::ShortcutParams::new(&shape, &y_shape)?;
                let mut out = vec![0.0; y.len()];
                reference::shortcut_a_forward(&mut out, &x, &params);
                out
            };
            let mut sum = y;
            reference::add(&mut sum, &shortcut);
            (x, shape) = (relu(sum), y_shape);
        }
    }
    let [n, c, h, w] = shape;
    let mut pooled = vec![0.0; n * c];
    reference::avgpool_forward(&mut pooled, &x, &layers::AvgpoolParams::new(&[n, c, h, w], &[n, c])?);
    let (fc_shape, fc_weight) = &ck.tensors["fc.weight"];
    let mut logits = vec![0.0; n * fc_shape[0]];
    let params = layers::LinearParams::new(&[n, c], fc_shape)?;
    reference::linear_forward(&mut logits, &pooled, &f64s(fc_weight), &get("fc.bias")?, &params);
    Ok(logits)
}

// ---------------------------------------------------------------------------------------------
// Peak microbenchmarks

/// The FMA-bound kernel behind `peak.fp32_gflops`. It is not one of the network's kernels, so it
/// lives here rather than in `shaders/`; `tests/bench.rs` validates it with naga.
pub const PEAK_FMA_WGSL: &str = r#"
// peak_fma: eight independent chains x <- fma(x, b, c) per invocation (two vec4, a and d), 16 x
// `loops` steps each: out[i] = the sum of the chains, so no step can be skipped.
// The loop body is 128 FMAs (256 FLOPs) of independent work: software adapters pay a lot per loop
// iteration (lavapipe measured 3 GFLOP/s with 32 FMAs per iteration, 25-36 with 128), and enough
// invocations hide the FMA latency on GPUs.
// One invocation per output element, 256 per workgroup; dispatch (len / 256, 1, 1).
// CPU twin: `bench::peak_fma_reference`.

struct Params {
    loops: u32,
    b: f32,
    c: f32,
    _unused: u32,
}

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<uniform> params: Params;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let b = vec4<f32>(params.b);
    let c = vec4<f32>(params.c);
    let x = f32(id.x & 255u) * 0.001;
    var a = vec4<f32>(x, x + 0.1, x + 0.2, x + 0.3);
    var d = vec4<f32>(x + 0.4, x + 0.5, x + 0.6, x + 0.7);
    for (var i = 0u; i < params.loops; i++) {
        a = fma(a, b, c);
        d = fma(d, b, c);
        a = fma(a, b, c);
        d = fma(d, b, c);
        a = fma(a, b, c);
        d = fma(d, b, c);
        a = fma(a, b, c);
        d = fma(d, b, c);
        a = fma(a, b, c);
        d = fma(d, b, c);
        a = fma(a, b, c);
        d = fma(d, b, c);
        a = fma(a, b, c);
        d = fma(d, b, c);
        a = fma(a, b, c);
        d = fma(d, b, c);
        a = fma(a, b, c);
        d = fma(d, b, c);
        a = fma(a, b, c);
        d = fma(d, b, c);
        a = fma(a, b, c);
        d = fma(d, b, c);
        a = fma(a, b, c);
        d = fma(d, b, c);
        a = fma(a, b, c);
        d = fma(d, b, c);
        a = fma(a, b, c);
        d = fma(d, b, c);
        a = fma(a, b, c);
        d = fma(d, b, c);
        a = fma(a, b, c);
        d = fma(d, b, c);
    }
    out[id.x] = dot(a + d, vec4<f32>(1.0));
}
"#;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct PeakParams {
    loops: u32,
    b: f32,
    c: f32,
    _unused: u32,
}

/// b and c of the chains: they converge to c / (1 - b) = 1, far from denormals and infinities.
const PEAK_B: f32 = 0.999;
const PEAK_C: f32 = 0.001;
/// 128 FMAs per iteration of each invocation's loop.
const PEAK_FLOP_PER_LOOP: f64 = 256.0;
/// 4M invocations: many waves even on the largest GPUs.
const PEAK_WORKGROUPS: u32 = 16384;

/// What `PEAK_FMA_WGSL` writes for invocation `i`.
pub fn peak_fma_reference(i: u32, loops: u32) -> f32 {
    let x = (i & 255) as f32 * 0.001;
    let mut chains: Vec<f32> = (0..8).map(|j| x + 0.1 * j as f32).collect();
    for a in &mut chains {
        for _ in 0..16 * loops {
            *a = a.mul_add(PEAK_B, PEAK_C);
        }
    }
    chains.iter().sum()
}

pub fn measure_peak(gpu: &Gpu, timer: Timer) -> Result<Peak> {
    Ok(Peak { fp32_gflops: peak_fma(gpu, timer)?, bandwidth_gbs: copy_bandwidth(gpu)? })
}

/// GFLOP/s of `PEAK_FMA_WGSL`, with the loop count doubled until one dispatch takes 10 ms, then
/// the median of 5 runs.
pub fn peak_fma(gpu: &Gpu, timer: Timer) -> Result<f64> {
    let device = &gpu.device;
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("peak_fma"),
        source: wgpu::ShaderSource::Wgsl(PEAK_FMA_WGSL.into()),
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some("peak_fma"),
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    });
    let invocations = PEAK_WORKGROUPS as usize * 256;
    let out = gpu.zeros("peak_fma out", &[invocations])?;
    let params = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("peak_fma params"),
        size: std::mem::size_of::<PeakParams>() as u64,
        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("peak_fma"),
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[
            wgpu::BindGroupEntry { binding: 0, resource: wgpu::BindingResource::Buffer(out.binding()) },
            wgpu::BindGroupEntry { binding: 1, resource: params.as_entire_binding() },
        ],
    });
    let stamps = (timer == Timer::Timestamps).then(|| Timestamps::new(gpu, 1));
    let run = |loops: u32| -> Result<f64> {
        let p = PeakParams { loops, b: PEAK_B, c: PEAK_C, _unused: 0 };
        gpu.queue.write_buffer(&params, 0, bytemuck::bytes_of(&p));
        let ms = submit(gpu, 1, stamps.as_ref(), |_, pass| {
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            pass.dispatch_workgroups(PEAK_WORKGROUPS, 1, 1);
        })?;
        Ok(ms.ms[0])
    };
    let mut loops = 1;
    let mut ms = run(loops)?;
    while ms < 10.0 && loops < 1 << 22 {
        loops *= 2;
        ms = run(loops)?;
    }
    let ms = percentile(&(0..5).map(|_| run(loops)).collect::<Result<Vec<_>>>()?, 0.5);
    check_peak_output(gpu, &out, loops)?;
    Ok(invocations as f64 * loops as f64 * PEAK_FLOP_PER_LOOP / ms / 1e6)
}

fn check_peak_output(gpu: &Gpu, out: &Tensor, loops: u32) -> Result<()> {
    let values: Vec<f32> = gpu.read(out)?;
    for i in [0, 1, 255, 256, values.len() as u32 - 1] {
        let (got, want) = (values[i as usize], peak_fma_reference(i, loops));
        ensure!(
            (got - want).abs() <= 1e-3 * want.abs(),
            "the FMA microbenchmark wrote {got} for invocation {i}, expected {want}: its peak would be wrong"
        );
    }
    Ok(())
}

/// GB/s (bytes read + bytes written) of buffer-to-buffer copies of 256 MiB (64 MiB on software
/// adapters), repeated in one submission until it takes 20 ms; wall clock, median of 3.
fn copy_bandwidth(gpu: &Gpu) -> Result<f64> {
    let mib = if gpu::is_software(&gpu.info) { 64 } else { 256 };
    let size = ((mib as u64) << 20).min(gpu.limits.max_buffer_size) / 4 * 4;
    let buffer = |label| {
        gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    };
    let (src, dst) = (buffer("bandwidth source"), buffer("bandwidth destination"));
    let run = |copies: usize| -> Result<f64> {
        let mut encoder = gpu.device.create_command_encoder(&Default::default());
        for _ in 0..copies {
            encoder.copy_buffer_to_buffer(&src, 0, &dst, 0, size);
        }
        let start = Instant::now();
        gpu.queue.submit([encoder.finish()]);
        gpu.device.poll(wgpu::PollType::wait_indefinitely()).context("waiting for the GPU")?;
        Ok(start.elapsed().as_secs_f64() * 1e3)
    };
    run(1)?;
    let once = run(1)?;
    let copies = ((20.0 / once).ceil() as usize).clamp(1, 1000);
    let ms = percentile(&(0..3).map(|_| run(copies)).collect::<Result<Vec<_>>>()?, 0.5);
    Ok(2.0 * size as f64 * copies as f64 / ms / 1e6)
}

// ---------------------------------------------------------------------------------------------
// Tables

/// `x` with about three significant digits.
fn fmt3(x: f64) -> String {
    match x.abs() {
        a if a >= 100.0 => format!("{x:.0}"),
        a if a >= 10.0 => format!("{x:.1}"),
        a if a >= 1.0 => format!("{x:.2}"),
        _ => format!("{x:.3}"),
    }
}

/// A Markdown table with padded columns; columns from `numeric` on are right-aligned.
fn markdown(header: &[&str], rows: &[Vec<String>], numeric: usize) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(
                |(i, c)| {
                    if i >= numeric { format!("{c:>w$}", w = widths[i]) } else { format!("{c:<w$}", w = widths[i]) }
                },
            )
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let mut text = line(header.iter().map(|h| h.to_string()).collect());
    let rules = widths
        .iter()
        .enumerate()
        .map(|(i, &w)| if i >= numeric { format!("{}:", "-".repeat(w - 1)) } else { "-".repeat(w) });
    text += &line(rules.collect());
    for row in rows {
        text += &line(row.clone());
    }
    text
}

fn adapter_label(adapter: &AdapterJson) -> String {
    format!("{} on {}", adapter.name, adapter.backend)
}

/// `resnet20`, or `resnet20 (B)` for a CIFAR ResNet with projection shortcuts.
fn model_label(model: &str, shortcut: &str) -> String {
    let imagenet = Arch::parse(model, Shortcut::A).is_ok_and(|a| a.imagenet);
    if shortcut == "b" && !imagenet { format!("{model} (B)") } else { model.to_string() }
}

/// The results table of every report, then the per-layer roll-ups of results that have them.
pub fn human_tables(reports: &[Report]) -> String {
    let mut text = String::new();
    for r in reports {
        text += &format!(
            "adapter: {} ({}, {}, driver {}): peak {} GFLOP/s fp32, copy {} GB/s; timer: {}; conv: {}; {} warmup and {} timed steps\n",
            r.adapter.name,
            r.adapter.backend,
            r.adapter.device_type,
            r.adapter.driver,
            fmt3(r.peak.fp32_gflops),
            fmt3(r.peak.bandwidth_gbs),
            match r.timer {
                Timer::Timestamps => "GPU timestamps",
                Timer::WallClock => "wall clock",
            },
            if r.conv.is_empty() { "?" } else { &r.conv },
            r.warmup,
            r.iters
        );
    }
    let header = [
        "adapter",
        "model",
        "mode",
        "batch",
        "median ms",
        "p10-p90 ms",
        "images/s",
        "GFLOP/s",
        "% peak",
        "GB/s",
        "% BW",
        "memory MiB",
        "encode ms",
    ];
    let mut rows = Vec::new();
    for r in reports {
        for m in &r.results {
            rows.push(vec![
                adapter_label(&r.adapter),
                model_label(&m.model, &m.shortcut),
                m.mode.name().into(),
                m.batch.to_string(),
                fmt3(m.median_ms),
                format!("{}-{}", fmt3(m.p10_ms), fmt3(m.p90_ms)),
                fmt3(m.images_per_s),
                fmt3(m.gflops),
                format!("{:.1}", m.pct_peak),
                fmt3(m.gbs),
                format!("{:.1}", m.pct_bandwidth),
                format!("{:.1}", m.memory_bytes as f64 / (1 << 20) as f64),
                fmt3(m.encode_ms),
            ]);
        }
    }
    text += "\n";
    text += &markdown(&header, &rows, 3);
    for r in reports {
        for m in r.results.iter().filter(|m| !m.layers.is_empty()) {
            text += "\n";
            text += &layer_tables(r, m);
        }
    }
    text
}

/// Per-kind and per-block roll-ups of a result's layer times, and its ten slowest layers.
pub fn layer_tables(report: &Report, m: &Measurement) -> String {
    let total: f64 = m.layers.iter().map(|l| l.ms).sum();
    let share = |ms: f64| format!("{:.1}", 100.0 * ms / total);
    let mut text = format!(
        "per-layer GPU time of {} {} batch {} on {}: the layers sum to {} ms, the whole step took {} ms (median)\n\n",
        model_label(&m.model, &m.shortcut),
        m.mode.name(),
        m.batch,
        adapter_label(&report.adapter),
        fmt3(total),
        fmt3(m.median_ms)
    );
    let mut kinds: BTreeMap<Kind, (f64, u64, usize)> = BTreeMap::new();
    for l in &m.layers {
        let e = kinds.entry(l.kind).or_default();
        *e = (e.0 + l.ms, e.1 + l.bytes, e.2 + 1);
    }
    let rows: Vec<Vec<String>> = kinds
        .iter()
        .map(|(kind, &(ms, bytes, passes))| {
            vec![kind.label().into(), passes.to_string(), fmt3(ms), share(ms), fmt3(bytes as f64 / ms / 1e6)]
        })
        .collect();
    text += &markdown(&["kind", "passes", "ms", "% of layers", "GB/s"], &rows, 1);

    let mut blocks: Vec<(&str, f64)> = Vec::new();
    for l in &m.layers {
        let block = block_of(&l.name);
        match blocks.iter_mut().find(|(b, _)| *b == block) {
            Some(entry) => entry.1 += l.ms,
            None => blocks.push((block, l.ms)),
        }
    }
    let rows: Vec<Vec<String>> = blocks.iter().map(|&(b, ms)| vec![b.into(), fmt3(ms), share(ms)]).collect();
    text += "\n";
    text += &markdown(&["block", "ms", "% of layers"], &rows, 1);

    let mut slowest: Vec<&LayerTime> = m.layers.iter().collect();
    slowest.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    let rows: Vec<Vec<String>> = slowest
        .iter()
        .take(10)
        .map(|l| {
            vec![l.name.clone(), l.kind.label().into(), fmt3(l.ms), share(l.ms), fmt3(l.bytes as f64 / l.ms / 1e6)]
        })
        .collect();
    text += "\nslowest passes:\n\n";
    text += &markdown(&["layer", "kind", "ms", "% of layers", "GB/s"], &rows, 2);
    text
}

// ---------------------------------------------------------------------------------------------
// compare

/// The reports of a `bench --json` file: one document, or an array of them (`--all-adapters`).
pub fn read_reports(path: &Path) -> Result<Vec<Report>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let parse = |v: serde_json::Value| {
        serde_json::from_value::<Report>(v)
            .with_context(|| format!("{} is not a `bench --json` report", path.display()))
    };
    match value {
        serde_json::Value::Array(items) => items.into_iter().map(parse).collect(),
        single => Ok(vec![parse(single)?]),
    }
}

pub fn compare_files(paths: &[PathBuf]) -> Result<String> {
    let mut columns = Vec::new();
    for path in paths {
        let reports = read_reports(path)?;
        let many = reports.len() > 1;
        for (i, report) in reports.into_iter().enumerate() {
            let name = path.display().to_string();
            columns.push((if many { format!("{name}[{i}]") } else { name }, report));
        }
    }
    ensure!(!columns.is_empty(), "no reports to compare");
    Ok(compare_table(&columns))
}

/// A side-by-side table of `(label, report)` columns: one row per (model, shortcut, mode, batch)
/// found in any report, each column's median ms and images/s, and each later column's images/s
/// over the first's.
pub fn compare_table(columns: &[(String, Report)]) -> String {
    let letter = |i: usize| char::from(b'A' + (i % 26) as u8).to_string() + &"'".repeat(i / 26);
    let mut text = String::new();
    for (i, (label, report)) in columns.iter().enumerate() {
        text += &format!("{}: {label}: {}\n", letter(i), adapter_label(&report.adapter));
    }
    text += "ratios: images/s over A's (above 1: faster than A)\n\n";

    type Key = (String, String, Mode, usize);
    let key = |m: &Measurement| -> Key { (m.model.clone(), m.shortcut.clone(), m.mode, m.batch) };
    let mut keys: Vec<Key> = Vec::new();
    for (_, report) in columns {
        for m in &report.results {
            if !keys.contains(&key(m)) {
                keys.push(key(m));
            }
        }
    }
    let mut header = vec!["model".to_string(), "mode".into(), "batch".into()];
    for i in 0..columns.len() {
        header.push(format!("{} ms", letter(i)));
        header.push(format!("{} images/s", letter(i)));
        if i > 0 {
            header.push(format!("{}/A", letter(i)));
        }
    }
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            let found: Vec<Option<&Measurement>> =
                columns.iter().map(|(_, r)| r.results.iter().find(|m| key(m) == *k)).collect();
            let mut row = vec![model_label(&k.0, &k.1), k.2.name().into(), k.3.to_string()];
            for (i, m) in found.iter().enumerate() {
                row.push(m.map_or("-".into(), |m| fmt3(m.median_ms)));
                row.push(m.map_or("-".into(), |m| fmt3(m.images_per_s)));
                if i > 0 {
                    row.push(match (found[0], m) {
                        (Some(a), Some(m)) => format!("{:.2}x", m.images_per_s / a.images_per_s),
                        _ => "-".into(),
                    });
                }
            }
            row
        })
        .collect();
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    text += &markdown(&header, &rows, 2);
    text
}

// ---------------------------------------------------------------------------------------------
// adapters

#[derive(clap::Args, Debug)]
pub struct AdaptersArgs {
    #[command(flatten)]
    pub adapter: AdapterChoice,
    /// Print one JSON document instead of text: {"tool_version", "adapters": [...], "selected"}
    #[arg(long)]
    pub json: bool,
}

/// What `adapters --json` says about one adapter.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AdapterEntry {
    pub index: usize,
    pub name: String,
    pub vendor: String,
    pub vendor_id: u32,
    pub device_id: u32,
    pub device_type: String,
    pub backend: String,
    pub driver: String,
    pub driver_info: String,
    pub software: bool,
    pub timestamp_query: bool,
    pub timestamp_query_inside_passes: bool,
    pub shader_f16: bool,
    pub subgroups: bool,
    pub subgroup_min_size: u32,
    pub subgroup_max_size: u32,
    pub max_storage_buffer_binding_size: u64,
    pub max_buffer_size: u64,
    pub max_storage_buffers_per_shader_stage: u32,
    pub max_compute_workgroup_storage_size: u32,
    pub max_compute_invocations_per_workgroup: u32,
    pub max_compute_workgroup_size: [u32; 3],
    pub max_compute_workgroups_per_dimension: u32,
}

impl AdapterEntry {
    pub fn new(index: usize, adapter: &wgpu::Adapter) -> Self {
        let (info, features, limits) = (adapter.get_info(), adapter.features(), adapter.limits());
        Self {
            index,
            name: info.name.clone(),
            vendor: vendor_name(info.vendor),
            vendor_id: info.vendor,
            device_id: info.device,
            device_type: device_type_name(info.device_type).into(),
            backend: info.backend.to_str().into(),
            driver: info.driver.clone(),
            driver_info: info.driver_info.clone(),
            software: gpu::is_software(&info),
            timestamp_query: features.contains(wgpu::Features::TIMESTAMP_QUERY),
            timestamp_query_inside_passes: features.contains(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES),
            shader_f16: features.contains(wgpu::Features::SHADER_F16),
            subgroups: features.contains(wgpu::Features::SUBGROUP),
            subgroup_min_size: info.subgroup_min_size,
            subgroup_max_size: info.subgroup_max_size,
            max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
            max_buffer_size: limits.max_buffer_size,
            max_storage_buffers_per_shader_stage: limits.max_storage_buffers_per_shader_stage,
            max_compute_workgroup_storage_size: limits.max_compute_workgroup_storage_size,
            max_compute_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
            max_compute_workgroup_size: [
                limits.max_compute_workgroup_size_x,
                limits.max_compute_workgroup_size_y,
                limits.max_compute_workgroup_size_z,
            ],
            max_compute_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
        }
    }
}

/// Lists every adapter wgpu finds on every backend (or on --backend) with what matters here, and
/// the one the other commands would pick.
pub fn adapters(args: &AdaptersArgs) -> Result<()> {
    let choice = &args.adapter;
    let backend = choice.backend.clone().or_else(|| std::env::var("WGPU_BACKEND").ok());
    let backends = backend.as_deref().map(gpu::backends_from_name).transpose()?.unwrap_or(wgpu::Backends::all());
    let found = gpu::enumerate_adapters(backends);
    let entries: Vec<AdapterEntry> = found.iter().enumerate().map(|(i, a)| AdapterEntry::new(i, a)).collect();
    let selected = choice.select()?.get_info();
    let selected_index = found.iter().position(|a| a.get_info() == selected);
    if args.json {
        #[derive(Serialize)]
        struct Listing<'a> {
            tool_version: &'a str,
            adapters: &'a [AdapterEntry],
            selected: Option<usize>,
        }
        let listing = Listing { tool_version: env!("CARGO_PKG_VERSION"), adapters: &entries, selected: selected_index };
        println!("{}", serde_json::to_string_pretty(&listing)?);
        return Ok(());
    }
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    for (a, e) in found.iter().zip(&entries) {
        println!("{}: {}", e.index, gpu::describe(&a.get_info()));
        println!("   {}, vendor {} (0x{:04x}), device 0x{:04x}", e.device_type, e.vendor, e.vendor_id, e.device_id);
        println!(
            "   timestamp queries {}, shader f16 {}, subgroups {} (size {}-{})",
            yes_no(e.timestamp_query),
            yes_no(e.shader_f16),
            yes_no(e.subgroups),
            e.subgroup_min_size,
            e.subgroup_max_size
        );
        println!(
            "   storage binding {} MiB, buffer {} MiB, {} storage buffers per stage, {} B workgroup memory, \
             {} invocations per workgroup (size {:?}), {} workgroups per dimension",
            e.max_storage_buffer_binding_size >> 20,
            e.max_buffer_size >> 20,
            e.max_storage_buffers_per_shader_stage,
            e.max_compute_workgroup_storage_size,
            e.max_compute_invocations_per_workgroup,
            e.max_compute_workgroup_size,
            e.max_compute_workgroups_per_dimension
        );
    }
    match selected_index {
        Some(i) => println!("selected: {i}: {}", gpu::describe(&selected)),
        None => println!("selected: {}", gpu::describe(&selected)),
    }
    Ok(())
}
