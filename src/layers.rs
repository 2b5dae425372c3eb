//! One function per kernel: checks the tensors' shapes at plan time and prepares the dispatch.
//!
//! Arguments follow the kernel's bindings (outputs first, then inputs); the `*Params` structs
//! mirror each shader's uniform and are also what the CPU twins in `reference` take.

use std::sync::Arc;

use anyhow::{Result, anyhow, bail, ensure};
use bytemuck::{Pod, Zeroable};

use crate::autotune::ConvPass;
use crate::gpu::{ConvPath, Gpu, Tensor};
use crate::kernels::{Dispatch, Kernel, grid};

/// Batch norm's constants, as PyTorch's defaults.
pub const BN_MOMENTUM: f32 = 0.1;
pub const BN_EPS: f32 = 1e-5;
/// Invocations per workgroup of the one-invocation-per-element kernels (their `WG` override).
const WG: usize = 256;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct ConvParams {
    pub n: u32,
    pub c: u32,
    pub h: u32,
    pub w: u32,
    pub k: u32,
    pub r: u32,
    pub s: u32,
    pub p: u32,
    pub q: u32,
    pub stride: u32,
    pub pad: u32,
    /// Reduction slices of a weight gradient (1 elsewhere).
    pub splits: u32,
}

impl ConvParams {
    /// The convolution of `inp` [N,C,H,W] by `weight` [K,C,R,S]; the output is [N,K,P,Q].
    pub fn new(inp: &[usize], weight: &[usize], stride: usize, pad: usize) -> Result<Self> {
        let (&[n, c, h, w], &[k, wc, r, s]) = (inp, weight) else {
            bail!("conv2d takes an input [N,C,H,W] and a weight [K,C,R,S], got {inp:?} and {weight:?}");
        };
        ensure!(wc == c, "conv2d weight {weight:?} expects {wc} input channels, the input {inp:?} has {c}");
        ensure!(stride > 0, "conv2d stride must be positive");
        ensure!(
            h + 2 * pad >= r && w + 2 * pad >= s,
            "conv2d kernel {r}x{s} is larger than the padded input {inp:?} (pad {pad})"
        );
        let p = (h + 2 * pad - r) / stride + 1;
        let q = (w + 2 * pad - s) / stride + 1;
        let u = |x: usize| x as u32;
        Ok(Self {
            n: u(n),
            c: u(c),
            h: u(h),
            w: u(w),
            k: u(k),
            r: u(r),
            s: u(s),
            p: u(p),
            q: u(q),
            stride: u(stride),
            pad: u(pad),
            splits: 1,
        })
    }

    pub fn out_shape(&self) -> Vec<usize> {
        [self.n, self.k, self.p, self.q].map(|x| x as usize).to_vec()
    }
}

/// The value of a bool `override` constant.
fn flag(on: bool) -> f64 {
    if on { 1.0 } else { 0.0 }
}

fn check(name: &str, tensor: &Tensor, shape: &[usize]) -> Result<()> {
    ensure!(tensor.shape == shape, "{name} has shape {:?}, expected {shape:?}", tensor.shape);
    Ok(())
}

/// Outputs per invocation (rows and columns) of the conv kernels' shared and direct paths: their
/// `TM x TN` and `DM x DN` constants.
const SHARED_BLOCK: usize = 4;
const DIRECT_BLOCK: usize = 8;
/// Outputs per invocation (rows, columns) of the lanes path: its kernels' `DM x DN`. Every
/// reduction step costs DM / 8 + DN loads per invocation (a row load serves the subgroup's 8
/// lanes) for DM * DN multiply-adds; 16 x 4 needs 6 where 8 x 8 needed 9, and more than 64
/// accumulators no longer fit the registers (BENCHMARKS.md).
const LANES_BLOCK: [usize; 2] = [16, 4];

/// `counts` as workgroup counts of `kernel`, if the adapter allows that many per dimension.
fn workgroups(gpu: &Gpu, kernel: Kernel, counts: [usize; 3]) -> Result<[u32; 3]> {
    let limit = gpu.limits.max_compute_workgroups_per_dimension as usize;
    let [x, y, z] = counts;
    ensure!(
        counts.iter().all(|&n| n <= limit),
        "{} needs {x} x {y} x {z} workgroups, the adapter allows {limit} per dimension; use a smaller batch",
        kernel.name()
    );
    Ok(counts.map(|n| n as u32))
}

/// Dispatches a conv kernel over a `rows` x `columns` output matrix, on the conv `path`: `lanes`
/// is the kernel's `_lanes` twin or the lanes kernel of the layer's shape class (`lanes_variant`,
/// `conv2d_backward_input_strided_lanes`). Shared workgroups have 256 invocations of 4x4
/// outputs; direct ones 64 invocations of 8x8 (a CPU adapter runs a workgroup on one core, so
/// smaller ones spread better). Workgroups are shaped WG_M x WG_N to fit the rows (a CIFAR layer's
/// 16 output channels get 4 x 64 invocations, not 16 x 16 with three quarters idle).
#[allow(clippy::too_many_arguments)]
fn conv_dispatch(
    gpu: &Gpu,
    path: ConvPath,
    kernel: Kernel,
    lanes: Kernel,
    epilogue: &[(&str, f64)],
    tensors: &[&Tensor],
    params: &ConvParams,
    rows: usize,
    columns: usize,
) -> Result<Dispatch> {
    let fits = |x: usize, y: usize| workgroups(gpu, kernel, [x, y, params.splits as usize]);
    if path == ConvPath::Lanes {
        // 64 invocations share 16 rows and own 4 columns each.
        let [dm, dn] = LANES_BLOCK;
        let workgroups = fits(columns.div_ceil(64 * dn), rows.div_ceil(dm))?;
        return gpu.dispatch(lanes, epilogue, tensors, params, workgroups);
    }
    let shared = path == ConvPath::Shared;
    let (block, threads) = if shared { (SHARED_BLOCK, 256) } else { (DIRECT_BLOCK, 64) };
    // CPU adapters vectorise along x: the direct path keeps WG_N >= 8.
    let wg_m = rows.div_ceil(block).next_power_of_two().clamp(1, if shared { 16 } else { 8 });
    let wg_n = threads / wg_m;
    let workgroups = fits(columns.div_ceil(block * wg_n), rows.div_ceil(block * wg_m))?;
    // The shared path's two tiles hold BK x 4*(WG_M + WG_N) values: keep them within 8 KiB.
    let bk = 1 << (2048 / (4 * (wg_m + wg_n))).clamp(1, 16).ilog2();
    let mut overrides =
        vec![("WG_M", wg_m as f64), ("WG_N", wg_n as f64), ("BK", bk as f64), ("SHARED", shared as u8 as f64)];
    if kernel == Kernel::Conv2dBackwardWeight {
        // Its workgroup size names the axes, not the roles (see conv2d_backward_weight).
        overrides.extend([("WG_X", wg_n as f64), ("WG_Y", wg_m as f64)]);
    }
    overrides.extend_from_slice(epilogue);
    gpu.dispatch(kernel, &overrides, tensors, params, workgroups)
}

