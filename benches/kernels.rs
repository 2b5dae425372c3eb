//! Times every WGSL kernel on representative ResNet shapes and prints a Markdown table of the
//! median milliseconds per dispatch with GFLOP/s (conv, linear) or GB/s (memory-bound kernels).
//! Compute-bound rows also give their share of the adapter's FMA peak, measured (as `bench` does)
//! right before the row, since a shared machine's speed drifts between runs.
//!
//!     cargo bench --bench kernels                       # wgpu's default adapter
//!     RESNET_WGPU_BACKEND=gl cargo bench --bench kernels
//!     RESNET_WGPU_ADAPTER=1 cargo bench --bench kernels # an index or a substring of the name
//!     RESNET_WGPU_BENCH_FILTER=conv2d cargo bench --bench kernels  # rows whose kernel and shape contain it
//!     RESNET_WGPU_BENCH_WALL=1 cargo bench --bench kernels  # wall clock even with timestamps
//!
//! Each dispatch is recorded alone in one compute pass, submitted, and waited for. Time is taken
//! from GPU timestamps written at the pass boundaries when the adapter offers TIMESTAMP_QUERY,
//! otherwise from the wall clock around submit + wait. The conv kernels are checked against their
//! CPU twins first, so a wrong kernel cannot post a number.

use std::time::Instant;

use anyhow::{Context, Result};
use resnet_wgpu::bench::{Kind, Timer, peak_fma};
use resnet_wgpu::gpu::{AdapterChoice, Gpu, Tensor, Tuning};
use resnet_wgpu::kernels::{Dispatch, Kernel};
use resnet_wgpu::ops::conv::select::ConvPath;
use resnet_wgpu::ops::conv::{self, ConvParams};
use resnet_wgpu::ops::sgd::{self, Sgd};
use resnet_wgpu::ops::{batchnorm, elementwise, linear, pool};
use resnet_wgpu::rng::Rng;

const WARMUP: usize = 3;
const ITERATIONS: usize = 15;

/// What a kernel does per dispatch, for the throughput column.
#[derive(Clone, Copy)]
enum Work {
    Flops(f64),
    /// Bytes of every tensor the kernel reads or writes, each counted once.
    Bytes(f64),
}

fn bytes(elements: usize) -> Work {
    Work::Bytes(4.0 * elements as f64)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

struct Bench<'a> {
    gpu: &'a Gpu,
    rng: Rng,
    filter: Option<String>,
    timestamps: bool,
}

