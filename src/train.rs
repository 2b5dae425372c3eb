//! `train cifar10` and `eval cifar10`: the paper's CIFAR-10 recipe with the whole step on the GPU.
//!
//! Each step writes one normalised (and augmented) batch and submits the planned step as one
//! command buffer, which also copies its loss and correct count into a small history buffer on the
//! GPU; the CPU reads that history every `LOG_EVERY` steps, so it never waits for the GPU step by step.
//! The data order of epoch e depends only on (seed, e) and the augmentation of step s only on
//! (seed, s), so a run resumed from a checkpoint continues bit for bit.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoint;
use crate::data::cifar::{self, Cifar10};
use crate::data::download::Checksum;
use crate::gpu::{Gpu, Tensor};
use crate::model::{Arch, ResNet, Shortcut};
use crate::ops::sgd::Sgd;
use crate::plan::{EvalStep, HISTORY, TrainStep};
use crate::plot;
use crate::rng::Rng;

/// Steps between reads of the loss history (and train lines in the log).
const LOG_EVERY: usize = HISTORY;

/// The paper's Table 6 test errors (%), for the closing summary.
pub const PAPER_ERROR: [(&str, f64); 5] =
    [("resnet20", 8.75), ("resnet32", 7.51), ("resnet44", 7.17), ("resnet56", 6.97), ("resnet110", 6.43)];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// lr divided by 10 at 50 % and 75 % of the steps (32k and 48k of 64k).
    Paper,
    /// Cosine decay from lr to 0.
    Cosine,
    Constant,
}

/// Everything that determines a run's numbers; stored in checkpoints so `--resume` continues it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Recipe {
    pub model: String,
    pub shortcut: char,
    pub steps: usize,
    pub batch_size: usize,
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    pub schedule: Schedule,
    pub seed: u64,
    pub augment: bool,
    pub shuffle: bool,
    pub val_split: usize,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// The paper trains ResNet-110 at lr 0.01 for its first 400 iterations.
    pub warmup_steps: usize,
}

impl Recipe {
    /// The paper's recipe for `model`: batch 128, 64k steps, lr 0.1 (/10 at 32k and 48k),
    /// momentum 0.9, weight decay 1e-4, augmentation, CIFAR-10 mean/std.
    pub fn paper(model: &str) -> Self {
        Self {
            model: model.into(),
            shortcut: 'a',
            steps: 64_000,
            batch_size: 128,
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 1e-4,
            schedule: Schedule::Paper,
            seed: 0,
            augment: true,
            shuffle: true,
            val_split: 0,
            mean: cifar::MEAN,
            std: cifar::STD,
            warmup_steps: if model == "resnet110" { 400 } else { 0 },
        }
    }

    pub fn arch(&self) -> Result<Arch> {
        let shortcut = match self.shortcut {
            'a' => Shortcut::A,
            'b' => Shortcut::B,
            other => bail!("unknown shortcut {other:?}: expected a or b"),
        };
        let arch = Arch::cifar(&self.model, shortcut)?;
        Ok(arch)
    }

    /// The learning rate of step `step` (from 0).
    pub fn lr_at(&self, step: usize) -> f32 {
        if step < self.warmup_steps {
            return self.lr / 10.0;
        }
        let t = step as f64 / self.steps as f64;
        match self.schedule {
            Schedule::Constant => self.lr,
            Schedule::Cosine => (self.lr as f64 * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())) as f32,
            Schedule::Paper if t < 0.5 => self.lr,
            Schedule::Paper if t < 0.75 => self.lr / 10.0,
            Schedule::Paper => self.lr / 100.0,
        }
    }

    /// The order of the training images in epoch `epoch`.
    fn epoch_order(&self, epoch: usize, len: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..len).collect();
        if self.shuffle {
            Rng::new(self.seed ^ (epoch as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407)).shuffle(&mut order);
        }
        order
    }

    fn augmentation(&self, step: usize) -> Option<Rng> {
        self.augment.then(|| Rng::new(self.seed ^ (step as u64 + 1).wrapping_mul(0x9FB2_1C65_1E98_DF25)))
    }
}

/// Where a run writes what it produces.
pub struct Outputs {
    /// The final state (resumable), written at the end.
    pub save: Option<PathBuf>,
    /// `last.safetensors` and `best.safetensors` after every evaluation, `log.jsonl`, `curves.png`.
    pub checkpoint_dir: PathBuf,
    /// Evaluate every this many steps (default: once an epoch).
    pub eval_every: Option<usize>,
    /// Also write the JSON-lines log here.
    pub json_log: Option<PathBuf>,
}

