//! Backtest: the honest test of a twin. At each origin the twin has seen only data up to the
//! origin and knows no future meals or insulin; its forecast of CGM at origin + h is scored
//! against the recorded CGM, beside the persistence forecast (last CGM).

use crate::engine::{TwinEngine, TwinError, TwinSettings};
use crate::inputs::InputSchedule;
use medtwin_infer::Forecast;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Options of a backtest (times in minutes from the schedule origin).
#[derive(Debug, Clone, PartialEq)]
pub struct BacktestOptions {
    /// First origin not before this time (and not before the warm-up end).
    pub from_min: f64,
    /// Last origin not after this time.
    pub to_min: f64,
    /// Spacing of origins, minutes.
    pub origin_every_min: f64,
    /// Forecast horizons, minutes.
    pub horizons_min: Vec<u32>,
    /// Twin settings (its calibration window is the warm-up).
    pub settings: TwinSettings,
    /// Save per-minute cones (for plots) at this many evenly spaced origins.
    pub n_cones: usize,
    /// Horizon of the saved cones, minutes.
    pub cone_horizon_min: u32,
    /// Replay validation: tell the forecast the meals, boluses and basal changes actually
    /// recorded after the origin (within the longest horizon) as a plan, so interventions with a
    /// known outcome are scored; `false`: the honest input-blind forecast.
    pub future_inputs_recorded: bool,
}

/// Scores at one horizon.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct HorizonScore {
    /// Root-mean-square error of the forecast median, mg/dL.
    pub rmse_mg_dl: f64,
    /// Mean absolute error of the median, mg/dL.
    pub mae_mg_dl: f64,
    /// RMSE of the persistence forecast (last CGM), mg/dL.
    pub persistence_rmse_mg_dl: f64,
    /// Fraction of recorded values inside the 80 % band.
    pub coverage_80: f64,
    /// Fraction inside the 95 % band.
    pub coverage_95: f64,
    /// Mean width of the 80 % band, mg/dL.
    pub mean_width_80_mg_dl: f64,
    /// Mean signed error of the median (forecast − recorded), mg/dL.
    pub bias_mg_dl: f64,
    /// Number of scored forecasts.
    pub n: usize,
}

/// One scored forecast.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScoredPoint {
    /// Origin, minutes.
    pub origin_min: f64,
    /// Horizon, minutes.
    pub horizon_min: u32,
    /// Recorded CGM, mg/dL.
    pub observed_mg_dl: f64,
    /// Forecast median, mg/dL.
    pub median_mg_dl: f64,
    /// Persistence forecast, mg/dL.
    pub persistence_mg_dl: f64,
    /// 80 % band.
    pub lo80: f64,
    /// 80 % band upper.
    pub hi80: f64,
    /// 95 % band lower.
    pub lo95: f64,
    /// 95 % band upper.
    pub hi95: f64,
    /// Whether a meal or bolus was recorded in (origin, origin + horizon].
    pub inputs_in_horizon: bool,
}

/// Result of a backtest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BacktestResult {
    /// Scores per horizon (key: minutes as a string, as in `metrics.json`).
    pub horizons: BTreeMap<String, HorizonScore>,
    /// The same scores on the forecasts with a meal or bolus recorded inside their horizon.
    pub horizons_with_inputs: BTreeMap<String, HorizonScore>,
    /// "recorded" (replay: the forecasts knew the recorded future inputs) or "blind".
    pub future_inputs: String,
    /// Every scored point.
    #[serde(skip)]
    pub points: Vec<ScoredPoint>,
    /// Saved per-minute cones `(origin, forecast)`.
    #[serde(skip)]
    pub cones: Vec<(f64, Forecast)>,
    /// Number of origins used.
    pub n_origins: usize,
    /// Origins skipped (no CGM within 10 min before them).
    pub skipped_origins: usize,
    /// Observations the filter skipped.
    pub skipped_observations: usize,
    /// Wall time of the whole backtest, s.
    pub wall_s: f64,
    /// Mean wall time of one assimilation update, ms.
    pub mean_update_ms: f64,
}

