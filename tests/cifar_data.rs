//! CIFAR-10 reader, batches with augmentation, and the download path, on tiny files written to a
//! temporary folder and served by a one-thread HTTP server on 127.0.0.1. No network, no real data.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::serve;
use md5::{Digest, Md5};
use resnet_wgpu::data::cifar::{
    self, Cifar10, IMAGE_BYTES, MEAN, RECORD_BYTES, STD, TEST_FILE, TRAIN_FILES, make_batch,
};
use resnet_wgpu::data::download::Checksum;
use resnet_wgpu::rng::Rng;

const RECORDS: usize = 3;

/// A fresh, empty folder under the system temp folder, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("resnet-wgpu-cifar-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Byte of record `r` of file `f`, channel c, pixel (y, x): a formula the tests can recompute.
fn pixel(f: usize, r: usize, c: usize, y: usize, x: usize) -> u8 {
    ((f * 61 + r * 29 + c * 83 + y * 7 + x * 3) % 256) as u8
}

fn label(f: usize, r: usize) -> u8 {
    ((f * 3 + r) % 10) as u8
}

/// A CIFAR-format file of `RECORDS` records for file index `f`.
fn file_bytes(f: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(RECORDS * RECORD_BYTES);
    for r in 0..RECORDS {
        bytes.push(label(f, r));
        for c in 0..3 {
            for y in 0..32 {
                for x in 0..32 {
                    bytes.push(pixel(f, r, c, y, x));
                }
            }
        }
    }
    bytes
}

/// (name, bytes) of the six files; train files are f = 0..5, the test file f = 5.
fn all_files() -> Vec<(&'static str, Vec<u8>)> {
    TRAIN_FILES.iter().copied().chain([TEST_FILE]).enumerate().map(|(f, name)| (name, file_bytes(f))).collect()
}

fn write_files(dir: &Path) {
    for (name, bytes) in all_files() {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

fn check_contents(train: &Cifar10, test: &Cifar10) {
    assert_eq!(train.len(), 5 * RECORDS);
    assert_eq!(train.images.len(), 5 * RECORDS * IMAGE_BYTES);
    assert_eq!(test.len(), RECORDS);
    for (set, files) in [(train, 0..5), (test, 5..6)] {
        for (i, (f, r)) in files.flat_map(|f| (0..RECORDS).map(move |r| (f, r))).enumerate() {
            assert_eq!(set.labels[i], label(f, r), "label of image {i}");
            let img = set.image(i);
            for (c, y, x) in [(0, 0, 0), (1, 5, 31), (2, 31, 0), (2, 17, 9)] {
                assert_eq!(img[c * 1024 + y * 32 + x], pixel(f, r, c, y, x));
            }
        }
    }
}

#[test]
fn loads_files_in_order_with_their_values() {
    let dir = TempDir::new("load");
    write_files(&dir.0);
    let train = Cifar10::load_train_with(&dir.0, RECORDS).unwrap();
    let test = Cifar10::load_test_with(&dir.0, RECORDS).unwrap();
    check_contents(&train, &test);
}

#[test]
fn wrong_size_names_file_and_expected_size() {
    let dir = TempDir::new("size");
    write_files(&dir.0);
    let path = dir.0.join(TRAIN_FILES[2]);
    let mut bytes = file_bytes(2);
    bytes.pop();
    std::fs::write(&path, &bytes).unwrap();
    let err = format!("{:#}", Cifar10::load_train_with(&dir.0, RECORDS).unwrap_err());
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains(&bytes.len().to_string()), "{err}");
    assert!(err.contains(&(RECORDS * RECORD_BYTES).to_string()), "{err}");

    // The public loader expects the official 30,730,000 bytes.
    let err = format!("{:#}", Cifar10::load_test(&dir.0).unwrap_err());
    assert!(err.contains("30730000"), "{err}");
}

#[test]
fn missing_file_says_how_to_get_it() {
    let dir = TempDir::new("missing");
    write_files(&dir.0);
    let path = dir.0.join(TEST_FILE);
    std::fs::remove_file(&path).unwrap();
    let err = format!("{:#}", Cifar10::load_test_with(&dir.0, RECORDS).unwrap_err());
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("--data"), "{err}");
    assert!(err.contains("data_batch_1.bin"), "{err}");
}

