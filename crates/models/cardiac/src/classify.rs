//! TdP risk classifier of the CiPA training set: a proportional-odds (ordinal logistic) regression
//! of the risk category (0 low, 1 intermediate, 2 high) on qNet averaged over 1–4 × Cmax
//! (Dutta et al. 2017 Front Physiol 8:616), with leave-one-out cross-validation.
//!
//! Model: `P(Y ≥ 1) = σ(a₁ + b·z)`, `P(Y ≥ 2) = σ(a₂ + b·z)` with `a₁ > a₂`, `z` the standardised
//! qNet. Fitted by maximum likelihood with a small ridge penalty `0.05·b²` that keeps `b` finite
//! when the training drugs are perfectly separated (then the thresholds, not `b`, carry the fit).

use medtwin_infer::optim::nelder_mead;

/// Category names in order 0, 1, 2.
pub const CATEGORIES: [&str; 3] = ["low", "intermediate", "high"];

/// Category index of a CiPA name ("low" | "intermediate" | "high").
pub fn category_index(name: &str) -> Option<usize> {
    CATEGORIES.iter().position(|c| *c == name)
}

/// A fitted classifier.
#[derive(Clone, Debug, PartialEq)]
pub struct TdpClassifier {
    /// Mean of the training qNets, nC/µF.
    pub x_mean: f64,
    /// Standard deviation of the training qNets, nC/µF.
    pub x_sd: f64,
    /// Slope on standardised qNet (negative: lower qNet, higher risk).
    pub b: f64,
    /// Intercepts (a₁ for ≥ intermediate, a₂ for high), a₁ > a₂.
    pub a: [f64; 2],
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn probs(b: f64, a1: f64, a2: f64, z: f64) -> [f64; 3] {
    let ge1 = sigmoid(a1 + b * z);
    let ge2 = sigmoid(a2 + b * z);
    [1.0 - ge1, ge1 - ge2, ge2]
}

impl TdpClassifier {
    /// Fit to mean qNets `x_nc_per_uf` (nC/µF) and categories `y` (0, 1, 2); needs ≥ 3 drugs.
    pub fn fit(x_nc_per_uf: &[f64], y: &[usize]) -> TdpClassifier {
        let n = x_nc_per_uf.len() as f64;
        let mean = x_nc_per_uf.iter().sum::<f64>() / n;
        let sd = (x_nc_per_uf.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0))
            .sqrt()
            .max(1e-12);
        let z: Vec<f64> = x_nc_per_uf.iter().map(|v| (v - mean) / sd).collect();
        let mut nll = |p: &[f64]| {
            let (b, a2, a1) = (p[0], p[1], p[1] + p[2].exp());
            let mut s = 0.05 * b * b;
            for (zi, &yi) in z.iter().zip(y) {
                s -= probs(b, a1, a2, *zi)[yi].max(1e-300).ln();
            }
            s
        };
        let m = nelder_mead(
            &mut nll,
            &[-1.0, -1.0, 0.5],
            &[0.5, 0.5, 0.5],
            1e-12,
            20_000,
        );
        TdpClassifier {
            x_mean: mean,
            x_sd: sd,
            b: m.x[0],
            a: [m.x[1] + m.x[2].exp(), m.x[1]],
        }
    }

    /// Probabilities of low, intermediate and high risk at mean qNet `x_nc_per_uf`.
    pub fn probabilities(&self, x_nc_per_uf: f64) -> [f64; 3] {
        probs(
            self.b,
            self.a[0],
            self.a[1],
            (x_nc_per_uf - self.x_mean) / self.x_sd,
        )
    }

    /// Most probable category (0 low, 1 intermediate, 2 high).
    pub fn predict(&self, x_nc_per_uf: f64) -> usize {
        let p = self.probabilities(x_nc_per_uf);
        (0..3).max_by(|&i, &j| p[i].total_cmp(&p[j])).unwrap_or(0)
    }
}

/// Leave-one-out cross-validation: each drug predicted by the classifier fitted to the others.
#[derive(Clone, Debug, PartialEq)]
pub struct LeaveOneOut {
    /// Predicted category of each drug.
    pub predicted: Vec<usize>,
    /// Number of misclassified drugs.
    pub errors: usize,
    /// Mean absolute difference of predicted and true category (the CiPA "mean classification
    /// error" in categories).
    pub mean_abs_error: f64,
}

