//! The `.pth` reader against hostile files (issue 21): sizes declared but not held, shared
//! values that grow when copied, deep nesting. Each test builds its own file (a pickle written
//! opcode by opcode, zipped with stored entries as torch.save does) and asserts a clear error that
//! names the file, with the reader's peak allocation on the test's thread measured by a counting
//! allocator: it must refuse before it allocates, not after.
//!
//! The allocator also refuses any single allocation over 1 GiB, so a regression aborts this test
//! binary at once instead of taking the machine's memory.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Cursor, Write};
use std::path::PathBuf;

use resnet_wgpu::pth::{MAX_DEPTH, NamedTensor, read_state_dict};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

// --- A counting allocator: live and peak bytes per thread ------------------------------------

struct Counting;

const MAX_ONE_ALLOCATION: usize = 1 << 30;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    // try_with: the thread's own locals may be gone while it exits.
    let _ = LIVE.try_with(|live| {
        live.set(live.get() + delta);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(live.get())));
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ONE_ALLOCATION {
            return std::ptr::null_mut();
        }
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ONE_ALLOCATION {
            return std::ptr::null_mut();
        }
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        unsafe { System.dealloc(p, layout) };
        count(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > MAX_ONE_ALLOCATION {
            return std::ptr::null_mut();
        }
        let q = unsafe { System.realloc(p, layout, new_size) };
        if !q.is_null() {
            count(new_size as isize - layout.size() as isize);
        }
        q
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Reads `bytes` as a `.pth` file; returns the result and the most bytes the reader held at once
/// beyond what this thread held before.
fn read(name: &str, bytes: &[u8]) -> (PathBuf, anyhow::Result<Vec<NamedTensor>>, usize) {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("hostile_pth_{name}"));
    std::fs::write(&path, bytes).unwrap();
    let before = LIVE.with(Cell::get);
    PEAK.with(|peak| peak.set(before));
    let result = read_state_dict(&path);
    let peak = (PEAK.with(Cell::get) - before) as usize;
    (path, result, peak)
}

/// The error of reading `bytes`, in one line; asserts it names the file and that the reader held
/// at most `max_peak` bytes on the way.
fn refused(name: &str, bytes: &[u8], max_peak: usize) -> String {
    let (path, result, peak) = read(name, bytes);
    let err = result.err().unwrap_or_else(|| panic!("{name}: a hostile file must be an error"));
    let message = format!("{err:#}");
    eprintln!("{name}: peak {peak} bytes: {message}");
    assert!(message.contains(path.to_str().unwrap()), "the error names the file: {message}");
    assert!(!message.contains('\n'), "the error is one line: {message}");
    assert!(peak <= max_peak, "{name}: the reader held {peak} bytes before refusing (at most {max_peak})");
    message
}

const MIB: usize = 1 << 20;

// --- Writing state dicts by hand ---------------------------------------------------------------

/// A pickle, opcode by opcode (names as in CPython's pickle.py).
struct Pickle(Vec<u8>);

impl Pickle {
    /// PROTO 2.
    fn new() -> Self {
        Pickle(vec![0x80, 2])
    }

    fn op(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.extend_from_slice(bytes);
        self
    }

    /// LONG1 with 8 bytes: any int below 2^63.
    fn int(&mut self, v: u64) -> &mut Self {
        assert!(v < 1 << 63);
        self.op(&[0x8a, 8]).op(&v.to_le_bytes())
    }

    /// BINUNICODE.
    fn str(&mut self, s: &str) -> &mut Self {
        self.op(b"X").op(&(s.len() as u32).to_le_bytes()).op(s.as_bytes())
    }

    /// `collections.OrderedDict()`: GLOBAL, EMPTY_TUPLE, REDUCE.
    fn ordered_dict(&mut self) -> &mut Self {
        self.op(b"ccollections\nOrderedDict\n)R")
    }