#[test]
fn label_above_nine_names_file_and_record() {
    let dir = TempDir::new("label");
    write_files(&dir.0);
    let path = dir.0.join(TRAIN_FILES[4]);
    let mut bytes = file_bytes(4);
    bytes[2 * RECORD_BYTES] = 10;
    std::fs::write(&path, &bytes).unwrap();
    let err = format!("{:#}", Cifar10::load_train_with(&dir.0, RECORDS).unwrap_err());
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("record 2"), "{err}");
    assert!(err.contains("label 10"), "{err}");
}

#[test]
fn split_last_holds_out_the_tail() {
    let dir = TempDir::new("split");
    write_files(&dir.0);
    let train = Cifar10::load_train_with(&dir.0, RECORDS).unwrap();
    let whole = train.clone();
    let (keep, held) = train.split_last(4).unwrap();
    assert_eq!(keep.len(), 5 * RECORDS - 4);
    assert_eq!(held.len(), 4);
    assert_eq!(keep.images.len(), keep.len() * IMAGE_BYTES);
    assert_eq!(held.images.len(), 4 * IMAGE_BYTES);
    assert_eq!(keep.labels[..], whole.labels[..5 * RECORDS - 4]);
    assert_eq!(held.labels[..], whole.labels[5 * RECORDS - 4..]);
    assert_eq!(held.image(0), whole.image(5 * RECORDS - 4));
    assert_eq!(held.image(3), whole.image(5 * RECORDS - 1));

    let (all, none) = whole.clone().split_last(0).unwrap();
    assert_eq!((all.len(), none.len()), (5 * RECORDS, 0));
    let err = whole.split_last(5 * RECORDS + 1).unwrap_err().to_string();
    assert!(err.contains("16") && err.contains("15"), "{err}");
}

/// A set of `n` images with bytes in 1..=255 (so zero padding is recognisable), random-looking.
fn random_set(n: usize, seed: u64) -> Cifar10 {
    let mut rng = Rng::new(seed);
    Cifar10 {
        images: (0..n * IMAGE_BYTES).map(|_| 1 + rng.below(255) as u8).collect(),
        labels: (0..n).map(|i| (i % 10) as u8).collect(),
    }
}

fn normalise(v: u8, c: usize) -> f32 {
    (v as f32 / 255.0 - MEAN[c]) / STD[c]
}

#[test]
fn make_batch_normalises_exactly() {
    let data = random_set(4, 1);
    let indices = [3, 0, 3];
    let mut images = vec![0f32; indices.len() * IMAGE_BYTES];
    let mut labels = vec![0u32; indices.len()];
    make_batch(&data, &indices, None, MEAN, STD, &mut images, &mut labels);
    assert_eq!(labels, [3, 0, 3]);
    for (b, &i) in indices.iter().enumerate() {
        for k in 0..IMAGE_BYTES {
            let want = normalise(data.image(i)[k], k / 1024);
            assert_eq!(images[b * IMAGE_BYTES + k].to_bits(), want.to_bits());
        }
    }
    // Hand-checked pixels: 0 -> -mean/std, 255 -> (1 - mean)/std.
    let mut data = random_set(1, 2);
    data.images[0] = 0; // R (0, 0)
    data.images[1024 + 33] = 255; // G (1, 1)
    let mut images = vec![0f32; IMAGE_BYTES];
    let mut labels = vec![0u32; 1];
    make_batch(&data, &[0], None, MEAN, STD, &mut images, &mut labels);
    assert_eq!(images[0], -MEAN[0] / STD[0]);
    assert_eq!(images[1024 + 33], (1.0 - MEAN[1]) / STD[1]);
    assert!((images[0] - (-0.4914 / 0.2470)).abs() < 1e-6);
}

