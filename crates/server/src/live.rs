//! Live twins: every stored CGM reading queues its patient for assimilation; a pool of
//! workers keeps each patient's twin up to date, and forecasts are computed from the current
//! twin.
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
//!   status is `waiting`. Then it assimilates every reading incrementally (particle filter).
//! * **Incremental loading**: an update reads only the data from the twin's time on (CGM,
//!   boluses, carbohydrate, basal-rate changes), the basal rate in force and the long-acting
//!   doses of the last 96 h (their action window plus the carry-forward), never the whole
//!   history; the saved twin keeps only that window of inputs, so neither its size nor the
//!   cost of an update grows with the patient's history.
//! * **Forecasts** (of [`crate::ServerConfig::horizon_min`] minutes) are computed after an
//!   update when no other patient waits for assimilation; otherwise they are computed on
//!   demand ([`Live::current_forecast`], used by `GET /patients/{id}/forecast` and the
//!   dashboard's patient page) from the saved twin, and in idle time. A forecast therefore
//!   always reflects the twin's latest data, and under load the CPU goes to assimilation
//!   first. The patient list shows the latest stored forecast's risk (with its data time).
//! * **Persistence**: the twin (`medtwin-twin/1` JSON) is saved after every update, so a
//!   restarted server resumes from the saved filter state (the start-up sweep queues the
//!   patients with unassimilated readings).
//! * **Late data** (readings or inputs older than the twin's time, e.g. a bolus logged after
//!   the fact): a live twin keeps [`REPLAY_CHECKPOINTS`] past filter states
//!   [`REPLAY_STEP_MIN`] minutes apart; the next update restarts the filter from the newest
//!   kept state before the late datum and re-assimilates everything since (exactly as if the
//!   datum had come in time; `tests/late.rs`). Late data older than every kept state (about
//!   2–4 h), or for a twin not in memory, are stored but not assimilated, and counted.
//! * A failed calibration is retried once the data have grown by an hour.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use medtwin_io::{Record, RecordKind};
use medtwin_store::Store;
use medtwin_twin::inputs::{LONG_ACTING_CARRY_MAX_MIN, LONG_ACTING_WINDOW_MIN};
use medtwin_twin::lifecycle::{self, no_progress, Checkpoints, Until, SERVER_STOP_MIN};
use medtwin_twin::model::{PlannedBasal, PlannedBolus, PlannedMeal};
use medtwin_twin::{InputSchedule, RelativePlan, Twin, TwinEngine, TwinError, TwinSettings};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::ServerConfig;

/// Seconds between sweeps that re-queue patients whose twin is behind.
pub const SWEEP_S: u64 = 30;

/// Seconds between checks for forecasts to compute while the workers are idle.
pub const IDLE_FORECAST_S: u64 = 2;

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
    /// Forecasts computed on request because the stored one was older than the twin.
    pub lazy_forecasts: u64,
    /// Patients waiting in the assimilation queue now.
    pub queued: usize,
    /// Times late data were re-assimilated from a kept filter state.
    pub reassimilations: u64,
    /// Times late data were too old for the kept filter states (stored, not assimilated).
    pub late_ignored: u64,
    /// CGM readings assimilated by the updates.
    pub readings_assimilated: u64,
    /// Forecasts computed by the workers right after an update (the queue was empty).
    pub eager_forecasts: u64,
    /// Mean wall time of an update's phases, ms: `[load twin and new data, compute
    /// (assimilate, forecast if eager, serialise), save]`.
    pub mean_update_ms: [f64; 3],
}

/// Handles of spawned tasks.
type Tasks = Vec<tokio::task::JoinHandle<()>>;

