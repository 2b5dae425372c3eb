// conv2d_rows_lanes: conv2d_forward_lanes for 3x3 convs with stride 1 and pad 1; with TRANSPOSED,
// conv2d_backward_input_lanes of the same layers, which is such a conv of dout with the weights
// flipped and transposed:
//   out[n,m,y,x] = sum_{e,r,s} inp[n,e,y+r-1,x+s-1] * wt(m,e,r,s)
//   forward:     m = k, e = c, wt = weight[k,e,r,s]
//   TRANSPOSED:  m = c, e = k, wt = weight[e,m,2-r,2-s] (out = dinp, inp = dout)
// Blocked as conv2d_forward_lanes (DM = 16 rows per workgroup, `lanes8` broadcasts the weights),
// but every invocation owns 4 adjacent columns x0 .. x0+3 of one output row (x0 a multiple of 4;
// a row of W columns takes ceil(W/4) invocations, the last one's columns past W are dropped), so
// a reduction row's 3 taps read the 6 input columns x0-1 .. x0+4 where conv2d_forward_lanes
// makes 12 loads. The reduction takes 4 channels e0 .. e0+3 at a time: the weights of a tap come
// as a vec4 over them, and every row adds to each column 3 dot products of 4 (one per tap) where
// a multiply-add per channel and tap rewrote the accumulators 4 times as often (on ResNet-50's
// 3x3s 66-69 against 62-68 % of lavapipe's FMA peak at 56x56, 57-64 against 47-55 % at 14x14
// and 7x7, BENCHMARKS.md). The weights come from the layer's panel (conv2d_weight_panel, rows m
// outermost, reduction channels innermost): one vec4 load per row and tap where 4 scalar loads
// strided by 9 (or 9C) held the kernel back (ResNet-50's 3x3s 67-87 against 58-71 %).
// Needs subgroups of at least 8 invocations.
// Epilogue (forward) and ACCUMULATE (TRANSPOSED) as the kernels it stands in for.
// CPU twins: reference::conv2d_forward, reference::conv2d_backward_input.
// Dispatch: (ceil(N*H*ceil(W/4) / 64), ceil(M / DM), 1).

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> inp: array<f32>;
@group(0) @binding(2) var<storage, read> panel: array<vec4<f32>>;  // [M4,3,3,E4] as vec4s
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> residual: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;

override TRANSPOSED: bool = false;
override ACCUMULATE: bool = false;
override BIAS: bool = false;
override RESIDUAL: bool = false;
override RELU: bool = false;

// Where a lane's input columns x0-1 .. x0+4 lie in a row (clamped into it), and which of them
// are inside the plane.
struct Window { left: u32, mid: vec4<u32>, right: u32, left_in: bool, mid_in: vec4<bool>, right_in: bool }

