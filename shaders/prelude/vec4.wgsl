// Element width, vec4: a kernel after this part reads and writes its tensors 4 values at a time,
// a quarter of the loads and stores (on CPU adapters each is a loop over the lanes, however
// wide). Defines the names of prelude/f32.wgsl, so that a `_vec4` twin and its scalar kernel
// are one source.

// An element of a tensor, the same test of each of its values, and how many values it holds.
alias elem = vec4<f32>;
alias elem_bool = vec4<bool>;
const WIDTH: u32 = 4u;

// The sum of an element's values, in order.
fn elem_sum(v: elem) -> f32 {
    return v.x + v.y + v.z + v.w;
}

// sum + the dot product of a and b.
fn dot_add(a: elem, b: elem, sum: f32) -> f32 {
    return sum + dot(a, b);
}

// ReLU masks (relu_mask) hold one bit per value, 32 to a u32 word: element j has bits
// 4(j % 8) .. 4(j % 8) + 3 of word j / MASK_ELEMS, its values in order.
const MASK_ELEMS: u32 = 8u;

// Element j's 4 bits of its mask word, as a test of each value.
fn mask_test(word: u32, j: u32) -> elem_bool {
    return (vec4(word >> ((j % 8u) * 4u)) & vec4(1u, 2u, 4u, 8u)) != vec4(0u);
}

// Whether an in-place update that zeroes the values not kept can leave the element as it is:
// never, a vec4 is rewritten whole (a test for 4 kept values cost more than the store it saves:
// relu_backward_vec4 3-5 % slower on lavapipe).
fn skip_store(keep: elem_bool) -> bool {
    return false;
}

// `word` with the element's 4 bits, from bit `at`, set where its values are `on` (bit at + t for
// value t).
fn mask_set(word: u32, on: elem_bool, at: u32) -> u32 {
    let bits = select(vec4(0u), vec4(1u, 2u, 4u, 8u), on);
    return word | ((bits.x | bits.y | bits.z | bits.w) << at);
}