/// The queue and its workers.
pub struct Live {
    tx: mpsc::Sender<String>,
    /// Set by [`Live::shutdown`]: workers finish the queue and stop.
    stop: tokio::sync::watch::Sender<bool>,
    /// Update workers (awaited at shutdown) and background tasks (aborted at shutdown).
    tasks: Mutex<(Tasks, Tasks)>,
    slots: Mutex<HashMap<String, Slot>>,
    updates: AtomicU64,
    fits: AtomicU64,
    queue_full: AtomicU64,
    failures: AtomicU64,
    fitted: Mutex<Vec<String>>,
    /// Patients without a twin yet: first CGM time (ms). Readings before the end of their
    /// calibration window are not queued at all.
    waiting: Mutex<HashMap<String, i64>>,
    /// One lazy forecast computation per patient at a time.
    forecast_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    lazy_forecasts: AtomicU64,
    /// Patients with late data (older than their twin's time): the oldest such time, ms.
    late: Mutex<HashMap<String, i64>>,
    reassimilations: AtomicU64,
    late_ignored: AtomicU64,
    /// Live twins in memory (checkpointed to the store).
    cache: Mutex<HashMap<String, Entry>>,
    /// Threads for twin CPU work (assimilation, forecasts): [`ServerConfig::workers`].
    pool: Arc<rayon::ThreadPool>,
    eager_forecasts: AtomicU64,
    readings: AtomicU64,
    /// Total µs per update phase (load, compute, save).
    phase_us: [AtomicU64; 3],
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

impl PlanSpec {
    /// The plan as a [`RelativePlan`] (the plan TOML files' form), whose
    /// [`RelativePlan::to_plan`] checks the times and amounts.
    pub fn relative(&self) -> RelativePlan {
        RelativePlan {
            meal: self
                .meals
                .iter()
                .map(|m| PlannedMeal {
                    at_min: m.at_min,
                    carbs_g: m.carbs_g,
                })
                .collect(),
            bolus: self
                .boluses
                .iter()
                .map(|b| PlannedBolus {
                    at_min: b.at_min,
                    units: b.units,
                })
                .collect(),
            basal: self
                .basal
                .iter()
                .map(|b| PlannedBasal {
                    at_min: b.at_min,
                    u_per_h: b.u_per_h,
                })
                .collect(),
        }
    }
}

/// An error of [`RelativePlan::to_plan`] on plan `pi` of a request, in the API's field names:
/// `meal[i]…` becomes `plans[pi].meals[i]…`, `bolus[i]…` `plans[pi].boluses[i]…`,
/// `basal[i]…` `plans[pi].basal[i]…`.
fn api_names(pi: usize, msg: String) -> String {
    let m = match (msg.strip_prefix("meal["), msg.strip_prefix("bolus[")) {
        (Some(r), _) => format!("meals[{r}"),
        (_, Some(r)) => format!("boluses[{r}"),
        _ => msg,
    };
    format!("plans[{pi}].{m}")
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
            stop: tokio::sync::watch::channel(false).0,
            tasks: Mutex::new((Vec::new(), Vec::new())),
            slots: Mutex::new(HashMap::new()),
            updates: AtomicU64::new(0),
            fits: AtomicU64::new(0),
            queue_full: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            fitted: Mutex::new(Vec::new()),
            waiting: Mutex::new(HashMap::new()),
            forecast_locks: Mutex::new(HashMap::new()),
            lazy_forecasts: AtomicU64::new(0),
            cache: Mutex::new(HashMap::new()),
            late: Mutex::new(HashMap::new()),
            reassimilations: AtomicU64::new(0),
            late_ignored: AtomicU64::new(0),
            pool: Arc::new(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(cfg.workers.max(1))
                    .thread_name(|i| format!("medtwin-twin-{i}"))
                    .build()
                    .unwrap_or_else(|_| {
                        rayon::ThreadPoolBuilder::new()
                            .build()
                            .expect("a rayon pool")
                    }),
            ),
            eager_forecasts: AtomicU64::new(0),
            readings: AtomicU64::new(0),
            phase_us: Default::default(),
        });
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        // Two update tasks per twin thread, so one loads or saves while the other computes.
        let mut workers = Vec::new();
        for _ in 0..2 * cfg.workers.max(1) {
            let (live, rx, store, cfg) = (live.clone(), rx.clone(), store.clone(), cfg.clone());
            let mut stop = live.stop.subscribe();
            workers.push(tokio::spawn(async move {
                loop {
                    // Once stopping: what is queued, then end.
                    let next = {
                        let mut r = rx.lock().await;
                        if *stop.borrow() {
                            r.try_recv().ok()
                        } else {
                            tokio::select! {
                                v = r.recv() => v,
                                _ = stop.changed() => r.try_recv().ok(),
                            }
                        }
                    };
                    let Some(pid) = next else { break };
                    live.set(&pid, Slot::Running);
                    if let Err(e) = update_twin(&store, &cfg, &pid, &live).await {
                        live.failures.fetch_add(1, Ordering::Relaxed);
                        eprintln!("medtwin serve: twin update for `{pid}` failed: {e}");
                    }
                    live.finish(&pid);
                }
            }));
        }
        let (l3, s3, c3) = (live.clone(), store.clone(), cfg.clone());
        let idle = tokio::spawn(async move {
            // Idle time: forecasts the workers skipped while patients were waiting.
            loop {
                tokio::time::sleep(Duration::from_secs(IDLE_FORECAST_S)).await;
                if !l3.idle() {
                    continue;
                }
                for p in l3.forecasts_behind(&s3).await {
                    if !l3.idle() {
                        break;
                    }
                    if let Err(e) = l3.current_forecast(&s3, &c3, &p).await {
                        eprintln!("medtwin serve: forecast for `{p}` failed: {e}");
                    }
                }
            }
        });
        let (l2, s2) = (live.clone(), store);
        let sweeper = tokio::spawn(async move {
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
        if let Ok(mut t) = live.tasks.lock() {
            *t = (workers, vec![idle, sweeper]);
        }
        live
    }

    /// Stop cleanly before the store closes: stop the sweeper and idle forecasts, let the
    /// workers finish the twins queued (new data no longer queue any), and wait for them, at
    /// most `drain` (twins left behind are resumed at the next start: they are behind their
    /// data). Returns the number of workers that did not finish in time.
    pub async fn shutdown(&self, drain: Duration) -> usize {
        let _ = self.stop.send(true);
        let (workers, background) = match self.tasks.lock() {
            Ok(mut t) => std::mem::take(&mut *t),
            Err(_) => return 0,
        };
        for b in background {
            b.abort();
            let _ = b.await;
        }
        let deadline = tokio::time::Instant::now() + drain;
        let mut late = 0;
        for w in workers {
            if tokio::time::timeout_at(deadline, w).await.is_err() {
                late += 1;
            }
        }
        late
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
        if *self.stop.borrow() {
            return;
        }
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
            lazy_forecasts: self.lazy_forecasts.load(Ordering::Relaxed),
            queued: self.queued(),
            reassimilations: self.reassimilations.load(Ordering::Relaxed),
            late_ignored: self.late_ignored.load(Ordering::Relaxed),
            readings_assimilated: self.readings.load(Ordering::Relaxed),
            eager_forecasts: self.eager_forecasts.load(Ordering::Relaxed),
            mean_update_ms: {
                let n = self.updates.load(Ordering::Relaxed).max(1) as f64;
                std::array::from_fn(|i| self.phase_us[i].load(Ordering::Relaxed) as f64 / n / 1e3)
            },
        }
    }
}

