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
//! Memory stays within a small multiple of the file's size: entries are read no larger than the
//! file, values fetched again from the pickle's memo count against a budget of a few times the
//! pickle's length, and the tensors returned hold at most [`ELEMENTS_PER_BYTE`] elements per byte
//! of the file plus [`ELEMENTS_ALLOWANCE`] (tensors that `expand` a small storage may exceed their
//! bytes, within that allowance).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail, ensure};
use zip::ZipArchive;

/// One tensor of a state dict: `(name, shape, values)`, values in row-major order.
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// Elements the tensors read from a file may hold per byte of it: one byte of a `uint8` or bool
/// storage is one element.
pub const ELEMENTS_PER_BYTE: u64 = 1;
/// Elements the tensors of any file may hold beyond [`ELEMENTS_PER_BYTE`]: 2^26 (256 MiB as f32).
pub const ELEMENTS_ALLOWANCE: u64 = 1 << 26;
/// Values the pickle's memo may hand out again, per byte of the pickle, beyond 2^16.
const MEMO_VALUES_PER_BYTE: usize = 16;

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
/// top-level value that is not a tensor (a training checkpoint that wraps the state dict), or a
/// tensor that would read past the end of its storage (a truncated file; the tensor is named).
pub fn read_state_dict(path: &Path) -> Result<Vec<NamedTensor>> {
    let shown = path.display();
    let file = File::open(path).with_context(|| format!("cannot open {shown}"))?;
    let file_len = file.metadata().with_context(|| format!("cannot read {shown}"))?.len();
    let mut zip = ZipArchive::new(BufReader::new(file)).with_context(|| {
        format!(
            "{shown} is not a zip archive (or is truncated): only the zip format of torch.save \
             (PyTorch >= 1.6) is read; re-save a legacy checkpoint with \
             `torch.save(torch.load(p), p)` in a recent torch"
        )
    })?;

    // data.pkl sits in the top folder, whose name varies; take the shallowest one.
    let pkl_name = zip
        .file_names()
        .filter_map(|n| n.ok())
        .filter(|n| n == "data.pkl" || n.ends_with("/data.pkl"))
        .min_by_key(|n| n.matches('/').count())
        .map(|n| n.into_owned())
        .with_context(|| format!("{shown} is a zip archive but holds no data.pkl, so it is not a torch.save file"))?;
    let prefix = &pkl_name[..pkl_name.len() - "data.pkl".len()];

    if let Some(order) = read_entry_if_present(&mut zip, &format!("{prefix}byteorder"), file_len)
        .with_context(|| format!("cannot read {prefix}byteorder in {shown}"))?
    {
        ensure!(
            order == b"little",
            "{shown} was saved on a {:?}-endian machine; only little-endian files are read",
            String::from_utf8_lossy(&order)
        );
    }

    let pkl = read_entry(&mut zip, &pkl_name, file_len).with_context(|| format!("in {shown}"))?;
    let top = Unpickler::new(&pkl).run().with_context(|| format!("cannot unpickle {pkl_name} in {shown}"))?;
    let Value::Dict(items, _) = top else {
        bail!("{shown} holds {}, not a state dict (a dict of tensors)", top.kind());
    };

    // Storages are read once each: several tensors may be views of one storage.
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    let mut out = Vec::with_capacity(items.len());
    let budget = file_len.saturating_mul(ELEMENTS_PER_BYTE).saturating_add(ELEMENTS_ALLOWANCE);
    let mut elements = 0u64;
    for (key, value) in items {
        let Value::Str(name) = key else {
            bail!("{shown}: the state dict has {} as a key; keys must be strings", key.kind());
        };
        let Value::Tensor(tensor) = value else {
            bail!(
                "{shown}: entry '{name}' is {}, not a tensor; if this is a training checkpoint, \
                 save the state dict it holds alone (e.g. `torch.save(ckpt['model'], p)`)",
                value.kind()
            );
        };
        let count = tensor.size.iter().try_fold(1u64, |n, &d| n.checked_mul(d as u64)).unwrap_or(u64::MAX);
        elements = elements.saturating_add(count);
        ensure!(
            elements <= budget,
            "{shown}: with tensor '{name}' of size {:?} the tensors hold {elements} elements, more than a \
             file of {file_len} bytes may give ({budget}): it is corrupt or hostile",
            tensor.size
        );
        if !storages.contains_key(&tensor.storage.key) {
            let entry = format!("{prefix}data/{}", tensor.storage.key);
            let bytes = read_entry(&mut zip, &entry, file_len)
                .with_context(|| format!("storage of tensor '{name}' in {shown}"))?;
            storages.insert(tensor.storage.key.clone(), bytes);
        }
        let values =
            gather(&tensor, &storages[&tensor.storage.key]).with_context(|| format!("tensor '{name}' in {shown}"))?;
        out.push((name, tensor.size, values));
    }
    Ok(out)
}

