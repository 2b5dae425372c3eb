//! Training-log parsing and PNG plots (src/plot.rs).
//!
//! The PNGs drawn here stay in `target/tmp/plot/<test>/` so a person can look at them;
//! `figure_like_paper/figure6.png` mimics Figure 6 of the ResNet paper with two fake runs.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use resnet_wgpu::plot::{Curve, ERROR_SIZE, RUN_SIZE, Run, plot_error, plot_run, read_log};

/// An empty folder of its own for each test, kept after the test for inspection.
fn test_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("plot").join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// A log of a fake 64k-iteration CIFAR run written the way `train` writes it: a train line every
/// 100 iterations, a test line every epoch (391 iterations), learning rate divided by 10 at 32k and
/// 48k. `final_error` sets where the test error ends; the train error ends well below it.
fn fake_log(model: &str, final_error: f64, seed: u64) -> String {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    let mut noise = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    };
    let shape = |step: f64, floor: f64| {
        let decay = 0.9 * (-step / 2500.0).exp() + (floor + 0.06) * (1.0 - step / 64000.0);
        let drop = if step >= 48000.0 {
            0.7
        } else if step >= 32000.0 {
            0.6
        } else {
            0.0
        };
        (floor + decay * (1.0 - drop)).min(0.9)
    };
    let mut out = format!("{{\"event\":\"start\",\"model\":\"{model}\",\"batch\":128}}\n");
    for step in 1..=64000u32 {
        let s = step as f64;
        if step % 100 == 0 {
            let error = (shape(s, final_error * 0.4) + 0.015 * noise()).clamp(0.0, 1.0);
            out += &format!(
                "{{\"event\":\"train\",\"model\":\"{model}\",\"step\":{step},\"epoch\":{:.3},\
                 \"loss\":{:.4},\"error\":{error:.4},\"lr\":0.1,\"images_per_s\":5000.0}}\n",
                s / 391.0,
                3.0 * error
            );
        }
        if step % 391 == 0 {
            let error = (shape(s, final_error) + 0.01 * noise()).clamp(0.0, 1.0);
            out += &format!(
                "{{\"event\":\"test\",\"model\":\"{model}\",\"step\":{step},\"epoch\":{:.1},\
                 \"loss\":{:.4},\"error\":{error:.4}}}\n",
                s / 391.0,
                3.5 * error
            );
        }
    }
    out
}

/// Decodes a PNG, checks its size and returns its pixels.
fn decode(path: &Path, size: (u32, u32)) -> image::RgbImage {
    let bytes = fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{} is not a PNG", path.display());
    let image = image::load_from_memory_with_format(&bytes, image::ImageFormat::Png).unwrap().to_rgb8();
    assert_eq!(image.dimensions(), size);
    image
}

/// Pixels within a small distance of `color`.
fn count_near(image: &image::RgbImage, color: [u8; 3]) -> usize {
    image.pixels().filter(|p| (0..3).all(|i| p.0[i].abs_diff(color[i]) <= 8)).count()
}

/// Not blank: many colours (anti-aliased text and lines) and lines in the first palette colours.
fn assert_drawn(image: &image::RgbImage, line_colors: &[[u8; 3]]) {
    let distinct: HashSet<[u8; 3]> = image.pixels().map(|p| p.0).collect();
    assert!(distinct.len() > 20, "only {} colours", distinct.len());
    let white = count_near(image, [255, 255, 255]);
    let total = (image.width() * image.height()) as usize;
    assert!(white > total / 2, "the background is not mostly white");
    assert!(white < total * 99 / 100, "almost nothing drawn");
    for &c in line_colors {
        let n = count_near(image, c);
        assert!(n > 500, "only {n} pixels of line colour {c:?}");
    }
}

const BLUE: [u8; 3] = [31, 119, 180];
const ORANGE: [u8; 3] = [255, 127, 14];

#[test]
fn read_log_reads_train_and_test_lines() {
    let dir = test_dir("read_log_reads_train_and_test_lines");
    let log = dir.join("run.jsonl");
    let text = r#"{"event":"start","model":"resnet20","config":{"depth":20}}
{"event":"train","model":"resnet20","step":100,"epoch":0.26,"loss":1.9,"error":0.70,"lr":0.1,"images_per_s":55.0}

{"event":"train","model":"resnet20","step":200,"epoch":0.51,"loss":1.7,"error":0.62,"lr":0.1,"images_per_s":56.0,"extra":[1,2]}
   
{"event":"test","model":"resnet20","step":391,"epoch":1.0,"loss":1.5,"error":0.55}
{"event":"train","model":"resnet20","step":400,"loss":null,"error":0.6}
{"event":"checkpoint","step":400,"path":"ckpt.safetensors"}
"#;
    fs::write(&log, text).unwrap();
    let run = read_log(&log).unwrap();
    assert_eq!(run.label, "resnet20");
    let curve = |step: &[f64], value: &[f64]| Curve { step: step.to_vec(), value: value.to_vec() };
    assert_eq!(run.train_error, curve(&[100.0, 200.0, 400.0], &[0.70, 0.62, 0.6]));
    // A null (NaN) loss is skipped, the error of that line kept.
    assert_eq!(run.train_loss, curve(&[100.0, 200.0], &[1.9, 1.7]));
    assert_eq!(run.test_error, curve(&[391.0], &[0.55]));
    assert_eq!(run.test_loss, curve(&[391.0], &[1.5]));
}

