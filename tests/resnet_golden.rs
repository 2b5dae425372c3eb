//! A CIFAR ResNet-8 training step on the GPU against PyTorch (f64) on the same weights and batch:
//! logits, loss, every parameter gradient, the updated BN running statistics, and the parameters
//! after one and two SGD steps; with option-A and option-B shortcuts and without (plain8), and a
//! small network of the ImageNet design (7x7 stem, max pool, bottleneck blocks).
//! Fixtures: tests/fixtures/make_resnet8_golden.py.

mod common;

use std::collections::HashMap;

use common::conv_variants;
use resnet_wgpu::model::{Arch, BlockKind, ResNet, Shortcut};
use resnet_wgpu::ops::sgd::Sgd;
use resnet_wgpu::plan::{TrainStep, Trained};
use safetensors::SafeTensors;

fn fixture(file: &str) -> HashMap<String, Vec<f32>> {
    let bytes = std::fs::read(format!("{}/tests/fixtures/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let tensors = SafeTensors::deserialize(&bytes).unwrap();
    tensors
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let dtype = view.dtype();
            let values = view.data().chunks_exact(4).map(|b| match dtype {
                safetensors::Dtype::F32 => f32::from_le_bytes(b.try_into().unwrap()),
                safetensors::Dtype::I32 => i32::from_le_bytes(b.try_into().unwrap()) as f32,
                other => panic!("unexpected dtype {other:?}"),
            });
            (name, values.collect())
        })
        .collect()
}

/// Worst |gpu - torch| relative to the largest |torch| of the tensor.
fn compare(what: &str, gpu: &[f32], torch: &[f32], bound: f32) -> f32 {
    assert_eq!(gpu.len(), torch.len(), "{what}: length");
    let scale = torch.iter().fold(1e-3f32, |m, x| m.max(x.abs()));
    let err = gpu.iter().zip(torch).map(|(g, t)| (g - t).abs()).fold(0.0, f32::max) / scale;
    assert!(err <= bound, "{what}: off by {err:e} of its largest value (bound {bound:e})");
    err
}

#[test]
fn resnet8_training_step_matches_pytorch() {
    training_step_matches_pytorch(Arch::cifar("resnet8", Shortcut::A).unwrap(), "resnet8_golden.safetensors");
}

#[test]
fn resnet8_option_b_training_step_matches_pytorch() {
    training_step_matches_pytorch(Arch::cifar("resnet8", Shortcut::B).unwrap(), "resnet8b_golden.safetensors");
}

#[test]
fn plain8_training_step_matches_pytorch() {
    training_step_matches_pytorch(Arch::cifar("plain8", Shortcut::A).unwrap(), "plain8_golden.safetensors");
}

#[test]
fn bottleneck_training_step_matches_pytorch() {
    // torchvision's design (7x7/2 stem, max pool, bottlenecks with the stride on the 3x3,
    // projections where the shape changes), small enough for a test: 32x32 images, two stages.
    let arch = Arch {
        name: "bottleneck".into(),
        imagenet: true,
        block: BlockKind::Bottleneck,
        stages: vec![(1, 4), (2, 8)],
        shortcut: Shortcut::B,
        classes: 10,
        image: 32,
    };
    training_step_matches_pytorch(arch, "bottleneck_golden.safetensors");
}

fn training_step_matches_pytorch(arch: Arch, file: &str) {
    let golden = fixture(file);
    let subset = |prefix: &str| -> HashMap<String, Vec<f32>> {
        golden.iter().filter_map(|(k, v)| Some((k.strip_prefix(prefix)?.to_string(), v.clone()))).collect()
    };
    // Every conv path, the other kernels the CPU adapters' way (batch norm a channel a workgroup,
    // the max pool and the option-A shortcut a row an invocation) and the GPUs' way (batch norm in
    // chunks, small ones so that every layer has several a channel; an element an invocation).
    let settings = [(None, false), (Some(44), true)];
    let variants = conv_variants().iter().flat_map(|g| settings.map(|(c, e)| g.with_bn_chunk(c).with_per_element(e)));
    for gpu in variants {
        let gpu = &gpu;
        let model = ResNet::new(gpu, arch.clone()).unwrap();
        let names = arch.parameters();
        assert_eq!(names.len(), subset("param.").len(), "the fixture and the model list the same parameters");
        model.load(gpu, &subset("param.")).unwrap();
        model.load(gpu, &subset("buffer.")).unwrap();
        let sgd = Sgd { lr: 0.1, momentum: 0.9, weight_decay: 1e-4 };
        let mut step = TrainStep::new(gpu, &model, 4, sgd, Trained::ALL).unwrap();
        gpu.write(&step.input, &golden["input"]);
        gpu.write(&step.labels, &golden["labels"].iter().map(|&l| l as u32).collect::<Vec<u32>>());
        step.run(gpu, 0, 0.1).unwrap();

        let conv = resnet_wgpu::ops::conv::tune::choice(gpu).unwrap();
        let split = if gpu.per_element { "an element" } else { "a row" };
        let on = format!(
            "{} ({:?}) on {} ({:?}, {conv} convs, batch norm chunks {:?}, pools and shortcuts {split} an invocation)",
            arch.name, arch.shortcut, gpu.info.name, gpu.info.backend, gpu.bn_chunk
        );
        compare(&format!("logits {on}"), &gpu.read(&step.logits).unwrap(), &golden["logits"], 1e-5);
        compare(&format!("loss {on}"), &gpu.read(&step.loss).unwrap(), &golden["loss"], 1e-5);
        let mut worst = 0.0f32;
        for (name, _) in &names {
            worst = worst.max(compare(
                &format!("grad {name} {on}"),
                &gpu.read(model.grads.get(name)).unwrap(),
                &golden[&format!("grad.{name}")],
                1e-4,
            ));
            compare(
                &format!("step 1 {name} {on}"),
                &gpu.read(model.params.get(name)).unwrap(),
                &golden[&format!("step1.{name}")],
                1e-5,
            );
        }
        for (name, _) in arch.buffers() {
            compare(
                &format!("{name} {on}"),
                &gpu.read(model.buffers.get(&name)).unwrap(),
                &golden[&format!("buffer_after.{name}")],
                1e-5,
            );
        }
        eprintln!("worst gradient error {on}: {worst:e} of the tensor's largest value");

        step.run(gpu, 1, 0.1).unwrap();
        for (name, _) in &names {
            compare(
                &format!("step 2 {name} {on}"),
                &gpu.read(model.params.get(name)).unwrap(),
                &golden[&format!("step2.{name}")],
                1e-5,
            );
        }
    }
}
