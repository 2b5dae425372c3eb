//! Reads the state dicts that `torch.save(model.state_dict(), path)` writes (the zip format of
//! PyTorch >= 1.6, which is also the format of torchvision's downloadable weights such as
//! `resnet50-0676ba61.pth`), without Python.
//!
//! Such a file is a zip archive of *stored* (uncompressed) entries under one top folder whose name
//! varies (`archive/`, `resnet50-0676ba61/`, ...):
//!
//! ```text
//! <top>/data.pkl      a pickle (protocol 2) of the state dict; tensors refer to storages by key
//! <top>/data/<key>    the raw little-endian bytes of each storage
//! <top>/byteorder     "little" (absent in files from older versions, which were little-endian)
//! ```
//!
//! The pickle is run by a small virtual machine that knows only what state dicts use: the opcodes
//! of protocol 2 (plus FRAME, SHORT_BINUNICODE, STACK_GLOBAL and MEMOIZE of protocol 4), the
//! globals `collections.OrderedDict`, `torch._utils._rebuild_tensor_v2`,
//! `torch._utils._rebuild_parameter[_with_state]` and the `torch.*Storage` types. Anything else is
//! an error naming the opcode or global and the file, so a pickle can never run code or make the
//! reader panic. Every tensor is returned as f32 values in row-major (contiguous) order, whatever
//! its strides, storage offset and storage type were.
//!
//! A hostile file cannot make the reader take more memory than a small multiple of its own size:
//! every size it declares is checked against what it holds before anything is allocated.
//! - Zip entries are read whole, once each, and together may not declare more bytes than the file
//!   has (so overlapping entries cannot multiply it).
//! - The pickle machine shares values (a memo fetch is a reference, not a copy), nests at most
//!   [`MAX_DEPTH`] deep, and copies at most one value per pickle byte plus [`COPY_ALLOWANCE`] (a
//!   memoized list changed after it was stored is copied; so are a tensor's size and stride).
//! - Tensors are checked before any storage is read: each has at most [`MAX_TENSOR_ELEMENTS`]
//!   elements, and all of them together at most [`OUTPUT_BYTES_PER_FILE_BYTE`] bytes of f32 per byte
//!   of file plus [`OUTPUT_ALLOWANCE`]. A tensor need not lie within its storage's size (an expanded
//!   tensor has stride 0 over one element), so the bound is on what is returned, not on the ratio.
//!
//! So the peak is the file's size (storages and pickle), the pickle machine's values (24 bytes
//! each, at most a few per byte of pickle, as in Python's own unpickler) and the f32 values
//! returned, at most 16 times the file plus 64 MiB.

use std::collections::HashMap;

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::rc::Rc;

use anyhow::{Context, Result, bail, ensure};
use zip::ZipArchive;

use pickle::{Unpickler, Value};
use view::{element_count, gather, show_shape};

mod pickle;
mod view;

/// One tensor of a state dict: `(name, shape, values)`, values in row-major order.
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// The most elements one tensor may have: 2^31, 8 GiB as f32, beyond any buffer this program
/// binds. A checked limit, so a size such as [2^31, 2^31] is an error rather than an allocation.
pub const MAX_TENSOR_ELEMENTS: usize = 1 << 31;

/// All tensors returned take at most this many bytes (4 per element, plus their names) per byte of
/// the file, plus [`OUTPUT_ALLOWANCE`]. Every plain tensor fits in 4 (an f32 storage returns its
/// own size, an int8 one four times it); 16 leaves room for a storage viewed several times over
/// (tied weights, `shared_a`/`shared_b` in the fixture).
pub const OUTPUT_BYTES_PER_FILE_BYTE: u64 = 16;

/// The fixed part of the output budget: 64 MiB (16 Mi f32 values) for expanded (stride-0) tensors
/// and other views that return more than their storage holds, however small the file.
pub const OUTPUT_ALLOWANCE: u64 = 64 << 20;

