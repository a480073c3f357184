//! SVG plots of a run: latency by percentile (HdrHistogram's log-scaled
//! percentile axis: 0%, 90%, 99%, 99.9%, …) and throughput with p99 per interval.
//!
//! Owns: turning histograms and interval summaries into SVG text. Must never:
//! need system fonts (plotters is built without `ttf`, so text is laid out with
//! its font-free estimates and the viewer's font renders it), or draw from
//! anything but the figures the summary also reports.

use hdrhistogram::Histogram;
use plotters::prelude::*;

use super::{IntervalSummary, ReportError};
use hdr::hgrm::{percentile_steps, PERCENTILE_TICKS_PER_HALF_DISTANCE};

/// Size of every plot, pixels.
pub const PLOT_WIDTH_PX: u32 = 1_000;
pub const PLOT_HEIGHT_PX: u32 = 620;
/// Fewest "nines" the percentile axis shows (up to 99.99%), so short runs still
/// have a readable axis.
const PERCENTILE_NINES_MIN: u32 = 4;
/// Font family asked of the SVG viewer.
const FONT: &str = "sans-serif";

const CORRECTED: RGBColor = RGBColor(0xd6, 0x27, 0x28);
const UNCORRECTED: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const OFFERED: RGBColor = RGBColor(0x7f, 0x7f, 0x7f);

/// A plotting failure as text (plotters' errors borrow the backend).
fn plot_error(file: &str) -> impl Fn(DrawingAreaErrorKind<std::io::Error>) -> ReportError + '_ {
    move |e| ReportError::Plot {
        file: file.to_string(),
        reason: e.to_string(),
    }
}

/// Points of a percentile plot: x is 1/(1-q) (so 90% is 10, 99% is 100),
/// y the latency in microseconds. The 100% point is drawn at `x_max`.
fn percentile_points(histogram: &Histogram<u64>, x_max: f64) -> Vec<(f64, f64)> {
    percentile_steps(histogram, PERCENTILE_TICKS_PER_HALF_DISTANCE)
        .into_iter()
        .map(|step| {
            let x = if step.percentile >= 100.0 {
                x_max
            } else {
                (100.0 / (100.0 - step.percentile)).min(x_max)
            };
            (x, step.value as f64 / 1_000.0)
        })
        .collect()
}

/// The label of a point on the percentile axis: 1 → "0%", 10 → "90%", 1000 → "99.9%".
pub fn percentile_label(x: f64) -> String {
    let nines = x.log10().round();
    if nines < 1.0 {
        return "0%".to_string();
    }
    let percent = 100.0 * (1.0 - 1.0 / x);
    let decimals = (nines as usize).saturating_sub(2);
    format!("{percent:.decimals$}%")
}

/// Latency by percentile, corrected beside uncorrected, as an SVG document.
pub fn percentile_svg(
    title: &str,
    corrected: &Histogram<u64>,
    uncorrected: &Histogram<u64>,
) -> Result<String, ReportError> {
    const FILE: &str = "latency-percentiles.svg";
    let count = corrected.len().max(uncorrected.len()).max(1);
    let nines = ((count as f64).log10().ceil() as u32).max(PERCENTILE_NINES_MIN);
    let x_max = 10f64.powi(nines as i32);
    let key_points: Vec<f64> = (0..=nines).map(|n| 10f64.powi(n as i32)).collect();
    let y_max = (corrected.max().max(uncorrected.max()) as f64 / 1_000.0).max(1.0) * 1.05;
    let series = [
        ("corrected (from intended send)", corrected, CORRECTED),
        ("uncorrected (from actual send)", uncorrected, UNCORRECTED),
    ];

    let mut svg = String::new();
    {
        let root =
            SVGBackend::with_string(&mut svg, (PLOT_WIDTH_PX, PLOT_HEIGHT_PX)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error(FILE))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 22))
            .margin(16)
            .margin_right(48) // room for the last percentile label
            .x_label_area_size(48)
            .y_label_area_size(80)
            .build_cartesian_2d(
                (1f64..x_max).log_scale().with_key_points(key_points),
                0f64..y_max,
            )
            .map_err(plot_error(FILE))?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc("latency (µs)")
            .x_label_formatter(&|x| percentile_label(*x))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .label_style((FONT, 14))
            .draw()
            .map_err(plot_error(FILE))?;
        for (label, histogram, color) in series {
            chart
                .draw_series(LineSeries::new(
                    percentile_points(histogram, x_max),
                    color.stroke_width(2),
                ))
                .map_err(plot_error(FILE))?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font((FONT, 14))
            .draw()
            .map_err(plot_error(FILE))?;
        root.present().map_err(plot_error(FILE))?;
    }
    Ok(svg)
}

