//! Which kernel runs a conv: the paths (`ConvPath`, of which `tune::path` picks one per pass and
//! layer shape) and, on the lanes path, a kernel per shape class: `FORWARD` and `INPUT_GRADIENT`
//! list them in order of preference, and each variant says whether it admits a conv and, if not,
//! why.

use anyhow::{Result, bail};

use super::ConvParams;
use crate::gpu::{Gpu, Tuning};
use crate::kernels::Kernel;

/// The three passes of a conv, chosen apart: a path may win one and lose another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvPass {
    Forward,
    /// Chosen writing the gradient (not adding it to one, as a projection shortcut's does).
    InputGradient,
    WeightGradient,
}

impl ConvPass {
    pub fn name(self) -> &'static str {
        match self {
            ConvPass::Forward => "forward",
            ConvPass::InputGradient => "input gradient",
            ConvPass::WeightGradient => "weight gradient",
        }
    }
}

/// Reduction positions (n, p, q) in one slice of a weight gradient, at most, on the tiled path
/// (a long reduction spread over workgroups: split-K) and on adapters with a loop limit, where
/// the kernels run at most 2 loop iterations per position of their slice (the tiled path one
/// step per BK >= 8 positions): a slice stays within 32768 of llvmpipe's 65535
/// (`Gpu::loop_limit`; without the cap, llvmpipe silently adds up only the first part of a long
/// reduction: tests/kernels.rs `long_weight_gradients_match_cpu`).
pub const SLICE_POSITIONS: usize = 4096;

/// The conv kernels come in three paths that compute the same thing in different ways; which is
/// fastest depends on the adapter, and on the tiled path also on the layer's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvPath {
    /// The `_tiled` kernels: workgroup tiles staged in workgroup memory, double-buffered through
    /// registers, in a configuration of `TILES`. The GPU default.
    Tiled(Tile),
    /// Every invocation loads its operands from storage, no barriers: CPU adapters without
    /// subgroups (llvmpipe through GL), where a barrier costs more than the loads it saves.
    Direct,
    /// The `_lanes` kernels: like `Direct`, but the lanes of a subgroup share the loads of the
    /// operand they have in common. The default on CPU adapters with subgroups of 8 or more (lavapipe).
    Lanes,
}

/// A configuration of the tiled path: a workgroup computes BM x BN outputs, BK reduction steps
/// staged at a time, each invocation TM x TN of them (the `tiled` prelude's overrides).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tile {
    pub name: &'static str,
    pub bm: u32,
    pub bn: u32,
    pub bk: u32,
    pub tm: u32,
    pub tn: u32,
}

const fn tile(name: &'static str, [bm, bn, bk, tm, tn]: [u32; 5]) -> Tile {
    Tile { name, bm, bn, bk, tm, tn }
}

/// The tiled path's configurations, largest tiles first: what the autotune times on GPUs, and
/// every one of them runs the kernel tests. 8 x 8 outputs an invocation load 16 values of
/// workgroup memory for 64 multiply-adds; the small tiles are for layers with few outputs
/// (CIFAR's 16 channels, ResNet-50's 7x7 planes), where big ones leave most of a GPU idle.
pub const TILES: [Tile; 11] = [
    tile("tiled 128x128x8 8x8", [128, 128, 8, 8, 8]),
    tile("tiled 128x64x8 8x8", [128, 64, 8, 8, 8]),
    tile("tiled 64x128x8 8x8", [64, 128, 8, 8, 8]),
    tile("tiled 128x32x16 8x4", [128, 32, 16, 8, 4]),
    tile("tiled 32x128x16 4x8", [32, 128, 16, 4, 8]),
    tile("tiled 64x64x8 8x8", [64, 64, 8, 8, 8]),
    tile("tiled 64x64x16 4x4", [64, 64, 16, 4, 4]),
    tile("tiled 64x32x16 4x4", [64, 32, 16, 4, 4]),
    tile("tiled 32x64x16 4x4", [32, 64, 16, 4, 4]),
    tile("tiled 32x32x16 4x4", [32, 32, 16, 4, 4]),
    tile("tiled 16x64x16 4x4", [16, 64, 16, 4, 4]),
];

