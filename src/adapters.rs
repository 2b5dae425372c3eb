//! `adapters`: every adapter wgpu sees, with what matters here, and the one the other commands would pick.

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::gpu::{self, AdapterChoice};
use crate::gpu::{device_type_name, vendor_name};

#[derive(clap::Args, Debug)]
pub struct AdaptersArgs {
    #[command(flatten)]
    pub adapter: AdapterChoice,
    /// Print one JSON document instead of text: {"tool_version", "adapters": [...], "selected"}
    #[arg(long)]
    pub json: bool,
}

/// What `adapters --json` says about one adapter.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AdapterEntry {
    pub index: usize,
    pub name: String,
    pub vendor: String,
    pub vendor_id: u32,
    pub device_id: u32,
    pub device_type: String,
    pub backend: String,
    pub driver: String,
    pub driver_info: String,
    pub software: bool,
    pub timestamp_query: bool,
    pub timestamp_query_inside_passes: bool,
    pub shader_f16: bool,
    pub subgroups: bool,
    pub subgroup_min_size: u32,
    pub subgroup_max_size: u32,
    pub max_storage_buffer_binding_size: u64,
    pub max_buffer_size: u64,
    pub max_storage_buffers_per_shader_stage: u32,
    pub max_compute_workgroup_storage_size: u32,
    pub max_compute_invocations_per_workgroup: u32,
    pub max_compute_workgroup_size: [u32; 3],
    pub max_compute_workgroups_per_dimension: u32,
}

impl AdapterEntry {
    pub fn new(index: usize, adapter: &wgpu::Adapter) -> Self {
        let (info, features, limits) = (adapter.get_info(), adapter.features(), adapter.limits());
        Self {
            index,
            name: info.name.clone(),
            vendor: vendor_name(info.vendor),
            vendor_id: info.vendor,
            device_id: info.device,
            device_type: device_type_name(info.device_type).into(),
            backend: info.backend.to_str().into(),
            driver: info.driver.clone(),
            driver_info: info.driver_info.clone(),
            software: gpu::is_software(&info),
            timestamp_query: features.contains(wgpu::Features::TIMESTAMP_QUERY),
            timestamp_query_inside_passes: features.contains(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES),
            shader_f16: features.contains(wgpu::Features::SHADER_F16),
            subgroups: features.contains(wgpu::Features::SUBGROUP),
            subgroup_min_size: info.subgroup_min_size,
            subgroup_max_size: info.subgroup_max_size,
            max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
            max_buffer_size: limits.max_buffer_size,
            max_storage_buffers_per_shader_stage: limits.max_storage_buffers_per_shader_stage,
            max_compute_workgroup_storage_size: limits.max_compute_workgroup_storage_size,
            max_compute_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
            max_compute_workgroup_size: [
                limits.max_compute_workgroup_size_x,
                limits.max_compute_workgroup_size_y,
                limits.max_compute_workgroup_size_z,
            ],
            max_compute_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
        }
    }
}

/// Lists every adapter wgpu finds on every backend (or on --backend) with what matters here, and
/// the one the other commands would pick.
pub fn adapters(args: &AdaptersArgs) -> Result<()> {
    let choice = &args.adapter;
    let found = choice.adapters()?;
    let entries: Vec<AdapterEntry> = found.iter().enumerate().map(|(i, a)| AdapterEntry::new(i, a)).collect();
    let selected = choice.select()?.get_info();
    let selected_index = found.iter().position(|a| a.get_info() == selected);
    if args.json {
        #[derive(Serialize)]
        struct Listing<'a> {
            tool_version: &'a str,
            adapters: &'a [AdapterEntry],
            selected: Option<usize>,
        }
        let listing = Listing { tool_version: env!("CARGO_PKG_VERSION"), adapters: &entries, selected: selected_index };
        println!("{}", serde_json::to_string_pretty(&listing)?);
        return Ok(());
    }
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    for (a, e) in found.iter().zip(&entries) {
        println!("{}: {}", e.index, gpu::describe(&a.get_info()));
        println!("   {}, vendor {} (0x{:04x}), device 0x{:04x}", e.device_type, e.vendor, e.vendor_id, e.device_id);
        println!(
            "   timestamp queries {}, shader f16 {}, subgroups {} (size {}-{})",
            yes_no(e.timestamp_query),
            yes_no(e.shader_f16),
            yes_no(e.subgroups),
            e.subgroup_min_size,
            e.subgroup_max_size
        );
        println!(
            "   storage binding {} MiB, buffer {} MiB, {} storage buffers per stage, {} B workgroup memory, \
             {} invocations per workgroup (size {:?}), {} workgroups per dimension",
            e.max_storage_buffer_binding_size >> 20,
            e.max_buffer_size >> 20,
            e.max_storage_buffers_per_shader_stage,
            e.max_compute_workgroup_storage_size,
            e.max_compute_invocations_per_workgroup,
            e.max_compute_workgroup_size,
            e.max_compute_workgroups_per_dimension
        );
    }
    match selected_index {
        Some(i) => println!("selected: {i}: {}", gpu::describe(&selected)),
        None => println!("selected: {}", gpu::describe(&selected)),
    }
    Ok(())
}
