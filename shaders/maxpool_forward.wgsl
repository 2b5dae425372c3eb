// maxpool_forward: out[n,c,p,q] = max over r,s < size of inp[n,c,p*stride+r-pad,q*stride+s-pad]
// (padding never wins); indices[n,c,p,q] = h*W + w of the first maximum in (r,s) order, as PyTorch.
// Shapes: inp [N,C,H,W], out and indices [N,C,P,Q], P = (H + 2*pad - size) / stride + 1.
// Overwrites out and indices. The ImageNet stem uses 3x3/2 pad 1.
// Work split (`PER_ELEMENT`, prelude row_walk): on GPUs one invocation per output element, so
// that neighbouring invocations touch neighbouring addresses; on CPU adapters one invocation per
// output row (n,c,p), walking its Q columns: two integer divisions a row, which CPU adapters run
// one lane at a time (one invocation per element paid four per element).
// CPU twin: reference::maxpool_forward.
// Dispatch: grid(ceil(N*C*P*Q / WG)) per element, grid(ceil(N*C*P / WG)) per row.

struct Params { n: u32, c: u32, h: u32, w: u32, p: u32, q: u32, size: u32, stride: u32, pad: u32,
                _unused: u32, _unused2: u32, _unused3: u32 }

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read_write> indices: array<u32>;
@group(0) @binding(2) var<storage, read> inp: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

override WG: u32 = 256;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    // The invocation's output row (n,c,p) and its columns: one, or all Q.
    let span = row_span(gid.x + gid.y * nwg.x * WG, params.q);
    let row = span.row;
    if (row >= params.n * params.c * params.p) { return; }
    let p = row % params.p;
    let plane = (row / params.p) * params.h * params.w;
    for (var q = span.first; q < span.last; q++) {
        var best = -3.402823e38;
        var best_index = 0u;
        var found = false;
        for (var r = 0u; r < params.size; r++) {
            let h = i32(p * params.stride + r) - i32(params.pad);
            if (h < 0 || h >= i32(params.h)) { continue; }
            for (var s = 0u; s < params.size; s++) {
                let w = i32(q * params.stride + s) - i32(params.pad);
                if (w < 0 || w >= i32(params.w)) { continue; }
                let index = u32(h) * params.w + u32(w);
                let v = inp[plane + index];
                if (!found || v > best) {
                    best = v;
                    best_index = index;
                    found = true;
                }
            }
        }
        out[row * params.q + q] = best;
        indices[row * params.q + q] = best_index;
    }
}
