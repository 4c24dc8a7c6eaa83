//! The T1D twin's lifecycle in one place: **fit** (calibrate, then assimilate), **update** a
//! saved twin with newer data (to a time, or by catch-up slices of bounded twin time),
//! **forecast** and **what-if** on a saved twin, bolus **advice**, and the checkpoints that
//! let a running twin re-assimilate **late data**. The CLI (`medtwin twin …`) and the server's
//! live twins call these functions instead of driving [`TwinEngine`] themselves.
//!
//! The filter's stops matter: [`TwinEngine::assimilate_until`] draws new random numbers at
//! every call, so assimilating to `t` in stops 60 min apart and in one go give different (equally
//! valid) particle clouds. Every entry point therefore takes the stop spacing `stop_every_min`
//! (`f64::INFINITY`: one stop at the end), and a caller that wants reproducible twins keeps
//! its spacing fixed: the CLI's `twin fit` uses [`CLI_FIT_STOP_MIN`], its `twin update`
//! [`f64::INFINITY`], the server [`SERVER_STOP_MIN`] (catch-up slices end at a CGM reading and
//! restart their stops there).
//!
//! The report pipeline ([`crate::report`]) and the Python bindings call [`backtest`] here, so
//! no caller outside this crate drives a [`TwinEngine`].

use crate::backtest::{BacktestOptions, BacktestResult};
use crate::calibrate::Calibration;
use crate::decide::{Advice, AdvisorSettings, PlanOutcome};
use crate::engine::{Twin, TwinEngine, TwinError, TwinSettings};
use crate::inputs::InputSchedule;
use crate::model::Plan;
use medtwin_infer::Forecast;

/// Filter stops of `medtwin twin fit`, minutes of twin time apart (one progress step each).
pub const CLI_FIT_STOP_MIN: f64 = 60.0;
/// Filter stops of the server's live twins, minutes of twin time apart.
pub const SERVER_STOP_MIN: f64 = 360.0;

/// Where an assimilation ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Until {
    /// At this minute from the schedule's origin (not before the twin's time).
    Minute(f64),
    /// A catch-up slice: at the last CGM reading at most `max_min` minutes after the twin's time
    /// (at the first reading after it when a gap leaves none that close; at the twin's time when
    /// there is no newer reading). See [`slice_end`].
    Slice {
        /// Most twin time one slice assimilates, minutes (> 0).
        max_min: f64,
    },
}

/// What an assimilation did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Assimilated {
    /// CGM readings with the twin's earlier time < t ≤ `until_min` (readings the filter
    /// skipped as degenerate included; see [`Twin::skipped_observations`]).
    pub readings: usize,
    /// The twin's time now, minutes from the schedule's origin (unchanged when the end was not
    /// after it).
    pub until_min: f64,
    /// Newer readings remain after `until_min` (a slice ended before the data did).
    pub more: bool,
}

/// Progress of [`fit`] and [`update`], for progress bars and logs.
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    /// The calibration finished (fit only); the filter starts at the end of its window.
    Calibrated(&'a Calibration),
    /// `done` of `total` filter stops assimilated (`done` = 0 before the first).
    Assimilating {
        /// Stops done.
        done: usize,
        /// Stops of this assimilation.
        total: usize,
    },
}

/// A progress callback that ignores everything.
pub fn no_progress(_: Progress) {}

/// The end of a catch-up slice of a twin at minute `t_min` on `schedule`: its last CGM reading
/// at most `max_min` after `t_min` (the first one after `t_min` when a gap leaves none that
/// close), and whether readings after it remain for the next slice. With no reading after
/// `t_min`: the last reading's time (≤ `t_min`) and `false`.
pub fn slice_end(schedule: &InputSchedule, t_min: f64, max_min: f64) -> (f64, bool) {
    let last = schedule.last_cgm_min();
    let cap = t_min + max_min;
    if last <= cap {
        return (last, false);
    }
    let times = || schedule.cgm.iter().map(|c| c.0).filter(|&x| x > t_min);
    let within = times().filter(|&x| x <= cap).fold(f64::NAN, f64::max);
    let until = if within.is_nan() {
        times().fold(f64::INFINITY, f64::min)
    } else {
        within
    };
    (until, until < last)
}

