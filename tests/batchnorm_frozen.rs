//! The backward of batch norm with frozen running statistics (`--bn-eval`): the kernel against its
//! CPU twin on awkward shapes, plain, after a ReLU and in place, on every test adapter and batch
//! norm variant (a channel a workgroup, and in chunks); the CPU twin against central finite differences of the eval forward; a whole
//! frozen training step's gradients against finite differences of its loss.

mod common;

use common::{assert_close, bn_variant, bn_variants, f64s};
use resnet_wgpu::ops::batchnorm::{self, BatchnormParams};
use resnet_wgpu::ops::elementwise;
use resnet_wgpu::reference as cpu;
use resnet_wgpu::rng::Rng;

/// (N, C, H, W): H*W odd, a multiple of 4 (the vec4 kernel), one value a channel, many rows.
const CASES: [[usize; 4]; 5] = [[2, 3, 5, 7], [1, 6, 1, 1], [3, 67, 9, 9], [2, 3, 4, 20], [8000, 2, 3, 5]];

#[test]
fn frozen_batchnorm_backward_matches_cpu() {
    for gpu in bn_variants() {
        for (case, &[n, c, h, w]) in CASES.iter().enumerate() {
            let (shape, len) = ([n, c, h, w], n * c * h * w);
            let mut rng = Rng::new(700 + case as u64);
            let (inp_v, dout_v, after_v) = (rng.vec(len), rng.vec(len), rng.vec(len));
            let (weight_v, mean_v) = (rng.vec(c), rng.vec(c));
            let var_v: Vec<f32> = rng.vec(c).iter().map(|x| 1.5 + x).collect();
            let up = |shape: &[usize], v: &[f32]| gpu.upload("test input", shape, v).unwrap();
            let (inp, dout, after) = (up(&shape, &inp_v), up(&shape, &dout_v), up(&shape, &after_v));
            let (weight, mean, var) = (up(&[c], &weight_v), up(&[c], &mean_v), up(&[c], &var_v));
            let [dinp, masked] = [(); 2].map(|_| gpu.zeros("test output", &shape).unwrap());
            let [dweight, dbias, dweight_m, dbias_m] = [(); 4].map(|_| gpu.zeros("test output", &[c]).unwrap());
            let in_place = up(&shape, &inp_v);
            let mask = gpu.zeros("mask", &[elementwise::mask_words(len)]).unwrap();
            let backward = |dinp, dweight, dbias, inp, mask| {
                batchnorm::batchnorm_backward_frozen(
                    gpu, dinp, dweight, dbias, &dout, inp, &weight, &mean, &var, mask, None,
                )
                .unwrap()
            };
            let dispatches = [
                vec![elementwise::relu_mask(gpu, &mask, &after).unwrap()],
                backward(&dinp, &dweight, &dbias, &inp, None),
                backward(&masked, &dweight_m, &dbias_m, &inp, Some(&mask)),
                backward(&in_place, &dweight_m, &dbias_m, &in_place, Some(&mask)),
            ];
            gpu.run(&dispatches.iter().flatten().collect::<Vec<_>>()).unwrap();

            let params = BatchnormParams::for_input(&shape).unwrap();
            let (inp_c, weight_c, mean_c, var_c) = (f64s(&inp_v), f64s(&weight_v), f64s(&mean_v), f64s(&var_v));
            let expect = |dout: &[f64]| {
                let (mut dinp, mut dweight, mut dbias) = (vec![0.0; len], vec![0.0; c], vec![0.0; c]);
                cpu::batchnorm_backward_frozen(
                    &mut dinp,
                    &mut dweight,
                    &mut dbias,
                    dout,
                    &inp_c,
                    &weight_c,
                    &mean_c,
                    &var_c,
                    &params,
                );
                (dinp, dweight, dbias)
            };
            let (dinp_c, dweight_c, dbias_c) = expect(&f64s(&dout_v));
            // The ReLU after the BN: dout where the forward's output was positive.
            let dout_masked: Vec<f64> =
                dout_v.iter().zip(&after_v).map(|(&d, &a)| if a > 0.0 { d as f64 } else { 0.0 }).collect();
            let (dinp_m, dweight_mc, dbias_mc) = expect(&dout_masked);

            let what = |name: &str| format!("{name} {shape:?} {}", bn_variant(gpu));
            let read = |t| gpu.read::<f32>(t).unwrap();
            assert_close(&what("frozen dinp"), &read(&dinp), &dinp_c, 1e-5, 1e-5);
            assert_close(&what("frozen dweight"), &read(&dweight), &dweight_c, 1e-4, 1e-4);
            assert_close(&what("frozen dbias"), &read(&dbias), &dbias_c, 1e-4, 1e-4);
            assert_close(&what("frozen dinp after relu"), &read(&masked), &dinp_m, 1e-5, 1e-5);
            assert_close(&what("frozen dinp after relu, in place"), &read(&in_place), &dinp_m, 1e-5, 1e-5);
            assert_close(&what("frozen dweight after relu"), &read(&dweight_m), &dweight_mc, 1e-4, 1e-4);
            assert_close(&what("frozen dbias after relu"), &read(&dbias_m), &dbias_mc, 1e-4, 1e-4);
        }
    }
}

