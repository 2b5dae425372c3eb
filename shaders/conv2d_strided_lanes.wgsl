// conv2d_strided_lanes: conv2d_forward_lanes for 3x3 convs with stride 2 and pad 1 on rows of an
// even number of columns (every strided 3x3 of a ResNet), reading the input as column pairs:
//   out[n,k,y,x] = sum_{c,r,s} inp[n,c,2y+r-1,2x+s-1] * weight[k,c,r,s]
// Output column x takes tap s = 1 from pair x's first column (2x), s = 2 from its second (2x+1)
// and s = 0 from pair x-1's second (2x-1). Blocked as conv2d_rows_lanes (DM = 16 rows per
// workgroup, `lanes8` broadcasts the weights, 4 adjacent columns x0 .. x0+3 of one output row per
// invocation, 4 channels a step as dot products of 4, weights from the layer's panel), but a
// row's 9 input columns come in 5 `vec2` loads, where 9 scalar loads held it at about half the
// FMA peak (BENCHMARKS.md).
// With W even, Q = W/2: the pairs x0 .. x0+3 lie in the row exactly where their outputs do.
// Needs subgroups of at least 8 invocations. Epilogue (BIAS, RESIDUAL, RELU) as conv2d_forward.
// CPU twin: reference::conv2d_forward. Dispatch: (ceil(N*P*ceil(Q/4) / 64), ceil(K / DM), 1).

struct Params {
    n: u32, c: u32, h: u32, w: u32,
    k: u32, r: u32, s: u32, p: u32,
    q: u32, stride: u32, pad: u32, _unused: u32,
}

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> inp: array<vec2<f32>>;
@group(0) @binding(2) var<storage, read> panel: array<vec4<f32>>;  // [K4,3,3,C4] as vec4s
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> residual: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;

override BIAS: bool = false;
override RESIDUAL: bool = false;
override RELU: bool = false;

// A channel's input columns 2x0-1 .. 2x0+7 of the row whose pairs start at `at`: column 2x0-1
// (`left`, 0 where x0 = 0) and the pairs x0 .. x0+3 (0 past the row, where not `ok`).
struct Columns { left: f32, p0: vec2<f32>, p1: vec2<f32>, p2: vec2<f32>, p3: vec2<f32> }

fn columns(at: u32, x0: u32, ok: vec4<bool>) -> Columns {
    let x = min(x0 + vec4(0u, 1u, 2u, 3u), vec4(params.q - 1u));
    return Columns(select(0.0, inp[at + max(x0, 1u) - 1u].y, x0 > 0u && ok.x),
                   select(vec2(0.0), inp[at + x.x], ok.x), select(vec2(0.0), inp[at + x.y], ok.y),
                   select(vec2(0.0), inp[at + x.z], ok.z), select(vec2(0.0), inp[at + x.w], ok.w));
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
    // weight[k, c0 .. c0+3, r, s] = panel[(9k + 3r + s) * C4 + c0/4] (C4 = ceil(C/4) vec4s per tap,
    // 0 past C) for the lane's rows k0 + lane, k0 + 8 + lane.
    let c4 = (params.c + 3u) / 4u;
    let lo = min(k0 + lane % 8u, params.k - 1u) * 9u * c4;
    let hi = min(k0 + 8u + lane % 8u, params.k - 1u) * 9u * c4;
    var acc: array<vec4<f32>, DM>;
    for (var r = 0u; r < 3u; r++) {
        let h = i32(2u * y + r) - 1;
        let ok = in_row & vec4(h >= 0 && h < i32(params.h));
        let row = image * params.c * hw2 + u32(clamp(h, 0, i32(params.h) - 1)) * params.w / 2u;
        for (var c0 = 0u; c0 < params.c; c0 += 4u) {
            // The columns of channels c0 .. c0+3 (clamped into C; their weights are 0).
            let i0 = columns(row + min(c0, params.c - 1u) * hw2, x0, ok);
            let i1 = columns(row + min(c0 + 1u, params.c - 1u) * hw2, x0, ok);
            let i2 = columns(row + min(c0 + 2u, params.c - 1u) * hw2, x0, ok);
            let i3 = columns(row + min(c0 + 3u, params.c - 1u) * hw2, x0, ok);
            // Over the 4 channels: column 2x0-1, and the first (e_t) and second (o_t) columns
            // of pair x0 + t.
            let left = vec4(i0.left, i1.left, i2.left, i3.left);
            let e0 = vec4(i0.p0.x, i1.p0.x, i2.p0.x, i3.p0.x);
            let e1 = vec4(i0.p1.x, i1.p1.x, i2.p1.x, i3.p1.x);
            let e2 = vec4(i0.p2.x, i1.p2.x, i2.p2.x, i3.p2.x);
            let e3 = vec4(i0.p3.x, i1.p3.x, i2.p3.x, i3.p3.x);
            let o0 = vec4(i0.p0.y, i1.p0.y, i2.p0.y, i3.p0.y);
            let o1 = vec4(i0.p1.y, i1.p1.y, i2.p1.y, i3.p1.y);
            let o2 = vec4(i0.p2.y, i1.p2.y, i2.p2.y, i3.p2.y);
            let o3 = vec4(i0.p3.y, i1.p3.y, i2.p3.y, i3.p3.y);
            let w_lo = lo + 3u * r * c4 + c0 / 4u;
            let w_hi = hi + 3u * r * c4 + c0 / 4u;
            madd16(&acc, panel[w_lo], panel[w_hi], left, o0, o1, o2);
            madd16(&acc, panel[w_lo + c4], panel[w_hi + c4], e0, e1, e2, e3);
            madd16(&acc, panel[w_lo + 2u * c4], panel[w_hi + 2u * c4], o0, o1, o2, o3);
        }
    }
    let at = image * params.k * pq + y * params.q + x0;
    for (var i = 0u; i < DM; i++) {
        for (var t = 0u; t < 4u; t++) {
            let o = at + (k0 + i) * pq + t;
            if (k0 + i < params.k && live && in_row[t]) {
                var v = acc[i][t];
                if (BIAS) { v += bias[k0 + i]; }
                if (RESIDUAL) { v += residual[o]; }
                if (RELU) { v = max(v, 0.0); }
                out[o] = v;
            }
        }
    }
}
