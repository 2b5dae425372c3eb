//! resnet-wgpu: deep residual networks trained and run on the GPU through wgpu, with
//! hand-written WGSL compute shaders for the forward and backward pass of every layer.

/// Which conv path runs each pass of each layer shape, timed on the adapter and kept on disk.
pub mod autotune;
/// `bench` and `adapters`: timing, FLOP counts, peak microbenchmarks, JSON, compare.
pub mod bench;
/// Checkpoints and weight files: safetensors with torchvision names, atomic writes.
pub mod checkpoint;
/// Datasets and inputs: CIFAR-10, downloads, photos.
pub mod data;
/// Adapter and device selection, limits, tensors in GPU buffers, readback.
pub mod gpu;
/// `infer`: ImageNet classification of photos with torchvision weights.
pub mod infer;
/// Every WGSL kernel of `shaders/`, pipeline cache, prepared dispatches.
pub mod kernels;
/// One function per kernel: shape checks at plan time, then a prepared dispatch.
pub mod layers;
/// PNG plots of training curves.
pub mod plot;
/// PyTorch `.pth` checkpoints (zip + pickle) read without Python.
pub mod pth;
/// CPU twin (f64) of every kernel, for tests and self-checks.
pub mod reference;
/// ResNets (CIFAR and ImageNet): parameter arenas, planned training and evaluation steps.
pub mod resnet;
/// A seeded generator whose state fits in a checkpoint.
pub mod rng;
/// `train cifar10` and `eval cifar10`: the paper's recipe, checkpoints, logs.
pub mod train;
