// maxpool_backward: dinp[n,c,h,w] = sum of dout[n,c,p,q] over the windows (p,q) that contain (h,w)
// and whose saved maximum indices[n,c,p,q] is h*W + w. Added up per input element in (p,q)
// order, so there are no atomics and the bits are fixed.
// Shapes: dout and indices [N,C,P,Q], dinp [N,C,H,W]. Overwrites dinp. One invocation per input
// row (n,c,h): it zeroes the row, then walks the windows p that cover row h and adds each
// window's gradient to the column its maximum came from, if that lies in row h (2 loads a window
// and window row, where one invocation per element loaded 2 for each window covering it and paid
// six integer divisions, which CPU adapters run one lane at a time).
// CPU twin: reference::maxpool_backward. Dispatch: grid(ceil(N*C*H / WG)).

struct Params { n: u32, c: u32, h: u32, w: u32, p: u32, q: u32, size: u32, stride: u32, pad: u32,
                _unused: u32, _unused2: u32, _unused3: u32 }

@group(0) @binding(0) var<storage, read_write> dinp: array<f32>;
@group(0) @binding(1) var<storage, read> dout: array<f32>;
@group(0) @binding(2) var<storage, read> indices: array<u32>;
@group(0) @binding(3) var<uniform> params: Params;

override WG: u32 = 256;

// The first output row whose window covers input row x: p*stride - pad <= x < p*stride - pad + size.
fn first_window(x: u32) -> u32 {
    let lo = i32(x + params.pad) - i32(params.size) + 1;
    return u32(max(lo + i32(params.stride) - 1, 0)) / params.stride;
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = gid.x + gid.y * nwg.x * WG;
    if (row >= params.n * params.c * params.h) { return; }
    let h = row % params.h;
    let plane = row / params.h;
    let at = row * params.w;
    for (var w = 0u; w < params.w; w++) { dinp[at + w] = 0.0; }
    // The maxima of row h have indices in [h*W, h*W + W).
    let lo = h * params.w;
    for (var p = first_window(h); p < params.p && p * params.stride <= h + params.pad; p++) {
        for (var q = 0u; q < params.q; q++) {
            let j = (plane * params.p + p) * params.q + q;
            let index = indices[j];
            if (index >= lo && index < lo + params.w) { dinp[at + index - lo] += dout[j]; }
        }
    }
}
