//! `coca plot`: loss and validation curves of a run, as PNG and SVG.
//!
//! Charts, each written as `<name>.png` and `<name>.svg`:
//! - `losses`: every metric whose name starts with `loss` (train: raw faint, smoothed bold; val: points);
//! - `validation`: the other validation metrics (accuracies and recalls, on a 0–1 axis when they fit);
//! - `train_<name>`: one chart per other training metric (`lr`, `logit_scale`, `samples_per_s`, ...).

mod confusion;
mod font;
mod render;
mod series;

use std::path::{Path, PathBuf};

use plotters::chart::SeriesLabelPosition;

use crate::error::{Result, RunlogError};
use crate::metrics::{read_metrics, Split, METRICS_FILE};
pub use confusion::plot_confusion;
use series::Series;

/// What [`plot_run`] draws and where.
#[derive(Debug, Clone, PartialEq)]
pub struct PlotOptions {
    /// Where the files go. `None`: `RUN_DIR/plots/<chart>.{png,svg}`. A directory (existing, or a path
    /// ending in `/`): `DIR/<chart>.{png,svg}`. Anything else is a prefix: `PREFIX_<chart>.{png,svg}`.
    pub output: Option<PathBuf>,
    /// Only these metrics (`loss`, or `train/loss` for one split); `None`: all of them.
    pub metrics: Option<Vec<String>>,
    /// Weight of the exponential moving average drawn over training curves (TensorBoard's "smoothing"),
    /// in `[0, 1)`; 0 draws raw values only.
    pub smoothing: f64,
    /// Image width in pixels.
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
}

impl Default for PlotOptions {
    fn default() -> Self {
        Self {
            output: None,
            metrics: None,
            smoothing: 0.6,
            width: 1000,
            height: 600,
        }
    }
}

/// One chart to draw: its curves and how to present them.
pub(crate) struct Chart {
    /// File name without extension.
    pub stem: String,
    pub title: String,
    pub y_label: String,
    pub series: Vec<Curve>,
    /// Values are fractions (accuracies): use a 0–1 axis when they fit.
    pub fractions: bool,
    pub legend_position: SeriesLabelPosition,
}

/// One curve of a chart.
pub(crate) struct Curve {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    /// A training curve: drawn raw and smoothed.
    pub smoothed: bool,
}

/// Draw the curves of `run_dir/metrics.jsonl` and return the files written (PNG and SVG per chart). Each
/// file is written atomically.
pub fn plot_run(run_dir: impl AsRef<Path>, options: &PlotOptions) -> Result<Vec<PathBuf>> {
    let run_dir = run_dir.as_ref();
    if !(0.0..1.0).contains(&options.smoothing) {
        return Err(RunlogError::InvalidOption(format!(
            "smoothing must be in [0, 1), got {}",
            options.smoothing
        )));
    }
    if !(100..=10_000).contains(&options.width) || !(100..=10_000).contains(&options.height) {
        return Err(RunlogError::InvalidOption(format!(
            "image size must be 100 to 10000 pixels a side, got {}x{}",
            options.width, options.height
        )));
    }
    if !run_dir.is_dir() {
        return Err(RunlogError::RunDirNotFound {
            path: run_dir.to_path_buf(),
        });
    }
    let metrics_path = run_dir.join(METRICS_FILE);
    let records = read_metrics(&metrics_path)?;
    let mut all = series::collect(&records);
    if all.is_empty() {
        return Err(RunlogError::NothingToPlot { path: metrics_path });
    }
    if let Some(wanted) = &options.metrics {
        all = select(all, wanted, &metrics_path)?;
    }
    let charts = charts(all);

    let (dir, prefix) = output_base(run_dir, options.output.as_deref());
    std::fs::create_dir_all(&dir).map_err(|e| RunlogError::io(&dir, "cannot create", e))?;
    font::register();
    let style = render::Style {
        width: options.width,
        height: options.height,
        smoothing: options.smoothing,
    };
    let mut written = Vec::new();
    for chart in &charts {
        let svg_path = dir.join(format!("{prefix}{}.svg", chart.stem));
        let svg = render::svg(chart, &style).map_err(|reason| plot_error(&svg_path, reason))?;
        coca_fs::write_bytes_atomic(&svg_path, svg.as_bytes())?;
        let png_path = dir.join(format!("{prefix}{}.png", chart.stem));
        let png = render::png(chart, &style).map_err(|reason| plot_error(&png_path, reason))?;
        coca_fs::write_bytes_atomic(&png_path, &png)?;
        written.extend([png_path, svg_path]);
    }
    Ok(written)
}