#[test]
fn frozen_batchnorm_backward_matches_finite_differences() {
    for (case, &[n, c, h, w]) in CASES[..3].iter().enumerate() {
        let mut rng = Rng::new(800 + case as u64);
        let len = n * c * h * w;
        let params = BatchnormParams::for_input(&[n, c, h, w]).unwrap();
        let (inp, weight, bias, dout) =
            (f64s(&rng.vec(len)), f64s(&rng.vec(c)), f64s(&rng.vec(c)), f64s(&rng.vec(len)));
        let (mean, var): (Vec<f64>, Vec<f64>) =
            (f64s(&rng.vec(c)), rng.vec(c).iter().map(|x| 1.5 + *x as f64).collect());
        let forward = |inp: &[f64], weight: &[f64], bias: &[f64]| {
            let mut out = vec![0.0; len];
            cpu::batchnorm_forward_eval(&mut out, inp, weight, bias, &mean, &var, &params);
            out
        };
        let (mut dinp, mut dweight, mut dbias) = (vec![0.0; len], vec![0.0; c], vec![0.0; c]);
        cpu::batchnorm_backward_frozen(&mut dinp, &mut dweight, &mut dbias, &dout, &inp, &weight, &mean, &var, &params);
        let h = 1e-6;
        let loss = |out: Vec<f64>| out.iter().zip(&dout).map(|(a, b)| a * b).sum::<f64>();
        for (what, x, analytic) in [("dinp", &inp, &dinp), ("dweight", &weight, &dweight), ("dbias", &bias, &dbias)] {
            for i in (0..x.len()).step_by((x.len() / 40).max(1)) {
                let at = |d: f64| {
                    let mut v = x.clone();
                    v[i] += d;
                    match what {
                        "dinp" => loss(forward(&v, &weight, &bias)),
                        "dweight" => loss(forward(&inp, &v, &bias)),
                        _ => loss(forward(&inp, &weight, &v)),
                    }
                };
                let numeric = (at(h) - at(-h)) / (2.0 * h);
                assert!(
                    (numeric - analytic[i]).abs() <= 1e-6 + 1e-5 * numeric.abs(),
                    "{what} element {i}: finite differences give {numeric}, the backward {}",
                    analytic[i]
                );
            }
        }
    }
}

/// A whole training step with frozen batch norm (ResNet-8 with option-B projections, so every kind
/// of BN backward runs): the gradients it leaves agree with central differences of the loss that
/// the evaluation forward gives, which normalises with the same running statistics.
#[test]
fn a_frozen_training_step_agrees_with_finite_differences_of_its_loss() {
    use resnet_wgpu::model::{Arch, ResNet, Shortcut};
    use resnet_wgpu::ops::sgd::Sgd;
    use resnet_wgpu::plan::{EvalStep, Statistics, TrainStep, Trained};

    // Batch norm a channel a workgroup, and in chunks (GPUs' way).
    for chunk in [None, Some(44)] {
        let gpu = &common::gpus()[0].with_bn_chunk(chunk);
        let model = ResNet::new(gpu, Arch::parse("resnet8", Shortcut::B).unwrap()).unwrap();
        model.init(gpu, 4);
        for (name, t) in model.buffers.names.iter().zip(&model.buffers.tensors) {
            let v: f32 = if name.ends_with("running_var") { 2.0 } else { 0.01 };
            gpu.write(t, &vec![v; t.len()]);
        }
        let (input, labels) = (Rng::new(9).vec(2 * 3 * 32 * 32), [3u32, 7]);
        let frozen = Trained { fc_only: false, statistics: Statistics::Running };
        // lr 0: the step leaves the gradients and keeps the weights.
        let mut step =
            TrainStep::new(gpu, &model, 2, Sgd { lr: 0.0, momentum: 0.0, weight_decay: 0.0 }, frozen).unwrap();
        gpu.write(&step.input, &input);
        gpu.write(&step.labels, &labels);
        step.run(gpu, 0, 0.0).unwrap();

        let eval = EvalStep::new(gpu, &model, 2).unwrap();
        gpu.write(&eval.input, &input);
        let loss = || {
            eval.run(gpu).unwrap();
            let logits: Vec<f32> = gpu.read(&eval.logits).unwrap();
            let per = |row: &[f32], label: u32| {
                let max = row.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
                max + row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln() - row[label as usize] as f64
            };
            logits.chunks(10).zip(labels).map(|(row, label)| per(row, label)).sum::<f64>() / 2.0
        };
        // Single weights: a bias shifts a whole channel across many ReLU kinks, which central
        // differences in f32 resolve poorly (the BN biases' gradients are checked kernel by kernel).
        let checks = [
            ("bn1.weight", 5),
            ("conv1.weight", 7),
            ("layer1.0.conv2.weight", 40),
            ("layer1.0.bn2.weight", 3),
            ("layer2.0.conv1.weight", 11),
            ("layer2.0.downsample.0.weight", 4),
            ("layer2.0.downsample.1.weight", 2),
            ("layer3.0.bn1.weight", 1),
            ("fc.weight", 30),
        ];
        let h = 2.5e-3f32;
        for (name, i) in checks {
            let tensor = model.params.get(name);
            let analytic = gpu.read::<f32>(model.grads.get(name)).unwrap()[i] as f64;
            let values: Vec<f32> = gpu.read(tensor).unwrap();
            let at = |d: f32| {
                let mut v = values.clone();
                v[i] += d;
                gpu.write(tensor, &v);
                loss()
            };
            let numeric = (at(h) - at(-h)) / (2.0 * h as f64);
            gpu.write(tensor, &values);
            assert!(
                (numeric - analytic).abs() <= 0.05 * analytic.abs() + 2e-5,
                "{name}[{i}]: finite differences give {numeric}, the frozen step {analytic} (batch norm chunks {chunk:?})"
            );
        }
    }
}
