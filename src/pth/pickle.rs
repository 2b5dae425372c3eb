//! The pickle machine: the opcodes and globals that state dicts use, values shared by reference.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::rc::Rc;

use anyhow::{Context, Result, bail, ensure};

use super::clip;
use super::view::{Dtype, Storage, Tensor, show_shape};
use super::{COPY_ALLOWANCE, MAX_DEPTH};

/// The callables and classes a state dict's pickle may name.
#[derive(Clone, Copy, Debug)]
pub(super) enum Global {
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
                "the pickle names the global {}.{}, which this reader does not support \
                 (it rebuilds plain tensors of float, half, bfloat16, double, integer and bool \
                 storages held in an OrderedDict; _rebuild_tensor_v3 means a newer dtype)",
                clip(module, 60),
                clip(name, 60)
            ),
        })
    }
}

/// A value on the pickle machine's stack. Cloning one is cheap: strings, containers and tensors
/// are shared, so a memo fetch is a reference, not a copy, and a pickle that doubles a value per
/// level ("billion laughs") builds a small graph, not an exponential tree; such a value is never
/// walked whole (messages show a prefix of it, see [`Value::show`]).
///
/// A container is shared until it changes: a memoized list or dict filled after BINPUT is copied
/// (counted by [`Copies`]) and reads back empty from BINGET. Pickles of state dicts never fetch a
/// container that way (each tensor gets its own hooks OrderedDict; only strings, globals and
/// whole tensors are fetched again), and the price is only a wrong value in data we ignore.
#[derive(Clone)]
pub(super) enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Rc<str>),
    Tuple(Items<Value>),
    List(Items<Value>),
    Dict(Items<(Value, Value)>),
    Global(Global),
    Storage(Rc<Storage>),
    Tensor(Rc<Tensor>),
}

/// The items of a tuple, list or dict, shared, and how deep they nest (1 for an empty container).
#[derive(Clone)]
pub(super) struct Items<T> {
    depth: usize,
    pub(super) items: Rc<Vec<T>>,
}

/// Anything a container holds: a value, or a dict's key and value.
pub(super) trait Nested: Clone {
    fn depth(&self) -> usize;
}

impl Nested for Value {
    /// How deep containers nest in this value: 0 for a scalar, 1 for `()`, 2 for `((),)`.
    fn depth(&self) -> usize {
        match self {
            Value::Tuple(items) | Value::List(items) => items.depth,
            Value::Dict(items) => items.depth,
            _ => 0,
        }
    }
}

impl Nested for (Value, Value) {
    fn depth(&self) -> usize {
        self.0.depth().max(self.1.depth())
    }
}

impl<T: Nested> Items<T> {
    fn new(items: Vec<T>) -> Result<Self> {
        let mut new = Items { depth: 1, items: Rc::new(Vec::new()) };
        new.extend(items, &mut Copies::unlimited())?;
        Ok(new)
    }

    /// Appends `more`, first copying the items if they are shared (with the memo).
    fn extend(&mut self, more: Vec<T>, copies: &mut Copies) -> Result<()> {
        let deepest = more.iter().map(|v| v.depth() + 1).max().unwrap_or(0);
        ensure!(
            deepest <= MAX_DEPTH,
            "tuples, lists and dicts nest more than {MAX_DEPTH} deep; a state dict nests 3 deep"
        );
        if Rc::strong_count(&self.items) > 1 {
            copies.spend(self.items.len())?;
        }
        Rc::make_mut(&mut self.items).extend(more);
        self.depth = self.depth.max(deepest);
        Ok(())
    }
}

/// Counts the values the pickle machine copies rather than shares, and refuses past a limit (see
/// [`COPY_ALLOWANCE`]): copying a memoized list each time it changes would otherwise let a pickle
/// of n bytes take time and memory in n^2.
struct Copies {
    spent: usize,
    limit: usize,
}

impl Copies {
    fn unlimited() -> Self {
        Copies { spent: 0, limit: usize::MAX }
    }

