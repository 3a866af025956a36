//! Charts as server-rendered SVG: no script draws them, so they show with
//! scripts off and pass a strict Content-Security-Policy. Every chart has a
//! labelled axis with its unit, a tooltip on every mark (the SVG `<title>`
//! that browsers and screen readers show) and its numbers as a table.
//!
//! Colours come from the stylesheet (`.s0` … `.s9`), not from attributes,
//! so the CSP needs no inline styles.

use maud::{Markup, html};

/// One named line, or one layer of a stack.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    /// One value per point of the chart's `x`; `None` where there is none
    /// (a latency in a bucket without calls).
    pub values: Vec<Option<f64>>,
    /// A colour of its own (an index into the palette); else its position.
    pub colour: Option<usize>,
}

impl Series {
    pub fn new(name: impl Into<String>, values: impl IntoIterator<Item = f64>) -> Series {
        Series { name: name.into(), values: values.into_iter().map(Some).collect(), colour: None }
    }

    /// A series of a fixed colour (`index` into the palette).
    pub fn coloured(mut self, index: usize) -> Series {
        self.colour = Some(index);
        self
    }

    /// Leaves out the points before `first`: a line starts where the first
    /// call is, not with zeros for the time before it.
    pub fn starting_at(mut self, first: usize) -> Series {
        self.values.iter_mut().take(first).for_each(|v| *v = None);
        self
    }

    /// [`Series::starting_at`] its own first non-zero point.
    pub fn from_first(self) -> Series {
        let first = self.values.iter().position(|v| v.is_some_and(|v| v != 0.0)).unwrap_or(self.values.len());
        self.starting_at(first)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One line per series.
    Lines,
    /// Bars, the series stacked on each other.
    StackedBars,
}

/// A chart over time (or any ordered categories).
#[derive(Debug, Clone)]
pub struct Chart {
    /// Unique on the page: ids and the table's anchor derive from it.
    pub id: String,
    pub title: String,
    /// What the horizontal axis is, with its unit ("day (UTC)").
    pub x_label: String,
    /// What the vertical axis is, with its unit ("calls", "OPG", "ms").
    pub y_label: String,
    /// One label per point, oldest first.
    pub x: Vec<String>,
    pub series: Vec<Series>,
    pub kind: Kind,
    /// How a value reads in tooltips and the table.
    pub format: fn(f64) -> String,
    /// The vertical axis's top, if fixed (1 for shares); else from the data.
    pub y_max: Option<f64>,
    /// Where the same numbers can be downloaded (a CSV or JSON API route).
    pub download: Option<(String, String)>,
    /// The last point is a period still running (today, this hour): drawn
    /// faded and dashed, marked "so far", so that it does not read as a fall.
    pub partial_last: bool,
    /// The points are categories, not times: every label is shown, slanted.
    pub categories: bool,
}

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 260.0;
/// The least room left of the plot: the vertical axis's title and its ticks.
const LEFT: f64 = 48.0;
/// About how wide a tick's character is (13 px text), to keep the ticks off
/// the axis's title however long their labels are.
const TICK_CHAR_WIDTH: f64 = 7.6;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 44.0;
/// Room below the plot for slanted category labels.
const BOTTOM_CATEGORIES: f64 = 104.0;
/// Colours in the stylesheet.
const PALETTE: usize = 10;

/// Round tick values from 0 covering `max`: 1, 2 or 5 times a power of ten
/// apart, about `count` of them.
pub fn nice_ticks(max: f64, count: usize) -> Vec<f64> {
    if !(max.is_finite() && max > 0.0) || count == 0 {
        return vec![0.0, 1.0];
    }
    let rough = max / count as f64;
    let power = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * power).find(|&s| s >= rough).unwrap_or(10.0 * power);
    let steps = (max / step).ceil() as usize;
    (0..=steps.max(1)).map(|i| i as f64 * step).collect()
}

