// relu_mask_vec4: relu_mask (same formula, shapes and bindings) for LEN a multiple of 4, inp read
// as vec4s: 8 loads a mask word instead of 32 (on CPU adapters every load is a loop over the
// lanes). The 4 values of vec4 j give bits 4j .. 4j+3 of its word, as relu_backward_vec4 reads them.
// CPU twin: reference::relu_mask. Dispatch: grid(ceil(ceil(LEN / 32) / WG)).

struct Params { len: u32, _unused: u32, _unused2: u32, _unused3: u32 }

@group(0) @binding(0) var<storage, read_write> mask: array<u32>;
@group(0) @binding(1) var<storage, read> inp: array<vec4<f32>>;
@group(0) @binding(2) var<uniform> params: Params;

override WG: u32 = 256;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= (params.len + 31u) / 32u) { return; }
    var bits = 0u;
    for (var j = 0u; j < 8u; j++) {
        let at = 8u * i + j;
        if (4u * at < params.len) {
            let on = select(vec4(0u), vec4(1u, 2u, 4u, 8u), inp[at] > vec4(0.0));
            bits |= (on.x | on.y | on.z | on.w) << (4u * j);
        }
    }
    mask[i] = bits;
}
