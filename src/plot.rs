//! Training curves from the JSON-lines log that `train` writes, drawn into PNGs.
//!
//! `plot_error` draws several runs into one chart, as in Figure 6 of the ResNet paper: error (%)
//! against SGD iterations, one colour per run, train error thin and dashed, test error bold.
//! `plot_run` draws one run's loss and error side by side (the PNG written beside checkpoints).
//!
//! Rendering uses `plotters`' bitmap backend with text drawn by `ab_glyph` from a font embedded in
//! the binary (`assets/DejaVuSans.ttf`), so no system fonts or font libraries are needed. The
//! picture is rendered into memory, encoded with `image`, written to a temporary file in the
//! destination folder and renamed over the destination, so a reader never sees half a PNG.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::Once;

use anyhow::{Context, Result, bail, ensure};
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use serde::Deserialize;

/// One curve: `value[i]` measured after `step[i]` SGD iterations; steps strictly increase.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Curve {
    pub step: Vec<f64>,
    pub value: Vec<f64>,
}

impl Curve {
    /// Appends a point. A step that is not past the last one means training was resumed from an
    /// earlier checkpoint and the log appended to: the resumed run replaces the points it repeats.
    fn push(&mut self, step: f64, value: f64) {
        let keep = self.step.partition_point(|&s| s < step);
        self.step.truncate(keep);
        self.value.truncate(keep);
        self.step.push(step);
        self.value.push(value);
    }

    pub fn len(&self) -> usize {
        self.step.len()
    }

    pub fn is_empty(&self) -> bool {
        self.step.is_empty()
    }
}

/// The curves of one training run. Errors are fractions in [0, 1], as in the log.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Run {
    /// Shown in legends; the log's `model` field (the caller may relabel).
    pub label: String,
    pub train_error: Curve,
    pub test_error: Curve,
    pub train_loss: Curve,
    pub test_loss: Curve,
}

/// The fields of a log line that plots use; other keys are ignored. `loss` and `error` may be
/// missing or `null` (serde_json writes a NaN loss as `null`): that point is then skipped.
#[derive(Deserialize)]
struct LogLine {
    event: Option<String>,
    model: Option<String>,
    step: Option<f64>,
    loss: Option<f64>,
    error: Option<f64>,
}

/// Reads a JSON-lines training log. Lines whose `event` is `train` or `test` give points; other
/// events and blank lines are ignored. The label is the first `model` field (else the file stem).
pub fn read_log(path: &Path) -> Result<Run> {
    let file = File::open(path).with_context(|| format!("cannot open log {}", path.display()))?;
    let mut run = Run::default();
    let mut label = None;
    let mut points = 0;
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let where_ = || format!("{}:{}", path.display(), i + 1);
        let line = line.with_context(|| format!("cannot read {}", where_()))?;
        if line.trim().is_empty() {
            continue;
        }
        let entry: LogLine =
            serde_json::from_str(&line).with_context(|| format!("{}: not a JSON object log line", where_()))?;
        let (error, loss) = match entry.event.as_deref() {
            Some("train") => (&mut run.train_error, &mut run.train_loss),
            Some("test") => (&mut run.test_error, &mut run.test_loss),
            _ => continue,
        };
        let Some(step) = entry.step else {
            bail!("{}: a {:?} line without a \"step\"", where_(), entry.event.unwrap());
        };
        if let Some(e) = entry.error.filter(|e| e.is_finite()) {
            error.push(step, e);
        }
        if let Some(l) = entry.loss.filter(|l| l.is_finite()) {
            loss.push(step, l);
        }
        points += 1;
        if label.is_none() {
            label = entry.model;
        }
    }
    ensure!(points > 0, "{} has no \"train\" or \"test\" lines to plot", path.display());
    run.label = label.unwrap_or_else(|| {
        let stem = path.file_stem().unwrap_or(path.as_os_str());
        stem.to_string_lossy().into_owned()
    });
    Ok(run)
}

/// Size of the PNG written by [`plot_error`].
pub const ERROR_SIZE: (u32, u32) = (1200, 750);
/// Size of the PNG written by [`plot_run`].
pub const RUN_SIZE: (u32, u32) = (1600, 600);

/// One chart of error (%) against iterations for all `runs`: one colour per run, train error thin
/// and dashed, test error bold. The y axis ends near twice the worst final error (as the paper's
/// Figure 6 ends at 20%), so early, high errors run off the top.
pub fn plot_error(runs: &[Run], path: &Path) -> Result<()> {
    plot_panels(&[("Error vs iterations", runs)], path)
}

