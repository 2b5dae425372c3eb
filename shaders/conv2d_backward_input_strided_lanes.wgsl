// conv2d_backward_input_strided_lanes: conv2d_backward_input_lanes for 3x3 convs with stride 2
// and pad 1, walking only the taps that reach each input position:
//   dinp[n,c,h,w] = sum_{k, r, s: h = 2y-1+r, w = 2x-1+s} dout[n,k,y,x] * weight[k,c,r,s]
// An even h takes tap row r = 1 (y = h/2), an odd h rows 0 and 2 (y = (h+1)/2, (h-1)/2); so do w
// and the tap columns s. Blocked as conv2d_rows_lanes (DM = 16 channels c per workgroup, `lanes8`
// broadcasts the weights); every invocation owns 4 adjacent columns w0 .. w0+3 (w0 a multiple
// of 4) of one dinp row, whose taps read dout columns x0 = w0/2 .. x0+2 (d0, d1, d2):
//   columns w0, w0+1, w0+2, w0+3 += wt(s=1) * (d0, 0, d1, 0) + wt(s=0) * (0, d1, 0, d2)
//                                 + wt(s=2) * (0, d0, 0, d1)
// taken 4 output channels k at a time as dot products of 4, only where the taps are not 0 (47-50
// against 42 % of lavapipe's FMA peak for 4 zero-padded multiply-adds per k, BENCHMARKS.md), with
// the weights of 4 channels k from the layer's transposed panel in one vec4 load (62-64 against
// 50-53 % for 4 scalar loads 9C apart).
// Workgroups take rows of one parity of h (all even rows, then all odd, each padded to whole
// workgroups), so that the lanes of a subgroup walk the same tap rows (they broadcast weights).
// Needs subgroups of at least 8 invocations. ACCUMULATE: dinp += the gradient.
// CPU twin: reference::conv2d_backward_input.
// Dispatch: (2 * ceil(N*ceil(H/2)*ceil(W/4) / 64), ceil(C / DM), 1).

@group(0) @binding(0) var<storage, read_write> dinp: array<f32>;
@group(0) @binding(1) var<storage, read> dout: array<f32>;
@group(0) @binding(2) var<storage, read> panel: array<vec4<f32>>;  // [C4,3,3,K4] as vec4s
@group(0) @binding(3) var<uniform> params: Params;

override ACCUMULATE: bool = false;

// acc[i][t] += dot(weight[k0 .. k0+3, c0 + i, r, s], u) and acc[i][t + 2] += dot(.., v) for the
// block's 16 channels, from the weights `w_lo` of channel c0 + lane and `w_hi` of channel
// c0 + 8 + lane (t = 0: the even columns w0, w0+2; t = 1: the odd ones).
fn madd(acc: ptr<function, array<vec4<f32>, DM>>, w_lo: vec4<f32>, w_hi: vec4<f32>, u: vec4<f32>, v: vec4<f32>,
        t: u32) {
    let a_lo = lanes8(w_lo);
    let a_hi = lanes8(w_hi);
    for (var i = 0u; i < 8u; i++) {
        (*acc)[i][t] += dot(a_lo[i], u);
        (*acc)[i][t + 2u] += dot(a_lo[i], v);
        (*acc)[i + 8u][t] += dot(a_hi[i], u);
        (*acc)[i + 8u][t + 2u] += dot(a_hi[i], v);
    }
}

