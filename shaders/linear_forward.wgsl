// linear_forward: out[n,k] = bias[k] + sum_c inp[n,c] * weight[k,c].
// Shapes: inp [N,C], weight [K,C], bias [K], out [N,K]. Overwrites out; sums in c order.
// One invocation per output element. CPU twin: reference::linear_forward. Dispatch: grid(ceil(N*K / WG)).

struct Params { n: u32, c: u32, k: u32, _unused: u32 }

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> inp: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;

override WG: u32 = 256;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= params.n * params.k) { return; }
    let n = i / params.k;
    let k = i % params.k;
    var sum = 0.0;
    for (var c = 0u; c < params.c; c++) { sum = fma(inp[n * params.c + c], weight[k * params.c + c], sum); }
    out[i] = sum + bias[k];
}
