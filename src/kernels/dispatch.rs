//! Pipelines built from the kernel table and dispatches prepared once, recorded every step.

use std::sync::Arc;

use anyhow::{Result, anyhow};

use super::{Kernel, Slot, slots};
use crate::gpu::{Gpu, Pipeline, Tensor};

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

    /// The kernel and the constants it ran with, e.g. `conv2d_tiled BM=128 BN=64 BK=8 TM=8 TN=8`.
    pub fn describe(&self) -> String {
        let constants = self.overrides.iter().map(|(name, value)| format!(" {name}={value}"));
        std::iter::once(self.kernel.name().to_string()).chain(constants).collect()
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
    fn pipeline(&self, kernel: Kernel, overrides: &[(&str, f64)]) -> Result<Arc<Pipeline>> {
        let key = (kernel.name(), overrides.iter().map(|(k, v)| (k.to_string(), v.to_bits())).collect());
        if let Some(found) = self.pipelines.lock().unwrap().get(&key) {
            return Ok(found.clone());
        }
        let bindings: Vec<wgpu::BufferBindingType> = slots(kernel)?
            .into_iter()
            .map(|slot| match slot {
                Slot::Storage { read_only } => wgpu::BufferBindingType::Storage { read_only },
                Slot::Uniform => wgpu::BufferBindingType::Uniform,
            })
            .collect();
        let entries: Vec<wgpu::BindGroupLayoutEntry> = bindings
            .iter()
            .enumerate()
            .map(|(i, &ty)| wgpu::BindGroupLayoutEntry {
                binding: i as u32,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer { ty, has_dynamic_offset: false, min_binding_size: None },
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
        let entry = Arc::new(Pipeline { pipeline, layout, bindings });
        self.pipelines.lock().unwrap().insert(key, entry.clone());
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
        let Pipeline { pipeline, layout, bindings } = &*entry;
        assert_eq!(
            bindings.len(),
            tensors.len() + 1,
            "{} binds {} storage buffers and a uniform, but {} tensors were given",
            kernel.name(),
            bindings.len() - 1,
            tensors.len()
        );
        // wgpu tracks usage per buffer: one buffer may not be bound both writable and read-only
        // in a dispatch, not even as two ranges; two writable bindings of it must not overlap.
        for (i, a) in tensors.iter().enumerate() {
            for (j, b) in tensors.iter().enumerate().skip(i + 1) {
                if !Arc::ptr_eq(&a.buffer, &b.buffer) {
                    continue;
                }
                let writes =
                    [bindings[i], bindings[j]].map(|b| b == wgpu::BufferBindingType::Storage { read_only: false });
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
