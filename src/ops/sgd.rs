//! SGD with momentum and weight decay (PyTorch's semantics), one dispatch over a whole arena.

use anyhow::{Result, ensure};
use bytemuck::{Pod, Zeroable};

use super::{WG, check};
use crate::gpu::{Gpu, Tensor};
use crate::kernels::{Dispatch, Kernel, grid};

/// The optimizer's settings: PyTorch's `SGD(lr, momentum, weight_decay)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sgd {
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
}

/// The uniform of the `sgd` kernel: the settings and the number of values it updates.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct SgdParams {
    pub len: u32,
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
}

impl SgdParams {
    pub fn new(len: usize, sgd: Sgd) -> Self {
        Self { len: len as u32, lr: sgd.lr, momentum: sgd.momentum, weight_decay: sgd.weight_decay }
    }
}

/// One SGD step over every element of `weight` (typically the whole parameter arena). Rewrite the
/// learning rate of the prepared dispatch with `Gpu::update_params` and `SgdParams::new`.
pub fn sgd(gpu: &Gpu, weight: &Tensor, velocity: &Tensor, grad: &Tensor, settings: Sgd) -> Result<Dispatch> {
    check("velocity", velocity, &weight.shape)?;
    check("gradient", grad, &weight.shape)?;
    ensure!(weight.len().is_multiple_of(4), "sgd takes parameters in fours, got {}", weight.len());
    let params = SgdParams::new(weight.len(), settings);
    gpu.dispatch(Kernel::Sgd, &[], &[weight, velocity, grad], &params, grid(weight.len().div_ceil(4 * WG)))
}
