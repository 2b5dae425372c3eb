//! Every kernel against its CPU twin (f64) on seeded random data with awkward shapes, on every test
//! adapter; every CPU backward against central finite differences of its CPU forward.

mod common;

use common::{
    assert_close, bn_variant, bn_variants, conv_variants, f64s, gpus, per_element_variant, per_element_variants,
};
use resnet_wgpu::gpu::{Gpu, Tensor};
use resnet_wgpu::kernels::{self, Kernel};
use resnet_wgpu::ops::batchnorm::{self, BatchnormParams};
use resnet_wgpu::ops::conv::select::{ConvPass, ConvPath, TILES};
use resnet_wgpu::ops::conv::{self, ConvParams};
use resnet_wgpu::ops::elementwise::{self, ShortcutParams};
use resnet_wgpu::ops::linear::{self, LinearParams};
use resnet_wgpu::ops::pool::{self, AvgpoolParams, PoolParams};
use resnet_wgpu::ops::sgd;
use resnet_wgpu::reference as cpu;
use resnet_wgpu::rng::Rng;

fn upload(gpu: &Gpu, shape: &[usize], data: &[f32]) -> Tensor {
    gpu.upload("test input", shape, data).unwrap()
}

fn zeros(gpu: &Gpu, shape: &[usize]) -> Tensor {
    gpu.zeros("test output", shape).unwrap()
}

fn read(gpu: &Gpu, t: &Tensor) -> Vec<f32> {
    gpu.read(t).unwrap()
}

/// Checks `analytic` = d/dx sum(f(x) * dout) by central differences at up to 40 positions.
fn finite_differences(what: &str, f: impl Fn(&[f64]) -> Vec<f64>, x: &[f64], dout: &[f64], analytic: &[f64]) {
    let h = 1e-6;
    let loss = |x: &[f64]| f(x).iter().zip(dout).map(|(a, b)| a * b).sum::<f64>();
    let step = (x.len() / 40).max(1);
    for i in (0..x.len()).step_by(step) {
        let mut xp = x.to_vec();
        let mut xm = x.to_vec();
        xp[i] += h;
        xm[i] -= h;
        let numeric = (loss(&xp) - loss(&xm)) / (2.0 * h);
        assert!(
            (numeric - analytic[i]).abs() <= 1e-6 + 1e-5 * numeric.abs(),
            "{what}: element {i}: finite differences give {numeric}, backward gives {}",
            analytic[i]
        );
    }
}

// (N, C, H, W, K, R, S, stride, pad): odd sizes, channels not a multiple of 4, 1x1/3x3/7x7,
// stride 2, batch 1 and larger, and grids of many workgroups in both directions.
const CONV_CASES: &[[usize; 9]] = &[
    [2, 3, 11, 13, 5, 3, 3, 1, 1],
    [1, 6, 9, 7, 10, 1, 1, 2, 0],
    [2, 5, 15, 17, 7, 7, 7, 2, 3],
    [3, 17, 8, 9, 33, 3, 3, 2, 1],
    [1, 70, 7, 5, 67, 3, 3, 1, 1],
    [5, 8, 20, 19, 16, 3, 3, 1, 1],
    [2, 4, 10, 11, 6, 3, 3, 3, 1],
    // Wide enough that conv2d_backward_weight's direct path vectorises over input channels:
    // with 4 reduction slices, and (case 4 above) with none.
    [2, 64, 6, 5, 20, 3, 3, 2, 1],
    // 3x3, stride 1, pad 1 (the lanes path's conv2d_rows_lanes, above on rows of 13, 5 and 19
    // columns) on rows of a multiple of 4 columns (conv2d_backward_weight_rows_lanes): over two
    // workgroups of columns, and over part of one with rows in two blocks.
    [2, 3, 9, 20, 5, 3, 3, 1, 1],
    [3, 5, 6, 12, 19, 3, 3, 1, 1],
    // 1x1, stride 1, H*W and channels multiples of 4 (conv2d_pointwise_lanes): within one
    // workgroup of columns, and over two with rows in two blocks.
    [2, 8, 3, 4, 12, 1, 1, 1, 0],
    [3, 12, 10, 10, 20, 1, 1, 1, 0],
    // 1x1 with channel counts multiples of 4 and 256 or more output channels
    // (conv2d_pointwise_channels_lanes): on planes of 15 values (blocks of positions across
    // images, over two workgroups of channels; the first only forward), and at strides 2 and 3
    // on planes whose last cells are cut short (the input gradient with ACCUMULATE).
    [2, 4, 5, 3, 260, 1, 1, 1, 0],
    [1, 256, 3, 5, 260, 1, 1, 1, 0],
    [2, 256, 9, 7, 260, 1, 1, 2, 0],
    [1, 260, 8, 8, 256, 1, 1, 3, 0],
    // 1x1 weight gradients on planes whose positions do not come in fours (stride 1 on 7x7, as
    // ResNet-50's last stage) and at stride 2 (conv2d_backward_weight_rows_lanes' POINTWISE),
    // with slices that begin and end inside a plane.
    [2, 12, 7, 7, 20, 1, 1, 1, 0],
    [3, 8, 9, 11, 12, 1, 1, 2, 0],
    // 3x3 stride 2 on an odd number of rows (conv2d_backward_input_strided_lanes' odd rows fall
    // one short of its even ones), and on rows of an even number of columns (conv2d_strided_lanes,
    // there on rows of 5 outputs, here of 8 and with 3 images).
    [2, 5, 7, 10, 18, 3, 3, 2, 1],
    [3, 6, 8, 16, 20, 3, 3, 2, 1],
    // The ImageNet stem's 7x7, stride 2, pad 3 on rows of an even number of columns
    // (conv2d_strided_lanes with TAPS = 7): 3 channels, rows of 9 outputs, two blocks of rows.
    [2, 3, 12, 18, 20, 7, 7, 2, 3],
];

/// The lanes-path kernels each case of `CONV_CASES` reaches: forward, input gradient written,
/// input gradient added, weight gradient (a routing change must not drop a kernel's coverage).
const LANES_ROUTES: [[Kernel; 4]; 21] = {
    use Kernel::*;
    let (f, i, w) = (Conv2dForwardLanes, Conv2dBackwardInputLanes, Conv2dBackwardWeightLanes);
    let rows = Conv2dRowsLanes;
    let (pointwise, channels) = (Conv2dPointwiseLanes, Conv2dPointwiseChannelsLanes);
    let (strided, strided_input) = (Conv2dStridedLanes, Conv2dBackwardInputStridedLanes);
    let (w_rows, w_rows4) = (Conv2dBackwardWeightRowsLanes, Conv2dBackwardWeightRowsVec4Lanes);
    [
        [rows, rows, rows, w_rows],
        [f, i, i, w],
        [f, i, i, w],
        [f, strided_input, strided_input, w],
        [rows, rows, rows, w_rows],
        [rows, rows, rows, w_rows],
        [f, i, i, w],
        [f, strided_input, strided_input, w],
        [rows, rows, rows, w_rows4],
        [rows, rows, rows, w_rows4],
        [pointwise, pointwise, pointwise, w_rows4],
        [pointwise, pointwise, pointwise, w_rows4],
        [channels, i, i, w],
        [channels, channels, channels, w_rows],
        [channels, i, channels, w_rows],
        [channels, i, channels, w],
        [f, i, i, w_rows],
        [f, i, i, w_rows],
        [strided, strided_input, strided_input, w],
        [strided, strided_input, strided_input, w],
        [strided, i, i, w],
    ]
};

#[test]
fn conv2d_forward_and_backward_match_cpu() {
    for gpu in conv_variants() {
        for (case, &shape) in CONV_CASES.iter().enumerate() {
            let params = ConvParams::new(&shape[..4], &[shape[4], shape[1], shape[5], shape[6]], shape[7], shape[8]);
            let want = match conv::tune::path(gpu, &params.unwrap(), ConvPass::Forward).unwrap() {
                ConvPath::Lanes => LANES_ROUTES[case],
                ConvPath::Tiled(_) => {
                    use Kernel::{Conv2dBackwardWeightTiled, Conv2dTiled};
                    [Conv2dTiled, Conv2dTiled, Conv2dTiled, Conv2dBackwardWeightTiled]
                }
                ConvPath::Direct => [
                    Kernel::Conv2dForward,
                    Kernel::Conv2dBackwardInput,
                    Kernel::Conv2dBackwardInput,
                    Kernel::Conv2dBackwardWeight,
                ],
            };
            let reached = conv_matches_cpu(gpu, case as u64, shape);
            assert_eq!(reached, want, "case {case} {shape:?} on {}", gpu.info.name);
        }
    }
}

