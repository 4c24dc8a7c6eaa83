//! SVG figures drawn with plotters' SVG backend.
//!
//! Every figure has a header strip (title + legend drawn by hand so that the
//! legend never covers data) above one or more charts. Data are clipped to
//! the chart ranges before drawing (plotters does not clip).

use plotters::coord::ranged1d::{KeyPointHint, NoDefaultFormatting, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::stats::{self, ConeRow};
use crate::{BacktestRow, Cone, ParameterPosterior, ReportError};

type Area<'b> = DrawingArea<SVGBackend<'b>, Shift>;
type DErr = DrawingAreaErrorKind<std::io::Error>;
type DRes<T = ()> = Result<T, DErr>;
type TimeChart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<TickAxis, RangedCoordf64>>;

pub(crate) const INK: RGBColor = RGBColor(33, 37, 41);
const MUTED: RGBColor = RGBColor(110, 117, 125);
const GRID: RGBColor = RGBColor(232, 235, 238);
const AXIS: RGBColor = RGBColor(140, 147, 154);
const CGM: RGBColor = RGBColor(30, 41, 59);
const TARGET: RGBColor = RGBColor(47, 158, 68);
const CARB: RGBColor = RGBColor(232, 126, 4);
const BOLUS: RGBColor = RGBColor(112, 72, 232);
const BAND: RGBColor = RGBColor(34, 114, 181);
const MEDIAN: RGBColor = RGBColor(8, 48, 107);
const PRIOR: RGBColor = RGBColor(140, 140, 140);
const POST: RGBColor = RGBColor(34, 114, 181);
const PERSIST: RGBColor = RGBColor(120, 120, 120);
/// Categorical palette (Tableau 10).
const CAT: [RGBColor; 10] = [
    RGBColor(78, 121, 167),
    RGBColor(242, 142, 43),
    RGBColor(89, 161, 79),
    RGBColor(225, 87, 89),
    RGBColor(118, 183, 178),
    RGBColor(237, 201, 72),
    RGBColor(176, 122, 161),
    RGBColor(255, 157, 167),
    RGBColor(156, 117, 95),
    RGBColor(186, 176, 172),
];
/// Opacity of each nested band layer (drawn 95, 80, 50 on top of each other).
const BAND_ALPHA: [(u32, f64); 3] = [(95, 0.16), (80, 0.22), (50, 0.30)];
const HEADER_H: u32 = 62;
const FONT: &str = "sans-serif";

/// plotters divides font sizes by 1.24 in SVG output; compensate so `px` is the CSS size.
fn font_c(px: f64, c: RGBColor) -> TextStyle<'static> {
    (FONT, px * 1.24).into_font().color(&c)
}

fn bold(px: f64) -> TextStyle<'static> {
    (FONT, px * 1.24, FontStyle::Bold).into_font().color(&INK)
}

fn anchored(style: TextStyle<'static>, h: HPos, v: VPos) -> TextStyle<'static> {
    style.pos(Pos::new(h, v))
}

/// Renders a figure into an SVG string. Errors and panics inside plotters
/// become [`ReportError::Plot`].
pub(crate) fn render(
    figure: &str,
    size: (u32, u32),
    draw: impl FnOnce(&Area<'_>) -> DRes,
) -> Result<String, ReportError> {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut buf = String::new();
        let r = {
            let root = SVGBackend::with_string(&mut buf, size).into_drawing_area();
            root.fill(&WHITE)
                .and_then(|_| draw(&root))
                .and_then(|_| root.present())
        };
        r.map(|_| buf)
    }));
    match result {
        Ok(Ok(svg)) => Ok(svg),
        Ok(Err(e)) => Err(ReportError::Plot {
            figure: figure.to_string(),
            message: e.to_string(),
        }),
        Err(_) => Err(ReportError::Plot {
            figure: figure.to_string(),
            message: "the plotting library panicked".to_string(),
        }),
    }
}

fn no_data(figure: &str, reason: &str) -> ReportError {
    ReportError::NoData {
        figure: figure.to_string(),
        reason: reason.to_string(),
    }
}

// ---------------------------------------------------------------- axis with explicit ticks

/// A linear `f64` axis whose tick marks (and grid lines) are given explicitly.
pub(crate) struct TickAxis {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
}

impl TickAxis {
    fn new(lo: f64, hi: f64, ticks: Vec<f64>) -> Self {
        TickAxis { lo, hi, ticks }
    }
}

impl Ranged for TickAxis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let span = self.hi - self.lo;
        if span.is_nan() || span <= 0.0 || !v.is_finite() {
            return (limit.0 + limit.1) / 2;
        }
        let frac = (v - self.lo) / span;
        let px = limit.0 as f64 + frac * (limit.1 - limit.0) as f64;
        px.round().clamp(-1e6, 1e6) as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

impl ValueFormatter<f64> for TickAxis {
    fn format(value: &f64) -> String {
        stats::fmt_axis(*value)
    }
}

// ---------------------------------------------------------------- legend

/// A legend swatch.
#[derive(Clone, Copy)]
enum Swatch {
    Band(RGBColor, f64),
    Line(RGBColor, u32),
    Dashed(RGBColor),
    Dot(RGBColor),
    Ring(RGBColor),
    Bar(RGBColor),
    Stem(RGBColor),
}

/// Title at the top left and a wrapping legend row below it.
fn header(area: &Area<'_>, title: &str, items: &[(Swatch, String)]) -> DRes {
    area.draw(&Text::new(
        title.to_string(),
        (14, 10),
        anchored(bold(15.0), HPos::Left, VPos::Top),
    ))?;
    legend(area, 16, 44, items)
}

/// Top-left positions of the legend entries, wrapping at `width`.
fn legend_layout(width: u32, x0: i32, y0: i32, items: &[(Swatch, String)]) -> Vec<(i32, i32)> {
    let width = width as i32;
    let (mut x, mut y) = (x0, y0);
    let mut out = Vec::with_capacity(items.len());
    for (_, label) in items {
        let text_w = (label.chars().count() as f64 * 6.5).ceil() as i32;
        let w = 30 + text_w + 18;
        if x + w > width - 8 && x > x0 {
            x = x0;
            y += 20;
        }
        out.push((x, y));
        x += w;
    }
    out
}

/// Height of the header strip (title + legend rows) for a figure `width` wide.
fn header_height(width: u32, items: &[(Swatch, String)]) -> u32 {
    let last_y = legend_layout(width, 16, 44, items)
        .last()
        .map(|p| p.1)
        .unwrap_or(44);
    (last_y + 20).max(HEADER_H as i32) as u32
}

