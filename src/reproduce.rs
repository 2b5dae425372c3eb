//! `reproduce figure6` and `reproduce table6`: the paper's CIFAR-10 experiments as one command
//! each. Every network is one `train` run in `--out/<model>`; a run whose last checkpoint reached
//! its final step is not redone, and one that stopped early resumes from it, so an interrupted
//! command picks up where it stopped. The figures and tables are drawn from the runs' logs.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use serde::Serialize;

use crate::checkpoint::Checkpoint;
use crate::data::cifar::{self, Cifar10};
use crate::gpu::{AdapterChoice, Gpu};
use crate::plot::{self, Run};
use crate::train::{self, Outputs, PAPER_ERROR, Recipe, Start};

#[derive(clap::Subcommand)]
pub enum ReproduceCommand {
    /// Figure 6: plain nets against ResNets of the same depths (the degradation problem)
    Figure6(Figure6Args),
    /// Table 6: the CIFAR-10 ResNets' test errors beside the paper's
    Table6(Table6Args),
}

#[derive(clap::Args)]
pub struct Figure6Args {
    /// Depths (6n+2); each trains a plain net and a ResNet
    #[arg(long, value_delimiter = ',', default_value = "20,56")]
    pub depths: Vec<usize>,
    /// Runs, logs, figure6.png and figure6.md go here
    #[arg(long, default_value = "runs/figure6")]
    pub out: PathBuf,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(clap::Args)]
pub struct Table6Args {
    /// Depths (6n+2) of the ResNets
    #[arg(long, value_delimiter = ',', default_value = "20,32,44,56,110")]
    pub depths: Vec<usize>,
    /// Runs, logs, table6.png and table6.md go here
    #[arg(long, default_value = "runs/table6")]
    pub out: PathBuf,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(clap::Args)]
pub struct CommonArgs {
    /// Folder with the CIFAR-10 binary files (downloaded there when missing)
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// A short version: this many SGD steps per network (the paper's: 64000), its schedule scaled
    /// to them, and the first tenth at lr 0.01
    #[arg(long, value_parser = crate::args::count)]
    pub steps: Option<usize>,
    /// No warm-up at lr 0.01 in a short version
    #[arg(long, requires = "steps")]
    pub no_warmup: bool,
    /// Images per SGD step
    #[arg(long, default_value_t = 128, value_parser = crate::args::count)]
    pub batch_size: usize,
    /// Seed of the initial weights, the shuffle and the augmentation
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Evaluate (and checkpoint) every N steps [default: every epoch, or a tenth of a short version]
    #[arg(long, value_parser = crate::args::count)]
    pub eval_every: Option<usize>,
    /// Test on the first N test images only (quicker evaluations on slow adapters) [default: all]
    #[arg(long, value_parser = crate::args::count)]
    pub test_images: Option<usize>,
    /// Print the table as one JSON document on stdout instead of markdown
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub adapter: AdapterChoice,
}

/// One of the paper's experiments at a chosen scale.
#[derive(Clone, Debug)]
pub struct Experiment {
    /// `figure6` or `table6`: names the figure and the table in `out`.
    pub name: &'static str,
    /// The networks, trained in this order.
    pub models: Vec<String>,
    /// Training images held out (the last ones), as the paper's 45k/5k split holds out 5000.
    pub held_out: usize,
    /// The short version's steps per network; `None`: the paper's 64k.
    pub steps: Option<usize>,
    /// In the short version, the first tenth of the steps at lr 0.01 (as the paper warms up
    /// ResNet-110): short runs of deep nets need it to leave chance level in time.
    pub warmup: bool,
    pub batch_size: usize,
    pub seed: u64,
    /// Evaluate every this many steps (default: once an epoch, or every tenth of a short version).
    pub eval_every: Option<usize>,
    pub out: PathBuf,
}

impl Experiment {
    /// Figure 6: plain20, plain56, resnet20, resnet56 (for depths 20,56), trained on all 50k
    /// images.
    pub fn figure6(depths: &[usize], out: &Path) -> Self {
        let models = ["plain", "resnet"].iter().flat_map(|kind| depths.iter().map(move |d| format!("{kind}{d}")));
        Self::new("figure6", models.collect(), 0, out)
    }

    /// Table 6: the ResNets on the paper's 45k/5k split (trained on the first 45k images).
    pub fn table6(depths: &[usize], out: &Path) -> Self {
        Self::new("table6", depths.iter().map(|d| format!("resnet{d}")).collect(), 5000, out)
    }

