// conv2d_backward_weight_rows_lanes: conv2d_backward_weight_lanes for the layers of
// conv2d_rows_lanes: 3x3, stride 1, pad 1:
//   dweight[k,c,r,s] = sum_{n,y,x} dout[n,k,y,x] * inp[n,c,y+r-1,x+s-1]
// Rows m = k, columns (c, r, s). A workgroup is one subgroup of 8 invocations sharing DM = 16
// rows; each invocation owns the 3 columns (c, r, 0..2) of one (c, r) = wid.x * 8 + lane. The
// reduction walks each row (n, y) 4 columns x0 .. x0+3 at a time (the last step of a row of W
// columns drops those past W): per step every lane loads 4 values of dout for two of the 16 rows
// (broadcast to the subgroup) and the 6 input columns x0-1 .. x0+4 of its input row, then adds
// 16 x 3 dot products of 4: 14 loads for 192 multiply-adds, where conv2d_backward_weight_lanes
// makes 18 (5 in its _vec4 twin, for rows of a multiple of 4 columns).
// The reduction is split into `splits` slices of whole rows as there, written to
// dweight[slice, k, c, r, s]. Needs subgroups of at least 8 invocations.
// CPU twin: reference::conv2d_backward_weight.
// Dispatch: (ceil(C*3 / 8), ceil(K / DM), SPLITS).

struct Params {
    n: u32, c: u32, h: u32, w: u32,
    k: u32, r: u32, s: u32, p: u32,
    q: u32, stride: u32, pad: u32, splits: u32,
}

@group(0) @binding(0) var<storage, read_write> dweight: array<f32>;
@group(0) @binding(1) var<storage, read> dout: array<f32>;
@group(0) @binding(2) var<storage, read> inp: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

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
    let last = params.w - 1u;
    let m0 = wid.y * DM;
    // The lane's columns: the 3 taps of (c, r) = g.
    let groups = params.c * 3u;
    let g = min(wid.x * 8u + lane % 8u, groups - 1u);
    let c = g / 3u;
    let r = g % 3u;
    // The dout rows this lane loads for the subgroup: m0 + lane and m0 + 8 + lane.
    let lo = min(m0 + lane % 8u, params.k - 1u) * hw;
    let hi = min(m0 + 8u + lane % 8u, params.k - 1u) * hw;
    var acc: array<vec4<f32>, DM>;
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
    // Columns 3g .. 3g+2 of dweight[slice, k, :] (k-major: c, r, s).
    if (wid.x * 8u + lane % 8u < groups) {
        for (var i = 0u; i < DM; i++) {
            if (m0 + i < params.k) {
                let at = (wid.z * params.k + m0 + i) * params.c * 9u + 3u * g;
                for (var t = 0u; t < 3u; t++) { dweight[at + t] = acc[i][t]; }
            }
        }
    }
}