impl Tile {
    pub fn invocations(&self) -> u32 {
        (self.bm / self.tm) * (self.bn / self.tn)
    }

    /// Bytes of workgroup memory: the two staged slices, rows padded as the `tiled` prelude pads them.
    pub fn workgroup_bytes(&self) -> u32 {
        let pad = (32 / self.bk).max(1);
        4 * self.bk * (self.bm + self.bn + 2 * pad)
    }

    /// Ok if the `tiled` prelude's loops cover the tile exactly and its registers hold it, else why not.
    pub fn check(&self) -> Result<(), String> {
        let Tile { bm, bn, bk, tm, tn, .. } = *self;
        let threads = self.invocations();
        let ok = [4, 8].contains(&tm)
            && [4, 8].contains(&tn)
            && bk.is_power_of_two()
            && (8..=32).contains(&bk)
            && bm.is_multiple_of(tm * tn)
            && (bm * bk).is_multiple_of(4 * threads)
            && (bn * bk).is_multiple_of(4 * threads)
            && threads.is_multiple_of(bk)
            && threads.is_multiple_of(bn)
            && bm * bk / threads <= 16
            && bn * bk / threads <= 16;
        if ok { Ok(()) } else { Err(format!("{} does not fit the tiled kernels' loops", self.name)) }
    }

    /// Ok if the adapter can run a workgroup of this tile, else why not.
    pub fn fits(&self, limits: &wgpu::Limits) -> Result<(), String> {
        let (x, y) = (self.bn / self.tn, self.bm / self.tm);
        if self.invocations() > limits.max_compute_invocations_per_workgroup
            || x > limits.max_compute_workgroup_size_x
            || y > limits.max_compute_workgroup_size_y
        {
            return Err(format!("{}: {x} x {y} invocations, over the adapter's limits", self.name));
        }
        if self.workgroup_bytes() > limits.max_compute_workgroup_storage_size {
            return Err(format!(
                "{}: {} bytes of workgroup memory, over the adapter's limit",
                self.name,
                self.workgroup_bytes()
            ));
        }
        Ok(())
    }

    /// The `tiled` prelude's overrides.
    pub fn overrides(&self) -> [(&'static str, f64); 5] {
        [("BM", self.bm), ("BN", self.bn), ("BK", self.bk), ("TM", self.tm), ("TN", self.tn)]
            .map(|(k, v)| (k, v as f64))
    }

    /// The tiles the adapter can run.
    pub fn available(limits: &wgpu::Limits) -> impl Iterator<Item = Tile> + '_ {
        TILES.into_iter().filter(|t| t.fits(limits).is_ok())
    }

    /// The tiles the adapter can run over an output of `rows` x `columns` within its workgroups
    /// per dimension (the smallest tile first runs out at large batches).
    pub fn dispatchable(limits: &wgpu::Limits, rows: usize, columns: usize) -> impl Iterator<Item = Tile> + '_ {
        let limit = limits.max_compute_workgroups_per_dimension as usize;
        Self::available(limits)
            .filter(move |t| columns.div_ceil(t.bn as usize) <= limit && rows.div_ceil(t.bm as usize) <= limit)
    }

    /// The tile for an output of `rows` x `columns` in `depth` independent GEMMs (taps or slices
    /// of a weight gradient) where nothing was timed: the largest whose tiles reach into the
    /// rows and columns and that gives at least 264 workgroups (two for each of a large GPU's
    /// 132 multiprocessors), else the one of most workgroups.
    pub fn default_for(limits: &wgpu::Limits, rows: usize, columns: usize, depth: usize) -> Tile {
        let count = |t: &Tile| rows.div_ceil(t.bm as usize) * columns.div_ceil(t.bn as usize) * depth;
        let reach =
            |t: &Tile| t.bm as usize <= rows.next_power_of_two() && t.bn as usize <= columns.next_power_of_two();
        let tiles: Vec<Tile> = Self::dispatchable(limits, rows, columns).collect();
        let fallback = || *tiles.iter().max_by_key(|t| count(t)).unwrap_or(&TILES[0]);
        tiles.iter().copied().find(|t| reach(t) && count(t) >= 264).unwrap_or_else(fallback)
    }
}

