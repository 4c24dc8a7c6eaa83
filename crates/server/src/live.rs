//! Live twins: every stored CGM reading queues its patient for assimilation; a pool of
//! workers keeps each patient's twin and forecast up to date.
//!
//! * **Queue**: bounded ([`crate::ServerConfig::queue_capacity`] patients). A patient is in
//!   the queue at most once: readings that arrive while it is queued are coalesced, and
//!   readings that arrive while its twin is being updated queue it again once the update ends
//!   (one worker per patient at a time). When the queue is full the patient is not queued and
//!   a sweep (every [`SWEEP_S`] s, and at start-up) re-queues every patient whose twin is
//!   behind its data, so nothing is lost, only delayed.
//! * **First fit**: a twin is calibrated once the patient has at least the calibration window
//!   ([`medtwin_twin::TwinSettings::calibration_window_min`], 24 h) of CGM from the first
//!   reading (and the calibration's minimum count of readings in it); until then the twin's
//!   status is `waiting`. Then it assimilates every reading incrementally (particle filter),
//!   and a forecast of [`crate::ServerConfig::horizon_min`] minutes is stored after each update.
//! * **Persistence**: the twin (`medtwin-twin/1` JSON) is saved after every update, so a
//!   restarted server resumes from the saved filter state (the start-up sweep queues the
//!   patients with unassimilated readings).
//! * **Late data**: readings older than the twin's time are stored but not assimilated (a
//!   filter cannot go back); readings before the twin's origin are ignored by the twin.
//! * A failed calibration is retried once the data have grown by an hour.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use medtwin_io::{Record, RecordKind};
use medtwin_store::Store;
use medtwin_twin::decide::whatif;
use medtwin_twin::{InputSchedule, Plan, Twin, TwinEngine, TwinSettings};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::ServerConfig;

/// Seconds between sweeps that re-queue patients whose twin is behind.
pub const SWEEP_S: u64 = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Queued,
    Running,
    RunningDirty,
}

/// Counters of the live-twin machinery.
#[derive(Debug, Default, Serialize, Clone, utoipa::ToSchema)]
pub struct LiveStats {
    /// Twin updates completed (fits and assimilations).
    pub updates: u64,
    /// Calibrations (first fits) completed.
    pub fits: u64,
    /// Times a patient could not be queued because the queue was full.
    pub queue_full: u64,
    /// Updates that failed.
    pub failures: u64,
    /// Patients whose twin this process calibrated from scratch (others resumed a saved twin).
    pub fitted_patients: Vec<String>,
}

/// The queue and its workers.
pub struct Live {
    tx: mpsc::Sender<String>,
    slots: Mutex<HashMap<String, Slot>>,
    updates: AtomicU64,
    fits: AtomicU64,
    queue_full: AtomicU64,
    failures: AtomicU64,
    fitted: Mutex<Vec<String>>,
    /// Patients without a twin yet: first CGM time (ms). Readings before the end of their
    /// calibration window are not queued at all.
    waiting: Mutex<HashMap<String, i64>>,
}

/// One point of a forecast: minutes ahead and predictive quantiles, mg/dL.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BandPoint {
    /// Wall-clock time (RFC 3339, UTC).
    pub time: String,
    /// Minutes after the data time.
    pub minutes_ahead: f64,
    /// Median, mg/dL.
    pub median: f64,
    /// 25th percentile (50 % band), mg/dL.
    pub lo50: f64,
    /// 75th percentile, mg/dL.
    pub hi50: f64,
    /// 10th percentile (80 % band), mg/dL.
    pub lo80: f64,
    /// 90th percentile, mg/dL.
    pub hi80: f64,
    /// 2.5th percentile (95 % band), mg/dL.
    pub lo95: f64,
    /// 97.5th percentile, mg/dL.
    pub hi95: f64,
}

/// A stored forecast (`GET /patients/{id}/forecast`).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ForecastDoc {
    /// Patient.
    pub patient_id: String,
    /// Time of the last CGM reading assimilated: the forecast knows the data up to here
    /// (RFC 3339, UTC).
    pub data_time: String,
    /// When the forecast was computed (RFC 3339, UTC).
    pub computed_at: String,
    /// Horizon, minutes.
    pub horizon_min: u32,
    /// P(glucose < 70 mg/dL at any minute within the horizon).
    pub p_below_70: f64,
    /// P(glucose > 250 mg/dL at any minute within the horizon).
    pub p_above_250: f64,
    /// Per-minute bands, mg/dL (predictive: include CGM measurement error).
    pub bands: Vec<BandPoint>,
    /// Particles of the filter.
    pub particles: usize,
    /// CGM readings the filter skipped as degenerate (so far).
    pub skipped_observations: usize,
}

