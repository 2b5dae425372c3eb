//! Inputs a careless or hostile user may give: numeric flags out of range are refused when the
//! command line is parsed, naming the flag; networks and batches too large for the adapter are
//! refused before anything is built, with the figures.

mod common;

use std::process::Command;

use common::gpus;
use resnet_wgpu::model::{Arch, ResNet, Shortcut};
use resnet_wgpu::ops::sgd::Sgd;
use resnet_wgpu::plan::TrainStep;

/// Runs the binary with `args`; returns its exit code and stderr.
fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_resnet-wgpu")).args(args).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn numeric_flags_out_of_range_are_refused_naming_the_flag() {
    let cases: &[(&[&str], &str, &str)] = &[
        (
            &["eval", "cifar10", "--model", "resnet20", "--weights", "w.safetensors", "--batch-size", "0"],
            "--batch-size",
            "at least 1",
        ),
        (&["infer", "cat.jpg", "--resize", "0"], "--resize", "1..=4096"),
        (&["infer", "cat.jpg", "--top", "0"], "--top", "at least 1"),
        (&["train", "cifar10", "--lr=-0.1"], "--lr", "above 0"),
        (&["train", "cifar10", "--lr", "NaN"], "--lr", "finite"),
        (&["train", "cifar10", "--momentum", "1"], "--momentum", "[0, 1)"),
        (&["train", "cifar10", "--weight-decay=-1e-4"], "--weight-decay", "at least 0"),
        (&["train", "cifar10", "--epochs", "0"], "--epochs", "above 0"),
        (&["train", "cifar10", "--steps", "0"], "--steps", "at least 1"),
        (&["train", "cifar10", "--eval-every", "0"], "--eval-every", "at least 1"),
        (&["train", "cifar10", "--std", "0.2,0,0.2"], "--std", "above 0"),
        (&["train", "cifar10", "--mean", "0.5,0.5"], "--mean", "three"),
        (&["bench", "--batch", "8,0"], "--batch", "at least 1"),
        (&["bench", "--iters", "0"], "--iters", "at least 1"),
        (&["reproduce", "figure6", "--steps", "0"], "--steps", "at least 1"),
        (&["reproduce", "table6", "--test-images=-3"], "--test-images", "whole number"),
    ];
    for (args, flag, says) in cases {
        let (code, stderr) = run(args);
        assert_eq!(code, Some(2), "{args:?}: exit code {code:?}, stderr: {stderr}");
        assert!(
            stderr.contains(flag) && stderr.contains(says),
            "{args:?}: the error does not name {flag} and {says:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn networks_and_batches_too_large_are_refused_before_they_are_built() {
    let gpu = &gpus()[0];
    // 10^17 blocks a stage: listing its layers alone would take gigabytes.
    let huge = Arch::cifar("resnet600000000000000002", Shortcut::A).unwrap();
    let error = format!("{:#}", ResNet::new(gpu, huge).err().expect("a network of 10^22 parameters was built"));
    assert!(error.contains("resnet600000000000000002 has") && error.contains("parameters"), "{error}");

    let model = ResNet::new(gpu, Arch::cifar("resnet8", Shortcut::A).unwrap()).unwrap();
    let sgd = Sgd { lr: 0.1, momentum: 0.9, weight_decay: 0.0 };
    let error =
        format!("{:#}", TrainStep::new(gpu, &model, 100_000_000, sgd).err().expect("a batch of 10^8 was planned"));
    let fits = gpu.buffer_limit() / (4 * 16 * 32 * 32);
    assert!(
        error.contains("a batch of 100000000 needs")
            && error.contains(&format!("the largest batch that fits is {fits}")),
        "{error}"
    );
}