/// Whether `conv2d_rows_lanes` (and `conv2d_backward_weight_rows_lanes` on rows of 4 columns or
/// more, or its `_vec4` twin on rows of a multiple of 4) run this layer: on the lanes path, 3x3
/// convs with stride 1 and pad 1 (all but the strided ones of a CIFAR ResNet or of ResNet-18 to
/// 152).
fn rows_fit(path: ConvPath, params: &ConvParams) -> bool {
    path == ConvPath::Lanes && [params.r, params.s, params.stride, params.pad] == [3, 3, 1, 1]
}

/// Whether this layer is a 3x3 conv with stride 2 and pad 1 on the lanes path (the input gradient
/// runs on `conv2d_backward_input_strided_lanes`).
fn strided_fit(path: ConvPath, params: &ConvParams) -> bool {
    path == ConvPath::Lanes && [params.r, params.s, params.stride, params.pad] == [3, 3, 2, 1]
}

/// Whether `conv2d_strided_lanes` runs this layer's forward: on the lanes path, stride-2 3x3s with
/// pad 1 and 7x7s with pad 3 (the ImageNet stem) on rows of an even number of columns.
fn pairs_fit(path: ConvPath, params: &ConvParams) -> bool {
    let shape = [params.r, params.s, params.stride, params.pad];
    path == ConvPath::Lanes && (shape == [3, 3, 2, 1] || shape == [7, 7, 2, 3]) && params.w.is_multiple_of(2)
}

/// The lanes kernels that read the weight as a panel (`conv2d_weight_panel`).
const PANEL_KERNELS: [Kernel; 3] =
    [Kernel::Conv2dRowsLanes, Kernel::Conv2dStridedLanes, Kernel::Conv2dBackwardInputStridedLanes];

/// Whether the kernel of this layer's forward (or `transposed` its input gradient) reads the
/// weight as a panel: on the lanes path 3x3s with pad 1 at stride 1 and 2 (the strided forwards on
/// rows of an even number of columns), and the 7x7 stem on such rows.
pub fn reads_panel(gpu: &Gpu, params: &ConvParams, transposed: bool) -> bool {
    // Only the strided 1x1s' input gradients depend on `accumulate`, and they read no panel.
    let pass = if transposed { ConvPass::InputGradient } else { ConvPass::Forward };
    let path = gpu.conv_path_for(params, pass);
    let (kernel, ..) = if transposed { input_gradient_lanes(path, params, true) } else { forward_lanes(path, params) };
    PANEL_KERNELS.contains(&kernel)
}

/// The shape of a conv weight [K,C,R,S] as a panel: [K4,R,S,C4] for the forward, [C4,R,S,K4]
/// `transposed` for the input gradient (the counts rounded up to multiples of 4).
pub fn panel_shape(weight: &[usize], transposed: bool) -> Vec<usize> {
    let &[k, c, r, s] = weight else { panic!("a conv weight is [K,C,R,S], got {weight:?}") };
    let (m, e) = if transposed { (c, k) } else { (k, c) };
    vec![m.next_multiple_of(4), r, s, e.next_multiple_of(4)]
}

/// panel = the weight with the kernel's rows outermost and its reduction channels innermost, as
/// `panel_shape` (zeros past K and C).
pub fn conv2d_weight_panel(gpu: &Gpu, panel: &Tensor, weight: &Tensor, transposed: bool) -> Result<Dispatch> {
    ensure!(weight.shape.len() == 4, "conv2d weight has shape {:?}, expected [K,C,R,S]", weight.shape);
    check("conv2d weight as a panel", panel, &panel_shape(&weight.shape, transposed))?;
    let [k, c, r, s] = [0, 1, 2, 3].map(|i| weight.shape[i] as u32);
    let params = ConvParams { k, c, r, s, ..Default::default() };
    let overrides = [("TRANSPOSED", flag(transposed))];
    let (rows, channels) = (panel.shape[0], panel.shape[3]);
    let limit = gpu.limits.max_compute_workgroups_per_dimension as usize;
    ensure!(rows <= limit, "conv2d_weight_panel needs {rows} workgroups, the adapter allows {limit} per dimension");
    let workgroups = [channels.div_ceil(64) as u32, rows as u32, 1];
    gpu.dispatch(Kernel::Conv2dWeightPanel, &overrides, &[panel, weight], &params, workgroups)
}

/// The weight a conv's lanes kernel binds: its panel for the kernels that read one, else `weight`.
fn bound_weight<'a>(
    weight: &'a Tensor,
    panel: Option<&'a Tensor>,
    lanes: Kernel,
    transposed: bool,
) -> Result<&'a Tensor> {
    if !PANEL_KERNELS.contains(&lanes) {
        return Ok(weight);
    }
    let panel = panel.ok_or_else(|| {
        anyhow!(
            "{} reads the conv weight {:?} as a panel (layers::conv2d_weight_panel); none was given",
            lanes.name(),
            weight.shape
        )
    })?;
    check("conv2d weight as a panel", panel, &panel_shape(&weight.shape, transposed))?;
    Ok(panel)
}

/// Where the layer `reads_panel`, a new tensor for its weight as a panel and the dispatch that
/// lays it out (inference plans, which lay their fixed weights out once; tests; benchmarks).
/// Training plans lay the weights out before every use, into buffers all layers share.
pub fn panel_for(
    gpu: &Gpu,
    params: &ConvParams,
    weight: &Tensor,
    transposed: bool,
) -> Result<Option<(Tensor, Dispatch)>> {
    if !reads_panel(gpu, params, transposed) {
        return Ok(None);
    }
    let panel = gpu.zeros("conv2d weight as a panel", &panel_shape(&weight.shape, transposed))?;
    let dispatch = conv2d_weight_panel(gpu, &panel, weight, transposed)?;
    Ok(Some((panel, dispatch)))
}

