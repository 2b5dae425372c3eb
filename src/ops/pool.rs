//! Max pool (the ImageNet stem's) and global average pool.

use anyhow::{Result, bail, ensure};
use bytemuck::{Pod, Zeroable};

use super::{WG, check, row_walk};
use crate::gpu::{Gpu, Tensor};
use crate::kernels::{Dispatch, Kernel, grid};

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
    let (overrides, workgroups) = row_walk(gpu, (params.n * params.c * params.p) as usize, params.q as usize);
    gpu.dispatch(Kernel::MaxpoolForward, &overrides, &[out, indices, inp], &params, workgroups)
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
    let (overrides, workgroups) = row_walk(gpu, (params.n * params.c * params.h) as usize, params.w as usize);
    gpu.dispatch(Kernel::MaxpoolBackward, &overrides, &[dinp, dout, indices], &params, workgroups)
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