fn legend(area: &Area<'_>, x0: i32, y0: i32, items: &[(Swatch, String)]) -> DRes {
    let pos = legend_layout(area.dim_in_pixel().0, x0, y0, items);
    for ((sw, label), &(x, y)) in items.iter().zip(&pos) {
        match *sw {
            Swatch::Band(c, a) => area.draw(&Rectangle::new(
                [(x, y - 6), (x + 24, y + 6)],
                c.mix(a).filled(),
            ))?,
            Swatch::Line(c, w) => area.draw(&PathElement::new(
                vec![(x, y), (x + 24, y)],
                c.stroke_width(w),
            ))?,
            Swatch::Dashed(c) => {
                for (a, b) in [(0, 6), (9, 15), (18, 24)] {
                    area.draw(&PathElement::new(
                        vec![(x + a, y), (x + b, y)],
                        c.stroke_width(2),
                    ))?;
                }
            }
            Swatch::Dot(c) => area.draw(&Circle::new((x + 12, y), 3, c.filled()))?,
            Swatch::Ring(c) => area.draw(&Circle::new((x + 12, y), 3, c.stroke_width(1)))?,
            Swatch::Bar(c) => area.draw(&Rectangle::new(
                [(x + 8, y - 7), (x + 16, y + 7)],
                c.filled(),
            ))?,
            Swatch::Stem(c) => {
                area.draw(&PathElement::new(
                    vec![(x + 12, y + 7), (x + 12, y - 3)],
                    c.stroke_width(2),
                ))?;
                area.draw(&TriangleMarker::new((x + 12, y - 3), 5, c.filled()))?;
            }
        }
        area.draw(&Text::new(
            label.clone(),
            (x + 30, y),
            anchored(font_c(12.0, INK), HPos::Left, VPos::Center),
        ))?;
    }
    Ok(())
}

/// Effective opacity of nested band layers up to and including `level`.
fn stacked_alpha(level: u32) -> f64 {
    let mut t = 1.0;
    for (lv, a) in BAND_ALPHA {
        t *= 1.0 - a;
        if lv == level {
            break;
        }
    }
    1.0 - t
}

fn band_legend(compact: bool) -> Vec<(Swatch, String)> {
    if compact {
        return vec![
            (Swatch::Line(MEDIAN, 2), "Median".into()),
            (Swatch::Band(BAND, stacked_alpha(50)), "50 %".into()),
            (Swatch::Band(BAND, stacked_alpha(80)), "80 %".into()),
            (Swatch::Band(BAND, stacked_alpha(95)), "95 %".into()),
        ];
    }
    vec![
        (Swatch::Line(MEDIAN, 2), "Median forecast".into()),
        (Swatch::Band(BAND, stacked_alpha(50)), "50 % band".into()),
        (Swatch::Band(BAND, stacked_alpha(80)), "80 % band".into()),
        (Swatch::Band(BAND, stacked_alpha(95)), "95 % band".into()),
    ]
}

// ---------------------------------------------------------------- time axis

/// Time axis in hours (or days for long windows) since the record origin.
pub(crate) struct TimeAxis {
    /// Minutes per axis unit.
    scale: f64,
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
    unit: &'static str,
}

impl TimeAxis {
    pub(crate) fn new(from_min: f64, to_min: f64) -> Self {
        let span_h = (to_min - from_min) / 60.0;
        let (scale, unit, steps): (f64, &str, &[f64]) = if span_h > 96.0 {
            (
                1440.0,
                "days",
                &[1.0, 2.0, 5.0, 7.0, 14.0, 28.0, 56.0, 91.0, 182.0, 365.0],
            )
        } else {
            (60.0, "h", &[0.25, 0.5, 1.0, 2.0, 3.0, 6.0, 12.0, 24.0])
        };
        let (lo, hi) = (from_min / scale, to_min / scale);
        let step = steps
            .iter()
            .copied()
            .find(|s| (hi - lo) / s <= 10.0)
            .unwrap_or(steps[steps.len() - 1]);
        let mut ticks = Vec::new();
        let mut k = (lo / step).ceil();
        while k * step <= hi + 1e-9 && ticks.len() < 200 {
            ticks.push(k * step);
            k += 1.0;
        }
        TimeAxis {
            scale,
            lo,
            hi,
            ticks,
            unit,
        }
    }

    fn x(&self, t_min: f64) -> f64 {
        t_min / self.scale
    }

    fn desc(&self, origin: &str) -> String {
        let unit = if self.unit == "h" { "Hours" } else { "Days" };
        format!("{unit} since {origin}")
    }
}

struct ChartOpts<'s> {
    x_desc: Option<&'s str>,
    y_desc: &'s str,
    caption: Option<&'s str>,
    right_area: u32,
    show_x_labels: bool,
}

fn time_chart<'a, 'b>(
    area: &'a Area<'b>,
    ax: &TimeAxis,
    y: (f64, f64),
    o: &ChartOpts<'_>,
) -> DRes<TimeChart<'a, 'b>> {
    let mut b = ChartBuilder::on(area);
    // Extra right margin (instead of a label area, which plotters would fill
    // with a mirrored axis) keeps the plot aligned with a dual-axis panel below.
    b.margin_left(6)
        .margin_right(if o.right_area > 0 {
            6 + o.right_area
        } else {
            22
        })
        .margin_top(8)
        .margin_bottom(4);
    if let Some(c) = o.caption {
        b.caption(c, bold(13.0));
    }
    b.x_label_area_size(match (o.show_x_labels, o.x_desc.is_some()) {
        (_, true) => 48,
        (true, false) => 26,
        (false, false) => 6,
    })
    .y_label_area_size(64);
    let mut chart =
        b.build_cartesian_2d(TickAxis::new(ax.lo, ax.hi, ax.ticks.clone()), y.0..y.1)?;
    let fx = |v: &f64| fmt_time_tick(*v);
    let fy = |v: &f64| stats::fmt_axis(*v);
    let mut mesh = chart.configure_mesh();
    mesh.x_label_formatter(&fx)
        .y_label_formatter(&fy)
        .y_labels(7)
        .label_style(font_c(11.5, INK))
        .axis_desc_style(font_c(12.5, INK))
        .bold_line_style(GRID)
        .light_line_style(TRANSPARENT)
        .axis_style(AXIS)
        .y_desc(o.y_desc);
    if let Some(d) = o.x_desc {
        mesh.x_desc(d);
    }
    if !o.show_x_labels {
        mesh.x_label_style(font_c(11.5, WHITE).color(&TRANSPARENT));
    }
    mesh.draw()?;
    Ok(chart)
}

fn fmt_time_tick(v: f64) -> String {
    stats::fmt_tick(v)
}

fn draw_target_band(chart: &mut TimeChart<'_, '_>, ax: &TimeAxis, y: (f64, f64)) -> DRes {
    let lo = 70f64.clamp(y.0, y.1);
    let hi = 180f64.clamp(y.0, y.1);
    if hi > lo {
        chart.draw_series(std::iter::once(Rectangle::new(
            [(ax.lo, lo), (ax.hi, hi)],
            TARGET.mix(0.07).filled(),
        )))?;
        for v in [70.0, 180.0] {
            if v > y.0 && v < y.1 {
                chart.draw_series(DashedLineSeries::new(
                    vec![(ax.lo, v), (ax.hi, v)],
                    6,
                    4,
                    TARGET.mix(0.55).stroke_width(1),
                ))?;
            }
        }
    }
    Ok(())
}

