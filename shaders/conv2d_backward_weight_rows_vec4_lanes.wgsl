// conv2d_backward_weight_rows_vec4_lanes: conv2d_backward_weight_rows_lanes on rows of a multiple
// of 4 columns, loading dout and inp as vec4s; with POINTWISE, the weight gradient of
// conv2d_pointwise_lanes' layers (1x1, stride 1, H*W and C multiples of 4):
//   dweight[k,c,r,s] = sum_{n,y,x} dout[n,k,y,x] * inp[n,c,y+r-1,x+s-1]   (1x1: inp[n,c,y,x])
// Rows m = k, columns (c, r, s). A workgroup is one subgroup of 8 invocations sharing DM = 16
// rows; each invocation owns the 3 columns (c, r, 0..2) of one (c, r) = wid.x * 8 + lane (1x1:
// the 4 channels from 4 * (wid.x * 8 + lane)). The reduction walks each row (n, y) 4 columns x at
// a time (1x1: the plane (n, :) 4 positions at a time): per step every lane loads a vec4 of dout
// for two of the 16 rows (broadcast to the subgroup) and the 3 aligned vec4s of inp that hold
// columns x-1 .. x+4 of its input row (1x1: a vec4 of each of its channels), then adds 16 x 3
// (1x1: 16 x 4) dot products of 4: 5 loads for 192 multiply-adds (6 for 256), where
// conv2d_backward_weight_rows_lanes makes 14 and conv2d_backward_weight_lanes 18 (24).
// The reduction is split into `splits` slices of whole steps as there, written to
// dweight[slice, k, c, r, s]. Needs subgroups of at least 8 invocations.
// CPU twin: reference::conv2d_backward_weight.
// Dispatch: (ceil(C*3 / 8), ceil(K / DM), SPLITS); 1x1: (ceil(C/4 / 8), ceil(K / DM), SPLITS).

@group(0) @binding(0) var<storage, read_write> dweight: array<f32>;
@group(0) @binding(1) var<storage, read> dout: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> inp: array<vec4<f32>>;
@group(0) @binding(3) var<uniform> params: Params;

override POINTWISE: bool = false;

@compute @workgroup_size(8)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(subgroup_invocation_id) lane: u32) {
    let hw4 = params.h * params.w / 4u;
    let wv = params.w / 4u;
    let m0 = wid.y * DM;
    // The lane's columns: the 3 taps of (c, r) = g, or with POINTWISE the 4 channels from 4g.
    let groups = select(params.c * 3u, params.c / 4u, POINTWISE);
    let g = min(wid.x * 8u + lane % 8u, groups - 1u);
    // The dout rows this lane loads for the subgroup: m0 + lane and m0 + 8 + lane.
    let lo = min(m0 + lane % 8u, params.k - 1u) * hw4;
    let hi = min(m0 + 8u + lane % 8u, params.k - 1u) * hw4;
    var acc: array<vec4<f32>, DM>;
    if (POINTWISE) {
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
            madd16(&acc, dout[n * params.k * hw4 + j + lo], dout[n * params.k * hw4 + j + hi], b0, b1, b2, b3);
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
            let row = (n * params.c + c) * hw4 + u32(clamp(h, 0, i32(params.h) - 1)) * wv;
            let d_row = n * params.k * hw4 + y * wv;
            for (var x = 0u; x < wv; x++) {
                // Columns 4x-1 .. 4x+4 of the input row: the inputs of taps s = 0, 1, 2 are b1 shifted by s-1.
                let l = select(vec4(0.0), inp[row + max(x, 1u) - 1u], inside && x > 0u);
                let b1 = select(vec4(0.0), inp[row + x], inside);
                let n4 = select(vec4(0.0), inp[row + min(x + 1u, wv - 1u)], inside && x + 1u < wv);
                let b0 = vec4(l.w, b1.xyz);
                let b2 = vec4(b1.yzw, n4.x);
                madd16x3(&acc, dout[d_row + lo + x], dout[d_row + hi + x], b0, b1, b2);
            }
        }
    }
    if (wid.x * 8u + lane % 8u < groups) {
        for (var i = 0u; i < DM; i++) { store_columns(wid.z, m0 + i, g, acc[i]); }
    }
}
