//! Batch norm with PyTorch's semantics: training (batch statistics, running statistics
//! updated), evaluation (running statistics) and the backward, each with fused epilogues.
//!
//! Training reduces each channel's N*H*W values, in one of two ways (`Gpu::bn_chunk`): a
//! workgroup per channel walks it (`batchnorm_forward_train`, `batchnorm_backward`: one
//! dispatch, CPU adapters), or two levels (GPUs, where a workgroup per channel leaves most of
//! the chip idle): a workgroup per chunk of a channel writes partial results to a scratch tensor
//! [C,CHUNKS,2] (`*_chunks`), a workgroup per channel combines them in a fixed order
//! (`*_combine`), and an invocation per element writes the output (`batchnorm_forward_eval` with
//! `BATCH`, `batchnorm_backward_input`): three dispatches.

use std::sync::Arc;

use anyhow::{Result, bail, ensure};
use bytemuck::{Pod, Zeroable};

use super::elementwise::mask_words;
use super::{WG, check, flag};
use crate::gpu::{Gpu, Tensor};
use crate::kernels::{Dispatch, Kernel, grid};

/// Batch norm's constants, as PyTorch's defaults.
pub const BN_MOMENTUM: f32 = 0.1;

pub const BN_EPS: f32 = 1e-5;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct BatchnormParams {
    pub n: u32,
    pub c: u32,
    pub hw: u32,
    /// Values of a chunk, a multiple of 4, and chunks of a channel: the two-level kernels' cut.
    pub chunk: u32,
    pub momentum: f32,
    pub eps: f32,
    pub chunks: u32,
    pub _unused: u32,
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

/// The two-level kernels' cut of a batch norm of `params` on `gpu` (`Gpu::bn_chunk`): `params`
/// with `chunk` and `chunks` set, or `None` where a workgroup per channel reduces it.
fn chunked(gpu: &Gpu, params: &BatchnormParams) -> Result<Option<BatchnormParams>> {
    let Some(chunk) = gpu.bn_chunk else { return Ok(None) };
    // A multiple of 4 values, so that no vec4 straddles two chunks.
    let chunk = chunk.next_multiple_of(4);
    let chunks = (params.n as u64 * params.hw as u64).div_ceil(chunk as u64).max(1);
    if let Some(limit) = gpu.loop_limit {
        // Two passes over a chunk, and over a channel's chunks, stepping by the workgroup size.
        let wg = gpu.bn_workgroup as u64;
        let iterations = 2 * (chunk as u64).div_ceil(wg).max(chunks.div_ceil(wg));
        ensure!(
            iterations <= limit / 2,
            "batch norm of [{}, {}, {} values a plane] in chunks of {chunk} values needs {iterations} loop \
             iterations per invocation, over half of the {limit} after which {} cuts loops short; use a smaller \
             batch or chunk",
            params.n,
            params.c,
            params.hw,
            gpu.info.name
        );
    }
    Ok(Some(BatchnormParams { chunk, chunks: chunks as u32, ..*params }))
}

/// The shape of the scratch tensor in which the two-level kernels of a batch norm of `inp` write
/// a partial result per chunk, [C,CHUNKS,2], where `gpu` runs them (`Gpu::bn_chunk`). Plans
/// allocate it and hand it to the training forward and the backward, so that the batch norms of
/// all layers share buffers.
pub fn chunks_shape(gpu: &Gpu, inp: &[usize]) -> Result<Option<Vec<usize>>> {
    let params = BatchnormParams::for_input(inp)?;
    Ok(chunked(gpu, &params)?.map(|cut| vec![cut.c as usize, cut.chunks as usize, 2]))
}

/// The scratch tensor of the two-level kernels: `chunks` if given (of `chunks_shape`), else a new
/// one kept in `own`.
fn chunks_tensor<'a>(
    gpu: &Gpu,
    chunks: Option<&'a Tensor>,
    cut: &BatchnormParams,
    own: &'a mut Option<Tensor>,
) -> Result<&'a Tensor> {
    let shape = [cut.c as usize, cut.chunks as usize, 2];
    match chunks {
        Some(chunks) => {
            check("batch norm chunks", chunks, &shape)?;
            Ok(chunks)
        }
        None => Ok(own.insert(gpu.zeros("batch norm chunks", &shape)?)),
    }
}

