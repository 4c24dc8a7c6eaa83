//! The population-fit report a pharmacometrician reads: parameter table with standard errors and
//! the standard goodness-of-fit plots (observed vs population and individual predictions, CWRES
//! vs time, visual predictive check) as SVG in one self-contained HTML page.
//!
//! Plot conventions follow Nguyen et al. 2017, "Model evaluation of continuous data
//! pharmacometric models: metrics and graphics", CPT Pharmacometrics Syst Pharmacol 6:87.

use crate::pop::{PopFit, VpcBin};
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

fn range(v: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = v
        .filter(|x| x.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
            (a.min(x), b.max(x))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(1e-9);
    (lo - pad, hi + pad)
}

/// Scatter of observed (y) against a prediction (x) with the identity line; SVG text.
pub fn observed_vs_predicted(
    fit: &PopFit,
    individual: bool,
    unit: &str,
) -> Result<String, PlotError> {
    let name = if individual { "IPRED" } else { "PRED" };
    let pts: Vec<(f64, f64)> = fit
        .individuals
        .iter()
        .flat_map(|i| {
            let x = if individual { &i.ipred } else { &i.pred };
            x.iter().copied().zip(i.dv.iter().copied())
        })
        .collect();
    let (lo, hi) = range(pts.iter().flat_map(|&(a, b)| [a, b]));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (420, 380)).into_drawing_area();
        let e = perr("observed vs predicted");
        root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
        let mut c = ChartBuilder::on(&root)
            .caption(format!("Observed vs {name}"), ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(45)
            .build_cartesian_2d(lo..hi, lo..hi)
            .map_err(|x| e(x.to_string()))?;
        c.configure_mesh()
            .x_desc(format!("{name} ({unit})"))
            .y_desc(format!("observed ({unit})"))
            .draw()
            .map_err(|x| e(x.to_string()))?;
        c.draw_series(LineSeries::new([(lo, lo), (hi, hi)], &BLACK))
            .map_err(|x| e(x.to_string()))?;
        c.draw_series(
            pts.iter()
                .map(|&(x, y)| Circle::new((x, y), 3, BLUE.mix(0.6))),
        )
        .map_err(|x| e(x.to_string()))?;
    }
    Ok(svg)
}

