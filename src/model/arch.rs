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

    pub fn stem_width(&self) -> usize {
        if self.imagenet { 64 } else { 16 }
    }

    /// Every block in order: (name `layerS.I`, input channels, stride, its convs as
    /// (kernel, stride, output channels), whether it has a `downsample` projection).
    pub fn blocks(&self) -> Vec<BlockSpec> {
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

    pub fn features(&self) -> usize {
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

pub struct BlockSpec {
    pub name: String,
    pub inp: usize,
    /// (kernel size, stride, output channels) of conv1, conv2[, conv3].
    pub convs: Vec<(usize, usize, usize)>,
    pub shortcut: ShortcutSpec,
}

pub enum ShortcutSpec {
    None,
    Identity,
    A,
    B { stride: usize },
}
