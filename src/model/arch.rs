//! A network's shape: the paper's CIFAR ResNets (6n+2 layers, and their plain twins) and
//! torchvision's ImageNet ResNet-18/34/50/101/152, with every parameter's name and shape.

use anyhow::{Context, Result, bail, ensure};

use crate::gpu::Gpu;

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

    /// The stem's conv and BN: CIFAR's 3x3 conv 16, ImageNet's 7x7/2 conv 64 (followed by
    /// [`STEM_POOL`] after its ReLU).
    pub fn stem(&self) -> ConvSpec {
        let (kernel, stride, out) = if self.imagenet { (7, 2, 64) } else { (3, 1, 16) };
        ConvSpec { conv: "conv1".into(), bn: "bn1".into(), inp: 3, out, kernel, stride }
    }

    /// Every block in order, with its convs and its shortcut, as torchvision names them.
    pub fn blocks(&self) -> Vec<BlockSpec> {
        let mut c = self.stem().out;
        let mut specs = Vec::new();
        for s in 0..self.stages.len() {
            for i in 0..self.stages[s].0 {
                let block = self.block(s, i, c);
                c = block.out();
                specs.push(block);
            }
        }
        specs
    }

    /// Block `i` of stage `s`, on `inp` channels.
    fn block(&self, s: usize, i: usize, inp: usize) -> BlockSpec {
        let name = format!("layer{}.{i}", s + 1);
        let width = self.stages[s].1;
        let stride = if s > 0 && i == 0 { 2 } else { 1 };
        let shapes = match self.block {
            BlockKind::Basic => vec![(3, stride, width), (3, 1, width)],
            BlockKind::Bottleneck => vec![(1, 1, width), (3, stride, width), (1, 1, 4 * width)],
        };
        let mut from = inp;
        let convs: Vec<ConvSpec> = shapes
            .iter()
            .enumerate()
            .map(|(j, &(kernel, stride, out))| {
                let conv = ConvSpec {
                    conv: format!("{name}.conv{}", j + 1),
                    bn: format!("{name}.bn{}", j + 1),
                    inp: from,
                    out,
                    kernel,
                    stride,
                };
                from = out;
                conv
            })
            .collect();
        let shortcut = match self.shortcut {
            Shortcut::Plain => ShortcutSpec::None,
            _ if stride == 1 && inp == from => ShortcutSpec::Identity,
            Shortcut::A => ShortcutSpec::A,
            Shortcut::B => ShortcutSpec::B(ConvSpec {
                conv: format!("{name}.downsample.0"),
                bn: format!("{name}.downsample.1"),
                inp,
                out: from,
                kernel: 1,
                stride,
            }),
        };
        BlockSpec { name, convs, shortcut }
    }

    /// The number of parameters, counted per stage from its first block and one of the blocks that
    /// repeat, so that a depth too large to build is measured without listing its layers.
    pub fn parameter_count(&self) -> u128 {
        let conv = |c: &ConvSpec| (c.out * c.inp * c.kernel * c.kernel + 2 * c.out) as u128;
        let block = |b: &BlockSpec| {
            let projection = match &b.shortcut {
                ShortcutSpec::B(p) => conv(p),
                _ => 0,
            };
            b.convs.iter().map(conv).sum::<u128>() + projection
        };
        let mut count = conv(&self.stem()) + (self.classes * self.features() + self.classes) as u128;
        let mut c = self.stem().out;
        for (s, &(blocks, _)) in self.stages.iter().enumerate() {
            let first = self.block(s, 0, c);
            c = first.out();
            count += block(&first) + (blocks as u128).saturating_sub(1) * block(&self.block(s, 1, c));
        }
        count
    }

    /// The largest activation of one image, in values, and what produces it: the stem's output or
    /// the first stage's (each later stage halves the sides and at most doubles the channels).
    pub fn largest_activation(&self) -> (&'static str, u128) {
        let stem = self.stem();
        let side = (self.image + 2 * stem.pad() - stem.kernel) / stem.stride + 1;
        let stem_values = (stem.out * side * side) as u128;
        let (r, stride, pad) = STEM_POOL;
        let side = if self.imagenet { (side + 2 * pad - r) / stride + 1 } else { side };
        let stage_values = (self.block(0, 0, stem.out).out() * side * side) as u128;
        if stem_values >= stage_values { ("stem", stem_values) } else { ("first stage", stage_values) }
    }

    /// Refuses a network whose parameters, or at `batch` images (0: no batch) whose largest
    /// activation, would not fit in one buffer of `gpu`, before anything is built; the error
    /// gives the figures and, for the batch, the largest batch that fits.
    pub fn check_fits(&self, gpu: &Gpu, batch: usize) -> Result<()> {
        let limit = gpu.buffer_limit() as u128;
        let mib = |bytes: u128| bytes as f64 / (1u128 << 20) as f64;
        let parameters = self.parameter_count();
        ensure!(
            4 * parameters <= limit,
            "{} has {parameters} parameters ({:.0} MiB as f32): more than the {:.0} MiB that adapter {} holds in one \
             buffer",
            self.name,
            mib(4 * parameters),
            mib(limit),
            gpu.info.name
        );
        let (what, per_image) = self.largest_activation();
        let bytes = 4 * per_image * batch as u128;
        ensure!(
            bytes <= limit,
            "a batch of {batch} needs {:.0} MiB for {}'s {what} output: more than the {:.0} MiB that adapter {} holds in \
             one buffer; the largest batch that fits is {}",
            mib(bytes),
            self.name,
            mib(limit),
            gpu.info.name,
            limit / (4 * per_image)
        );
        Ok(())
    }

    /// Every conv with its BN, in torchvision's `state_dict` order: the stem, then per block
    /// conv1, conv2[, conv3] and the projection.
    pub fn convs(&self) -> Vec<ConvSpec> {
        let mut convs = vec![self.stem()];
        for block in self.blocks() {
            convs.extend(block.convs);
            if let ShortcutSpec::B(projection) = block.shortcut {
                convs.push(projection);
            }
        }
        convs
    }

    pub fn features(&self) -> usize {
        let (_, width) = *self.stages.last().unwrap();
        if self.block == BlockKind::Bottleneck { 4 * width } else { width }
    }

    /// Every parameter's name and shape, in torchvision's `state_dict` order.
    pub fn parameters(&self) -> Vec<(String, Vec<usize>)> {
        let mut params = Vec::new();
        for conv in self.convs() {
            params.push((format!("{}.weight", conv.conv), vec![conv.out, conv.inp, conv.kernel, conv.kernel]));
            params.push((format!("{}.weight", conv.bn), vec![conv.out]));
            params.push((format!("{}.bias", conv.bn), vec![conv.out]));
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

/// The stem's max pool of the ImageNet networks: (kernel, stride, padding).
pub const STEM_POOL: (usize, usize, usize) = (3, 2, 1);

/// A conv (no bias, padding `kernel / 2`) and the BN after it, as the state dict names them.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvSpec {
    pub conv: String,
    pub bn: String,
    pub inp: usize,
    pub out: usize,
    pub kernel: usize,
    pub stride: usize,
}

impl ConvSpec {
    pub fn pad(&self) -> usize {
        self.kernel / 2
    }
}

/// A residual block (or its plain twin): conv1/bn1, conv2/bn2[, conv3/bn3], each followed by a
/// ReLU, the last one's after the shortcut is added.
pub struct BlockSpec {
    pub name: String,
    pub convs: Vec<ConvSpec>,
    pub shortcut: ShortcutSpec,
}

impl BlockSpec {
    pub fn out(&self) -> usize {
        self.convs.last().expect("a block has convs").out
    }
}

pub enum ShortcutSpec {
    None,
    Identity,
    /// Option A: even rows and columns of the input, zero channels padded up to the block's output.
    A,
    /// Option B: the block's projection, with its BN and no ReLU.
    B(ConvSpec),
}
