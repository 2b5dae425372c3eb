// Prepended to every batch norm kernel (batchnorm_*): the `params` uniform they all bind, mirrored
// by the host's BatchnormParams. Input [N,C,H,W] with hw = H*W; PyTorch's momentum and eps; for
// the two-level kernels (prelude chunks) the values of a chunk and the chunks of a channel.
struct Params { n: u32, c: u32, hw: u32, chunk: u32, momentum: f32, eps: f32, chunks: u32, _unused: u32 }
