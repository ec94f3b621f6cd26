//! A confusion matrix as a heat map (PNG and SVG), for classifiers evaluated by `coca probe`.
//!
//! Rows are the true classes, columns the predicted ones, both in class order from the top left. A cell's
//! colour is its share of the row (the recall of the diagonal cells), so rare and frequent classes read the
//! same; the count is written in the cell while cells are large enough to hold it.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor;

use super::font::{self, FAMILY};
use super::render::encode_png;
use crate::error::{Result, RunlogError};

/// Most classes drawn with their names on the axes; beyond this, the axes show class indices.
const MAX_NAMED: usize = 60;
/// Most classes whose counts are written in the cells.
const MAX_ANNOTATED: usize = 30;

/// Draw `matrix` (`matrix[true][predicted]` counts, square, one row per class name) to `<base>.png` and
/// `<base>.svg`, atomically, and return the two paths. `base` may end in `.png` or `.svg`; that extension is
/// replaced. `title` heads the chart.
pub fn plot_confusion(
    matrix: &[Vec<u64>],
    class_names: &[String],
    base: impl AsRef<Path>,
    title: &str,
) -> Result<Vec<PathBuf>> {
    let n = class_names.len();
    if n == 0 {
        return Err(RunlogError::InvalidOption(
            "a confusion matrix needs at least one class".into(),
        ));
    }
    if matrix.len() != n || matrix.iter().any(|row| row.len() != n) {
        return Err(RunlogError::InvalidOption(format!(
            "the confusion matrix must be {n}x{n} for {n} class names"
        )));
    }
    let base = base.as_ref();
    let base = match base.extension().and_then(|e| e.to_str()) {
        Some(ext) if ext.eq_ignore_ascii_case("png") || ext.eq_ignore_ascii_case("svg") => {
            base.with_extension("")
        }
        _ => base.to_path_buf(),
    };
    if let Some(dir) = base.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| RunlogError::io(dir, "cannot create", e))?;
    }
    font::register();
    // Room for the names on the left and below, then cells of at least ~14 px.
    let label_px = if n <= MAX_NAMED {
        longest_label(class_names)
    } else {
        40
    };
    let cells = (n as u32 * 28).clamp(240, 1600);
    let (w, h) = (cells + label_px + 140, cells + 150);
    let heat = Heat {
        matrix,
        names: class_names,
        title,
        label_px,
    };

    let svg_path = with_suffix(&base, "svg");
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
        heat.draw(&root)
            .map_err(|reason| plot_error(&svg_path, reason))?;
    }
    coca_fs::write_bytes_atomic(&svg_path, svg.as_bytes())?;

    let png_path = with_suffix(&base, "png");
    let mut pixels = vec![0u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (w, h)).into_drawing_area();
        heat.draw(&root)
            .map_err(|reason| plot_error(&png_path, reason))?;
    }
    let png = encode_png(&pixels, w, h).map_err(|reason| plot_error(&png_path, reason))?;
    coca_fs::write_bytes_atomic(&png_path, &png)?;
    Ok(vec![png_path, svg_path])
}

fn with_suffix(base: &Path, ext: &str) -> PathBuf {
    let mut name = base.as_os_str().to_owned();
    name.push(".");
    name.push(ext);
    PathBuf::from(name)
}

fn plot_error(path: &Path, reason: String) -> RunlogError {
    RunlogError::Plot {
        path: path.to_path_buf(),
        reason,
    }
}

/// Pixels for the longest class name at the label font size (about 8 px per character), capped.
fn longest_label(names: &[String]) -> u32 {
    let chars = names
        .iter()
        .map(|n| label(n).chars().count())
        .max()
        .unwrap_or(1);
    (chars as u32 * 8 + 40).clamp(40, 240)
}

/// A class name short enough for an axis.
fn label(name: &str) -> String {
    const MAX: usize = 24;
    if name.chars().count() <= MAX {
        name.to_string()
    } else {
        let head: String = name.chars().take(MAX - 1).collect();
        format!("{head}…")
    }
}

/// White → blue by the row share `t ∈ [0, 1]`.
fn shade(t: f64) -> RGBColor {
    let t = t.clamp(0.0, 1.0);
    let mix = |from: f64, to: f64| (from + (to - from) * t).round() as u8;
    RGBColor(mix(255.0, 8.0), mix(255.0, 48.0), mix(255.0, 107.0))
}