/// Every tile of the tiled path on awkward shapes: channels that leave a step of BK part empty,
/// rows and columns over one tile (33 and 130 output channels), 1x1 stride 2, 3x3 stride 2, the
/// 7x7 stem, a weight gradient split into slices, and 1x1s with stride 1 on planes of 20 values
/// (POINTWISE: vec4 columns) and of 9.
#[test]
fn every_tile_matches_cpu() {
    const CASES: [[usize; 9]; 7] = [
        [2, 5, 9, 7, 10, 3, 3, 1, 1],
        [3, 17, 8, 9, 33, 3, 3, 2, 1],
        [2, 6, 9, 7, 130, 1, 1, 2, 0],
        [1, 3, 12, 10, 9, 7, 7, 2, 3],
        [4, 4, 16, 16, 6, 3, 3, 1, 1],
        [3, 6, 4, 5, 10, 1, 1, 1, 0],
        [2, 5, 3, 3, 7, 1, 1, 1, 0],
    ];
    for gpu in gpus() {
        for tile in TILES {
            tile.check().unwrap();
            let pinned = ConvPath::Tiled(tile).pin(gpu);
            for (case, shape) in CASES.into_iter().enumerate() {
                let reached = conv_matches_cpu(&pinned, 100 + case as u64, shape);
                assert_eq!(reached[0], Kernel::Conv2dTiled, "{} case {case}", tile.name);
            }
            let (inp, weight, out) =
                (zeros(gpu, &[3, 6, 4, 5]), zeros(gpu, &[10, 6, 1, 1]), zeros(gpu, &[3, 10, 4, 5]));
            let params = ConvParams::new(&inp.shape, &weight.shape, 1, 0).unwrap();
            let (panel, _) = conv::panel_for(&pinned, &params, &weight, false).unwrap().unwrap();
            let forward = conv::conv2d_forward(&pinned, &out, &inp, &weight, Some(&panel), 1, 0).unwrap();
            assert!(forward.flag("POINTWISE"), "a 1x1 with stride 1 on planes of 20 reads vec4 columns");
        }
    }
}

/// Runs the forward, the input gradient written and added, and the weight gradient of the conv
/// `[N, C, H, W, K, R, S, stride, pad]` on random operands against their CPU twins; returns the
/// kernels that ran them.
fn conv_matches_cpu(gpu: &Gpu, seed: u64, shape: [usize; 9]) -> [Kernel; 4] {
    let [n, c, h, w, k, r, s, stride, pad] = shape;
    let mut rng = Rng::new(seed);
    let params = ConvParams::new(&[n, c, h, w], &[k, c, r, s], stride, pad).unwrap();
    let out_shape = params.out_shape();
    let inp_v = rng.vec(n * c * h * w);
    let weight_v = rng.vec(k * c * r * s);
    let dout_v = rng.vec(out_shape.iter().product());
    let (inp, weight, dout) =
        (upload(gpu, &[n, c, h, w], &inp_v), upload(gpu, &[k, c, r, s], &weight_v), upload(gpu, &out_shape, &dout_v));
    let (out, dweight) = (zeros(gpu, &out_shape), zeros(gpu, &[k, c, r, s]));
    // Without ACCUMULATE the input gradient replaces every value, those no tap reaches too.
    let dinp = upload(gpu, &[n, c, h, w], &rng.vec(n * c * h * w));
    // 3x3s with pad 1 read the weight as panels on the lanes path: laid out first.
    let (panel, layout) = conv::panel_for(gpu, &params, &weight, false).unwrap().unzip();
    let (panel_t, layout_t) = conv::panel_for(gpu, &params, &weight, true).unwrap().unzip();
    let (panel, panel_t) = (panel.as_ref(), panel_t.as_ref());
    let forward = conv::conv2d_forward(gpu, &out, &inp, &weight, panel, stride, pad).unwrap();
    let backward_input = conv::conv2d_backward_input(gpu, &dinp, &dout, &weight, panel_t, stride, pad, false).unwrap();
    // With ACCUMULATE the gradient is added to what the tensor holds.
    let prior_v = rng.vec(n * c * h * w);
    let dinp_sum = upload(gpu, &[n, c, h, w], &prior_v);
    let backward_input_sum =
        conv::conv2d_backward_input(gpu, &dinp_sum, &dout, &weight, panel_t, stride, pad, true).unwrap();
    let backward_weight = conv::conv2d_backward_weight(gpu, &dweight, &dout, &inp, None, stride, pad).unwrap();
    let reached = [&forward, &backward_input, &backward_input_sum, &backward_weight[0]].map(|d| d.kernel);
    let mut dispatches: Vec<_> = layout.iter().chain(&layout_t).collect();
    dispatches.extend([&forward, &backward_input, &backward_input_sum]);
    dispatches.extend(&backward_weight);
    gpu.run(&dispatches).unwrap();

    let (inp_c, weight_c, dout_c) = (f64s(&inp_v), f64s(&weight_v), f64s(&dout_v));
    let mut out_c = vec![0.0; out.len()];
    let mut dinp_c = vec![0.0; dinp.len()];
    let mut dweight_c = vec![0.0; dweight.len()];
    cpu::conv2d_forward(&mut out_c, &inp_c, &weight_c, &params);
    cpu::conv2d_backward_input(&mut dinp_c, &dout_c, &weight_c, &params);
    cpu::conv2d_backward_weight(&mut dweight_c, &dout_c, &inp_c, &params);
    // f32 sums of up to C*R*S (or N*P*Q) products of values in [-1, 1].
    let what = |name: &str| {
        format!("{name} {shape:?} seed {seed} on {} ({})", gpu.info.name, conv::tune::choice(gpu).unwrap())
    };
    assert_close(&what("conv2d_forward"), &read(gpu, &out), &out_c, 1e-4, 1e-4);
    assert_close(&what("conv2d_backward_input"), &read(gpu, &dinp), &dinp_c, 1e-4, 1e-4);
    let sum_c: Vec<f64> = dinp_c.iter().zip(&prior_v).map(|(d, p)| d + *p as f64).collect();
    assert_close(&what("conv2d_backward_input, accumulating"), &read(gpu, &dinp_sum), &sum_c, 1e-4, 1e-4);
    assert_close(&what("conv2d_backward_weight"), &read(gpu, &dweight), &dweight_c, 2e-4, 1e-4);
    reached
}

/// Weight gradients over reductions long enough that one invocation walking them whole would run
/// over 65535 loop iterations on the shared path, where llvmpipe cuts loops short
/// (`Gpu::loop_limit`): 3x3, 1x1 on rows of 30, strided 3x3.
#[test]
fn long_weight_gradients_match_cpu() {
    for gpu in conv_variants() {
        for (case, [n, c, h, k, r, stride, pad]) in
            [[64, 2, 32, 3, 3, 1, 1], [48, 4, 30, 4, 1, 1, 0], [200, 2, 34, 3, 3, 2, 1]].into_iter().enumerate()
        {
            let mut rng = Rng::new(300 + case as u64);
            let params = ConvParams::new(&[n, c, h, h], &[k, c, r, r], stride, pad).unwrap();
            let out_shape = params.out_shape();
            let (inp_v, dout_v) = (rng.vec(n * c * h * h), rng.vec(out_shape.iter().product()));
            let (inp, dout) = (upload(gpu, &[n, c, h, h], &inp_v), upload(gpu, &out_shape, &dout_v));
            let dweight = zeros(gpu, &[k, c, r, r]);
            let dispatches = conv::conv2d_backward_weight(gpu, &dweight, &dout, &inp, None, stride, pad).unwrap();
            gpu.run(&dispatches.iter().collect::<Vec<_>>()).unwrap();
            let mut dweight_c = vec![0.0; dweight.len()];
            cpu::conv2d_backward_weight(&mut dweight_c, &f64s(&dout_v), &f64s(&inp_v), &params);
            let what = format!(
                "conv2d_backward_weight {:?} on {} ({:?}, {})",
                [n, c, h, k, r, stride, pad],
                gpu.info.name,
                gpu.info.backend,
                conv::tune::choice(gpu).unwrap()
            );
            // f32 sums of tens of thousands of products of values in [-1, 1].
            assert_close(&what, &read(gpu, &dweight), &dweight_c, 2e-3, 1e-4);
        }
    }
}

