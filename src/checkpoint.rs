//! Checkpoints and weight files: safetensors with torchvision's tensor names.
//!
//! Model tensors keep their `state_dict` names (`layer1.0.bn1.running_var`); the optimizer's
//! velocity is stored as `optimizer.velocity.<name>`, which no model name can collide with.
//! Progress (step, epoch, seed, configuration) and the normalisation live in the metadata.
//! Writes go to a temporary file in the same folder and are renamed over the target, so a
//! failure never leaves a half-written file in place of a good one.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::paths::write_atomic;

pub const VELOCITY: &str = "optimizer.velocity.";

/// Tensors by name (shape, values) and string metadata, as read from or written to a file.
#[derive(Clone, Debug, Default)]
pub struct Checkpoint {
    pub tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    pub metadata: HashMap<String, String>,
    /// Tensors of the file that hold no floating-point values, by name, with their dtype
    /// (`I64` for `num_batches_tracked`): not read, but named if a model expects them.
    pub not_float: BTreeMap<String, String>,
    /// Integer scalars (`num_batches_tracked`, which torchvision's `load_state_dict(strict=True)`
    /// expects of every BN), read and written as I64.
    pub integers: BTreeMap<String, i64>,
}

impl Checkpoint {
    /// Reads a safetensors file (f32, f16, bf16 or f64 tensors; integer tensors such as
    /// `num_batches_tracked` are skipped). A name the header lists twice is refused.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read weights file {}", path.display()))?;
        let what = || format!("{} is not a valid safetensors file", path.display());
        if let Some(name) = repeated_key(&bytes).with_context(what)? {
            bail!("{} lists tensor {name} twice; a weights file names each tensor once", path.display());
        }
        let (_, header) = SafeTensors::read_metadata(&bytes).with_context(what)?;
        let file = SafeTensors::deserialize(&bytes).with_context(what)?;
        let mut tensors = BTreeMap::new();
        let mut not_float = BTreeMap::new();
        let mut integers = BTreeMap::new();
        for (name, view) in file.tensors() {
            let data = view.data();
            let values: Vec<f32> = match view.dtype() {
                Dtype::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(),
                Dtype::F64 => data.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32).collect(),
                Dtype::F16 => data.chunks_exact(2).map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]]))).collect(),
                Dtype::BF16 => data
                    .chunks_exact(2)
                    .map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16))
                    .collect(),
                Dtype::I64 if view.shape().is_empty() => {
                    integers
                        .insert(name.clone(), i64::from_le_bytes(data.try_into().context("an I64 scalar of 8 bytes")?));
                    not_float.insert(name, "I64".into());
                    continue;
                }
                other => {
                    not_float.insert(name, format!("{other:?}"));
                    continue;
                }
            };
            tensors.insert(name, (view.shape().to_vec(), values));
        }
        Ok(Self { tensors, metadata: header.metadata().clone().unwrap_or_default(), not_float, integers })
    }

    /// Writes atomically: a temporary file beside `path`, then a rename over it.
    pub fn write(&self, path: &Path) -> Result<()> {
        let floats = self
            .tensors
            .iter()
            .map(|(name, (shape, values))| (name, Dtype::F32, shape.clone(), bytemuck::cast_slice(values).to_vec()));
        let integers = self.integers.iter().map(|(name, v)| (name, Dtype::I64, vec![], v.to_le_bytes().to_vec()));
        let bytes: Vec<_> = floats.chain(integers).collect();
        let views = bytes.iter().map(|(name, dtype, shape, data)| {
            (name.as_str(), TensorView::new(*dtype, shape.clone(), data).expect("shape matches the values"))
        });
        let serialized = safetensors::serialize(views, Some(self.metadata.clone()))?;
        write_atomic(path, &serialized)
    }

    /// Checks that every `expected` tensor is present with its shape and finite values, and that
    /// nothing else is there but optimizer state and `num_batches_tracked`; errors name `source`
    /// and the tensors.
    pub fn check(&self, expected: &[(String, Vec<usize>)], arch: &str, source: &Path) -> Result<()> {
        let file = source.display();
        if let Some((name, dtype)) = expected.iter().find_map(|(n, _)| self.not_float.get_key_value(n)) {
            bail!("{file}: {name} holds {dtype} values; {arch} expects floating-point ones (f32, f16, bf16 or f64)");
        }
        let missing: Vec<&str> =
            expected.iter().filter(|(n, _)| !self.tensors.contains_key(n)).map(|(n, _)| n.as_str()).collect();
        if !missing.is_empty() {
            let more = if missing.len() > 5 { format!(" and {} more", missing.len() - 5) } else { String::new() };
            bail!(
                "{file} does not hold {arch}'s {}{more}",
                missing.iter().take(5).copied().collect::<Vec<_>>().join(", ")
            );
        }
        for (name, shape) in expected {
            let found = &self.tensors[name].0;
            ensure!(found == shape, "{file}: {name} has shape {found:?}, {arch} expects {shape:?}");
        }
        let names = expected.iter().map(|(n, _)| n.as_str());
        if let Some((name, index, value)) = self.first_non_finite(names) {
            bail!("{file}: {name} holds {value} at index {index}; weights must be finite");
        }
        let known: std::collections::HashSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
        let unexpected: Vec<&str> = self
            .tensors
            .keys()
            .map(String::as_str)
            .filter(|n| !known.contains(n) && !n.starts_with(VELOCITY) && !n.ends_with("num_batches_tracked"))
            .collect();
        if !unexpected.is_empty() {
            bail!("{file} holds tensors {arch} does not have: {} (is it another model?)", unexpected.join(", "));
        }
        Ok(())
    }

    pub fn meta(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).map(String::as_str)
    }

    /// The first NaN or infinity among the tensors `names`: (name, flat index, value).
    pub fn first_non_finite<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Option<(&'a str, usize, f32)> {
        names.into_iter().find_map(|name| {
            let values = &self.tensors.get(name)?.1;
            values.iter().position(|v| !v.is_finite()).map(|i| (name, i, values[i]))
        })
    }
}