/// CWRES against time with the zero line and ±2 guides; SVG text.
pub fn cwres_vs_time(fit: &PopFit) -> Result<String, PlotError> {
    let pts: Vec<(f64, f64)> = fit
        .individuals
        .iter()
        .flat_map(|i| i.time_h.iter().copied().zip(i.cwres.iter().copied()))
        .collect();
    let (tlo, thi) = range(pts.iter().map(|p| p.0));
    let ymax = pts
        .iter()
        .map(|p| p.1.abs())
        .filter(|v| v.is_finite())
        .fold(3.0f64, f64::max)
        * 1.05;
    let mut svg = String::new();
    {
        let e = perr("CWRES vs time");
        let root = SVGBackend::with_string(&mut svg, (420, 380)).into_drawing_area();
        root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
        let mut c = ChartBuilder::on(&root)
            .caption("CWRES vs time", ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(45)
            .build_cartesian_2d(tlo..thi, -ymax..ymax)
            .map_err(|x| e(x.to_string()))?;
        c.configure_mesh()
            .x_desc("time (h)")
            .y_desc("CWRES")
            .draw()
            .map_err(|x| e(x.to_string()))?;
        for (y, col) in [(0.0, BLACK), (2.0, RED), (-2.0, RED)] {
            c.draw_series(LineSeries::new([(tlo, y), (thi, y)], &col))
                .map_err(|x| e(x.to_string()))?;
        }
        c.draw_series(
            pts.iter()
                .map(|&(x, y)| Circle::new((x, y), 3, BLUE.mix(0.6))),
        )
        .map_err(|x| e(x.to_string()))?;
    }
    Ok(svg)
}

/// Visual predictive check: observed 5/50/95th percentiles per bin (lines with dots) over the
/// 90 % intervals of the simulated percentiles (shaded); SVG text.
pub fn vpc_plot(bins: &[VpcBin], unit: &str) -> Result<String, PlotError> {
    let (tlo, thi) = range(bins.iter().flat_map(|b| [b.t_lo_h, b.t_hi_h]));
    let (ylo, yhi) = range(bins.iter().flat_map(|b| {
        b.observed
            .into_iter()
            .chain(b.simulated.iter().flatten().copied())
    }));
    let mut svg = String::new();
    {
        let e = perr("VPC");
        let root = SVGBackend::with_string(&mut svg, (640, 380)).into_drawing_area();
        root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
        let mut c = ChartBuilder::on(&root)
            .caption(
                "Visual predictive check (5th, 50th, 95th percentiles)",
                ("sans-serif", 16),
            )
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(50)
            .build_cartesian_2d(tlo..thi, ylo..yhi)
            .map_err(|x| e(x.to_string()))?;
        c.configure_mesh()
            .x_desc("time (h)")
            .y_desc(format!("concentration ({unit})"))
            .draw()
            .map_err(|x| e(x.to_string()))?;
        for (p, col) in [(0usize, BLUE), (1, RED), (2, BLUE)] {
            let upper: Vec<(f64, f64)> = bins
                .iter()
                .map(|b| (b.t_mid_h, b.simulated[p][2]))
                .collect();
            let lower: Vec<(f64, f64)> = bins
                .iter()
                .rev()
                .map(|b| (b.t_mid_h, b.simulated[p][0]))
                .collect();
            let poly: Vec<(f64, f64)> = upper.into_iter().chain(lower).collect();
            c.draw_series(std::iter::once(Polygon::new(poly, col.mix(0.15))))
                .map_err(|x| e(x.to_string()))?;
            let obs: Vec<(f64, f64)> = bins.iter().map(|b| (b.t_mid_h, b.observed[p])).collect();
            c.draw_series(LineSeries::new(obs.clone(), &col))
                .map_err(|x| e(x.to_string()))?;
            c.draw_series(obs.iter().map(|&pt| Circle::new(pt, 3, col.filled())))
                .map_err(|x| e(x.to_string()))?;
        }
    }
    Ok(svg)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The HTML report of a population fit: parameter table (estimates on the log scale with
/// standard errors and the typical values on the natural scale), objective, and the four
/// diagnostic plots embedded as inline SVG. `title` names the data set.
pub fn html(fit: &PopFit, vpc: &[VpcBin], title: &str, unit: &str) -> Result<String, PlotError> {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>body{{font-family:sans-serif;max-width:1100px;margin:auto}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}</style></head><body>\
         <h1>Population PK fit: {t}</h1>\
         <p>Model <b>{m}</b>, FOCE-I, {err:?} residual error; {n} observations in {s} subjects; \
         −2 log L = {ofv:.3} (log-likelihood {ll:.3}); {ev} objective evaluations, {w:.2} s.</p>",
        t = esc(title),
        m = fit.model.pk.name(),
        err = fit.model.error,
        n = fit.n_observations,
        s = fit.individuals.len(),
        ofv = fit.ofv,
        ll = fit.log_likelihood,
        ev = fit.evaluations,
        w = fit.wall_s
    );
    h.push_str("<h2>Estimates</h2><table><tr><th>parameter</th><th>estimate</th><th>SE</th><th>RSE %</th><th>natural scale</th></tr>");
    if let Some(se) = &fit.standard_errors {
        for (name, est, s) in se {
            let natural = if name.starts_with("log_") {
                format!("{:.5}", est.exp())
            } else {
                String::new()
            };
            let _ = write!(
                h,
                "<tr><td style=\"text-align:left\">{}</td><td>{est:.5}</td><td>{s:.5}</td><td>{:.1}</td><td>{natural}</td></tr>",
                esc(name),
                100.0 * s / est.abs().max(1e-12)
            );
        }
    } else {
        for (name, v) in fit.model.parameters.iter().zip(&fit.estimates.log_theta) {
            let _ = write!(
                h,
                "<tr><td style=\"text-align:left\">log_{}</td><td>{v:.5}</td><td>n/a</td><td></td><td>{:.5}</td></tr>",
                esc(name),
                v.exp()
            );
        }
    }
    h.push_str("</table>");
    let _ = write!(
        h,
        "<p>Ω diagonal (variances of η): {:?}; σ_add = {:.5} {unit}; σ_prop = {:.5}.</p>",
        (0..fit.model.n_eta())
            .map(|i| format!(
                "{}: {:.5}",
                fit.model.iiv[i],
                fit.estimates.omega[i * fit.model.n_eta() + i]
            ))
            .collect::<Vec<_>>(),
        fit.estimates.sigma_add,
        fit.estimates.sigma_prop,
        unit = esc(unit)
    );
    h.push_str("<h2>Goodness of fit</h2><div>");
    h.push_str(&observed_vs_predicted(fit, false, unit)?);
    h.push_str(&observed_vs_predicted(fit, true, unit)?);
    h.push_str(&cwres_vs_time(fit)?);
    h.push_str("</div><h2>Visual predictive check</h2>");
    h.push_str(&vpc_plot(vpc, unit)?);
    h.push_str("<p>Shaded: 90 % intervals of the simulated 5th/50th/95th percentiles; lines: the observed percentiles per time bin.</p></body></html>");
    Ok(h)
}
