// relu_backward_vec4: relu_backward (same formula, shapes and bindings) for LEN a multiple of 4,
// dinp read and written as vec4s, each masked by a nibble of its mask word: one invocation per 4
// values (on CPU adapters every load and store is a loop over the lanes, however wide).
// CPU twin: reference::relu_backward. Dispatch: grid(ceil(LEN / 4 / WG)).

struct Params { len: u32, _unused: u32, _unused2: u32, _unused3: u32 }

@group(0) @binding(0) var<storage, read_write> dinp: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> mask: array<u32>;
@group(0) @binding(2) var<uniform> params: Params;

override WG: u32 = 256;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= params.len / 4u) { return; }
    // Values 4i .. 4i+3 have bits 4(i % 8) .. 4(i % 8) + 3 of word i / 8.
    let bits = vec4(mask[i / 8u] >> (4u * (i % 8u))) >> vec4(0u, 1u, 2u, 3u);
    dinp[i] = select(vec4(0.0), dinp[i], (bits & vec4(1u)) != vec4(0u));
}
