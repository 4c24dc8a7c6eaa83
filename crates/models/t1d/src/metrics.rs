//! Glycaemic outcome metrics.
//!
//! Sources: Battelino T et al., *Clinical targets for CGM data interpretation: recommendations
//! from the international consensus on time in range*, Diabetes Care 42(8):1593–1603, 2019
//! (time in ranges, CV); Bergenstal RM et al., *Glucose Management Indicator (GMI)*, Diabetes
//! Care 41(11):2275–2280, 2018 (`GMI % = 3.31 + 0.02392 · mean mg/dL`); Kovatchev BP et al. /
//! Clarke & Kovatchev, Diabetes Technol Ther 11(S1):S45, 2009 (risk function
//! `f = 1.509·(ln(BG)^1.084 − 5.381)`, `r = 10 f²`; LBGI, HBGI = mean over **all** samples of
//! the low/high branch, risk index = LBGI + HBGI).
//!
//! Band conventions: TBR<54 is `g < 54`, TBR<70 is `g < 70`, TIR is `70 ≤ g ≤ 180`,
//! TAR>180 is `g > 180`, TAR>250 is `g > 250` (percent of samples). SD is the sample standard
//! deviation (n − 1).

use serde::Serialize;

/// Summary metrics of a glucose series (all glucose values mg/dL).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct GlycaemicMetrics {
    /// Number of samples used.
    pub n: usize,
    /// Mean glucose, mg/dL.
    pub mean_mg_dl: f64,
    /// Sample standard deviation, mg/dL.
    pub sd_mg_dl: f64,
    /// Coefficient of variation, %.
    pub cv_pct: f64,
    /// Glucose management indicator, %.
    pub gmi_pct: f64,
    /// % time < 54 mg/dL.
    pub tbr54_pct: f64,
    /// % time < 70 mg/dL.
    pub tbr70_pct: f64,
    /// % time in 70–180 mg/dL.
    pub tir_pct: f64,
    /// % time > 180 mg/dL.
    pub tar180_pct: f64,
    /// % time > 250 mg/dL.
    pub tar250_pct: f64,
    /// Low blood glucose index.
    pub lbgi: f64,
    /// High blood glucose index.
    pub hbgi: f64,
    /// Risk index = LBGI + HBGI.
    pub risk_index: f64,
}

/// Kovatchev's symmetrised risk of one glucose value (mg/dL): returns `(rl, rh)`, the low and
/// high branches of `r = 10 f²`. Non-positive input is clamped to 1 mg/dL (maximal low risk).
pub fn risk(bg_mg_dl: f64) -> (f64, f64) {
    let bg = bg_mg_dl.max(1.0);
    let f = 1.509 * (bg.ln().powf(1.084) - 5.381);
    let r = 10.0 * f * f;
    if f < 0.0 {
        (r, 0.0)
    } else {
        (0.0, r)
    }
}

/// Metrics of `glucose_mg_dl` (equally spaced samples). Non-finite samples are skipped.
/// Returns `None` when no finite sample remains.
pub fn glycaemic_metrics(glucose_mg_dl: &[f64]) -> Option<GlycaemicMetrics> {
    let g: Vec<f64> = glucose_mg_dl
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .collect();
    let n = g.len();
    if n == 0 {
        return None;
    }
    let nf = n as f64;
    let mean = g.iter().sum::<f64>() / nf;
    let sd = if n > 1 {
        (g.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (nf - 1.0)).sqrt()
    } else {
        0.0
    };
    let pct =
        |pred: &dyn Fn(f64) -> bool| 100.0 * g.iter().filter(|&&v| pred(v)).count() as f64 / nf;
    let (mut lb, mut hb) = (0.0, 0.0);
    for &v in &g {
        let (l, h) = risk(v);
        lb += l;
        hb += h;
    }
    let (lbgi, hbgi) = (lb / nf, hb / nf);
    Some(GlycaemicMetrics {
        n,
        mean_mg_dl: mean,
        sd_mg_dl: sd,
        cv_pct: 100.0 * sd / mean,
        gmi_pct: 3.31 + 0.02392 * mean,
        tbr54_pct: pct(&|v| v < 54.0),
        tbr70_pct: pct(&|v| v < 70.0),
        tir_pct: pct(&|v| (70.0..=180.0).contains(&v)),
        tar180_pct: pct(&|v| v > 180.0),
        tar250_pct: pct(&|v| v > 250.0),
        lbgi,
        hbgi,
        risk_index: lbgi + hbgi,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn hand_computed_values() {
        let m = glycaemic_metrics(&[50.0, 100.0, 200.0, 300.0]).unwrap();
        assert_eq!(m.n, 4);
        assert!((m.mean_mg_dl - 162.5).abs() < 1e-12);
        assert_eq!(m.tbr54_pct, 25.0);
        assert_eq!(m.tir_pct, 25.0);
        assert_eq!(m.tar180_pct, 50.0);
        assert_eq!(m.tar250_pct, 25.0);
        // risk is ~0 near 112.5 mg/dL (f = 0)
        let (l, h) = risk(112.5);
        assert!(l + h < 0.01);
        assert!((m.gmi_pct - (3.31 + 0.02392 * 162.5)).abs() < 1e-12);
        assert!(glycaemic_metrics(&[f64::NAN]).is_none());
    }
}
