//! The `resnet-wgpu` command line.

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use resnet_wgpu::gpu::{self, AdapterChoice};

#[derive(Parser)]
#[command(
    name = "resnet-wgpu",
    version,
    about = "Deep residual networks on any GPU through wgpu and WGSL"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Which adapter to run on.
#[derive(Args, Clone)]
struct AdapterArgs {
    /// vulkan, metal, dx12 or gl (default: $WGPU_BACKEND, else all)
    #[arg(long)]
    backend: Option<String>,
    /// Adapter index (as `adapters` lists them) or a substring of its name (default: $WGPU_ADAPTER_NAME,
    /// else the first discrete GPU)
    #[arg(long)]
    adapter: Option<String>,
}

impl AdapterArgs {
    fn choice(&self) -> AdapterChoice {
        AdapterChoice {
            backend: self.backend.clone(),
            adapter: self.adapter.clone(),
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// List every adapter wgpu finds, and which one the other commands would pick
    Adapters {
        #[command(flatten)]
        adapter: AdapterArgs,
    },
}

fn main() {
    if let Err(error) = run(Cli::parse()) {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Adapters { adapter } => {
            let choice = adapter.choice();
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
            let chosen = choice.select()?.get_info();
            println!("selected: {}", gpu::describe(&chosen));
            Ok(())
        }
    }
}
