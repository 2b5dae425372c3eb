//! Where a training plan's memory goes: the backward reuses the buffers of dead activations, so it
//! adds next to nothing to what the forward saves for it (BENCHMARKS.md has the figures).

mod common;

use common::gpus;
use resnet_wgpu::model::{Arch, ResNet, Shortcut};
use resnet_wgpu::ops::sgd::Sgd;
use resnet_wgpu::plan::{TrainStep, Trained};

#[test]
fn the_backward_adds_little_to_what_the_forward_saves() {
    let sgd = Sgd { lr: 0.1, momentum: 0.9, weight_decay: 1e-4 };
    let models = [("resnet20", Shortcut::A), ("resnet20", Shortcut::B), ("plain20", Shortcut::A)];
    // Batch norm a channel a workgroup, and in chunks, whose scratch the layers share.
    for (chunk, (name, shortcut)) in [None, Some(4096)].into_iter().flat_map(|c| models.map(|m| (c, m))) {
        let gpu = &gpus()[0].with_bn_chunk(chunk);
        let model = ResNet::new(gpu, Arch::cifar(name, shortcut).unwrap()).unwrap();
        let before = gpu.allocated_bytes();
        let step = TrainStep::new(gpu, &model, 32, sgd, Trained::ALL).unwrap();
        let m = step.memory;
        assert_eq!(m.saved + m.spare + m.backward, gpu.allocated_bytes() - before, "{name}, {chunk:?}: {m:?}");
        // Every gradient takes the buffer of a dead activation (most in place of the tensor it
        // is computed from); what is left is split-K and batch norm scratch and the logits' gradient.
        assert!(
            m.backward * 20 < m.saved,
            "{name} ({shortcut:?}, batch norm chunks {chunk:?}): the backward adds {} bytes, more than 1/20 of \
             the {} saved",
            m.backward,
            m.saved
        );
    }
}