/// Set by Ctrl-C: the run writes a resumable checkpoint and stops.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Finds the six CIFAR-10 files in `dir`, downloading them when missing.
pub fn dataset(dir: &Path) -> Result<(Cifar10, Cifar10)> {
    cifar::ensure_downloaded(dir, cifar::URL, &Checksum::Md5(cifar::MD5.into()))?;
    Ok((Cifar10::load_train(dir)?, Cifar10::load_test(dir)?))
}

/// Result of one pass over an evaluation set.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Evaluation {
    pub images: usize,
    pub correct: usize,
    pub loss: f64,
}

impl Evaluation {
    pub fn error(&self) -> f64 {
        1.0 - self.correct as f64 / self.images as f64
    }
}

/// Planned evaluation of every image of a set with the running statistics: batches of up to
/// `batch`, and a second plan for the remainder.
pub struct Evaluator {
    full: EvalStep,
    rest: Option<EvalStep>,
}

impl Evaluator {
    pub fn new(gpu: &Gpu, model: &ResNet, images: usize, batch: usize) -> Result<Self> {
        ensure!(images > 0, "the evaluation set is empty");
        let batch = batch.min(images);
        let rest = if !images.is_multiple_of(batch) { Some(EvalStep::new(gpu, model, images % batch)?) } else { None };
        Ok(Self { full: EvalStep::new(gpu, model, batch)?, rest })
    }

    pub fn run(&self, gpu: &Gpu, data: &Cifar10, mean: [f32; 3], std: [f32; 3]) -> Result<Evaluation> {
        let (n, batch) = (data.len(), self.full.labels.len());
        let (mut correct, mut loss) = (0usize, 0.0f64);
        for start in (0..n).step_by(batch) {
            let plan =
                if start + batch <= n { &self.full } else { self.rest.as_ref().expect("a plan for the remainder") };
            let indices: Vec<usize> = (start..(start + batch).min(n)).collect();
            write_batch(gpu, data, &indices, None, mean, std, &plan.input, &plan.labels);
            plan.run(gpu)?;
            correct += gpu.read::<u32>(&plan.correct)?[0] as usize;
            loss += gpu.read::<f32>(&plan.loss)?[0] as f64 * indices.len() as f64;
        }
        Ok(Evaluation { images: n, correct, loss: loss / n as f64 })
    }
}

#[allow(clippy::too_many_arguments)]
fn write_batch(
    gpu: &Gpu,
    data: &Cifar10,
    indices: &[usize],
    augment: Option<&mut Rng>,
    mean: [f32; 3],
    std: [f32; 3],
    input: &Tensor,
    labels: &Tensor,
) {
    let mut images = vec![0f32; input.len()];
    let mut label_values = vec![0u32; labels.len()];
    cifar::make_batch(data, indices, augment, mean, std, &mut images, &mut label_values);
    gpu.write(input, &images);
    gpu.write(labels, &label_values);
}

/// How a run ended.
pub struct Summary {
    pub step: usize,
    /// The step and test error of the best evaluation.
    pub best: Option<(usize, f64)>,
    pub last: Option<Evaluation>,
}

/// Appends JSON lines to the run's log(s).
struct Log {
    files: Vec<std::fs::File>,
}

impl Log {
    /// Opens the logs to append to (a resumed run), or to start anew: an earlier run's log is then
    /// renamed aside (`log.jsonl` to `log.1.jsonl`, the first free number), never truncated.
    fn open(paths: &[&Path], append: bool) -> Result<Self> {
        let mut files = Vec::new();
        for path in paths {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).with_context(|| format!("cannot create folder {}", dir.display()))?;
            }
            // Only a file of its own: a log sent to /dev/stdout or a pipe is written as it is.
            if !append && std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file() && m.len() > 0) {
                let aside = aside(path);
                std::fs::rename(path, &aside)
                    .with_context(|| format!("cannot move the previous log {} aside", path.display()))?;
                eprintln!("the previous log {} is now {}", path.display(), aside.display());
            }
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(append)
                .write(true)
                .truncate(!append)
                .open(path)
                .with_context(|| format!("cannot write log {}", path.display()))?;
            files.push(file);
        }
        Ok(Self { files })
    }

    fn line(&mut self, value: serde_json::Value) -> Result<()> {
        use std::io::Write;
        for file in &mut self.files {
            writeln!(file, "{value}").context("writing the log")?;
        }
        Ok(())
    }
}

/// `DIR/log.jsonl` -> `DIR/log.N.jsonl` for the first N from 1 that names no file.
fn aside(path: &Path) -> PathBuf {
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    let ext = path.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
    (1..).map(|n| path.with_file_name(format!("{stem}.{n}{ext}"))).find(|p| !p.exists()).expect("a free name")
}