    fn spend(&mut self, n: usize) -> Result<()> {
        self.spent = self.spent.saturating_add(n);
        ensure!(
            self.spent <= self.limit,
            "the pickle copies more than {} values (one per byte of pickle + {COPY_ALLOWANCE}): a \
             memoized list or dict changed again and again after it was stored, or one size \
             tuple shared by many tensors",
            self.limit
        );
        Ok(())
    }
}

impl Value {
    /// The value's type with its article, for messages: "an int", "a dict".
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "a bool",
            Value::Int(_) => "an int",
            Value::Float(_) => "a float",
            Value::Str(_) => "a str",
            Value::Tuple(_) => "a tuple",
            Value::List(_) => "a list",
            Value::Dict(_) => "a dict",
            Value::Global(_) => "a class or function",
            Value::Storage(_) => "a storage",
            Value::Tensor(_) => "a tensor",
        }
    }

    /// The value in Python's notation for a message, cut after about 80 characters: a shared
    /// value may be exponentially large when written out.
    fn show(&self) -> String {
        const LIMIT: usize = 80;
        let mut out = String::new();
        self.show_into(&mut out, LIMIT);
        if out.len() >= LIMIT {
            out.push_str("...");
        }
        out
    }

    /// Writes the value into `out` until `out` reaches `limit` bytes. Recursion ends there too, as
    /// every container writes at least one byte before its items.
    fn show_into(&self, out: &mut String, limit: usize) {
        if out.len() >= limit {
            return;
        }
        match self {
            Value::None => out.push_str("None"),
            Value::Bool(b) => out.push_str(if *b { "True" } else { "False" }),
            Value::Int(i) => write!(out, "{i}").unwrap(),
            Value::Float(f) => write!(out, "{f:?}").unwrap(),
            Value::Str(s) => write!(out, "'{}'", clip(s, limit - out.len())).unwrap(),
            Value::Tuple(items) | Value::List(items) => {
                let (open, close) = if matches!(self, Value::Tuple(_)) { ('(', ')') } else { ('[', ']') };
                out.push(open);
                for (i, item) in items.items.iter().enumerate() {
                    if out.len() >= limit {
                        return;
                    }
                    if i > 0 {
                        out.push_str(", ");
                    }
                    item.show_into(out, limit);
                }
                if items.items.len() == 1 && open == '(' {
                    out.push(',');
                }
                out.push(close);
            }
            Value::Dict(items) => {
                out.push('{');
                for (i, (k, v)) in items.items.iter().enumerate() {
                    if out.len() >= limit {
                        return;
                    }
                    if i > 0 {
                        out.push_str(", ");
                    }
                    k.show_into(out, limit);
                    out.push_str(": ");
                    v.show_into(out, limit);
                }
                out.push('}');
            }
            Value::Global(g) => write!(out, "{g:?}").unwrap(),
            Value::Storage(s) => write!(out, "<{:?} storage '{}'>", s.dtype, clip(&s.key, 40)).unwrap(),
            Value::Tensor(t) => write!(out, "<tensor of size {}>", show_shape(&t.size)).unwrap(),
        }
    }

    fn to_usize(&self, what: &str) -> Result<usize> {
        match self {
            Value::Int(i) if *i >= 0 => usize::try_from(*i).with_context(|| format!("{what} {i} is too large")),
            other => bail!("{what} should be a non-negative int, found {}", other.show()),
        }
    }

    /// The ints of a tuple or list; each counts as a copy.
    fn to_usizes(&self, what: &str, copies: &mut Copies) -> Result<Vec<usize>> {
        match self {
            Value::Tuple(items) | Value::List(items) => {
                copies.spend(items.items.len())?;
                items.items.iter().map(|v| v.to_usize(what)).collect()
            }
            other => bail!("{what} should be a tuple of ints, found {}", other.kind()),
        }
    }
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

pub(super) struct Unpickler<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    /// Stack lengths at each open MARK.
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    copies: Copies,
}