#[test]
fn read_log_resumed_run_replaces_repeated_steps() {
    let dir = test_dir("read_log_resumed_run_replaces_repeated_steps");
    let log = dir.join("run.jsonl");
    let mut text = String::new();
    // Resumed from a checkpoint at step 100 after logging up to 400.
    for (step, error) in [(100, 0.5), (200, 0.5), (300, 0.5), (400, 0.5), (200, 0.1), (300, 0.1)] {
        text +=
            &format!("{{\"event\":\"train\",\"model\":\"plain20\",\"step\":{step},\"loss\":1,\"error\":{error}}}\n");
    }
    fs::write(&log, text).unwrap();
    let run = read_log(&log).unwrap();
    assert_eq!(run.train_error.step, [100.0, 200.0, 300.0]);
    assert_eq!(run.train_error.value, [0.5, 0.1, 0.1]);
}

#[test]
fn read_log_malformed_line_names_file_and_line() {
    let dir = test_dir("read_log_malformed_line_names_file_and_line");
    let log = dir.join("bad.jsonl");
    let text = "{\"event\":\"train\",\"model\":\"m\",\"step\":1,\"loss\":2,\"error\":0.9}\n\
                \n\
                {\"event\":\"train\",\"model\":\"m\",\"step\":2,\"loss\":\n";
    fs::write(&log, text).unwrap();
    let message = format!("{:#}", read_log(&log).unwrap_err());
    assert!(message.contains("bad.jsonl:3"), "{message}");

    fs::write(&log, "{\"event\":\"test\",\"error\":0.5}\n").unwrap();
    let message = format!("{:#}", read_log(&log).unwrap_err());
    assert!(message.contains("bad.jsonl:1") && message.contains("step"), "{message}");
}

#[test]
fn read_log_without_points_is_an_error() {
    let dir = test_dir("read_log_without_points_is_an_error");
    let log = dir.join("empty.jsonl");
    fs::write(&log, "\n{\"event\":\"start\",\"model\":\"resnet20\"}\n").unwrap();
    let message = format!("{:#}", read_log(&log).unwrap_err());
    assert!(message.contains("empty.jsonl"), "{message}");

    let missing = dir.join("missing.jsonl");
    let message = format!("{:#}", read_log(&missing).unwrap_err());
    assert!(message.contains("missing.jsonl"), "{message}");
}

#[test]
fn figure_like_paper() {
    let dir = test_dir("figure_like_paper");
    let mut runs = Vec::new();
    for (model, final_error, seed) in [("plain20", 0.09, 1), ("plain56", 0.13, 2)] {
        let log = dir.join(format!("{model}.jsonl"));
        fs::write(&log, fake_log(model, final_error, seed)).unwrap();
        runs.push(read_log(&log).unwrap());
    }
    let png = dir.join("figure6.png");
    plot_error(&runs, &png).unwrap();
    let image = decode(&png, ERROR_SIZE);
    assert_drawn(&image, &[BLUE, ORANGE]);

    // Overwriting goes through a temporary file that is renamed away: none is left.
    plot_error(&runs, &png).unwrap();
    let run_png = dir.join("plain20.png");
    plot_run(&runs[0], &run_png).unwrap();
    let image = decode(&run_png, RUN_SIZE);
    assert_drawn(&image, &[BLUE]);
    assert_eq!(files_in(&dir), ["figure6.png", "plain20.jsonl", "plain20.png", "plain56.jsonl"]);
}

#[test]
fn plots_of_short_runs() {
    // Early in training: a few train points and one test point, each run a different length.
    let dir = test_dir("plots_of_short_runs");
    let run = |label: &str, steps: u32| Run {
        label: label.into(),
        train_error: Curve {
            step: (1..=steps).map(|s| s as f64 * 10.0).collect(),
            value: (1..=steps).map(|s| 0.9 - 0.03 * s as f64).collect(),
        },
        test_error: Curve { step: vec![steps as f64 * 10.0], value: vec![0.6] },
        train_loss: Curve {
            step: (1..=steps).map(|s| s as f64 * 10.0).collect(),
            value: (1..=steps).map(|s| 2.3 - 0.05 * s as f64).collect(),
        },
        test_loss: Curve::default(),
    };
    let runs = [run("resnet20", 20), run("resnet56", 12)];
    plot_error(&runs, &dir.join("error.png")).unwrap();
    assert_drawn(&decode(&dir.join("error.png"), ERROR_SIZE), &[BLUE, ORANGE]);
    plot_run(&runs[0], &dir.join("run.png")).unwrap();
    assert_drawn(&decode(&dir.join("run.png"), RUN_SIZE), &[BLUE]);
    assert_eq!(files_in(&dir), ["error.png", "run.png"]);

    // A run with nothing to draw still gives a chart with axes; no runs at all is an error.
    plot_run(&Run::default(), &dir.join("empty.png")).unwrap();
    decode(&dir.join("empty.png"), RUN_SIZE);
    assert!(plot_error(&[], &dir.join("none.png")).is_err());
}

#[test]
fn plot_into_missing_folder_fails_and_leaves_nothing() {
    let dir = test_dir("plot_into_missing_folder_fails_and_leaves_nothing");
    let png = dir.join("no_such_folder").join("error.png");
    let message = format!("{:#}", plot_run(&Run::default(), &png).unwrap_err());
    assert!(message.contains("error.png"), "{message}");
    assert!(files_in(&dir).is_empty());
}
