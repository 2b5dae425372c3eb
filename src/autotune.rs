//! Which conv path (`ConvPath`) runs each pass of each layer shape, chosen by timing them on the
//! adapter the first time a plan asks, and kept in a file per adapter and driver.
//!
//! One kernel shape is not best everywhere: on lavapipe a barrier costs more than the loads it
//! saves, on GPUs workgroup tiles are what makes a conv fast, and which one wins a given layer
//! depends on the hardware. Plans ask `Gpu::conv_path_for` at plan time; the first ask for a
//! (pass, shape) times every path the adapter can run on operands of that shape and keeps the
//! fastest, so steps pay nothing. Every path computes the same thing and passes the same tests;
//! a path whose result there differs from the adapter default's is reported and not used.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use crate::gpu::{ConvPath, Gpu, Tensor};
use crate::kernels::Dispatch;
use crate::layers::{self, ConvParams};
use crate::rng::Rng;

/// The three passes of a conv, timed apart: a path may win one and lose another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvPass {
    Forward,
    /// Timed writing the gradient (not adding it to one, as a projection shortcut's does).
    InputGradient,
    WeightGradient,
}

impl ConvPass {
    pub fn name(self) -> &'static str {
        match self {
            ConvPass::Forward => "forward",
            ConvPass::InputGradient => "input gradient",
            ConvPass::WeightGradient => "weight gradient",
        }
    }
}

/// The entry of `pass` of the conv `params` in the table, e.g. `forward N8 C16 H32 W32 K16 R3 S3 s1 p1`.
fn key(params: &ConvParams, pass: ConvPass) -> String {
    let ConvParams { n, c, h, w, k, r, s, stride, pad, .. } = *params;
    format!("{} N{n} C{c} H{h} W{w} K{k} R{r} S{s} s{stride} p{pad}", pass.name())
}

/// The file of an adapter's choices: `cache_dir()/autotune/<backend> <adapter> <driver>.json`.
pub fn cache_file(info: &wgpu::AdapterInfo) -> PathBuf {
    let name = format!("{:?} {} {} {}", info.backend, info.name, info.driver, info.driver_info);
    let name: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' { c } else { '-' }).collect();
    crate::infer::cache_dir().join("autotune").join(format!("{name}.json"))
}

/// The file's contents. A file written for another adapter, driver or version of resnet-wgpu
/// (whose kernels may differ) is timed again from scratch.
#[derive(Serialize, Deserialize)]
struct Table {
    adapter: String,
    version: String,
    /// `key` -> `ConvPath::name`.
    paths: BTreeMap<String, String>,
}

/// What identifies the kernels a table's timings hold for.
fn identity(info: &wgpu::AdapterInfo) -> (String, String) {
    (crate::gpu::describe(info), env!("CARGO_PKG_VERSION").to_string())
}

pub struct Autotune {
    file: PathBuf,
    table: Mutex<Table>,
}

impl Autotune {
    /// The choices kept in `file` for this adapter; none if there is no such file. An unreadable
    /// one is said on stderr and replaced at the first new choice (it is a cache: nothing is lost).
    pub fn load(info: &wgpu::AdapterInfo, file: PathBuf) -> Self {
        let (adapter, version) = identity(info);
        let fresh = Table { adapter: adapter.clone(), version: version.clone(), paths: BTreeMap::new() };
        let table = match std::fs::read(&file) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => fresh,
            read => match read
                .map_err(anyhow::Error::from)
                .and_then(|bytes| Ok(serde_json::from_slice::<Table>(&bytes)?))
            {
                Ok(table) if table.adapter == adapter && table.version == version => table,
                Ok(_) => fresh,
                Err(e) => {
                    eprintln!("warning: ignoring the autotune file {}: {e}; timing the convs again", file.display());
                    fresh
                }
            },
        };
        Self { file, table: Mutex::new(table) }
    }

    /// The path that runs `pass` of the conv `params` on `gpu`: the kept choice, else the fastest
    /// of `gpu.conv_paths()` now, kept in the file.
    pub fn path(&self, gpu: &Gpu, params: &ConvParams, pass: ConvPass) -> ConvPath {
        let key = key(params, pass);
        let mut table = self.table.lock().unwrap();
        let paths = gpu.conv_paths();
        if let Some(path) = table.paths.get(&key).and_then(|name| paths.iter().find(|p| p.name() == name)) {
            return *path;
        }
        if table.paths.is_empty() {
            eprintln!("autotune: timing the conv paths of each new layer shape, kept in {}", self.file.display());
        }
        let path = fastest(gpu, params, pass);
        table.paths.insert(key, path.name().into());
        let written = serde_json::to_vec_pretty(&*table).map_err(anyhow::Error::from);
        if let Err(e) = written.and_then(|bytes| crate::checkpoint::write_atomic(&self.file, &bytes)) {
            eprintln!("warning: autotune choices not kept: {e:#}");
        }
        path
    }
}