// The 6 input columns of the row at `at`, 0 outside the plane.
fn inputs(at: u32, win: Window) -> array<f32, 6> {
    let b = select(vec4(0.0), vec4(inp[at + win.mid.x], inp[at + win.mid.y], inp[at + win.mid.z], inp[at + win.mid.w]),
                   win.mid_in);
    return array(select(0.0, inp[at + win.left], win.left_in), b.x, b.y, b.z, b.w,
                 select(0.0, inp[at + win.right], win.right_in));
}

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(subgroup_invocation_id) lane: u32) {
    // Rows m of out and reduction channels e of inp, by role.
    let rows = select(params.k, params.c, TRANSPOSED);
    let channels = select(params.c, params.k, TRANSPOSED);
    let hw = params.h * params.w;
    let row_lanes = (params.w + 3u) / 4u;
    let columns = params.n * params.h * row_lanes;
    let m0 = wid.y * DM;
    // The lane's 4 columns: x0 .. x0+3 of row y of image `image`.
    let col = wid.x * 64u + lid.x;
    let live = col < columns;
    let image = min(col, columns - 1u) / (params.h * row_lanes);
    let y = (min(col, columns - 1u) / row_lanes) % params.h;
    let x0 = 4u * (min(col, columns - 1u) % row_lanes);
    // Input columns x0-1 .. x0+4: where (clamped into the row), and which lie in it (the first
    // unless x0 = 0, the others while before W).
    let last = params.w - 1u;
    let left = x0 > 0u;
    let in_row = x0 + vec4(0u, 1u, 2u, 3u) <= vec4(last);
    let right = x0 + 4u <= last;
    let at_left = select(x0, x0 - 1u, left);
    let at_mid = min(x0 + vec4(0u, 1u, 2u, 3u), vec4(last));
    let at_right = min(x0 + 4u, last);
    // The weights of row m at tap (r, s) over channels e0 .. e0+3: panel[(9m + 3r + s) * E4 + e0/4]
    // (E4 = ceil(E/4) vec4s per tap, 0 past the channels), TRANSPOSED at the flipped tap 8 - 3r - s
    // (d = -E4 wraps around in u32); the lane loads its rows m0 + lane (lo) and m0 + 8 + lane (hi).
    let e4 = (channels + 3u) / 4u;
    let tap0 = select(0u, 8u * e4, TRANSPOSED);
    let lo = min(m0 + lane % 8u, rows - 1u) * 9u * e4 + tap0;
    let hi = min(m0 + 8u + lane % 8u, rows - 1u) * 9u * e4 + tap0;
    let d = select(e4, 0u - e4, TRANSPOSED);
    var acc: array<vec4<f32>, DM>;
    for (var r = 0u; r < 3u; r++) {
        let h = i32(y + r) - 1;
        let inside = h >= 0 && h < i32(params.h);
        let row = image * channels * hw + u32(clamp(h, 0, i32(params.h) - 1)) * params.w;
        let win = Window(at_left, at_mid, at_right, inside && left, in_row & vec4(inside), inside && right);
        for (var e0 = 0u; e0 < channels; e0 += 4u) {
            // The 6 input columns of channels e0 .. e0+3 (clamped into the channels; their weights are 0).
            let c0 = inputs(row + min(e0, channels - 1u) * hw, win);
            let c1 = inputs(row + min(e0 + 1u, channels - 1u) * hw, win);
            let c2 = inputs(row + min(e0 + 2u, channels - 1u) * hw, win);
            let c3 = inputs(row + min(e0 + 3u, channels - 1u) * hw, win);
            // v_u: input column x0-1+u over the 4 channels; tap s at column x0 + t takes v_(t+s).
            let v0 = vec4(c0[0], c1[0], c2[0], c3[0]);
            let v1 = vec4(c0[1], c1[1], c2[1], c3[1]);
            let v2 = vec4(c0[2], c1[2], c2[2], c3[2]);
            let v3 = vec4(c0[3], c1[3], c2[3], c3[3]);
            let v4 = vec4(c0[4], c1[4], c2[4], c3[4]);
            let v5 = vec4(c0[5], c1[5], c2[5], c3[5]);
            let w_lo = lo + e0 / 4u + d * 3u * r;
            let w_hi = hi + e0 / 4u + d * 3u * r;
            madd16(&acc, panel[w_lo], panel[w_hi], v0, v1, v2, v3);
            madd16(&acc, panel[w_lo + d], panel[w_hi + d], v1, v2, v3, v4);
            madd16(&acc, panel[w_lo + 2u * d], panel[w_hi + 2u * d], v2, v3, v4, v5);
        }
    }
    let at = image * rows * hw + y * params.w + x0;
    for (var i = 0u; i < DM; i++) {
        for (var t = 0u; t < 4u; t++) {
            let o = at + (m0 + i) * hw + t;
            if (m0 + i < rows && live && in_row[t]) {
                // prelude epilogue's steps, written out: as a call they made this kernel 2-2.7x
                // slower on lavapipe (the other forward kernels call it at the same speed).
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