/// Throughput per interval (achieved, with the offered rate) above p99 latency
/// per interval (corrected and uncorrected), as an SVG document.
pub fn throughput_latency_svg(
    title: &str,
    offered_rate_per_s: f64,
    intervals: &[IntervalSummary],
) -> Result<String, ReportError> {
    const FILE: &str = "throughput-latency.svg";
    let t_max = intervals
        .iter()
        .map(|i| i.start_s + i.duration_s)
        .fold(1.0f64, f64::max);
    let rate_max = intervals
        .iter()
        .map(|i| i.throughput_per_s)
        .fold(offered_rate_per_s, f64::max)
        .max(1.0)
        * 1.1;
    let p99_max = intervals
        .iter()
        .map(|i| i.corrected.p99.max(i.uncorrected.p99))
        .fold(1.0f64, f64::max)
        * 1.1;
    // One point per interval at its midpoint; empty intervals have no latency.
    let throughput: Vec<(f64, f64)> = intervals
        .iter()
        .map(|i| (i.start_s + i.duration_s / 2.0, i.throughput_per_s))
        .collect();
    let p99 = |pick: fn(&IntervalSummary) -> f64| -> Vec<(f64, f64)> {
        intervals
            .iter()
            .filter(|i| i.count > 0)
            .map(|i| (i.start_s + i.duration_s / 2.0, pick(i)))
            .collect()
    };

    let mut svg = String::new();
    {
        let root =
            SVGBackend::with_string(&mut svg, (PLOT_WIDTH_PX, PLOT_HEIGHT_PX)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error(FILE))?;
        let root = root.titled(title, (FONT, 22)).map_err(plot_error(FILE))?;
        let (upper, lower) = root.split_vertically(PLOT_HEIGHT_PX / 2 - 20);

        let mut top = ChartBuilder::on(&upper)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(80)
            .build_cartesian_2d(0f64..t_max, 0f64..rate_max)
            .map_err(plot_error(FILE))?;
        top.configure_mesh()
            .x_desc("time (s)")
            .y_desc("replies/s")
            .y_label_formatter(&|y| format!("{y:.0}"))
            .label_style((FONT, 13))
            .draw()
            .map_err(plot_error(FILE))?;
        top.draw_series(DashedLineSeries::new(
            [(0.0, offered_rate_per_s), (t_max, offered_rate_per_s)],
            8,
            6,
            OFFERED.stroke_width(2),
        ))
        .map_err(plot_error(FILE))?
        .label("offered")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], OFFERED.stroke_width(2)));
        top.draw_series(LineSeries::new(throughput, BLACK.stroke_width(2)))
            .map_err(plot_error(FILE))?
            .label("achieved")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], BLACK.stroke_width(2)));
        top.configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font((FONT, 13))
            .draw()
            .map_err(plot_error(FILE))?;

        let mut bottom = ChartBuilder::on(&lower)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(80)
            .build_cartesian_2d(0f64..t_max, 0f64..p99_max)
            .map_err(plot_error(FILE))?;
        bottom
            .configure_mesh()
            .x_desc("time (s)")
            .y_desc("p99 latency (µs)")
            .y_label_formatter(&|y| format!("{y:.0}"))
            .label_style((FONT, 13))
            .draw()
            .map_err(plot_error(FILE))?;
        for (label, pick, color) in [
            (
                "p99 corrected",
                (|i: &IntervalSummary| i.corrected.p99) as fn(&IntervalSummary) -> f64,
                CORRECTED,
            ),
            (
                "p99 uncorrected",
                |i: &IntervalSummary| i.uncorrected.p99,
                UNCORRECTED,
            ),
        ] {
            bottom
                .draw_series(LineSeries::new(p99(pick), color.stroke_width(2)))
                .map_err(plot_error(FILE))?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(2))
                });
        }
        bottom
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font((FONT, 13))
            .draw()
            .map_err(plot_error(FILE))?;
        root.present().map_err(plot_error(FILE))?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_axis_labels_read_as_nines() {
        assert_eq!(percentile_label(1.0), "0%");
        assert_eq!(percentile_label(10.0), "90%");
        assert_eq!(percentile_label(100.0), "99%");
        assert_eq!(percentile_label(1_000.0), "99.9%");
        assert_eq!(percentile_label(100_000.0), "99.999%");
    }
}
