//! Which conv path runs each pass of each layer shape: a pin, else the autotune's choice where it
//! is on, else the adapter's default. The autotune times every path the adapter can run (on the
//! tiled path every tile of `select::TILES` it fits) the first time a plan asks for a pass of a
//! shape, and keeps the fastest in the adapter's `TuneCache`.
//!
//! One kernel shape is not best everywhere: on lavapipe a barrier costs more than the loads it
//! saves, on GPUs workgroup tiles are what makes a conv fast, and which one wins a given layer
//! depends on the hardware. Every path computes the same thing and passes the same tests; a path
//! whose result here differs from the adapter default's is reported and not used.

use anyhow::{Result, bail};

use super::ConvParams;
use super::select::{ConvPass, ConvPath, SLICE_POSITIONS};
use crate::gpu::timing::submit;
use crate::gpu::{Gpu, Tensor, Tuning};
use crate::kernels::Dispatch;
use crate::rng::Rng;

/// The path family (or tile) every conv runs on by `RESNET_WGPU_CONV`, if set.
fn pinned_by_env() -> Option<String> {
    std::env::var("RESNET_WGPU_CONV").ok().filter(|name| !name.is_empty())
}

/// The output rows, columns and independent GEMMs of `pass` of the conv `params` (a weight
/// gradient's taps and about as many slices as `weight_grad` splits it into).
fn gemm_shape(params: &ConvParams, pass: ConvPass) -> [usize; 3] {
    let [n, c, h, w, k, r, s, p, q] =
        [params.n, params.c, params.h, params.w, params.k, params.r, params.s, params.p, params.q].map(|x| x as usize);
    match pass {
        ConvPass::Forward => [k, n * p * q, 1],
        ConvPass::InputGradient => [c, n * h * w, 1],
        ConvPass::WeightGradient => [k, c, r * s * (n * p * q).div_ceil(SLICE_POSITIONS)],
    }
}

/// The path that runs `pass` of the conv `params`: a pin (`Tuning::Pinned`, else
/// `RESNET_WGPU_CONV`), else the autotune's choice where it is on, else the adapter's default.
pub fn path(gpu: &Gpu, params: &ConvParams, pass: ConvPass) -> Result<ConvPath> {
    let shape = gemm_shape(params, pass);
    if let Tuning::Pinned(name) = &gpu.tuning {
        return ConvPath::named(gpu, name, "pinned conv path", shape);
    }
    if let Some(name) = pinned_by_env() {
        return ConvPath::named(gpu, &name, &format!("RESNET_WGPU_CONV={name}"), shape);
    }
    let [rows, columns, depth] = shape;
    let candidates = ConvPath::candidates(gpu, rows, columns, depth);
    match &gpu.tuning {
        Tuning::Timed(cache) => {
            let names: Vec<&'static str> = candidates.iter().map(|p| p.name()).collect();
            let chosen = cache.choose(&key(params, pass), &names, || fastest(gpu, params, pass, &candidates).name());
            Ok(*candidates.iter().find(|p| p.name() == chosen).expect("the cache chooses among the candidates"))
        }
        _ => Ok(candidates[0]),
    }
}

/// `autotune` where the paths are timed per layer shape, else the path family (or tile) every
/// conv runs on.
pub fn choice(gpu: &Gpu) -> Result<String> {
    Ok(match (&gpu.tuning, pinned_by_env()) {
        (Tuning::Pinned(name), _) => name.to_string(),
        (_, Some(name)) => name,
        (Tuning::Timed(_), None) => "autotune".into(),
        (Tuning::Defaults, None) => ConvPath::families(gpu)[0].into(),
    })
}

/// The key of `pass` of the conv `params` in the adapter's choices, e.g.
/// `forward N8 C16 H32 W32 K16 R3 S3 s1 p1`.
fn key(params: &ConvParams, pass: ConvPass) -> String {
    let ConvParams { n, c, h, w, k, r, s, stride, pad, .. } = *params;
    format!("{} N{n} C{c} H{h} W{w} K{k} R{r} S{s} s{stride} p{pad}", pass.name())
}

/// The fastest of the `candidates` for `pass` of the conv `params`: each runs once to compile
/// and warm up, once more to size a batch of runs lasting about 2 ms, then three such batches;
/// the median counts. A path that fails to plan the pass, whose result differs from the default
/// path's (the first candidate) by more than 1e-3 of its largest value, or whose single run takes
/// over twice the best median so far, drops out. The default wins if nothing else runs.
fn fastest(gpu: &Gpu, params: &ConvParams, pass: ConvPass, candidates: &[ConvPath]) -> ConvPath {
    let mut best: Option<(f64, ConvPath)> = None;
    let mut default: Option<Vec<f32>> = None;
    // The operands, made once for every candidate (each pass writes only its result, which it
    // does not read).
    let operands = operands(&gpu.detached(Tuning::Defaults), params);
    for &path in candidates {
        let timed = (|| -> Result<Option<f64>> {
            let gpu = gpu.detached(Tuning::Pinned(path.name()));
            let operands = operands.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))?;
            let (dispatches, result) = prepare(&gpu, params, pass, operands)?;
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
            let runs = ((0.002 / once).ceil() as usize).clamp(1, 64);
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
    best.map_or(candidates[0], |(_, path)| path)
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

/// Random operands of the conv `params`: its input, weight and output.
fn operands(gpu: &Gpu, params: &ConvParams) -> Result<[Tensor; 3]> {
    let [n, c, h, w, k, r, s, p, q] =
        [params.n, params.c, params.h, params.w, params.k, params.r, params.s, params.p, params.q].map(|x| x as usize);
    let mut rng = Rng::new(1);
    let mut random = |shape: &[usize]| gpu.upload("autotune operand", shape, &rng.vec(shape.iter().product()));
    Ok([random(&[n, c, h, w])?, random(&[k, c, r, s])?, random(&[n, k, p, q])?])
}

/// The dispatches of `pass` of the conv `params` on the `operands`, with the panel layout
/// where the kernel reads one (a training step lays it out before every use), and the tensor
/// they write.
fn prepare(
    gpu: &Gpu,
    params: &ConvParams,
    pass: ConvPass,
    [inp, weight, out]: &[Tensor; 3],
) -> Result<(Vec<Dispatch>, Tensor)> {
    let (inp, weight, out) = (inp.clone(), weight.clone(), out.clone());
    let (stride, pad) = (params.stride as usize, params.pad as usize);
    let transposed = pass == ConvPass::InputGradient;
    let (panel, layout) = match pass {
        ConvPass::WeightGradient => (None, None),
        _ => super::panel_for(gpu, params, &weight, transposed)?.unzip(),
    };
    let mut dispatches: Vec<Dispatch> = layout.into_iter().collect();
    let result = match pass {
        ConvPass::Forward => {
            dispatches.push(super::conv2d_forward(gpu, &out, &inp, &weight, panel.as_ref(), stride, pad)?);
            out
        }
        ConvPass::InputGradient => {
            dispatches.push(super::conv2d_backward_input(
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
            dispatches.extend(super::conv2d_backward_weight(gpu, &weight, &out, &inp, None, stride, pad)?);
            weight
        }
    };
    Ok((dispatches, result))
}

/// Wall-clock seconds of `runs` runs of the dispatches in one pass, from submission to completion.
fn seconds(gpu: &Gpu, dispatches: &[Dispatch], runs: usize) -> Result<f64> {
    let submitted = submit(gpu, 1, None, |_, pass| {
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
