// avgpool_forward (global): out[n,c] = sum_{h,w} inp[n,c,h,w] / (H*W).
// Shapes: inp [N,C,H,W], out [N,C]. Overwrites out. One invocation per (n,c), summing in order.
// CPU twin: reference::avgpool_forward. Dispatch: grid(ceil(N*C / WG)).

struct Params { nc: u32, hw: u32, _unused: u32, _unused2: u32 }

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> inp: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;

override WG: u32 = 256;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= params.nc) { return; }
    var sum = 0.0;
    for (var j = 0u; j < params.hw; j++) { sum += inp[i * params.hw + j]; }
    out[i] = sum / f32(params.hw);
}
