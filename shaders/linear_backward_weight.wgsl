// linear_backward_weight: dweight[k,c] = sum_n dout[n,k] * inp[n,c];  dbias[k] = sum_n dout[n,k].
// Shapes: dout [N,K], inp [N,C], dweight [K,C], dbias [K]. Overwrites dweight and dbias; sums in n order.
// One invocation per element of the K x (C+1) matrix [dweight | dbias].
// CPU twin: reference::linear_backward_weight. Dispatch: grid(ceil(K*(C+1) / WG)).

struct Params { n: u32, c: u32, k: u32, _unused: u32 }

@group(0) @binding(0) var<storage, read_write> dweight: array<f32>;
@group(0) @binding(1) var<storage, read_write> dbias: array<f32>;
@group(0) @binding(2) var<storage, read> dout: array<f32>;
@group(0) @binding(3) var<storage, read> inp: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;

override WG: u32 = 256;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= params.k * (params.c + 1u)) { return; }
    let k = i / (params.c + 1u);
    let c = i % (params.c + 1u);
    var sum = 0.0;
    if (c == params.c) {
        for (var n = 0u; n < params.n; n++) { sum += dout[n * params.k + k]; }
        dbias[k] = sum;
    } else {
        for (var n = 0u; n < params.n; n++) { sum = fma(dout[n * params.k + k], inp[n * params.c + c], sum); }
        dweight[k * params.c + c] = sum;
    }
}