#[test]
fn conv2d_forward_fused_matches_cpu() {
    for gpu in conv_variants() {
        // Two cases of the generic kernels, two of conv2d_rows_lanes (rows of 13 and 12 columns),
        // one of conv2d_pointwise_lanes, one of conv2d_pointwise_channels_lanes, three of
        // conv2d_strided_lanes.
        for (case, &[n, c, h, w, k, r, s, stride, pad]) in
            CONV_CASES.iter().enumerate().filter(|(i, _)| [0, 2, 3, 9, 11, 12, 19, 20, 21].contains(i))
        {
            let mut rng = Rng::new(50 + case as u64);
            let params = ConvParams::new(&[n, c, h, w], &[k, c, r, s], stride, pad).unwrap();
            let out_shape = params.out_shape();
            let len: usize = out_shape.iter().product();
            let (inp_v, weight_v, bias_v, residual_v) =
                (rng.vec(n * c * h * w), rng.vec(k * c * r * s), rng.vec(k), rng.vec(len));
            let (inp, weight) = (upload(gpu, &[n, c, h, w], &inp_v), upload(gpu, &[k, c, r, s], &weight_v));
            let (bias, residual) = (upload(gpu, &[k], &bias_v), upload(gpu, &out_shape, &residual_v));
            let (with_bias, with_all) = (zeros(gpu, &out_shape), zeros(gpu, &out_shape));
            let (panel, layout) = conv::panel_for(gpu, &params, &weight, false).unwrap().unzip();
            let panel = panel.as_ref();
            gpu.run(&layout.iter().collect::<Vec<_>>()).unwrap();
            let fused = [
                conv::conv2d_forward_fused(
                    gpu,
                    &with_bias,
                    &inp,
                    &weight,
                    panel,
                    Some(&bias),
                    None,
                    false,
                    stride,
                    pad,
                )
                .unwrap(),
                conv::conv2d_forward_fused(
                    gpu,
                    &with_all,
                    &inp,
                    &weight,
                    panel,
                    Some(&bias),
                    Some(&residual),
                    true,
                    stride,
                    pad,
                )
                .unwrap(),
            ];
            gpu.run(&fused.iter().collect::<Vec<_>>()).unwrap();
            let mut conv = vec![0.0; len];
            cpu::conv2d_forward(&mut conv, &f64s(&inp_v), &f64s(&weight_v), &params);
            let pq = out_shape[2] * out_shape[3];
            let biased: Vec<f64> = conv.iter().enumerate().map(|(i, v)| v + bias_v[(i / pq) % k] as f64).collect();
            let all: Vec<f64> = biased.iter().zip(&residual_v).map(|(v, r)| (v + *r as f64).max(0.0)).collect();
            assert_close("conv2d_forward_fused bias", &read(gpu, &with_bias), &biased, 1e-4, 1e-4);
            assert_close("conv2d_forward_fused bias+residual+relu", &read(gpu, &with_all), &all, 1e-4, 1e-4);
        }
    }
}

#[test]
fn conv2d_backward_matches_finite_differences() {
    for (case, &[n, c, h, w, k, r, s, stride, pad]) in CONV_CASES[..4].iter().enumerate() {
        let mut rng = Rng::new(100 + case as u64);
        let params = ConvParams::new(&[n, c, h, w], &[k, c, r, s], stride, pad).unwrap();
        let inp = f64s(&rng.vec(n * c * h * w));
        let weight = f64s(&rng.vec(k * c * r * s));
        let dout = f64s(&rng.vec(params.out_shape().iter().product()));
        let out_len = dout.len();
        let mut dinp = vec![0.0; inp.len()];
        let mut dweight = vec![0.0; weight.len()];
        cpu::conv2d_backward_input(&mut dinp, &dout, &weight, &params);
        cpu::conv2d_backward_weight(&mut dweight, &dout, &inp, &params);
        let forward = |inp: &[f64], weight: &[f64]| {
            let mut out = vec![0.0; out_len];
            cpu::conv2d_forward(&mut out, inp, weight, &params);
            out
        };
        finite_differences("conv2d_backward_input", |x| forward(x, &weight), &inp, &dout, &dinp);
        finite_differences("conv2d_backward_weight", |x| forward(&inp, x), &weight, &dout, &dweight);
    }
}

// (N, C, H, W): one value per channel spatially, odd sizes, more values than one workgroup holds.
// The last two have H*W a multiple of 4 (the _vec4 twins): 9 vec4s a row, and 20.
// The last two walk a channel in over 65535 loop iterations per invocation at 8 a workgroup,
// where llvmpipe cuts loops short (`Gpu::loop_limit`): as vec4s and as scalars.
const BN_CASES: &[[usize; 4]] = &[
    [2, 3, 5, 7],
    [1, 6, 1, 1],
    [4, 5, 13, 11],
    [3, 67, 9, 9],
    [3, 5, 6, 6],
    [2, 3, 4, 20],
    [12000, 1, 4, 8],
    [8000, 2, 3, 5],
];

#[test]
fn batchnorm_matches_cpu() {
    for gpu in bn_variants() {
        for (case, &[n, c, h, w]) in BN_CASES.iter().enumerate() {
            let shape = [n, c, h, w];
            let mut rng = Rng::new(200 + case as u64);
            // An offset and scale per channel, as real activations have.
            let inp_v: Vec<f32> =
                rng.vec(n * c * h * w).iter().enumerate().map(|(i, x)| 3.0 * x + ((i / (h * w)) % c) as f32).collect();
            let (weight_v, bias_v, dout_v) = (rng.vec(c), rng.vec(c), rng.vec(n * c * h * w));
            let running_mean_v = rng.vec(c);
            let running_var_v: Vec<f32> = rng.vec(c).iter().map(|x| 1.5 + x).collect();
            let inp = upload(gpu, &shape, &inp_v);
            let (weight, bias, dout) =
                (upload(gpu, &[c], &weight_v), upload(gpu, &[c], &bias_v), upload(gpu, &shape, &dout_v));
            let (running_mean, running_var) = (upload(gpu, &[c], &running_mean_v), upload(gpu, &[c], &running_var_v));
            let (out, out_eval, dinp) = (zeros(gpu, &shape), zeros(gpu, &shape), zeros(gpu, &shape));
            let (mean, rstd, dweight, dbias) = (zeros(gpu, &[c]), zeros(gpu, &[c]), zeros(gpu, &[c]), zeros(gpu, &[c]));
            // Inference first, so it sees the running statistics before the training forward updates them.
            let eval = batchnorm::batchnorm_forward_eval(
                gpu,
                &out_eval,
                &inp,
                &weight,
                &bias,
                &running_mean,
                &running_var,
                None,
                false,
            )
            .unwrap();
            let train = batchnorm::batchnorm_forward_train(
                gpu,
                &out,
                &mean,
                &rstd,
                &running_mean,
                &running_var,
                &inp,
                &weight,
                &bias,
                None,
                None,
                false,
            )
            .unwrap();
            let backward = batchnorm::batchnorm_backward(
                gpu, &dinp, &dweight, &dbias, &dout, &inp, &weight, &mean, &rstd, None, None,
            )
            .unwrap();
            gpu.run(&[&eval]).unwrap();
            let out_eval_v = read(gpu, &out_eval);
            gpu.run(&train.iter().chain(&backward).collect::<Vec<_>>()).unwrap();

            let params = BatchnormParams::for_input(&[n, c, h, w]).unwrap();
            let (inp_c, weight_c, bias_c, dout_c) = (f64s(&inp_v), f64s(&weight_v), f64s(&bias_v), f64s(&dout_v));
            let (mut rm_c, mut rv_c) = (f64s(&running_mean_v), f64s(&running_var_v));
            let mut out_eval_c = vec![0.0; inp_c.len()];
            cpu::batchnorm_forward_eval(&mut out_eval_c, &inp_c, &weight_c, &bias_c, &rm_c, &rv_c, &params);
            let (mut out_c, mut mean_c, mut rstd_c) = (vec![0.0; inp_c.len()], vec![0.0; c], vec![0.0; c]);
            cpu::batchnorm_forward_train(
                &mut out_c,
                &mut mean_c,
                &mut rstd_c,
                &mut rm_c,
                &mut rv_c,
                &inp_c,
                &weight_c,
                &bias_c,
                &params,
            );
            let (mut dinp_c, mut dweight_c, mut dbias_c) = (vec![0.0; inp_c.len()], vec![0.0; c], vec![0.0; c]);
            cpu::batchnorm_backward(
                &mut dinp_c,
                &mut dweight_c,
                &mut dbias_c,
                &dout_c,
                &inp_c,
                &weight_c,
                &mean_c,
                &rstd_c,
                &params,
            );

            let what = |name: &str| format!("{name} {shape:?} {}", bn_variant(gpu));
            assert_close(&what("batchnorm_forward_eval"), &out_eval_v, &out_eval_c, 1e-5, 1e-5);
            assert_close(&what("batchnorm_forward_train out"), &read(gpu, &out), &out_c, 1e-4, 1e-4);
            assert_close(&what("batchnorm_forward_train mean"), &read(gpu, &mean), &mean_c, 1e-5, 1e-5);
            // With one value per channel the variance is 0 and rstd = 1/sqrt(eps): relative bound only.
            assert_close(&what("batchnorm_forward_train rstd"), &read(gpu, &rstd), &rstd_c, 1e-5, 1e-4);
            assert_close(&what("batchnorm running_mean"), &read(gpu, &running_mean), &rm_c, 1e-5, 1e-5);
            assert_close(&what("batchnorm running_var"), &read(gpu, &running_var), &rv_c, 1e-5, 1e-4);
            assert_close(&what("batchnorm_backward dinp"), &read(gpu, &dinp), &dinp_c, 1e-4, 1e-3);
            assert_close(&what("batchnorm_backward dweight"), &read(gpu, &dweight), &dweight_c, 1e-4, 1e-4);
            assert_close(&what("batchnorm_backward dbias"), &read(gpu, &dbias), &dbias_c, 1e-4, 1e-4);
        }
    }
}

