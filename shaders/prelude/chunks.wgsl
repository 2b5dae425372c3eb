// Prepended to batch norm's two-level training kernels (batchnorm_forward_chunks,
// batchnorm_forward_combine, batchnorm_backward_chunks, batchnorm_backward_combine), after
// bn_params, an element-width part and channels: a channel's M = N*H*W values, in the order
// (n, h, w), cut into params.chunks chunks of params.chunk values each (a multiple of 4), the
// last one shorter. A chunk's ends need not be a row's.

// Chunk g of the whole tensor (g = c * chunks + k): channel c, chunk k of that channel.
fn chunk_of(g: u32) -> vec2<u32> {
    return vec2(g / params.chunks, g % params.chunks);
}

// The values of chunk k of a channel.
fn chunk_values(k: u32) -> u32 {
    return min(params.chunk, params.n * params.hw - k * params.chunk);
}

// The elements of chunk k of a channel, first to end - 1, as channel_element numbers them.
fn chunk_elements(k: u32) -> vec2<u32> {
    let first = k * params.chunk / WIDTH;
    return vec2(first, first + chunk_values(k) / WIDTH);
}

// Element i of channel c (i < M / WIDTH, in the order (n, h, w)): its index in an [N,C,H,W]
// tensor. A row of H*W / WIDTH elements holds no element of the row after it (H*W % WIDTH == 0).
fn channel_element(c: u32, i: u32) -> u32 {
    let hw = params.hw / WIDTH;
    return (i / hw * params.c + c) * hw + i % hw;
}
