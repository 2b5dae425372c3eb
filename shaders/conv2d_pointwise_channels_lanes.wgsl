// conv2d_pointwise_channels_lanes: conv2d_pointwise_lanes for planes of any size (ResNet-50's
// 7x7) and any stride, with the roles of the block's rows and columns swapped: 1x1 convs with
// pad 0 and both channel counts multiples of 4; with TRANSPOSED, their input gradient:
//   out[n,k,y,x] = sum_c inp[n,c,S*y,S*x] * weight[k,c]              (forward)
//   dinp[n,c,S*y,S*x] = sum_k dout[n,k,y,x] * weight[k,c]            (TRANSPOSED; at S > 1 only
//                                                                    with ACCUMULATE: the rest
//                                                                    of dinp is left as it is)
// that is out[m, position] = sum_e inp[e, position] * wt(m,e) with m = k, e = c, wt = weight[k,e]
// (forward) or m = c, e = k, wt = weight[e,m] (TRANSPOSED), over the N*P*Q output positions (n, y, x).
// A workgroup shares DM = 16 of those positions (they may straddle images),
// whose inputs its lanes load and broadcast with `lanes8`; every invocation owns 4 adjacent
// channels m .. m+3 of them. A reduction step takes 4 channels e .. e+3: the 4x4 weights
// wt(m+t, e+u) are 4 vec4 loads (forward: one per t; TRANSPOSED: one per u), and the inputs
// 2 x 4 loads, 12 loads for 256 multiply-adds, where conv2d_forward_lanes makes 24; each
// position's 4 inputs come as a vec4 and every channel adds a dot product of 4 (forward 62-75
// against 53-61 % of lavapipe's FMA peak for 4 multiply-adds, BENCHMARKS.md).
// Needs subgroups of at least 8 invocations.
// Epilogue (forward) and ACCUMULATE (TRANSPOSED) as the kernels it stands in for.
// CPU twins: reference::conv2d_forward, reference::conv2d_backward_input.
// Dispatch: (ceil(M / 256), ceil(N*P*Q / DM), 1).

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> inp: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> residual: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;

// Position p of the N*P*Q output positions: (image, offset in its plane), for the layer's input
// plane (H x W, at stride S) or its output plane (P x Q).
fn place(p: u32, input_plane: bool) -> vec2<u32> {
    let pq = params.p * params.q;
    let j = p % pq;
    let strided = params.stride * (j / params.q * params.w + j % params.q);
    return vec2(p / pq, select(j, strided, input_plane));
}

override TRANSPOSED: bool = false;
override ACCUMULATE: bool = false;

// The inputs of 4 channels from `at` (`step` apart).
fn inputs(at: u32, step: u32) -> vec4<f32> {
    return vec4(inp[at], inp[at + step], inp[at + 2u * step], inp[at + 3u * step]);
}

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(subgroup_invocation_id) lane: u32) {
    // Output channels m and reduction channels e, by role.
    let rows = select(params.k, params.c, TRANSPOSED);
    let channels = select(params.c, params.k, TRANSPOSED);
    // The planes that inp and out are made of.
    let inp_plane = select(params.h * params.w, params.p * params.q, TRANSPOSED);
    let out_plane = select(params.p * params.q, params.h * params.w, TRANSPOSED);
    let positions = params.n * params.p * params.q;
    let p0 = wid.y * DM;
    // The lane's 4 channels m .. m+3.
    let m = 4u * (wid.x * 64u + lid.x);
    let live = m < rows;
    let m_at = min(m, rows - 4u);
    // inp[e, position] = inp[base + e * inp_plane] for the positions p0 + lane and p0 + 8 + lane.
    let at_lo = place(min(p0 + lane % 8u, positions - 1u), !TRANSPOSED);
    let at_hi = place(min(p0 + 8u + lane % 8u, positions - 1u), !TRANSPOSED);
    let lo = at_lo.x * channels * inp_plane + at_lo.y;
    let hi = at_hi.x * channels * inp_plane + at_hi.y;
    var acc: array<vec4<f32>, DM>;
    for (var e = 0u; e < channels; e += 4u) {
        // Row t of w: wt(m + t, e .. e+3), so w * inputs adds channel m + t's dot product.
        var w: mat4x4<f32>;
        if (TRANSPOSED) {
            w = mat4x4(weight[(e * params.c + m_at) / 4u], weight[((e + 1u) * params.c + m_at) / 4u],
                       weight[((e + 2u) * params.c + m_at) / 4u], weight[((e + 3u) * params.c + m_at) / 4u]);
        } else {
            w = transpose(mat4x4(weight[(m_at * params.c + e) / 4u], weight[((m_at + 1u) * params.c + e) / 4u],
                                 weight[((m_at + 2u) * params.c + e) / 4u], weight[((m_at + 3u) * params.c + e) / 4u]));
        }
        madd16_mat(&acc, w, inputs(lo + e * inp_plane, inp_plane), inputs(hi + e * inp_plane, inp_plane));
    }
    for (var i = 0u; i < DM; i++) {
        if (p0 + i < positions && live) {
            let at_out = place(p0 + i, TRANSPOSED);
            let at = (at_out.x * rows + m) * out_plane + at_out.y;
            for (var t = 0u; t < 4u; t++) {
                let o = at + t * out_plane;
                var v = epilogue(acc[i][t], m + t, o);
                if (ACCUMULATE) { v += out[o]; }
                out[o] = v;
            }
        }
    }
}