#[test]
fn batchnorm_fused_matches_cpu() {
    // What the training plan fuses into batch norm: a block's relu(bn(x) + residual), and the
    // backward of relu(bn(x)), which masks dout by relu_mask of the forward's output.
    for gpu in bn_variants() {
        for (case, &[n, c, h, w]) in BN_CASES.iter().enumerate().skip(2) {
            let (shape, len) = ([n, c, h, w], n * c * h * w);
            let mut rng = Rng::new(400 + case as u64);
            let (inp_v, residual_v, dout_v) = (rng.vec(len), rng.vec(len), rng.vec(len));
            let (weight_v, bias_v, rm_v) = (rng.vec(c), rng.vec(c), rng.vec(c));
            let rv_v: Vec<f32> = rng.vec(c).iter().map(|x| 1.5 + x).collect();
            let (inp, residual, dout) =
                (upload(gpu, &shape, &inp_v), upload(gpu, &shape, &residual_v), upload(gpu, &shape, &dout_v));
            let (weight, bias) = (upload(gpu, &[c], &weight_v), upload(gpu, &[c], &bias_v));
            let (rm, rv) = (upload(gpu, &[c], &rm_v), upload(gpu, &[c], &rv_v));
            let [eval_out, with_residual, with_relu, dinp] = [(); 4].map(|_| zeros(gpu, &shape));
            let [mean, rstd, dweight, dbias] = [(); 4].map(|_| zeros(gpu, &[c]));
            let in_place = upload(gpu, &shape, &inp_v);
            let mask = zeros(gpu, &[elementwise::mask_words(len)]);
            let dispatches = [
                // Inference first, so it sees the running statistics before the training forward updates them.
                batchnorm::batchnorm_forward_eval(
                    gpu,
                    &eval_out,
                    &inp,
                    &weight,
                    &bias,
                    &rm,
                    &rv,
                    Some(&residual),
                    true,
                )
                .map(|d| vec![d]),
                batchnorm::batchnorm_forward_train(
                    gpu,
                    &with_residual,
                    &mean,
                    &rstd,
                    &rm,
                    &rv,
                    &inp,
                    &weight,
                    &bias,
                    Some(&residual),
                    None,
                    true,
                ),
                batchnorm::batchnorm_forward_train(
                    gpu, &with_relu, &mean, &rstd, &rm, &rv, &inp, &weight, &bias, None, None, true,
                ),
                elementwise::relu_mask(gpu, &mask, &with_relu).map(|d| vec![d]),
                batchnorm::batchnorm_backward(
                    gpu,
                    &dinp,
                    &dweight,
                    &dbias,
                    &dout,
                    &inp,
                    &weight,
                    &mean,
                    &rstd,
                    Some(&mask),
                    None,
                ),
                // In place: the gradient overwrites the input it is computed from.
                batchnorm::batchnorm_backward(
                    gpu,
                    &in_place,
                    &dweight,
                    &dbias,
                    &dout,
                    &in_place,
                    &weight,
                    &mean,
                    &rstd,
                    Some(&mask),
                    None,
                ),
            ]
            .map(Result::unwrap);
            gpu.run(&dispatches.iter().flatten().collect::<Vec<_>>()).unwrap();

            let params = BatchnormParams::for_input(&shape).unwrap();
            let (inp_c, residual_c, dout_c) = (f64s(&inp_v), f64s(&residual_v), f64s(&dout_v));
            let (weight_c, bias_c, mut rm_c, mut rv_c) = (f64s(&weight_v), f64s(&bias_v), f64s(&rm_v), f64s(&rv_v));
            let add_relu =
                |v: &[f64]| -> Vec<f64> { v.iter().zip(&residual_c).map(|(x, r)| (x + r).max(0.0)).collect() };
            let mut eval_c = vec![0.0; len];
            cpu::batchnorm_forward_eval(&mut eval_c, &inp_c, &weight_c, &bias_c, &rm_c, &rv_c, &params);
            let (mut bn_c, mut mean_c, mut rstd_c) = (vec![0.0; len], vec![0.0; c], vec![0.0; c]);
            cpu::batchnorm_forward_train(
                &mut bn_c,
                &mut mean_c,
                &mut rstd_c,
                &mut rm_c,
                &mut rv_c,
                &inp_c,
                &weight_c,
                &bias_c,
                &params,
            );
            let mut relu_c = vec![0.0; len];
            cpu::relu_forward(&mut relu_c, &bn_c);
            let mut masked_c = vec![0.0; len];
            cpu::relu_backward(&mut masked_c, &dout_c, &bn_c);
            let (mut dinp_c, mut dweight_c, mut dbias_c) = (vec![0.0; len], vec![0.0; c], vec![0.0; c]);
            cpu::batchnorm_backward(
                &mut dinp_c,
                &mut dweight_c,
                &mut dbias_c,
                &masked_c,
                &inp_c,
                &weight_c,
                &mean_c,
                &rstd_c,
                &params,
            );

            let what = |name: &str| format!("{name} {shape:?} {}", bn_variant(gpu));
            assert_close(
                &what("batchnorm_forward_eval + residual + relu"),
                &read(gpu, &eval_out),
                &add_relu(&eval_c),
                1e-5,
                1e-5,
            );
            assert_close(
                &what("batchnorm_forward_train + residual + relu"),
                &read(gpu, &with_residual),
                &add_relu(&bn_c),
                1e-4,
                1e-4,
            );
            assert_close(&what("batchnorm_forward_train + relu"), &read(gpu, &with_relu), &relu_c, 1e-4, 1e-4);
            assert_close(&what("batchnorm_backward after relu: dinp"), &read(gpu, &dinp), &dinp_c, 1e-4, 1e-3);
            assert_close(&what("batchnorm_backward after relu: dweight"), &read(gpu, &dweight), &dweight_c, 1e-4, 1e-4);
            assert_close(&what("batchnorm_backward after relu: dbias"), &read(gpu, &dbias), &dbias_c, 1e-4, 1e-4);
            assert_close(&what("batchnorm_backward in place"), &read(gpu, &in_place), &dinp_c, 1e-4, 1e-3);
        }
    }
}

#[test]
fn batchnorm_backward_matches_finite_differences() {
    for (case, &[n, c, h, w]) in BN_CASES[..3].iter().filter(|s| s[0] * s[2] * s[3] > 1).enumerate() {
        let mut rng = Rng::new(300 + case as u64);
        let len = n * c * h * w;
        let params = BatchnormParams::for_input(&[n, c, h, w]).unwrap();
        let (inp, weight, bias, dout) =
            (f64s(&rng.vec(len)), f64s(&rng.vec(c)), f64s(&rng.vec(c)), f64s(&rng.vec(len)));
        let forward = |inp: &[f64], weight: &[f64], bias: &[f64]| {
            let (mut out, mut mean, mut rstd, mut rm, mut rv) =
                (vec![0.0; len], vec![0.0; c], vec![0.0; c], vec![0.0; c], vec![1.0; c]);
            cpu::batchnorm_forward_train(&mut out, &mut mean, &mut rstd, &mut rm, &mut rv, inp, weight, bias, &params);
            (out, mean, rstd)
        };
        let (_, mean, rstd) = forward(&inp, &weight, &bias);
        let (mut dinp, mut dweight, mut dbias) = (vec![0.0; len], vec![0.0; c], vec![0.0; c]);
        cpu::batchnorm_backward(&mut dinp, &mut dweight, &mut dbias, &dout, &inp, &weight, &mean, &rstd, &params);
        finite_differences("batchnorm_backward dinp", |x| forward(x, &weight, &bias).0, &inp, &dout, &dinp);
        finite_differences("batchnorm_backward dweight", |x| forward(&inp, x, &bias).0, &weight, &dout, &dweight);
        finite_differences("batchnorm_backward dbias", |x| forward(&inp, &weight, x).0, &bias, &dout, &dbias);
    }
}

#[test]
fn conv2d_weight_panel_matches_cpu() {
    for gpu in gpus() {
        // Channel counts that are and are not multiples of 4, 3x3 and 1x3 taps, and over 256
        // values; both layouts.
        let shapes = [[5, 3, 3, 3], [8, 12, 3, 3], [18, 7, 1, 3], [4, 64, 3, 3]];
        for (case, (&[k, c, r, s], transposed)) in shapes.iter().flat_map(|w| [(w, false), (w, true)]).enumerate() {
            let weight_v = Rng::new(460 + case as u64).vec(k * c * r * s);
            let weight = upload(gpu, &[k, c, r, s], &weight_v);
            let panel = zeros(gpu, &conv::panel_shape(&weight.shape, transposed));
            gpu.run(&[&conv::conv2d_weight_panel(gpu, &panel, &weight, transposed).unwrap()]).unwrap();
            let params = ConvParams { k: k as u32, c: c as u32, r: r as u32, s: s as u32, ..Default::default() };
            let mut panel_c = vec![0.0; panel.len()];
            cpu::conv2d_weight_panel(&mut panel_c, &f64s(&weight_v), &params, transposed);
            let what = format!("conv2d_weight_panel {:?} transposed {transposed} on {}", [k, c, r, s], gpu.info.name);
            assert_close(&what, &read(gpu, &panel), &panel_c, 0.0, 0.0);
        }
    }
}

