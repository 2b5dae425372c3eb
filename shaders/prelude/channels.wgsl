// Prepended to the batch norm kernels that reduce a channel in one workgroup of WG invocations
// (batchnorm_forward_train, batchnorm_backward and their `_vec4` twins), and to the two-level
// kernels (prelude chunks), which reduce a chunk or a channel's chunks a workgroup: the workgroup
// size and sum, and the walk of a channel.

// The workgroup size, a power of two.
override WG: u32 = 256;

var<workgroup> partial: array<f32, WG>;

// Sum of every invocation's v, the same bits every time (a fixed-order tree).
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

// A channel's values are N rows of `len` elements: invocation t walks rows t / L, t / L + WG / L,
// ... and in each the elements t % L, t % L + L, ..., with L = min(WG, len rounded up to a power of
// two): no division per value, and few idle invocations where rows are short.
fn row_lanes(len: u32) -> u32 {
    return min(WG, 1u << (32u - countLeadingZeros(max(len, 2u) - 1u)));
}
