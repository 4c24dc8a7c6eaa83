//! A self-contained HTML report of one assay: the selected beats' action potentials, qNet and
//! APD90 against dose, and the results table; with an uncertainty study ([`SampleStudy`], the
//! CLI's `--samples`), qNet and APD90 against dose with the samples' 95 % intervals (band and error
//! bars), the per-dose interval table and the fraction of samples per TdP risk class.

use crate::assay::DoseResult;
use crate::classify::CATEGORIES;
use crate::samples::{DoseSummary, RiskUncertainty};
use plotters::prelude::*;
use std::fmt::Write as _;

/// Drawing failure (plotters' backend error as text).
#[derive(Debug, thiserror::Error)]
#[error("plot '{plot}': {message}")]
pub struct PlotError {
    /// Which plot.
    pub plot: &'static str,
    /// The backend's message.
    pub message: String,
}

fn perr(plot: &'static str) -> impl Fn(String) -> PlotError {
    move |message| PlotError { plot, message }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn label(r: &DoseResult) -> String {
    if r.drug == "control" {
        "control".to_string()
    } else {
        format!("{}×Cmax", r.dose_x_cmax)
    }
}

/// Membrane potential of every result's selected beat over the first `t_max_ms`; SVG text.
pub fn ap_traces_svg(results: &[DoseResult], t_max_ms: usize) -> Result<String, PlotError> {
    let e = perr("action potentials");
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (640, 380)).into_drawing_area();
        root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
        let mut c = ChartBuilder::on(&root)
            .caption("Selected beat per dose", ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(45)
            .build_cartesian_2d(0f64..t_max_ms as f64, -95f64..55f64)
            .map_err(|x| e(x.to_string()))?;
        c.configure_mesh()
            .x_desc("time from stimulus (ms)")
            .y_desc("V (mV)")
            .draw()
            .map_err(|x| e(x.to_string()))?;
        for (k, r) in results.iter().enumerate() {
            let col = Palette99::pick(k).to_rgba();
            let pts = r
                .trace_v_mv
                .iter()
                .take(t_max_ms + 1)
                .enumerate()
                .map(|(i, &v)| (i as f64, v));
            c.draw_series(LineSeries::new(pts, col.stroke_width(2)))
                .map_err(|x| e(x.to_string()))?
                .label(label(r))
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 15, y)], col.stroke_width(2)));
        }
        c.configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|x| e(x.to_string()))?;
    }
    Ok(svg)
}

/// The outcome of an uncertainty study, as the report shows it.
#[derive(Clone, Copy, Debug)]
pub struct SampleStudy<'a> {
    /// Number of uncertainty samples run.
    pub n_samples: usize,
    /// Per-dose summaries over the samples ([`crate::samples::summarize`]).
    pub summaries: &'a [DoseSummary],
    /// Fractions of samples per TdP risk class ([`crate::samples::risk_uncertainty`]).
    pub risk: &'a RiskUncertainty,
    /// Which training set the classifier was fitted to (free text, shown as given).
    pub classifier: &'a str,
}