#[test]
fn sum_slices_matches_cpu() {
    for gpu in gpus() {
        // 13 slices of 70,001 elements: several workgroups and a ragged end.
        let mut rng = Rng::new(450);
        let (slices, shape) = (13, [7, 11, 31, 29]);
        let inp_v = rng.vec(slices * shape.iter().product::<usize>());
        let (inp, out) = (upload(gpu, &[slices, 7, 11, 31, 29], &inp_v), zeros(gpu, &shape));
        gpu.run(&[&conv::sum_slices(gpu, &out, &inp).unwrap()]).unwrap();
        let mut out_c = vec![0.0; out.len()];
        cpu::sum_slices(&mut out_c, &f64s(&inp_v));
        assert_close("sum_slices", &read(gpu, &out), &out_c, 1e-6, 1e-6);
    }
}

// 70,001 elements: several workgroups and a ragged end; 71,920, a multiple of 4 (the `_vec4`
// twins of relu_mask, relu_backward and add; not a multiple of 32).
const ELEMENTWISE_SHAPES: [[usize; 4]; 3] = [[1, 3, 5, 7], [7, 11, 31, 29], [5, 16, 31, 29]];

#[test]
fn relu_and_add_match_cpu() {
    for gpu in gpus() {
        for (case, shape) in ELEMENTWISE_SHAPES.iter().enumerate() {
            let mut rng = Rng::new(400 + case as u64);
            let len: usize = shape.iter().product();
            let (inp_v, other_v, dout_v) = (rng.vec(len), rng.vec(len), rng.vec(len));
            let inp = upload(gpu, shape, &inp_v);
            // relu_backward masks dout in place by relu_mask's bits; add accumulates into what
            // `sum` holds.
            let (dinp, sum) = (upload(gpu, shape, &dout_v), upload(gpu, shape, &other_v));
            let mask = zeros(gpu, &[elementwise::mask_words(len)]);
            let dispatches = [
                elementwise::relu_mask(gpu, &mask, &inp).unwrap(),
                elementwise::relu_backward(gpu, &dinp, &mask).unwrap(),
                elementwise::add(gpu, &sum, &inp).unwrap(),
            ];
            gpu.run(&dispatches.iter().collect::<Vec<_>>()).unwrap();
            let (inp_c, other_c, dout_c) = (f64s(&inp_v), f64s(&other_v), f64s(&dout_v));
            let (mut dinp_c, mut sum_c) = (vec![0.0; len], other_c.clone());
            cpu::relu_backward(&mut dinp_c, &dout_c, &inp_c);
            cpu::add(&mut sum_c, &inp_c);
            let mut mask_c = vec![0u32; elementwise::mask_words(len)];
            cpu::relu_mask(&mut mask_c, &inp_c);
            assert_eq!(gpu.read::<u32>(&mask).unwrap(), mask_c, "relu_mask {shape:?} on {}", gpu.info.name);
            assert_close("relu_backward", &read(gpu, &dinp), &dinp_c, 0.0, 0.0);
            assert_close("add", &read(gpu, &sum), &sum_c, 1e-7, 0.0);
            finite_differences(
                "relu_backward",
                |x| {
                    let mut out = vec![0.0; len];
                    cpu::relu_forward(&mut out, x);
                    out
                },
                &inp_c,
                &dout_c,
                &dinp_c,
            );
        }
    }
}

// (input, output) of the option-A shortcut: CIFAR's 16 -> 32 at 32x32 (several workgroups either
// way), odd sizes (ceil(H/2)) with an odd channel count, one image of odd rows and columns with Q
// a prime, and no padded channels (K = C).
const SHORTCUT_CASES: [([usize; 4], [usize; 4]); 4] = [
    ([2, 16, 32, 32], [2, 32, 16, 16]),
    ([3, 5, 7, 9], [3, 11, 4, 5]),
    ([1, 7, 33, 25], [1, 13, 17, 13]),
    ([2, 3, 5, 6], [2, 3, 3, 3]),
];

#[test]
fn shortcut_a_matches_cpu() {
    for gpu in per_element_variants() {
        let variant = per_element_variant(gpu);
        for (case, (inp_shape, out_shape)) in SHORTCUT_CASES.iter().enumerate() {
            let mut rng = Rng::new(500 + case as u64);
            let params = ShortcutParams::new(inp_shape, out_shape).unwrap();
            let (in_len, out_len) = (inp_shape.iter().product(), out_shape.iter().product());
            let (inp_v, dout_v) = (rng.vec(in_len), rng.vec(out_len));
            let (inp, dout) = (upload(gpu, inp_shape, &inp_v), upload(gpu, out_shape, &dout_v));
            // The backward adds to what dinp holds (the branch's gradient in a block); the forward
            // overwrites what out holds.
            let (prior_v, stale_v) = (rng.vec(in_len), rng.vec(out_len));
            let (out, dinp) = (upload(gpu, out_shape, &stale_v), upload(gpu, inp_shape, &prior_v));
            let forward = elementwise::shortcut_a_forward(gpu, &out, &inp).unwrap();
            let backward = elementwise::shortcut_a_backward(gpu, &dinp, &dout).unwrap();
            gpu.run(&[&forward, &backward]).unwrap();
            let (inp_c, dout_c) = (f64s(&inp_v), f64s(&dout_v));
            let (mut out_c, mut dinp_c) = (vec![0.0; out_len], vec![0.0; in_len]);
            cpu::shortcut_a_forward(&mut out_c, &inp_c, &params);
            cpu::shortcut_a_backward(&mut dinp_c, &dout_c, &params);
            let accumulated: Vec<f64> = dinp_c.iter().zip(&prior_v).map(|(d, p)| d + *p as f64).collect();
            let what = format!("{inp_shape:?} -> {out_shape:?} {variant}");
            assert_close(&format!("shortcut_a_forward {what}"), &read(gpu, &out), &out_c, 0.0, 0.0);
            assert_close(&format!("shortcut_a_backward {what}"), &read(gpu, &dinp), &accumulated, 1e-7, 0.0);
            let forward_c = |x: &[f64]| {
                let mut out = vec![0.0; out_len];
                cpu::shortcut_a_forward(&mut out, x, &params);
                out
            };
            finite_differences("shortcut_a_backward", forward_c, &inp_c, &dout_c, &dinp_c);
        }
    }
}

// (input, size, stride, pad) of the max pool: the ImageNet stem's 3x3/2 pad 1 on odd and even
// sizes, and on one image of 37 channels (several workgroups either way); a 2x2/2 pool;
// overlapping 3x3/1 windows (an input is the maximum of several, summed in order); 2x2/3, whose
// windows skip rows and columns (gradient zero there).
const MAXPOOL_CASES: [([usize; 4], usize, usize, usize); 6] = [
    ([2, 3, 13, 11], 3, 2, 1),
    ([1, 5, 16, 16], 3, 2, 1),
    ([1, 37, 23, 17], 3, 2, 1),
    ([3, 2, 9, 8], 2, 2, 0),
    ([2, 3, 7, 10], 3, 1, 1),
    ([2, 3, 11, 10], 2, 3, 0),
];

#[test]
fn maxpool_matches_cpu() {
    for gpu in per_element_variants() {
        let variant = per_element_variant(gpu);
        for (case, &(shape, size, stride, pad)) in MAXPOOL_CASES.iter().enumerate() {
            let mut rng = Rng::new(600 + case as u64);
            let params = PoolParams::new(&shape, size, stride, pad).unwrap();
            let out_shape = params.out_shape();
            let (in_len, out_len): (usize, usize) = (shape.iter().product(), out_shape.iter().product());
            let (inp_v, dout_v) = (rng.vec(in_len), rng.vec(out_len));
            let (inp, dout) = (upload(gpu, &shape, &inp_v), upload(gpu, &out_shape, &dout_v));
            // The backward overwrites what dinp holds.
            let (out, indices, dinp) = (zeros(gpu, &out_shape), zeros(gpu, &out_shape), upload(gpu, &shape, &inp_v));
            let forward = pool::maxpool_forward(gpu, &out, &indices, &inp, size, stride, pad).unwrap();
            let backward = pool::maxpool_backward(gpu, &dinp, &dout, &indices, size, stride, pad).unwrap();
            gpu.run(&[&forward, &backward]).unwrap();
            let (inp_c, dout_c) = (f64s(&inp_v), f64s(&dout_v));
            let (mut out_c, mut indices_c, mut dinp_c) = (vec![0.0; out_len], vec![0u32; out_len], vec![0.0; in_len]);
            cpu::maxpool_forward(&mut out_c, &mut indices_c, &inp_c, &params);
            cpu::maxpool_backward(&mut dinp_c, &dout_c, &indices_c, &params);
            let what = format!("{shape:?} {size}x{size}/{stride} pad {pad} {variant}");
            assert_close(&format!("maxpool_forward {what}"), &read(gpu, &out), &out_c, 0.0, 0.0);
            assert_eq!(gpu.read::<u32>(&indices).unwrap(), indices_c, "maxpool_forward indices {what}");
            assert_close(&format!("maxpool_backward {what}"), &read(gpu, &dinp), &dinp_c, 1e-6, 0.0);
            let forward_c = |x: &[f64]| {
                let (mut out, mut indices) = (vec![0.0; out_len], vec![0u32; out_len]);
                cpu::maxpool_forward(&mut out, &mut indices, x, &params);
                out
            };
            finite_differences("maxpool_backward", forward_c, &inp_c, &dout_c, &dinp_c);
        }
    }
}

