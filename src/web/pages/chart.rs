//! Line charts as inline SVG: `plotters` draws the plot area (lines, grid), and the axis labels
//! are SVG `<text>` around it from the template engine, so no font files are needed and every
//! label is escaped like any other text.

use chrono::NaiveDate;
use maud::{html, Markup, PreEscaped};
use plotters::prelude::*;

/// The plot area's size in pixels; the labels add [`LEFT`] and [`BOTTOM`].
const WIDTH: u32 = 720;
const HEIGHT: u32 = 220;
const LEFT: u32 = 44;
const BOTTOM: u32 = 24;
/// Series with at most this many points also get a dot per point.
const MARKED: usize = 40;

/// Distinguishable on white and for the common colour blindnesses (Okabe–Ito).
pub const PALETTE: [(u8, u8, u8); 7] = [
    (0, 114, 178),
    (230, 159, 0),
    (0, 158, 115),
    (204, 121, 167),
    (86, 180, 233),
    (213, 94, 0),
    (0, 0, 0),
];

/// The colour of the `i`th series, as CSS.
#[must_use]
pub fn css_color(i: usize) -> String {
    let (r, g, b) = PALETTE[i % PALETTE.len()];
    format!("rgb({r},{g},{b})")
}

/// One line: its points (day, value), oldest first.
pub struct Series<'a> {
    pub points: &'a [(NaiveDate, f64)],
}

/// The y axis: its range and ticks, and whether larger values are drawn lower (ranks).
pub struct YAxis {
    pub min: f64,
    pub max: f64,
    pub ticks: Vec<f64>,
    pub inverted: bool,
}

impl YAxis {
    /// 0 to 100, the stitched index.
    #[must_use]
    pub fn index() -> Self {
        Self {
            min: 0.0,
            max: 100.0,
            ticks: vec![0.0, 25.0, 50.0, 75.0, 100.0],
            inverted: false,
        }
    }

    /// 0 to `max` (rounded up to a round number), for counts.
    #[must_use]
    pub fn up_to(max: f64) -> Self {
        let step = 10f64.powf(max.max(1.0).log10().floor());
        let top = (max.max(1.0) / step).ceil() * step;
        Self {
            min: 0.0,
            max: top,
            ticks: vec![0.0, top / 2.0, top],
            inverted: false,
        }
    }

    /// Chart ranks from 1 (top) to the worst one seen.
    #[must_use]
    pub fn rank(worst: i32) -> Self {
        let worst = f64::from(worst.max(2));
        let mid = (worst / 2.0).round().max(1.0);
        Self {
            min: 1.0,
            max: worst,
            ticks: vec![1.0, mid, worst],
            inverted: true,
        }
    }
}

/// A chart of `series` over the days they cover, with `label` as its accessible name.
#[must_use]
pub fn line_chart(label: &str, series: &[Series<'_>], y: &YAxis) -> Markup {
    let days: Vec<NaiveDate> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|(d, _)| *d))
        .collect();
    let (Some(first), Some(last)) = (days.iter().min().copied(), days.iter().max().copied()) else {
        return html! { p.empty { "No data yet." } };
    };
    let span = f64::from(
        i32::try_from((last - first).num_days())
            .unwrap_or(i32::MAX)
            .max(1),
    );
    let x_of = |d: NaiveDate| f64::from(i32::try_from((d - first).num_days()).unwrap_or(0));
    let plot = draw(series, span, y, &x_of);
    let (w, h) = (WIDTH + LEFT, HEIGHT + BOTTOM);
    let y_px = |v: f64| {
        let t = (v - y.min) / (y.max - y.min).max(f64::EPSILON);
        let t = if y.inverted { t } else { 1.0 - t };
        (t * f64::from(HEIGHT - 8) + 4.0).round()
    };
    let mid = first + chrono::Duration::days((last - first).num_days() / 2);
    html! {
        svg.chart role="img" aria-label=(label) width=(w) height=(h)
            viewBox={"0 0 " (w) " " (h)} xmlns="http://www.w3.org/2000/svg" {
            title { (label) }
            @for t in &y.ticks {
                text x=(LEFT - 6) y=(y_px(*t) + 4.0) text-anchor="end" font-size="11" fill="#555" {
                    (format_tick(*t))
                }
            }
            @if last == first {
                text x=(LEFT + WIDTH / 2) y=(h - 6) text-anchor="middle" font-size="11" fill="#555" { (first) }
            } @else {
                text x=(LEFT) y=(h - 6) font-size="11" fill="#555" { (first) }
                text x=(LEFT + WIDTH / 2) y=(h - 6) text-anchor="middle" font-size="11" fill="#555" { (mid) }
                text x=(w) y=(h - 6) text-anchor="end" font-size="11" fill="#555" { (last) }
            }
            svg x=(LEFT) y="0" width=(WIDTH) height=(HEIGHT) { (PreEscaped(plot)) }
        }
    }
}