    /// `_rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())`, the storage a
    /// FloatStorage of `numel` elements under `data/<key>`.
    fn tensor(&mut self, key: &str, numel: u64, offset: u64, size: &[u64], stride: &[u64]) -> &mut Self {
        self.op(b"ctorch._utils\n_rebuild_tensor_v2\n(");
        // BINPERSID of ('storage', torch.FloatStorage, key, 'cpu', numel).
        self.op(b"(").str("storage").op(b"ctorch\nFloatStorage\n").str(key).str("cpu").int(numel).op(b"tQ");
        self.int(offset);
        self.op(b"(");
        for &d in size {
            self.int(d);
        }
        self.op(b"t(");
        for &s in stride {
            self.int(s);
        }
        self.op(b"t\x89").ordered_dict().op(b"tR")
    }

    /// STOP; the bytes.
    fn stop(&mut self) -> Vec<u8> {
        self.op(b".");
        std::mem::take(&mut self.0)
    }
}

/// One view of a storage: (name, storage key, storage numel, offset, size, stride).
type View<'a> = (&'a str, &'a str, u64, u64, &'a [u64], &'a [u64]);

/// The pickle of an OrderedDict of the given views, as torch.save writes it (one SETITEMS).
fn state_dict_pickle(views: &[View]) -> Vec<u8> {
    let mut p = Pickle::new();
    p.ordered_dict().op(b"(");
    for &(name, key, numel, offset, size, stride) in views {
        p.str(name).tensor(key, numel, offset, size, stride);
    }
    p.op(b"u").stop()
}

