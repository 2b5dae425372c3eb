//! ResNets as GPU plans: the paper's CIFAR networks (6n+2 layers, and their plain twins) and
//! torchvision's ImageNet ResNet-18/34/50/101/152.
//!
//! Parameters live in one arena with torchvision's `state_dict` names (`layer2.0.bn1.weight`),
//! gradients and SGD velocity in two more arenas of the same layout, so the optimizer is one
//! dispatch; BN running statistics are kept apart in a fourth. A plan (`TrainStep`, `EvalStep`) is
//! built once for a batch size: every buffer, bind group and dispatch is created up front, and a
//! step only writes the batch and submits one command buffer.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context, Result, bail, ensure};

use crate::gpu::{Gpu, Tensor};
use crate::kernels::Dispatch;
use crate::layers::{self, SgdParams};
use crate::rng::Rng;

/// How a residual block adds its input back when the shapes differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shortcut {
    /// The paper's option A: even rows and columns, zero channels padded on both sides.
    A,
    /// Option B: a 1x1 conv with the block's stride and a BN (`downsample.0`, `downsample.1`).
    B,
    /// No shortcut at all: the plain networks of the paper's Figure 6.
    Plain,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockKind {
    /// 3x3, 3x3 (CIFAR ResNets, ResNet-18/34).
    Basic,
    /// 1x1, 3x3 (with the stride, torchvision's "V1.5"), 1x1 with 4x the width (ResNet-50/101/152).
    Bottleneck,
}

/// A network's shape; `Arch::parse` knows the paper's and torchvision's models.
#[derive(Clone, Debug, PartialEq)]
pub struct Arch {
    pub name: String,
    /// ImageNet stem (7x7/2 conv, BN, ReLU, 3x3/2 max pool) rather than CIFAR's 3x3 conv 16.
    pub imagenet: bool,
    pub block: BlockKind,
    /// (blocks, width) per stage; the first block of every stage but the first has stride 2.
    pub stages: Vec<(usize, usize)>,
    pub shortcut: Shortcut,
    pub classes: usize,
    /// Input images are `image` x `image` RGB.
    pub image: usize,
}

/// ImageNet depths and their blocks per stage (the paper's Table 1).
const IMAGENET: [(usize, BlockKind, [usize; 4]); 5] = [
    (18, BlockKind::Basic, [2, 2, 2, 2]),
    (34, BlockKind::Basic, [3, 4, 6, 3]),
    (50, BlockKind::Bottleneck, [3, 4, 6, 3]),
    (101, BlockKind::Bottleneck, [3, 4, 23, 3]),
    (152, BlockKind::Bottleneck, [3, 8, 36, 3]),
];

impl Arch {
    /// `resnet18|34|50|101|152` are torchvision's ImageNet models; any other `resnetD` or `plainD`
    /// with D = 6n+2 (20, 32, 44, 56, 110, ...) is a CIFAR network with `shortcut` (option A or B).
    pub fn parse(name: &str, shortcut: Shortcut) -> Result<Self> {
        if let Some(&(_, block, blocks)) = IMAGENET.iter().find(|(d, ..)| name == format!("resnet{d}")) {
            let stages = blocks.iter().zip([64, 128, 256, 512]).map(|(&b, w)| (b, w)).collect();
            return Ok(Self {
                name: name.into(),
                imagenet: true,
                block,
                stages,
                shortcut: Shortcut::B,
                classes: 1000,
                image: 224,
            });
        }
        Self::cifar(name, shortcut)
    }

    /// A CIFAR network: 3x3 conv 16 + BN + ReLU, three stages of n basic blocks at widths
    /// 16/32/64, global average pool, fc 10. `resnetD` or `plainD`, D = 6n+2.
    pub fn cifar(name: &str, shortcut: Shortcut) -> Result<Self> {
        let (plain, depth) = match (name.strip_prefix("resnet"), name.strip_prefix("plain")) {
            (Some(d), _) => (false, d),
            (_, Some(d)) => (true, d),
            _ => bail!(
                "unknown model {name:?}: expected resnet18/34/50/101/152 (ImageNet), or resnetD or plainD with D = 6n+2 (CIFAR)"
            ),
        };
        let depth: usize =
            depth.parse().with_context(|| format!("unknown model {name:?}: the depth is not a number"))?;
        ensure!(
            depth >= 8 && (depth - 2).is_multiple_of(6),
            "model {name:?}: CIFAR depths are 6n+2 (8, 14, 20, 32, 44, 56, 110)"
        );
        let n = (depth - 2) / 6;
        Ok(Self {
            name: name.into(),
            imagenet: false,
            block: BlockKind::Basic,
            stages: vec![(n, 16), (n, 32), (n, 64)],
            shortcut: if plain { Shortcut::Plain } else { shortcut },
            classes: 10,
            image: 32,
        })
    }

    fn stem_width(&self) -> usize {
        if self.imagenet { 64 } else { 16 }
    }