/// The patient's record from the store (entries at or after `from_ms`).
async fn record_of(store: &Store, pid: &str, from_ms: i64) -> Result<Record, String> {
    let data = store.data(pid, from_ms).await.map_err(|e| e.to_string())?;
    Ok(record_from(pid, data))
}

fn record_from(pid: &str, data: Vec<medtwin_store::StoredDatum>) -> Record {
    Record::new(
        medtwin_io::PatientInfo {
            id: Some(pid.to_string()),
            ..Default::default()
        },
        data.into_iter().map(|d| d.entry).collect(),
    )
}

/// How far back long-acting doses still act on the twin's inputs (the 24 h action window
/// plus the 72 h carry-forward over a missing log), ms.
const LONG_ACTING_LOOKBACK_MS: i64 =
    ((LONG_ACTING_WINDOW_MIN + LONG_ACTING_CARRY_MAX_MIN) * 60_000.0) as i64;

/// Wall-clock ms of twin minute `t_min` (its schedule's origin + t).
fn ms_of_min(origin: jiff::Timestamp, t_min: f64) -> i64 {
    origin.as_millisecond() + (t_min * 60_000.0).round() as i64
}

/// The forecast document of `engine` at its filter time (CPU work).
fn forecast_doc(
    engine: &TwinEngine,
    sched: &InputSchedule,
    pid: &str,
    data_time_ms: i64,
    horizon: u32,
) -> Result<ForecastDoc, String> {
    let f = engine
        .forecast(sched, horizon, None, engine.settings.seed)
        .map_err(|e| e.to_string())?;
    let origin = sched.origin().ok_or("bad origin")?;
    let t0 = engine.filter.t_min;
    Ok(ForecastDoc {
        patient_id: pid.to_string(),
        data_time: jiff::Timestamp::from_millisecond(data_time_ms)
            .map_err(|e| e.to_string())?
            .to_string(),
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
    })
}

/// The forecast of a saved twin document (CPU work: call from a blocking task); `history`
/// as for [`with_history`].
pub fn forecast_of_twin(
    pid: &str,
    twin_json: &str,
    data_time_ms: i64,
    horizon: u32,
    history: &Record,
) -> Result<String, String> {
    let doc: Twin = serde_json::from_str(twin_json).map_err(|e| format!("stored twin: {e}"))?;
    let engine = lifecycle::resume(&doc).map_err(|e| e.to_string())?;
    let sched = with_history(&doc.schedule, doc.t_min, history)?;
    let f = forecast_doc(&engine, &sched, pid, data_time_ms, horizon)?;
    serde_json::to_string(&f).map_err(|e| e.to_string())
}

/// The history a forecast learns from: every datum of the last
/// [`medtwin_twin::hybrid::HISTORY_DAYS`] days before `data_time_ms` (the hybrid forecast fits
/// its glucose-change model on the patient's own CGM, carbohydrate and boluses of that span).
pub async fn forecast_history(
    store: &Store,
    pid: &str,
    data_time_ms: i64,
) -> Result<Record, String> {
    let from = data_time_ms - (medtwin_twin::hybrid::HISTORY_DAYS * 86_400_000.0) as i64;
    record_of(store, pid, from).await
}

