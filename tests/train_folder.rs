//! `train folder` and `eval folder` on folders the tests write (noisy PNGs of three colours): the
//! loss falls, resume continues bit for bit, the fc layer is replaced, a frozen backbone (or frozen
//! batch norm statistics) keeps its bits, the class names and transform travel with the weights
//! (to `eval folder` and `infer`), the saved state dict is torchvision's, and bad input is refused
//! clearly.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use common::{gpus, temp_dir};
use resnet_wgpu::checkpoint::Checkpoint;
use resnet_wgpu::data::augment::Augment;
use resnet_wgpu::data::folder::{ImageFolder, ValSplit};
use resnet_wgpu::data::image::IMAGENET_MEAN;
use resnet_wgpu::gpu::Gpu;
use resnet_wgpu::infer::FolderWeights;
use resnet_wgpu::model::{Arch, ResNet, Shortcut};
use resnet_wgpu::ops::sgd::Sgd;
use resnet_wgpu::plan::{Statistics, TrainStep, Trained};
use resnet_wgpu::rng::Rng;
use resnet_wgpu::train::command::init_weights;
use resnet_wgpu::train::sets::{FolderEval, FolderTrain};
use resnet_wgpu::train::{self, FolderRecipe, Outputs, Recipe, Schedule, Start, Summary};

const CLASSES: [(&str, [f64; 3]); 3] =
    [("blue", [0.1, 0.1, 0.9]), ("green", [0.1, 0.9, 0.1]), ("red", [0.9, 0.1, 0.1])];

/// `per_class` noisy PNGs of each colour, of assorted sizes, in `root/<colour>/`.
fn colour_folder(root: &Path, per_class: u32) -> ImageFolder {
    let mut rng = Rng::new(5);
    for (name, level) in CLASSES {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..per_class {
            let img = image::RgbImage::from_fn(36 + 5 * (i % 3), 40 - 3 * (i % 4), |_, _| {
                image::Rgb(level.map(|l| (255.0 * (l + 0.3 * (rng.uniform() - 0.5)).clamp(0.0, 1.0)) as u8))
            });
            img.save(dir.join(format!("{i}.png"))).unwrap();
        }
    }
    ImageFolder::scan(root).unwrap()
}

/// The recipe of a run on `folder` (scanned from `dir`), a quarter of every class held out.
fn folder_recipe(folder: &ImageFolder, dir: &Path) -> FolderRecipe {
    FolderRecipe {
        size: 32,
        augment: Augment::Standard,
        classes: folder.classes.clone(),
        val_split: Some(ValSplit::Fraction(0.25)),
        fingerprint: folder.fingerprint(dir),
        freeze_backbone: false,
        bn_eval: false,
    }
}

fn recipe(folder: FolderRecipe, steps: usize) -> Recipe {
    Recipe { steps, batch_size: 6, lr: 0.05, schedule: Schedule::Constant, ..Recipe::folder("resnet18", false, folder) }
}

fn outputs(dir: &Path, save: Option<PathBuf>) -> Outputs {
    Outputs { save, checkpoint_dir: dir.to_path_buf(), eval_every: Some(1000), json_log: None }
}

/// Trains `recipe` on `folder` split as the recipe says.
fn run(gpu: &Gpu, recipe: &Recipe, folder: &ImageFolder, start: Start, out: &Outputs) -> anyhow::Result<Summary> {
    let (train_images, val) = folder.split(ValSplit::Fraction(0.25), recipe.seed).unwrap();
    let train_set = FolderTrain { folder: Arc::new(train_images), workers: 2, strict: false };
    let val_set = FolderEval::new(val, 37, 32, 2, false).unwrap();
    train::train(gpu, recipe, &train_set, &val_set, start, out)
}

fn log_lines(dir: &Path, event: &str) -> Vec<serde_json::Value> {
    let log = std::fs::read_to_string(dir.join("log.jsonl")).unwrap();
    log.lines().map(|l| serde_json::from_str(l).unwrap()).filter(|v: &serde_json::Value| v["event"] == event).collect()
}

