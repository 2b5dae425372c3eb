//! `bench compare`: reports of several adapters side by side.

use super::Mode;
use super::report::{Measurement, Report};
use super::tables::{adapter_label, fmt3, markdown, model_label};

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};

/// The reports of a `bench --json` file: one document, or an array of them (`--all-adapters`).
pub fn read_reports(path: &Path) -> Result<Vec<Report>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let parse = |v: serde_json::Value| {
        serde_json::from_value::<Report>(v)
            .with_context(|| format!("{} is not a `bench --json` report", path.display()))
    };
    match value {
        serde_json::Value::Array(items) => items.into_iter().map(parse).collect(),
        single => Ok(vec![parse(single)?]),
    }
}

pub fn compare_files(paths: &[PathBuf]) -> Result<String> {
    let mut columns = Vec::new();
    for path in paths {
        let reports = read_reports(path)?;
        let many = reports.len() > 1;
        for (i, report) in reports.into_iter().enumerate() {
            let name = path.display().to_string();
            columns.push((if many { format!("{name}[{i}]") } else { name }, report));
        }
    }
    ensure!(!columns.is_empty(), "no reports to compare");
    Ok(compare_table(&columns))
}

/// A side-by-side table of `(label, report)` columns: one row per (model, shortcut, mode, batch)
/// found in any report, each column's median ms and images/s, and each later column's images/s
/// over the first's.
pub fn compare_table(columns: &[(String, Report)]) -> String {
    let letter = |i: usize| char::from(b'A' + (i % 26) as u8).to_string() + &"'".repeat(i / 26);
    let mut text = String::new();
    for (i, (label, report)) in columns.iter().enumerate() {
        text += &format!("{}: {label}: {}\n", letter(i), adapter_label(&report.adapter));
    }
    text += "ratios: images/s over A's (above 1: faster than A)\n\n";

    type Key = (String, String, Mode, usize);
    let key = |m: &Measurement| -> Key { (m.model.clone(), m.shortcut.clone(), m.mode, m.batch) };
    let mut keys: Vec<Key> = Vec::new();
    for (_, report) in columns {
        for m in &report.results {
            if !keys.contains(&key(m)) {
                keys.push(key(m));
            }
        }
    }
    let mut header = vec!["model".to_string(), "mode".into(), "batch".into()];
    for i in 0..columns.len() {
        header.push(format!("{} ms", letter(i)));
        header.push(format!("{} images/s", letter(i)));
        if i > 0 {
            header.push(format!("{}/A", letter(i)));
        }
    }
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            let found: Vec<Option<&Measurement>> =
                columns.iter().map(|(_, r)| r.results.iter().find(|m| key(m) == *k)).collect();
            let mut row = vec![model_label(&k.0, &k.1), k.2.name().into(), k.3.to_string()];
            for (i, m) in found.iter().enumerate() {
                row.push(m.map_or("-".into(), |m| fmt3(m.median_ms)));
                row.push(m.map_or("-".into(), |m| fmt3(m.images_per_s)));
                if i > 0 {
                    row.push(match (found[0], m) {
                        // A zero or missing figure in A has no ratio.
                        (Some(a), Some(m)) if a.images_per_s > 0.0 && m.images_per_s.is_finite() => {
                            format!("{:.2}x", m.images_per_s / a.images_per_s)
                        }
                        _ => "-".into(),
                    });
                }
            }
            row
        })
        .collect();
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    text += &markdown(&header, &rows, 2);
    text
}
