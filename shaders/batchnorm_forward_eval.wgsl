// batchnorm_forward_eval: out[n,c,h,w] = relu?((inp[n,c,h,w] - running_mean[c]) / sqrt(running_var[c] + eps)
//   * weight[c] + bias[c] + residual?[n,c,h,w])   (inference: the running statistics, not the batch's;
//   the RESIDUAL and RELU overrides fuse a block's add and ReLU as in batchnorm_forward_train).
// Shapes: inp, out, residual [N,C,H,W]; weight, bias, running_mean, running_var [C]. Overwrites out.
// One invocation per element. CPU twin: reference::batchnorm_forward_eval (then add, relu_forward).
// Dispatch: grid(ceil(N*C*H*W / WG)).

struct Params { n: u32, c: u32, hw: u32, _unused: u32, momentum: f32, eps: f32, _unused2: u32, _unused3: u32 }

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> inp: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> running_mean: array<f32>;
@group(0) @binding(5) var<storage, read> running_var: array<f32>;
@group(0) @binding(6) var<storage, read> residual: array<f32>;
@group(0) @binding(7) var<uniform> params: Params;

override WG: u32 = 256;
override RESIDUAL: bool = false;
override RELU: bool = false;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= params.n * params.c * params.hw) { return; }
    let c = (i / params.hw) % params.c;
    let scale = inverseSqrt(running_var[c] + params.eps) * weight[c];
    var v = (inp[i] - running_mean[c]) * scale + bias[c];
    if (RESIDUAL) { v += residual[i]; }
    if (RELU) { v = max(v, 0.0); }
    out[i] = v;
}
