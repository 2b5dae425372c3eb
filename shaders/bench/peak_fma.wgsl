// peak_fma: eight independent chains x <- fma(x, b, c) per invocation (two vec4, a and d), 16 x
// `loops` steps each: out[i] = the sum of the chains, so no step can be skipped.
// The loop body is 128 FMAs (256 FLOPs) of independent work: software adapters pay a lot per loop
// iteration, and enough invocations hide the FMA latency on GPUs.
// One invocation per output element, 256 per workgroup; dispatch (len / 256, 1, 1).
// CPU twin: `bench::peak_fma_reference`.

struct Params {
    loops: u32,
    b: f32,
    c: f32,
    _unused: u32,
}

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<uniform> params: Params;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let b = vec4<f32>(params.b);
    let c = vec4<f32>(params.c);
    let x = f32(id.x & 255u) * 0.001;
    var a = vec4<f32>(x, x + 0.1, x + 0.2, x + 0.3);
    var d = vec4<f32>(x + 0.4, x + 0.5, x + 0.6, x + 0.7);
    for (var i = 0u; i < params.loops; i++) {
        a = fma(a, b, c);
        d = fma(d, b, c);
        a = fma(a, b, c);
        d = fma(d, b, c);
        a = fma(a, b, c);
        d = fma(d, b, c);
        a = fma(a, b, c);
        d = fma(d, b, c);
        a = fma(a, b, c);
        d = fma(d, b, c);
        a = fma(a, b, c);
        d = fma(d, b, c);
        a = fma(a, b, c);
        d = fma(d, b, c);
        a = fma(a, b, c);
        d = fma(d, b, c);
        a = fma(a, b, c);
        d = fma(d, b, c);
        a = fma(a, b, c);
        d = fma(d, b, c);
        a = fma(a, b, c);
        d = fma(d, b, c);
        a = fma(a, b, c);
        d = fma(d, b, c);
        a = fma(a, b, c);
        d = fma(d, b, c);
        a = fma(a, b, c);
        d = fma(d, b, c);
        a = fma(a, b, c);
        d = fma(d, b, c);
        a = fma(a, b, c);
        d = fma(d, b, c);
    }
    out[id.x] = dot(a + d, vec4<f32>(1.0));
}
