//! The adapter's own fp32 FMA rate and copy bandwidth, by microbenchmarks.

use super::Timer;
use super::percentile;
use super::report::Peak;
use crate::gpu::timing::{Timestamps, submit};

use std::time::Instant;

use anyhow::{Context, Result, ensure};

use crate::gpu::{self, Gpu, Tensor};

/// The FMA-bound kernel behind `peak.fp32_gflops`. It is not one of the network's kernels, so it
/// stays out of the kernel table (and its trusted, unchecked shader modules); `tests/bench.rs`
/// validates it with naga.
pub const PEAK_FMA_WGSL: &str = include_str!("../../shaders/bench/peak_fma.wgsl");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct PeakParams {
    loops: u32,
    b: f32,
    c: f32,
    _unused: u32,
}

/// b and c of the chains: they converge to c / (1 - b) = 1, far from denormals and infinities.
const PEAK_B: f32 = 0.999;
const PEAK_C: f32 = 0.001;
/// 128 FMAs per iteration of each invocation's loop.
const PEAK_FLOP_PER_LOOP: f64 = 256.0;
/// 4M invocations: many waves even on the largest GPUs.
const PEAK_WORKGROUPS: u32 = 16384;

/// What `PEAK_FMA_WGSL` writes for invocation `i`.
pub fn peak_fma_reference(i: u32, loops: u32) -> f32 {
    let x = (i & 255) as f32 * 0.001;
    let mut chains: Vec<f32> = (0..8).map(|j| x + 0.1 * j as f32).collect();
    for a in &mut chains {
        for _ in 0..16 * loops {
            *a = a.mul_add(PEAK_B, PEAK_C);
        }
    }
    chains.iter().sum()
}

pub fn measure_peak(gpu: &Gpu, timer: Timer) -> Result<Peak> {
    Ok(Peak { fp32_gflops: peak_fma(gpu, timer)?, bandwidth_gbs: copy_bandwidth(gpu)? })
}

/// GFLOP/s of `PEAK_FMA_WGSL`, with the loop count doubled until one dispatch takes 10 ms, then
/// the median of 5 runs.
pub fn peak_fma(gpu: &Gpu, timer: Timer) -> Result<f64> {
    let device = &gpu.device;
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("peak_fma"),
        source: wgpu::ShaderSource::Wgsl(PEAK_FMA_WGSL.into()),
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some("peak_fma"),
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    });
    let invocations = PEAK_WORKGROUPS as usize * 256;
    let out = gpu.zeros("peak_fma out", &[invocations])?;
    let params = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("peak_fma params"),
        size: std::mem::size_of::<PeakParams>() as u64,
        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("peak_fma"),
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[
            wgpu::BindGroupEntry { binding: 0, resource: wgpu::BindingResource::Buffer(out.binding()) },
            wgpu::BindGroupEntry { binding: 1, resource: params.as_entire_binding() },
        ],
    });
    let stamps = (timer == Timer::Timestamps).then(|| Timestamps::new(gpu, 1));
    let run = |loops: u32| -> Result<f64> {
        let p = PeakParams { loops, b: PEAK_B, c: PEAK_C, _unused: 0 };
        gpu.queue.write_buffer(&params, 0, bytemuck::bytes_of(&p));
        let ms = submit(gpu, 1, stamps.as_ref(), |_, pass| {
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            pass.dispatch_workgroups(PEAK_WORKGROUPS, 1, 1);
        })?;
        Ok(ms.ms[0])
    };
    let mut loops = 1;
    let mut ms = run(loops)?;
    while ms < 10.0 && loops < 1 << 22 {
        loops *= 2;
        ms = run(loops)?;
    }
    let ms = percentile(&(0..5).map(|_| run(loops)).collect::<Result<Vec<_>>>()?, 0.5);
    check_peak_output(gpu, &out, loops)?;
    Ok(invocations as f64 * loops as f64 * PEAK_FLOP_PER_LOOP / ms / 1e6)
}

fn check_peak_output(gpu: &Gpu, out: &Tensor, loops: u32) -> Result<()> {
    let values: Vec<f32> = gpu.read(out)?;
    for i in [0, 1, 255, 256, values.len() as u32 - 1] {
        let (got, want) = (values[i as usize], peak_fma_reference(i, loops));
        ensure!(
            (got - want).abs() <= 1e-3 * want.abs(),
            "the FMA microbenchmark wrote {got} for invocation {i}, expected {want}: its peak would be wrong"
        );
    }
    Ok(())
}

/// GB/s (bytes read + bytes written) of buffer-to-buffer copies of 256 MiB (64 MiB on software
/// adapters), repeated in one submission until it takes 20 ms; wall clock, median of 3.
fn copy_bandwidth(gpu: &Gpu) -> Result<f64> {
    let mib = if gpu::is_software(&gpu.info) { 64 } else { 256 };
    let size = ((mib as u64) << 20).min(gpu.limits.max_buffer_size) / 4 * 4;
    let buffer = |label| {
        gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    };
    let (src, dst) = (buffer("bandwidth source"), buffer("bandwidth destination"));
    let run = |copies: usize| -> Result<f64> {
        let mut encoder = gpu.device.create_command_encoder(&Default::default());
        for _ in 0..copies {
            encoder.copy_buffer_to_buffer(&src, 0, &dst, 0, size);
        }
        let start = Instant::now();
        gpu.queue.submit([encoder.finish()]);
        gpu.device.poll(wgpu::PollType::wait_indefinitely()).context("waiting for the GPU")?;
        Ok(start.elapsed().as_secs_f64() * 1e3)
    };
    run(1)?;
    let once = run(1)?;
    let copies = ((20.0 / once).ceil() as usize).clamp(1, 1000);
    let ms = percentile(&(0..3).map(|_| run(copies)).collect::<Result<Vec<_>>>()?, 0.5);
    Ok(2.0 * size as f64 * copies as f64 / ms / 1e6)
}