/// The first key that the header of safetensors `bytes` (a JSON object after its 8-byte length)
/// repeats: serde keeps the last of them silently. `None` also where there is no whole header,
/// which the safetensors reader then refuses.
fn repeated_key(bytes: &[u8]) -> Result<Option<String>> {
    let Some(len) = bytes.get(..8).map(|b| u64::from_le_bytes(b.try_into().unwrap())) else {
        return Ok(None);
    };
    let Some(header) = usize::try_from(len).ok().and_then(|len| bytes.get(8..8usize.checked_add(len)?)) else {
        return Ok(None);
    };
    struct FirstRepeat;
    impl<'de> serde::de::Visitor<'de> for FirstRepeat {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let (mut seen, mut repeated) = (std::collections::HashSet::new(), None);
            while let Some(key) = map.next_key::<String>()? {
                map.next_value::<serde::de::IgnoredAny>()?;
                if !seen.insert(key.clone()) && repeated.is_none() {
                    repeated = Some(key);
                }
            }
            Ok(repeated)
        }
    }
    use serde::Deserializer;
    Ok(serde_json::Deserializer::from_slice(header).deserialize_map(FirstRepeat)?)
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as i32;
    let frac = (h & 0x3ff) as u32;
    let bits = match exp {
        0 if frac == 0 => sign,
        0 => {
            return f32::from_bits(sign) + (if sign != 0 { -1.0 } else { 1.0 }) * frac as f32 * 2f32.powi(-24);
        }
        31 => sign | 0x7f80_0000 | (frac << 13),
        _ => sign | (((exp - 15 + 127) as u32) << 23) | (frac << 13),
    };
    f32::from_bits(bits)
}
