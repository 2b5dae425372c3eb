// linear_forward: out[n,k] = bias[k] + sum_c inp[n,c] * weight[k,c].
// Shapes: inp [N,C], weight [K,C], bias [K], out [N,K]. Overwrites out; sums in c order.
// One invocation per output element. After prelude f32 one fma per c; linear_forward_vec4 (after
// prelude vec4, for C a multiple of 4) reads inp and weight as vec4s: a quarter of the loads, each
// adding a dot product of 4 (on CPU adapters every load is a loop over the lanes: 27.6 -> 11.6 ms
// for ResNet-50's fc at batch 8 on lavapipe). It sums 4 columns at a time, so its bits differ
// from linear_forward's.
// CPU twin: reference::linear_forward. Dispatch: grid(ceil(N*K / WG)).

struct Params { n: u32, c: u32, k: u32, _unused: u32 }

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> inp: array<elem>;
@group(0) @binding(2) var<storage, read> weight: array<elem>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;

override WG: u32 = 256;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= params.n * params.k) { return; }
    let n = i / params.k;
    let k = i % params.k;
    let cols = params.c / WIDTH; // the elements of a row of inp and weight
    var sum = 0.0;
    for (var c = 0u; c < cols; c++) { sum = dot_add(inp[n * cols + c], weight[k * cols + c], sum); }
    out[i] = sum + bias[k];
}
