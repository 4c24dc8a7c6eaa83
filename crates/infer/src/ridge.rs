//! Ridge regression with standardised features, an unpenalised intercept and exact
//! leave-one-out residuals (Hoerl & Kennard, Technometrics 12:55, 1970; the leave-one-out
//! identity `e₍₋ᵢ₎ = eᵢ / (1 − hᵢᵢ)` for linear smoothers: Hastie, Tibshirani & Friedman,
//! *The Elements of Statistical Learning*, 2nd ed., eq. 7.52).
//!
//! Model-agnostic: the hybrid twin forecast learns glucose residuals with it, and any model's
//! data-driven correction can use it.

use crate::optim::invert_spd;

/// A fitted ridge regression `y ≈ b₀ + Σⱼ bⱼ (xⱼ − meanⱼ)/sdⱼ`.
#[derive(Debug, Clone, PartialEq)]
pub struct RidgeFit {
    /// Feature means, length p.
    pub mean: Vec<f64>,
    /// Feature standard deviations (1 for constant features), length p.
    pub sd: Vec<f64>,
    /// Intercept `b₀` (the mean of y).
    pub intercept: f64,
    /// Coefficients on standardised features, length p.
    pub coef: Vec<f64>,
    /// Exact leave-one-out residuals `yᵢ − ŷ₍₋ᵢ₎`, one per training row (same order).
    pub loo_residuals: Vec<f64>,
}

impl RidgeFit {
    /// Fit on rows `x` (n × p, every row of length p) and targets `y` (length n) with penalty
    /// `lambda_per_row · n` on the squared standardised coefficients (the intercept is not
    /// penalised). `None` if n < p + 2, lengths disagree, any value is not finite, or the
    /// system is singular.
    pub fn fit(x: &[Vec<f64>], y: &[f64], lambda_per_row: f64) -> Option<RidgeFit> {
        let n = x.len();
        let p = x.first()?.len();
        if n != y.len() || n < p + 2 || x.iter().any(|r| r.len() != p) {
            return None;
        }
        if !y.iter().all(|v| v.is_finite()) || !x.iter().flatten().all(|v| v.is_finite()) {
            return None;
        }
        let nf = n as f64;
        let mean: Vec<f64> = (0..p)
            .map(|j| x.iter().map(|r| r[j]).sum::<f64>() / nf)
            .collect();
        let sd: Vec<f64> = (0..p)
            .map(|j| {
                let v = x.iter().map(|r| (r[j] - mean[j]).powi(2)).sum::<f64>() / nf;
                if v > 1e-18 {
                    v.sqrt()
                } else {
                    1.0
                }
            })
            .collect();
        let z: Vec<Vec<f64>> = x
            .iter()
            .map(|r| (0..p).map(|j| (r[j] - mean[j]) / sd[j]).collect())
            .collect();
        let ym = y.iter().sum::<f64>() / nf;
        let lambda = lambda_per_row.max(0.0) * nf;
        let mut a = vec![0.0; p * p];
        let mut b = vec![0.0; p];
        for (r, yy) in z.iter().zip(y) {
            for i in 0..p {
                b[i] += r[i] * (yy - ym);
                for j in 0..=i {
                    a[i * p + j] += r[i] * r[j];
                }
            }
        }
        for i in 0..p {
            a[i * p + i] += lambda.max(1e-9 * nf);
            for j in 0..i {
                a[j * p + i] = a[i * p + j];
            }
        }
        let inv = invert_spd(&a, p)?;
        let coef: Vec<f64> = (0..p)
            .map(|i| (0..p).map(|j| inv[i * p + j] * b[j]).sum())
            .collect();
        // leverage of the centred design plus the intercept's 1/n
        let loo_residuals = z
            .iter()
            .zip(y)
            .map(|(r, yy)| {
                let fit = ym + (0..p).map(|j| coef[j] * r[j]).sum::<f64>();
                let mut h = 1.0 / nf;
                for i in 0..p {
                    let s: f64 = (0..p).map(|j| inv[i * p + j] * r[j]).sum();
                    h += r[i] * s;
                }
                (yy - fit) / (1.0 - h).max(1e-6)
            })
            .collect();
        Some(RidgeFit {
            mean,
            sd,
            intercept: ym,
            coef,
            loo_residuals,
        })
    }

    /// Prediction for one feature row (length p).
    pub fn predict(&self, x: &[f64]) -> f64 {
        self.intercept
            + x.iter()
                .zip(&self.mean)
                .zip(&self.sd)
                .zip(&self.coef)
                .map(|(((v, m), s), c)| c * (v - m) / s)
                .sum::<f64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_a_linear_relation_and_exact_loo_residuals() {
        // y = 3 + 2 x0 - x1 + small deterministic noise
        let x: Vec<Vec<f64>> = (0..40)
            .map(|i| vec![i as f64 * 0.1, ((i * 7) % 11) as f64])
            .collect();
        let y: Vec<f64> = x
            .iter()
            .enumerate()
            .map(|(i, r)| 3.0 + 2.0 * r[0] - r[1] + 0.01 * ((i % 3) as f64 - 1.0))
            .collect();
        let f = RidgeFit::fit(&x, &y, 1e-8).unwrap();
        assert!((f.predict(&[1.0, 2.0]) - 3.0).abs() < 0.02, "{f:?}");
        // LOO residual of row 5 equals the residual of a refit without row 5
        let k = 5;
        let (xs, ys): (Vec<_>, Vec<_>) = x
            .iter()
            .zip(&y)
            .enumerate()
            .filter(|(i, _)| *i != k)
            .map(|(_, (a, b))| (a.clone(), *b))
            .unzip();
        // same absolute penalty: lambda_per_row·n is matched by scaling
        let g = RidgeFit::fit(&xs, &ys, 1e-8 * 40.0 / 39.0).unwrap();
        let direct = y[k] - g.predict(&x[k]);
        // standardisation differs slightly without row k: allow a small tolerance
        assert!(
            (direct - f.loo_residuals[k]).abs() < 2e-3,
            "{direct} vs {}",
            f.loo_residuals[k]
        );
        // a strong penalty shrinks to the mean
        let s = RidgeFit::fit(&x, &y, 1e6).unwrap();
        let ym = y.iter().sum::<f64>() / y.len() as f64;
        assert!((s.predict(&[0.0, 0.0]) - ym).abs() < 0.01);
        assert!(RidgeFit::fit(&x[..3], &y[..3], 1.0).is_none());
    }
}