#[test]
fn the_loss_falls_on_a_folder_of_photos() {
    let gpu = &gpus()[0];
    let root = temp_dir("folder-falls");
    let photos = root.join("photos");
    let folder = colour_folder(&photos, 8);
    let dir = root.join("run");
    let recipe = Recipe { lr: 0.01, ..recipe(folder_recipe(&folder, &photos), 40) };
    let summary = run(gpu, &recipe, &folder, Start::Fresh, &outputs(&dir, None)).unwrap();
    let lines = log_lines(&dir, "train");
    let (first, last) = (&lines[0], lines.last().unwrap());
    assert!(
        last["loss"].as_f64().unwrap() < 0.5 * first["loss"].as_f64().unwrap(),
        "the loss did not halve: {first} -> {last}"
    );
    for key in ["data_images_per_s", "gpu_images_per_s"] {
        assert!(last[key].as_f64().unwrap() > 0.0, "{key} is missing from {last}");
    }
    let eval = summary.last.unwrap();
    assert_eq!(eval.images, 6, "two of each class's eight are held out");
    assert!(eval.error() < 0.5, "validation error {} after 40 steps on three colours", eval.error());
    assert_eq!(eval.top5_error(), None, "three classes are always in the top five");
    let test = log_lines(&dir, "test");
    assert!(test[0]["top5_error"].is_null(), "{}", test[0]);
}

#[test]
fn resume_continues_bit_for_bit() {
    let gpu = &gpus()[0];
    let root = temp_dir("folder-resume");
    let photos = root.join("photos");
    let folder = colour_folder(&photos, 4);
    let classes = folder_recipe(&folder, &photos);
    // 9 training images, batch 6: one step an epoch, so the run crosses epochs (new orders).
    let whole = root.join("whole");
    run(gpu, &recipe(classes.clone(), 4), &folder, Start::Fresh, &outputs(&whole, Some(whole.join("end.safetensors"))))
        .unwrap();
    let first = root.join("first");
    let stop = first.join("stop.safetensors");
    run(gpu, &recipe(classes.clone(), 2), &folder, Start::Fresh, &outputs(&first, Some(stop.clone()))).unwrap();
    let resumed = Start::Resume(stop.clone(), Checkpoint::read(&stop).unwrap());
    run(gpu, &recipe(classes, 4), &folder, resumed, &outputs(&first, Some(first.join("end.safetensors")))).unwrap();
    let (a, b) = (
        Checkpoint::read(&whole.join("end.safetensors")).unwrap(),
        Checkpoint::read(&first.join("end.safetensors")).unwrap(),
    );
    assert_eq!(a.tensors.len(), b.tensors.len());
    for (name, (_, values)) in &a.tensors {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert!(bits(values) == bits(&b.tensors[name].1), "{name} differs between the whole run and the resumed one");
    }
}

/// A resnet18 of `classes` classes at 32x32, initialised from `seed`, saved as `path`.
fn pretrained(gpu: &Gpu, classes: usize, seed: u64, path: &Path) {
    let mut arch = Arch::parse("resnet18", Shortcut::B).unwrap();
    (arch.classes, arch.image) = (classes, 32);
    let model = ResNet::new(gpu, arch).unwrap();
    model.init(gpu, seed);
    // Running statistics a pretrained model would have (not the initial 0 and 1).
    for (name, t) in model.buffers.names.iter().zip(&model.buffers.tensors) {
        let v: f32 = if name.ends_with("running_var") { 2.0 } else { 0.01 };
        gpu.write(t, &vec![v; t.len()]);
    }
    model.checkpoint(gpu, false).unwrap().write(path).unwrap();
}

