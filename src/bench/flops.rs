//! FLOPs counted from the architecture.

use super::Mode;

use crate::model::{Arch, BlockKind, Shortcut};

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