/// The meals, boluses and pump basal changes recorded in (from, to] as a what-if plan (replay
/// validation of interventions).
pub fn recorded_plan(schedule: &InputSchedule, from: f64, to: f64) -> crate::model::Plan {
    let within = |v: &[(f64, f64)]| -> Vec<(f64, f64)> {
        v.iter()
            .filter(|e| e.0 > from && e.0 <= to)
            .copied()
            .collect()
    };
    crate::model::Plan {
        meals: within(&schedule.carbs),
        boluses: within(&schedule.boluses),
        basal_rates: within(&schedule.basal_rates),
    }
}

/// Score points into per-horizon metrics.
pub fn score(points: &[ScoredPoint], horizons: &[u32]) -> BTreeMap<String, HorizonScore> {
    let mut out = BTreeMap::new();
    for &h in horizons {
        let p: Vec<&ScoredPoint> = points.iter().filter(|p| p.horizon_min == h).collect();
        let n = p.len();
        let nf = n.max(1) as f64;
        let s = HorizonScore {
            rmse_mg_dl: (p
                .iter()
                .map(|p| (p.median_mg_dl - p.observed_mg_dl).powi(2))
                .sum::<f64>()
                / nf)
                .sqrt(),
            mae_mg_dl: p
                .iter()
                .map(|p| (p.median_mg_dl - p.observed_mg_dl).abs())
                .sum::<f64>()
                / nf,
            persistence_rmse_mg_dl: (p
                .iter()
                .map(|p| (p.persistence_mg_dl - p.observed_mg_dl).powi(2))
                .sum::<f64>()
                / nf)
                .sqrt(),
            coverage_80: p
                .iter()
                .filter(|p| p.observed_mg_dl >= p.lo80 && p.observed_mg_dl <= p.hi80)
                .count() as f64
                / nf,
            coverage_95: p
                .iter()
                .filter(|p| p.observed_mg_dl >= p.lo95 && p.observed_mg_dl <= p.hi95)
                .count() as f64
                / nf,
            mean_width_80_mg_dl: p.iter().map(|p| p.hi80 - p.lo80).sum::<f64>() / nf,
            bias_mg_dl: p
                .iter()
                .map(|p| p.median_mg_dl - p.observed_mg_dl)
                .sum::<f64>()
                / nf,
            n,
        };
        out.insert(h.to_string(), s);
    }
    out
}

fn nearest_cgm(schedule: &InputSchedule, t: f64, tol: f64) -> Option<f64> {
    let i = schedule.cgm.partition_point(|c| c.0 < t - tol);
    schedule.cgm[i..]
        .iter()
        .take_while(|c| c.0 <= t + tol)
        .min_by(|a, b| (a.0 - t).abs().total_cmp(&(b.0 - t).abs()))
        .map(|c| c.1)
}

