// Prepended to the direct path's conv kernels (conv2d_forward, conv2d_backward_input,
// conv2d_backward_weight): every invocation reads its operands from storage, with no workgroup
// memory and no barriers (fast on CPU adapters, where a barrier costs more than the loads it
// saves). Each kernel states its own walk of the reduction in `direct`.

// A workgroup of WG_M x WG_N invocations, each owning DM x DN outputs (the host sizes the
// dispatch with the same numbers).
override WG_M: u32 = 8;
override WG_N: u32 = 8;
const DM: u32 = 8;
const DN: u32 = 8;