/// A torch.save archive of stored entries: `archive/data.pkl`, `archive/byteorder` and
/// `archive/data/<key>` for each storage.
fn archive(pickle: &[u8], storages: &[(&str, &[u8])]) -> Vec<u8> {
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
    zip.start_file("archive/data.pkl", options).unwrap();
    zip.write_all(pickle).unwrap();
    zip.start_file("archive/byteorder", options).unwrap();
    zip.write_all(b"little").unwrap();
    for (key, bytes) in storages {
        zip.start_file(format!("archive/data/{key}"), options).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A state dict whose only entry `x` is the value the opcodes `value` push.
fn dict_of(value: &[u8]) -> Vec<u8> {
    let mut p = Pickle::new();
    p.op(b"}").str("x").op(value).op(b"s").stop()
}

// --- Legitimate files still load ---------------------------------------------------------------

#[test]
fn expanded_tensors_of_reasonable_size_load() {
    // torch.tensor([1.5]).expand(1000, 1000), saved as is: stride 0 over one element, 4 MB of
    // output from a file of a few hundred bytes (within the fixed allowance); and a [2, 3] view
    // expanded along its first dimension.
    let pickle =
        state_dict_pickle(&[("ones", "0", 1, 0, &[1000, 1000], &[0, 0]), ("rows", "1", 3, 0, &[2, 3], &[0, 1])]);
    let file = archive(&pickle, &[("0", &f32_bytes(&[1.5])), ("1", &f32_bytes(&[1.0, 2.0, 3.0]))]);
    let (_, result, peak) = read("expanded.pth", &file);
    let tensors = result.unwrap();
    assert_eq!(tensors[0].1, vec![1000, 1000]);
    assert!(tensors[0].2.len() == 1_000_000 && tensors[0].2.iter().all(|&v| v == 1.5));
    assert_eq!(tensors[1].2, vec![1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
    assert!(peak < 5 * MIB, "an expanded tensor of 4 MB takes {peak} bytes to read");
}

#[test]
fn many_views_of_one_small_storage_load() {
    // 1,000 tensors that all view one storage of 256 values, each a different slice of it.
    let names: Vec<String> = (0..1000).map(|i| format!("v{i}")).collect();
    let views: Vec<View> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), "0", 256, (i % 200) as u64, &[8u64, 7][..], &[7u64, 1][..]))
        .collect();
    let base: Vec<f32> = (0..256).map(|i| i as f32).collect();
    let file = archive(&state_dict_pickle(&views), &[("0", &f32_bytes(&base))]);
    let (_, result, _) = read("many_views.pth", &file);
    let tensors = result.unwrap();
    assert_eq!(tensors.len(), 1000);
    let start = (999 % 200) as f32;
    assert_eq!(tensors[999].2, (0..56).map(|i| start + i as f32).collect::<Vec<_>>());
}

// --- Sizes declared but not held ---------------------------------------------------------------

#[test]
fn an_expanded_tensor_past_the_budget_is_refused_before_allocating() {
    // 2^28 elements (1 GiB of f32) by stride 0 from one element: a file of a few hundred bytes.
    let pickle = state_dict_pickle(&[("big", "0", 1, 0, &[1 << 28], &[0])]);
    let message = refused("expanded_big.pth", &archive(&pickle, &[("0", &f32_bytes(&[1.0]))]), MIB);
    assert!(message.contains("tensor 'big'") && message.contains("268435456 elements"), "{message}");
    assert!(message.contains("more than") && message.contains("stride-0"), "{message}");
}

#[test]
fn a_tensor_past_2_31_elements_is_refused() {
    for (i, size) in [&[1u64 << 44][..], &[1 << 31, 1 << 31], &[1 << 16, 1 << 15, 3]].into_iter().enumerate() {
        let stride = vec![0; size.len()];
        let pickle = state_dict_pickle(&[("huge", "0", 1, 0, size, &stride)]);
        let message = refused(&format!("huge_{i}.pth"), &archive(&pickle, &[("0", &f32_bytes(&[1.0]))]), MIB);
        assert!(message.contains("tensor 'huge'") && message.contains("(2^31)"), "{message}");
    }
}

#[test]
fn an_element_count_that_overflows_is_an_error() {
    let pickle = state_dict_pickle(&[("huge", "0", 1, 0, &[1 << 40, 1 << 40], &[0, 0])]);
    let message = refused("overflow.pth", &archive(&pickle, &[("0", &f32_bytes(&[1.0]))]), MIB);
    assert!(message.contains("tensor 'huge'") && message.contains("[1099511627776, 1099511627776]"), "{message}");
    assert!(message.contains("overflows"), "{message}");
}

#[test]
fn many_views_of_one_storage_are_refused_before_allocating() {
    // 1,000 views of the whole of one 1 MiB storage: 1 GB of f32 from a 1 MiB file.
    let names: Vec<String> = (0..1000).map(|i| format!("v{i}")).collect();
    let n = (MIB / 4) as u64;
    let size = [n];
    let views: Vec<View> = names.iter().map(|name| (name.as_str(), "0", n, 0, &size[..], &[1u64][..])).collect();
    let file = archive(&state_dict_pickle(&views), &[("0", &vec![0; MIB])]);
    // The reader holds the pickle and its values (about 170 KB), never the storage.
    let message = refused("views.pth", &file, MIB);
    assert!(message.contains("with tensor 'v") && message.contains("every view of a storage"), "{message}");
}

/// Sets every 8-byte size of a ZIP64 extra field (header 0x0001) in the entry headers of `zip`
/// for `name` to `size`: the local header and the central directory.
fn declare_size(zip: &mut [u8], name: &str, size: u64) {
    let mut patched = 0;
    let mut at = 0;
    while at + 4 <= zip.len() {
        let signature = &zip[at..at + 4];
        let (name_at, lens_at) = match signature {
            b"PK\x03\x04" => (at + 30, at + 26),
            b"PK\x01\x02" => (at + 46, at + 28),
            _ => {
                at += 1;
                continue;
            }
        };
        let u16_at = |i: usize| u16::from_le_bytes([zip[i], zip[i + 1]]) as usize;
        let (name_len, extra_len) = (u16_at(lens_at), u16_at(lens_at + 2));
        if &zip[name_at..name_at + name_len] == name.as_bytes() {
            let extra = name_at + name_len;
            assert!(extra_len >= 20 && u16_at(extra) == 1, "{name} has a ZIP64 extra field first");
            // Uncompressed then compressed size (the local header has both; so does the central
            // directory, as both 32-bit fields read 0xFFFFFFFF).
            zip[extra + 4..extra + 12].copy_from_slice(&size.to_le_bytes());
            zip[extra + 12..extra + 20].copy_from_slice(&size.to_le_bytes());
            patched += 1;
        }
        at += 4;
    }
    assert_eq!(patched, 2, "{name}: a local header and a central directory entry");
}

#[test]
fn a_zip_entry_declaring_a_petabyte_is_refused_before_allocating() {
    let pickle = state_dict_pickle(&[("w", "0", 2, 0, &[2], &[1])]);
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default().compression_method(CompressionMethod::Stored).large_file(true);
    zip.start_file("archive/data.pkl", options).unwrap();
    zip.write_all(&pickle).unwrap();
    zip.start_file("archive/data/0", options).unwrap();
    zip.write_all(&f32_bytes(&[1.0, 2.0])).unwrap();
    let file = zip.finish().unwrap().into_inner();

    // Untouched, it loads.
    let (_, result, _) = read("petabyte_ok.pth", &file);
    assert_eq!(result.unwrap()[0].2, vec![1.0, 2.0]);

    for (i, entry) in ["archive/data.pkl", "archive/data/0"].into_iter().enumerate() {
        let mut file = file.clone();
        declare_size(&mut file, entry, 1 << 50);
        let message = refused(&format!("petabyte_{i}.pth"), &file, MIB);
        assert!(message.contains(entry), "{message}");
        assert!(message.contains("declares 1125899906842624 bytes"), "{message}");
    }
    // Declared one byte over or under what it holds: the entry is corrupt either way.
    for (i, size) in [pickle.len() + 1, pickle.len() - 1].into_iter().enumerate() {
        let mut file = file.clone();
        declare_size(&mut file, "archive/data.pkl", size as u64);
        let message = refused(&format!("petabyte_off_{i}.pth"), &file, MIB);
        assert!(message.contains("archive/data.pkl") && message.contains("corrupt"), "{message}");
    }
}

#[test]
fn zip_entries_that_overlap_are_read_once_at_most() {
    // Entry data/1's central directory record is made a copy of data/0's (size, CRC, local
    // header offset) but for its name: two storages of 256 KiB from one file of 256 KiB. A
    // thousand such records would make a thousand copies.
    let n = 1 << 16;
    let pickle = state_dict_pickle(&[("a", "0", n, 0, &[n], &[1]), ("b", "1", n, 0, &[n], &[1])]);
    let mut file = archive(&pickle, &[("0", &vec![0; 4 * n as usize]), ("1", &[0; 4])]);
    let record = |file: &[u8], name: &str| {
        let at = (0..file.len() - 4)
            .find(|&at| file[at..at + 4] == *b"PK\x01\x02" && file[at + 46..].starts_with(name.as_bytes()));
        at.unwrap()
    };
    let (zero, one) = (record(&file, "archive/data/0"), record(&file, "archive/data/1"));
    // CRC-32, compressed and uncompressed size (bytes 16..28); local header offset (42..46).
    let copied: Vec<u8> = file[zero + 16..zero + 28].to_vec();
    file[one + 16..one + 28].copy_from_slice(&copied);
    let offset: Vec<u8> = file[zero + 42..zero + 46].to_vec();
    file[one + 42..one + 46].copy_from_slice(&offset);
    let message = refused("overlap.pth", &file, 2 * MIB);
    assert!(message.contains("tensor 'b'") && message.contains("entry archive/data/1"), "{message}");
}

// --- Shared values, copies and nesting ---------------------------------------------------------

/// One value that doubles per level, `levels` times: x = 'ab'; x = (x, x); ... by memo fetches.
/// Memo entry 0 holds the value one level down.
fn laughs(levels: usize) -> Vec<u8> {
    let mut p = Pickle(Vec::new());
    p.str("ab");
    for _ in 0..levels {
        // BINPUT 0 (the value on the stack), BINGET 0, TUPLE2: (x, x) in place of x.
        p.op(b"q\x00h\x00\x86");
    }
    p.0
}

#[test]
fn a_billion_laughs_is_shared_not_copied() {
    // 2^100 leaves when written out, 600 bytes of pickle.
    let message = refused("laughs.pth", &archive(&dict_of(&laughs(100)), &[]), MIB);
    assert!(message.contains("entry 'x' is a tuple, not a tensor"), "{message}");

    // In a persistent id, where the message shows the value: a prefix of it.
    let mut p = Pickle::new();
    p.op(b"}").str("x").op(b"(").str("storage").op(&laughs(100)).op(b"h\x00h\x00h\x00tQs.");
    let message = refused("laughs_pid.pth", &archive(&p.0, &[]), MIB);
    assert!(message.contains("a persistent id is not") && message.contains("('storage', ((((((((("), "{message}");
    assert!(message.len() < 600, "the value is shown cut: {message}");

    // As a tensor's size, where it is read whole: refused at the first non-int.
    let mut p = Pickle::new();
    p.op(b"}").str("x").op(b"ctorch._utils\n_rebuild_tensor_v2\n((").str("storage");
    p.op(b"ctorch\nFloatStorage\n").str("0").str("cpu").int(1).op(b"tQ").int(0).op(&laughs(100));
    p.op(b"h\x00\x89NtRs.");
    let message = refused("laughs_size.pth", &archive(&p.0, &[]), MIB);
    assert!(message.contains("size should be a non-negative int, found (((((((("), "{message}");
}

#[test]
fn a_memoized_list_changed_again_and_again_is_refused() {
    // EMPTY_LIST, then (BINPUT 0, NONE, APPEND) 300,000 times: each append after a put copies
    // the list, n^2 / 2 copies in all if nothing stopped it.
    let mut p = Pickle::new();
    p.op(b"}").str("x").op(b"]");
    for _ in 0..300_000 {
        p.op(b"q\x00Na");
    }
    let file = archive(&p.op(b"s").stop(), &[]);
    // The pickle (1.2 MB) is held twice on the way (zip entry, read), and a list of about 2,000.
    let message = refused("copies.pth", &file, 4 * MIB);
    assert!(message.contains("copies more than"), "{message}");
    assert!(message.contains("at opcode 0x61"), "names the opcode (APPEND): {message}");
}

#[test]
fn one_size_tuple_shared_by_many_tensors_is_refused() {
    // A size of 100,000 ones stored once, then 1,000 tensors that fetch it as size and stride:
    // each tensor copies it twice, 200 million values if nothing stopped it.
    let mut p = Pickle::new();
    p.ordered_dict().op(b"(");
    for i in 0..1000 {
        p.str(&format!("t{i}")).op(b"ctorch._utils\n_rebuild_tensor_v2\n((").str("storage");
        p.op(b"ctorch\nFloatStorage\n").str("0").str("cpu").int(1).op(b"tQ").int(0);
        if i == 0 {
            p.op(b"(");
            for _ in 0..100_000 {
                p.op(b"K\x01");
            }
            p.op(b"tr\x01\x00\x00\x00");
        } else {
            p.op(b"j\x01\x00\x00\x00");
        }
        p.op(b"j\x01\x00\x00\x00\x89").ordered_dict().op(b"tR");
    }
    let pickle = p.op(b"u").stop();
    // What the reader may copy: one usize per byte of pickle + 2^20, the values on its stack.
    let max_peak = 8 * (pickle.len() + MIB) + 64 * pickle.len();
    let message = refused("shared_size.pth", &archive(&pickle, &[("0", &f32_bytes(&[1.0]))]), max_peak);
    assert!(message.contains("copies more than"), "{message}");
}

#[test]
fn nesting_deeper_than_the_limit_is_refused() {
    let deep = 1_000_000;
    // A million TUPLE1s on an empty tuple; a million MARKs closed by a million TUPLEs; a
    // million empty lists, each appended to the one below.
    let tuples = [b")".to_vec(), vec![0x85; deep]].concat();
    let marks = [vec![b'('; deep], vec![b't'; deep]].concat();
    let lists = [vec![b']'; deep], vec![b'a'; deep - 1]].concat();
    for (name, value) in [("tuples", tuples), ("marks", marks), ("lists", lists)] {
        // The values on the stack take what Python's own unpickler would: tens of bytes each.
        let pickle = dict_of(&value);
        let message = refused(&format!("deep_{name}.pth"), &archive(&pickle, &[]), 100 * pickle.len());
        assert!(message.contains(&format!("nest more than {MAX_DEPTH} deep")), "{message}");
    }
}

#[test]
fn nesting_at_the_limit_is_read_and_dropped() {
    // A dict holding tuples nested MAX_DEPTH - 1 deep is a value like any other: the error is
    // that it is not a tensor, and dropping the value (recursive, one level per depth) fits the
    // stack of a test thread.
    let value = [b")".to_vec(), vec![0x85; MAX_DEPTH - 2]].concat();
    let message = refused("deep_ok.pth", &archive(&dict_of(&value), &[]), MIB);
    assert!(message.contains("entry 'x' is a tuple, not a tensor"), "{message}");
}
