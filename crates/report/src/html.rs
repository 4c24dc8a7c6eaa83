//! HTML assembly: one self-contained page, figures inline.

use std::fmt::Write as _;

use crate::plots;
use crate::stats::{self, fmt_f, fmt_hours, fmt_pct, fmt_sig};
use crate::{html_escape as esc, Cone, ReportError, TwinReport};

/// At most this many per-cone panels are drawn (all cones stay in the table).
const MAX_CONE_PANELS: usize = 24;

pub(crate) struct Built {
    pub html: String,
    pub svgs: Vec<(String, String)>,
}

/// A table cell: already-escaped HTML plus a CSS class.
struct Cell {
    html: String,
    class: &'static str,
}

impl Cell {
    fn text(s: &str) -> Self {
        Cell {
            html: esc(s),
            class: "",
        }
    }
    fn num(s: String) -> Self {
        Cell {
            html: esc(&s),
            class: "num",
        }
    }
    fn num_class(s: String, class: &'static str) -> Self {
        Cell {
            html: esc(&s),
            class,
        }
    }
}

struct Doc {
    out: String,
    svgs: Vec<(String, String)>,
    fig_no: usize,
    tab_no: usize,
}

impl Doc {
    fn push(&mut self, s: &str) {
        self.out.push_str(s);
    }

    /// Embeds a figure (and remembers its file) or a note explaining why it was skipped.
    fn figure(&mut self, file: &str, svg: Result<String, ReportError>, caption_html: &str) {
        match svg {
            Ok(svg) => {
                self.fig_no += 1;
                let _ = writeln!(
                    self.out,
                    "<figure id=\"fig-{n}\"><div class=\"plot\">{svg}</div>\
                     <figcaption><b>Figure {n}.</b> {caption_html} \
                     <span class=\"file\">[{file}]</span></figcaption></figure>",
                    n = self.fig_no,
                    file = esc(file),
                );
                self.svgs.push((file.to_string(), svg));
            }
            Err(e) => {
                let _ = writeln!(
                    self.out,
                    "<div class=\"callout\"><b>Figure skipped.</b> {}</div>",
                    esc(&e.to_string())
                );
            }
        }
    }

    fn table(&mut self, caption_html: &str, header: &[(&str, bool)], rows: &[Vec<Cell>]) {
        self.tab_no += 1;
        let _ =
            write!(
            self.out,
            "<div class=\"table-wrap\"><table{}><caption><b>Table {}.</b> {}</caption><thead><tr>",
            if header.len() <= 2 { " class=\"kv\"" } else { "" },
            self.tab_no,
            caption_html
        );
        for (h, numeric) in header {
            let _ = write!(
                self.out,
                "<th{}>{}</th>",
                if *numeric { " class=\"num\"" } else { "" },
                esc(h)
            );
        }
        self.out.push_str("</tr></thead><tbody>");
        for row in rows {
            self.out.push_str("<tr>");
            for c in row {
                if c.class.is_empty() {
                    let _ = write!(self.out, "<td>{}</td>", c.html);
                } else {
                    let _ = write!(self.out, "<td class=\"{}\">{}</td>", c.class, c.html);
                }
            }
            self.out.push_str("</tr>");
        }
        if rows.is_empty() {
            let _ = write!(
                self.out,
                "<tr><td colspan=\"{}\" class=\"empty\">No rows.</td></tr>",
                header.len().max(1)
            );
        }
        self.out.push_str("</tbody></table></div>\n");
    }

    fn note(&mut self, html: &str) {
        let _ = writeln!(self.out, "<div class=\"callout\">{html}</div>");
    }

    fn para(&mut self, html: &str) {
        let _ = writeln!(self.out, "<p>{html}</p>");
    }
}

const SECTIONS: [(&str, &str); 8] = [
    ("summary", "Summary"),
    ("cgm", "Recorded glucose"),
    ("forecasts", "Forecast cones"),
    ("narrowing", "Learning from more data"),
    ("parameters", "Model parameters"),
    ("backtest", "Forecast backtest"),
    ("tables", "Additional tables"),
    ("notes", "Notes and methods"),
];

fn section(doc: &mut Doc, idx: usize) {
    let (id, title) = SECTIONS[idx];
    if idx > 0 {
        doc.push("</section>\n");
    }
    let _ = writeln!(
        doc.out,
        "<section id=\"{id}\"><h2><span class=\"secno\">{}</span>{title}</h2>",
        idx + 1
    );
}

