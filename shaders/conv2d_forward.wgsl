// conv2d_forward: out[n,k,p,q] = act(sum_{c,r,s} weight[k,c,r,s] * inp[n,c,p*stride+r-pad,q*stride+s-pad]
//                                   + bias[k] (if BIAS) + residual[n,k,p,q] (if RESIDUAL)), act = ReLU if RELU.
// The epilogue (prelude epilogue) serves inference with batch norm folded into weight and bias,
// and the block's residual add and ReLU fused into its last conv; training uses the plain conv
// (all three off, bias and residual bound to a placeholder).
// Shapes: inp [N,C,H,W], weight [K,C,R,S], bias [K], residual and out [N,K,P,Q]. Overwrites out;
// fixed summation order.
// The direct path (CPU adapters; GPUs run conv2d_tiled): implicit GEMM, no im2col buffer: rows
// m = k (K of them), columns j = (n,p,q) (N*P*Q), reduction e = (c,r,s) (C*R*S); a workgroup of
// WG_M x WG_N invocations computes (WG_M*DM) x (WG_N*DN) outputs.
// CPU twin: reference::conv2d_forward. Dispatch: (ceil(N*P*Q / (WG_N*DN)), ceil(K / (WG_M*DM)), 1).

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> inp: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> residual: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;

fn store(m: u32, j: u32, acc: f32) {
    let pq = params.p * params.q;
    if (m >= params.k || j >= params.n * pq) { return; }
    let i = ((j / pq) * params.k + m) * pq + j % pq;
    out[i] = epilogue(acc, m, i);
}

// Direct path: no workgroup memory and no barriers. Each invocation owns a DM x DN block in
// registers and walks the reduction tap by tap: for each (r, s) its columns' input offsets and
// padding masks are computed once, then reused for every input channel c. Per step it loads DM
// weights and DN inputs for DM*DN multiply-adds: on CPU adapters every load is a per-lane gather,
// so the bigger the block, the closer to the FMA peak.
fn direct(lid: vec3<u32>, m0: u32, j0: u32) -> array<f32, DM * DN> {
    let rs = params.r * params.s;
    let pq = params.p * params.q;
    let hw = params.h * params.w;
    var rows: array<u32, DM>;
    for (var i = 0u; i < DM; i++) { rows[i] = min(m0 + lid.y + i * WG_M, params.k - 1u) * params.c * rs; }
    var image: array<u32, DN>;
    var h0: array<i32, DN>;
    var w0: array<i32, DN>;
    for (var j = 0u; j < DN; j++) {
        let col = min(j0 + lid.x + j * WG_N, params.n * pq - 1u);
        image[j] = (col / pq) * params.c * hw;
        h0[j] = i32(((col % pq) / params.q) * params.stride) - i32(params.pad);
        w0[j] = i32((col % params.q) * params.stride) - i32(params.pad);
    }
    var acc: array<f32, DM * DN>;
    for (var r = 0u; r < params.r; r++) {
        for (var s = 0u; s < params.s; s++) {
            var at: array<u32, DN>;
            var inside: array<bool, DN>;
            for (var j = 0u; j < DN; j++) {
                let h = h0[j] + i32(r);
                let w = w0[j] + i32(s);
                inside[j] = h >= 0 && w >= 0 && h < i32(params.h) && w < i32(params.w);
                at[j] = image[j] + u32(clamp(h, 0, i32(params.h) - 1)) * params.w + u32(clamp(w, 0, i32(params.w) - 1));
            }
            let tap = r * params.s + s;
            for (var c = 0u; c < params.c; c++) {
                var a: array<f32, DM>;
                for (var i = 0u; i < DM; i++) { a[i] = weight[rows[i] + c * rs + tap]; }
                for (var j = 0u; j < DN; j++) {
                    let b = select(0.0, inp[at[j] + c * hw], inside[j]);
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
