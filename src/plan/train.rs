//! Training and evaluation plans: every buffer, bind group and dispatch of a step created once
//! for a batch size; a step only writes the batch and submits one command buffer. Buffers of
//! tensors that are dead by a point of the step are reused by later ones.

use std::sync::Arc;

use anyhow::Result;

use crate::gpu::{Gpu, Tensor};
use crate::kernels::Dispatch;
use crate::model::{ConvSpec, ResNet, STEM_POOL, ShortcutSpec};
use crate::ops::sgd::{Sgd, SgdParams};
use crate::ops::{batchnorm, conv, elementwise, linear, pool, sgd};

/// Whether BN normalises with the batch's statistics (and updates the running ones) or with the
/// running statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Statistics {
    Batch,
    Running,
}

/// What a training step updates, and how its batch norms normalise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trained {
    /// Only the fc layer (a frozen backbone): the backward stops at it and SGD walks its
    /// parameters alone.
    pub fc_only: bool,
    /// `Batch` as PyTorch's `train()`; `Running`: batch norm frozen, normalising with the running
    /// statistics (left unchanged) and differentiated as the constants they are.
    pub statistics: Statistics,
}

impl Trained {
    /// Every parameter, batch norm with the batch's statistics: PyTorch's `train()`.
    pub const ALL: Self = Self { fc_only: false, statistics: Statistics::Batch };
}

/// One conv + BN pair, out = relu?(bn(conv(inp)) + residual?), and what its backward needs.
struct ConvBn {
    spec: ConvSpec,
    inp: Tensor,
    conv_out: Tensor,
    out: Tensor,
    /// The batch's mean and 1 / std; with running statistics, the model's running mean and
    /// variance (tensors of its arena, never released).
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
    statistics: Statistics,
    /// The backward goes through every layer (not only the fc): the forward saves what it reads.
    full_backward: bool,
    dispatches: Vec<Dispatch>,
    /// Buffers of released (dead) tensors. A later tensor takes the smallest one that fits: the
    /// dispatches of a step run in order, so once the last reader of a tensor is planned, any later
    /// dispatch may overwrite its buffer.
    free: Vec<Arc<wgpu::Buffer>>,
}