/// The plot area: horizontal grid lines at the ticks and one polyline per series.
fn draw(series: &[Series<'_>], span: f64, y: &YAxis, x_of: &dyn Fn(NaiveDate) -> f64) -> String {
    // A single day sits in the middle rather than on the edge.
    let (x0, x1) = if span > 0.0 { (0.0, span) } else { (-1.0, 1.0) };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        // Drawing into a String cannot fail; a failure would only leave the chart empty.
        let _ =
            (|| -> Result<(), Box<dyn std::error::Error + '_>> {
                root.fill(&WHITE)?;
                let (lo, hi) = if y.inverted {
                    (y.max, y.min)
                } else {
                    (y.min, y.max)
                };
                let mut chart = ChartBuilder::on(&root)
                    .margin(4)
                    .build_cartesian_2d(x0..x1, lo..hi)?;
                chart.draw_series(y.ticks.iter().map(|t| {
                    PathElement::new(vec![(x0, *t), (x1, *t)], RGBColor(220, 220, 220))
                }))?;
                for (i, s) in series.iter().enumerate() {
                    let (r, g, b) = PALETTE[i % PALETTE.len()];
                    let style = RGBColor(r, g, b).stroke_width(2);
                    chart.draw_series(LineSeries::new(
                        s.points.iter().map(|(d, v)| (x_of(*d), *v)),
                        style,
                    ))?;
                    // A short series gets a dot per point, so a single day still shows.
                    if s.points.len() <= MARKED {
                        chart.draw_series(s.points.iter().map(|(d, v)| {
                            Circle::new((x_of(*d), *v), 3, RGBColor(r, g, b).filled())
                        }))?;
                    }
                }
                root.present()?;
                Ok(())
            })();
    }
    // plotters writes a whole document; keep its children only, so it nests in our <svg>.
    let start = svg.find('>').map_or(0, |i| i + 1);
    let end = svg.rfind("</svg>").unwrap_or(svg.len());
    svg[start..end].to_owned()
}

fn format_tick(v: f64) -> String {
    format!("{v:.0}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, d).unwrap()
    }

    #[test]
    fn a_chart_draws_one_polyline_per_series_with_dated_labels() {
        let a = [(day(1), 10.0), (day(2), 50.0), (day(3), 100.0)];
        let b = [(day(2), 20.0), (day(3), 30.0)];
        let svg = line_chart(
            "trend",
            &[Series { points: &a }, Series { points: &b }],
            &YAxis::index(),
        )
        .into_string();
        assert_eq!(svg.matches("<polyline").count(), 2 + 5, "{svg}");
        assert!(
            svg.contains("2026-11-01") && svg.contains("2026-11-03"),
            "{svg}"
        );
        assert!(svg.contains(r#"width="764""#), "{svg}");
    }

    #[test]
    fn no_points_give_a_note_not_an_empty_chart() {
        let svg = line_chart("trend", &[Series { points: &[] }], &YAxis::index()).into_string();
        assert!(svg.contains("No data yet"), "{svg}");
    }
}
