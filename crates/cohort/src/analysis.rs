//! Trial analysis: per-arm mean and SD, the effect of each arm against the first with a 95 %
//! confidence interval — paired t (crossover) or Welch t (parallel) — and, for parallel designs,
//! PROCOVA (Schuler et al. 2021, *Increasing the efficiency of randomized trial estimates via
//! linear adjustment for a prognostic score*, Int J Biostat 18:329; EMA qualification opinion
//! for PROCOVA, 2022): ANCOVA of the endpoint on treatment and a prognostic score, here the
//! digital twin's prediction of the patient's outcome under the control (first) arm.
//!
//! t quantiles come from `statrs` (Student's t inverse CDF).

use serde::Serialize;
use statrs::distribution::{ContinuousCDF, StudentsT};

/// Two-sided 97.5 % quantile of Student's t with `df` degrees of freedom (NaN if `df ≤ 0` or
/// not finite; the normal quantile for infinite `df`).
pub fn t975(df: f64) -> f64 {
    if df == f64::INFINITY {
        return 1.959_963_984_540_054;
    }
    if df.is_nan() || df <= 0.0 {
        return f64::NAN;
    }
    if df > 1000.0 {
        // Cornish–Fisher expansion about the normal quantile (Abramowitz & Stegun 26.7.5);
        // error O(ν⁻³) < 1e-9 here. statrs' inverse incomplete beta does not converge for
        // very large ν.
        let z = 1.959_963_984_540_054_f64;
        return z
            + (z.powi(3) + z) / (4.0 * df)
            + (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / (96.0 * df * df);
    }
    match StudentsT::new(0.0, 1.0, df) {
        Ok(t) => t.inverse_cdf(0.975),
        Err(_) => f64::NAN,
    }
}

/// Mean and sample SD (n − 1; 0 for one value, NaN for none).
pub fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let m = v.iter().sum::<f64>() / n;
    let s = if v.len() > 1 {
        (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    (m, s)
}

/// An effect estimate `arm − reference` with its standard error and 95 % CI.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Effect {
    /// Arm name.
    pub arm: String,
    /// Reference (first) arm.
    pub reference: String,
    /// Method: `paired-t`, `welch-t` or `procova-ancova`.
    pub method: String,
    /// Estimate (endpoint units).
    pub estimate: f64,
    /// Standard error.
    pub se: f64,
    /// Degrees of freedom of the t reference.
    pub df: f64,
    /// 95 % CI lower bound.
    pub ci_low: f64,
    /// 95 % CI upper bound.
    pub ci_high: f64,
}

impl Effect {
    fn new(arm: &str, reference: &str, method: &str, estimate: f64, se: f64, df: f64) -> Effect {
        let q = t975(df);
        Effect {
            arm: arm.into(),
            reference: reference.into(),
            method: method.into(),
            estimate,
            se,
            df,
            ci_low: estimate - q * se,
            ci_high: estimate + q * se,
        }
    }
}

/// Paired-t effect of `y` − `y0` (same patients, same order).
pub fn paired(arm: &str, reference: &str, y: &[f64], y0: &[f64]) -> Effect {
    let d: Vec<f64> = y.iter().zip(y0).map(|(a, b)| a - b).collect();
    let (m, s) = mean_sd(&d);
    let n = d.len() as f64;
    Effect::new(arm, reference, "paired-t", m, s / n.sqrt(), n - 1.0)
}

/// Welch-t effect of independent samples `y` − `y0` (Welch–Satterthwaite degrees of freedom).
pub fn welch(arm: &str, reference: &str, y: &[f64], y0: &[f64]) -> Effect {
    let (m1, s1) = mean_sd(y);
    let (m0, s0) = mean_sd(y0);
    let (n1, n0) = (y.len() as f64, y0.len() as f64);
    let (v1, v0) = (s1 * s1 / n1, s0 * s0 / n0);
    let se = (v1 + v0).sqrt();
    let df = if v1 + v0 > 0.0 {
        (v1 + v0).powi(2) / (v1 * v1 / (n1 - 1.0) + v0 * v0 / (n0 - 1.0))
    } else {
        n1 + n0 - 2.0
    };
    Effect::new(arm, reference, "welch-t", m1 - m0, se, df)
}

/// Ordinary least squares of `y` on the columns `x` (each of length `y.len()`, an intercept
/// must be included by the caller): returns `(coefficients, their SEs, residual df)`, or `None`
/// if `XᵀX` is singular or there are no residual degrees of freedom.
pub fn ols_multi(x: &[Vec<f64>], y: &[f64]) -> Option<(Vec<f64>, Vec<f64>, f64)> {
    let p = x.len();
    let n = y.len();
    if n <= p {
        return None;
    }
    // XᵀX and Xᵀy
    let mut a = vec![vec![0.0; p]; p];
    let mut b = vec![0.0; p];
    for i in 0..p {
        for j in 0..p {
            a[i][j] = x[i].iter().zip(&x[j]).map(|(u, v)| u * v).sum();
        }
        b[i] = x[i].iter().zip(y).map(|(u, v)| u * v).sum();
    }
    let inv = invert(&a)?;
    let beta: Vec<f64> = (0..p)
        .map(|i| (0..p).map(|j| inv[i][j] * b[j]).sum())
        .collect();
    let rss: f64 = (0..n)
        .map(|k| {
            let fit: f64 = (0..p).map(|i| beta[i] * x[i][k]).sum();
            (y[k] - fit).powi(2)
        })
        .sum();
    let df = (n - p) as f64;
    let s2 = rss / df;
    let se = (0..p).map(|i| (s2 * inv[i][i]).max(0.0).sqrt()).collect();
    Some((beta, se, df))
}

/// Inverse of a small dense matrix by Gauss–Jordan with partial pivoting; `None` if singular.
pub(crate) fn invert(a: &[Vec<f64>]) -> Option<Vec<Vec<f64>>> {
    let p = a.len();
    let mut m: Vec<Vec<f64>> = a
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut r = r.clone();
            r.extend((0..p).map(|j| if i == j { 1.0 } else { 0.0 }));
            r
        })
        .collect();
    let scale = a.iter().flatten().fold(0.0f64, |s, v| s.max(v.abs()));
    for c in 0..p {
        let piv = (c..p).max_by(|&i, &j| m[i][c].abs().total_cmp(&m[j][c].abs()))?;
        if m[piv][c].abs() <= 1e-12 * scale.max(1e-300) {
            return None;
        }
        m.swap(c, piv);
        let d = m[c][c];
        for v in m[c].iter_mut() {
            *v /= d;
        }
        for r in 0..p {
            if r != c {
                let f = m[r][c];
                if f != 0.0 {
                    let pivot_row = m[c].clone();
                    for (x, pv) in m[r].iter_mut().zip(&pivot_row) {
                        *x -= f * pv;
                    }
                }
            }
        }
    }
    Some(m.into_iter().map(|r| r[p..].to_vec()).collect())
}

