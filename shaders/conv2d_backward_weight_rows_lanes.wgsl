// conv2d_backward_weight_rows_lanes: conv2d_backward_weight_lanes for the layers of
// conv2d_rows_lanes (3x3, stride 1, pad 1) on rows of W >= 4 columns; with POINTWISE, for 1x1
// convs with pad 0, any stride, C a multiple of 4 and rows of Q >= 4 output columns (those that
// conv2d_backward_weight_rows_vec4_lanes does not take: 7x7 planes, strided projections):
//   dweight[k,c,r,s] = sum_{n,y,x} dout[n,k,y,x] * inp[n,c,y+r-1,x+s-1]
//   (1x1: dweight[k,c] = sum_{n,y,x} dout[n,k,y,x] * inp[n,c,y*stride,x*stride])
// Rows m = k, columns (c, r, s). A workgroup is one subgroup of 8 invocations sharing 2 * DM = 32
// rows, in two blocks of 16 (acc, acc2); each invocation owns the 3 columns (c, r, 0..2) of one
// (c, r) = wid.x * 8 + lane (1x1: the 4 channels from 4 * (wid.x * 8 + lane)). The reduction
// walks each plane (n, :) of output positions 4 at a time, across rows (the last step of a
// plane drops those past P*Q): per step every lane loads 4 values of dout for four of the 32
// rows (broadcast to the subgroup) and the 6 input values from 1 before the first position's
// tap (r, 1) to 1 after the last's, which hold the inputs of its 3 taps (masked where a tap
// falls outside the plane's rows or columns; 1x1: 4 values of each of its channels), then adds
// 32 x 3 (32 x 4) dot products of 4: 22 loads for 384 multiply-adds (32 for 512), where
// conv2d_backward_weight_lanes makes 36 (48) (5 per 192 in the _vec4 twin, for rows of a
// multiple of 4 columns). On small planes (7x7, 14x14) the walk across rows wastes no steps on
// row ends and costs nothing per row (56-57 and 62 % of lavapipe's FMA peak against 41-43 and
// 44-48 % walking row by row with 16 rows, BENCHMARKS.md); 32 rows a workgroup took them to
// 66-67 and 73-77 %, and the 1x1s on 7x7 planes and at stride 2 from 44-48 to 62-63 %.
// The reduction is split into `splits` slices of whole steps as there, written to
// dweight[slice, k, c, r, s]. Needs subgroups of at least 8 invocations.
// CPU twin: reference::conv2d_backward_weight.
// Dispatch: (ceil(C*3 / 8), ceil(K / 32), SPLITS); 1x1: (ceil(C/4 / 8), ceil(K / 32), SPLITS).

@group(0) @binding(0) var<storage, read_write> dweight: array<f32>;
@group(0) @binding(1) var<storage, read> dout: array<f32>;
@group(0) @binding(2) var<storage, read> inp: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

override POINTWISE: bool = false;

// dout[at + x[t]] where valid[t], else 0.
fn dout4(at: u32, x: vec4<u32>, valid: vec4<bool>) -> vec4<f32> {
    return select(vec4(0.0), vec4(dout[at + x.x], dout[at + x.y], dout[at + x.z], dout[at + x.w]), valid);
}

// inp at the 4 offsets `at`.
fn inp4(at: vec4<u32>) -> vec4<f32> {
    return vec4(inp[at.x], inp[at.y], inp[at.z], inp[at.w]);
}