/// Which of `n` labels to print so that at most `max` show, evenly spread,
/// the last one always.
pub fn label_indices(n: usize, max: usize) -> Vec<usize> {
    if n == 0 || max == 0 {
        return vec![];
    }
    let every = n.div_ceil(max);
    let mut shown: Vec<usize> = (0..n).rev().step_by(every).collect();
    shown.reverse();
    shown
}

impl Chart {
    /// The stylesheet's colour class of series `s`: a series may fix its own
    /// (a task keeps its colour whatever the window shows).
    fn colour(&self, s: usize) -> String {
        let index = self.series.get(s).and_then(|series| series.colour).unwrap_or(s);
        format!("s{}", index % PALETTE)
    }

    /// The tallest value the axis must reach: a stack's tallest bar or the
    /// largest point.
    fn data_max(&self) -> f64 {
        match self.kind {
            Kind::Lines => self.series.iter().flat_map(|s| s.values.iter().flatten()).fold(0.0, |m: f64, &v| m.max(v)),
            Kind::StackedBars => (0..self.x.len())
                .map(|i| self.series.iter().filter_map(|s| s.values.get(i).copied().flatten()).sum::<f64>())
                .fold(0.0, f64::max),
        }
    }

    /// Each non-empty bar of a stack: (point, series, base, value).
    fn stack(&self) -> Vec<(usize, usize, f64, f64)> {
        let mut bars = vec![];
        for i in 0..self.x.len() {
            let mut base = 0.0;
            for (s, series) in self.series.iter().enumerate() {
                let value = series.values.get(i).copied().flatten().unwrap_or(0.0);
                if value > 0.0 {
                    bars.push((i, s, base, value));
                    base += value;
                }
            }
        }
        bars
    }

