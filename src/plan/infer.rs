//! The inference plan: batch norm folded into the convolutions at load time, each block's
//! residual add and ReLU run in the epilogue of its last conv.

use anyhow::Result;

use crate::gpu::{Gpu, Tensor};
use crate::kernels::Dispatch;
use crate::model::{Arch, Arena, ConvSpec, STEM_POOL, ShortcutSpec};
use crate::ops::{batchnorm, conv, elementwise, linear, pool};

/// Inference with batch norm folded into the convolutions at load time:
/// weight' = weight * gamma / sqrt(running_var + eps), bias' = beta - running_mean * gamma / sqrt(running_var + eps).
/// Each block's residual add and ReLU run in the epilogue of its last conv, so a block is its
/// convs and nothing else.
pub struct InferStep {
    /// [N,3,H,W] normalised images.
    pub input: Tensor,
    /// [N,classes]
    pub logits: Tensor,
    pub dispatches: Vec<Dispatch>,
    /// Folded conv weights and biases, and fc, in one buffer.
    pub weights: Arena,
}

impl InferStep {
    /// Folds `ck`'s weights (torchvision names, checked against `arch`) and plans a batch of `batch`.
    pub fn new(
        gpu: &Gpu,
        arch: &Arch,
        ck: &crate::checkpoint::Checkpoint,
        source: &std::path::Path,
        batch: usize,
    ) -> Result<Self> {
        let weights = Self::fold(gpu, arch, ck, source)?;
        Self::plan(gpu, arch, weights, batch)
    }

    /// Checks `ck`'s tensors against `arch` (errors name `source`) and uploads the folded weights;
    /// plans of several batch sizes can share the result (a clone shares the buffer).
    pub fn fold(gpu: &Gpu, arch: &Arch, ck: &crate::checkpoint::Checkpoint, source: &std::path::Path) -> Result<Arena> {
        arch.check_fits(gpu, 0)?;
        let mut expected = arch.parameters();
        expected.extend(arch.buffers());
        ck.check(&expected, &arch.name, source)?;

        // Every conv followed by its BN becomes "<conv>.weight" and "<conv>.bias".
        let mut specs = Vec::new();
        let mut folded: Vec<Vec<f32>> = Vec::new();
        for conv in arch.convs() {
            let (shape, values) = &ck.tensors[&format!("{}.weight", conv.conv)];
            let get = |what: &str| &ck.tensors[&format!("{}.{what}", conv.bn)].1;
            let (gamma, beta, mean, var) = (get("weight"), get("bias"), get("running_mean"), get("running_var"));
            let scale: Vec<f32> = gamma.iter().zip(var).map(|(g, v)| g / (v + batchnorm::BN_EPS).sqrt()).collect();
            let per_k = values.len() / shape[0];
            folded.push(values.iter().enumerate().map(|(i, w)| w * scale[i / per_k]).collect());
            folded.push(beta.iter().zip(mean).zip(&scale).map(|((b, m), s)| b - m * s).collect());
            specs.push((format!("{}.weight", conv.conv), shape.clone()));
            specs.push((format!("{}.bias", conv.conv), vec![shape[0]]));
        }
        for name in ["fc.weight", "fc.bias"] {
            let (shape, values) = &ck.tensors[name];
            specs.push((name.into(), shape.clone()));
            folded.push(values.clone());
        }
        let weights = Arena::new(gpu, "folded weights", &specs)?;
        for (t, values) in weights.tensors.iter().zip(&folded) {
            gpu.write(t, values);
        }
        Ok(weights)
    }