/// A plan of the what-if endpoint; times are minutes after the twin's data time.
#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanSpec {
    /// Name shown in the answer.
    pub name: String,
    /// Meals: `{at_min, carbs_g}`.
    #[serde(default)]
    pub meals: Vec<MealSpec>,
    /// Boluses: `{at_min, units}` (U).
    #[serde(default)]
    pub boluses: Vec<BolusSpec>,
    /// Temporary basal rates: `{at_min, u_per_h}` holding until the next.
    #[serde(default)]
    pub basal: Vec<BasalSpec>,
}

/// A planned meal.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MealSpec {
    /// Minutes after the twin's time.
    pub at_min: f64,
    /// Carbohydrate, g.
    pub carbs_g: f64,
}

/// A planned bolus.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BolusSpec {
    /// Minutes after the twin's time.
    pub at_min: f64,
    /// Insulin, U.
    pub units: f64,
}

/// A planned basal rate.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BasalSpec {
    /// Minutes after the twin's time.
    pub at_min: f64,
    /// Rate, U/h.
    pub u_per_h: f64,
}

/// What-if request.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WhatifRequest {
    /// Horizon, minutes (1–720).
    #[serde(default = "default_whatif_horizon")]
    pub horizon_min: u32,
    /// Plans to compare (1–8); an empty plan is "no action".
    pub plans: Vec<PlanSpec>,
}

fn default_whatif_horizon() -> u32 {
    240
}

/// Outcome of one plan.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WhatifOutcome {
    /// Plan name.
    pub name: String,
    /// P(< 70 mg/dL within the horizon).
    pub p_below_70: f64,
    /// P(< 54 mg/dL within the horizon).
    pub p_below_54: f64,
    /// P(> 250 mg/dL within the horizon).
    pub p_above_250: f64,
    /// Expected % of the horizon in 70–180 mg/dL.
    pub expected_tir_pct: f64,
    /// Bands every 5 minutes.
    pub bands: Vec<BandPoint>,
}

/// What-if answer.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WhatifResponse {
    /// Patient.
    pub patient_id: String,
    /// The twin's data time (RFC 3339): plan times count from here.
    pub data_time: String,
    /// One outcome per plan, in request order.
    pub outcomes: Vec<WhatifOutcome>,
}

/// A probability summed from normalised particle weights can exceed 1 (or fall below 0) by
/// rounding (e.g. 1.0000000000000002); clamp it to [0, 1].
fn unit_prob(p: f64) -> f64 {
    p.clamp(0.0, 1.0) + 0.0 // + 0.0 turns -0.0 into 0.0
}

fn ts_of_min(origin: jiff::Timestamp, t_min: f64) -> jiff::Timestamp {
    jiff::Timestamp::from_millisecond(origin.as_millisecond() + (t_min * 60_000.0).round() as i64)
        .unwrap_or(origin)
}

fn band_point(origin: jiff::Timestamp, t0: f64, t: f64, b: &medtwin_infer::Bands) -> BandPoint {
    BandPoint {
        time: ts_of_min(origin, t).to_string(),
        minutes_ahead: t - t0,
        median: b.median,
        lo50: b.lo50,
        hi50: b.hi50,
        lo80: b.lo80,
        hi80: b.hi80,
        lo95: b.lo95,
        hi95: b.hi95,
    }
}