/// The row-walking kernels on more than 65,535 workgroups, folded into y (`kernels::grid`), either
/// way they split their work: 16,777,217 rows of one value, 256 a workgroup. The max pool is 1x1 (a
/// copy), the shortcut pads one channel with 2^23 zero channels on either side.
#[test]
fn row_walks_fold_their_grid_past_65535_workgroups() {
    let rows = 65535 * 256 + 1;
    for gpu in per_element_variants() {
        let variant = per_element_variant(gpu);
        let mut rng = Rng::new(650);
        let shape = [1, 1, rows, 1];
        let params = PoolParams::new(&shape, 1, 1, 0).unwrap();
        let (inp_v, dout_v) = (rng.vec(rows), rng.vec(rows));
        let (inp, dout) = (upload(gpu, &shape, &inp_v), upload(gpu, &shape, &dout_v));
        let indices = gpu.upload("stale indices", &shape, &vec![7u32; rows]).unwrap();
        let (out, dinp) = (zeros(gpu, &shape), zeros(gpu, &shape));
        let forward = pool::maxpool_forward(gpu, &out, &indices, &inp, 1, 1, 0).unwrap();
        let backward = pool::maxpool_backward(gpu, &dinp, &dout, &indices, 1, 1, 0).unwrap();
        assert_eq!([forward.workgroups, backward.workgroups], [[65535, 2, 1]; 2], "max pool grid {variant}");
        gpu.run(&[&forward, &backward]).unwrap();
        let (mut dinp_c, indices_c) = (vec![0.0; rows], (0..rows as u32).collect::<Vec<u32>>());
        cpu::maxpool_backward(&mut dinp_c, &f64s(&dout_v), &indices_c, &params);
        assert_close(&format!("maxpool_forward {variant}"), &read(gpu, &out), &f64s(&inp_v), 0.0, 0.0);
        assert_eq!(gpu.read::<u32>(&indices).unwrap(), indices_c, "maxpool_forward indices {variant}");
        assert_close(&format!("maxpool_backward {variant}"), &read(gpu, &dinp), &dinp_c, 0.0, 0.0);

        let (inp_shape, out_shape) = ([1, 1, 1, 1], [1, rows, 1, 1]);
        let params = ShortcutParams::new(&inp_shape, &out_shape).unwrap();
        let (inp, dinp) = (upload(gpu, &inp_shape, &[0.5]), upload(gpu, &inp_shape, &[0.25]));
        let (out, dout) = (upload(gpu, &out_shape, &vec![7.0; rows]), upload(gpu, &out_shape, &dout_v));
        let forward = elementwise::shortcut_a_forward(gpu, &out, &inp).unwrap();
        let backward = elementwise::shortcut_a_backward(gpu, &dinp, &dout).unwrap();
        assert_eq!(forward.workgroups, [65535, 2, 1], "shortcut_a_forward grid {variant}");
        gpu.run(&[&forward, &backward]).unwrap();
        let (mut out_c, mut dinp_c) = (vec![0.0; rows], vec![0.25]);
        cpu::shortcut_a_forward(&mut out_c, &[0.5], &params);
        cpu::shortcut_a_backward(&mut dinp_c, &f64s(&dout_v), &params);
        assert_close(&format!("shortcut_a_forward {variant}"), &read(gpu, &out), &out_c, 0.0, 0.0);
        assert_close(&format!("shortcut_a_backward {variant}"), &read(gpu, &dinp), &dinp_c, 1e-7, 0.0);
    }
}

/// The row-walking kernels take an element an invocation on GPUs and a row on CPU adapters.
#[test]
fn row_walks_take_elements_on_gpus_only() {
    for gpu in gpus() {
        let software = resnet_wgpu::gpu::is_software(&gpu.info);
        assert_eq!(gpu.per_element, !software, "{}", gpu.describe());
        let (inp, out) = (zeros(gpu, &[2, 4, 30, 30]), zeros(gpu, &[2, 8, 15, 15]));
        let dispatches = [
            elementwise::shortcut_a_forward(gpu, &out, &inp).unwrap(),
            pool::maxpool_forward(gpu, &out, &zeros(gpu, &[2, 8, 15, 15]), &zeros(gpu, &[2, 8, 30, 30]), 2, 2, 0)
                .unwrap(),
        ];
        // 2*8*15 rows of 15 values: one workgroup of rows, or 15 of elements.
        for d in dispatches {
            assert_eq!(d.flag("PER_ELEMENT"), !software, "{} on {}", d.describe(), gpu.describe());
            assert_eq!(d.workgroups, [if software { 1 } else { 15 }, 1, 1], "{}", d.describe());
        }
    }
}

#[test]
fn avgpool_matches_cpu() {
    for gpu in gpus() {
        for (case, shape) in [[2, 3, 5, 7], [4, 64, 8, 8], [3, 300, 1, 1]].iter().enumerate() {
            let mut rng = Rng::new(700 + case as u64);
            let out_shape = [shape[0], shape[1]];
            let params = AvgpoolParams::new(shape, &out_shape).unwrap();
            let (in_len, out_len): (usize, usize) = (shape.iter().product(), shape[0] * shape[1]);
            let (inp_v, dout_v) = (rng.vec(in_len), rng.vec(out_len));
            let (inp, dout) = (upload(gpu, shape, &inp_v), upload(gpu, &out_shape, &dout_v));
            let (out, dinp) = (zeros(gpu, &out_shape), zeros(gpu, shape));
            let forward = pool::avgpool_forward(gpu, &out, &inp).unwrap();
            let backward = pool::avgpool_backward(gpu, &dinp, &dout).unwrap();
            gpu.run(&[&forward, &backward]).unwrap();
            let (inp_c, dout_c) = (f64s(&inp_v), f64s(&dout_v));
            let (mut out_c, mut dinp_c) = (vec![0.0; out_len], vec![0.0; in_len]);
            cpu::avgpool_forward(&mut out_c, &inp_c, &params);
            cpu::avgpool_backward(&mut dinp_c, &dout_c, &params);
            assert_close("avgpool_forward", &read(gpu, &out), &out_c, 1e-6, 1e-6);
            assert_close("avgpool_backward", &read(gpu, &dinp), &dinp_c, 1e-7, 1e-6);
            let forward_c = |x: &[f64]| {
                let mut out = vec![0.0; out_len];
                cpu::avgpool_forward(&mut out, x, &params);
                out
            };
            finite_differences("avgpool_backward", forward_c, &inp_c, &dout_c, &dinp_c);
        }
    }
}

/// (N, C, K): CIFAR's 64 -> 10, odd sizes, ImageNet's 2048 -> 1000 at batch 3.
const LINEAR_CASES: [[usize; 3]; 3] = [[4, 64, 10], [1, 7, 3], [3, 2048, 1000]];

