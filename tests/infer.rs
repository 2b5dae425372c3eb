//! `infer` against PyTorch: torchvision's resnet18 and resnet50 (eval mode, float64) on the same
//! weights and photos, the folded plan against the unfolded one, a `.pth` through the same path,
//! downloads from a local server, and the errors a user can cause.
//!
//! Fixture: tests/fixtures/make_infer_golden.py. It stores no weights: weights, photos and inputs
//! are drawn by a formula (FNV-1a of the tensor's name seeds splitmix64) that [`uniform`] and
//! [`noise_png`] repeat bit for bit, so the fixture holds only PyTorch's logits and a tiny `.pth`.
//!
//! Logits are compared by max |gpu - torch| / max |torch| over the whole [images, classes] array.

mod common;

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use common::{gpus, serve};
use resnet_wgpu::checkpoint::Checkpoint;
use resnet_wgpu::data::image::{IMAGENET_MEAN, IMAGENET_STD, Partial};
use resnet_wgpu::gpu::Gpu;
use resnet_wgpu::infer::{self, Classifier, Options, Prediction, Tag, WeightsFile};
use resnet_wgpu::model::{Arch, BlockKind, ResNet, Shortcut};
use resnet_wgpu::plan::{EvalStep, InferStep};
use safetensors::SafeTensors;
use sha2::{Digest, Sha256};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

/// The photos of the fixture: (name, width, height). The shorter side is 256, so preprocessing
/// for the V1 weights crops without resampling.
const IMAGES: [(&str, u32, u32); 2] = [("image0", 256, 256), ("image1", 288, 256)];

fn fnv1a64(name: &str) -> u64 {
    name.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3))
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The fixture script's `uniform(name, shape, lo, hi)`: value i is
/// f32(lo + (hi - lo) * (splitmix64(fnv1a64(name) + i) >> 40) / 2^24).
fn uniform(name: &str, len: usize, lo: f64, hi: f64) -> Vec<f32> {
    let seed = fnv1a64(name);
    (0..len as u64)
        .map(|i| {
            let u = (splitmix64(seed.wrapping_add(i)) >> 40) as f64 / (1u64 << 24) as f64;
            (lo + (hi - lo) * u) as f32
        })
        .collect()
}

/// The script's weights for `arch`: He-scaled uniform convs, BN weight and running_var
/// U(0.5, 1.5), BN bias and running_mean U(-0.1, 0.1), fc U(+-1/sqrt(in_features)).
fn formula_weights(arch: &Arch) -> Checkpoint {
    let mut specs = arch.parameters();
    specs.extend(arch.buffers());
    let fc_in = specs.iter().find(|(n, _)| n == "fc.weight").expect("an fc layer").1[1];
    let tensors = specs
        .into_iter()
        .map(|(name, shape)| {
            let (lo, hi) = if name.starts_with("fc.") {
                let b = 1.0 / (fc_in as f64).sqrt();
                (-b, b)
            } else if shape.len() == 4 {
                let b = (6.0 / (shape[1] * shape[2] * shape[3]) as f64).sqrt();
                (-b, b)
            } else if name.ends_with("running_var") || name.ends_with(".weight") {
                (0.5, 1.5)
            } else {
                (-0.1, 0.1)
            };
            let values = uniform(&name, shape.iter().product(), lo, hi);
            (name, (shape, values))
        })
        .collect();
    Checkpoint { tensors, ..Default::default() }
}

/// A folder of this test's own, emptied.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("resnet-wgpu-infer-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The script's noise photo `name`: byte (y*W + x)*3 + c is splitmix64(fnv1a64(name) + index) >> 56.
fn noise_png(dir: &Path, name: &str, width: u32, height: u32) -> PathBuf {
    let seed = fnv1a64(name);
    let bytes = (0..(width * height * 3) as u64).map(|i| (splitmix64(seed.wrapping_add(i)) >> 56) as u8).collect();
    let path = dir.join(format!("{name}.png"));
    image::RgbImage::from_raw(width, height, bytes).unwrap().save(&path).unwrap();
    path
}

/// PyTorch's float64 results from infer_golden.safetensors.
fn golden(name: &str) -> Vec<f64> {
    let bytes = std::fs::read(format!("{FIXTURES}/infer_golden.safetensors")).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let view = file.tensor(name).unwrap_or_else(|e| panic!("the fixture has no {name}: {e}"));
    assert_eq!(view.dtype(), safetensors::Dtype::F64);
    view.data().chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect()
}

