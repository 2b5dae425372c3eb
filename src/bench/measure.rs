//! Timing whole steps (and with `--per-layer`, each pass) of a configuration on one adapter.

use super::flops::flop_per_image;
use super::peak::measure_peak;
use super::report::{Kind, LayerTime, Measurement, Peak, Report};
use super::selfcheck::self_check;
use super::tables::fmt3;
use super::{Config, Mode, Timer, Timing, percentile, submit_step};
use crate::gpu::AdapterJson;
use crate::gpu::timing::{Timestamps, submit};
use crate::ops::sgd::Sgd;

use std::ops::Range;
use std::path::Path;

use anyhow::{Context, Result, ensure};

use crate::gpu::Gpu;
use crate::kernels::Dispatch;
use crate::model::{Arch, ResNet, Shortcut};
use crate::ops::conv;
use crate::plan::{InferStep, TrainStep, Trained};
use crate::rng::Rng;

/// Self-check, peak microbenchmarks, then every configuration; progress goes to stderr. A
/// configuration that cannot be planned (e.g. too large for the adapter) is reported and skipped;
/// a failed self-check fails the whole adapter.
pub fn bench_adapter(gpu: &Gpu, configs: &[Config], options: &Timing) -> Result<Report> {
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
        conv: conv::tune::choice(gpu)?,
        warmup: options.warmup,
        iters: options.iters,
        results,
    })
}

/// A planned step, with the model its dispatches bind. One exists at a time, so the size
/// difference of the variants does not matter.
#[allow(clippy::large_enum_variant)]
enum Step {
    Train { _model: ResNet, step: TrainStep },
    Infer(InferStep),
}

impl Step {
    /// Plans `mode` at `batch` with randomly initialised weights and random images; the returned
    /// bytes are the storage buffers the model (for train) and the plan allocated.
    fn new(gpu: &Gpu, arch: &Arch, mode: Mode, batch: usize) -> Result<(Self, u64)> {
        arch.check_fits(gpu, batch)?;
        let mut rng = Rng::new(1);
        let images: Vec<f32> = (0..batch * 3 * arch.image * arch.image).map(|_| rng.normal() as f32).collect();
        match mode {
            Mode::Train => {
                let before = gpu.allocated_bytes();
                let model = ResNet::new(gpu, arch.clone())?;
                model.init(gpu, 0);
                let sgd = Sgd { lr: 0.01, momentum: 0.9, weight_decay: 1e-4 };
                let step = TrainStep::new(gpu, &model, batch, sgd, Trained::ALL)?;
                let memory = gpu.allocated_bytes() - before;
                let labels: Vec<u32> = (0..batch).map(|_| rng.below(arch.classes) as u32).collect();
                gpu.write(&step.input, &images);
                gpu.write(&step.labels, &labels);
                Ok((Step::Train { _model: model, step }, memory))
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
                Ok((Step::Infer(step), memory))
            }
        }
    }

    fn dispatches(&self) -> &[Dispatch] {
        match self {
            Step::Train { step, .. } => &step.dispatches,
            Step::Infer(step) => &step.dispatches,
        }
    }
}

/// Times one configuration on `gpu`; `peak` turns the achieved rates into shares.
pub fn measure(gpu: &Gpu, config: &Config, options: &Timing, peak: &Peak) -> Result<Measurement> {
    ensure!(options.iters > 0, "at least one timed step is needed");
    let arch = Arch::parse(&config.model, config.shortcut)?;
    let tuned = gpu.tuning.seconds();
    let (plan, memory_bytes) = Step::new(gpu, &arch, config.mode, config.batch)?;
    let tuning_s = gpu.tuning.seconds() - tuned;
    if tuning_s > 0.0 {
        eprintln!("{} {} batch {}: the autotune took {tuning_s:.1} s", config.model, config.mode.name(), config.batch);
    }
    if let Step::Train { step, .. } = &plan {
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
        tuning_s,
        layers,
    })
}

pub(super) fn shortcut_name(shortcut: Shortcut) -> &'static str {
    match shortcut {
        Shortcut::A => "a",
        Shortcut::B => "b",
        Shortcut::Plain => "plain",
    }
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
            kernels: dispatches[range.clone()].iter().map(Dispatch::describe).collect(),
        })
        .collect())
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
