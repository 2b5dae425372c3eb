//! resnet-wgpu: deep residual networks trained and run on the GPU through wgpu, with
//! hand-written WGSL compute shaders for the forward and backward pass of every layer.

/// Adapter and device selection, limits, tensors in GPU buffers, readback.
pub mod gpu;
/// Every WGSL kernel of `shaders/`, pipeline cache, prepared dispatches.
pub mod kernels;
/// One function per kernel: shape checks at plan time, then a prepared dispatch.
pub mod layers;
/// CPU twin (f64) of every kernel, for tests and self-checks.
pub mod reference;
/// ResNets (CIFAR and ImageNet): parameter arenas, planned training and evaluation steps.
pub mod resnet;
/// Datasets and inputs: CIFAR-10, downloads, photos.
pub mod data;
/// PNG plots of training curves.
pub mod plot;
/// PyTorch `.pth` checkpoints (zip + pickle) read without Python.
pub mod pth;
/// A seeded generator whose state fits in a checkpoint.
pub mod rng;