pub(crate) fn build(r: &TwinReport) -> Built {
    let mut doc = Doc {
        out: String::with_capacity(1 << 20),
        svgs: Vec::new(),
        fig_no: 0,
        tab_no: 0,
    };
    let clean = stats::clean_series(&r.cgm);
    let cgm = &clean.points;
    let carbs = stats::clean_events(&r.carbs);
    let boluses = stats::clean_events(&r.boluses);
    let metrics = stats::cgm_metrics(cgm);
    let origin_label = if r.origin_label.trim().is_empty() {
        "t = 0"
    } else {
        r.origin_label.trim()
    };
    let wall = stats::parse_origin(&r.origin_label);
    let title = if r.title.trim().is_empty() {
        "Patient digital twin report"
    } else {
        r.title.trim()
    };

    // Data-quality warnings collected while building, shown in the summary.
    let mut warnings: Vec<String> = Vec::new();
    if let Some((nt, nv)) = clean.length_mismatch {
        warnings.push(format!(
            "The CGM series has {nt} time stamps but {nv} values; the extra entries were ignored."
        ));
    }
    if clean.non_finite > 0 {
        warnings.push(format!(
            "{} CGM entries with a missing or non-finite time or value were ignored.",
            clean.non_finite
        ));
    }
    let dropped_events = (r.carbs.len() - carbs.len()) + (r.boluses.len() - boluses.len());
    if dropped_events > 0 {
        warnings.push(format!(
            "{dropped_events} meal/bolus entries with non-finite values were ignored."
        ));
    }

    // ------------------------------------------------------------ head
    let _ = write!(
        doc.out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"generator\" content=\"medtwin-report {ver}\">\n\
         <title>{t} — {p}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main class=\"page\">\n",
        ver = env!("CARGO_PKG_VERSION"),
        t = esc(title),
        p = esc(&r.patient_id),
    );
    let _ = write!(
        doc.out,
        "<header class=\"report-header\"><div class=\"kicker\">medtwin · patient digital twin report</div>\
         <h1>{}</h1><dl class=\"meta\">",
        esc(title)
    );
    let mut meta = |k: &str, v: String| {
        let _ = write!(doc.out, "<dt>{}</dt><dd>{}</dd>", esc(k), v);
    };
    meta(
        "Patient",
        esc(if r.patient_id.is_empty() {
            "—"
        } else {
            &r.patient_id
        }),
    );
    if let Some(m) = &metrics {
        meta(
            "Record",
            esc(&format!(
                "{} days of CGM, {} readings ({} to {} after t = 0)",
                fmt_f(m.span_min / 1440.0, 1),
                m.n,
                fmt_hours(cgm[0].0),
                fmt_hours(cgm[cgm.len() - 1].0)
            )),
        );
    }
    meta("Time origin", format!("t = 0 is {}", esc(origin_label)));
    meta(
        "Data source",
        esc(if r.data_citation.is_empty() {
            "not given"
        } else {
            &r.data_citation
        }),
    );
    doc.push("</dl></header>\n");
    doc.push(
        "<div class=\"disclaimer\"><b>Research use only.</b> This report describes a computational model \
         fitted to retrospective data. It is not a medical device and must not be used to make treatment \
         decisions.</div>\n",
    );
    doc.push("<nav class=\"toc\"><b>Contents</b><ol>");
    for (id, t) in SECTIONS {
        let _ = write!(doc.out, "<li><a href=\"#{id}\">{t}</a></li>");
    }
    doc.push("</ol></nav>\n");

    // ------------------------------------------------------------ 1 summary
    section(&mut doc, 0);
    summary(
        &mut doc,
        r,
        cgm,
        &carbs,
        &boluses,
        metrics.as_ref(),
        &warnings,
    );

    // ------------------------------------------------------------ 2 CGM
    section(&mut doc, 1);
    let fig = plots::record_figure(cgm, &carbs, &boluses, origin_label);
    doc.figure(
        "cgm.svg",
        fig,
        &format!(
            "Recorded CGM over the whole record (mg/dL); the shaded band is the 70–180 mg/dL target range. \
             Lines are broken where readings are missing. {} Time is in {} since {}.",
            if carbs.is_empty() && boluses.is_empty() {
                "No meals or boluses were recorded."
            } else {
                "The lower panel shows carbohydrate intake (orange bars, grams, labelled) and insulin boluses \
                 (purple stems, units)."
            },
            if metrics.as_ref().is_some_and(|m| m.span_min > 96.0 * 60.0) { "days" } else { "hours" },
            esc(origin_label)
        ),
    );

    agp_and_hypoglycaemia(&mut doc, cgm, wall);

    // ------------------------------------------------------------ 3 cones
    section(&mut doc, 2);
    forecasts(&mut doc, r, cgm, origin_label, wall);

    // ------------------------------------------------------------ 4 narrowing
    section(&mut doc, 3);
    narrowing(&mut doc, r, cgm, origin_label);

    // ------------------------------------------------------------ 5 parameters
    section(&mut doc, 4);
    parameters(&mut doc, r);

    // ------------------------------------------------------------ 6 backtest
    section(&mut doc, 5);
    backtest(&mut doc, r);

    // ------------------------------------------------------------ 7 extra tables
    section(&mut doc, 6);
    if r.tables.is_empty() {
        doc.para("No additional tables were supplied.");
    }
    for (caption, header, rows) in &r.tables {
        let width = rows
            .iter()
            .map(Vec::len)
            .max()
            .unwrap_or(0)
            .max(header.len());
        // A column is numeric (right-aligned, header too) when all its non-empty cells are numbers.
        let numeric: Vec<bool> = (0..width)
            .map(|k| {
                let mut cells = rows
                    .iter()
                    .filter_map(|row| row.get(k))
                    .filter(|s| !s.trim().is_empty());
                let mut any = false;
                cells.all(|s| {
                    any = true;
                    looks_numeric(s)
                }) && any
            })
            .collect();
        let h: Vec<(&str, bool)> = (0..width)
            .map(|k| (header.get(k).map(String::as_str).unwrap_or(""), numeric[k]))
            .collect();
        let cells: Vec<Vec<Cell>> = rows
            .iter()
            .map(|row| {
                (0..width)
                    .map(|k| {
                        let s = row.get(k).map(String::as_str).unwrap_or("");
                        if numeric[k] {
                            Cell::num(s.to_string())
                        } else {
                            Cell::text(s)
                        }
                    })
                    .collect()
            })
            .collect();
        doc.table(&esc(caption), &h, &cells);
    }

    // ------------------------------------------------------------ 8 notes
    section(&mut doc, 7);
    doc.push("<div class=\"notes\">");
    if r.notes.is_empty() {
        doc.para("No notes were supplied.");
    }
    for n in &r.notes {
        for para in n.split("\n\n") {
            let p = para.trim();
            if !p.is_empty() {
                let html = esc(p).replace('\n', "<br>");
                doc.para(&html);
            }
        }
    }
    doc.push("</div>");
    doc.para(
        "CGM summary metrics follow the international consensus on time in range \
         (Battelino et al., <i>Diabetes Care</i> 2019;42:1593–1603); the glucose management indicator is \
         GMI (%) = 3.31 + 0.02392 × mean glucose (mg/dL) (Bergenstal et al., <i>Diabetes Care</i> 2018).",
    );
    doc.push("</section>\n");

    let _ = write!(
        doc.out,
        "<footer>Generated by medtwin-report {}. This page is self-contained: it loads no scripts, \
         fonts or other external resources. Each figure is also available as a separate SVG file next to \
         this page (file name in square brackets).</footer>\n</main>\n</body>\n</html>\n",
        env!("CARGO_PKG_VERSION")
    );
    Built {
        html: doc.out,
        svgs: doc.svgs,
    }
}

