//! Non-compartmental analysis (NCA) of rich single-dose concentration–time data.
//!
//! ## Method
//! * **Cmax, tmax**: the largest observed concentration and its (first) time; **Clast, tlast**:
//!   the last positive (measurable) concentration and its time.
//! * **AUC and AUMC** by the *linear-up/log-down* trapezoidal rule (Gabrielsson & Weiner,
//!   *Pharmacokinetic and Pharmacodynamic Data Analysis*, 5th ed., 2016, ch. 2; PKNCA's
//!   `auc.method = "lin up/log down"`): on an interval where the concentration rises or is flat,
//!   or either end is 0, the linear trapezoid `Δt (C₁ + C₂)/2`; where it falls between two
//!   positive values, the log trapezoid `Δt (C₁ − C₂)/ln(C₁/C₂)` (exact for an exponential
//!   decline), and for the first moment `(t₁C₁ − t₂C₂)/k + (C₁ − C₂)/k²` with
//!   `k = ln(C₁/C₂)/Δt`. AUClast integrates from the dose (time 0) to tlast.
//! * **Time 0**: times are hours after the dose. If there is no sample at time 0, an
//!   extravascular dose or an infusion gets C(0) = 0 (a single dose). An IV bolus gets the
//!   back-extrapolated C0 (as PKNCA's `pk.calc.c0`): the time-0 sample when it is positive,
//!   else the log-linear regression through the first two positive samples when they decline,
//!   else the first positive sample.
//! * **λz** (terminal rate constant): log-linear least squares on the last n ≥ 3 positive
//!   samples after Cmax, up to tlast (the Cmax sample itself is included for an IV bolus and
//!   excluded for extravascular doses and infusions, as WinNonlin does). Among the fits with
//!   λz > 0, the best adjusted R² `1 − (1 − R²)(n − 1)/(n − 2)` is found and the fit with the
//!   most points whose adjusted R² is within 1e-4 of it is taken (PKNCA's
//!   `adj.r.squared.factor`, WinNonlin's best-fit rule). No such fit → λz and everything that
//!   needs it are `None`.
//! * **AUCinf** = AUClast + Clast/λz (observed Clast);
//!   **AUMCinf** = AUMClast + tlast·Clast/λz + Clast/λz²; **t½** = ln 2/λz;
//!   **CL** (CL/F for extravascular) = dose/AUCinf; **Vz** (Vz/F) = dose/(λz·AUCinf);
//!   **%AUC extrapolated** = 100·(AUCinf − AUClast)/AUCinf.
//!
//! Units: times in hours, concentrations in the data set's concentration unit (amount/L in this
//! crate), the dose in its amount unit; so AUC is conc·h, CL is L/h and Vz L when the
//! concentration unit is amount/L (per kg when the dose is per kg, as in Theoph).

use crate::data::Dataset;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Route of the single dose (affects time 0 and the λz window).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Route {
    /// Intravenous bolus: C0 is back-extrapolated; the Cmax sample may enter λz.
    IvBolus,
    /// Oral or other extravascular dose: C(0) = 0; the Cmax sample is excluded from λz.
    Extravascular,
    /// Zero-order infusion starting at time 0: C(0) = 0; the Cmax sample is excluded from λz.
    Infusion {
        /// Infusion duration, hours (> 0, finite).
        duration_h: f64,
    },
}