/// Run a backtest over `schedule`. `progress(done, total)` is called after each origin.
/// Returns the scores and the twin as it stands after the last origin.
pub fn backtest(
    schedule: &InputSchedule,
    opts: &BacktestOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(BacktestResult, TwinEngine), TwinError> {
    let t_start = std::time::Instant::now();
    let mut engine = TwinEngine::start(schedule, opts.settings.clone())?;
    let warm = opts.settings.calibration_start_min + opts.settings.calibration_window_min;
    let first = opts.from_min.max(warm);
    let last = opts.to_min.min(schedule.last_cgm_min());
    if last < first {
        return Err(TwinError::Record(format!(
            "no origin in [{first}, {last}] min: the record is shorter than the warm-up ({warm} min) plus the span"
        )));
    }
    let marks: Vec<f64> = {
        let mut v = Vec::new();
        let mut t = first;
        while t <= last {
            v.push(t);
            t += opts.origin_every_min;
        }
        v
    };
    let hmax = *opts.horizons_min.iter().max().unwrap_or(&60);
    let cone_every = marks
        .len()
        .checked_div(opts.n_cones)
        .map(|v| v.max(1))
        .unwrap_or(usize::MAX);
    let mut points = Vec::new();
    let mut cones = Vec::new();
    let (mut skipped, mut n_origins) = (0, 0);
    let mut update_time = 0.0;
    let mut n_updates = 0usize;
    for (k, &mark) in marks.iter().enumerate() {
        // origin = last CGM at or before the mark, within 10 min
        let i = schedule.cgm.partition_point(|c| c.0 <= mark);
        let origin = match i.checked_sub(1).map(|j| schedule.cgm[j]) {
            Some((t, _)) if mark - t <= 10.0 && t >= engine.filter.t_min => t,
            _ => {
                skipped += 1;
                progress(k + 1, marks.len());
                continue;
            }
        };
        let n_before = schedule.cgm.partition_point(|c| c.0 <= engine.filter.t_min);
        let t0 = std::time::Instant::now();
        engine.assimilate_until(schedule, origin)?;
        update_time += t0.elapsed().as_secs_f64();
        n_updates += schedule.cgm.partition_point(|c| c.0 <= origin) - n_before;
        let persistence = schedule.cgm[i - 1].1;
        let seed = opts.settings.seed ^ (origin as u64).wrapping_mul(0x9E37_79B9);
        let save_cone = k % cone_every == 0 && cones.len() < opts.n_cones;
        let replay = opts.future_inputs_recorded.then(|| {
            recorded_plan(
                schedule,
                origin,
                origin + hmax.max(opts.cone_horizon_min) as f64,
            )
        });
        let f = if save_cone {
            let f = engine.forecast(
                schedule,
                opts.cone_horizon_min.max(hmax),
                replay.as_ref(),
                seed,
            )?;
            cones.push((origin, f.clone()));
            f
        } else {
            let times: Vec<f64> = opts
                .horizons_min
                .iter()
                .map(|&h| origin + h as f64)
                .collect();
            engine.forecast_at(schedule, &times, replay.as_ref(), seed)?
        };
        n_origins += 1;
        for &h in &opts.horizons_min {
            let target = origin + h as f64;
            let Some(obs) = nearest_cgm(schedule, target, 2.5) else {
                continue;
            };
            let Some(idx) = f.t_min.iter().position(|&t| t == target) else {
                continue;
            };
            let b = f.bands[idx];
            points.push(ScoredPoint {
                origin_min: origin,
                horizon_min: h,
                observed_mg_dl: obs,
                median_mg_dl: b.median,
                persistence_mg_dl: persistence,
                lo80: b.lo80,
                hi80: b.hi80,
                lo95: b.lo95,
                hi95: b.hi95,
                inputs_in_horizon: schedule
                    .carbs
                    .iter()
                    .chain(&schedule.boluses)
                    .any(|e| e.0 > origin && e.0 <= target && e.1 > 0.0),
            });
        }
        progress(k + 1, marks.len());
    }
    let skipped_observations = engine.skipped_observations;
    let with_inputs: Vec<ScoredPoint> = points
        .iter()
        .filter(|p| p.inputs_in_horizon)
        .copied()
        .collect();
    let result = BacktestResult {
        horizons: score(&points, &opts.horizons_min),
        horizons_with_inputs: score(&with_inputs, &opts.horizons_min),
        future_inputs: if opts.future_inputs_recorded {
            "recorded".into()
        } else {
            "blind".into()
        },
        points,
        cones,
        n_origins,
        skipped_origins: skipped,
        skipped_observations,
        wall_s: t_start.elapsed().as_secs_f64(),
        mean_update_ms: if n_updates > 0 {
            1e3 * update_time / n_updates as f64
        } else {
            f64::NAN
        },
    };
    Ok((result, engine))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_plan_takes_inputs_strictly_after_the_origin_up_to_the_end() {
        let s = InputSchedule {
            carbs: vec![(100.0, 30.0), (160.0, 50.0), (400.0, 20.0)],
            boluses: vec![(100.0, 3.0), (161.0, 5.0)],
            basal_rates: vec![(50.0, 1.0), (200.0, 0.5)],
            ..InputSchedule::default()
        };
        let p = recorded_plan(&s, 100.0, 220.0);
        assert_eq!(p.meals, vec![(160.0, 50.0)]);
        assert_eq!(p.boluses, vec![(161.0, 5.0)]);
        assert_eq!(p.basal_rates, vec![(200.0, 0.5)]);
        assert!(recorded_plan(&s, 400.0, 500.0).is_empty());
    }
}