fn plot_error(path: &Path, reason: String) -> RunlogError {
    RunlogError::Plot {
        path: path.to_path_buf(),
        reason,
    }
}

/// Keep the series named in `wanted` (`loss` matches both splits, `train/loss` one); every name must match.
fn select(all: Vec<Series>, wanted: &[String], path: &Path) -> Result<Vec<Series>> {
    let matches = |s: &Series, w: &str| s.name == w || s.qualified() == w;
    let missing: Vec<String> = wanted
        .iter()
        .filter(|w| !all.iter().any(|s| matches(s, w)))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(RunlogError::UnknownMetrics {
            path: path.to_path_buf(),
            missing,
            available: all.iter().map(Series::qualified).collect(),
        });
    }
    Ok(all
        .into_iter()
        .filter(|s| wanted.iter().any(|w| matches(s, w)))
        .collect())
}

/// Sort the series into charts (see the module docs); charts without a curve are left out.
fn charts(all: Vec<Series>) -> Vec<Chart> {
    let mut losses = Chart {
        stem: "losses".into(),
        title: "Losses".into(),
        y_label: "loss".into(),
        series: Vec::new(),
        fractions: false,
        legend_position: SeriesLabelPosition::UpperRight,
    };
    let mut validation = Chart {
        stem: "validation".into(),
        title: "Validation".into(),
        y_label: "score".into(),
        series: Vec::new(),
        fractions: true,
        legend_position: SeriesLabelPosition::LowerRight,
    };
    let mut others = Vec::new();
    for s in all {
        let curve = Curve {
            label: s.qualified(),
            smoothed: s.split == Split::Train,
            points: s.points,
        };
        if s.name.starts_with("loss") {
            losses.series.push(curve);
        } else if s.split == Split::Val {
            validation.series.push(curve);
        } else {
            others.push(Chart {
                stem: format!("train_{}", file_safe(&s.name)),
                title: format!("{} (train)", s.name),
                y_label: s.name.clone(),
                series: vec![curve],
                fractions: false,
                legend_position: SeriesLabelPosition::UpperRight,
            });
        }
    }
    [losses, validation]
        .into_iter()
        .chain(others)
        .filter(|c| !c.series.is_empty())
        .collect()
}

/// A metric name as part of a file name.
fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The output directory and file-name prefix for `output` (see [`PlotOptions::output`]).
fn output_base(run_dir: &Path, output: Option<&Path>) -> (PathBuf, String) {
    let Some(out) = output else {
        return (run_dir.join("plots"), String::new());
    };
    let ends_with_sep = out
        .as_os_str()
        .to_string_lossy()
        .ends_with(std::path::is_separator);
    match out.file_name() {
        Some(name) if !ends_with_sep && !out.is_dir() => {
            let dir = out
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            (dir.to_path_buf(), format!("{}_", name.to_string_lossy()))
        }
        _ => (out.to_path_buf(), String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_base_handles_dirs_and_prefixes() {
        let run = Path::new("runs/a");
        assert_eq!(
            output_base(run, None),
            (PathBuf::from("runs/a/plots"), String::new())
        );
        assert_eq!(
            output_base(run, Some(Path::new("out/"))),
            (PathBuf::from("out/"), String::new())
        );
        assert_eq!(
            output_base(run, Some(Path::new("out/run1"))),
            (PathBuf::from("out"), "run1_".into())
        );
        assert_eq!(
            output_base(run, Some(Path::new("run1"))),
            (PathBuf::from("."), "run1_".into())
        );
    }
}
