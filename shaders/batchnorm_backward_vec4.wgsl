// batchnorm_backward_vec4: batchnorm_backward (same formula, shapes, overrides and bindings) for
// H*W a multiple of 4, with dinp, dout and inp read and written as vec4: a quarter of the loads
// and stores (on CPU adapters each is a loop over the lanes, however wide). The 4 values of a
// vec4 share a mask word (bits 4j .. 4j+3 of a row of 32). The sums add up 4 columns per
// invocation first, so their bits differ from batchnorm_backward's.
// One workgroup of WG invocations per channel; fixed-order reductions.
// CPU twin: reference::batchnorm_backward (after reference::relu_backward). Dispatch: grid(C).

struct Params { n: u32, c: u32, hw: u32, _unused: u32, momentum: f32, eps: f32, _unused2: u32, _unused3: u32 }

@group(0) @binding(0) var<storage, read_write> dinp: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> dweight: array<f32>;
@group(0) @binding(2) var<storage, read_write> dbias: array<f32>;
@group(0) @binding(3) var<storage, read> dout: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> inp: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> weight: array<f32>;
@group(0) @binding(6) var<storage, read> mean: array<f32>;
@group(0) @binding(7) var<storage, read> rstd: array<f32>;
@group(0) @binding(8) var<storage, read> mask: array<u32>;
@group(0) @binding(9) var<uniform> params: Params;

override WG: u32 = 256;
override RELU: bool = false;
override IN_PLACE: bool = false;
var<workgroup> partial: array<f32, WG>;

fn workgroup_sum(t: u32, v: f32) -> f32 {
    partial[t] = v;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half /= 2u) {
        if (t < half) { partial[t] += partial[t + half]; }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}

// The BN input at vec4 j.
fn x(j: u32) -> vec4<f32> {
    if (IN_PLACE) { return dinp[j]; }
    return inp[j];
}

// The gradient of the BN output at vec4 j.
fn grad(j: u32) -> vec4<f32> {
    if (RELU) {
        let bits = vec4(mask[j / 8u] >> ((j % 8u) * 4u)) & vec4(1u, 2u, 4u, 8u);
        return select(vec4(0.0), dout[j], bits != vec4(0u));
    }
    return dout[j];
}

// Channel c's values are N rows of HW / 4 vec4s, walked as batchnorm_forward_train_vec4 does.
fn row_lanes() -> u32 {
    return min(WG, 1u << (32u - countLeadingZeros(max(params.hw / 4u, 2u) - 1u)));
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let c = wid.x + wid.y * nwg.x;
    if (c >= params.c) { return; }
    let m = params.n * params.hw;
    let mu = mean[c];
    let r = rstd[c];
    let hw4 = params.hw / 4u;
    let l = row_lanes();
    var sd = vec4(0.0);
    var sdx = vec4(0.0);
    for (var n = t / l; n < params.n; n += WG / l) {
        let row = (n * params.c + c) * hw4;
        for (var j = row + t % l; j < row + hw4; j += l) {
            let g = grad(j);
            sd += g;
            sdx = fma(g, (x(j) - mu) * r, sdx);
        }
    }
    let db = workgroup_sum(t, sd.x + sd.y + sd.z + sd.w);
    let dw = workgroup_sum(t, sdx.x + sdx.y + sdx.z + sdx.w);
    let k = weight[c] * r / f32(m);
    for (var n = t / l; n < params.n; n += WG / l) {
        let row = (n * params.c + c) * hw4;
        for (var j = row + t % l; j < row + hw4; j += l) {
            dinp[j] = k * (f32(m) * grad(j) - db - (x(j) - mu) * r * dw);
        }
    }
    if (t == 0u) {
        dweight[c] = dw;
        dbias[c] = db;
    }
}
