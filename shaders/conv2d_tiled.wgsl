// conv2d_tiled: the tiled path (GPUs) of a conv's forward and, TRANSPOSED, of its input gradient.
//   forward:    out[n,k,p,q] = relu?(sum_{r,s,c} weight[k,c,r,s] * inp[n,c,p*stride+r-pad,q*stride+s-pad]
//                                    + bias[k] (if BIAS) + residual[n,k,p,q] (if RESIDUAL))
//   TRANSPOSED: dinp[n,c,h,w] = sum_{r,s,k} weight[k,c,r,s] * dout[n,k,p,q] over the (p,q) with
//               p*stride+r-pad = h and q*stride+s-pad = w; with ACCUMULATE dinp += it.
// Shapes: inp (TRANSPOSED: dout) bound as `inp`, out (TRANSPOSED: dinp) as `out`; the weight as the
// panel conv2d_weight_panel lays out, [K4,R,S,C4] (TRANSPOSED [C4,R,S,K4]), so that 4 reduction
// channels of a row and tap are one vec4 load. Overwrites out (or adds); fixed summation order.
// Implicit GEMM (prelude tiled): rows m = the output's channels (M of them), columns j = its
// positions (n, y, x), reduction e = (tap, channel): the steps walk the taps (r, s) outermost and
// BK channels at a time within a tap (zeros past the last channel), so a step decomposes its index
// once and each invocation's column (image, position) is decomposed once per tile: no division
// per value. A 1x1 conv is one tap, a plain GEMM over its (subsampled) positions; with stride 1
// (POINTWISE) its columns are read as vec4s.
// CPU twins: reference::conv2d_forward, reference::conv2d_backward_input.
// Dispatch: (ceil(columns / BN), ceil(M / BM), 1).

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> inp: array<f32>;
@group(0) @binding(2) var<storage, read> inp4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> panel: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read> residual: array<f32>;
@group(0) @binding(6) var<uniform> params: Params;

override TRANSPOSED: bool = false;
override ACCUMULATE: bool = false;
// A 1x1 conv with stride 1 and pad 0 on planes of a multiple of 4 values: B[e, j] is `inp` itself,
// each row contiguous, so an invocation loads 4 neighbouring columns as one vec4 (`inp4`, the
// same tensor as `inp`) and no padding test runs at all.
override POINTWISE: bool = false;

// Invocation t's column of b_tile (t % BN), decomposed once: the offset of its image in `inp`, and
// forward the top-left input position of its window, TRANSPOSED its position plus the padding.
var<private> col_image: u32;
var<private> col_y: i32;
var<private> col_x: i32;
var<private> col_ok: bool;
// The tile's first row.
var<private> m0: u32;

// Output channels, reduction channels, and the planes (values per channel) of `inp` and `out`.
fn rows() -> u32 { return select(params.k, params.c, TRANSPOSED); }
fn channels() -> u32 { return select(params.c, params.k, TRANSPOSED); }
fn inp_plane() -> u32 { return select(params.h * params.w, params.p * params.q, TRANSPOSED); }
fn out_plane() -> u32 { return select(params.p * params.q, params.h * params.w, TRANSPOSED); }
fn out_width() -> u32 { return select(params.q, params.w, TRANSPOSED); }

// Steps of BK reduction channels per tap.
fn chunks() -> u32 { return (channels() + BK - 1u) / BK; }

