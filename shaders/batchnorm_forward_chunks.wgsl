// batchnorm_forward_chunks: the first of the three steps of the training forward on GPUs
// (Gpu::bn_chunk), then batchnorm_forward_combine, then batchnorm_forward_eval with BATCH. Per
// channel c and chunk k of its values (prelude chunks), with the n_k values x of the chunk:
//   chunks[c,k,0] = mean_k = sum(x) / n_k,   chunks[c,k,1] = M2_k = sum((x - mean_k)^2),
// two passes over the chunk (its mean first), so that M2_k adds no cancellation.
// Shapes: inp [N,C,H,W]; chunks [C,CHUNKS,2]. Overwrites chunks.
// One workgroup of WG invocations per chunk: invocation t reads the chunk's elements t, t + WG,
// ..., so neighbouring invocations read neighbouring addresses (but where a row ends); fixed-order
// tree sums. batchnorm_forward_chunks_vec4 (after prelude vec4, for H*W a multiple of 4) reads inp
// as vec4s; its sums add up 4 columns per invocation first, so their bits differ.
// CPU twin: reference::batchnorm_forward_train (of the three steps together).
// Dispatch: grid(C * CHUNKS).

@group(0) @binding(0) var<storage, read_write> chunks: array<f32>;
@group(0) @binding(1) var<storage, read> inp: array<elem>;
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let g = wid.x + wid.y * nwg.x;
    let ck = chunk_of(g);
    let c = ck.x;
    if (c >= params.c) { return; }
    let span = chunk_elements(ck.y);
    var s = elem(0.0);
    for (var i = span.x + t; i < span.y; i += WG) { s += inp[channel_element(c, i)]; }
    let mu = workgroup_sum(t, elem_sum(s)) / f32(chunk_values(ck.y));
    var ss = elem(0.0);
    for (var i = span.x + t; i < span.y; i += WG) { let d = inp[channel_element(c, i)] - mu; ss = fma(d, d, ss); }
    let m2 = workgroup_sum(t, elem_sum(ss));
    if (t == 0u) {
        chunks[2u * g] = mu;
        chunks[2u * g + 1u] = m2;
    }
}