/// The one-invocation-per-element kernel of a batch norm (`scalar`, or `vec4` for H*W a multiple
/// of 4), and its workgroups.
fn per_element(params: &BatchnormParams, scalar: Kernel, vec4: Kernel) -> (Kernel, [u32; 3]) {
    let len = (params.n * params.c * params.hw) as usize;
    match params.hw.is_multiple_of(4) {
        true => (vec4, grid((len / 4).div_ceil(WG))),
        false => (scalar, grid(len.div_ceil(WG))),
    }
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
/// residual add and ReLU fused in. On the two-level kernels, `chunks` is their scratch (of
/// `chunks_shape`), or where none is given a tensor of its own; elsewhere it is not used.
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
    chunks: Option<&Tensor>,
    relu: bool,
) -> Result<Vec<Dispatch>> {
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
    let (epilogue, residual) = bn_epilogue(gpu, out, residual, relu)?;
    let vec4 = params.hw.is_multiple_of(4);
    let Some(cut) = chunked(gpu, &params)? else {
        let tensors = [out, mean, rstd, running_mean, running_var, inp, weight, bias, residual];
        let kernel = if vec4 { Kernel::BatchnormForwardTrainVec4 } else { Kernel::BatchnormForwardTrain };
        let wg = bn_workgroup(gpu, &params, vec4, 3)?;
        let overrides = [&epilogue[..], &[("WG", wg as f64)]].concat();
        return Ok(vec![gpu.dispatch(kernel, &overrides, &tensors, &params, grid(params.c as usize))?]);
    };
    let own = &mut None;
    let chunks = chunks_tensor(gpu, chunks, &cut, own)?;
    let wg = [("WG", gpu.bn_workgroup as f64)];
    let partial = if vec4 { Kernel::BatchnormForwardChunksVec4 } else { Kernel::BatchnormForwardChunks };
    let (apply, elements) = per_element(&params, Kernel::BatchnormForwardEval, Kernel::BatchnormForwardEvalVec4);
    let statistics = [mean, rstd, running_mean, running_var, chunks];
    let batch = [&epilogue[..], &[("BATCH", 1.0)]].concat();
    Ok(vec![
        gpu.dispatch(partial, &wg, &[chunks, inp], &cut, grid(cut.c as usize * cut.chunks as usize))?,
        gpu.dispatch(Kernel::BatchnormForwardCombine, &wg, &statistics, &cut, grid(cut.c as usize))?,
        gpu.dispatch(apply, &batch, &[out, inp, weight, bias, mean, rstd, residual], &cut, elements)?,
    ])
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
    let (kernel, workgroups) = per_element(&params, Kernel::BatchnormForwardEval, Kernel::BatchnormForwardEvalVec4);
    gpu.dispatch(kernel, &overrides, &tensors, &params, workgroups)
}

/// The backward of `batchnorm_forward_train` (a fused residual does not change it): with
/// `relu_mask` (relu_mask of the forward's output, where a ReLU followed the BN with no residual
/// in between), dout first goes through the ReLU's backward. `dinp` may be `inp` itself: the
/// gradient then overwrites the input it is computed from. `chunks` as the forward's.
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
    chunks: Option<&Tensor>,
) -> Result<Vec<Dispatch>> {
    backward(gpu, [dinp, dweight, dbias, dout, inp, weight, mean, rstd], relu_mask, chunks, false)
}

