// batchnorm_forward_combine: the second step of the training forward on GPUs, after
// batchnorm_forward_chunks. Per channel c, from its chunks' (mean_k, M2_k) over n_k values each
// (sum of n_k = M = N*H*W):
//   mean[c] = sum(n_k * mean_k) / M,
//   var = sum(M2_k + n_k * (mean_k - mean[c])^2) / M (biased),  rstd[c] = 1 / sqrt(var + eps),
//   running_mean = (1 - momentum) * running_mean + momentum * mean[c],
//   running_var  = (1 - momentum) * running_var  + momentum * var * M / (M - 1) (unbiased), as PyTorch.
// The variance is Chan et al.'s combination of the chunks' (n_k, mean_k, M2_k) over all of them at
// once: every term is non-negative, so nothing cancels. batchnorm_forward_eval with BATCH then
// writes out from mean and rstd.
// Shapes: chunks [C,CHUNKS,2]; mean, rstd, running_mean, running_var [C]. Overwrites mean, rstd;
// updates running_mean and running_var in place.
// One workgroup of WG invocations per channel: invocation t takes chunks t, t + WG, ... in turn,
// then a fixed-order tree sum.
// CPU twin: reference::batchnorm_forward_train (of the three steps together). Dispatch: grid(C).

@group(0) @binding(0) var<storage, read_write> mean: array<f32>;
@group(0) @binding(1) var<storage, read_write> rstd: array<f32>;
@group(0) @binding(2) var<storage, read_write> running_mean: array<f32>;
@group(0) @binding(3) var<storage, read_write> running_var: array<f32>;
@group(0) @binding(4) var<storage, read> chunks: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let c = wid.x + wid.y * nwg.x;
    if (c >= params.c) { return; }
    let m = params.n * params.hw;
    let at = 2u * c * params.chunks; // chunk k of the channel: chunks[at + 2k], chunks[at + 2k + 1]
    var s = 0.0;
    for (var k = t; k < params.chunks; k += WG) { s = fma(f32(chunk_values(k)), chunks[at + 2u * k], s); }
    let mu = workgroup_sum(t, s) / f32(m);
    var ss = 0.0;
    for (var k = t; k < params.chunks; k += WG) {
        let d = chunks[at + 2u * k] - mu;
        ss += fma(f32(chunk_values(k)) * d, d, chunks[at + 2u * k + 1u]);
    }
    let variance = workgroup_sum(t, ss) / f32(m);
    if (t == 0u) { store_statistics(c, m, mu, variance, inverseSqrt(variance + params.eps)); }
}
