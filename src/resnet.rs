//! The paper's CIFAR ResNets (6n+2 layers) and their plain twins, as GPU plans.
//!
//! Parameters live in one arena with torchvision's `state_dict` names (`layer2.0.bn1.weight`),
//! gradients and SGD velocity in two more arenas of the same layout, so the optimizer is one
//! dispatch; BN running statistics are kept apart in a fourth. A `TrainStep` is planned once for a
//! batch size: every buffer, bind group and dispatch is created up front, and a step only writes
//! the batch and submits one command buffer.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context, Result, bail, ensure};

use crate::gpu::{Gpu, Tensor};
use crate::kernels::Dispatch;
use crate::layers::{self, SgdParams};

/// How a residual block adds its input back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shortcut {
    /// The paper's option A: identity, or at a downsampling block even rows/columns plus zero channels.
    A,
    /// Option B: identity, or at a downsampling block a 1x1 conv (stride 2) and BN (`downsample.0/1`).
    B,
    /// No shortcut at all: the plain networks of the paper's Figure 6.
    Plain,
}

/// A CIFAR ResNet: 3x3 conv 16 + BN + ReLU, three stages of `n` basic blocks at widths 16/32/64
/// (stride 2 at the first block of stages 2 and 3), global average pool, fc `classes`.
#[derive(Clone, Copy, Debug)]
pub struct Arch {
    pub n: usize,
    pub shortcut: Shortcut,
    pub classes: usize,
}

const WIDTHS: [usize; 3] = [16, 32, 64];

impl Arch {
    /// `resnet20`, `resnet56`, `plain110`, ... (any depth 6n+2), with option-A or -B shortcuts.
    pub fn cifar(name: &str, shortcut: Shortcut) -> Result<Self> {
        let (plain, depth) = match (name.strip_prefix("resnet"), name.strip_prefix("plain")) {
            (Some(d), _) => (false, d),
            (_, Some(d)) => (true, d),
            _ => bail!(
                "unknown model {name:?}: expected resnetD or plainD with D = 6n+2 (20, 32, 44, 56, 110)"
            ),
        };
        let depth: usize = depth
            .parse()
            .with_context(|| format!("unknown model {name:?}: the depth is not a number"))?;
        ensure!(
            depth >= 8 && (depth - 2) % 6 == 0,
            "model {name:?}: CIFAR depths are 6n+2 (8, 14, 20, 32, 44, 56, 110)"
        );
        Ok(Self {
            n: (depth - 2) / 6,
            shortcut: if plain { Shortcut::Plain } else { shortcut },
            classes: 10,
        })
    }

    /// Whether block `i` of stage `s` (both from 0) changes resolution and width.
    fn downsamples(s: usize, i: usize) -> bool {
        s > 0 && i == 0
    }

    /// Every parameter's name and shape, in arena order.
    pub fn parameters(&self) -> Vec<(String, Vec<usize>)> {
        let mut params = vec![("conv1.weight".into(), vec![16, 3, 3, 3])];
        let bn = |params: &mut Vec<(String, Vec<usize>)>, name: &str, c: usize| {
            params.push((format!("{name}.weight"), vec![c]));
            params.push((format!("{name}.bias"), vec![c]));
        };
        bn(&mut params, "bn1", 16);
        let mut c = 16;
        for (s, &k) in WIDTHS.iter().enumerate() {
            for i in 0..self.n {
                let block = format!("layer{}.{i}", s + 1);
                params.push((format!("{block}.conv1.weight"), vec![k, c, 3, 3]));
                bn(&mut params, &format!("{block}.bn1"), k);
                params.push((format!("{block}.conv2.weight"), vec![k, k, 3, 3]));
                bn(&mut params, &format!("{block}.bn2"), k);
                if self.shortcut == Shortcut::B && Self::downsamples(s, i) {
                    params.push((format!("{block}.downsample.0.weight"), vec![k, c, 1, 1]));
                    bn(&mut params, &format!("{block}.downsample.1"), k);
                }
                c = k;
            }
        }
        params.push(("fc.weight".into(), vec![self.classes, 64]));
        params.push(("fc.bias".into(), vec![self.classes]));
        params
    }