/// The backward of batch norm with frozen running statistics (`batchnorm_forward_eval` in a
/// training step, `--bn-eval`): the statistics are constants, so `dinp = weight * dout / sqrt(var
/// + eps)`; dweight and dbias as [`batchnorm_backward`]'s. `relu_mask`, `dinp` and `chunks` as there.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_backward_frozen(
    gpu: &Gpu,
    dinp: &Tensor,
    dweight: &Tensor,
    dbias: &Tensor,
    dout: &Tensor,
    inp: &Tensor,
    weight: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    relu_mask: Option<&Tensor>,
    chunks: Option<&Tensor>,
) -> Result<Vec<Dispatch>> {
    backward(gpu, [dinp, dweight, dbias, dout, inp, weight, running_mean, running_var], relu_mask, chunks, true)
}

/// `batchnorm_backward.wgsl` or the two-level kernels, with `FROZEN` where `statistic` is the
/// running variance (and `mean` the running mean), else rstd.
fn backward(
    gpu: &Gpu,
    [dinp, dweight, dbias, dout, inp, weight, mean, statistic]: [&Tensor; 8],
    relu_mask: Option<&Tensor>,
    chunks: Option<&Tensor>,
    frozen: bool,
) -> Result<Vec<Dispatch>> {
    let channels = [("dweight", dweight), ("dbias", dbias), ("weight", weight), ("mean", mean), ("rstd", statistic)];
    let params = BatchnormParams::new(inp, &channels)?;
    check("batch norm input gradient", dinp, &inp.shape)?;
    check("batch norm output gradient", dout, &inp.shape)?;
    if let Some(mask) = relu_mask {
        check("batch norm ReLU mask", mask, &[mask_words(inp.len())])?;
    }
    let in_place = Arc::ptr_eq(&dinp.buffer, &inp.buffer) && dinp.offset == inp.offset;
    let [relu, in_place_flag, frozen] =
        [("RELU", relu_mask.is_some()), ("IN_PLACE", in_place), ("FROZEN", frozen)].map(|(n, on)| (n, flag(on)));
    let mask = relu_mask.unwrap_or(&gpu.placeholder);
    // What the kernels that write dinp bind as their input: nothing of their own where dinp holds it.
    let x = if in_place { &gpu.placeholder } else { inp };
    let vec4 = params.hw.is_multiple_of(4);
    let Some(cut) = chunked(gpu, &params)? else {
        let tensors = [dinp, dweight, dbias, dout, x, weight, mean, statistic, mask];
        let kernel = if vec4 { Kernel::BatchnormBackwardVec4 } else { Kernel::BatchnormBackward };
        let wg = ("WG", bn_workgroup(gpu, &params, vec4, 2)? as f64);
        let overrides = [relu, in_place_flag, frozen, wg];
        return Ok(vec![gpu.dispatch(kernel, &overrides, &tensors, &params, grid(params.c as usize))?]);
    };
    let own = &mut None;
    let chunks = chunks_tensor(gpu, chunks, &cut, own)?;
    let wg = ("WG", gpu.bn_workgroup as f64);
    let partial = if vec4 { Kernel::BatchnormBackwardChunksVec4 } else { Kernel::BatchnormBackwardChunks };
    let (apply, elements) = per_element(&params, Kernel::BatchnormBackwardInput, Kernel::BatchnormBackwardInputVec4);
    let partial_tensors = [chunks, dout, inp, mean, statistic, mask];
    let apply_tensors = [dinp, dout, x, weight, mean, statistic, dweight, dbias, mask];
    Ok(vec![
        gpu.dispatch(partial, &[relu, frozen, wg], &partial_tensors, &cut, grid(cut.c as usize * cut.chunks as usize))?,
        gpu.dispatch(Kernel::BatchnormBackwardCombine, &[wg], &[dweight, dbias, chunks], &cut, grid(cut.c as usize))?,
        gpu.dispatch(apply, &[relu, in_place_flag, frozen], &apply_tensors, &cut, elements)?,
    ])
}