    /// Every block in order: (name `layerS.I`, input channels, stride, its convs as
    /// (kernel, stride, output channels), whether it has a `downsample` projection).
    fn blocks(&self) -> Vec<BlockSpec> {
        let mut c = self.stem_width();
        let mut specs = Vec::new();
        for (s, &(count, width)) in self.stages.iter().enumerate() {
            for i in 0..count {
                let stride = if s > 0 && i == 0 { 2 } else { 1 };
                let convs = match self.block {
                    BlockKind::Basic => vec![(3, stride, width), (3, 1, width)],
                    BlockKind::Bottleneck => {
                        vec![(1, 1, width), (3, stride, width), (1, 1, 4 * width)]
                    }
                };
                let out = convs.last().unwrap().2;
                let reshapes = stride != 1 || c != out;
                specs.push(BlockSpec {
                    name: format!("layer{}.{i}", s + 1),
                    inp: c,
                    convs,
                    shortcut: match self.shortcut {
                        Shortcut::Plain => ShortcutSpec::None,
                        _ if !reshapes => ShortcutSpec::Identity,
                        Shortcut::A => ShortcutSpec::A,
                        Shortcut::B => ShortcutSpec::B { stride },
                    },
                });
                c = out;
            }
        }
        specs
    }

    fn features(&self) -> usize {
        let (_, width) = *self.stages.last().unwrap();
        if self.block == BlockKind::Bottleneck { 4 * width } else { width }
    }

    /// Every parameter's name and shape, in torchvision's `state_dict` order.
    pub fn parameters(&self) -> Vec<(String, Vec<usize>)> {
        let mut params = Vec::new();
        let mut conv_bn = |conv: String, bn: String, shape: Vec<usize>| {
            params.push((conv, shape.clone()));
            params.push((format!("{bn}.weight"), vec![shape[0]]));
            params.push((format!("{bn}.bias"), vec![shape[0]]));
        };
        let k = if self.imagenet { 7 } else { 3 };
        conv_bn("conv1.weight".into(), "bn1".into(), vec![self.stem_width(), 3, k, k]);
        for block in self.blocks() {
            let mut c = block.inp;
            for (j, &(r, _, width)) in block.convs.iter().enumerate() {
                conv_bn(
                    format!("{}.conv{}.weight", block.name, j + 1),
                    format!("{}.bn{}", block.name, j + 1),
                    vec![width, c, r, r],
                );
                c = width;
            }
            if let ShortcutSpec::B { .. } = block.shortcut {
                conv_bn(
                    format!("{}.downsample.0.weight", block.name),
                    format!("{}.downsample.1", block.name),
                    vec![c, block.inp, 1, 1],
                );
            }
        }
        params.push(("fc.weight".into(), vec![self.classes, self.features()]));
        params.push(("fc.bias".into(), vec![self.classes]));
        params
    }

    /// The BN running statistics' names and shapes.
    pub fn buffers(&self) -> Vec<(String, Vec<usize>)> {
        self.parameters()
            .into_iter()
            .filter(|(name, _)| name.ends_with(".bias") && name != "fc.bias")
            .flat_map(|(name, shape)| {
                let bn = name.trim_end_matches(".bias");
                [(format!("{bn}.running_mean"), shape.clone()), (format!("{bn}.running_var"), shape)]
            })
            .collect()
    }
}

struct BlockSpec {
    name: String,
    inp: usize,
    /// (kernel size, stride, output channels) of conv1, conv2[, conv3].
    convs: Vec<(usize, usize, usize)>,
    shortcut: ShortcutSpec,
}

enum ShortcutSpec {
    None,
    Identity,
    A,
    B { stride: usize },
}

/// Named tensors in one GPU buffer. A clone shares the buffer.
#[derive(Clone)]
pub struct Arena {
    /// The whole buffer as one flat tensor (what the optimizer walks).
    pub all: Tensor,
    pub names: Vec<String>,
    pub tensors: Vec<Tensor>,
    index: HashMap<String, usize>,
}

impl Arena {
    pub fn new(gpu: &Gpu, label: &str, specs: &[(String, Vec<usize>)]) -> Result<Self> {
        let shapes: Vec<Vec<usize>> = specs.iter().map(|(_, s)| s.clone()).collect();
        let (buffer, tensors) = gpu.arena(label, &shapes)?;
        let all = Tensor { shape: vec![(buffer.size() / 4) as usize], buffer: Arc::clone(&buffer), offset: 0 };
        let names: Vec<String> = specs.iter().map(|(n, _)| n.clone()).collect();
        let index = names.iter().enumerate().map(|(i, n)| (n.clone(), i)).collect();
        Ok(Self { all, names, tensors, index })
    }

    pub fn get(&self, name: &str) -> &Tensor {
        let i = self.index.get(name).unwrap_or_else(|| panic!("the model has no tensor named {name}"));
        &self.tensors[*i]
    }

    pub fn find(&self, name: &str) -> Option<&Tensor> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }
}

/// A ResNet's parameters, gradients, velocity and running statistics, resident on the GPU.
pub struct ResNet {
    pub arch: Arch,
    pub params: Arena,
    pub grads: Arena,
    pub velocity: Arena,
    pub buffers: Arena,
}

impl ResNet {
    /// Allocates the model with zero parameters and velocity, running statistics mean 0, variance 1.
    pub fn new(gpu: &Gpu, arch: Arch) -> Result<Self> {
        let specs = arch.parameters();
        let buffers = Arena::new(gpu, "running statistics", &arch.buffers())?;
        for (name, t) in buffers.names.iter().zip(&buffers.tensors) {
            if name.ends_with("running_var") {
                gpu.write(t, &vec![1.0f32; t.len()]);
            }
        }
        Ok(Self {
            params: Arena::new(gpu, "parameters", &specs)?,
            grads: Arena::new(gpu, "gradients", &specs)?,
            velocity: Arena::new(gpu, "velocity", &specs)?,
            buffers,
            arch,
        })
    }

