//! Uncertainty that narrows as data accrue: the same future window forecast by twins that have
//! seen 1, 3, 7 and 14 days of the patient's record.
//!
//! # Design
//! A digital twin's prediction cone should narrow as the patient's data accrue while staying
//! calibrated (NASEM, *Foundational Research Gaps and Future Directions for Digital Twins*,
//! 2023, ch. 5: "uncertainty quantification … updated as data are assimilated"). This module
//! measures exactly that. The evaluation window is fixed: the last `eval_days` of the record
//! (origins every `origin_every_min`, scored at the backtest's horizons). For each `d` in
//! `days`, a twin is given **only** the `d` days of record before the window — CGM,
//! carbohydrate and boluses before that are dropped ([`InputSchedule::since`]), so neither the
//! particle filter's calibration nor the hybrid's learnt change model ([`crate::hybrid`]) sees
//! them — and then backtested over the window exactly as [`crate::backtest`] does (it keeps
//! assimilating inside the window, forecasts knowing nothing after each origin). Each twin's
//! mean 80 % band width and coverage over the window are the learning curve: widths should
//! shrink with `d` while coverage stays near 0.80.
//!
//! A `d` whose data would start before the record (or that leaves less than the twin's
//! calibration window) is skipped and reported as such.

use crate::backtest::{backtest, BacktestOptions, HorizonScore};
use crate::engine::TwinError;
use crate::inputs::InputSchedule;
use medtwin_infer::Forecast;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What to measure.
#[derive(Debug, Clone, PartialEq)]
pub struct LearningOptions {
    /// Days of data each twin sees before the evaluation window (e.g. `[1, 3, 7, 14]`).
    pub days: Vec<f64>,
    /// Length of the evaluation window at the end of the record, days.
    pub eval_days: f64,
    /// Backtest options of every twin: horizons, origin spacing, settings (their
    /// `calibration_start_min`, `from_min`, `to_min` are overridden per twin).
    pub backtest: BacktestOptions,
}

/// One twin of the learning curve.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LearningPoint {
    /// Days of record the twin saw before the evaluation window.
    pub days_of_data: f64,
    /// Backtest scores over the evaluation window, per horizon (minutes as a string).
    pub horizons: BTreeMap<String, HorizonScore>,
    /// Mean 80 % band width over every scored forecast of every horizon, mg/dL.
    pub mean_width_80_mg_dl: f64,
    /// Fraction of recorded values inside the 80 % band, over every horizon.
    pub coverage_80: f64,
    /// Fraction inside the 95 % band, over every horizon.
    pub coverage_95: f64,
    /// Scored forecasts (all horizons).
    pub n: usize,
    /// The twin's per-minute forecast `(origin, forecast)` at the first origin of the window
    /// (over [`BacktestOptions::cone_horizon_min`]), when that origin had a CGM reading.
    #[serde(skip)]
    pub cone: Option<(f64, Forecast)>,
}

/// The learning curve of one record.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct LearningCurve {
    /// Evaluation window `[from, to]`, minutes from the schedule origin.
    pub eval_window_min: (f64, f64),
    /// One entry per `d` that fits in the record, in the order of [`LearningOptions::days`].
    pub points: Vec<LearningPoint>,
    /// Values of `d` skipped because the record is too short before the window.
    pub skipped_days: Vec<f64>,
}

impl LearningCurve {
    /// `width(last) / width(first)`: how much the 80 % band narrowed from the fewest to the
    /// most days of data (`None` with fewer than two points).
    pub fn width_ratio(&self) -> Option<f64> {
        let (a, b) = (self.points.first()?, self.points.last()?);
        (self.points.len() >= 2).then(|| b.mean_width_80_mg_dl / a.mean_width_80_mg_dl)
    }
}

