// maxpool_backward: dinp[n,c,h,w] = sum of dout[n,c,p,q] over the windows (p,q) that contain (h,w)
// and whose saved maximum indices[n,c,p,q] is h*W + w. Gathered per input element in (p,q)
// order, so there are no atomics and the bits are fixed (the same in both work splits).
// Shapes: dout and indices [N,C,P,Q], dinp [N,C,H,W]. Overwrites dinp.
// Work split (`PER_ELEMENT`, prelude row_walk): an invocation owns columns [first, last) of an
// input row (n,c,h): it zeroes them, then walks the windows (p,q) that cover them and adds each
// window's gradient to the column its maximum came from, if that is one of its own. On GPUs it
// owns one column (one invocation per input element: neighbouring invocations touch neighbouring
// addresses); on CPU adapters the whole row (2 loads a window and window row, where one
// invocation per element loaded 2 for each window covering it and paid six integer divisions,
// which CPU adapters run one lane at a time).
// CPU twin: reference::maxpool_backward.
// Dispatch: grid(ceil(N*C*H*W / WG)) per element, grid(ceil(N*C*H / WG)) per row.

struct Params { n: u32, c: u32, h: u32, w: u32, p: u32, q: u32, size: u32, stride: u32, pad: u32,
                _unused: u32, _unused2: u32, _unused3: u32 }

@group(0) @binding(0) var<storage, read_write> dinp: array<f32>;
@group(0) @binding(1) var<storage, read> dout: array<f32>;
@group(0) @binding(2) var<storage, read> indices: array<u32>;
@group(0) @binding(3) var<uniform> params: Params;

override WG: u32 = 256;

// The first window (p or q) that covers input row or column x:
// p*stride - pad <= x < p*stride - pad + size.
fn first_window(x: u32) -> u32 {
    let lo = i32(x + params.pad) - i32(params.size) + 1;
    return u32(max(lo + i32(params.stride) - 1, 0)) / params.stride;
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    // The invocation's input row (n,c,h) and its columns: one, or all W.
    let span = row_span(gid.x + gid.y * nwg.x * WG, params.w);
    let row = span.row;
    if (row >= params.n * params.c * params.h) { return; }
    let h = row % params.h;
    let plane = row / params.h;
    let at = row * params.w;
    for (var w = span.first; w < span.last; w++) { dinp[at + w] = 0.0; }
    // The windows q0 <= q < q1 cover these columns; their maxima have indices in [lo, hi).
    let q0 = first_window(span.first);
    let q1 = min(params.q, (span.last - 1u + params.pad) / params.stride + 1u);
    let lo = h * params.w + span.first;
    let hi = h * params.w + span.last;
    let base = plane * params.h * params.w;
    for (var p = first_window(h); p < params.p && p * params.stride <= h + params.pad; p++) {
        for (var q = q0; q < q1; q++) {
            let j = (plane * params.p + p) * params.q + q;
            let index = indices[j];
            if (index >= lo && index < hi) { dinp[base + index] += dout[j]; }
        }
    }
}
