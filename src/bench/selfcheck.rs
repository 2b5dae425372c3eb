//! Before timing, the adapter's kernels and a whole ResNet-8 step against the CPU reference.

use super::submit_step;
use crate::ops::sgd::Sgd;

use crate::ops::batchnorm::BatchnormParams;
use crate::ops::conv::ConvParams;
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};

use crate::checkpoint::Checkpoint;
use crate::gpu::Gpu;
use crate::kernels::Dispatch;
use crate::model::{Arch, ConvSpec, ResNet, STEM_POOL, Shortcut, ShortcutSpec};
use crate::ops::{batchnorm, conv, elementwise, linear, pool};
use crate::plan::{InferStep, TrainStep, Trained};
use crate::reference;
use crate::rng::Rng;

/// Checks, on `gpu`, the three conv kernels and the training BN kernels on small awkward shapes,
/// then a ResNet-8 training step's logits and loss and a folded inference step's logits at batch 2,
/// all against `reference` (f64). Fails with the first disagreement.
pub fn self_check(gpu: &Gpu) -> Result<()> {
    let mut rng = Rng::new(7);
    // (N, C, H, W, K, R, stride, pad): a strided 3x3 on odd sizes, a 1x1 with 17 channels.
    for [n, c, h, w, k, r, stride, pad] in [[2, 5, 7, 6, 6, 3, 2, 1], [3, 17, 5, 5, 9, 1, 1, 0]] {
        check_conv(gpu, &mut rng, [n, c, h, w], [k, c, r, r], stride, pad)?;
    }
    check_batchnorm(gpu, &mut rng, [3, 5, 4, 3])?;
    check_resnet8(gpu, &mut rng)
}

pub(super) fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// |gpu - cpu| <= 1e-4 * max(1, max |cpu|) everywhere, else an error naming the first element off.
pub(super) fn check_close(what: &str, gpu: &[f32], cpu: &[f64]) -> Result<()> {
    ensure!(gpu.len() == cpu.len(), "{what}: {} values from the GPU, {} from the CPU", gpu.len(), cpu.len());
    let bound = 1e-4 * cpu.iter().fold(1.0f64, |m, x| m.max(x.abs()));
    match reference::first_off(gpu, cpu, bound, 0.0) {
        None => Ok(()),
        Some(i) => bail!("{what}: element {i} is {} on the GPU, {} on the CPU (bound {bound:e})", gpu[i], cpu[i]),
    }
}

fn check_conv(gpu: &Gpu, rng: &mut Rng, inp: [usize; 4], weight: [usize; 4], stride: usize, pad: usize) -> Result<()> {
    let params = ConvParams::new(&inp, &weight, stride, pad)?;
    let out_shape = params.out_shape();
    let (x, wt, dy) =
        (rng.vec(inp.iter().product()), rng.vec(weight.iter().product()), rng.vec(out_shape.iter().product()));
    let (x_t, w_t, dy_t) = (
        gpu.upload("check inp", &inp, &x)?,
        gpu.upload("check weight", &weight, &wt)?,
        gpu.upload("check dout", &out_shape, &dy)?,
    );
    let (out, dinp, dweight) =
        (gpu.zeros("check out", &out_shape)?, gpu.zeros("check dinp", &inp)?, gpu.zeros("check dweight", &weight)?);
    let (panel, layout) = conv::panel_for(gpu, &params, &w_t, false)?.unzip();
    let (panel_t, layout_t) = conv::panel_for(gpu, &params, &w_t, true)?.unzip();
    let mut dispatches: Vec<Dispatch> = layout.into_iter().chain(layout_t).collect();
    dispatches.extend([
        conv::conv2d_forward(gpu, &out, &x_t, &w_t, panel.as_ref(), stride, pad)?,
        conv::conv2d_backward_input(gpu, &dinp, &dy_t, &w_t, panel_t.as_ref(), stride, pad, false)?,
    ]);
    dispatches.extend(conv::conv2d_backward_weight(gpu, &dweight, &dy_t, &x_t, None, stride, pad)?);
    gpu.run(&dispatches.iter().collect::<Vec<_>>())?;
    let (x, wt, dy) = (f64s(&x), f64s(&wt), f64s(&dy));
    let mut want = [vec![0.0; out.len()], vec![0.0; dinp.len()], vec![0.0; dweight.len()]];
    reference::conv2d_forward(&mut want[0], &x, &wt, &params);
    reference::conv2d_backward_input(&mut want[1], &dy, &wt, &params);
    reference::conv2d_backward_weight(&mut want[2], &dy, &x, &params);
    let shape = format!("input {inp:?}, weight {weight:?}, stride {stride}, pad {pad}");
    for ((name, tensor), want) in
        [("conv2d_forward", &out), ("conv2d_backward_input", &dinp), ("conv2d_backward_weight", &dweight)]
            .into_iter()
            .zip(&want)
    {
        check_close(&format!("{name} ({shape})"), &gpu.read(tensor)?, want)?;
    }
    Ok(())
}