#[test]
fn the_fc_is_replaced_and_a_frozen_backbone_or_frozen_batch_norm_keeps_its_bits() {
    let gpu = &gpus()[0];
    let root = temp_dir("folder-freeze");
    let photos = root.join("photos");
    let folder = colour_folder(&photos, 4);
    let init = root.join("pretrained.safetensors");
    pretrained(gpu, 5, 7, &init);
    let before = Checkpoint::read(&init).unwrap();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();

    for (freeze, bn_eval) in [(true, false), (true, true), (false, true)] {
        let folder_recipe = FolderRecipe { freeze_backbone: freeze, bn_eval, ..folder_recipe(&folder, &photos) };
        let recipe = Recipe { lr: 0.5, ..recipe(folder_recipe, 3) };
        let start = init_weights(init.to_str().unwrap(), &recipe.arch().unwrap(), recipe.seed).unwrap();
        let Start::FreshFc(_, ref ck) = start else { panic!("an fc of 5 classes is replaced for 3") };
        assert!(!ck.tensors.contains_key("fc.weight"), "an fc of 5 classes is not kept for 3");
        let dir = root.join(format!("run-{freeze}-{bn_eval}"));
        let save = dir.join("end.safetensors");
        run(gpu, &recipe, &folder, start, &outputs(&dir, Some(save.clone()))).unwrap();
        let after = Checkpoint::read(&save).unwrap();
        assert_eq!(after.tensors["fc.weight"].0, vec![3, 512]);
        for (name, (_, values)) in &before.tensors {
            let kept = bits(values) == bits(&after.tensors[name].1);
            if name.starts_with("fc.") {
                continue;
            }
            // Batch norm in training mode updates its running statistics, as PyTorch's does.
            let expected = if name.contains("running_") { bn_eval } else { freeze };
            assert_eq!(kept, expected, "{name}: kept {kept} with freeze {freeze}, bn_eval {bn_eval}");
        }
        let velocity = |n: &str| after.tensors[&format!("optimizer.velocity.{n}")].1.iter().any(|&v| v != 0.0);
        assert!(velocity("fc.weight"), "fc's velocity moves");
        assert_eq!(velocity("layer4.1.conv2.weight"), !freeze, "the backbone's velocity moves unless frozen");
    }
}

