// Prepended to every `_lanes` kernel (Kernel::source): what their subgroups share.

// The values of `v` in lanes 0..7 of the subgroup: with the lanes of a subgroup owning 8 rows
// (or positions) of a block, every lane gets all eight with one load of its own. On CPU adapters
// a broadcast is a register shuffle where a load is a per-lane gather.
fn lanes8(v: vec4<f32>) -> array<vec4<f32>, 8> {
    return array(subgroupBroadcast(v, 0u), subgroupBroadcast(v, 1u), subgroupBroadcast(v, 2u), subgroupBroadcast(v, 3u),
                 subgroupBroadcast(v, 4u), subgroupBroadcast(v, 5u), subgroupBroadcast(v, 6u), subgroupBroadcast(v, 7u));
}