fn check_batchnorm(gpu: &Gpu, rng: &mut Rng, shape: [usize; 4]) -> Result<()> {
    let [n, c, h, w] = shape;
    let params = BatchnormParams::for_input(&shape)?;
    let (x, dy, weight, bias) = (rng.vec(n * c * h * w), rng.vec(n * c * h * w), rng.vec(c), rng.vec(c));
    let (running_mean, running_var) = (rng.vec(c), vec![1.5f32; c]);
    let up = |name: &str, shape: &[usize], v: &[f32]| gpu.upload(name, shape, v);
    let (x_t, dy_t, w_t, b_t) =
        (up("x", &shape, &x)?, up("dy", &shape, &dy)?, up("w", &[c], &weight)?, up("b", &[c], &bias)?);
    let (rm_t, rv_t) = (up("rm", &[c], &running_mean)?, up("rv", &[c], &running_var)?);
    let (out, mean, rstd) = (gpu.zeros("out", &shape)?, gpu.zeros("mean", &[c])?, gpu.zeros("rstd", &[c])?);
    let (dinp, dweight, dbias) = (gpu.zeros("dinp", &shape)?, gpu.zeros("dweight", &[c])?, gpu.zeros("dbias", &[c])?);
    let forward =
        batchnorm::batchnorm_forward_train(gpu, &out, &mean, &rstd, &rm_t, &rv_t, &x_t, &w_t, &b_t, None, None, false)?;
    let backward =
        batchnorm::batchnorm_backward(gpu, &dinp, &dweight, &dbias, &dy_t, &x_t, &w_t, &mean, &rstd, None, None)?;
    gpu.run(&forward.iter().chain(&backward).collect::<Vec<_>>())?;
    let (x, dy, weight, bias) = (f64s(&x), f64s(&dy), f64s(&weight), f64s(&bias));
    let (mut rm, mut rv) = (f64s(&running_mean), f64s(&running_var));
    let (mut want_out, mut want_mean, mut want_rstd) = (vec![0.0; x.len()], vec![0.0; c], vec![0.0; c]);
    reference::batchnorm_forward_train(
        &mut want_out,
        &mut want_mean,
        &mut want_rstd,
        &mut rm,
        &mut rv,
        &x,
        &weight,
        &bias,
        &params,
    );
    let (mut want_dinp, mut want_dweight, mut want_dbias) = (vec![0.0; x.len()], vec![0.0; c], vec![0.0; c]);
    reference::batchnorm_backward(
        &mut want_dinp,
        &mut want_dweight,
        &mut want_dbias,
        &dy,
        &x,
        &weight,
        &want_mean,
        &want_rstd,
        &params,
    );
    for (what, tensor, want) in [
        ("batchnorm_forward_train out", &out, &want_out),
        ("batchnorm_forward_train running_var", &rv_t, &rv),
        ("batchnorm_backward dinp", &dinp, &want_dinp),
        ("batchnorm_backward dweight", &dweight, &want_dweight),
        ("batchnorm_backward dbias", &dbias, &want_dbias),
    ] {
        check_close(&format!("{what} (input {shape:?})"), &gpu.read(tensor)?, want)?;
    }
    Ok(())
}

/// A ResNet-8 (option A) at batch 2 with random BN parameters and statistics: the training plan's
/// logits and loss, and the folded inference plan's logits, against `reference_forward`.
fn check_resnet8(gpu: &Gpu, rng: &mut Rng) -> Result<()> {
    let arch = Arch::cifar("resnet8", Shortcut::A)?;
    let batch = 2;
    let model = ResNet::new(gpu, arch.clone())?;
    model.init(gpu, 3);
    let mut values = std::collections::HashMap::new();
    for (name, shape) in arch.parameters().into_iter().chain(arch.buffers()) {
        let len: usize = shape.iter().product();
        let v: Vec<f32> = match name.rsplit('.').next() {
            Some("running_var") => (0..len).map(|_| 0.5 + rng.uniform() as f32).collect(),
            Some("running_mean" | "bias") => rng.vec(len).iter().map(|x| 0.2 * x).collect(),
            Some("weight") if shape.len() == 1 => (0..len).map(|_| 0.5 + rng.uniform() as f32).collect(),
            _ => continue,
        };
        values.insert(name, v);
    }
    model.load(gpu, &values)?;
    let ck = model.checkpoint(gpu, false)?;
    let images = rng.vec(batch * 3 * 32 * 32);
    let labels: Vec<u32> = (0..batch).map(|_| rng.below(arch.classes) as u32).collect();

    let step = TrainStep::new(gpu, &model, batch, Sgd { lr: 0.1, momentum: 0.9, weight_decay: 1e-4 }, Trained::ALL)?;
    gpu.write(&step.input, &images);
    gpu.write(&step.labels, &labels);
    submit_step(gpu, &step.dispatches, None)?;
    let want = reference_forward(&arch, &ck, &f64s(&images), batch, true)?;
    check_close("ResNet-8 training step logits", &gpu.read(&step.logits)?, &want)?;
    let mut dlogits = vec![0.0; want.len()];
    let (loss, _) = reference::softmax_cross_entropy(&mut dlogits, &want, &labels, arch.classes);
    check_close("ResNet-8 training step loss", &gpu.read(&step.loss)?, &[loss])?;

    let infer = InferStep::new(gpu, &arch, &ck, Path::new("self-check weights"), batch)?;
    gpu.write(&infer.input, &images);
    submit_step(gpu, &infer.dispatches, None)?;
    let want = reference_forward(&arch, &ck, &f64s(&images), batch, false)?;
    check_close("ResNet-8 folded inference logits", &gpu.read(&infer.logits)?, &want)
}

