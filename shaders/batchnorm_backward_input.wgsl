// batchnorm_backward_input: the last step of batch norm's backward on GPUs, after
// batchnorm_backward_combine. With xhat = (inp - mean[c]) * rstd[c], g the gradient of the BN
// output (dout, after the ReLU's backward with RELU; prelude bn_grad) and M = N*H*W:
//   dinp = weight[c] * rstd[c] / M * (M * g - dbias[c] - xhat * dweight[c]),
// or with FROZEN (mean and rstd bind the running mean and variance, constants to the gradient):
//   dinp = weight[c] * rstd[c] * g, rstd[c] = 1 / sqrt(var[c] + eps).
// With IN_PLACE, dinp holds inp on entry (`inp` binds a placeholder and is not read): each value
// is read before it is overwritten, by the same invocation.
// Shapes: inp, dout, dinp [N,C,H,W]; weight, mean, rstd, dweight, dbias [C]; mask
// [ceil(N*C*H*W / 32)] u32. Overwrites dinp.
// One invocation per element (after prelude f32: per value). batchnorm_backward_input_vec4 (after
// prelude vec4, for H*W a multiple of 4) reads and writes dinp, dout and inp as vec4s, the 4
// values of a vec4 sharing a mask word.
// CPU twin: reference::batchnorm_backward's dinp (after reference::relu_backward); with FROZEN,
// reference::batchnorm_backward_frozen's. Dispatch: grid(ceil(N*C*H*W / WG)), _vec4
// grid(ceil(N*C*H*W / 4 / WG)).

@group(0) @binding(0) var<storage, read_write> dinp: array<elem>;
@group(0) @binding(1) var<storage, read> dout: array<elem>;
@group(0) @binding(2) var<storage, read> inp: array<elem>;
@group(0) @binding(3) var<storage, read> weight: array<f32>;
@group(0) @binding(4) var<storage, read> mean: array<f32>;
@group(0) @binding(5) var<storage, read> rstd: array<f32>;
@group(0) @binding(6) var<storage, read> dweight: array<f32>;
@group(0) @binding(7) var<storage, read> dbias: array<f32>;
@group(0) @binding(8) var<storage, read> mask: array<u32>;
@group(0) @binding(9) var<uniform> params: Params;

override WG: u32 = 256;
override IN_PLACE: bool = false;

// The BN input at element j.
fn x(j: u32) -> elem {
    if (IN_PLACE) { return dinp[j]; }
    return inp[j];
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = gid.x + gid.y * nwg.x * WG;
    let hw = params.hw / WIDTH; // a plane, in elements
    if (j >= params.n * params.c * hw) { return; }
    let c = (j / hw) % params.c;
    let r = channel_rstd(c);
    if (FROZEN) {
        dinp[j] = weight[c] * r * grad(j);
        return;
    }
    let m = f32(params.n * params.hw);
    dinp[j] = weight[c] * r / m * (m * grad(j) - dbias[c] - (x(j) - mean[c]) * r * dweight[c]);
}