impl<'a> Unpickler<'a> {
    pub(super) fn new(data: &'a [u8]) -> Self {
        let copies = Copies { spent: 0, limit: data.len().saturating_add(COPY_ALLOWANCE) };
        Unpickler { data, pos: 0, stack: Vec::new(), marks: Vec::new(), memo: HashMap::new(), copies }
    }

    /// Runs to STOP and returns the pickled object; errors say at which byte.
    pub(super) fn run(mut self) -> Result<Value> {
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

    fn line(&mut self) -> Result<&'a str> {
        let rest = &self.data[self.pos..];
        let n = rest.iter().position(|&b| b == b'\n').context("a GLOBAL name is unterminated")?;
        let line = std::str::from_utf8(&rest[..n]).context("a GLOBAL name is not UTF-8")?;
        self.pos += n + 1;
        Ok(line)
    }

    fn string(&mut self, n: usize) -> Result<Value> {
        let s = std::str::from_utf8(self.bytes(n)?).context("a string is not UTF-8")?;
        Ok(Value::Str(s.into()))
    }

    /// How many values lie above the innermost MARK (the whole stack if none is open).
    fn above_mark(&self) -> usize {
        self.stack.len() - self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> Result<Value> {
        ensure!(self.above_mark() > 0, "the stack is empty");
        Ok(self.stack.pop().unwrap())
    }

    /// Pops everything pushed since the last MARK, and the mark.
    fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let mark = self.marks.pop().context("no MARK is open")?;
        Ok(self.stack.split_off(mark))
    }

    fn memo_get(&self, i: u32) -> Result<Value> {
        self.memo.get(&i).cloned().with_context(|| format!("memo entry {i} was never stored"))
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
            op::EMPTY_TUPLE => self.stack.push(Value::Tuple(Items::new(Vec::new())?)),
            op::TUPLE => {
                let items = self.pop_mark()?;
                self.stack.push(Value::Tuple(Items::new(items)?));
            }
            op::TUPLE1 | op::TUPLE2 | op::TUPLE3 => {
                let n = (code - op::TUPLE1 + 1) as usize;
                ensure!(self.above_mark() >= n, "TUPLE{n} needs {n} values on the stack");
                let items = self.stack.split_off(self.stack.len() - n);
                self.stack.push(Value::Tuple(Items::new(items)?));
            }
            op::EMPTY_LIST => self.stack.push(Value::List(Items::new(Vec::new())?)),
            op::APPEND => {
                let v = self.pop()?;
                self.append(vec![v])?;
            }
            op::APPENDS => {
                let items = self.pop_mark()?;
                self.append(items)?;
            }
            op::EMPTY_DICT => self.stack.push(Value::Dict(Items::new(Vec::new())?)),
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
                self.stack.push(Value::Global(Global::resolve(module, name)?));
            }
            op::STACK_GLOBAL => {
                let (Value::Str(name), Value::Str(module)) = (self.pop()?, self.pop()?) else {
                    bail!("STACK_GLOBAL wants two strings");
                };
                self.stack.push(Value::Global(Global::resolve(&module, &name)?));
            }
            op::REDUCE => {
                let Value::Tuple(args) = self.pop()? else { bail!("REDUCE wants a tuple of arguments") };
                let Value::Global(f) = self.pop()? else { bail!("REDUCE wants a callable") };
                let v = reduce(f, &args.items, &mut self.copies)?;
                self.stack.push(v);
            }
            // BUILD sets an object's state: for the OrderedDict of a state dict that is its
            // `_metadata` (module versions), for a Parameter its Python attributes. Neither
            // changes the tensors, so the state is dropped.
            op::BUILD => {
                self.pop()?;
                self.stack.last().context("the stack is empty")?;
            }
            op::BINPERSID => {
                let pid = self.pop()?;
                self.stack.push(Value::Storage(Rc::new(storage_from_pid(&pid)?)));
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
        match self.stack.last_mut().context("the stack is empty")? {
            Value::List(list) => list.extend(items, &mut self.copies),
            other => bail!("APPEND(S) on {}, not a list", other.kind()),
        }
    }