    /// Plans a batch of `batch` on weights from [`InferStep::fold`].
    pub fn plan(gpu: &Gpu, arch: &Arch, weights: Arena, batch: usize) -> Result<Self> {
        arch.check_fits(gpu, batch)?;
        let mut plan = FoldedPlan { gpu, weights: &weights, dispatches: Vec::new(), layouts: Vec::new() };
        let input = gpu.zeros("input", &[batch, 3, arch.image, arch.image])?;
        let mut x = plan.conv(&input, &arch.stem(), None, true)?;
        if arch.imagenet {
            let (r, stride, pad) = STEM_POOL;
            let shape = pool::PoolParams::new(&x.shape, r, stride, pad)?.out_shape();
            let (out, indices) = (gpu.zeros("maxpool", &shape)?, gpu.zeros("maxpool indices", &shape)?);
            plan.push("maxpool", pool::maxpool_forward(gpu, &out, &indices, &x, r, stride, pad))?;
            x = out;
        }
        for spec in arch.blocks() {
            let name = &spec.name;
            let shortcut = match spec.shortcut {
                ShortcutSpec::None => None,
                ShortcutSpec::Identity => Some(x.clone()),
                ShortcutSpec::A => {
                    let out = gpu.zeros(
                        &format!("{name}.shortcut"),
                        &[x.shape[0], spec.out(), x.shape[2].div_ceil(2), x.shape[3].div_ceil(2)],
                    )?;
                    plan.push(&format!("{name}.shortcut"), elementwise::shortcut_a_forward(gpu, &out, &x))?;
                    Some(out)
                }
                ShortcutSpec::B(projection) => Some(plan.conv(&x, &projection, None, false)?),
            };
            let mut y = x.clone();
            for (j, conv) in spec.convs.iter().enumerate() {
                let residual = shortcut.as_ref().filter(|_| j + 1 == spec.convs.len());
                y = plan.conv(&y, conv, residual, true)?;
            }
            x = y;
        }
        let pooled = gpu.zeros("avgpool", &[batch, arch.features()])?;
        plan.push("avgpool", pool::avgpool_forward(gpu, &pooled, &x))?;
        let logits = gpu.zeros("logits", &[batch, arch.classes])?;
        plan.push(
            "fc",
            linear::linear_forward(gpu, &logits, &pooled, weights.get("fc.weight"), weights.get("fc.bias")),
        )?;
        // The folded weights do not change: lay them out once.
        gpu.run(&plan.layouts.iter().collect::<Vec<_>>())?;
        let dispatches = plan.dispatches;
        Ok(Self { input, logits, dispatches, weights })
    }

    pub fn run(&self, gpu: &Gpu) -> Result<()> {
        gpu.run(&self.dispatches.iter().collect::<Vec<_>>())
    }
}

struct FoldedPlan<'a> {
    gpu: &'a Gpu,
    weights: &'a Arena,
    dispatches: Vec<Dispatch>,
    /// What lays the weights out as a panel (`conv::conv2d_weight_panel`), run once.
    layouts: Vec<Dispatch>,
}

impl FoldedPlan<'_> {
    fn push(&mut self, label: &str, dispatch: Result<Dispatch>) -> Result<()> {
        let mut dispatch = dispatch?;
        dispatch.label = label.to_string();
        self.dispatches.push(dispatch);
        Ok(())
    }

    /// relu?(conv(inp) with folded BN + residual?).
    fn conv(&mut self, inp: &Tensor, spec: &ConvSpec, residual: Option<&Tensor>, relu: bool) -> Result<Tensor> {
        let (name, stride, pad) = (spec.conv.as_str(), spec.stride, spec.pad());
        let (weight, bias) = (self.weights.get(&format!("{name}.weight")), self.weights.get(&format!("{name}.bias")));
        let params = conv::ConvParams::new(&inp.shape, &weight.shape, stride, pad)?;
        let out = self.gpu.zeros(name, &params.out_shape())?;
        let panel = conv::panel_for(self.gpu, &params, weight, false)?.map(|(panel, layout)| {
            self.layouts.push(layout);
            panel
        });
        let dispatch = conv::conv2d_forward_fused(
            self.gpu,
            &out,
            inp,
            weight,
            panel.as_ref(),
            Some(bias),
            residual,
            relu,
            stride,
            pad,
        );
        self.push(name, dispatch)?;
        Ok(out)
    }
}
