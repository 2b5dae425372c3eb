// Prepended to every batch norm kernel (batchnorm_*): the `params` uniform they all bind, mirrored
// by the host's BatchnormParams. Input [N,C,H,W] with hw = H*W; PyTorch's momentum and eps.
struct Params { n: u32, c: u32, hw: u32, _unused: u32, momentum: f32, eps: f32, _unused2: u32, _unused3: u32 }
