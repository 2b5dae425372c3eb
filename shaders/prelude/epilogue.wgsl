// Prepended to the forward conv kernels, after an element-width part (f32, or vec4 for
// conv2d_pointwise_lanes): the epilogue that serves inference with batch norm folded into the
// conv's weight and bias, and a block's residual add and ReLU fused into its last conv. Each step
// is switched on by the override of its name and reads the kernel's `bias` and `residual`
// bindings; training turns all three off. (conv2d_rows_lanes and conv2d_strided_lanes write the
// steps out: see there.)

override BIAS: bool = false;
override RESIDUAL: bool = false;
override RELU: bool = false;

// relu?(acc + bias[m] + residual[o]): `acc` is the conv's sum for output channel m at index o of out.
fn epilogue(acc: elem, m: u32, o: u32) -> elem {
    var v = acc;
    if (BIAS) { v += bias[m]; }
    if (RESIDUAL) { v += residual[o]; }
    if (RELU) { v = max(v, elem(0.0)); }
    return v;
}
