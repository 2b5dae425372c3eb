// conv2d_backward_weight_tiled: the tiled path (GPUs) of a conv's weight gradient,
//   dweight[k,c,r,s] = sum_{n,p,q} dout[n,k,p,q] * inp[n,c,p*stride+r-pad,q*stride+s-pad].
// Shapes: inp [N,C,H,W], dout [N,K,P,Q]; dweight [SPLITS,K,C,R,S] (slice z of the reduction in
// dweight[z]; sum_slices adds them up where SPLITS > 1). Overwrites dweight; fixed summation order.
// Implicit GEMM (prelude tiled), one per tap: workgroup z takes tap z % (R*S) and slice z / (R*S)
// of the reduction (split-K: layers whose K x C outputs are too few to fill a GPU, and long
// reductions, spread over workgroups). Rows m = k, columns j = c, reduction e = (n, p, q) within
// the slice: each invocation loads one reduction position per step (t % BK, neighbouring
// invocations neighbouring positions) for several rows and columns, so a step decomposes (n, p, q)
// once per invocation, not once per value.
// CPU twin: reference::conv2d_backward_weight. Dispatch: (ceil(C / BN), ceil(K / BM), R*S*SPLITS).

@group(0) @binding(0) var<storage, read_write> dweight: array<f32>;
@group(0) @binding(1) var<storage, read> dout: array<f32>;
@group(0) @binding(2) var<storage, read> inp: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

// The tile's first row and column, its tap and the reduction positions [e_begin, e_end) of its slice.
var<private> m0: u32;
var<private> c0: u32;
var<private> r: i32;
var<private> s: i32;
var<private> e_begin: u32;
var<private> e_end: u32;

fn fetch(t: u32, step: u32) {
    let e = e_begin + step * BK + t % BK;
    let pq = params.p * params.q;
    let n = e / pq;
    let p = (e % pq) / params.q;
    let q = e % params.q;
    let a_at = n * params.k * pq + e % pq;
    for (var i = 0u; i < A_LOADS; i++) {
        let m = m0 + t / BK + i * (THREADS / BK);
        var v = 0.0;
        if (e < e_end && m < params.k) { v = dout[a_at + m * pq]; }
        next_a[i] = v;
    }
    let h = i32(p * params.stride) + r - i32(params.pad);
    let w = i32(q * params.stride) + s - i32(params.pad);
    let inside = e < e_end && h >= 0 && w >= 0 && h < i32(params.h) && w < i32(params.w);
    let hw = params.h * params.w;
    let b_at = n * params.c * hw + u32(max(h, 0)) * params.w + u32(max(w, 0));
    for (var i = 0u; i < B_LOADS; i++) {
        let c = c0 + t / BK + i * (THREADS / BK);
        var v = 0.0;
        if (inside && c < params.c) { v = inp[b_at + c * hw]; }
        next_b[i] = v;
    }
}

fn stash(t: u32) {
    let e = t % BK;
    for (var i = 0u; i < A_LOADS; i++) { a_tile[e * (BM + PAD) + t / BK + i * (THREADS / BK)] = next_a[i]; }
    for (var i = 0u; i < B_LOADS; i++) { b_tile[e * (BN + PAD) + t / BK + i * (THREADS / BK)] = next_b[i]; }
}

@compute @workgroup_size(WG_N, WG_M)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let rs = params.r * params.s;
    let tap = wid.z % rs;
    let slice = wid.z / rs;
    m0 = wid.y * BM;
    c0 = wid.x * BN;
    r = i32(tap / params.s);
    s = i32(tap % params.s);
    let total = params.n * params.p * params.q;
    let chunk = (total + params.splits - 1u) / params.splits;
    // The step count from values uniform across the workgroup (its barriers need that).
    let begin = min(total, slice * chunk);
    let end = min(total, begin + chunk);
    e_begin = begin;
    e_end = end;
    tiled(lid, (end - begin + BK - 1u) / BK);
    for (var i = 0u; i < TM; i++) {
        let k = m0 + lid.y + i * WG_M;
        for (var j = 0u; j < TN; j++) {
            let c = c0 + lid.x + j * WG_N;
            if (k < params.k && c < params.c) { dweight[((slice * params.k + k) * params.c + c) * rs + tap] = acc[i * TN + j]; }
        }
    }
}
