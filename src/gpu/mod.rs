//! Adapter and device selection and limits (here), tensors in GPU buffers (`tensor`), timed
//! submissions (`timing`) and the per-adapter tuning cache (`tune`).
//!
//! A `Gpu` owns one wgpu device and its queue. Everything the network keeps on the GPU is a
//! `Tensor`: a 256-byte aligned range of a storage buffer with a shape. Several tensors may share
//! one buffer (an arena), so that e.g. all parameters are one allocation the optimizer walks in a
//! single dispatch. This layer knows nothing of kernels or ops.

mod tensor;
pub mod timing;
pub mod tune;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, anyhow, bail};

pub use tensor::{ALIGN, Tensor};
pub use tune::{TuneCache, Tuning};

/// A compiled kernel: its pipeline, its bind group layout and the type of each binding.
pub struct Pipeline {
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
    pub bindings: Vec<wgpu::BufferBindingType>,
}

/// Pipelines by kernel name and the bits of its `override` constants' values.
pub type Pipelines = Mutex<HashMap<(&'static str, Vec<(String, u64)>), Arc<Pipeline>>>;

/// How the user picks an adapter: `--backend` and `--adapter`, or wgpu's `WGPU_BACKEND` and
/// `WGPU_ADAPTER_NAME` when the flags are absent.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct AdapterChoice {
    /// vulkan, metal, dx12 or gl (default: $WGPU_BACKEND, else all)
    #[arg(long)]
    pub backend: Option<String>,
    /// Adapter index (as `adapters` lists them) or a substring of its name (default:
    /// $WGPU_ADAPTER_NAME, else the first discrete GPU)
    #[arg(long)]
    pub adapter: Option<String>,
}

pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
    /// Shared by every `Gpu` of this device (`with_tuning` and the like): pipelines are keyed by
    /// kernel and overrides, whatever the settings that chose them.
    pub(crate) pipelines: Arc<Pipelines>,
    /// A tensor of 4 values (one `vec4`) bound where a kernel's optional input is switched off by an
    /// override.
    pub(crate) placeholder: Tensor,
    /// How ops with several variants choose one: timed on GPUs, the ops' defaults on CPU
    /// adapters (`RESNET_WGPU_AUTOTUNE=on|off` overrides).
    pub tuning: Tuning,
    /// Invocations per workgroup of the batch norm kernels that reduce a channel (or a chunk of
    /// one, `bn_chunk`) a workgroup: 8 on CPU adapters, where such a workgroup is one SIMD thread
    /// and a wider one pays for every barrier of its tree reductions (BENCHMARKS.md); 256 on GPUs.
    pub bn_workgroup: u32,
    /// Values of a channel that one workgroup of batch norm's two-level training kernels reduces
    /// (one chunk; a plane's rows need not end at its edges), or `None`: one workgroup per channel.
    /// 4096 on GPUs, where a channel per workgroup leaves most of the chip idle at 16-64 channels
    /// and ResNet-50 at batch 64 has thousands of chunks; `None` on CPU adapters, which run a
    /// channel per workgroup faster (no second pass over the data).
    pub bn_chunk: Option<u32>,
    /// Whether the kernels that walk rows (max pool, option-A shortcut) take one element an
    /// invocation rather than a row: true on GPUs, where neighbouring invocations then touch
    /// neighbouring addresses (a row apart otherwise: uncoalesced); false on CPU adapters, which
    /// run integer divisions one lane at a time and pay fewer of them a row (BENCHMARKS.md).
    pub per_element: bool,
    /// Loop iterations one invocation may run before the driver silently cuts its loops short:
    /// Mesa's llvmpipe (lavapipe, and llvmpipe through GL) stops every loop once an invocation
    /// has run 65535 iterations, summed over all its loops, nested or one after the other
    /// (measured with a counting kernel, BENCHMARKS.md). Kernels whose loops grow with the batch
    /// split their work to stay well inside it. `None`: no such limit.
    pub loop_limit: Option<u64>,
    /// Bytes of every storage buffer created so far (never decremented when one is dropped):
    /// the difference across building a plan is the GPU memory that plan holds.
    allocated: Arc<AtomicU64>,
}

