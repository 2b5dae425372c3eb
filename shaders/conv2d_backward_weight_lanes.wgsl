// conv2d_backward_weight_lanes: conv2d_backward_weight (same formula, shapes and bindings) for CPU
// adapters with subgroups, blocked as conv2d_forward_lanes: rows m = k, columns j = (c,r,s),
// reduction e = (n,p,q). A workgroup is one subgroup of 8 invocations that shares DM = 16 rows;
// each invocation owns DN = 4 columns j0 + lane + 8*t. Per output position every lane loads dout
// of two rows and `lanes8` hands the subgroup all sixteen, so a step costs 2 + DN loads for
// DM*DN multiply-adds.
// The reduction is split into `splits` slices of whole (n, p) rows, one per wid.z, written to
// dweight[slice, k, c, r, s] (sum_slices adds them up when there is more than one).
// Needs subgroups of at least 8 invocations.
// CPU twin: reference::conv2d_backward_weight. Dispatch: (ceil(C*R*S / (8*DN)), ceil(K / DM), SPLITS).

struct Params {
    n: u32, c: u32, h: u32, w: u32,
    k: u32, r: u32, s: u32, p: u32,
    q: u32, stride: u32, pad: u32, splits: u32,
}

@group(0) @binding(0) var<storage, read_write> dweight: array<f32>;
@group(0) @binding(1) var<storage, read> dout: array<f32>;
@group(0) @binding(2) var<storage, read> inp: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

const DM: u32 = 16;
const DN: u32 = 4;

// The values of `v` in lanes 0..7 of the subgroup.
fn lanes8(v: f32) -> array<f32, 8> {
    return array(subgroupBroadcast(v, 0u), subgroupBroadcast(v, 1u), subgroupBroadcast(v, 2u), subgroupBroadcast(v, 3u),
                 subgroupBroadcast(v, 4u), subgroupBroadcast(v, 5u), subgroupBroadcast(v, 6u), subgroupBroadcast(v, 7u));
}

@compute @workgroup_size(8)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(subgroup_invocation_id) lane: u32) {
    let rs = params.r * params.s;
    let crs = params.c * rs;
    let hw = params.h * params.w;
    let pq = params.p * params.q;
    let m0 = wid.y * DM;
    let j0 = wid.x * 8u * DN + lane % 8u;
    // The dout rows this lane loads for the subgroup: m0 + lane and m0 + 8 + lane.
    let lo = min(m0 + lane % 8u, params.k - 1u) * pq;
    let hi = min(m0 + 8u + lane % 8u, params.k - 1u) * pq;
    // Each column's input channel offset and tap offsets: input (h, w) = (p*stride + dh, q*stride + dw).
    var channel: vec4<u32>;
    var dh: vec4<i32>;
    var dw: vec4<i32>;
    for (var t = 0u; t < DN; t++) {
        let j = min(j0 + t * 8u, crs - 1u);
        channel[t] = (j / rs) * hw;
        dh[t] = i32((j % rs) / params.s) - i32(params.pad);
        dw[t] = i32(j % params.s) - i32(params.pad);
    }
    let st = i32(params.stride);
    let rows = params.n * params.p;
    let chunk = (rows + params.splits - 1u) / params.splits;
    var acc: array<vec4<f32>, DM>;
    for (var np = wid.z * chunk; np < min(rows, (wid.z + 1u) * chunk); np++) {
        let n = np / params.p;
        let p = i32(np % params.p);
        let image = n * params.c * hw;
        let a_row = n * params.k * pq + u32(p) * params.q;
        let h = vec4(p * st) + dh;
        let row_inside = (h >= vec4(0)) & (h < vec4(i32(params.h)));
        let at = vec4(image) + channel + vec4<u32>(clamp(h, vec4(0), vec4(i32(params.h) - 1))) * params.w;
        for (var q = 0u; q < params.q; q++) {
            let w = vec4(i32(q) * st) + dw;
            let inside = row_inside & (w >= vec4(0)) & (w < vec4(i32(params.w)));
            let x = at + vec4<u32>(clamp(w, vec4(0), vec4(i32(params.w) - 1)));
            let b = select(vec4(0.0), vec4(inp[x.x], inp[x.y], inp[x.z], inp[x.w]), inside);
            let a_lo = lanes8(dout[a_row + lo + q]);
            let a_hi = lanes8(dout[a_row + hi + q]);
            for (var i = 0u; i < 8u; i++) {
                acc[i] = fma(vec4(a_lo[i]), b, acc[i]);
                acc[i + 8u] = fma(vec4(a_hi[i]), b, acc[i + 8u]);
            }
        }
    }
    for (var t = 0u; t < DN; t++) {
        let j = j0 + t * 8u;
        for (var i = 0u; i < DM; i++) {
            if (m0 + i < params.k && j < crs) { dweight[(wid.z * params.k + m0 + i) * crs + j] = acc[i][t]; }
        }
    }
}