/// One metric against dose: the point estimates (blue line and dots) and, per dose, the samples'
/// median with its 95 % interval (shaded band and error bars); `None` values are left out.
fn metric_vs_dose_svg(
    plot: &'static str,
    y_desc: &str,
    points: &[(f64, f64)],
    intervals: &[(f64, [f64; 3])],
    legend_at: SeriesLabelPosition,
) -> Result<String, PlotError> {
    let e = perr(plot);
    let xmax = points
        .iter()
        .map(|p| p.0)
        .chain(intervals.iter().map(|p| p.0))
        .fold(1.0f64, f64::max)
        * 1.1;
    let ys = points
        .iter()
        .map(|p| p.1)
        .chain(intervals.iter().flat_map(|p| p.1));
    let (lo, hi) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| {
        (a.min(y), b.max(y))
    });
    let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
    let pad = ((hi - lo) * 0.1).max(1.0);
    let (ylo, yhi) = (lo - pad, hi + pad);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (420, 380)).into_drawing_area();
        root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
        let mut c = ChartBuilder::on(&root)
            .caption(plot, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..xmax, ylo..yhi)
            .map_err(|x| e(x.to_string()))?;
        c.configure_mesh()
            .x_desc("dose (× Cmax)")
            .y_desc(y_desc)
            .draw()
            .map_err(|x| e(x.to_string()))?;
        let mut iv = intervals.to_vec();
        iv.sort_by(|a, b| a.0.total_cmp(&b.0));
        if iv.len() > 1 {
            let band: Vec<(f64, f64)> = iv
                .iter()
                .map(|p| (p.0, p.1[1]))
                .chain(iv.iter().rev().map(|p| (p.0, p.1[2])))
                .collect();
            c.draw_series(std::iter::once(Polygon::new(band, RED.mix(0.15).filled())))
                .map_err(|x| e(x.to_string()))?;
        }
        if !iv.is_empty() {
            // error bars drawn as paths (vertical bar with caps 2 % of the x range wide)
            let cap = 0.02 * xmax;
            c.draw_series(iv.iter().map(|p| {
                let (x, [_, lo, hi]) = (p.0, p.1);
                PathElement::new(
                    vec![
                        (x - cap, lo),
                        (x + cap, lo),
                        (x, lo),
                        (x, hi),
                        (x - cap, hi),
                        (x + cap, hi),
                    ],
                    RED.stroke_width(2),
                )
            }))
            .map_err(|x| e(x.to_string()))?
            .label("samples: median, 95 % interval")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 15, y)], RED.stroke_width(2)));
            c.draw_series(
                iv.iter()
                    .map(|p| Cross::new((p.0, p.1[0]), 4, RED.stroke_width(2))),
            )
            .map_err(|x| e(x.to_string()))?;
        }
        let mut sorted = points.to_vec();
        sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
        c.draw_series(LineSeries::new(sorted, &BLUE))
            .map_err(|x| e(x.to_string()))?
            .label("point estimate")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 15, y)], BLUE.stroke_width(2)));
        c.draw_series(points.iter().map(|&p| Circle::new(p, 4, BLUE.filled())))
            .map_err(|x| e(x.to_string()))?;
        if !iv.is_empty() {
            c.configure_series_labels()
                .position(legend_at)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(|x| e(x.to_string()))?;
        }
    }
    Ok(svg)
}

/// qNet (nC/µF) against dose (×Cmax, control at 0), with the samples' median and 95 % interval
/// per dose when `summaries` is not empty; SVG text.
pub fn qnet_vs_dose_svg(
    results: &[DoseResult],
    summaries: &[DoseSummary],
) -> Result<String, PlotError> {
    let pts: Vec<(f64, f64)> = results
        .iter()
        .map(|r| (r.dose_x_cmax, r.qnet_nc_per_uf))
        .collect();
    let iv: Vec<(f64, [f64; 3])> = summaries
        .iter()
        .filter_map(|s| s.qnet.map(|q| (s.dose_x_cmax, q)))
        .collect();
    // qNet falls with block of repolarising currents: the upper right is usually free
    metric_vs_dose_svg(
        "qNet vs dose",
        "qNet (nC/µF)",
        &pts,
        &iv,
        SeriesLabelPosition::UpperRight,
    )
}

/// APD90 (ms) against dose (×Cmax, control at 0; non-repolarised beats left out), with the
/// samples' median and 95 % interval per dose when `summaries` is not empty; SVG text.
pub fn apd90_vs_dose_svg(
    results: &[DoseResult],
    summaries: &[DoseSummary],
) -> Result<String, PlotError> {
    let pts: Vec<(f64, f64)> = results
        .iter()
        .filter_map(|r| r.apd90_ms.map(|a| (r.dose_x_cmax, a)))
        .collect();
    let iv: Vec<(f64, [f64; 3])> = summaries
        .iter()
        .filter_map(|s| s.apd90.map(|q| (s.dose_x_cmax, q)))
        .collect();
    metric_vs_dose_svg(
        "APD90 vs dose",
        "APD90 (ms)",
        &pts,
        &iv,
        SeriesLabelPosition::UpperLeft,
    )
}

