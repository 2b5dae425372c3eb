//! Convolutions as implicit GEMMs in three paths (`select::ConvPath`: tiled, direct, lanes): the
//! forward (with the inference path's fused epilogues), the input gradient (`=` or `+=`), the
//! weight gradient (`weight_grad`), and the weight laid out as a panel for the kernels that read one.

pub mod select;
pub mod tune;
pub mod weight_grad;

use anyhow::{Result, anyhow, bail, ensure};
use bytemuck::{Pod, Zeroable};

use crate::gpu::{Gpu, Tensor};
use crate::kernels::{Dispatch, Kernel};
use crate::ops::{check, flag, workgroups};
use select::{ConvPass, ConvPath, PANEL_KERNELS, Role};

pub use weight_grad::{conv2d_backward_weight, sum_slices, weight_gradient_scratch};

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

/// Outputs per invocation (rows and columns) of the conv kernels' direct path: their `DM x DN`.
const DIRECT_BLOCK: usize = 8;

/// Outputs per invocation (rows, columns) of the lanes path: its kernels' `DM x DN`. Every
/// reduction step costs DM / 8 + DN loads per invocation (a row load serves the subgroup's 8
/// lanes) for DM * DN multiply-adds: 6 for 16 x 4, and more than 64 accumulators no longer fit
/// the registers (BENCHMARKS.md).
const LANES_BLOCK: [usize; 2] = [16, 4];

/// Dispatches a conv kernel over a `rows` x `columns` output matrix, on the conv `path`: the
/// tiled path runs `conv2d_tiled` (the forward, or with `TRANSPOSED` among the `overrides` the input
/// gradient), the lanes path `lanes` (the kernel's `_lanes` twin or the lanes kernel of the layer's
/// shape class, `select::lanes_kernel`), the direct path `kernel`. Direct workgroups have 64
/// invocations of 8x8 outputs (a CPU adapter runs a workgroup on one core, so small ones spread
/// better), shaped WG_M x WG_N to fit the rows (a CIFAR layer's 16 output channels get 2 x 32
/// invocations, not 8 x 8 with three quarters idle).
#[allow(clippy::too_many_arguments)]
fn conv_dispatch(
    gpu: &Gpu,
    path: ConvPath,
    kernel: Kernel,
    lanes: Kernel,
    overrides: &[(&str, f64)],
    tensors: &[&Tensor],
    params: &ConvParams,
    rows: usize,
    columns: usize,
) -> Result<Dispatch> {
    let fits = |kernel: Kernel, x: usize, y: usize| workgroups(gpu, kernel, [x, y, params.splits as usize]);
    match path {
        ConvPath::Tiled(tile) => {
            let kernel = Kernel::Conv2dTiled;
            let workgroups = fits(kernel, columns.div_ceil(tile.bn as usize), rows.div_ceil(tile.bm as usize))?;
            let pointwise = [params.r, params.s, params.stride, params.pad] == [1, 1, 1, 0]
                && (params.h * params.w).is_multiple_of(4);
            // The input twice, as f32s and as vec4s; the vec4 view only where POINTWISE reads it.
            let inp4 = if pointwise { tensors[1] } else { &gpu.placeholder };
            let tensors = [&tensors[..2], &[inp4], &tensors[2..]].concat();
            let pointwise = [("POINTWISE", flag(pointwise))];
            let overrides = [&tile.overrides()[..], &pointwise, overrides].concat();
            gpu.dispatch(kernel, &overrides, &tensors, params, workgroups)
        }
        ConvPath::Lanes => {
            // 64 invocations share 16 rows and own 4 columns each.
            let [dm, dn] = LANES_BLOCK;
            let workgroups = fits(lanes, columns.div_ceil(64 * dn), rows.div_ceil(dm))?;
            gpu.dispatch(lanes, overrides, tensors, params, workgroups)
        }
        ConvPath::Direct => {
            // CPU adapters vectorise along x: WG_N >= 8.
            let wg_m = rows.div_ceil(DIRECT_BLOCK).next_power_of_two().clamp(1, 8);
            let wg_n = 64 / wg_m;
            let workgroups = fits(kernel, columns.div_ceil(DIRECT_BLOCK * wg_n), rows.div_ceil(DIRECT_BLOCK * wg_m))?;
            let shape = [("WG_M", wg_m as f64), ("WG_N", wg_n as f64)];
            gpu.dispatch(kernel, &[&shape[..], overrides].concat(), tensors, params, workgroups)
        }
    }
}

