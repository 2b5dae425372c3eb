//! One file per op family: each function checks its tensors' shapes at plan time and prepares
//! the dispatch of a kernel.
//!
//! Arguments follow the kernel's bindings (outputs first, then inputs); the `*Params` structs
//! mirror each shader's uniform and are also what the CPU twins in `reference` take.

pub mod batchnorm;
pub mod conv;
pub mod elementwise;
pub mod linear;
pub mod pool;
pub mod sgd;

use anyhow::{Result, ensure};

use crate::gpu::{Gpu, Tensor};
use crate::kernels::{Kernel, grid};

/// Invocations per workgroup of the one-invocation-per-element kernels (their `WG` override).
const WG: usize = 256;

/// The value of a bool `override` constant.
fn flag(on: bool) -> f64 {
    if on { 1.0 } else { 0.0 }
}

/// How a kernel that walks `rows` rows of `columns` values splits them (`Gpu::per_element`): its
/// `PER_ELEMENT` override and its workgroups, one invocation per value or per row.
fn row_walk(gpu: &Gpu, rows: usize, columns: usize) -> ([(&'static str, f64); 1], [u32; 3]) {
    let invocations = if gpu.per_element { rows * columns } else { rows };
    ([("PER_ELEMENT", flag(gpu.per_element))], grid(invocations.div_ceil(WG)))
}

fn check(name: &str, tensor: &Tensor, shape: &[usize]) -> Result<()> {
    ensure!(tensor.shape == shape, "{name} has shape {:?}, expected {shape:?}", tensor.shape);
    Ok(())
}

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