/// HTML section of an uncertainty study: per-dose table (values formatted as in
/// `samples_summary.csv`: qNet to 4 decimals, APD90 to 1) and the risk-class fractions.
fn study_html(s: &SampleStudy) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<h2>Uncertainty ({} samples)</h2><p>Each sample pairs a bootstrap sample of the hERG binding \
         parameters with an MCMC sample of the Hill block of the other currents (Li et al. 2019); \
         every sample is paced through the same protocol. Intervals are the 2.5 % and 97.5 % \
         quantiles over the samples (R type 7; with few samples they are close to the extreme \
         samples).</p>",
        s.n_samples
    );
    h.push_str(
        "<table><tr><th>dose</th><th>samples ok</th><th>failed</th><th>qNet median (nC/µF)</th>\
         <th>qNet 95 % interval</th><th>APD90 median (ms)</th><th>APD90 95 % interval</th>\
         <th>samples with EADs</th><th>non-repolarised samples</th></tr>",
    );
    let f = |x: Option<[f64; 3]>, k: usize, p: usize| {
        x.map_or("NA".to_string(), |v| format!("{:.*}", p, v[k]))
    };
    for d in s.summaries {
        let _ = write!(
            h,
            "<tr><td>{}×Cmax</td><td>{}</td><td>{}</td><td>{}</td><td>[{}, {}]</td><td>{}</td>\
             <td>[{}, {}]</td><td>{}</td><td>{}</td></tr>",
            d.dose_x_cmax,
            d.n_ok,
            d.n_failed,
            f(d.qnet, 0, 4),
            f(d.qnet, 1, 4),
            f(d.qnet, 2, 4),
            f(d.apd90, 0, 1),
            f(d.apd90, 1, 1),
            f(d.apd90, 2, 1),
            d.ead_samples,
            d.no_repol_samples
        );
    }
    h.push_str("</table>");
    let r = s.risk;
    let _ = write!(
        h,
        "<h3>TdP risk</h3><p>Each sample's qNet averaged over the doses &gt; 0 is classified by the \
         ordinal-logistic classifier ({}); {} samples classified.</p><table><tr><th>class</th>\
         <th>fraction of samples</th></tr>",
        escape(s.classifier),
        r.n
    );
    for (k, name) in CATEGORIES.iter().enumerate() {
        let _ = write!(
            h,
            "<tr><td>{name}</td><td>{:.4} ({:.1} %)</td></tr>",
            r.fractions[k],
            100.0 * r.fractions[k]
        );
    }
    let mq = r.mean_qnet.map_or("NA".to_string(), |v| {
        format!("{:.4} [{:.4}, {:.4}]", v[0], v[1], v[2])
    });
    let _ = write!(
        h,
        "</table><p>Majority call: <b>{}</b>. Mean qNet over the doses, median [95 % interval]: \
         {mq} nC/µF.</p>",
        r.call_name()
    );
    h
}

/// The whole report as one HTML page; `study` adds the uncertainty section and the intervals in
/// the dose plots.
pub fn report_html(
    drug: &str,
    cmax_nm: f64,
    beats: usize,
    results: &[DoseResult],
    study: Option<&SampleStudy>,
) -> Result<String, PlotError> {
    let mut h = String::new();
    let d = escape(drug);
    let _ = write!(
        h,
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>CiPA assay: {d}</title>\
         <style>body{{font-family:sans-serif;max-width:1100px;margin:auto}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}</style></head><body>\
         <h1>CiPA in-silico assay: {d}</h1><p>IKr-dynamic ORd endocardial myocyte (Li et al. 2017, Dutta et al. \
         2017), paced at 2000 ms for {beats} beats per dose from the control steady state; Cmax {cmax_nm} nM. \
         The beat shown and reported per dose is the reference's choice (largest dV/dt between 30 % \
         repolarisation and APD90 over the last 250 beats).</p>"
    );
    h.push_str("<table><tr><th>dose</th><th>conc (nM)</th><th>qNet (nC/µF)</th><th>APD90 (ms)</th><th>APD50 (ms)</th><th>EAD beats</th><th>non-repolarised beats</th></tr>");
    for r in results {
        let f = |x: Option<f64>| x.map_or_else(|| "NA".to_string(), |v| format!("{v:.0}"));
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{:.4}</td><td>{:.3}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&label(r)),
            r.conc_nm,
            r.qnet_nc_per_uf,
            f(r.apd90_ms),
            f(r.apd50_ms),
            r.ead_beats,
            r.no_repol_beats
        );
    }
    h.push_str("</table>");
    h.push_str(&ap_traces_svg(results, 1000)?);
    let summaries = study.map_or(&[][..], |s| s.summaries);
    h.push_str(&qnet_vs_dose_svg(results, summaries)?);
    h.push_str(&apd90_vs_dose_svg(results, summaries)?);
    match study {
        Some(s) => h.push_str(&study_html(s)),
        None => h.push_str(
            "<p>Point estimates only: no uncertainty samples were run (CLI: <code>--samples N</code>).</p>",
        ),
    }
    h.push_str("</body></html>");
    Ok(h)
}
