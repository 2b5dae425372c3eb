//! Adapter and device selection, limits, tensors in GPU buffers, readback.
//!
//! A `Gpu` owns one wgpu device and its queue. Everything the network keeps on the GPU is a
//! `Tensor`: a 256-byte aligned range of a storage buffer with a shape. Several tensors may share
//! one buffer (an arena), so that e.g. all parameters are one allocation the optimizer walks in a
//! single dispatch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, anyhow, bail};
use wgpu::util::DeviceExt;

use crate::autotune::{Autotune, ConvPass};
use crate::kernels::PipelineCache;
use crate::layers::ConvParams;

/// Storage-buffer offsets must be multiples of the adapter's alignment (at most 256 bytes in
/// WebGPU), so every tensor of an arena starts on a 256-byte boundary.
pub const ALIGN: u64 = 256;

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
    /// Shared by every `Gpu` of this device (`with_conv_path` and the like): pipelines are keyed by
    /// kernel and overrides, whatever the settings that chose them.
    pub(crate) pipelines: Arc<Mutex<PipelineCache>>,
    /// A tensor of 4 values (one `vec4`) bound where a kernel's optional input is switched off by an
    /// override.
    pub(crate) placeholder: Tensor,
    /// Which conv kernels run (see `ConvPath`) where the autotune has no say;
    /// `RESNET_WGPU_CONV=shared|direct|lanes` overrides the adapter's default and turns the autotune off.
    pub conv_path: ConvPath,
    /// Which conv path runs each pass of each layer shape, by measurement (`autotune`); `None`:
    /// every conv runs on `conv_path`.
    pub(crate) autotune: Option<Arc<Autotune>>,
    /// Invocations per workgroup of the batch norm kernels that take one channel a workgroup: 8
    /// on CPU adapters, where such a workgroup is one SIMD thread and a wider one pays for every
    /// barrier of its tree reductions (on lavapipe ResNet-50's [4,2048,7,7] forward took 29.8 ms
    /// at 256, 2.5 at 8; [8,64,56,56] 4.0 and 2.5); 256 on GPUs.
    pub bn_workgroup: u32,
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

/// The conv kernels come in three variants that compute the same thing in different ways; which
/// is fastest depends on the adapter (BENCHMARKS.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvPath {
    /// Operand tiles staged in workgroup memory between barriers: the GPU default.
    Shared,
    /// Every invocation loads its operands from storage, no barriers: CPU adapters without
    /// subgroups (llvmpipe through GL), where a barrier costs more than the loads it saves.
    Direct,
    /// The `_lanes` kernels: like `Direct`, but the lanes of a subgroup share the loads of the
    /// operand they have in common. The default on CPU adapters with subgroups of 8 or more (lavapipe).
    Lanes,
}

impl ConvPath {
    pub fn name(self) -> &'static str {
        match self {
            ConvPath::Shared => "shared",
            ConvPath::Direct => "direct",
            ConvPath::Lanes => "lanes",
        }
    }
}

/// Whether the lanes conv kernels can run: they need subgroups of at least 8 invocations.
fn has_lanes(features: wgpu::Features, info: &wgpu::AdapterInfo) -> bool {
    features.contains(wgpu::Features::SUBGROUP) && info.subgroup_min_size >= 8
}

/// A view of `len` 4-byte elements (f32, or u32 for labels and indices) at `offset` bytes into a
/// storage buffer. `shape` is NCHW for activations and KCRS for conv weights.
#[derive(Clone, Debug)]
pub struct Tensor {
    pub buffer: Arc<wgpu::Buffer>,
    pub offset: u64,
    pub shape: Vec<usize>,
}

impl Tensor {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn bytes(&self) -> u64 {
        4 * self.len() as u64
    }

    /// The binding of this view; WebGPU forbids zero-sized bindings, so an empty tensor binds 4 bytes.
    pub fn binding(&self) -> wgpu::BufferBinding<'_> {
        wgpu::BufferBinding {
            buffer: &self.buffer,
            offset: self.offset,
            size: wgpu::BufferSize::new(self.bytes().max(4)),
        }
    }
}

