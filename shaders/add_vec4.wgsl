// add_vec4: add (out[i] += inp[i], same shapes and bindings) for LEN a multiple of 4, as vec4s:
// one invocation per 4 values. CPU twin: reference::add. Dispatch: grid(ceil(LEN / 4 / WG)).

struct Params { len: u32, _unused: u32, _unused2: u32, _unused3: u32 }

@group(0) @binding(0) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> inp: array<vec4<f32>>;
@group(0) @binding(2) var<uniform> params: Params;

override WG: u32 = 256;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= params.len / 4u) { return; }
    out[i] += inp[i];
}
