// Prepended to the tiled path's kernels (conv2d_tiled, conv2d_backward_weight_tiled), the GPU
// family of implicit GEMMs out[m, j] = sum_e A[m, e] * B[e, j]: a variant is a set of the
// override constants below, not a file of its own.
//
// A workgroup of WG_M x WG_N = (BM/TM) x (BN/TN) invocations computes a BM x BN tile of outputs;
// invocation lid keeps TM x TN of them in registers, acc[i * TN + j] = out[m0 + lid.y + i*WG_M,
// j0 + lid.x + j*WG_N], so that neighbouring invocations read neighbouring values of b_tile and
// share (broadcast) those of a_tile. The reduction goes in steps of BK: each step's BM x BK slice
// of A and BK x BN slice of B are staged in workgroup memory as a_tile[e][m] and b_tile[e][j],
// rows padded by PAD values so that the stores of a subgroup walking e (the weight gradient's
// loads) fall in distinct banks. Double buffering through registers: an invocation's loads of the
// next step's slices (`fetch`, into next_a and next_b) are issued before the current slices are
// multiplied, so their latency hides behind the multiply-adds; `stash` then stores them.
//
// Each kernel defines `fetch(t, step)` (invocation t's share of the step's slices: A_LOADS values
// of A and B_LOADS of B, zero outside the matrices) and `stash(t)`. The host keeps BM % (TM*TN),
// BM*BK and BN*BK divisible by the invocations and by 4, and A_LOADS, B_LOADS <= LOADS, TM, TN <= 8.

override BM: u32 = 64;
override BN: u32 = 64;
override BK: u32 = 8;
override TM: u32 = 4;
override TN: u32 = 4;
override WG_M: u32 = BM / TM;
override WG_N: u32 = BN / TN;
override THREADS: u32 = WG_M * WG_N;
override A_LOADS: u32 = BM * BK / THREADS;
override B_LOADS: u32 = BN * BK / THREADS;
override PAD: u32 = max(1u, 32u / BK);

// Register arrays are sized by constants (WGSL sizes only workgroup arrays by overrides): the
// most any configuration uses; the loops run to the overrides, the rest is never touched.
const LOADS: u32 = 16u;
const MAX_T: u32 = 8u;

// Named overrides for the sizes (naga 30 cannot size an array by an unnamed override expression
// declared before the overrides a later module-scope expression uses).
override A_TILE: u32 = BK * (BM + PAD);
override B_TILE: u32 = BK * (BN + PAD);
var<workgroup> a_tile: array<f32, A_TILE>;
var<workgroup> b_tile: array<f32, B_TILE>;
var<private> next_a: array<f32, LOADS>;
var<private> next_b: array<f32, LOADS>;
var<private> acc: array<f32, MAX_T * MAX_T>;

// acc = invocation lid's TM x TN outputs of the tile, over `steps` steps of the reduction.
fn tiled(lid: vec3<u32>, steps: u32) {
    let t = lid.y * WG_N + lid.x;
    if (steps > 0u) { fetch(t, 0u); }
    for (var step = 0u; step < steps; step++) {
        stash(t);
        workgroupBarrier();
        if (step + 1u < steps) { fetch(t, step + 1u); }
        for (var e = 0u; e < BK; e++) {
            var a: array<f32, MAX_T>;
            var b: array<f32, MAX_T>;
            for (var i = 0u; i < TM; i++) { a[i] = a_tile[e * (BM + PAD) + lid.y + i * WG_M]; }
            for (var j = 0u; j < TN; j++) { b[j] = b_tile[e * (BN + PAD) + lid.x + j * WG_N]; }
            for (var i = 0u; i < TM; i++) {
                for (var j = 0u; j < TN; j++) { acc[i * TN + j] = fma(a[i], b[j], acc[i * TN + j]); }
            }
        }
        workgroupBarrier();
    }
}
