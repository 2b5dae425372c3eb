//! Tiny training runs on synthetic CIFAR-format data: the loss falls, resume continues bit for bit,
//! divergence stops with an error and leaves files intact, and eval reproduces a checkpoint.

mod common;

use std::path::PathBuf;

use common::{gpus, synthetic, temp_dir};
use resnet_wgpu::checkpoint::Checkpoint;
use resnet_wgpu::model::ResNet;
use resnet_wgpu::train::{self, Evaluator, Outputs, Recipe, Schedule, Start};

fn recipe(steps: usize) -> Recipe {
    Recipe { steps, batch_size: 16, lr: 0.05, schedule: Schedule::Constant, ..Recipe::paper("resnet8") }
}

fn outputs(dir: &std::path::Path, save: Option<PathBuf>) -> Outputs {
    Outputs { save, checkpoint_dir: dir.to_path_buf(), eval_every: Some(1000), json_log: None }
}

#[test]
fn the_loss_falls_on_an_easy_set() {
    let gpu = &gpus()[0];
    let (train_set, test_set) = (synthetic(320, 1), synthetic(100, 2));
    let dir = temp_dir("falls");
    let summary = train::train(gpu, &recipe(60), &train_set, &test_set, Start::Fresh, &outputs(&dir, None)).unwrap();
    let log = std::fs::read_to_string(dir.join("log.jsonl")).unwrap();
    let train_lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v["event"] == "train")
        .collect();
    let (first, last) = (&train_lines[0], train_lines.last().unwrap());
    assert!(
        last["loss"].as_f64().unwrap() < 0.5 * first["loss"].as_f64().unwrap(),
        "the loss did not halve: {first} -> {last}"
    );
    assert!(
        last["error"].as_f64().unwrap() < first["error"].as_f64().unwrap(),
        "the training error did not fall: {first} -> {last}"
    );
    let final_error = summary.last.unwrap().error();
    assert!(final_error < 0.5, "test error {final_error} after 60 steps on an easy set");
    assert!(
        dir.join("best.safetensors").exists()
            && dir.join("last.safetensors").exists()
            && dir.join("curves.png").exists()
    );
}

#[test]
fn resume_continues_bit_for_bit() {
    let gpu = &gpus()[0];
    let (train_set, test_set) = (synthetic(64, 3), synthetic(20, 4));
    // 4 steps per epoch; the interruption falls mid-epoch.
    let whole = temp_dir("whole");
    let whole_save = whole.join("final.safetensors");
    train::train(gpu, &recipe(10), &train_set, &test_set, Start::Fresh, &outputs(&whole, Some(whole_save.clone())))
        .unwrap();

    let first = temp_dir("first");
    let first_save = first.join("half.safetensors");
    train::train(gpu, &recipe(6), &train_set, &test_set, Start::Fresh, &outputs(&first, Some(first_save.clone())))
        .unwrap();
    let ck = Checkpoint::read(&first_save).unwrap();
    assert_eq!(ck.meta("step"), Some("6"));
    let second_save = first.join("final.safetensors");
    let resumed = Start::Resume(first_save, ck);
    train::train(gpu, &recipe(10), &train_set, &test_set, resumed, &outputs(&first, Some(second_save.clone())))
        .unwrap();

    let (a, b) = (Checkpoint::read(&whole_save).unwrap(), Checkpoint::read(&second_save).unwrap());
    assert_eq!(a.tensors.len(), b.tensors.len());
    for (name, (_, values)) in &a.tensors {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert!(bits(values) == bits(&b.tensors[name].1), "{name} differs between the whole run and the resumed one");
    }
}

#[test]
fn divergence_stops_naming_the_step_and_keeps_files() {
    let gpu = &gpus()[0];
    let (train_set, test_set) = (synthetic(64, 5), synthetic(20, 6));
    let dir = temp_dir("diverge");
    let save = dir.join("keep.safetensors");
    std::fs::write(&save, b"an earlier good file").unwrap();
    let wild = Recipe { lr: 1e30, ..recipe(40) };
    let error = train::train(gpu, &wild, &train_set, &test_set, Start::Fresh, &outputs(&dir, Some(save.clone())))
        .err()
        .expect("training must fail");
    let message = format!("{error:#}");
    assert!(message.contains("training diverged") && message.contains("at step"), "{message}");
    assert_eq!(std::fs::read(&save).unwrap(), b"an earlier good file");
}

#[test]
fn evaluating_a_checkpoint_reproduces_the_training_run() {
    let gpu = &gpus()[0];
    let (train_set, test_set) = (synthetic(128, 7), synthetic(37, 8));
    let dir = temp_dir("eval");
    let save = dir.join("final.safetensors");
    let recipe = recipe(16);
    let summary =
        train::train(gpu, &recipe, &train_set, &test_set, Start::Fresh, &outputs(&dir, Some(save.clone()))).unwrap();
    let ck = Checkpoint::read(&save).unwrap();
    let model = ResNet::new(gpu, recipe.arch().unwrap()).unwrap();
    model.restore(gpu, &ck, false, &save).unwrap();
    // 37 images in batches of 10: three full batches and a remainder plan.
    let eval =
        Evaluator::new(gpu, &model, test_set.len(), 10).unwrap().run(gpu, &test_set, recipe.mean, recipe.std).unwrap();
    let last = summary.last.unwrap();
    assert_eq!(eval.correct, last.correct);
    assert!((eval.loss - last.loss).abs() < 1e-5, "loss {} vs {}", eval.loss, last.loss);
}
