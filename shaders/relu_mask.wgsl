// relu_mask: mask[i] = sum over b < 32 of (inp[32*i + b] > 0) << b: where a ReLU passes its
// gradient, one bit per value. A block saves its output's mask, 1/32 of the output, so that the
// output's buffer can hold the block input's gradient in the backward (relu_backward reads the bits).
// Shapes: inp [LEN] (any shape), mask [ceil(LEN / 32)] u32. Overwrites mask.
// One invocation per mask word. CPU twin: reference::relu_mask. Dispatch: grid(ceil(ceil(LEN / 32) / WG)).

struct Params { len: u32, _unused: u32, _unused2: u32, _unused3: u32 }

@group(0) @binding(0) var<storage, read_write> mask: array<u32>;
@group(0) @binding(1) var<storage, read> inp: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;

override WG: u32 = 256;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= (params.len + 31u) / 32u) { return; }
    var bits = 0u;
    for (var b = 0u; b < 32u; b++) {
        let j = 32u * i + b;
        if (j < params.len && inp[j] > 0.0) { bits |= 1u << b; }
    }
    mask[i] = bits;
}