impl Bench<'_> {
    fn random(&mut self, shape: &[usize]) -> Result<Tensor> {
        let data = self.rng.vec(shape.iter().product());
        self.gpu.upload("bench input", shape, &data)
    }

    /// Positive values (variances, running statistics, rstd) in [0.5, 1.5).
    fn positive(&mut self, shape: &[usize]) -> Result<Tensor> {
        let data: Vec<f32> = self.rng.vec(shape.iter().product()).iter().map(|x| 1.0 + 0.5 * x).collect();
        self.gpu.upload("bench input", shape, &data)
    }

    fn zeros(&self, shape: &[usize]) -> Result<Tensor> {
        self.gpu.zeros("bench output", shape)
    }

    /// Prepares the dispatch (unless the filter excludes `kernel`), times it, prints one row.
    fn run(&self, kernel: Kernel, shape: &str, work: Work, prepare: impl FnOnce() -> Result<Dispatch>) -> Result<()> {
        self.run_all(kernel, shape, work, || prepare().map(|d| vec![d]))
    }

    /// As `run`, for a kernel that takes several dispatches (timed together in one pass).
    fn run_all(
        &self,
        kernel: Kernel,
        shape: &str,
        work: Work,
        prepare: impl FnOnce() -> Result<Vec<Dispatch>>,
    ) -> Result<()> {
        if let Some(filter) = &self.filter
            && !format!("{} {shape}", kernel.name()).contains(filter.as_str())
        {
            return Ok(());
        }
        let dispatches = prepare().with_context(|| format!("preparing {}", kernel.name()))?;
        // A conv row names the kernel; the `_lanes` twin that may run it is named in the shape column.
        assert_eq!(Kind::of(&dispatches[0]), Kind::of_kernel(kernel), "the bench row names the wrong kernel");
        // The FMA peak is measured right before each compute-bound row: on a shared machine the
        // adapter's speed drifts between runs, and the share of the peak drifts much less.
        let timer = if self.timestamps { Timer::Timestamps } else { Timer::WallClock };
        let peak = matches!(work, Work::Flops(_)).then(|| peak_fma(self.gpu, timer)).transpose()?;
        let ms = median(self.measure(&dispatches)?);
        let (gflops, share, gbs) = match (work, peak) {
            (Work::Flops(flops), Some(peak)) => {
                let gflops = flops / ms / 1e6;
                (format!("{gflops:.2}"), format!("{:.0} % of {peak:.1}", 100.0 * gflops / peak), "-".to_string())
            }
            (Work::Bytes(bytes), _) => ("-".to_string(), "-".to_string(), format!("{:.2}", bytes / ms / 1e6)),
            (Work::Flops(_), None) => unreachable!("compute-bound rows measure the peak"),
        };
        println!("| {} | {shape}{} | {ms:.3} | {gflops} | {share} | {gbs} |", kernel.name(), tile(&dispatches[0]));
        Ok(())
    }

    /// Milliseconds of each timed run of `dispatches`, alone in their own pass and submission.
    fn measure(&self, dispatches: &[Dispatch]) -> Result<Vec<f64>> {
        let gpu = self.gpu;
        // Two timestamps per timed run: the beginning and the end of its pass.
        let query_set = self.timestamps.then(|| {
            gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("bench timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count: 2 * ITERATIONS as u32,
            })
        });
        let mut wall = Vec::with_capacity(ITERATIONS);
        for i in 0..WARMUP + ITERATIONS {
            let timed = i.checked_sub(WARMUP).map(|j| j as u32);
            let mut encoder = gpu.device.create_command_encoder(&Default::default());
            {
                let timestamp_writes =
                    query_set.as_ref().zip(timed).map(|(query_set, j)| wgpu::ComputePassTimestampWrites {
                        query_set,
                        beginning_of_pass_write_index: Some(2 * j),
                        end_of_pass_write_index: Some(2 * j + 1),
                    });
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some(dispatches[0].kernel.name()),
                    timestamp_writes,
                });
                for dispatch in dispatches {
                    dispatch.record(&mut pass);
                }
            }
            let start = Instant::now();
            gpu.queue.submit([encoder.finish()]);
            gpu.device.poll(wgpu::PollType::wait_indefinitely()).context("waiting for the GPU")?;
            if timed.is_some() {
                wall.push(start.elapsed().as_secs_f64() * 1e3);
            }
        }
        match query_set {
            Some(query_set) => self.read_timestamps(&query_set),
            None => Ok(wall),
        }
    }

    /// Resolves the query set and turns each begin/end pair into milliseconds.
    fn read_timestamps(&self, query_set: &wgpu::QuerySet) -> Result<Vec<f64>> {
        let gpu = self.gpu;
        let size = 8 * 2 * ITERATIONS as u64;
        let resolve = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("timestamp resolve"),
            size,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let staging = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("timestamp readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = gpu.device.create_command_encoder(&Default::default());
        encoder.resolve_query_set(query_set, 0..2 * ITERATIONS as u32, &resolve, 0);
        encoder.copy_buffer_to_buffer(&resolve, 0, &staging, 0, size);
        gpu.queue.submit([encoder.finish()]);
        let (sender, receiver) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |result| {
            let _ = sender.send(result);
        });
        gpu.device.poll(wgpu::PollType::wait_indefinitely()).context("waiting for the GPU")?;
        receiver.recv()?.context("mapping the timestamp buffer")?;
        let view = staging.get_mapped_range(..).context("reading the timestamp buffer")?;
        let ticks: &[u64] = bytemuck::cast_slice(&view);
        let ns_per_tick = gpu.queue.get_timestamp_period() as f64;
        Ok(ticks.chunks(2).map(|pair| pair[1].saturating_sub(pair[0]) as f64 * ns_per_tick / 1e6).collect())
    }
}