    /// Initialises the parameters as a fresh torchvision model: He-normal convs (fan-out, as
    /// torchvision), BN weight 1 and bias 0, fc PyTorch's default uniform(+-1/sqrt(fan_in)).
    pub fn init(&self, gpu: &Gpu, seed: u64) {
        let mut rng = Rng::new(seed);
        for (name, t) in self.params.names.iter().zip(&self.params.tensors) {
            let values: Vec<f32> = match (name.as_str(), t.shape.as_slice()) {
                ("fc.weight" | "fc.bias", _) => {
                    let bound = 1.0 / (self.arch.features() as f64).sqrt();
                    (0..t.len()).map(|_| ((2.0 * rng.uniform() - 1.0) * bound) as f32).collect()
                }
                (_, &[k, _, r, s]) => {
                    let std = (2.0 / (k * r * s) as f64).sqrt();
                    (0..t.len()).map(|_| (rng.normal() * std) as f32).collect()
                }
                (n, _) if n.ends_with(".weight") => vec![1.0; t.len()],
                _ => vec![0.0; t.len()],
            };
            gpu.write(t, &values);
        }
    }

    /// The parameter or running statistic of that name.
    pub fn tensor(&self, name: &str) -> Option<&Tensor> {
        self.params.find(name).or_else(|| self.buffers.find(name))
    }

    /// Overwrites the named parameters and running statistics; shapes are checked, names not in
    /// `values` keep their contents.
    pub fn load(&self, gpu: &Gpu, values: &HashMap<String, Vec<f32>>) -> Result<()> {
        for (name, data) in values {
            let tensor = self
                .tensor(name)
                .with_context(|| format!("the model {} has no tensor named {name}", self.arch.name))?;
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

/// Whether BN normalises with the batch's statistics (and updates the running ones) or with the
/// running statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Train,
    Eval,
}

/// One conv + BN pair, out = relu?(bn(conv(inp)) + residual?), and what its backward needs
/// (`mean`, `rstd` only in training mode).
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
    /// [ceil(len / 32)] u32: relu_mask of `out`, where a ReLU follows (training only). Saved
    /// instead of `out` for the ReLU's backward, so `out` dies with its last conv reader.
    mask: Option<Tensor>,
}

/// What a residual block saves for its backward.
struct Block {
    name: String,
    /// conv1/bn1, conv2/bn2[, conv3/bn3], each followed by a ReLU; the last pair's BN adds the
    /// shortcut before its ReLU, and its `out` is the block's output.
    layers: Vec<ConvBn>,
    shortcut: SavedShortcut,
}

enum SavedShortcut {
    None,
    Identity,
    A,
    /// The projection's conv and BN (boxed: the other shortcuts save nothing).
    B(Box<ConvBn>),
}

/// The forward's tensors: input, what backward needs, and the logits. Tensors released during
/// the forward or the backward keep their shapes here, but their buffers may hold other tensors.
struct Forward {
    input: Tensor,
    stem: ConvBn,
    /// The ImageNet stem's max pool: its input (released: only its shape is used) and indices.
    maxpool: Option<(Tensor, Tensor)>,
    blocks: Vec<Block>,
    /// The last block's output, [N, features, h, w] (released: only its shape is used).
    last: Tensor,
    pooled: Tensor,
    logits: Tensor,
}

/// Records dispatches in order while allocating each intermediate tensor once.
struct Planner<'a> {
    gpu: &'a Gpu,
    model: &'a ResNet,
    mode: Mode,
    dispatches: Vec<Dispatch>,
    /// Buffers of released (dead) tensors. A later tensor takes the smallest one that fits: the
    /// dispatches of a step run in order, so once the last reader of a tensor is planned, any later
    /// dispatch may overwrite its buffer.
    free: Vec<Arc<wgpu::Buffer>>,
}

impl<'a> Planner<'a> {
    fn new(gpu: &'a Gpu, model: &'a ResNet, mode: Mode) -> Self {
        Self { gpu, model, mode, dispatches: Vec::new(), free: Vec::new() }
    }

