//! Shared by the GPU tests: the adapters to test on, seeded random data, and comparisons.
#![allow(dead_code)]

use std::sync::OnceLock;

use resnet_wgpu::gpu::{AdapterChoice, Gpu};

/// The backends every GPU test runs on: both adapters of the CI machine (lavapipe through Vulkan,
/// llvmpipe through GL) unless `RESNET_WGPU_TEST_BACKENDS` names others (e.g. `metal`).
/// A missing adapter fails the test with a message saying how to get one; nothing is skipped.
pub fn gpus() -> &'static [Gpu] {
    static GPUS: OnceLock<Vec<Gpu>> = OnceLock::new();
    GPUS.get_or_init(|| {
        let backends = std::env::var("RESNET_WGPU_TEST_BACKENDS").unwrap_or_else(|_| "vulkan,gl".into());
        backends
            .split(',')
            .map(|backend| {
                let gpu = Gpu::new(&AdapterChoice::backend(backend))
                    .unwrap_or_else(|e| panic!("GPU tests need an adapter on backend {backend}: {e:#}"));
                eprintln!("testing on {}", gpu.describe());
                gpu
            })
            .collect()
    })
}

/// Every test adapter twice, once per conv variant (workgroup-memory tiles and the direct path),
/// so both are checked wherever the tests run.
pub fn conv_variants() -> &'static [Gpu] {
    static GPUS: OnceLock<Vec<Gpu>> = OnceLock::new();
    GPUS.get_or_init(|| gpus().iter().flat_map(|g| [g.with_shared_tiles(true), g.with_shared_tiles(false)]).collect())
}

/// xorshift64*: a small seeded generator, so every run draws the same inputs.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    pub fn vec(&mut self, len: usize) -> Vec<f32> {
        (0..len).map(|_| self.uniform()).collect()
    }

    pub fn below(&mut self, n: u32) -> u32 {
        (self.next_u64() % n as u64) as u32
    }
}

pub fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// Asserts |gpu - cpu| <= atol + rtol * |cpu| everywhere, naming the first element that is off.
pub fn assert_close(what: &str, gpu: &[f32], cpu: &[f64], atol: f64, rtol: f64) {
    assert_eq!(gpu.len(), cpu.len(), "{what}: {} values from the GPU, {} from the CPU", gpu.len(), cpu.len());
    let mut worst = 0.0f64;
    for (i, (&g, &c)) in gpu.iter().zip(cpu).enumerate() {
        let err = (g as f64 - c).abs();
        assert!(
            err <= atol + rtol * c.abs(),
            "{what}: element {i} is {g} on the GPU, {c} on the CPU (bound {atol} + {rtol}*|cpu|)"
        );
        worst = worst.max(err);
    }
    assert!(gpu.iter().all(|x| x.is_finite()), "{what}: non-finite GPU output");
}