fn glucose_range<I: IntoIterator<Item = f64>>(values: I, min_hi: f64) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values {
        if v.is_finite() {
            lo = lo.min(v);
            hi = hi.max(v);
        }
    }
    let lo = if lo.is_finite() {
        (lo - 10.0).clamp(0.0, 40.0)
    } else {
        40.0
    };
    let lo = (lo / 10.0).floor() * 10.0;
    let hi = if hi.is_finite() {
        (hi + 15.0).clamp(min_hi, 600.0)
    } else {
        min_hi
    };
    let hi = (hi / 20.0).ceil() * 20.0;
    (lo, hi.max(lo + 20.0))
}

fn clamp_y(v: f64, y: (f64, f64)) -> f64 {
    v.clamp(y.0, y.1)
}

// ---------------------------------------------------------------- figure 1: record

/// Whole-record CGM with target range, and a meal/bolus panel below.
pub(crate) fn record_figure(
    cgm: &[(f64, f64)],
    carbs: &[(f64, f64)],
    boluses: &[(f64, f64)],
    origin_label: &str,
) -> Result<String, ReportError> {
    const FIG: &str = "recorded CGM";
    let (t0, t1) = match (cgm.first(), cgm.last()) {
        (Some(a), Some(b)) => (a.0, b.0),
        _ => return Err(no_data(FIG, "the CGM series has no finite readings")),
    };
    let (t0, t1) = if t1 - t0 < 30.0 {
        (t0 - 15.0, t1 + 15.0)
    } else {
        (t0, t1)
    };
    let inside = |e: &&(f64, f64)| e.0 >= t0 && e.0 <= t1 && e.1 > 0.0;
    let carbs: Vec<(f64, f64)> = carbs.iter().filter(inside).copied().collect();
    let boluses: Vec<(f64, f64)> = boluses.iter().filter(inside).copied().collect();
    let has_events = !carbs.is_empty() || !boluses.is_empty();
    let ax = TimeAxis::new(t0, t1);
    let x_desc = ax.desc(origin_label);
    let y = glucose_range(cgm.iter().map(|p| p.1), 300.0);
    let height = if has_events { 560 } else { 430 };
    let mut items = vec![
        (Swatch::Line(CGM, 2), "Recorded CGM".to_string()),
        (
            Swatch::Band(TARGET, 0.18),
            "Target range 70–180 mg/dL".to_string(),
        ),
    ];
    if !carbs.is_empty() {
        items.push((Swatch::Bar(CARB), "Carbohydrate (g, left axis)".to_string()));
    }
    if !boluses.is_empty() {
        items.push((
            Swatch::Stem(BOLUS),
            "Insulin bolus (U, right axis)".to_string(),
        ));
    }
    let hh = header_height(1000, &items);
    render(FIG, (1000, height + hh - HEADER_H), |root| {
        let (head, body) = root.split_vertically(hh);
        header(&head, "Recorded continuous glucose monitoring", &items)?;
        let (top, bottom) = if has_events {
            let (a, b) = body.split_vertically(body.dim_in_pixel().1 - 150);
            (a, Some(b))
        } else {
            (body, None)
        };
        let right = if has_events { 56 } else { 0 };
        let mut chart = time_chart(
            &top,
            &ax,
            y,
            &ChartOpts {
                x_desc: if has_events { None } else { Some(&x_desc) },
                y_desc: "Glucose (mg/dL)",
                caption: None,
                right_area: right,
                show_x_labels: true,
            },
        )?;
        draw_target_band(&mut chart, &ax, y)?;
        let width = if cgm.len() > 3000 { 1 } else { 2 };
        for seg in stats::split_gaps(cgm, stats::gap_threshold(cgm)) {
            if seg.len() == 1 {
                chart.draw_series(std::iter::once(Circle::new(
                    (ax.x(seg[0].0), clamp_y(seg[0].1, y)),
                    2,
                    CGM.filled(),
                )))?;
            } else {
                chart.draw_series(LineSeries::new(
                    seg.iter().map(|&(t, v)| (ax.x(t), clamp_y(v, y))),
                    CGM.stroke_width(width),
                ))?;
            }
        }
        if let Some(bottom) = bottom {
            draw_events(&bottom, &ax, &x_desc, &carbs, &boluses)?;
        }
        Ok(())
    })
}

fn draw_events(
    area: &Area<'_>,
    ax: &TimeAxis,
    x_desc: &str,
    carbs: &[(f64, f64)],
    boluses: &[(f64, f64)],
) -> DRes {
    let cmax = carbs.iter().map(|c| c.1).fold(0.0, f64::max);
    let bmax = boluses.iter().map(|b| b.1).fold(0.0, f64::max);
    let cy = ((cmax * 1.3).max(10.0) / 10.0).ceil() * 10.0;
    let by = ((bmax * 1.3).max(1.0) * 2.0).ceil() / 2.0;
    let mut chart = ChartBuilder::on(area)
        .margin_left(6)
        .margin_right(6)
        .margin_top(10)
        .margin_bottom(4)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .right_y_label_area_size(56)
        .build_cartesian_2d(TickAxis::new(ax.lo, ax.hi, ax.ticks.clone()), 0.0..cy)?
        .set_secondary_coord(ax.lo..ax.hi, 0.0..by);
    let fx = |v: &f64| fmt_time_tick(*v);
    let fy = |v: &f64| stats::fmt_axis(*v);
    chart
        .configure_mesh()
        .x_label_formatter(&fx)
        .y_label_formatter(&fy)
        .y_labels(3)
        .label_style(font_c(11.5, INK))
        .axis_desc_style(font_c(12.5, INK))
        .bold_line_style(GRID)
        .light_line_style(TRANSPARENT)
        .axis_style(AXIS)
        .x_desc(x_desc)
        .y_desc("Carbs (g)")
        .draw()?;
    chart
        .configure_secondary_axes()
        .y_labels(3)
        .y_label_formatter(&fy)
        .label_style(font_c(11.5, INK))
        .axis_desc_style(font_c(12.5, INK))
        .axis_style(AXIS)
        .y_desc("Bolus (U)")
        .draw()?;
    let bw = (ax.hi - ax.lo) / 300.0;
    chart.draw_series(carbs.iter().map(|&(t, g)| {
        let x = ax.x(t);
        Rectangle::new(
            [(x - bw, 0.0), (x + bw, g.min(cy))],
            CARB.mix(0.85).filled(),
        )
    }))?;
    if carbs.len() <= 40 {
        chart.draw_series(carbs.iter().map(|&(t, g)| {
            Text::new(
                format!("{} g", stats::fmt_f(g, 0)),
                (ax.x(t) - 1.5 * bw, g.min(cy)),
                anchored(
                    font_c(10.0, RGBColor(160, 82, 0)),
                    HPos::Right,
                    VPos::Center,
                ),
            )
        }))?;
    }
    if boluses.len() <= 40 {
        chart.draw_secondary_series(boluses.iter().map(|&(t, u)| {
            Text::new(
                format!("{} U", stats::fmt_sig(u, 2)),
                (ax.x(t) + 1.5 * bw, u.min(by)),
                anchored(font_c(10.0, BOLUS), HPos::Left, VPos::Center),
            )
        }))?;
    }
    for &(t, u) in boluses {
        let x = ax.x(t);
        chart.draw_secondary_series(std::iter::once(PathElement::new(
            vec![(x, 0.0), (x, u.min(by))],
            BOLUS.stroke_width(2),
        )))?;
        chart.draw_secondary_series(std::iter::once(TriangleMarker::new(
            (x, u.min(by)),
            5,
            BOLUS.filled(),
        )))?;
    }
    Ok(())
}

