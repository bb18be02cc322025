//! An SVG chart of one customer's billing month: hourly usage as bars (left axis, liters) and
//! the running total as a line (right axis, cubic meters).
//!
//! Hand-written SVG: a few hundred bytes of markup per series, no fonts or rendering crates to
//! compile, and the same bytes for the same data (the executed notebook diffs cleanly).

use std::fmt::Write;

use super::html::escape;
use crate::hours::format_hour;
use crate::view::Point;

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 280.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 60.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 40.0;

/// The smallest 1, 2 or 5 times a power of ten that is at least `v` (1 for `v <= 1`).
fn nice_ceiling(v: i64) -> i64 {
    let mut step = 1i64;
    loop {
        for m in [1, 2, 5] {
            if let Some(candidate) = step.checked_mul(m)
                && candidate >= v
            {
                return candidate;
            }
        }
        match step.checked_mul(10) {
            Some(next) => step = next,
            None => return i64::MAX,
        }
    }
}

/// `ml` as liters or cubic meters with up to 3 decimals, trailing zeros dropped.
fn amount(ml: i64, per_unit: i64) -> String {
    let whole = ml / per_unit;
    let frac = (ml % per_unit).abs();
    if frac == 0 {
        return whole.to_string();
    }
    let digits = per_unit.ilog10() as usize;
    let mut text = format!("{frac:0digits$}");
    text.truncate(3.min(digits));
    let text = text.trim_end_matches('0');
    if text.is_empty() {
        whole.to_string()
    } else {
        format!("{whole}.{text}")
    }
}

/// Where the chart's values land: the plot area's size and the scales of its two axes.
struct Plot {
    first: i64,
    span: f64,
    width: f64,
    height: f64,
    usage_max: i64,
    total_max: i64,
}

impl Plot {
    fn new(first: i64, last: i64, points: &[Point]) -> Self {
        Self {
            first,
            span: (last - first + 1).max(1) as f64,
            width: WIDTH - LEFT - RIGHT,
            height: HEIGHT - TOP - BOTTOM,
            usage_max: nice_ceiling(points.iter().map(|p| p.usage_ml).max().unwrap_or(0)),
            total_max: nice_ceiling(points.iter().map(|p| p.cumulative_ml).max().unwrap_or(0)),
        }
    }

    /// The x of hour `hour`'s start.
    fn x(&self, hour: i64) -> f64 {
        LEFT + (hour - self.first) as f64 / self.span * self.width
    }

    /// The y of value `v` on an axis up to `max`.
    fn y(&self, v: i64, max: i64) -> f64 {
        TOP + self.height - v as f64 / max as f64 * self.height
    }

    /// One hour's width, at least half a pixel.
    fn bar_width(&self) -> f64 {
        (self.width / self.span).max(0.5)
    }
}

/// The chart of `points` (sorted by hour) over the hours `first..=last`.
pub fn month_svg(title: &str, first: i64, last: i64, points: &[Point]) -> String {
    let plot = Plot::new(first, last, points);
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"sans-serif\" font-size=\"11\">\
         <text x=\"{LEFT}\" y=\"18\" font-size=\"13\">{}</text>",
        escape(title)
    );
    axes(&mut svg, &plot);
    day_ticks(&mut svg, &plot, first, last);
    bars(&mut svg, &plot, points);
    running_total(&mut svg, &plot, points);
    svg
}

/// Axes and gridlines at quarter steps, with both axes' labels.
fn axes(svg: &mut String, plot: &Plot) {
    for i in 0..=4 {
        let gy = TOP + plot.height * f64::from(i) / 4.0;
        let _ = write!(
            svg,
            "<line x1=\"{LEFT}\" y1=\"{gy:.1}\" x2=\"{:.1}\" y2=\"{gy:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#1f77b4\">{}</text>\
             <text x=\"{:.1}\" y=\"{:.1}\" fill=\"#d62728\">{}</text>",
            WIDTH - RIGHT,
            LEFT - 4.0,
            gy + 4.0,
            amount(plot.usage_max * i64::from(4 - i) / 4, 1000),
            WIDTH - RIGHT + 4.0,
            gy + 4.0,
            amount(plot.total_max * i64::from(4 - i) / 4, 1_000_000),
        );
    }
    let middle = TOP + plot.height / 2.0;
    let _ = write!(
        svg,
        "<text x=\"8\" y=\"{middle:.1}\" fill=\"#1f77b4\" transform=\"rotate(-90 8 {middle:.1})\" \
         text-anchor=\"middle\">liters per hour</text>\
         <text x=\"{:.1}\" y=\"{middle:.1}\" fill=\"#d62728\" transform=\"rotate(90 {:.1} {middle:.1})\" \
         text-anchor=\"middle\">running total, m³</text>",
        WIDTH - 8.0,
        WIDTH - 8.0,
    );
}

