//! Drawing one chart with plotters, to SVG text and to PNG bytes.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::font::FAMILY;
use super::series::{average, smooth, thin};
use super::Chart;

/// Tableau's 10-colour palette: distinct at a glance and for most colour-blind readers.
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

/// How a chart is drawn.
pub(crate) struct Style {
    pub width: u32,
    pub height: u32,
    /// EMA weight for training curves; 0 draws the raw curve only.
    pub smoothing: f64,
}

/// The chart as an SVG document.
pub(crate) fn svg(chart: &Chart, style: &Style) -> Result<String, String> {
    let mut out = String::new();
    {
        let root =
            SVGBackend::with_string(&mut out, (style.width, style.height)).into_drawing_area();
        draw(&root, chart, style)?;
    }
    Ok(out)
}

/// The chart as a PNG file's bytes (8-bit RGB).
pub(crate) fn png(chart: &Chart, style: &Style) -> Result<Vec<u8>, String> {
    let (w, h) = (style.width, style.height);
    let mut pixels = vec![0u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (w, h)).into_drawing_area();
        draw(&root, chart, style)?;
    }
    encode_png(&pixels, w, h)
}

/// 8-bit RGB pixels (`w × h × 3`, row-major) as a PNG file's bytes.
pub(crate) fn encode_png(pixels: &[u8], w: u32, h: u32) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, w, h);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
    writer.write_image_data(pixels).map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())?;
    Ok(out)
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    chart: &Chart,
    style: &Style,
) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(err)?;
    let (x_range, y_range) = ranges(chart);
    let mut ctx = ChartBuilder::on(root)
        .caption(&chart.title, (FAMILY, 26))
        .margin(18)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(x_range.clone(), y_range.clone())
        .map_err(err)?;
    let x_span = x_range.end - x_range.start;
    let y_span = y_range.end - y_range.start;
    ctx.configure_mesh()
        .x_desc("step")
        .y_desc(&chart.y_label)
        .label_style((FAMILY, 15))
        .axis_desc_style((FAMILY, 17))
        .x_labels(8)
        .y_labels(8)
        .x_label_formatter(&|x| tick_label(*x, x_span))
        .y_label_formatter(&|y| tick_label(*y, y_span))
        .light_line_style(RGBColor(240, 240, 240))
        .bold_line_style(RGBColor(215, 215, 215))
        .draw()
        .map_err(err)?;

    // Thin to about two points per horizontal pixel: more cannot be seen and would bloat the SVG.
    let buckets = style.width as usize;
    for (i, series) in chart.series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let label = series.label.clone();
        let drawn = if series.smoothed && style.smoothing > 0.0 {
            // Raw values faint behind, their moving average on top.
            let raw = thin(&series.points, buckets);
            ctx.draw_series(LineSeries::new(raw, color.mix(0.25).stroke_width(1)))
                .map_err(err)?;
            // One point per pixel column; averaging smooths further only where points are denser than pixels.
            let smoothed = average(&smooth(&series.points, style.smoothing), buckets);
            ctx.draw_series(LineSeries::new(smoothed, color.stroke_width(2)))
                .map_err(err)?
        } else if series.points.len() <= 60 {
            // Few points (validation): mark each one.
            ctx.draw_series(
                LineSeries::new(series.points.clone(), color.filled().stroke_width(2))
                    .point_size(3),
            )
            .map_err(err)?
        } else {
            ctx.draw_series(LineSeries::new(
                thin(&series.points, buckets),
                color.stroke_width(2),
            ))
            .map_err(err)?
        };
        drawn.label(label).legend(move |(x, y)| {
            PathElement::new(vec![(x, y), (x + 22, y)], color.stroke_width(3))
        });
    }
    ctx.configure_series_labels()
        .position(chart.legend_position.clone())
        .label_font((FAMILY, 15))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(160, 160, 160))
        .margin(10)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

/// Axis ranges covering every point, padded by 4% vertically; `[0, 1]` for charts of fractions.
fn ranges(chart: &Chart) -> (std::ops::Range<f64>, std::ops::Range<f64>) {
    let points = chart.series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for &(x, y) in points {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if !x0.is_finite() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 <= x0 {
        // A single step: centre it.
        (x0, x1) = (x0 - 1.0, x1 + 1.0);
    }
    if chart.fractions && y0 >= 0.0 && y1 <= 1.0 {
        return (x0..x1, 0.0..1.0);
    }
    let pad = if y1 > y0 {
        (y1 - y0) * 0.04
    } else {
        y0.abs().max(1.0) * 0.1
    };
    (x0..x1, (y0 - pad)..(y1 + pad))
}

/// A tick label with as many decimals as the axis span needs, without trailing zeros.
fn tick_label(v: f64, span: f64) -> String {
    // Axes spanning tens of thousands (steps, mostly): 20k, 1.5M.
    if span >= 1e4 && v.abs() >= 1e3 {
        if span >= 1e6 && v.abs() >= 1e6 {
            return format!("{}M", tick_label(v / 1e6, span / 1e6));
        }
        return format!("{}k", tick_label(v / 1e3, span / 1e3));
    }
    if v.abs() >= 1e9 || (v != 0.0 && v.abs() < 1e-3 && span < 1e-2) {
        return format!("{v:.1e}");
    }
    let decimals = if span <= 0.0 {
        2
    } else {
        (2 - span.log10().floor() as i32).clamp(0, 6) as usize
    };
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        let s = s.trim_end_matches('0').trim_end_matches('.');
        if s == "-0" {
            "0".into()
        } else {
            s.into()
        }
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::tick_label;

    #[test]
    fn tick_labels_are_short() {
        assert_eq!(tick_label(1500.0, 3000.0), "1500");
        assert_eq!(tick_label(0.25, 1.0), "0.25");
        assert_eq!(tick_label(2.5, 8.0), "2.5");
        assert_eq!(tick_label(0.0, 1.0), "0");
        assert_eq!(tick_label(0.0005, 0.001), "5.0e-4");
        assert_eq!(tick_label(250000.0, 1e6), "250k");
        assert_eq!(tick_label(25000.0, 1e5), "25k");
        assert_eq!(tick_label(1500.0, 2000.0), "1500");
        assert_eq!(tick_label(1_500_000.0, 2e6), "1.5M");
    }
}