/// Whether `conv2d_pointwise_lanes` (and `conv2d_backward_weight_rows_vec4_lanes` as `POINTWISE`)
/// run this layer: on the lanes path, 1x1 convs with stride 1, H*W and both channel counts
/// multiples of 4 (ResNet-50's 1x1s but for 7x7 planes and the strided projections).
fn pointwise_fit(path: ConvPath, params: &ConvParams) -> bool {
    path == ConvPath::Lanes
        && [params.r, params.s, params.stride, params.pad] == [1, 1, 1, 0]
        && [params.h * params.w, params.c, params.k].iter().all(|x| x.is_multiple_of(4))
}

/// Whether `conv2d_pointwise_channels_lanes` can run this layer: on the lanes path, 1x1 convs
/// with pad 0 (any stride) and both channel counts multiples of 4.
fn channels_fit(path: ConvPath, params: &ConvParams) -> bool {
    path == ConvPath::Lanes
        && [params.r, params.s, params.pad] == [1, 1, 0]
        && [params.c, params.k].iter().all(|x| x.is_multiple_of(4))
}

/// The lanes-path kernel for a conv of a shape class that has one (the forward, or with
/// `transposed` the input gradient), with the rows and columns of its dispatch. 3x3s with pad 1
/// go to `conv2d_rows_lanes` at stride 1; stride-2 forwards of 3x3s and of the 7x7 stem on rows
/// of an even number of columns to `conv2d_strided_lanes` (the caller sets TAPS).
/// 1x1s go to `conv2d_pointwise_channels_lanes` where 256 output channels or more fill its lanes (at 32, a
/// CIFAR projection ran 4x slower than in `conv2d_forward_lanes`) and `conv2d_pointwise_lanes`
/// cannot take them (strided, or on 7x7 planes) or a reduction over 256 or more hides the scalar
/// stores (ResNet-50's 14x14 stage: 60 against 52 % of the peak; at 56x56, 256 out of 64
/// channels, 48 against 56 %, BENCHMARKS.md).
fn lanes_variant(path: ConvPath, params: &ConvParams, transposed: bool) -> Option<(Kernel, usize, usize)> {
    let [n, c, k, p, q] = [params.n, params.c, params.k, params.p, params.q].map(|x| x as usize);
    let (m, e) = if transposed { (c, k) } else { (k, c) };
    let pointwise = pointwise_fit(path, params);
    // One invocation per 4 columns of a row: rows padded to a multiple of 4.
    let row_columns = n * p * q.next_multiple_of(4);
    if rows_fit(path, params) {
        Some((Kernel::Conv2dRowsLanes, m, row_columns))
    } else if pairs_fit(path, params) && !transposed {
        Some((Kernel::Conv2dStridedLanes, m, row_columns))
    } else if channels_fit(path, params) && m >= 256 && (!pointwise || e >= 256) {
        // The positions are the rows its lanes broadcast, the channels their columns.
        Some((Kernel::Conv2dPointwiseChannelsLanes, n * p * q, m))
    } else if pointwise {
        Some((Kernel::Conv2dPointwiseLanes, m, n * p * q))
    } else {
        None
    }
}

/// The lanes-path kernel of a conv's forward, with the rows and columns of its dispatch.
fn forward_lanes(path: ConvPath, params: &ConvParams) -> (Kernel, usize, usize) {
    let [n, k, p, q] = [params.n, params.k, params.p, params.q].map(|x| x as usize);
    lanes_variant(path, params, false).unwrap_or((Kernel::Conv2dForwardLanes, k, n * p * q))
}

/// The lanes-path kernel of a conv's input gradient, with the rows and columns of its dispatch:
/// a forward kernel run `TRANSPOSED` where one fits, else one of the input gradient's own.
fn input_gradient_lanes(path: ConvPath, params: &ConvParams, accumulate: bool) -> (Kernel, usize, usize) {
    // A strided 1x1's input gradient reaches a part of dinp only: conv2d_pointwise_channels_lanes
    // adds it (as the projection shortcut's in training) and leaves the rest.
    if let Some(variant) = lanes_variant(path, params, true).filter(|_| accumulate || params.stride == 1) {
        return variant;
    }
    let [n, c, h, w] = [params.n, params.c, params.h, params.w].map(|x| x as usize);
    if strided_fit(path, params) {
        // 3x3 stride 2 pad 1: only the taps that reach each position, in rows of even then odd
        // h, each parity in whole workgroups of 64 invocations (of 4 columns).
        let columns = 2 * (n * h.div_ceil(2) * w.div_ceil(4)).next_multiple_of(64) * 4;
        (Kernel::Conv2dBackwardInputStridedLanes, c, columns)
    } else {
        (Kernel::Conv2dBackwardInputLanes, c, n * h * w)
    }
}

/// out = conv(inp, weight). Where the layer `reads_panel`, `panel` holds the weight as
/// `conv2d_weight_panel` lays it out for the forward (the kernel reads that instead).
pub fn conv2d_forward(
    gpu: &Gpu,
    out: &Tensor,
    inp: &Tensor,
    weight: &Tensor,
    panel: Option<&Tensor>,
    stride: usize,
    pad: usize,
) -> Result<Dispatch> {
    conv2d_forward_fused(gpu, out, inp, weight, panel, None, None, false, stride, pad)
}

/// out = relu?(conv(inp, weight) + bias? + residual?): the inference path, with batch norm folded
/// into `weight` and `bias`, and a block's residual add and ReLU fused into its last conv.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_forward_fused(
    gpu: &Gpu,
    out: &Tensor,
    inp: &Tensor,
    weight: &Tensor,
    panel: Option<&Tensor>,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
    relu: bool,
    stride: usize,
    pad: usize,
) -> Result<Dispatch> {
    let params = ConvParams::new(&inp.shape, &weight.shape, stride, pad)?;
    check("conv2d output", out, &params.out_shape())?;
    if let Some(bias) = bias {
        check("conv2d bias", bias, &[weight.shape[0]])?;
    }
    if let Some(residual) = residual {
        check("conv2d residual", residual, &out.shape)?;
    }
    let epilogue = [("BIAS", flag(bias.is_some())), ("RESIDUAL", flag(residual.is_some())), ("RELU", flag(relu))];
    let (bias, residual) = (bias.unwrap_or(&gpu.placeholder), residual.unwrap_or(&gpu.placeholder));
    let path = gpu.conv_path_for(&params, ConvPass::Forward);
    let (lanes, rows, columns) = forward_lanes(path, &params);
    let tensors = [out, inp, bound_weight(weight, panel, lanes, false)?, bias, residual];
    let taps = [("TAPS", params.r as f64)];
    let overrides =
        if lanes == Kernel::Conv2dStridedLanes { [&epilogue[..], &taps].concat() } else { epilogue.to_vec() };
    conv_dispatch(gpu, path, Kernel::Conv2dForward, lanes, &overrides, &tensors, &params, rows, columns)
}

