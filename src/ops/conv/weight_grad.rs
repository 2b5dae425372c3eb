//! A conv's weight gradient: the kernel of each path, and the reduction split into slices
//! (`sum_slices`) where it is long or the output too small to fill the adapter.

use anyhow::{Result, ensure};
use bytemuck::{Pod, Zeroable};

use super::select::{self, ConvPass, ConvPath, SLICE_POSITIONS};
use super::tune;
use super::{ConvParams, DIRECT_BLOCK, LANES_BLOCK};
use crate::gpu::{Gpu, Tensor};
use crate::kernels::{Dispatch, Kernel, grid};
use crate::ops::{WG, check, workgroups};

/// Workgroups a tiled weight gradient splits its reduction to reach, where its slices keep at
/// least `MIN_SLICE` positions: two for each of a large GPU's 132 multiprocessors, and more.
const TILED_WORKGROUPS: usize = 512;

const MIN_SLICE: usize = 256;

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
    let (kernel, overrides, counts) = weight_gradient_blocks(gpu, &mut params)?;
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
    let dispatch = gpu.dispatch(kernel, &overrides, &tensors, &params, workgroups(gpu, kernel, counts)?)?;
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
    weight_gradient_blocks(gpu, &mut params)?;
    Ok(weight_gradient_slices(&params, weight))
}

fn weight_gradient_slices(params: &ConvParams, weight: &[usize]) -> Option<Vec<usize>> {
    (params.splits > 1).then(|| [&[params.splits as usize], weight].concat())
}

/// The kernel, overrides and workgroups that run a conv's weight gradient on the path chosen
/// for it, with `params.splits` set.
#[allow(clippy::type_complexity)]
fn weight_gradient_blocks(
    gpu: &Gpu,
    params: &mut ConvParams,
) -> Result<(Kernel, Vec<(&'static str, f64)>, [usize; 3])> {
    let [n, c, k, r, s, p, q] =
        [params.n, params.c, params.k, params.r, params.s, params.p, params.q].map(|x| x as usize);
    let path = tune::path(gpu, params, ConvPass::WeightGradient)?;
    let long = (n * p * q).div_ceil(SLICE_POSITIONS);
    let looped = if gpu.loop_limit.is_some() { long } else { 1 };
    let blocks = match path {
        ConvPath::Tiled(tile) => {
            let (x, y) = (c.div_ceil(tile.bn as usize), k.div_ceil(tile.bm as usize));
            let fill = TILED_WORKGROUPS.div_ceil(x * y * r * s).min(n * p * q / MIN_SLICE);
            params.splits = fill.max(long).max(1) as u32;
            (Kernel::Conv2dBackwardWeightTiled, tile.overrides().to_vec(), [x, y, r * s * params.splits as usize])
        }
        ConvPath::Lanes => {
            // One subgroup of 8 invocations per workgroup, 32 x 4 outputs each, 32 x 3 (3x3) and
            // 32 x 4 (1x1) in conv2d_backward_weight_rows_lanes, 16 x 3 and 16 x 4 in
            // conv2d_backward_weight_rows_vec4_lanes; at least 32 workgroups, and no more slices
            // than reduction rows (n, p).
            let [dm, dn] = LANES_BLOCK;
            let (rows, pointwise) = (select::rows(params).is_ok(), select::pointwise(params).is_ok());
            // 1x1s that conv2d_backward_weight_rows_vec4_lanes cannot take: 7x7 planes, strided.
            let pointwise_rows = select::pointwise_any_stride(params).is_ok() && params.q >= 4;
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
            (kernel, overrides, [x, y, splits])
        }
        ConvPath::Direct => {
            let (overrides, workgroups) = direct_weight_blocks(params, n, c, k, r * s, p, looped);
            (Kernel::Conv2dBackwardWeight, overrides, workgroups)
        }
    };
    Ok(blocks)
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