/// `vulkan`, `metal`, `dx12`, `gl`, or a comma-separated list of them.
fn backends_from_name(name: &str) -> Result<wgpu::Backends> {
    let mut backends = wgpu::Backends::empty();
    for part in name.split(',').map(|s| s.trim().to_lowercase()) {
        backends |= match part.as_str() {
            "vulkan" | "vk" => wgpu::Backends::VULKAN,
            "metal" | "mtl" => wgpu::Backends::METAL,
            "dx12" | "d3d12" => wgpu::Backends::DX12,
            "gl" | "gles" | "opengl" => wgpu::Backends::GL,
            other => bail!("unknown backend {other:?}: expected vulkan, metal, dx12 or gl"),
        };
    }
    Ok(backends)
}

/// Every adapter wgpu finds on `backends`, in wgpu's order.
fn enumerate_adapters(backends: wgpu::Backends) -> Vec<wgpu::Adapter> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends,
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    pollster::block_on(instance.enumerate_adapters(backends))
}

/// Whether an adapter computes on the CPU (lavapipe, llvmpipe, WARP, SwiftShader).
pub fn is_software(info: &wgpu::AdapterInfo) -> bool {
    info.device_type == wgpu::DeviceType::Cpu
        || ["llvmpipe", "lavapipe", "swiftshader", "warp", "softpipe"]
            .iter()
            .any(|s| info.name.to_lowercase().contains(s) || info.driver.to_lowercase().contains(s))
}

/// One line naming the adapter, e.g. `llvmpipe (LLVM 15.0.6, 256 bits) on Vulkan, driver llvmpipe
/// (Mesa 22.3.6) [software adapter: computes on the CPU]`.
pub fn describe(info: &wgpu::AdapterInfo) -> String {
    let mut line = format!("{} on {:?}", info.name, info.backend);
    if !info.driver.is_empty() {
        line += &format!(", driver {} ({})", info.driver, info.driver_info);
    }
    if is_software(info) {
        line += " [software adapter: computes on the CPU, expect low speed]";
    }
    line
}

/// The adapter as every JSON output names it (`bench --json`, `infer --json`, `adapters --json`).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct AdapterJson {
    pub name: String,
    pub vendor: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub software: bool,
}

impl AdapterJson {
    pub fn new(info: &wgpu::AdapterInfo) -> Self {
        let driver = match (info.driver.as_str(), info.driver_info.as_str()) {
            ("", info) => info.to_string(),
            (driver, "") => driver.to_string(),
            (driver, info) => format!("{driver} ({info})"),
        };
        Self {
            name: info.name.clone(),
            vendor: vendor_name(info.vendor),
            backend: info.backend.to_str().into(),
            device_type: device_type_name(info.device_type).into(),
            driver,
            software: is_software(info),
        }
    }
}

/// The vendor of a PCI vendor id (wgpu's `AdapterInfo::vendor`), e.g. `NVIDIA`.
pub fn vendor_name(id: u32) -> String {
    let known = [
        (0x1002, "AMD"),
        (0x1010, "Imagination"),
        (0x10de, "NVIDIA"),
        (0x106b, "Apple"),
        (0x13b5, "ARM"),
        (0x1414, "Microsoft"),
        (0x1ae0, "Google"),
        (0x5143, "Qualcomm"),
        (0x8086, "Intel"),
        (0x10005, "Mesa"),
    ];
    match known.iter().find(|(k, _)| *k == id) {
        Some((_, name)) => name.to_string(),
        None if id == 0 => "unknown".into(),
        None => format!("0x{id:04x}"),
    }
}

/// `discrete_gpu`, `integrated_gpu`, `virtual_gpu`, `cpu` or `other`.
pub fn device_type_name(t: wgpu::DeviceType) -> &'static str {
    match t {
        wgpu::DeviceType::DiscreteGpu => "discrete_gpu",
        wgpu::DeviceType::IntegratedGpu => "integrated_gpu",
        wgpu::DeviceType::VirtualGpu => "virtual_gpu",
        wgpu::DeviceType::Cpu => "cpu",
        wgpu::DeviceType::Other => "other",
    }
}

const NO_ADAPTER_HELP: &str = "install a GPU driver, or on Linux a software one with \
     `apt-get install mesa-vulkan-drivers` (lavapipe, Vulkan) and `libegl1 libgl1-mesa-dri` (llvmpipe, GL)";

impl AdapterChoice {
    pub fn backend(name: &str) -> Self {
        Self { backend: Some(name.into()), adapter: None }
    }

    /// The backend named by `--backend`, else by `$WGPU_BACKEND`, if any.
    pub fn backend_name(&self) -> Option<String> {
        self.backend.clone().or_else(|| std::env::var("WGPU_BACKEND").ok().filter(|b| !b.is_empty()))
    }