/// dinp = the input gradient, or with `accumulate` dinp += it. `panel` as in `conv2d_forward`,
/// laid out `transposed`.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward_input(
    gpu: &Gpu,
    dinp: &Tensor,
    dout: &Tensor,
    weight: &Tensor,
    panel: Option<&Tensor>,
    stride: usize,
    pad: usize,
    accumulate: bool,
) -> Result<Dispatch> {
    let params = ConvParams::new(&dinp.shape, &weight.shape, stride, pad)?;
    check("conv2d output gradient", dout, &params.out_shape())?;
    let path = gpu.conv_path_for(&params, ConvPass::InputGradient);
    let (lanes, rows, columns) = input_gradient_lanes(path, &params, accumulate);
    let weight = bound_weight(weight, panel, lanes, true)?;
    let own = [Kernel::Conv2dBackwardInputLanes, Kernel::Conv2dBackwardInputStridedLanes].contains(&lanes);
    let kernel = Kernel::Conv2dBackwardInput;
    if !own {
        let overrides = [("TRANSPOSED", 1.0), ("ACCUMULATE", flag(accumulate))];
        let tensors = [dinp, dout, weight, &gpu.placeholder, &gpu.placeholder];
        return conv_dispatch(gpu, path, kernel, lanes, &overrides, &tensors, &params, rows, columns);
    }
    let overrides = [("ACCUMULATE", flag(accumulate))];
    conv_dispatch(gpu, path, kernel, lanes, &overrides, &[dinp, dout, weight], &params, rows, columns)
}

/// Reduction positions (n, p, q) in one slice of a weight gradient, at most, on the shared path
/// (a long reduction spread over workgroups: split-K) and on adapters with a loop limit, where
/// the kernels run at most 2 loop iterations per position of their slice (the shared path about
/// 8 per step of BK positions, so 8 per position at worst): a slice stays within 32768 of
/// llvmpipe's 65535 (`Gpu::loop_limit`). Before this cap, lavapipe's
/// shared path added up only the first 32768 positions of a [64,16,32,32] layer's gradient, and
/// the lanes path the first part of ResNet-50's 56x56 3x3s at batch 128.
const SLICE_POSITIONS: usize = 4096;

/// dweight = the weight gradient. Layers with few output blocks (on the direct and lanes paths,
/// CPU adapters) and long reductions (`SLICE_POSITIONS`) split the reduction into slices written
/// to a scratch tensor [SPLITS,K,C,R,S] that `sum_slices` then adds up: two dispatches. The
/// scratch is `slices` (of `weight_gradient_scratch`'s shape), or where none is given a tensor
/// of its own.
pub fn conv2d_backward_weight(
    gpu: &Gpu,
    dweight: &Tensor,
    dout: &Tensor,
    inp: &Tensor,
    slices: Option<&Tensor>,
    stride: usize,
    pad: usize,
) -> Result<Vec<Dispatch>> {
    let mut params = ConvParams::new(&inp.shape, &dweight.shape, stride, pad)?;
    check("conv2d output gradient", dout, &params.out_shape())?;
    let (path, blocks) = weight_gradient_blocks(gpu, &mut params);
    let own;
    let out = match weight_gradient_slices(&params, &dweight.shape) {
        None => dweight,
        Some(shape) => match slices {
            Some(slices) => {
                check("conv2d_backward_weight slices", slices, &shape)?;
                slices
            }
            None => {
                own = gpu.zeros("conv2d_backward_weight slices", &shape)?;
                &own
            }
        },
    };
    let tensors = [out, dout, inp];
    let dispatch = match blocks {
        None => {
            let [c, k, rs] = [params.c, params.k, params.r * params.s].map(|x| x as usize);
            let kernel = Kernel::Conv2dBackwardWeight;
            conv_dispatch(gpu, path, kernel, kernel, &[], &tensors, &params, k, c * rs)?
        }
        Some((kernel, overrides, counts)) => {
            gpu.dispatch(kernel, &overrides, &tensors, &params, workgroups(gpu, kernel, counts)?)?
        }
    };
    if params.splits == 1 {
        return Ok(vec![dispatch]);
    }
    Ok(vec![dispatch, sum_slices(gpu, dweight, out)?])
}

/// The shape of the scratch tensor in which the weight gradient of the conv of `inp` by `weight`
/// writes its slices, [SPLITS,K,C,R,S], where it has more than one. Plans allocate it and hand
/// it to `conv2d_backward_weight`, so that the weight gradients of all layers share buffers.
pub fn weight_gradient_scratch(
    gpu: &Gpu,
    inp: &[usize],
    weight: &[usize],
    stride: usize,
    pad: usize,
) -> Result<Option<Vec<usize>>> {
    let mut params = ConvParams::new(inp, weight, stride, pad)?;
    weight_gradient_blocks(gpu, &mut params);
    Ok(weight_gradient_slices(&params, weight))
}

fn weight_gradient_slices(params: &ConvParams, weight: &[usize]) -> Option<Vec<usize>> {
    (params.splits > 1).then(|| [&[params.splits as usize], weight].concat())
}

