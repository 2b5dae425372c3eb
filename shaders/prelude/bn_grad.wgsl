// Prepended to batch norm's backward kernels (batchnorm_backward, batchnorm_backward_chunks,
// batchnorm_backward_input and their `_vec4` twins), after an element-width part: the gradient
// that reaches the BN's output and the channel's 1 / std, as the RELU and FROZEN overrides say.
// Reads the kernel's dout, mask and rstd bindings.

// The forward's ReLU (fused into batchnorm_forward_train) is undone first: dout = 0 where the bit
// of relu_mask (of the ReLU's output) is clear, as relu_backward.
override RELU: bool = false;
// Batch norm with frozen running statistics, which the forward normalised with: `mean` and `rstd`
// bind the running mean and the running variance, and the statistics are constants to the gradient.
override FROZEN: bool = false;

// The gradient of the BN output at element j.
fn grad(j: u32) -> elem {
    if (RELU) { return select(elem(0.0), dout[j], mask_test(mask[j / MASK_ELEMS], j)); }
    return dout[j];
}

// 1 / std of channel c: rstd[c], or with FROZEN 1 / sqrt(var[c] + eps) of the running variance.
fn channel_rstd(c: u32) -> f32 {
    if (FROZEN) { return inverseSqrt(rstd[c] + params.eps); }
    return rstd[c];
}