@compute @workgroup_size(8)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(subgroup_invocation_id) lane: u32) {
    let hw = params.h * params.w;
    let pq = params.p * params.q;
    let m0 = wid.y * 2u * DM;
    // The lane's columns: the 3 taps of (c, r) = g, or with POINTWISE the 4 channels from 4g.
    let groups = select(params.c * 3u, params.c / 4u, POINTWISE);
    let g = min(wid.x * 8u + lane % 8u, groups - 1u);
    let c = select(g / 3u, 4u * g, POINTWISE);
    let r = i32(g % 3u) - 1;
    // The dout rows this lane loads for the subgroup: m0 + lane, m0 + 8 + lane (acc), and 16 and
    // 24 past them (acc2).
    let lo = min(m0 + lane % 8u, params.k - 1u) * pq;
    let hi = min(m0 + 8u + lane % 8u, params.k - 1u) * pq;
    // The reduction in steps of 4 output positions e .. e+3 of image n, the first at (y, x).
    let steps = (pq + 3u) / 4u;
    let total = params.n * steps;
    let chunk = (total + params.splits - 1u) / params.splits;
    let begin = wid.z * chunk;
    var n = begin / steps;
    var e = 4u * (begin % steps);
    var y = e / params.q;
    var x = e % params.q;
    var acc: array<vec4<f32>, DM>;
    var acc2: array<vec4<f32>, DM>;
    let lo2 = min(m0 + 16u + lane % 8u, params.k - 1u) * pq;
    let hi2 = min(m0 + 24u + lane % 8u, params.k - 1u) * pq;
    for (var step = begin; step < min(total, begin + chunk); step++) {
        // Each position's (y, x): Q >= 4, so x + 3 wraps to the next row at most once.
        let t = vec4(0u, 1u, 2u, 3u);
        let wrap = x + t >= vec4(params.q);
        let ys = vec4(y) + select(vec4(0u), vec4(1u), wrap);
        let xs = select(x + t, x + t - params.q, wrap);
        let plane = (n * params.c + c) * hw;
        let d = n * params.k * pq + e;
        let valid = e + t < vec4(pq);
        let w_lo = dout4(d + lo, t, valid);
        let w_hi = dout4(d + hi, t, valid);
        if (POINTWISE) {
            // inp[n, c .. c+3, y*stride, x*stride] (clamped into the plane; dout is 0 past P*Q).
            let at = vec4(plane) + min((ys * params.w + xs) * params.stride, vec4(hw - 1u));
            let b0 = inp4(at);
            let b1 = inp4(at + hw);
            let b2 = inp4(at + 2u * hw);
            let b3 = inp4(at + 3u * hw);
            madd16(&acc, w_lo, w_hi, b0, b1, b2, b3);
            madd16(&acc2, dout4(d + lo2, t, valid), dout4(d + hi2, t, valid), b0, b1, b2, b3);
        } else {
            // 3x3, stride 1, pad 1 (P = H, Q = W): the input of tap (r, s) at position e + t is
            // plane value e + t + (r-1)*W + s-1, inside when row y + r-1 and column x + s-1 are.
            // The 6 values from e + (r-1)*W - 1 (clamped into the plane) hold all three taps.
            let first = i32(e) + r * i32(params.w) - 1;
            let last = i32(hw) - 1;
            let near = inp4(vec4(plane) + vec4<u32>(clamp(vec4(first) + vec4(0, 1, 2, 3), vec4(0), vec4(last))));
            let far = inp4(vec4(plane) + vec4<u32>(clamp(vec4(first) + vec4(4, 5, 5, 5), vec4(0), vec4(last))));
            let v = array(near.x, near.y, near.z, near.w, far.x, far.y);
            let row = vec4<i32>(ys) + r;
            let inside = row >= vec4(0) & row < vec4(i32(params.h));
            let b0 = select(vec4(0.0), vec4(v[0], v[1], v[2], v[3]), inside & xs > vec4(0u));
            let b1 = select(vec4(0.0), vec4(v[1], v[2], v[3], v[4]), inside);
            let b2 = select(vec4(0.0), vec4(v[2], v[3], v[4], v[5]), inside & xs < vec4(params.w - 1u));
            madd16x3(&acc, w_lo, w_hi, b0, b1, b2);
            madd16x3(&acc2, dout4(d + lo2, t, valid), dout4(d + hi2, t, valid), b0, b1, b2);
        }
        e += 4u;
        x += 4u;
        if (x >= params.q) { x -= params.q; y += 1u; }
        if (e >= pq) { n += 1u; e = 0u; x = 0u; y = 0u; }
    }
    if (wid.x * 8u + lane % 8u < groups) {
        for (var i = 0u; i < DM; i++) {
            store_columns(wid.z, m0 + i, g, acc[i]);
            store_columns(wid.z, m0 + 16u + i, g, acc2[i]);
        }
    }
}