/// `, conv2d_tiled 128x64x8 8x8` for a dispatch of the tiled path (its kernel and tile), else nothing.
fn tile(dispatch: &Dispatch) -> String {
    let value = |name: &str| dispatch.overrides.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
    match ["BM", "BN", "BK", "TM", "TN"].map(value) {
        [Some(bm), Some(bn), Some(bk), Some(tm), Some(tn)] => {
            format!(", {} {bm}x{bn}x{bk} {tm}x{tn}", dispatch.kernel.name())
        }
        _ => String::new(),
    }
}

/// conv2d_forward, conv2d_backward_input and conv2d_backward_weight of one layer on `gpu` (one
/// of its conv paths); each does 2*N*K*P*Q*C*R*S flops.
#[allow(clippy::too_many_arguments)]
fn conv(
    b: &mut Bench,
    gpu: &Gpu,
    name: &str,
    inp: [usize; 4],
    k: usize,
    r: usize,
    stride: usize,
    pad: usize,
) -> Result<()> {
    let [n, c, h, w] = inp;
    let params = ConvParams::new(&inp, &[k, c, r, r], stride, pad)?;
    let (p, q) = (params.p as usize, params.q as usize);
    let flops = Work::Flops((2 * n * k * p * q * c * r * r) as f64);
    let shape = format!("{name}: N{n} {c}->{k} {h}x{w} {r}x{r} s{stride} p{pad}, {}", conv::tune::choice(gpu)?);
    let (x, weight, y) = (b.random(&inp)?, b.random(&[k, c, r, r])?, b.random(&params.out_shape())?);
    // The panels some kernels read are laid out once here, and timed on their own below.
    let (panel, layout) = conv::panel_for(gpu, &params, &weight, false)?.unzip();
    let (panel_t, layout_t) = conv::panel_for(gpu, &params, &weight, true)?.unzip();
    gpu.run(&layout.iter().chain(&layout_t).collect::<Vec<_>>())?;
    b.run(Kernel::Conv2dForward, &shape, flops, || {
        conv::conv2d_forward(gpu, &y, &x, &weight, panel.as_ref(), stride, pad)
    })?;
    // A strided 1x1 is a projection shortcut, whose input gradient training adds to its block's.
    let accumulate = stride > 1 && r == 1;
    b.run(Kernel::Conv2dBackwardInput, &format!("{shape}{}", if accumulate { ", +=" } else { "" }), flops, || {
        conv::conv2d_backward_input(gpu, &x, &y, &weight, panel_t.as_ref(), stride, pad, accumulate)
    })?;
    b.run_all(Kernel::Conv2dBackwardWeight, &shape, flops, || {
        conv::conv2d_backward_weight(gpu, &weight, &y, &x, None, stride, pad)
    })
}

/// Batch norm's training forward and backward on an activation of `shape`, each way of reducing a
/// channel (`Gpu::bn_chunk`) the adapter's default first, and its evaluation forward.
fn batchnorm(b: &mut Bench, name: &str, shape: [usize; 4]) -> Result<()> {
    let (c, len) = (shape[1], shape.iter().product::<usize>());
    let label = format!("{name}: {shape:?}");
    let (inp, dout, out, dinp) = (b.random(&shape)?, b.random(&shape)?, b.zeros(&shape)?, b.zeros(&shape)?);
    let (weight, bias, mean, rstd) = (b.random(&[c])?, b.random(&[c])?, b.random(&[c])?, b.positive(&[c])?);
    let (running_mean, running_var, dweight, dbias) =
        (b.random(&[c])?, b.positive(&[c])?, b.zeros(&[c])?, b.zeros(&[c])?);
    let gpu = b.gpu;
    let other = if gpu.bn_chunk.is_some() { None } else { Some(4096) };
    for bn_gpu in [gpu.bn_chunk, other].map(|chunk| gpu.with_bn_chunk(chunk)) {
        let gpu = &bn_gpu;
        let label = match gpu.bn_chunk {
            None => format!("{label}, a channel a workgroup"),
            Some(chunk) => format!("{label}, in chunks of {chunk}"),
        };
        // Reads inp (three passes, counted once), weight, bias, running_mean, running_var; writes
        // out, mean, rstd, running_mean, running_var.
        b.run_all(Kernel::BatchnormForwardTrain, &label, bytes(2 * len + 8 * c), || {
            batchnorm::batchnorm_forward_train(
                gpu,
                &out,
                &mean,
                &rstd,
                &running_mean,
                &running_var,
                &inp,
                &weight,
                &bias,
                None,
                None,
                false,
            )
        })?;
        // Reads dout and inp (two passes, counted once), weight, mean, rstd; writes dinp, dweight, dbias.
        b.run_all(Kernel::BatchnormBackward, &label, bytes(3 * len + 5 * c), || {
            batchnorm::batchnorm_backward(gpu, &dinp, &dweight, &dbias, &dout, &inp, &weight, &mean, &rstd, None, None)
        })?;
    }
    b.run(Kernel::BatchnormForwardEval, &label, bytes(2 * len + 4 * c), || {
        batchnorm::batchnorm_forward_eval(gpu, &out, &inp, &weight, &bias, &running_mean, &running_var, None, false)
    })
}