impl ConvPath {
    pub fn name(self) -> &'static str {
        match self {
            ConvPath::Tiled(tile) => tile.name,
            ConvPath::Direct => "direct",
            ConvPath::Lanes => "lanes",
        }
    }

    /// The family of the path: tiled, direct or lanes.
    pub fn family(self) -> &'static str {
        match self {
            ConvPath::Tiled(_) => "tiled",
            path => path.name(),
        }
    }

    /// The families this adapter can run, its default first: `tiled` on GPUs, `lanes` on CPU
    /// adapters with subgroups of 8 or more, else `direct`.
    pub fn families(gpu: &Gpu) -> Vec<&'static str> {
        let default = if !crate::gpu::is_software(&gpu.info) {
            "tiled"
        } else if has_lanes(gpu) {
            "lanes"
        } else {
            "direct"
        };
        let mut families = vec![default];
        for family in ["tiled", "direct", "lanes"] {
            if !families.contains(&family) && (family != "lanes" || has_lanes(gpu)) {
                families.push(family);
            }
        }
        families
    }

    /// The paths this adapter can run for an output of `rows` x `columns` in `depth` GEMMs, its
    /// default first: every tile the adapter fits, the direct and the lanes path.
    pub fn candidates(gpu: &Gpu, rows: usize, columns: usize, depth: usize) -> Vec<ConvPath> {
        let default = Self::family_path(gpu, Self::families(gpu)[0], rows, columns, depth);
        let mut paths = vec![default];
        let others = Tile::dispatchable(&gpu.limits, rows, columns)
            .map(ConvPath::Tiled)
            .chain([ConvPath::Direct, ConvPath::Lanes]);
        for path in others {
            if !paths.contains(&path) && (path != ConvPath::Lanes || has_lanes(gpu)) {
                paths.push(path);
            }
        }
        paths
    }

    /// The path of a family: the tiled one with the tile `Tile::default_for` picks.
    fn family_path(gpu: &Gpu, family: &str, rows: usize, columns: usize, depth: usize) -> ConvPath {
        match family {
            "tiled" => ConvPath::Tiled(Tile::default_for(&gpu.limits, rows, columns, depth)),
            "lanes" => ConvPath::Lanes,
            _ => ConvPath::Direct,
        }
    }

    /// The path of this name (a family, or a tile's full name) for an output of `rows` x `columns`
    /// in `depth` GEMMs, if the adapter can run it; `what` names the setting in the error.
    pub(super) fn named(gpu: &Gpu, name: &str, what: &str, [rows, columns, depth]: [usize; 3]) -> Result<Self> {
        if let Some(tile) = TILES.iter().find(|t| t.name == name) {
            tile.fits(&gpu.limits).map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
            return Ok(ConvPath::Tiled(*tile));
        }
        match Self::families(gpu).into_iter().find(|f| *f == name) {
            Some(family) => Ok(Self::family_path(gpu, family, rows, columns, depth)),
            None if name == "lanes" => {
                bail!("{what}: lanes needs subgroups of 8 or more, which adapter {} lacks", gpu.info.name)
            }
            None => {
                bail!("{what}: expected tiled, direct, lanes or a tile of the tiled path such as \"{}\"", TILES[0].name)
            }
        }
    }

    /// The same device with every conv on this path.
    pub fn pin(self, gpu: &Gpu) -> Gpu {
        gpu.with_tuning(Tuning::Pinned(self.name()))
    }
}

/// Whether the lanes kernels can run: they need subgroups of at least 8 invocations.
fn has_lanes(gpu: &Gpu) -> bool {
    gpu.features.contains(wgpu::Features::SUBGROUP) && gpu.info.subgroup_min_size >= 8
}

/// What a lanes kernel computes: the forward, or the input gradient, written or (`accumulate`)
/// added to the tensor it goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Forward,
    InputGradient { accumulate: bool },
}

/// A lanes kernel of a shape class: whether it admits a conv in a role, and the rows and columns
/// of the output matrix its dispatch covers.
pub struct Variant {
    pub kernel: Kernel,
    admits: fn(&ConvParams, Role) -> Result<(), String>,
    extent: fn(&ConvParams, Role) -> (usize, usize),
}

