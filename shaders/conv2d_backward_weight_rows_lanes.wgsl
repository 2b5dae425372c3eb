// conv2d_backward_weight_rows_lanes: conv2d_backward_weight_lanes for the layers of
// conv2d_rows_lanes: 3x3, stride 1, pad 1; with POINTWISE, for 1x1 convs with pad 0, any stride,
// C a multiple of 4 and rows of Q >= 4 output columns (those that
// conv2d_backward_weight_rows_vec4_lanes does not take: 7x7 planes, strided projections):
//   dweight[k,c,r,s] = sum_{n,y,x} dout[n,k,y,x] * inp[n,c,y+r-1,x+s-1]
//   (1x1: dweight[k,c] = sum_{n,y,x} dout[n,k,y,x] * inp[n,c,y*stride,x*stride])
// Rows m = k, columns (c, r, s). A workgroup is one subgroup of 8 invocations sharing DM = 16
// rows; each invocation owns the 3 columns (c, r, 0..2) of one (c, r) = wid.x * 8 + lane (1x1:
// the 4 channels from 4 * (wid.x * 8 + lane)). The reduction walks each row (n, y) 4 columns
// x0 .. x0+3 at a time (the last step of a row of W columns drops those past W; 1x1: each plane
// (n, :) 4 output positions at a time, the last step dropping those past P*Q): per step every
// lane loads 4 values of dout for two of the 16 rows (broadcast to the subgroup) and the 6 input
// columns x0-1 .. x0+4 of its input row (1x1: 4 values of each of its channels), then adds
// 16 x 3 (16 x 4) dot products of 4: 14 loads for 192 multiply-adds (24 for 256), where
// conv2d_backward_weight_lanes makes 18 (24) (5 in the _vec4 twin, for rows of a multiple of 4
// columns).
// The reduction is split into `splits` slices of whole rows (1x1: steps) as there, written to
// dweight[slice, k, c, r, s]. Needs subgroups of at least 8 invocations.
// CPU twin: reference::conv2d_backward_weight.
// Dispatch: (ceil(C*3 / 8), ceil(K / DM), SPLITS); 1x1: (ceil(C/4 / 8), ceil(K / DM), SPLITS).

struct Params {
    n: u32, c: u32, h: u32, w: u32,
    k: u32, r: u32, s: u32, p: u32,
    q: u32, stride: u32, pad: u32, splits: u32,
}

@group(0) @binding(0) var<storage, read_write> dweight: array<f32>;
@group(0) @binding(1) var<storage, read> dout: array<f32>;
@group(0) @binding(2) var<storage, read> inp: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

override POINTWISE: bool = false;
const DM: u32 = 16;

// The values of `v` in lanes 0..7 of the subgroup.
fn lanes8(v: vec4<f32>) -> array<vec4<f32>, 8> {
    return array(subgroupBroadcast(v, 0u), subgroupBroadcast(v, 1u), subgroupBroadcast(v, 2u), subgroupBroadcast(v, 3u),
                 subgroupBroadcast(v, 4u), subgroupBroadcast(v, 5u), subgroupBroadcast(v, 6u), subgroupBroadcast(v, 7u));
}

// dout[at + x[t]] where valid[t], else 0.
fn dout4(at: u32, x: vec4<u32>, valid: vec4<bool>) -> vec4<f32> {
    return select(vec4(0.0), vec4(dout[at + x.x], dout[at + x.y], dout[at + x.z], dout[at + x.w]), valid);
}

