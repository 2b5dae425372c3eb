//! A ResNet's tensors resident on the GPU: parameters in one arena with torchvision's
//! `state_dict` names (`layer2.0.bn1.weight`), gradients and SGD velocity in two more arenas of
//! the same layout (so the optimizer is one dispatch), BN running statistics in a fourth; and
//! their conversion to and from checkpoints.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, ensure};

use super::Arch;
use crate::checkpoint::{Checkpoint, VELOCITY};
use crate::gpu::{Gpu, Tensor};
use crate::rng::Rng;

/// Named tensors in one GPU buffer. A clone shares the buffer.
#[derive(Clone)]
pub struct Arena {
    /// The whole buffer as one flat tensor (what the optimizer walks).
    pub all: Tensor,
    pub names: Vec<String>,
    pub tensors: Vec<Tensor>,
    index: HashMap<String, usize>,
}

impl Arena {
    pub fn new(gpu: &Gpu, label: &str, specs: &[(String, Vec<usize>)]) -> Result<Self> {
        let shapes: Vec<Vec<usize>> = specs.iter().map(|(_, s)| s.clone()).collect();
        let (buffer, tensors) = gpu.arena(label, &shapes)?;
        let all = Tensor { shape: vec![(buffer.size() / 4) as usize], buffer: Arc::clone(&buffer), offset: 0 };
        let names: Vec<String> = specs.iter().map(|(n, _)| n.clone()).collect();
        let index = names.iter().enumerate().map(|(i, n)| (n.clone(), i)).collect();
        Ok(Self { all, names, tensors, index })
    }

    pub fn get(&self, name: &str) -> &Tensor {
        let i = self.index.get(name).unwrap_or_else(|| panic!("the model has no tensor named {name}"));
        &self.tensors[*i]
    }

    pub fn find(&self, name: &str) -> Option<&Tensor> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }
}

/// A ResNet's parameters, gradients, velocity and running statistics, resident on the GPU.
pub struct ResNet {
    pub arch: Arch,
    pub params: Arena,
    pub grads: Arena,
    pub velocity: Arena,
    pub buffers: Arena,
}

impl ResNet {
    /// Allocates the model with zero parameters and velocity, running statistics mean 0, variance 1.
    pub fn new(gpu: &Gpu, arch: Arch) -> Result<Self> {
        arch.check_fits(gpu, 0)?;
        let specs = arch.parameters();
        let buffers = Arena::new(gpu, "running statistics", &arch.buffers())?;
        for (name, t) in buffers.names.iter().zip(&buffers.tensors) {
            if name.ends_with("running_var") {
                gpu.write(t, &vec![1.0f32; t.len()]);
            }
        }
        Ok(Self {
            params: Arena::new(gpu, "parameters", &specs)?,
            grads: Arena::new(gpu, "gradients", &specs)?,
            velocity: Arena::new(gpu, "velocity", &specs)?,
            buffers,
            arch,
        })
    }

    /// Initialises the parameters as a fresh torchvision model: He-normal convs (fan-out, as
    /// torchvision), BN weight 1 and bias 0, fc PyTorch's default uniform(+-1/sqrt(fan_in)).
    pub fn init(&self, gpu: &Gpu, seed: u64) {
        let mut rng = Rng::new(seed);
        for (name, t) in self.params.names.iter().zip(&self.params.tensors) {
            let values: Vec<f32> = match (name.as_str(), t.shape.as_slice()) {
                ("fc.weight" | "fc.bias", _) => {
                    let bound = 1.0 / (self.arch.features() as f64).sqrt();
                    (0..t.len()).map(|_| ((2.0 * rng.uniform() - 1.0) * bound) as f32).collect()
                }
                (_, &[k, _, r, s]) => {
                    let std = (2.0 / (k * r * s) as f64).sqrt();
                    (0..t.len()).map(|_| (rng.normal() * std) as f32).collect()
                }
                (n, _) if n.ends_with(".weight") => vec![1.0; t.len()],
                _ => vec![0.0; t.len()],
            };
            gpu.write(t, &values);
        }
    }

    /// The parameter or running statistic of that name.
    pub fn tensor(&self, name: &str) -> Option<&Tensor> {
        self.params.find(name).or_else(|| self.buffers.find(name))
    }

    /// Overwrites the named parameters and running statistics; shapes are checked, names not in
    /// `values` keep their contents.
    pub fn load(&self, gpu: &Gpu, values: &HashMap<String, Vec<f32>>) -> Result<()> {
        for (name, data) in values {
            let tensor = self
                .tensor(name)
                .with_context(|| format!("the model {} has no tensor named {name}", self.arch.name))?;
            ensure!(
                data.len() == tensor.len(),
                "{name}: {} values given, shape {:?} holds {}",
                data.len(),
                tensor.shape,
                tensor.len()
            );
            gpu.write(tensor, data);
        }
        Ok(())
    }
}

impl ResNet {
    /// The model's tensors (parameters and running statistics), and with `optimizer` the SGD
    /// velocity, read back from the GPU.
    pub fn checkpoint(&self, gpu: &Gpu, optimizer: bool) -> Result<Checkpoint> {
        let mut tensors = BTreeMap::new();
        for arena in [&self.params, &self.buffers] {
            for (name, t) in arena.names.iter().zip(&arena.tensors) {
                tensors.insert(name.clone(), (t.shape.clone(), gpu.read(t)?));
            }
        }
        if optimizer {
            for (name, t) in self.velocity.names.iter().zip(&self.velocity.tensors) {
                tensors.insert(format!("{VELOCITY}{name}"), (t.shape.clone(), gpu.read(t)?));
            }
        }
        Ok(Checkpoint { tensors, ..Default::default() })
    }

    /// Loads every parameter and running statistic (and with `optimizer` the velocity) from `ck`,
    /// after checking that each is present with the right shape and that nothing unexpected is
    /// there. `source` names the file in errors. Nothing is written to the GPU unless all is well.
    pub fn restore(&self, gpu: &Gpu, ck: &Checkpoint, optimizer: bool, source: &Path) -> Result<()> {
        self.restore_except(gpu, ck, optimizer, &[], source)
    }

    /// [`ResNet::restore`] of every tensor but those named in `kept`, which `ck` must not hold
    /// and which keep their contents (a replaced fc layer).
    pub fn restore_except(
        &self,
        gpu: &Gpu,
        ck: &Checkpoint,
        optimizer: bool,
        kept: &[&str],
        source: &Path,
    ) -> Result<()> {
        let mut expected: Vec<(String, &crate::gpu::Tensor)> = Vec::new();
        for arena in [&self.params, &self.buffers] {
            let named = arena.names.iter().cloned().zip(&arena.tensors);
            expected.extend(named.filter(|(n, _)| !kept.contains(&n.as_str())));
        }
        if optimizer {
            expected.extend(self.velocity.names.iter().map(|n| format!("{VELOCITY}{n}")).zip(&self.velocity.tensors));
        }
        let shapes: Vec<(String, Vec<usize>)> = expected.iter().map(|(n, t)| (n.clone(), t.shape.clone())).collect();
        ck.check(&shapes, &self.arch.name, source)?;
        for (name, t) in &expected {
            gpu.write(t, &ck.tensors[name].1);
        }
        Ok(())
    }
}
