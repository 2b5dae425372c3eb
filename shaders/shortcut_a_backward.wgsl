// shortcut_a_backward: with lo = (K - C) / 2,
//   dinp[n,c,h,w] += dout[n,c+lo,h/2,w/2] if h and w are even (else nothing reaches it).
// Shapes: dout [N,K,P,Q], dinp [N,C,H,W]. Accumulates into dinp (`+=`): the block input's
// gradient, which the branch wrote. Each even input element takes one value, so no two
// invocations write the same address.
// Work split (`PER_ELEMENT`, prelude row_walk): on GPUs one invocation per dout element that
// reaches dinp (n,c+lo,y,x), so that neighbouring invocations read neighbouring addresses and
// write every other one; on CPU adapters one invocation per even input row (n,c,2y), walking its
// even columns: four integer divisions a row, where one invocation per element paid six per
// element (see shortcut_a_forward). Odd rows and columns get nothing.
// CPU twin: reference::shortcut_a_backward.
// Dispatch: grid(ceil(N*C*P*Q / WG)) per element, grid(ceil(N*C*P / WG)) per row.

struct Params { n: u32, c: u32, h: u32, w: u32, k: u32, p: u32, q: u32, _unused: u32 }

@group(0) @binding(0) var<storage, read_write> dinp: array<f32>;
@group(0) @binding(1) var<storage, read> dout: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;

override WG: u32 = 256;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    // The invocation's row (n,c,y) of the P x Q even positions and its columns: one, or all Q.
    let span = row_span(gid.x + gid.y * nwg.x * WG, params.q);
    let row = span.row;
    if (row >= params.n * params.c * params.p) { return; }
    let y = row % params.p;
    let c = (row / params.p) % params.c;
    let n = row / (params.p * params.c);
    let lo = (params.k - params.c) / 2u;
    let at = ((n * params.c + c) * params.h + 2u * y) * params.w;
    let src = ((n * params.k + c + lo) * params.p + y) * params.q;
    for (var x = span.first; x < span.last; x++) { dinp[at + 2u * x] += dout[src + x]; }
}