// ---------------------------------------------------------------- figure 2: cones

/// Draws cone bands, medians and origins into an existing chart.
fn draw_cones(
    chart: &mut TimeChart<'_, '_>,
    ax: &TimeAxis,
    y: (f64, f64),
    cones: &[(usize, &Cone)],
    from: f64,
    to: f64,
    label_origins: bool,
) -> DRes {
    for &(num, cone) in cones {
        let rows: Vec<ConeRow> = stats::cone_rows(cone)
            .into_iter()
            .filter(|r| r.t >= from && r.t <= to)
            .collect();
        let runs = split_rows(&rows);
        for (level, alpha) in BAND_ALPHA {
            for run in &runs {
                if run.len() < 2 {
                    continue;
                }
                let mut poly: Vec<(f64, f64)> = run
                    .iter()
                    .map(|r| (ax.x(r.t), clamp_y(r.band(level).1, y)))
                    .collect();
                poly.extend(
                    run.iter()
                        .rev()
                        .map(|r| (ax.x(r.t), clamp_y(r.band(level).0, y))),
                );
                chart.draw_series(std::iter::once(Polygon::new(
                    poly,
                    BAND.mix(alpha).filled(),
                )))?;
            }
        }
        for run in &runs {
            chart.draw_series(LineSeries::new(
                run.iter().map(|r| (ax.x(r.t), clamp_y(r.med, y))),
                MEDIAN.stroke_width(2),
            ))?;
        }
        let o = cone.origin_min;
        if o.is_finite() && o >= from && o <= to {
            chart.draw_series(DashedLineSeries::new(
                vec![(ax.x(o), y.0), (ax.x(o), y.1)],
                5,
                4,
                MUTED.stroke_width(1),
            ))?;
            let label = if label_origins {
                format!(" #{num}")
            } else {
                " origin".to_string()
            };
            chart.draw_series(std::iter::once(Text::new(
                label,
                (ax.x(o), y.1),
                anchored(font_c(11.0, MUTED), HPos::Left, VPos::Top),
            )))?;
        }
    }
    Ok(())
}

/// Splits cone rows at holes (dropped non-finite rows or gaps > 3 steps).
fn split_rows(rows: &[ConeRow]) -> Vec<&[ConeRow]> {
    let mut d: Vec<f64> = rows
        .windows(2)
        .map(|w| w[1].t - w[0].t)
        .filter(|d| *d > 0.0)
        .collect();
    d.sort_by(f64::total_cmp);
    let step = stats::quantile_sorted(&d, 0.5);
    let max_gap = if step.is_finite() {
        (3.0 * step).max(1e-9)
    } else {
        f64::INFINITY
    };
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..rows.len() {
        if rows[i].t - rows[i - 1].t > max_gap {
            out.push(&rows[start..i]);
            start = i;
        }
    }
    if start < rows.len() {
        out.push(&rows[start..]);
    }
    out
}

/// Draws recorded CGM as dots (filled up to `split`, hollow after), or as a
/// line when there are too many points for dots.
fn draw_cgm_points(
    chart: &mut TimeChart<'_, '_>,
    ax: &TimeAxis,
    y: (f64, f64),
    pts: &[(f64, f64)],
    split: Option<f64>,
) -> DRes {
    if pts.len() > 700 {
        for seg in stats::split_gaps(pts, stats::gap_threshold(pts)) {
            chart.draw_series(LineSeries::new(
                seg.iter().map(|&(t, v)| (ax.x(t), clamp_y(v, y))),
                CGM.stroke_width(1),
            ))?;
        }
        return Ok(());
    }
    let r = if pts.len() > 300 { 2 } else { 3 };
    let split = split.unwrap_or(f64::INFINITY);
    chart.draw_series(
        pts.iter()
            .filter(|p| p.0 <= split)
            .map(|&(t, v)| Circle::new((ax.x(t), clamp_y(v, y)), r, CGM.filled())),
    )?;
    chart.draw_series(
        pts.iter()
            .filter(|p| p.0 > split)
            .map(|&(t, v)| Circle::new((ax.x(t), clamp_y(v, y)), r, WHITE.mix(0.6).filled())),
    )?;
    chart.draw_series(
        pts.iter()
            .filter(|p| p.0 > split)
            .map(|&(t, v)| Circle::new((ax.x(t), clamp_y(v, y)), r, CGM.stroke_width(1))),
    )?;
    Ok(())
}

fn single_origin(cones: &[(usize, &Cone)]) -> Option<f64> {
    let first = cones.first()?.1.origin_min;
    (first.is_finite() && cones.iter().all(|c| c.1.origin_min == first)).then_some(first)
}

fn cgm_legend(split: Option<f64>, many_points: bool, compact: bool) -> Vec<(Swatch, String)> {
    if compact && split.is_some() && !many_points {
        vec![
            (Swatch::Dot(CGM), "CGM seen".into()),
            (Swatch::Ring(CGM), "CGM held out".into()),
        ]
    } else if many_points {
        vec![(Swatch::Line(CGM, 1), "Recorded CGM".into())]
    } else if split.is_some() {
        vec![
            (Swatch::Dot(CGM), "CGM seen by the twin".into()),
            (Swatch::Ring(CGM), "CGM after the origin (held out)".into()),
        ]
    } else {
        vec![(Swatch::Dot(CGM), "Recorded CGM".into())]
    }
}

