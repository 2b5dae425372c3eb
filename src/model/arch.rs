//! A network's shape: the paper's CIFAR ResNets (6n+2 layers, and their plain twins) and
//! torchvision's ImageNet ResNet-18/34/50/101/152, with every parameter's name and shape.

use anyhow::{Context, Result, bail, ensure};

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
        for (s, &(count, width)) in self.stages.iter().enumerate() {
            for i in 0..count {
                let name = format!("layer{}.{i}", s + 1);
                let stride = if s > 0 && i == 0 { 2 } else { 1 };
                let shapes = match self.block {
                    BlockKind::Basic => vec![(3, stride, width), (3, 1, width)],
                    BlockKind::Bottleneck => vec![(1, 1, width), (3, stride, width), (1, 1, 4 * width)],
                };
                let (inp, mut from) = (c, c);
                let convs = shapes
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
                c = from;
                let shortcut = match self.shortcut {
                    Shortcut::Plain => ShortcutSpec::None,
                    _ if stride == 1 && inp == c => ShortcutSpec::Identity,
                    Shortcut::A => ShortcutSpec::A,
                    Shortcut::B => ShortcutSpec::B(ConvSpec {
                        conv: format!("{name}.downsample.0"),
                        bn: format!("{name}.downsample.1"),
                        inp,
                        out: c,
                        kernel: 1,
                        stride,
                    }),
                };
                specs.push(BlockSpec { name, convs, shortcut });
            }
        }
        specs
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
