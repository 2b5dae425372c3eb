// Prepended to every conv kernel (conv2d_*): the `params` uniform they all bind, mirrored by the
// host's ConvParams. Input [N,C,H,W], weight [K,C,R,S], output [N,K,P,Q], stride and padding;
// `splits`: the reduction slices of a weight gradient (1 elsewhere).
struct Params {
    n: u32, c: u32, h: u32, w: u32,
    k: u32, r: u32, s: u32, p: u32,
    q: u32, stride: u32, pad: u32, splits: u32,
}