/// `vulkan`, `metal`, `dx12`, `gl`, or a comma-separated list of them.
pub fn backends_from_name(name: &str) -> Result<wgpu::Backends> {
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
pub fn enumerate_adapters(backends: wgpu::Backends) -> Vec<wgpu::Adapter> {
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

const NO_ADAPTER_HELP: &str = "install a GPU driver, or on Linux a software one with \
     `apt-get install mesa-vulkan-drivers` (lavapipe, Vulkan) and `libegl1 libgl1-mesa-dri` (llvmpipe, GL)";

impl AdapterChoice {
    pub fn backend(name: &str) -> Self {
        Self { backend: Some(name.into()), adapter: None }
    }

    /// The adapter this choice names, or an error listing what exists.
    pub fn select(&self) -> Result<wgpu::Adapter> {
        let backend = self.backend.clone().or_else(|| std::env::var("WGPU_BACKEND").ok());
        let backends = match &backend {
            Some(name) => backends_from_name(name)?,
            None => wgpu::Backends::all(),
        };
        let mut adapters = enumerate_adapters(backends);
        if adapters.is_empty() {
            let on = backend.map(|b| format!(" on backend {b}")).unwrap_or_default();
            bail!("no GPU adapter found{on}: {NO_ADAPTER_HELP}");
        }
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
        let lanes = has_lanes(features, &info);
        let conv_path = match std::env::var("RESNET_WGPU_CONV").as_deref() {
            Ok("shared") => ConvPath::Shared,
            Ok("direct") => ConvPath::Direct,
            Ok("lanes") if lanes => ConvPath::Lanes,
            Ok(other) if !other.is_empty() => bail!(
                "RESNET_WGPU_CONV={other}: expected shared, direct{}",
                if lanes { " or lanes" } else { " (lanes needs subgroups of 8 or more, which this adapter lacks)" }
            ),
            _ if !is_software(&info) => ConvPath::Shared,
            _ if lanes => ConvPath::Lanes,
            _ => ConvPath::Direct,
        };
        let bn_workgroup = if is_software(&info) { 8 } else { 256 };
        let llvmpipe = [&info.name, &info.driver].iter().any(|s| s.to_lowercase().contains("llvmpipe"));
        let loop_limit = llvmpipe.then_some(65535);
        // On CPU adapters the lanes path was fastest on every ResNet layer shape (BENCHMARKS.md),
        // and timing the others there takes minutes: no autotune unless asked for.
        let autotune = match std::env::var("RESNET_WGPU_AUTOTUNE").as_deref() {
            _ if std::env::var("RESNET_WGPU_CONV").is_ok_and(|v| !v.is_empty()) => false,
            Ok("1" | "on") => true,
            Ok("0" | "off") => false,
            Ok(other) if !other.is_empty() => bail!("RESNET_WGPU_AUTOTUNE={other}: expected on or off"),
            _ => !is_software(&info),
        };
        let autotune = autotune.then(|| Arc::new(Autotune::load(&info, crate::autotune::cache_file(&info))));
        Ok(Self {
            device,
            queue,
            info,
            limits,
            features,
            pipelines: Arc::default(),
            placeholder,
            conv_path,
            autotune,
            bn_workgroup,
            loop_limit,
            allocated: Arc::default(),
        })
    }

    /// The conv paths this adapter can run, its default first.
    pub fn conv_paths(&self) -> Vec<ConvPath> {
        let mut paths = vec![self.conv_path];
        for path in [ConvPath::Shared, ConvPath::Direct, ConvPath::Lanes] {
            if !paths.contains(&path) && (path != ConvPath::Lanes || has_lanes(self.features, &self.info)) {
                paths.push(path);
            }
        }
        paths
    }

    /// The same device with every conv on another path and no autotune (tests and benchmarks
    /// compare the paths).
    pub fn with_conv_path(&self, conv_path: ConvPath) -> Self {
        Self { conv_path, autotune: None, ..self.sibling() }
    }

    /// The same device with the autotune on, its results kept in `file` (tests; the CLI's is
    /// `autotune::cache_file`).
    pub fn with_autotune(&self, file: std::path::PathBuf) -> Self {
        Self { autotune: Some(Arc::new(Autotune::load(&self.info, file))), ..self.sibling() }
    }

    /// The conv path that runs `pass` of the conv `params`: the autotune's choice, else `conv_path`.
    pub fn conv_path_for(&self, params: &ConvParams, pass: ConvPass) -> ConvPath {
        match &self.autotune {
            Some(autotune) => autotune.path(self, params, pass),
            None => self.conv_path,
        }
    }

    /// `autotune` where the conv paths are timed per layer shape, else the one path every conv runs on.
    pub fn conv_choice(&self) -> &'static str {
        if self.autotune.is_some() { "autotune" } else { self.conv_path.name() }
    }

    /// The same device on `conv_path`, with a memory count of its own: what the autotune times
    /// allocates outside the plan being built.
    pub(crate) fn timing_sibling(&self, conv_path: ConvPath) -> Self {
        Self { allocated: Arc::default(), ..self.with_conv_path(conv_path) }
    }

    /// The same device with batch norm workgroups of another size (tests check both sizes on
    /// every adapter).
    pub fn with_bn_workgroup(&self, bn_workgroup: u32) -> Self {
        Self { bn_workgroup, ..self.sibling() }
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
            conv_path: self.conv_path,
            autotune: self.autotune.clone(),
            bn_workgroup: self.bn_workgroup,
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

    /// Checks at plan time that a buffer of `bytes` fits this device; the error names the buffer.
    pub fn check_fits(&self, name: &str, bytes: u64) -> Result<()> {
        let binding = self.limits.max_storage_buffer_binding_size;
        let buffer = self.limits.max_buffer_size;
        let limit = binding.min(buffer);
        if bytes > limit {
            bail!(
                "{name} needs {bytes} bytes in one storage buffer, but adapter {} allows at most {limit} \
                 (max_storage_buffer_binding_size {binding}, max_buffer_size {buffer}); use a smaller batch",
                self.info.name
            );
        }
        Ok(())
    }

    fn storage_buffer(&self, name: &str, bytes: u64, contents: Option<&[u8]>) -> Result<Arc<wgpu::Buffer>> {
        self.check_fits(name, bytes)?;
        let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
        let bytes = bytes.max(4).next_multiple_of(4);
        self.allocated.fetch_add(bytes, Ordering::Relaxed);
        Ok(Arc::new(match contents {
            Some(data) => {
                let mut padded = data.to_vec();
                padded.resize(bytes as usize, 0);
                self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some(name),
                    contents: &padded,
                    usage,
                })
            }
            None => self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(name),
                size: bytes,
                usage,
                mapped_at_creation: false,
            }),
        }))
    }

    /// A new zero-filled tensor in a buffer of its own.
    pub fn zeros(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let bytes = 4 * shape.iter().product::<usize>() as u64;
        Ok(Tensor { buffer: self.storage_buffer(name, bytes, None)?, offset: 0, shape: shape.to_vec() })
    }

    /// A new tensor holding `data` (f32 or u32), in a buffer of its own.
    pub fn upload<T: bytemuck::Pod>(&self, name: &str, shape: &[usize], data: &[T]) -> Result<Tensor> {
        assert_eq!(std::mem::size_of::<T>(), 4, "tensors hold 4-byte elements");
        let len: usize = shape.iter().product();
        if data.len() != len {
            bail!("{name}: {} values given for shape {shape:?} ({len} expected)", data.len());
        }
        let bytes = bytemuck::cast_slice(data);
        Ok(Tensor {
            buffer: self.storage_buffer(name, bytes.len() as u64, Some(bytes))?,
            offset: 0,
            shape: shape.to_vec(),
        })
    }

    /// One buffer holding one tensor per shape, each starting on a 256-byte boundary.
    pub fn arena(&self, name: &str, shapes: &[Vec<usize>]) -> Result<(Arc<wgpu::Buffer>, Vec<Tensor>)> {
        let mut offset = 0;
        let mut offsets = Vec::with_capacity(shapes.len());
        for shape in shapes {
            offsets.push(offset);
            offset += (4 * shape.iter().product::<usize>() as u64).next_multiple_of(ALIGN);
        }
        let buffer = self.storage_buffer(name, offset, None)?;
        let views = shapes
            .iter()
            .zip(offsets)
            .map(|(shape, offset)| Tensor { buffer: buffer.clone(), offset, shape: shape.clone() })
            .collect();
        Ok((buffer, views))
    }

    /// Overwrites a tensor's contents from the CPU.
    pub fn write<T: bytemuck::Pod>(&self, tensor: &Tensor, data: &[T]) {
        assert_eq!(
            data.len(),
            tensor.len(),
            "write of {} values into a tensor of shape {:?}",
            data.len(),
            tensor.shape
        );
        self.queue.write_buffer(&tensor.buffer, tensor.offset, bytemuck::cast_slice(data));
    }

    /// Copies a tensor back to the CPU, waiting for all submitted work.
    pub fn read<T: bytemuck::Pod>(&self, tensor: &Tensor) -> Result<Vec<T>> {
        let bytes = tensor.bytes().max(4);
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = self.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(&tensor.buffer, tensor.offset, &staging, 0, bytes);
        self.queue.submit([encoder.finish()]);
        let (sender, receiver) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |result| {
            let _ = sender.send(result);
        });
        self.device.poll(wgpu::PollType::wait_indefinitely()).context("waiting for the GPU")?;
        receiver.recv()?.context("mapping a readback buffer")?;
        let view = staging.get_mapped_range(..).context("reading a mapped buffer")?;
        let mut values: Vec<T> = bytemuck::cast_slice(&view).to_vec();
        values.truncate(tensor.len());
        Ok(values)
    }
}
