// Prepended after prelude direct to the kernels whose direct path computes a block of outputs
// over the whole reduction (conv2d_forward, conv2d_backward_input): the body of their entry point.
// Each kernel defines `direct(lid, m0, j0)`, an invocation's DM x DN block of the outputs from row
// m0 and column j0 (acc[i * DN + j] = out[m0 + lid.y + i*WG_M, j0 + lid.x + j*WG_N]), and
// `store(m, j, v)`, which writes out[m, j] = v and nothing outside the matrix.

fn gemm(lid: vec3<u32>, wid: vec3<u32>) {
    let m0 = wid.y * WG_M * DM;
    let j0 = wid.x * WG_N * DN;
    let acc = direct(lid, m0, j0);
    for (var i = 0u; i < DM; i++) {
        for (var j = 0u; j < DN; j++) { store(m0 + lid.y + i * WG_M, j0 + lid.x + j * WG_N, acc[i * DN + j]); }
    }
}
