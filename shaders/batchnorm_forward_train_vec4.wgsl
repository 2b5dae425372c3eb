// batchnorm_forward_train_vec4: batchnorm_forward_train (same formula, shapes, overrides and
// bindings) for H*W a multiple of 4, with inp, out and residual read and written as vec4: a
// quarter of the loads and stores (on CPU adapters each is a loop over the lanes, however wide).
// The sums add up 4 columns per invocation first, so their bits differ from batchnorm_forward_train's.
// One workgroup of WG invocations per channel; fixed-order tree reductions, two passes for the variance.
// CPU twin: reference::batchnorm_forward_train (then reference::add, reference::relu_forward). Dispatch: grid(C).

struct Params { n: u32, c: u32, hw: u32, _unused: u32, momentum: f32, eps: f32, _unused2: u32, _unused3: u32 }

@group(0) @binding(0) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> mean: array<f32>;
@group(0) @binding(2) var<storage, read_write> rstd: array<f32>;
@group(0) @binding(3) var<storage, read_write> running_mean: array<f32>;
@group(0) @binding(4) var<storage, read_write> running_var: array<f32>;
@group(0) @binding(5) var<storage, read> inp: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> weight: array<f32>;
@group(0) @binding(7) var<storage, read> bias: array<f32>;
@group(0) @binding(8) var<storage, read> residual: array<vec4<f32>>;
@group(0) @binding(9) var<uniform> params: Params;

override WG: u32 = 256;
override RESIDUAL: bool = false;
override RELU: bool = false;
var<workgroup> partial: array<f32, WG>;

// Sum of every invocation's v, the same bits every time.
fn workgroup_sum(t: u32, v: f32) -> f32 {
    partial[t] = v;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half /= 2u) {
        if (t < half) { partial[t] += partial[t + half]; }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}

// Channel c's values are N rows of HW / 4 vec4s: invocation t walks rows t / L, t / L + WG / L,
// ... and in each the vec4s t % L, t % L + L, ..., with L = min(WG, HW / 4 rounded up to a power
// of two), as batchnorm_forward_train.
fn row_lanes() -> u32 {
    return min(WG, 1u << (32u - countLeadingZeros(max(params.hw / 4u, 2u) - 1u)));
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let c = wid.x + wid.y * nwg.x;
    if (c >= params.c) { return; }
    let m = params.n * params.hw;
    let hw4 = params.hw / 4u;
    let l = row_lanes();
    var s = vec4(0.0);
    for (var n = t / l; n < params.n; n += WG / l) {
        let row = (n * params.c + c) * hw4;
        for (var j = row + t % l; j < row + hw4; j += l) { s += inp[j]; }
    }
    let mu = workgroup_sum(t, s.x + s.y + s.z + s.w) / f32(m);
    var ss = vec4(0.0);
    for (var n = t / l; n < params.n; n += WG / l) {
        let row = (n * params.c + c) * hw4;
        for (var j = row + t % l; j < row + hw4; j += l) { let d = inp[j] - mu; ss = fma(d, d, ss); }
    }
    let variance = workgroup_sum(t, ss.x + ss.y + ss.z + ss.w) / f32(m);
    let r = inverseSqrt(variance + params.eps);
    let scale = r * weight[c];
    let shift = bias[c] - mu * scale;
    for (var n = t / l; n < params.n; n += WG / l) {
        let row = (n * params.c + c) * hw4;
        for (var j = row + t % l; j < row + hw4; j += l) {
            var v = fma(inp[j], vec4(scale), vec4(shift));
            if (RESIDUAL) { v += residual[j]; }
            if (RELU) { v = max(v, vec4(0.0)); }
            out[j] = v;
        }
    }
    if (t == 0u) {
        mean[c] = mu;
        rstd[c] = r;
        let unbiased = variance * f32(m) / f32(max(m, 2u) - 1u);
        running_mean[c] = (1.0 - params.momentum) * running_mean[c] + params.momentum * mu;
        running_var[c] = (1.0 - params.momentum) * running_var[c] + params.momentum * unbiased;
    }
}
