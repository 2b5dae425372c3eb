// conv2d_backward_weight_rows_vec4_lanes: conv2d_backward_weight_rows_lanes on rows of a multiple
// of 4 columns, loading dout and inp as vec4s:
//   dweight[k,c,r,s] = sum_{n,y,x} dout[n,k,y,x] * inp[n,c,y+r-1,x+s-1]
// Rows m = k, columns (c, r, s). A workgroup is one subgroup of 8 invocations sharing DM = 16
// rows; each invocation owns the 3 columns (c, r, 0..2) of one (c, r) = wid.x * 8 + lane. The
// reduction walks each row (n, y) 4 columns x at a time: per step every lane loads a vec4 of dout
// for two of the 16 rows (broadcast to the subgroup) and the 3 aligned vec4s of inp that hold
// columns x-1 .. x+4 of its input row, then adds 16 x 3 dot products of 4: 5 loads for 192
// multiply-adds, where conv2d_backward_weight_rows_lanes makes 14.
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
@group(0) @binding(1) var<storage, read> dout: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> inp: array<vec4<f32>>;
@group(0) @binding(3) var<uniform> params: Params;

const DM: u32 = 16;

// The values of `v` in lanes 0..7 of the subgroup.
fn lanes8(v: vec4<f32>) -> array<vec4<f32>, 8> {
    return array(subgroupBroadcast(v, 0u), subgroupBroadcast(v, 1u), subgroupBroadcast(v, 2u), subgroupBroadcast(v, 3u),
                 subgroupBroadcast(v, 4u), subgroupBroadcast(v, 5u), subgroupBroadcast(v, 6u), subgroupBroadcast(v, 7u));
}

@compute @workgroup_size(8)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(subgroup_invocation_id) lane: u32) {
    let hw4 = params.h * params.w / 4u;
    let wv = params.w / 4u;
    let m0 = wid.y * DM;
    // The lane's columns: the 3 taps of (c, r) = g.
    let groups = params.c * 3u;
    let g = min(wid.x * 8u + lane % 8u, groups - 1u);
    // The dout rows this lane loads for the subgroup: m0 + lane and m0 + 8 + lane.
    let lo = min(m0 + lane % 8u, params.k - 1u) * hw4;
    let hi = min(m0 + 8u + lane % 8u, params.k - 1u) * hw4;
    var acc: array<vec4<f32>, DM>;
    let c = g / 3u;
    let r = g % 3u;
    let rows = params.n * params.h;
    let chunk = (rows + params.splits - 1u) / params.splits;
    for (var ny = wid.z * chunk; ny < min(rows, (wid.z + 1u) * chunk); ny++) {
        let n = ny / params.h;
        let y = ny % params.h;
        let h = i32(y + r) - 1;
        let inside = h >= 0 && h < i32(params.h);
        let row = (n * params.c + c) * hw4 + u32(clamp(h, 0, i32(params.h) - 1)) * wv;
        let d_row = n * params.k * hw4 + y * wv;
        for (var x = 0u; x < wv; x++) {
            // Columns 4x-1 .. 4x+4 of the input row: the inputs of taps s = 0, 1, 2 are b1 shifted by s-1.
            let l = select(vec4(0.0), inp[row + max(x, 1u) - 1u], inside && x > 0u);
            let b1 = select(vec4(0.0), inp[row + x], inside);
            let n4 = select(vec4(0.0), inp[row + min(x + 1u, wv - 1u)], inside && x + 1u < wv);
            let b0 = vec4(l.w, b1.xyz);
            let b2 = vec4(b1.yzw, n4.x);
            let a_lo = lanes8(dout[d_row + lo + x]);
            let a_hi = lanes8(dout[d_row + hi + x]);
            for (var i = 0u; i < 8u; i++) {
                acc[i] += vec4(dot(a_lo[i], b0), dot(a_lo[i], b1), dot(a_lo[i], b2), 0.0);
                acc[i + 8u] += vec4(dot(a_hi[i], b0), dot(a_hi[i], b1), dot(a_hi[i], b2), 0.0);
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
