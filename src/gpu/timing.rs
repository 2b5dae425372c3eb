//! Timing submissions: GPU timestamp queries at compute pass boundaries where the adapter has
//! them, else the wall clock around submit and wait; neither counts recording on the CPU.

use std::time::Instant;

use anyhow::{Context, Result};

use super::Gpu;

/// Timestamp queries for `passes` compute passes (two each, beginning and end), in as many query
/// sets as WebGPU's 4096-query limit needs, with the buffers to read them back.
pub struct Timestamps {
    sets: Vec<wgpu::QuerySet>,
    passes: usize,
    resolve: wgpu::Buffer,
    staging: wgpu::Buffer,
}

const PASSES_PER_SET: usize = wgpu::QUERY_SET_MAX_QUERIES as usize / 2;

impl Timestamps {
    pub fn new(gpu: &Gpu, passes: usize) -> Self {
        let sets = (0..passes.div_ceil(PASSES_PER_SET))
            .map(|j| {
                gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("timestamps"),
                    ty: wgpu::QueryType::Timestamp,
                    count: 2 * (passes - j * PASSES_PER_SET).min(PASSES_PER_SET) as u32,
                })
            })
            .collect();
        let buffer = |label, usage| {
            gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: 16 * passes as u64,
                usage,
                mapped_at_creation: false,
            })
        };
        Self {
            sets,
            passes,
            resolve: buffer("timestamp resolve", wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC),
            staging: buffer("timestamp readback", wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST),
        }
    }

    fn writes(&self, pass: usize) -> wgpu::ComputePassTimestampWrites<'_> {
        let index = 2 * (pass % PASSES_PER_SET) as u32;
        wgpu::ComputePassTimestampWrites {
            query_set: &self.sets[pass / PASSES_PER_SET],
            beginning_of_pass_write_index: Some(index),
            end_of_pass_write_index: Some(index + 1),
        }
    }

    /// Records the copy of every timestamp into the staging buffer (set j at byte 16 * 2048 * j,
    /// a multiple of the 256-byte resolve alignment).
    fn resolve(&self, encoder: &mut wgpu::CommandEncoder) {
        for (j, set) in self.sets.iter().enumerate() {
            let count = 2 * (self.passes - j * PASSES_PER_SET).min(PASSES_PER_SET) as u32;
            encoder.resolve_query_set(set, 0..count, &self.resolve, (16 * PASSES_PER_SET * j) as u64);
        }
        encoder.copy_buffer_to_buffer(&self.resolve, 0, &self.staging, 0, self.resolve.size());
    }

    /// Milliseconds of each pass, once the submission that resolved them is done.
    fn read(&self, gpu: &Gpu) -> Result<Vec<f64>> {
        let (sender, receiver) = std::sync::mpsc::channel();
        self.staging.map_async(wgpu::MapMode::Read, .., move |result| {
            let _ = sender.send(result);
        });
        gpu.device.poll(wgpu::PollType::wait_indefinitely()).context("waiting for the GPU")?;
        receiver.recv()?.context("mapping the timestamp buffer")?;
        let ns_per_tick = gpu.queue.get_timestamp_period() as f64;
        let ms = {
            let view = self.staging.get_mapped_range(..).context("reading the timestamp buffer")?;
            let ticks: &[u64] = bytemuck::cast_slice(&view);
            ticks.chunks(2).map(|pair| pair[1].saturating_sub(pair[0]) as f64 * ns_per_tick / 1e6).collect()
        };
        self.staging.unmap();
        Ok(ms)
    }
}

/// What `submit` measured.
pub struct Submitted {
    /// Each pass's milliseconds from its timestamps, or without them one wall-clock figure for the
    /// whole submission.
    pub ms: Vec<f64>,
    /// Host milliseconds from creating the command encoder to the return of `Queue::submit`.
    pub encode_ms: f64,
}

/// Records `passes` compute passes (the contents of pass i by `record(i, pass)`) into one command
/// buffer, submits it and waits.
pub fn submit(
    gpu: &Gpu,
    passes: usize,
    stamps: Option<&Timestamps>,
    mut record: impl FnMut(usize, &mut wgpu::ComputePass<'_>),
) -> Result<Submitted> {
    assert!(stamps.is_some() || passes == 1, "the wall clock times one pass per submission");
    let encode = Instant::now();
    let mut encoder = gpu.device.create_command_encoder(&Default::default());
    for i in 0..passes {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("timed"),
            timestamp_writes: stamps.map(|s| s.writes(i)),
        });
        record(i, &mut pass);
    }
    if let Some(stamps) = stamps {
        stamps.resolve(&mut encoder);
    }
    let commands = encoder.finish();
    let start = Instant::now();
    gpu.queue.submit([commands]);
    let encode_ms = encode.elapsed().as_secs_f64() * 1e3;
    gpu.device.poll(wgpu::PollType::wait_indefinitely()).context("waiting for the GPU")?;
    let wall_ms = start.elapsed().as_secs_f64() * 1e3;
    let ms = match stamps {
        Some(stamps) => stamps.read(gpu)?,
        None => vec![wall_ms],
    };
    Ok(Submitted { ms, encode_ms })
}
