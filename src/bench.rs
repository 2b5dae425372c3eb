//! `bench` and `adapters`: cross-vendor GPU benchmarking.

use anyhow::{Result, bail};

use crate::gpu::{self, AdapterChoice};

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub adapter: AdapterChoice,
}

pub fn run(_args: &BenchArgs) -> Result<()> {
    bail!("bench is not written yet")
}

#[derive(clap::Args, Debug)]
pub struct AdaptersArgs {
    #[command(flatten)]
    pub adapter: AdapterChoice,
}

/// Lists every adapter wgpu finds and the one the other commands would pick.
pub fn adapters(args: &AdaptersArgs) -> Result<()> {
    let choice = &args.adapter;
    let backends = match &choice.backend {
        Some(name) => gpu::backends_from_name(name)?,
        None => wgpu::Backends::all(),
    };
    for (i, a) in gpu::enumerate_adapters(backends).iter().enumerate() {
        let info = a.get_info();
        let limits = a.limits();
        println!("{i}: {}", gpu::describe(&info));
        println!(
            "   {:?}, timestamps {}, storage binding {} MiB, {} storage buffers per stage, {} B workgroup memory",
            info.device_type,
            a.features().contains(wgpu::Features::TIMESTAMP_QUERY),
            limits.max_storage_buffer_binding_size / (1 << 20),
            limits.max_storage_buffers_per_shader_stage,
            limits.max_compute_workgroup_storage_size,
        );
    }
    println!("selected: {}", gpu::describe(&choice.select()?.get_info()));
    Ok(())
}
