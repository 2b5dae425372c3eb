//! Every WGSL kernel of `shaders/`, its pipeline cache, and prepared dispatches.
//!
//! A kernel's bind group layout is read from its own WGSL with naga (binding order, storage
//! read/write access, the uniform), so the shader file is the one place that says what a kernel
//! binds. By convention bindings are: outputs, then inputs, then the `params` uniform last.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Result, anyhow};

use crate::gpu::{Gpu, Tensor};

macro_rules! kernels {
    ($($variant:ident => $stem:literal $(after $prelude:literal)?,)*) => {
        /// One variant per file in `shaders/`; the file stem is `Kernel::name`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Kernel { $($variant,)* }

        impl Kernel {
            pub const ALL: &[Kernel] = &[$(Kernel::$variant,)*];

            pub fn name(self) -> &'static str {
                match self { $(Kernel::$variant => $stem,)* }
            }

            /// The kernel's WGSL, after the file of `shaders/prelude/` it names if any (WGSL
            /// has no includes).
            pub fn source(self) -> &'static str {
                match self {
                    $(Kernel::$variant => concat!(
                        $(include_str!(concat!("../shaders/prelude/", $prelude, ".wgsl")), "\n",)?
                        include_str!(concat!("../shaders/", $stem, ".wgsl"))
                    ),)*
                }
            }
        }
    };
}

kernels! {
    Conv2dForward => "conv2d_forward",
    Conv2dForwardLanes => "conv2d_forward_lanes" after "lanes",
    Conv2dBackwardInput => "conv2d_backward_input",
    Conv2dBackwardInputLanes => "conv2d_backward_input_lanes" after "lanes",
    Conv2dBackwardInputStridedLanes => "conv2d_backward_input_strided_lanes" after "lanes",
    Conv2dBackwardWeight => "conv2d_backward_weight",
    Conv2dBackwardWeightLanes => "conv2d_backward_weight_lanes" after "lanes",
    Conv2dRowsLanes => "conv2d_rows_lanes" after "lanes",
    Conv2dStridedLanes => "conv2d_strided_lanes" after "lanes",
    Conv2dWeightPanel => "conv2d_weight_panel",
    Conv2dPointwiseLanes => "conv2d_pointwise_lanes" after "lanes",
    Conv2dPointwiseChannelsLanes => "conv2d_pointwise_channels_lanes" after "lanes",
    Conv2dBackwardWeightRowsLanes => "conv2d_backward_weight_rows_lanes" after "lanes",
    Conv2dBackwardWeightRowsVec4Lanes => "conv2d_backward_weight_rows_vec4_lanes" after "lanes",
    BatchnormForwardTrain => "batchnorm_forward_train",
    BatchnormForwardTrainVec4 => "batchnorm_forward_train_vec4",
    BatchnormForwardEval => "batchnorm_forward_eval",
    BatchnormForwardEvalVec4 => "batchnorm_forward_eval_vec4",
    BatchnormBackward => "batchnorm_backward",
    BatchnormBackwardVec4 => "batchnorm_backward_vec4",
    ReluForward => "relu_forward",
    ReluBackward => "relu_backward",
    ReluBackwardVec4 => "relu_backward_vec4",
    ReluMask => "relu_mask",
    ReluMaskVec4 => "relu_mask_vec4",
    Add => "add",
    AddVec4 => "add_vec4",
    ShortcutAForward => "shortcut_a_forward",
    ShortcutABackward => "shortcut_a_backward",
    MaxpoolForward => "maxpool_forward",
    MaxpoolBackward => "maxpool_backward",
    AvgpoolForward => "avgpool_forward",
    AvgpoolBackward => "avgpool_backward",
    LinearForward => "linear_forward",
    LinearForwardVec4 => "linear_forward_vec4",
    LinearBackwardInput => "linear_backward_input",
    LinearBackwardInputVec4 => "linear_backward_input_vec4",
    LinearBackwardWeight => "linear_backward_weight",
    LinearBackwardWeightVec4 => "linear_backward_weight_vec4",
    SoftmaxCrossEntropy => "softmax_cross_entropy",
    Sgd => "sgd",
    SumSlices => "sum_slices",
}

/// Parses and validates a kernel's WGSL with naga.
pub fn validate(kernel: Kernel) -> Result<(naga::Module, naga::valid::ModuleInfo)> {
    let module = naga::front::wgsl::parse_str(kernel.source())
        .map_err(|e| anyhow!("{}.wgsl: {}", kernel.name(), e.emit_to_string(kernel.source())))?;
    let info = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::SUBGROUP)
        .validate(&module)
        .map_err(|e| anyhow!("{}.wgsl: {}", kernel.name(), e.emit_to_string(kernel.source())))?;
    Ok((module, info))
}

