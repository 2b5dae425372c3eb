// Prepended to every `_lanes` kernel (Kernel::source): what their subgroups share, the broadcast
// and the multiply-adds of a block of 16 rows from it.

// The rows of a block: a lane holds 2 of them, 8 apart, for the subgroup's first 8 lanes.
const DM: u32 = 16;

// The values of `v` in lanes 0..7 of the subgroup: with the lanes of a subgroup owning 8 rows
// (or positions) of a block, every lane gets all eight with one load of its own. On CPU adapters
// a broadcast is a register shuffle where a load is a per-lane gather.
fn lanes8(v: vec4<f32>) -> array<vec4<f32>, 8> {
    return array(subgroupBroadcast(v, 0u), subgroupBroadcast(v, 1u), subgroupBroadcast(v, 2u), subgroupBroadcast(v, 3u),
                 subgroupBroadcast(v, 4u), subgroupBroadcast(v, 5u), subgroupBroadcast(v, 6u), subgroupBroadcast(v, 7u));
}

// acc[i][t] += dot(w(i), v_t) for the block's 16 rows i, from the weights each lane holds of its
// rows: w(lane) in `w_lo`, w(8 + lane) in `w_hi` (4 reduction values each).
fn madd16(acc: ptr<function, array<vec4<f32>, DM>>, w_lo: vec4<f32>, w_hi: vec4<f32>, v0: vec4<f32>,
          v1: vec4<f32>, v2: vec4<f32>, v3: vec4<f32>) {
    let a_lo = lanes8(w_lo);
    let a_hi = lanes8(w_hi);
    for (var i = 0u; i < 8u; i++) {
        (*acc)[i] += vec4(dot(a_lo[i], v0), dot(a_lo[i], v1), dot(a_lo[i], v2), dot(a_lo[i], v3));
        (*acc)[i + 8u] += vec4(dot(a_hi[i], v0), dot(a_hi[i], v1), dot(a_hi[i], v2), dot(a_hi[i], v3));
    }
}

// madd16 for 3 columns: acc[i][t] += dot(w(i), v_t) for t < 3, and 0 for t = 3.
fn madd16x3(acc: ptr<function, array<vec4<f32>, DM>>, w_lo: vec4<f32>, w_hi: vec4<f32>, v0: vec4<f32>,
            v1: vec4<f32>, v2: vec4<f32>) {
    let a_lo = lanes8(w_lo);
    let a_hi = lanes8(w_hi);
    for (var i = 0u; i < 8u; i++) {
        (*acc)[i] += vec4(dot(a_lo[i], v0), dot(a_lo[i], v1), dot(a_lo[i], v2), 0.0);
        (*acc)[i + 8u] += vec4(dot(a_hi[i], v0), dot(a_hi[i], v1), dot(a_hi[i], v2), 0.0);
    }
}

// acc[i] += b * a(i) for the block's 16 rows i, from the vec4 each lane holds of its rows: a(lane)
// in `a_lo`, a(8 + lane) in `a_hi` (with the columns of b 4 reduction values at 4 positions and
// a(i) row i's 4 weights, or b the weights and a(i) the inputs at position i).
fn madd16_mat(acc: ptr<function, array<vec4<f32>, DM>>, b: mat4x4<f32>, a_lo: vec4<f32>, a_hi: vec4<f32>) {
    let l = lanes8(a_lo);
    let h = lanes8(a_hi);
    for (var i = 0u; i < 8u; i++) {
        (*acc)[i] += b * l[i];
        (*acc)[i + 8u] += b * h[i];
    }
}
