// relu_backward: dinp[i] = dout[i] if inp[i] > 0 else 0 (PyTorch's choice at 0), in place: dinp
// holds dout on entry (a block's output gradient becomes its sum's, with no second buffer).
// `inp` may be the ReLU's input or its output: both are > 0 at the same places.
// One invocation per element. CPU twin: reference::relu_backward. Dispatch: grid(ceil(LEN / WG)).

struct Params { len: u32, _unused: u32, _unused2: u32, _unused3: u32 }

@group(0) @binding(0) var<storage, read_write> dinp: array<f32>;
@group(0) @binding(1) var<storage, read> inp: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;

override WG: u32 = 256;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= params.len) { return; }
    if (inp[i] <= 0.0) { dinp[i] = 0.0; }
}