// dout columns x0 .. x0+2 of the row at `at`, 0 outside the plane.
fn douts(at: u32, at_x: vec3<u32>, ok: vec3<bool>) -> vec3<f32> {
    return select(vec3(0.0), vec3(dout[at + at_x.x], dout[at + at_x.y], dout[at + at_x.z]), ok);
}

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(subgroup_invocation_id) lane: u32) {
    let hw = params.h * params.w;
    let pq = params.p * params.q;
    let row_lanes = (params.w + 3u) / 4u;
    let half = (params.h + 1u) / 2u;
    let per_parity = params.n * half * row_lanes;
    let groups = (per_parity + 63u) / 64u;
    let c0 = wid.y * DM;
    // The lane's 4 columns: w0 .. w0+3 of row h = 2 * hh + parity of image `image`.
    let parity = wid.x / groups;
    let col = (wid.x % groups) * 64u + lid.x;
    let live = col < per_parity;
    let image = min(col, per_parity - 1u) / (half * row_lanes);
    let h = 2u * (min(col, per_parity - 1u) / row_lanes % half) + parity;
    let w0 = 4u * (min(col, per_parity - 1u) % row_lanes);
    let in_row = w0 + vec4(0u, 1u, 2u, 3u) < vec4(params.w);
    // dout columns x0 .. x0+2: which lie in the row, and where (clamped into it).
    let x0 = w0 / 2u;
    let last = params.q - 1u;
    let ok = x0 + vec3(0u, 1u, 2u) <= vec3(last);
    let at_x = min(x0 + vec3(0u, 1u, 2u), vec3(last));
    // weight[k0 .. k0+3, c, r, s] = panel[(9c + 3r + s) * K4 + k0/4] (K4 = ceil(K/4) vec4s per
    // tap, 0 past K) for the lane's channels c0 + lane (lo) and c0 + 8 + lane (hi).
    let k4 = (params.k + 3u) / 4u;
    let lo = min(c0 + lane % 8u, params.c - 1u) * 9u * k4;
    let hi = min(c0 + 8u + lane % 8u, params.c - 1u) * 9u * k4;
    var acc: array<vec4<f32>, DM>;
    // Tap rows: r = 1 for an even h, r = 0 and 2 for an odd one.
    for (var r = 1u - parity; r < 2u + parity; r += 2u) {
        let y = (h + 1u - r) / 2u;
        let inside = y < params.p;
        let row = image * params.k * pq + min(y, params.p - 1u) * params.q;
        // Output channels k0 .. k0+3 at a time (clamped into K; their weights are 0): d_u holds
        // dout column x0 + u over the 4, and the even columns take dot products with tap s = 1,
        // the odd ones with s = 0 and 2.
        for (var k0 = 0u; k0 < params.k; k0 += 4u) {
            let e0 = douts(row + min(k0, params.k - 1u) * pq, at_x, ok & vec3(inside));
            let e1 = douts(row + min(k0 + 1u, params.k - 1u) * pq, at_x, ok & vec3(inside));
            let e2 = douts(row + min(k0 + 2u, params.k - 1u) * pq, at_x, ok & vec3(inside));
            let e3 = douts(row + min(k0 + 3u, params.k - 1u) * pq, at_x, ok & vec3(inside));
            let d0 = vec4(e0.x, e1.x, e2.x, e3.x);
            let d1 = vec4(e0.y, e1.y, e2.y, e3.y);
            let d2 = vec4(e0.z, e1.z, e2.z, e3.z);
            let w_lo = lo + 3u * r * k4 + k0 / 4u;
            let w_hi = hi + 3u * r * k4 + k0 / 4u;
            madd(&acc, panel[w_lo + k4], panel[w_hi + k4], d0, d1, 0u);
            madd(&acc, panel[w_lo], panel[w_hi], d1, d2, 1u);
            madd(&acc, panel[w_lo + 2u * k4], panel[w_hi + 2u * k4], d0, d1, 1u);
        }
    }
    let at = image * params.c * hw + h * params.w + w0;
    for (var i = 0u; i < DM; i++) {
        for (var t = 0u; t < 4u; t++) {
            let o = at + (c0 + i) * hw + t;
            if (c0 + i < params.c && live && h < params.h && in_row[t]) {
                var v = acc[i][t];
                if (ACCUMULATE) { v += dinp[o]; }
                dinp[o] = v;
            }
        }
    }
}