/// Result of [`nca`]. Concentrations in the input unit, times in hours.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NcaResult {
    /// Largest observed concentration.
    pub cmax: f64,
    /// Time of Cmax (first occurrence), h.
    pub tmax_h: f64,
    /// Last positive concentration.
    pub clast: f64,
    /// Time of Clast, h.
    pub tlast_h: f64,
    /// IV bolus only: the concentration at time 0 used for the first interval (see module docs).
    pub c0: Option<f64>,
    /// AUC from 0 to tlast, conc·h (linear-up/log-down).
    pub auc_last: f64,
    /// AUMC (first moment) from 0 to tlast, conc·h².
    pub aumc_last: f64,
    /// Terminal rate constant λz, 1/h.
    pub lambda_z_per_h: Option<f64>,
    /// Terminal half-life ln 2/λz, h.
    pub t_half_h: Option<f64>,
    /// Adjusted R² of the λz regression.
    pub r2_adj: Option<f64>,
    /// Number of samples in the λz regression (0 when there is no λz).
    pub n_lambda_z: usize,
    /// Time of the first sample in the λz regression, h.
    pub lambda_z_first_h: Option<f64>,
    /// AUC from 0 to infinity, conc·h.
    pub auc_inf: Option<f64>,
    /// AUMC from 0 to infinity, conc·h².
    pub aumc_inf: Option<f64>,
    /// Percentage of AUCinf extrapolated beyond tlast.
    pub auc_pct_extrapolated: Option<f64>,
    /// Dose/AUCinf: clearance (IV) or apparent clearance CL/F (extravascular), L/h when the
    /// concentration unit is amount/L.
    pub cl_f_l_per_h: Option<f64>,
    /// Dose/(λz·AUCinf): terminal volume Vz (IV) or Vz/F (extravascular), L when the
    /// concentration unit is amount/L.
    pub vz_f_l: Option<f64>,
}

/// Why an NCA could not be done.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum NcaError {
    /// `times_h` and `conc` differ in length.
    #[error("{times} times but {conc} concentrations")]
    LengthMismatch {
        /// Number of times.
        times: usize,
        /// Number of concentrations.
        conc: usize,
    },
    /// Fewer than 2 samples.
    #[error("{n} samples; NCA needs at least 2")]
    TooFewPoints {
        /// Number of samples.
        n: usize,
    },
    /// A time is negative or not finite.
    #[error("time #{index} = {value} must be finite and ≥ 0 (hours after the dose)")]
    InvalidTime {
        /// 0-based sample index.
        index: usize,
        /// The value.
        value: f64,
    },
    /// Times are not strictly increasing.
    #[error("times must be strictly increasing: time #{index} = {value} follows {previous}")]
    Unsorted {
        /// 0-based sample index.
        index: usize,
        /// The value.
        value: f64,
        /// The previous time.
        previous: f64,
    },
    /// A concentration is negative or not finite.
    #[error("concentration #{index} = {value} must be finite and ≥ 0")]
    InvalidConcentration {
        /// 0-based sample index.
        index: usize,
        /// The value.
        value: f64,
    },
    /// The dose is not finite and > 0.
    #[error("dose = {0} must be finite and > 0")]
    InvalidDose(f64),
    /// The infusion duration is not finite and > 0.
    #[error("infusion duration = {0} h must be finite and > 0")]
    InvalidDuration(f64),
    /// Every concentration is 0.
    #[error("no positive concentration")]
    NoPositiveConcentration,
    /// A subject of a data set is not a single-dose subject.
    #[error("subject `{id}`: {reason}")]
    Subject {
        /// Subject identifier.
        id: String,
        /// Reason.
        reason: String,
    },
}

/// Area and first moment of one interval by linear-up/log-down.
fn segment(t1: f64, c1: f64, t2: f64, c2: f64) -> (f64, f64) {
    let dt = t2 - t1;
    if c2 >= c1 || c1 <= 0.0 || c2 <= 0.0 {
        (dt * (c1 + c2) / 2.0, dt * (t1 * c1 + t2 * c2) / 2.0)
    } else {
        let k = (c1 / c2).ln() / dt;
        let auc = (c1 - c2) / k;
        let aumc = (t1 * c1 - t2 * c2) / k + (c1 - c2) / (k * k);
        (auc, aumc)
    }
}

/// Least-squares fit of ln C = a − λ t; returns (λ, adjusted R²).
fn loglin(t: &[f64], c: &[f64]) -> (f64, f64) {
    let n = t.len() as f64;
    let y: Vec<f64> = c.iter().map(|v| v.ln()).collect();
    let mt = t.iter().sum::<f64>() / n;
    let my = y.iter().sum::<f64>() / n;
    let (mut sxx, mut sxy, mut syy) = (0.0, 0.0, 0.0);
    for (ti, yi) in t.iter().zip(&y) {
        sxx += (ti - mt) * (ti - mt);
        sxy += (ti - mt) * (yi - my);
        syy += (yi - my) * (yi - my);
    }
    let slope = sxy / sxx;
    let r2 = if syy > 0.0 {
        sxy * sxy / (sxx * syy)
    } else {
        f64::NAN
    };
    let r2_adj = 1.0 - (1.0 - r2) * (n - 1.0) / (n - 2.0);
    (-slope, r2_adj)
}