/// A window `[from, to]` with CGM points and cones (shared by the public
/// `cone_plot_svg` and the report panels).
#[allow(clippy::too_many_arguments)]
pub(crate) fn cone_figure(
    figure: &str,
    cgm: &[(f64, f64)],
    cones: &[(usize, &Cone)],
    from: f64,
    to: f64,
    title: &str,
    origin_label: &str,
    size: (u32, u32),
) -> Result<String, ReportError> {
    if !(from.is_finite() && to.is_finite() && to > from) {
        return Err(ReportError::InvalidWindow {
            from_min: from,
            to_min: to,
        });
    }
    let pts: Vec<(f64, f64)> = cgm
        .iter()
        .copied()
        .filter(|p| p.0 >= from && p.0 <= to)
        .collect();
    let rows: Vec<ConeRow> = cones
        .iter()
        .flat_map(|c| stats::cone_rows(c.1))
        .filter(|r| r.t >= from && r.t <= to)
        .collect();
    if pts.is_empty() && rows.is_empty() {
        return Err(no_data(
            figure,
            "no finite CGM reading or forecast inside the time window",
        ));
    }
    let y = glucose_range(
        pts.iter()
            .map(|p| p.1)
            .chain(rows.iter().flat_map(|r| [r.min(), r.max()])),
        300.0,
    );
    let ax = TimeAxis::new(from, to);
    let x_desc = ax.desc(origin_label);
    let split = single_origin(cones);
    let compact = size.0 < 800;
    let mut items = cgm_legend(split, pts.len() > 700, compact);
    if !rows.is_empty() {
        items.extend(band_legend(compact));
    }
    items.push((
        Swatch::Band(TARGET, 0.15),
        if compact {
            "70–180"
        } else {
            "Target 70–180"
        }
        .into(),
    ));
    if cones.iter().any(|c| c.1.origin_min.is_finite()) {
        items.push((
            Swatch::Dashed(MUTED),
            if compact { "Origin" } else { "Forecast origin" }.into(),
        ));
    }
    let header_h = header_height(size.0, &items);
    render(figure, size, |root| {
        let (head, body) = root.split_vertically(header_h);
        header(&head, title, &items)?;
        let mut chart = time_chart(
            &body,
            &ax,
            y,
            &ChartOpts {
                x_desc: Some(&x_desc),
                y_desc: "Glucose (mg/dL)",
                caption: None,
                right_area: 0,
                show_x_labels: true,
            },
        )?;
        draw_target_band(&mut chart, &ax, y)?;
        draw_cones(
            &mut chart,
            &ax,
            y,
            cones,
            from,
            to,
            cones.len() > 1 && split.is_none(),
        )?;
        draw_cgm_points(&mut chart, &ax, y, &pts, split)
    })
}

// ---------------------------------------------------------------- figure 3: narrowing

/// Time window covering all narrowing cones plus some history before the earliest origin.
pub(crate) fn narrowing_window(items: &[(String, Cone)]) -> Option<(f64, f64)> {
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    let mut origin = f64::INFINITY;
    for (_, c) in items {
        let rows = stats::cone_rows(c);
        let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
            continue; // an empty cone says nothing about the window
        };
        lo = lo.min(first.t);
        hi = hi.max(last.t);
        // Ignore origins implausibly far before the forecast itself.
        if c.origin_min.is_finite() && c.origin_min >= first.t - 1440.0 {
            origin = origin.min(c.origin_min);
        }
    }
    if !(lo.is_finite() && hi.is_finite()) {
        return None;
    }
    let start = origin.min(lo);
    let horizon = hi - start;
    let lookback = (0.5 * horizon).clamp(120.0, 360.0);
    Some((start - lookback, hi + 10.0))
}

/// Small multiples: one panel per twin, same window and y-axis.
pub(crate) fn narrowing_figure(
    cgm: &[(f64, f64)],
    items: &[(String, Cone)],
    origin_label: &str,
) -> Result<String, ReportError> {
    const FIG: &str = "narrowing";
    let (from, to) =
        narrowing_window(items).ok_or_else(|| no_data(FIG, "no cone has a finite forecast"))?;
    let pts: Vec<(f64, f64)> = cgm
        .iter()
        .copied()
        .filter(|p| p.0 >= from && p.0 <= to)
        .collect();
    let all_rows: Vec<ConeRow> = items
        .iter()
        .flat_map(|(_, c)| stats::cone_rows(c))
        .collect();
    let y = glucose_range(
        pts.iter()
            .map(|p| p.1)
            .chain(all_rows.iter().flat_map(|r| [r.min(), r.max()])),
        300.0,
    );
    let ax = TimeAxis::new(from, to);
    let x_desc = ax.desc(origin_label);
    let n = items.len();
    let cols = n.clamp(1, 3);
    let rows_n = n.div_ceil(cols);
    let cell_h = 330u32;
    let split = {
        let usable: Vec<f64> = items
            .iter()
            .filter(|(_, c)| !stats::cone_rows(c).is_empty())
            .map(|(_, c)| c.origin_min)
            .collect();
        let o = usable.first().copied().unwrap_or(f64::NAN);
        (o.is_finite() && usable.iter().all(|x| *x == o)).then_some(o)
    };
    let mut legend_items = cgm_legend(split, pts.len() > 700, false);
    legend_items.extend(band_legend(false));
    legend_items.push((Swatch::Band(TARGET, 0.15), "Target 70–180".into()));
    let title = "The same forecast window, from twins calibrated on more and more data";
    let hh = header_height(1000, &legend_items);
    render(FIG, (1000, hh + rows_n as u32 * cell_h), |root| {
        let (head, body) = root.split_vertically(hh);
        header(&head, title, &legend_items)?;
        let cells = body.split_evenly((rows_n, cols));
        for ((label, cone), cell) in items.iter().zip(cells.iter()) {
            let s = stats::summarize_cone(cone, cgm);
            let caption = match &s {
                Some(s) => format!(
                    "{label} · mean 80 % width {} mg/dL",
                    stats::fmt_f(s.mean_width[1], 0)
                ),
                None => format!("{label} · no finite forecast"),
            };
            let mut chart = time_chart(
                cell,
                &ax,
                y,
                &ChartOpts {
                    x_desc: Some(&x_desc),
                    y_desc: "Glucose (mg/dL)",
                    caption: Some(&caption),
                    right_area: 0,
                    show_x_labels: true,
                },
            )?;
            draw_target_band(&mut chart, &ax, y)?;
            draw_cones(&mut chart, &ax, y, &[(1, cone)], from, to, false)?;
            draw_cgm_points(
                &mut chart,
                &ax,
                y,
                &pts,
                split.or(cone.origin_min.is_finite().then_some(cone.origin_min)),
            )?;
        }
        Ok(())
    })
}

/// Label, colour and `(lead h, 80 % width, 95 % width)` points of one twin.
type WidthCurve = (String, RGBColor, Vec<(f64, f64, f64)>);