fn read_entry(zip: &mut ZipArchive<BufReader<File>>, name: &str, file_len: u64) -> Result<Vec<u8>> {
    read_entry_if_present(zip, name, file_len)?.with_context(|| format!("the archive has no entry {name}"))
}

/// The entry's bytes; an entry that declares more bytes than the whole file holds (torch.save
/// stores its entries uncompressed) is refused before anything is allocated for it.
fn read_entry_if_present(zip: &mut ZipArchive<BufReader<File>>, name: &str, file_len: u64) -> Result<Option<Vec<u8>>> {
    let entry = match zip.by_name(name) {
        Ok(entry) => entry,
        Err(zip::result::ZipError::FileNotFound) => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot open entry {name}")),
    };
    ensure!(
        entry.size() <= file_len,
        "entry {name} declares {} bytes, more than the whole file's {file_len}: the archive is corrupt",
        entry.size()
    );
    let mut bytes = Vec::with_capacity(entry.size() as usize);
    entry
        .take(file_len)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read entry {name} (truncated or corrupt archive?)"))?;
    Ok(Some(bytes))
}

/// Element types of `torch.*Storage`, named as torch names them in the pickle.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Dtype {
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
    fn from_storage_type(name: &str) -> Option<Dtype> {
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

    fn size(self) -> usize {
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
struct Storage {
    dtype: Dtype,
    key: String,
    numel: usize,
}

/// A strided view of a storage, as `_rebuild_tensor_v2` receives it; offset and strides count
/// elements.
#[derive(Clone, Debug)]
struct Tensor {
    storage: Storage,
    offset: usize,
    size: Vec<usize>,
    stride: Vec<usize>,
}

/// Copies the elements of a strided view out of its storage bytes, in row-major order.
fn gather(t: &Tensor, bytes: &[u8]) -> Result<Vec<f32>> {
    let Storage { dtype, ref key, numel } = t.storage;
    ensure!(t.size.len() == t.stride.len(), "size {:?} and stride {:?} have different ranks", t.size, t.stride);
    let count = t.size.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).context("the element count overflows")?;
    if count == 0 {
        return Ok(Vec::new());
    }
    // The last element read lies at offset + sum (size_d - 1) * stride_d; it must lie inside
    // both the storage's declared numel and the bytes actually present.
    let last = t
        .size
        .iter()
        .zip(&t.stride)
        .try_fold(t.offset, |i, (&d, &s)| i.checked_add((d - 1).checked_mul(s)?))
        .context("the last element's index overflows")?;
    let elem = dtype.size();
    let present = bytes.len() / elem;
    ensure!(
        last < numel.min(present),
        "it reads element {last} of storage data/{key} ({dtype:?}), which declares {numel} \
         elements and holds {present} ({} bytes): the file is truncated or corrupt",
        bytes.len()
    );

    let decode = dtype.decoder();
    let mut out = Vec::with_capacity(count);
    // An odometer over the multi-index; `pos` tracks offset + sum index_d * stride_d.
    let rank = t.size.len();
    let mut index = vec![0usize; rank];
    let mut pos = t.offset;
    for _ in 0..count {
        out.push(decode(&bytes[pos * elem..(pos + 1) * elem]));
        // Wrapping arithmetic: a size-1 dimension may carry any stride, and stepping past the
        // last element may overshoot; every index actually read was bounds-checked above.
        for d in (0..rank).rev() {
            index[d] += 1;
            pos = pos.wrapping_add(t.stride[d]);
            if index[d] < t.size[d] {
                break;
            }
            pos = pos.wrapping_sub(t.stride[d].wrapping_mul(t.size[d]));
            index[d] = 0;
        }
    }
    Ok(out)
}

/// The callables and classes a state dict's pickle may name.
#[derive(Clone, Debug)]
enum Global {
    OrderedDict,
    RebuildTensorV2,
    RebuildParameter,
    RebuildParameterWithState,
    StorageType(Dtype),
}

impl Global {
    fn resolve(module: &str, name: &str) -> Result<Global> {
        Ok(match (module, name) {
            ("collections", "OrderedDict") => Global::OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensorV2,
            ("torch._utils", "_rebuild_parameter") => Global::RebuildParameter,
            ("torch._utils", "_rebuild_parameter_with_state") => Global::RebuildParameterWithState,
            ("torch", s) if Dtype::from_storage_type(s).is_some() => {
                Global::StorageType(Dtype::from_storage_type(s).unwrap())
            }
            _ => bail!(
                "the pickle names the global {module}.{name}, which this reader does not support \
                 (it rebuilds plain tensors of float, half, bfloat16, double, integer and bool \
                 storages held in an OrderedDict; _rebuild_tensor_v3 means a newer dtype)"
            ),
        })
    }
}

/// A value on the pickle machine's stack. Containers are copied, not shared (each copy counts
/// against the memo's budget): a memoized list or dict filled after BINPUT reads back empty from
/// BINGET. Pickles of state dicts never fetch a
/// container that way (each tensor gets its own hooks OrderedDict; only strings, globals and
/// whole tensors are fetched again), and the price is only a wrong value in data we ignore.
#[derive(Clone, Debug)]
enum Value {
    None,
    // Booleans and floats are only ever shown, in error messages (Debug).
    #[allow(dead_code)]
    Bool(bool),
    Int(i64),
    #[allow(dead_code)]
    Float(f64),
    Str(String),
    /// Containers carry their depth: 1 + the deepest container they hold.
    Tuple(Vec<Value>, usize),
    List(Vec<Value>, usize),
    Dict(Vec<(Value, Value)>, usize),
    Global(Global),
    Storage(Storage),
    Tensor(Tensor),
}

impl Value {
    /// The value's type with its article, for messages: "an int", "a dict".
    fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "a bool",
            Value::Int(_) => "an int",
            Value::Float(_) => "a float",
            Value::Str(_) => "a str",
            Value::Tuple(..) => "a tuple",
            Value::List(..) => "a list",
            Value::Dict(..) => "a dict",
            Value::Global(_) => "a class or function",
            Value::Storage(_) => "a storage",
            Value::Tensor(_) => "a tensor",
        }
    }

    fn tuple(items: Vec<Value>) -> Result<Value> {
        let depth = nested(&items)?;
        Ok(Value::Tuple(items, depth))
    }

    /// 0 for a scalar, else the container's depth.
    fn depth(&self) -> usize {
        match self {
            Value::Tuple(_, depth) | Value::List(_, depth) | Value::Dict(_, depth) => *depth,
            _ => 0,
        }
    }

    /// How many values this one holds, itself included, counted up to `limit` (without recursion).
    fn count(&self, limit: usize) -> usize {
        let (mut count, mut pending) = (0, vec![self]);
        while let Some(v) = pending.pop() {
            count += 1;
            if count >= limit {
                break;
            }
            match v {
                Value::Tuple(items, _) | Value::List(items, _) => pending.extend(items),
                Value::Dict(pairs, _) => pending.extend(pairs.iter().flat_map(|(k, v)| [k, v])),
                _ => {}
            }
        }
        count
    }

    fn into_usize(self, what: &str) -> Result<usize> {
        match self {
            Value::Int(i) if i >= 0 => Ok(i as usize),
            other => bail!("{what} should be a non-negative int, found {other:?}"),
        }
    }

    fn into_usizes(self, what: &str) -> Result<Vec<usize>> {
        match self {
            Value::Tuple(items, _) | Value::List(items, _) => items.into_iter().map(|v| v.into_usize(what)).collect(),
            other => bail!("{what} should be a tuple of ints, found {}", other.kind()),
        }
    }
}