/// [`plot_error`]'s chart for each (title, runs) side by side, on one y axis range, as the paper's
/// Figure 6 puts the plain networks left and the ResNets right; each panel is [`ERROR_SIZE`].
pub fn plot_panels(panels: &[(&str, &[Run])], path: &Path) -> Result<()> {
    ensure!(panels.iter().any(|(_, runs)| !runs.is_empty()), "no runs to plot into {}", path.display());
    let worst_final = panels
        .iter()
        .flat_map(|(_, runs)| runs.iter())
        .flat_map(|r| [&r.train_error, &r.test_error])
        .filter_map(|c| c.value.last())
        .fold(0.0f64, |a, &b| a.max(b));
    let y_max = nice_ceil(2.0 * 100.0 * worst_final).min(100.0);
    let size = (ERROR_SIZE.0 * panels.len() as u32, ERROR_SIZE.1);
    write_png(path, size, |root| {
        for (area, (title, runs)) in root.split_evenly((1, panels.len())).iter().zip(panels) {
            let curves: Vec<_> = runs.iter().map(|r| (r.label.as_str(), &r.train_error, &r.test_error)).collect();
            Panel { title, y_desc: "error (%)", scale: 100.0, y_max }.draw(area, &curves)?;
        }
        Ok(())
    })
}

/// One run's loss (left) and error (right) against iterations; train thin and dashed, test bold.
pub fn plot_run(run: &Run, path: &Path) -> Result<()> {
    let max_loss = [&run.train_loss, &run.test_loss].iter().flat_map(|c| c.value.iter()).fold(0.0f64, |a, &b| a.max(b));
    let final_error =
        [&run.train_error, &run.test_error].iter().filter_map(|c| c.value.last()).fold(0.0f64, |a, &b| a.max(b));
    let title = |what: &str| match run.label.as_str() {
        "" => what.to_string(),
        label => format!("{label}: {what}"),
    };
    let (loss_title, error_title) = (title("loss"), title("error"));
    write_png(path, RUN_SIZE, |root| {
        let (left, right) = root.split_horizontally(RUN_SIZE.0 / 2);
        let loss =
            Panel { title: &loss_title, y_desc: "cross-entropy loss", scale: 1.0, y_max: nice_ceil(1.05 * max_loss) };
        loss.draw(&left, &[("", &run.train_loss, &run.test_loss)])?;
        let error = Panel {
            title: &error_title,
            y_desc: "error (%)",
            scale: 100.0,
            y_max: nice_ceil(2.0 * 100.0 * final_error).min(100.0),
        };
        error.draw(&right, &[("", &run.train_error, &run.test_error)])
    })
}

/// Distinguishable line colours (matplotlib's "tab10").
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];
const TRAIN_WIDTH: u32 = 2;
const TEST_WIDTH: u32 = 4;
/// Length of the line samples in the legend, in pixels.
const LEGEND_LINE: i32 = 36;
/// Dash length and gap of train curves, in pixels.
const DASH: (u32, u32) = (8, 5);

/// One chart: a set of (label, train, test) curves against iterations.
struct Panel<'a> {
    title: &'a str,
    y_desc: &'a str,
    /// Multiplies every value (100 turns error fractions into %).
    scale: f64,
    /// Top of the y axis; the bottom is 0. Curves above it are cut off at the frame.
    y_max: f64,
}

type Area<'b> = DrawingArea<BitMapBackend<'b>, Shift>;

impl Panel<'_> {
    /// Draws the chart into `area`. Labels that are empty get no legend entry of their own.
    fn draw(&self, area: &Area, curves: &[(&str, &Curve, &Curve)]) -> Result<()> {
        let x_max = curves.iter().flat_map(|(_, a, b)| a.step.iter().chain(&b.step)).fold(1.0f64, |a, &b| a.max(b));
        let y_max = if self.y_max > 0.0 { self.y_max } else { 1.0 };
        let mut chart = ChartBuilder::on(area)
            .caption(self.title, ("sans-serif", 28))
            .margin(20)
            .x_label_area_size(60)
            .y_label_area_size(80)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
        let x_label = |x: &f64| {
            if x_max >= 10_000.0 && *x != 0.0 { format!("{}k", tick(x / 1000.0)) } else { tick(*x) }
        };
        chart
            .configure_mesh()
            .x_desc("iterations")
            .y_desc(self.y_desc)
            .x_label_formatter(&x_label)
            .y_label_formatter(&|y| tick(*y))
            .x_labels(8)
            .y_labels(10)
            .label_style(("sans-serif", 20))
            .axis_desc_style(("sans-serif", 22))
            .light_line_style(WHITE.mix(0.0))
            .bold_line_style(BLACK.mix(0.12))
            .draw()?;

        for (i, (label, train, test)) in curves.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            for line in clip(train, self.scale, y_max) {
                let style = color.stroke_width(TRAIN_WIDTH);
                chart.draw_series(DashedLineSeries::new(line, DASH.0, DASH.1, style))?;
            }
            for line in clip(test, self.scale, y_max) {
                chart.draw_series(LineSeries::new(line, color.stroke_width(TEST_WIDTH)))?;
            }
            // A lone test point (one epoch into training) would draw nothing as a line.
            if let ([x], [y]) = (&test.step[..], &test.value[..]) {
                let style = color.filled();
                let dot = Circle::new((*x, (y * self.scale).min(y_max)), TEST_WIDTH + 1, style);
                chart.draw_series(std::iter::once(dot))?;
            }
            if !label.is_empty() {
                let style = color.stroke_width(TEST_WIDTH);
                chart
                    .draw_series(LineSeries::new(std::iter::empty(), style))?
                    .label(*label)
                    .legend(move |(x, y)| PathElement::new([(x, y), (x + LEGEND_LINE, y)], style));
            }
        }
        // Legend entries that explain the two line styles, in a neutral colour.
        let key = RGBColor(60, 60, 60);
        let train_style = key.stroke_width(TRAIN_WIDTH);
        chart
            .draw_series(LineSeries::new(std::iter::empty(), train_style))?
            .label("train (dashed)")
            .legend(move |(x, y)| DashedPathElement::new([(x, y), (x + LEGEND_LINE, y)], DASH.0, DASH.1, train_style));
        let test_style = key.stroke_width(TEST_WIDTH);
        chart
            .draw_series(LineSeries::new(std::iter::empty(), test_style))?
            .label("test (bold)")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + LEGEND_LINE, y)], test_style));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font(("sans-serif", 20))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.4))
            .margin(12)
            .legend_area_size(LEGEND_LINE + 12)
            .draw()?;
        Ok(())
    }
}

