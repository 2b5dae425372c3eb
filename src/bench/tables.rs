//! Human-readable tables of reports.

use super::Timer;
use super::report::{Kind, LayerTime, Measurement, Report, block_of};
use crate::gpu::AdapterJson;

use std::collections::BTreeMap;

use crate::model::{Arch, Shortcut};

/// `x` with about three significant digits.
pub(super) fn fmt3(x: f64) -> String {
    match x.abs() {
        a if a >= 100.0 => format!("{x:.0}"),
        a if a >= 10.0 => format!("{x:.1}"),
        a if a >= 1.0 => format!("{x:.2}"),
        _ => format!("{x:.3}"),
    }
}

/// A Markdown table with padded columns; columns from `numeric` on are right-aligned.
pub(super) fn markdown(header: &[&str], rows: &[Vec<String>], numeric: usize) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(
                |(i, c)| {
                    if i >= numeric { format!("{c:>w$}", w = widths[i]) } else { format!("{c:<w$}", w = widths[i]) }
                },
            )
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let mut text = line(header.iter().map(|h| h.to_string()).collect());
    let rules = widths
        .iter()
        .enumerate()
        .map(|(i, &w)| if i >= numeric { format!("{}:", "-".repeat(w - 1)) } else { "-".repeat(w) });
    text += &line(rules.collect());
    for row in rows {
        text += &line(row.clone());
    }
    text
}

pub(super) fn adapter_label(adapter: &AdapterJson) -> String {
    format!("{} on {}", adapter.name, adapter.backend)
}

/// `resnet20`, or `resnet20 (B)` for a CIFAR ResNet with projection shortcuts.
pub(super) fn model_label(model: &str, shortcut: &str) -> String {
    let imagenet = Arch::parse(model, Shortcut::A).is_ok_and(|a| a.imagenet);
    if shortcut == "b" && !imagenet { format!("{model} (B)") } else { model.to_string() }
}

/// The results table of every report, then the per-layer roll-ups of results that have them.
pub fn human_tables(reports: &[Report]) -> String {
    let mut text = String::new();
    for r in reports {
        text += &format!(
            "adapter: {} ({}, {}, driver {}): peak {} GFLOP/s fp32, copy {} GB/s; timer: {}; conv: {}; {} warmup and {} timed steps\n",
            r.adapter.name,
            r.adapter.backend,
            r.adapter.device_type,
            r.adapter.driver,
            fmt3(r.peak.fp32_gflops),
            fmt3(r.peak.bandwidth_gbs),
            match r.timer {
                Timer::Timestamps => "GPU timestamps",
                Timer::WallClock => "wall clock",
            },
            if r.conv.is_empty() { "?" } else { &r.conv },
            r.warmup,
            r.iters
        );
    }
    let header = [
        "adapter",
        "model",
        "mode",
        "batch",
        "median ms",
        "p10-p90 ms",
        "images/s",
        "GFLOP/s",
        "% peak",
        "GB/s",
        "% BW",
        "memory MiB",
        "encode ms",
    ];
    let mut rows = Vec::new();
    for r in reports {
        for m in &r.results {
            rows.push(vec![
                adapter_label(&r.adapter),
                model_label(&m.model, &m.shortcut),
                m.mode.name().into(),
                m.batch.to_string(),
                fmt3(m.median_ms),
                format!("{}-{}", fmt3(m.p10_ms), fmt3(m.p90_ms)),
                fmt3(m.images_per_s),
                fmt3(m.gflops),
                format!("{:.1}", m.pct_peak),
                fmt3(m.gbs),
                format!("{:.1}", m.pct_bandwidth),
                format!("{:.1}", m.memory_bytes as f64 / (1 << 20) as f64),
                fmt3(m.encode_ms),
            ]);
        }
    }
    text += "\n";
    text += &markdown(&header, &rows, 3);
    for r in reports {
        for m in r.results.iter().filter(|m| !m.layers.is_empty()) {
            text += "\n";
            text += &layer_tables(r, m);
        }
    }
    text
}

/// Per-kind and per-block roll-ups of a result's layer times, and its ten slowest layers.
pub fn layer_tables(report: &Report, m: &Measurement) -> String {
    let total: f64 = m.layers.iter().map(|l| l.ms).sum();
    let share = |ms: f64| format!("{:.1}", 100.0 * ms / total);
    let mut text = format!(
        "per-layer GPU time of {} {} batch {} on {}: the layers sum to {} ms, the whole step took {} ms (median)\n\n",
        model_label(&m.model, &m.shortcut),
        m.mode.name(),
        m.batch,
        adapter_label(&report.adapter),
        fmt3(total),
        fmt3(m.median_ms)
    );
    let mut kinds: BTreeMap<Kind, (f64, u64, usize)> = BTreeMap::new();
    for l in &m.layers {
        let e = kinds.entry(l.kind).or_default();
        *e = (e.0 + l.ms, e.1 + l.bytes, e.2 + 1);
    }
    let rows: Vec<Vec<String>> = kinds
        .iter()
        .map(|(kind, &(ms, bytes, passes))| {
            vec![kind.label().into(), passes.to_string(), fmt3(ms), share(ms), fmt3(bytes as f64 / ms / 1e6)]
        })
        .collect();
    text += &markdown(&["kind", "passes", "ms", "% of layers", "GB/s"], &rows, 1);

    let mut blocks: Vec<(&str, f64)> = Vec::new();
    for l in &m.layers {
        let block = block_of(&l.name);
        match blocks.iter_mut().find(|(b, _)| *b == block) {
            Some(entry) => entry.1 += l.ms,
            None => blocks.push((block, l.ms)),
        }
    }
    let rows: Vec<Vec<String>> = blocks.iter().map(|&(b, ms)| vec![b.into(), fmt3(ms), share(ms)]).collect();
    text += "\n";
    text += &markdown(&["block", "ms", "% of layers"], &rows, 1);

    let mut slowest: Vec<&LayerTime> = m.layers.iter().collect();
    slowest.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    let rows: Vec<Vec<String>> = slowest
        .iter()
        .take(10)
        .map(|l| {
            let kernels = l.kernels.join(" + ");
            vec![
                l.name.clone(),
                l.kind.label().into(),
                kernels,
                fmt3(l.ms),
                share(l.ms),
                fmt3(l.bytes as f64 / l.ms / 1e6),
            ]
        })
        .collect();
    text += "\nslowest passes:\n\n";
    text += &markdown(&["layer", "kind", "kernels (override constants)", "ms", "% of layers", "GB/s"], &rows, 3);
    text
}
