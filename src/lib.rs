//! resnet-wgpu: deep residual networks trained and run on the GPU through wgpu, with
//! hand-written WGSL compute shaders for the forward and backward pass of every layer.
//!
//! Dependencies point one way: the commands (`train`, `infer`, `adapters`, `bench`, `reproduce`) use the plans
//! (`plan`), which use the model (`model`) and the ops (`ops`), which use the kernels
//! (`kernels`), which use the device (`gpu`). `tests/layers.rs` fails on any import cycle.

/// `adapters`: every adapter wgpu sees, and the one the other commands would pick.
pub mod adapters;
/// Value parsers for numeric flags (ranges refused at parse time).
pub mod args;
/// `bench`: timing, FLOP counts, self-check, peak microbenchmarks, tables, JSON, compare.
pub mod bench;
/// Checkpoints and weight files: safetensors with torchvision names.
pub mod checkpoint;
/// Datasets and inputs: CIFAR-10, downloads, photos.
pub mod data;
/// Adapter and device selection, limits, tensors in GPU buffers, timing, the tuning cache.
pub mod gpu;
/// `infer`: ImageNet classification of photos with torchvision weights.
pub mod infer;
/// Every WGSL kernel of `shaders/`, naga reflection, pipelines and prepared dispatches.
pub mod kernels;
/// ResNets: the architecture and its tensors on the GPU.
pub mod model;
/// One file per op family: shape checks at plan time, then a prepared dispatch.
pub mod ops;
/// Where files go: the cache folder, weights, atomic writes.
pub mod paths;
/// Training, evaluation and folded inference plans.
pub mod plan;
/// PNG plots of training curves.
pub mod plot;
/// PyTorch `.pth` checkpoints (zip + pickle) read without Python.
pub mod pth;
/// CPU twin (f64) of every kernel, for tests and self-checks.
pub mod reference;
/// `reproduce figure6|table6`: the paper's CIFAR-10 experiments, one command each.
pub mod reproduce;
/// A seeded generator whose state fits in a checkpoint.
pub mod rng;
/// `train cifar10` and `eval cifar10`: the paper's recipe, checkpoints, logs.
pub mod train;
