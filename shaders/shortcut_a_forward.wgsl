// shortcut_a_forward: the paper's option-A shortcut (no parameters): take even rows and columns,
// pad zero channels equally before and after. With lo = (K - C) / 2:
//   out[n,k,p,q] = inp[n,k-lo,2p,2q] if lo <= k < lo + C, else 0.
// Shapes: inp [N,C,H,W], out [N,K,P,Q] with P = ceil(H/2), Q = ceil(W/2). Overwrites out.
// Work split (`PER_ELEMENT`, prelude row_walk): on GPUs one invocation per output element, so
// that neighbouring invocations touch neighbouring addresses; on CPU adapters one invocation per
// output row (n,k,p), walking its Q columns: the row's indices cost four integer divisions, which
// CPU adapters run one lane at a time (one invocation per element paid six per element: 1.9 ms
// for ResNet-20's [32,16,32,32] on lavapipe).
// CPU twin: reference::shortcut_a_forward.
// Dispatch: grid(ceil(N*K*P*Q / WG)) per element, grid(ceil(N*K*P / WG)) per row.

struct Params { n: u32, c: u32, h: u32, w: u32, k: u32, p: u32, q: u32, _unused: u32 }

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> inp: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;

override WG: u32 = 256;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    // The invocation's output row (n,k,p) and its columns: one, or all Q.
    let span = row_span(gid.x + gid.y * nwg.x * WG, params.q);
    let row = span.row;
    if (row >= params.n * params.k * params.p) { return; }
    let p = row % params.p;
    let k = (row / params.p) % params.k;
    let n = row / (params.p * params.k);
    let lo = (params.k - params.c) / 2u;
    let at = row * params.q;
    if (k < lo || k >= lo + params.c) {
        for (var q = span.first; q < span.last; q++) { out[at + q] = 0.0; }
        return;
    }
    let src = ((n * params.c + k - lo) * params.h + 2u * p) * params.w;
    for (var q = span.first; q < span.last; q++) { out[at + q] = inp[src + 2u * q]; }
}