    /// The BN running statistics' names and shapes.
    pub fn buffers(&self) -> Vec<(String, Vec<usize>)> {
        self.parameters()
            .into_iter()
            .filter_map(|(name, shape)| {
                let bn = name
                    .strip_suffix(".bias")
                    .filter(|_| shape.len() == 1 && !name.starts_with("fc"))?;
                Some([
                    (format!("{bn}.running_mean"), shape.clone()),
                    (format!("{bn}.running_var"), shape),
                ])
            })
            .flatten()
            .collect()
    }
}

/// Named tensors in one GPU buffer.
pub struct Arena {
    pub all: Tensor,
    pub names: Vec<String>,
    pub tensors: Vec<Tensor>,
    index: HashMap<String, usize>,
}

impl Arena {
    pub fn new(gpu: &Gpu, label: &str, specs: &[(String, Vec<usize>)]) -> Result<Self> {
        let shapes: Vec<Vec<usize>> = specs.iter().map(|(_, s)| s.clone()).collect();
        let (buffer, tensors) = gpu.arena(label, &shapes)?;
        let all = Tensor {
            shape: vec![(buffer.size() / 4) as usize],
            buffer: Arc::clone(&buffer),
            offset: 0,
        };
        let names: Vec<String> = specs.iter().map(|(n, _)| n.clone()).collect();
        let index = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect();
        Ok(Self {
            all,
            names,
            tensors,
            index,
        })
    }

    pub fn get(&self, name: &str) -> &Tensor {
        let i = self
            .index
            .get(name)
            .unwrap_or_else(|| panic!("the model has no tensor named {name}"));
        &self.tensors[*i]
    }
}

/// A CIFAR ResNet's parameters, gradients, velocity and running statistics, resident on the GPU.
pub struct ResNet {
    pub arch: Arch,
    pub params: Arena,
    pub grads: Arena,
    pub velocity: Arena,
    pub buffers: Arena,
}

impl ResNet {
    /// Allocates the model with zero parameters and running statistics mean 0, variance 1.
    pub fn new(gpu: &Gpu, arch: Arch) -> Result<Self> {
        let specs = arch.parameters();
        let buffers = Arena::new(gpu, "running statistics", &arch.buffers())?;
        for (name, t) in buffers.names.iter().zip(&buffers.tensors) {
            if name.ends_with("running_var") {
                gpu.write(t, &vec![1.0f32; t.len()]);
            }
        }
        Ok(Self {
            arch,
            params: Arena::new(gpu, "parameters", &specs)?,
            grads: Arena::new(gpu, "gradients", &specs)?,
            velocity: Arena::new(gpu, "velocity", &specs)?,
            buffers,
        })
    }

    /// Overwrites the named parameters and running statistics; shapes are checked, names not in
    /// `values` keep their contents.
    pub fn load(&self, gpu: &Gpu, values: &HashMap<String, Vec<f32>>) -> Result<()> {
        for (name, data) in values {
            let tensor = match (self.params.index.get(name), self.buffers.index.get(name)) {
                (Some(&i), _) => &self.params.tensors[i],
                (_, Some(&i)) => &self.buffers.tensors[i],
                _ => bail!("the model {:?} has no tensor named {name}", self.arch),
            };
            ensure!(
                data.len() == tensor.len(),
                "{name}: {} values given, shape {:?} holds {}",
                data.len(),
                tensor.shape,
                tensor.len()
            );
            gpu.write(tensor, data);
        }
        Ok(())
    }
}

/// Tensors one conv + BN pair saves in the forward for its backward.
struct ConvBn {
    conv: String,
    bn: String,
    stride: usize,
    pad: usize,
    inp: Tensor,
    conv_out: Tensor,
    out: Tensor,
    mean: Tensor,
    rstd: Tensor,
}