    /// Every adapter on the chosen backends (all of them if none is named), in wgpu's order; an
    /// error if there is none.
    pub fn adapters(&self) -> Result<Vec<wgpu::Adapter>> {
        let backend = self.backend_name();
        let backends = backend.as_deref().map(backends_from_name).transpose()?.unwrap_or(wgpu::Backends::all());
        let adapters = enumerate_adapters(backends);
        if adapters.is_empty() {
            let on = backend.map(|b| format!(" on backend {b}")).unwrap_or_default();
            bail!("no GPU adapter found{on}: {NO_ADAPTER_HELP}");
        }
        Ok(adapters)
    }

    /// The adapter this choice names, or an error listing what exists.
    pub fn select(&self) -> Result<wgpu::Adapter> {
        let mut adapters = self.adapters()?;
        let wanted = self.adapter.clone().or_else(|| std::env::var("WGPU_ADAPTER_NAME").ok());
        let Some(wanted) = wanted else {
            // wgpu lists Vulkan/Metal/DX12 before GL; prefer discrete, then integrated GPUs.
            let rank = |a: &wgpu::Adapter| match a.get_info().device_type {
                wgpu::DeviceType::DiscreteGpu => 0,
                wgpu::DeviceType::IntegratedGpu => 1,
                wgpu::DeviceType::VirtualGpu => 2,
                wgpu::DeviceType::Other => 3,
                wgpu::DeviceType::Cpu => 4,
            };
            adapters.sort_by_key(rank);
            return Ok(adapters.remove(0));
        };
        let names: Vec<String> = adapters
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{i}: {} ({:?})", a.get_info().name, a.get_info().backend))
            .collect();
        let found = match wanted.parse::<usize>() {
            Ok(index) => (index < adapters.len()).then_some(index),
            Err(_) => adapters.iter().position(|a| a.get_info().name.to_lowercase().contains(&wanted.to_lowercase())),
        };
        let index = found.ok_or_else(|| anyhow!("no adapter matches {wanted:?}; available: {}", names.join("; ")))?;
        Ok(adapters.swap_remove(index))
    }
}

impl Gpu {
    /// Opens the chosen adapter, asking for the limits this project uses (as much storage per
    /// binding and per buffer as the adapter offers, 9 storage buffers per stage, 16 KiB of
    /// workgroup memory), never more than it offers.
    pub fn new(choice: &AdapterChoice) -> Result<Self> {
        let adapter = choice.select()?;
        Self::from_adapter(adapter)
    }