/// What one binding of a kernel is, in binding order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    Storage { read_only: bool },
    Uniform,
}

/// The bindings of group 0, read from the WGSL; binding numbers must be 0, 1, 2, ...
pub fn slots(kernel: Kernel) -> Result<Vec<Slot>> {
    let (module, _) = validate(kernel)?;
    let mut slots: Vec<(u32, Slot)> = module
        .global_variables
        .iter()
        .filter_map(|(_, var)| {
            let binding = var.binding.as_ref()?;
            assert_eq!(binding.group, 0, "{}.wgsl: all bindings live in group 0", kernel.name());
            let slot = match var.space {
                naga::AddressSpace::Storage { access } => {
                    Slot::Storage { read_only: !access.contains(naga::StorageAccess::STORE) }
                }
                naga::AddressSpace::Uniform => Slot::Uniform,
                other => panic!("{}.wgsl: unexpected address space {other:?}", kernel.name()),
            };
            Some((binding.binding, slot))
        })
        .collect();
    slots.sort_by_key(|(binding, _)| *binding);
    for (i, (binding, _)) in slots.iter().enumerate() {
        assert_eq!(*binding as usize, i, "{}.wgsl: bindings must be numbered 0, 1, 2, ...", kernel.name());
    }
    Ok(slots.into_iter().map(|(_, slot)| slot).collect())
}

/// Pipelines are cached by kernel plus the values of its `override` constants.
type PipelineKey = (Kernel, Vec<(String, u64)>);

#[derive(Default)]
pub(crate) struct PipelineCache {
    pipelines: HashMap<PipelineKey, Arc<(wgpu::ComputePipeline, wgpu::BindGroupLayout, Vec<Slot>)>>,
}

/// A kernel with its bindings and workgroup count, ready to be recorded into any number of passes.
pub struct Dispatch {
    pub kernel: Kernel,
    /// The values it gave the kernel's `override` constants.
    pub overrides: Vec<(String, f64)>,
    /// The layer this dispatch belongs to (`layer2.0.conv1`), for per-layer timings.
    pub label: String,
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    pub workgroups: [u32; 3],
    /// Bytes of every tensor bound, each counted once: the least memory traffic of one run.
    pub bytes: u64,
    /// The `params` uniform, kept so a step can rewrite it (e.g. the learning rate).
    params: wgpu::Buffer,
}

impl Dispatch {
    /// Whether the bool `override` constant `name` was set.
    pub fn flag(&self, name: &str) -> bool {
        self.overrides.iter().any(|(n, value)| n == name && *value != 0.0)
    }

    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        let [x, y, z] = self.workgroups;
        pass.dispatch_workgroups(x, y, z);
    }
}

/// Workgroup counts for `groups` workgroups along one logical axis, folded into y when they exceed
/// the 65,535-per-dimension limit. Shaders rebuild the index as `wid.x + wid.y * nwg.x`.
pub fn grid(groups: usize) -> [u32; 3] {
    let groups = groups.max(1) as u32;
    if groups <= 65535 { [groups, 1, 1] } else { [65535, groups.div_ceil(65535), 1] }
}

