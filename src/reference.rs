//! CPU twin of every kernel, in f64, with the kernel's name and argument order (outputs first,
//! then inputs, then the params). Plain loops written for clarity, not speed; tests and the
//! benchmark's self-check compare the GPU against these.

use crate::ops::batchnorm::{BN_EPS, BN_MOMENTUM, BatchnormParams};
use crate::ops::conv::ConvParams;
use crate::ops::elementwise::ShortcutParams;
use crate::ops::linear::LinearParams;
use crate::ops::pool::{AvgpoolParams, PoolParams};

/// The first element where `got` is further than `atol + rtol * |want|` from `want`, or is not
/// finite: the one closeness check of the tests, the benchmark's self-check and the autotune.
pub fn first_off(got: &[f32], want: &[f64], atol: f64, rtol: f64) -> Option<usize> {
    assert_eq!(got.len(), want.len(), "{} values compared with {}", got.len(), want.len());
    got.iter().zip(want).position(|(&g, &w)| {
        // A NaN in `want` makes the difference NaN: off, like a non-finite `got`.
        let diff = (g as f64 - w).abs();
        !g.is_finite() || diff.is_nan() || diff > atol + rtol * w.abs()
    })
}

/// `inp[n,c,h,w]` with zero outside the image.
#[allow(clippy::too_many_arguments)]
fn at(inp: &[f64], c_len: usize, h_len: usize, w_len: usize, n: usize, c: usize, h: isize, w: isize) -> f64 {
    if h < 0 || w < 0 || h >= h_len as isize || w >= w_len as isize {
        return 0.0;
    }
    inp[((n * c_len + c) * h_len + h as usize) * w_len + w as usize]
}

fn dims(p: &ConvParams) -> [usize; 11] {
    [p.n, p.c, p.h, p.w, p.k, p.r, p.s, p.p, p.q, p.stride, p.pad].map(|x| x as usize)
}

pub fn conv2d_forward(out: &mut [f64], inp: &[f64], weight: &[f64], params: &ConvParams) {
    let [n_len, c_len, h_len, w_len, k_len, r_len, s_len, p_len, q_len, stride, pad] = dims(params);
    for n in 0..n_len {
        for k in 0..k_len {
            for p in 0..p_len {
                for q in 0..q_len {
                    let mut sum = 0.0;
                    for c in 0..c_len {
                        for r in 0..r_len {
                            for s in 0..s_len {
                                let h = (p * stride + r) as isize - pad as isize;
                                let w = (q * stride + s) as isize - pad as isize;
                                sum += weight[((k * c_len + c) * r_len + r) * s_len + s]
                                    * at(inp, c_len, h_len, w_len, n, c, h, w);
                            }
                        }
                    }
                    out[((n * k_len + k) * p_len + p) * q_len + q] = sum;
                }
            }
        }
    }
}