/// The deepest nesting of containers a pickle may build: state dicts nest three deep, and dropping
/// or printing a value recurses once per level.
const MAX_DEPTH: usize = 100;

/// The depth of a container holding `items`; an error past [`MAX_DEPTH`].
fn nested(items: &[Value]) -> Result<usize> {
    let depth = 1 + items.iter().map(Value::depth).max().unwrap_or(0);
    ensure!(depth <= MAX_DEPTH, "containers nest {depth} deep; a state dict's pickle nests at most {MAX_DEPTH}");
    Ok(depth)
}

/// The subset of pickle's opcodes that state dicts use (names as in CPython's pickle.py).
mod op {
    pub const PROTO: u8 = 0x80;
    pub const FRAME: u8 = 0x95;
    pub const STOP: u8 = b'.';
    pub const MARK: u8 = b'(';
    pub const NONE: u8 = b'N';
    pub const NEWTRUE: u8 = 0x88;
    pub const NEWFALSE: u8 = 0x89;
    pub const BININT: u8 = b'J';
    pub const BININT1: u8 = b'K';
    pub const BININT2: u8 = b'M';
    pub const LONG1: u8 = 0x8a;
    pub const BINFLOAT: u8 = b'G';
    pub const BINUNICODE: u8 = b'X';
    pub const SHORT_BINUNICODE: u8 = 0x8c;
    pub const EMPTY_TUPLE: u8 = b')';
    pub const TUPLE: u8 = b't';
    pub const TUPLE1: u8 = 0x85;
    pub const TUPLE2: u8 = 0x86;
    pub const TUPLE3: u8 = 0x87;
    pub const EMPTY_LIST: u8 = b']';
    pub const APPEND: u8 = b'a';
    pub const APPENDS: u8 = b'e';
    pub const EMPTY_DICT: u8 = b'}';
    pub const SETITEM: u8 = b's';
    pub const SETITEMS: u8 = b'u';
    pub const BINPUT: u8 = b'q';
    pub const LONG_BINPUT: u8 = b'r';
    pub const MEMOIZE: u8 = 0x94;
    pub const BINGET: u8 = b'h';
    pub const LONG_BINGET: u8 = b'j';
    pub const GLOBAL: u8 = b'c';
    pub const STACK_GLOBAL: u8 = 0x93;
    pub const REDUCE: u8 = b'R';
    pub const BUILD: u8 = b'b';
    pub const BINPERSID: u8 = b'Q';
}

