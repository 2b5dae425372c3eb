// conv2d_backward_weight_pointwise_lanes: conv2d_backward_weight_lanes for the layers of
// conv2d_pointwise_lanes: 1x1, stride 1, H*W and C multiples of 4:
//   dweight[k,c] = sum_{n,j} dout[n,k,j] * inp[n,c,j]   (j = y*W + x)
// Rows m = k, columns c. A workgroup is one subgroup of 8 invocations sharing DM = 16 rows; each
// invocation owns the 4 channels from 4 * (wid.x * 8 + lane). The reduction walks the planes
// (n, :) 4 positions at a time: per step every lane loads a vec4 of dout for two of the 16 rows
// (broadcast to the subgroup) and a vec4 of each of its channels, then adds 16 x 4 dot products
// of 4: 6 loads for 256 multiply-adds, where conv2d_backward_weight_lanes makes 24.
// The reduction is split into `splits` slices of whole steps as there, written to
// dweight[slice, k, c]. Needs subgroups of at least 8 invocations.
// CPU twin: reference::conv2d_backward_weight.
// Dispatch: (ceil(C/4 / 8), ceil(K / DM), SPLITS).

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
    let m0 = wid.y * DM;
    // The lane's columns: the 4 channels from 4g.
    let groups = params.c / 4u;
    let g = min(wid.x * 8u + lane % 8u, groups - 1u);
    // The dout rows this lane loads for the subgroup: m0 + lane and m0 + 8 + lane.
    let lo = min(m0 + lane % 8u, params.k - 1u) * hw4;
    let hi = min(m0 + 8u + lane % 8u, params.k - 1u) * hw4;
    var acc: array<vec4<f32>, DM>;
    // The reduction in steps of 4 positions (n, j..j+3), one vec4 per channel.
    let steps = params.n * hw4;
    let chunk = (steps + params.splits - 1u) / params.splits;
    for (var nj = wid.z * chunk; nj < min(steps, (wid.z + 1u) * chunk); nj++) {
        let n = nj / hw4;
        let j = nj % hw4;
        let at = (n * params.c + 4u * g) * hw4 + j;
        let b0 = inp[at];
        let b1 = inp[at + hw4];
        let b2 = inp[at + 2u * hw4];
        let b3 = inp[at + 3u * hw4];
        let a_lo = lanes8(dout[n * params.k * hw4 + j + lo]);
        let a_hi = lanes8(dout[n * params.k * hw4 + j + hi]);
        for (var i = 0u; i < 8u; i++) {
            acc[i] += vec4(dot(a_lo[i], b0), dot(a_lo[i], b1), dot(a_lo[i], b2), dot(a_lo[i], b3));
            acc[i + 8u] += vec4(dot(a_hi[i], b0), dot(a_hi[i], b1), dot(a_hi[i], b2), dot(a_hi[i], b3));
        }
    }
    // Columns 4g .. 4g+3 of dweight[slice, k, :].
    if (wid.x * 8u + lane % 8u < groups) {
        for (var i = 0u; i < DM; i++) {
            if (m0 + i < params.k) {
                let at = (wid.z * params.k + m0 + i) * params.c + 4u * g;
                for (var t = 0u; t < 4u; t++) { dweight[at + t] = acc[i][t]; }
            }
        }
    }
}
