// Prepended to the kernels that end batch norm's training reductions, batchnorm_forward_train and
// batchnorm_forward_combine: storing a channel's batch statistics and moving the running ones.

// mean[c] = mu, rstd[c] = r = 1 / sqrt(variance + eps) for the biased variance of the channel's
// m values, and PyTorch's update of the running statistics (momentum; the unbiased variance).
fn store_statistics(c: u32, m: u32, mu: f32, variance: f32, r: f32) {
    mean[c] = mu;
    rstd[c] = r;
    let unbiased = variance * f32(m) / f32(max(m, 2u) - 1u);
    running_mean[c] = (1.0 - params.momentum) * running_mean[c] + params.momentum * mu;
    running_var[c] = (1.0 - params.momentum) * running_var[c] + params.momentum * unbiased;
}
