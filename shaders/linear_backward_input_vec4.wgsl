// linear_backward_input_vec4: linear_backward_input (same formula, shapes and bindings) for C a
// multiple of 4, weight and dinp as vec4s: an invocation owns the 4 input features 4j .. 4j+3 of
// row n and loads a vec4 of weights and one dout per k where 4 invocations made 8 scalar loads (on
// CPU adapters every load is a loop over the lanes). Each of the 4 sums runs in k order with the
// same fma as linear_backward_input, so the bits are the same.
// CPU twin: reference::linear_backward_input. Dispatch: grid(ceil(N*C/4 / WG)).

struct Params { n: u32, c: u32, k: u32, _unused: u32 }

@group(0) @binding(0) var<storage, read_write> dinp: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> dout: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<vec4<f32>>;
@group(0) @binding(3) var<uniform> params: Params;

override WG: u32 = 256;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    let c4 = params.c / 4u;
    if (i >= params.n * c4) { return; }
    let n = i / c4;
    let j = i % c4;
    var sum = vec4(0.0);
    for (var k = 0u; k < params.k; k++) { sum = fma(vec4(dout[n * params.k + k]), weight[k * c4 + j], sum); }
    dinp[i] = sum;
}
