// conv2d_backward_weight_lanes: conv2d_backward_weight (same formula, shapes and bindings) for CPU
// adapters with subgroups, blocked as conv2d_forward_lanes: rows m = k, columns j = (c,r,s),
// reduction e = (n,p,q). A workgroup is one subgroup of 8 invocations that shares 2 * DM = 32
// rows in two blocks of 16 (acc, acc2); each invocation owns DN = 4 columns j0 + lane + 8*t. A
// step takes 4 output positions of a row (n, p): every lane loads dout of four rows at them and
// `lanes8` hands the subgroup all 32, so a step costs 4 * (4 + DN) loads for 4*32*DN
// multiply-adds, added to the accumulators as dot products of 4 (a strided 3x3 at 47-51 against
// 45-47 % of lavapipe's FMA peak for one position and multiply-add per step, BENCHMARKS.md; 67 %
// with 32 rows where 16 shared a workgroup).
// The reduction is split into `splits` slices of whole (n, p) rows, one per wid.z, written to
// dweight[slice, k, c, r, s] (sum_slices adds them up when there is more than one).
// Needs subgroups of at least 8 invocations.
// CPU twin: reference::conv2d_backward_weight. Dispatch: (ceil(C*R*S / (8*DN)), ceil(K / 32), SPLITS).

@group(0) @binding(0) var<storage, read_write> dweight: array<f32>;
@group(0) @binding(1) var<storage, read> dout: array<f32>;
@group(0) @binding(2) var<storage, read> inp: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

const DN: u32 = 4;

// dout[at + qs[u]] of the 4 positions, 0 past the row (where not `ok`).
fn dout4(at: u32, qs: vec4<u32>, ok: vec4<bool>) -> vec4<f32> {
    let x = at + min(qs, vec4(params.q - 1u));
    return select(vec4(0.0), vec4(dout[x.x], dout[x.y], dout[x.z], dout[x.w]), ok);
}

// The inputs of one column at the 4 positions: row `at` (inside the plane where `row_ok`),
// columns qs * stride + dw, 0 outside the plane.
fn inputs(at: u32, row_ok: bool, qs: vec4<u32>, dw: i32, ok: vec4<bool>) -> vec4<f32> {
    let w = vec4<i32>(qs * params.stride) + dw;
    let inside = ok & vec4(row_ok) & (w >= vec4(0)) & (w < vec4(i32(params.w)));
    let x = at + vec4<u32>(clamp(w, vec4(0), vec4(i32(params.w) - 1)));
    return select(vec4(0.0), vec4(inp[x.x], inp[x.y], inp[x.z], inp[x.w]), inside);
}

@compute @workgroup_size(8)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(subgroup_invocation_id) lane: u32) {
    let rs = params.r * params.s;
    let crs = params.c * rs;
    let hw = params.h * params.w;
    let pq = params.p * params.q;
    let m0 = wid.y * 2u * DM;
    let j0 = wid.x * 8u * DN + lane % 8u;
    // The dout rows this lane loads for the subgroup: m0 + lane, m0 + 8 + lane (acc), and 16 and
    // 24 past them (acc2).
    let lo = min(m0 + lane % 8u, params.k - 1u) * pq;
    let hi = min(m0 + 8u + lane % 8u, params.k - 1u) * pq;
    let lo2 = min(m0 + 16u + lane % 8u, params.k - 1u) * pq;
    let hi2 = min(m0 + 24u + lane % 8u, params.k - 1u) * pq;
    // Each column's input channel offset and tap offsets: input (h, w) = (p*stride + dh, q*stride + dw).
    var channel: vec4<u32>;
    var dh: vec4<i32>;
    var dw: vec4<i32>;
    for (var t = 0u; t < DN; t++) {
        let j = min(j0 + t * 8u, crs - 1u);
        channel[t] = (j / rs) * hw;
        dh[t] = i32((j % rs) / params.s) - i32(params.pad);
        dw[t] = i32(j % params.s) - i32(params.pad);
    }
    let st = i32(params.stride);
    let rows = params.n * params.p;
    let chunk = (rows + params.splits - 1u) / params.splits;
    var acc: array<vec4<f32>, DM>;
    var acc2: array<vec4<f32>, DM>;
    for (var np = wid.z * chunk; np < min(rows, (wid.z + 1u) * chunk); np++) {
        let n = np / params.p;
        let p = i32(np % params.p);
        let image = n * params.c * hw;
        let a_row = n * params.k * pq + u32(p) * params.q;
        let h = vec4(p * st) + dh;
        let row_inside = (h >= vec4(0)) & (h < vec4(i32(params.h)));
        let at = vec4(image) + channel + vec4<u32>(clamp(h, vec4(0), vec4(i32(params.h) - 1))) * params.w;
        // Positions q0 .. q0+3 of the row at a time (the last step drops those past Q): each
        // column's inputs as a vec4 over them, and dot products of 4 with dout's.
        for (var q0 = 0u; q0 < params.q; q0 += 4u) {
            let qs = q0 + vec4(0u, 1u, 2u, 3u);
            let ok = qs < vec4(params.q);
            let b0 = inputs(at.x, row_inside.x, qs, dw.x, ok);
            let b1 = inputs(at.y, row_inside.y, qs, dw.y, ok);
            let b2 = inputs(at.z, row_inside.z, qs, dw.z, ok);
            let b3 = inputs(at.w, row_inside.w, qs, dw.w, ok);
            madd16(&acc, dout4(a_row + lo, qs, ok), dout4(a_row + hi, qs, ok), b0, b1, b2, b3);
            madd16(&acc2, dout4(a_row + lo2, qs, ok), dout4(a_row + hi2, qs, ok), b0, b1, b2, b3);
        }
    }
    for (var t = 0u; t < DN; t++) {
        let j = j0 + t * 8u;
        for (var i = 0u; i < DM; i++) {
            if (m0 + i < params.k && j < crs) { dweight[(wid.z * params.k + m0 + i) * crs + j] = acc[i][t]; }
            if (m0 + 16u + i < params.k && j < crs) { dweight[(wid.z * params.k + m0 + 16u + i) * crs + j] = acc2[i][t]; }
        }
    }
}