fn looks_numeric(s: &str) -> bool {
    let t = s.trim().trim_end_matches('%').trim();
    !t.is_empty() && t.parse::<f64>().is_ok()
}

// ---------------------------------------------------------------- summary

fn summary(
    doc: &mut Doc,
    r: &TwinReport,
    cgm: &[(f64, f64)],
    carbs: &[(f64, f64)],
    boluses: &[(f64, f64)],
    metrics: Option<&stats::CgmMetrics>,
    warnings: &[String],
) {
    for w in warnings {
        doc.note(&format!("<b>Data warning.</b> {}", esc(w)));
    }
    let Some(m) = metrics else {
        doc.note("<b>No CGM data.</b> The CGM series has no finite readings, so no glucose metrics can be shown.");
        return;
    };
    // Key-figure cards.
    doc.push("<div class=\"cards\">");
    let mut card = |label: &str, value: String, unit: &str, target: &str, ok: Option<bool>| {
        let cls = match ok {
            Some(true) => " ok",
            Some(false) => " off",
            None => "",
        };
        let _ = write!(
            doc.out,
            "<div class=\"card{cls}\"><div class=\"l\">{}</div><div class=\"v\">{}<small>{}</small></div>\
             <div class=\"t\">{}</div></div>",
            esc(label),
            esc(&value),
            esc(unit),
            esc(target)
        );
    };
    let [vlow, low, tir, high, vhigh] = m.ranges;
    let pct = |f: f64, d: usize| fmt_f(f * 100.0, d);
    card(
        "In range 70–180",
        pct(tir, 0),
        " %",
        "target > 70 %",
        Some(tir > 0.70),
    );
    card(
        "Below 70",
        pct(vlow + low, 1),
        " %",
        "target < 4 %",
        Some(vlow + low < 0.04),
    );
    card(
        "Above 180",
        pct(high + vhigh, 0),
        " %",
        "target < 25 %",
        Some(high + vhigh < 0.25),
    );
    card("Mean glucose", fmt_f(m.mean, 0), " mg/dL", "", None);
    card(
        "GMI",
        fmt_f(m.gmi, 1),
        " %",
        "target < 7 %",
        Some(m.gmi < 7.0),
    );
    card(
        "Glucose CV",
        pct(m.cv, 0),
        " %",
        "target ≤ 36 %",
        if m.cv.is_finite() {
            Some(m.cv <= 0.36)
        } else {
            None
        },
    );
    doc.push("</div>\n");

    // AGP-style stacked time-in-ranges bar.
    let segs = [
        (vlow, "r-vlow", "Very low < 54"),
        (low, "r-low", "Low 54–69"),
        (tir, "r-tir", "In range 70–180"),
        (high, "r-high", "High 181–250"),
        (vhigh, "r-vhigh", "Very high > 250"),
    ];
    doc.push(
        "<div class=\"tir\"><div class=\"tirbar\" role=\"img\" aria-label=\"Time in ranges\">",
    );
    for (f, cls, label) in segs {
        if f > 0.0 {
            let _ = write!(
                doc.out,
                "<div class=\"{cls}\" style=\"width:{:.3}%\" title=\"{}: {}\"></div>",
                f * 100.0,
                esc(label),
                esc(&fmt_pct(f, 1))
            );
        }
    }
    doc.push("</div><div class=\"tirlegend\">");
    for (f, cls, label) in segs {
        let _ = write!(
            doc.out,
            "<span><i class=\"{cls}\"></i>{} mg/dL: <b>{}</b></span>",
            esc(label),
            esc(&fmt_pct(f, 1))
        );
    }
    doc.push("</div></div>\n");

    let status = |ok: bool| {
        if ok {
            Cell::num_class("met".into(), "num good")
        } else {
            Cell::num_class("not met".into(), "num bad")
        }
    };
    let rows = vec![
        vec![
            Cell::text("Time in range 70–180 mg/dL"),
            Cell::num(fmt_pct(tir, 1)),
            Cell::num("> 70 %".into()),
            status(tir > 0.70),
        ],
        vec![
            Cell::text("Time below 70 mg/dL (incl. < 54)"),
            Cell::num(fmt_pct(vlow + low, 1)),
            Cell::num("< 4 %".into()),
            status(vlow + low < 0.04),
        ],
        vec![
            Cell::text("Time below 54 mg/dL"),
            Cell::num(fmt_pct(vlow, 1)),
            Cell::num("< 1 %".into()),
            status(vlow < 0.01),
        ],
        vec![
            Cell::text("Time above 180 mg/dL (incl. > 250)"),
            Cell::num(fmt_pct(high + vhigh, 1)),
            Cell::num("< 25 %".into()),
            status(high + vhigh < 0.25),
        ],
        vec![
            Cell::text("Time above 250 mg/dL"),
            Cell::num(fmt_pct(vhigh, 1)),
            Cell::num("< 5 %".into()),
            status(vhigh < 0.05),
        ],
        vec![
            Cell::text("Mean glucose"),
            Cell::num(format!("{} mg/dL", fmt_f(m.mean, 0))),
            Cell::num("—".into()),
            Cell::num("".into()),
        ],
        vec![
            Cell::text("Standard deviation"),
            Cell::num(format!("{} mg/dL", fmt_f(m.sd, 0))),
            Cell::num("—".into()),
            Cell::num("".into()),
        ],
        vec![
            Cell::text("Coefficient of variation"),
            Cell::num(fmt_pct(m.cv, 1)),
            Cell::num("≤ 36 %".into()),
            if m.cv.is_finite() {
                status(m.cv <= 0.36)
            } else {
                Cell::num("—".into())
            },
        ],
        vec![
            Cell::text("Glucose management indicator (GMI)"),
            Cell::num(format!("{} %", fmt_f(m.gmi, 1))),
            Cell::num("< 7 %".into()),
            status(m.gmi < 7.0),
        ],
    ];
    let short = m.span_min < 14.0 * 1440.0;
    doc.table(
        &format!(
            "Glucose metrics from the recorded CGM, with consensus targets for most adults with type 1 \
             diabetes.{}",
            if short {
                " <span class=\"muted\">The record is shorter than the 14 days recommended for stable \
                 estimates; interpret with caution.</span>"
            } else {
                ""
            }
        ),
        &[("Metric", false), ("Value", true), ("Target", true), ("Status", true)],
        &rows,
    );

    let days = (m.span_min / 1440.0).max(1e-9);
    let per_day = |total: f64, unit: &str| {
        if m.span_min >= 720.0 {
            format!("; {} {unit} per day", fmt_f(total / days, 1))
        } else {
            String::new()
        }
    };
    let ctot: f64 = carbs.iter().map(|c| c.1).sum();
    let btot: f64 = boluses.iter().map(|b| b.1).sum();
    let rows = vec![
        vec![
            Cell::text("Record length"),
            Cell::num(format!(
                "{} days ({})",
                fmt_f(days, 2),
                fmt_hours(m.span_min)
            )),
        ],
        vec![Cell::text("CGM readings"), Cell::num(m.n.to_string())],
        vec![
            Cell::text("Typical sampling interval"),
            Cell::num(format!("{} min", fmt_f(m.step_min, 0))),
        ],
        vec![
            Cell::text("CGM data coverage"),
            Cell::num(fmt_pct(m.coverage, 1)),
        ],
        vec![
            Cell::text("Meals recorded"),
            Cell::num(format!(
                "{} ({} g in total{})",
                carbs.len(),
                fmt_f(ctot, 0),
                per_day(ctot, "g")
            )),
        ],
        vec![
            Cell::text("Boluses recorded"),
            Cell::num(format!(
                "{} ({} U in total{})",
                boluses.len(),
                fmt_f(btot, 1),
                per_day(btot, "U")
            )),
        ],
        vec![
            Cell::text("Forecast cones"),
            Cell::num(r.cones.len().to_string()),
        ],
        vec![
            Cell::text("Calibrated parameters"),
            Cell::num(r.parameters.len().to_string()),
        ],
    ];
    let _ = cgm;
    doc.table(
        "Record and treatment summary.",
        &[("Item", false), ("Value", true)],
        &rows,
    );
}

