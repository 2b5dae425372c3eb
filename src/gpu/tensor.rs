//! Tensors: 256-byte aligned views into storage buffers, their allocation, upload and readback.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::{Context, Result, bail};
use wgpu::util::DeviceExt;

use super::Gpu;

/// Storage-buffer offsets must be multiples of the adapter's alignment (at most 256 bytes in
/// WebGPU), so every tensor of an arena starts on a 256-byte boundary.
pub const ALIGN: u64 = 256;

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

impl Gpu {
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
