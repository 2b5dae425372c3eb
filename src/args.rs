//! Value parsers for numeric flags: a value out of range is refused when the command line is
//! parsed, with an error that names the flag (clap adds it) and the range, before anything runs.

use std::ops::RangeInclusive;

/// A count of at least 1: steps, batch sizes, iterations, images.
pub fn count(s: &str) -> Result<usize, String> {
    let n: usize = s.trim().parse().map_err(|_| format!("expected a whole number, got {s:?}"))?;
    if n == 0 { Err("must be at least 1".into()) } else { Ok(n) }
}

/// A whole number in `range`.
fn whole_in(s: &str, range: RangeInclusive<u32>) -> Result<u32, String> {
    let n: u32 = s.trim().parse().map_err(|_| format!("expected a whole number, got {s:?}"))?;
    if range.contains(&n) { Ok(n) } else { Err(format!("must be in {}..={}", range.start(), range.end())) }
}

/// The shorter side of a photo after resizing: 1 to 4096 pixels.
pub fn side(s: &str) -> Result<u32, String> {
    whole_in(s, 1..=4096)
}

/// The side of a network's input images: 32 to 1024 pixels (the ImageNet ResNets divide it by 32).
pub fn input_size(s: &str) -> Result<u32, String> {
    whole_in(s, 32..=1024)
}

fn finite(s: &str) -> Result<f32, String> {
    let x: f32 = s.trim().parse().map_err(|_| format!("expected a number, got {s:?}"))?;
    if x.is_finite() { Ok(x) } else { Err(format!("must be finite, got {s:?}")) }
}

/// A finite number above 0: learning rates, epochs, standard deviations.
pub fn positive(s: &str) -> Result<f32, String> {
    let x = finite(s)?;
    if x > 0.0 { Ok(x) } else { Err("must be above 0".into()) }
}

/// A finite number of at least 0: weight decay.
pub fn non_negative(s: &str) -> Result<f32, String> {
    let x = finite(s)?;
    if x >= 0.0 { Ok(x) } else { Err("must be at least 0".into()) }
}

/// A number in [0, 1): SGD momentum.
pub fn momentum(s: &str) -> Result<f32, String> {
    let x = finite(s)?;
    if (0.0..1.0).contains(&x) { Ok(x) } else { Err("must be in [0, 1)".into()) }
}

/// Three comma-separated finite numbers, e.g. `0.4914,0.4822,0.4465`.
pub fn triple(s: &str) -> Result<[f32; 3], String> {
    let v: Vec<f32> = s.split(',').map(finite).collect::<Result<_, _>>()?;
    v.try_into().map_err(|_| format!("expected three comma-separated numbers, got {s:?}"))
}

/// [`triple`] with every number above 0: a per-channel standard deviation.
pub fn positive_triple(s: &str) -> Result<[f32; 3], String> {
    let v = triple(s)?;
    if v.iter().all(|&x| x > 0.0) { Ok(v) } else { Err("every number must be above 0".into()) }
}