impl Variant {
    /// Ok if this kernel can run the conv `params` in `role`, else why not.
    pub fn admits(&self, params: &ConvParams, role: Role) -> Result<(), String> {
        (self.admits)(params, role)
    }
}

/// (kernel rows, kernel columns, stride, pad) of a conv.
fn shape(params: &ConvParams) -> [u32; 4] {
    [params.r, params.s, params.stride, params.pad]
}

/// The output channels of the role's output and the reduction channels: (K, C) forward, (C, K)
/// for the input gradient.
fn channels(params: &ConvParams, role: Role) -> (usize, usize) {
    let (c, k) = (params.c as usize, params.k as usize);
    if role == Role::Forward { (k, c) } else { (c, k) }
}

/// One invocation per 4 columns of an output row: rows padded to a multiple of 4.
fn row_extent(params: &ConvParams, role: Role) -> (usize, usize) {
    let [n, p, q] = [params.n, params.p, params.q].map(|x| x as usize);
    (channels(params, role).0, n * p * q.next_multiple_of(4))
}

/// 3x3 convs with stride 1 and pad 1: all but the strided convs of a CIFAR ResNet or of
/// ResNet-18 to 152 (`conv2d_rows_lanes`, and the weight gradient's row kernels).
pub fn rows(params: &ConvParams) -> Result<(), String> {
    match shape(params) {
        [3, 3, 1, 1] => Ok(()),
        _ => Err("not a 3x3 conv with stride 1 and pad 1".into()),
    }
}

/// Stride-2 3x3s with pad 1 and the 7x7 stem with pad 3, forward, on rows of an even number of
/// columns (`conv2d_strided_lanes` reads them as column pairs).
fn strided_pairs(params: &ConvParams, role: Role) -> Result<(), String> {
    if role != Role::Forward {
        return Err("a forward kernel only".into());
    }
    if !matches!(shape(params), [3, 3, 2, 1] | [7, 7, 2, 3]) {
        return Err("not a 3x3 conv with stride 2 and pad 1 or a 7x7 with stride 2 and pad 3".into());
    }
    if !params.w.is_multiple_of(2) {
        return Err(format!("rows of {} columns, an odd number", params.w));
    }
    Ok(())
}

/// 1x1 convs with stride 1 whose planes (H*W) and channel counts are multiples of 4: ResNet-50's
/// 1x1s but for 7x7 planes and the strided projections (`conv2d_pointwise_lanes` loads vec4s).
pub fn pointwise(params: &ConvParams) -> Result<(), String> {
    if shape(params) != [1, 1, 1, 0] {
        return Err("not a 1x1 conv with stride 1 and pad 0".into());
    }
    if ![params.h * params.w, params.c, params.k].iter().all(|x| x.is_multiple_of(4)) {
        return Err("planes or channel counts not multiples of 4".into());
    }
    Ok(())
}

/// 1x1 convs with pad 0 (any stride) whose channel counts are multiples of 4: what
/// `conv2d_pointwise_channels_lanes` (4 channels an invocation) can run.
pub fn pointwise_any_stride(params: &ConvParams) -> Result<(), String> {
    if !matches!(shape(params), [1, 1, _, 0]) {
        return Err("not a 1x1 conv with pad 0".into());
    }
    if ![params.c, params.k].iter().all(|x| x.is_multiple_of(4)) {
        return Err("channel counts not multiples of 4".into());
    }
    Ok(())
}

/// Where `conv2d_pointwise_channels_lanes` runs: 256 output channels or more fill its lanes
/// (fewer leave them idle, BENCHMARKS.md), and
/// `conv2d_pointwise_lanes` cannot take the conv (strided, or 7x7 planes) or a reduction over
/// 256 or more hides its scalar stores. A strided 1x1's input gradient reaches a part of dinp
/// only: this kernel adds it (as the projection shortcut's in training) and leaves the rest.
fn pointwise_channels(params: &ConvParams, role: Role) -> Result<(), String> {
    pointwise_any_stride(params)?;
    let (m, e) = channels(params, role);
    if m < 256 {
        return Err(format!("{m} output channels, fewer than 256"));
    }
    if pointwise(params).is_ok() && e < 256 {
        return Err(format!("conv2d_pointwise_lanes takes it, and its reduction over {e} is under 256"));
    }
    if role == (Role::InputGradient { accumulate: false }) && params.stride != 1 {
        return Err("a strided input gradient written, not added".into());
    }
    Ok(())
}

