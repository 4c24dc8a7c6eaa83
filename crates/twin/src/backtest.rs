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

/// One scored risk forecast: the forecast probabilities of CGM < 70 and > 250 mg/dL at any
/// 5-min sample within the longest horizon, and whether the recorded CGM did so.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RiskPoint {
    /// Origin, minutes.
    pub origin_min: f64,
    /// Forecast P(CGM < 70 mg/dL within the horizon).
    pub p_below_70: f64,
    /// Forecast P(CGM > 250 mg/dL within the horizon).
    pub p_above_250: f64,
    /// Whether a recorded CGM value in (origin, origin + horizon] was below 70 mg/dL.
    pub below_70: bool,
    /// Whether one was above 250 mg/dL.
    pub above_250: bool,
}

/// One bin of a reliability table (forecast probabilities in `[p_lo, p_hi)`; the last bin
/// includes 1).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ReliabilityBin {
    /// Lower edge of the bin.
    pub p_lo: f64,
    /// Upper edge of the bin.
    pub p_hi: f64,
    /// Forecasts in the bin.
    pub n: usize,
    /// Mean forecast probability in the bin (NaN when empty).
    pub mean_predicted: f64,
    /// Observed frequency of the event in the bin (NaN when empty).
    pub observed_frequency: f64,
}

/// Scores of one binary event's probability forecasts: the Brier score (Brier, Monthly
/// Weather Review 78:1, 1950) beside that of always forecasting the observed base rate, and a
/// 10-bin reliability table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct EventScore {
    /// Scored forecasts.
    pub n: usize,
    /// Mean squared difference of forecast probability and outcome (0/1).
    pub brier: f64,
    /// Brier score of the constant base-rate forecast (in-sample climatology).
    pub brier_base_rate: f64,
    /// Brier skill score `1 − brier / brier_base_rate` (NaN when the event never or always
    /// happened).
    pub brier_skill: f64,
    /// Observed frequency of the event.
    pub base_rate: f64,
    /// Mean forecast probability.
    pub mean_predicted: f64,
    /// Reliability table, 10 bins of width 0.1.
    pub reliability: Vec<ReliabilityBin>,
}

impl EventScore {
    /// Score `(probability, outcome)` pairs.
    pub fn from_pairs(pairs: &[(f64, bool)]) -> EventScore {
        let n = pairs.len();
        let nf = n.max(1) as f64;
        let y = |o: bool| if o { 1.0 } else { 0.0 };
        let base_rate = pairs.iter().map(|p| y(p.1)).sum::<f64>() / nf;
        let brier = pairs.iter().map(|p| (p.0 - y(p.1)).powi(2)).sum::<f64>() / nf;
        let brier_base_rate = base_rate * (1.0 - base_rate);
        let reliability = (0..10)
            .map(|b| {
                let (lo, hi) = (b as f64 / 10.0, (b + 1) as f64 / 10.0);
                let inside: Vec<&(f64, bool)> = pairs
                    .iter()
                    .filter(|p| p.0 >= lo && (p.0 < hi || (b == 9 && p.0 <= 1.0)))
                    .collect();
                let k = inside.len() as f64;
                ReliabilityBin {
                    p_lo: lo,
                    p_hi: hi,
                    n: inside.len(),
                    mean_predicted: inside.iter().map(|p| p.0).sum::<f64>() / k,
                    observed_frequency: inside.iter().map(|p| y(p.1)).sum::<f64>() / k,
                }
            })
            .collect();
        EventScore {
            n,
            brier,
            brier_base_rate,
            brier_skill: if brier_base_rate > 0.0 {
                1.0 - brier / brier_base_rate
            } else {
                f64::NAN
            },
            base_rate,
            mean_predicted: pairs.iter().map(|p| p.0).sum::<f64>() / nf,
            reliability,
        }
    }
}

/// Risk scores of a backtest (`risk` in `metrics.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct RiskScore {
    /// The horizon of the events (the longest scored horizon), minutes.
    pub horizon_min: u32,
    /// P(CGM < 70 mg/dL within the horizon).
    pub below_70: EventScore,
    /// P(CGM > 250 mg/dL within the horizon).
    pub above_250: EventScore,
}

impl RiskScore {
    /// Score risk points of horizon `horizon_min`.
    pub fn from_points(points: &[RiskPoint], horizon_min: u32) -> RiskScore {
        let below: Vec<(f64, bool)> = points.iter().map(|p| (p.p_below_70, p.below_70)).collect();
        let above: Vec<(f64, bool)> = points
            .iter()
            .map(|p| (p.p_above_250, p.above_250))
            .collect();
        RiskScore {
            horizon_min,
            below_70: EventScore::from_pairs(&below),
            above_250: EventScore::from_pairs(&above),
        }
    }
}

