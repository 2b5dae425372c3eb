// linear_backward_input: dinp[n,c] = sum_k dout[n,k] * weight[k,c].
// Shapes: dout [N,K], weight [K,C], dinp [N,C]. Overwrites dinp; sums in k order.
// One invocation per input element. CPU twin: reference::linear_backward_input.
// Dispatch: grid(ceil(N*C / WG)).

struct Params { n: u32, c: u32, k: u32, _unused: u32 }

@group(0) @binding(0) var<storage, read_write> dinp: array<f32>;
@group(0) @binding(1) var<storage, read> dout: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

override WG: u32 = 256;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= params.n * params.c) { return; }
    let n = i / params.c;
    let c = i % params.c;
    var sum = 0.0;
    for (var k = 0u; k < params.k; k++) { sum = fma(dout[n * params.k + k], weight[k * params.c + c], sum); }
    dinp[i] = sum;
}
