//! Charts as data ([`Chart`]: title, axes, series) and their drawing to PNG and SVG with
//! plotters. The data is what tests check; the drawing only renders it.
//!
//! Text is drawn with DejaVu Sans, shipped in `assets/fonts` (Bitstream Vera licence) and
//! compiled in, so a machine without system fonts draws the same pictures.

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use crate::error::{Error, Result};

/// One named line of points.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// (x, y) points, in drawing order.
    pub points: Vec<(f64, f64)>,
    /// Draw a marker on each point (few points), or a plain line.
    pub markers: bool,
}

/// A horizontal reference line (a budget, a baseline).
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    /// Legend text.
    pub name: String,
    /// Its height.
    pub y: f64,
}

/// One chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    /// Title.
    pub title: String,
    /// x-axis label, with its unit.
    pub x_label: String,
    /// y-axis label, with its unit.
    pub y_label: String,
    /// The data.
    pub series: Vec<Series>,
    /// Optional horizontal line.
    pub reference: Option<Reference>,
    /// Where the legend goes (where the data is not).
    pub legend: Legend,
}

/// Legend corners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Legend {
    /// Upper right.
    UpperRight,
    /// Middle of the right side.
    MiddleRight,
    /// Lower right.
    LowerRight,
}

/// Line colours: distinguishable, and none of them the red of reference lines.
const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(23, 190, 207),
];

static FONT: Once = Once::new();

fn register_fonts() {
    FONT.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
        // The font is compiled in and known to parse (a test draws with it).
        let _ = register_font("sans-serif", FontStyle::Normal, bytes);
    });
}

fn plot_error(path: &Path, message: impl std::fmt::Display) -> Error {
    Error::Parse {
        path: path.to_path_buf(),
        location: "plot".into(),
        message: format!("could not draw: {message}"),
    }
}

/// The padded bounds of everything drawn.
fn bounds(chart: &Chart) -> ((f64, f64), (f64, f64)) {
    let points = chart.series.iter().flat_map(|s| s.points.iter().copied());
    let (mut x0, mut x1, mut y0, mut y1) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for (x, y) in points.filter(|(x, y)| x.is_finite() && y.is_finite()) {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if let Some(r) = &chart.reference {
        (y0, y1) = (y0.min(r.y), y1.max(r.y));
    }
    if !x0.is_finite() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    let pad = |lo: f64, hi: f64| {
        let span = if hi > lo { hi - lo } else { lo.abs().max(1.0) };
        (lo - 0.05 * span, hi + 0.05 * span)
    };
    (pad(x0, x1), pad(y0, y1))
}

fn draw<DB: DrawingBackend>(
    chart: &Chart,
    root: DrawingArea<DB, Shift>,
) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let ((x0, x1), (y0, y1)) = bounds(chart);
    let mut ctx = ChartBuilder::on(&root)
        .caption(&chart.title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    let x_digits = if x1 - x0 > 20.0 { 0 } else { 1 };
    let y_digits = match y1 - y0 {
        span if span > 20.0 => 0,
        span if span > 2.0 => 1,
        span if span > 0.2 => 2,
        _ => 3,
    };
    ctx.configure_mesh()
        .x_label_formatter(&|x| format!("{x:.x_digits$}"))
        .y_label_formatter(&|y| format!("{y:.y_digits$}"))
        .x_desc(chart.x_label.as_str())
        .y_desc(chart.y_label.as_str())
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    for (i, series) in chart.series.iter().enumerate() {
        let color = COLOURS[i % COLOURS.len()].to_rgba();
        let points = series.points.clone();
        ctx.draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(series.name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(2))
            });
        if series.markers {
            ctx.draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 4, color.filled())),
            )?;
        }
    }
    if let Some(reference) = &chart.reference {
        let style = RED.stroke_width(2);
        ctx.draw_series(DashedLineSeries::new(
            vec![(x0, reference.y), (x1, reference.y)],
            8,
            6,
            style,
        ))?
        .label(reference.name.as_str())
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
    }
    ctx.configure_series_labels()
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(match chart.legend {
            Legend::UpperRight => SeriesLabelPosition::UpperRight,
            Legend::MiddleRight => SeriesLabelPosition::MiddleRight,
            Legend::LowerRight => SeriesLabelPosition::LowerRight,
        })
        .draw()?;
    root.present()
}

/// Pixel size of the PNG (and the SVG's view box).
pub const SIZE: (u32, u32) = (900, 560);

/// Draws `chart` to `<dir>/<stem>.png` and `<dir>/<stem>.svg`, each written to a temporary
/// file and renamed into place.
pub fn save(chart: &Chart, dir: &Path, stem: &str) -> Result<Vec<PathBuf>> {
    register_fonts();
    let png = dir.join(format!("{stem}.png"));
    let svg = dir.join(format!("{stem}.svg"));
    // A temporary name that keeps the .png extension (the encoder picks the format by it).
    let png_tmp = dir.join(format!(".{stem}.tmp-{}.png", std::process::id()));
    let drawn = draw(
        chart,
        BitMapBackend::new(&png_tmp, SIZE).into_drawing_area(),
    )
    .map_err(|e| plot_error(&png, e));
    if let Err(e) = drawn {
        let _ = std::fs::remove_file(&png_tmp);
        return Err(e);
    }
    std::fs::rename(&png_tmp, &png).map_err(|source| Error::Io {
        path: png.clone(),
        source,
    })?;
    let mut text = String::new();
    draw(
        chart,
        SVGBackend::with_string(&mut text, SIZE).into_drawing_area(),
    )
    .map_err(|e| plot_error(&svg, e))?;
    crate::fs::write_atomic(&svg, text.as_bytes())?;
    Ok(vec![png, svg])
}