@compute @workgroup_size(8)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(subgroup_invocation_id) lane: u32) {
    let hw = params.h * params.w;
    let pq = params.p * params.q;
    let last = params.w - 1u;
    let m0 = wid.y * DM;
    // The lane's columns: the 3 taps of (c, r) = g, or with POINTWISE the 4 channels from 4g.
    let taps = select(3u, 4u, POINTWISE);
    let groups = select(params.c * 3u, params.c / 4u, POINTWISE);
    let g = min(wid.x * 8u + lane % 8u, groups - 1u);
    // The dout rows this lane loads for the subgroup: m0 + lane and m0 + 8 + lane.
    let lo = min(m0 + lane % 8u, params.k - 1u) * pq;
    let hi = min(m0 + 8u + lane % 8u, params.k - 1u) * pq;
    var acc: array<vec4<f32>, DM>;
    if (POINTWISE) {
        // The reduction in steps of 4 output positions e .. e+3 = (y, x) .. of image n.
        let steps = (pq + 3u) / 4u;
        let total = params.n * steps;
        let chunk = (total + params.splits - 1u) / params.splits;
        let begin = wid.z * chunk;
        var n = begin / steps;
        var e = 4u * (begin % steps);
        var y = e / params.q;
        var x = e % params.q;
        for (var i = begin; i < min(total, begin + chunk); i++) {
            let valid = e + vec4(0u, 1u, 2u, 3u) < vec4(pq);
            // Each position's (y, x) (Q >= 4: x0 + 3 wraps to the next row at most once), its
            // input inp[n, c, y*stride, x*stride] (clamped into the plane; dout is 0 past P*Q).
            let xs = x + vec4(0u, 1u, 2u, 3u);
            let wrap = xs >= vec4(params.q);
            let ys = vec4(y) + select(vec4(0u), vec4(1u), wrap);
            let at = min((ys * params.w + select(xs, xs - params.q, wrap)) * params.stride, vec4(hw - 1u));
            let image = (n * params.c + 4u * g) * hw;
            var b: array<vec4<f32>, 4>;
            for (var t = 0u; t < 4u; t++) {
                let o = image + t * hw + at;
                b[t] = vec4(inp[o.x], inp[o.y], inp[o.z], inp[o.w]);
            }
            let d = n * params.k * pq + e;
            let a_lo = lanes8(dout4(d + lo, vec4(0u, 1u, 2u, 3u), valid));
            let a_hi = lanes8(dout4(d + hi, vec4(0u, 1u, 2u, 3u), valid));
            for (var i = 0u; i < 8u; i++) {
                acc[i] += vec4(dot(a_lo[i], b[0]), dot(a_lo[i], b[1]), dot(a_lo[i], b[2]), dot(a_lo[i], b[3]));
                acc[i + 8u] += vec4(dot(a_hi[i], b[0]), dot(a_hi[i], b[1]), dot(a_hi[i], b[2]), dot(a_hi[i], b[3]));
            }
            e += 4u;
            x += 4u;
            if (x >= params.q) { x -= params.q; y += 1u; }
            if (e >= pq) { n += 1u; e = 0u; x = 0u; y = 0u; }
        }
    } else {
        let c = g / 3u;
        let r = g % 3u;
        let rows = params.n * params.h;
        let chunk = (rows + params.splits - 1u) / params.splits;
        for (var ny = wid.z * chunk; ny < min(rows, (wid.z + 1u) * chunk); ny++) {
            let n = ny / params.h;
            let y = ny % params.h;
            let h = i32(y + r) - 1;
            let inside = h >= 0 && h < i32(params.h);
            let row = (n * params.c + c) * hw + u32(clamp(h, 0, i32(params.h) - 1)) * params.w;
            let d_row = n * params.k * hw + y * params.w;
            for (var x0 = 0u; x0 < params.w; x0 += 4u) {
                // Input columns x0-1 .. x0+4 (clamped into the row, zero outside it): the inputs of
                // tap s are b shifted by s-1.
                let in_row = x0 + vec4(0u, 1u, 2u, 3u) <= vec4(last);
                let mid = min(x0 + vec4(0u, 1u, 2u, 3u), vec4(last));
                let l = select(0.0, inp[row + max(x0, 1u) - 1u], inside && x0 > 0u);
                let b = select(vec4(0.0), vec4(inp[row + mid.x], inp[row + mid.y], inp[row + mid.z], inp[row + mid.w]),
                               in_row & vec4(inside));
                let n4 = select(0.0, inp[row + min(x0 + 4u, last)], inside && x0 + 4u <= last);
                let b0 = vec4(l, b.xyz);
                let b2 = vec4(b.yzw, n4);
                let a_lo = lanes8(dout4(d_row + lo, mid, in_row));
                let a_hi = lanes8(dout4(d_row + hi, mid, in_row));
                for (var i = 0u; i < 8u; i++) {
                    acc[i] += vec4(dot(a_lo[i], b0), dot(a_lo[i], b), dot(a_lo[i], b2), 0.0);
                    acc[i + 8u] += vec4(dot(a_hi[i], b0), dot(a_hi[i], b), dot(a_hi[i], b2), 0.0);
                }
            }
        }
    }
    // Columns g * taps .. + taps - 1 of dweight[slice, k, :] (k-major: c, r, s or c).
    let columns = select(params.c * 9u, params.c, POINTWISE);
    if (wid.x * 8u + lane % 8u < groups) {
        for (var i = 0u; i < DM; i++) {
            if (m0 + i < params.k) {
                let at = (wid.z * params.k + m0 + i) * columns + g * taps;
                for (var t = 0u; t < taps; t++) { dweight[at + t] = acc[i][t]; }
            }
        }
    }
}