struct Heat<'a> {
    matrix: &'a [Vec<u64>],
    names: &'a [String],
    title: &'a str,
    label_px: u32,
}

impl Heat<'_> {
    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> std::result::Result<(), String> {
        let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        let n = self.names.len();
        root.fill(&WHITE).map_err(err)?;
        let named = n <= MAX_NAMED;
        let name_of = |i: usize| {
            if named {
                format!("{}  {i}", label(&self.names[i]))
            } else {
                i.to_string()
            }
        };
        let mut ctx = ChartBuilder::on(root)
            .caption(self.title, (FAMILY, 24))
            .margin(16)
            .x_label_area_size(56)
            .y_label_area_size(self.label_px + 30)
            // `a..b` segmented has a segment for every integer of `a..=b`: `0..n - 1` gives the n cells.
            .build_cartesian_2d((0..n - 1).into_segmented(), (0..n - 1).into_segmented())
            .map_err(err)?;
        // Segmented axes put a tick label at each cell centre: rows from the top (true class), columns from
        // the left (predicted).
        let centre = |v: &SegmentValue<usize>| match v {
            SegmentValue::CenterOf(i) if *i < n => Some(*i),
            _ => None,
        };
        // Columns carry the class index (names do not fit side by side), rows the name and the index.
        let x_fmt = |v: &SegmentValue<usize>| centre(v).map(|i| i.to_string()).unwrap_or_default();
        let y_fmt =
            |v: &SegmentValue<usize>| centre(v).map(|i| name_of(n - 1 - i)).unwrap_or_default();
        let ticks = if named { n } else { n.min(10) };
        ctx.configure_mesh()
            .disable_mesh()
            .x_desc("predicted class (index)")
            .y_desc("true class")
            .x_labels(ticks)
            .y_labels(ticks)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .label_style((FAMILY, 13))
            .axis_desc_style((FAMILY, 16))
            .draw()
            .map_err(err)?;
        let annotate = n <= MAX_ANNOTATED;
        let text_style = |colour: &'static RGBColor| {
            TextStyle::from((FAMILY, 13).into_font())
                .color(colour)
                .pos(text_anchor::Pos::new(
                    text_anchor::HPos::Center,
                    text_anchor::VPos::Center,
                ))
        };
        for (t, row) in self.matrix.iter().enumerate() {
            let total: u64 = row.iter().sum();
            let y = n - 1 - t;
            for (x, &count) in row.iter().enumerate() {
                let share = if total > 0 {
                    count as f64 / total as f64
                } else {
                    0.0
                };
                let corners = [
                    (SegmentValue::Exact(x), SegmentValue::Exact(y)),
                    (SegmentValue::Exact(x + 1), SegmentValue::Exact(y + 1)),
                ];
                ctx.draw_series(std::iter::once(Rectangle::new(
                    corners,
                    shade(share).filled(),
                )))
                .map_err(err)?;
                if annotate && count > 0 {
                    let colour = if share > 0.5 { &WHITE } else { &BLACK };
                    ctx.draw_series(std::iter::once(Text::new(
                        count.to_string(),
                        (SegmentValue::CenterOf(x), SegmentValue::CenterOf(y)),
                        text_style(colour),
                    )))
                    .map_err(err)?;
                }
            }
        }
        // Thin grid lines between cells, drawn last so every cell has the same border.
        let grid = RGBColor(200, 200, 200);
        for k in 0..=n {
            let (at, lo, hi) = (
                SegmentValue::Exact(k),
                SegmentValue::Exact(0),
                SegmentValue::Exact(n),
            );
            ctx.draw_series(std::iter::once(PathElement::new(
                vec![(at.clone(), lo.clone()), (at.clone(), hi.clone())],
                grid,
            )))
            .map_err(err)?;
            ctx.draw_series(std::iter::once(PathElement::new(
                vec![(lo, at.clone()), (hi, at)],
                grid,
            )))
            .map_err(err)?;
        }
        root.present().map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_shortened_and_shades_span_white_to_blue() {
        assert_eq!(label("cat"), "cat");
        assert_eq!(label(&"x".repeat(40)).chars().count(), 24);
        assert_eq!(shade(0.0), RGBColor(255, 255, 255));
        assert_eq!(shade(1.0), RGBColor(8, 48, 107));
    }
}