fn check_stops(stop_every_min: f64) -> Result<(), TwinError> {
    if stop_every_min.is_nan() || stop_every_min <= 0.0 {
        return Err(TwinError::Argument(format!(
            "stop_every_min = {stop_every_min}: the filter's stops must be > 0 min apart"
        )));
    }
    Ok(())
}

impl TwinEngine {
    /// Assimilate `schedule` from the filter's time to `until` in stops `stop_every_min` apart
    /// (the last stop at the end; see the module docs), calling `progress` before the first
    /// and after every stop. An end at or before the filter's time assimilates nothing.
    ///
    /// Errors: [`TwinError::Argument`] for a stop spacing ≤ 0 or NaN, a NaN end or a slice
    /// length ≤ 0; the errors of [`TwinEngine::assimilate_until`].
    pub fn assimilate_to(
        &mut self,
        schedule: &InputSchedule,
        until: Until,
        stop_every_min: f64,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Assimilated, TwinError> {
        check_stops(stop_every_min)?;
        let t0 = self.filter.t_min;
        let (until_min, more) = match until {
            Until::Minute(m) if m.is_nan() => {
                return Err(TwinError::Argument("the end time is NaN".into()))
            }
            Until::Minute(m) => (m, false),
            Until::Slice { max_min } if max_min.is_nan() || max_min <= 0.0 => {
                return Err(TwinError::Argument(format!(
                    "a catch-up slice of {max_min} min: it must be > 0"
                )))
            }
            Until::Slice { max_min } => slice_end(schedule, t0, max_min),
        };
        let readings = schedule
            .cgm
            .iter()
            .filter(|c| c.0 > t0 && c.0 <= until_min)
            .count();
        let total = if until_min > t0 {
            ((until_min - t0) / stop_every_min).ceil().max(1.0) as usize
        } else {
            0
        };
        progress(Progress::Assimilating { done: 0, total });
        let (mut t, mut done) = (t0, 0);
        while t < until_min {
            t = (t + stop_every_min).min(until_min);
            self.assimilate_until(schedule, t)?;
            done += 1;
            progress(Progress::Assimilating {
                done,
                total: total.max(done),
            });
        }
        Ok(Assimilated {
            readings,
            until_min: self.filter.t_min,
            more,
        })
    }
}

/// Calibrate a new twin on `schedule` (the initial window of `settings`, population prior),
/// assimilate to `until` in stops `stop_every_min` apart, and save it ([`Twin`], with the
/// schedule up to its time and `patient_id`).
///
/// Errors: those of [`TwinEngine::start`] (no CGM, calibration failed; never
/// [`TwinError::Infer`]), then those of [`TwinEngine::assimilate_to`].
pub fn fit(
    schedule: &InputSchedule,
    settings: TwinSettings,
    until: Until,
    stop_every_min: f64,
    patient_id: Option<String>,
    progress: &mut dyn FnMut(Progress),
) -> Result<(Twin, Assimilated), TwinError> {
    check_stops(stop_every_min)?;
    let mut engine = TwinEngine::start(schedule, settings)?;
    progress(Progress::Calibrated(&engine.calibration));
    let done = engine.assimilate_to(schedule, until, stop_every_min, progress)?;
    Ok((engine.to_twin(schedule, patient_id), done))
}

/// Load a saved twin for further work in memory ([`TwinEngine::from_twin`]).
pub fn resume(twin: &Twin) -> Result<TwinEngine, TwinError> {
    TwinEngine::from_twin(twin)
}

/// Assimilate the newer data of `schedule` into a saved twin, to `until` in stops
/// `stop_every_min` apart, and save it again (same patient id). `schedule` is the patient's
/// record from the same origin as the twin's (it may hold only the data from the twin's time
/// on, as the server's windows do).
///
/// Errors: [`TwinError::Document`] for a broken twin; [`TwinError::Argument`] when the
/// schedule's origin differs from the twin's or `until` is a minute before the twin's time;
/// those of [`TwinEngine::assimilate_to`].
pub fn update(
    twin: &Twin,
    schedule: &InputSchedule,
    until: Until,
    stop_every_min: f64,
    progress: &mut dyn FnMut(Progress),
) -> Result<(Twin, Assimilated), TwinError> {
    if schedule.origin_utc != twin.schedule.origin_utc {
        return Err(TwinError::Argument(format!(
            "the record starts at {} but the twin's origin is {}: give the patient's full record",
            schedule.origin_utc, twin.schedule.origin_utc
        )));
    }
    if let Until::Minute(m) = until {
        if m < twin.t_min {
            return Err(TwinError::Argument(format!(
                "until ({m:.0} min) is before the twin's time ({:.0} min)",
                twin.t_min
            )));
        }
    }
    let mut engine = resume(twin)?;
    let done = engine.assimilate_to(schedule, until, stop_every_min, progress)?;
    Ok((engine.to_twin(schedule, twin.patient_id.clone()), done))
}

/// Forecast `horizon_min` minutes from a saved twin's time on its own schedule, with an
/// optional plan ([`TwinEngine::forecast`], seeded by the twin's settings).
pub fn forecast(twin: &Twin, horizon_min: u32, plan: Option<&Plan>) -> Result<Forecast, TwinError> {
    forecast_on(twin, &twin.schedule, horizon_min, plan)
}

/// [`forecast`] on another schedule from the twin's origin: one that agrees with the twin's
/// window of inputs up to its time and may add older history (what the hybrid forecast learns
/// from; the server keeps only a window in the saved twin).
pub fn forecast_on(
    twin: &Twin,
    schedule: &InputSchedule,
    horizon_min: u32,
    plan: Option<&Plan>,
) -> Result<Forecast, TwinError> {
    resume(twin)?.forecast(schedule, horizon_min, plan, twin.settings.seed)
}

/// Compare named plans over `horizon_min` minutes from a saved twin's time
/// ([`crate::decide::whatif`]: one posterior, common random numbers seeded by the twin's
/// settings).
pub fn whatif(
    twin: &Twin,
    plans: &[(String, Plan)],
    horizon_min: u32,
) -> Result<Vec<PlanOutcome>, TwinError> {
    whatif_seeded(twin, plans, horizon_min, twin.settings.seed)
}

/// [`whatif`] with the common random numbers drawn from `seed` instead of the twin's.
pub fn whatif_seeded(
    twin: &Twin,
    plans: &[(String, Plan)],
    horizon_min: u32,
    seed: u64,
) -> Result<Vec<PlanOutcome>, TwinError> {
    crate::decide::whatif(&resume(twin)?, &twin.schedule, plans, horizon_min, seed)
}

/// Bolus advice for `carbs_g` eaten `at_offset_min` after a saved twin's time
/// ([`crate::decide::advise`]).
pub fn advise(
    twin: &Twin,
    carbs_g: f64,
    at_offset_min: f64,
    settings: &AdvisorSettings,
) -> Result<Advice, TwinError> {
    crate::decide::advise(
        &resume(twin)?,
        &twin.schedule,
        carbs_g,
        at_offset_min,
        settings,
        twin.settings.seed,
    )
}

/// Rolling-origin backtest over `schedule` ([`crate::backtest::backtest`]: a twin calibrated on
/// its initial window, forecasts scored at every origin), and the twin after the whole record
/// saved with `patient_id`. `progress(done, total)` counts origins.
///
/// Errors: those of [`crate::backtest::backtest`] (no CGM, calibration failed, inference).
pub fn backtest(
    schedule: &InputSchedule,
    opts: &BacktestOptions,
    patient_id: Option<String>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(BacktestResult, Twin), TwinError> {
    let (result, engine) = crate::backtest::backtest(schedule, opts, progress)?;
    Ok((result, engine.to_twin(schedule, patient_id)))
}

/// Past filter states of a running twin, for re-assimilating **late data** (a reading or an
/// input older than the twin's time): restart from the newest kept state before the datum and
/// assimilate again everything since, exactly as if the datum had come in time. At most `max`
/// states are kept, at least `every_min` minutes of twin time apart (oldest first); late data
/// older than every kept state cannot be replayed.
#[derive(Debug, Clone)]
pub struct Checkpoints {
    states: Vec<Twin>,
    every_min: f64,
    max: usize,
}

impl Checkpoints {
    /// Start with one state (e.g. the twin as loaded); `max` ≥ 1 states `every_min` apart.
    pub fn new(first: Twin, every_min: f64, max: usize) -> Checkpoints {
        Checkpoints {
            states: vec![first],
            every_min,
            max: max.max(1),
        }
    }

    /// Keep the engine's current state (with `schedule`, its window of inputs) when the
    /// newest kept state is at least `every_min` older; drop the oldest beyond `max`.
    pub fn keep(&mut self, engine: &TwinEngine, schedule: &InputSchedule) {
        let t = engine.filter.t_min;
        if self
            .states
            .last()
            .is_none_or(|b| t - b.t_min >= self.every_min)
        {
            self.states.push(engine.to_twin(schedule, None));
            if self.states.len() > self.max {
                self.states.remove(0);
            }
        }
    }

    /// The newest kept state whose time satisfies `before` (e.g. "strictly before the late
    /// datum's minute"), dropping the newer ones (they lack the datum); `None` when no kept
    /// state is old enough.
    pub fn restart_point(&mut self, before: impl Fn(f64) -> bool) -> Option<Twin> {
        let i = self.states.iter().rposition(|b| before(b.t_min))?;
        self.states.truncate(i + 1);
        Some(self.states[i].clone())
    }

    /// Kept states, oldest first.
    pub fn states(&self) -> &[Twin] {
        &self.states
    }
}

/// Re-assimilate from a kept state ([`Checkpoints::restart_point`]) on `schedule`, to `until`
/// in stops `stop_every_min` apart: the engine to continue with.
pub fn replay(
    from: &Twin,
    schedule: &InputSchedule,
    until: Until,
    stop_every_min: f64,
) -> Result<(TwinEngine, Assimilated), TwinError> {
    let mut engine = resume(from)?;
    let done = engine.assimilate_to(schedule, until, stop_every_min, &mut no_progress)?;
    Ok((engine, done))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inputs::bundled;

    fn settings() -> TwinSettings {
        TwinSettings {
            n_particles: 40,
            hybrid_boosting: false,
            ..TwinSettings::default()
        }
    }

    fn same(a: &Twin, b: &Twin) {
        assert_eq!(
            serde_json::to_string(a).unwrap(),
            serde_json::to_string(b).unwrap()
        );
    }

    #[test]
    fn fit_and_update_are_the_engine_steps_they_replace() {
        let sched = bundled(34);
        let until = 1440.0 + 7.0 * 60.0 + 30.0;
        // What the CLI did before the lifecycle API: start, 60-min stops, save.
        let mut e = TwinEngine::start(&sched, settings()).unwrap();
        let mut t = e.filter.t_min;
        while t < until {
            t = (t + 60.0).min(until);
            e.assimilate_until(&sched, t).unwrap();
        }
        let manual = e.to_twin(&sched, Some("p".into()));
        let mut seen = vec![];
        let (twin, done) = fit(
            &sched,
            settings(),
            Until::Minute(until),
            CLI_FIT_STOP_MIN,
            Some("p".into()),
            &mut |p| {
                if let Progress::Assimilating { done, total } = p {
                    seen.push((done, total));
                }
            },
        )
        .unwrap();
        same(&manual, &twin);
        assert_eq!(done.until_min, until);
        assert!(!done.more);
        let n = sched
            .cgm
            .iter()
            .filter(|c| c.0 > 1440.0 && c.0 <= until)
            .count();
        assert!(n > 50);
        assert_eq!(done.readings, n);
        assert_eq!(seen.first(), Some(&(0, 8)));
        assert_eq!(seen.last(), Some(&(8, 8)));

        // Update in one stop, as `medtwin twin update` did.
        let end = sched.last_cgm_min();
        let mut e = TwinEngine::from_twin(&twin).unwrap();
        e.assimilate_until(&sched, end).unwrap();
        let manual = e.to_twin(&sched, twin.patient_id.clone());
        let (updated, done) = update(
            &twin,
            &sched,
            Until::Minute(end),
            f64::INFINITY,
            &mut no_progress,
        )
        .unwrap();
        same(&manual, &updated);
        assert!(done.readings > 0 && done.until_min == end);
        let f = forecast(&updated, 30, None).unwrap();
        assert_eq!(f.t_min.len(), 30);
        assert_eq!(f.t_min[0], end + 1.0);

        // Refusals: another origin, an end before the twin, stops that would never end.
        let mut other = sched.clone();
        other.origin_utc = "2000-01-01T00:00:00Z".into();
        let e = update(&twin, &other, Until::Minute(end), 60.0, &mut no_progress).unwrap_err();
        assert!(
            matches!(&e, TwinError::Argument(m) if m.contains("twin's origin")),
            "{e}"
        );
        let e = update(&twin, &sched, Until::Minute(100.0), 60.0, &mut no_progress).unwrap_err();
        assert!(
            matches!(&e, TwinError::Argument(m) if m.contains("before the twin's time")),
            "{e}"
        );
        for bad in [0.0, -5.0, f64::NAN] {
            let e = update(&twin, &sched, Until::Minute(end), bad, &mut no_progress).unwrap_err();
            assert!(matches!(e, TwinError::Argument(_)), "{bad}: {e}");
        }
        let e = update(
            &twin,
            &sched,
            Until::Slice { max_min: 0.0 },
            60.0,
            &mut no_progress,
        )
        .unwrap_err();
        assert!(matches!(e, TwinError::Argument(_)), "{e}");
    }

    #[test]
    fn slices_end_at_a_reading_within_the_cap_or_the_first_after_a_gap() {
        let s = InputSchedule {
            cgm: vec![(0.0, 100.0), (10.0, 100.0), (20.0, 100.0), (200.0, 100.0)],
            ..InputSchedule::default()
        };
        assert_eq!(slice_end(&s, 0.0, 15.0), (10.0, true));
        assert_eq!(slice_end(&s, 0.0, 500.0), (200.0, false));
        // a gap longer than the cap: the first reading after it
        assert_eq!(slice_end(&s, 20.0, 15.0), (200.0, false));
        assert_eq!(slice_end(&s, 5.0, 100.0), (20.0, true));
        // nothing newer: the last reading, nothing left
        assert_eq!(slice_end(&s, 250.0, 15.0), (200.0, false));
    }

    #[test]
    fn checkpoints_keep_spaced_states_and_restart_before_late_data() {
        let sched = bundled(30);
        let (twin, _) = fit(
            &sched,
            settings(),
            Until::Minute(1440.0),
            SERVER_STOP_MIN,
            None,
            &mut no_progress,
        )
        .unwrap();
        let mut cp = Checkpoints::new(twin.clone(), 120.0, 2);
        let mut e = resume(&twin).unwrap();
        for t in [1500.0, 1560.0, 1620.0, 1650.0] {
            e.assimilate_until(&sched, t).unwrap();
            cp.keep(&e, &sched.truncated(t));
        }
        // kept: 1440 (start), 1560 (120 later); 1620 and 1650 are < 120 after 1560
        let times: Vec<f64> = cp.states().iter().map(|s| s.t_min).collect();
        assert_eq!(times, vec![1440.0, 1560.0]);
        e.assimilate_until(&sched, 1680.0 + 10.0).unwrap();
        cp.keep(&e, &sched.truncated(1690.0));
        let times: Vec<f64> = cp.states().iter().map(|s| s.t_min).collect();
        assert_eq!(times, vec![1560.0, 1690.0], "at most two, oldest dropped");
        // a datum at 1600: restart from 1560, the newer state is dropped
        let from = cp.restart_point(|t| t < 1600.0).unwrap();
        assert_eq!(from.t_min, 1560.0);
        assert_eq!(cp.states().len(), 1);
        assert!(cp.restart_point(|t| t < 1000.0).is_none());
        // the replay from there equals assimilating from that state directly
        let (a, done) = replay(&from, &sched, Until::Minute(1700.0), 60.0).unwrap();
        let mut b = resume(&from).unwrap();
        b.assimilate_until(&sched, 1620.0).unwrap();
        b.assimilate_until(&sched, 1680.0).unwrap();
        b.assimilate_until(&sched, 1700.0).unwrap();
        same(&a.to_twin(&sched, None), &b.to_twin(&sched, None));
        assert_eq!(done.until_min, 1700.0);
    }
}
