//! `train` and `eval`: one training loop for CIFAR-10 and for folders of photos, the whole step
//! on the GPU.
//!
//! Each step writes one normalised (and augmented) batch from a [`TrainSet`] and submits the
//! planned step as one command buffer, which also copies its loss and correct count into a small
//! history buffer on the GPU; the CPU reads that history every `LOG_EVERY` steps, so it never
//! waits for the GPU step by step. A set's batch of step s depends only on the recipe and s (the
//! data order of an epoch on (seed, epoch), the augmentation on (seed, step)), so a run resumed
//! from a checkpoint continues bit for bit.

/// `train` and `eval` on the command line.
pub mod command;
/// The recipe: every setting that determines a run's numbers.
pub mod recipe;
/// The training and evaluation sets: CIFAR-10 and folders of photos.
pub mod sets;

use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde::Serialize;

use crate::checkpoint::Checkpoint;
use crate::data::loader::Batch;
use crate::gpu::{Gpu, Tensor};
use crate::model::ResNet;
use crate::ops::sgd::Sgd;
use crate::plan::{EvalStep, HISTORY, Statistics, TrainStep, Trained};
use crate::plot;
pub use recipe::{FolderRecipe, Recipe, Schedule};
pub use sets::dataset;

/// Steps between reads of the loss history (and train lines in the log).
const LOG_EVERY: usize = HISTORY;

/// The paper's Table 6 test errors (%), for the closing summary.
pub const PAPER_ERROR: [(&str, f64); 5] =
    [("resnet20", 8.75), ("resnet32", 7.51), ("resnet44", 7.17), ("resnet56", 6.97), ("resnet110", 6.43)];

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

/// A run's training images.
pub trait TrainSet {
    /// Images in the set.
    fn images(&self) -> usize;
    /// The batches of `steps`, in order: `recipe.batch_size` images each, normalised `[batch, 3,
    /// side, side]`, a function of the recipe and the step alone.
    fn batches<'a>(
        &'a self,
        recipe: &Recipe,
        steps: Range<usize>,
    ) -> Result<Box<dyn Iterator<Item = Result<Batch>> + 'a>>;
}

/// Images evaluated in a fixed order, prepared as evaluation prepares them (no augmentation).
pub trait EvalSet {
    /// Images in the set.
    fn images(&self) -> usize;
    /// Classes the labels count.
    fn classes(&self) -> usize;
    /// Images `range`, normalised with `mean` and `std`. An image that cannot be read is zeros,
    /// listed in `skipped` with its position, and not counted.
    fn batch(&self, range: Range<usize>, mean: [f32; 3], std: [f32; 3]) -> Result<Batch>;
}

/// Result of one pass over an evaluation set.
#[derive(Clone, Debug, Serialize)]
pub struct Evaluation {
    /// Images evaluated (the set less those that could not be read).
    pub images: usize,
    pub correct: usize,
    /// Images whose class is among the five highest logits.
    pub correct5: usize,
    /// Mean cross-entropy (computed in f64 from the logits).
    pub loss: f64,
    pub classes: usize,
    /// `confusion[truth * classes + predicted]`: images of class truth predicted as class predicted.
    pub confusion: Vec<usize>,
    /// Images that could not be read, with their errors.
    pub skipped: Vec<String>,
}

impl Evaluation {
    pub fn error(&self) -> f64 {
        1.0 - self.correct as f64 / self.images as f64
    }

    /// None with five classes or fewer, where every image's class is among the top five.
    pub fn top5_error(&self) -> Option<f64> {
        (self.classes > 5).then(|| 1.0 - self.correct5 as f64 / self.images as f64)
    }

    /// The most frequent mistakes, most frequent first (ties in class order): (truth, predicted,
    /// images).
    pub fn confused_pairs(&self, count: usize) -> Vec<(usize, usize, usize)> {
        let classes = self.classes;
        let mut pairs: Vec<(usize, usize, usize)> = (0..classes * classes)
            .filter(|i| i / classes != i % classes && self.confusion[*i] > 0)
            .map(|i| (i / classes, i % classes, self.confusion[i]))
            .collect();
        pairs.sort_by_key(|&(t, p, n)| (std::cmp::Reverse(n), t, p));
        pairs.truncate(count);
        pairs
    }
}

