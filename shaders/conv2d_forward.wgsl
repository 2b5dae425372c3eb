// conv2d_forward: out[n,k,p,q] = sum_{c,r,s} weight[k,c,r,s] * inp[n,c,p*stride+r-pad,q*stride+s-pad]
// Shapes: inp [N,C,H,W], weight [K,C,R,S], out [N,K,P,Q]. Overwrites out; fixed summation order.
// Implicit GEMM, no im2col buffer: rows m = k (K of them), columns j = (n,p,q) (N*P*Q), reduction
// e = (c,r,s) (C*R*S). A workgroup of WG_M x WG_N invocations computes a tile of
// (WG_M*TM) x (WG_N*TN) outputs, staging BK-deep slices of both operands in workgroup memory; each
// invocation keeps TM x TN accumulators in registers.
// CPU twin: reference::conv2d_forward. Dispatch: (ceil(N*P*Q / (WG_N*TN)), ceil(K / (WG_M*TM)), 1).

struct Params {
    n: u32, c: u32, h: u32, w: u32,
    k: u32, r: u32, s: u32, p: u32,
    q: u32, stride: u32, pad: u32, _unused: u32,
}

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> inp: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

override WG_M: u32 = 16;
override WG_N: u32 = 16;
override BK: u32 = 8;
const TM: u32 = 4;
const TN: u32 = 4;

var<workgroup> a_tile: array<f32, BK * WG_M * TM>;
var<workgroup> b_tile: array<f32, BK * WG_N * TN>;

// A[m, e] = weight[k, c, r, s]
fn load_a(m: u32, e: u32) -> f32 {
    let crs = params.c * params.r * params.s;
    if (m >= params.k || e >= crs) { return 0.0; }
    return weight[m * crs + e];
}

// B[e, j] = inp[n, c, p*stride+r-pad, q*stride+s-pad], zero in the padding
fn load_b(e: u32, j: u32) -> f32 {
    let rs = params.r * params.s;
    let pq = params.p * params.q;
    if (e >= params.c * rs || j >= params.n * pq) { return 0.0; }
    let c = e / rs;
    let r = (e % rs) / params.s;
    let s = e % params.s;
    let n = j / pq;
    let p = (j % pq) / params.q;
    let q = j % params.q;
    let h = i32(p * params.stride + r) - i32(params.pad);
    let w = i32(q * params.stride + s) - i32(params.pad);
    if (h < 0 || w < 0 || h >= i32(params.h) || w >= i32(params.w)) { return 0.0; }
    return inp[((n * params.c + c) * params.h + u32(h)) * params.w + u32(w)];
}

fn store(m: u32, j: u32, v: f32) {
    let pq = params.p * params.q;
    if (m >= params.k || j >= params.n * pq) { return; }
    out[((j / pq) * params.k + m) * pq + j % pq] = v;
}

@compute @workgroup_size(WG_N, WG_M)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let bm = WG_M * TM;
    let bn = WG_N * TN;
    let m0 = wid.y * bm;
    let j0 = wid.x * bn;
    let t = lid.y * WG_N + lid.x;
    let threads = WG_M * WG_N;
    let depth = params.c * params.r * params.s;
    var acc: array<f32, TM * TN>;
    for (var e0 = 0u; e0 < depth; e0 += BK) {
        for (var i = t; i < BK * bm; i += threads) {
            a_tile[(i % BK) * bm + i / BK] = load_a(m0 + i / BK, e0 + i % BK);
        }
        for (var i = t; i < BK * bn; i += threads) {
            b_tile[(i / bn) * bn + i % bn] = load_b(e0 + i / bn, j0 + i % bn);
        }
        workgroupBarrier();
        for (var e = 0u; e < BK; e++) {
            var a: array<f32, TM>;
            var b: array<f32, TN>;
            for (var i = 0u; i < TM; i++) { a[i] = a_tile[e * bm + lid.y + i * WG_M]; }
            for (var j = 0u; j < TN; j++) { b[j] = b_tile[e * bn + lid.x + j * WG_N]; }
            for (var i = 0u; i < TM; i++) {
                for (var j = 0u; j < TN; j++) { acc[i * TN + j] = fma(a[i], b[j], acc[i * TN + j]); }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < TM; i++) {
        for (var j = 0u; j < TN; j++) { store(m0 + lid.y + i * WG_M, j0 + lid.x + j * WG_N, acc[i * TN + j]); }
    }
}