// ---------------------------------------------------------------- forecasts

fn cone_window(c: &Cone) -> Option<(f64, f64)> {
    let rows = stats::cone_rows(c);
    let (first, last) = (rows.first()?, rows.last()?);
    let origin = if c.origin_min.is_finite() {
        c.origin_min.min(first.t)
    } else {
        first.t
    };
    let horizon = last.t - origin;
    let lookback = (0.5 * horizon).clamp(120.0, 360.0);
    Some((origin - lookback, last.t + 10.0))
}

fn forecasts(
    doc: &mut Doc,
    r: &TwinReport,
    cgm: &[(f64, f64)],
    origin_label: &str,
    wall: Option<stats::WallOrigin>,
) {
    if r.cones.is_empty() {
        doc.para("No forecasts were supplied.");
        return;
    }
    doc.para(
        "Each forecast (“cone”) is the twin’s predictive distribution of future glucose, issued at a \
         forecast origin using only the data recorded up to that moment. Nested bands show the central \
         95 %, 80 % and 50 % prediction intervals (darker is more likely) and the line the median. \
         Recorded readings after the origin were not seen by the twin and show how well the cone did.",
    );
    // Overview over the whole record when it is not too long.
    if let (Some(first), Some(last)) = (cgm.first(), cgm.last()) {
        let (mut lo, mut hi) = (first.0, last.0);
        for c in &r.cones {
            if let Some((_, b)) = cone_window(c) {
                hi = hi.max(b - 10.0);
            }
            if let Some(row) = stats::cone_rows(c).first() {
                lo = lo.min(row.t);
            }
        }
        if hi - lo <= 7.0 * 1440.0 && hi > lo {
            let numbered: Vec<(usize, &Cone)> = r
                .cones
                .iter()
                .enumerate()
                .map(|(i, c)| (i + 1, c))
                .collect();
            let fig = plots::cone_figure(
                "forecast overview",
                cgm,
                &numbered,
                lo,
                hi,
                "All forecasts over the recorded CGM",
                origin_label,
                (1000, 440),
            );
            doc.figure(
                "cones_overview.svg",
                fig,
                "All forecast cones drawn over the recorded CGM trace; dashed vertical lines mark the \
                 forecast origins, numbered as in the table and panels below.",
            );
        }
    }

    // Table.
    let mut header: Vec<(&str, bool)> = vec![("#", true), ("Origin (t)", true)];
    if wall.is_some() {
        header.push(("Origin (local time*)", false));
    }
    header.extend([
        ("Horizon", true),
        ("Mean width 50 / 80 / 95 % (mg/dL)", true),
        ("P(< 70 mg/dL)", true),
        ("P(> 250 mg/dL)", true),
        ("Readings after origin", true),
        ("Inside 80 % band", true),
        ("Inside 95 % band", true),
        ("MAE of median (mg/dL)", true),
    ]);
    let rows: Vec<Vec<Cell>> = r
        .cones
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let s = stats::summarize_cone(c, cgm);
            let mut row = vec![
                Cell::num((i + 1).to_string()),
                Cell::num(fmt_hours(c.origin_min)),
            ];
            if let Some(w) = wall {
                row.push(Cell {
                    html: esc(&stats::wall_clock(w, c.origin_min)),
                    class: "nowrap",
                });
            }
            match s {
                Some(s) => {
                    row.push(Cell::num(fmt_hours(s.horizon_min)));
                    row.push(Cell::num(format!(
                        "{} / {} / {}",
                        fmt_f(s.mean_width[0], 0),
                        fmt_f(s.mean_width[1], 0),
                        fmt_f(s.mean_width[2], 0)
                    )));
                    row.push(prob_cell(c.p_below_70, 0.2));
                    row.push(prob_cell(c.p_above_250, 0.2));
                    row.push(Cell::num(s.n_obs.to_string()));
                    row.push(Cell::num(fmt_pct(s.inside80, 0)));
                    row.push(Cell::num(fmt_pct(s.inside95, 0)));
                    row.push(Cell::num(fmt_f(s.mae, 1)));
                }
                None => {
                    row.push(Cell::text("no finite forecast"));
                    for _ in 0..7 {
                        row.push(Cell::num("—".into()));
                    }
                }
            }
            row
        })
        .collect();
    doc.table(
        &format!(
            "Forecast cones. Probabilities are of crossing the threshold at any time within the horizon \
             (values ≥ 20 % highlighted). Band coverage and MAE compare the cone with the readings recorded \
             after its origin; with few readings they are noisy.{}",
            if wall.is_some() {
                " <span class=\"muted\">* Local time computed from the time-origin label by adding elapsed \
                 time; it may be off by one hour across a daylight-saving change.</span>"
            } else {
                ""
            }
        ),
        &header,
        &rows,
    );

    // Panels.
    doc.push("<div class=\"grid2\">");
    for (i, c) in r.cones.iter().enumerate().take(MAX_CONE_PANELS) {
        let num = i + 1;
        let file = format!("cone_{num}.svg");
        let title = match wall {
            Some(w) => format!(
                "Forecast #{num} from t = {} ({})",
                fmt_hours(c.origin_min),
                stats::wall_clock(w, c.origin_min)
            ),
            None => format!("Forecast #{num} from t = {}", fmt_hours(c.origin_min)),
        };
        let fig = match cone_window(c) {
            Some((a, b)) => plots::cone_figure(
                &format!("forecast #{num}"),
                cgm,
                &[(num, c)],
                a,
                b,
                &title,
                origin_label,
                (560, 420),
            ),
            None => Err(ReportError::NoData {
                figure: format!("forecast #{num}"),
                reason: "the cone has no row where the time and all quantiles are finite".into(),
            }),
        };
        let caption = format!(
            "Forecast #{num}, issued at t = {}. P(glucose &lt; 70 mg/dL within the horizon) = {}; \
             P(&gt; 250 mg/dL) = {}. Filled dots: readings the twin had seen; hollow: held-out readings.",
            esc(&fmt_hours(c.origin_min)),
            esc(&fmt_pct(c.p_below_70, 0)),
            esc(&fmt_pct(c.p_above_250, 0))
        );
        doc.figure(&file, fig, &caption);
    }
    doc.push("</div>\n");
    if r.cones.len() > MAX_CONE_PANELS {
        doc.note(&format!(
            "Only the first {MAX_CONE_PANELS} of {} forecasts are drawn as panels; all are listed in the table.",
            r.cones.len()
        ));
    }
}