/// Non-compartmental analysis of one single-dose profile (see the [module docs](self)).
///
/// `times_h`: hours after the dose (finite, ≥ 0, strictly increasing); `conc`: concentrations
/// (finite, ≥ 0; zeros are below-quantification values taken as 0); `dose`: amount (> 0).
///
/// # Errors
/// [`NcaError`] for mismatched lengths, fewer than 2 samples, invalid or unsorted times,
/// negative/non-finite concentrations, an invalid dose or infusion duration, or no positive
/// concentration.
pub fn nca(times_h: &[f64], conc: &[f64], dose: f64, route: Route) -> Result<NcaResult, NcaError> {
    if times_h.len() != conc.len() {
        return Err(NcaError::LengthMismatch {
            times: times_h.len(),
            conc: conc.len(),
        });
    }
    let n = times_h.len();
    if n < 2 {
        return Err(NcaError::TooFewPoints { n });
    }
    for (i, &t) in times_h.iter().enumerate() {
        if !t.is_finite() || t < 0.0 {
            return Err(NcaError::InvalidTime { index: i, value: t });
        }
        if i > 0 && t <= times_h[i - 1] {
            return Err(NcaError::Unsorted {
                index: i,
                value: t,
                previous: times_h[i - 1],
            });
        }
    }
    for (i, &c) in conc.iter().enumerate() {
        if !c.is_finite() || c < 0.0 {
            return Err(NcaError::InvalidConcentration { index: i, value: c });
        }
    }
    if !dose.is_finite() || dose <= 0.0 {
        return Err(NcaError::InvalidDose(dose));
    }
    if let Route::Infusion { duration_h } = route {
        if !duration_h.is_finite() || duration_h <= 0.0 {
            return Err(NcaError::InvalidDuration(duration_h));
        }
    }
    let Some(ilast) = conc.iter().rposition(|&c| c > 0.0) else {
        return Err(NcaError::NoPositiveConcentration);
    };
    let mut imax = 0;
    for i in 1..n {
        if conc[i] > conc[imax] {
            imax = i;
        }
    }
    let (cmax, tmax_h) = (conc[imax], times_h[imax]);
    let (clast, tlast_h) = (conc[ilast], times_h[ilast]);

    // The profile from time 0.
    let mut t: Vec<f64> = Vec::with_capacity(n + 1);
    let mut c: Vec<f64> = Vec::with_capacity(n + 1);
    let mut c0 = None;
    match route {
        Route::IvBolus => {
            let pos: Vec<usize> = (0..n).filter(|&i| conc[i] > 0.0).collect();
            let v0 = if times_h[0] == 0.0 && conc[0] > 0.0 {
                conc[0]
            } else {
                // First two positive samples after time 0.
                let after: Vec<usize> = pos.iter().copied().filter(|&i| times_h[i] > 0.0).collect();
                match after.as_slice() {
                    [a, b, ..] if conc[*b] < conc[*a] => {
                        let k = (conc[*a] / conc[*b]).ln() / (times_h[*b] - times_h[*a]);
                        conc[*a] * (k * times_h[*a]).exp()
                    }
                    [a, ..] => conc[*a],
                    [] => conc[pos[0]],
                }
            };
            c0 = Some(v0);
            t.push(0.0);
            c.push(v0);
            let skip = usize::from(times_h[0] == 0.0);
            t.extend_from_slice(&times_h[skip..]);
            c.extend_from_slice(&conc[skip..]);
        }
        Route::Extravascular | Route::Infusion { .. } => {
            if times_h[0] > 0.0 {
                t.push(0.0);
                c.push(0.0);
            }
            t.extend_from_slice(times_h);
            c.extend_from_slice(conc);
        }
    }
    let (mut auc_last, mut aumc_last) = (0.0, 0.0);
    for i in 1..t.len() {
        if t[i] > tlast_h {
            break;
        }
        let (a, m) = segment(t[i - 1], c[i - 1], t[i], c[i]);
        auc_last += a;
        aumc_last += m;
    }

    // λz candidates: positive samples from (IV) or after (otherwise) Cmax up to tlast.
    let first = match route {
        Route::IvBolus => imax,
        _ => imax + 1,
    };
    let cand: Vec<usize> = (first..=ilast).filter(|&i| conc[i] > 0.0).collect();
    let mut fits: Vec<(usize, f64, f64)> = Vec::new(); // (n points, λz, adj R²)
    for k in 3..=cand.len() {
        let idx = &cand[cand.len() - k..];
        let tt: Vec<f64> = idx.iter().map(|&i| times_h[i]).collect();
        let cc: Vec<f64> = idx.iter().map(|&i| conc[i]).collect();
        let (lz, r2a) = loglin(&tt, &cc);
        if lz > 0.0 && lz.is_finite() && r2a.is_finite() {
            fits.push((k, lz, r2a));
        }
    }
    let best = fits.iter().map(|f| f.2).fold(f64::NEG_INFINITY, f64::max);
    let chosen = fits
        .iter()
        .filter(|f| f.2 >= best - 1e-4)
        .max_by_key(|f| f.0)
        .copied();

    let mut r = NcaResult {
        cmax,
        tmax_h,
        clast,
        tlast_h,
        c0,
        auc_last,
        aumc_last,
        lambda_z_per_h: None,
        t_half_h: None,
        r2_adj: None,
        n_lambda_z: 0,
        lambda_z_first_h: None,
        auc_inf: None,
        aumc_inf: None,
        auc_pct_extrapolated: None,
        cl_f_l_per_h: None,
        vz_f_l: None,
    };
    if let Some((k, lz, r2a)) = chosen {
        let auc_inf = auc_last + clast / lz;
        r.lambda_z_per_h = Some(lz);
        r.t_half_h = Some(std::f64::consts::LN_2 / lz);
        r.r2_adj = Some(r2a);
        r.n_lambda_z = k;
        r.lambda_z_first_h = Some(times_h[cand[cand.len() - k]]);
        r.auc_inf = Some(auc_inf);
        r.aumc_inf = Some(aumc_last + tlast_h * clast / lz + clast / (lz * lz));
        r.auc_pct_extrapolated = Some(100.0 * (auc_inf - auc_last) / auc_inf);
        r.cl_f_l_per_h = Some(dose / auc_inf);
        r.vz_f_l = Some(dose / (lz * auc_inf));
    }
    Ok(r)
}

