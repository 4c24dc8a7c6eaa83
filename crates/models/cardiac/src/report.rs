//! A self-contained HTML report of one assay: the selected beats' action potentials, qNet and
//! APD90 against dose, and the results table (no uncertainty bands: `--samples` is not built).

use crate::assay::DoseResult;
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

/// qNet (nC/µF) against dose (×Cmax, control at 0); SVG text.
pub fn qnet_vs_dose_svg(results: &[DoseResult]) -> Result<String, PlotError> {
    let e = perr("qNet vs dose");
    let pts: Vec<(f64, f64)> = results
        .iter()
        .map(|r| (r.dose_x_cmax, r.qnet_nc_per_uf))
        .collect();
    let xmax = pts.iter().map(|p| p.0).fold(1.0f64, f64::max) * 1.1;
    let ylo = pts.iter().map(|p| p.1).fold(0.0f64, f64::min) - 5.0;
    let yhi = pts.iter().map(|p| p.1).fold(0.0f64, f64::max) + 5.0;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (420, 380)).into_drawing_area();
        root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
        let mut c = ChartBuilder::on(&root)
            .caption("qNet vs dose", ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(45)
            .build_cartesian_2d(0f64..xmax, ylo..yhi)
            .map_err(|x| e(x.to_string()))?;
        c.configure_mesh()
            .x_desc("dose (× Cmax)")
            .y_desc("qNet (nC/µF)")
            .draw()
            .map_err(|x| e(x.to_string()))?;
        let mut sorted = pts.clone();
        sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
        c.draw_series(LineSeries::new(sorted, &BLUE))
            .map_err(|x| e(x.to_string()))?;
        c.draw_series(pts.iter().map(|&p| Circle::new(p, 4, BLUE.filled())))
            .map_err(|x| e(x.to_string()))?;
    }
    Ok(svg)
}

/// The whole report as one HTML page.
pub fn report_html(
    drug: &str,
    cmax_nm: f64,
    beats: usize,
    results: &[DoseResult],
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
    h.push_str(&qnet_vs_dose_svg(results)?);
    h.push_str("<p>No uncertainty bands and no risk call: uncertainty sampling is not built yet.</p></body></html>");
    Ok(h)
}
