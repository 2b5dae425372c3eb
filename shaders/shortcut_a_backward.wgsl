// shortcut_a_backward: with lo = (K - C) / 2,
//   dinp[n,c,h,w] += dout[n,c+lo,h/2,w/2] if h and w are even (else nothing reaches it).
// Shapes: dout [N,K,P,Q], dinp [N,C,H,W]. Accumulates into dinp (`+=`): the block input's
// gradient, which the branch wrote.
// One invocation per input element. CPU twin: reference::shortcut_a_backward.
// Dispatch: grid(ceil(N*C*H*W / WG)).

struct Params { n: u32, c: u32, h: u32, w: u32, k: u32, p: u32, q: u32, _unused: u32 }

@group(0) @binding(0) var<storage, read_write> dinp: array<f32>;
@group(0) @binding(1) var<storage, read> dout: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;

override WG: u32 = 256;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= params.n * params.c * params.h * params.w) { return; }
    let w = i % params.w;
    let h = (i / params.w) % params.h;
    let c = (i / (params.h * params.w)) % params.c;
    let n = i / (params.c * params.h * params.w);
    let lo = (params.k - params.c) / 2u;
    if (h % 2u == 0u && w % 2u == 0u) {
        dinp[i] += dout[((n * params.k + c + lo) * params.p + h / 2u) * params.q + w / 2u];
    }
}