/// The fastest path for `pass` of the conv `params`: each runs once to compile and warm up, once
/// more to size a batch of runs lasting about 5 ms, then three such batches; the median counts.
/// A path that fails to plan the pass, whose result differs from the default path's (the first
/// of `conv_paths`) by more than 1e-3 of its largest value, or whose single run takes over twice
/// the best median so far, drops out. The adapter's default wins if nothing else runs.
fn fastest(gpu: &Gpu, params: &ConvParams, pass: ConvPass) -> ConvPath {
    let mut best: Option<(f64, ConvPath)> = None;
    let mut default: Option<Vec<f32>> = None;
    for path in gpu.conv_paths() {
        let timed = (|| -> Result<Option<f64>> {
            let gpu = gpu.timing_sibling(path);
            let (dispatches, result) = prepare(&gpu, params, pass)?;
            seconds(&gpu, &dispatches, 1)?;
            let values = gpu.read::<f32>(&result)?;
            match &default {
                None => default = Some(values),
                Some(want) => agree(want, &values)?,
            }
            let once = seconds(&gpu, &dispatches, 1)?;
            if best.is_some_and(|(fastest, _)| once > 2.0 * fastest) {
                return Ok(None);
            }
            let runs = ((0.005 / once).ceil() as usize).clamp(1, 64);
            let mut times =
                (0..3).map(|_| Ok(seconds(&gpu, &dispatches, runs)? / runs as f64)).collect::<Result<Vec<f64>>>()?;
            times.sort_by(f64::total_cmp);
            Ok(Some(times[1]))
        })();
        match timed {
            Ok(Some(time)) if best.is_none_or(|(fastest, _)| time < fastest) => best = Some((time, path)),
            Ok(_) => {}
            Err(e) => eprintln!("autotune: the {} path is not used for {}: {e:#}", path.name(), key(params, pass)),
        }
    }
    best.map_or(gpu.conv_path, |(_, path)| path)
}

/// Ok if `got` is within 1e-3 of the largest |value| of `want` everywhere (the paths sum in
/// different orders), else an error naming the first value off.
fn agree(want: &[f32], got: &[f32]) -> Result<()> {
    let bound = 1e-3 * want.iter().fold(f32::MIN_POSITIVE, |m, x| m.max(x.abs()));
    match want.iter().zip(got).position(|(w, g)| (w - g).abs() > bound || g.is_nan()) {
        None => Ok(()),
        Some(i) => bail!("its value {i} is {}, the default path's {} (bound {bound:e})", got[i], want[i]),
    }
}

/// The dispatches of `pass` of the conv `params` on random operands, with the panel layout
/// where the kernel reads one (a training step lays it out before every use), and the tensor
/// they write.
fn prepare(gpu: &Gpu, params: &ConvParams, pass: ConvPass) -> Result<(Vec<Dispatch>, Tensor)> {
    let [n, c, h, w, k, r, s, p, q] =
        [params.n, params.c, params.h, params.w, params.k, params.r, params.s, params.p, params.q].map(|x| x as usize);
    let mut rng = Rng::new(1);
    let mut random = |shape: &[usize]| gpu.upload("autotune operand", shape, &rng.vec(shape.iter().product()));
    let (inp, weight, out) = (random(&[n, c, h, w])?, random(&[k, c, r, s])?, random(&[n, k, p, q])?);
    let (stride, pad) = (params.stride as usize, params.pad as usize);
    let transposed = pass == ConvPass::InputGradient;
    let (panel, layout) = match pass {
        ConvPass::WeightGradient => (None, None),
        _ => layers::panel_for(gpu, params, &weight, transposed)?.unzip(),
    };
    let mut dispatches: Vec<Dispatch> = layout.into_iter().collect();
    let result = match pass {
        ConvPass::Forward => {
            dispatches.push(layers::conv2d_forward(gpu, &out, &inp, &weight, panel.as_ref(), stride, pad)?);
            out
        }
        ConvPass::InputGradient => {
            dispatches.push(layers::conv2d_backward_input(
                gpu,
                &inp,
                &out,
                &weight,
                panel.as_ref(),
                stride,
                pad,
                false,
            )?);
            inp
        }
        ConvPass::WeightGradient => {
            dispatches.extend(layers::conv2d_backward_weight(gpu, &weight, &out, &inp, None, stride, pad)?);
            weight
        }
    };
    Ok((dispatches, result))
}

/// Wall-clock seconds of `runs` runs of the dispatches in one pass, from submission to completion
/// (`bench::submit` without timestamps).
fn seconds(gpu: &Gpu, dispatches: &[Dispatch], runs: usize) -> Result<f64> {
    let submitted = crate::bench::submit(gpu, 1, None, |_, pass| {
        for _ in 0..runs {
            dispatches.iter().for_each(|d| d.record(pass));
        }
    })?;
    Ok(submitted.ms[0] / 1e3)
}

#[cfg(test)]
mod tests {
    use super::agree;

    #[test]
    fn paths_agree_within_a_thousandth_of_the_largest_value() {
        assert!(agree(&[1.0, -2.0], &[1.0019, -2.0]).is_ok());
        let error = agree(&[1.0, -2.0], &[1.0, -2.01]).unwrap_err().to_string();
        assert_eq!(error, "its value 1 is -2.01, the default path's -2 (bound 2e-3)");
        assert!(agree(&[1.0], &[f32::NAN]).is_err());
    }
}