struct Unpickler<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    /// Stack lengths at each open MARK.
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    /// Values the memo may still hand out: each fetch copies its value, so a pickle that fetches
    /// a value twice into one that is fetched twice, and so on, would double its size per step.
    memo_budget: usize,
}

impl<'a> Unpickler<'a> {
    fn new(data: &'a [u8]) -> Self {
        let memo_budget = MEMO_VALUES_PER_BYTE.saturating_mul(data.len()).saturating_add(1 << 16);
        Unpickler { data, pos: 0, stack: Vec::new(), marks: Vec::new(), memo: HashMap::new(), memo_budget }
    }

    /// Runs to STOP and returns the pickled object; errors say at which byte.
    fn run(mut self) -> Result<Value> {
        loop {
            let at = self.pos;
            let code = self.bytes(1)?[0];
            match self.step(code) {
                Ok(Some(value)) => return Ok(value),
                Ok(None) => {}
                Err(e) => return Err(e.context(format!("at opcode 0x{code:02x} (byte {at})"))),
            }
        }
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&end| end <= self.data.len());
        let end = end.with_context(|| format!("the pickle ends early: {n} bytes wanted at byte {}", self.pos))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.bytes(4)?.try_into().unwrap()))
    }

    fn line(&mut self) -> Result<String> {
        let rest = &self.data[self.pos..];
        let n = rest.iter().position(|&b| b == b'\n').context("a GLOBAL name is unterminated")?;
        let line = std::str::from_utf8(&rest[..n]).context("a GLOBAL name is not UTF-8")?;
        self.pos += n + 1;
        Ok(line.to_string())
    }

    fn string(&mut self, n: usize) -> Result<Value> {
        let s = std::str::from_utf8(self.bytes(n)?).context("a string is not UTF-8")?;
        Ok(Value::Str(s.to_string()))
    }

    /// How many values lie above the innermost MARK (the whole stack if none is open).
    fn above_mark(&self) -> usize {
        self.stack.len() - self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> Result<Value> {
        ensure!(self.above_mark() > 0, "the stack is empty");
        Ok(self.stack.pop().unwrap())
    }

    fn top(&mut self) -> Result<&mut Value> {
        self.stack.last_mut().context("the stack is empty")
    }

    /// Pops everything pushed since the last MARK, and the mark.
    fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let mark = self.marks.pop().context("no MARK is open")?;
        Ok(self.stack.split_off(mark))
    }

    fn memo_get(&mut self, i: u32) -> Result<Value> {
        let value = self.memo.get(&i).with_context(|| format!("memo entry {i} was never stored"))?;
        let count = value.count(self.memo_budget + 1);
        ensure!(
            count <= self.memo_budget,
            "memo entry {i} is fetched once too often: the values fetched outgrow the pickle ({} bytes)",
            self.data.len()
        );
        self.memo_budget -= count;
        Ok(value.clone())
    }

    fn memo_put(&mut self, i: u32) -> Result<()> {
        let v = self.stack.last().context("the stack is empty")?.clone();
        self.memo.insert(i, v);
        Ok(())
    }

    /// Executes one opcode; returns the result at STOP.
    fn step(&mut self, code: u8) -> Result<Option<Value>> {
        match code {
            op::PROTO => {
                self.bytes(1)?;
            }
            // Frames only group opcodes for buffered reading; their length is not needed.
            op::FRAME => {
                self.bytes(8)?;
            }
            op::STOP => return Ok(Some(self.pop()?)),
            op::MARK => self.marks.push(self.stack.len()),
            op::NONE => self.stack.push(Value::None),
            op::NEWTRUE => self.stack.push(Value::Bool(true)),
            op::NEWFALSE => self.stack.push(Value::Bool(false)),
            op::BININT => {
                let v = i32::from_le_bytes(self.bytes(4)?.try_into().unwrap());
                self.stack.push(Value::Int(v as i64));
            }
            op::BININT1 => {
                let v = self.bytes(1)?[0];
                self.stack.push(Value::Int(v as i64));
            }
            op::BININT2 => {
                let v = u16::from_le_bytes(self.bytes(2)?.try_into().unwrap());
                self.stack.push(Value::Int(v as i64));
            }
            op::LONG1 => {
                // n bytes of little-endian two's complement.
                let n = self.bytes(1)?[0] as usize;
                ensure!(n <= 8, "an integer of {n} bytes does not fit in 64 bits");
                let b = self.bytes(n)?;
                let fill = if b.last().is_some_and(|&x| x & 0x80 != 0) { 0xff } else { 0 };
                let mut full = [fill; 8];
                full[..n].copy_from_slice(b);
                self.stack.push(Value::Int(i64::from_le_bytes(full)));
            }
            op::BINFLOAT => {
                let v = f64::from_be_bytes(self.bytes(8)?.try_into().unwrap());
                self.stack.push(Value::Float(v));
            }
            op::BINUNICODE => {
                let n = self.u32()? as usize;
                let s = self.string(n)?;
                self.stack.push(s);
            }
            op::SHORT_BINUNICODE => {
                let n = self.bytes(1)?[0] as usize;
                let s = self.string(n)?;
                self.stack.push(s);
            }
            op::EMPTY_TUPLE => self.stack.push(Value::Tuple(Vec::new(), 1)),
            op::TUPLE => {
                let items = self.pop_mark()?;
                self.stack.push(Value::tuple(items)?);
            }
            op::TUPLE1 | op::TUPLE2 | op::TUPLE3 => {
                let n = (code - op::TUPLE1 + 1) as usize;
                ensure!(self.above_mark() >= n, "TUPLE{n} needs {n} values on the stack");
                let items = self.stack.split_off(self.stack.len() - n);
                self.stack.push(Value::tuple(items)?);
            }
            op::EMPTY_LIST => self.stack.push(Value::List(Vec::new(), 1)),
            op::APPEND => {
                let v = self.pop()?;
                self.append(vec![v])?;
            }
            op::APPENDS => {
                let items = self.pop_mark()?;
                self.append(items)?;
            }
            op::EMPTY_DICT => self.stack.push(Value::Dict(Vec::new(), 1)),
            op::SETITEM => {
                let v = self.pop()?;
                let k = self.pop()?;
                self.set_items(vec![k, v])?;
            }
            op::SETITEMS => {
                let items = self.pop_mark()?;
                self.set_items(items)?;
            }
            op::BINPUT => {
                let i = self.bytes(1)?[0] as u32;
                self.memo_put(i)?;
            }
            op::LONG_BINPUT => {
                let i = self.u32()?;
                self.memo_put(i)?;
            }
            op::MEMOIZE => {
                let i = self.memo.len() as u32;
                self.memo_put(i)?;
            }
            op::BINGET => {
                let i = self.bytes(1)?[0] as u32;
                let v = self.memo_get(i)?;
                self.stack.push(v);
            }
            op::LONG_BINGET => {
                let i = self.u32()?;
                let v = self.memo_get(i)?;
                self.stack.push(v);
            }
            op::GLOBAL => {
                let module = self.line()?;
                let name = self.line()?;
                self.stack.push(Value::Global(Global::resolve(&module, &name)?));
            }
            op::STACK_GLOBAL => {
                let (Value::Str(name), Value::Str(module)) = (self.pop()?, self.pop()?) else {
                    bail!("STACK_GLOBAL wants two strings");
                };
                self.stack.push(Value::Global(Global::resolve(&module, &name)?));
            }
            op::REDUCE => {
                let Value::Tuple(args, _) = self.pop()? else { bail!("REDUCE wants a tuple of arguments") };
                let Value::Global(f) = self.pop()? else { bail!("REDUCE wants a callable") };
                let v = reduce(f, args)?;
                self.stack.push(v);
            }
            // BUILD sets an object's state: for the OrderedDict of a state dict that is its
            // `_metadata` (module versions), for a Parameter its Python attributes. Neither
            // changes the tensors, so the state is dropped.
            op::BUILD => {
                self.pop()?;
                self.top()?;
            }
            op::BINPERSID => {
                let pid = self.pop()?;
                self.stack.push(Value::Storage(storage_from_pid(pid)?));
            }
            _ => bail!(
                "unknown pickle opcode 0x{code:02x}{}; this reader knows the opcodes of \
                 protocol 2 that state dicts use",
                if code.is_ascii_graphic() { format!(" ('{}')", code as char) } else { String::new() }
            ),
        }
        Ok(None)
    }

    fn append(&mut self, items: Vec<Value>) -> Result<()> {
        match self.top()? {
            Value::List(list, depth) => {
                *depth = (*depth).max(nested(&items)?);
                list.extend(items);
            }
            other => bail!("APPEND(S) on {}, not a list", other.kind()),
        }
        Ok(())
    }

    fn set_items(&mut self, items: Vec<Value>) -> Result<()> {
        ensure!(items.len().is_multiple_of(2), "SETITEMS has an odd number of keys and values");
        let inner = nested(&items)?;
        let mut it = items.into_iter();
        match self.top()? {
            Value::Dict(dict, depth) => {
                *depth = (*depth).max(inner);
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    dict.push((k, v));
                }
            }
            other => bail!("SETITEM(S) on {}, not a dict", other.kind()),
        }
        Ok(())
    }
}

