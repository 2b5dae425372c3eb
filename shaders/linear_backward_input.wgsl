// linear_backward_input: dinp[n,c] = sum_k dout[n,k] * weight[k,c].
// Shapes: dout [N,K], weight [K,C], dinp [N,C]. Overwrites dinp; sums in k order.
// One invocation per element of dinp: an input feature after prelude f32; linear_backward_input_vec4
// (after prelude vec4, for C a multiple of 4) owns the 4 input features 4j .. 4j+3 of row n and
// loads a vec4 of weights and one dout per k where 4 invocations made 8 scalar loads (on CPU
// adapters every load is a loop over the lanes). Each of the 4 sums runs in k order with the same
// fma as linear_backward_input, so the bits are the same.
// CPU twin: reference::linear_backward_input.
// Dispatch: grid(ceil(N*C / WG)), linear_backward_input_vec4 grid(ceil(N*C/4 / WG)).

struct Params { n: u32, c: u32, k: u32, _unused: u32 }

@group(0) @binding(0) var<storage, read_write> dinp: array<elem>;
@group(0) @binding(1) var<storage, read> dout: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<elem>;
@group(0) @binding(3) var<uniform> params: Params;

override WG: u32 = 256;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    let cols = params.c / WIDTH; // the elements of a row of dinp and weight
    if (i >= params.n * cols) { return; }
    let n = i / cols;
    let j = i % cols;
    var sum = elem(0.0);
    for (var k = 0u; k < params.k; k++) { sum = fma(elem(dout[n * params.k + k]), weight[k * cols + j], sum); }
    dinp[i] = sum;
}
