// avgpool_backward (global): dinp[n,c,h,w] = dout[n,c] / (H*W).
// Shapes: dout [N,C], dinp [N,C,H,W]. Overwrites dinp. One invocation per input element.
// CPU twin: reference::avgpool_backward. Dispatch: grid(ceil(N*C*H*W / WG)).

struct Params { nc: u32, hw: u32, _unused: u32, _unused2: u32 }

@group(0) @binding(0) var<storage, read_write> dinp: array<f32>;
@group(0) @binding(1) var<storage, read> dout: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;

override WG: u32 = 256;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= params.nc * params.hw) { return; }
    dinp[i] = dout[i / params.hw] / f32(params.hw);
}