fn pointwise_extent(params: &ConvParams, role: Role) -> (usize, usize) {
    let [n, p, q] = [params.n, params.p, params.q].map(|x| x as usize);
    (channels(params, role).0, n * p * q)
}

/// 3x3 stride 2 pad 1 input gradients: only the taps that reach each position.
fn strided_input_gradient(params: &ConvParams, _: Role) -> Result<(), String> {
    match shape(params) {
        [3, 3, 2, 1] => Ok(()),
        _ => Err("not a 3x3 conv with stride 2 and pad 1".into()),
    }
}

fn any(_: &ConvParams, _: Role) -> Result<(), String> {
    Ok(())
}

const ROWS: Variant = Variant { kernel: Kernel::Conv2dRowsLanes, admits: |p, _| rows(p), extent: row_extent };
const POINTWISE_CHANNELS: Variant = Variant {
    kernel: Kernel::Conv2dPointwiseChannelsLanes,
    admits: pointwise_channels,
    // The positions are the rows its lanes broadcast, the channels its columns.
    extent: |p, role| {
        let (m, positions) = pointwise_extent(p, role);
        (positions, m)
    },
};
const POINTWISE: Variant =
    Variant { kernel: Kernel::Conv2dPointwiseLanes, admits: |p, _| pointwise(p), extent: pointwise_extent };

/// The forward's lanes kernels, in order of preference; the last admits every conv.
pub const FORWARD: [Variant; 5] = [
    ROWS,
    Variant { kernel: Kernel::Conv2dStridedLanes, admits: strided_pairs, extent: row_extent },
    POINTWISE_CHANNELS,
    POINTWISE,
    Variant { kernel: Kernel::Conv2dForwardLanes, admits: any, extent: pointwise_extent },
];

/// The input gradient's lanes kernels, in order of preference (the forward's kernels run
/// `TRANSPOSED`); the last admits every conv.
pub const INPUT_GRADIENT: [Variant; 5] = [
    ROWS,
    POINTWISE_CHANNELS,
    POINTWISE,
    Variant {
        kernel: Kernel::Conv2dBackwardInputStridedLanes,
        admits: strided_input_gradient,
        // In rows of even then odd h, each parity in whole workgroups of 64 invocations of 4 columns.
        extent: |p, _| {
            let [n, c, h, w] = [p.n, p.c, p.h, p.w].map(|x| x as usize);
            (c, 2 * (n * h.div_ceil(2) * w.div_ceil(4)).next_multiple_of(64) * 4)
        },
    },
    Variant {
        kernel: Kernel::Conv2dBackwardInputLanes,
        admits: any,
        extent: |p, _| {
            let [n, c, h, w] = [p.n, p.c, p.h, p.w].map(|x| x as usize);
            (c, n * h * w)
        },
    },
];

/// The lanes kernel of the conv `params` in `role`, with the rows and columns of its dispatch:
/// on the lanes path the first variant that admits it, elsewhere the last, the `_lanes` twin of
/// the general kernel (whose output matrix the shared and direct paths cover too).
pub fn lanes_kernel(path: ConvPath, params: &ConvParams, role: Role) -> (Kernel, usize, usize) {
    let table: &[Variant] = if role == Role::Forward { &FORWARD } else { &INPUT_GRADIENT };
    let variant = match path {
        ConvPath::Lanes => table.iter().find(|v| v.admits(params, role).is_ok()),
        _ => table.last(),
    };
    let variant = variant.expect("the last variant admits every conv");
    let (rows, columns) = (variant.extent)(params, role);
    (variant.kernel, rows, columns)
}

/// The lanes kernels that read the weight as a panel (`conv2d_weight_panel`).
pub const PANEL_KERNELS: [Kernel; 3] =
    [Kernel::Conv2dRowsLanes, Kernel::Conv2dStridedLanes, Kernel::Conv2dBackwardInputStridedLanes];