impl Gpu {
    fn pipeline(
        &self,
        kernel: Kernel,
        overrides: &[(&str, f64)],
    ) -> Result<Arc<(wgpu::ComputePipeline, wgpu::BindGroupLayout, Vec<Slot>)>> {
        let key = (kernel, overrides.iter().map(|(k, v)| (k.to_string(), v.to_bits())).collect());
        if let Some(found) = self.pipelines.lock().unwrap().pipelines.get(&key) {
            return Ok(found.clone());
        }
        let slots = slots(kernel)?;
        let entries: Vec<wgpu::BindGroupLayoutEntry> = slots
            .iter()
            .enumerate()
            .map(|(i, slot)| wgpu::BindGroupLayoutEntry {
                binding: i as u32,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: match *slot {
                        Slot::Storage { read_only } => wgpu::BufferBindingType::Storage { read_only },
                        Slot::Uniform => wgpu::BufferBindingType::Uniform,
                    },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            })
            .collect();
        // Driver failures (e.g. too much workgroup memory) arrive as internal errors.
        let internal = self.device.push_error_scope(wgpu::ErrorFilter::Internal);
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let layout = self.device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(kernel.name()),
            entries: &entries,
        });
        let pipeline_layout = self.device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(kernel.name()),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let descriptor = wgpu::ShaderModuleDescriptor {
            label: Some(kernel.name()),
            source: wgpu::ShaderSource::Wgsl(kernel.source().into()),
        };
        // Bounds checks stay on. Loop bounding and integer-division checks come off: they keep
        // the compiler from unrolling the conv kernels' register blocks, which then run 4-5x
        // slower on lavapipe (BENCHMARKS.md). Every loop here ends on a bound taken from its
        // params, and every divisor is a shape or stride that the plan checks to be positive.
        let checks =
            wgpu::ShaderRuntimeChecks { force_loop_bounding: false, int_div_checks: false, ..Default::default() };
        // SAFETY: the two checks switched off guard against endless loops and division by zero,
        // neither of which these kernels can reach (see above); bounds checks remain.
        let module = unsafe { self.device.create_shader_module_trusted(descriptor, checks) };
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(kernel.name()),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some("main"),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: overrides,
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        let errors = [pollster::block_on(scope.pop()), pollster::block_on(internal.pop())];
        if let Some(error) = errors.into_iter().flatten().next() {
            return Err(anyhow!("building kernel {} with {overrides:?} on {}: {error}", kernel.name(), self.info.name));
        }
        let entry = Arc::new((pipeline, layout, slots));
        self.pipelines.lock().unwrap().pipelines.insert(key, entry.clone());
        Ok(entry)
    }

    /// Prepares one dispatch of `kernel`: `tensors` bind in order to the kernel's storage
    /// bindings (outputs first, then inputs) and `params` to its uniform, the last binding.
    pub fn dispatch<P: bytemuck::Pod>(
        &self,
        kernel: Kernel,
        overrides: &[(&str, f64)],
        tensors: &[&Tensor],
        params: &P,
        workgroups: [u32; 3],
    ) -> Result<Dispatch> {
        let entry = self.pipeline(kernel, overrides)?;
        let (pipeline, layout, slots) = &*entry;
        assert_eq!(
            slots.len(),
            tensors.len() + 1,
            "{} binds {} storage buffers and a uniform, but {} tensors were given",
            kernel.name(),
            slots.len() - 1,
            tensors.len()
        );
        // wgpu tracks usage per buffer: one buffer may not be bound both writable and read-only
        // in a dispatch, not even as two ranges; two writable bindings of it must not overlap.
        for (i, a) in tensors.iter().enumerate() {
            for (j, b) in tensors.iter().enumerate().skip(i + 1) {
                if !Arc::ptr_eq(&a.buffer, &b.buffer) {
                    continue;
                }
                let writes = [slots[i], slots[j]].map(|s| s == Slot::Storage { read_only: false });
                let overlap = a.offset < b.offset + b.bytes().max(4) && b.offset < a.offset + a.bytes().max(4);
                assert!(
                    writes == [false, false] || (writes == [true, true] && !overlap),
                    "{}: bindings {i} and {j} share a buffer and one is written",
                    kernel.name()
                );
            }
        }
        let params = wgpu::util::DeviceExt::create_buffer_init(
            &self.device,
            &wgpu::util::BufferInitDescriptor {
                label: Some(kernel.name()),
                contents: bytemuck::bytes_of(params),
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            },
        );
        let mut entries: Vec<wgpu::BindGroupEntry> = tensors
            .iter()
            .enumerate()
            .map(|(i, t)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: wgpu::BindingResource::Buffer(t.binding()),
            })
            .collect();
        entries.push(wgpu::BindGroupEntry { binding: tensors.len() as u32, resource: params.as_entire_binding() });
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(kernel.name()),
            layout,
            entries: &entries,
        });
        if let Some(error) = pollster::block_on(scope.pop()) {
            return Err(anyhow!("binding kernel {}: {error}", kernel.name()));
        }
        Ok(Dispatch {
            kernel,
            overrides: overrides.iter().map(|&(name, value)| (name.to_string(), value)).collect(),
            label: kernel.name().to_string(),
            pipeline: pipeline.clone(),
            bind_group,
            workgroups,
            bytes: tensors.iter().map(|t| t.bytes()).sum(),
            params,
        })
    }

    /// Rewrites the uniform of a prepared dispatch (e.g. the learning rate of the next step).
    pub fn update_params<P: bytemuck::Pod>(&self, dispatch: &Dispatch, params: &P) {
        self.queue.write_buffer(&dispatch.params, 0, bytemuck::bytes_of(params));
    }

    /// Records the dispatches, in order, into one compute pass of a new command encoder.
    pub fn encode(&self, dispatches: &[&Dispatch]) -> wgpu::CommandEncoder {
        let mut encoder = self.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            for d in dispatches {
                d.record(&mut pass);
            }
        }
        encoder
    }

    /// Records the dispatches, in order, into one compute pass of one command buffer and submits it.
    pub fn run(&self, dispatches: &[&Dispatch]) -> Result<()> {
        self.queue.submit([self.encode(dispatches).finish()]);
        Ok(())
    }
}
