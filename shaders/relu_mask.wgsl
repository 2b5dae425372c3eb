// relu_mask: mask[i] = sum over b < 32 of (inp[32*i + b] > 0) << b: where a ReLU passes its
// gradient, one bit per value. A block saves its output's mask, 1/32 of the output, so that the
// output's buffer can hold the block input's gradient in the backward (relu_backward reads the bits).
// Shapes: inp [LEN] (any shape), mask [ceil(LEN / 32)] u32. Overwrites mask.
// One invocation per mask word, from 32 elements after prelude f32; relu_mask_vec4 (after prelude
// vec4, for LEN a multiple of 4) reads inp as vec4s: 8 loads a mask word instead of 32 (on CPU
// adapters every load is a loop over the lanes), the 4 values of vec4 j giving bits 4j .. 4j+3 of
// its word, as relu_backward_vec4 reads them.
// CPU twin: reference::relu_mask. Dispatch: grid(ceil(ceil(LEN / 32) / WG)).

struct Params { len: u32, _unused: u32, _unused2: u32, _unused3: u32 }

@group(0) @binding(0) var<storage, read_write> mask: array<u32>;
@group(0) @binding(1) var<storage, read> inp: array<elem>;
@group(0) @binding(2) var<uniform> params: Params;

override WG: u32 = 256;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= (params.len + 31u) / 32u) { return; }
    var bits = 0u;
    for (var j = 0u; j < MASK_ELEMS; j++) {
        let at = MASK_ELEMS * i + j;
        if (WIDTH * at < params.len) { bits = mask_set(bits, inp[at] > elem(0.0), WIDTH * j); }
    }
    mask[i] = bits;
}