fn prob_cell(p: f64, alert: f64) -> Cell {
    if p.is_finite() && p >= alert {
        Cell::num_class(fmt_pct(p, 0), "num alert")
    } else {
        Cell::num(fmt_pct(p, 0))
    }
}

// ---------------------------------------------------------------- narrowing

fn narrowing(doc: &mut Doc, r: &TwinReport, cgm: &[(f64, f64)], origin_label: &str) {
    if r.narrowing.is_empty() {
        doc.para("No narrowing comparison was supplied.");
        return;
    }
    doc.para(
        "The same future window forecast by twins that had been calibrated on more and more of the \
         patient’s data. As the twin learns the patient, its prediction intervals should narrow while \
         still containing the recorded glucose.",
    );
    let fig = plots::narrowing_figure(cgm, &r.narrowing, origin_label);
    doc.figure(
        "narrowing.svg",
        fig,
        "Forecasts of the same window from twins calibrated on increasing amounts of data (left to right, \
         top to bottom), on shared axes.",
    );
    let fig = plots::narrowing_width_figure(&r.narrowing);
    doc.figure(
        "narrowing_width.svg",
        fig,
        "Width of the 80 % (solid) and 95 % (dashed) prediction bands against lead time, one colour per \
         twin. Lower curves mean sharper forecasts.",
    );
    let rows: Vec<Vec<Cell>> = r
        .narrowing
        .iter()
        .map(|(label, c)| {
            let mut row = vec![Cell::text(label), Cell::num(fmt_hours(c.origin_min))];
            match stats::summarize_cone(c, cgm) {
                Some(s) => {
                    row.extend([
                        Cell::num(fmt_f(s.mean_width[0], 0)),
                        Cell::num(fmt_f(s.mean_width[1], 0)),
                        Cell::num(fmt_f(s.mean_width[2], 0)),
                        prob_cell(c.p_below_70, 0.2),
                        prob_cell(c.p_above_250, 0.2),
                        Cell::num(fmt_pct(s.inside80, 0)),
                        Cell::num(fmt_f(s.mae, 1)),
                    ]);
                }
                None => {
                    row.push(Cell::text("no finite forecast"));
                    for _ in 0..6 {
                        row.push(Cell::num("—".into()));
                    }
                }
            }
            row
        })
        .collect();
    doc.table(
        "Band widths (mean over the horizon, mg/dL) and accuracy of each twin on the common window.",
        &[
            ("Twin", false),
            ("Origin (t)", true),
            ("50 % width", true),
            ("80 % width", true),
            ("95 % width", true),
            ("P(< 70)", true),
            ("P(> 250)", true),
            ("Inside 80 % band", true),
            ("MAE of median (mg/dL)", true),
        ],
        &rows,
    );
}