#[test]
fn linear_matches_cpu() {
    for gpu in gpus() {
        for (case, &[n, c, k]) in LINEAR_CASES.iter().enumerate() {
            let mut rng = Rng::new(800 + case as u64);
            let params = LinearParams::new(&[n, c], &[k, c]).unwrap();
            let (inp_v, weight_v, bias_v, dout_v) = (rng.vec(n * c), rng.vec(k * c), rng.vec(k), rng.vec(n * k));
            let (inp, weight) = (upload(gpu, &[n, c], &inp_v), upload(gpu, &[k, c], &weight_v));
            let (bias, dout) = (upload(gpu, &[k], &bias_v), upload(gpu, &[n, k], &dout_v));
            let (out, dinp, dweight, dbias) =
                (zeros(gpu, &[n, k]), zeros(gpu, &[n, c]), zeros(gpu, &[k, c]), zeros(gpu, &[k]));
            let dispatches = [
                linear::linear_forward(gpu, &out, &inp, &weight, &bias).unwrap(),
                linear::linear_backward_input(gpu, &dinp, &dout, &weight).unwrap(),
                linear::linear_backward_weight(gpu, &dweight, &dbias, &dout, &inp).unwrap(),
            ];
            gpu.run(&dispatches.iter().collect::<Vec<_>>()).unwrap();
            let (inp_c, weight_c, bias_c, dout_c) = (f64s(&inp_v), f64s(&weight_v), f64s(&bias_v), f64s(&dout_v));
            let (mut out_c, mut dinp_c, mut dweight_c, mut dbias_c) =
                (vec![0.0; n * k], vec![0.0; n * c], vec![0.0; k * c], vec![0.0; k]);
            cpu::linear_forward(&mut out_c, &inp_c, &weight_c, &bias_c, &params);
            cpu::linear_backward_input(&mut dinp_c, &dout_c, &weight_c, &params);
            cpu::linear_backward_weight(&mut dweight_c, &mut dbias_c, &dout_c, &inp_c, &params);
            assert_close("linear_forward", &read(gpu, &out), &out_c, 1e-4, 1e-4);
            assert_close("linear_backward_input", &read(gpu, &dinp), &dinp_c, 1e-4, 1e-4);
            assert_close("linear_backward_weight dweight", &read(gpu, &dweight), &dweight_c, 1e-5, 1e-5);
            assert_close("linear_backward_weight dbias", &read(gpu, &dbias), &dbias_c, 1e-5, 1e-5);
            if c % 4 == 0 {
                // The backward's _vec4 twins ran: the scalar kernels must give the same bits.
                let (dinp_s, dweight_s, dbias_s) = (zeros(gpu, &[n, c]), zeros(gpu, &[k, c]), zeros(gpu, &[k]));
                let groups = |invocations: usize| kernels::grid(invocations.div_ceil(256));
                let scalar = [
                    gpu.dispatch(Kernel::LinearBackwardInput, &[], &[&dinp_s, &dout, &weight], &params, groups(n * c)),
                    gpu.dispatch(
                        Kernel::LinearBackwardWeight,
                        &[],
                        &[&dweight_s, &dbias_s, &dout, &inp],
                        &params,
                        groups(k * (c + 1)),
                    ),
                ];
                gpu.run(&scalar.iter().map(|d| d.as_ref().unwrap()).collect::<Vec<_>>()).unwrap();
                assert_eq!(read(gpu, &dinp_s), read(gpu, &dinp), "linear_backward_input_vec4 bits");
                assert_eq!(read(gpu, &dweight_s), read(gpu, &dweight), "linear_backward_weight_vec4 bits");
                assert_eq!(read(gpu, &dbias_s), read(gpu, &dbias), "linear_backward_weight_vec4 bias bits");
            }
            if c < 100 {
                let forward = |inp: &[f64], weight: &[f64], bias: &[f64]| {
                    let mut out = vec![0.0; n * k];
                    cpu::linear_forward(&mut out, inp, weight, bias, &params);
                    out
                };
                finite_differences(
                    "linear_backward_input",
                    |x| forward(x, &weight_c, &bias_c),
                    &inp_c,
                    &dout_c,
                    &dinp_c,
                );
                finite_differences(
                    "linear_backward_weight dweight",
                    |x| forward(&inp_c, x, &bias_c),
                    &weight_c,
                    &dout_c,
                    &dweight_c,
                );
                finite_differences(
                    "linear_backward_weight dbias",
                    |x| forward(&inp_c, &weight_c, x),
                    &bias_c,
                    &dout_c,
                    &dbias_c,
                );
            }
        }
    }
}

#[test]
fn softmax_cross_entropy_matches_cpu() {
    for gpu in gpus() {
        // Batches below, at and above the workgroup's 256 rows; 10 and 1000 classes.
        for (case, &(n, k)) in [(4, 10), (300, 10), (3, 1000), (256, 7)].iter().enumerate() {
            let mut rng = Rng::new(900 + case as u64);
            let logits_v: Vec<f32> = rng.vec(n * k).iter().map(|x| 5.0 * x).collect();
            let labels_v: Vec<u32> = (0..n).map(|_| rng.below(k) as u32).collect();
            let (logits, labels) = (upload(gpu, &[n, k], &logits_v), gpu.upload("labels", &[n], &labels_v).unwrap());
            let (dlogits, loss, correct) = (zeros(gpu, &[n, k]), zeros(gpu, &[1]), zeros(gpu, &[1]));
            let dispatch = linear::softmax_cross_entropy(gpu, &dlogits, &loss, &correct, &logits, &labels).unwrap();
            gpu.run(&[&dispatch]).unwrap();
            let logits_c = f64s(&logits_v);
            let mut dlogits_c = vec![0.0; n * k];
            let (loss_c, correct_c) = cpu::softmax_cross_entropy(&mut dlogits_c, &logits_c, &labels_v, k);
            assert_close("softmax_cross_entropy dlogits", &read(gpu, &dlogits), &dlogits_c, 1e-6, 1e-4);
            assert_close("softmax_cross_entropy loss", &read(gpu, &loss), &[loss_c], 1e-5, 1e-5);
            assert_eq!(gpu.read::<u32>(&correct).unwrap(), [correct_c], "softmax_cross_entropy correct");
            let loss_of = |x: &[f64]| {
                let mut scratch = vec![0.0; n * k];
                vec![cpu::softmax_cross_entropy(&mut scratch, x, &labels_v, k).0]
            };
            finite_differences("softmax_cross_entropy dlogits", loss_of, &logits_c, &[1.0], &dlogits_c);
        }
    }
}

#[test]
fn sgd_matches_cpu() {
    for gpu in gpus() {
        let mut rng = Rng::new(1000);
        // Several workgroups and a ragged end (arenas hold a multiple of 4 values).
        let len = 100_004;
        let (weight_v, velocity_v, grad_v) = (rng.vec(len), rng.vec(len), rng.vec(len));
        let (weight, velocity, grad) =
            (upload(gpu, &[len], &weight_v), upload(gpu, &[len], &velocity_v), upload(gpu, &[len], &grad_v));
        let step =
            sgd::sgd(gpu, &weight, &velocity, &grad, sgd::Sgd { lr: 0.1, momentum: 0.9, weight_decay: 1e-4 }).unwrap();
        gpu.run(&[&step]).unwrap();
        let (mut weight_c, mut velocity_c) = (f64s(&weight_v), f64s(&velocity_v));
        cpu::sgd(&mut weight_c, &mut velocity_c, &f64s(&grad_v), 0.1, 0.9, 1e-4);
        // A second step with a new learning rate, through the same prepared dispatch.
        gpu.update_params(&step, &sgd::SgdParams::new(len, sgd::Sgd { lr: 0.01, momentum: 0.9, weight_decay: 1e-4 }));
        gpu.run(&[&step]).unwrap();
        cpu::sgd(&mut weight_c, &mut velocity_c, &f64s(&grad_v), 0.01, 0.9, 1e-4);
        assert_close("sgd weight", &read(gpu, &weight), &weight_c, 1e-6, 1e-6);
        assert_close("sgd velocity", &read(gpu, &velocity), &velocity_c, 1e-6, 1e-6);
    }
}

#[test]
fn reductions_give_the_same_bits_every_run() {
    for gpu in bn_variants() {
        let mut rng = Rng::new(1100);
        let shape = [8, 16, 12, 12];
        let inp = upload(gpu, &shape, &rng.vec(8 * 16 * 144));
        let dout = upload(gpu, &shape, &rng.vec(8 * 16 * 144));
        let dweight = zeros(gpu, &[16, 16, 3, 3]);
        let step = conv::conv2d_backward_weight(gpu, &dweight, &dout, &inp, None, 1, 1).unwrap();
        let (out, mean, rstd, rm, rv) =
            (zeros(gpu, &shape), zeros(gpu, &[16]), zeros(gpu, &[16]), zeros(gpu, &[16]), zeros(gpu, &[16]));
        let (bn_weight, bn_bias) = (upload(gpu, &[16], &rng.vec(16)), upload(gpu, &[16], &rng.vec(16)));
        let bn = batchnorm::batchnorm_forward_train(
            gpu, &out, &mean, &rstd, &rm, &rv, &inp, &bn_weight, &bn_bias, None, None, false,
        )
        .unwrap();
        let runs: Vec<(Vec<u32>, Vec<u32>)> = (0..3)
            .map(|_| {
                gpu.run(&step.iter().chain(&bn).collect::<Vec<_>>()).unwrap();
                (gpu.read::<u32>(&dweight).unwrap(), gpu.read::<u32>(&out).unwrap())
            })
            .collect();
        assert!(runs.iter().all(|r| *r == runs[0]), "repeated runs on {} differ in their bits", gpu.info.name);
    }
}

