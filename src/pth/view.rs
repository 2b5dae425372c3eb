//! A tensor as a strided view of a storage, and the gather of its elements in row-major order.

use std::rc::Rc;

use anyhow::{Context, Result, bail, ensure};

use super::{MAX_TENSOR_ELEMENTS, clip};

/// Element types of `torch.*Storage`, named as torch names them in the pickle.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Dtype {
    F32,
    F16,
    BF16,
    F64,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl Dtype {
    pub(super) fn from_storage_type(name: &str) -> Option<Dtype> {
        Some(match name {
            "FloatStorage" => Dtype::F32,
            "HalfStorage" => Dtype::F16,
            "BFloat16Storage" => Dtype::BF16,
            "DoubleStorage" => Dtype::F64,
            "LongStorage" => Dtype::I64,
            "IntStorage" => Dtype::I32,
            "ShortStorage" => Dtype::I16,
            "CharStorage" => Dtype::I8,
            "ByteStorage" => Dtype::U8,
            "BoolStorage" => Dtype::Bool,
            _ => return None,
        })
    }

    pub(super) fn size(self) -> usize {
        match self {
            Dtype::F64 | Dtype::I64 => 8,
            Dtype::F32 | Dtype::I32 => 4,
            Dtype::F16 | Dtype::BF16 | Dtype::I16 => 2,
            Dtype::I8 | Dtype::U8 | Dtype::Bool => 1,
        }
    }

    /// Decodes one little-endian element (`bytes.len() == self.size()`) to the nearest f32.
    fn decoder(self) -> fn(&[u8]) -> f32 {
        match self {
            Dtype::F32 => |b| f32::from_le_bytes(b.try_into().unwrap()),
            Dtype::F16 => |b| f16_to_f32(u16::from_le_bytes(b.try_into().unwrap())),
            Dtype::BF16 => |b| f32::from_bits((u16::from_le_bytes(b.try_into().unwrap()) as u32) << 16),
            Dtype::F64 => |b| f64::from_le_bytes(b.try_into().unwrap()) as f32,
            Dtype::I64 => |b| i64::from_le_bytes(b.try_into().unwrap()) as f32,
            Dtype::I32 => |b| i32::from_le_bytes(b.try_into().unwrap()) as f32,
            Dtype::I16 => |b| i16::from_le_bytes(b.try_into().unwrap()) as f32,
            Dtype::I8 => |b| b[0] as i8 as f32,
            Dtype::U8 => |b| b[0] as f32,
            Dtype::Bool => |b| (b[0] != 0) as u8 as f32,
        }
    }
}

/// IEEE binary16 to f32; exact (every f16 is an f32), NaN payloads kept.
fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h as u32) >> 15) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    match exp {
        // Zero and subnormals: man * 2^-24, exact in f32.
        0 => f32::from_bits((man as f32 * 2f32.powi(-24)).to_bits() | sign),
        // Infinities and NaNs.
        0x1f => f32::from_bits(sign | 0x7f80_0000 | (man << 13)),
        // Normal: rebias the exponent from 15 to 127.
        _ => f32::from_bits(sign | ((exp + 127 - 15) << 23) | (man << 13)),
    }
}

/// A storage as the pickle's persistent id names it: ('storage', torch.FloatStorage, key,
/// location, numel). `numel` counts elements of `dtype`; the bytes are in `data/<key>`.
#[derive(Clone, Debug)]
pub(super) struct Storage {
    pub(super) dtype: Dtype,
    pub(super) key: Rc<str>,
    pub(super) numel: usize,
}

/// A strided view of a storage, as `_rebuild_tensor_v2` receives it; offset and strides count
/// elements.
#[derive(Clone, Debug)]
pub(super) struct Tensor {
    pub(super) storage: Rc<Storage>,
    pub(super) offset: usize,
    pub(super) size: Vec<usize>,
    pub(super) stride: Vec<usize>,
}

/// The number of elements of a tensor of this size, at most [`MAX_TENSOR_ELEMENTS`].
pub(super) fn element_count(size: &[usize]) -> Result<usize> {
    if size.contains(&0) {
        return Ok(0);
    }
    let count = size.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    match count {
        Some(n) if n <= MAX_TENSOR_ELEMENTS => Ok(n),
        Some(n) => bail!(
            "size {} has {n} elements, more than the {MAX_TENSOR_ELEMENTS} (2^31) one tensor may have",
            show_shape(size)
        ),
        None => bail!("size {} has more elements than a usize counts (the product overflows)", show_shape(size)),
    }
}

/// A size or stride for a message, its first 8 dimensions at most.
pub(super) fn show_shape(dims: &[usize]) -> String {
    match dims {
        [first @ .., _] if dims.len() > 8 => format!("{:?} and {} more", &first[..8], dims.len() - 8),
        _ => format!("{dims:?}"),
    }
}

