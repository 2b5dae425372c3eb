// conv2d_forward_lanes: conv2d_forward (same formula, shapes, epilogue and bindings) for CPU
// adapters with subgroups, such as lavapipe (8 lanes, one per slot of a 256-bit vector).
// Implicit GEMM as there: rows m = k, columns j = (n,p,q), reduction e = (c,r,s). The 64
// invocations of a workgroup share DM = 16 rows; each owns DN = 4 columns, j0 + lid.x + t*64, as
// one vec4 per row. Per reduction step every lane loads the weights of two rows and `lanes8`
// hands the subgroup all sixteen, so a step costs 2 + DN = 6 loads for DM*DN = 64 multiply-adds
// (conv2d_forward's would be DM + DN): on CPU adapters every storage load is a per-lane gather,
// a broadcast a register shuffle. 8 x 8 blocks cost 9 loads; blocks of more than 64
// accumulators spill out of the registers and run slower (BENCHMARKS.md). A step takes 4 input
// channels, the weights as vec4s, and adds dot products of 4 to the accumulators (a strided 3x3,
// before conv2d_rows_lanes took those, at 45 against 36 % of lavapipe's FMA peak for one channel
// and multiply-add per step).
// Needs subgroups of at least 8 invocations.
// CPU twin: reference::conv2d_forward. Dispatch: (ceil(N*P*Q / (64*DN)), ceil(K / DM), 1).

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> inp: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> residual: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;

// The operand of prelude step4: the input.
fn operand(i: u32) -> f32 {
    return inp[i];
}

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(subgroup_invocation_id) lane: u32) {
    let rs = params.r * params.s;
    let pq = params.p * params.q;
    let hw = params.h * params.w;
    let m0 = wid.y * DM;
    let j0 = wid.x * 64u * DN + lid.x;
    // The weight rows this lane loads for the subgroup: m0 + lane and m0 + 8 + lane.
    let lo = min(m0 + lane % 8u, params.k - 1u) * params.c * rs;
    let hi = min(m0 + 8u + lane % 8u, params.k - 1u) * params.c * rs;
    var image: vec4<u32>;
    var h0: vec4<i32>;
    var w0: vec4<i32>;
    for (var t = 0u; t < DN; t++) {
        let col = min(j0 + t * 64u, params.n * pq - 1u);
        image[t] = (col / pq) * params.c * hw;
        h0[t] = i32(((col % pq) / params.q) * params.stride) - i32(params.pad);
        w0[t] = i32((col % params.q) * params.stride) - i32(params.pad);
    }
    var acc: array<vec4<f32>, DM>;
    for (var r = 0u; r < params.r; r++) {
        for (var s = 0u; s < params.s; s++) {
            let h = h0 + vec4(i32(r));
            let w = w0 + vec4(i32(s));
            let inside = (h >= vec4(0)) & (w >= vec4(0)) & (h < vec4(i32(params.h))) & (w < vec4(i32(params.w)));
            let at = image + vec4<u32>(clamp(h, vec4(0), vec4(i32(params.h) - 1))) * params.w
                + vec4<u32>(clamp(w, vec4(0), vec4(i32(params.w) - 1)));
            let tap = r * params.s + s;
            tap4(&acc, at, inside, params.c, hw, lo + tap, hi + tap, rs);
        }
    }
    for (var t = 0u; t < DN; t++) {
        let j = j0 + t * 64u;
        let at = (j / pq) * params.k * pq + j % pq;
        for (var i = 0u; i < DM; i++) {
            let o = at + (m0 + i) * pq;
            if (m0 + i < params.k && j < params.n * pq) {
                out[o] = epilogue(acc[i][t], m0 + i, o);
            }
        }
    }
}
