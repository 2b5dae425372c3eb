//! CIFAR ResNet-20 (He et al. 2015, option-B shortcuts) training and inference throughput on
//! burn's wgpu backend (fusion and autotune on): the outside reference of issue 6's target 1,
//! run on the same adapter as `resnet-wgpu bench --model resnet20 --shortcut b`. BENCHMARKS.md
//! has the figures side by side. A project of its own (burn is not a dependency of resnet-wgpu):
//!
//!     cd benches/burn && cargo build --release
//!     ./target/release/burnbench [--modes train,infer] [--batches 32,128] [--warmup 2] [--iters 5]
//!
//! A training step is forward, cross-entropy, backward and SGD (momentum 0.9, weight decay 1e-4),
//! timed on the wall clock until the loss is read back and the device synced; inference is the
//! forward in eval mode until the logits are read back. Images/s are medians over `--iters`.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, SgdConfig};
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::activation::relu;
use std::time::Instant;

#[derive(Module, Debug)]
struct ConvBn {
    conv: Conv2d,
    bn: BatchNorm,
}

impl ConvBn {
    fn new(cin: usize, cout: usize, k: usize, stride: usize, device: &Device) -> Self {
        let p = k / 2;
        let conv = Conv2dConfig::new([cin, cout], [k, k])
            .with_stride([stride, stride])
            .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
            .with_bias(false)
            .init(device);
        Self { conv, bn: BatchNormConfig::new(cout).init(device) }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.bn.forward(self.conv.forward(x))
    }
}

#[derive(Module, Debug)]
struct BasicBlock {
    c1: ConvBn,
    c2: ConvBn,
    shortcut: Option<ConvBn>,
}

impl BasicBlock {
    fn new(cin: usize, cout: usize, stride: usize, device: &Device) -> Self {
        let shortcut =
            (stride != 1 || cin != cout).then(|| ConvBn::new(cin, cout, 1, stride, device));
        Self {
            c1: ConvBn::new(cin, cout, 3, stride, device),
            c2: ConvBn::new(cout, cout, 3, 1, device),
            shortcut,
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let out = self.c2.forward(relu(self.c1.forward(x.clone())));
        let sc = match &self.shortcut {
            Some(s) => s.forward(x),
            None => x,
        };
        relu(out + sc)
    }
}

#[derive(Module, Debug)]
struct ResNet20 {
    stem: ConvBn,
    blocks: Vec<BasicBlock>,
    pool: AdaptiveAvgPool2d,
    fc: Linear,
}

impl ResNet20 {
    fn new(device: &Device) -> Self {
        let mut blocks = Vec::new();
        let mut cin = 16;
        for (stage, width) in [16, 32, 64].into_iter().enumerate() {
            for i in 0..3 {
                let stride = if stage > 0 && i == 0 { 2 } else { 1 };
                blocks.push(BasicBlock::new(cin, width, stride, device));
                cin = width;
            }
        }
        Self {
            stem: ConvBn::new(3, 16, 3, 1, device),
            blocks,
            pool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            fc: LinearConfig::new(64, 10).init(device),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let mut x = relu(self.stem.forward(x));
        for b in &self.blocks {
            x = b.forward(x);
        }
        let x = self.pool.forward(x); // [N, 64, 1, 1]
        self.fc.forward(x.flatten(1, 3))
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

fn labels(n: usize, device: &Device) -> Tensor<1, Int> {
    // Simple LCG: deterministic pseudo-random labels in 0..10.
    let mut s: u64 = 12345;
    let v: Vec<i64> = (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 33) % 10) as i64
        })
        .collect();
    Tensor::from_data(TensorData::new(v, [n]), device)
}

fn bench_train(device: &Device, batch: usize, warmup: usize, iters: usize) {
    let ad = device.clone().autodiff();
    let mut model = ResNet20::new(&ad);
    let mut optim = SgdConfig::new()
        .with_momentum(Some(MomentumConfig::new().with_momentum(0.9).with_dampening(0.0)))
        .with_weight_decay(Some(WeightDecayConfig::new(1e-4)))
        .init();
    let loss_fn = CrossEntropyLossConfig::new().init(&ad);
    let x = Tensor::<4>::random([batch, 3, 32, 32], Distribution::Normal(0.0, 1.0), &ad);
    let y = labels(batch, &ad);

    let mut times = Vec::new();
    let mut last_loss = f32::NAN;
    for i in 0..warmup + iters {
        let t = Instant::now();
        let loss = loss_fn.forward(model.forward(x.clone()), y.clone());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(0.1, model, grads);
        // Reading the loss back flushes the queue; sync makes sure the update ran too.
        last_loss = loss.into_scalar::<f32>();
        device.sync().expect("device sync");
        let dt = t.elapsed().as_secs_f64();
        if i >= warmup {
            times.push(batch as f64 / dt);
        }
    }
    assert!(last_loss.is_finite(), "non-finite loss {last_loss}");
    println!(
        "burn train batch {batch}: {:.1} images/s (median of {iters}; last loss {last_loss:.4})",
        median(times)
    );
}

fn bench_infer(device: &Device, batch: usize, warmup: usize, iters: usize) {
    // Built on the autodiff device, then `valid()` moves it to the inner backend in eval mode.
    let model = ResNet20::new(&device.clone().autodiff()).valid();
    let x = Tensor::<4>::random([batch, 3, 32, 32], Distribution::Normal(0.0, 1.0), device);
    let mut times = Vec::new();
    let mut out = None;
    for i in 0..warmup + iters {
        let t = Instant::now();
        out = Some(model.forward(x.clone()).into_data());
        let dt = t.elapsed().as_secs_f64();
        if i >= warmup {
            times.push(batch as f64 / dt);
        }
    }
    let logits = out.unwrap().try_to_vec::<f32>().unwrap();
    assert!(logits.len() == batch * 10 && logits.iter().all(|v| v.is_finite()));
    println!("burn infer batch {batch}: {:.1} images/s (median of {iters})", median(times));
}

fn main() {
    let mut modes = vec!["train".to_string(), "infer".to_string()];
    let mut batches = vec![32usize, 128];
    let (mut warmup, mut iters) = (2usize, 5usize);
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let val = pair.get(1).expect("missing value for flag");
        match pair[0].as_str() {
            "--modes" => modes = val.split(',').map(String::from).collect(),
            "--batches" => batches = val.split(',').map(|s| s.parse().unwrap()).collect(),
            "--warmup" => warmup = val.parse().unwrap(),
            "--iters" => iters = val.parse().unwrap(),
            f => panic!("unknown flag {f}; use --modes/--batches/--warmup/--iters"),
        }
    }

    let device = Device::wgpu(Default::default());
    match device.identity() {
        Some(id) => println!("burn device: {} [{}]", id.name, id.fingerprint),
        None => println!("burn device: {device:?}"),
    }
    for mode in &modes {
        for &batch in &batches {
            match mode.as_str() {
                "train" => bench_train(&device, batch, warmup, iters),
                "infer" => bench_infer(&device, batch, warmup, iters),
                m => panic!("unknown mode {m}"),
            }
        }
    }
}