    /// A tensor for the plan: the smallest released buffer that fits, else a new zeroed one. A
    /// small tensor does not take a buffer more than twice its size (beyond 64 KiB), which a
    /// large one will want. Every kernel writes its outputs before it reads them, so a reused
    /// buffer's old contents never show.
    fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let bytes = 4 * shape.iter().product::<usize>() as u64;
        let fits = |b: &Arc<wgpu::Buffer>| b.size() >= bytes && b.size() <= 2 * bytes.max(1 << 15);
        let fits = self.free.iter().enumerate().filter(|(_, b)| fits(b)).min_by_key(|(_, b)| b.size());
        match fits.map(|(i, _)| i) {
            Some(i) => Ok(Tensor { buffer: self.free.swap_remove(i), offset: 0, shape: shape.to_vec() }),
            None => self.gpu.zeros(name, shape),
        }
    }

    /// Marks tensors dead: no dispatch planned after this call reads them, and a later tensor may
    /// take their buffers. Release each tensor once: a second release, after its buffer has been
    /// handed out again, would give the buffer two owners.
    fn release(&mut self, tensors: &[&Tensor]) {
        for t in tensors {
            if !self.free.iter().any(|b| Arc::ptr_eq(b, &t.buffer)) {
                self.free.push(Arc::clone(&t.buffer));
            }
        }
    }

    /// Adds a dispatch, labelled with the layer it belongs to.
    fn push(&mut self, label: &str, dispatch: Result<Dispatch>) -> Result<()> {
        self.push_all(label, dispatch.map(|d| vec![d]))
    }

    /// Where the conv `reads_panel`, its weight laid out as a panel (`transposed` for the input
    /// gradient) by a dispatch planned here, in a tensor the caller releases once the conv is
    /// planned (the panels of all layers share a few buffers).
    fn panel(
        &mut self,
        conv: &str,
        weight: &Tensor,
        params: &layers::ConvParams,
        transposed: bool,
    ) -> Result<Option<Tensor>> {
        if !layers::reads_panel(self.gpu, params, transposed) {
            return Ok(None);
        }
        let panel =
            self.tensor(&format!("{conv} weight as a panel"), &layers::panel_shape(&weight.shape, transposed))?;
        self.push(conv, layers::conv2d_weight_panel(self.gpu, &panel, weight, transposed))?;
        Ok(Some(panel))
    }

    fn push_all(&mut self, label: &str, dispatches: Result<Vec<Dispatch>>) -> Result<()> {
        for mut dispatch in dispatches? {
            dispatch.label = label.to_string();
            self.dispatches.push(dispatch);
        }
        Ok(())
    }

    /// out = relu?(bn(conv(inp)) + residual?): the add and the ReLU run in the BN kernel.
    #[allow(clippy::too_many_arguments)]
    fn conv_bn(
        &mut self,
        inp: &Tensor,
        conv: &str,
        bn: &str,
        stride: usize,
        pad: usize,
        residual: Option<&Tensor>,
        relu: bool,
    ) -> Result<ConvBn> {
        let (gpu, p, b) = (self.gpu, &self.model.params, &self.model.buffers);
        let weight = p.get(&format!("{conv}.weight"));
        let params = layers::ConvParams::new(&inp.shape, &weight.shape, stride, pad)?;
        let shape = params.out_shape();
        let k = shape[1];
        let (conv_out, out) = (self.tensor(conv, &shape)?, self.tensor(bn, &shape)?);
        let (mean, rstd) = (self.tensor(&format!("{bn} mean"), &[k])?, self.tensor(&format!("{bn} rstd"), &[k])?);
        let panel = self.panel(conv, weight, &params, false)?;
        self.push(conv, layers::conv2d_forward(gpu, &conv_out, inp, weight, panel.as_ref(), stride, pad))?;
        self.release(&panel.iter().collect::<Vec<_>>());
        let (running_mean, running_var) = (b.get(&format!("{bn}.running_mean")), b.get(&format!("{bn}.running_var")));
        let (bn_weight, bn_bias) = (p.get(&format!("{bn}.weight")), p.get(&format!("{bn}.bias")));
        let dispatch = match self.mode {
            Mode::Train => layers::batchnorm_forward_train(
                gpu,
                &out,
                &mean,
                &rstd,
                running_mean,
                running_var,
                &conv_out,
                bn_weight,
                bn_bias,
                residual,
                relu,
            ),
            Mode::Eval => layers::batchnorm_forward_eval(
                gpu,
                &out,
                &conv_out,
                bn_weight,
                bn_bias,
                running_mean,
                running_var,
                residual,
                relu,
            ),
        };
        self.push(bn, dispatch)?;
        let mask = match self.mode {
            Mode::Train if relu => {
                let mask = self.tensor(&format!("{bn} relu mask"), &[layers::mask_words(out.len())])?;
                self.push(bn, layers::relu_mask(gpu, &mask, &out))?;
                Some(mask)
            }
            _ => None,
        };
        let (conv, bn, inp) = (conv.into(), bn.into(), inp.clone());
        Ok(ConvBn { conv, bn, stride, pad, inp, conv_out, out, mean, rstd, mask })
    }

    /// Writes the pair's parameter gradients (`=`) and returns the gradient of its conv's output
    /// (`conv_backward_input` takes it on to the pair's input), computed in place of the conv's
    /// output. With `relu_mask` (the pair's), dout is the gradient of the ReLU after the BN, which
    /// the BN's backward undoes first. Releases what else only the BN's backward reads (its
    /// statistics and that mask), so that later gradients may take their buffers.
    fn conv_bn_backward(&mut self, saved: &ConvBn, dout: &Tensor, relu_mask: Option<&Tensor>) -> Result<Tensor> {
        let (gpu, p, g) = (self.gpu, &self.model.params, &self.model.grads);
        let (bn, conv) = (&saved.bn, &saved.conv);
        let dconv_out = saved.conv_out.clone();
        let (dweight, dbias) = (g.get(&format!("{bn}.weight")), g.get(&format!("{bn}.bias")));
        let bn_weight = p.get(&format!("{bn}.weight"));
        self.push(
            bn,
            layers::batchnorm_backward(
                gpu,
                &dconv_out,
                dweight,
                dbias,
                dout,
                &saved.conv_out,
                bn_weight,
                &saved.mean,
                &saved.rstd,
                relu_mask,
            ),
        )?;
        self.release(&[&saved.mean, &saved.rstd]);
        if let Some(mask) = relu_mask {
            self.release(&[mask]);
        }
        let dweight = g.get(&format!("{conv}.weight"));
        // Where the reduction runs in slices, their scratch comes from the plan's free buffers.
        let scratch = layers::weight_gradient_scratch(gpu, &saved.inp.shape, &dweight.shape, saved.stride, saved.pad)?
            .map(|shape| self.tensor(&format!("{conv} weight gradient slices"), &shape))
            .transpose()?;
        self.push_all(
            conv,
            layers::conv2d_backward_weight(
                gpu,
                dweight,
                &dconv_out,
                &saved.inp,
                scratch.as_ref(),
                saved.stride,
                saved.pad,
            ),
        )?;
        if let Some(scratch) = scratch {
            self.release(&[&scratch]);
        }
        Ok(dconv_out)
    }

    /// dinp = (or with `accumulate`, +=) the gradient of the pair's input, from its conv output's
    /// gradient, which dies here.
    fn conv_backward_input(
        &mut self,
        saved: &ConvBn,
        dconv_out: Tensor,
        dinp: &Tensor,
        accumulate: bool,
    ) -> Result<()> {
        let weight = self.model.params.get(&format!("{}.weight", saved.conv));
        let params = layers::ConvParams::new(&dinp.shape, &weight.shape, saved.stride, saved.pad)?;
        let panel = self.panel(&saved.conv, weight, &params, true)?;
        let dispatch = layers::conv2d_backward_input(
            self.gpu,
            dinp,
            &dconv_out,
            weight,
            panel.as_ref(),
            saved.stride,
            saved.pad,
            accumulate,
        );
        self.push(&saved.conv, dispatch)?;
        self.release(&[&dconv_out]);
        self.release(&panel.iter().collect::<Vec<_>>());
        Ok(())
    }

    /// The network from the image batch to the logits.
    fn forward(&mut self, batch: usize) -> Result<Forward> {
        let arch = &self.model.arch;
        // Written by the CPU before the step: never a reused buffer.
        let input = self.gpu.zeros("input", &[batch, 3, arch.image, arch.image])?;
        // Stem: CIFAR 3x3 conv 16; ImageNet 7x7/2 conv 64 and a 3x3/2 max pool after the ReLU.
        let (stride, pad) = if arch.imagenet { (2, 3) } else { (1, 1) };
        let stem = self.conv_bn(&input, "conv1", "bn1", stride, pad, None, true)?;
        let mut x = stem.out.clone();
        let mut maxpool = None;
        if arch.imagenet {
            let shape = layers::PoolParams::new(&x.shape, 3, 2, 1)?.out_shape();
            let (out, indices) = (self.tensor("maxpool", &shape)?, self.tensor("maxpool indices", &shape)?);
            self.push("maxpool", layers::maxpool_forward(self.gpu, &out, &indices, &x, 3, 2, 1))?;
            // The backward needs the pool's indices and the ReLU's mask, not the ReLU's output.
            self.release(&[&x]);
            maxpool = Some((x, indices));
            x = out;
        }

        let mut blocks = Vec::new();
        for spec in arch.blocks() {
            let name = spec.name;
            // The shortcut first: the branch's last BN adds it.
            let (shortcut, residual) = match spec.shortcut {
                ShortcutSpec::None => (SavedShortcut::None, None),
                ShortcutSpec::Identity => (SavedShortcut::Identity, Some(x.clone())),
                ShortcutSpec::A => {
                    let (_, _, k) = *spec.convs.last().expect("a block has convs");
                    let shape = [x.shape[0], k, x.shape[2].div_ceil(2), x.shape[3].div_ceil(2)];
                    let out = self.tensor(&format!("{name}.shortcut"), &shape)?;
                    self.push(&format!("{name}.shortcut"), layers::shortcut_a_forward(self.gpu, &out, &x))?;
                    (SavedShortcut::A, Some(out))
                }
                ShortcutSpec::B { stride } => {
                    let (conv, bn) = (format!("{name}.downsample.0"), format!("{name}.downsample.1"));
                    let projection = self.conv_bn(&x, &conv, &bn, stride, 0, None, false)?;
                    let out = projection.out.clone();
                    (SavedShortcut::B(Box::new(projection)), Some(out))
                }
            };
            let mut layers_saved = Vec::new();
            let mut y = x.clone();
            for (j, &(r, stride, _)) in spec.convs.iter().enumerate() {
                let (conv, bn) = (format!("{name}.conv{}", j + 1), format!("{name}.bn{}", j + 1));
                let last = j + 1 == spec.convs.len();
                let pair = self.conv_bn(&y, &conv, &bn, stride, r / 2, residual.as_ref().filter(|_| last), true)?;
                y = pair.out.clone();
                layers_saved.push(pair);
            }
            // The shortcut's output, once the last BN has read it (the identity's is the block input).
            if matches!(shortcut, SavedShortcut::A | SavedShortcut::B(_)) {
                self.release(&[&residual.expect("planned above")]);
            }
            blocks.push(Block { name, layers: layers_saved, shortcut });
            x = y;
        }

        let (gpu, p) = (self.gpu, &self.model.params);
        let pooled = self.tensor("avgpool", &[batch, arch.features()])?;
        self.push("avgpool", layers::avgpool_forward(gpu, &pooled, &x))?;
        let logits = self.tensor("logits", &[batch, arch.classes])?;
        self.push("fc", layers::linear_forward(gpu, &logits, &pooled, p.get("fc.weight"), p.get("fc.bias")))?;
        // The last block's output: its ReLU mask is all the backward needs of it, and its buffer
        // takes its gradient.
        self.release(&[&x]);
        Ok(Forward { input, stem, maxpool, blocks, last: x, pooled, logits })
    }

    /// The forward's calls in reverse: every parameter gradient from the logits' gradient.
    fn backward(&mut self, fwd: &Forward, dlogits: &Tensor) -> Result<()> {
        let (gpu, p, g) = (self.gpu, &self.model.params, &self.model.grads);
        self.push(
            "fc",
            layers::linear_backward_weight(gpu, g.get("fc.weight"), g.get("fc.bias"), dlogits, &fwd.pooled),
        )?;
        // The last block's gradient first, so that it can take the buffer of the last block's output.
        let mut dx = self.tensor("d last block", &fwd.last.shape)?;
        let dpooled = self.tensor("d avgpool", &fwd.pooled.shape)?;
        self.push("fc", layers::linear_backward_input(gpu, &dpooled, dlogits, p.get("fc.weight")))?;
        self.push("avgpool", layers::avgpool_backward(gpu, &dx, &dpooled))?;
        self.release(&[&dpooled]);

        // Each gradient and each saved activation is released once its last reader is planned:
        // later (shallower) layers reuse their buffers.
        for block in fwd.blocks.iter().rev() {
            let name = &block.name;
            let (first, rest) = block.layers.split_first().expect("a block has convs");
            // out = relu(branch + shortcut): dx, masked in place, is the gradient of the sum and
            // reaches both summands unchanged.
            let mask = block.layers.last().and_then(|last| last.mask.as_ref()).expect("a training plan");
            self.push(&format!("{name}.relu"), layers::relu_backward(gpu, &dx, mask))?;
            self.release(&[mask]);
            let dsum = dx;
            let mut d = dsum.clone();
            // Each conv's input dies with its weight gradient (the ReLU before it saved its mask),
            // and the input's gradient takes its buffer. Every pair's BN backward but the last's
            // undoes the ReLU after it.
            for (j, pair) in rest.iter().enumerate().rev() {
                let relu_mask = if j + 1 < rest.len() { pair.mask.as_ref() } else { None };
                let dconv_out = self.conv_bn_backward(pair, &d, relu_mask)?;
                if !Arc::ptr_eq(&d.buffer, &dsum.buffer) {
                    self.release(&[&d]);
                }
                self.release(&[&pair.inp]);
                d = self.tensor(&format!("d {} input", pair.conv), &pair.inp.shape)?;
                self.conv_backward_input(pair, dconv_out, &d, false)?;
            }
            let dconv1 = self.conv_bn_backward(first, &d, first.mask.as_ref())?;
            if !Arc::ptr_eq(&d.buffer, &dsum.buffer) {
                self.release(&[&d]);
            }
            let dprojection = match &block.shortcut {
                SavedShortcut::B(projection) => Some(self.conv_bn_backward(projection, &dsum, None)?),
                _ => None,
            };
            // So does the block's input, once the projection's weight gradient has read it too.
            self.release(&[&first.inp]);
            let dinp = self.tensor(&format!("d {name} input"), &first.inp.shape)?;
            self.conv_backward_input(first, dconv1, &dinp, false)?;
            // The shortcut's gradient is added (`+=`) to the branch's.
            match &block.shortcut {
                SavedShortcut::None => {}
                SavedShortcut::Identity => self.push(&format!("{name}.add"), layers::add(gpu, &dinp, &dsum))?,
                SavedShortcut::A => {
                    self.push(&format!("{name}.shortcut"), layers::shortcut_a_backward(gpu, &dinp, &dsum))?;
                }
                SavedShortcut::B(projection) => {
                    let dprojection = dprojection.expect("planned above");
                    self.conv_backward_input(projection, dprojection, &dinp, true)?;
                }
            }
            self.release(&[&dsum]);
            dx = dinp;
        }

        if let Some((relu_out, indices)) = &fwd.maxpool {
            let dpool_in = self.tensor("d maxpool", &relu_out.shape)?;
            self.push("maxpool", layers::maxpool_backward(gpu, &dpool_in, &dx, indices, 3, 2, 1))?;
            self.release(&[&dx]);
            dx = dpool_in;
        }
        let dconv_out = self.conv_bn_backward(&fwd.stem, &dx, fwd.stem.mask.as_ref())?;
        self.release(&[&dx, &dconv_out]);
        Ok(())
    }
}