// ---------------------------------------------------------------- AGP, hypoglycaemia

/// The ambulatory glucose profile (needs the local time of t = 0) and the list of
/// hypoglycaemia episodes.
fn agp_and_hypoglycaemia(doc: &mut Doc, cgm: &[(f64, f64)], wall: Option<stats::WallOrigin>) {
    match wall {
        Some(w) => {
            let slots = stats::agp(cgm, w.minute_of_day() as f64);
            doc.figure(
                "agp.svg",
                plots::agp_figure(&slots),
                "Ambulatory glucose profile: the 5–95 % and 25–75 % ranges and the median of all CGM \
                 readings by local time of day (15-min slots pooling readings within ±30 min, all days; \
                 Battelino et al., Diabetes Care 42:1593, 2019). Shaded: 70–180 mg/dL.",
            );
        }
        None => doc.para(
            "No ambulatory glucose profile: the local time of t = 0 is not known (origin label without \
             a date and time).",
        ),
    }
    let episodes = stats::hypo_episodes(cgm);
    let rows: Vec<Vec<Cell>> = episodes
        .iter()
        .map(|e| {
            vec![
                Cell::num(fmt_hours(e.start_min)),
                Cell::text(&match wall {
                    Some(w) => stats::wall_clock(w, e.start_min),
                    None => "—".into(),
                }),
                Cell::num(fmt_f(e.end_min - e.start_min, 0)),
                Cell::num(fmt_f(e.nadir_mg_dl, 0)),
                Cell::text(if e.level2 { "2 (< 54)" } else { "1 (< 70)" }),
            ]
        })
        .collect();
    doc.table(
        &format!(
            "Hypoglycaemia episodes: {} (level 2: {}); an episode is at least 15 min below 70 mg/dL, \
             ended by 15 min at or above 70 (Battelino et al., Lancet Diabetes Endocrinol 11:42, 2023).",
            episodes.len(),
            episodes.iter().filter(|e| e.level2).count()
        ),
        &[
            ("Start (t)", true),
            ("Start (local)", false),
            ("Duration (min)", true),
            ("Nadir (mg/dL)", true),
            ("Level", false),
        ],
        &rows,
    );
}

// ---------------------------------------------------------------- parameters