    /// An experiment of `models`, each once (a depth given twice would train its folder twice).
    fn new(name: &'static str, mut models: Vec<String>, held_out: usize, out: &Path) -> Self {
        let mut seen = std::collections::HashSet::new();
        models.retain(|m| seen.insert(m.clone()));
        let paper = Recipe::paper("");
        Self {
            name,
            models,
            held_out,
            steps: None,
            warmup: true,
            batch_size: paper.batch_size,
            seed: paper.seed,
            eval_every: None,
            out: out.to_path_buf(),
        }
    }

    /// The recipe of `model`: the paper's, or the short version's.
    pub fn recipe(&self, model: &str) -> Recipe {
        let mut recipe =
            Recipe { val_split: self.held_out, batch_size: self.batch_size, seed: self.seed, ..Recipe::paper(model) };
        if let Some(steps) = self.steps {
            recipe.steps = steps;
            recipe.warmup_steps = if self.warmup { steps / 10 } else { 0 };
        }
        recipe
    }

    fn eval_every(&self) -> Option<usize> {
        self.eval_every.or(self.steps.map(|steps| (steps / 10).max(1)))
    }

    pub fn dir(&self, model: &str) -> PathBuf {
        self.out.join(model)
    }
}

/// Where a run stands in `out`.
enum State {
    Fresh,
    Resume(PathBuf, Checkpoint),
    Done,
}

fn state(dir: &Path, recipe: &Recipe) -> Result<State> {
    let last = dir.join("last.safetensors");
    if !last.exists() {
        return Ok(State::Fresh);
    }
    let ck = Checkpoint::read(&last)?;
    let theirs: Recipe = ck
        .meta("recipe")
        .map(serde_json::from_str)
        .transpose()
        .with_context(|| format!("reading the recipe of {}", last.display()))?
        .with_context(|| format!("{} is not a training checkpoint (no recipe in its metadata)", last.display()))?;
    ensure!(
        theirs == *recipe,
        "{} holds a run of another recipe ({}); choose another --out, or move that folder away",
        last.display(),
        recipe_difference(&theirs, recipe)
    );
    let step: usize = ck
        .meta("step")
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("{} has no step in its metadata", last.display()))?;
    Ok(if step >= recipe.steps { State::Done } else { State::Resume(last, ck) })
}

/// "steps 400 there, 800 here", for every field that differs.
fn recipe_difference(there: &Recipe, here: &Recipe) -> String {
    let (there, here) = (serde_json::to_value(there).unwrap(), serde_json::to_value(here).unwrap());
    let fields = here.as_object().unwrap().iter().filter(|(key, value)| there.get(*key) != Some(*value));
    fields.map(|(key, value)| format!("{key} {} there, {value} here", there[key])).collect::<Vec<_>>().join("; ")
}

/// Trains every network of `experiment` that has not finished (resuming those that stopped), then
/// reads their logs, draws `<name>.png` and writes `<name>.md` into `out`.
pub fn reproduce(gpu: &Gpu, experiment: &Experiment, train_set: &Cifar10, test_set: &Cifar10) -> Result<Vec<Outcome>> {
    let (train_set, _) = train_set.clone().split_last(experiment.held_out)?;
    // Every run's state first: a folder of another recipe stops the command before any training.
    let mut states = Vec::new();
    for model in &experiment.models {
        let recipe = experiment.recipe(model);
        recipe.arch()?;
        states.push(state(&experiment.dir(model), &recipe)?);
    }
    for (i, (model, state)) in experiment.models.iter().zip(states).enumerate() {
        let dir = experiment.dir(model);
        let what = format!("[{}/{}] {model}", i + 1, experiment.models.len());
        let start = match state {
            State::Done => {
                eprintln!("{what}: finished in {}, not redone", dir.display());
                continue;
            }
            State::Resume(path, ck) => {
                eprintln!("{what}: resuming {}", path.display());
                Start::Resume(path, ck)
            }
            State::Fresh => {
                eprintln!("{what}: training into {}", dir.display());
                Start::Fresh
            }
        };
        let out = Outputs { save: None, checkpoint_dir: dir, eval_every: experiment.eval_every(), json_log: None };
        train::train(gpu, &experiment.recipe(model), &train_set, test_set, start, &out)
            .with_context(|| format!("{what} (the same command again resumes it from its last checkpoint)"))?;
    }
    let runs = read_logs(experiment)?;
    let outcomes = outcomes(experiment, &runs);
    std::fs::write(experiment.out.join(format!("{}.md", experiment.name)), markdown(&outcomes))
        .with_context(|| format!("cannot write the table into {}", experiment.out.display()))?;
    draw(experiment, runs)?;
    Ok(outcomes)
}

/// How one network ended, from its log.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub model: String,
    pub steps: usize,
    /// The training error of the last logged window of steps.
    pub train_error: Option<f64>,
    pub test_error: Option<f64>,
    pub best_test_error: Option<f64>,
    pub best_step: Option<usize>,
    /// The paper's Table 6 test error of this network, where it gives one.
    pub paper_test_error: Option<f64>,
}