impl Live {
    /// Start `cfg.workers` workers and the sweeper; returns the handle used by the handlers.
    pub fn start(store: Store, cfg: Arc<ServerConfig>) -> Arc<Live> {
        let (tx, rx) = mpsc::channel::<String>(cfg.queue_capacity.max(1));
        let live = Arc::new(Live {
            tx,
            slots: Mutex::new(HashMap::new()),
            updates: AtomicU64::new(0),
            fits: AtomicU64::new(0),
            queue_full: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            fitted: Mutex::new(Vec::new()),
            waiting: Mutex::new(HashMap::new()),
        });
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        for _ in 0..cfg.workers.max(1) {
            let (live, rx, store, cfg) = (live.clone(), rx.clone(), store.clone(), cfg.clone());
            tokio::spawn(async move {
                loop {
                    let next = rx.lock().await.recv().await;
                    let Some(pid) = next else { break };
                    live.set(&pid, Slot::Running);
                    if let Err(e) = update_twin(&store, &cfg, &pid, &live).await {
                        live.failures.fetch_add(1, Ordering::Relaxed);
                        eprintln!("medtwin serve: twin update for `{pid}` failed: {e}");
                    }
                    live.finish(&pid);
                }
            });
        }
        let (l2, s2) = (live.clone(), store);
        tokio::spawn(async move {
            loop {
                match s2.patients_behind().await {
                    Ok(ps) => {
                        for p in ps {
                            l2.notify(&p, None);
                        }
                    }
                    Err(e) => eprintln!("medtwin serve: sweep failed: {e}"),
                }
                tokio::time::sleep(Duration::from_secs(SWEEP_S)).await;
            }
        });
        live
    }

    fn set(&self, pid: &str, s: Slot) {
        if let Ok(mut m) = self.slots.lock() {
            m.insert(pid.to_string(), s);
        }
    }

    fn finish(&self, pid: &str) {
        let again = match self.slots.lock() {
            Ok(mut m) => m.remove(pid) == Some(Slot::RunningDirty),
            Err(_) => false,
        };
        if again {
            self.notify(pid, None);
        }
    }

