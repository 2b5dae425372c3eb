//! Where a training plan's memory goes: the backward reuses the buffers of dead activations, so it
//! adds next to nothing to what the forward saves for it (BENCHMARKS.md has the figures).

mod common;

use common::gpus;
use resnet_wgpu::model::{Arch, ResNet, Shortcut};
use resnet_wgpu::ops::sgd::Sgd;
use resnet_wgpu::plan::{TrainStep, Trained};

#[test]
fn the_backward_adds_little_to_what_the_forward_saves() {
    let gpu = &gpus()[0];
    let sgd = Sgd { lr: 0.1, momentum: 0.9, weight_decay: 1e-4 };
    for (name, shortcut) in [("resnet20", Shortcut::A), ("resnet20", Shortcut::B), ("plain20", Shortcut::A)] {
        let model = ResNet::new(gpu, Arch::cifar(name, shortcut).unwrap()).unwrap();
        let before = gpu.allocated_bytes();
        let step = TrainStep::new(gpu, &model, 32, sgd, Trained::ALL).unwrap();
        let m = step.memory;
        assert_eq!(m.saved + m.spare + m.backward, gpu.allocated_bytes() - before, "{name}: {m:?}");
        // Every gradient takes the buffer of a dead activation (most in place of the tensor it
        // is computed from); what is left is split-K scratch and the logits' gradient.
        assert!(
            m.backward * 20 < m.saved,
            "{name} ({shortcut:?}): the backward adds {} bytes, more than 1/20 of the {} saved",
            m.backward,
            m.saved
        );
    }
}