/// Day ticks: UTC midnights, labelled every few days so labels never overlap.
fn day_ticks(svg: &mut String, plot: &Plot, first: i64, last: i64) {
    let days = (plot.span / 24.0).ceil() as i64;
    let every = (days / 8).max(1);
    let mut day = 0;
    for hour in first..=last {
        if hour.rem_euclid(24) != 0 {
            continue;
        }
        let tx = plot.x(hour);
        let _ = write!(
            svg,
            "<line x1=\"{tx:.1}\" y1=\"{:.1}\" x2=\"{tx:.1}\" y2=\"{:.1}\" stroke=\"#999\"/>",
            TOP + plot.height,
            TOP + plot.height + 4.0
        );
        if day % every == 0 {
            let label = format_hour(hour);
            let _ = write!(
                svg,
                "<text x=\"{tx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                TOP + plot.height + 16.0,
                escape(label.get(5..10).unwrap_or(&label))
            );
        }
        day += 1;
    }
}

/// Bars: one per hour with usage, one path so the markup stays small.
fn bars(svg: &mut String, plot: &Plot, points: &[Point]) {
    let bar_w = plot.bar_width();
    let mut bars = String::new();
    for p in points.iter().filter(|p| p.usage_ml > 0) {
        let top = plot.y(p.usage_ml, plot.usage_max);
        let _ = write!(
            bars,
            "M{:.1} {:.1}h{bar_w:.2}V{:.1}h-{bar_w:.2}Z",
            plot.x(p.hour),
            TOP + plot.height,
            top
        );
    }
    let _ = write!(
        svg,
        "<path d=\"{bars}\" fill=\"#1f77b4\" fill-opacity=\"0.6\"/>"
    );
}

/// The running total at each hour's end, and the plot's frame.
fn running_total(svg: &mut String, plot: &Plot, points: &[Point]) {
    let line: Vec<String> = points
        .iter()
        .map(|p| {
            format!(
                "{:.1},{:.1}",
                plot.x(p.hour) + plot.bar_width(),
                plot.y(p.cumulative_ml, plot.total_max)
            )
        })
        .collect();
    let _ = write!(
        svg,
        "<polyline points=\"{}\" fill=\"none\" stroke=\"#d62728\" stroke-width=\"1.5\"/>\
         <rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{}\" height=\"{}\" fill=\"none\" \
         stroke=\"#999\"/></svg>",
        line.join(" "),
        plot.width,
        plot.height,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_are_round() {
        assert_eq!(nice_ceiling(0), 1);
        assert_eq!(nice_ceiling(7), 10);
        assert_eq!(nice_ceiling(11), 20);
        assert_eq!(nice_ceiling(2000), 2000);
        assert_eq!(nice_ceiling(2001), 5000);
        assert_eq!(nice_ceiling(i64::MAX), i64::MAX);
    }

    #[test]
    fn amounts_are_exact() {
        assert_eq!(amount(1500, 1000), "1.5");
        assert_eq!(amount(2_000_000, 1_000_000), "2");
        assert_eq!(amount(1_234_567, 1_000_000), "1.234");
        assert_eq!(amount(1_000_001, 1_000_000), "1");
    }

    #[test]
    fn bars_and_line_follow_the_data() {
        // Two days from a UTC midnight; usage in the first hour of each.
        let first = 493_560; // 2026-04-22T00, a UTC midnight
        assert_eq!(first % 24, 0);
        let points = [
            Point {
                hour: first,
                usage_ml: 2000,
                cumulative_ml: 2000,
            },
            Point {
                hour: first + 24,
                usage_ml: 1000,
                cumulative_ml: 3000,
            },
        ];
        let svg = month_svg("C1 <2026-03>", first, first + 47, &points);
        assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>"));
        assert!(svg.contains("C1 &lt;2026-03&gt;"));
        // Plot area 640 x 210 from (60, 30); 48 hours -> 13.33 px per hour.
        // Usage axis tops at 2 l, total axis at 5,000 ml -> 0.005 m³.
        assert!(svg.contains("M60.0 240.0h13.33V30.0h-13.33Z"), "{svg}");
        assert!(svg.contains("M380.0 240.0h13.33V135.0h-13.33Z"), "{svg}");
        assert!(svg.contains("points=\"73.3,156.0 393.3,114.0\""), "{svg}");
        assert!(svg.contains(">0.005</text>"));
    }
}