/// Scatters every output gradient back along the forward's index map.
pub fn conv2d_backward_input(dinp: &mut [f64], dout: &[f64], weight: &[f64], params: &ConvParams) {
    let [n_len, c_len, h_len, w_len, k_len, r_len, s_len, p_len, q_len, stride, pad] = dims(params);
    dinp.fill(0.0);
    for n in 0..n_len {
        for k in 0..k_len {
            for p in 0..p_len {
                for q in 0..q_len {
                    let g = dout[((n * k_len + k) * p_len + p) * q_len + q];
                    for c in 0..c_len {
                        for r in 0..r_len {
                            for s in 0..s_len {
                                let h = (p * stride + r) as isize - pad as isize;
                                let w = (q * stride + s) as isize - pad as isize;
                                if h >= 0 && w >= 0 && (h as usize) < h_len && (w as usize) < w_len {
                                    dinp[((n * c_len + c) * h_len + h as usize) * w_len + w as usize] +=
                                        g * weight[((k * c_len + c) * r_len + r) * s_len + s];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

pub fn conv2d_backward_weight(dweight: &mut [f64], dout: &[f64], inp: &[f64], params: &ConvParams) {
    let [n_len, c_len, h_len, w_len, k_len, r_len, s_len, p_len, q_len, stride, pad] = dims(params);
    dweight.fill(0.0);
    for n in 0..n_len {
        for k in 0..k_len {
            for p in 0..p_len {
                for q in 0..q_len {
                    let g = dout[((n * k_len + k) * p_len + p) * q_len + q];
                    for c in 0..c_len {
                        for r in 0..r_len {
                            for s in 0..s_len {
                                let h = (p * stride + r) as isize - pad as isize;
                                let w = (q * stride + s) as isize - pad as isize;
                                dweight[((k * c_len + c) * r_len + r) * s_len + s] +=
                                    g * at(inp, c_len, h_len, w_len, n, c, h, w);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The weight [K,C,R,S] as [K4,R,S,C4], or `transposed` as [C4,R,S,K4], zeros past K and C
/// (`conv::panel_shape`).
pub fn conv2d_weight_panel(panel: &mut [f64], weight: &[f64], params: &ConvParams, transposed: bool) {
    let [_, c_len, _, _, k_len, r_len, s_len, ..] = dims(params);
    let (c4, k4) = (c_len.next_multiple_of(4), k_len.next_multiple_of(4));
    panel.fill(0.0);
    for k in 0..k_len {
        for c in 0..c_len {
            for r in 0..r_len {
                for s in 0..s_len {
                    let at = if transposed {
                        ((c * r_len + r) * s_len + s) * k4 + k
                    } else {
                        ((k * r_len + r) * s_len + s) * c4 + c
                    };
                    panel[at] = weight[((k * c_len + c) * r_len + r) * s_len + s];
                }
            }
        }
    }
}

/// The flat indices of channel `c`'s values in an [N,C,HW] tensor.
fn channel(params: &BatchnormParams, c: usize) -> impl Iterator<Item = usize> + '_ {
    let (c_len, hw) = (params.c as usize, params.hw as usize);
    (0..params.n as usize).flat_map(move |n| (0..hw).map(move |i| (n * c_len + c) * hw + i))
}

#[allow(clippy::too_many_arguments)]
pub fn batchnorm_forward_train(
    out: &mut [f64],
    mean: &mut [f64],
    rstd: &mut [f64],
    running_mean: &mut [f64],
    running_var: &mut [f64],
    inp: &[f64],
    weight: &[f64],
    bias: &[f64],
    params: &BatchnormParams,
) {
    let m = (params.n * params.hw) as f64;
    let momentum = BN_MOMENTUM as f64;
    for c in 0..params.c as usize {
        let mu = channel(params, c).map(|i| inp[i]).sum::<f64>() / m;
        let var = channel(params, c).map(|i| (inp[i] - mu).powi(2)).sum::<f64>() / m;
        let r = 1.0 / (var + BN_EPS as f64).sqrt();
        for i in channel(params, c) {
            out[i] = (inp[i] - mu) * r * weight[c] + bias[c];
        }
        mean[c] = mu;
        rstd[c] = r;
        running_mean[c] = (1.0 - momentum) * running_mean[c] + momentum * mu;
        running_var[c] = (1.0 - momentum) * running_var[c] + momentum * var * m / (m - 1.0).max(1.0);
    }
}

pub fn batchnorm_forward_eval(
    out: &mut [f64],
    inp: &[f64],
    weight: &[f64],
    bias: &[f64],
    running_mean: &[f64],
    running_var: &[f64],
    params: &BatchnormParams,
) {
    for c in 0..params.c as usize {
        for i in channel(params, c) {
            out[i] = (inp[i] - running_mean[c]) / (running_var[c] + BN_EPS as f64).sqrt() * weight[c] + bias[c];
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub fn batchnorm_backward(
    dinp: &mut [f64],
    dweight: &mut [f64],
    dbias: &mut [f64],
    dout: &[f64],
    inp: &[f64],
    weight: &[f64],
    mean: &[f64],
    rstd: &[f64],
    params: &BatchnormParams,
) {
    let m = (params.n * params.hw) as f64;
    for c in 0..params.c as usize {
        let xhat = |i: usize| (inp[i] - mean[c]) * rstd[c];
        let db: f64 = channel(params, c).map(|i| dout[i]).sum();
        let dw: f64 = channel(params, c).map(|i| dout[i] * xhat(i)).sum();
        for i in channel(params, c) {
            dinp[i] = weight[c] * rstd[c] / m * (m * dout[i] - db - xhat(i) * dw);
        }
        dweight[c] = dw;
        dbias[c] = db;
    }
}

/// The backward of batch norm with frozen running statistics (`batchnorm_forward_eval`, whose
/// statistics are constants): `dinp = weight * dout / sqrt(var + eps)`, dweight and dbias as
/// [`batchnorm_backward`]'s with the running statistics.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_backward_frozen(
    dinp: &mut [f64],
    dweight: &mut [f64],
    dbias: &mut [f64],
    dout: &[f64],
    inp: &[f64],
    weight: &[f64],
    running_mean: &[f64],
    running_var: &[f64],
    params: &BatchnormParams,
) {
    for c in 0..params.c as usize {
        let rstd = 1.0 / (running_var[c] + params.eps as f64).sqrt();
        let xhat = |i: usize| (inp[i] - running_mean[c]) * rstd;
        dbias[c] = channel(params, c).map(|i| dout[i]).sum();
        dweight[c] = channel(params, c).map(|i| dout[i] * xhat(i)).sum();
        for i in channel(params, c) {
            dinp[i] = weight[c] * rstd * dout[i];
        }
    }
}

pub fn relu_forward(out: &mut [f64], inp: &[f64]) {
    for (o, x) in out.iter_mut().zip(inp) {
        *o = x.max(0.0);
    }
}

/// One bit per value of `inp`, set where it is > 0, 32 to a word.
pub fn relu_mask(mask: &mut [u32], inp: &[f64]) {
    mask.fill(0);
    for (i, x) in inp.iter().enumerate() {
        if *x > 0.0 {
            mask[i / 32] |= 1 << (i % 32);
        }
    }
}

/// The GPU kernel reads the mask relu_mask makes of `inp`, and works in place.
pub fn relu_backward(dinp: &mut [f64], dout: &[f64], inp: &[f64]) {
    for ((d, g), x) in dinp.iter_mut().zip(dout).zip(inp) {
        *d = if *x > 0.0 { *g } else { 0.0 };
    }
}

pub fn add(out: &mut [f64], inp: &[f64]) {
    for (o, x) in out.iter_mut().zip(inp) {
        *o += x;
    }
}

pub fn sum_slices(out: &mut [f64], inp: &[f64]) {
    out.fill(0.0);
    for slice in inp.chunks(out.len()) {
        for (o, x) in out.iter_mut().zip(slice) {
            *o += x;
        }
    }
}

pub fn shortcut_a_forward(out: &mut [f64], inp: &[f64], params: &ShortcutParams) {
    let [n_len, c_len, h_len, w_len, k_len, p_len, q_len] =
        [params.n, params.c, params.h, params.w, params.k, params.p, params.q].map(|x| x as usize);
    let lo = (k_len - c_len) / 2;
    for n in 0..n_len {
        for k in 0..k_len {
            for p in 0..p_len {
                for q in 0..q_len {
                    out[((n * k_len + k) * p_len + p) * q_len + q] = if k >= lo && k < lo + c_len {
                        inp[((n * c_len + k - lo) * h_len + 2 * p) * w_len + 2 * q]
                    } else {
                        0.0
                    };
                }
            }
        }
    }
}

pub fn shortcut_a_backward(dinp: &mut [f64], dout: &[f64], params: &ShortcutParams) {
    let [n_len, c_len, h_len, w_len, k_len, p_len, q_len] =
        [params.n, params.c, params.h, params.w, params.k, params.p, params.q].map(|x| x as usize);
    let lo = (k_len - c_len) / 2;
    for n in 0..n_len {
        for c in 0..c_len {
            for p in 0..p_len {
                for q in 0..q_len {
                    dinp[((n * c_len + c) * h_len + 2 * p) * w_len + 2 * q] +=
                        dout[((n * k_len + c + lo) * p_len + p) * q_len + q];
                }
            }
        }
    }
}

/// Writes the window maxima and their indices h*W + w within the plane (first maximum wins).
pub fn maxpool_forward(out: &mut [f64], indices: &mut [u32], inp: &[f64], params: &PoolParams) {
    let [nc, h_len, w_len, p_len, q_len, size, stride, pad] =
        [params.n * params.c, params.h, params.w, params.p, params.q, params.size, params.stride, params.pad]
            .map(|x| x as usize);
    for plane in 0..nc {
        for p in 0..p_len {
            for q in 0..q_len {
                let mut best: Option<(f64, usize)> = None;
                for r in 0..size {
                    for s in 0..size {
                        let (h, w) =
                            ((p * stride + r) as isize - pad as isize, (q * stride + s) as isize - pad as isize);
                        if h < 0 || w < 0 || h >= h_len as isize || w >= w_len as isize {
                            continue;
                        }
                        let index = h as usize * w_len + w as usize;
                        let v = inp[plane * h_len * w_len + index];
                        if best.is_none_or(|(b, _)| v > b) {
                            best = Some((v, index));
                        }
                    }
                }
                let (v, index) = best.expect("every max pool window overlaps the input");
                out[(plane * p_len + p) * q_len + q] = v;
                indices[(plane * p_len + p) * q_len + q] = index as u32;
            }
        }
    }
}

pub fn maxpool_backward(dinp: &mut [f64], dout: &[f64], indices: &[u32], params: &PoolParams) {
    let [nc, hw, pq] = [params.n * params.c, params.h * params.w, params.p * params.q].map(|x| x as usize);
    dinp.fill(0.0);
    for plane in 0..nc {
        for j in 0..pq {
            dinp[plane * hw + indices[plane * pq + j] as usize] += dout[plane * pq + j];
        }
    }
}

pub fn avgpool_forward(out: &mut [f64], inp: &[f64], params: &AvgpoolParams) {
    let hw = params.hw as usize;
    for (i, o) in out.iter_mut().enumerate() {
        *o = inp[i * hw..(i + 1) * hw].iter().sum::<f64>() / hw as f64;
    }
}

pub fn avgpool_backward(dinp: &mut [f64], dout: &[f64], params: &AvgpoolParams) {
    let hw = params.hw as usize;
    for (i, d) in dinp.iter_mut().enumerate() {
        *d = dout[i / hw] / hw as f64;
    }
}

pub fn linear_forward(out: &mut [f64], inp: &[f64], weight: &[f64], bias: &[f64], params: &LinearParams) {
    let [n_len, c_len, k_len] = [params.n, params.c, params.k].map(|x| x as usize);
    for n in 0..n_len {
        for k in 0..k_len {
            out[n * k_len + k] = bias[k] + (0..c_len).map(|c| inp[n * c_len + c] * weight[k * c_len + c]).sum::<f64>();
        }
    }
}

pub fn linear_backward_input(dinp: &mut [f64], dout: &[f64], weight: &[f64], params: &LinearParams) {
    let [n_len, c_len, k_len] = [params.n, params.c, params.k].map(|x| x as usize);
    for n in 0..n_len {
        for c in 0..c_len {
            dinp[n * c_len + c] = (0..k_len).map(|k| dout[n * k_len + k] * weight[k * c_len + c]).sum();
        }
    }
}

pub fn linear_backward_weight(
    dweight: &mut [f64],
    dbias: &mut [f64],
    dout: &[f64],
    inp: &[f64],
    params: &LinearParams,
) {
    let [n_len, c_len, k_len] = [params.n, params.c, params.k].map(|x| x as usize);
    for k in 0..k_len {
        for c in 0..c_len {
            dweight[k * c_len + c] = (0..n_len).map(|n| dout[n * k_len + k] * inp[n * c_len + c]).sum();
        }
        dbias[k] = (0..n_len).map(|n| dout[n * k_len + k]).sum();
    }
}

/// Returns (mean loss, number correct) and writes the gradient of the mean loss.
pub fn softmax_cross_entropy(dlogits: &mut [f64], logits: &[f64], labels: &[u32], k_len: usize) -> (f64, u32) {
    let n_len = labels.len();
    let mut loss = 0.0;
    let mut correct = 0;
    for n in 0..n_len {
        let row = &logits[n * k_len..(n + 1) * k_len];
        let (mut best_k, mut best) = (0, row[0]);
        for (k, &x) in row.iter().enumerate() {
            if x > best {
                (best_k, best) = (k, x);
            }
        }
        let z: f64 = row.iter().map(|x| (x - best).exp()).sum();
        let label = labels[n] as usize;
        loss += z.ln() + best - row[label];
        correct += (best_k == label) as u32;
        for k in 0..k_len {
            let p = (row[k] - best).exp() / z;
            dlogits[n * k_len + k] = (p - (k == label) as u32 as f64) / n_len as f64;
        }
    }
    (loss / n_len as f64, correct)
}

pub fn sgd(weight: &mut [f64], velocity: &mut [f64], grad: &[f64], lr: f64, momentum: f64, weight_decay: f64) {
    for ((w, v), g) in weight.iter_mut().zip(velocity.iter_mut()).zip(grad) {
        *v = momentum * *v + g + weight_decay * *w;
        *w -= lr * *v;
    }
}