/// Band width versus lead time, one colour per twin.
pub(crate) fn narrowing_width_figure(items: &[(String, Cone)]) -> Result<String, ReportError> {
    const FIG: &str = "narrowing band width";
    let curves: Vec<WidthCurve> = items
        .iter()
        .enumerate()
        .map(|(i, (label, c))| {
            let rows = stats::cone_rows(c);
            let o = if c.origin_min.is_finite() {
                c.origin_min
            } else {
                rows.first().map(|r| r.t).unwrap_or(0.0)
            };
            let pts = rows
                .iter()
                .map(|r| ((r.t - o) / 60.0, r.hi80 - r.lo80, r.hi95 - r.lo95))
                .collect();
            (label.clone(), CAT[i % CAT.len()], pts)
        })
        .filter(|c: &WidthCurve| !c.2.is_empty())
        .collect();
    if curves.is_empty() {
        return Err(no_data(FIG, "no cone has a finite forecast"));
    }
    let xmax = curves
        .iter()
        .flat_map(|c| c.2.iter().map(|p| p.0))
        .fold(f64::NEG_INFINITY, f64::max);
    let xmin = curves
        .iter()
        .flat_map(|c| c.2.iter().map(|p| p.0))
        .fold(f64::INFINITY, f64::min)
        .min(0.0);
    let xmax = if xmax > xmin { xmax } else { xmin + 1.0 };
    let ymax = curves
        .iter()
        .flat_map(|c| c.2.iter().flat_map(|p| [p.1, p.2]))
        .fold(0.0, f64::max)
        .max(10.0)
        * 1.08;
    let mut legend_items: Vec<(Swatch, String)> = curves
        .iter()
        .map(|(l, c, _)| (Swatch::Line(*c, 3), l.clone()))
        .collect();
    legend_items.push((Swatch::Line(MUTED, 2), "solid: 80 % band".into()));
    legend_items.push((Swatch::Dashed(MUTED), "dashed: 95 % band".into()));
    let hh = header_height(1000, &legend_items);
    render(FIG, (1000, 338 + hh), |root| {
        let (head, body) = root.split_vertically(hh);
        header(&head, "Forecast band width versus lead time", &legend_items)?;
        let mut chart = ChartBuilder::on(&body)
            .margin_left(6)
            .margin_right(22)
            .margin_top(8)
            .margin_bottom(4)
            .x_label_area_size(48)
            .y_label_area_size(64)
            .build_cartesian_2d(xmin..xmax, 0.0..ymax)?;
        let fx = |v: &f64| stats::fmt_tick(*v);
        let fy = |v: &f64| stats::fmt_axis(*v);
        chart
            .configure_mesh()
            .x_label_formatter(&fx)
            .y_label_formatter(&fy)
            .label_style(font_c(11.5, INK))
            .axis_desc_style(font_c(12.5, INK))
            .bold_line_style(GRID)
            .light_line_style(TRANSPARENT)
            .axis_style(AXIS)
            .x_desc("Lead time after the forecast origin (h)")
            .y_desc("Band width (mg/dL)")
            .draw()?;
        for (_, color, pts) in &curves {
            chart.draw_series(DashedLineSeries::new(
                pts.iter()
                    .map(|p| (p.0, p.2.clamp(0.0, ymax)))
                    .collect::<Vec<_>>(),
                7,
                5,
                color.mix(0.9).stroke_width(2),
            ))?;
            chart.draw_series(LineSeries::new(
                pts.iter().map(|p| (p.0, p.1.clamp(0.0, ymax))),
                color.stroke_width(3),
            ))?;
        }
        Ok(())
    })
}

// ---------------------------------------------------------------- AGP

/// The ambulatory glucose profile figure: 5–95 % and 25–75 % bands and the median of CGM by
/// time of day (slots of [`stats::agp`]), over the 70–180 mg/dL target range.
pub(crate) fn agp_figure(slots: &[stats::AgpSlot]) -> Result<String, ReportError> {
    const FIG: &str = "ambulatory glucose profile";
    let pts: Vec<(f64, [f64; 5])> = slots
        .iter()
        .filter(|s| s.p.iter().all(|v| v.is_finite()))
        .map(|s| (s.minute_of_day / 60.0, s.p))
        .collect();
    if pts.len() < 2 {
        return Err(no_data(
            FIG,
            "fewer than two time-of-day slots hold enough CGM readings",
        ));
    }
    let (ylo, yhi) = glucose_range(pts.iter().flat_map(|p| p.1), 300.0);
    let items = vec![
        (Swatch::Band(BAND, 0.18), "5–95 %".to_string()),
        (Swatch::Band(BAND, 0.38), "25–75 %".to_string()),
        (Swatch::Line(MEDIAN, 3), "median".to_string()),
    ];
    let hh = header_height(1000, &items);
    render(FIG, (1000, 360 + hh), |root| {
        let (head, body) = root.split_vertically(hh);
        header(
            &head,
            "Ambulatory glucose profile (all days, by time of day)",
            &items,
        )?;
        let mut chart = ChartBuilder::on(&body)
            .margin_left(6)
            .margin_right(22)
            .margin_top(8)
            .margin_bottom(4)
            .x_label_area_size(48)
            .y_label_area_size(64)
            .build_cartesian_2d(0.0..24.0, ylo..yhi)?;
        let fx = |v: &f64| format!("{:02}:00", *v as i64);
        let fy = |v: &f64| stats::fmt_axis(*v);
        chart
            .configure_mesh()
            .x_labels(13)
            .x_label_formatter(&fx)
            .y_label_formatter(&fy)
            .label_style(font_c(11.5, INK))
            .axis_desc_style(font_c(12.5, INK))
            .bold_line_style(GRID)
            .light_line_style(TRANSPARENT)
            .axis_style(AXIS)
            .x_desc("Time of day (local)")
            .y_desc("Glucose (mg/dL)")
            .draw()?;
        chart.draw_series(std::iter::once(Rectangle::new(
            [(0.0, 70f64.clamp(ylo, yhi)), (24.0, 180f64.clamp(ylo, yhi))],
            TARGET.mix(0.07).filled(),
        )))?;
        for (lo, hi, alpha) in [(0, 4, 0.18), (1, 3, 0.38)] {
            let mut poly: Vec<(f64, f64)> = pts.iter().map(|p| (p.0, p.1[hi])).collect();
            poly.extend(pts.iter().rev().map(|p| (p.0, p.1[lo])));
            chart.draw_series(std::iter::once(Polygon::new(
                poly,
                BAND.mix(alpha).filled(),
            )))?;
        }
        chart.draw_series(LineSeries::new(
            pts.iter().map(|p| (p.0, p.1[2])),
            MEDIAN.stroke_width(3),
        ))?;
        Ok(())
    })
}

// ---------------------------------------------------------------- figure 4: posteriors

struct Hist {
    lo: f64,
    hi: f64,
    log: bool,
    prior: Vec<f64>,
    post: Vec<f64>,
    post_median: f64,
}

fn histograms(p: &ParameterPosterior) -> Option<Hist> {
    let prior = stats::sorted_finite(&p.prior_samples);
    let post = stats::sorted_finite(&p.posterior_samples);
    if prior.is_empty() && post.is_empty() {
        return None;
    }
    let all_positive = prior.iter().chain(&post).all(|v| *v > 0.0);
    let q = |v: &[f64], q: f64| stats::quantile_sorted(v, q);
    let lo = [q(&prior, 0.005), q(&post, 0.005)]
        .into_iter()
        .filter(|x| x.is_finite())
        .fold(f64::INFINITY, f64::min);
    let hi = [q(&prior, 0.995), q(&post, 0.995)]
        .into_iter()
        .filter(|x| x.is_finite())
        .fold(f64::NEG_INFINITY, f64::max);
    let log = all_positive && lo > 0.0 && hi / lo > 50.0;
    let tf = |x: f64| if log { x.log10() } else { x };
    let (mut lo, mut hi) = (tf(lo), tf(hi));
    if hi.is_nan() || lo.is_nan() || hi <= lo {
        let pad = (lo.abs() * 0.05).max(1e-6);
        lo -= pad;
        hi += pad;
    }
    let n = prior.len().max(post.len());
    let bins = ((n as f64).sqrt().round() as usize).clamp(12, 40);
    let width = (hi - lo) / bins as f64;
    let dens = |v: &[f64]| -> Vec<f64> {
        let mut c = vec![0.0; bins];
        for &x in v {
            let x = tf(x);
            if x >= lo && x <= hi {
                let k = (((x - lo) / width) as usize).min(bins - 1);
                c[k] += 1.0;
            }
        }
        if !v.is_empty() {
            for ci in &mut c {
                *ci /= v.len() as f64 * width;
            }
        }
        c
    };
    Some(Hist {
        lo,
        hi,
        log,
        prior: dens(&prior),
        post: dens(&post),
        post_median: tf(q(&post, 0.5)),
    })
}

