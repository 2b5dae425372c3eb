// conv2d_pointwise_lanes: conv2d_forward_lanes for 1x1 convs with stride 1 on planes of a
// multiple of 4 values and channel counts of multiples of 4; with TRANSPOSED,
// conv2d_backward_input_lanes of the same layers, which is such a conv of dout with the weights
// transposed:
//   out[n,m,j] = sum_e inp[n,e,j] * wt(m,e)   (j = y*W + x)
//   forward:     m = k, e = c, wt = weight[k,e]
//   TRANSPOSED:  m = c, e = k, wt = weight[e,m] (out = dinp, inp = dout)
// Blocked as conv2d_forward_lanes (DM = 16 rows per workgroup, `lanes8` broadcasts the weights),
// but every invocation owns 4 adjacent positions of one plane, so a reduction step takes one
// vec4 load per channel, 4 channels at a time, where conv2d_forward_lanes makes 4 loads of f32.
// On CPU adapters every storage load is a loop over the lanes, however wide, so a vec4 costs
// about what an f32 does. The 4 channels' weights come as a vec4 and every position adds a dot
// product of 4 (ResNet-50's 56x56 1x1: 59-65 against 54-61 % of lavapipe's FMA peak for 4
// multiply-adds, BENCHMARKS.md).
// Needs subgroups of at least 8 invocations.
// Epilogue (forward) and ACCUMULATE (TRANSPOSED) as the kernels it stands in for.
// CPU twins: reference::conv2d_forward, reference::conv2d_backward_input.
// Dispatch: (ceil(N*H*W / 256), ceil(M / DM), 1).

@group(0) @binding(0) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> inp: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> residual: array<vec4<f32>>;
@group(0) @binding(5) var<uniform> params: Params;

override TRANSPOSED: bool = false;
override ACCUMULATE: bool = false;

// The weights wt(m, e .. e+3) from `at` (`step` apart).
fn wt4(at: u32, step: u32) -> vec4<f32> {
    return vec4(weight[at], weight[at + step], weight[at + 2u * step], weight[at + 3u * step]);
}

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(subgroup_invocation_id) lane: u32) {
    // Rows m of out and reduction channels e of inp, by role.
    let rows = select(params.k, params.c, TRANSPOSED);
    let channels = select(params.c, params.k, TRANSPOSED);
    let hw4 = params.h * params.w / 4u;
    let columns = params.n * hw4;
    let m0 = wid.y * DM;
    // The lane's 4 positions: vec4 j of the plane of image `image`.
    let col = wid.x * 64u + lid.x;
    let live = col < columns;
    let image = min(col, columns - 1u) / hw4;
    let j = min(col, columns - 1u) % hw4;
    // wt(m, e) = weight[base(m) + e * e_step], for the lane's two rows m0 + lane and m0 + 8 + lane.
    let m_lo = min(m0 + lane % 8u, rows - 1u);
    let m_hi = min(m0 + 8u + lane % 8u, rows - 1u);
    let lo = select(m_lo * params.c, m_lo, TRANSPOSED);
    let hi = select(m_hi * params.c, m_hi, TRANSPOSED);
    let e_step = select(1u, params.c, TRANSPOSED);
    var acc: array<vec4<f32>, DM>;
    let base = image * channels * hw4 + j;
    for (var e = 0u; e < channels; e += 4u) {
        let at = base + e * hw4;
        let w_lo = lo + e * e_step;
        let w_hi = hi + e * e_step;
        // Column u: channel e + u at the 4 positions; b * a adds dot(a, channels at position t).
        let b = mat4x4(inp[at], inp[at + hw4], inp[at + 2u * hw4], inp[at + 3u * hw4]);
        madd16_mat(&acc, b, wt4(w_lo, e_step), wt4(w_hi, e_step));
    }
    let at = image * rows * hw4 + j;
    for (var i = 0u; i < DM; i++) {
        let o = at + (m0 + i) * hw4;
        if (m0 + i < rows && live) {
            var v = epilogue(acc[i], m0 + i, o);
            if (ACCUMULATE) { v += out[o]; }
            out[o] = v;
        }
    }
}