    pub fn from_adapter(adapter: wgpu::Adapter) -> Result<Self> {
        let info = adapter.get_info();
        let offered = adapter.limits();
        let needed = wgpu::Limits::downlevel_defaults();
        for (what, need, have) in [
            ("max_storage_buffers_per_shader_stage", 9, offered.max_storage_buffers_per_shader_stage),
            ("max_compute_workgroup_storage_size", 8192, offered.max_compute_workgroup_storage_size),
            ("max_compute_invocations_per_workgroup", 256, offered.max_compute_invocations_per_workgroup),
        ] {
            if have < need {
                bail!("adapter {} offers {what} = {have}, resnet-wgpu needs {need}", info.name);
            }
        }
        let limits = wgpu::Limits {
            max_storage_buffer_binding_size: offered.max_storage_buffer_binding_size,
            max_buffer_size: offered.max_buffer_size,
            max_storage_buffers_per_shader_stage: 9,
            max_compute_workgroup_storage_size: offered.max_compute_workgroup_storage_size.min(32768),
            max_compute_invocations_per_workgroup: 256,
            max_compute_workgroup_size_x: 256,
            max_compute_workgroup_size_y: 256,
            max_compute_workgroups_per_dimension: 65535,
            ..needed
        };
        // Timestamps are used by the benchmarks when the adapter has them, subgroups by the lanes
        // conv kernels.
        let features = adapter.features() & (wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::SUBGROUP);
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("resnet-wgpu"),
            required_features: features,
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .with_context(|| format!("could not open a device on adapter {}", info.name))?;
        let placeholder = Tensor {
            buffer: Arc::new(device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("placeholder"),
                size: 16,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            })),
            offset: 0,
            shape: vec![4],
        };
        let bn_workgroup = if is_software(&info) { 8 } else { 256 };
        let bn_chunk = (!is_software(&info)).then_some(4096);
        let per_element = !is_software(&info);
        let llvmpipe = [&info.name, &info.driver].iter().any(|s| s.to_lowercase().contains("llvmpipe"));
        let loop_limit = llvmpipe.then_some(65535);
        // On CPU adapters the ops' defaults won every ResNet layer shape measured (BENCHMARKS.md),
        // and timing the others there takes minutes: no autotune unless asked for.
        let timed = match std::env::var("RESNET_WGPU_AUTOTUNE").as_deref() {
            Ok("1" | "on") => true,
            Ok("0" | "off") => false,
            Ok(other) if !other.is_empty() => bail!("RESNET_WGPU_AUTOTUNE={other}: expected on or off"),
            _ => !is_software(&info),
        };
        let tuning = match timed {
            true => Tuning::Timed(Arc::new(TuneCache::load(&info, TuneCache::file_for(&info)))),
            false => Tuning::Defaults,
        };
        Ok(Self {
            device,
            queue,
            info,
            limits,
            features,
            pipelines: Arc::default(),
            placeholder,
            tuning,
            bn_workgroup,
            bn_chunk,
            per_element,
            loop_limit,
            allocated: Arc::default(),
        })
    }

    /// The same device with another way of choosing variants.
    pub fn with_tuning(&self, tuning: Tuning) -> Self {
        Self { tuning, ..self.sibling() }
    }

    /// The same device with the autotune on, its choices kept in `file` (tests; the CLI's is
    /// `TuneCache::file_for`).
    pub fn with_tune_cache(&self, file: std::path::PathBuf) -> Self {
        self.with_tuning(Tuning::Timed(Arc::new(TuneCache::load(&self.info, file))))
    }

    /// The same device with `tuning` and a memory count of its own: what a tuner times
    /// allocates outside the plan being built.
    pub fn detached(&self, tuning: Tuning) -> Self {
        Self { allocated: Arc::default(), ..self.with_tuning(tuning) }
    }

    /// The same device with batch norm workgroups of another size (tests check both sizes on
    /// every adapter).
    pub fn with_bn_workgroup(&self, bn_workgroup: u32) -> Self {
        Self { bn_workgroup, ..self.sibling() }
    }

    /// The same device with batch norm's training reduced in chunks of `bn_chunk` values, or
    /// with `None` a channel per workgroup (tests check both on every adapter).
    pub fn with_bn_chunk(&self, bn_chunk: Option<u32>) -> Self {
        assert!(bn_chunk != Some(0), "a batch norm chunk holds at least one value");
        Self { bn_chunk, ..self.sibling() }
    }

    /// The same device with the row-walking kernels taking one element an invocation, or a row
    /// (tests check both on every adapter).
    pub fn with_per_element(&self, per_element: bool) -> Self {
        Self { per_element, ..self.sibling() }
    }

    /// The same device and settings.
    fn sibling(&self) -> Self {
        Self {
            device: self.device.clone(),
            queue: self.queue.clone(),
            info: self.info.clone(),
            limits: self.limits.clone(),
            features: self.features,
            pipelines: self.pipelines.clone(),
            placeholder: self.placeholder.clone(),
            tuning: self.tuning.clone(),
            bn_workgroup: self.bn_workgroup,
            bn_chunk: self.bn_chunk,
            per_element: self.per_element,
            loop_limit: self.loop_limit,
            allocated: self.allocated.clone(),
        }
    }

    pub fn describe(&self) -> String {
        describe(&self.info)
    }

    /// Opens the chosen adapter and says on stderr which it is.
    pub fn open(choice: &AdapterChoice) -> Result<Self> {
        let gpu = Self::new(choice)?;
        eprintln!("adapter: {}", gpu.describe());
        Ok(gpu)
    }

    /// Bytes of all storage buffers created on this device so far (tensors, arenas, uploads).
    pub fn allocated_bytes(&self) -> u64 {
        self.allocated.load(Ordering::Relaxed)
    }

    /// The most bytes one storage buffer may hold and be bound whole on this adapter.
    pub fn buffer_limit(&self) -> u64 {
        self.limits.max_storage_buffer_binding_size.min(self.limits.max_buffer_size)
    }

    /// Checks at plan time that a buffer of `bytes` fits this device; the error names the buffer.
    pub fn check_fits(&self, name: &str, bytes: u64) -> Result<()> {
        let (binding, buffer) = (self.limits.max_storage_buffer_binding_size, self.limits.max_buffer_size);
        let limit = self.buffer_limit();
        if bytes > limit {
            bail!(
                "{name} needs {bytes} bytes in one storage buffer, but adapter {} allows at most {limit} \
                 (max_storage_buffer_binding_size {binding}, max_buffer_size {buffer}); use a smaller batch",
                self.info.name
            );
        }
        Ok(())
    }
}
