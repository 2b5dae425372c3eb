// batchnorm_forward_eval: out[n,c,h,w] = relu?((inp[n,c,h,w] - running_mean[c]) / sqrt(running_var[c] + eps)
//   * weight[c] + bias[c] + residual?[n,c,h,w])   (inference: the running statistics, not the batch's;
//   the RESIDUAL and RELU overrides fuse a block's add and ReLU as in batchnorm_forward_train).
// Shapes: inp, out, residual [N,C,H,W]; weight, bias, running_mean, running_var [C]. Overwrites out.
// One invocation per element (after prelude f32: per value). batchnorm_forward_eval_vec4 (after
// prelude vec4, for H*W a multiple of 4) reads and writes inp, out and residual as vec4s: one
// invocation per 4 values of a channel, so a quarter of the loads of the channel's statistics and
// of the integer divisions that find the channel (which CPU adapters run one lane at a time).
// With BATCH, the last step of the training forward on GPUs (after batchnorm_forward_chunks and
// batchnorm_forward_combine): running_mean and running_var bind the batch's mean and rstd =
// 1 / sqrt(var + eps), and out = relu?((inp - mean[c]) * rstd[c] * weight[c] + bias[c] + residual?).
// CPU twin: reference::batchnorm_forward_eval (then add, relu_forward); with BATCH,
// reference::batchnorm_forward_train (of the three steps together).
// Dispatch: grid(ceil(N*C*H*W / WG)), _vec4 grid(ceil(N*C*H*W / 4 / WG)).

@group(0) @binding(0) var<storage, read_write> out: array<elem>;
@group(0) @binding(1) var<storage, read> inp: array<elem>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> running_mean: array<f32>;
@group(0) @binding(5) var<storage, read> running_var: array<f32>;
@group(0) @binding(6) var<storage, read> residual: array<elem>;
@group(0) @binding(7) var<uniform> params: Params;

override WG: u32 = 256;
override RESIDUAL: bool = false;
override RELU: bool = false;
override BATCH: bool = false;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    let hw = params.hw / WIDTH; // a plane, in elements
    if (i >= params.n * params.c * hw) { return; }
    let c = (i / hw) % params.c;
    var r = running_var[c];
    if (!BATCH) { r = inverseSqrt(r + params.eps); }
    let scale = r * weight[c];
    var v = (inp[i] - running_mean[c]) * scale + bias[c];
    if (RESIDUAL) { v += residual[i]; }
    if (RELU) { v = max(v, elem(0.0)); }
    out[i] = v;
}