    pub fn render(&self) -> Markup {
        let ticks = nice_ticks(self.y_max.unwrap_or_else(|| self.data_max()), 4);
        let top = *ticks.last().unwrap_or(&1.0);
        // The ticks end 6 px left of the plot and must start right of the
        // axis's title (centred at 14 px, 14 px high when turned).
        let widest_tick = ticks.iter().map(|t| (self.format)(*t).chars().count()).max().unwrap_or(1) as f64;
        let left = LEFT.max(24.0 + 6.0 + TICK_CHAR_WIDTH * widest_tick);
        let plot_width = WIDTH - left - RIGHT;
        let height = if self.categories { HEIGHT - BOTTOM + BOTTOM_CATEGORIES } else { HEIGHT };
        let plot_height = height - TOP - if self.categories { BOTTOM_CATEGORIES } else { BOTTOM };
        let partial = self.partial_last.then(|| self.x.len().checked_sub(1)).flatten();
        let labels = if self.categories { (0..self.x.len()).collect() } else { label_indices(self.x.len(), 6) };
        let n = self.x.len().max(1);
        let slot = plot_width / n as f64;
        let x_of = |i: usize| left + slot * (i as f64 + 0.5);
        let y_of = |v: f64| TOP + plot_height * (1.0 - (v / top).clamp(0.0, 1.0));
        let title_id = format!("{}-title", self.id);
        let format = self.format;
        html! {
            figure.chart id=(self.id) {
                figcaption {
                    h3 id=(title_id) { (self.title) }
                    // A legend on every chart, even of one series: what the colour is.
                    @if !self.series.is_empty() {
                        ul.legend {
                            @for (i, series) in self.series.iter().enumerate() {
                                li { span class=(format!("key {}", self.colour(i))) {} (series.name) }
                            }
                        }
                    }
                    @if let Some(last) = partial {
                        p.partial-note { "The last " (self.x_label.split(' ').next().unwrap_or("period")) " (" (self.x[last]) ") is still running: drawn faded, it counts only so far." }
                    }
                }
                // On a narrow screen the plot keeps a readable width and scrolls on its own.
                div.plot {
                svg viewBox=(format!("0 0 {WIDTH} {height}")) role="img" aria-labelledby=(title_id) preserveAspectRatio="xMidYMid meet" {
                    // Grid and the vertical axis's ticks.
                    @for tick in &ticks {
                        line.grid x1=(left) x2=(WIDTH - RIGHT) y1=(y_of(*tick)) y2=(y_of(*tick)) {}
                        text.tick x=(left - 6.0) y=(y_of(*tick) + 4.0) text-anchor="end" { (format(*tick)) }
                    }
                    text.axis transform=(format!("translate(14 {}) rotate(-90)", TOP + plot_height / 2.0)) text-anchor="middle" { (self.y_label) }
                    @for i in labels {
                        @if self.categories {
                            text.tick transform=(format!("translate({:.1} {:.1}) rotate(-35)", x_of(i) + 4.0, TOP + plot_height + 14.0)) text-anchor="end" { (self.x[i]) }
                        } @else {
                            // The running period's label ends at the plot's edge, never past it.
                            @if Some(i) == partial {
                                text.tick x=(WIDTH - RIGHT) y=(TOP + plot_height + 16.0) text-anchor="end" { (self.x[i]) " (so far)" }
                            } @else {
                                text.tick x=(x_of(i)) y=(TOP + plot_height + 16.0) text-anchor="middle" { (self.x[i]) }
                            }
                        }
                    }
                    text.axis x=(left + plot_width / 2.0) y=(height - 6.0) text-anchor="middle" { (self.x_label) }
                    line.axisline x1=(left) x2=(WIDTH - RIGHT) y1=(TOP + plot_height) y2=(TOP + plot_height) {}
                    @match self.kind {
                        Kind::StackedBars => {
                            @for (i, s, base, value) in self.stack() {
                                rect class=(format!("bar {}{}", self.colour(s), if Some(i) == partial { " partial" } else { "" })) x=(x_of(i) - slot * 0.4) width=(slot * 0.8)
                                    y=(y_of(base + value)) height=(y_of(base) - y_of(base + value)) {
                                    title { (self.x[i]) @if Some(i) == partial { " (so far)" } " · " (self.series[s].name) ": " (format(value)) }
                                }
                            }
                        }
                        Kind::Lines => {
                            @for (s, series) in self.series.iter().enumerate() {
                                @let (whole, running) = match partial {
                                    Some(last) => (&series.values[..last.min(series.values.len())], series.values.get(last.saturating_sub(1)..).unwrap_or(&[])),
                                    None => (&series.values[..], &[][..]),
                                };
                                path class=(format!("line {}", self.colour(s))) d=(line_path(whole, x_of, y_of)) {}
                                @if running.len() == 2 {
                                    path class=(format!("line partial {}", self.colour(s))) d=(line_path(running, |i| x_of(i + partial.unwrap_or(1) - 1), y_of)) {}
                                }
                                @for (i, value) in series.values.iter().enumerate() {
                                    @if let Some(value) = value {
                                        circle class=(format!("dot {}{}", self.colour(s), if Some(i) == partial { " partial" } else { "" })) cx=(x_of(i)) cy=(y_of(*value)) r="3" {
                                            title { (self.x.get(i).map(String::as_str).unwrap_or("")) @if Some(i) == partial { " (so far)" } " · " (series.name) ": " (format(*value)) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                }
                (self.table())
            }
        }
    }

    /// The chart's numbers: one row per point, one column per series; each
    /// cell's exact value in `data-value`.
    fn table(&self) -> Markup {
        html! {
            details.numbers {
                summary { "Numbers" }
                div.table-wrap {
                    table {
                        thead { tr {
                            th scope="col" title=(format!("One row per {}", self.x_label)) { (self.x_label) }
                            @for s in &self.series { th scope="col" title=(format!("{}, in {}", s.name, self.y_label)) { (s.name) } }
                        } }
                        tbody {
                            @for (i, x) in self.x.iter().enumerate() {
                                tr {
                                    th scope="row" { (x) @if self.partial_last && i + 1 == self.x.len() { " (so far)" } }
                                    @for s in &self.series {
                                        @match s.values.get(i).copied().flatten() {
                                            Some(v) => td.num data-value=(v) { ((self.format)(v)) },
                                            None => td.num { "–" },
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if let Some((href, label)) = &self.download {
                p.more { a.download href=(href) { "The same as " (label) } }
            }
        }
    }
}

/// An SVG path through the points, broken where a value is missing.
fn line_path(values: &[Option<f64>], x_of: impl Fn(usize) -> f64, y_of: impl Fn(f64) -> f64) -> String {
    let mut d = String::new();
    let mut pen_down = false;
    for (i, value) in values.iter().enumerate() {
        match value {
            Some(v) => {
                d.push_str(&format!("{}{:.1} {:.1} ", if pen_down { "L" } else { "M" }, x_of(i), y_of(*v)));
                pen_down = true;
            }
            None => pen_down = false,
        }
    }
    d.trim_end().to_owned()
}

/// A small line of a model's calls over a window that ends now: the last
/// segment, to the period still running, is dashed.
pub fn sparkline(values: &[u64], label: &str) -> Markup {
    const W: f64 = 96.0;
    const H: f64 = 24.0;
    let max = values.iter().copied().max().unwrap_or(0).max(1) as f64;
    let step = if values.len() > 1 { W / (values.len() - 1) as f64 } else { W };
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, &v)| format!("{:.1},{:.1}", i as f64 * step, H - 2.0 - (H - 4.0) * v as f64 / max))
        .collect();
    let settled = points.len().saturating_sub(1).max(1).min(points.len());
    html! {
        svg.spark viewBox=(format!("0 0 {W} {H}")) width="96" height="24" role="img" aria-label=(label) {
            title { (label) " (the last point so far)" }
            polyline points=(points[..settled].join(" ")) {}
            @if points.len() > 1 {
                polyline.partial points=(points[points.len() - 2..].join(" ")) {}
            }
        }
    }
}

/// The Lorenz curve of demand: the share of calls held by the least called
/// fraction of items, against the diagonal of perfect equality.
pub fn lorenz(id: &str, points: &[(f64, f64)], items: &str) -> Markup {
    const WIDTH: f64 = 280.0;
    const HEIGHT: f64 = 280.0;
    const LEFT: f64 = 50.0;
    const TOP: f64 = 16.0;
    const SPAN: f64 = 212.0;
    let x_of = |x: f64| LEFT + SPAN * x;
    let y_of = |y: f64| TOP + SPAN * (1.0 - y);
    let d: Vec<String> = points
        .iter()
        .enumerate()
        .map(|(i, (x, y))| format!("{}{:.1} {:.1}", if i == 0 { "M" } else { "L" }, x_of(*x), y_of(*y)))
        .collect();
    let title_id = format!("{id}-title");
    html! {
        figure.chart.lorenz id=(id) {
            figcaption { h3 id=(title_id) { "Lorenz curve of calls over " (items) } }
            svg viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img" aria-labelledby=(title_id) {
                line.grid x1=(x_of(0.0)) y1=(y_of(0.0)) x2=(x_of(1.0)) y2=(y_of(1.0)) {}
                line.axisline x1=(x_of(0.0)) y1=(y_of(0.0)) x2=(x_of(1.0)) y2=(y_of(0.0)) {}
                line.axisline x1=(x_of(0.0)) y1=(y_of(0.0)) x2=(x_of(0.0)) y2=(y_of(1.0)) {}
                path.line.s0 d=(d.join(" ")) {}
                @for (x, y) in points {
                    circle.dot.s0 cx=(x_of(*x)) cy=(y_of(*y)) r="2.5" {
                        title { "the least called " (crate::format::percent(*x)) " of " (items) " hold " (crate::format::percent(*y)) " of calls" }
                    }
                }
                text.tick x=(x_of(0.0)) y=(y_of(0.0) + 16.0) text-anchor="middle" { "0%" }
                text.tick x=(x_of(1.0)) y=(y_of(0.0) + 16.0) text-anchor="end" { "100%" }
                text.tick x=(x_of(0.0) - 6.0) y=(y_of(1.0) + 4.0) text-anchor="end" { "100%" }
                text.axis x=(x_of(0.5)) y=(HEIGHT - 8.0) text-anchor="middle" { "share of " (items) ", least called first" }
                text.axis transform=(format!("translate(14 {}) rotate(-90)", y_of(0.5))) text-anchor="middle" { "share of calls" }
            }
            details.numbers {
                summary { "Numbers" }
                div.table-wrap {
                    table {
                        thead { tr {
                            th scope="col" title=(format!("The least called share of the {items}")) { "share of " (items) }
                            th scope="col" title="The share of all calls they hold" { "share of calls" }
                        } }
                        tbody { @for (x, y) in points { tr { td.num data-value=(x) { (crate::format::percent(*x)) } td.num data-value=(y) { (crate::format::percent(*y)) } } } }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_maximum() {
        assert_eq!(nice_ticks(9.0, 4), vec![0.0, 5.0, 10.0]);
        assert_eq!(nice_ticks(100.0, 4), vec![0.0, 50.0, 100.0]);
        assert_eq!(nice_ticks(0.37, 4), vec![0.0, 0.1, 0.2, 0.30000000000000004, 0.4]);
        assert_eq!(nice_ticks(0.0, 4), vec![0.0, 1.0]);
        assert_eq!(nice_ticks(f64::NAN, 4), vec![0.0, 1.0]);
        for max in [1.0, 3.0, 7.5, 12.0, 999.0, 1234.5, 1e12] {
            let ticks = nice_ticks(max, 4);
            assert!(*ticks.last().unwrap() >= max && ticks.len() <= 6, "{max}: {ticks:?}");
        }
    }

    #[test]
    fn labels_are_spread_and_end_on_the_last_point() {
        assert_eq!(label_indices(7, 6), vec![0, 2, 4, 6]);
        assert_eq!(label_indices(24, 6), vec![3, 7, 11, 15, 19, 23]);
        assert_eq!(label_indices(3, 6), vec![0, 1, 2]);
        assert_eq!(label_indices(0, 6), Vec::<usize>::new());
    }

    #[test]
    fn a_chart_has_axes_tooltips_and_its_numbers() {
        let chart = Chart {
            id: "calls".into(),
            title: "Calls".into(),
            x_label: "day (UTC)".into(),
            y_label: "calls".into(),
            x: vec!["Mon".into(), "Tue".into()],
            series: vec![Series::new("vision", [3.0, 4.0]), Series::new("text", [1.0, 0.0])],
            kind: Kind::StackedBars,
            format: |v| format!("{v}"),
            y_max: None,
            download: Some(("/v1/x".into(), "JSON".into())),
            partial_last: true,
            categories: false,
        };
        let html = chart.render().into_string();
        assert!(html.contains("<title>Mon · vision: 3</title>"), "{html}");
        assert!(!html.contains("Tue · text"), "an empty layer draws no bar");
        assert!(html.contains(">day (UTC)</text>") && html.contains(">calls</text>"));
        assert!(html.contains(r#"<td class="num" data-value="4">4</td>"#));
        assert!(html.contains(r#"href="/v1/x""#));
        // Today is marked as running, in the picture and in the numbers.
        assert!(html.contains(r#"class="bar s0 partial""#) && html.contains("<title>Tue (so far) · vision: 4</title>"));
        assert!(html.contains("<th scope=\"row\">Tue (so far)</th>") && html.contains("still running"));
        assert_eq!(html.matches(" partial\"").count(), 1, "only the last point is partial");
        // A series keeps the colour it is given, and a line starts at its first call.
        let fixed = Series::new("t", [0.0, 0.0, 2.0, 0.0]).coloured(7).from_first();
        assert_eq!((fixed.colour, fixed.values), (Some(7), vec![None, None, Some(2.0), Some(0.0)]));
        // A gap in a line is a gap, not a zero.
        assert_eq!(line_path(&[Some(1.0), None, Some(2.0)], |i| i as f64, |v| v), "M0.0 1.0 M2.0 2.0");
    }
}