/// How deep tuples, lists and dicts may nest in the pickle. A state dict nests 3 deep; Python's own
/// recursion limit (1000) bounds what `pickle.dump` can write. Dropping a value recurses once per
/// level, so this also keeps the drop of a hostile value off the end of the stack.
pub const MAX_DEPTH: usize = 1000;

/// Values the pickle machine may copy rather than share: one per byte of pickle plus this many.
/// A state dict copies one per 30 bytes or so (each tensor's size and stride).
pub const COPY_ALLOWANCE: usize = 1 << 20;

/// Reads every tensor of a state dict saved by `torch.save` in the zip format, in the order of the
/// dict: `(name, shape, values)`, values in row-major order (a 0-dim tensor has shape `[]` and one
/// value).
///
/// Floating storages (f32, f16, bf16, f64) convert to the nearest f32 (f16 and bf16 exactly).
/// Integer and bool tensors are returned too, converted to f32: BatchNorm's `num_batches_tracked`
/// (int64) is one, and the caller decides whether to use it. Integers convert exactly up to
/// 2^24 in magnitude and round to the nearest f32 beyond.
///
/// Errors name the file and say what is wrong: not a zip archive (a legacy pre-1.6 `.pth`, or not
/// a checkpoint at all), no `data.pkl`, a pickle opcode or global this reader does not know, a
/// top-level value that is not a tensor (a training checkpoint that wraps the state dict), a
/// tensor that would read past the end of its storage (a truncated file; the tensor is named), or
/// sizes beyond the limits of the module documentation (the tensor or entry is named).
pub fn read_state_dict(path: &Path) -> Result<Vec<NamedTensor>> {
    let shown = path.display();
    let file = File::open(path).with_context(|| format!("cannot open {shown}"))?;
    let file_len = file.metadata().with_context(|| format!("cannot read the size of {shown}"))?.len();
    let zip = ZipArchive::new(BufReader::new(file)).with_context(|| {
        format!(
            "{shown} is not a zip archive (or is truncated): only the zip format of torch.save \
             (PyTorch >= 1.6) is read; re-save a legacy checkpoint with \
             `torch.save(torch.load(p), p)` in a recent torch"
        )
    })?;
    let mut archive = Archive { zip, unread: file_len };

    // data.pkl sits in the top folder, whose name varies; take the shallowest one.
    let pkl_name = archive
        .zip
        .file_names()
        .filter_map(|n| n.ok())
        .filter(|n| n == "data.pkl" || n.ends_with("/data.pkl"))
        .min_by_key(|n| n.matches('/').count())
        .map(|n| n.into_owned())
        .with_context(|| format!("{shown} is a zip archive but holds no data.pkl, so it is not a torch.save file"))?;
    let prefix = &pkl_name[..pkl_name.len() - "data.pkl".len()];

    if let Some(order) = archive
        .read_if_present(&format!("{prefix}byteorder"))
        .with_context(|| format!("cannot read {prefix}byteorder in {shown}"))?
    {
        ensure!(
            order == b"little",
            "{shown} was saved on a {:?}-endian machine; only little-endian files are read",
            String::from_utf8_lossy(&order[..order.len().min(16)])
        );
    }

    let pkl = archive.read(&pkl_name).with_context(|| format!("in {shown}"))?;
    let top = Unpickler::new(&pkl).run().with_context(|| format!("cannot unpickle {pkl_name} in {shown}"))?;
    drop(pkl);
    let Value::Dict(items) = top else {
        bail!("{shown} holds {}, not a state dict (a dict of tensors)", top.kind());
    };

    // Every entry and size is checked before any storage is read or any value allocated.
    let budget = OUTPUT_BYTES_PER_FILE_BYTE.saturating_mul(file_len).saturating_add(OUTPUT_ALLOWANCE);
    let mut output_bytes = 0u64;
    let mut tensors = Vec::with_capacity(items.items.len());
    for (key, value) in items.items.iter() {
        let Value::Str(name) = key else {
            bail!("{shown}: the state dict has {} as a key; keys must be strings", key.kind());
        };
        // Messages show at most 200 bytes of a name.
        let shown_name = clip(name, 200);
        let Value::Tensor(tensor) = value else {
            bail!(
                "{shown}: entry '{shown_name}' is {}, not a tensor; if this is a training checkpoint, \
                 save the state dict it holds alone (e.g. `torch.save(ckpt['model'], p)`)",
                value.kind()
            );
        };
        let count = element_count(&tensor.size).with_context(|| format!("tensor '{shown_name}' in {shown}"))?;
        output_bytes = output_bytes.saturating_add(4 * count as u64 + name.len() as u64);
        ensure!(
            output_bytes <= budget,
            "{shown}: with tensor '{shown_name}' (size {}, {count} elements) the tensors take {output_bytes} \
             bytes as f32, more than the {budget} this reader allows for a file of {file_len} bytes \
             ({OUTPUT_BYTES_PER_FILE_BYTE} per byte + {} MiB); every view of a storage and every \
             expanded (stride-0) tensor counts in full",
            show_shape(&tensor.size),
            OUTPUT_ALLOWANCE >> 20
        );
        tensors.push((name, shown_name, tensor));
    }

    // Storages are read once each: several tensors may be views of one storage.
    let mut storages: HashMap<Rc<str>, Vec<u8>> = HashMap::new();
    let mut out = Vec::with_capacity(tensors.len());
    for (name, shown_name, tensor) in tensors {
        let key = &tensor.storage.key;
        if !storages.contains_key(key) {
            let entry = format!("{prefix}data/{key}");
            let bytes = archive.read(&entry).with_context(|| format!("storage of tensor '{shown_name}' in {shown}"))?;
            storages.insert(key.clone(), bytes);
        }
        let values = gather(tensor, &storages[key]).with_context(|| format!("tensor '{shown_name}' in {shown}"))?;
        out.push((name.to_string(), tensor.size.clone(), values));
    }
    Ok(out)
}

