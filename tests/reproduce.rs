//! `reproduce` on tiny synthetic data: every run trains and lands in its folder, the figure and
//! the table are written, finished runs are not redone, an interrupted run resumes to the same
//! weights as an uninterrupted one, and a folder of another recipe is refused before any training.
//! One test, in order: the Ctrl-C flag it raises is global to this test binary.

mod common;

use std::path::Path;
use std::sync::atomic::Ordering;

use common::{gpus, synthetic, temp_dir};
use resnet_wgpu::checkpoint::Checkpoint;
use resnet_wgpu::reproduce::{Experiment, reproduce};
use resnet_wgpu::train::INTERRUPTED;

fn tiny(experiment: Experiment) -> Experiment {
    Experiment { steps: Some(6), batch_size: 8, eval_every: Some(3), ..experiment }
}

fn png_size(path: &Path) -> (u32, u32) {
    let image = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (image.width(), image.height())
}

fn weights(path: &Path) -> Vec<(String, Vec<f32>)> {
    let ck = Checkpoint::read(path).unwrap();
    let mut tensors: Vec<_> = ck.tensors.into_iter().map(|(name, (_, values))| (name, values)).collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    tensors
}

#[test]
fn figure6_and_table6_train_resume_skip_and_draw() {
    let gpu = &gpus()[0];
    let (train_set, test_set) = (synthetic(96, 1), synthetic(24, 2));

    // Figure 6: plain8 then resnet8, all the way through.
    let straight = temp_dir("reproduce-straight");
    let figure6 = tiny(Experiment::figure6(&[8, 8], &straight));
    assert_eq!(figure6.models, ["plain8", "resnet8"], "a depth given twice trains once");
    let outcomes = reproduce(gpu, &figure6, &train_set, &test_set).unwrap();
    assert_eq!(outcomes.iter().map(|o| o.model.as_str()).collect::<Vec<_>>(), ["plain8", "resnet8"]);
    for o in &outcomes {
        assert_eq!((o.steps, o.best_step.is_some()), (6, true), "{o:?}");
        for e in [o.train_error, o.test_error, o.best_test_error] {
            assert!(e.is_some_and(|e| (0.0..=1.0).contains(&e)), "{o:?}");
        }
        assert!(o.best_test_error <= o.test_error, "{o:?}");
        let recipe = figure6.recipe(&o.model);
        assert_eq!((recipe.steps, recipe.warmup_steps, recipe.val_split), (6, 0, 0), "a tenth of 6 steps is 0");
    }
    assert_eq!(png_size(&straight.join("figure6.png")), (2400, 750), "two panels");
    let table = std::fs::read_to_string(straight.join("figure6.md")).unwrap();
    assert!(table.contains("| plain-8 | 6 |") && table.contains("| ResNet-8 | 6 |"), "{table}");

    // Again: nothing is redone, so the logs and checkpoints stay as they were.
    let log = straight.join("resnet8/log.jsonl");
    let before = (std::fs::read(&log).unwrap(), std::fs::read(straight.join("resnet8/last.safetensors")).unwrap());
    reproduce(gpu, &figure6, &train_set, &test_set).unwrap();
    let after = (std::fs::read(&log).unwrap(), std::fs::read(straight.join("resnet8/last.safetensors")).unwrap());
    assert!(before == after, "a finished run was trained again");

    // Interrupted after the first step of the first run, then run again: it resumes, and ends with
    // the weights of the uninterrupted run.
    let interrupted = temp_dir("reproduce-interrupted");
    let again = tiny(Experiment::figure6(&[8], &interrupted));
    INTERRUPTED.store(true, Ordering::SeqCst);
    let error = reproduce(gpu, &again, &train_set, &test_set).unwrap_err();
    INTERRUPTED.store(false, Ordering::SeqCst);
    let message = format!("{error:#}");
    assert!(message.contains("plain8") && message.contains("interrupted at step 1"), "{message}");
    assert!(!interrupted.join("resnet8").exists(), "the second run started after an interruption");
    reproduce(gpu, &again, &train_set, &test_set).unwrap();
    for model in ["plain8", "resnet8"] {
        let (a, b) = (straight.join(model).join("last.safetensors"), interrupted.join(model).join("last.safetensors"));
        assert!(weights(&a) == weights(&b), "{model}: the resumed run's weights differ from the straight run's");
    }

    // Interrupted on a step that evaluates: the evaluation is done before the run stops, so none
    // is skipped when it resumes.
    let every_step = temp_dir("reproduce-every-step");
    let each = Experiment { steps: Some(2), eval_every: Some(1), ..tiny(Experiment::table6(&[8], &every_step)) };
    let each = Experiment { held_out: 16, ..each };
    INTERRUPTED.store(true, Ordering::SeqCst);
    let message = format!("{:#}", reproduce(gpu, &each, &train_set, &test_set).unwrap_err());
    INTERRUPTED.store(false, Ordering::SeqCst);
    assert!(message.contains("interrupted at step 1"), "{message}");
    reproduce(gpu, &each, &train_set, &test_set).unwrap();
    let log = std::fs::read_to_string(every_step.join("resnet8/log.jsonl")).unwrap();
    let tested: Vec<u64> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["event"] == "test")
        .map(|v| v["step"].as_u64().unwrap())
        .collect();
    assert_eq!(tested, [1, 2], "{log}");

    // Longer runs into the same folder: refused, naming what differs, before anything trains.
    let longer = Experiment { steps: Some(9), ..again.clone() };
    let message = format!("{:#}", reproduce(gpu, &longer, &train_set, &test_set).unwrap_err());
    assert!(message.contains("another recipe") && message.contains("steps 6 there, 9 here"), "{message}");

    // Table 6: the ResNets alone, 16 training images held out, in one chart; the paper's
    // figure beside a depth it reports.
    let table6 = temp_dir("reproduce-table6");
    let experiment = Experiment { held_out: 16, ..tiny(Experiment::table6(&[8, 20], &table6)) };
    assert_eq!(experiment.recipe("resnet20").val_split, 16);
    let outcomes = reproduce(gpu, &experiment, &train_set, &test_set).unwrap();
    assert_eq!(outcomes.iter().map(|o| o.paper_test_error).collect::<Vec<_>>(), [None, Some(0.0875)]);
    assert_eq!(png_size(&table6.join("table6.png")), (1200, 750), "one chart");
    let table = std::fs::read_to_string(table6.join("table6.md")).unwrap();
    assert!(table.contains("| ResNet-20 | 6 |") && table.trim_end().ends_with("| 8.75 |"), "{table}");
}
