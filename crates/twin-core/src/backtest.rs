//! Rolling-origin backtest of a twin: at each origin the twin is calibrated on the
//! measurements up to the origin only, then forecasts the measurements of the next horizon;
//! scores are computed on the held-out values (on the log scale for log-normal observables).

use crate::data::Measurement;
use crate::fit::posterior;
use crate::model::Plan;
use crate::spec::{CalibrationSpec, Noise};
use crate::twin::{ModelSource, Twin};
use crate::TwinError;
use serde::{Deserialize, Serialize};

/// Scores of the held-out measurements of one origin (or of all origins pooled).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Score {
    /// Held-out measurements scored.
    pub n: usize,
    /// Root-mean-square error of the predictive median (log scale for log-normal noise).
    pub rmse: f64,
    /// Fraction inside the 50 / 80 / 95 % predictive intervals.
    pub coverage50: f64,
    /// See `coverage50`.
    pub coverage80: f64,
    /// See `coverage50`.
    pub coverage95: f64,
}

/// One origin of a backtest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OriginScore {
    /// Origin (model time unit): data up to here calibrate the twin.
    pub origin: f64,
    /// Measurements used for calibration.
    pub n_calibration: usize,
    /// Scores of the held-out measurements in (origin, origin + horizon].
    pub score: Score,
    /// Effective sample size of the posterior.
    pub ess: f64,
}

/// A backtest: per-origin and pooled scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BacktestResult {
    /// Forecast horizon (model time unit).
    pub horizon: f64,
    /// Per origin.
    pub origins: Vec<OriginScore>,
    /// All held-out measurements of all origins pooled.
    pub pooled: Score,
}

#[derive(Default)]
struct Acc {
    n: usize,
    se: f64,
    in50: usize,
    in80: usize,
    in95: usize,
}

impl Acc {
    fn add(&mut self, noise: Noise, y: f64, b: &medtwin_infer::Bands) {
        let tr = |v: f64| {
            if noise.is_log() {
                v.max(Noise::LOG_FLOOR).ln()
            } else {
                v
            }
        };
        self.n += 1;
        self.se += (tr(y) - tr(b.median)).powi(2);
        self.in50 += usize::from(y >= b.lo50 && y <= b.hi50);
        self.in80 += usize::from(y >= b.lo80 && y <= b.hi80);
        self.in95 += usize::from(y >= b.lo95 && y <= b.hi95);
    }
    fn score(&self) -> Score {
        let n = self.n.max(1) as f64;
        Score {
            n: self.n,
            rmse: (self.se / n).sqrt(),
            coverage50: self.in50 as f64 / n,
            coverage80: self.in80 as f64 / n,
            coverage95: self.in95 as f64 / n,
        }
    }
}

/// Backtest the model of `source` under `spec` on `data` (with the known dosing `history`):
/// for each origin, calibrate on data at times ≤ origin and score the forecast of the data in
/// (origin, origin + `horizon`]. Origins without calibration data or without held-out data
/// are skipped.
///
/// Errors: as [`Twin::fit`].
pub fn backtest(
    source: &ModelSource,
    spec: &CalibrationSpec,
    history: &Plan,
    data: &[Measurement],
    origins: &[f64],
    horizon: f64,
) -> Result<BacktestResult, TwinError> {
    let mut pooled = Acc::default();
    let mut out = Vec::new();
    let mut twin: Option<Twin> = None;
    for &origin in origins {
        let train: Vec<Measurement> = data.iter().filter(|m| m.time <= origin).cloned().collect();
        let test: Vec<&Measurement> = data
            .iter()
            .filter(|m| m.time > origin && m.time <= origin + horizon)
            .collect();
        if train.is_empty() || test.is_empty() {
            continue;
        }
        let t = match twin.take() {
            None => Twin::fit(source.clone(), spec.clone(), history.clone(), train.clone())?,
            Some(mut t) => {
                // Warm start from the previous origin's MAP, all data up to this origin.
                let start = t.posterior.map_scaled(spec);
                t.posterior = posterior(t.model(), spec, history, &train, Some(&start))?;
                t.data = train.clone();
                t
            }
        };
        let mut times: Vec<f64> = test.iter().map(|m| m.time).collect();
        times.sort_by(f64::total_cmp);
        times.dedup();
        let pred = t.forecast(&Plan::default(), &times)?;
        let mut acc = Acc::default();
        for m in &test {
            let (Some(op), Some(noise)) = (pred.of(&m.observable), spec.noise_of(&m.observable))
            else {
                continue;
            };
            let k = times.partition_point(|&x| x < m.time);
            acc.add(noise, m.value, &op.bands[k]);
            pooled.add(noise, m.value, &op.bands[k]);
        }
        out.push(OriginScore {
            origin,
            n_calibration: train.len(),
            score: acc.score(),
            ess: t.posterior.ess,
        });
        twin = Some(t);
    }
    Ok(BacktestResult {
        horizon,
        origins: out,
        pooled: pooled.score(),
    })
}
