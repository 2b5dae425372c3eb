// linear_backward_weight: dweight[k,c] = sum_n dout[n,k] * inp[n,c];  dbias[k] = sum_n dout[n,k].
// Shapes: dout [N,K], inp [N,C], dweight [K,C], dbias [K]. Overwrites dweight and dbias; sums in n order.
// One invocation per element of the matrix [dweight | dbias]: K x (C+1) after prelude f32;
// linear_backward_weight_vec4 (after prelude vec4, for C a multiple of 4) owns the 4 weights
// 4j .. 4j+3 of row k (j = C/4 is the row's bias) and loads a vec4 of inputs and one dout per n
// where 4 invocations made 8 scalar loads (on CPU adapters every load is a loop over the lanes).
// Each sum runs in n order with the same fma as linear_backward_weight, so the bits are the same.
// CPU twin: reference::linear_backward_weight.
// Dispatch: grid(ceil(K*(C+1) / WG)), linear_backward_weight_vec4 grid(ceil(K*(C/4+1) / WG)).

struct Params { n: u32, c: u32, k: u32, _unused: u32 }

@group(0) @binding(0) var<storage, read_write> dweight: array<elem>;
@group(0) @binding(1) var<storage, read_write> dbias: array<f32>;
@group(0) @binding(2) var<storage, read> dout: array<f32>;
@group(0) @binding(3) var<storage, read> inp: array<elem>;
@group(0) @binding(4) var<uniform> params: Params;

override WG: u32 = 256;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    let cols = params.c / WIDTH; // the elements of a row of dweight and inp
    if (i >= params.k * (cols + 1u)) { return; }
    let k = i / (cols + 1u);
    let j = i % (cols + 1u);
    if (j == cols) {
        var sum = 0.0;
        for (var n = 0u; n < params.n; n++) { sum += dout[n * params.k + k]; }
        dbias[k] = sum;
    } else {
        var sum = elem(0.0);
        for (var n = 0u; n < params.n; n++) { sum = fma(elem(dout[n * params.k + k]), inp[n * cols + j], sum); }
        dweight[k * cols + j] = sum;
    }
}