/// Output pixel (c, y, x) of image `src` cropped at (dy, dx) from the 4-padded image and maybe
/// flipped: an independent restatement of RandomCrop(32, padding=4) then RandomHorizontalFlip.
fn crop_reference(src: &[u8], dy: usize, dx: usize, flip: bool, c: usize, y: usize, x: usize) -> f32 {
    let xc = if flip { 31 - x } else { x };
    let (py, px) = (y + dy, xc + dx); // in the 40x40 padded image
    let v = if (4..36).contains(&py) && (4..36).contains(&px) { src[c * 1024 + (py - 4) * 32 + (px - 4)] } else { 0 };
    normalise(v, c)
}

#[test]
fn augmentation_crops_within_padding_flips_and_reproduces() {
    let n = 64;
    let data = random_set(n, 3);
    let indices: Vec<usize> = (0..n).collect();
    let mut images = vec![0f32; n * IMAGE_BYTES];
    let mut labels = vec![0u32; n];
    let mut rng = Rng::new(42);
    let start = rng.clone();
    make_batch(&data, &indices, Some(&mut rng), MEAN, STD, &mut images, &mut labels);
    assert_eq!(labels, (0..n as u32).map(|i| i % 10).collect::<Vec<_>>());

    let mut draws = start.clone();
    let (mut flips, mut offsets, mut padded) = (0, std::collections::HashSet::new(), 0);
    for b in 0..n {
        let out = &images[b * IMAGE_BYTES..(b + 1) * IMAGE_BYTES];
        // Which crops of the padded image (offsets 0..=8, flip or not) give this output?
        let mut matches = Vec::new();
        for dy in 0..9 {
            for dx in 0..9 {
                for flip in [false, true] {
                    let same = (0..IMAGE_BYTES).all(|k| {
                        let (c, y, x) = (k / 1024, (k / 32) % 32, k % 32);
                        out[k].to_bits() == crop_reference(data.image(b), dy, dx, flip, c, y, x).to_bits()
                    });
                    if same {
                        matches.push((dy, dx, flip));
                    }
                }
            }
        }
        assert_eq!(matches.len(), 1, "image {b}: output is not one crop of the padded image");
        let (dy, dx, flip) = matches[0];
        // The documented draw order: crop y, crop x, flip.
        assert_eq!((dy, dx, flip), (draws.below(9), draws.below(9), draws.below(2) == 1), "image {b}");
        flips += flip as usize;
        offsets.insert((dy, dx));
        for c in 0..3 {
            let pad = -MEAN[c] / STD[c];
            padded += out[c * 1024..(c + 1) * 1024].iter().filter(|&&v| v == pad).count();
        }
    }
    assert_eq!(rng, draws, "three draws per image");
    assert!(flips > 10 && flips < n - 10, "{flips} flips of {n}");
    assert!(offsets.len() > 20, "only {} distinct offsets", offsets.len());
    assert!(padded > 0, "no padded pixel seen");

    // Same seed, same batch; another seed, another batch.
    let mut again = vec![0f32; n * IMAGE_BYTES];
    make_batch(&data, &indices, Some(&mut start.clone()), MEAN, STD, &mut again, &mut labels);
    assert!(again.iter().zip(&images).all(|(a, b)| a.to_bits() == b.to_bits()));
    make_batch(&data, &indices, Some(&mut Rng::new(43)), MEAN, STD, &mut again, &mut labels);
    assert!(again != images);
}

/// The six tiny files as `cifar-10-batches-bin/*.bin` in a .tar.gz, plus a stray text file as in
/// the official archive.
fn archive_bytes() -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    let mut add = |name: &str, bytes: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, format!("cifar-10-batches-bin/{name}"), bytes).unwrap();
    };
    add("batches.meta.txt", b"airplane\nautomobile\n");
    for (name, bytes) in all_files() {
        add(name, &bytes);
    }
    tar.into_inner().unwrap().finish().unwrap()
}

fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn list(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn download_extracts_the_six_files() {
    let archive = archive_bytes();
    let md5 = md5_hex(&archive);
    let (base, server) = serve(archive, 1);
    let url = format!("{base}cifar-10-binary.tar.gz");
    let root = TempDir::new("download");
    let dir = root.0.join("cifar-10-batches-bin");

    cifar::ensure_downloaded(&dir, &url, &Checksum::Md5(md5.clone())).unwrap();
    server.join().unwrap();
    // Only the data folder is left: no archive, no .part, no temporary folder.
    assert_eq!(list(&root.0), ["cifar-10-batches-bin"]);
    let mut want: Vec<String> = TRAIN_FILES.iter().chain([&TEST_FILE]).map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(list(&dir), want);
    let train = Cifar10::load_train_with(&dir, RECORDS).unwrap();
    let test = Cifar10::load_test_with(&dir, RECORDS).unwrap();
    check_contents(&train, &test);

    // All six present: nothing is fetched (the server is gone, so a fetch would fail).
    cifar::ensure_downloaded(&dir, &url, &Checksum::Md5(md5)).unwrap();
}

#[test]
fn download_with_wrong_md5_leaves_nothing() {
    let archive = archive_bytes();
    let actual = md5_hex(&archive);
    let (base, server) = serve(archive, 1);
    let url = format!("{base}cifar-10-binary.tar.gz");
    let root = TempDir::new("badmd5");
    let dir = root.0.join("cifar-10-batches-bin");
    let wrong = "0123456789abcdef0123456789abcdef";

    let err = cifar::ensure_downloaded(&dir, &url, &Checksum::Md5(wrong.into())).unwrap_err();
    let err = format!("{err:#}");
    server.join().unwrap();
    assert!(err.contains(wrong), "{err}");
    assert!(err.contains(&actual), "{err}");
    assert!(err.contains("cifar-10-binary.tar.gz"), "{err}");
    assert!(list(&root.0).is_empty(), "left behind: {:?}", list(&root.0));
}

#[test]
fn download_from_closed_port_names_url_and_destination() {
    // Bind then drop a listener: its port is very likely closed for the next moment.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/cifar-10-binary.tar.gz");
    let root = TempDir::new("closed");
    let dir = root.0.join("cifar-10-batches-bin");

    let err = cifar::ensure_downloaded(&dir, &url, &Checksum::Md5(cifar::MD5.into())).unwrap_err();
    let err = format!("{err:#}");
    assert!(err.contains(&url), "{err}");
    assert!(err.contains(&root.0.join("cifar-10-binary.tar.gz").display().to_string()), "{err}");
    assert!(!err.contains('\n'), "{err}");
    assert!(list(&root.0).is_empty(), "left behind: {:?}", list(&root.0));
}

#[test]
fn checksums_accept_prefix_and_reject_wrong_digests() {
    use resnet_wgpu::data::download::verify_file;
    let root = TempDir::new("verify");
    let path = root.0.join("blob");
    std::fs::write(&path, b"abc").unwrap();
    // Known digests of "abc".
    verify_file(&path, &Checksum::Md5("900150983cd24fb0d6963f7d28e17f72".into())).unwrap();
    verify_file(&path, &Checksum::Sha256Prefix("ba7816bf".into())).unwrap();
    verify_file(&path, &Checksum::Sha256Prefix("BA7816BF8F01".into())).unwrap();
    let err = verify_file(&path, &Checksum::Sha256Prefix("ba7816be".into())).unwrap_err();
    let err = format!("{err:#}");
    assert!(err.contains("ba7816be") && err.contains("ba7816bf8f01cfea"), "{err}");
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(verify_file(&path, &Checksum::Sha256Prefix(String::new())).is_err());
}
