//! Batch norm with PyTorch's semantics: training (batch statistics, running statistics
//! updated), evaluation (running statistics) and the backward, each with fused epilogues.

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
    backward(gpu, [dinp, dweight, dbias, dout, inp, weight, mean, rstd], relu_mask, false)
}

/// The backward of batch norm with frozen running statistics (`batchnorm_forward_eval` in a
/// training step, `--bn-eval`): the statistics are constants, so `dinp = weight * dout / sqrt(var
/// + eps)`; dweight and dbias as [`batchnorm_backward`]'s. `relu_mask` and `dinp` as there.
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
) -> Result<Dispatch> {
    backward(gpu, [dinp, dweight, dbias, dout, inp, weight, running_mean, running_var], relu_mask, true)
}

/// `batchnorm_backward.wgsl`, with `FROZEN` where `statistics` are the running mean and variance.
fn backward(
    gpu: &Gpu,
    [dinp, dweight, dbias, dout, inp, weight, mean, statistic]: [&Tensor; 8],
    relu_mask: Option<&Tensor>,
    frozen: bool,
) -> Result<Dispatch> {
    let channels = [("dweight", dweight), ("dbias", dbias), ("weight", weight), ("mean", mean), ("rstd", statistic)];
    let params = BatchnormParams::new(inp, &channels)?;
    check("batch norm input gradient", dinp, &inp.shape)?;
    check("batch norm output gradient", dout, &inp.shape)?;
    if let Some(mask) = relu_mask {
        check("batch norm ReLU mask", mask, &[mask_words(inp.len())])?;
    }
    let in_place = Arc::ptr_eq(&dinp.buffer, &inp.buffer) && dinp.offset == inp.offset;
    let overrides = [("RELU", flag(relu_mask.is_some())), ("IN_PLACE", flag(in_place)), ("FROZEN", flag(frozen))];
    let inp = if in_place { &gpu.placeholder } else { inp };
    let tensors = [dinp, dweight, dbias, dout, inp, weight, mean, statistic, relu_mask.unwrap_or(&gpu.placeholder)];
    let kernel = if params.hw.is_multiple_of(4) { Kernel::BatchnormBackwardVec4 } else { Kernel::BatchnormBackward };
    let wg = bn_workgroup(gpu, &params, kernel == Kernel::BatchnormBackwardVec4, 2)?;
    let overrides = [&overrides[..], &[("WG", wg as f64)]].concat();
    gpu.dispatch(kernel, &overrides, &tensors, &params, grid(params.c as usize))
}
