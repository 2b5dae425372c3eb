// conv2d_weight_panel: a conv weight [K,C,R,S] as the panel a lanes kernel reads, its rows m
// outermost and its reduction channels e innermost, M and E rounded up to multiples of 4 (zeros
// past them), so that a row's weights for 4 channels of a tap come in one vec4 load:
//   panel[m,r,s,e] = weight[k,c,r,s], m = k and e = c (forward: [K4,R,S,C4]),
//                    or with TRANSPOSED m = c and e = k (input gradient: [C4,R,S,K4])
// Read by the lanes kernels of 3x3 convs with pad 1 (conv2d_rows_lanes, conv2d_strided_lanes,
// conv2d_backward_input_strided_lanes). One invocation per (m, e), walking the R*S taps (one
// invocation per panel value spent its time on three integer divisions: 1.6 GB/s).
// CPU twin: reference::conv2d_weight_panel. Dispatch: (ceil(E4 / 64), M4, 1).

@group(0) @binding(0) var<storage, read_write> panel: array<f32>;
@group(0) @binding(1) var<storage, read> weight: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;

override TRANSPOSED: bool = false;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let rows = select(params.k, params.c, TRANSPOSED);
    let channels = select(params.c, params.k, TRANSPOSED);
    let e4 = (channels + 3u) / 4u * 4u;
    let rs = params.r * params.s;
    let e = gid.x;
    let m = gid.y;
    if (e >= e4) { return; }
    let k = select(m, e, TRANSPOSED);
    let c = select(e, m, TRANSPOSED);
    let inside = m < rows && e < channels;
    let at = select(0u, (k * params.c + c) * rs, inside);
    for (var tap = 0u; tap < rs; tap++) {
        panel[(m * rs + tap) * e4 + e] = select(0.0, weight[at + tap], inside);
    }
}
