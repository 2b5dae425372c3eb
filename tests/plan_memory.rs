//! Where a training plan's memory goes: the backward reuses the buffers of dead activations, so it
//! adds little beyond what the forward saves for it (BENCHMARKS.md has the figures).

mod common;

use common::gpus;
use resnet_wgpu::layers::SgdParams;
use resnet_wgpu::resnet::{Arch, ResNet, Shortcut, TrainStep};

#[test]
fn the_backward_adds_little_to_what_the_forward_saves() {
    let gpu = &gpus()[0];
    let sgd = SgdParams { len: 0, lr: 0.1, momentum: 0.9, weight_decay: 1e-4 };
    for (name, shortcut, share) in
        [("resnet20", Shortcut::A, 10), ("resnet20", Shortcut::B, 10), ("plain20", Shortcut::A, 5)]
    {
        let model = ResNet::new(gpu, Arch::cifar(name, shortcut).unwrap()).unwrap();
        let before = gpu.allocated_bytes();
        let step = TrainStep::new(gpu, &model, 32, sgd).unwrap();
        let m = step.memory;
        assert_eq!(m.saved + m.spare + m.backward, gpu.allocated_bytes() - before, "{name}: {m:?}");
        // Gradients take the buffers of dead activations; the backward adds one where a stage's
        // first gradient is wider than anything dead (and, in plain nets, a second one there).
        assert!(
            m.backward * share < m.saved,
            "{name} ({shortcut:?}): the backward adds {} bytes, more than 1/{share} of the {} saved",
            m.backward,
            m.saved
        );
    }
}
