//! How ops choose among variants of a kernel family that compute the same thing, and a
//! per-adapter file of choices made by timing them.
//!
//! This module knows nothing of what is chosen: an op hands `TuneCache::choose` a key (the
//! problem), the names of its candidates and a way to pick one by measurement; the choice is
//! kept under the key, so later runs pay nothing.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How an op with several variants picks one.
#[derive(Clone)]
pub enum Tuning {
    /// The op's default for the adapter.
    Defaults,
    /// The variant of this name (tests and benchmarks compare the variants one by one).
    Pinned(&'static str),
    /// The fastest, timed on the adapter the first time a problem is met and kept in a file.
    Timed(Arc<TuneCache>),
}

/// The file's contents. A file written for another adapter, driver or version of resnet-wgpu
/// (whose kernels may differ) is timed again from scratch.
#[derive(Serialize, Deserialize)]
struct Table {
    adapter: String,
    version: String,
    /// Problem key -> the name of the chosen variant.
    choices: BTreeMap<String, String>,
}

impl Tuning {
    /// Seconds this process has spent timing variants (0 where nothing is timed).
    pub fn seconds(&self) -> f64 {
        match self {
            Tuning::Timed(cache) => cache.spent.lock().unwrap().as_secs_f64(),
            _ => 0.0,
        }
    }
}

pub struct TuneCache {
    file: PathBuf,
    table: Mutex<Table>,
    /// Time spent timing in this process, and how much it may spend: past the budget, new
    /// problems take their default untimed, and are timed by a later run.
    spent: Mutex<Duration>,
    budget: Duration,
    over_budget: AtomicBool,
}

/// The timing budget of a process, `RESNET_WGPU_TUNE_BUDGET` seconds or 60: tuning every shape of
/// a ResNet-50 training step on a GPU fits in it.
fn budget() -> Duration {
    let Ok(value) = std::env::var("RESNET_WGPU_TUNE_BUDGET") else { return Duration::from_secs(60) };
    match value.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds >= 0.0 => Duration::from_secs_f64(seconds),
        _ => {
            eprintln!("warning: RESNET_WGPU_TUNE_BUDGET={value} is not a number of seconds; the budget is 60 s");
            Duration::from_secs(60)
        }
    }
}

impl TuneCache {
    /// The file of an adapter's choices: `cache_dir()/autotune/<backend> <adapter> <driver>.json`.
    pub fn file_for(info: &wgpu::AdapterInfo) -> PathBuf {
        let name = format!("{:?} {} {} {}", info.backend, info.name, info.driver, info.driver_info);
        let name: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' { c } else { '-' }).collect();
        crate::paths::cache_dir().join("autotune").join(format!("{name}.json"))
    }

    /// The choices kept in `file` for this adapter; none if there is no such file. An unreadable
    /// one is said on stderr and replaced at the first new choice (it is a cache: nothing is lost).
    pub fn load(info: &wgpu::AdapterInfo, file: PathBuf) -> Self {
        let (adapter, version) = (super::describe(info), env!("CARGO_PKG_VERSION").to_string());
        let fresh = Table { adapter: adapter.clone(), version: version.clone(), choices: BTreeMap::new() };
        let table = match std::fs::read(&file) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => fresh,
            read => {
                match read.map_err(anyhow::Error::from).and_then(|bytes| Ok(serde_json::from_slice::<Table>(&bytes)?)) {
                    Ok(table) if table.adapter == adapter && table.version == version => table,
                    Ok(_) => fresh,
                    Err(e) => {
                        eprintln!("warning: ignoring the autotune file {}: {e}; timing again", file.display());
                        fresh
                    }
                }
            }
        };
        Self {
            file,
            table: Mutex::new(table),
            spent: Mutex::default(),
            budget: budget(),
            over_budget: AtomicBool::new(false),
        }
    }

    /// The same choices with another timing budget than `RESNET_WGPU_TUNE_BUDGET`'s.
    pub fn budgeted(self, budget: Duration) -> Self {
        Self { budget, ..self }
    }

    /// The choice kept for `key` if it is one of `candidates`, else `pick()`'s, kept in the file;
    /// past the budget the first candidate, kept nowhere. Choices are made one at a time.
    pub fn choose(&self, key: &str, candidates: &[&'static str], pick: impl FnOnce() -> &'static str) -> &'static str {
        let mut table = self.table.lock().unwrap();
        if let Some(&kept) = table.choices.get(key).and_then(|name| candidates.iter().find(|c| *c == name)) {
            return kept;
        }
        let mut spent = self.spent.lock().unwrap();
        if *spent >= self.budget {
            if !self.over_budget.swap(true, Ordering::Relaxed) {
                eprintln!(
                    "autotune: the {:.0} s budget is spent (RESNET_WGPU_TUNE_BUDGET); problems not yet timed run \
                     their default variant and are timed by a later run",
                    self.budget.as_secs_f64()
                );
            }
            return candidates[0];
        }
        if table.choices.is_empty() {
            eprintln!("autotune: timing the variants of each new problem, kept in {}", self.file.display());
        }
        let start = Instant::now();
        let choice = pick();
        *spent += start.elapsed();
        table.choices.insert(key.into(), choice.into());
        let written = serde_json::to_vec_pretty(&*table).map_err(anyhow::Error::from);
        if let Err(e) = written.and_then(|bytes| crate::paths::write_atomic(&self.file, &bytes)) {
            eprintln!("warning: autotune choices not kept: {e:#}");
        }
        choice
    }
}
