// relu_backward: dinp[i] = dout[i] if inp[i] > 0 else 0 (PyTorch's choice at 0), in place: dinp
// holds dout on entry, and `mask` is relu_mask of the ReLU's input or output (both are > 0 at
// the same places), one bit per value.
// Shapes: dinp [LEN], mask [ceil(LEN / 32)] u32. Updates dinp in place.
// One invocation per element: per value after prelude f32, which stores only the zero where a
// bit is clear; relu_backward_vec4 (after prelude vec4, for LEN a multiple of 4) reads and
// rewrites dinp as vec4s, each masked by a nibble of its mask word (on CPU adapters every load and
// store is a loop over the lanes, however wide).
// CPU twin: reference::relu_backward.
// Dispatch: grid(ceil(LEN / WG)), relu_backward_vec4 grid(ceil(LEN / 4 / WG)).

struct Params { len: u32, _unused: u32, _unused2: u32, _unused3: u32 }

@group(0) @binding(0) var<storage, read_write> dinp: array<elem>;
@group(0) @binding(1) var<storage, read> mask: array<u32>;
@group(0) @binding(2) var<uniform> params: Params;

override WG: u32 = 256;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= params.len / WIDTH) { return; }
    let keep = mask_test(mask[i / MASK_ELEMS], i);
    if (skip_store(keep)) { return; }
    dinp[i] = select(elem(0.0), dinp[i], keep);
}