fn fetch(t: u32, step: u32) {
    let tap = step / chunks();
    let e0 = (step - tap * chunks()) * BK;
    let r = i32(tap / params.s);
    let s = i32(tap % params.s);
    // A: quads of 4 channels of row m at this tap.
    let e4 = (channels() + 3u) & ~3u;
    let rs = params.r * params.s;
    for (var i = 0u; i < A_LOADS / 4u; i++) {
        let u = t + i * THREADS;
        let m = m0 + u / (BK / 4u);
        let e = e0 + 4u * (u % (BK / 4u));
        var v = vec4<f32>(0.0);
        if (m < rows() && e < e4) { v = panel[((m * rs + tap) * e4 + e) / 4u]; }
        next_a[4u * i] = v.x;
        next_a[4u * i + 1u] = v.y;
        next_a[4u * i + 2u] = v.z;
        next_a[4u * i + 3u] = v.w;
    }
    if (POINTWISE) {
        fetch_pointwise(t, e0);
        return;
    }
    // B: where the tap puts this invocation's column in `inp`, then a value per channel.
    var y: i32;
    var x: i32;
    var inside = col_ok;
    if (TRANSPOSED) {
        let st = i32(params.stride);
        let ys = col_y - r;
        let xs = col_x - s;
        inside = inside && ys >= 0 && xs >= 0 && ys % st == 0 && xs % st == 0;
        y = ys / st;
        x = xs / st;
        inside = inside && y < i32(params.p) && x < i32(params.q);
    } else {
        y = col_y + r;
        x = col_x + s;
        inside = inside && y >= 0 && x >= 0 && y < i32(params.h) && x < i32(params.w);
    }
    let width = select(params.w, params.q, TRANSPOSED);
    let at = col_image + u32(max(y, 0)) * width + u32(max(x, 0));
    for (var i = 0u; i < B_LOADS; i++) {
        let e = e0 + t / BN + i * (THREADS / BN);
        var v = 0.0;
        if (inside && e < channels()) { v = inp[at + e * inp_plane()]; }
        next_b[i] = v;
    }
}

// B on POINTWISE convs: invocation t's quad of columns (t % (BN/4)) at the rows of its share.
fn fetch_pointwise(t: u32, e0: u32) {
    let quads = BN / 4u;
    for (var i = 0u; i < B_LOADS / 4u; i++) {
        let e = e0 + t / quads + i * (THREADS / quads);
        var v = vec4<f32>(0.0);
        if (col_ok && e < channels()) { v = inp4[(col_image + e * inp_plane() + u32(col_x)) / 4u]; }
        next_b[4u * i] = v.x;
        next_b[4u * i + 1u] = v.y;
        next_b[4u * i + 2u] = v.z;
        next_b[4u * i + 3u] = v.w;
    }
}

fn stash(t: u32) {
    for (var i = 0u; i < A_LOADS / 4u; i++) {
        let u = t + i * THREADS;
        let m = u / (BK / 4u);
        let e = 4u * (u % (BK / 4u));
        for (var v = 0u; v < 4u; v++) { a_tile[(e + v) * (BM + PAD) + m] = next_a[4u * i + v]; }
    }
    if (POINTWISE) {
        let quads = BN / 4u;
        for (var i = 0u; i < B_LOADS / 4u; i++) {
            let at = (t / quads + i * (THREADS / quads)) * (BN + PAD) + 4u * (t % quads);
            for (var v = 0u; v < 4u; v++) { b_tile[at + v] = next_b[4u * i + v]; }
        }
        return;
    }
    for (var i = 0u; i < B_LOADS; i++) {
        b_tile[(t / BN + i * (THREADS / BN)) * (BN + PAD) + t % BN] = next_b[i];
    }
}

@compute @workgroup_size(WG_N, WG_M)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    m0 = wid.y * BM;
    let j0 = wid.x * BN;
    let columns = params.n * out_plane();
    let t = lid.y * WG_N + lid.x;
    // POINTWISE: the first of a quad of columns, in one image (planes hold a multiple of 4).
    let col = j0 + select(t % BN, 4u * (t % (BN / 4u)), POINTWISE);
    col_ok = col < columns;
    let n = col / out_plane();
    let yx = col % out_plane();
    col_image = n * channels() * inp_plane();
    if (POINTWISE) {
        col_x = i32(yx);
    } else if (TRANSPOSED) {
        col_y = i32(yx / out_width() + params.pad);
        col_x = i32(yx % out_width() + params.pad);
    } else {
        col_y = i32((yx / out_width()) * params.stride) - i32(params.pad);
        col_x = i32((yx % out_width()) * params.stride) - i32(params.pad);
    }
    tiled(lid, params.r * params.s * chunks());
    for (var j = 0u; j < TN; j++) {
        let c = j0 + lid.x + j * WG_N;
        if (c >= columns) { continue; }
        let image = (c / out_plane()) * rows() * out_plane() + c % out_plane();
        for (var i = 0u; i < TM; i++) {
            let m = m0 + lid.y + i * WG_M;
            if (m >= rows()) { continue; }
            let o = image + m * out_plane();
            let v = acc[i * TN + j];
            if (TRANSPOSED) {
                if (ACCUMULATE) { out[o] += v; } else { out[o] = v; }
            } else {
                out[o] = epilogue(v, m, o);
            }
        }
    }
}
