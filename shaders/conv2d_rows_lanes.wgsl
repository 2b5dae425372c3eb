// conv2d_rows_lanes: conv2d_forward_lanes for 3x3 convs with stride 1 and pad 1 on rows of a
// multiple of 4 columns, or with POINTWISE for 1x1 convs with stride 1 on planes of a multiple of 4
// values and channel counts of multiples of 4; with TRANSPOSED, conv2d_backward_input_lanes of the
// same layers, which is such a conv of dout with the weights flipped and transposed:
//   out[n,m,y,x] = sum_{e,r,s} inp[n,e,y+r-1,x+s-1] * wt(m,e,r,s)   (1x1: inp[n,e,y,x] * wt(m,e))
//   forward:     m = k, e = c, wt = weight[k,e,r,s]
//   TRANSPOSED:  m = c, e = k, wt = weight[e,m,2-r,2-s] (out = dinp, inp = dout)
// Blocked as conv2d_forward_lanes (DM = 16 rows per workgroup, `lanes8` broadcasts the weights),
// but every invocation owns 4 adjacent columns of one row, so the inputs of a reduction row's 3
// taps come from 3 aligned vec4 loads (the lane's own and its neighbours), where
// conv2d_forward_lanes makes 12 loads of f32; a 1x1 step takes one vec4 per channel, 4 channels
// at a time. On CPU adapters every storage load is a loop over the lanes, however wide, so a vec4
// costs about what an f32 does.
// Needs subgroups of at least 8 invocations.
// Epilogue (forward) and ACCUMULATE (TRANSPOSED) as the kernels it stands in for.
// CPU twins: reference::conv2d_forward, reference::conv2d_backward_input.
// Dispatch: (ceil(N*H*W / 256), ceil(M / DM), 1).

struct Params {
    n: u32, c: u32, h: u32, w: u32,
    k: u32, r: u32, s: u32, p: u32,
    q: u32, stride: u32, pad: u32, _unused: u32,
}

@group(0) @binding(0) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> inp: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> residual: array<vec4<f32>>;
@group(0) @binding(5) var<uniform> params: Params;

override TRANSPOSED: bool = false;
override POINTWISE: bool = false;
override ACCUMULATE: bool = false;
override BIAS: bool = false;
override RESIDUAL: bool = false;
override RELU: bool = false;
const DM: u32 = 16;

// The values of `v` in lanes 0..7 of the subgroup.
fn lanes8(v: f32) -> array<f32, 8> {
    return array(subgroupBroadcast(v, 0u), subgroupBroadcast(v, 1u), subgroupBroadcast(v, 2u), subgroupBroadcast(v, 3u),
                 subgroupBroadcast(v, 4u), subgroupBroadcast(v, 5u), subgroupBroadcast(v, 6u), subgroupBroadcast(v, 7u));
}

// acc[i] += wt(m0 + i, ...) * b for the block's 16 rows, from the weights `w_lo` of row m0 + lane
// and `w_hi` of row m0 + 8 + lane.
fn madd(acc: ptr<function, array<vec4<f32>, DM>>, w_lo: f32, w_hi: f32, b: vec4<f32>) {
    let a_lo = lanes8(w_lo);
    let a_hi = lanes8(w_hi);
    for (var i = 0u; i < 8u; i++) {
        (*acc)[i] = fma(vec4(a_lo[i]), b, (*acc)[i]);
        (*acc)[i + 8u] = fma(vec4(a_hi[i]), b, (*acc)[i + 8u]);
    }
}

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(subgroup_invocation_id) lane: u32) {
    // Rows m of out and reduction channels e of inp, by role.
    let rows = select(params.k, params.c, TRANSPOSED);
    let channels = select(params.c, params.k, TRANSPOSED);
    let hw = params.h * params.w;
    let wv = params.w / 4u;
    let columns = params.n * hw / 4u;
    let m0 = wid.y * DM;
    // The lane's 4 columns: vec4 x of row y of image `image`.
    let col = wid.x * 64u + lid.x;
    let live = col < columns;
    let image = min(col, columns - 1u) / (hw / 4u);
    let y = (min(col, columns - 1u) % (hw / 4u)) / wv;
    let x = min(col, columns - 1u) % wv;
    let left = x > 0u;
    let right = x + 1u < wv;
    // wt(m, e, r, s) = weight[base(m) + e * e_step + d * (3r + s)], for the lane's two rows
    // m0 + lane and m0 + 8 + lane (d = -1 wraps around in u32).
    let m_lo = min(m0 + lane % 8u, rows - 1u);
    let m_hi = min(m0 + 8u + lane % 8u, rows - 1u);
    let rs = select(9u, 1u, POINTWISE);
    let lo = select(m_lo * params.c * rs, m_lo * rs + rs - 1u, TRANSPOSED);
    let hi = select(m_hi * params.c * rs, m_hi * rs + rs - 1u, TRANSPOSED);
    let e_step = select(rs, params.c * rs, TRANSPOSED);
    let d = select(1u, 0u - 1u, TRANSPOSED);
    var acc: array<vec4<f32>, DM>;
    if (POINTWISE) {
        // 1x1: four channels per step.
        let hw4 = hw / 4u;
        let base = image * channels * hw4 + min(col, columns - 1u) % hw4;
        for (var e = 0u; e < channels; e += 4u) {
            let at = base + e * hw4;
            let w_lo = lo + e * e_step;
            let w_hi = hi + e * e_step;
            madd(&acc, weight[w_lo], weight[w_hi], inp[at]);
            madd(&acc, weight[w_lo + e_step], weight[w_hi + e_step], inp[at + hw4]);
            madd(&acc, weight[w_lo + 2u * e_step], weight[w_hi + 2u * e_step], inp[at + 2u * hw4]);
            madd(&acc, weight[w_lo + 3u * e_step], weight[w_hi + 3u * e_step], inp[at + 3u * hw4]);
        }
    } else {
        for (var r = 0u; r < 3u; r++) {
            let h = i32(y + r) - 1;
            let inside = h >= 0 && h < i32(params.h);
            let row = image * channels * hw / 4u + u32(clamp(h, 0, i32(params.h) - 1)) * wv + x;
            for (var e = 0u; e < channels; e++) {
                // Columns x-1 .. x+4 of the row: the inputs of taps s = 0, 1, 2 are b1 shifted by s-1.
                let at = row + e * hw / 4u;
                let l = select(vec4(0.0), inp[select(at, at - 1u, left)], inside && left);
                let b1 = select(vec4(0.0), inp[at], inside);
                let n = select(vec4(0.0), inp[select(at, at + 1u, right)], inside && right);
                let w_lo = lo + e * e_step + d * 3u * r;
                let w_hi = hi + e * e_step + d * 3u * r;
                madd(&acc, weight[w_lo], weight[w_hi], vec4(l.w, b1.xyz));
                madd(&acc, weight[w_lo + d], weight[w_hi + d], b1);
                madd(&acc, weight[w_lo + 2u * d], weight[w_hi + 2u * d], vec4(b1.yzw, n.x));
            }
        }
    }
    let at = image * rows * hw / 4u + col % (hw / 4u);
    for (var i = 0u; i < DM; i++) {
        let o = at + (m0 + i) * hw / 4u;
        if (m0 + i < rows && live) {
            var v = acc[i];
            if (BIAS) { v += bias[m0 + i]; }
            if (RESIDUAL) { v += residual[o]; }
            if (RELU) { v = max(v, vec4(0.0)); }
            if (ACCUMULATE) { v += out[o]; }
            out[o] = v;
        }
    }
}