/// Whether recorded CGM < 70 and > 250 mg/dL occurred in `(t0, t1]`; `None` when the record
/// has a gap over 20 min in that window (including its ends), so the outcome is unknown.
fn observed_events(schedule: &InputSchedule, t0: f64, t1: f64) -> Option<(bool, bool)> {
    let i0 = schedule.cgm.partition_point(|c| c.0 <= t0);
    let i1 = schedule.cgm.partition_point(|c| c.0 <= t1);
    let w = &schedule.cgm[i0..i1];
    let mut last = t0;
    for c in w {
        if c.0 - last > 20.0 {
            return None;
        }
        last = c.0;
    }
    if t1 - last > 20.0 {
        return None;
    }
    Some((w.iter().any(|c| c.1 < 70.0), w.iter().any(|c| c.1 > 250.0)))
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
    /// Brier scores and reliability of P(< 70) and P(> 250 mg/dL) within the longest horizon.
    #[serde(default)]
    pub risk: RiskScore,
    /// Every scored risk forecast.
    #[serde(skip)]
    pub risk_points: Vec<RiskPoint>,
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

/// Forecast times of a scored origin: every scored horizon and every 5 min up to the longest
/// (the CGM sampling interval, so P(< 70 within the horizon) refers to the same samples as the
/// recorded outcome), absolute minutes, increasing.
fn forecast_times(origin: f64, horizons_min: &[u32]) -> Vec<f64> {
    let hmax = horizons_min.iter().copied().max().unwrap_or(60);
    let mut h: Vec<u32> = (1..=hmax / 5)
        .map(|k| 5 * k)
        .chain(horizons_min.iter().copied())
        .collect();
    h.sort_unstable();
    h.dedup();
    h.into_iter().map(|h| origin + h as f64).collect()
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
    let mut risk_points = Vec::new();
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
        let times = if save_cone {
            let h = opts.cone_horizon_min.max(hmax);
            (1..=h).map(|k| origin + f64::from(k)).collect()
        } else {
            forecast_times(origin, &opts.horizons_min)
        };
        let f = match &replay {
            Some(plan) => engine.forecast_complete_at(schedule, &times, plan, seed)?,
            None => engine.forecast_at(schedule, &times, None, seed)?,
        };
        if save_cone {
            cones.push((origin, f.clone()));
        }
        n_origins += 1;
        // a cone forecast's probabilities cover its own horizon
        let risk_window = !save_cone || opts.cone_horizon_min.max(hmax) == hmax;
        if let Some((below, above)) =
            observed_events(schedule, origin, origin + hmax as f64).filter(|_| risk_window)
        {
            risk_points.push(RiskPoint {
                origin_min: origin,
                p_below_70: f.p_below,
                p_above_250: f.p_above,
                below_70: below,
                above_250: above,
            });
        }
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
        risk: RiskScore::from_points(&risk_points, hmax),
        risk_points,
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
    fn brier_scores_and_reliability_bins() {
        let pairs = [
            (0.05, false),
            (0.05, false),
            (0.95, true),
            (0.95, false),
            (1.0, true),
        ];
        let s = EventScore::from_pairs(&pairs);
        assert_eq!(s.n, 5);
        let brier = (0.05f64.powi(2) * 2.0 + 0.05f64.powi(2) + 0.95f64.powi(2) + 0.0) / 5.0;
        assert!((s.brier - brier).abs() < 1e-12);
        assert!((s.base_rate - 0.4).abs() < 1e-12);
        assert!((s.brier_base_rate - 0.24).abs() < 1e-12);
        assert!((s.brier_skill - (1.0 - brier / 0.24)).abs() < 1e-12);
        assert_eq!(s.reliability.len(), 10);
        assert_eq!(s.reliability[0].n, 2);
        assert_eq!(s.reliability[0].observed_frequency, 0.0);
        assert_eq!(
            s.reliability[9].n, 3,
            "0.95, 0.95 and 1.0 fall in the last bin"
        );
        assert!((s.reliability[9].observed_frequency - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(s.reliability.iter().map(|b| b.n).sum::<usize>(), 5);
        assert!(s.reliability[5].mean_predicted.is_nan());
        // an event that never happens has no base-rate skill
        assert!(EventScore::from_pairs(&[(0.1, false)]).brier_skill.is_nan());
    }

    #[test]
    fn risk_outcomes_need_a_gap_free_window_and_times_cover_the_cgm_grid() {
        let s = InputSchedule {
            cgm: (0..=24)
                .map(|k| (5.0 * k as f64, if k == 7 { 65.0 } else { 120.0 }))
                .collect(),
            ..InputSchedule::default()
        };
        assert_eq!(observed_events(&s, 0.0, 60.0), Some((true, false)));
        assert_eq!(observed_events(&s, 40.0, 100.0), Some((false, false)));
        assert_eq!(
            observed_events(&s, 60.0, 180.0),
            None,
            "no CGM after 120 min"
        );
        let mut gap = s.clone();
        gap.cgm.retain(|c| !(c.0 > 50.0 && c.0 < 80.0));
        assert_eq!(observed_events(&gap, 40.0, 100.0), None);
        let t = forecast_times(100.0, &[30, 62, 60]);
        assert_eq!(t.len(), 13);
        assert_eq!(t[0], 105.0);
        assert!(t.contains(&162.0) && t.contains(&160.0) && t.contains(&130.0));
        assert!(t.windows(2).all(|w| w[0] < w[1]));
    }

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