/// The zip archive, and how many of the file's bytes its entries may still declare: entries are
/// read once each, so together they hold at most the file, whatever their headers claim.
struct Archive {
    zip: ZipArchive<BufReader<File>>,
    unread: u64,
}

impl Archive {
    fn read(&mut self, name: &str) -> Result<Vec<u8>> {
        self.read_if_present(name)?.with_context(|| format!("the archive has no entry {name}"))
    }

    fn read_if_present(&mut self, name: &str) -> Result<Option<Vec<u8>>> {
        let full_name = name;
        // Messages show at most 200 bytes of a name (a storage key comes from the pickle).
        let name = clip(name, 200);
        let mut entry = match self.zip.by_name(full_name) {
            Ok(entry) => entry,
            Err(zip::result::ZipError::FileNotFound) => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot open entry {name}")),
        };
        // The declared size is checked before it sizes an allocation.
        let declared = entry.size();
        ensure!(
            declared <= self.unread,
            "entry {name} declares {declared} bytes, but the file has only {} bytes not yet read \
             (a corrupt archive, or entries that overlap)",
            self.unread
        );
        self.unread -= declared;
        let mut bytes = Vec::with_capacity(declared as usize);
        let corrupt = || format!("cannot read entry {name} (truncated or corrupt archive?)");
        (&mut entry).take(declared).read_to_end(&mut bytes).with_context(corrupt)?;
        ensure!(
            bytes.len() as u64 == declared,
            "entry {name} holds {} bytes of the {declared} it declares (truncated or corrupt archive?)",
            bytes.len()
        );
        // Reading on to the entry's end checks its CRC.
        ensure!(
            entry.read(&mut [0; 1]).with_context(corrupt)? == 0,
            "entry {name} holds more than the {declared} bytes it declares"
        );
        Ok(Some(bytes))
    }
}

/// The first `max` bytes of `s` or a little less (whole characters), for messages.
pub(super) fn clip(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
