// batchnorm_forward_train: per channel c, over the M = N*H*W values x of that channel,
//   mean[c] = sum(x) / M,  var = sum((x - mean)^2) / M (biased),  rstd[c] = 1 / sqrt(var + eps),
//   out = relu?((x - mean) * rstd * weight[c] + bias[c] + residual?)   (RESIDUAL, RELU overrides:
//         a block's residual add and ReLU fused in, so neither needs a pass of its own),
//   running_mean = (1 - momentum) * running_mean + momentum * mean,
//   running_var  = (1 - momentum) * running_var  + momentum * var * M / (M - 1) (unbiased), as PyTorch.
// Shapes: inp, out, residual [N,C,H,W]; weight, bias, mean, rstd, running_mean, running_var [C].
// Overwrites out, mean, rstd; updates running_mean and running_var in place.
// One workgroup of WG invocations per channel; fixed-order tree reductions, two passes for the variance.
// batchnorm_forward_train_vec4 (after prelude vec4, for H*W a multiple of 4) reads and writes inp,
// out and residual as vec4s: a quarter of the loads and stores (on CPU adapters each is a loop
// over the lanes, however wide). Its sums add up 4 columns per invocation first, so their bits
// differ from batchnorm_forward_train's (after prelude f32).
// CPU twin: reference::batchnorm_forward_train (then reference::add, reference::relu_forward). Dispatch: grid(C) (workgroups folded into y past 65,535).

@group(0) @binding(0) var<storage, read_write> out: array<elem>;
@group(0) @binding(1) var<storage, read_write> mean: array<f32>;
@group(0) @binding(2) var<storage, read_write> rstd: array<f32>;
@group(0) @binding(3) var<storage, read_write> running_mean: array<f32>;
@group(0) @binding(4) var<storage, read_write> running_var: array<f32>;
@group(0) @binding(5) var<storage, read> inp: array<elem>;
@group(0) @binding(6) var<storage, read> weight: array<f32>;
@group(0) @binding(7) var<storage, read> bias: array<f32>;
@group(0) @binding(8) var<storage, read> residual: array<elem>;
@group(0) @binding(9) var<uniform> params: Params;

override RESIDUAL: bool = false;
override RELU: bool = false;

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let c = wid.x + wid.y * nwg.x;
    if (c >= params.c) { return; }
    let m = params.n * params.hw;
    let hw = params.hw / WIDTH; // a row of the channel, in elements
    let l = row_lanes(hw);
    var s = elem(0.0);
    for (var n = t / l; n < params.n; n += WG / l) {
        let row = (n * params.c + c) * hw;
        for (var j = row + t % l; j < row + hw; j += l) { s += inp[j]; }
    }
    let mu = workgroup_sum(t, elem_sum(s)) / f32(m);
    var ss = elem(0.0);
    for (var n = t / l; n < params.n; n += WG / l) {
        let row = (n * params.c + c) * hw;
        for (var j = row + t % l; j < row + hw; j += l) { let d = inp[j] - mu; ss = fma(d, d, ss); }
    }
    let variance = workgroup_sum(t, elem_sum(ss)) / f32(m);
    let r = inverseSqrt(variance + params.eps);
    let scale = r * weight[c];
    let shift = bias[c] - mu * scale;
    for (var n = t / l; n < params.n; n += WG / l) {
        let row = (n * params.c + c) * hw;
        for (var j = row + t % l; j < row + hw; j += l) {
            var v = fma(inp[j], elem(scale), elem(shift));
            if (RESIDUAL) { v += residual[j]; }
            if (RELU) { v = max(v, elem(0.0)); }
            out[j] = v;
        }
    }
    if (t == 0u) { store_statistics(c, m, mu, variance, r); }
}