/// Measure the learning curve of `schedule` (see the module docs). `progress(d, done, total)`
/// reports each twin's backtest. Errors: a record too short for the evaluation window, or a
/// twin that fails to calibrate or assimilate.
pub fn learning_curve(
    schedule: &InputSchedule,
    opts: &LearningOptions,
    progress: &mut dyn FnMut(f64, usize, usize),
) -> Result<LearningCurve, TwinError> {
    let first_cgm = schedule
        .cgm
        .first()
        .ok_or_else(|| TwinError::Record("no CGM readings".into()))?
        .0;
    let hmax = *opts.backtest.horizons_min.iter().max().unwrap_or(&60) as f64;
    let to = schedule.last_cgm_min() - hmax;
    let from = to - opts.eval_days * 1440.0;
    if from <= first_cgm {
        return Err(TwinError::Record(format!(
            "the record ({:.1} days of CGM) is shorter than the {} -day evaluation window plus the {hmax} min horizon",
            (schedule.last_cgm_min() - first_cgm) / 1440.0,
            opts.eval_days
        )));
    }
    let window = opts.backtest.settings.calibration_window_min;
    let mut curve = LearningCurve {
        eval_window_min: (from, to),
        ..LearningCurve::default()
    };
    for &d in &opts.days {
        let start = from - d * 1440.0;
        if start < first_cgm || d * 1440.0 < window {
            curve.skipped_days.push(d);
            continue;
        }
        let seen = schedule.since(start);
        let mut bo = opts.backtest.clone();
        bo.settings.calibration_start_min = start;
        bo.from_min = from;
        bo.to_min = to;
        bo.n_cones = 1;
        let (mut r, _) = backtest(&seen, &bo, &mut |done, n| progress(d, done, n))?;
        let n = r.points.len();
        let nf = n.max(1) as f64;
        let inside = |lo: fn(&crate::backtest::ScoredPoint) -> (f64, f64)| {
            r.points
                .iter()
                .filter(|p| {
                    let (a, b) = lo(p);
                    p.observed_mg_dl >= a && p.observed_mg_dl <= b
                })
                .count() as f64
                / nf
        };
        curve.points.push(LearningPoint {
            days_of_data: d,
            mean_width_80_mg_dl: r.points.iter().map(|p| p.hi80 - p.lo80).sum::<f64>() / nf,
            coverage_80: inside(|p| (p.lo80, p.hi80)),
            coverage_95: inside(|p| (p.lo95, p.hi95)),
            horizons: r.horizons,
            n,
            cone: r.cones.pop(),
        });
    }
    Ok(curve)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_drops_data_before_the_start_and_keeps_therapy_settings() {
        let s = InputSchedule {
            cgm: vec![(0.0, 100.0), (100.0, 110.0), (200.0, 120.0)],
            carbs: vec![(50.0, 30.0), (150.0, 40.0)],
            boluses: vec![(50.0, 3.0), (150.0, 4.0)],
            basal_rates: vec![(0.0, 1.0), (120.0, 0.8)],
            long_acting: vec![(10.0, 20.0)],
            ..InputSchedule::default()
        };
        let t = s.since(100.0);
        assert_eq!(t.cgm, vec![(100.0, 110.0), (200.0, 120.0)]);
        assert_eq!(t.carbs, vec![(150.0, 40.0)]);
        assert_eq!(t.boluses, vec![(150.0, 4.0)]);
        assert_eq!(
            t.basal_rates, s.basal_rates,
            "the pump's basal programme stays"
        );
        assert_eq!(t.long_acting, s.long_acting, "long-acting doses still act");
    }

    #[test]
    fn a_record_shorter_than_the_window_is_an_error_and_short_histories_are_skipped() {
        let s = InputSchedule {
            cgm: (0..=(3 * 288)).map(|k| (5.0 * k as f64, 120.0)).collect(),
            ..InputSchedule::default()
        };
        let bo = BacktestOptions {
            from_min: 0.0,
            to_min: f64::INFINITY,
            origin_every_min: 60.0,
            horizons_min: vec![30, 60],
            settings: crate::TwinSettings::default(),
            n_cones: 0,
            cone_horizon_min: 60,
            future_inputs_recorded: false,
        };
        let long = LearningOptions {
            days: vec![1.0],
            eval_days: 5.0,
            backtest: bo.clone(),
        };
        let e = learning_curve(&s, &long, &mut |_, _, _| {}).unwrap_err();
        assert!(e.to_string().contains("evaluation window"), "{e}");
        let short = LearningOptions {
            days: vec![7.0, 14.0],
            eval_days: 1.0,
            backtest: bo,
        };
        let c = learning_curve(&s, &short, &mut |_, _, _| {}).unwrap();
        assert!(c.points.is_empty());
        assert_eq!(c.skipped_days, vec![7.0, 14.0]);
        assert_eq!(c.width_ratio(), None);
    }
}