/// Splits a curve (values multiplied by `scale`) into the polylines that lie at or below `y_max`,
/// cutting segments where they cross it: plotters does not clip to the chart's frame.
fn clip(curve: &Curve, scale: f64, y_max: f64) -> Vec<Vec<(f64, f64)>> {
    let points: Vec<(f64, f64)> = (curve.step.iter().copied()).zip(curve.value.iter().map(|v| v * scale)).collect();
    let mut lines = Vec::new();
    let mut line = Vec::new();
    for (i, &(x, y)) in points.iter().enumerate() {
        let inside = y <= y_max;
        if i > 0 {
            let (px, py) = points[i - 1];
            if (py <= y_max) != inside {
                let cross = (px + (x - px) * (y_max - py) / (y - py), y_max);
                line.push(cross);
                if !inside {
                    lines.push(std::mem::take(&mut line));
                }
            }
        }
        if inside {
            line.push((x, y));
        }
    }
    lines.push(line);
    lines.retain(|l| l.len() >= 2);
    lines
}

/// The smallest of 1, 1.5, 2, 2.5, 3, 4, 5, 6, 8 times a power of ten that is >= `v` (> 0).
fn nice_ceil(v: f64) -> f64 {
    if !(v > 0.0 && v.is_finite()) {
        return 1.0;
    }
    let magnitude = 10f64.powf(v.log10().floor());
    let factor = [1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0]
        .into_iter()
        .find(|f| f * magnitude >= v * (1.0 - 1e-9))
        .unwrap_or(10.0);
    factor * magnitude
}

/// A tick label without float noise: "20", "2.5", "0.25".
fn tick(v: f64) -> String {
    let s = format!("{:.3}", v);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.into() }
}

/// Registers the embedded font once under the family name plotters asks for.
fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let bytes = include_bytes!("../assets/DejaVuSans.ttf");
        let parsed = plotters::style::register_font("sans-serif", FontStyle::Normal, bytes);
        assert!(parsed.is_ok(), "The embedded DejaVu Sans font must parse.");
    });
}

/// Renders `draw` on a white `size` canvas and writes it as a PNG to `path`, atomically: into a
/// temporary file beside `path`, then renamed over it.
fn write_png(path: &Path, size: (u32, u32), draw: impl FnOnce(&Area) -> Result<()>) -> Result<()> {
    register_font();
    let mut rgb = vec![0u8; size.0 as usize * size.1 as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area();
        root.fill(&WHITE)?;
        draw(&root).with_context(|| format!("cannot draw {}", path.display()))?;
        root.present()?;
    }
    let image = image::RgbImage::from_raw(size.0, size.1, rgb).expect("buffer is w*h*3 bytes");

    let name = path.file_name().with_context(|| format!("{} is not a file name to write a PNG to", path.display()))?;
    let tmp = path.with_file_name(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
    let written = (|| -> Result<()> {
        let mut out = BufWriter::new(File::create(&tmp)?);
        image.write_to(&mut out, image::ImageFormat::Png)?;
        out.flush()?;
        out.get_ref().sync_all()?;
        drop(out);
        std::fs::rename(&tmp, path)?;
        Ok(())
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.with_context(|| format!("cannot write {}", path.display()))
}