/// max |got - reference| / max |reference|.
fn rel_err(got: &[f32], reference: &[f64]) -> f64 {
    assert_eq!(got.len(), reference.len(), "lengths differ");
    assert!(got.iter().all(|x| x.is_finite()), "non-finite logits");
    let scale = reference.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    got.iter().zip(reference).map(|(&g, &r)| (g as f64 - r).abs()).fold(0.0, f64::max) / scale
}

fn on(gpu: &Gpu) -> String {
    format!("on {} ({:?})", gpu.info.name, gpu.info.backend)
}

/// wgpu's GL backend panics when a thread waits more than 6 s for the GL context, which another
/// test's ResNet-50 forward on llvmpipe holds that long, so the GPU tests of this file take turns.
fn gpu_turn() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs [`infer::classify`] and collects every image's result in order.
fn classify_all(gpu: &Gpu, model: &mut Classifier, paths: &[PathBuf], batch: usize) -> Vec<anyhow::Result<Prediction>> {
    let mut results = Vec::new();
    let options =
        Options { resize: 256, mean: IMAGENET_MEAN, std: IMAGENET_STD, batch, top: 5, partial: Partial::Refuse };
    infer::classify(gpu, model, paths, options, |i, r| {
        assert_eq!(i, results.len(), "results come in input order");
        results.push(r);
    })
    .unwrap();
    results
}