/// Steps whose loss and correct count `TrainStep::history` keeps.
pub const HISTORY: usize = 20;

/// Where a training plan's GPU memory goes, in bytes of storage buffers (the model's parameters,
/// gradients, velocity and running statistics are apart, in `ResNet`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlanMemory {
    /// What the forward leaves for the backward: the input, saved activations, ReLU masks, BN
    /// statistics, pool indices and the logits.
    pub saved: u64,
    /// The forward's buffers that are dead when it ends (free for the backward to reuse).
    pub spare: u64,
    /// The buffers the backward adds: the loss, gradients that fit no dead buffer, split-K scratch.
    pub backward: u64,
}

/// A planned training step at a fixed batch size: forward, loss, backward and SGD, in order.
pub struct TrainStep {
    /// [N,3,H,W] normalised images; written by the caller before `run`.
    pub input: Tensor,
    /// [N] u32 class indices.
    pub labels: Tensor,
    /// [N,classes]
    pub logits: Tensor,
    /// [1] mean cross-entropy of the batch.
    pub loss: Tensor,
    /// [1] u32 number of correct top-1 predictions.
    pub correct: Tensor,
    /// [HISTORY, 2] (loss as f32 bits, correct count) of recent steps: step s writes slot
    /// s % HISTORY, by a copy in its own command buffer, so the CPU can read many steps at once.
    pub history: Tensor,
    pub sgd: SgdParams,
    pub dispatches: Vec<Dispatch>,
    pub memory: PlanMemory,
}

