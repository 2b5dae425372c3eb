// batchnorm_backward_combine: the second step of batch norm's backward on GPUs, after
// batchnorm_backward_chunks. Per channel c, over its chunks k:
//   dbias[c] = sum_k chunks[c,k,0],   dweight[c] = sum_k chunks[c,k,1].
// Shapes: chunks [C,CHUNKS,2]; dweight, dbias [C]. Overwrites dweight, dbias.
// One workgroup of WG invocations per channel: invocation t takes chunks t, t + WG, ... in turn,
// then a fixed-order tree sum.
// CPU twin: reference::batchnorm_backward's dweight and dbias (of the steps together). Dispatch: grid(C).

@group(0) @binding(0) var<storage, read_write> dweight: array<f32>;
@group(0) @binding(1) var<storage, read_write> dbias: array<f32>;
@group(0) @binding(2) var<storage, read> chunks: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let c = wid.x + wid.y * nwg.x;
    if (c >= params.c) { return; }
    let at = 2u * c * params.chunks; // chunk k of the channel: chunks[at + 2k], chunks[at + 2k + 1]
    var sd = 0.0;
    var sdx = 0.0;
    for (var k = t; k < params.chunks; k += WG) {
        sd += chunks[at + 2u * k];
        sdx += chunks[at + 2u * k + 1u];
    }
    let db = workgroup_sum(t, sd);
    let dw = workgroup_sum(t, sdx);
    if (t == 0u) {
        dweight[c] = dw;
        dbias[c] = db;
    }
}
