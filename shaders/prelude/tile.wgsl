// Prepended to the implicit-GEMM conv kernels (conv2d_forward, conv2d_backward_input,
// conv2d_backward_weight): their choice of path and workgroup shape, the outputs an invocation
// owns on each of the two paths, and the workgroup-tile loop of the shared path. Each kernel
// states its GEMM out[m, j] = sum_e A[m, e] * B[e, j] through its own `load_a(m, e, e_end)` and
// `load_b(e, j, e_end)` (zero outside the matrices and from e_end on).

// SHARED stages operand tiles in workgroup memory (fast on GPUs); without it every invocation
// reads its operands from storage directly, which avoids barriers (fast on CPU adapters such as lavapipe).
override SHARED: bool = true;
// A workgroup of WG_M x WG_N invocations, BK-deep slices of the reduction on the shared path.
override WG_M: u32 = 16;
override WG_N: u32 = 16;
override BK: u32 = 8;

// Outputs per invocation: TM x TN on the shared path, DM x DN on the direct path (the host sizes
// the dispatch with the same numbers).
const TM: u32 = 4;
const TN: u32 = 4;
const DM: u32 = 8;
const DN: u32 = 8;

// The workgroup's BK-deep slices of A and B. Their sizes are overrides of their own, which the host
// never sets: naga 30 cannot build a pipeline whose module declares an array sized by an unnamed
// override expression (BK * WG_M * TM) before a named override that a later module-scope
// expression uses (here the kernel's @workgroup_size), and a prelude part comes first.
override A_TILE: u32 = BK * WG_M * TM;
override B_TILE: u32 = BK * WG_N * TN;
var<workgroup> a_tile: array<f32, A_TILE>;
var<workgroup> b_tile: array<f32, B_TILE>;

// Shared path: a workgroup of WG_M x WG_N invocations computes the (WG_M*TM) x (WG_N*TN) outputs
// from row m0 and column j0 over the reduction e in [e_begin, e_end), staging BK-deep slices of A
// and B in workgroup memory; invocation lid returns its TM x TN of them,
// acc[i * TN + j] = out[m0 + lid.y + i*WG_M, j0 + lid.x + j*WG_N].
fn tiled(lid: vec3<u32>, m0: u32, j0: u32, e_begin: u32, e_end: u32) -> array<f32, TM * TN> {
    let bm = WG_M * TM;
    let bn = WG_N * TN;
    let t = lid.y * WG_N + lid.x;
    let threads = WG_M * WG_N;
    var acc: array<f32, TM * TN>;
    for (var e0 = e_begin; e0 < e_end; e0 += BK) {
        for (var i = t; i < BK * bm; i += threads) {
            a_tile[(i % BK) * bm + i / BK] = load_a(m0 + i / BK, e0 + i % BK, e_end);
        }
        for (var i = t; i < BK * bn; i += threads) {
            b_tile[(i / bn) * bn + i % bn] = load_b(e0 + i / bn, j0 + i % bn, e_end);
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
