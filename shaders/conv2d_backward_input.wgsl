// conv2d_backward_input: dinp[n,c,h,w] = sum_{k,r,s} weight[k,c,r,s] * dout[n,k,p,q]
//   over the (p,q) with p*stride+r-pad = h and q*stride+s-pad = w.
// Shapes: dout [N,K,P,Q], weight [K,C,R,S], dinp [N,C,H,W]. Overwrites dinp, or with ACCUMULATE adds
// to it (`+=`: a projection shortcut's gradient joins the branch's); fixed summation order.
// The direct path (CPU adapters; GPUs run conv2d_tiled TRANSPOSED): implicit GEMM, no col2im
// buffer: rows m = c (C of them), columns j = (n,h,w) (N*H*W), reduction e = (k,r,s) (K*R*S); each
// output gathers its terms, so no atomics are needed. WG_M x WG_N invocations of DM x DN outputs.
// CPU twin: reference::conv2d_backward_input. Dispatch: (ceil(N*H*W / (WG_N*DN)), ceil(C / (WG_M*DM)), 1).

@group(0) @binding(0) var<storage, read_write> dinp: array<f32>;
@group(0) @binding(1) var<storage, read> dout: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

override ACCUMULATE: bool = false;

fn store(m: u32, j: u32, v: f32) {
    let hw = params.h * params.w;
    if (m >= params.c || j >= params.n * hw) { return; }
    let o = ((j / hw) * params.c + m) * hw + j % hw;
    if (ACCUMULATE) { dinp[o] += v; } else { dinp[o] = v; }
}

// Direct path: no workgroup memory and no barriers. Each invocation owns a DM x DN block in
// registers and walks the reduction tap by tap: for each (r, s) its columns' output positions
// (p, q) and stride masks are computed once (the only divisions), then reused for every output
// channel k. Per step: DM weight and DN gradient loads for DM*DN multiply-adds.
fn direct(lid: vec3<u32>, m0: u32, j0: u32) -> array<f32, DM * DN> {
    let rs = params.r * params.s;
    let hw = params.h * params.w;
    let pq = params.p * params.q;
    let st = i32(params.stride);
    var rows: array<u32, DM>;
    for (var i = 0u; i < DM; i++) { rows[i] = min(m0 + lid.y + i * WG_M, params.c - 1u) * rs; }
    var image: array<u32, DN>;
    var hp: array<i32, DN>;
    var wp: array<i32, DN>;
    for (var j = 0u; j < DN; j++) {
        let col = min(j0 + lid.x + j * WG_N, params.n * hw - 1u);
        image[j] = (col / hw) * params.k * pq;
        hp[j] = i32((col % hw) / params.w + params.pad);
        wp[j] = i32(col % params.w + params.pad);
    }
    var acc: array<f32, DM * DN>;
    for (var r = 0u; r < params.r; r++) {
        for (var s = 0u; s < params.s; s++) {
            var at: array<u32, DN>;
            var inside: array<bool, DN>;
            for (var j = 0u; j < DN; j++) {
                let ph = hp[j] - i32(r);
                let qw = wp[j] - i32(s);
                let p = ph / st;
                let q = qw / st;
                inside[j] = ph >= 0 && qw >= 0 && ph % st == 0 && qw % st == 0 && p < i32(params.p) && q < i32(params.q);
                at[j] = image[j] + u32(clamp(p, 0, i32(params.p) - 1)) * params.q + u32(clamp(q, 0, i32(params.q) - 1));
            }
            let tap = r * params.s + s;
            for (var k = 0u; k < params.k; k++) {
                var a: array<f32, DM>;
                for (var i = 0u; i < DM; i++) { a[i] = weight[k * params.c * rs + rows[i] + tap]; }
                for (var j = 0u; j < DN; j++) {
                    let b = select(0.0, dout[at[j] + k * pq], inside[j]);
                    for (var i = 0u; i < DM; i++) { acc[i * DN + j] = fma(a[i], b, acc[i * DN + j]); }
                }
            }
        }
    }
    return acc;
}

@compute @workgroup_size(WG_N, WG_M)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    gemm(lid, wid);
}