/// Calls one of the known globals.
fn reduce(f: Global, args: Vec<Value>) -> Result<Value> {
    match f {
        Global::OrderedDict => {
            ensure!(args.is_empty(), "OrderedDict(...) with arguments is not supported");
            Ok(Value::Dict(Vec::new(), 1))
        }
        // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata]);
        // requires_grad, hooks and metadata do not change the values.
        Global::RebuildTensorV2 => {
            ensure!(
                args.len() == 6 || args.len() == 7,
                "_rebuild_tensor_v2 takes 6 or 7 arguments, got {}",
                args.len()
            );
            let mut args = args.into_iter();
            let Some(Value::Storage(storage)) = args.next() else {
                bail!("_rebuild_tensor_v2's first argument is not a storage")
            };
            let offset = args.next().unwrap().into_usize("storage_offset")?;
            let size = args.next().unwrap().into_usizes("size")?;
            let stride = args.next().unwrap().into_usizes("stride")?;
            Ok(Value::Tensor(Tensor { storage, offset, size, stride }))
        }
        // (data, requires_grad, backward_hooks[, state]): a Parameter is its data.
        Global::RebuildParameter | Global::RebuildParameterWithState => match args.into_iter().next() {
            Some(t @ Value::Tensor(_)) => Ok(t),
            _ => bail!("_rebuild_parameter's first argument is not a tensor"),
        },
        Global::StorageType(d) => bail!("torch storage type {d:?} called as a function"),
    }
}

/// ('storage', torch.FloatStorage, key, location, numel) to a storage reference.
fn storage_from_pid(pid: Value) -> Result<Storage> {
    let Value::Tuple(items, _) = pid else { bail!("a persistent id is {}, not a tuple", pid.kind()) };
    match <[Value; 5]>::try_from(items) {
        Ok([Value::Str(tag), Value::Global(Global::StorageType(dtype)), key, _location, numel]) if tag == "storage" => {
            let key = match key {
                Value::Str(s) => s,
                Value::Int(i) => i.to_string(),
                other => bail!("a storage key is {}", other.kind()),
            };
            Ok(Storage { dtype, key, numel: numel.into_usize("a storage's numel")? })
        }
        Ok(other) => {
            Err(anyhow!("a persistent id is not ('storage', torch.<Type>Storage, key, location, numel): {other:?}"))
        }
        Err(items) => {
            Err(anyhow!("a persistent id has {} fields; ('storage', type, key, location, numel) has 5", items.len()))
        }
    }
}