/// A twin's window of inputs (what the filter needs) completed with the recorded history up
/// to the twin's time `t_min` (CGM, carbohydrate, boluses; what the hybrid forecast learns
/// from): the schedule a forecast from the twin needs.
pub fn with_history(
    window: &InputSchedule,
    t_min: f64,
    history: &Record,
) -> Result<InputSchedule, String> {
    let origin = window.origin().ok_or("twin: bad origin")?;
    let hist = InputSchedule::from_record_at(history, origin).truncated(t_min);
    let mut s = window.truncated(t_min);
    s.cgm = hist.cgm;
    s.carbs = hist.carbs;
    s.boluses = hist.boluses;
    Ok(s)
}

/// A live twin held in memory between updates (see the module docs).
struct Cached {
    engine: TwinEngine,
    /// The twin's window of inputs (as in its saved document).
    sched: InputSchedule,
    /// Time of the last assimilated CGM reading, ms.
    data_time_ms: i64,
    /// Data time of the checkpoint in the store, ms.
    saved_ms: i64,
    /// When that checkpoint was written.
    saved_at: Instant,
    /// Save the next checkpoint whatever its age (the state changed without new data).
    force_save: bool,
    /// Past states of the filter for re-assimilating late data: at most
    /// [`REPLAY_CHECKPOINTS`], [`REPLAY_STEP_MIN`] apart.
    replay: Checkpoints,
}

/// Twin time one update assimilates at most, min (24 h). A twin with more data to catch up
/// on (a first fit on days of history, a device that uploads a week at once) is brought up to
/// date in slices: after each slice it is saved and queued again, behind the patients already
/// waiting, so one patient's backlog delays the others by at most one slice
/// (`tests/isolation.rs`). Slices end at a CGM reading; the result is the same as one long
/// update (the filter is advanced in the same steps from the same state).
pub const CATCH_UP_SLICE_MIN: f64 = 1440.0;

/// Where an update of a twin ends: one catch-up slice ([`lifecycle::slice_end`]).
const SLICE: Until = Until::Slice {
    max_min: CATCH_UP_SLICE_MIN,
};

/// Filter states kept per live twin for re-assimilating late data.
pub const REPLAY_CHECKPOINTS: usize = 2;
/// Twin time between kept filter states, min: late data up to 2–4 h old are re-assimilated.
pub const REPLAY_STEP_MIN: f64 = 120.0;

impl Cached {
    fn from_doc(doc: &Twin, data_time_ms: i64) -> Result<Cached, String> {
        Ok(Cached {
            engine: lifecycle::resume(doc).map_err(|e| e.to_string())?,
            sched: doc.schedule.clone(),
            data_time_ms,
            saved_ms: data_time_ms,
            saved_at: Instant::now(),
            force_save: false,
            replay: Checkpoints::new(doc.clone(), REPLAY_STEP_MIN, REPLAY_CHECKPOINTS),
        })
    }

    /// Keep the current filter state for replays when the newest kept one is old enough.
    fn keep_replay_state(&mut self) {
        self.replay.keep(&self.engine, &self.sched);
    }
}

/// A cached twin: its state is locked only inside blocking tasks (CPU work); its data time
/// can be read without waiting.
struct LiveTwin {
    state: Mutex<Cached>,
    data_time_ms: AtomicI64,
}

type Entry = Arc<LiveTwin>;

fn entry_of(c: Cached) -> Entry {
    Arc::new(LiveTwin {
        data_time_ms: AtomicI64::new(c.data_time_ms),
        state: Mutex::new(c),
    })
}

fn lock(e: &Entry) -> Result<std::sync::MutexGuard<'_, Cached>, String> {
    e.state
        .lock()
        .map_err(|_| "twin cache lock poisoned".to_string())
}