impl TrainStep {
    pub fn new(gpu: &Gpu, model: &ResNet, batch: usize, sgd: SgdParams) -> Result<Self> {
        let start = gpu.allocated_bytes();
        let mut plan = Planner::new(gpu, model, Mode::Train);
        let fwd = plan.forward(batch)?;
        let forward = gpu.allocated_bytes() - start;
        let spare: u64 = plan.free.iter().map(|b| b.size()).sum();
        // Written by the CPU before the step, or kept across steps: never reused buffers.
        let labels = gpu.zeros("labels", &[batch])?;
        let (loss, correct) = (gpu.zeros("loss", &[1])?, gpu.zeros("correct", &[1])?);
        let dlogits = plan.tensor("d logits", &fwd.logits.shape)?;
        plan.push("loss", layers::softmax_cross_entropy(gpu, &dlogits, &loss, &correct, &fwd.logits, &labels))?;
        plan.backward(&fwd, &dlogits)?;
        let m = &model;
        plan.push(
            "sgd",
            layers::sgd(gpu, &m.params.all, &m.velocity.all, &m.grads.all, sgd.lr, sgd.momentum, sgd.weight_decay),
        )?;
        let history = gpu.zeros("loss history", &[HISTORY, 2])?;
        let memory = PlanMemory { saved: forward - spare, spare, backward: gpu.allocated_bytes() - start - forward };
        Ok(Self {
            input: fwd.input,
            labels,
            logits: fwd.logits,
            loss,
            correct,
            history,
            sgd,
            dispatches: plan.dispatches,
            memory,
        })
    }

