// conv2d_backward_input_lanes: conv2d_backward_input (same formula, shapes and bindings) for CPU
// adapters with subgroups, blocked as conv2d_forward_lanes: rows m = c, columns j = (n,h,w),
// reduction e = (k,r,s); the 64 invocations of a workgroup share DM = 16 rows, each owns DN = 4
// columns j0 + lid.x + t*64, and `lanes8` hands the subgroup the weights of the 16 rows for two
// loads per lane. A step takes 4 output channels k, the weights as vec4s over them, and adds dot
// products of 4 to the accumulators. Needs subgroups of at least 8 invocations.
// ACCUMULATE as there. CPU twin: reference::conv2d_backward_input. Dispatch: (ceil(N*H*W / (64*DN)), ceil(C / DM), 1).

@group(0) @binding(0) var<storage, read_write> dinp: array<f32>;
@group(0) @binding(1) var<storage, read> dout: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

override ACCUMULATE: bool = false;
// The operand of prelude step4: dout.
fn operand(i: u32) -> f32 {
    return dout[i];
}

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(subgroup_invocation_id) lane: u32) {
    let rs = params.r * params.s;
    let hw = params.h * params.w;
    let pq = params.p * params.q;
    let st = vec4(i32(params.stride));
    let m0 = wid.y * DM;
    let j0 = wid.x * 64u * DN + lid.x;
    // The weight rows this lane loads for the subgroup: m0 + lane and m0 + 8 + lane.
    let lo = min(m0 + lane % 8u, params.c - 1u) * rs;
    let hi = min(m0 + 8u + lane % 8u, params.c - 1u) * rs;
    var image: vec4<u32>;
    var hp: vec4<i32>;
    var wp: vec4<i32>;
    for (var t = 0u; t < DN; t++) {
        let col = min(j0 + t * 64u, params.n * hw - 1u);
        image[t] = (col / hw) * params.k * pq;
        hp[t] = i32((col % hw) / params.w + params.pad);
        wp[t] = i32(col % params.w + params.pad);
    }
    var acc: array<vec4<f32>, DM>;
    for (var r = 0u; r < params.r; r++) {
        for (var s = 0u; s < params.s; s++) {
            // The output position (p, q) this tap reads for each column, if it exists.
            let ph = hp - vec4(i32(r));
            let qw = wp - vec4(i32(s));
            let p = ph / st;
            let q = qw / st;
            let inside = (ph >= vec4(0)) & (qw >= vec4(0)) & (ph % st == vec4(0)) & (qw % st == vec4(0))
                & (p < vec4(i32(params.p))) & (q < vec4(i32(params.q)));
            let at = image + vec4<u32>(clamp(p, vec4(0), vec4(i32(params.p) - 1))) * params.q
                + vec4<u32>(clamp(q, vec4(0), vec4(i32(params.q) - 1)));
            let tap = r * params.s + s;
            // Output channels k, the weights of channel k at k * C*R*S.
            tap4(&acc, at, inside, params.k, pq, lo + tap, hi + tap, params.c * rs);
        }
    }
    for (var t = 0u; t < DN; t++) {
        let j = j0 + t * 64u;
        let at = (j / hw) * params.c * hw + j % hw;
        for (var i = 0u; i < DM; i++) {
            let o = at + (m0 + i) * hw;
            if (m0 + i < params.c && j < params.n * hw) {
                if (ACCUMULATE) { dinp[o] += acc[i][t]; } else { dinp[o] = acc[i][t]; }
            }
        }
    }
}
