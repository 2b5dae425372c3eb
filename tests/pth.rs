//! The `.pth` reader against a state dict written by torch.save, and its errors on broken files.
//! Fixture: tests/fixtures/make_pth_fixture.py writes pth_fixture.pth and, beside it, the values
//! torch itself reads back (`.float().contiguous()`) as pth_fixture_expected.safetensors.

use std::io::{Cursor, Read, Write};
use std::path::PathBuf;

use resnet_wgpu::pth::read_state_dict;
use safetensors::SafeTensors;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipArchive, ZipWriter};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pth_fixture.pth");
const FIXTURE_P4: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pth_fixture_p4.pth");
const EXPECTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pth_fixture_expected.safetensors");

/// Writes `bytes` to a file of this test's own under the target directory.
fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("pth_test_{name}"));
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Every entry of the fixture archive, in archive order.
fn fixture_entries() -> Vec<(String, Vec<u8>)> {
    let mut zip = ZipArchive::new(std::fs::File::open(FIXTURE).unwrap()).unwrap();
    (0..zip.len())
        .map(|i| {
            let mut entry = zip.by_index(i).unwrap();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            (entry.name().unwrap().into_owned(), bytes)
        })
        .collect()
}

/// A zip archive of stored entries, as torch.save writes them.
fn zip_of(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
    for (name, bytes) in entries {
        zip.start_file(name.as_str(), options).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

/// The fixture with its data.pkl replaced by `pickle`.
fn fixture_with_pickle(pickle: &[u8]) -> Vec<u8> {
    let mut entries = fixture_entries();
    for (name, bytes) in &mut entries {
        if name.ends_with("/data.pkl") {
            *bytes = pickle.to_vec();
        }
    }
    zip_of(&entries)
}

fn error_of(name: &str, bytes: &[u8]) -> String {
    let path = temp_file(name, bytes);
    let err = read_state_dict(&path).expect_err("a broken file must be an error");
    let message = format!("{err:#}");
    eprintln!("{name}: {message}");
    assert!(message.contains(path.to_str().unwrap()), "the error names the file: {message}");
    message
}

#[test]
fn fixture_matches_torch_bit_for_bit() {
    check_fixture(FIXTURE);
}

#[test]
fn fixture_in_pickle_protocol_4_matches_torch_bit_for_bit() {
    check_fixture(FIXTURE_P4);
}

fn check_fixture(path: &str) {
    let tensors = read_state_dict(path.as_ref()).unwrap();

    let expected_bytes = std::fs::read(EXPECTED).unwrap();
    let (_, metadata) = SafeTensors::read_metadata(&expected_bytes).unwrap();
    let order = metadata.metadata().as_ref().unwrap()["order"].clone();
    let expected = SafeTensors::deserialize(&expected_bytes).unwrap();

    let names: Vec<&str> = tensors.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names.join(","), order, "names in torch.save's order");
    for name in [
        "conv.weight",
        "bn.num_batches_tracked",
        "transposed",
        "shared_a",
        "shared_b",
        "half",
        "bfloat",
        "double",
        "scalar",
        "long",
    ] {
        assert!(names.contains(&name), "the fixture holds {name}");
    }

    for (name, shape, values) in &tensors {
        let view = expected.tensor(name).unwrap();
        assert_eq!(view.dtype(), safetensors::Dtype::F32);
        assert_eq!(shape, view.shape(), "{name}: shape");
        let want: Vec<u32> = view.data().chunks_exact(4).map(|b| u32::from_le_bytes(b.try_into().unwrap())).collect();
        let got: Vec<u32> = values.iter().map(|v| v.to_bits()).collect();
        // Bits, so -0.0 and NaN are checked too.
        assert_eq!(got, want, "{name}: values");
    }

    // Spot checks a human can read, independent of the safetensors file.
    let get = |name: &str| tensors.iter().find(|(n, _, _)| n == name).unwrap();
    assert_eq!(get("scalar").1, Vec::<usize>::new());
    assert_eq!(get("scalar").2, vec![2.75]);
    assert_eq!(get("bn.num_batches_tracked").2, vec![7.0]);
    assert_eq!(get("long").2, vec![0.0, -3.0, 16777216.0]);
    // base = arange(20) * 0.25 - 1; shared_a = base[2:8].view(2, 3), shared_b = base[10:20:2].
    assert_eq!(get("shared_a").1, vec![2, 3]);
    assert_eq!(get("shared_a").2, vec![-0.5, -0.25, 0.0, 0.25, 0.5, 0.75]);
    assert_eq!(get("shared_b").2, vec![1.5, 2.0, 2.5, 3.0, 3.5]);
    assert_eq!(get("transposed").1, vec![5, 3]);
    let half = &get("half").2;
    assert_eq!(half[2], 2f32.powi(-24));
    assert_eq!(half[4], 65504.0);
    assert!(half[1] == 0.0 && half[1].is_sign_negative());
    assert!(half[5].is_infinite() && half[7].is_nan());
}

#[test]
fn a_text_file_is_not_a_zip() {
    let message = error_of("text.pth", b"this is not a checkpoint\n");
    assert!(message.contains("not a zip archive"), "{message}");
}

#[test]
fn a_zip_without_data_pkl_is_rejected() {
    let zip = zip_of(&[("archive/version".into(), b"3\n".to_vec())]);
    let message = error_of("no_pkl.pth", &zip);
    assert!(message.contains("no data.pkl"), "{message}");
}

#[test]
fn a_truncated_file_is_an_error() {
    let bytes = std::fs::read(FIXTURE).unwrap();
    for (i, len) in [0, 10, bytes.len() / 2, bytes.len() - 1].into_iter().enumerate() {
        error_of(&format!("cut_{i}.pth"), &bytes[..len]);
    }
}

#[test]
fn a_truncated_storage_names_the_tensor() {
    // Every storage cut to half its length: the first tensor in the dict fails first.
    let mut entries = fixture_entries();
    for (name, bytes) in &mut entries {
        if name.contains("/data/") {
            bytes.truncate(bytes.len() / 2);
        }
    }
    let message = error_of("short_storage.pth", &zip_of(&entries));
    assert!(message.contains("'conv.weight'"), "{message}");
    assert!(message.contains("truncated"), "{message}");
}

#[test]
fn a_missing_storage_names_the_tensor() {
    let entries: Vec<_> = fixture_entries().into_iter().filter(|(name, _)| !name.ends_with("/data/0")).collect();
    let message = error_of("missing_storage.pth", &zip_of(&entries));
    assert!(message.contains("'conv.weight'") && message.contains("data/0"), "{message}");
}

#[test]
fn an_unknown_global_is_named() {
    // PROTO 2; GLOBAL 'os system'; STOP: what a malicious pickle starts with.
    let message = error_of("global.pth", &fixture_with_pickle(b"\x80\x02cos\nsystem\n."));
    assert!(message.contains("os.system"), "{message}");
}

#[test]
fn an_unknown_opcode_is_named() {
    // PROTO 2; EMPTY_DICT; 0xff (not an opcode).
    let message = error_of("opcode.pth", &fixture_with_pickle(b"\x80\x02}\xff."));
    assert!(message.contains("0xff"), "{message}");
}

#[test]
fn a_truncated_pickle_is_an_error() {
    let entries = fixture_entries();
    let pkl = &entries.iter().find(|(n, _)| n.ends_with("/data.pkl")).unwrap().1;
    let message = error_of("short_pickle.pth", &fixture_with_pickle(&pkl[..pkl.len() / 2]));
    assert!(message.contains("ends early"), "{message}");
}

#[test]
fn a_wrapped_checkpoint_is_not_a_state_dict() {
    // {'epoch': 1}: PROTO 2; EMPTY_DICT; SHORT_BINUNICODE 'epoch'; BININT1 1; SETITEM; STOP.
    let message = error_of("wrapped.pth", &fixture_with_pickle(b"\x80\x02}\x8c\x05epochK\x01s."));
    assert!(message.contains("'epoch'") && message.contains("not a tensor"), "{message}");
}
