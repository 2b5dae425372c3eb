// Element width, scalar: a kernel after this part reads and writes its tensors one f32 at a time.
// prelude/vec4.wgsl defines the same names for 4 values at a time, so that a scalar kernel and its
// `_vec4` twin are one source, listed twice in the kernel table (once after each part).

// An element of a tensor, the same test of each of its values, and how many values it holds.
alias elem = f32;
alias elem_bool = bool;
const WIDTH: u32 = 1u;

// The sum of an element's values.
fn elem_sum(v: elem) -> f32 {
    return v;
}

// sum + a * b: one fused multiply-add.
fn dot_add(a: elem, b: elem, sum: f32) -> f32 {
    return fma(a, b, sum);
}

// ReLU masks (relu_mask) hold one bit per value, 32 to a u32 word: element j has bit j % 32 of
// word j / MASK_ELEMS.
const MASK_ELEMS: u32 = 32u;

// Element j's bit of its mask word, as a test.
fn mask_test(word: u32, j: u32) -> elem_bool {
    return (word & (1u << (j % 32u))) != 0u;
}

// Whether an in-place update that zeroes the values not kept can leave the element as it is
// (neither load nor store it): where its value is kept.
fn skip_store(keep: elem_bool) -> bool {
    return keep;
}

// `word` with the element's bit, bit `at`, set if `on`.
fn mask_set(word: u32, on: elem_bool, at: u32) -> u32 {
    if (on) { return word | (1u << at); }
    return word;
}