/// Trains from `start` (a fresh model, `--init` weights or a `--resume` checkpoint).
pub fn train(
    gpu: &Gpu,
    recipe: &Recipe,
    train_set: &Cifar10,
    test_set: &Cifar10,
    start: Start,
    out: &Outputs,
) -> Result<Summary> {
    let arch = recipe.arch()?;
    ensure!(
        recipe.batch_size > 0 && recipe.batch_size <= train_set.len(),
        "batch size {} does not fit {} training images",
        recipe.batch_size,
        train_set.len()
    );
    let model = ResNet::new(gpu, arch)?;
    let mut step = 0;
    let mut best: Option<(usize, f64)> = None;
    match &start {
        Start::Fresh => model.init(gpu, recipe.seed),
        Start::Init(path, ck) => model.restore(gpu, ck, false, path)?,
        Start::Resume(path, ck) => {
            model.restore(gpu, ck, true, path)?;
            step = ck
                .meta("step")
                .and_then(|s| s.parse().ok())
                .with_context(|| format!("{} has no step in its metadata", path.display()))?;
            let best_error = ck.meta("best_test_error").and_then(|s| s.parse().ok());
            best = ck.meta("best_step").and_then(|s| s.parse().ok()).zip(best_error);
        }
    }
    let sgd = Sgd { lr: recipe.lr_at(step), momentum: recipe.momentum, weight_decay: recipe.weight_decay };
    let mut plan = TrainStep::new(gpu, &model, recipe.batch_size, sgd)?;

    let steps_per_epoch = train_set.len() / recipe.batch_size;
    let eval_every = out.eval_every.unwrap_or(steps_per_epoch).max(1);
    let dir = &out.checkpoint_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create checkpoint folder {}", dir.display()))?;
    let log_path = dir.join("log.jsonl");
    let mut log_paths = vec![log_path.as_path()];
    if let Some(p) = &out.json_log {
        log_paths.push(p);
    }
    let mut log = Log::open(&log_paths, matches!(start, Start::Resume(..)))?;

    eprintln!(
        "training {} ({} parameters) on {} images, testing on {}, batch {}, {} steps ({:.1} epochs) from step {step}",
        recipe.model,
        model.params.tensors.iter().map(Tensor::len).sum::<usize>(),
        train_set.len(),
        test_set.len(),
        recipe.batch_size,
        recipe.steps,
        recipe.steps as f64 / steps_per_epoch as f64
    );
    let bar = indicatif::ProgressBar::new(recipe.steps as u64).with_position(step as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30.cyan/blue} {pos}/{len} [{elapsed}<{eta}] {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );

    let evaluator = Evaluator::new(gpu, &model, test_set.len(), 500)?;
    let checkpoint = |model: &ResNet, step: usize, best: &Option<(usize, f64)>| -> Result<Checkpoint> {
        let mut ck = model.checkpoint(gpu, true)?;
        if let Some((name, index, value)) = ck.first_non_finite(ck.tensors.keys().map(String::as_str)) {
            bail!(
                "training diverged: {name} holds {value} at index {index} at step {step}; stopped without writing (the \
                 last checkpoint in {} is intact)",
                dir.display()
            );
        }
        let join = |v: [f32; 3]| v.map(|x| x.to_string()).join(",");
        ck.metadata.insert("arch".into(), recipe.model.clone());
        ck.metadata.insert("shortcut".into(), recipe.shortcut.to_string());
        ck.metadata.insert("mean".into(), join(recipe.mean));
        ck.metadata.insert("std".into(), join(recipe.std));
        ck.metadata.insert("step".into(), step.to_string());
        ck.metadata.insert("epoch".into(), format!("{:.3}", step as f64 / steps_per_epoch as f64));
        ck.metadata.insert("recipe".into(), serde_json::to_string(recipe)?);
        if let Some((s, e)) = best {
            ck.metadata.insert("best_step".into(), s.to_string());
            ck.metadata.insert("best_test_error".into(), e.to_string());
        }
        Ok(ck)
    };

    let mut order = Vec::new();
    let mut order_epoch = usize::MAX;
    let mut window = Instant::now();
    let mut window_start = step;
    let mut last = None;
    while step < recipe.steps {
        let epoch = step / steps_per_epoch;
        if epoch != order_epoch {
            order = recipe.epoch_order(epoch, train_set.len());
            order_epoch = epoch;
        }
        let at = (step % steps_per_epoch) * recipe.batch_size;
        let mut rng = recipe.augmentation(step);
        write_batch(
            gpu,
            train_set,
            &order[at..at + recipe.batch_size],
            rng.as_mut(),
            recipe.mean,
            recipe.std,
            &plan.input,
            &plan.labels,
        );
        plan.run(gpu, step, recipe.lr_at(step))?;
        step += 1;

        if step % LOG_EVERY == 0 || step == recipe.steps || step % eval_every == 0 {
            let values: Vec<u32> = gpu.read(&plan.history)?;
            let (mut loss, mut correct, mut count) = (0.0f64, 0usize, 0usize);
            for s in window_start..step {
                let slot = s % LOG_EVERY;
                let l = f32::from_bits(values[2 * slot]);
                if !l.is_finite() {
                    bail!(
                        "training diverged: the loss is {l} at step {}; stopped without writing (the last checkpoint in {} is intact)",
                        s + 1,
                        dir.display()
                    );
                }
                loss += l as f64;
                correct += values[2 * slot + 1] as usize;
                count += 1;
            }
            let images_per_s = (count * recipe.batch_size) as f64 / window.elapsed().as_secs_f64();
            let (loss, error) = (loss / count as f64, 1.0 - correct as f64 / (count * recipe.batch_size) as f64);
            let lr = recipe.lr_at(step - 1);
            let progress =
                format!("loss {loss:.3}  acc {:.1}%  lr {lr}  {images_per_s:.1} img/s", 100.0 * (1.0 - error));
            bar.set_position(step as u64);
            if bar.is_hidden() {
                // Not a terminal (a log file, CI): a plain line instead of the bar.
                eprintln!("step {step}/{}: {progress}", recipe.steps);
            }
            bar.set_message(progress);
            log.line(serde_json::json!({"event": "train", "model": recipe.model, "step": step,
                "epoch": step as f64 / steps_per_epoch as f64, "loss": loss, "error": error, "lr": lr, "images_per_s": images_per_s}))?;
            window = Instant::now();
            window_start = step;
        }

        // Ctrl-C: a resumable checkpoint, after this step's evaluation where it has one, so that
        // no evaluation is skipped and a checkpoint at the last step means a finished run.
        let interrupted = INTERRUPTED.load(Ordering::SeqCst);
        let evaluate = step % eval_every == 0 || step == recipe.steps;
        if interrupted && !evaluate {
            let path = dir.join("last.safetensors");
            checkpoint(&model, step, &best)?.write(&path)?;
            bar.abandon();
            bail!("interrupted at step {step}; resume with --resume {}", path.display());
        }
        if evaluate {
            let eval = evaluator.run(gpu, test_set, recipe.mean, recipe.std)?;
            let epoch = step as f64 / steps_per_epoch as f64;
            let (accuracy, loss) = (100.0 * (1.0 - eval.error()), eval.loss);
            let line = format!(
                "step {step} (epoch {epoch:.1}): test loss {loss:.4}, accuracy {accuracy:.2}% ({}/{})",
                eval.correct, eval.images
            );
            bar.suspend(|| eprintln!("{line}"));
            log.line(serde_json::json!({"event": "test", "model": recipe.model, "step": step, "epoch": epoch, "loss": eval.loss, "error": eval.error()}))?;
            if best.is_none_or(|(_, b)| eval.error() < b) {
                best = Some((step, eval.error()));
                checkpoint(&model, step, &best)?.write(&dir.join("best.safetensors"))?;
            }
            checkpoint(&model, step, &best)?.write(&dir.join("last.safetensors"))?;
            if let Ok(run) = plot::read_log(&log_path) {
                plot::plot_run(&run, &dir.join("curves.png"))?;
            }
            last = Some(eval);
            window = Instant::now();
            if interrupted {
                bar.abandon();
                bail!("interrupted at step {step}; resume with --resume {}", dir.join("last.safetensors").display());
            }
        }
    }
    bar.finish();
    if let Some(path) = &out.save {
        checkpoint(&model, step, &best)?.write(path)?;
    }
    Ok(Summary { step, best, last })
}

/// Where the weights of a run come from.
pub enum Start {
    Fresh,
    /// `--init FILE`: model weights (no optimizer state); training starts at step 0.
    Init(PathBuf, Checkpoint),
    /// `--resume FILE`: weights, optimizer, step; the recipe comes from the file.
    Resume(PathBuf, Checkpoint),
}

/// The closing lines: the best test error beside the paper's figure for that depth.
pub fn summary_lines(recipe: &Recipe, summary: &Summary) -> Vec<String> {
    let mut lines = vec![format!("finished {} at step {}", recipe.model, summary.step)];
    if let Some((step, best)) = &summary.best {
        let mut line = format!("best test error {:.2}% at step {step}", 100.0 * best);
        if let Some((_, paper)) = PAPER_ERROR.iter().find(|(m, _)| *m == recipe.model && recipe.shortcut == 'a') {
            line += &format!(" (the paper's Table 6: {paper:.2}%)");
        }
        lines.push(line);
    }
    if let Some(last) = &summary.last {
        lines.push(format!("final test error {:.2}%, loss {:.4}", 100.0 * last.error(), last.loss));
    }
    lines
}
