// sgd: SGD with momentum and weight decay, PyTorch semantics (dampening 0, not Nesterov):
//   g = grad + weight_decay * weight;  velocity = momentum * velocity + g;  weight -= lr * velocity.
// Shapes: weight, velocity, grad [LEN] (every parameter of the model in one arena, LEN a multiple
// of 4). Updates weight and velocity in place (one read_write binding each). One invocation per
// 4 parameters, as vec4s (on CPU adapters every load is a loop over the lanes, however wide: a
// ResNet-50 step's update took 129 ms one value at a time on lavapipe).
// CPU twin: reference::sgd. Dispatch: grid(ceil(LEN / 4 / WG)).

struct Params { len: u32, lr: f32, momentum: f32, weight_decay: f32 }

@group(0) @binding(0) var<storage, read_write> weight: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> velocity: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> grad: array<vec4<f32>>;
@group(0) @binding(3) var<uniform> params: Params;

override WG: u32 = 256;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= params.len / 4u) { return; }
    let g = grad[i] + params.weight_decay * weight[i];
    let v = params.momentum * velocity[i] + g;
    velocity[i] = v;
    weight[i] -= params.lr * v;
}
