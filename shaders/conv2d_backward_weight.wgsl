// conv2d_backward_weight: dweight[k,c,r,s] = sum_{n,p,q} dout[n,k,p,q] * inp[n,c,p*stride+r-pad,q*stride+s-pad]
// Shapes: inp [N,C,H,W], dout [N,K,P,Q], dweight [K,C,R,S]. Overwrites dweight; fixed summation order.
// Implicit GEMM: rows m = k (K of them), columns j = (c,r,s) (C*R*S), reduction e = (n,p,q)
// (N*P*Q). Tiling as in conv2d_forward: WG_M x WG_N invocations, (WG_M*TM) x (WG_N*TN) outputs,
// BK-deep slices.
// CPU twin: reference::conv2d_backward_weight. Dispatch: (ceil(C*R*S / (WG_N*TN)), ceil(K / (WG_M*TM)), 1).

struct Params {
    n: u32, c: u32, h: u32, w: u32,
    k: u32, r: u32, s: u32, p: u32,
    q: u32, stride: u32, pad: u32, _unused: u32,
}

@group(0) @binding(0) var<storage, read_write> dweight: array<f32>;
@group(0) @binding(1) var<storage, read> dout: array<f32>;
@group(0) @binding(2) var<storage, read> inp: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

// SHARED stages operand tiles in workgroup memory (fast on GPUs); without it every invocation
// reads its operands from storage directly, which avoids barriers (fast on CPU adapters such as lavapipe).
override SHARED: bool = true;
override WG_M: u32 = 16;
override WG_N: u32 = 16;
override BK: u32 = 8;
const TM: u32 = 4;
const TN: u32 = 4;

var<workgroup> a_tile: array<f32, BK * WG_M * TM>;
var<workgroup> b_tile: array<f32, BK * WG_N * TN>;

// A[m, e] = dout[n, k, p, q] with m = k, e = (n, p, q)
fn load_a(m: u32, e: u32) -> f32 {
    let pq = params.p * params.q;
    if (m >= params.k || e >= params.n * pq) { return 0.0; }
    return dout[((e / pq) * params.k + m) * pq + e % pq];
}

// B[e, j] = inp[n, c, p*stride+r-pad, q*stride+s-pad] with j = (c, r, s), zero in the padding
fn load_b(e: u32, j: u32) -> f32 {
    let rs = params.r * params.s;
    let pq = params.p * params.q;
    if (e >= params.n * pq || j >= params.c * rs) { return 0.0; }
    let n = e / pq;
    let p = (e % pq) / params.q;
    let q = e % params.q;
    let c = j / rs;
    let r = (j % rs) / params.s;
    let s = j % params.s;
    let h = i32(p * params.stride + r) - i32(params.pad);
    let w = i32(q * params.stride + s) - i32(params.pad);
    if (h < 0 || w < 0 || h >= i32(params.h) || w >= i32(params.w)) { return 0.0; }
    return inp[((n * params.c + c) * params.h + u32(h)) * params.w + u32(w)];
}

fn store(m: u32, j: u32, v: f32) {
    let crs = params.c * params.r * params.s;
    if (m >= params.k || j >= crs) { return; }
    dweight[m * crs + j] = v;
}

// Shared path: the workgroup stages BK-deep slices of A and B in workgroup memory.
fn tiled(lid: vec3<u32>, m0: u32, j0: u32) -> array<f32, TM * TN> {
    let bm = WG_M * TM;
    let bn = WG_N * TN;
    let t = lid.y * WG_N + lid.x;
    let threads = WG_M * WG_N;
    var acc: array<f32, TM * TN>;
    for (var e0 = 0u; e0 < params.n * params.p * params.q; e0 += BK) {
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
    return acc;
}

// Direct path: no workgroup memory and no barriers; each invocation walks the reduction in
// (n, p, q) order with its 4 rows' and 4 columns' offsets computed once, accumulating in four
// vec4 registers (row i of the 4x4 block is acc[i], its columns the lanes).
fn direct(lid: vec3<u32>, m0: u32, j0: u32) -> array<f32, TM * TN> {
    let rs = params.r * params.s;
    let hw = params.h * params.w;
    let pq = params.p * params.q;
    let rows = min(vec4(m0 + lid.y) + vec4(0u, 1u, 2u, 3u) * WG_M, vec4(params.k - 1u)) * pq;
    let cols = min(vec4(j0 + lid.x) + vec4(0u, 1u, 2u, 3u) * WG_N, vec4(params.c * rs - 1u));
    let base = (cols / rs) * hw;
    let r0 = vec4<i32>((cols % rs) / params.s) - i32(params.pad);
    let s0 = vec4<i32>(cols % params.s) - i32(params.pad);
    let size = vec4(i32(params.h), i32(params.w), 0, 0);
    var acc = array<vec4<f32>, 4>();
    for (var n = 0u; n < params.n; n++) {
        let image = n * params.c * hw;
        for (var p = 0u; p < params.p; p++) {
            let h = i32(p * params.stride) + r0;
            for (var q = 0u; q < params.q; q++) {
                let w = i32(q * params.stride) + s0;
                let e = n * params.k * pq + p * params.q + q;
                let a = vec4(dout[rows.x + e], dout[rows.y + e], dout[rows.z + e], dout[rows.w + e]);
                let inside = h >= vec4(0) & w >= vec4(0) & h < vec4(size.x) & w < vec4(size.y);
                let at = image + base + vec4<u32>(max(h, vec4(0))) * params.w + vec4<u32>(max(w, vec4(0)));
                let b = select(vec4(0.0), vec4(inp[at.x], inp[at.y], inp[at.z], inp[at.w]), inside);
                acc[0] = fma(vec4(a.x), b, acc[0]);
                acc[1] = fma(vec4(a.y), b, acc[1]);
                acc[2] = fma(vec4(a.z), b, acc[2]);
                acc[3] = fma(vec4(a.w), b, acc[3]);
            }
        }
    }
    return unpack(acc);
}

// The 4x4 block of vec4 rows as the flat accumulator array the store loop reads.
fn unpack(acc: array<vec4<f32>, 4>) -> array<f32, TM * TN> {
    var flat: array<f32, TM * TN>;
    for (var i = 0u; i < TM; i++) {
        for (var j = 0u; j < TN; j++) { flat[i * TN + j] = acc[i][j]; }
    }
    return flat;
}

@compute @workgroup_size(WG_N, WG_M)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let m0 = wid.y * WG_M * TM;
    let j0 = wid.x * WG_N * TN;
    var acc: array<f32, TM * TN>;
    if (SHARED) { acc = tiled(lid, m0, j0); } else { acc = direct(lid, m0, j0); }
    for (var i = 0u; i < TM; i++) {
        for (var j = 0u; j < TN; j++) { store(m0 + lid.y + i * WG_M, j0 + lid.x + j * WG_N, acc[i * TN + j]); }
    }
}