/// The logits of `arch` computed on the CPU with the `reference` twins from `ck`'s tensors;
/// `train` normalises with the batch's statistics.
fn reference_forward(arch: &Arch, ck: &Checkpoint, images: &[f64], batch: usize, train: bool) -> Result<Vec<f64>> {
    let get = |name: &str| -> Result<Vec<f64>> {
        Ok(f64s(&ck.tensors.get(name).with_context(|| format!("the checkpoint lacks {name}"))?.1))
    };
    let conv_bn = |x: &[f64], shape: [usize; 4], spec: &ConvSpec| -> Result<(Vec<f64>, [usize; 4])> {
        let weight = get(&format!("{}.weight", spec.conv))?;
        let weight_shape = [spec.out, spec.inp, spec.kernel, spec.kernel];
        let params = ConvParams::new(&shape, &weight_shape, spec.stride, spec.pad())?;
        let out_shape: [usize; 4] = params.out_shape().try_into().expect("a conv output has four dimensions");
        let mut y = vec![0.0; out_shape.iter().product()];
        reference::conv2d_forward(&mut y, x, &weight, &params);
        let k = out_shape[1];
        let bn_params = BatchnormParams::for_input(&out_shape)?;
        let bn = |what: &str| get(&format!("{}.{what}", spec.bn));
        let (weight, bias) = (bn("weight")?, bn("bias")?);
        let (mut rm, mut rv) = (bn("running_mean")?, bn("running_var")?);
        let mut out = vec![0.0; y.len()];
        if train {
            let (mut mean, mut rstd) = (vec![0.0; k], vec![0.0; k]);
            reference::batchnorm_forward_train(
                &mut out, &mut mean, &mut rstd, &mut rm, &mut rv, &y, &weight, &bias, &bn_params,
            );
        } else {
            reference::batchnorm_forward_eval(&mut out, &y, &weight, &bias, &rm, &rv, &bn_params);
        }
        Ok((out, out_shape))
    };
    let relu = |x: Vec<f64>| x.into_iter().map(|v| v.max(0.0)).collect::<Vec<f64>>();

    let (x, mut shape) = conv_bn(images, [batch, 3, arch.image, arch.image], &arch.stem())?;
    let mut x = relu(x);
    if arch.imagenet {
        let (r, stride, pad) = STEM_POOL;
        let params = pool::PoolParams::new(&shape, r, stride, pad)?;
        let pooled_shape: [usize; 4] = params.out_shape().try_into().expect("a pool output has four dimensions");
        let len = pooled_shape.iter().product();
        let (mut pooled, mut indices) = (vec![0.0; len], vec![0; len]);
        reference::maxpool_forward(&mut pooled, &mut indices, &x, &params);
        (x, shape) = (pooled, pooled_shape);
    }
    for block in arch.blocks() {
        let (mut y, mut y_shape) = (x.clone(), shape);
        for (j, conv) in block.convs.iter().enumerate() {
            let (out, out_shape) = conv_bn(&y, y_shape, conv)?;
            let last = j + 1 == block.convs.len();
            (y, y_shape) = (if last { out } else { relu(out) }, out_shape);
        }
        match &block.shortcut {
            ShortcutSpec::None => {}
            ShortcutSpec::Identity => reference::add(&mut y, &x),
            ShortcutSpec::A => {
                let params = elementwise::ShortcutParams::new(&shape, &y_shape)?;
                let mut out = vec![0.0; y.len()];
                reference::shortcut_a_forward(&mut out, &x, &params);
                reference::add(&mut y, &out);
            }
            ShortcutSpec::B(projection) => reference::add(&mut y, &conv_bn(&x, shape, projection)?.0),
        }
        (x, shape) = (relu(y), y_shape);
    }
    let [n, c, h, w] = shape;
    let mut pooled = vec![0.0; n * c];
    reference::avgpool_forward(&mut pooled, &x, &pool::AvgpoolParams::new(&[n, c, h, w], &[n, c])?);
    let (fc_shape, fc_weight) = &ck.tensors["fc.weight"];
    let mut logits = vec![0.0; n * fc_shape[0]];
    let params = linear::LinearParams::new(&[n, c], fc_shape)?;
    reference::linear_forward(&mut logits, &pooled, &f64s(fc_weight), &get("fc.bias")?, &params);
    Ok(logits)
}
