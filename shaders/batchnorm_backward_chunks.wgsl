// batchnorm_backward_chunks: the first of the three steps of batch norm's backward on GPUs
// (Gpu::bn_chunk), then batchnorm_backward_combine, then batchnorm_backward_input. Per channel c
// and chunk k of its values (prelude chunks), with xhat = (inp - mean[c]) * rstd[c] and g the
// gradient of the BN output (dout, after the ReLU's backward with RELU; prelude bn_grad):
//   chunks[c,k,0] = sum over the chunk of g,   chunks[c,k,1] = sum over the chunk of g * xhat.
// With FROZEN, mean and rstd bind the running mean and variance (as batchnorm_backward's).
// Shapes: dout, inp [N,C,H,W]; mean, rstd [C]; mask [ceil(N*C*H*W / 32)] u32; chunks
// [C,CHUNKS,2]. Overwrites chunks.
// One workgroup of WG invocations per chunk: invocation t reads the chunk's elements t, t + WG,
// ..., so neighbouring invocations read neighbouring addresses (but where a row ends); fixed-order
// tree sums. batchnorm_backward_chunks_vec4 (after prelude vec4, for H*W a multiple of 4) reads
// dout and inp as vec4s; its sums add up 4 columns per invocation first, so their bits differ.
// CPU twin: reference::batchnorm_backward, or with FROZEN reference::batchnorm_backward_frozen (of
// the three steps together). Dispatch: grid(C * CHUNKS).

@group(0) @binding(0) var<storage, read_write> chunks: array<f32>;
@group(0) @binding(1) var<storage, read> dout: array<elem>;
@group(0) @binding(2) var<storage, read> inp: array<elem>;
@group(0) @binding(3) var<storage, read> mean: array<f32>;
@group(0) @binding(4) var<storage, read> rstd: array<f32>;
@group(0) @binding(5) var<storage, read> mask: array<u32>;
@group(0) @binding(6) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let g = wid.x + wid.y * nwg.x;
    let ck = chunk_of(g);
    let c = ck.x;
    if (c >= params.c) { return; }
    let mu = mean[c];
    let r = channel_rstd(c);
    let span = chunk_elements(ck.y);
    var sd = elem(0.0);
    var sdx = elem(0.0);
    for (var i = span.x + t; i < span.y; i += WG) {
        let j = channel_element(c, i);
        let d = grad(j);
        sd += d;
        sdx = fma(d, (inp[j] - mu) * r, sdx);
    }
    let db = workgroup_sum(t, elem_sum(sd));
    let dw = workgroup_sum(t, elem_sum(sdx));
    if (t == 0u) {
        chunks[2u * g] = db;
        chunks[2u * g + 1u] = dw;
    }
}
