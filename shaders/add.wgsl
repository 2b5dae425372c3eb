// add: out[i] += inp[i]. Any shape, LEN elements. Accumulates into out (`+=`).
// Where two gradients meet in the backward: a block input's gradient is the branch's plus the
// identity shortcut's. (The forward's residual add runs in batch norm's epilogue.)
// One invocation per element: per value after prelude f32; add_vec4 (after prelude vec4, for LEN
// a multiple of 4) takes 4 values an invocation, as vec4s.
// CPU twin: reference::add. Dispatch: grid(ceil(LEN / WG)), add_vec4 grid(ceil(LEN / 4 / WG)).

struct Params { len: u32, _unused: u32, _unused2: u32, _unused3: u32 }

@group(0) @binding(0) var<storage, read_write> out: array<elem>;
@group(0) @binding(1) var<storage, read> inp: array<elem>;
@group(0) @binding(2) var<uniform> params: Params;

override WG: u32 = 256;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= params.len / WIDTH) { return; }
    out[i] += inp[i];
}