impl Live {
    /// Run twin CPU work on the twin pool (from a blocking task, off the async runtime).
    async fn cpu<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, String> + Send + 'static,
    ) -> Result<T, String> {
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || pool.install(f))
            .await
            .map_err(|e| format!("twin work panicked: {e}"))?
    }

    /// Run twin CPU work on a cached twin: its lock is taken on a blocking thread *before*
    /// entering the pool, so no pool thread ever waits for a twin lock (a pool thread waiting
    /// inside a parallel loop may pick up another job; had that job to wait for a lock held
    /// further down the same thread's stack, it would deadlock).
    async fn cpu_locked<T: Send + 'static>(
        &self,
        e: Entry,
        f: impl FnOnce(&mut Cached, &LiveTwin) -> Result<T, String> + Send + 'static,
    ) -> Result<T, String> {
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = lock(&e)?;
            let c: &mut Cached = &mut guard;
            pool.install(|| f(c, &e))
        })
        .await
        .map_err(|e| format!("twin work panicked: {e}"))?
    }

    fn cached(&self, pid: &str) -> Option<Entry> {
        self.cache.lock().ok()?.get(pid).cloned()
    }

    /// New data for `pid` of which the oldest is at `oldest_ms`: when that is older than the
    /// patient's live twin (late data), the next update re-assimilates from a kept filter state
    /// before it (see [`REPLAY_STEP_MIN`]); the patient is queued.
    pub fn note_data(&self, pid: &str, oldest_ms: i64) {
        let Some(t) = self.data_time_ms(pid) else {
            return;
        };
        if oldest_ms < t - 30_000 {
            if let Ok(mut m) = self.late.lock() {
                let v = m.entry(pid.to_string()).or_insert(oldest_ms);
                *v = (*v).min(oldest_ms);
            }
            self.notify(pid, None);
        }
    }

    /// Data time (ms) of the patient's live twin when it is held in memory.
    pub fn data_time_ms(&self, pid: &str) -> Option<i64> {
        self.cached(pid)
            .map(|e| e.data_time_ms.load(Ordering::Acquire))
    }

    /// The live twin of `pid` as a saveable document: the in-memory one when cached (it may
    /// be newer than the stored checkpoint), else the stored one. `None` when not calibrated.
    pub async fn twin_doc(&self, store: &Store, pid: &str) -> Result<Option<Twin>, String> {
        if let Some(e) = self.cached(pid) {
            let p = pid.to_string();
            return tokio::task::spawn_blocking(move || {
                let c = lock(&e)?;
                Ok(Some(c.engine.to_twin(&c.sched, Some(p))))
            })
            .await
            .map_err(|e| format!("twin copy panicked: {e}"))?;
        }
        let row = store.load_twin(pid).await.map_err(|e| e.to_string())?;
        match row.and_then(|r| r.doc) {
            Some(d) => Ok(Some(
                serde_json::from_str(&d).map_err(|e| format!("stored twin: {e}"))?,
            )),
            None => Ok(None),
        }
    }

    /// The forecast of a patient's current twin (JSON `ForecastDoc`), or the stored one (if
    /// any) when the patient has no calibrated twin. Forecasts are computed lazily: when the
    /// stored forecast is older than the twin (the workers skip forecasts while other
    /// patients wait for assimilation), it is computed now from the live twin, stored and
    /// returned; one computation per patient at a time (concurrent callers wait and reuse it).
    pub async fn current_forecast(
        &self,
        store: &Store,
        cfg: &ServerConfig,
        pid: &str,
    ) -> Result<Option<String>, String> {
        let err = |e: medtwin_store::StoreError| e.to_string();
        // Data time of the twin now, if calibrated.
        let twin_time = |live: &Live| {
            let cached = live.cached(pid);
            async move {
                if let Some(e) = cached {
                    return Ok(Some(e.data_time_ms.load(Ordering::Acquire)));
                }
                Ok::<_, String>(match store.twin_status(pid).await.map_err(err)? {
                    Some((st, t)) if st == "ok" => Some(t),
                    _ => None,
                })
            }
        };
        let stale = |t: Option<i64>, f: Option<i64>| t.is_some_and(|t| f.is_none_or(|f| f < t));
        let t = twin_time(self).await?;
        if stale(t, store.forecast_time(pid).await.map_err(err)?) {
            let plock = match self.forecast_locks.lock() {
                Ok(mut m) => m.entry(pid.to_string()).or_default().clone(),
                Err(_) => return Err("forecast lock poisoned".into()),
            };
            let _guard = plock.lock().await;
            // Another caller may have computed it while this one waited.
            let t = twin_time(self).await?;
            if stale(t, store.forecast_time(pid).await.map_err(err)?) {
                let (p, h) = (pid.to_string(), cfg.horizon_min);
                let history = forecast_history(store, pid, t.unwrap_or(i64::MAX)).await?;
                let f = match self.cached(pid) {
                    Some(e) => {
                        self.cpu_locked(e, move |c, _| {
                            let sched = with_history(&c.sched, c.engine.filter.t_min, &history)?;
                            let f = forecast_doc(&c.engine, &sched, &p, c.data_time_ms, h)?;
                            Ok(Some((
                                c.data_time_ms,
                                serde_json::to_string(&f).map_err(|e| e.to_string())?,
                            )))
                        })
                        .await?
                    }
                    None => match store.load_twin(pid).await.map_err(err)? {
                        Some(row) if row.status == "ok" && row.doc.is_some() => {
                            let (doc, t) = (row.doc.unwrap_or_default(), row.data_time_ms);
                            let f = self
                                .cpu(move || forecast_of_twin(&p, &doc, t, h, &history))
                                .await?;
                            Some((t, f))
                        }
                        _ => None,
                    },
                };
                if let Some((t, f)) = f {
                    store.save_forecast(pid, t, &f).await.map_err(err)?;
                    self.lazy_forecasts.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Ok(store.load_forecast(pid).await.map_err(err)?.map(|f| f.doc))
    }

    /// Patients whose forecast is older than their twin: in the store, and in memory.
    async fn forecasts_behind(&self, store: &Store) -> Vec<String> {
        let mut out = store.forecasts_behind().await.unwrap_or_default();
        let cached: Vec<(String, Entry)> = match self.cache.lock() {
            Ok(m) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            Err(_) => return out,
        };
        for (p, e) in cached {
            let t = e.data_time_ms.load(Ordering::Acquire);
            if store
                .forecast_time(&p)
                .await
                .ok()
                .flatten()
                .is_none_or(|f| f < t)
                && !out.contains(&p)
            {
                out.push(p);
            }
        }
        out
    }

    /// Patients waiting in the assimilation queue.
    fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// No patient queued or being updated.
    fn idle(&self) -> bool {
        self.queued() == 0 && self.slots.lock().map(|m| m.is_empty()).unwrap_or(false)
    }
}

/// Seconds between checkpoints of a live twin to the store while other patients wait for
/// assimilation (when the queue is empty every update is saved).
pub const CHECKPOINT_S: u64 = 10;

/// Bring one patient's twin up to date (fit when due, else assimilate the data since the
/// twin's time), checkpoint it to the store (see [`CHECKPOINT_S`]) and, when no other patient
/// is waiting, compute its forecast.
async fn update_twin(
    store: &Store,
    cfg: &ServerConfig,
    pid: &str,
    live: &Live,
) -> Result<(), String> {
    let t_load = Instant::now();
    let entry = match live.cached(pid) {
        Some(e) => Some((e, true)),
        None => {
            let row = store.load_twin(pid).await.map_err(|e| e.to_string())?;
            match row {
                Some(r) if r.status == "ok" && r.doc.is_some() => {
                    let (doc, t) = (r.doc.unwrap_or_default(), r.data_time_ms);
                    let c = live
                        .cpu(move || {
                            let d: Twin = serde_json::from_str(&doc)
                                .map_err(|e| format!("stored twin: {e}"))?;
                            Cached::from_doc(&d, t)
                        })
                        .await?;
                    let e = entry_of(c);
                    let kept = match live.cache.lock() {
                        Ok(mut m) if m.len() < cfg.cached_twins => {
                            m.insert(pid.to_string(), e.clone());
                            true
                        }
                        _ => false,
                    };
                    Some((e, kept))
                }
                _ => None,
            }
        }
    };
    match entry {
        Some((e, kept)) => continue_twin(store, cfg, pid, live, e, kept, t_load).await,
        None => first_fit(store, cfg, pid, live).await,
    }
}

/// Assimilate the data since a calibrated twin's time.
async fn continue_twin(
    store: &Store,
    cfg: &ServerConfig,
    pid: &str,
    live: &Live,
    entry: Entry,
    cached: bool,
    t_load: Instant,
) -> Result<(), String> {
    let late = live.late.lock().ok().and_then(|mut m| m.remove(pid));
    if let Some(late_ms) = late {
        replay_late(store, pid, live, &entry, late_ms).await?;
    }
    let (origin, t_min, data_time_ms) = {
        let c = lock(&entry)?;
        (
            c.sched.origin().ok_or("twin: bad origin")?,
            c.engine.filter.t_min,
            c.data_time_ms,
        )
    };
    let (record, last_ms) = twin_window(store, pid, origin, t_min).await?;
    let idle = live.queued() == 0;
    let pid_s = pid.to_string();
    let t_compute = Instant::now();
    let out = live
        .cpu_locked(entry, move |c, e2| -> Result<Option<Update>, String> {
            let new = last_ms > data_time_ms;
            // A twin not kept in memory is saved every time.
            let due = idle
                || !cached
                || c.force_save
                || c.saved_at.elapsed() >= Duration::from_secs(CHECKPOINT_S);
            if !new && (c.saved_ms >= c.data_time_ms || !due) {
                return Ok(None); // nothing new, checkpoint current (or not due)
            }
            let mut readings = 0;
            let mut more = false;
            if new {
                let mut sched = InputSchedule::from_record_at(&record, origin);
                sched.carried_long_acting_min = c.sched.carried_long_acting_min;
                let done = c
                    .engine
                    .assimilate_to(&sched, SLICE, SERVER_STOP_MIN, &mut no_progress)
                    .map_err(|e| e.to_string())?;
                (readings, more) = (done.readings, done.more);
                c.sched = sched.truncated(c.engine.filter.t_min);
                c.data_time_ms = if more {
                    ms_of_min(origin, done.until_min)
                } else {
                    last_ms
                };
                e2.data_time_ms.store(c.data_time_ms, Ordering::Release);
                c.keep_replay_state();
            }

            let twin = if due {
                let t = c.engine.to_twin(&c.sched, Some(pid_s));
                c.saved_ms = c.data_time_ms;
                c.saved_at = Instant::now();
                c.force_save = false;
                Some(serde_json::to_string(&t).map_err(|e| e.to_string())?)
            } else {
                None
            };
            Ok(Some(Update {
                data_time_ms: c.data_time_ms,
                twin,
                readings,
                more,
            }))
        })
        .await?;
    let Some(u) = out else { return Ok(()) };
    let t_save = Instant::now();
    if let Some(twin) = &u.twin {
        store
            .save_twin(pid, "ok", "", u.data_time_ms, Some(twin))
            .await
            .map_err(|e| e.to_string())?;
    }
    if u.readings > 0 {
        live.record_update(u.readings, [t_load, t_compute, t_save, Instant::now()]);
    }
    if u.more {
        // The rest of the backlog after the patients waiting now (queued again once this
        // update ends); no forecast for an intermediate state.
        live.notify(pid, None);
        return Ok(());
    }
    eager_forecast(store, cfg, pid, live).await
}

/// The data a twin at minute `t_min` of a schedule starting at `origin` needs to continue
/// (see [`Store::twin_data`]: the CGM and inputs from its time on, the basal rate in force, the
/// long-acting doses still acting), as a record, and the time of its newest CGM reading (ms;
/// `i64::MIN` when none). Build its schedule with [`InputSchedule::from_record_at`] and the
/// same `origin`.
pub async fn twin_window(
    store: &Store,
    pid: &str,
    origin: jiff::Timestamp,
    t_min: f64,
) -> Result<(Record, i64), String> {
    let since = ms_of_min(origin, t_min - 0.5);
    let data = store
        .twin_data(pid, since, since - LONG_ACTING_LOOKBACK_MS)
        .await
        .map_err(|e| e.to_string())?;
    let record = record_from(pid, data);
    let last_ms = record
        .of_kind(RecordKind::Cgm)
        .map(|e| e.time.as_millisecond())
        .max()
        .unwrap_or(i64::MIN);
    Ok((record, last_ms))
}

/// Late data (older than the twin's time, the oldest at `late_ms`): restart the filter from
/// the newest kept state before them and re-assimilate everything since (bounded: the kept
/// states reach [`REPLAY_STEP_MIN`]·[`REPLAY_CHECKPOINTS`] minutes back; older late data stay
/// stored but unassimilated and are counted). The stored forecast is dropped (it no longer
/// matches the twin) and recomputed on demand.
async fn replay_late(
    store: &Store,
    pid: &str,
    live: &Live,
    entry: &Entry,
    late_ms: i64,
) -> Result<(), String> {
    // The newest kept state strictly before the late datum's minute; newer ones lack it.
    let start = live
        .cpu_locked(entry.clone(), move |c, _| {
            let origin = c.sched.origin().ok_or("twin: bad origin")?;
            Ok(c.replay
                .restart_point(|t| ms_of_min(origin, t + 0.5) <= late_ms)
                .map(|from| (origin, from)))
        })
        .await?;
    let Some((origin, from)) = start else {
        live.late_ignored.fetch_add(1, Ordering::Relaxed);
        return Ok(());
    };
    let (record, last_ms) = twin_window(store, pid, origin, from.t_min).await?;
    live.cpu_locked(entry.clone(), move |c, e| {
        let mut sched = InputSchedule::from_record_at(&record, origin);
        sched.carried_long_acting_min = c.sched.carried_long_acting_min;
        // One slice at most; the update that called this goes on from where it ends.
        let (engine, done) =
            lifecycle::replay(&from, &sched, SLICE, SERVER_STOP_MIN).map_err(|e| e.to_string())?;
        c.engine = engine;
        c.sched = sched.truncated(c.engine.filter.t_min);
        c.data_time_ms = if done.more {
            ms_of_min(origin, done.until_min)
        } else {
            c.data_time_ms.max(last_ms)
        };
        e.data_time_ms.store(c.data_time_ms, Ordering::Release);
        c.force_save = true;
        c.keep_replay_state();
        Ok(())
    })
    .await?;
    store
        .delete_forecast(pid)
        .await
        .map_err(|e| e.to_string())?;
    live.reassimilations.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Result of [`continue_twin`]'s CPU part.
struct Update {
    data_time_ms: i64,
    twin: Option<String>,
    readings: usize,
    /// Data remain after this slice ([`CATCH_UP_SLICE_MIN`]).
    more: bool,
}

/// Forecast right after an update when no other patient waits for assimilation; otherwise
/// the forecast is computed on demand (`current_forecast`) or in idle time.
async fn eager_forecast(
    store: &Store,
    cfg: &ServerConfig,
    pid: &str,
    live: &Live,
) -> Result<(), String> {
    if live.queued() == 0 {
        let before = live.lazy_forecasts.load(Ordering::Relaxed);
        live.current_forecast(store, cfg, pid).await?;
        if live.lazy_forecasts.load(Ordering::Relaxed) > before {
            live.lazy_forecasts.fetch_sub(1, Ordering::Relaxed);
            live.eager_forecasts.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

impl Live {
    fn record_update(&self, readings: usize, t: [Instant; 4]) {
        for i in 0..3 {
            self.phase_us[i].fetch_add((t[i + 1] - t[i]).as_micros() as u64, Ordering::Relaxed);
        }
        self.readings.fetch_add(readings as u64, Ordering::Relaxed);
        self.updates.fetch_add(1, Ordering::Relaxed);
    }
}

/// Calibrate the twin of a patient without one, once 24 h of CGM are there.
async fn first_fit(
    store: &Store,
    cfg: &ServerConfig,
    pid: &str,
    live: &Live,
) -> Result<(), String> {
    let t_load = Instant::now();
    let row = store.load_twin(pid).await.map_err(|e| e.to_string())?;
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
    let record = record_of(store, pid, i64::MIN).await?;
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
    let (particles, boosted, pid_s) = (cfg.particles, cfg.boosted_forecasts, pid.to_string());
    let t_compute = Instant::now();
    let result = live
        .cpu(move || -> Result<Step, String> {
            let sched = InputSchedule::from_record(&record).ok_or("no CGM")?;
            let settings = TwinSettings {
                n_particles: particles,
                hybrid_boosting: boosted,
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
            let fitted = lifecycle::fit(
                &sched,
                settings,
                SLICE,
                SERVER_STOP_MIN,
                Some(pid_s),
                &mut no_progress,
            );
            let (twin, done) = match fitted {
                Ok(f) => f,
                // the assimilation after the calibration failed: an error, as for updates
                Err(e @ TwinError::Infer(_)) => return Err(e.to_string()),
                // no usable calibration: the twin's status says why (retried on more data)
                Err(e) => return Ok(Step::Failed(e.to_string())),
            };
            let (readings, more) = (done.readings, done.more);
            let data_time_ms = if more {
                ms_of_min(sched.origin().ok_or("twin: bad origin")?, done.until_min)
            } else {
                last_ms
            };
            let json = serde_json::to_string(&twin).map_err(|e| e.to_string())?;
            let cached = Cached::from_doc(&twin, data_time_ms)?;
            Ok(Step::Fitted(
                Update {
                    data_time_ms,
                    twin: Some(json),
                    readings,
                    more,
                },
                Box::new(cached),
            ))
        })
        .await?;
    let t_save = Instant::now();
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
        Step::Fitted(u, cached) => {
            store
                .save_twin(pid, "ok", "", u.data_time_ms, u.twin.as_deref())
                .await
                .map_err(|e| e.to_string())?;

            if let Ok(mut m) = live.cache.lock() {
                if m.len() < cfg.cached_twins {
                    m.insert(pid.to_string(), entry_of(*cached));
                }
            }
            live.record_update(u.readings, [t_load, t_compute, t_save, Instant::now()]);
            live.fits.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut v) = live.fitted.lock() {
                v.push(pid.to_string());
            }
            if u.more {
                live.notify(pid, None); // the rest of its data after the patients waiting
            } else {
                eager_forecast(store, cfg, pid, live).await?;
            }
        }
    }
    Ok(())
}

enum Step {
    Waiting(String),
    Failed(String),
    Fitted(Update, Box<Cached>),
}

/// Validate a what-if request and run it on the twin `doc` (CPU work: call from a blocking
/// task). Errors: `Err((true, reason))` for bad input, `Err((false, reason))` for failures.
pub fn run_whatif(
    pid: &str,
    doc: &Twin,
    req: &WhatifRequest,
) -> Result<WhatifResponse, (bool, String)> {
    let h = req.horizon_min;
    if h == 0 || h > 720 {
        return Err((true, format!("horizon_min {h} must be in 1..=720")));
    }
    if req.plans.is_empty() || req.plans.len() > 8 {
        return Err((true, "give 1 to 8 plans".into()));
    }
    let t0 = doc.t_min;
    let mut plans = Vec::new();
    for (pi, p) in req.plans.iter().enumerate() {
        let plan = p
            .relative()
            .to_plan(t0, h)
            .map_err(|e| (true, api_names(pi, e)))?;
        if !plan.boluses.is_empty() || !plan.basal_rates.is_empty() {
            medtwin_twin::decide::require_insulin_data(
                &doc.schedule,
                &format!("plans[{pi}]: a what-if with an insulin plan"),
            )
            .map_err(|e| (true, e))?;
        }
        plans.push((p.name.clone(), plan));
    }
    let outs = lifecycle::whatif(doc, &plans, h).map_err(|e| match e {
        TwinError::Argument(m) => (true, m),
        e => (false, e.to_string()),
    })?;
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