/// Planned evaluation of every image of a set with the running statistics: batches of up to
/// `batch`, and a second plan for the remainder. The logits come back; the loss, top-1, top-5
/// and confusion are counted on the CPU.
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

    pub fn run(&self, gpu: &Gpu, data: &dyn EvalSet, mean: [f32; 3], std: [f32; 3]) -> Result<Evaluation> {
        let (n, batch, classes) = (data.images(), self.full.input.shape[0], data.classes());
        let mut eval = Evaluation {
            images: 0,
            correct: 0,
            correct5: 0,
            loss: 0.0,
            classes,
            confusion: vec![0; classes * classes],
            skipped: Vec::new(),
        };
        for start in (0..n).step_by(batch) {
            let plan =
                if start + batch <= n { &self.full } else { self.rest.as_ref().expect("a plan for the remainder") };
            let b = data.batch(start..(start + batch).min(n), mean, std)?;
            gpu.write(&plan.input, &b.images);
            plan.run(gpu)?;
            let logits: Vec<f32> = gpu.read(&plan.logits)?;
            let skipped: HashSet<usize> = b.skipped.iter().map(|(i, _)| *i).collect();
            for (i, (row, &label)) in logits.chunks_exact(classes).zip(&b.labels).enumerate() {
                if skipped.contains(&i) {
                    continue;
                }
                // Overflowing logits: wrong, and a NaN loss (weights that are not finite stop the
                // run at its next checkpoint, naming the tensor).
                if !row.iter().all(|x| x.is_finite()) {
                    (eval.images, eval.loss) = (eval.images + 1, f64::NAN);
                    continue;
                }
                let label = label as usize;
                let max = row.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
                let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
                eval.loss += max + sum.ln() - row[label] as f64;
                // Ranked as a stable sort would: a tie with an earlier class goes before.
                let rank =
                    row.iter().enumerate().filter(|&(j, &x)| x > row[label] || (x == row[label] && j < label)).count();
                let predicted = (0..classes).fold(0, |best, j| if row[j] > row[best] { j } else { best });
                eval.correct += usize::from(rank == 0);
                eval.correct5 += usize::from(rank < 5);
                eval.confusion[label * classes + predicted] += 1;
                eval.images += 1;
            }
            eval.skipped.extend(b.skipped.into_iter().map(|(_, e)| e));
        }
        ensure!(eval.images > 0, "no image of the evaluation set could be read: {}", eval.skipped.join("; "));
        eval.loss /= eval.images as f64;
        Ok(eval)
    }
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
    train_set: &dyn TrainSet,
    test_set: &dyn EvalSet,
    start: Start,
    out: &Outputs,
) -> Result<Summary> {
    let arch = recipe.arch()?;
    ensure!(
        recipe.batch_size > 0 && recipe.batch_size <= train_set.images(),
        "batch size {} does not fit {} training images",
        recipe.batch_size,
        train_set.images()
    );
    let model = ResNet::new(gpu, arch)?;
    let mut step = 0;
    let mut best: Option<(usize, f64)> = None;
    match &start {
        Start::Fresh => model.init(gpu, recipe.seed),
        Start::FreshFc(path, ck) => {
            model.init(gpu, recipe.seed);
            model.restore_except(gpu, ck, false, &["fc.weight", "fc.bias"], path)?;
        }
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
    let trained = match &recipe.folder {
        Some(f) => Trained {
            fc_only: f.freeze_backbone,
            statistics: if f.bn_eval { Statistics::Running } else { Statistics::Batch },
        },
        None => Trained::ALL,
    };
    let mut plan = TrainStep::new(gpu, &model, recipe.batch_size, sgd, trained)?;

    let steps_per_epoch = train_set.images() / recipe.batch_size;
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
        train_set.images(),
        test_set.images(),
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

    // CIFAR's evaluation batches are large; a photo's activations are 50x larger.
    let eval_batch = if recipe.folder.is_some() { recipe.batch_size } else { 500 };
    let evaluator = Evaluator::new(gpu, &model, test_set.images(), eval_batch)?;
    let checkpoint = |model: &ResNet, step: usize, best: &Option<(usize, f64)>| -> Result<Checkpoint> {
        let mut ck = model.checkpoint(gpu, true)?;
        // torchvision counts the batches each BN has seen; here, the steps of the run.
        for conv in model.arch.convs() {
            ck.integers.insert(format!("{}.num_batches_tracked", conv.bn), step as i64);
        }
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
        ck.metadata.extend(recipe.metadata());
        if let Some((s, e)) = best {
            ck.metadata.insert("best_step".into(), s.to_string());
            ck.metadata.insert("best_test_error".into(), e.to_string());
        }
        Ok(ck)
    };

    let mut batches = train_set.batches(recipe, step..recipe.steps)?;
    // Files that could not be read, each reported once.
    let mut unreadable = HashSet::new();
    let mut window = Instant::now();
    let mut window_start = step;
    // Within the window: time the loop waited for batches, and the time the batches took to make.
    let (mut waited, mut making) = (Duration::ZERO, 0.0f64);
    let mut last = None;
    while step < recipe.steps {
        let wait = Instant::now();
        let batch = batches.next().context("the training set ended before the run's last step")??;
        waited += wait.elapsed();
        making += batch.seconds;
        for (_, error) in batch.skipped {
            if unreadable.insert(error.clone()) {
                bar.suspend(|| eprintln!("warning: skipped {error}"));
            }
        }
        gpu.write(&plan.input, &batch.images);
        gpu.write(&plan.labels, &batch.labels);
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
            // Images/s overall; of the batches' making (decoding, augmenting) alone; and of
            // everything else (the GPU's steps and the waits for them).
            let images = (count * recipe.batch_size) as f64;
            let elapsed = window.elapsed();
            let images_per_s = images / elapsed.as_secs_f64();
            let data_images_per_s = images / making.max(1e-9);
            let gpu_images_per_s = images / elapsed.saturating_sub(waited).as_secs_f64().max(1e-9);
            let (loss, error) = (loss / count as f64, 1.0 - correct as f64 / images);
            let lr = recipe.lr_at(step - 1);
            let progress = format!(
                "loss {loss:.3}  acc {:.1}%  lr {lr}  {images_per_s:.1} img/s (data {data_images_per_s:.0}, gpu \
                 {gpu_images_per_s:.0})",
                100.0 * (1.0 - error)
            );
            bar.set_position(step as u64);
            if bar.is_hidden() {
                // Not a terminal (a log file, CI): a plain line instead of the bar.
                eprintln!("step {step}/{}: {progress}", recipe.steps);
            }
            bar.set_message(progress);
            log.line(serde_json::json!({"event": "train", "model": recipe.model, "step": step,
                "epoch": step as f64 / steps_per_epoch as f64, "loss": loss, "error": error, "lr": lr, "images_per_s": images_per_s,
                "data_images_per_s": data_images_per_s, "gpu_images_per_s": gpu_images_per_s}))?;
            window = Instant::now();
            window_start = step;
            (waited, making) = (Duration::ZERO, 0.0);
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
            let top5 = eval.top5_error().map_or(String::new(), |e| format!(", top-5 {:.2}%", 100.0 * (1.0 - e)));
            let line = format!(
                "step {step} (epoch {epoch:.1}): test loss {loss:.4}, accuracy {accuracy:.2}% ({}/{}){top5}",
                eval.correct, eval.images
            );
            bar.suspend(|| eprintln!("{line}"));
            for error in &eval.skipped {
                if unreadable.insert(error.clone()) {
                    bar.suspend(|| eprintln!("warning: skipped {error}"));
                }
            }
            log.line(serde_json::json!({"event": "test", "model": recipe.model, "step": step, "epoch": epoch,
                "loss": eval.loss, "error": eval.error(), "top5_error": eval.top5_error()}))?;
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
            (waited, making) = (Duration::ZERO, 0.0);
            if interrupted {
                bar.abandon();
                bail!("interrupted at step {step}; resume with --resume {}", dir.join("last.safetensors").display());
            }
        }
    }
    bar.finish();
    if !unreadable.is_empty() {
        eprintln!("{} files could not be read and were skipped", unreadable.len());
    }
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
    /// `--init` of weights whose fc does not fit: everything but the fc from the file (which must
    /// not hold one), a fresh fc initialised from the seed.
    FreshFc(PathBuf, Checkpoint),
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
