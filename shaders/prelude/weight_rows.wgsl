// Prepended to conv2d_backward_weight_rows_lanes and conv2d_backward_weight_rows_vec4_lanes:
// where an invocation writes its columns of the weight gradient (their override POINTWISE chooses
// the 3 taps of one (c, r) or, for 1x1 convs, 4 channels).

// Columns g * taps .. + taps - 1 of row k of dweight[slice, k, :] (k-major: c, r, s or c) = v,
// nothing past row K.
fn store_columns(slice: u32, k: u32, g: u32, v: vec4<f32>) {
    if (k >= params.k) { return; }
    let taps = select(3u, 4u, POINTWISE);
    let columns = select(params.c * 9u, params.c, POINTWISE);
    let at = (slice * params.k + k) * columns + g * taps;
    for (var t = 0u; t < taps; t++) { dweight[at + t] = v[t]; }
}