/// The path of a conv's weight gradient with `params.splits` set, and the kernel, overrides
/// and workgroups that run it (none on the shared path, which `conv_dispatch` sizes).
#[allow(clippy::type_complexity)]
fn weight_gradient_blocks(
    gpu: &Gpu,
    params: &mut ConvParams,
) -> (ConvPath, Option<(Kernel, Vec<(&'static str, f64)>, [usize; 3])>) {
    let [n, c, k, r, s, p, q] =
        [params.n, params.c, params.k, params.r, params.s, params.p, params.q].map(|x| x as usize);
    let path = gpu.conv_path_for(params, ConvPass::WeightGradient);
    let long = (n * p * q).div_ceil(SLICE_POSITIONS);
    let looped = if gpu.loop_limit.is_some() { long } else { 1 };
    let blocks = match path {
        ConvPath::Shared => {
            params.splits = long as u32;
            None
        }
        ConvPath::Lanes => {
            // One subgroup of 8 invocations per workgroup, 32 x 4 outputs each, 32 x 3 (3x3) and
            // 32 x 4 (1x1) in conv2d_backward_weight_rows_lanes, 16 x 3 and 16 x 4 in
            // conv2d_backward_weight_rows_vec4_lanes; at least 32 workgroups, and no more slices
            // than reduction rows (n, p).
            let [dm, dn] = LANES_BLOCK;
            let (rows, pointwise) = (rows_fit(path, params), pointwise_fit(path, params));
            // 1x1s that conv2d_backward_weight_rows_vec4_lanes cannot take: 7x7 planes, strided.
            let pointwise_rows = channels_fit(path, params) && params.q >= 4;
            let (kernel, columns) = if rows && params.w.is_multiple_of(4) {
                (Kernel::Conv2dBackwardWeightRowsVec4Lanes, (c * r).div_ceil(8))
            } else if rows && params.w >= 4 {
                (Kernel::Conv2dBackwardWeightRowsLanes, (c * r).div_ceil(8))
            } else if pointwise {
                (Kernel::Conv2dBackwardWeightRowsVec4Lanes, (c / 4).div_ceil(8))
            } else if pointwise_rows {
                (Kernel::Conv2dBackwardWeightRowsLanes, (c / 4).div_ceil(8))
            } else {
                (Kernel::Conv2dBackwardWeightLanes, (c * r * s).div_ceil(8 * dn))
            };
            let block_rows = if kernel == Kernel::Conv2dBackwardWeightRowsVec4Lanes { dm } else { 2 * dm };
            let (x, y) = (columns, k.div_ceil(block_rows));
            let splits = 32usize.div_ceil(x * y).max(looped).min(n * p).max(1);
            params.splits = splits as u32;
            let overrides = if pointwise || pointwise_rows { vec![("POINTWISE", 1.0)] } else { vec![] };
            Some((kernel, overrides, [x, y, splits]))
        }
        ConvPath::Direct => {
            let (overrides, workgroups) = direct_weight_blocks(params, n, c, k, r * s, p, looped);
            Some((Kernel::Conv2dBackwardWeight, overrides, workgroups))
        }
    };
    (path, blocks)
}

/// The direct path's weight-gradient blocks: the kernel's overrides and workgroup counts, with
/// `params.splits` set, `min_splits` at least.
fn direct_weight_blocks(
    params: &mut ConvParams,
    n: usize,
    c: usize,
    k: usize,
    rs: usize,
    p: usize,
    min_splits: usize,
) -> (Vec<(&'static str, f64)>, [usize; 3]) {
    // 64 invocations at most, 8 along x (CPU adapters vectorise along x): 8 column blocks where
    // the layer has them, else 8 slices. At least 32 workgroups, and no more slices than
    // reduction rows (n, p).
    let slice_lanes = c < 8 * DIRECT_BLOCK;
    let wg_n = if slice_lanes { c.div_ceil(DIRECT_BLOCK).next_power_of_two() } else { 8 };
    let wg_m = k.div_ceil(DIRECT_BLOCK).next_power_of_two().min(if slice_lanes { 8 / wg_n } else { 8 });
    let (x, y) = (c.div_ceil(DIRECT_BLOCK * wg_n), k.div_ceil(DIRECT_BLOCK * wg_m));
    let wg_s = if slice_lanes { 8 } else { 1 };
    let groups_z = 32usize.div_ceil(x * y * rs).max(min_splits.div_ceil(wg_s)).min((n * p).div_ceil(wg_s)).max(1);
    params.splits = (wg_s * groups_z) as u32;
    let [wg_x, wg_y, wg_z] = if slice_lanes { [wg_s, wg_n, wg_m] } else { [wg_n, wg_m, wg_s] };
    let overrides = vec![
        ("WG_M", wg_m as f64),
        ("WG_N", wg_n as f64),
        ("WG_S", wg_s as f64),
        ("WG_X", wg_x as f64),
        ("WG_Y", wg_y as f64),
        ("WG_Z", wg_z as f64),
        ("SLICE_LANES", slice_lanes as u8 as f64),
        ("SHARED", 0.0),
    ];
    (overrides, [x, y, rs * groups_z])
}

/// The uniform of sum_slices.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct SliceParams {
    pub len: u32,
    pub slices: u32,
    pub _unused: [u32; 2],
}

/// out = the sum of inp's slices along its first axis.
pub fn sum_slices(gpu: &Gpu, out: &Tensor, inp: &Tensor) -> Result<Dispatch> {
    ensure!(
        inp.shape.len() == out.shape.len() + 1 && inp.shape[1..] == out.shape[..],
        "sum_slices: input {:?} is not slices of the output {:?}",
        inp.shape,
        out.shape
    );
    let params = SliceParams { len: out.len() as u32, slices: inp.shape[0] as u32, ..Default::default() };
    gpu.dispatch(Kernel::SumSlices, &[], &[out, inp], &params, grid(out.len().div_ceil(WG)))
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct BatchnormParams {
    pub n: u32,
    pub c: u32,
    pub hw: u32,
    pub _unused: u32,
    pub momentum: f32,
    pub eps: f32,
    pub _unused2: [u32; 2],
}

impl BatchnormParams {
    /// Batch norm over an input [N,C,H,W], with PyTorch's momentum and eps.
    pub fn for_input(inp: &[usize]) -> Result<Self> {
        let &[n, c, h, w] = inp else { bail!("batch norm takes an input [N,C,H,W], got {inp:?}") };
        Ok(Self {
            n: n as u32,
            c: c as u32,
            hw: (h * w) as u32,
            momentum: BN_MOMENTUM,
            eps: BN_EPS,
            ..Default::default()
        })
    }

    fn new(inp: &Tensor, channel_tensors: &[(&str, &Tensor)]) -> Result<Self> {
        let params = Self::for_input(&inp.shape)?;
        for (name, t) in channel_tensors {
            check(name, t, &[params.c as usize])?;
        }
        Ok(params)
    }
}

/// The workgroup size of the batch norm kernels that take a channel per workgroup, for an input
/// of `params` walked `passes` times (as vec4s where `vec4`): the adapter's (`Gpu::bn_workgroup`),
/// doubled while an invocation would run over half the adapter's loop limit (`Gpu::loop_limit`).
fn bn_workgroup(gpu: &Gpu, params: &BatchnormParams, vec4: bool, passes: u64) -> Result<u32> {
    let Some(limit) = gpu.loop_limit else { return Ok(gpu.bn_workgroup) };
    let columns = (if vec4 { params.hw / 4 } else { params.hw }) as u64;
    // As the kernels walk a channel: rows n = t / lanes, stepping by wg / lanes, and in each the
    // columns t % lanes, stepping by lanes.
    let iterations = |wg: u64| {
        let lanes = wg.min(columns.max(2).next_power_of_two());
        passes * (params.n as u64).div_ceil(wg / lanes) * (columns.div_ceil(lanes) + 1)
    };
    let mut wg = gpu.bn_workgroup as u64;
    while iterations(wg) > limit / 2 {
        ensure!(
            wg < 256,
            "batch norm of [{}, {}, {} values a plane] needs {} loop iterations per invocation, over half of \
             the {limit} after which {} cuts loops short; use a smaller batch",
            params.n,
            params.c,
            params.hw,
            iterations(wg),
            gpu.info.name
        );
        wg *= 2;
    }
    Ok(wg as u32)
}

/// The epilogue switches of the BN forward kernels: a residual to add, then a ReLU. Binds the
/// placeholder where there is no residual.
fn bn_epilogue<'a>(
    gpu: &'a Gpu,
    out: &Tensor,
    residual: Option<&'a Tensor>,
    relu: bool,
) -> Result<([(&'static str, f64); 2], &'a Tensor)> {
    if let Some(residual) = residual {
        check("batch norm residual", residual, &out.shape)?;
    }
    Ok(([("RESIDUAL", flag(residual.is_some())), ("RELU", flag(relu))], residual.unwrap_or(&gpu.placeholder)))
}

/// out = relu?(bn(inp) + residual?) with the batch's statistics: batch norm with a block's
/// residual add and ReLU fused in.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_forward_train(
    gpu: &Gpu,
    out: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    inp: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    residual: Option<&Tensor>,
    relu: bool,
) -> Result<Dispatch> {
    let channels = [
        ("mean", mean),
        ("rstd", rstd),
        ("running_mean", running_mean),
        ("running_var", running_var),
        ("weight", weight),
        ("bias", bias),
    ];
    let params = BatchnormParams::new(inp, &channels)?;
    check("batch norm output", out, &inp.shape)?;
    let (overrides, residual) = bn_epilogue(gpu, out, residual, relu)?;
    let tensors = [out, mean, rstd, running_mean, running_var, inp, weight, bias, residual];
    let kernel =
        if params.hw.is_multiple_of(4) { Kernel::BatchnormForwardTrainVec4 } else { Kernel::BatchnormForwardTrain };
    let wg = bn_workgroup(gpu, &params, kernel == Kernel::BatchnormForwardTrainVec4, 3)?;
    let overrides = [&overrides[..], &[("WG", wg as f64)]].concat();
    gpu.dispatch(kernel, &overrides, &tensors, &params, grid(params.c as usize))
}

/// out = relu?(bn(inp) + residual?) with the running statistics.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_forward_eval(
    gpu: &Gpu,
    out: &Tensor,
    inp: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    residual: Option<&Tensor>,
    relu: bool,
) -> Result<Dispatch> {
    let channels = [("weight", weight), ("bias", bias), ("running_mean", running_mean), ("running_var", running_var)];
    let params = BatchnormParams::new(inp, &channels)?;
    check("batch norm output", out, &inp.shape)?;
    let (overrides, residual) = bn_epilogue(gpu, out, residual, relu)?;
    let tensors = [out, inp, weight, bias, running_mean, running_var, residual];
    let (kernel, invocations) = if params.hw.is_multiple_of(4) {
        (Kernel::BatchnormForwardEvalVec4, inp.len() / 4)
    } else {
        (Kernel::BatchnormForwardEval, inp.len())
    };
    gpu.dispatch(kernel, &overrides, &tensors, &params, grid(invocations.div_ceil(WG)))
}

/// The backward of `batchnorm_forward_train` (a fused residual does not change it): with
/// `relu_mask` (relu_mask of the forward's output, where a ReLU followed the BN with no residual
/// in between), dout first goes through the ReLU's backward. `dinp` may be `inp` itself: the
/// gradient then overwrites the input it is computed from.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_backward(
    gpu: &Gpu,
    dinp: &Tensor,
    dweight: &Tensor,
    dbias: &Tensor,
    dout: &Tensor,
    inp: &Tensor,
    weight: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
    relu_mask: Option<&Tensor>,
) -> Result<Dispatch> {
    let channels = [("dweight", dweight), ("dbias", dbias), ("weight", weight), ("mean", mean), ("rstd", rstd)];
    let params = BatchnormParams::new(inp, &channels)?;
    check("batch norm input gradient", dinp, &inp.shape)?;
    check("batch norm output gradient", dout, &inp.shape)?;
    if let Some(mask) = relu_mask {
        check("batch norm ReLU mask", mask, &[mask_words(inp.len())])?;
    }
    let in_place = Arc::ptr_eq(&dinp.buffer, &inp.buffer) && dinp.offset == inp.offset;
    let overrides = [("RELU", flag(relu_mask.is_some())), ("IN_PLACE", flag(in_place))];
    let inp = if in_place { &gpu.placeholder } else { inp };
    let tensors = [dinp, dweight, dbias, dout, inp, weight, mean, rstd, relu_mask.unwrap_or(&gpu.placeholder)];
    let kernel = if params.hw.is_multiple_of(4) { Kernel::BatchnormBackwardVec4 } else { Kernel::BatchnormBackward };
    let wg = bn_workgroup(gpu, &params, kernel == Kernel::BatchnormBackwardVec4, 2)?;
    let overrides = [&overrides[..], &[("WG", wg as f64)]].concat();
    gpu.dispatch(kernel, &overrides, &tensors, &params, grid(params.c as usize))
}

/// The uniform of the elementwise kernels.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct LenParams {
    pub len: u32,
    pub _unused: [u32; 3],
}