/// A planned training step at a fixed batch size: forward, loss, backward and SGD, in order.
pub struct TrainStep {
    /// [N,3,32,32], normalised images; written by the caller before `run`.
    pub input: Tensor,
    /// [N] u32 class indices.
    pub labels: Tensor,
    /// [N,classes]
    pub logits: Tensor,
    /// [1] mean cross-entropy, [1] u32 number of correct top-1 predictions.
    pub loss: Tensor,
    pub correct: Tensor,
    pub sgd: SgdParams,
    dispatches: Vec<Dispatch>,
}

/// Records dispatches while allocating each intermediate tensor once.
struct Planner<'a> {
    gpu: &'a Gpu,
    model: &'a ResNet,
    dispatches: Vec<Dispatch>,
}

impl Planner<'_> {
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.gpu.zeros(name, shape)
    }

    fn push(&mut self, dispatch: Result<Dispatch>) -> Result<()> {
        self.dispatches.push(dispatch?);
        Ok(())
    }

    /// out = bn(conv(inp)) in training mode.
    fn conv_bn(
        &mut self,
        inp: &Tensor,
        conv: &str,
        bn: &str,
        stride: usize,
        pad: usize,
    ) -> Result<ConvBn> {
        let (gpu, p, b) = (self.gpu, &self.model.params, &self.model.buffers);
        let weight = p.get(&format!("{conv}.weight"));
        let shape = layers::ConvParams::new(&inp.shape, &weight.shape, stride, pad)?.out_shape();
        let k = shape[1];
        let (conv_out, out) = (self.tensor(conv, &shape)?, self.tensor(bn, &shape)?);
        let (mean, rstd) = (
            self.tensor(&format!("{bn} mean"), &[k])?,
            self.tensor(&format!("{bn} rstd"), &[k])?,
        );
        self.push(layers::conv2d_forward(
            gpu, &conv_out, inp, weight, stride, pad,
        ))?;
        let (running_mean, running_var) = (
            b.get(&format!("{bn}.running_mean")),
            b.get(&format!("{bn}.running_var")),
        );
        let (bn_weight, bn_bias) = (p.get(&format!("{bn}.weight")), p.get(&format!("{bn}.bias")));
        self.push(layers::batchnorm_forward_train(
            gpu,
            &out,
            &mean,
            &rstd,
            running_mean,
            running_var,
            &conv_out,
            bn_weight,
            bn_bias,
        ))?;
        Ok(ConvBn {
            conv: conv.into(),
            bn: bn.into(),
            stride,
            pad,
            inp: inp.clone(),
            conv_out,
            out,
            mean,
            rstd,
        })
    }

    /// Writes the pair's parameter gradients (`=`) and returns the gradient of its input, unless
    /// `dinp_needed` is false (the stem: nothing upstream of the image).
    fn conv_bn_backward(
        &mut self,
        saved: &ConvBn,
        dout: &Tensor,
        dinp_needed: bool,
    ) -> Result<Option<Tensor>> {
        let (gpu, p, g) = (self.gpu, &self.model.params, &self.model.grads);
        let (bn, conv) = (&saved.bn, &saved.conv);
        let dconv_out = self.tensor(&format!("d {bn}"), &saved.conv_out.shape)?;
        let (dweight, dbias) = (g.get(&format!("{bn}.weight")), g.get(&format!("{bn}.bias")));
        let bn_weight = p.get(&format!("{bn}.weight"));
        self.push(layers::batchnorm_backward(
            gpu,
            &dconv_out,
            dweight,
            dbias,
            dout,
            &saved.conv_out,
            bn_weight,
            &saved.mean,
            &saved.rstd,
        ))?;
        let weight_name = format!("{conv}.weight");
        self.push(layers::conv2d_backward_weight(
            gpu,
            g.get(&weight_name),
            &dconv_out,
            &saved.inp,
            saved.stride,
            saved.pad,
        ))?;
        if !dinp_needed {
            return Ok(None);
        }
        let dinp = self.tensor(&format!("d {conv} input"), &saved.inp.shape)?;
        self.push(layers::conv2d_backward_input(
            gpu,
            &dinp,
            &dconv_out,
            p.get(&weight_name),
            saved.stride,
            saved.pad,
        ))?;
        Ok(Some(dinp))
    }

    fn relu(&mut self, inp: &Tensor, name: &str) -> Result<Tensor> {
        let out = self.tensor(name, &inp.shape)?;
        self.push(layers::relu_forward(self.gpu, &out, inp))?;
        Ok(out)
    }

    fn relu_backward(&mut self, dout: &Tensor, inp: &Tensor, name: &str) -> Result<Tensor> {
        let dinp = self.tensor(name, &inp.shape)?;
        self.push(layers::relu_backward(self.gpu, &dinp, dout, inp))?;
        Ok(dinp)
    }

    fn add(&mut self, inp: &Tensor, other: &Tensor, name: &str) -> Result<Tensor> {
        let out = self.tensor(name, &inp.shape)?;
        self.push(layers::add(self.gpu, &out, inp, other))?;
        Ok(out)
    }
}