fn parameters(doc: &mut Doc, r: &TwinReport) {
    if r.parameters.is_empty() {
        doc.para("No parameter posteriors were supplied.");
        return;
    }
    doc.para(
        "Each panel compares the population prior (grey) with the posterior for this patient (blue). A \
         posterior much narrower than the prior means the data pinned the parameter down; one that \
         resembles the prior means the data said little about it.",
    );
    let fig = plots::posteriors_figure(&r.parameters);
    doc.figure(
        "posteriors.svg",
        fig,
        "Histograms (normalised to unit area) of prior and posterior samples per parameter; axes cover \
         the central 99 % of the samples. Parameters spanning orders of magnitude use a log axis.",
    );
    let rows: Vec<Vec<Cell>> = r
        .parameters
        .iter()
        .map(|p| {
            let pr = stats::sorted_finite(&p.prior_samples);
            let po = stats::sorted_finite(&p.posterior_samples);
            let ci = |v: &[f64]| {
                if v.is_empty() {
                    "—".to_string()
                } else {
                    format!(
                        "{} [{} – {}]",
                        fmt_sig(stats::quantile_sorted(v, 0.5), 3),
                        fmt_sig(stats::quantile_sorted(v, 0.025), 3),
                        fmt_sig(stats::quantile_sorted(v, 0.975), 3)
                    )
                }
            };
            let ratio = stats::mean_sd(&po).1 / stats::mean_sd(&pr).1;
            vec![
                Cell::text(&p.name),
                Cell::text(&p.unit),
                Cell::text(&p.description),
                Cell::num(ci(&pr)),
                Cell::num(ci(&po)),
                Cell::num(fmt_f(ratio, 2)),
                Cell::num(format!("{} / {}", pr.len(), po.len())),
            ]
        })
        .collect();
    doc.table(
        "Parameter estimates: median [2.5 % – 97.5 %] of the prior and posterior samples. The SD ratio \
         (posterior SD / prior SD) is below 1 when the data were informative.",
        &[
            ("Parameter", false),
            ("Unit", false),
            ("Description", false),
            ("Prior", true),
            ("Posterior", true),
            ("SD ratio", true),
            ("Samples (prior / post.)", true),
        ],
        &rows,
    );
}

// ---------------------------------------------------------------- backtest

fn backtest(doc: &mut Doc, r: &TwinReport) {
    if r.backtest.is_empty() {
        doc.para("No backtest was supplied.");
        return;
    }
    // Coverage given as fractions (documented) or, tolerated, as percentages.
    let max_cov = r
        .backtest
        .iter()
        .flat_map(|b| [b.coverage_80, b.coverage_95])
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let scale = if max_cov > 1.5 { 1.0 } else { 100.0 };
    let mut rows_sorted: Vec<_> = r.backtest.iter().collect();
    rows_sorted.sort_by_key(|b| b.horizon_min);
    let cov_cell = |v: f64, nominal: f64| {
        let pct = v * scale;
        if !pct.is_finite() {
            return Cell::num("—".into());
        }
        let s = format!("{} %", fmt_f(pct, 1));
        if (pct - nominal).abs() > 10.0 {
            Cell::num_class(s, "num warnc")
        } else {
            Cell::num(s)
        }
    };
    let rows: Vec<Vec<Cell>> = rows_sorted
        .iter()
        .map(|b| {
            let ratio = b.rmse_mg_dl / b.persistence_rmse_mg_dl;
            let ratio_cell = if !ratio.is_finite() {
                Cell::num("—".into())
            } else if ratio < 1.0 {
                Cell::num_class(fmt_f(ratio, 2), "num good")
            } else {
                Cell::num_class(fmt_f(ratio, 2), "num bad")
            };
            vec![
                Cell::num(b.horizon_min.to_string()),
                Cell::num(b.n.to_string()),
                Cell::num(fmt_f(b.rmse_mg_dl, 1)),
                Cell::num(fmt_f(b.mae_mg_dl, 1)),
                Cell::num(fmt_f(b.persistence_rmse_mg_dl, 1)),
                ratio_cell,
                cov_cell(b.coverage_80, 80.0),
                cov_cell(b.coverage_95, 95.0),
                Cell::num(fmt_f(b.mean_width_80_mg_dl, 0)),
            ]
        })
        .collect();
    doc.table(
        "Rolling-origin backtest of the twin’s forecasts against recorded CGM. The RMSE ratio is twin RMSE \
         divided by the RMSE of persistence (last reading carried forward): below 1 (green) the twin beats \
         the naive baseline. Coverage should be close to the nominal 80 % and 95 %; values more than 10 \
         percentage points off are highlighted.",
        &[
            ("Horizon (min)", true),
            ("n", true),
            ("RMSE (mg/dL)", true),
            ("MAE (mg/dL)", true),
            ("Persistence RMSE (mg/dL)", true),
            ("RMSE ratio", true),
            ("80 % coverage", true),
            ("95 % coverage", true),
            ("Mean 80 % width (mg/dL)", true),
        ],
        &rows,
    );
    let fig = plots::backtest_figure(&r.backtest, scale);
    doc.figure(
        "backtest.svg",
        fig,
        "Left: error of the twin’s median forecast and of persistence by horizon. Right: share of recorded \
         readings inside the 80 % and 95 % bands; dashed lines are the nominal levels.",
    );
}