/// Leave-one-out predictions for mean qNets `x_nc_per_uf` and categories `y`.
pub fn leave_one_out(x_nc_per_uf: &[f64], y: &[usize]) -> LeaveOneOut {
    let n = x_nc_per_uf.len();
    let mut predicted = Vec::with_capacity(n);
    for i in 0..n {
        let xs: Vec<f64> = (0..n).filter(|&j| j != i).map(|j| x_nc_per_uf[j]).collect();
        let ys: Vec<usize> = (0..n).filter(|&j| j != i).map(|j| y[j]).collect();
        predicted.push(TdpClassifier::fit(&xs, &ys).predict(x_nc_per_uf[i]));
    }
    let errors = predicted.iter().zip(y).filter(|(p, t)| p != t).count();
    let mae = predicted
        .iter()
        .zip(y)
        .map(|(p, t)| (*p as f64 - *t as f64).abs())
        .sum::<f64>()
        / n as f64;
    LeaveOneOut {
        predicted,
        errors,
        mean_abs_error: mae,
    }
}

/// The CiPA training set as this crate's point-estimate assay computes it: (drug, CiPA category,
/// qNet averaged over 1–4 × Cmax in nC/µF; 1000 beats, release build, default tolerances;
/// benchmarks/cardiac_cipa.md, commit d15b9d0). The reference program's values agree to ≤ 0.011.
pub const TRAINING_MEAN_QNET: [(&str, usize, f64); 12] = [
    ("dofetilide", 2, 51.838),
    ("bepridil", 2, 44.591),
    ("sotalol", 2, 56.041),
    ("quinidine", 2, -21.200),
    ("cisapride", 1, 60.277),
    ("terfenadine", 1, 59.985),
    ("ondansetron", 1, 62.095),
    ("chlorpromazine", 1, 65.922),
    ("verapamil", 0, 74.852),
    ("ranolazine", 0, 74.223),
    ("mexiletine", 0, 92.260),
    ("diltiazem", 0, 92.048),
];

/// The classifier fitted to [`TRAINING_MEAN_QNET`], leaving out `exclude` (case-insensitive) when
/// it is a training drug, so that a training drug is called by a model that never saw it (the
/// leave-one-out rule). Returns the classifier and whether a drug was left out.
pub fn training_classifier(exclude: &str) -> (TdpClassifier, bool) {
    let ex = exclude.to_lowercase();
    let keep: Vec<&(&str, usize, f64)> = TRAINING_MEAN_QNET.iter().filter(|t| t.0 != ex).collect();
    let x: Vec<f64> = keep.iter().map(|t| t.2).collect();
    let y: Vec<usize> = keep.iter().map(|t| t.1).collect();
    (
        TdpClassifier::fit(&x, &y),
        keep.len() < TRAINING_MEAN_QNET.len(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separable_categories_are_recovered_and_a_swapped_label_is_caught() {
        let x = [70.0, 68.0, 66.0, 60.0, 58.0, 56.0, 45.0, 40.0, 35.0];
        let y = [0, 0, 0, 1, 1, 1, 2, 2, 2];
        let c = TdpClassifier::fit(&x, &y);
        assert!(c.b < 0.0, "lower qNet must mean higher risk: b = {}", c.b);
        for (xi, yi) in x.iter().zip(&y) {
            assert_eq!(c.predict(*xi), *yi, "x {xi}");
        }
        let p = c.probabilities(57.0);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert_eq!(leave_one_out(&x, &y).errors, 0);
        // a drug labelled high with a control-like qNet is misclassified in leave-one-out
        let mut y2 = y;
        y2[0] = 2;
        assert!(leave_one_out(&x, &y2).errors >= 1);
    }

    #[test]
    fn training_classifier_reproduces_the_benchmark_loo_calls() {
        // benchmarks/cardiac_cipa.md: 11 of 12 correct, sotalol (high) called intermediate
        for (name, cat, q) in TRAINING_MEAN_QNET {
            let (c, left_out) = training_classifier(name);
            assert!(left_out);
            let want = if name == "sotalol" { 1 } else { cat };
            assert_eq!(c.predict(q), want, "{name}");
        }
        assert!(!training_classifier("mydrug").1);
    }
}