/// [`nca`] for every subject of a data set, in subject order.
///
/// A subject qualifies when it has exactly one dose record, without `ADDL` or `SS`; its amount is
/// the NCA dose and its time the origin (sample times are taken relative to it; a sample before
/// the dose is an error). Other subjects get [`NcaError::Subject`]. All of a subject's
/// observations are used, whatever their `CMT`.
pub fn nca_dataset(ds: &Dataset, route: Route) -> Vec<(String, Result<NcaResult, NcaError>)> {
    ds.subjects
        .iter()
        .map(|s| {
            let err = |reason: String| NcaError::Subject {
                id: s.id.clone(),
                reason,
            };
            let res = (|| {
                let d = match s.doses.as_slice() {
                    [d] => d,
                    ds => {
                        return Err(err(format!(
                            "{} dose records; NCA needs exactly one",
                            ds.len()
                        )))
                    }
                };
                if d.addl > 0 || d.ss {
                    return Err(err(
                        "the dose has ADDL or SS; NCA needs a single dose".into()
                    ));
                }
                let mut t = Vec::with_capacity(s.observations.len());
                let mut c = Vec::with_capacity(s.observations.len());
                for o in &s.observations {
                    if o.time_h < d.time_h {
                        return Err(err(format!(
                            "observation at {} h (line {}) precedes the dose at {} h",
                            o.time_h, o.line, d.time_h
                        )));
                    }
                    t.push(o.time_h - d.time_h);
                    c.push(o.dv);
                }
                nca(&t, &c, d.amount, route)
            })();
            (s.id.clone(), res)
        })
        .collect()
}