/// Ticks 1-2-5 × 10^k inside `[lo, hi]` (log10 units).
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut out = Vec::new();
    let (k0, k1) = (lo.floor() as i32 - 1, hi.ceil() as i32 + 1);
    for k in k0..=k1 {
        for m in [1.0f64, 2.0, 5.0] {
            let v = (m * 10f64.powi(k)).log10();
            if v >= lo && v <= hi {
                out.push(v);
            }
        }
    }
    if out.len() > 8 {
        out.retain(|v| (v - v.round()).abs() < 1e-9);
    }
    out
}

/// Small multiples of prior vs posterior histograms, three per row.
pub(crate) fn posteriors_figure(params: &[ParameterPosterior]) -> Result<String, ReportError> {
    const FIG: &str = "parameter posteriors";
    let hists: Vec<Option<Hist>> = params.iter().map(histograms).collect();
    if hists.iter().all(Option::is_none) {
        return Err(no_data(
            FIG,
            "no parameter has finite prior or posterior samples",
        ));
    }
    let n = params.len();
    let cols = n.clamp(1, 3);
    let rows = n.div_ceil(cols);
    let cell_h = 260u32;
    let items = vec![
        (Swatch::Band(PRIOR, 0.45), "Population prior".to_string()),
        (Swatch::Band(POST, 0.6), "Patient posterior".to_string()),
        (Swatch::Dashed(MEDIAN), "Posterior median".to_string()),
    ];
    let hh = header_height(1000, &items);
    render(FIG, (1000, hh + rows as u32 * cell_h), |root| {
        let (head, body) = root.split_vertically(hh);
        header(
            &head,
            "Model parameters: population prior versus patient posterior",
            &items,
        )?;
        let cells = body.split_evenly((rows, cols));
        for ((p, h), cell) in params.iter().zip(&hists).zip(cells.iter()) {
            let caption = if p.unit.trim().is_empty() {
                p.name.clone()
            } else {
                format!("{} ({})", p.name, p.unit)
            };
            let Some(h) = h else {
                cell.draw(&Text::new(
                    format!("{caption}: no finite samples"),
                    (20, 30),
                    anchored(font_c(12.0, MUTED), HPos::Left, VPos::Top),
                ))?;
                continue;
            };
            let ymax = h
                .prior
                .iter()
                .chain(&h.post)
                .fold(0.0, |a: f64, b| a.max(*b));
            let ymax = if ymax > 0.0 && ymax.is_finite() {
                ymax * 1.1
            } else {
                1.0
            };
            let x_desc = match (p.unit.trim().is_empty(), h.log) {
                (true, false) => "value".to_string(),
                (true, true) => "value (log scale)".to_string(),
                (false, false) => p.unit.clone(),
                (false, true) => format!("{} (log scale)", p.unit),
            };
            let mut ticks = if h.log {
                log_ticks(h.lo, h.hi)
            } else {
                Vec::new()
            };
            let log = h.log && ticks.len() >= 2;
            if !log {
                ticks.clear();
            }
            let xr = if log {
                TickAxis::new(h.lo, h.hi, ticks)
            } else {
                let t = nice_ticks(h.lo, h.hi, 5);
                TickAxis::new(h.lo, h.hi, t)
            };
            let mut chart = ChartBuilder::on(cell)
                .caption(caption, bold(13.0))
                .margin(8)
                .margin_right(18)
                .x_label_area_size(42)
                .y_label_area_size(58)
                .build_cartesian_2d(xr, 0.0..ymax)?;
            let fx = move |v: &f64| {
                if h.log {
                    stats::fmt_axis(10f64.powf(*v))
                } else {
                    stats::fmt_axis(*v)
                }
            };
            let fy = |v: &f64| stats::fmt_axis(*v);
            chart
                .configure_mesh()
                .x_label_formatter(&fx)
                .y_label_formatter(&fy)
                .y_labels(4)
                .label_style(font_c(10.5, INK))
                .axis_desc_style(font_c(11.5, INK))
                .bold_line_style(GRID)
                .light_line_style(TRANSPARENT)
                .axis_style(AXIS)
                .x_desc(x_desc)
                .y_desc("Density")
                .draw()?;
            let bins = h.prior.len();
            let w = (h.hi - h.lo) / bins as f64;
            for (dens, color, alpha) in [(&h.prior, PRIOR, 0.45), (&h.post, POST, 0.6)] {
                chart.draw_series(dens.iter().enumerate().filter(|(_, d)| **d > 0.0).map(
                    |(k, d)| {
                        let x0 = h.lo + k as f64 * w;
                        Rectangle::new(
                            [(x0, 0.0), (x0 + w, d.min(ymax))],
                            color.mix(alpha).filled(),
                        )
                    },
                ))?;
            }
            if h.post_median.is_finite() && h.post_median >= h.lo && h.post_median <= h.hi {
                chart.draw_series(DashedLineSeries::new(
                    vec![(h.post_median, 0.0), (h.post_median, ymax)],
                    5,
                    3,
                    MEDIAN.stroke_width(2),
                ))?;
            }
        }
        Ok(())
    })
}

/// "Nice" linear ticks (1-2-5 steps) inside `[lo, hi]`.
fn nice_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    let span = hi - lo;
    if span.is_nan() || span <= 0.0 || !span.is_finite() {
        return vec![lo];
    }
    let raw = span / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let mut out = Vec::new();
    let mut k = (lo / step).ceil();
    while k * step <= hi + step * 1e-9 && out.len() < 50 {
        let v = k * step;
        out.push(if v.abs() < step * 1e-9 { 0.0 } else { v });
        k += 1.0;
    }
    out
}

// ---------------------------------------------------------------- figure 5: backtest