/// What a basic block saves for its backward.
struct Block {
    name: String,
    inp: Tensor,
    bn1: ConvBn,
    bn2: ConvBn,
    downsample: Option<ConvBn>,
    sum: Tensor,
}

impl TrainStep {
    /// Plans forward, loss, backward and the SGD update for batches of `batch` 32x32 images.
    pub fn new(gpu: &Gpu, model: &ResNet, batch: usize, sgd: SgdParams) -> Result<Self> {
        let arch = model.arch;
        let mut plan = Planner {
            gpu,
            model,
            dispatches: Vec::new(),
        };
        let input = plan.tensor("input", &[batch, 3, 32, 32])?;
        let labels = plan.tensor("labels", &[batch])?;

        // Forward. Stem: conv 3x3 16, BN, ReLU.
        let stem = plan.conv_bn(&input, "conv1", "bn1", 1, 1)?;
        let mut x = plan.relu(&stem.out, "stem relu")?;
        let mut blocks = Vec::new();
        for s in 0..3 {
            for i in 0..arch.n {
                let name = format!("layer{}.{i}", s + 1);
                let stride = if Arch::downsamples(s, i) { 2 } else { 1 };
                let bn1 = plan.conv_bn(
                    &x,
                    &format!("{name}.conv1"),
                    &format!("{name}.bn1"),
                    stride,
                    1,
                )?;
                let relu1 = plan.relu(&bn1.out, &format!("{name} relu1"))?;
                let bn2 = plan.conv_bn(
                    &relu1,
                    &format!("{name}.conv2"),
                    &format!("{name}.bn2"),
                    1,
                    1,
                )?;
                let mut downsample = None;
                let sum = match (arch.shortcut, stride) {
                    (Shortcut::Plain, _) => bn2.out.clone(),
                    (_, 1) => plan.add(&bn2.out, &x, &format!("{name} sum"))?,
                    (Shortcut::A, _) => {
                        let shortcut = plan.tensor(&format!("{name} shortcut"), &bn2.out.shape)?;
                        plan.push(layers::shortcut_a_forward(gpu, &shortcut, &x))?;
                        plan.add(&bn2.out, &shortcut, &format!("{name} sum"))?
                    }
                    (Shortcut::B, _) => {
                        let projection = plan.conv_bn(
                            &x,
                            &format!("{name}.downsample.0"),
                            &format!("{name}.downsample.1"),
                            2,
                            0,
                        )?;
                        let sum = plan.add(&bn2.out, &projection.out, &format!("{name} sum"))?;
                        downsample = Some(projection);
                        sum
                    }
                };
                let out = plan.relu(&sum, &format!("{name} out"))?;
                blocks.push(Block {
                    name,
                    inp: x,
                    bn1,
                    bn2,
                    downsample,
                    sum,
                });
                x = out;
            }
        }
        let pooled = plan.tensor("pooled", &[batch, 64])?;
        plan.push(layers::avgpool_forward(gpu, &pooled, &x))?;
        let logits = plan.tensor("logits", &[batch, arch.classes])?;
        let (p, g) = (&model.params, &model.grads);
        plan.push(layers::linear_forward(
            gpu,
            &logits,
            &pooled,
            p.get("fc.weight"),
            p.get("fc.bias"),
        ))?;
        let (dlogits, loss, correct) = (
            plan.tensor("dlogits", &logits.shape)?,
            plan.tensor("loss", &[1])?,
            plan.tensor("correct", &[1])?,
        );
        plan.push(layers::softmax_cross_entropy(
            gpu, &dlogits, &loss, &correct, &logits, &labels,
        ))?;

        // Backward: the same calls in reverse.
        plan.push(layers::linear_backward_weight(
            gpu,
            g.get("fc.weight"),
            g.get("fc.bias"),
            &dlogits,
            &pooled,
        ))?;
        let dpooled = plan.tensor("dpooled", &pooled.shape)?;
        plan.push(layers::linear_backward_input(
            gpu,
            &dpooled,
            &dlogits,
            p.get("fc.weight"),
        ))?;
        let mut dx = plan.tensor("d last block out", &x.shape)?;
        plan.push(layers::avgpool_backward(gpu, &dx, &dpooled))?;
        for block in blocks.iter().rev() {
            let name = &block.name;
            let dsum = plan.relu_backward(&dx, &block.sum, &format!("d {name} sum"))?;
            // sum = bn2 + shortcut: dsum reaches both unchanged.
            let drelu1 = plan
                .conv_bn_backward(&block.bn2, &dsum, true)?
                .expect("dinp requested");
            let dbn1 = plan.relu_backward(&drelu1, &block.bn1.out, &format!("d {name} bn1"))?;
            let dbranch = plan
                .conv_bn_backward(&block.bn1, &dbn1, true)?
                .expect("dinp requested");
            // The block input's gradient: the branch's (written `=` above) plus the shortcut's.
            dx = match (arch.shortcut, &block.downsample, block.bn1.stride) {
                (Shortcut::Plain, _, _) => dbranch,
                (_, None, 1) => plan.add(&dbranch, &dsum, &format!("d {name} input"))?,
                (_, Some(projection), _) => {
                    let dshortcut = plan
                        .conv_bn_backward(projection, &dsum, true)?
                        .expect("dinp requested");
                    plan.add(&dbranch, &dshortcut, &format!("d {name} input"))?
                }
                (_, None, _) => {
                    let dshortcut = plan.tensor(&format!("d {name} shortcut"), &block.inp.shape)?;
                    plan.push(layers::shortcut_a_backward(gpu, &dshortcut, &dsum))?;
                    plan.add(&dbranch, &dshortcut, &format!("d {name} input"))?
                }
            };
        }
        let dstem = plan.relu_backward(&dx, &stem.out, "d stem bn")?;
        plan.conv_bn_backward(&stem, &dstem, false)?;

        plan.push(layers::sgd(
            gpu,
            &model.params.all,
            &model.velocity.all,
            &model.grads.all,
            sgd.lr,
            sgd.momentum,
            sgd.weight_decay,
        ))?;
        Ok(Self {
            input,
            labels,
            logits,
            loss,
            correct,
            sgd,
            dispatches: plan.dispatches,
        })
    }

    /// Submits the whole step as one command buffer. `lr` rewrites the SGD dispatch's learning rate.
    pub fn run(&mut self, gpu: &Gpu, lr: f32) -> Result<()> {
        if lr != self.sgd.lr {
            self.sgd.lr = lr;
            gpu.update_params(
                self.dispatches.last().expect("the plan ends with SGD"),
                &self.sgd,
            );
        }
        gpu.run(&self.dispatches.iter().collect::<Vec<_>>())
    }
}