/// Whether the kernel of this layer's forward (or `transposed` its input gradient) reads the
/// weight as a panel: on the tiled path every conv, on the lanes path 3x3s with pad 1 at stride 1
/// and 2 (the strided forwards on rows of an even number of columns), and the 7x7 stem on such rows.
pub fn reads_panel(gpu: &Gpu, params: &ConvParams, transposed: bool) -> Result<bool> {
    // Only the strided 1x1s' input gradients depend on `accumulate`, and they read no panel.
    let (pass, role) = match transposed {
        true => (ConvPass::InputGradient, Role::InputGradient { accumulate: true }),
        false => (ConvPass::Forward, Role::Forward),
    };
    let path = tune::path(gpu, params, pass)?;
    let (kernel, ..) = select::lanes_kernel(path, params, role);
    Ok(matches!(path, ConvPath::Tiled(_)) || PANEL_KERNELS.contains(&kernel))
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

/// The weight a conv's kernel binds: its panel for the kernels that read one (the tiled path's,
/// and the lanes kernels of `PANEL_KERNELS`), else `weight`.
fn bound_weight<'a>(
    weight: &'a Tensor,
    panel: Option<&'a Tensor>,
    path: ConvPath,
    lanes: Kernel,
    transposed: bool,
) -> Result<&'a Tensor> {
    let reader = match path {
        ConvPath::Tiled(_) => Kernel::Conv2dTiled,
        _ if PANEL_KERNELS.contains(&lanes) => lanes,
        _ => return Ok(weight),
    };
    let panel = panel.ok_or_else(|| {
        anyhow!(
            "{} reads the conv weight {:?} as a panel (conv::conv2d_weight_panel); none was given",
            reader.name(),
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
    if !reads_panel(gpu, params, transposed)? {
        return Ok(None);
    }
    let panel = gpu.zeros("conv2d weight as a panel", &panel_shape(&weight.shape, transposed))?;
    let dispatch = conv2d_weight_panel(gpu, &panel, weight, transposed)?;
    Ok(Some((panel, dispatch)))
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
    let path = tune::path(gpu, &params, ConvPass::Forward)?;
    let (lanes, rows, columns) = select::lanes_kernel(path, &params, Role::Forward);
    let tensors = [out, inp, bound_weight(weight, panel, path, lanes, false)?, bias, residual];
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
    let path = tune::path(gpu, &params, ConvPass::InputGradient)?;
    let (lanes, rows, columns) = select::lanes_kernel(path, &params, Role::InputGradient { accumulate });
    let weight = bound_weight(weight, panel, path, lanes, true)?;
    let own = !matches!(path, ConvPath::Tiled(_))
        && [Kernel::Conv2dBackwardInputLanes, Kernel::Conv2dBackwardInputStridedLanes].contains(&lanes);
    let kernel = Kernel::Conv2dBackwardInput;
    if !own {
        let overrides = [("TRANSPOSED", 1.0), ("ACCUMULATE", flag(accumulate))];
        let tensors = [dinp, dout, weight, &gpu.placeholder, &gpu.placeholder];
        return conv_dispatch(gpu, path, kernel, lanes, &overrides, &tensors, &params, rows, columns);
    }
    let overrides = [("ACCUMULATE", flag(accumulate))];
    conv_dispatch(gpu, path, kernel, lanes, &overrides, &[dinp, dout, weight], &params, rows, columns)
}