/// PROCOVA result for one arm against the reference, on one endpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Procova {
    /// Unadjusted estimate from the ANOVA model `y ~ 1 + T` (pooled-variance SE).
    pub unadjusted: Effect,
    /// PROCOVA estimate from `y ~ 1 + T + m` (m = prognostic score).
    pub adjusted: Effect,
    /// Coefficient of the prognostic score.
    pub prognostic_coefficient: f64,
    /// Pearson correlation of the prognostic score with the outcome in the reference arm.
    pub prognostic_correlation_reference: f64,
    /// `1 − SE²_adjusted / SE²_unadjusted`.
    pub variance_reduction: f64,
    /// Sample size needed for the same precision, as a fraction of the unadjusted trial's
    /// (`SE²_adjusted / SE²_unadjusted`); the saving is `1 −` this.
    pub sample_size_fraction: f64,
}

fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let (ma, sa) = mean_sd(a);
    let (mb, sb) = mean_sd(b);
    let n = a.len() as f64;
    let c: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - ma) * (y - mb))
        .sum::<f64>()
        / (n - 1.0);
    c / (sa * sb)
}

/// PROCOVA of arm (`y1` outcomes, `m1` prognostic scores) against the reference (`y0`, `m0`).
/// `None` when the regression is singular (e.g. a constant endpoint) or samples are too small.
pub fn procova(
    arm: &str,
    reference: &str,
    y1: &[f64],
    m1: &[f64],
    y0: &[f64],
    m0: &[f64],
) -> Option<Procova> {
    let n = y1.len() + y0.len();
    let y: Vec<f64> = y0.iter().chain(y1).copied().collect();
    let one = vec![1.0; n];
    let t: Vec<f64> = (0..n)
        .map(|k| if k < y0.len() { 0.0 } else { 1.0 })
        .collect();
    let m: Vec<f64> = m0.iter().chain(m1).copied().collect();
    let (bu, su, dfu) = ols_multi(&[one.clone(), t.clone()], &y)?;
    let (ba, sa, dfa) = ols_multi(&[one, t, m], &y)?;
    let unadjusted = Effect::new(arm, reference, "anova", bu[1], su[1], dfu);
    let adjusted = Effect::new(arm, reference, "procova-ancova", ba[1], sa[1], dfa);
    let frac = (sa[1] / su[1]).powi(2);
    Some(Procova {
        unadjusted,
        adjusted,
        prognostic_coefficient: ba[2],
        prognostic_correlation_reference: pearson(m0, y0),
        variance_reduction: 1.0 - frac,
        sample_size_fraction: frac,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t_quantiles_and_tests() {
        assert!((t975(10.0) - 2.228_138_851_986_27).abs() < 1e-6);
        assert!((t975(1e9) - 1.959_964).abs() < 1e-5);
        // both branches agree at the switch
        assert!((t975(1000.0) - t975(1_000.000_001)).abs() < 1e-7);
        assert!(t975(0.0).is_nan());
        let e = paired("a", "b", &[2.0, 4.0, 6.0], &[1.0, 2.0, 3.0]);
        assert!((e.estimate - 2.0).abs() < 1e-12 && (e.se - 1.0 / 3f64.sqrt()).abs() < 1e-12);
        let w = welch("a", "b", &[1.0, 2.0, 3.0, 4.0], &[1.0, 2.0, 3.0]);
        assert!((w.estimate - 0.5).abs() < 1e-12);
        // Welch df for equal variances-ish samples is within (min n − 1, n1 + n0 − 2)
        assert!(w.df > 2.0 && w.df < 5.0);
    }

    #[test]
    fn procova_recovers_effect_and_reduces_variance() {
        // y = 3 + 2·T + m + small noise; m spread widely → large variance reduction
        let m0: Vec<f64> = (0..50).map(|k| (k as f64 * 0.37).sin() * 10.0).collect();
        let m1: Vec<f64> = (0..50).map(|k| (k as f64 * 0.53).cos() * 10.0).collect();
        let noise = |k: usize| ((k * 7919) % 13) as f64 / 13.0 - 0.5;
        let y0: Vec<f64> = m0
            .iter()
            .enumerate()
            .map(|(k, m)| 3.0 + m + noise(k))
            .collect();
        let y1: Vec<f64> = m1
            .iter()
            .enumerate()
            .map(|(k, m)| 5.0 + m + noise(k + 3))
            .collect();
        let p = procova("t", "c", &y1, &m1, &y0, &m0).unwrap();
        assert!((p.adjusted.estimate - 2.0).abs() < 0.2, "{p:?}");
        assert!((p.prognostic_coefficient - 1.0).abs() < 0.05);
        assert!(p.variance_reduction > 0.9, "{p:?}");
        assert!(p.adjusted.ci_low < 2.0 && p.adjusted.ci_high > 2.0);
        // a constant outcome is singular in neither model but gives zero SEs; a constant
        // prognostic score is singular
        assert!(procova("t", "c", &y1, &[1.0; 50], &y0, &[1.0; 50]).is_none());
    }
}