/// Copies the elements of a strided view out of its storage bytes, in row-major order.
pub(super) fn gather(t: &Tensor, bytes: &[u8]) -> Result<Vec<f32>> {
    let Storage { dtype, ref key, numel } = *t.storage;
    ensure!(
        t.size.len() == t.stride.len(),
        "size {} and stride {} have different ranks",
        show_shape(&t.size),
        show_shape(&t.stride)
    );
    let count = element_count(&t.size)?;
    if count == 0 {
        return Ok(Vec::new());
    }
    // Dimensions of size 1 move nothing, whatever their stride; without them every dimension
    // has size >= 2, so there are at most 31 and the odometer below steps in constant time.
    let dims: Vec<(usize, usize)> =
        t.size.iter().copied().zip(t.stride.iter().copied()).filter(|&(d, _)| d != 1).collect();
    // The last element read lies at offset + sum (size_d - 1) * stride_d; it must lie inside
    // both the storage's declared numel and the bytes actually present.
    let last = dims
        .iter()
        .try_fold(t.offset, |i, &(d, s)| i.checked_add((d - 1).checked_mul(s)?))
        .context("the last element's index overflows")?;
    let elem = dtype.size();
    let present = bytes.len() / elem;
    ensure!(
        last < numel.min(present),
        "it reads element {last} of storage data/{} ({dtype:?}), which declares {numel} \
         elements and holds {present} ({} bytes): the file is truncated or corrupt",
        clip(key, 100),
        bytes.len()
    );

    let decode = dtype.decoder();
    let mut out = Vec::with_capacity(count);
    // An odometer over the multi-index; `pos` tracks offset + sum index_d * stride_d.
    let mut index = vec![0usize; dims.len()];
    let mut pos = t.offset;
    for _ in 0..count {
        out.push(decode(&bytes[pos * elem..(pos + 1) * elem]));
        // Wrapping arithmetic: stepping past the last element may overshoot; every index
        // actually read was bounds-checked above.
        for (i, &(d, s)) in index.iter_mut().zip(&dims).rev() {
            *i += 1;
            pos = pos.wrapping_add(s);
            if *i < d {
                break;
            }
            pos = pos.wrapping_sub(s.wrapping_mul(d));
            *i = 0;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DTYPES: [Dtype; 10] = [
        Dtype::F32,
        Dtype::F16,
        Dtype::BF16,
        Dtype::F64,
        Dtype::I64,
        Dtype::I32,
        Dtype::I16,
        Dtype::I8,
        Dtype::U8,
        Dtype::Bool,
    ];

    /// What a view reads, by definition: element offset + sum_d i_d * stride_d of the storage for
    /// every multi-index in row-major order, in exact (u128) arithmetic, as f32 bits. None where
    /// the view must be refused: an index outside the declared numel or the bytes present, more
    /// than MAX_TENSOR_ELEMENTS elements, or ranks that differ.
    fn naive(t: &Tensor, bytes: &[u8]) -> Option<Vec<u32>> {
        if t.size.len() != t.stride.len() {
            return None;
        }
        // An overflow of u128 is past the limit too.
        let count = t.size.iter().try_fold(1u128, |n, &d| n.checked_mul(d as u128)).unwrap_or(u128::MAX);
        let count = if t.size.contains(&0) { 0 } else { count };
        if count > MAX_TENSOR_ELEMENTS as u128 {
            return None;
        }
        let elem = t.storage.dtype.size();
        let bound = (t.storage.numel as u128).min((bytes.len() / elem) as u128);
        let decode = t.storage.dtype.decoder();
        let mut out = Vec::new();
        for flat in 0..count {
            // The multi-index of element `flat`, last dimension fastest.
            let (mut rest, mut at) = (flat, t.offset as u128);
            for (&d, &s) in t.size.iter().zip(&t.stride).rev() {
                at += (rest % d as u128) * s as u128;
                rest /= d as u128;
            }
            if at >= bound {
                return None;
            }
            let at = at as usize * elem;
            out.push(decode(&bytes[at..at + elem]).to_bits());
        }
        Some(out)
    }

    /// Dimensions: mostly small, sometimes huge (each huge one is past MAX_TENSOR_ELEMENTS, so
    /// a view either has none, is empty, or must be refused; the naive reference stays small).
    fn dim() -> impl Strategy<Value = usize> {
        prop_oneof![8 => 0usize..6, 1 => prop::sample::select(vec![(1usize << 31) + 1, 1 << 40, usize::MAX / 3, usize::MAX])]
    }

    fn stride() -> impl Strategy<Value = usize> {
        prop_oneof![8 => 0usize..9, 1 => prop::sample::select(vec![1usize << 31, 1 << 62, usize::MAX / 2, usize::MAX])]
    }

    fn offset() -> impl Strategy<Value = usize> {
        prop_oneof![8 => 0usize..40, 1 => prop::sample::select(vec![1usize << 62, usize::MAX - 2, usize::MAX])]
    }

    prop_compose! {
        fn view()(rank in 0usize..6, extra_stride in prop::bool::weighted(0.05))
                 (size in prop::collection::vec(dim(), rank),
                  stride in prop::collection::vec(stride(), rank + extra_stride as usize),
                  offset in offset(),
                  numel in prop_oneof![4 => 0usize..80, 1 => Just(usize::MAX)],
                  dtype in prop::sample::select(DTYPES.to_vec()),
                  bytes in prop::collection::vec(any::<u8>(), 0..160))
                 -> (Tensor, Vec<u8>) {
            let storage = Rc::new(Storage { dtype, key: "0".into(), numel });
            (Tensor { storage, offset, size, stride }, bytes)
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

        /// Any shape, stride and offset: gather reads exactly what the definition says, or
        /// refuses with an error; it never panics.
        #[test]
        fn gather_reads_what_the_definition_says_or_refuses((t, bytes) in view()) {
            let got = gather(&t, &bytes).ok().map(|v| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
            prop_assert_eq!(got, naive(&t, &bytes), "{:?}", t);
        }
    }
}