fn elementwise(gpu: &Gpu, kernel: Kernel, tensors: &[&Tensor]) -> Result<Dispatch> {
    for t in &tensors[1..] {
        check(kernel.name(), t, &tensors[0].shape)?;
    }
    let len = tensors[0].len();
    gpu.dispatch(kernel, &[], tensors, &LenParams { len: len as u32, ..Default::default() }, grid(len.div_ceil(WG)))
}

pub fn relu_forward(gpu: &Gpu, out: &Tensor, inp: &Tensor) -> Result<Dispatch> {
    elementwise(gpu, Kernel::ReluForward, &[out, inp])
}

/// The words relu_mask writes for a tensor of `len` values: one bit per value.
pub fn mask_words(len: usize) -> usize {
    len.div_ceil(32)
}

/// mask = one bit per value of `inp`, set where it is > 0.
pub fn relu_mask(gpu: &Gpu, mask: &Tensor, inp: &Tensor) -> Result<Dispatch> {
    let len = inp.len();
    check("relu mask", mask, &[mask_words(len)])?;
    let params = LenParams { len: len as u32, ..Default::default() };
    let kernel = if len.is_multiple_of(4) { Kernel::ReluMaskVec4 } else { Kernel::ReluMask };
    gpu.dispatch(kernel, &[], &[mask, inp], &params, grid(mask_words(len).div_ceil(WG)))
}