/// Each run's log, read once for the table and the figure.
fn read_logs(experiment: &Experiment) -> Result<Vec<Run>> {
    experiment.models.iter().map(|model| plot::read_log(&experiment.dir(model).join("log.jsonl"))).collect()
}

fn outcomes(experiment: &Experiment, runs: &[Run]) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    for (model, run) in experiment.models.iter().zip(runs) {
        let test = &run.test_error;
        let best = test.step.iter().zip(&test.value).min_by(|a, b| a.1.total_cmp(b.1));
        outcomes.push(Outcome {
            model: model.clone(),
            steps: experiment.recipe(model).steps,
            train_error: run.train_error.value.last().copied(),
            test_error: test.value.last().copied(),
            best_test_error: best.map(|(_, e)| *e),
            best_step: best.map(|(s, _)| *s as usize),
            paper_test_error: PAPER_ERROR.iter().find(|(m, _)| m == model).map(|(_, e)| e / 100.0),
        });
    }
    outcomes
}

/// The table of final errors (%), one network a row.
pub fn markdown(outcomes: &[Outcome]) -> String {
    let percent = |e: Option<f64>| e.map_or("-".to_string(), |e| format!("{:.2}", 100.0 * e));
    let mut table = String::from(
        "| network | steps | train error % | test error % | best test error % (step) | paper's test error % |\n\
         | ------- | ----: | ------------: | -----------: | -----------------------: | -------------------: |\n",
    );
    for o in outcomes {
        let best = match (o.best_test_error, o.best_step) {
            (Some(e), Some(s)) => format!("{:.2} ({s})", 100.0 * e),
            _ => "-".into(),
        };
        table += &format!(
            "| {} | {} | {} | {} | {best} | {} |\n",
            label(&o.model),
            o.steps,
            percent(o.train_error),
            percent(o.test_error),
            percent(o.paper_test_error)
        );
    }
    table
}

/// The paper's names: `plain-20`, `ResNet-56`.
fn label(model: &str) -> String {
    match (model.strip_prefix("plain"), model.strip_prefix("resnet")) {
        (Some(depth), _) => format!("plain-{depth}"),
        (_, Some(depth)) => format!("ResNet-{depth}"),
        _ => model.to_string(),
    }
}

/// `<name>.png` in `out`: Figure 6's two panels (plain left, ResNets right), or one chart of all runs.
fn draw(experiment: &Experiment, mut runs: Vec<Run>) -> Result<()> {
    for (run, model) in runs.iter_mut().zip(&experiment.models) {
        run.label = label(model);
    }
    let path = experiment.out.join(format!("{}.png", experiment.name));
    let (plain, residual): (Vec<Run>, Vec<Run>) = runs.into_iter().partition(|r| r.label.starts_with("plain"));
    if plain.is_empty() {
        plot::plot_error(&residual, &path)
    } else {
        plot::plot_panels(&[("plain networks", &plain), ("ResNets", &residual)], &path)
    }
}

/// `reproduce figure6|table6`: loads CIFAR-10 (downloading it if needed), opens the adapter and
/// runs the experiment, then prints the table.
pub fn run(command: &ReproduceCommand) -> Result<()> {
    let (mut experiment, common) = match command {
        ReproduceCommand::Figure6(args) => (Experiment::figure6(&args.depths, &args.out), &args.common),
        ReproduceCommand::Table6(args) => (Experiment::table6(&args.depths, &args.out), &args.common),
    };
    experiment.steps = common.steps;
    experiment.warmup = !common.no_warmup;
    experiment.batch_size = common.batch_size;
    experiment.seed = common.seed;
    experiment.eval_every = common.eval_every;
    for model in &experiment.models {
        experiment.recipe(model).arch()?;
    }

    let (train_set, test_set) = train::dataset(&common.data.clone().unwrap_or_else(cifar::default_dir))?;
    let test_set = match common.test_images {
        Some(n) if n < test_set.len() => {
            let rest = test_set.len() - n;
            test_set.split_last(rest)?.0
        }
        _ => test_set,
    };
    let gpu = Gpu::open(&common.adapter)?;
    let outcomes = reproduce(&gpu, &experiment, &train_set, &test_set)?;
    if common.json {
        let doc = serde_json::json!({"experiment": experiment.name, "runs": outcomes,
            "figure": experiment.out.join(format!("{}.png", experiment.name))});
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{}", markdown(&outcomes));
        eprintln!("runs, {0}.png and {0}.md are in {1}", experiment.name, experiment.out.display());
    }
    Ok(())
}