    /// Submits step number `step` as one command buffer, with learning rate `lr`.
    pub fn run(&mut self, gpu: &Gpu, step: usize, lr: f32) -> Result<()> {
        if lr != self.sgd.lr {
            self.sgd.lr = lr;
            gpu.update_params(self.dispatches.last().expect("the plan ends with SGD"), &self.sgd);
        }
        let mut encoder = gpu.encode(&self.dispatches.iter().collect::<Vec<_>>());
        let (slot, h) = (self.history.offset + (step % HISTORY) as u64 * 8, &self.history.buffer);
        encoder.copy_buffer_to_buffer(&self.loss.buffer, self.loss.offset, h, slot, 4);
        encoder.copy_buffer_to_buffer(&self.correct.buffer, self.correct.offset, h, slot + 4, 4);
        gpu.queue.submit([encoder.finish()]);
        Ok(())
    }
}

/// A planned inference pass with the running statistics, plus the loss and correct count.
pub struct EvalStep {
    pub input: Tensor,
    pub labels: Tensor,
    pub logits: Tensor,
    pub loss: Tensor,
    pub correct: Tensor,
    pub dispatches: Vec<Dispatch>,
}

impl EvalStep {
    pub fn new(gpu: &Gpu, model: &ResNet, batch: usize) -> Result<Self> {
        let mut plan = Planner::new(gpu, model, Mode::Eval);
        let fwd = plan.forward(batch)?;
        // Written by the CPU before the step, or kept across steps: never reused buffers.
        let labels = gpu.zeros("labels", &[batch])?;
        let (loss, correct) = (gpu.zeros("loss", &[1])?, gpu.zeros("correct", &[1])?);
        let dlogits = plan.tensor("d logits", &fwd.logits.shape)?;
        plan.push("loss", layers::softmax_cross_entropy(gpu, &dlogits, &loss, &correct, &fwd.logits, &labels))?;
        Ok(Self { input: fwd.input, labels, logits: fwd.logits, loss, correct, dispatches: plan.dispatches })
    }