/// RMSE and coverage versus horizon.
pub(crate) fn backtest_figure(
    rows: &[BacktestRow],
    coverage_scale: f64,
) -> Result<String, ReportError> {
    const FIG: &str = "backtest";
    let mut rows: Vec<&BacktestRow> = rows.iter().collect();
    rows.sort_by_key(|r| r.horizon_min);
    let finite_err = rows
        .iter()
        .any(|r| r.rmse_mg_dl.is_finite() || r.persistence_rmse_mg_dl.is_finite());
    if rows.is_empty() || !finite_err {
        return Err(no_data(FIG, "no backtest row has a finite error"));
    }
    let hmax = rows.iter().map(|r| r.horizon_min).max().unwrap_or(60) as f64;
    let xr = (0.0, (hmax * 1.08).max(10.0));
    let ticks: Vec<f64> = {
        let mut t: Vec<f64> = rows.iter().map(|r| r.horizon_min as f64).collect();
        t.dedup();
        if t.len() > 12 {
            nice_ticks(xr.0, xr.1, 8)
        } else {
            t
        }
    };
    let emax = rows
        .iter()
        .flat_map(|r| [r.rmse_mg_dl, r.mae_mg_dl, r.persistence_rmse_mg_dl])
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max)
        .max(5.0)
        * 1.12;
    let cov = |v: f64| v * coverage_scale;
    let cmin = rows
        .iter()
        .flat_map(|r| [cov(r.coverage_80), cov(r.coverage_95)])
        .filter(|v| v.is_finite())
        .fold(50.0, f64::min);
    let cmin = ((cmin - 5.0).max(0.0) / 10.0).floor() * 10.0;
    let items = vec![
        (Swatch::Line(BAND, 2), "Twin RMSE".to_string()),
        (Swatch::Dashed(BAND), "Twin MAE".to_string()),
        (Swatch::Line(PERSIST, 2), "Persistence RMSE".to_string()),
        (Swatch::Line(CAT[1], 2), "Coverage of 80 % band".to_string()),
        (Swatch::Line(CAT[3], 2), "Coverage of 95 % band".to_string()),
        (Swatch::Dashed(MUTED), "Nominal level".to_string()),
    ];
    let hh = header_height(1000, &items);
    render(FIG, (1000, 338 + hh), |root| {
        let (head, body) = root.split_vertically(hh);
        header(&head, "Rolling-origin forecast backtest", &items)?;
        let (left, right) = body.split_horizontally(500);
        let fx = |v: &f64| stats::fmt_tick(*v);
        let fy = |v: &f64| stats::fmt_axis(*v);
        // Error panel.
        {
            let mut chart = ChartBuilder::on(&left)
                .caption("Point-forecast error", bold(13.0))
                .margin(8)
                .margin_right(18)
                .x_label_area_size(44)
                .y_label_area_size(58)
                .build_cartesian_2d(TickAxis::new(xr.0, xr.1, ticks.clone()), 0.0..emax)?;
            chart
                .configure_mesh()
                .x_label_formatter(&fx)
                .y_label_formatter(&fy)
                .y_labels(6)
                .label_style(font_c(11.0, INK))
                .axis_desc_style(font_c(12.0, INK))
                .bold_line_style(GRID)
                .light_line_style(TRANSPARENT)
                .axis_style(AXIS)
                .x_desc("Forecast horizon (min)")
                .y_desc("Error (mg/dL)")
                .draw()?;
            let series = |f: fn(&BacktestRow) -> f64| -> Vec<(f64, f64)> {
                rows.iter()
                    .map(|r| (r.horizon_min as f64, f(r)))
                    .filter(|p| p.1.is_finite())
                    .map(|(x, v)| (x, v.clamp(0.0, emax)))
                    .collect()
            };
            let rmse = series(|r| r.rmse_mg_dl);
            let mae = series(|r| r.mae_mg_dl);
            let pers = series(|r| r.persistence_rmse_mg_dl);
            chart.draw_series(LineSeries::new(pers.clone(), PERSIST.stroke_width(2)))?;
            chart.draw_series(pers.iter().map(|&p| Circle::new(p, 4, PERSIST.filled())))?;
            chart.draw_series(DashedLineSeries::new(
                mae.clone(),
                6,
                4,
                BAND.stroke_width(2),
            ))?;
            chart.draw_series(LineSeries::new(rmse.clone(), BAND.stroke_width(2)))?;
            chart.draw_series(rmse.iter().map(|&p| Circle::new(p, 4, BAND.filled())))?;
        }
        // Coverage panel.
        {
            let mut chart = ChartBuilder::on(&right)
                .caption("Prediction-interval coverage", bold(13.0))
                .margin(8)
                .margin_right(18)
                .x_label_area_size(44)
                .y_label_area_size(58)
                .build_cartesian_2d(TickAxis::new(xr.0, xr.1, ticks.clone()), cmin..100.0)?;
            chart
                .configure_mesh()
                .x_label_formatter(&fx)
                .y_label_formatter(&fy)
                .y_labels(6)
                .label_style(font_c(11.0, INK))
                .axis_desc_style(font_c(12.0, INK))
                .bold_line_style(GRID)
                .light_line_style(TRANSPARENT)
                .axis_style(AXIS)
                .x_desc("Forecast horizon (min)")
                .y_desc("Observations inside band (%)")
                .draw()?;
            for (nominal, color, f) in [
                (
                    80.0,
                    CAT[1],
                    (|r: &BacktestRow| r.coverage_80) as fn(&BacktestRow) -> f64,
                ),
                (95.0, CAT[3], |r: &BacktestRow| r.coverage_95),
            ] {
                if nominal >= cmin {
                    chart.draw_series(DashedLineSeries::new(
                        vec![(xr.0, nominal), (xr.1, nominal)],
                        6,
                        4,
                        color.mix(0.8).stroke_width(1),
                    ))?;
                }
                let pts: Vec<(f64, f64)> = rows
                    .iter()
                    .map(|r| (r.horizon_min as f64, cov(f(r))))
                    .filter(|p| p.1.is_finite())
                    .map(|(x, v)| (x, v.clamp(cmin, 100.0)))
                    .collect();
                chart.draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?;
                chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_axis_ticks() {
        let ax = TimeAxis::new(0.0, 48.0 * 60.0);
        assert_eq!(ax.unit, "h");
        assert_eq!(
            ax.ticks,
            vec![0.0, 6.0, 12.0, 18.0, 24.0, 30.0, 36.0, 42.0, 48.0]
        );
        let ax = TimeAxis::new(0.0, 14.0 * 1440.0);
        assert_eq!(ax.unit, "days");
        assert_eq!(ax.ticks.len(), 8);
        let ax = TimeAxis::new(600.0, 840.0);
        assert_eq!(ax.ticks.first(), Some(&10.0));
    }

    #[test]
    fn ticks_helpers() {
        assert_eq!(
            nice_ticks(0.0, 10.0, 5),
            vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
        );
        assert_eq!(nice_ticks(1.0, 1.0, 5), vec![1.0]);
        let lt = log_ticks(-1.0, 1.0);
        assert!(lt.contains(&0.0));
        assert!(stacked_alpha(95) < stacked_alpha(80));
        assert!(stacked_alpha(80) < stacked_alpha(50));
    }

    #[test]
    fn glucose_range_sane() {
        assert_eq!(glucose_range([], 300.0), (40.0, 300.0));
        let (lo, hi) = glucose_range([f64::NAN, 55.0, 420.0], 300.0);
        assert!(lo <= 45.0 && hi >= 420.0);
    }
}
