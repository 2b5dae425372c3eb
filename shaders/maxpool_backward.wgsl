// maxpool_backward: dinp[n,c,h,w] = sum of dout[n,c,p,q] over the windows (p,q) that contain (h,w)
// and whose saved maximum indices[n,c,p,q] is h*W + w. Gathered per input element in (p,q) order,
// so there are no atomics and the bits are fixed.
// Shapes: dout and indices [N,C,P,Q], dinp [N,C,H,W]. Overwrites dinp. One invocation per input element.
// CPU twin: reference::maxpool_backward. Dispatch: grid(ceil(N*C*H*W / WG)).

struct Params { n: u32, c: u32, h: u32, w: u32, p: u32, q: u32, size: u32, stride: u32, pad: u32,
                _unused: u32, _unused2: u32, _unused3: u32 }

@group(0) @binding(0) var<storage, read_write> dinp: array<f32>;
@group(0) @binding(1) var<storage, read> dout: array<f32>;
@group(0) @binding(2) var<storage, read> indices: array<u32>;
@group(0) @binding(3) var<uniform> params: Params;

override WG: u32 = 256;

// The output rows (or columns) whose window covers input row x: p*stride - pad <= x < p*stride - pad + size.
fn first_window(x: u32) -> u32 {
    let lo = i32(x + params.pad) - i32(params.size) + 1;
    return u32(max(lo + i32(params.stride) - 1, 0)) / params.stride;
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= params.n * params.c * params.h * params.w) { return; }
    let w = i % params.w;
    let h = (i / params.w) % params.h;
    let plane = i / (params.h * params.w);
    let index = h * params.w + w;
    var sum = 0.0;
    for (var p = first_window(h); p < params.p && p * params.stride <= h + params.pad; p++) {
        for (var q = first_window(w); q < params.q && q * params.stride <= w + params.pad; q++) {
            let j = (plane * params.p + p) * params.q + q;
            if (indices[j] == index) { sum += dout[j]; }
        }
    }
    dinp[i] = sum;
}