    pub fn run(&self, gpu: &Gpu) -> Result<()> {
        gpu.run(&self.dispatches.iter().collect::<Vec<_>>())
    }
}

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
        let mut expected = arch.parameters();
        expected.extend(arch.buffers());
        ck.check(&expected, &arch.name, source)?;

        // Every conv followed by its BN becomes "<conv>.weight" and "<conv>.bias".
        let mut specs = Vec::new();
        let mut folded: Vec<Vec<f32>> = Vec::new();
        for (name, shape) in arch.parameters() {
            let values = &ck.tensors[&name].1;
            if name.starts_with("fc.") {
                specs.push((name, shape));
                folded.push(values.clone());
                continue;
            }
            let Some(conv) = name.strip_suffix(".weight").filter(|_| shape.len() == 4) else {
                continue;
            };
            let bn = bn_of(conv);
            let get = |suffix: &str| &ck.tensors[&format!("{bn}.{suffix}")].1;
            let (gamma, beta, mean, var) = (get("weight"), get("bias"), get("running_mean"), get("running_var"));
            let scale: Vec<f32> = gamma.iter().zip(var).map(|(g, v)| g / (v + layers::BN_EPS).sqrt()).collect();
            let per_k = values.len() / shape[0];
            folded.push(values.iter().enumerate().map(|(i, w)| w * scale[i / per_k]).collect());
            folded.push(beta.iter().zip(mean).zip(&scale).map(|((b, m), s)| b - m * s).collect());
            specs.push((format!("{conv}.weight"), shape.clone()));
            specs.push((format!("{conv}.bias"), vec![shape[0]]));
        }
        let weights = Arena::new(gpu, "folded weights", &specs)?;
        for (t, values) in weights.tensors.iter().zip(&folded) {
            gpu.write(t, values);
        }
        Ok(weights)
    }

    /// Plans a batch of `batch` on weights from [`InferStep::fold`].
    pub fn plan(gpu: &Gpu, arch: &Arch, weights: Arena, batch: usize) -> Result<Self> {
        let mut plan = FoldedPlan { gpu, weights: &weights, dispatches: Vec::new(), layouts: Vec::new() };
        let input = gpu.zeros("input", &[batch, 3, arch.image, arch.image])?;
        let (stride, pad) = if arch.imagenet { (2, 3) } else { (1, 1) };
        let mut x = plan.conv(&input, "conv1", stride, pad, None, true)?;
        if arch.imagenet {
            let shape = layers::PoolParams::new(&x.shape, 3, 2, 1)?.out_shape();
            let (out, indices) = (gpu.zeros("maxpool", &shape)?, gpu.zeros("maxpool indices", &shape)?);
            plan.push("maxpool", layers::maxpool_forward(gpu, &out, &indices, &x, 3, 2, 1))?;
            x = out;
        }
        for spec in arch.blocks() {
            let name = &spec.name;
            let shortcut = match spec.shortcut {
                ShortcutSpec::None => None,
                ShortcutSpec::Identity => Some(x.clone()),
                ShortcutSpec::A => {
                    let (_, _, k) = *spec.convs.last().expect("a block has convs");
                    let out = gpu.zeros(
                        &format!("{name}.shortcut"),
                        &[x.shape[0], k, x.shape[2].div_ceil(2), x.shape[3].div_ceil(2)],
                    )?;
                    plan.push(&format!("{name}.shortcut"), layers::shortcut_a_forward(gpu, &out, &x))?;
                    Some(out)
                }
                ShortcutSpec::B { stride } => {
                    Some(plan.conv(&x, &format!("{name}.downsample.0"), stride, 0, None, false)?)
                }
            };
            let mut y = x.clone();
            for (j, &(r, stride, _)) in spec.convs.iter().enumerate() {
                let residual = shortcut.as_ref().filter(|_| j + 1 == spec.convs.len());
                y = plan.conv(&y, &format!("{name}.conv{}", j + 1), stride, r / 2, residual, true)?;
            }
            x = y;
        }
        let pooled = gpu.zeros("avgpool", &[batch, arch.features()])?;
        plan.push("avgpool", layers::avgpool_forward(gpu, &pooled, &x))?;
        let logits = gpu.zeros("logits", &[batch, arch.classes])?;
        plan.push(
            "fc",
            layers::linear_forward(gpu, &logits, &pooled, weights.get("fc.weight"), weights.get("fc.bias")),
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
    /// What lays the weights out as a panel (`layers::conv2d_weight_panel`), run once.
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
    fn conv(
        &mut self,
        inp: &Tensor,
        name: &str,
        stride: usize,
        pad: usize,
        residual: Option<&Tensor>,
        relu: bool,
    ) -> Result<Tensor> {
        let (weight, bias) = (self.weights.get(&format!("{name}.weight")), self.weights.get(&format!("{name}.bias")));
        let params = layers::ConvParams::new(&inp.shape, &weight.shape, stride, pad)?;
        let out = self.gpu.zeros(name, &params.out_shape())?;
        let panel = layers::panel_for(self.gpu, &params, weight, false)?.map(|(panel, layout)| {
            self.layouts.push(layout);
            panel
        });
        let dispatch = layers::conv2d_forward_fused(
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

/// The BN that follows a conv: `conv1` -> `bn1`, `layer1.0.conv2` -> `layer1.0.bn2`,
/// `layer2.0.downsample.0` -> `layer2.0.downsample.1`.
fn bn_of(conv: &str) -> String {
    match conv.strip_suffix("downsample.0") {
        Some(block) => format!("{block}downsample.1"),
        None => {
            let (head, last) = conv.rsplit_once('.').map_or(("", conv), |(h, l)| (h, l));
            let bn = last.replace("conv", "bn");
            if head.is_empty() { bn } else { format!("{head}.{bn}") }
        }
    }
}