impl<'a> Planner<'a> {
    fn new(gpu: &'a Gpu, model: &'a ResNet, statistics: Statistics, full_backward: bool) -> Self {
        Self { gpu, model, statistics, full_backward, dispatches: Vec::new(), free: Vec::new() }
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

    /// The scratch of the two-level kernels of the batch norm `bn` of `inp`, where they run it
    /// (`batchnorm::chunks_shape`), in a tensor the caller releases once the batch norm is planned.
    fn bn_chunks(&mut self, bn: &str, inp: &[usize]) -> Result<Option<Tensor>> {
        let shape = batchnorm::chunks_shape(self.gpu, inp)?;
        shape.map(|shape| self.tensor(&format!("{bn} chunks"), &shape)).transpose()
    }

    /// Where the conv `reads_panel`, its weight laid out as a panel (`transposed` for the input
    /// gradient) by a dispatch planned here, in a tensor the caller releases once the conv is
    /// planned (the panels of all layers share a few buffers).
    fn panel(
        &mut self,
        conv: &str,
        weight: &Tensor,
        params: &conv::ConvParams,
        transposed: bool,
    ) -> Result<Option<Tensor>> {
        if !conv::reads_panel(self.gpu, params, transposed)? {
            return Ok(None);
        }
        let panel = self.tensor(&format!("{conv} weight as a panel"), &conv::panel_shape(&weight.shape, transposed))?;
        self.push(conv, conv::conv2d_weight_panel(self.gpu, &panel, weight, transposed))?;
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
    fn conv_bn(&mut self, inp: &Tensor, spec: &ConvSpec, residual: Option<&Tensor>, relu: bool) -> Result<ConvBn> {
        let (gpu, p, b) = (self.gpu, &self.model.params, &self.model.buffers);
        let (conv, bn, stride, pad) = (spec.conv.as_str(), spec.bn.as_str(), spec.stride, spec.pad());
        let weight = p.get(&format!("{conv}.weight"));
        let params = conv::ConvParams::new(&inp.shape, &weight.shape, stride, pad)?;
        let shape = params.out_shape();
        let k = shape[1];
        let (conv_out, out) = (self.tensor(conv, &shape)?, self.tensor(bn, &shape)?);
        let panel = self.panel(conv, weight, &params, false)?;
        self.push(conv, conv::conv2d_forward(gpu, &conv_out, inp, weight, panel.as_ref(), stride, pad))?;
        self.release(&panel.iter().collect::<Vec<_>>());
        let (running_mean, running_var) = (b.get(&format!("{bn}.running_mean")), b.get(&format!("{bn}.running_var")));
        let (bn_weight, bn_bias) = (p.get(&format!("{bn}.weight")), p.get(&format!("{bn}.bias")));
        // The statistics the BN normalises with: the batch's, or the running ones.
        let (mean, rstd) = match self.statistics {
            Statistics::Batch => (self.tensor(&format!("{bn} mean"), &[k])?, self.tensor(&format!("{bn} rstd"), &[k])?),
            Statistics::Running => (running_mean.clone(), running_var.clone()),
        };
        let chunks = match self.statistics {
            Statistics::Batch => self.bn_chunks(bn, &shape)?,
            Statistics::Running => None,
        };
        let dispatches = match self.statistics {
            Statistics::Batch => batchnorm::batchnorm_forward_train(
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
                chunks.as_ref(),
                relu,
            ),
            Statistics::Running => batchnorm::batchnorm_forward_eval(
                gpu,
                &out,
                &conv_out,
                bn_weight,
                bn_bias,
                running_mean,
                running_var,
                residual,
                relu,
            )
            .map(|dispatch| vec![dispatch]),
        };
        self.push_all(bn, dispatches)?;
        self.release(&chunks.iter().collect::<Vec<_>>());
        let mask = if self.full_backward && relu {
            let mask = self.tensor(&format!("{bn} relu mask"), &[elementwise::mask_words(out.len())])?;
            self.push(bn, elementwise::relu_mask(gpu, &mask, &out))?;
            Some(mask)
        } else {
            None
        };
        Ok(ConvBn { spec: spec.clone(), inp: inp.clone(), conv_out, out, mean, rstd, mask })
    }

    /// Writes the pair's parameter gradients (`=`) and returns the gradient of its conv's output
    /// (`conv_backward_input` takes it on to the pair's input), computed in place of the conv's
    /// output. With `relu_mask` (the pair's), dout is the gradient of the ReLU after the BN, which
    /// the BN's backward undoes first. Releases what else only the BN's backward reads (its
    /// statistics and that mask), so that later gradients may take their buffers.
    fn conv_bn_backward(&mut self, saved: &ConvBn, dout: &Tensor, relu_mask: Option<&Tensor>) -> Result<Tensor> {
        let (gpu, p, g) = (self.gpu, &self.model.params, &self.model.grads);
        let (bn, conv) = (&saved.spec.bn, &saved.spec.conv);
        let dconv_out = saved.conv_out.clone();
        let (dweight, dbias) = (g.get(&format!("{bn}.weight")), g.get(&format!("{bn}.bias")));
        let bn_weight = p.get(&format!("{bn}.weight"));
        let backward = match self.statistics {
            Statistics::Batch => batchnorm::batchnorm_backward,
            Statistics::Running => batchnorm::batchnorm_backward_frozen,
        };
        let (inp, mean, rstd) = (&saved.conv_out, &saved.mean, &saved.rstd);
        let chunks = self.bn_chunks(bn, &inp.shape)?;
        let dispatches =
            backward(gpu, &dconv_out, dweight, dbias, dout, inp, bn_weight, mean, rstd, relu_mask, chunks.as_ref());
        self.push_all(bn, dispatches)?;
        self.release(&chunks.iter().collect::<Vec<_>>());
        if self.statistics == Statistics::Batch {
            self.release(&[mean, rstd]);
        }
        if let Some(mask) = relu_mask {
            self.release(&[mask]);
        }
        let dweight = g.get(&format!("{conv}.weight"));
        // Where the reduction runs in slices, their scratch comes from the plan's free buffers.
        let (stride, pad) = (saved.spec.stride, saved.spec.pad());
        let scratch = conv::weight_gradient_scratch(gpu, &saved.inp.shape, &dweight.shape, stride, pad)?
            .map(|shape| self.tensor(&format!("{conv} weight gradient slices"), &shape))
            .transpose()?;
        self.push_all(
            conv,
            conv::conv2d_backward_weight(gpu, dweight, &dconv_out, &saved.inp, scratch.as_ref(), stride, pad),
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
        let spec = &saved.spec;
        let weight = self.model.params.get(&format!("{}.weight", spec.conv));
        let params = conv::ConvParams::new(&dinp.shape, &weight.shape, spec.stride, spec.pad())?;
        let panel = self.panel(&spec.conv, weight, &params, true)?;
        let dispatch = conv::conv2d_backward_input(
            self.gpu,
            dinp,
            &dconv_out,
            weight,
            panel.as_ref(),
            spec.stride,
            spec.pad(),
            accumulate,
        );
        self.push(&spec.conv, dispatch)?;
        self.release(&[&dconv_out]);
        self.release(&panel.iter().collect::<Vec<_>>());
        Ok(())
    }

    /// The network from the image batch to the logits.
    fn forward(&mut self, batch: usize) -> Result<Forward> {
        let arch = &self.model.arch;
        arch.check_fits(self.gpu, batch)?;
        // Written by the CPU before the step: never a reused buffer.
        let input = self.gpu.zeros("input", &[batch, 3, arch.image, arch.image])?;
        let stem = self.conv_bn(&input, &arch.stem(), None, true)?;
        let mut x = stem.out.clone();
        let mut maxpool = None;
        if arch.imagenet {
            let (r, stride, pad) = STEM_POOL;
            let shape = pool::PoolParams::new(&x.shape, r, stride, pad)?.out_shape();
            let (out, indices) = (self.tensor("maxpool", &shape)?, self.tensor("maxpool indices", &shape)?);
            self.push("maxpool", pool::maxpool_forward(self.gpu, &out, &indices, &x, r, stride, pad))?;
            // The backward needs the pool's indices and the ReLU's mask, not the ReLU's output.
            self.release(&[&x]);
            maxpool = Some((x, indices));
            x = out;
        }

        let mut blocks = Vec::new();
        for spec in arch.blocks() {
            let name = spec.name.clone();
            // The shortcut first: the branch's last BN adds it.
            let (shortcut, residual) = match &spec.shortcut {
                ShortcutSpec::None => (SavedShortcut::None, None),
                ShortcutSpec::Identity => (SavedShortcut::Identity, Some(x.clone())),
                ShortcutSpec::A => {
                    let shape = [x.shape[0], spec.out(), x.shape[2].div_ceil(2), x.shape[3].div_ceil(2)];
                    let out = self.tensor(&format!("{name}.shortcut"), &shape)?;
                    self.push(&format!("{name}.shortcut"), elementwise::shortcut_a_forward(self.gpu, &out, &x))?;
                    (SavedShortcut::A, Some(out))
                }
                ShortcutSpec::B(projection) => {
                    let projection = self.conv_bn(&x, projection, None, false)?;
                    let out = projection.out.clone();
                    (SavedShortcut::B(Box::new(projection)), Some(out))
                }
            };
            let mut layers_saved = Vec::new();
            let mut y = x.clone();
            for (j, conv) in spec.convs.iter().enumerate() {
                let last = j + 1 == spec.convs.len();
                let pair = self.conv_bn(&y, conv, residual.as_ref().filter(|_| last), true)?;
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
        self.push("avgpool", pool::avgpool_forward(gpu, &pooled, &x))?;
        let logits = self.tensor("logits", &[batch, arch.classes])?;
        self.push("fc", linear::linear_forward(gpu, &logits, &pooled, p.get("fc.weight"), p.get("fc.bias")))?;
        // The last block's output: its ReLU mask is all the backward needs of it, and its buffer
        // takes its gradient.
        self.release(&[&x]);
        Ok(Forward { input, stem, maxpool, blocks, last: x, pooled, logits })
    }

    /// The forward's calls in reverse: every parameter gradient from the logits' gradient (only
    /// the fc's without a full backward).
    fn backward(&mut self, fwd: &Forward, dlogits: &Tensor) -> Result<()> {
        let (gpu, p, g) = (self.gpu, &self.model.params, &self.model.grads);
        self.push(
            "fc",
            linear::linear_backward_weight(gpu, g.get("fc.weight"), g.get("fc.bias"), dlogits, &fwd.pooled),
        )?;
        if !self.full_backward {
            return Ok(());
        }
        // The last block's gradient first, so that it can take the buffer of the last block's output.
        let mut dx = self.tensor("d last block", &fwd.last.shape)?;
        let dpooled = self.tensor("d avgpool", &fwd.pooled.shape)?;
        self.push("fc", linear::linear_backward_input(gpu, &dpooled, dlogits, p.get("fc.weight")))?;
        self.push("avgpool", pool::avgpool_backward(gpu, &dx, &dpooled))?;
        self.release(&[&dpooled]);

        // Each gradient and each saved activation is released once its last reader is planned:
        // later (shallower) layers reuse their buffers.
        for block in fwd.blocks.iter().rev() {
            let name = &block.name;
            let (first, rest) = block.layers.split_first().expect("a block has convs");
            // out = relu(branch + shortcut): dx, masked in place, is the gradient of the sum and
            // reaches both summands unchanged.
            let mask = block.layers.last().and_then(|last| last.mask.as_ref()).expect("a training plan");
            self.push(&format!("{name}.relu"), elementwise::relu_backward(gpu, &dx, mask))?;
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
                d = self.tensor(&format!("d {} input", pair.spec.conv), &pair.inp.shape)?;
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
                SavedShortcut::Identity => self.push(&format!("{name}.add"), elementwise::add(gpu, &dinp, &dsum))?,
                SavedShortcut::A => {
                    self.push(&format!("{name}.shortcut"), elementwise::shortcut_a_backward(gpu, &dinp, &dsum))?;
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
            let (r, stride, pad) = STEM_POOL;
            self.push("maxpool", pool::maxpool_backward(gpu, &dpool_in, &dx, indices, r, stride, pad))?;
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
    pub sgd: Sgd,
    /// Values of the parameter arena, which SGD updates.
    parameters: usize,
    pub dispatches: Vec<Dispatch>,
    pub memory: PlanMemory,
}

impl TrainStep {
    pub fn new(gpu: &Gpu, model: &ResNet, batch: usize, sgd: Sgd, trained: Trained) -> Result<Self> {
        let start = gpu.allocated_bytes();
        let mut plan = Planner::new(gpu, model, trained.statistics, !trained.fc_only);
        let fwd = plan.forward(batch)?;
        let forward = gpu.allocated_bytes() - start;
        let spare: u64 = plan.free.iter().map(|b| b.size()).sum();
        // Written by the CPU before the step, or kept across steps: never reused buffers.
        let labels = gpu.zeros("labels", &[batch])?;
        let (loss, correct) = (gpu.zeros("loss", &[1])?, gpu.zeros("correct", &[1])?);
        let dlogits = plan.tensor("d logits", &fwd.logits.shape)?;
        plan.push("loss", linear::softmax_cross_entropy(gpu, &dlogits, &loss, &correct, &fwd.logits, &labels))?;
        plan.backward(&fwd, &dlogits)?;
        // SGD walks the whole arenas, or from fc.weight to their end (fc.weight and fc.bias end them).
        let from = if trained.fc_only { model.params.get("fc.weight").offset } else { 0 };
        let [params, velocity, grads] = [&model.params, &model.velocity, &model.grads].map(|arena| Tensor {
            buffer: Arc::clone(&arena.all.buffer),
            offset: from,
            shape: vec![arena.all.len() - (from / 4) as usize],
        });
        plan.push("sgd", sgd::sgd(gpu, &params, &velocity, &grads, sgd))?;
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
            parameters: params.len(),
            dispatches: plan.dispatches,
            memory,
        })
    }

    /// Submits step number `step` as one command buffer, with learning rate `lr`.
    pub fn run(&mut self, gpu: &Gpu, step: usize, lr: f32) -> Result<()> {
        if lr != self.sgd.lr {
            self.sgd.lr = lr;
            let params = SgdParams::new(self.parameters, self.sgd);
            gpu.update_params(self.dispatches.last().expect("the plan ends with SGD"), &params);
        }
        let mut encoder = gpu.encode(&self.dispatches.iter().collect::<Vec<_>>());
        let (slot, h) = (self.history.offset + (step % HISTORY) as u64 * 8, &self.history.buffer);
        encoder.copy_buffer_to_buffer(&self.loss.buffer, self.loss.offset, h, slot, 4);
        encoder.copy_buffer_to_buffer(&self.correct.buffer, self.correct.offset, h, slot + 4, 4);
        gpu.queue.submit([encoder.finish()]);
        Ok(())
    }
}

/// A planned inference pass with the running statistics (BN unfolded, as training has it).
pub struct EvalStep {
    pub input: Tensor,
    pub logits: Tensor,
    pub dispatches: Vec<Dispatch>,
}

impl EvalStep {
    pub fn new(gpu: &Gpu, model: &ResNet, batch: usize) -> Result<Self> {
        let mut plan = Planner::new(gpu, model, Statistics::Running, false);
        let fwd = plan.forward(batch)?;
        Ok(Self { input: fwd.input, logits: fwd.logits, dispatches: plan.dispatches })
    }

    pub fn run(&self, gpu: &Gpu) -> Result<()> {
        gpu.run(&self.dispatches.iter().collect::<Vec<_>>())
    }
}
