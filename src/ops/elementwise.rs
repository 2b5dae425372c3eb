//! Elementwise ops and the option-A shortcut: ReLU masks and backward, adds.

use anyhow::{Result, bail, ensure};
use bytemuck::{Pod, Zeroable};

use super::{WG, check, row_walk};
use crate::gpu::{Gpu, Tensor};
use crate::kernels::{Dispatch, Kernel, grid};

/// The uniform of the elementwise kernels.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct LenParams {
    pub len: u32,
    pub _unused: [u32; 3],
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
    let (overrides, workgroups) = row_walk(gpu, (params.n * params.k * params.p) as usize, params.q as usize);
    gpu.dispatch(Kernel::ShortcutAForward, &overrides, &[out, inp], &params, workgroups)
}

/// dinp += the option-A shortcut's gradient.
pub fn shortcut_a_backward(gpu: &Gpu, dinp: &Tensor, dout: &Tensor) -> Result<Dispatch> {
    let params = ShortcutParams::new(&dinp.shape, &dout.shape)?;
    let (overrides, workgroups) = row_walk(gpu, (params.n * params.c * params.p) as usize, params.q as usize);
    gpu.dispatch(Kernel::ShortcutABackward, &overrides, &[dinp, dout], &params, workgroups)
}