    /// New CGM data for `pid` (the newest new reading at `newest_cgm_ms`, when known): queue
    /// its twin for an update (coalesced; see module docs). A patient still inside its first
    /// calibration window is not queued.
    pub fn notify(&self, pid: &str, newest_cgm_ms: Option<i64>) {
        if let (Some(t), Ok(w)) = (newest_cgm_ms, self.waiting.lock()) {
            let window_ms = (TwinSettings::default().calibration_window_min - 1.0) * 60_000.0;
            if w.get(pid)
                .is_some_and(|first| ((t - first) as f64) < window_ms)
            {
                return;
            }
        }
        let Ok(mut m) = self.slots.lock() else { return };
        match m.get(pid).copied() {
            Some(Slot::Queued) | Some(Slot::RunningDirty) => {}
            Some(Slot::Running) => {
                m.insert(pid.to_string(), Slot::RunningDirty);
            }
            None => match self.tx.try_send(pid.to_string()) {
                Ok(()) => {
                    m.insert(pid.to_string(), Slot::Queued);
                }
                Err(_) => {
                    self.queue_full.fetch_add(1, Ordering::Relaxed);
                }
            },
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> LiveStats {
        LiveStats {
            updates: self.updates.load(Ordering::Relaxed),
            fits: self.fits.load(Ordering::Relaxed),
            queue_full: self.queue_full.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            fitted_patients: self.fitted.lock().map(|v| v.clone()).unwrap_or_default(),
        }
    }
}

/// The patient's record from the store (entries at or after `from_ms`).
async fn record_of(store: &Store, pid: &str, from_ms: i64) -> Result<Record, String> {
    let data = store.data(pid, from_ms).await.map_err(|e| e.to_string())?;
    Ok(Record::new(
        medtwin_io::PatientInfo {
            id: Some(pid.to_string()),
            ..Default::default()
        },
        data.into_iter().map(|d| d.entry).collect(),
    ))
}

/// Bring one patient's twin up to date (fit when due, else assimilate), store twin and
/// forecast.
async fn update_twin(
    store: &Store,
    cfg: &ServerConfig,
    pid: &str,
    live: &Live,
) -> Result<(), String> {
    let row = store.load_twin(pid).await.map_err(|e| e.to_string())?;
    let doc: Option<Twin> = match row.as_ref().and_then(|r| r.doc.as_deref()) {
        Some(d) => Some(serde_json::from_str(d).map_err(|e| format!("stored twin: {e}"))?),
        None => None,
    };
    if doc.is_none() {
        // Cheap check before loading the record: not yet 24 h of CGM → still waiting.
        let window_min = TwinSettings::default().calibration_window_min;
        let (_, first, last) = store.cgm_span(pid).await.map_err(|e| e.to_string())?;
        if let (Some(f), Some(l)) = (first, last) {
            let span_min = (l - f) as f64 / 60_000.0;
            if span_min < window_min - 1.0 {
                if let Ok(mut w) = live.waiting.lock() {
                    w.insert(pid.to_string(), f);
                }
                let m = format!(
                    "waiting for {:.0} h of CGM: the first reading is at {}",
                    window_min / 60.0,
                    jiff::Timestamp::from_millisecond(f)
                        .map(|t| t.to_string())
                        .unwrap_or_default()
                );
                return store
                    .save_twin(pid, "waiting", &m, l, None)
                    .await
                    .map_err(|e| e.to_string());
            }
        }
        if let Ok(mut w) = live.waiting.lock() {
            w.remove(pid);
        }
    }
    let from_ms = doc
        .as_ref()
        .and_then(|d| d.schedule.origin())
        .map(|o| o.as_millisecond())
        .unwrap_or(i64::MIN);
    let record = record_of(store, pid, from_ms).await?;
    let Some(last_cgm) = record.of_kind(RecordKind::Cgm).map(|e| e.time).max() else {
        return Ok(());
    };
    let last_ms = last_cgm.as_millisecond();
    if let Some(r) = &row {
        if r.data_time_ms >= last_ms {
            return Ok(()); // nothing new
        }
        if r.status == "failed" && last_ms < r.data_time_ms + 3_600_000 {
            return Ok(()); // retry a failed calibration only after another hour of data
        }
    }
    let particles = cfg.particles;
    let horizon = cfg.horizon_min;
    let pid_s = pid.to_string();
    let fitted = doc.is_none();
    let result = tokio::task::spawn_blocking(move || -> Result<Step, String> {
        let sched = InputSchedule::from_record(&record).ok_or("no CGM")?;
        let mut engine = match &doc {
            Some(d) => {
                if d.schedule.origin_utc != sched.origin_utc {
                    return Err(format!(
                        "record origin {} differs from the twin's {}",
                        sched.origin_utc, d.schedule.origin_utc
                    ));
                }
                TwinEngine::from_twin(d).map_err(|e| e.to_string())?
            }
            None => {
                let settings = TwinSettings {
                    n_particles: particles,
                    ..TwinSettings::default()
                };
                let span = sched.last_cgm_min();
                if span < settings.calibration_window_min {
                    return Ok(Step::Waiting(format!(
                        "needs {:.0} h of CGM to calibrate; has {:.1} h",
                        settings.calibration_window_min / 60.0,
                        span / 60.0
                    )));
                }
                match TwinEngine::start(&sched, settings) {
                    Ok(e) => e,
                    Err(e) => return Ok(Step::Failed(e.to_string())),
                }
            }
        };
        let until = sched.last_cgm_min();
        let mut t = engine.filter.t_min;
        while t < until {
            t = (t + 360.0).min(until);
            engine
                .assimilate_until(&sched, t)
                .map_err(|e| e.to_string())?;
        }
        let f = engine
            .forecast(&sched, horizon, None, engine.settings.seed)
            .map_err(|e| e.to_string())?;
        let origin = sched.origin().ok_or("bad origin")?;
        let t0 = engine.filter.t_min;
        let fdoc = ForecastDoc {
            patient_id: pid_s.clone(),
            data_time: last_cgm.to_string(),
            computed_at: jiff::Timestamp::now().to_string(),
            horizon_min: horizon,
            p_below_70: unit_prob(f.p_below),
            p_above_250: unit_prob(f.p_above),
            bands: f
                .t_min
                .iter()
                .zip(&f.bands)
                .map(|(t, b)| band_point(origin, t0, *t, b))
                .collect(),
            particles: engine.filter.particles.len(),
            skipped_observations: engine.skipped_observations,
        };
        let twin = engine.to_twin(&sched, Some(pid_s));
        Ok(Step::Updated {
            twin: serde_json::to_string(&twin).map_err(|e| e.to_string())?,
            forecast: serde_json::to_string(&fdoc).map_err(|e| e.to_string())?,
        })
    })
    .await
    .map_err(|e| format!("worker panicked: {e}"))??;
    match result {
        Step::Waiting(m) => store
            .save_twin(pid, "waiting", &m, last_ms, None)
            .await
            .map_err(|e| e.to_string())?,
        Step::Failed(m) => {
            store
                .save_twin(pid, "failed", &m, last_ms, None)
                .await
                .map_err(|e| e.to_string())?;
            return Err(m);
        }
        Step::Updated { twin, forecast } => {
            let data_time_ms = last_ms;
            store
                .save_twin(pid, "ok", "", data_time_ms, Some(&twin))
                .await
                .map_err(|e| e.to_string())?;
            store
                .save_forecast(pid, data_time_ms, &forecast)
                .await
                .map_err(|e| e.to_string())?;
            live.updates.fetch_add(1, Ordering::Relaxed);
            if fitted {
                live.fits.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut v) = live.fitted.lock() {
                    v.push(pid.to_string());
                }
            }
        }
    }
    Ok(())
}

enum Step {
    Waiting(String),
    Failed(String),
    Updated { twin: String, forecast: String },
}

/// Validate a what-if request and run it on the saved twin (CPU work: call from a blocking
/// task). Errors: `Err((true, reason))` for bad input, `Err((false, reason))` for failures.
pub fn run_whatif(
    pid: &str,
    twin_json: &str,
    req: &WhatifRequest,
) -> Result<WhatifResponse, (bool, String)> {
    let h = req.horizon_min;
    if h == 0 || h > 720 {
        return Err((true, format!("horizon_min {h} must be in 1..=720")));
    }
    if req.plans.is_empty() || req.plans.len() > 8 {
        return Err((true, "give 1 to 8 plans".into()));
    }
    let doc: Twin = serde_json::from_str(twin_json).map_err(|e| (false, e.to_string()))?;
    let t0 = doc.t_min;
    let mut plans = Vec::new();
    for (pi, p) in req.plans.iter().enumerate() {
        let mut plan = Plan::default();
        let check = |what: String, at: f64, v: f64| -> Result<(), (bool, String)> {
            if !at.is_finite() || at < 0.0 || at > h as f64 {
                return Err((
                    true,
                    format!("plans[{pi}].{what}.at_min = {at} is outside [0, {h}] min"),
                ));
            }
            if !v.is_finite() || v < 0.0 {
                return Err((
                    true,
                    format!("plans[{pi}].{what} amount {v} must be finite and >= 0"),
                ));
            }
            Ok(())
        };
        for (i, m) in p.meals.iter().enumerate() {
            check(format!("meals[{i}]"), m.at_min, m.carbs_g)?;
            plan.meals.push((t0 + m.at_min.round(), m.carbs_g));
        }
        for (i, b) in p.boluses.iter().enumerate() {
            check(format!("boluses[{i}]"), b.at_min, b.units)?;
            plan.boluses.push((t0 + b.at_min.round(), b.units));
        }
        for (i, b) in p.basal.iter().enumerate() {
            check(format!("basal[{i}]"), b.at_min, b.u_per_h)?;
            plan.basal_rates.push((t0 + b.at_min.round(), b.u_per_h));
        }
        plan.basal_rates.sort_by(|a, b| a.0.total_cmp(&b.0));
        plans.push((p.name.clone(), plan));
    }
    let engine = TwinEngine::from_twin(&doc).map_err(|e| (false, e.to_string()))?;
    let outs = whatif(&engine, &doc.schedule, &plans, h, doc.settings.seed)
        .map_err(|e| (false, e.to_string()))?;
    let origin = doc
        .schedule
        .origin()
        .ok_or((false, "twin origin invalid".to_string()))?;
    Ok(WhatifResponse {
        patient_id: pid.to_string(),
        data_time: ts_of_min(origin, t0).to_string(),
        outcomes: outs
            .into_iter()
            .map(|o| WhatifOutcome {
                name: o.name,
                p_below_70: unit_prob(o.p_below_70),
                p_below_54: unit_prob(o.p_below_54),
                p_above_250: unit_prob(o.p_above_250),
                expected_tir_pct: o.expected_tir_pct,
                bands: o
                    .t_min
                    .iter()
                    .zip(&o.bands)
                    .filter(|(t, _)| ((**t - t0).round() as i64) % 5 == 0)
                    .map(|(t, b)| band_point(origin, t0, *t, b))
                    .collect(),
            })
            .collect(),
    })
}