const CSS: &str = r#"
:root{--ink:#212529;--muted:#6c757d;--accent:#1f4e79;--line:#dee2e6;--bg:#eef1f4}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;background:var(--bg);color:var(--ink);font:15px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,"Noto Sans","Liberation Sans",sans-serif}
.page{max-width:1120px;margin:24px auto;background:#fff;padding:36px 48px 48px;border-radius:6px;box-shadow:0 1px 4px rgba(0,0,0,.08)}
.report-header{border-bottom:3px solid var(--accent);padding-bottom:16px;margin-bottom:18px}
.kicker{text-transform:uppercase;letter-spacing:.09em;font-size:12px;color:var(--accent);font-weight:700}
h1{font-size:28px;line-height:1.25;margin:6px 0 14px;color:#0b2540}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:3px 18px;margin:0;font-size:14px}
dl.meta dt{color:var(--muted);font-weight:600}
dl.meta dd{margin:0;overflow-wrap:anywhere}
.disclaimer{background:#f1f3f5;border-radius:4px;padding:8px 12px;font-size:13px;color:#495057;margin:12px 0 18px}
nav.toc{font-size:14px;border:1px solid var(--line);border-radius:6px;padding:10px 16px;margin-bottom:8px}
nav.toc ol{margin:4px 0 0;padding-left:0;list-style:none;counter-reset:s;display:flex;flex-wrap:wrap;gap:4px 22px}
nav.toc li{counter-increment:s}
nav.toc li::before{content:counter(s) ". ";color:var(--muted)}
nav.toc a{color:var(--accent);text-decoration:none}
nav.toc a:hover{text-decoration:underline}
section{margin-top:34px}
h2{font-size:21px;color:#0b2540;border-bottom:1px solid var(--line);padding-bottom:6px;margin:0 0 14px}
h2 .secno{color:var(--accent);margin-right:10px}
p{margin:8px 0 12px;max-width:80ch}
.muted{color:var(--muted)}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:12px;margin:6px 0 16px}
.card{border:1px solid var(--line);border-top:4px solid #adb5bd;border-radius:6px;padding:10px 14px}
.card.ok{border-top-color:#2f9e44}
.card.off{border-top-color:#e8590c}
.card .l{font-size:11.5px;color:var(--muted);text-transform:uppercase;letter-spacing:.04em;font-weight:600}
.card .v{font-size:25px;font-weight:700;font-variant-numeric:tabular-nums;line-height:1.3;white-space:nowrap}
.card .v small{font-size:14px;font-weight:600;color:#495057}
.card .t{font-size:12px;color:var(--muted);min-height:1em}
.tir{margin:4px 0 18px}
.tirbar{display:flex;height:20px;border-radius:4px;overflow:hidden;border:1px solid var(--line)}
.tirlegend{display:flex;flex-wrap:wrap;gap:4px 18px;font-size:13px;margin-top:6px}
.tirlegend i{display:inline-block;width:11px;height:11px;border-radius:2px;margin-right:6px;vertical-align:-1px}
.r-vlow{background:#a61e1e}.r-low{background:#e03131}.r-tir{background:#2f9e44}.r-high{background:#fab005}.r-vhigh{background:#e8590c}
.table-wrap{overflow-x:auto;margin:10px 0 18px}
table{border-collapse:collapse;width:100%;font-size:13.5px}
table.kv{width:auto;min-width:60%}
caption{caption-side:top;text-align:left;font-size:13.5px;color:#343a40;padding:0 0 6px;line-height:1.45}
th{background:#f1f3f5;text-align:left;font-weight:600;border-bottom:2px solid #ced4da;padding:6px 9px;vertical-align:bottom}
td{padding:5px 9px;border-bottom:1px solid #e9ecef;vertical-align:top}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
td.num{white-space:nowrap}
td.nowrap{white-space:nowrap}
td.empty{color:var(--muted);font-style:italic}
tbody tr:nth-child(even){background:#fafbfc}
.good{color:#2b8a3e;font-weight:600}.bad{color:#c92a2a;font-weight:600}.warnc{color:#d9480f;font-weight:600}.alert{color:#c92a2a;font-weight:600}
figure{margin:16px 0;border:1px solid var(--line);border-radius:6px;padding:8px 8px 6px;break-inside:avoid;page-break-inside:avoid}
figure .plot svg{display:block;width:100%;height:auto}
figure .plot svg text{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,"Noto Sans","Liberation Sans",sans-serif}
figcaption{font-size:13px;color:#495057;margin:6px 4px 2px;line-height:1.45}
figcaption .file{color:#adb5bd;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:11.5px}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:14px;margin:14px 0}
.grid2 figure{margin:0}
.grid2 .callout{margin:0;align-self:start}
.callout{border-left:4px solid #f08c00;background:#fff9db;padding:8px 12px;margin:12px 0;font-size:14px;border-radius:0 4px 4px 0}
.notes p{white-space:normal;overflow-wrap:anywhere}
footer{margin-top:44px;font-size:12px;color:var(--muted);border-top:1px solid var(--line);padding-top:12px}
@media (max-width:820px){.page{padding:18px;margin:0;border-radius:0}.grid2{grid-template-columns:1fr}}
@media print{body{background:#fff}.page{box-shadow:none;margin:0;padding:0;max-width:none}nav.toc{display:none}section{break-before:auto}}
"#;
