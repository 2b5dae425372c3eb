// sum_slices: out[i] = sum_{z < SLICES} inp[z * LEN + i], z in increasing order. inp [SLICES, LEN],
// out [LEN]. Overwrites out. Adds up the partial sums of a reduction split into slices
// (conv2d_backward_weight's direct path), in a fixed order, so the result is deterministic.
// One invocation per element. CPU twin: reference::sum_slices. Dispatch: grid(ceil(LEN / WG)).

struct Params { len: u32, slices: u32, _unused: u32, _unused2: u32 }

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> inp: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;

override WG: u32 = 256;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= params.len) { return; }
    var sum = 0.0;
    for (var z = 0u; z < params.slices; z++) { sum += inp[z * params.len + i]; }
    out[i] = sum;
}
