// conv2d_rows_lanes: conv2d_forward_lanes for 3x3 convs with pad 1 and stride 1 or (STRIDE = 2,
// forward only) 2; with TRANSPOSED, conv2d_backward_input_lanes of the stride-1 ones, which is
// such a conv of dout with the weights flipped and transposed:
//   out[n,m,y,x] = sum_{e,r,s} inp[n,e,S*y+r-1,S*x+s-1] * wt(m,e,r,s)
//   forward:     m = k, e = c, wt = weight[k,e,r,s]
//   TRANSPOSED:  m = c, e = k, wt = weight[e,m,2-r,2-s] (out = dinp, inp = dout)
// Blocked as conv2d_forward_lanes (DM = 16 rows per workgroup, `lanes8` broadcasts the weights),
// but every invocation owns 4 adjacent columns x0 .. x0+3 of one output row (x0 a multiple of 4;
// a row of Q columns takes ceil(Q/4) invocations, the last one's columns past Q are dropped), so
// a reduction row's 3 taps read the input columns S*x0-1 .. S*x0+3S+1 (6 at stride 1, 9 at 2)
// where conv2d_forward_lanes makes 12 loads. The reduction takes 4 channels e0 .. e0+3 at a
// time: the weights of a tap come as a vec4 over them, and every row adds to each column 3 dot
// products of 4 (one per tap) where a multiply-add per channel and tap rewrote the accumulators
// 4 times as often (on ResNet-50's 3x3s 66-69 against 62-68 % of lavapipe's FMA peak at 56x56,
// 57-64 against 47-55 % at 14x14 and 7x7; its strided 3x3 forward 51-54 against 39-41 % in
// conv2d_forward_lanes, BENCHMARKS.md).
// Needs subgroups of at least 8 invocations.
// Epilogue (forward) and ACCUMULATE (TRANSPOSED) as the kernels it stands in for.
// CPU twins: reference::conv2d_forward, reference::conv2d_backward_input.
// Dispatch: (ceil(N*P*ceil(Q/4) / 64), ceil(M / DM), 1).

struct Params {
    n: u32, c: u32, h: u32, w: u32,
    k: u32, r: u32, s: u32, p: u32,
    q: u32, stride: u32, pad: u32, _unused: u32,
}

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> inp: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> residual: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;

override TRANSPOSED: bool = false;
override STRIDE: u32 = 1u;
override ACCUMULATE: bool = false;
override BIAS: bool = false;
override RESIDUAL: bool = false;
override RELU: bool = false;
const DM: u32 = 16;

// acc[i][t] += dot(wt(m0 + i, e0 .. e0+3, r, s), v_t) for the block's 16 rows, from the weights
// `w_lo` of row m0 + lane and `w_hi` of row m0 + 8 + lane.
fn madd(acc: ptr<function, array<vec4<f32>, DM>>, w_lo: vec4<f32>, w_hi: vec4<f32>, v0: vec4<f32>, v1: vec4<f32>,
        v2: vec4<f32>, v3: vec4<f32>) {
    let a_lo = lanes8(w_lo);
    let a_hi = lanes8(w_hi);
    for (var i = 0u; i < 8u; i++) {
        (*acc)[i] += vec4(dot(a_lo[i], v0), dot(a_lo[i], v1), dot(a_lo[i], v2), dot(a_lo[i], v3));
        (*acc)[i + 8u] += vec4(dot(a_hi[i], v0), dot(a_hi[i], v1), dot(a_hi[i], v2), dot(a_hi[i], v3));
    }
}

// The weights wt(m, e0 .. e0+3, r, s) of the lane's row m at `at` (e_step apart), 0 past the
// reduction's channels (where not `real`).
fn wt4(at: u32, e_step: u32, real: vec4<bool>) -> vec4<f32> {
    return select(vec4(0.0), vec4(weight[at], weight[at + e_step], weight[at + 2u * e_step], weight[at + 3u * e_step]), real);
}

// Where a lane's input columns S*x0-1 .. S*x0+7 lie in a row (clamped into it), and which of
// them are inside the plane: `left` the first, `mid` the next 4, `far` the 4 after (stride 1
// reads `far.x` only).
struct Window { left: u32, mid: vec4<u32>, far: vec4<u32>, left_in: bool, mid_in: vec4<bool>, far_in: vec4<bool> }

