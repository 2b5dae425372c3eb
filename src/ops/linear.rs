//! The fully connected layer with bias, and the softmax cross-entropy loss on its logits.

use anyhow::{Result, bail, ensure};
use bytemuck::{Pod, Zeroable};

use super::{WG, check};
use crate::gpu::{Gpu, Tensor};
use crate::kernels::{Dispatch, Kernel, grid};

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
