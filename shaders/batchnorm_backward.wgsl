// batchnorm_backward: per channel c, over the M = N*H*W values of that channel, with
//   xhat = (inp - mean[c]) * rstd[c]:
//   dbias[c] = sum(dout),  dweight[c] = sum(dout * xhat),
//   dinp = weight[c] * rstd[c] / M * (M * dout - dbias[c] - xhat * dweight[c]).
// With the RELU override, the forward's ReLU (fused into batchnorm_forward_train) is undone first:
//   dout = 0 where the bit of relu_mask (of the ReLU's output) is clear, as relu_backward.
// With IN_PLACE, dinp holds inp on entry (`inp` binds a placeholder and is not read): each value
// is read before it is overwritten, by the same invocation, so the gradient needs no buffer of its own.
// Shapes: inp, dout, dinp [N,C,H,W]; weight, mean, rstd, dweight, dbias [C]; mask [ceil(N*C*H*W / 32)] u32.
// Overwrites dinp, dweight, dbias. One workgroup of WG invocations per channel; fixed-order reductions.
// CPU twin: reference::batchnorm_backward (after reference::relu_backward). Dispatch: grid(C).

struct Params { n: u32, c: u32, hw: u32, _unused: u32, momentum: f32, eps: f32, _unused2: u32, _unused3: u32 }

@group(0) @binding(0) var<storage, read_write> dinp: array<f32>;
@group(0) @binding(1) var<storage, read_write> dweight: array<f32>;
@group(0) @binding(2) var<storage, read_write> dbias: array<f32>;
@group(0) @binding(3) var<storage, read> dout: array<f32>;
@group(0) @binding(4) var<storage, read> inp: array<f32>;
@group(0) @binding(5) var<storage, read> weight: array<f32>;
@group(0) @binding(6) var<storage, read> mean: array<f32>;
@group(0) @binding(7) var<storage, read> rstd: array<f32>;
@group(0) @binding(8) var<storage, read> mask: array<u32>;
@group(0) @binding(9) var<uniform> params: Params;

override WG: u32 = 256;
override RELU: bool = false;
override IN_PLACE: bool = false;
var<workgroup> partial: array<f32, WG>;

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

// The BN input at j.
fn x(j: u32) -> f32 {
    if (IN_PLACE) { return dinp[j]; }
    return inp[j];
}

// The gradient of the BN output at j.
fn grad(j: u32) -> f32 {
    if (RELU) { return select(0.0, dout[j], (mask[j / 32u] & (1u << (j % 32u))) != 0u); }
    return dout[j];
}

// Channel c's values are N rows of HW: invocation t walks rows t / L, t / L + WG / L, ... and in
// each the columns t % L, t % L + L, ..., with L = min(WG, HW rounded up to a power of two): no
// division per value, and few idle invocations where HW is small.
fn row_lanes() -> u32 {
    return min(WG, 1u << (32u - countLeadingZeros(max(params.hw, 2u) - 1u)));
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let c = wid.x + wid.y * nwg.x;
    if (c >= params.c) { return; }
    let m = params.n * params.hw;
    let mu = mean[c];
    let r = rstd[c];
    let l = row_lanes();
    var sd = 0.0;
    var sdx = 0.0;
    for (var n = t / l; n < params.n; n += WG / l) {
        let row = (n * params.c + c) * params.hw;
        for (var j = row + t % l; j < row + params.hw; j += l) {
            let g = grad(j);
            sd += g;
            sdx = fma(g, (x(j) - mu) * r, sdx);
        }
    }
    let db = workgroup_sum(t, sd);
    let dw = workgroup_sum(t, sdx);
    let k = weight[c] * r / f32(m);
    for (var n = t / l; n < params.n; n += WG / l) {
        let row = (n * params.c + c) * params.hw;
        for (var j = row + t % l; j < row + params.hw; j += l) {
            dinp[j] = k * (f32(m) * grad(j) - db - (x(j) - mu) * r * dw);
        }
    }
    if (t == 0u) {
        dweight[c] = dw;
        dbias[c] = db;
    }
}