/// In place: `dinp` holds dout and becomes dinp; `mask` is relu_mask of the ReLU's input or output.
pub fn relu_backward(gpu: &Gpu, dinp: &Tensor, mask: &Tensor) -> Result<Dispatch> {
    let len = dinp.len();
    check("relu mask", mask, &[mask_words(len)])?;
    let params = LenParams { len: len as u32, ..Default::default() };
    let (kernel, invocations) =
        if len.is_multiple_of(4) { (Kernel::ReluBackwardVec4, len / 4) } else { (Kernel::ReluBackward, len) };
    gpu.dispatch(kernel, &[], &[dinp, mask], &params, grid(invocations.div_ceil(WG)))
}

/// out += inp.
pub fn add(gpu: &Gpu, out: &Tensor, inp: &Tensor) -> Result<Dispatch> {
    check("add input", inp, &out.shape)?;
    let len = out.len();
    let params = LenParams { len: len as u32, ..Default::default() };
    let (kernel, invocations) = if len.is_multiple_of(4) { (Kernel::AddVec4, len / 4) } else { (Kernel::Add, len) };
    gpu.dispatch(kernel, &[], &[out, inp], &params, grid(invocations.div_ceil(WG)))
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct ShortcutParams {
    pub n: u32,
    pub c: u32,
    pub h: u32,
    pub w: u32,
    pub k: u32,
    pub p: u32,
    pub q: u32,
    pub _unused: u32,
}

impl ShortcutParams {
    /// Option A from `inp` [N,C,H,W] to `out` [N,K,ceil(H/2),ceil(W/2)], K - C even and >= 0.
    pub fn new(inp: &[usize], out: &[usize]) -> Result<Self> {
        let (&[n, c, h, w], &[n2, k, p, q]) = (inp, out) else {
            bail!("the option-A shortcut maps [N,C,H,W] to [N,K,P,Q], got {inp:?} and {out:?}");
        };
        ensure!(
            n == n2 && k >= c && (k - c) % 2 == 0 && p == h.div_ceil(2) && q == w.div_ceil(2),
            "the option-A shortcut cannot map {inp:?} to {out:?}: it halves H and W and pads channels equally on both sides"
        );
        let u = |x: usize| x as u32;
        Ok(Self { n: u(n), c: u(c), h: u(h), w: u(w), k: u(k), p: u(p), q: u(q), _unused: 0 })
    }
}

pub fn shortcut_a_forward(gpu: &Gpu, out: &Tensor, inp: &Tensor) -> Result<Dispatch> {
    let params = ShortcutParams::new(&inp.shape, &out.shape)?;
    let rows = (params.n * params.k * params.p) as usize;
    gpu.dispatch(Kernel::ShortcutAForward, &[], &[out, inp], &params, grid(rows.div_ceil(WG)))
}

/// dinp += the option-A shortcut's gradient.
pub fn shortcut_a_backward(gpu: &Gpu, dinp: &Tensor, dout: &Tensor) -> Result<Dispatch> {
    let params = ShortcutParams::new(&dinp.shape, &dout.shape)?;
    let rows = (params.n * params.c * params.p) as usize;
    gpu.dispatch(Kernel::ShortcutABackward, &[], &[dinp, dout], &params, grid(rows.div_ceil(WG)))
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct PoolParams {
    pub n: u32,
    pub c: u32,
    pub h: u32,
    pub w: u32,
    pub p: u32,
    pub q: u32,
    pub size: u32,
    pub stride: u32,
    pub pad: u32,
    pub _unused: [u32; 3],
}

impl PoolParams {
    pub fn new(inp: &[usize], size: usize, stride: usize, pad: usize) -> Result<Self> {
        let &[n, c, h, w] = inp else { bail!("max pool takes an input [N,C,H,W], got {inp:?}") };
        ensure!(
            stride > 0 && pad < size && h + 2 * pad >= size && w + 2 * pad >= size,
            "max pool {size}x{size}/{stride} pad {pad} does not fit input {inp:?}"
        );
        let u = |x: usize| x as u32;
        let (p, q) = ((h + 2 * pad - size) / stride + 1, (w + 2 * pad - size) / stride + 1);
        Ok(Self {
            n: u(n),
            c: u(c),
            h: u(h),
            w: u(w),
            p: u(p),
            q: u(q),
            size: u(size),
            stride: u(stride),
            pad: u(pad),
            _unused: [0; 3],
        })
    }

    pub fn out_shape(&self) -> Vec<usize> {
        [self.n, self.c, self.p, self.q].map(|x| x as usize).to_vec()
    }
}

pub fn maxpool_forward(
    gpu: &Gpu,
    out: &Tensor,
    indices: &Tensor,
    inp: &Tensor,
    size: usize,
    stride: usize,
    pad: usize,
) -> Result<Dispatch> {
    let params = PoolParams::new(&inp.shape, size, stride, pad)?;
    check("max pool output", out, &params.out_shape())?;
    check("max pool indices", indices, &params.out_shape())?;
    let rows = (params.n * params.c * params.p) as usize;
    gpu.dispatch(Kernel::MaxpoolForward, &[], &[out, indices, inp], &params, grid(rows.div_ceil(WG)))
}

pub fn maxpool_backward(
    gpu: &Gpu,
    dinp: &Tensor,
    dout: &Tensor,
    indices: &Tensor,
    size: usize,
    stride: usize,
    pad: usize,
) -> Result<Dispatch> {
    let params = PoolParams::new(&dinp.shape, size, stride, pad)?;
    check("max pool output gradient", dout, &params.out_shape())?;
    check("max pool indices", indices, &params.out_shape())?;
    let rows = (params.n * params.c * params.h) as usize;
    gpu.dispatch(Kernel::MaxpoolBackward, &[], &[dinp, dout, indices], &params, grid(rows.div_ceil(WG)))
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct AvgpoolParams {
    pub nc: u32,
    pub hw: u32,
    pub _unused: [u32; 2],
}

impl AvgpoolParams {
    pub fn new(inp: &[usize], out: &[usize]) -> Result<Self> {
        let (&[n, c, h, w], &[n2, c2]) = (inp, out) else {
            bail!("global average pool maps [N,C,H,W] to [N,C], got {inp:?} and {out:?}");
        };
        ensure!(n == n2 && c == c2, "global average pool cannot map {inp:?} to {out:?}");
        Ok(Self { nc: (n * c) as u32, hw: (h * w) as u32, _unused: [0; 2] })
    }
}

pub fn avgpool_forward(gpu: &Gpu, out: &Tensor, inp: &Tensor) -> Result<Dispatch> {
    let params = AvgpoolParams::new(&inp.shape, &out.shape)?;
    gpu.dispatch(Kernel::AvgpoolForward, &[], &[out, inp], &params, grid(out.len().div_ceil(WG)))
}

pub fn avgpool_backward(gpu: &Gpu, dinp: &Tensor, dout: &Tensor) -> Result<Dispatch> {
    let params = AvgpoolParams::new(&dinp.shape, &dout.shape)?;
    gpu.dispatch(Kernel::AvgpoolBackward, &[], &[dinp, dout], &params, grid(dinp.len().div_ceil(WG)))
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct LinearParams {
    pub n: u32,
    pub c: u32,
    pub k: u32,
    pub _unused: u32,
}

impl LinearParams {
    /// `inp` [N,C] times `weight` [K,C] transposed.
    pub fn new(inp: &[usize], weight: &[usize]) -> Result<Self> {
        let (&[n, c], &[k, c2]) = (inp, weight) else {
            bail!("linear takes an input [N,C] and a weight [K,C], got {inp:?} and {weight:?}");
        };
        ensure!(c == c2, "linear weight {weight:?} expects {c2} input features, the input {inp:?} has {c}");
        Ok(Self { n: n as u32, c: c as u32, k: k as u32, _unused: 0 })
    }
}

pub fn linear_forward(gpu: &Gpu, out: &Tensor, inp: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Dispatch> {
    let params = LinearParams::new(&inp.shape, &weight.shape)?;
    check("linear output", out, &[inp.shape[0], weight.shape[0]])?;
    check("linear bias", bias, &[weight.shape[0]])?;
    let kernel = if params.c.is_multiple_of(4) { Kernel::LinearForwardVec4 } else { Kernel::LinearForward };
    gpu.dispatch(kernel, &[], &[out, inp, weight, bias], &params, grid(out.len().div_ceil(WG)))
}

pub fn linear_backward_input(gpu: &Gpu, dinp: &Tensor, dout: &Tensor, weight: &Tensor) -> Result<Dispatch> {
    let params = LinearParams::new(&dinp.shape, &weight.shape)?;
    check("linear output gradient", dout, &[dinp.shape[0], weight.shape[0]])?;
    let (kernel, invocations) = if params.c.is_multiple_of(4) {
        (Kernel::LinearBackwardInputVec4, dinp.len() / 4)
    } else {
        (Kernel::LinearBackwardInput, dinp.len())
    };
    gpu.dispatch(kernel, &[], &[dinp, dout, weight], &params, grid(invocations.div_ceil(WG)))
}

pub fn linear_backward_weight(
    gpu: &Gpu,
    dweight: &Tensor,
    dbias: &Tensor,
    dout: &Tensor,
    inp: &Tensor,
) -> Result<Dispatch> {
    let params = LinearParams::new(&inp.shape, &dweight.shape)?;
    check("linear output gradient", dout, &[inp.shape[0], dweight.shape[0]])?;
    check("linear bias gradient", dbias, &[dweight.shape[0]])?;
    let (k, c) = (params.k as usize, params.c as usize);
    let (kernel, invocations) = if c.is_multiple_of(4) {
        (Kernel::LinearBackwardWeightVec4, k * (c / 4 + 1))
    } else {
        (Kernel::LinearBackwardWeight, k * (c + 1))
    };
    gpu.dispatch(kernel, &[], &[dweight, dbias, dout, inp], &params, grid(invocations.div_ceil(WG)))
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct LossParams {
    pub n: u32,
    pub k: u32,
    pub _unused: [u32; 2],
}

/// Mean softmax cross-entropy of `logits` [N,K] against `labels` [N] (u32): writes `dlogits`,
/// `loss` [1] and the number of `correct` top-1 predictions [1] (u32).
pub fn softmax_cross_entropy(
    gpu: &Gpu,
    dlogits: &Tensor,
    loss: &Tensor,
    correct: &Tensor,
    logits: &Tensor,
    labels: &Tensor,
) -> Result<Dispatch> {
    let &[n, k] = logits.shape.as_slice() else { bail!("the loss takes logits [N,K], got {:?}", logits.shape) };
    check("logit gradient", dlogits, &logits.shape)?;
    check("labels", labels, &[n])?;
    check("loss", loss, &[1])?;
    check("correct count", correct, &[1])?;
    let params = LossParams { n: n as u32, k: k as u32, _unused: [0; 2] };
    gpu.dispatch(Kernel::SoftmaxCrossEntropy, &[], &[dlogits, loss, correct, logits, labels], &params, [1, 1, 1])
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct SgdParams {
    pub len: u32,
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
}

/// One SGD step over every element of `weight` (typically the whole parameter arena). Rewrite the
/// learning rate of the prepared dispatch with `Gpu::update_params`.
pub fn sgd(
    gpu: &Gpu,
    weight: &Tensor,
    velocity: &Tensor,
    grad: &Tensor,
    lr: f32,
    momentum: f32,
    weight_decay: f32,
) -> Result<Dispatch> {
    check("velocity", velocity, &weight.shape)?;
    check("gradient", grad, &weight.shape)?;
    ensure!(weight.len().is_multiple_of(4), "sgd takes parameters in fours, got {}", weight.len());
    let params = SgdParams { len: weight.len() as u32, lr, momentum, weight_decay };
    gpu.dispatch(Kernel::Sgd, &[], &[weight, velocity, grad], &params, grid(weight.len().div_ceil(4 * WG)))
}
