// conv2d_strided_lanes: conv2d_forward_lanes for stride-2 convs of TAPS x TAPS taps with pad
// TAPS/2, TAPS = 3 (every strided 3x3 of a ResNet) or 7 (the ImageNet stem), on rows of an even
// number of columns, reading the input as column pairs:
//   out[n,k,y,x] = sum_{c,r,s} inp[n,c,2y+r-pad,2x+s-pad] * weight[k,c,r,s]
// Output column x takes tap s from input column 2x+s-pad: the first column of pair x+(s-pad)/2
// where s-pad is even, else the second of pair x+(s-pad-1)/2. Blocked as conv2d_rows_lanes
// (DM = 16 rows per workgroup, `lanes8` broadcasts the weights, 4 adjacent columns x0 .. x0+3 of
// one output row per invocation, 4 channels a step as dot products of 4, weights from the
// layer's panel), but a row's input columns come in `vec2` loads that serve every tap: 5 pairs
// for 3 taps (9 scalar loads held the 3x3 at about half the FMA peak, BENCHMARKS.md), 7 for 7
// (the stem ran at 23 % of the peak in conv2d_forward_lanes, a load per column, channel and tap;
// 45 % here).
// With W even, Q = W/2.
// Needs subgroups of at least 8 invocations. Epilogue (BIAS, RESIDUAL, RELU) as conv2d_forward.
// CPU twin: reference::conv2d_forward. Dispatch: (ceil(N*P*ceil(Q/4) / 64), ceil(K / DM), 1).

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> inp: array<vec2<f32>>;
@group(0) @binding(2) var<storage, read> panel: array<vec4<f32>>;  // [K4,3,3,C4] as vec4s
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> residual: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;

override BIAS: bool = false;
override RESIDUAL: bool = false;
override RELU: bool = false;
override TAPS: u32 = 3u;

// A channel's pairs first .. first+6 of the row whose pairs start at `at` (first = x0 - 1 for 3
// taps, x0 - 2 for 7; 3 taps read 5), 0 outside the row or where the row is not (`ok`).
struct Pairs { p0: vec2<f32>, p1: vec2<f32>, p2: vec2<f32>, p3: vec2<f32>, p4: vec2<f32>, p5: vec2<f32>,
               p6: vec2<f32> }

fn pair(at: u32, j: i32, ok: bool) -> vec2<f32> {
    let last = i32(params.w / 2u) - 1;
    return select(vec2(0.0), inp[at + u32(clamp(j, 0, last))], ok && j >= 0 && j <= last);
}