#[test]
fn a_frozen_backbones_step_plans_no_backward_below_the_fc() {
    let gpu = &gpus()[0];
    let mut arch = Arch::parse("resnet18", Shortcut::B).unwrap();
    (arch.classes, arch.image) = (3, 32);
    let model = ResNet::new(gpu, arch).unwrap();
    let sgd = Sgd { lr: 0.1, momentum: 0.9, weight_decay: 1e-4 };
    let all = TrainStep::new(gpu, &model, 2, sgd, Trained::ALL).unwrap();
    let fc = TrainStep::new(gpu, &model, 2, sgd, Trained { fc_only: true, statistics: Statistics::Running }).unwrap();
    let labels = |step: &TrainStep| step.dispatches.iter().map(|d| d.label.clone()).collect::<Vec<_>>();
    let (all, fc) = (labels(&all), labels(&fc));
    let backward = |labels: &[String]| labels.iter().skip_while(|l| *l != "loss").skip(1).cloned().collect::<Vec<_>>();
    assert_eq!(backward(&fc), ["fc", "sgd"], "the frozen step's dispatches after the loss");
    assert!(backward(&all).iter().any(|l| l.starts_with("layer1")), "the full step reaches layer1: {all:?}");
}

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_resnet-wgpu")).args(args).output().unwrap()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn class_names_and_transform_travel_with_the_weights() {
    let gpu = &gpus()[0];
    let root = temp_dir("folder-metadata");
    let photos = root.join("photos");
    let folder = colour_folder(&photos, 4);
    let dir = root.join("run");
    let save = dir.join("end.safetensors");
    run(gpu, &recipe(folder_recipe(&folder, &photos), 2), &folder, Start::Fresh, &outputs(&dir, Some(save.clone())))
        .unwrap();

    let ck = Checkpoint::read(&save).unwrap();
    let weights = FolderWeights::of(&ck, &save).unwrap().expect("a folder checkpoint names its classes");
    assert_eq!(weights.classes, ["blue", "green", "red"]);
    assert_eq!((weights.transform.resize, weights.transform.crop, weights.transform.mean), (37, 32, IMAGENET_MEAN));
    assert_eq!((weights.arch.classes, weights.arch.image), (3, 32));

    // torchvision's resnet18(num_classes=3).state_dict(): 20 convs, 20 BNs of five entries each
    // (num_batches_tracked an I64 scalar), fc weight and bias; `optimizer.` is the training state.
    let model: Vec<&String> = ck.tensors.keys().filter(|n| !n.starts_with("optimizer.")).collect();
    assert_eq!(model.len() + ck.integers.len(), 122);
    assert_eq!(ck.integers.len(), 20);
    assert!(
        ck.integers.keys().all(|n| n.ends_with(".num_batches_tracked")) && ck.integers["bn1.num_batches_tracked"] == 2
    );

    let eval = |all: &[&str]| {
        let out =
            cli(&[&["eval", "folder", photos.to_str().unwrap(), "--weights", save.to_str().unwrap(), "--json"], all]
                .concat());
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    assert_eq!(eval(&["--all"])["images"], 12, "--all: every image of the folder");
    let doc = eval(&[]);
    assert_eq!(doc["images"], 3, "the run's --val-split held out one image of each class");
    assert_eq!(doc["model"], "resnet18");
    assert_eq!(doc["classes"][2]["name"], "red");
    assert!(doc["top5"].is_null(), "no top-5 with three classes");

    // Another file in the folder: the run's held-out images can no longer be told apart.
    image::RgbImage::new(5, 5).save(photos.join("blue/extra.png")).unwrap();
    let out = cli(&["eval", "folder", photos.to_str().unwrap(), "--weights", save.to_str().unwrap()]);
    assert!(!out.status.success() && stderr(&out).contains("--all evaluates every image"), "{}", stderr(&out));
    assert_eq!(eval(&["--all"])["images"], 13);
    let (p, resume) = (photos.to_str().unwrap(), save.to_str().unwrap());
    let out = cli(&["train", "folder", p, "--resume", resume, "--steps", "3"]);
    assert!(stderr(&out).contains("resuming would move images between training and validation"), "{}", stderr(&out));
    std::fs::remove_file(photos.join("blue/extra.png")).unwrap();
    let out = cli(&["train", "folder", p, "--resume", resume, "--seed", "5"]);
    assert!(stderr(&out).contains("--seed is the resumed run's own"), "{}", stderr(&out));

    let photo = photos.join("red/0.png");
    let out = cli(&["infer", photo.to_str().unwrap(), "--weights", save.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let top = doc["results"][0]["top"].as_array().unwrap();
    assert_eq!(top.len(), 3, "three classes, so three of the top five");
    assert!(top.iter().all(|t| ["blue", "green", "red"].contains(&t["label"].as_str().unwrap())), "{top:?}");

    let out = cli(&["infer", photo.to_str().unwrap(), "--weights", save.to_str().unwrap(), "--model", "resnet50"]);
    assert!(!out.status.success() && stderr(&out).contains("holds a resnet18, not a resnet50"), "{}", stderr(&out));
}

#[test]
fn bad_input_is_refused_with_a_clear_message() {
    let gpu = &gpus()[0];
    let root = temp_dir("folder-bad");
    let photos = root.join("photos");
    colour_folder(&photos, 2);
    let p = photos.to_str().unwrap();
    let runs = root.join("runs");
    let r = runs.to_str().unwrap();

    let out = cli(&["train", "folder", p, "--freeze-backbone", "--checkpoint-dir", r]);
    assert!(stderr(&out).contains("start from pretrained weights with --init"), "{}", stderr(&out));
    let out = cli(&["train", "folder", p, "--size", "16"]);
    assert!(stderr(&out).contains("--size") && stderr(&out).contains("32..=1024"), "{}", stderr(&out));
    let out = cli(&["train", "folder", p, "--val-split", "1.5"]);
    assert!(stderr(&out).contains("--val-split") && stderr(&out).contains("a fraction in [0, 1)"), "{}", stderr(&out));

    // Weights of another architecture: a CIFAR ResNet-8.
    let other = root.join("resnet8.safetensors");
    let model = ResNet::new(gpu, Arch::parse("resnet8", Shortcut::A).unwrap()).unwrap();
    model.checkpoint(gpu, false).unwrap().write(&other).unwrap();
    let out = cli(&[
        "train",
        "folder",
        p,
        "--init",
        other.to_str().unwrap(),
        "--size",
        "32",
        "--steps",
        "1",
        "--checkpoint-dir",
        r,
    ]);
    let message = stderr(&out);
    assert!(
        !out.status.success() && message.contains("resnet8.safetensors") && message.contains("resnet18"),
        "{message}"
    );
    assert!(!runs.join("last.safetensors").exists() && !runs.join("best.safetensors").exists());

    let one = root.join("one");
    colour_folder(&one, 1);
    std::fs::remove_dir_all(one.join("blue")).unwrap();
    std::fs::remove_dir_all(one.join("green")).unwrap();
    let out = cli(&["train", "folder", one.to_str().unwrap()]);
    assert!(stderr(&out).contains("holds one class folder (red)"), "{}", stderr(&out));

    // A checkpoint without class names is not a folder model.
    let out = cli(&["eval", "folder", p, "--weights", other.to_str().unwrap()]);
    assert!(stderr(&out).contains("names no classes"), "{}", stderr(&out));
}
