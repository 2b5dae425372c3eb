// batchnorm_backward: per channel c, over the M = N*H*W values of that channel, with
//   xhat = (inp - mean[c]) * rstd[c]:
//   dbias[c] = sum(dout),  dweight[c] = sum(dout * xhat),
//   dinp = weight[c] * rstd[c] / M * (M * dout - dbias[c] - xhat * dweight[c]).
// With the RELU override, the forward's ReLU (fused into batchnorm_forward_train) is undone first:
//   dout = 0 where the bit of relu_mask (of the ReLU's output) is clear, as relu_backward.
// With FROZEN (batch norm with frozen running statistics, which the forward normalised with), `mean`
// and `rstd` bind the running mean and the running variance, rstd[c] = 1 / sqrt(var[c] + eps) is
// computed here, and the statistics are constants to the gradient: dinp = weight[c] * rstd[c] * dout
// (dweight and dbias as above).
// With IN_PLACE, dinp holds inp on entry (`inp` binds a placeholder and is not read): each value
// is read before it is overwritten, by the same invocation, so the gradient needs no buffer of its own.
// Shapes: inp, dout, dinp [N,C,H,W]; weight, mean, rstd, dweight, dbias [C]; mask [ceil(N*C*H*W / 32)] u32.
// Overwrites dinp, dweight, dbias. One workgroup of WG invocations per channel; fixed-order reductions.
// batchnorm_backward_vec4 (after prelude vec4, for H*W a multiple of 4) reads and writes dinp, dout
// and inp as vec4s: a quarter of the loads and stores (on CPU adapters each is a loop over the
// lanes, however wide); the 4 values of a vec4 share a mask word. Its sums add up 4 columns per
// invocation first, so their bits differ from batchnorm_backward's (after prelude f32).
// CPU twin: reference::batchnorm_backward (after reference::relu_backward); with FROZEN,
// reference::batchnorm_backward_frozen. Dispatch: grid(C).

@group(0) @binding(0) var<storage, read_write> dinp: array<elem>;
@group(0) @binding(1) var<storage, read_write> dweight: array<f32>;
@group(0) @binding(2) var<storage, read_write> dbias: array<f32>;
@group(0) @binding(3) var<storage, read> dout: array<elem>;
@group(0) @binding(4) var<storage, read> inp: array<elem>;
@group(0) @binding(5) var<storage, read> weight: array<f32>;
@group(0) @binding(6) var<storage, read> mean: array<f32>;
@group(0) @binding(7) var<storage, read> rstd: array<f32>;
@group(0) @binding(8) var<storage, read> mask: array<u32>;
@group(0) @binding(9) var<uniform> params: Params;

override IN_PLACE: bool = false;

// The BN input at element j.
fn x(j: u32) -> elem {
    if (IN_PLACE) { return dinp[j]; }
    return inp[j];
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let c = wid.x + wid.y * nwg.x;
    if (c >= params.c) { return; }
    let m = params.n * params.hw;
    let mu = mean[c];
    let r = channel_rstd(c);
    let hw = params.hw / WIDTH; // a row of the channel, in elements
    let l = row_lanes(hw);
    var sd = elem(0.0);
    var sdx = elem(0.0);
    for (var n = t / l; n < params.n; n += WG / l) {
        let row = (n * params.c + c) * hw;
        for (var j = row + t % l; j < row + hw; j += l) {
            let g = grad(j);
            sd += g;
            sdx = fma(g, (x(j) - mu) * r, sdx);
        }
    }
    let db = workgroup_sum(t, elem_sum(sd));
    let dw = workgroup_sum(t, elem_sum(sdx));
    let k = weight[c] * r / f32(m);
    for (var n = t / l; n < params.n; n += WG / l) {
        let row = (n * params.c + c) * hw;
        for (var j = row + t % l; j < row + hw; j += l) {
            if (FROZEN) {
                dinp[j] = weight[c] * r * grad(j);
            } else {
                dinp[j] = k * (f32(m) * grad(j) - db - (x(j) - mu) * r * dw);
            }
        }
    }
    if (t == 0u) {
        dweight[c] = dw;
        dbias[c] = db;
    }
}