    fn set_items(&mut self, items: Vec<Value>) -> Result<()> {
        ensure!(items.len().is_multiple_of(2), "SETITEMS has an odd number of keys and values");
        let mut it = items.into_iter();
        let mut pairs = Vec::new();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            pairs.push((k, v));
        }
        match self.stack.last_mut().context("the stack is empty")? {
            Value::Dict(dict) => dict.extend(pairs, &mut self.copies),
            other => bail!("SETITEM(S) on {}, not a dict", other.kind()),
        }
    }
}

/// Calls one of the known globals.
fn reduce(f: Global, args: &[Value], copies: &mut Copies) -> Result<Value> {
    match f {
        Global::OrderedDict => {
            ensure!(args.is_empty(), "OrderedDict(...) with arguments is not supported");
            Ok(Value::Dict(Items::new(Vec::new())?))
        }
        // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata]);
        // requires_grad, hooks and metadata do not change the values.
        Global::RebuildTensorV2 => {
            ensure!(
                args.len() == 6 || args.len() == 7,
                "_rebuild_tensor_v2 takes 6 or 7 arguments, got {}",
                args.len()
            );
            let Value::Storage(storage) = &args[0] else {
                bail!("_rebuild_tensor_v2's first argument is {}, not a storage", args[0].kind())
            };
            let offset = args[1].to_usize("storage_offset")?;
            let size = args[2].to_usizes("size", copies)?;
            let stride = args[3].to_usizes("stride", copies)?;
            Ok(Value::Tensor(Rc::new(Tensor { storage: storage.clone(), offset, size, stride })))
        }
        // (data, requires_grad, backward_hooks[, state]): a Parameter is its data.
        Global::RebuildParameter | Global::RebuildParameterWithState => match args.first() {
            Some(t @ Value::Tensor(_)) => Ok(t.clone()),
            _ => bail!("_rebuild_parameter's first argument is not a tensor"),
        },
        Global::StorageType(d) => bail!("torch storage type {d:?} called as a function"),
    }
}

/// ('storage', torch.FloatStorage, key, location, numel) to a storage reference.
fn storage_from_pid(pid: &Value) -> Result<Storage> {
    let Value::Tuple(items) = pid else { bail!("a persistent id is {}, not a tuple", pid.kind()) };
    match &items.items[..] {
        [Value::Str(tag), Value::Global(Global::StorageType(dtype)), key, _location, numel] if &**tag == "storage" => {
            let key = match key {
                Value::Str(s) => s.clone(),
                Value::Int(i) => i.to_string().into(),
                other => bail!("a storage key is {}", other.kind()),
            };
            Ok(Storage { dtype: *dtype, key, numel: numel.to_usize("a storage's numel")? })
        }
        [_, _, _, _, _] => {
            bail!("a persistent id is not ('storage', torch.<Type>Storage, key, location, numel): {}", pid.show())
        }
        other => bail!("a persistent id has {} fields; ('storage', type, key, location, numel) has 5", other.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_three_words() {
        // The pickle machine's memory per value pushed (the stack and the memo hold these).
        assert!(std::mem::size_of::<Value>() <= 24, "{}", std::mem::size_of::<Value>());
    }

    #[test]
    fn a_shared_value_is_shown_cut() {
        // (x, x) 200 levels deep: 2^200 leaves written out.
        let mut v = Value::Str("ab".into());
        for _ in 0..200 {
            v = Value::Tuple(Items::new(vec![v.clone(), v]).unwrap());
        }
        let shown = v.show();
        assert!(shown.len() <= 120 && shown.starts_with("((((") && shown.ends_with("..."), "{shown}");
        let wide = Value::List(Items::new(vec![Value::Int(7); 1000]).unwrap());
        assert!(wide.show().starts_with("[7, 7, 7") && wide.show().len() <= 120);
    }
}