// The 9 input columns of the row at `at`, 0 outside the plane.
fn inputs(at: u32, win: Window) -> array<f32, 9> {
    let b = select(vec4(0.0), vec4(inp[at + win.mid.x], inp[at + win.mid.y], inp[at + win.mid.z], inp[at + win.mid.w]),
                   win.mid_in);
    let f = select(vec4(0.0), vec4(inp[at + win.far.x], inp[at + win.far.y], inp[at + win.far.z], inp[at + win.far.w]),
                   win.far_in);
    return array(select(0.0, inp[at + win.left], win.left_in), b.x, b.y, b.z, b.w, f.x, f.y, f.z, f.w);
}

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(subgroup_invocation_id) lane: u32) {
    // Rows m of out and reduction channels e of inp, by role.
    let rows = select(params.k, params.c, TRANSPOSED);
    let channels = select(params.c, params.k, TRANSPOSED);
    let hw = params.h * params.w;
    let pq = params.p * params.q;
    let row_lanes = (params.q + 3u) / 4u;
    let columns = params.n * params.p * row_lanes;
    let m0 = wid.y * DM;
    // The lane's 4 columns: x0 .. x0+3 of output row y of image `image`.
    let col = wid.x * 64u + lid.x;
    let live = col < columns;
    let image = min(col, columns - 1u) / (params.p * row_lanes);
    let y = (min(col, columns - 1u) / row_lanes) % params.p;
    let x0 = 4u * (min(col, columns - 1u) % row_lanes);
    let in_row = x0 + vec4(0u, 1u, 2u, 3u) < vec4(params.q);
    // Input columns S*x0-1 .. S*x0+7: where (clamped into the row), and which lie in it (the
    // first unless x0 = 0, the others while before W).
    let x = STRIDE * x0;
    let last = params.w - 1u;
    let left = x > 0u;
    let at_left = select(x, x - 1u, left);
    let mid = x + vec4(0u, 1u, 2u, 3u);
    let far = x + vec4(4u, 5u, 6u, 7u);
    // wt(m, e, r, s) = weight[base(m) + e * e_step + d * (3r + s)], for the lane's two rows
    // m0 + lane and m0 + 8 + lane (d = -1 wraps around in u32).
    let m_lo = min(m0 + lane % 8u, rows - 1u);
    let m_hi = min(m0 + 8u + lane % 8u, rows - 1u);
    let lo = select(m_lo * params.c * 9u, m_lo * 9u + 8u, TRANSPOSED);
    let hi = select(m_hi * params.c * 9u, m_hi * 9u + 8u, TRANSPOSED);
    let e_step = select(9u, params.c * 9u, TRANSPOSED);
    let d = select(1u, 0u - 1u, TRANSPOSED);
    var acc: array<vec4<f32>, DM>;
    for (var r = 0u; r < 3u; r++) {
        let h = i32(STRIDE * y + r) - 1;
        let inside = h >= 0 && h < i32(params.h);
        let row = image * channels * hw + u32(clamp(h, 0, i32(params.h) - 1)) * params.w;
        let win = Window(at_left, min(mid, vec4(last)), min(far, vec4(last)), inside && left,
                         mid <= vec4(last) & vec4(inside), far <= vec4(last) & vec4(inside));
        for (var e0 = 0u; e0 < channels; e0 += 4u) {
            // The 6 input columns of channels e0 .. e0+3 (clamped into the channels; their weights are 0).
            let c0 = inputs(row + min(e0, channels - 1u) * hw, win);
            let c1 = inputs(row + min(e0 + 1u, channels - 1u) * hw, win);
            let c2 = inputs(row + min(e0 + 2u, channels - 1u) * hw, win);
            let c3 = inputs(row + min(e0 + 3u, channels - 1u) * hw, win);
            // v_u: input column S*x0-1+u over the 4 channels; tap s at column x0 + t takes v_(S*t+s).
            let v0 = vec4(c0[0], c1[0], c2[0], c3[0]);
            let v1 = vec4(c0[1], c1[1], c2[1], c3[1]);
            let v2 = vec4(c0[2], c1[2], c2[2], c3[2]);
            let v3 = vec4(c0[3], c1[3], c2[3], c3[3]);
            let v4 = vec4(c0[4], c1[4], c2[4], c3[4]);
            let v5 = vec4(c0[5], c1[5], c2[5], c3[5]);
            let v6 = vec4(c0[6], c1[6], c2[6], c3[6]);
            let v7 = vec4(c0[7], c1[7], c2[7], c3[7]);
            let v8 = vec4(c0[8], c1[8], c2[8], c3[8]);
            let real = e0 + vec4(0u, 1u, 2u, 3u) < vec4(channels);
            let w_lo = lo + e0 * e_step + d * 3u * r;
            let w_hi = hi + e0 * e_step + d * 3u * r;
            let a0 = wt4(w_lo, e_step, real);
            let a1 = wt4(w_lo + d, e_step, real);
            let a2 = wt4(w_lo + 2u * d, e_step, real);
            let b0 = wt4(w_hi, e_step, real);
            let b1 = wt4(w_hi + d, e_step, real);
            let b2 = wt4(w_hi + 2u * d, e_step, real);
            if (STRIDE == 1u) {
                madd(&acc, a0, b0, v0, v1, v2, v3);
                madd(&acc, a1, b1, v1, v2, v3, v4);
                madd(&acc, a2, b2, v2, v3, v4, v5);
            } else {
                madd(&acc, a0, b0, v0, v2, v4, v6);
                madd(&acc, a1, b1, v1, v3, v5, v7);
                madd(&acc, a2, b2, v2, v4, v6, v8);
            }
        }
    }
    let at = image * rows * pq + y * params.q + x0;
    for (var i = 0u; i < DM; i++) {
        for (var t = 0u; t < 4u; t++) {
            let o = at + (m0 + i) * pq + t;
            if (m0 + i < rows && live && in_row[t]) {
                var v = acc[i][t];
                if (BIAS) { v += bias[m0 + i]; }
                if (RESIDUAL) { v += residual[o]; }
                if (RELU) { v = max(v, 0.0); }
                if (ACCUMULATE) { v += out[o]; }
                out[o] = v;
            }
        }
    }
}