fn main() -> Result<()> {
    let choice = AdapterChoice {
        backend: std::env::var("RESNET_WGPU_BACKEND").ok(),
        adapter: std::env::var("RESNET_WGPU_ADAPTER").ok(),
    };
    let gpu = Gpu::new(&choice)?;
    // RESNET_WGPU_BENCH_WALL=1 forces the wall clock, to cross-check the timestamps.
    let timestamps =
        gpu.features.contains(wgpu::Features::TIMESTAMP_QUERY) && std::env::var_os("RESNET_WGPU_BENCH_WALL").is_none();
    println!("adapter: {}", gpu.describe());
    println!(
        "timer: {}; {WARMUP} warmup runs, median of {ITERATIONS} timed runs, one dispatch per submit",
        if timestamps { "GPU timestamp queries at compute pass boundaries" } else { "wall clock around submit + poll" }
    );
    println!("GB/s counts every tensor a kernel reads or writes once, even where it reads one more than once");
    // Every conv path family the adapter can run, its default first (the tiled path with the
    // tile it picks untimed for each shape).
    let families = ConvPath::families(&gpu);
    println!("conv paths: {} (the first is this adapter's default; RESNET_WGPU_CONV picks one)", families.join(", "));
    let conv_gpus: Vec<Gpu> = families.iter().map(|family| gpu.with_tuning(Tuning::Pinned(family))).collect();
    for (conv_gpu, family) in conv_gpus.iter().zip(&families) {
        resnet_wgpu::bench::self_check(conv_gpu).with_context(|| format!("self-check ({family} conv path)"))?;
    }
    println!("self-check: conv, BN and a ResNet-8 step, every conv path, match their CPU twins (bench::self_check)");
    println!();
    println!("| kernel | shape | median ms | GFLOP/s | share of the FMA peak (GFLOP/s) | GB/s |");
    println!("|---|---|---:|---:|---:|---:|");

    let mut b =
        Bench { gpu: &gpu, rng: Rng::new(1), filter: std::env::var("RESNET_WGPU_BENCH_FILTER").ok(), timestamps };
    let gpu = &gpu;

    for conv_gpu in &conv_gpus {
        conv(&mut b, conv_gpu, "ResNet-20", [8, 16, 32, 32], 16, 3, 1, 1)?;
        conv(&mut b, conv_gpu, "ResNet-50 3x3", [1, 64, 56, 56], 64, 3, 1, 1)?;
        conv(&mut b, conv_gpu, "ResNet-50 1x1", [1, 256, 56, 56], 64, 1, 1, 0)?;
        // The later stages, whose rows (14, 7) and planes (49) are not multiples of 4.
        conv(&mut b, conv_gpu, "ResNet-50 3x3", [2, 256, 14, 14], 256, 3, 1, 1)?;
        conv(&mut b, conv_gpu, "ResNet-50 1x1", [2, 1024, 14, 14], 256, 1, 1, 0)?;
        conv(&mut b, conv_gpu, "ResNet-50 3x3", [4, 512, 7, 7], 512, 3, 1, 1)?;
        conv(&mut b, conv_gpu, "ResNet-50 1x1", [4, 2048, 7, 7], 512, 1, 1, 0)?;
        // Strided: a CIFAR ResNet's first downsampling conv and option-B projection, ResNet-50's
        // at its second and third stages.
        conv(&mut b, conv_gpu, "ResNet-20 3x3", [8, 16, 32, 32], 32, 3, 2, 1)?;
        conv(&mut b, conv_gpu, "ResNet-50 3x3", [2, 128, 56, 56], 128, 3, 2, 1)?;
        conv(&mut b, conv_gpu, "ResNet-20 1x1", [8, 16, 32, 32], 32, 1, 2, 0)?;
        conv(&mut b, conv_gpu, "ResNet-50 1x1", [2, 512, 28, 28], 1024, 1, 2, 0)?;
        // The ImageNet stem: 7x7, stride 2, pad 3 on 3 channels.
        conv(&mut b, conv_gpu, "ResNet-50 stem", [1, 3, 224, 224], 64, 7, 2, 3)?;
    }
    // ResNet-50's largest 3x3 weight as the panel of its input gradient, which training lays out
    // before the conv's forward and (transposed) before its input gradient.
    let weight = b.random(&[512, 512, 3, 3])?;
    let panel = b.zeros(&conv::panel_shape(&weight.shape, true))?;
    b.run(Kernel::Conv2dWeightPanel, "ResNet-50 3x3 [512,512,3,3]", bytes(weight.len() + panel.len()), || {
        conv::conv2d_weight_panel(gpu, &panel, &weight, true)
    })?;

    batchnorm(&mut b, "ResNet-20", [32, 16, 32, 32])?;
    batchnorm(&mut b, "ResNet-50", [8, 64, 56, 56])?;
    batchnorm(&mut b, "ResNet-50", [4, 2048, 7, 7])?;

    // Elementwise kernels on a ResNet-20 activation.
    let act = [32, 16, 32, 32];
    let (len, label) = (act.iter().product::<usize>(), format!("ResNet-20: {act:?}"));
    let (x, y, z) = (b.random(&act)?, b.random(&act)?, b.zeros(&act)?);
    let mask = b.zeros(&[elementwise::mask_words(len)])?;
    b.run(Kernel::ReluMask, &label, bytes(len + len / 32), || elementwise::relu_mask(gpu, &mask, &x))?;
    b.run(Kernel::ReluBackward, &label, bytes(2 * len + len / 32), || elementwise::relu_backward(gpu, &y, &mask))?;
    b.run(Kernel::Add, &label, bytes(3 * len), || elementwise::add(gpu, &z, &x))?;

    // The option-A shortcut and the max pool an element an invocation and a row (`Gpu::per_element`),
    // the adapter's default first.
    for split_gpu in [gpu.per_element, !gpu.per_element].map(|on| gpu.with_per_element(on)) {
        let gpu = &split_gpu;
        let split = if gpu.per_element { "an element an invocation" } else { "a row an invocation" };
        // Option-A shortcut of ResNet-20's first downsampling block: [32,16,32,32] -> [32,32,16,16].
        // It reads only the even rows and columns of inp (N*C*P*Q values) and writes N*K*P*Q.
        let half = [32, 32, 16, 16];
        let (small, big) = (32 * 16 * 16 * 16, half.iter().product::<usize>());
        let label = format!("ResNet-20: {act:?} -> {half:?}, {split}");
        let (dhalf, dx) = (b.random(&half)?, b.zeros(&act)?);
        let out = b.zeros(&half)?;
        b.run(Kernel::ShortcutAForward, &label, bytes(small + big), || elementwise::shortcut_a_forward(gpu, &out, &x))?;
        // Reads the dout channels that map to inp (N*C*P*Q values), writes all of dinp.
        b.run(Kernel::ShortcutABackward, &label, bytes(small + len), || {
            elementwise::shortcut_a_backward(gpu, &dx, &dhalf)
        })?;

        // ImageNet stem max pool 3x3/2 pad 1: [8,64,112,112] -> [8,64,56,56].
        let (stem, pooled) = ([8, 64, 112, 112], [8, 64, 56, 56]);
        let (big, small): (usize, usize) = (stem.iter().product(), pooled.iter().product());
        let label = format!("ResNet-50 stem: {stem:?} 3x3 s2 p1, {split}");
        let (inp, dinp) = (b.random(&stem)?, b.zeros(&stem)?);
        let (out, indices, dout) = (b.zeros(&pooled)?, b.zeros(&pooled)?, b.random(&pooled)?);
        // Reads inp, writes out and indices. Runs before the backward, which needs its indices.
        b.run(Kernel::MaxpoolForward, &label, bytes(big + 2 * small), || {
            pool::maxpool_forward(gpu, &out, &indices, &inp, 3, 2, 1)
        })?;
        b.run(Kernel::MaxpoolBackward, &label, bytes(2 * small + big), || {
            pool::maxpool_backward(gpu, &dinp, &dout, &indices, 3, 2, 1)
        })?;
    }

    // ResNet-50 head: global average pool [8,2048,7,7] -> [8,2048].
    let (feat, pooled) = ([8, 2048, 7, 7], [8, 2048]);
    let (big, small): (usize, usize) = (feat.iter().product(), 8 * 2048);
    let label = format!("ResNet-50 head: {feat:?} -> {pooled:?}");
    let (inp, dinp) = (b.random(&feat)?, b.zeros(&feat)?);
    let (out, dout) = (b.zeros(&pooled)?, b.random(&pooled)?);
    b.run(Kernel::AvgpoolForward, &label, bytes(big + small), || pool::avgpool_forward(gpu, &out, &inp))?;
    b.run(Kernel::AvgpoolBackward, &label, bytes(small + big), || pool::avgpool_backward(gpu, &dinp, &dout))?;

    // ResNet-50 fc: N=8, 2048 -> 1000; each kernel does 2*N*K*C flops.
    let (n, c, k) = (8, 2048, 1000);
    let flops = Work::Flops((2 * n * k * c) as f64);
    let label = format!("ResNet-50 fc: N{n} {c}->{k}");
    let (inp, weight, bias) = (b.random(&[n, c])?, b.random(&[k, c])?, b.random(&[k])?);
    let (out, dout, dinp) = (b.zeros(&[n, k])?, b.random(&[n, k])?, b.zeros(&[n, c])?);
    let (dweight, dbias) = (b.zeros(&[k, c])?, b.zeros(&[k])?);
    b.run(Kernel::LinearForward, &label, flops, || linear::linear_forward(gpu, &out, &inp, &weight, &bias))?;
    b.run(Kernel::LinearBackwardInput, &label, flops, || linear::linear_backward_input(gpu, &dinp, &dout, &weight))?;
    b.run(Kernel::LinearBackwardWeight, &label, flops, || {
        linear::linear_backward_weight(gpu, &dweight, &dbias, &dout, &inp)
    })?;

    // CIFAR-10 loss on a batch of 128: reads logits and labels, writes dlogits, loss and correct.
    let (n, k) = (128, 10);
    let labels: Vec<u32> = (0..n as u32).map(|i| i % k as u32).collect();
    let labels = gpu.upload("bench labels", &[n], &labels)?;
    let logits = b.random(&[n, k])?;
    let (dlogits, loss, correct) = (b.zeros(&[n, k])?, b.zeros(&[1])?, b.zeros(&[1])?);
    let label = format!("CIFAR-10: logits [{n},{k}]");
    b.run(Kernel::SoftmaxCrossEntropy, &label, bytes(2 * n * k + n + 2), || {
        linear::softmax_cross_entropy(gpu, &dlogits, &loss, &correct, &logits, &labels)
    })?;

    // One SGD step over ResNet-20's 272,474 parameters (the kernel takes them in fours, as the
    // arena holds them): reads weight, velocity, grad; writes weight and velocity.
    let len = 272_476;
    let (weight, velocity, grad) = (b.random(&[len])?, b.random(&[len])?, b.random(&[len])?);
    let label = format!("ResNet-20 params: [{len}]");
    b.run(Kernel::Sgd, &label, bytes(5 * len), || {
        sgd::sgd(gpu, &weight, &velocity, &grad, Sgd { lr: 0.1, momentum: 0.9, weight_decay: 5e-4 })
    })?;
    Ok(())
}
