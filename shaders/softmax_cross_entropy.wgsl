// softmax_cross_entropy, for logits x [N,K] and integer labels y [N]:
//   loss[0]    = mean_n (logsumexp_k x[n,k] - x[n,y[n]])
//   dlogits    = (softmax(x[n,:]) - onehot(y[n])) / N        (the gradient of that mean loss)
//   correct[0] = #{n : argmax_k x[n,k] == y[n]}  (first maximum wins, as torch.argmax)
// Shapes: logits, dlogits [N,K]; labels [N] (u32); loss [1] (f32); correct [1] (u32). Overwrites all outputs.
// One workgroup of WG invocations; invocation t takes rows t, t+WG, ...; fixed-order tree reduction.
// CPU twin: reference::softmax_cross_entropy. Dispatch: (1, 1, 1).

struct Params { n: u32, k: u32, _unused: u32, _unused2: u32 }

@group(0) @binding(0) var<storage, read_write> dlogits: array<f32>;
@group(0) @binding(1) var<storage, read_write> loss: array<f32>;
@group(0) @binding(2) var<storage, read_write> correct: array<u32>;
@group(0) @binding(3) var<storage, read> logits: array<f32>;
@group(0) @binding(4) var<storage, read> labels: array<u32>;
@group(0) @binding(5) var<uniform> params: Params;

override WG: u32 = 256;
var<workgroup> loss_partial: array<f32, WG>;
var<workgroup> correct_partial: array<u32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) t: u32) {
    let scale = 1.0 / f32(params.n);
    var loss_sum = 0.0;
    var hits = 0u;
    for (var n = t; n < params.n; n += WG) {
        let row = n * params.k;
        var best = logits[row];
        var best_k = 0u;
        for (var k = 1u; k < params.k; k++) {
            if (logits[row + k] > best) { best = logits[row + k]; best_k = k; }
        }
        var z = 0.0;
        for (var k = 0u; k < params.k; k++) { z += exp(logits[row + k] - best); }
        let label = labels[n];
        loss_sum += log(z) + best - logits[row + label];
        hits += select(0u, 1u, best_k == label);
        for (var k = 0u; k < params.k; k++) {
            let p = exp(logits[row + k] - best) / z;
            dlogits[row + k] = (p - select(0.0, 1.0, k == label)) * scale;
        }
    }
    loss_partial[t] = loss_sum;
    correct_partial[t] = hits;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half /= 2u) {
        if (t < half) {
            loss_partial[t] += loss_partial[t + half];
            correct_partial[t] += correct_partial[t + half];
        }
        workgroupBarrier();
    }
    if (t == 0u) {
        loss[0] = loss_partial[0] * scale;
        correct[0] = correct_partial[0];
    }
}
