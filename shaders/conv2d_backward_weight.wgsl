// conv2d_backward_weight: dweight[k,c,r,s] = sum_{n,p,q} dout[n,k,p,q] * inp[n,c,p*stride+r-pad,q*stride+s-pad]
// Shapes: inp [N,C,H,W], dout [N,K,P,Q], dweight [K,C,R,S]. Overwrites dweight; fixed summation order.
// The direct path (CPU adapters; GPUs run conv2d_backward_weight_tiled), see `direct`.
// CPU twin: reference::conv2d_backward_weight. Dispatch: (ceil(C / (WG_N*DN)), ceil(K / (WG_M*DM)), R*S*SPLITS/WG_S).

@group(0) @binding(0) var<storage, read_write> dweight: array<f32>;
@group(0) @binding(1) var<storage, read> dout: array<f32>;
@group(0) @binding(2) var<storage, read> inp: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

// The direct path's slices per workgroup, and which local axis walks what: with SLICE_LANES x walks
// slices, y columns c, z rows k; without, x walks c, y k, z slices. The workgroup is WG_X x WG_Y x WG_Z.
override WG_S: u32 = 1;
override SLICE_LANES: bool = false;
override WG_X: u32 = 16;
override WG_Y: u32 = 16;
override WG_Z: u32 = 1;

// No workgroup memory and no barriers. Workgroup z picks one tap (r, s) and one
// group of WG_S reduction slices; each invocation has a slice, a column block and a row block.
// CPU adapters vectorise along x, so x walks columns where a layer has 8 column blocks, else
// slices (SLICE_LANES). Each invocation owns
// a DM x DN block of (k, c) at that tap, so every column shares one input position per step: no
// per-column index arithmetic or padding mask in the inner loop, whose (p, q) ranges are clipped
// to the taps that land inside the input. Per step: DM gradient and DN input loads for DM*DN
// multiply-adds. Slice z of SPLITS covers rows t = (n, p) in [z*chunk, (z+1)*chunk) and writes
// dweight[z, k, c, r, s] (sum_slices adds the slices when SPLITS > 1).
fn direct(lid: vec3<u32>, wid: vec3<u32>) {
    let l = select(lid.zxy, lid, SLICE_LANES); // (slice, column, row) within the workgroup
    let rs = params.r * params.s;
    let hw = params.h * params.w;
    let pq = params.p * params.q;
    let tap = wid.z % rs;
    let slice = (wid.z / rs) * WG_S + l.x;
    let r = i32(tap / params.s);
    let s = i32(tap % params.s);
    let m0 = wid.y * WG_M * DM + l.z;
    let c0 = wid.x * WG_N * DN + l.y;
    var rows: array<u32, DM>;
    for (var i = 0u; i < DM; i++) { rows[i] = min(m0 + i * WG_M, params.k - 1u) * pq; }
    var cols: array<u32, DN>;
    for (var j = 0u; j < DN; j++) { cols[j] = min(c0 + j * WG_N, params.c - 1u) * hw; }
    // Output positions whose input position h = p*stride + r - pad lies in [0, H), likewise w.
    let st = i32(params.stride);
    let pad = i32(params.pad);
    let p_lo = max(pad - r + st - 1, 0) / st;
    let p_hi = clamp((i32(params.h) - 1 + pad - r) / st + 1, 0, i32(params.p));
    let q_lo = max(pad - s + st - 1, 0) / st;
    let q_hi = clamp((i32(params.w) - 1 + pad - s) / st + 1, 0, i32(params.q));
    let np = u32(max(p_hi - p_lo, 0));
    let chunk = (params.n * np + params.splits - 1u) / params.splits;
    let t_end = min(params.n * np, (slice + 1u) * chunk);
    var acc: array<f32, DM * DN>;
    for (var t = slice * chunk; t < t_end; t++) {
        let n = t / np;
        let p = i32(t % np) + p_lo;
        let h = p * st + r - pad;
        let a_row = n * params.k * pq + u32(p) * params.q;
        let b_row = n * params.c * hw + u32(h) * params.w;
        for (var q = q_lo; q < q_hi; q++) {
            let a_at = a_row + u32(q);
            let b_at = b_row + u32(q * st + s - pad);
            var a: array<f32, DM>;
            for (var i = 0u; i < DM; i++) { a[i] = dout[rows[i] + a_at]; }
            for (var j = 0u; j < DN; j++) {
                let b = inp[cols[j] + b_at];
                for (var i = 0u; i < DM; i++) { acc[i * DN + j] = fma(a[i], b, acc[i * DN + j]); }
            }
        }
    }
    let crs = params.c * rs;
    for (var i = 0u; i < DM; i++) {
        let k = m0 + i * WG_M;
        for (var j = 0u; j < DN; j++) {
            let c = c0 + j * WG_N;
            if (k < params.k && c < params.c) { dweight[(slice * params.k + k) * crs + c * rs + tap] = acc[i * DN + j]; }
        }
    }
}

@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    direct(lid, wid);
}