fn pairs(at: u32, first: i32, ok: bool) -> Pairs {
    var wide = Pairs(pair(at, first, ok), pair(at, first + 1, ok), pair(at, first + 2, ok), pair(at, first + 3, ok),
                     pair(at, first + 4, ok), vec2(0.0), vec2(0.0));
    if (TAPS == 7u) {
        wide.p5 = pair(at, first + 5, ok);
        wide.p6 = pair(at, first + 6, ok);
    }
    return wide;
}

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(subgroup_invocation_id) lane: u32) {
    let hw2 = params.h * params.w / 2u;
    let pq = params.p * params.q;
    let row_lanes = (params.q + 3u) / 4u;
    let invocations = params.n * params.p * row_lanes;
    let k0 = wid.y * DM;
    // The lane's 4 columns: x0 .. x0+3 of output row y of image `image`.
    let col = wid.x * 64u + lid.x;
    let live = col < invocations;
    let image = min(col, invocations - 1u) / (params.p * row_lanes);
    let y = (min(col, invocations - 1u) / row_lanes) % params.p;
    let x0 = 4u * (min(col, invocations - 1u) % row_lanes);
    let in_row = x0 + vec4(0u, 1u, 2u, 3u) < vec4(params.q);
    // weight[k, c0 .. c0+3, r, s] = panel[(k * TAPS^2 + r * TAPS + s) * C4 + c0/4] (C4 = ceil(C/4)
    // vec4s per tap, 0 past C) for the lane's rows k0 + lane, k0 + 8 + lane.
    let c4 = (params.c + 3u) / 4u;
    let lo = min(k0 + lane % 8u, params.k - 1u) * TAPS * TAPS * c4;
    let hi = min(k0 + 8u + lane % 8u, params.k - 1u) * TAPS * TAPS * c4;
    let pad = TAPS / 2u;
    let first = i32(x0) - i32(pad + 1u) / 2;
    var acc: array<vec4<f32>, DM>;
    for (var r = 0u; r < TAPS; r++) {
        let h = i32(2u * y + r) - i32(pad);
        let ok = live && h >= 0 && h < i32(params.h);
        let row = image * params.c * hw2 + u32(clamp(h, 0, i32(params.h) - 1)) * params.w / 2u;
        for (var c0 = 0u; c0 < params.c; c0 += 4u) {
            // The pairs of channels c0 .. c0+3 (clamped into C; their weights are 0).
            let i0 = pairs(row + min(c0, params.c - 1u) * hw2, first, ok);
            let i1 = pairs(row + min(c0 + 1u, params.c - 1u) * hw2, first, ok);
            let i2 = pairs(row + min(c0 + 2u, params.c - 1u) * hw2, first, ok);
            let i3 = pairs(row + min(c0 + 3u, params.c - 1u) * hw2, first, ok);
            // Over the 4 channels, the first (e_u) and second (o_u) columns of pair first + u: tap
            // s of column x0 + t reads o_(t + s/2) for an even s, e_(t + (s+1)/2) for an odd one.
            let e1 = vec4(i0.p1.x, i1.p1.x, i2.p1.x, i3.p1.x);
            let e2 = vec4(i0.p2.x, i1.p2.x, i2.p2.x, i3.p2.x);
            let e3 = vec4(i0.p3.x, i1.p3.x, i2.p3.x, i3.p3.x);
            let e4 = vec4(i0.p4.x, i1.p4.x, i2.p4.x, i3.p4.x);
            let o0 = vec4(i0.p0.y, i1.p0.y, i2.p0.y, i3.p0.y);
            let o1 = vec4(i0.p1.y, i1.p1.y, i2.p1.y, i3.p1.y);
            let o2 = vec4(i0.p2.y, i1.p2.y, i2.p2.y, i3.p2.y);
            let o3 = vec4(i0.p3.y, i1.p3.y, i2.p3.y, i3.p3.y);
            let o4 = vec4(i0.p4.y, i1.p4.y, i2.p4.y, i3.p4.y);
            let w_lo = lo + TAPS * r * c4 + c0 / 4u;
            let w_hi = hi + TAPS * r * c4 + c0 / 4u;
            madd16(&acc, panel[w_lo], panel[w_hi], o0, o1, o2, o3);
            madd16(&acc, panel[w_lo + c4], panel[w_hi + c4], e1, e2, e3, e4);
            madd16(&acc, panel[w_lo + 2u * c4], panel[w_hi + 2u * c4], o1, o2, o3, o4);
            if (TAPS == 7u) {
                let e5 = vec4(i0.p5.x, i1.p5.x, i2.p5.x, i3.p5.x);
                let e6 = vec4(i0.p6.x, i1.p6.x, i2.p6.x, i3.p6.x);
                let o5 = vec4(i0.p5.y, i1.p5.y, i2.p5.y, i3.p5.y);
                let o6 = vec4(i0.p6.y, i1.p6.y, i2.p6.y, i3.p6.y);
                madd16(&acc, panel[w_lo + 3u * c4], panel[w_hi + 3u * c4], e2, e3, e4, e5);
                madd16(&acc, panel[w_lo + 4u * c4], panel[w_hi + 4u * c4], o2, o3, o4, o5);
                madd16(&acc, panel[w_lo + 5u * c4], panel[w_hi + 5u * c4], e3, e4, e5, e6);
                madd16(&acc, panel[w_lo + 6u * c4], panel[w_hi + 6u * c4], o3, o4, o5, o6);
            }
        }
    }
    let at = image * params.k * pq + y * params.q + x0;
    for (var i = 0u; i < DM; i++) {
        for (var t = 0u; t < 4u; t++) {
            let o = at + (k0 + i) * pq + t;
            if (k0 + i < params.k && live && in_row[t]) {
                // prelude epilogue's steps, written out: as a call they made this kernel 2-4x
                // slower on lavapipe (the other forward kernels call it at the same speed).
                var v = acc[i][t];
                if (BIAS) { v += bias[k0 + i]; }
                if (RESIDUAL) { v += residual[o]; }
                if (RELU) { v = max(v, 0.0); }
                out[o] = v;
            }
        }
    }
}