/// Batch norm's training reduces a channel in chunks over many workgroups on GPUs, and a channel a
/// workgroup on CPU adapters (which run that faster): three dispatches each way, or one.
#[test]
fn batchnorm_runs_in_two_levels_on_gpus_only() {
    for gpu in gpus() {
        let software = resnet_wgpu::gpu::is_software(&gpu.info);
        assert_eq!(gpu.bn_chunk, (!software).then_some(4096), "{}", gpu.describe());
        let shape = [2, 3, 5, 7];
        let (x, y) = (zeros(gpu, &shape), zeros(gpu, &shape));
        let [m, r, rm, rv, wt, bs, dwt, dbs] = [(); 8].map(|_| zeros(gpu, &[3]));
        let train = batchnorm::batchnorm_forward_train(gpu, &y, &m, &r, &rm, &rv, &x, &wt, &bs, None, None, false);
        let backward = batchnorm::batchnorm_backward(gpu, &y, &dwt, &dbs, &x, &x, &wt, &m, &r, None, None);
        let counts = [train, backward].map(|d| d.unwrap().len());
        assert_eq!(counts, if software { [1, 1] } else { [3, 3] }, "{}", gpu.describe());
    }
}

/// Batch norm's training forward (residual and ReLU fused) and backward (after the ReLU) give the
/// same bits every run, on every variant, with several chunks a channel even at 4096 values a
/// chunk: H*W odd, and a multiple of 4.
#[test]
fn batchnorm_gives_the_same_bits_every_run() {
    for gpu in bn_variants() {
        for (case, shape) in [[5, 3, 37, 41], [3, 4, 36, 40]].into_iter().enumerate() {
            let (c, len) = (shape[1], shape.iter().product::<usize>());
            let mut rng = Rng::new(1200 + case as u64);
            let [inp, residual, dout] = [(); 3].map(|_| upload(gpu, &shape, &rng.vec(len)));
            let [weight, bias] = [(); 2].map(|_| upload(gpu, &[c], &rng.vec(c)));
            let (rm_v, rv_v) = (rng.vec(c), rng.vec(c).iter().map(|x| 1.5 + x).collect::<Vec<_>>());
            let (rm, rv) = (upload(gpu, &[c], &rm_v), upload(gpu, &[c], &rv_v));
            let [out, dinp] = [(); 2].map(|_| zeros(gpu, &shape));
            let [mean, rstd, dweight, dbias] = [(); 4].map(|_| zeros(gpu, &[c]));
            let mask = zeros(gpu, &[elementwise::mask_words(len)]);
            let (res, relu) = (Some(&residual), true);
            let mut dispatches = batchnorm::batchnorm_forward_train(
                gpu, &out, &mean, &rstd, &rm, &rv, &inp, &weight, &bias, res, None, relu,
            )
            .unwrap();
            dispatches.push(elementwise::relu_mask(gpu, &mask, &out).unwrap());
            let backward = batchnorm::batchnorm_backward(
                gpu,
                &dinp,
                &dweight,
                &dbias,
                &dout,
                &inp,
                &weight,
                &mean,
                &rstd,
                Some(&mask),
                None,
            );
            dispatches.extend(backward.unwrap());
            let runs: Vec<Vec<Vec<u32>>> = (0..3)
                .map(|_| {
                    // The same running statistics before each run: the forward moves them.
                    gpu.write(&rm, &rm_v);
                    gpu.write(&rv, &rv_v);
                    gpu.run(&dispatches.iter().collect::<Vec<_>>()).unwrap();
                    let outputs = [&out, &mean, &rstd, &rm, &rv, &dinp, &dweight, &dbias];
                    outputs.iter().map(|t| gpu.read::<u32>(t).unwrap()).collect()
                })
                .collect();
            let variant = bn_variant(gpu);
            assert!(runs.iter().all(|r| *r == runs[0]), "repeated runs of {shape:?} {variant} differ in their bits");
        }
    }
}

/// Every kernel of the table is reached by the shapes the tests above check against the CPU:
/// the same cases prepared here (not run), on every conv path and batch norm variant.
#[test]
fn every_kernel_is_reached_by_the_tests() {
    let mut reached = std::collections::HashSet::new();
    for gpu in conv_variants() {
        for &[n, c, h, w, k, r, s, stride, pad] in CONV_CASES {
            let params = ConvParams::new(&[n, c, h, w], &[k, c, r, s], stride, pad).unwrap();
            let (inp, weight, out) =
                (zeros(gpu, &[n, c, h, w]), zeros(gpu, &[k, c, r, s]), zeros(gpu, &params.out_shape()));
            let (panel, layout) = conv::panel_for(gpu, &params, &weight, false).unwrap().unzip();
            let (panel_t, layout_t) = conv::panel_for(gpu, &params, &weight, true).unwrap().unzip();
            let mut dispatches: Vec<_> = layout.into_iter().chain(layout_t).collect();
            dispatches.push(conv::conv2d_forward(gpu, &out, &inp, &weight, panel.as_ref(), stride, pad).unwrap());
            for accumulate in [false, true] {
                let d =
                    conv::conv2d_backward_input(gpu, &inp, &out, &weight, panel_t.as_ref(), stride, pad, accumulate);
                dispatches.push(d.unwrap());
            }
            dispatches.extend(conv::conv2d_backward_weight(gpu, &weight, &out, &inp, None, stride, pad).unwrap());
            reached.extend(dispatches.iter().map(|d| d.kernel));
        }
    }
    for gpu in bn_variants() {
        for &[n, c, h, w] in BN_CASES {
            let (x, y) = (zeros(gpu, &[n, c, h, w]), zeros(gpu, &[n, c, h, w]));
            let ch: Vec<Tensor> = (0..6).map(|_| zeros(gpu, &[c])).collect();
            let [m, r, rm, rv, wt, bs] = [0, 1, 2, 3, 4, 5].map(|i| &ch[i]);
            let train = batchnorm::batchnorm_forward_train(gpu, &y, m, r, rm, rv, &x, wt, bs, None, None, false);
            let eval = batchnorm::batchnorm_forward_eval(gpu, &y, &x, wt, bs, rm, rv, None, false);
            let backward = batchnorm::batchnorm_backward(gpu, &y, m, r, &x, &x, wt, rm, rv, None, None);
            let dispatches = [train, eval.map(|d| vec![d]), backward].map(Result::unwrap);
            reached.extend(dispatches.iter().flatten().map(|d| d.kernel));
        }
    }
    let gpu = &gpus()[0];
    for shape in ELEMENTWISE_SHAPES {
        let len = shape.iter().product();
        let (x, y, mask) = (zeros(gpu, &shape), zeros(gpu, &shape), zeros(gpu, &[elementwise::mask_words(len)]));
        let dispatches = [
            elementwise::relu_mask(gpu, &mask, &x),
            elementwise::relu_backward(gpu, &y, &mask),
            elementwise::add(gpu, &y, &x),
        ];
        reached.extend(dispatches.map(|d| d.unwrap().kernel));
    }
    for [n, c, k] in LINEAR_CASES {
        let (x, weight, out, bias) = (zeros(gpu, &[n, c]), zeros(gpu, &[k, c]), zeros(gpu, &[n, k]), zeros(gpu, &[k]));
        let dispatches = [
            linear::linear_forward(gpu, &out, &x, &weight, &bias),
            linear::linear_backward_input(gpu, &x, &out, &weight),
            linear::linear_backward_weight(gpu, &weight, &bias, &out, &x),
        ];
        reached.extend(dispatches.map(|d| d.unwrap().kernel));
    }
    // One kernel each, whatever the shape: any case of their tests reaches it.
    let t = |shape: &[usize]| zeros(gpu, shape);
    let (a, b, pooled) = (t(&[2, 4, 6, 6]), t(&[2, 8, 3, 3]), t(&[2, 4]));
    let sgd = sgd::Sgd { lr: 0.1, momentum: 0.9, weight_decay: 0.0 };
    let labels = gpu.upload("labels", &[2], &[0u32, 1]).unwrap();
    let dispatches = [
        elementwise::shortcut_a_forward(gpu, &b, &a),
        elementwise::shortcut_a_backward(gpu, &t(&[2, 4, 6, 6]), &b),
        pool::maxpool_forward(gpu, &t(&[2, 4, 3, 3]), &t(&[2, 4, 3, 3]), &a, 3, 2, 1),
        pool::maxpool_backward(gpu, &t(&[2, 4, 6, 6]), &t(&[2, 4, 3, 3]), &t(&[2, 4, 3, 3]), 3, 2, 1),
        pool::avgpool_forward(gpu, &pooled, &a),
        pool::avgpool_backward(gpu, &t(&[2, 4, 6, 6]), &pooled),
        conv::sum_slices(gpu, &t(&[2, 4]), &t(&[3, 2, 4])),
        linear::softmax_cross_entropy(gpu, &t(&[2, 4]), &t(&[1]), &t(&[1]), &pooled, &labels),
        sgd::sgd(gpu, &t(&[8]), &t(&[8]), &t(&[8]), sgd),
    ];
    reached.extend(dispatches.into_iter().map(|d| d.unwrap().kernel));
    let missed: Vec<&str> = Kernel::ALL.iter().filter(|k| !reached.contains(k)).map(|k| k.name()).collect();
    assert!(missed.is_empty(), "kernels no test reaches: {}", missed.join(", "));
}
