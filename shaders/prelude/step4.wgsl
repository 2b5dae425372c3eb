// Prepended after prelude lanes to conv2d_forward_lanes and conv2d_backward_input_lanes: a lane
// owns DN = 4 columns of a block of 16 rows, and a tap's reduction takes 4 channels a step, the
// weights as vec4s over them and dot products of 4. Each kernel reads its operand (inp, dout)
// through its own `operand(i)`.

const DN: u32 = 4;

// The operand at `at` + channel offset `e` of the lane's 4 columns, 0 where not `inside`.
fn operand4(at: vec4<u32>, e: u32, inside: vec4<bool>) -> vec4<f32> {
    return select(vec4(0.0), vec4(operand(at.x + e), operand(at.y + e), operand(at.z + e), operand(at.w + e)), inside);
}

// The weights of 4 channels from `at` (`step` apart), 0 past the channels (where not `real`).
fn wt4(at: u32, step: u32, real: vec4<bool>) -> vec4<f32> {
    return select(vec4(0.0), vec4(weight[at], weight[at + step], weight[at + 2u * step], weight[at + 3u * step]), real);
}

// acc += one tap of the reduction over `count` channels, channel e of the operand at `at` + e *
// plane for the lane's columns (0 where not `inside`), the weights of the lane's rows at w_lo + e *
// w_step and w_hi + e * w_step. Channels e0 .. e0+3 a step (clamped into the channels; their
// weights are 0): column u of b holds channel e0 + u at the lane's 4 columns, so b * weights adds
// to each column the dot product of the 4 weights with its 4 values.
fn tap4(acc: ptr<function, array<vec4<f32>, DM>>, at: vec4<u32>, inside: vec4<bool>, count: u32, plane: u32,
        w_lo: u32, w_hi: u32, w_step: u32) {
    for (var e0 = 0u; e0 < count; e0 += 4u) {
        let b = mat4x4(operand4(at, min(e0, count - 1u) * plane, inside),
                       operand4(at, min(e0 + 1u, count - 1u) * plane, inside),
                       operand4(at, min(e0 + 2u, count - 1u) * plane, inside),
                       operand4(at, min(e0 + 3u, count - 1u) * plane, inside));
        let real = e0 + vec4(0u, 1u, 2u, 3u) < vec4(count);
        madd16_mat(acc, b, wt4(w_lo + e0 * w_step, w_step, real), wt4(w_hi + e0 * w_step, w_step, real));
    }
}
