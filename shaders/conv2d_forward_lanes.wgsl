// conv2d_forward_lanes: conv2d_forward (same formula, shapes, epilogue and bindings) for CPU
// adapters with subgroups, such as lavapipe (8 lanes, one per slot of a 256-bit vector).
// Implicit GEMM as there: rows m = k, columns j = (n,p,q), reduction e = (c,r,s). The 64
// invocations of a workgroup share DM = 8 rows; each owns DN = 8 columns, j0 + lid.x + t*64. Per
// reduction step every lane loads the weight of one row and `lanes8` hands the subgroup all
// eight, so a step costs 1 + DN loads for DM*DN multiply-adds instead of conv2d_forward's
// DM + DN: on CPU adapters every storage load is a per-lane gather, a broadcast a register
// shuffle. (Bigger blocks ran slower on lavapipe: BENCHMARKS.md.)
// Needs subgroups of at least 8 invocations.
// CPU twin: reference::conv2d_forward. Dispatch: (ceil(N*P*Q / (64*DN)), ceil(K / DM), 1).

struct Params {
    n: u32, c: u32, h: u32, w: u32,
    k: u32, r: u32, s: u32, p: u32,
    q: u32, stride: u32, pad: u32, _unused: u32,
}

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> inp: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> residual: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;

override BIAS: bool = false;
override RESIDUAL: bool = false;
override RELU: bool = false;
const DM: u32 = 8;
const DN: u32 = 8;

// The values of `v` in lanes 0..7 of the subgroup.
fn lanes8(v: f32) -> array<f32, 8> {
    return array(subgroupBroadcast(v, 0u), subgroupBroadcast(v, 1u), subgroupBroadcast(v, 2u), subgroupBroadcast(v, 3u),
                 subgroupBroadcast(v, 4u), subgroupBroadcast(v, 5u), subgroupBroadcast(v, 6u), subgroupBroadcast(v, 7u));
}

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(subgroup_invocation_id) lane: u32) {
    let rs = params.r * params.s;
    let pq = params.p * params.q;
    let hw = params.h * params.w;
    let m0 = wid.y * DM;
    let j0 = wid.x * 64u * DN + lid.x;
    // The weight row this lane loads for the subgroup.
    let row = min(m0 + lane % 8u, params.k - 1u) * params.c * rs;
    var image: array<u32, DN>;
    var h0: array<i32, DN>;
    var w0: array<i32, DN>;
    for (var t = 0u; t < DN; t++) {
        let col = min(j0 + t * 64u, params.n * pq - 1u);
        image[t] = (col / pq) * params.c * hw;
        h0[t] = i32(((col % pq) / params.q) * params.stride) - i32(params.pad);
        w0[t] = i32((col % params.q) * params.stride) - i32(params.pad);
    }
    var acc: array<f32, DM * DN>;
    for (var r = 0u; r < params.r; r++) {
        for (var s = 0u; s < params.s; s++) {
            var at: array<u32, DN>;
            var inside: array<bool, DN>;
            for (var t = 0u; t < DN; t++) {
                let h = h0[t] + i32(r);
                let w = w0[t] + i32(s);
                inside[t] = h >= 0 && w >= 0 && h < i32(params.h) && w < i32(params.w);
                at[t] = image[t] + u32(clamp(h, 0, i32(params.h) - 1)) * params.w + u32(clamp(w, 0, i32(params.w) - 1));
            }
            let tap = r * params.s + s;
            for (var c = 0u; c < params.c; c++) {
                let a = lanes8(weight[row + c * rs + tap]);
                for (var t = 0u; t < DN; t++) {
                    let b = select(0.0, inp[at[t] + c * hw], inside[t]);
                    for (var i = 0u; i < DM; i++) { acc[i * DN + t] = fma(a[i], b, acc[i * DN + t]); }
                }
            }
        }
    }
    // The epilogue. The subgroup shares the bias of its 8 rows like the weights. (Loops stay
    // small so that the compiler unrolls them: a rolled loop would index acc at run time and
    // move all of it from registers to memory.)
    if (BIAS) {
        let b = lanes8(bias[min(m0 + lane % 8u, params.k - 1u)]);
        for (var i = 0u; i < DM; i++) {
            for (var t = 0u; t < DN; t++) { acc[i * DN + t] += b[i]; }
        }
    }
    for (var t = 0u; t < DN; t++) {
        let j = j0 + t * 64u;
        let at = (j / pq) * params.k * pq + j % pq;
        for (var i = 0u; i < DM; i++) {
            let o = at + (m0 + i) * pq;
            if (m0 + i < params.k && j < params.n * pq) {
                var v = acc[i * DN + t];
                if (RESIDUAL) { v += residual[o]; }
                if (RELU) { v = max(v, 0.0); }
                out[o] = v;
            }
        }
    }
}