/// The GPU matches PyTorch on both photos: the first two good images go through the full plan
/// (batch 2), the last through the remainder plan (batch 1); bad files in between are reported,
/// naming the file, and do not stop the others.
#[test]
fn resnet18_matches_pytorch_and_reports_bad_files() {
    let _turn = gpu_turn();
    let arch = infer::imagenet_arch("resnet18").unwrap();
    let ck = formula_weights(&arch);
    let torch = golden("resnet18.logits");
    let dir = temp_dir("resnet18");
    let [a, b] = IMAGES.map(|(name, w, h)| noise_png(&dir, name, w, h));
    let corrupt = dir.join("corrupt.png");
    std::fs::write(&corrupt, &std::fs::read(&a).unwrap()[..200]).unwrap();
    let empty = dir.join("empty.jpg");
    std::fs::write(&empty, b"").unwrap();
    let text = dir.join("notes.jpg");
    std::fs::write(&text, b"not a photo\n").unwrap();
    let missing = dir.join("missing.png");
    let paths = [a.clone(), missing.clone(), b, corrupt.clone(), empty.clone(), text.clone(), dir.clone(), a];
    let labels = resnet_wgpu::data::image::labels();

    for gpu in gpus() {
        let mut model = Classifier::new(gpu, arch.clone(), &ck, Path::new("formula weights")).unwrap();
        let results = classify_all(gpu, &mut model, &paths, 2);
        assert_eq!(results.len(), paths.len());
        let mut errors = HashMap::new();
        for (path, result) in paths.iter().zip(&results) {
            if let Err(e) = result {
                let line = format!("{e:#}");
                assert!(line.contains(&path.display().to_string()), "the error names the file: {line}");
                assert!(!line.contains('\n'), "one line: {line}");
                errors.insert(path.clone(), line);
            }
        }
        assert!(errors[&missing].contains("no such file"), "{}", errors[&missing]);
        assert!(errors[&corrupt].contains("corrupt or truncated"), "{}", errors[&corrupt]);
        assert!(errors[&empty].contains("empty file"), "{}", errors[&empty]);
        assert!(errors[&text].contains("not an image"), "{}", errors[&text]);
        assert!(errors[&dir].contains("directory"), "{}", errors[&dir]);
        assert_eq!(errors.len(), 5);

        let good: Vec<&Prediction> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        let logits: Vec<f32> = good[..2].iter().flat_map(|p| p.logits.clone()).collect();
        let err = rel_err(&logits, &torch);
        eprintln!("resnet18 {}: max |gpu - torch| / max |torch| = {err:.2e}", on(gpu));
        assert!(err <= 1e-4, "resnet18 logits {}: off by {err:e} of the largest", on(gpu));
        let err = rel_err(&good[2].logits, &torch[..1000]);
        assert!(err <= 1e-4, "resnet18 through the remainder plan {}: off by {err:e}", on(gpu));

        for p in &good {
            assert_eq!(p.top.len(), 5);
            let argmax = (0..1000).max_by(|&i, &j| p.logits[i].total_cmp(&p.logits[j])).unwrap();
            assert_eq!(p.top[0].0, argmax, "the most probable class is the largest logit");
            assert!(p.top.windows(2).all(|w| w[0].1 >= w[1].1), "top is sorted by probability");
            let total: f64 = p.top.iter().map(|t| t.1).sum();
            assert!(total <= 1.0 + 1e-9 && p.top[0].1 > 0.0);
        }
        let doc = infer::result_json(&paths[0], good[0], &labels);
        assert_eq!(doc["logits"].as_array().unwrap().len(), 1000);
        assert_eq!(doc["top"][0]["index"], good[0].top[0].0);
        assert_eq!(doc["top"][0]["label"], labels[good[0].top[0].0]);
        let adapter = serde_json::to_value(resnet_wgpu::gpu::AdapterJson::new(&gpu.info)).unwrap();
        for key in ["name", "vendor", "backend", "device_type", "driver"] {
            assert!(adapter.get(key).is_some(), "adapter has {key}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn resnet50_matches_pytorch() {
    let _turn = gpu_turn();
    let arch = infer::imagenet_arch("resnet50").unwrap();
    let ck = formula_weights(&arch);
    let torch = golden("resnet50.logits");
    let dir = temp_dir("resnet50");
    let paths = IMAGES.map(|(name, w, h)| noise_png(&dir, name, w, h));
    for gpu in gpus() {
        let mut model = Classifier::new(gpu, arch.clone(), &ck, Path::new("formula weights")).unwrap();
        let results = classify_all(gpu, &mut model, &paths, 2);
        let logits: Vec<f32> = results.iter().flat_map(|r| r.as_ref().unwrap().logits.clone()).collect();
        let err = rel_err(&logits, &torch);
        eprintln!("resnet50 {}: max |gpu - torch| / max |torch| = {err:.2e}", on(gpu));
        assert!(err <= 1e-4, "resnet50 logits {}: off by {err:e} of the largest", on(gpu));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// InferStep (BN folded into the convs, add and ReLU in their epilogue) and EvalStep (conv, BN
/// with running statistics, ReLU, add as separate kernels) agree on the same weights and batch.
#[test]
fn folded_matches_unfolded() {
    let _turn = gpu_turn();
    let arch = infer::imagenet_arch("resnet18").unwrap();
    let ck = formula_weights(&arch);
    let input = uniform("folded.input", 2 * 3 * 224 * 224, -2.0, 2.0);
    let values: HashMap<String, Vec<f32>> = ck.tensors.iter().map(|(n, (_, v))| (n.clone(), v.clone())).collect();
    for gpu in gpus() {
        let folded = InferStep::new(gpu, &arch, &ck, Path::new("formula weights"), 2).unwrap();
        gpu.write(&folded.input, &input);
        folded.run(gpu).unwrap();
        let folded_logits: Vec<f32> = gpu.read(&folded.logits).unwrap();

        let model = ResNet::new(gpu, arch.clone()).unwrap();
        model.load(gpu, &values).unwrap();
        let eval = EvalStep::new(gpu, &model, 2).unwrap();
        gpu.write(&eval.input, &input);
        eval.run(gpu).unwrap();
        let eval_logits: Vec<f32> = gpu.read(&eval.logits).unwrap();

        let reference: Vec<f64> = eval_logits.iter().map(|&x| x as f64).collect();
        let err = rel_err(&folded_logits, &reference);
        eprintln!("folded vs unfolded resnet18 {}: {err:.2e}", on(gpu));
        assert!(err <= 1e-5, "folded and unfolded logits {} differ by {err:e} of the largest", on(gpu));
    }
}

/// A tiny CIFAR-style network from a `.pth` written by torch.save: the reader gives the formula's
/// weights exactly, `num_batches_tracked` included and ignored, and the logits match PyTorch's.
#[test]
fn tiny_pth_matches_pytorch() {
    let _turn = gpu_turn();
    let arch = Arch {
        name: "tiny".into(),
        imagenet: false,
        block: BlockKind::Basic,
        stages: vec![(1, 16), (1, 32)],
        shortcut: Shortcut::B,
        classes: 10,
        image: 32,
    };
    let path = PathBuf::from(format!("{FIXTURES}/infer_tiny.pth"));
    let ck = infer::read_weights(&path).unwrap();
    let expected = formula_weights(&arch);
    for (name, (shape, values)) in &expected.tensors {
        let (got_shape, got) = &ck.tensors[name];
        assert_eq!(got_shape, shape, "{name}");
        assert!(got.iter().zip(values).all(|(a, b)| a.to_bits() == b.to_bits()), "{name}: the formula's values");
    }
    assert_eq!(ck.tensors["bn1.num_batches_tracked"].0, Vec::<usize>::new());
    assert_eq!(ck.tensors.len(), expected.tensors.len() + 6, "plus one num_batches_tracked per BN");
    infer::check_weights(&arch, &ck, &path).unwrap();

    let input = uniform("tiny.input", 2 * 3 * 32 * 32, -2.0, 2.0);
    let torch = golden("tiny.logits");
    for gpu in gpus() {
        let mut model = Classifier::new(gpu, arch.clone(), &ck, &path).unwrap();
        let err = rel_err(&model.logits(gpu, &input, 2).unwrap(), &torch);
        assert!(err <= 1e-5, "tiny logits {}: off by {err:e} of the largest", on(gpu));
        // Batch 1 twice: the remainder-sized plan on the same weights.
        let err = rel_err(&model.logits(gpu, &input, 1).unwrap(), &torch);
        assert!(err <= 1e-5, "tiny logits at batch 1 {}: off by {err:e}", on(gpu));
    }
}

/// The tiny `.pth` downloaded from a local server lands in the cache folder when its SHA-256
/// starts with the digits given, is then used from the cache without a request, and reads back.
#[test]
fn download_checks_the_sha256_prefix() {
    let body = std::fs::read(format!("{FIXTURES}/infer_tiny.pth")).unwrap();
    let digest: String = Sha256::digest(&body).iter().map(|b| format!("{b:02x}")).collect();
    let (base, server) = serve(body.clone(), 1);
    let url = format!("{base}models/");
    let root = temp_dir("download");
    let dir = root.join("weights");
    let file =
        WeightsFile { name: format!("tiny-{}.pth", &digest[..8]), sha256_prefix: digest[..8].into(), resize: 256 };
    let path = infer::fetch(&file, &url, &dir).unwrap();
    assert_eq!(path, dir.join(&file.name));
    assert_eq!(std::fs::read(&path).unwrap(), body);
    assert_eq!(server.join().unwrap(), vec![format!("/models/{}", file.name)]);
    // Cached: no server is listening now, so this would fail if it asked again.
    assert_eq!(infer::fetch(&file, &url, &dir).unwrap(), path);
    assert!(infer::read_weights(&path).unwrap().tensors.contains_key("layer2.0.downsample.0.weight"));

    let (base, server) = serve(body, 1);
    let url = format!("{base}models/");
    let wrong = WeightsFile { name: "tiny-00000000.pth".into(), sha256_prefix: "00000000".into(), resize: 256 };
    let err = format!("{:#}", infer::fetch(&wrong, &url, &dir).unwrap_err());
    server.join().unwrap();
    assert!(err.contains("checksum mismatch") && err.contains("00000000") && err.contains(&digest), "{err}");
    assert!(!dir.join(&wrong.name).exists(), "no file is left behind on a mismatch");
    assert!(!dir.join("tiny-00000000.pth.part").exists(), "no partial file is left behind");
    let _ = std::fs::remove_dir_all(&root);
}

/// Offline, the error names the address and where to save the file by hand.
#[test]
fn download_failure_names_the_address_and_the_destination() {
    // A port that was just free: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/models");
    let dir = temp_dir("offline");
    let file = infer::torchvision_file("resnet18", Tag::Tv1).unwrap();
    assert_eq!(
        file,
        WeightsFile { name: "resnet18-f37072fd.pth".into(), sha256_prefix: "f37072fd".into(), resize: 256 }
    );
    let err = format!("{:#}", infer::fetch(&file, &url, &dir).unwrap_err());
    assert!(err.contains(&format!("{url}/resnet18-f37072fd.pth")), "{err}");
    assert!(err.contains(&dir.join("resnet18-f37072fd.pth").display().to_string()), "{err}");
    assert!(!err.contains('\n'), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// What a user can get wrong before any GPU work, each one clear line naming the value or file.
#[test]
fn weights_and_model_errors() {
    let err = |r: anyhow::Result<()>| format!("{:#}", r.unwrap_err());

    let e = err(infer::imagenet_arch("resnet20").map(drop));
    assert!(e.contains("\"resnet20\"") && e.contains("resnet50"), "{e}");
    let e = err(infer::torchvision_file("resnet34", Tag::Tv2).map(drop));
    assert!(e.contains("no tv2 weights for resnet34"), "{e}");
    assert_eq!(infer::torchvision_file("resnet50", Tag::Tv2).unwrap().resize, 232);
    assert_eq!(infer::torchvision_file("resnet152", Tag::Tv2).unwrap().name, "resnet152-f82ba261.pth");
    assert_eq!(infer::resize_for_file(Path::new("/x/resnet101-cd907fc2.pth")), 232);
    assert_eq!(infer::resize_for_file(Path::new("model.safetensors")), 256);

    let dir = temp_dir("errors");
    let missing = dir.join("missing.safetensors");
    let e = err(infer::read_weights(&missing).map(drop));
    assert!(e.contains(&missing.display().to_string()), "{e}");
    let text = dir.join("weights.safetensors");
    std::fs::write(&text, b"hello, not weights").unwrap();
    let e = err(infer::read_weights(&text).map(drop));
    assert!(e.contains(&text.display().to_string()) && e.contains("not a valid safetensors"), "{e}");
    let legacy = dir.join("legacy.pth");
    std::fs::write(&legacy, b"\x80\x02}q\x00.").unwrap();
    let e = err(infer::read_weights(&legacy).map(drop));
    assert!(e.contains("not a zip archive"), "{e}");

    let arch = infer::imagenet_arch("resnet18").unwrap();
    let good = formula_weights(&arch);
    let source = Path::new("w.safetensors");
    infer::check_weights(&arch, &good, source).unwrap();

    let mut wrong_shape = good.clone();
    wrong_shape.tensors.get_mut("layer1.0.conv1.weight").unwrap().0 = vec![64, 64, 1, 1];
    let e = err(infer::check_weights(&arch, &wrong_shape, source));
    assert!(e.contains("layer1.0.conv1.weight") && e.contains("[64, 64, 1, 1]") && e.contains("[64, 64, 3, 3]"), "{e}");
    assert!(e.contains("w.safetensors"), "{e}");

    let mut missing_key = good.clone();
    missing_key.tensors.remove("layer3.1.bn2.running_var");
    let e = err(infer::check_weights(&arch, &missing_key, source));
    assert!(e.contains("layer3.1.bn2.running_var"), "{e}");

    let mut extra = good.clone();
    extra.tensors.insert("layer1.0.conv3.weight".into(), (vec![1], vec![0.0]));
    extra.tensors.insert("bn1.num_batches_tracked".into(), (vec![], vec![7.0]));
    let e = err(infer::check_weights(&arch, &extra, source));
    assert!(e.contains("layer1.0.conv3.weight") && !e.contains("num_batches_tracked"), "{e}");

    // A ResNet-50's weights given as a ResNet-18's.
    let e = err(infer::check_weights(&arch, &formula_weights(&infer::imagenet_arch("resnet50").unwrap()), source));
    assert!(e.contains("resnet18"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn softmax_and_top_k() {
    let p = Prediction::new(vec![1.0, 3.0, 2.0, 3.0, 0.0], 3);
    let e = [1f64.exp(), 3f64.exp(), 2f64.exp(), 3f64.exp(), 1.0];
    let sum: f64 = e.iter().sum();
    assert_eq!(p.top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 3, 2], "ties in index order");
    assert!((p.top[0].1 - e[1] / sum).abs() < 1e-15 && (p.top[2].1 - e[2] / sum).abs() < 1e-15);
    // Large logits do not overflow.
    let p = Prediction::new(vec![1e4, 1e4 - 1.0], 2);
    assert!((p.top[0].1 - 1.0 / (1.0 + (-1f64).exp())).abs() < 1e-12);
}
