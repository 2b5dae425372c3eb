//! The JSON report of `bench`, and the adapter as JSON (`infer --json` and `adapters --json` too).

use super::{Mode, Timer};
use crate::gpu::AdapterJson;

use serde::{Deserialize, Serialize};

use crate::kernels::{Dispatch, Kernel};

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
///                                         or the one path every conv ran on: tiled | direct | lanes
///                                         or a tile of the tiled path ("tiled 128x64x8 8x8")
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
///     "tuning_s": 21.4,                   seconds the autotune spent timing variants while this
///                                         configuration was planned (0 where all were kept)
///     "layers": [                          with --per-layer and timestamps, else []
///       {"name": "layer2.0.conv1", "kind": "conv_forward", "ms": 1.25, "bytes": 3211264,
///        "kernels": ["conv2d_tiled BM=128 BN=64 BK=8 TM=8 TN=8 BIAS=0 RESIDUAL=0 RELU=0"]}
///                                         the pass's dispatches: kernel and override constants
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
    /// Absent from files of earlier versions (read as 0).
    #[serde(default)]
    pub tuning_s: f64,
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
    /// What ran: each dispatch's `Dispatch::describe` (absent from files of earlier versions).
    #[serde(default)]
    pub kernels: Vec<String>,
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
            Kernel::Conv2dTiled
            | Kernel::Conv2dRowsLanes
            | Kernel::Conv2dPointwiseLanes
            | Kernel::Conv2dPointwiseChannelsLanes
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
            | Conv2dTiled
            | Conv2dForwardLanes
            | Conv2dRowsLanes
            | Conv2dStridedLanes
            | Conv2dPointwiseLanes
            | Conv2dPointwiseChannelsLanes => Kind::ConvForward,
            Conv2dBackwardInput | Conv2dBackwardInputLanes | Conv2dBackwardInputStridedLanes => Kind::ConvBackwardInput,
            Conv2dBackwardWeight
            | Conv2dBackwardWeightTiled
            | Conv2dBackwardWeightLanes
            | Conv2dBackwardWeightRowsLanes
            | Conv2dBackwardWeightRowsVec4Lanes
            | SumSlices => Kind::ConvBackwardWeight,
            BatchnormForwardTrain
            | BatchnormForwardTrainVec4
            | BatchnormForwardChunks
            | BatchnormForwardChunksVec4
            | BatchnormForwardCombine
            | BatchnormForwardEval
            | BatchnormForwardEvalVec4
            | BatchnormBackward
            | BatchnormBackwardVec4
            | BatchnormBackwardChunks
            | BatchnormBackwardChunksVec4
            | BatchnormBackwardCombine
            | BatchnormBackwardInput
            | BatchnormBackwardInputVec4 => Kind::Batchnorm,
            ReluBackward | ReluBackwardVec4 | ReluMask | ReluMaskVec4 | Add | AddVec4 | ShortcutAForward
            | ShortcutABackward => Kind::Elementwise,
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

    pub fn label(self) -> &'static str {
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
