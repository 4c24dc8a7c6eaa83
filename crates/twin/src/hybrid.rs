//! Hybrid forecast: the calibrated mechanistic twin plus a data-driven glucose-change model
//! learned online from the patient's own record.
//!
//! # Why
//! On the seven T1D-UOM participants the particle-filtered UVA/Padova twin alone forecasts CGM
//! no better than persistence (pooled RMSE ratio 1.03 at 30 min, 1.07 at 60 min; README,
//! "Backtest"): the model's structure (one virtual population, unrecorded snacks, sensor
//! artefacts) leaves systematic errors a short-horizon forecast pays for. A linear model of the
//! glucose *change* with exogenous inputs (ARX family; e.g. Sparacino et al., IEEE TBME
//! 54:931, 2007; Zecchin et al., IEEE TBME 59:1550, 2012 for insulin and meal inputs), refitted
//! on the patient's own history at every forecast, removes most of them.
//!
//! # What is fitted
//! For each horizon `h` a ridge regression ([`medtwin_infer::ridge::RidgeFit`], penalty
//! [`LAMBDA_PER_ROW`]·n on standardised features) of `CGM(s + h) − CGM(s)` on the
//! [`N_FEATURES`] features of [`features`] at training times `s`: every CGM sample at least
//! [`TRAIN_SPACING_MIN`] min after the previous training time, within the last
//! [`HISTORY_DAYS`] days, whose outcome (a CGM sample within 2.5 min of `s + h`) was recorded at
//! or before the forecast origin. Nothing after the origin is used, so a backtest stays honest.
//! Features: the last CGM and its changes over 5/10/15/30/60/90/120 min, a 20-min least-squares slope and
//! the change of the 15-min change, the deviation from the 24-h mean, hinge terms below
//! 100 mg/dL and above 200 mg/dL (hypoglycaemia treatment and renal loss make the dynamics
//! nonlinear there) and their products with the 15-min change, time of day (sine, cosine),
//! and the recorded inputs through gamma-2 absorption curves `1 − (1 + t/τ)e^{−t/τ}`
//! (τ = [`TAU_CARBS_MIN`] for carbohydrate, [`TAU_INSULIN_MIN`] for bolus insulin): carbohydrate
//! and insulin still to be absorbed within the horizon, and on board. Only inputs recorded at
//! or before the origin enter.
//!
//! With [`crate::TwinSettings::hybrid_boosting`] (the default) the ridge's change is averaged
//! ([`BOOST_WEIGHT`] = ½) with that of gradient-boosted regression trees on the same rows
//! ([`medtwin_infer::boost`], 100 trees of depth 3), which capture what the linear model cannot
//! (glucose-dependent dynamics, interactions of trend and insulin). The trees cost ~50 ms per fit,
//! so each horizon's trees are refitted once a day ([`BoostCache`], [`BOOST_REFIT_MIN`]) from
//! the data known at that refit, and only with at least [`MIN_BOOST_ROWS`] rows. Measured on
//! the seven T1D-UOM participants' whole records (README, "Backtest"), the blend lowers the
//! pooled 60-min RMSE ratio to persistence from 0.855 (ridge alone, offline prototype
//! `benchmarks/twin_hybrid_boost_prototype.py`) to 0.831.
//!
//! # Bands and risks
//! The median is `CGM(origin) + Δ̂_h`, with `Δ̂_h` clamped to the 0.5–99.5 % range of the
//! training changes and the result to the CGM range 40–400 mg/dL. Bands are split-conformal in
//! spirit: the 25/75, 10/90 and 2.5/97.5 % quantiles of the fit's exact leave-block-out
//! residuals (blocks of [`cv_block_rows`], two horizons long: neighbouring rows share their
//! outcome window, and with them left in, leave-one-out residuals gave 80 % bands that
//! covered 0.67 on twins with one day of data) are added to the median (Lei et al., JASA
//! 113:1094, 2018, use held-out residuals the same way). The quantile levels carry the
//! split-conformal finite-sample correction for the number of independent residuals (about one
//! per horizon of training rows; [`conformal_level`], [`effective_residuals`]): negligible with
//! weeks of data, wider bands with one day (80 % coverage 0.74 → 0.81 pooled on seven T1D-UOM
//! twins with one day of data, README "Learning from more data"). Between fitted horizons (every 15 min for long forecasts) values are
//! interpolated linearly from 0 at the origin. P(< 70) and P(> 250) *at any minute* need paths:
//! each of the twin's particle paths is replaced by the hybrid's quantiles at the path's rank
//! (its mean standardised deviation from the twin's median), so every output time has the
//! hybrid's distribution and a path stays as high or low across times as the twin's path was
//! ([`rank_paths_onto_bands`]); the probabilities are taken over those paths. With fewer than [`MIN_TRAIN_ROWS`] training rows for a horizon (the first
//! ~12 h of a record) the mechanistic forecast is returned unchanged.
//!
//! # Plans: the learnt response to planned meals and boluses
//! A plan (what-if, advice, replay of recorded inputs) is an input to the same forecast. With
//! [`crate::TwinSettings::learnt_plan_response`] its meals and boluses act through a learnt
//! model ([`PlanModel`]): for each horizon `h` the change model is refitted on the same training
//! rows with the [`plan_features`] of the inputs recorded in each row's own horizon `(s, s + h]`
//! (carbohydrate and insulin absorbed by `s + h` through two gamma-2 curves each, and their
//! totals; all such inputs were recorded before the origin, so the fit stays honest): a ridge
//! whose plan coefficients are sign-constrained (carbohydrate ≥ 0, insulin ≤ 0; a wrong-signed
//! feature is dropped and the fit repeated) and, with boosting, gradient-boosted trees with
//! monotone constraints on the plan features ([`BoostedTrees::fit_monotone`], cached per day
//! like the plain trees), blended ½ : ½. A plan's effect at horizon `h` is the model with the
//! plan's features minus the model with none, added to the plain forecast: an empty plan has
//! zero effect (the same answer), more insulin never raises and more carbohydrate never lowers
//! the forecast. With fewer than [`MIN_PLAN_EVENTS`] recorded meal boluses nothing is learnt
//! (`None`) and the caller takes the effect from the mechanistic twin. Insulin alone is weakly
//! identified (boluses come with meals), so the setting stays off for advice (README, "Replay
//! validation"). The learnt effect carries no uncertainty of its own: bands keep the plain
//! forecast's widths.
//!
//! # Complete plans
//! A plan can instead be taken as the **complete** list of meals and boluses within the
//! horizon ([`CompletePlan`]; replay of recorded inputs, or "what if exactly this happens and
//! nothing else"). Then each horizon's change model is refitted with the [`plan_features`] of
//! the inputs recorded in each training row's own horizon `(s, s + h]` (so a training row's
//! plan is, like a replayed one, everything that happened) and evaluated at the plan's
//! features: a ridge with the plain model's penalty whose plan coefficients are
//! sign-constrained as above, blended with the monotone boosted trees of the plan layout. Its
//! median and its bands (leave-block-out residuals of that fit, with the finite-sample
//! correction) replace the plain model's, so a replay is scored with bands of its own
//! measured error. An empty complete plan means no meal and no bolus — unlike no plan, whose
//! model averages over the patient's usual inputs. Why this and not an effect added to the
//! plain forecast: the plain model already expects the usual day, so adding the effect of the
//! recorded inputs counts the expected meals twice (offline prototype
//! `benchmarks/twin_replay_prototype.py`: 0.967 / 0.979 / 0.987 × blind RMSE at 30 / 60 /
//! 120 min as an effect, 0.969 / 0.972 / 0.949 as a complete plan, forecasts with an input
//! in the horizon).

use crate::inputs::InputSchedule;
use medtwin_infer::boost::{BoostSettings, BoostedTrees};
use medtwin_infer::ridge::RidgeFit;
use medtwin_infer::{quantile_sorted, Bands, EnsemblePaths, Forecast};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Number of features of [`features`].
pub const N_FEATURES: usize = 21;
/// Ridge penalty per training row on standardised coefficients.
pub const LAMBDA_PER_ROW: f64 = 0.1;
/// Minimum spacing of training times, min.
pub const TRAIN_SPACING_MIN: f64 = 14.0;

/// Rows per left-out block of the bands' cross-validated residuals for horizon `h`: two
/// horizons' worth of training rows (rows closer than `h` share part of their outcome window,
/// so leave-one-out residuals would be optimistic; [`RidgeFit::fit_blocked`]).
pub fn cv_block_rows(h_min: f64) -> usize {
    ((2.0 * h_min / TRAIN_SPACING_MIN).ceil() as usize).max(1)
}
/// Effective number of independent residuals among `n_rows` training rows for horizon `h`:
/// rows closer than one horizon share part of their outcome window, so about one row per
/// horizon carries independent information (`n_rows · TRAIN_SPACING_MIN / max(h,
/// TRAIN_SPACING_MIN)`, at least 1). Used for the finite-sample correction of the bands
/// ([`conformal_level`]).
pub fn effective_residuals(n_rows: usize, h_min: f64) -> f64 {
    (n_rows as f64 * TRAIN_SPACING_MIN / h_min.max(TRAIN_SPACING_MIN)).max(1.0)
}

/// The residual quantile level that gives a band edge at nominal level `p` (0–1) the
/// split-conformal finite-sample guarantee with `n_eff` exchangeable held-out residuals:
/// the `⌈(n + 1)p⌉ / n` order statistic for an upper edge (`p > ½`), and symmetrically
/// `p − (1 − p)/n` for a lower edge, here without rounding (Lei et al., JASA 113:1094, 2018,
/// §2.2; Vovk et al. 2005). With 14 days of data the levels move by < 1 %; with one day (few
/// independent residuals at long horizons) the bands widen, which is what the learning curve
/// measured they need (80 % bands covered 0.74 with one day of data before this correction).
/// Clamped to `[0, 1]` (the extreme residual).
pub fn conformal_level(p: f64, n_eff: f64) -> f64 {
    let n = n_eff.max(1.0);
    let level = if p > 0.5 {
        p + p / n
    } else {
        p - (1.0 - p) / n
    };
    level.clamp(0.0, 1.0)
}

/// History used for training, days.
pub const HISTORY_DAYS: f64 = 60.0;
/// Ridge penalty per training row of the fit behind [`plan_model`]: light, so the
/// coefficients of planned inputs are not shrunk towards zero (only those are used).
pub const PLAN_LAMBDA_PER_ROW: f64 = 0.001;
/// Fewer training rows than this for a horizon: no hybrid forecast.
pub const MIN_TRAIN_ROWS: usize = 50;
/// Fewer training rows than this for a horizon: the ridge alone (no boosted trees); about
/// three days of CGM.
pub const MIN_BOOST_ROWS: usize = 300;
/// Weight of the boosted trees in the blended change (the ridge has `1 − BOOST_WEIGHT`).
pub const BOOST_WEIGHT: f64 = 0.5;
/// A cached boosted model is refitted after this many minutes ([`BoostCache`]).
pub const BOOST_REFIT_MIN: f64 = 1440.0;
/// Carbohydrate absorption time constant of the feature curves, min.
pub const TAU_CARBS_MIN: f64 = 40.0;
/// Bolus-insulin absorption time constant of the feature curves, min.
pub const TAU_INSULIN_MIN: f64 = 70.0;
/// Fewer recorded meal boluses (meals with a bolus within ±30 min) in the training history than
/// this: no learnt response to planned inputs ([`plan_model`]).
pub const MIN_PLAN_EVENTS: usize = 10;
/// Shorter horizons take the learnt response of this horizon, min: within a few minutes too
/// little of a planned input is absorbed for its coefficient to be identified.
pub const MIN_PLAN_HORIZON_MIN: f64 = 30.0;
/// Horizons fitted for long per-minute forecasts, min (then every 15 min).
const GRID_HEAD_MIN: [u32; 4] = [5, 10, 15, 20];

fn cum2(t: f64, tau: f64) -> f64 {
    let x = t.max(0.0) / tau;
    1.0 - (1.0 + x) * (-x).exp()
}

/// Last CGM value at or before `t` (the first sample if none), mg/dL.
fn cgm_at(cgm: &[(f64, f64)], t: f64) -> f64 {
    let i = cgm.partition_point(|c| c.0 <= t);
    cgm[i.saturating_sub(1)].1
}

/// Input effect over `(t, t + h]` and amount on board at `t` of events at or before `t`.
fn absorption(events: &[(f64, f64)], t: f64, h: f64, tau: f64) -> (f64, f64) {
    let i1 = events.partition_point(|e| e.0 <= t);
    let i0 = events.partition_point(|e| e.0 < t - 12.0 * tau);
    let (mut future, mut on_board) = (0.0, 0.0);
    for &(te, v) in &events[i0..i1] {
        let a = cum2(t - te, tau);
        future += v * (cum2(t + h - te, tau) - a);
        on_board += v * (1.0 - a);
    }
    (future, on_board)
}

/// Amount absorbed by `t + h` (gamma-2 curve, time constant `tau` min) of the events in
/// `(t, t + h]` (events time-ordered).
fn absorbed_ahead(events: &[(f64, f64)], t: f64, h: f64, tau: f64) -> f64 {
    let i0 = events.partition_point(|e| e.0 <= t);
    let i1 = events.partition_point(|e| e.0 <= t + h);
    events[i0..i1]
        .iter()
        .map(|&(te, v)| v * cum2(t + h - te, tau))
        .sum()
}

/// Prefix sums of CGM values for 24-h means.
struct CgmIndex<'a> {
    cgm: &'a [(f64, f64)],
    prefix: Vec<f64>,
}

impl<'a> CgmIndex<'a> {
    fn new(cgm: &'a [(f64, f64)]) -> Self {
        let mut prefix = Vec::with_capacity(cgm.len() + 1);
        prefix.push(0.0);
        for c in cgm {
            prefix.push(prefix.last().unwrap_or(&0.0) + c.1);
        }
        CgmIndex { cgm, prefix }
    }
    fn mean_between(&self, t0: f64, t1: f64) -> Option<f64> {
        let i0 = self.cgm.partition_point(|c| c.0 < t0);
        let i1 = self.cgm.partition_point(|c| c.0 <= t1);
        (i1 > i0).then(|| (self.prefix[i1] - self.prefix[i0]) / (i1 - i0) as f64)
    }
    fn slope_per_min(&self, t0: f64, t1: f64) -> f64 {
        let i0 = self.cgm.partition_point(|c| c.0 < t0);
        let i1 = self.cgm.partition_point(|c| c.0 <= t1);
        let s = &self.cgm[i0..i1];
        if s.len() < 3 {
            return 0.0;
        }
        let n = s.len() as f64;
        let tm = s.iter().map(|c| c.0).sum::<f64>() / n;
        let gm = s.iter().map(|c| c.1).sum::<f64>() / n;
        let (mut sxy, mut sxx) = (0.0, 0.0);
        for c in s {
            sxy += (c.0 - tm) * (c.1 - gm);
            sxx += (c.0 - tm).powi(2);
        }
        if sxx > 0.0 {
            sxy / sxx
        } else {
            0.0
        }
    }
}

/// Feature row at time `t` (minutes from the schedule origin) for horizon `h` minutes, from
/// `schedule` data at or before `t` only. Returns the row and the last CGM value (mg/dL).
/// Shape: [`N_FEATURES`] values, in the order of the module documentation.
pub fn features(schedule: &InputSchedule, t: f64, h: f64) -> (Vec<f64>, f64) {
    let (mut row, g) = base_row(schedule, &CgmIndex::new(&schedule.cgm), t);
    set_horizon(&mut row, schedule, t, h);
    (row, g)
}

/// Index of the carbohydrate still to be absorbed within the horizon in a feature row.
const CARB_FUTURE: usize = 4;
/// Index of the bolus insulin still to be absorbed within the horizon in a feature row.
const INSULIN_FUTURE: usize = 5;

/// The horizon-independent features at `t` (the two horizon-dependent ones are 0; see
/// [`set_horizon`]) and the last CGM value.
fn base_row(s: &InputSchedule, idx: &CgmIndex, t: f64) -> (Vec<f64>, f64) {
    let g = cgm_at(&s.cgm, t);
    let g15 = cgm_at(&s.cgm, t - 15.0);
    let g30 = cgm_at(&s.cgm, t - 30.0);
    let g60 = cgm_at(&s.cgm, t - 60.0);
    let (_, cob) = absorption(&s.carbs, t, 0.0, TAU_CARBS_MIN);
    let (_, iob) = absorption(&s.boluses, t, 0.0, TAU_INSULIN_MIN);
    let day = 2.0 * std::f64::consts::PI * (t / 1440.0);
    let mean24 = idx.mean_between(t - 1440.0, t).unwrap_or(g);
    let d15 = g - g15;
    let row = vec![
        g,
        d15,
        g - g30,
        g - g60,
        0.0, // CARB_FUTURE
        0.0, // INSULIN_FUTURE
        cob,
        iob,
        day.sin(),
        day.cos(),
        (100.0 - g).max(0.0),
        (g - 200.0).max(0.0),
        g - mean24,
        idx.slope_per_min(t - 20.0, t),
        d15 * (100.0 - g).max(0.0) / 50.0,
        d15 * (g - 180.0).max(0.0) / 50.0,
        d15 - (g15 - g30),
        g - cgm_at(&s.cgm, t - 5.0),
        g - cgm_at(&s.cgm, t - 10.0),
        g - cgm_at(&s.cgm, t - 90.0),
        g - cgm_at(&s.cgm, t - 120.0),
    ];
    debug_assert_eq!(row.len(), N_FEATURES);
    (row, g)
}

/// Fill the horizon-dependent features of a [`base_row`] at `t` for horizon `h`.
fn set_horizon(row: &mut [f64], s: &InputSchedule, t: f64, h: f64) {
    row[CARB_FUTURE] = absorption(&s.carbs, t, h, TAU_CARBS_MIN).0;
    row[INSULIN_FUTURE] = absorption(&s.boluses, t, h, TAU_INSULIN_MIN).0;
}

/// What one forecast origin needs for every horizon, computed once: the training times (CGM
/// samples at least [`TRAIN_SPACING_MIN`] apart within [`HISTORY_DAYS`] before `t0`) with
/// their horizon-independent features, and the origin's own.
struct Origin<'a> {
    s: &'a InputSchedule,
    t0: f64,
    /// `(time, CGM, base row)` of each training time, in time order.
    train: Vec<(f64, f64, Vec<f64>)>,
    /// Base row at the origin.
    row0: Vec<f64>,
}

impl<'a> Origin<'a> {
    fn new(s: &'a InputSchedule, t0: f64) -> Option<Origin<'a>> {
        let cgm = &s.cgm;
        let idx = CgmIndex::new(cgm);
        let first = cgm.first()?.0;
        let start = (t0 - HISTORY_DAYS * 1440.0).max(first + 60.0);
        let mut train = Vec::new();
        let mut last = f64::NEG_INFINITY;
        for &(ts, gs) in &cgm[cgm.partition_point(|c| c.0 < start)..] {
            if ts > t0 {
                break;
            }
            if ts - last < TRAIN_SPACING_MIN {
                continue;
            }
            last = ts;
            train.push((ts, gs, base_row(s, &idx, ts).0));
        }
        let row0 = base_row(s, &idx, t0).0;
        Some(Origin { s, t0, train, row0 })
    }

    /// Training rows for horizon `h`: features at each training time whose outcome (a CGM
    /// sample within 2.5 min of `ts + h`) was recorded at or before the origin, and the CGM
    /// change to that outcome.
    /// Also returns each row's time.
    fn training(&self, h: f64) -> (Vec<Vec<f64>>, Vec<f64>, Vec<f64>) {
        let (cgm, t0) = (&self.s.cgm, self.t0);
        let (mut x, mut y, mut times) = (Vec::new(), Vec::new(), Vec::new());
        for (ts, gs, base) in &self.train {
            if ts + h > t0 {
                break;
            }
            let j = cgm.partition_point(|c| c.0 < ts + h);
            let Some(&(tj, gj)) = cgm.get(j) else {
                continue;
            };
            if (tj - (ts + h)).abs() > 2.5 || tj > t0 {
                continue;
            }
            let mut row = base.clone();
            set_horizon(&mut row, self.s, *ts, h);
            x.push(row);
            y.push(gj - gs);
            times.push(*ts);
        }
        (x, y, times)
    }

    /// The learnt response to planned inputs over horizon `h` (module docs, "Plans"): the
    /// change model refitted with the [`plan_features`] of the inputs recorded in each training
    /// row's horizon, sign-constrained ridge plus (with `boost`) monotone boosted trees. `None`
    /// with fewer than [`MIN_TRAIN_ROWS`] rows or [`MIN_PLAN_EVENTS`] recorded meal boluses.
    fn plan_model(&self, h: f64, boost: Option<&BoostCache>) -> Option<PlanModel> {
        let (mut x, y, ts) = self.training(h);
        let start = self.train.first().map_or(self.t0, |r| r.0);
        let n_meal_boluses = recorded_carb_ratio(self.s, start, self.t0).1;
        if y.len() < MIN_TRAIN_ROWS || n_meal_boluses < MIN_PLAN_EVENTS {
            return None;
        }
        for (row, &t) in x.iter_mut().zip(&ts) {
            row.extend(plan_features(&self.s.carbs, &self.s.boluses, t, h));
        }
        let ridge_mg_dl = sign_constrained_plan_ridge(&mut x, &y)?;
        let mut row = self.row0.clone();
        set_horizon(&mut row, self.s, self.t0, h);
        row.extend([0.0; N_PLAN_FEATURES]);
        let mut monotone = [0i8; N_FEATURES + N_PLAN_FEATURES];
        monotone[N_FEATURES..].copy_from_slice(&PLAN_MONOTONE);
        let trees = boost.and_then(|c| c.model(h, self.t0, &x, &y, &monotone));
        Some(PlanModel {
            horizon_min: h,
            ridge_mg_dl,
            trees,
            row,
            n_meal_boluses,
            n_train: y.len(),
        })
    }

    /// Fit the change model for horizon `h` and predict at the origin; with `boost`, blend in
    /// the (cached or newly fitted) boosted trees. With a complete plan (module docs,
    /// "Complete plans") the model is the one with [`plan_features`], evaluated at the plan's
    /// features; `boost` must then be a cache of that feature layout.
    fn fit(
        &self,
        h: f64,
        boost: Option<&BoostCache>,
        complete: Option<&CompletePlan>,
    ) -> Option<HorizonModel> {
        let (mut x, y, ts) = self.training(h);
        if y.len() < MIN_TRAIN_ROWS {
            return None;
        }
        let mut row = self.row0.clone();
        set_horizon(&mut row, self.s, self.t0, h);
        let mut monotone = Vec::new();
        if let Some(plan) = complete {
            for (r, &t) in x.iter_mut().zip(&ts) {
                r.extend(plan_features(&self.s.carbs, &self.s.boluses, t, h));
            }
            row.extend(plan_features(plan.meals, plan.boluses, self.t0, h));
            monotone = vec![0i8; N_FEATURES];
            monotone.extend(PLAN_MONOTONE);
        }
        let fit = if complete.is_some() {
            sign_constrained_blocked_ridge(&mut x, &y, cv_block_rows(h))?
        } else {
            RidgeFit::fit_blocked(&x, &y, LAMBDA_PER_ROW, cv_block_rows(h))?
        };
        let mut ys = y.clone();
        ys.sort_by(f64::total_cmp);
        let (lo, hi) = (quantile_sorted(&ys, 0.005), quantile_sorted(&ys, 0.995));
        let ridge = fit.predict(&row);
        let boosted = boost
            .and_then(|c| c.model(h, self.t0, &x, &y, &monotone))
            .map(|m| m.predict(&row));
        let delta = match boosted {
            Some(b) => (1.0 - BOOST_WEIGHT) * ridge + BOOST_WEIGHT * b,
            None => ridge,
        }
        .clamp(lo, hi);
        let mut r = fit.loo_residuals;
        r.sort_by(f64::total_cmp);
        let n_eff = effective_residuals(y.len(), h);
        let q = [0.025, 0.10, 0.25, 0.75, 0.90, 0.975]
            .map(|p| quantile_sorted(&r, conformal_level(p, n_eff)));
        Some(HorizonModel {
            horizon_min: h,
            delta_mg_dl: delta,
            residual_q: q,
            n_train: y.len(),
            boosted: boosted.is_some(),
        })
    }
}

/// Boosted-tree change models of one patient, one per horizon, each reused for
/// [`BOOST_REFIT_MIN`] after its fit (a fit costs tens of milliseconds, the ridge
/// microseconds). A model fitted at `t_fit` has seen only outcomes recorded by `t_fit`, and is
/// used only for origins in `[t_fit, t_fit + BOOST_REFIT_MIN)`, so forecasts stay honest. Keep
/// one cache per patient (e.g. in its [`crate::TwinEngine`]); it is thread-safe.
#[derive(Debug, Default)]
pub struct BoostCache(Mutex<BTreeMap<u32, (f64, BoostedTrees)>>);

impl BoostCache {
    /// The cached (or newly fitted, with monotone constraints `monotone` as in
    /// [`BoostedTrees::fit_monotone`]) model of the change over horizon `h` for an origin at
    /// `t0`, refitted on the training rows `x`, `y` (outcomes known at `t0`) when the cached
    /// model for `h` is missing, older than [`BOOST_REFIT_MIN`] or fitted after `t0`. `None`
    /// with fewer than [`MIN_BOOST_ROWS`] rows (and no valid cached model). A cache holds
    /// models of one feature layout.
    fn model(
        &self,
        h: f64,
        t0: f64,
        x: &[Vec<f64>],
        y: &[f64],
        monotone: &[i8],
    ) -> Option<BoostedTrees> {
        let key = h.round() as u32;
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((t_fit, m)) = map.get(&key) {
            if *t_fit <= t0 && t0 - t_fit < BOOST_REFIT_MIN {
                return Some(m.clone());
            }
        }
        map.remove(&key);
        if y.len() < MIN_BOOST_ROWS {
            return None;
        }
        let m = BoostedTrees::fit_monotone(x, y, &BoostSettings::default(), monotone)?;
        map.insert(key, (t0, m.clone()));
        Some(m)
    }

    /// Number of cached models.
    pub fn len(&self) -> usize {
        self.0.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// True when no model is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The hybrid model for one horizon, fitted at one origin.
#[derive(Debug, Clone)]
pub struct HorizonModel {
    /// Horizon, min.
    pub horizon_min: f64,
    /// Predicted change from the last CGM, mg/dL (clamped).
    pub delta_mg_dl: f64,
    /// Leave-block-out residual quantiles at the finite-sample corrected levels of the 2.5, 10,
    /// 25, 75, 90, 97.5 % band edges ([`conformal_level`]), mg/dL.
    pub residual_q: [f64; 6],
    /// Training rows.
    pub n_train: usize,
    /// Whether the boosted trees were blended in.
    pub boosted: bool,
}

/// Fit the change model for horizon `h` at origin `t0` and predict (with `boost`, blended
/// with the boosted trees of that cache). `None` with fewer than [`MIN_TRAIN_ROWS`] usable
/// training rows or a singular fit.
pub fn fit_horizon(
    schedule: &InputSchedule,
    t0: f64,
    h: f64,
    boost: Option<&BoostCache>,
) -> Option<HorizonModel> {
    Origin::new(schedule, t0)?.fit(h, boost, None)
}

/// [`fit_horizon`] for a complete plan (module docs, "Complete plans"): the change model with
/// the plan features, evaluated at `plan`'s; `boost` must be a cache of that feature layout
/// (not one shared with [`fit_horizon`]). `None` as for [`fit_horizon`].
pub fn fit_horizon_complete(
    schedule: &InputSchedule,
    t0: f64,
    h: f64,
    boost: Option<&BoostCache>,
    plan: &CompletePlan,
) -> Option<HorizonModel> {
    Origin::new(schedule, t0)?.fit(h, boost, Some(plan))
}

/// The patient's own carbohydrate ratio from the record: the median of carbohydrate / bolus
/// over the meals in `(from, to]` with a bolus within ±30 min (the boluses within that window
/// summed), g/U, and the number of such meals. `None` without any.
pub fn recorded_carb_ratio(s: &InputSchedule, from: f64, to: f64) -> (Option<f64>, usize) {
    let mut r: Vec<f64> = s
        .carbs
        .iter()
        .filter(|m| m.0 > from && m.0 <= to && m.1 > 0.0)
        .filter_map(|m| {
            let u: f64 = s
                .boluses
                .iter()
                .filter(|b| (b.0 - m.0).abs() <= 30.0)
                .map(|b| b.1)
                .sum();
            (u > 0.0).then(|| m.1 / u)
        })
        .collect();
    r.sort_by(f64::total_cmp);
    let n = r.len();
    ((n > 0).then(|| quantile_sorted(&r, 0.5)), n)
}

/// Number of [`plan_features`].
pub const N_PLAN_FEATURES: usize = 6;
/// Monotone direction of each plan feature: carbohydrate never lowers (+1), insulin never
/// raises (−1) the learnt change.
const PLAN_MONOTONE: [i8; N_PLAN_FEATURES] = [1, 1, 1, -1, -1, -1];

/// Features of the inputs in `(t, t + h]` (`meals` in g, `boluses` in U, each `(t_min,
/// amount)` in time order): carbohydrate absorbed by `t + h` through gamma-2 curves of time
/// constant [`TAU_CARBS_MIN`] and half of it, the carbohydrate total; the same three for bolus
/// insulin ([`TAU_INSULIN_MIN`], g → U). Shape: [`N_PLAN_FEATURES`]; all zero without inputs.
pub fn plan_features(
    meals: &[(f64, f64)],
    boluses: &[(f64, f64)],
    t: f64,
    h: f64,
) -> [f64; N_PLAN_FEATURES] {
    let total = |e: &[(f64, f64)]| -> f64 {
        let (i0, i1) = (
            e.partition_point(|v| v.0 <= t),
            e.partition_point(|v| v.0 <= t + h),
        );
        e[i0..i1].iter().map(|v| v.1).sum()
    };
    [
        absorbed_ahead(meals, t, h, TAU_CARBS_MIN),
        absorbed_ahead(meals, t, h, 0.5 * TAU_CARBS_MIN),
        total(meals),
        absorbed_ahead(boluses, t, h, TAU_INSULIN_MIN),
        absorbed_ahead(boluses, t, h, 0.5 * TAU_INSULIN_MIN),
        total(boluses),
    ]
}

/// Ridge of the change on rows whose last [`N_PLAN_FEATURES`] columns are plan features, with
/// their coefficients sign-constrained (carbohydrate ≥ 0, insulin ≤ 0): a feature whose
/// coefficient comes out with the wrong sign is zeroed in `x` and the fit repeated (an active
/// set, at most [`N_PLAN_FEATURES`] refits). Returns the plan features' coefficients, mg/dL
/// per feature unit; `None` for a singular fit.
fn sign_constrained_plan_ridge(x: &mut [Vec<f64>], y: &[f64]) -> Option<[f64; N_PLAN_FEATURES]> {
    loop {
        let fit = RidgeFit::fit(x, y, PLAN_LAMBDA_PER_ROW)?;
        let coef: [f64; N_PLAN_FEATURES] =
            std::array::from_fn(|k| fit.coef[N_FEATURES + k] / fit.sd[N_FEATURES + k]);
        let wrong = (0..N_PLAN_FEATURES).find(|&k| coef[k] * f64::from(PLAN_MONOTONE[k]) < 0.0);
        match wrong {
            None => return Some(coef),
            Some(k) => x.iter_mut().for_each(|r| r[N_FEATURES + k] = 0.0),
        }
    }
}

/// The change model of a complete plan (module docs, "Complete plans"): ridge with penalty
/// [`LAMBDA_PER_ROW`] and leave-block-out residuals (blocks of `block` rows) on rows whose last
/// [`N_PLAN_FEATURES`] columns are plan features, those coefficients sign-constrained
/// (carbohydrate ≥ 0, insulin ≤ 0): every feature whose coefficient comes out with the wrong
/// sign is zeroed in `x` and the fit repeated until none is (an active set; a zeroed, constant
/// column gets coefficient 0, so the origin's value of it has no effect). The active set is
/// found with plain fits; only the final fit computes the leave-block-out residuals. `None`
/// for a singular fit.
fn sign_constrained_blocked_ridge(x: &mut [Vec<f64>], y: &[f64], block: usize) -> Option<RidgeFit> {
    loop {
        let fit = RidgeFit::fit(x, y, LAMBDA_PER_ROW)?;
        let wrong: Vec<usize> = (0..N_PLAN_FEATURES)
            .filter(|&k| fit.coef[N_FEATURES + k] * f64::from(PLAN_MONOTONE[k]) < 0.0)
            .collect();
        if wrong.is_empty() {
            return RidgeFit::fit_blocked(x, y, LAMBDA_PER_ROW, block);
        }
        for r in x.iter_mut() {
            wrong.iter().for_each(|&k| r[N_FEATURES + k] = 0.0);
        }
    }
}

/// A copy of timed events `(t_min, amount)` in time order (stable for equal times), as
/// [`plan_features`] and [`CompletePlan`] need them.
pub fn sorted_by_time(events: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut v = events.to_vec();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v
}

/// A plan taken as the **complete** list of meals and boluses within the forecast horizon
/// (module docs, "Complete plans"): replay of recorded inputs, or "what if exactly this happens
/// and nothing else". Times are absolute minutes, amounts g and U, each list in time order.
#[derive(Debug, Clone, Copy)]
pub struct CompletePlan<'a> {
    /// Meals `(t_min, g)`.
    pub meals: &'a [(f64, f64)],
    /// Boluses `(t_min, U)`.
    pub boluses: &'a [(f64, f64)],
}

/// The learnt response to planned inputs at one horizon, fitted at one origin (module docs,
/// "Plans").
#[derive(Debug, Clone)]
pub struct PlanModel {
    /// Horizon, min.
    pub horizon_min: f64,
    /// Sign-constrained ridge coefficients of the [`plan_features`], mg/dL per feature unit
    /// (g or U).
    pub ridge_mg_dl: [f64; N_PLAN_FEATURES],
    /// Monotone boosted trees on the base features and the plan features (`None` with fewer
    /// than [`MIN_BOOST_ROWS`] rows or without a cache).
    trees: Option<BoostedTrees>,
    /// The origin's feature row with zero plan features.
    row: Vec<f64>,
    /// Meals with a bolus within ±30 min in the training history.
    pub n_meal_boluses: usize,
    /// Training rows.
    pub n_train: usize,
}

impl PlanModel {
    /// Learnt change caused by plan features `f` (vs none), mg/dL: the ridge part and, when
    /// fitted, the trees' difference with and without `f`, blended with [`BOOST_WEIGHT`].
    /// Monotone: non-decreasing in every carbohydrate feature, non-increasing in every
    /// insulin feature; zero for zero features.
    pub fn effect(&self, f: &[f64; N_PLAN_FEATURES]) -> f64 {
        let ridge: f64 = self.ridge_mg_dl.iter().zip(f).map(|(c, v)| c * v).sum();
        match &self.trees {
            Some(t) => {
                let mut with = self.row.clone();
                with[N_FEATURES..].copy_from_slice(f);
                (1.0 - BOOST_WEIGHT) * ridge
                    + BOOST_WEIGHT * (t.predict(&with) - t.predict(&self.row))
            }
            None => ridge,
        }
    }
}

/// Fit the learnt response to planned inputs for horizon `h` at origin `t0` from `schedule`
/// (data at or before `t0` are used), with boosted trees from `boost` (a cache used only for
/// plan models). `None` as for [`PlanResponses::fit`].
pub fn plan_model(
    schedule: &InputSchedule,
    t0: f64,
    h: f64,
    boost: Option<&BoostCache>,
) -> Option<PlanModel> {
    Origin::new(schedule, t0)?.plan_model(h, boost)
}

/// The learnt responses to planned inputs for one forecast (origin and output times): fitted
/// once, applied to any number of plans ([`PlanResponses::effect`]).
#[derive(Debug, Clone)]
pub struct PlanResponses {
    /// Forecast origin, min.
    pub t0_min: f64,
    /// Horizons fitted, min (the forecast's horizon grid).
    pub grid_min: Vec<f64>,
    /// The model at each grid horizon (horizons under [`MIN_PLAN_HORIZON_MIN`] hold that
    /// horizon's model).
    pub models: Vec<PlanModel>,
}

impl PlanResponses {
    /// Fit the responses on `schedule` (data at or before `t0` are used) for forecast times
    /// `times` (absolute minutes after `t0`), trees from `boost` (a cache for plan models
    /// only). `None` when a needed horizon cannot be fitted or the history holds fewer than
    /// [`MIN_PLAN_EVENTS`] meal boluses: the caller then uses the mechanistic twin's effect.
    pub fn fit(
        schedule: &InputSchedule,
        t0: f64,
        times: &[f64],
        boost: Option<&BoostCache>,
    ) -> Option<PlanResponses> {
        let origin = Origin::new(schedule, t0)?;
        let grid_min = horizon_grid(t0, times);
        let mut cache: BTreeMap<u32, PlanModel> = BTreeMap::new();
        let mut models = Vec::with_capacity(grid_min.len());
        for &h in &grid_min {
            let hf = h.max(MIN_PLAN_HORIZON_MIN);
            let key = hf.round() as u32;
            let m = match cache.get(&key) {
                Some(m) => m.clone(),
                None => {
                    let m = origin.plan_model(hf, boost)?;
                    cache.insert(key, m.clone());
                    m
                }
            };
            models.push(m);
        }
        Some(PlanResponses {
            t0_min: t0,
            grid_min,
            models,
        })
    }

    /// The learnt effect of planned meals `meals` (`(t_min, g)`) and boluses `boluses`
    /// (`(t_min, U)`) on the CGM at each of `times` (absolute minutes after the origin; the
    /// times the responses were fitted for), mg/dL, one value per time: the [`plan_features`]
    /// of the plan at that time's horizon through the grid models on either side, interpolated
    /// linearly. Zero for an empty plan; monotone in every planned amount.
    pub fn effect(&self, times: &[f64], meals: &[(f64, f64)], boluses: &[(f64, f64)]) -> Vec<f64> {
        let (meals, boluses) = (sorted_by_time(meals), sorted_by_time(boluses));
        let (grid, t0) = (&self.grid_min, self.t0_min);
        times
            .iter()
            .map(|&t| {
                let h = t - t0;
                let f = plan_features(&meals, &boluses, t0, h);
                if f.iter().all(|&v| v == 0.0) {
                    return 0.0;
                }
                let k = grid.partition_point(|&g| g < h);
                match (k.checked_sub(1), self.models.get(k)) {
                    (Some(j), Some(m1)) => {
                        let w = ((h - grid[j]) / (grid[k] - grid[j])).clamp(0.0, 1.0);
                        (1.0 - w) * self.models[j].effect(&f) + w * m1.effect(&f)
                    }
                    (None, Some(m1)) => m1.effect(&f),
                    (Some(j), None) => self.models[j].effect(&f),
                    (None, None) => 0.0,
                }
            })
            .collect()
    }
}

/// [`PlanResponses::fit`] (trees from `boost`) then [`PlanResponses::effect`] for one plan.
pub fn learnt_plan_effect(
    schedule: &InputSchedule,
    t0: f64,
    times: &[f64],
    meals: &[(f64, f64)],
    boluses: &[(f64, f64)],
    boost: Option<&BoostCache>,
) -> Option<Vec<f64>> {
    Some(PlanResponses::fit(schedule, t0, times, boost)?.effect(times, meals, boluses))
}

/// Horizons to fit for forecast times `times` from origin `t0`: the distinct whole-minute
/// horizons if there are at most 12, else 5, 10, 15, 20 and every 15 min to the last.
fn horizon_grid(t0: f64, times: &[f64]) -> Vec<f64> {
    let mut hs: Vec<u32> = times
        .iter()
        .map(|t| (t - t0).round().max(1.0) as u32)
        .collect();
    hs.sort_unstable();
    hs.dedup();
    if hs.len() <= 12 {
        return hs.into_iter().map(f64::from).collect();
    }
    let hmax = *hs.last().unwrap_or(&60);
    let mut g: Vec<u32> = GRID_HEAD_MIN.to_vec();
    let mut h = 30;
    while h < hmax {
        g.push(h);
        h += 15;
    }
    g.push(hmax);
    g.retain(|&v| v <= hmax);
    g.dedup();
    g.into_iter().map(f64::from).collect()
}

/// Linear interpolation of the fitted horizons at horizon `h` (0 at the origin), giving
/// (Δ, residual quantiles).
fn interpolate(models: &[HorizonModel], h: f64) -> (f64, [f64; 6]) {
    let k = models.partition_point(|m| m.horizon_min < h);
    let (h0, d0, q0) = if k == 0 {
        (0.0, 0.0, [0.0; 6])
    } else {
        let m = &models[k - 1];
        (m.horizon_min, m.delta_mg_dl, m.residual_q)
    };
    let Some(m1) = models.get(k) else {
        let m = models.last().expect("non-empty");
        return (m.delta_mg_dl, m.residual_q);
    };
    let w = if m1.horizon_min > h0 {
        ((h - h0) / (m1.horizon_min - h0)).clamp(0.0, 1.0)
    } else {
        1.0
    };
    let mut q = [0.0; 6];
    for i in 0..6 {
        q[i] = q0[i] + w * (m1.residual_q[i] - q0[i]);
    }
    (d0 + w * (m1.delta_mg_dl - d0), q)
}

/// Replace each path by the hybrid's quantiles at the path's rank: path `i`'s rank `uᵢ` is the
/// weighted mid-rank of its mean standardised deviation from the twin's median (deviation over
/// the twin's 80 % width, averaged over the output times), and its value at time `k` is the
/// hybrid's quantile function at `uᵢ` (linear through the 2.5/10/25/50/75/90/97.5 % band
/// values, extended linearly beyond them, within 40–400 mg/dL). Each output time keeps the
/// hybrid's marginal distribution; across times a path keeps its rank (CGM error is strongly
/// autocorrelated over two hours), so P(< 70 at any time) is not inflated by white noise drawn
/// independently at every time: with the twin's own path shapes instead, the backtest's
/// P(< 70 within 120 min) averaged 0.19 against an observed 0.12 (README, "Calibrated risks").
fn rank_paths_onto_bands(paths: &mut EnsemblePaths, twin: &[Bands], bands: &[Bands]) {
    let n = paths.paths.len();
    let score: Vec<f64> = paths
        .paths
        .iter()
        .map(|p| {
            p.iter()
                .zip(twin)
                .map(|(v, tw)| (v - tw.median) / (tw.hi80 - tw.lo80).max(1e-9))
                .sum::<f64>()
                / p.len().max(1) as f64
        })
        .collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| score[a].total_cmp(&score[b]).then(a.cmp(&b)));
    let total: f64 = paths.weights.iter().sum::<f64>().max(1e-300);
    let mut u = vec![0.5; n];
    let mut below = 0.0;
    for &i in &order {
        let w = paths.weights[i] / total;
        u[i] = (below + 0.5 * w).clamp(1e-6, 1.0 - 1e-6);
        below += w;
    }
    const P: [f64; 7] = [0.025, 0.10, 0.25, 0.5, 0.75, 0.90, 0.975];
    for (k, b) in bands.iter().enumerate() {
        let v = [b.lo95, b.lo80, b.lo50, b.median, b.hi50, b.hi80, b.hi95];
        for (p, &ui) in paths.paths.iter_mut().zip(&u) {
            let j = P.partition_point(|&q| q < ui).clamp(1, P.len() - 1);
            let slope = (v[j] - v[j - 1]) / (P[j] - P[j - 1]);
            p[k] = (v[j - 1] + slope * (ui - P[j - 1])).clamp(40.0, 400.0);
        }
    }
}

/// Combine the twin's predictive paths `paths` (at `paths.t_min`, from origin `t0`; `twin`
/// their bands) with the hybrid change models fitted on `schedule` (data at or before `t0`).
/// Horizons of the grid that cannot be fitted (no CGM sample within 2.5 min of `s + h` on a
/// 15-min CGM, too few rows) are interpolated over. Returns `None`, leaving `paths` untouched,
/// if no horizon within 15 min of the longest can be fitted (the caller then keeps the
/// mechanistic forecast); otherwise the paths are replaced in place by
/// the hybrid's quantiles at each path's rank ([`rank_paths_onto_bands`]). `(low_mg_dl,
/// high_mg_dl)` are the thresholds of the forecast's P(below) and P(above). With `complete`,
/// every horizon's model is the complete-plan model (module docs, "Complete plans"; `boost`
/// must then be the cache of that feature layout, e.g. [`crate::TwinEngine::plan_boost`]).
pub fn hybrid_forecast(
    schedule: &InputSchedule,
    t0: f64,
    paths: &mut EnsemblePaths,
    twin: &[Bands],
    (low_mg_dl, high_mg_dl): (f64, f64),
    boost: Option<&BoostCache>,
    complete: Option<&CompletePlan>,
) -> Option<Forecast> {
    if paths.t_min.is_empty() || twin.len() != paths.t_min.len() {
        return None;
    }
    let origin = Origin::new(schedule, t0)?;
    let grid = horizon_grid(t0, &paths.t_min);
    let hmax = *grid.last()?;
    // horizons without training outcomes (e.g. 5 and 10 min on a 15-min CGM) are skipped and
    // interpolated over; the longest must be fitted, or one within 15 min of it
    let models: Vec<HorizonModel> = grid
        .into_iter()
        .filter_map(|h| origin.fit(h, boost, complete))
        .collect();
    if models.last()?.horizon_min < hmax - 15.0 {
        return None;
    }
    let g0 = cgm_at(&schedule.cgm, t0);
    let bands: Vec<Bands> = paths
        .t_min
        .iter()
        .map(|&t| {
            let (d, q) = interpolate(&models, t - t0);
            let med = (g0 + d).clamp(40.0, 400.0);
            let c = |v: f64| (med + v).clamp(40.0, 400.0);
            Bands {
                median: med,
                lo50: c(q[2]),
                hi50: c(q[3]),
                lo80: c(q[1]),
                hi80: c(q[4]),
                lo95: c(q[0]),
                hi95: c(q[5]),
            }
        })
        .collect();
    rank_paths_onto_bands(paths, twin, &bands);
    Some(paths.forecast_with_bands(bands, low_mg_dl, high_mg_dl))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A synthetic record where glucose follows a known linear response to carbohydrate and
    /// insulin plus a daily rhythm: the hybrid must beat persistence clearly, use no data
    /// after the origin, and cover about 80 % with its 80 % band.
    fn synthetic(days: f64) -> InputSchedule {
        synthetic_with(days, false)
    }

    /// [`synthetic`]; with `varied`, boluses are given 0–40 min after the meal with
    /// carbohydrate ratios of 6–14 g/U (median 10, the record's true 30/3), and a correction bolus some evenings, so carbohydrate
    /// and insulin responses can be told apart.
    fn synthetic_with(days: f64, varied: bool) -> InputSchedule {
        let mut s = InputSchedule {
            origin_utc: "2024-01-01T00:00:00Z".into(),
            ..InputSchedule::default()
        };
        let n = (days * 1440.0 / 5.0) as usize;
        for d in 0..days as usize {
            for (m, (hh, g)) in [(7.5, 50.0), (12.5, 70.0), (19.0, 80.0)]
                .into_iter()
                .enumerate()
            {
                let t = d as f64 * 1440.0 + hh * 60.0;
                s.carbs.push((t, g));
                if varied {
                    let k = (3 * d + m) % 5;
                    s.boluses
                        .push((t + 10.0 * k as f64, g / (8.0 + 2.0 * k as f64)));
                } else {
                    s.boluses.push((t, g / 12.0));
                }
            }
            if varied && d % 2 == 1 {
                s.boluses.push((d as f64 * 1440.0 + 22.5 * 60.0, 1.5));
            }
        }
        s.boluses.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut state = 0u64;
        for k in 0..=n {
            let t = k as f64 * 5.0;
            // glucose = 120 + 3·(absorbed carbs) − 36·(absorbed insulin) over the last 4 h
            let mut g = 120.0 + 20.0 * (2.0 * std::f64::consts::PI * t / 1440.0).sin();
            for &(te, v) in &s.carbs {
                if te <= t {
                    g += 3.0 * v * (cum2(t - te, TAU_CARBS_MIN) - cum2(t - te - 240.0, 80.0));
                }
            }
            for &(te, v) in &s.boluses {
                if te <= t {
                    g -= 30.0 * v * (cum2(t - te, TAU_INSULIN_MIN) - cum2(t - te - 300.0, 90.0));
                }
            }
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
            s.cgm.push((t, g + 8.0 * u));
        }
        s
    }

    #[test]
    fn beats_persistence_on_a_learnable_record_without_looking_ahead() {
        let s = synthetic(6.0);
        let (mut se_h, mut se_p, mut inside, mut n) = (0.0, 0.0, 0, 0);
        let mut t0 = 2.0 * 1440.0;
        while t0 < 5.5 * 1440.0 {
            let m = fit_horizon(&s, t0, 60.0, Some(&BoostCache::default())).expect("history");
            assert_eq!(m.boosted, m.n_train >= MIN_BOOST_ROWS);
            // the fit at t0 is unchanged when data after t0 are removed
            let cut = s.truncated(t0);
            let m2 = fit_horizon(&cut, t0, 60.0, Some(&BoostCache::default())).unwrap();
            assert_eq!(m.delta_mg_dl, m2.delta_mg_dl);
            let g0 = cgm_at(&s.cgm, t0);
            let obs = cgm_at(&s.cgm, t0 + 60.0);
            let pred = g0 + m.delta_mg_dl;
            se_h += (pred - obs).powi(2);
            se_p += (g0 - obs).powi(2);
            if obs >= pred + m.residual_q[1] && obs <= pred + m.residual_q[4] {
                inside += 1;
            }
            n += 1;
            t0 += 55.0;
        }
        let ratio = (se_h / se_p).sqrt();
        let cov = inside as f64 / n as f64;
        assert!(ratio < 0.6, "RMSE ratio to persistence {ratio}");
        assert!((0.65..=0.95).contains(&cov), "80 % coverage {cov}");
        assert!(
            fit_horizon(&s, 300.0, 60.0, None).is_none(),
            "too little history"
        );
    }

    /// A cached boosted model is reused within a day of its fit (and so ignores data after
    /// its fit time), refitted after [`BOOST_REFIT_MIN`] and never used before its fit time.
    #[test]
    fn boosted_models_are_cached_for_a_day_and_never_look_ahead() {
        let s = synthetic(6.0);
        let cache = BoostCache::default();
        let t_fit = 4.0 * 1440.0;
        let a = fit_horizon(&s, t_fit, 60.0, Some(&cache)).unwrap();
        assert!(a.boosted);
        assert_eq!(cache.len(), 1);
        // 6 h later the cached model is used: the result equals a fit whose boosted part
        // saw only data up to t_fit (the ridge part is refitted at the origin)
        let t1 = t_fit + 360.0;
        let b = fit_horizon(&s, t1, 60.0, Some(&cache)).unwrap();
        let fresh = BoostCache::default();
        fit_horizon(&s.truncated(t_fit), t_fit, 60.0, Some(&fresh)).unwrap();
        let c = fit_horizon(&s, t1, 60.0, Some(&fresh)).unwrap();
        assert_eq!(b.delta_mg_dl, c.delta_mg_dl);
        let d = fit_horizon(&s, t1, 60.0, Some(&BoostCache::default())).unwrap();
        assert_ne!(b.delta_mg_dl, d.delta_mg_dl, "a refit at t1 sees more data");
        // a day later, or before the fit time, the model is refitted at the origin
        for t in [t_fit + BOOST_REFIT_MIN + 5.0, t_fit - 600.0] {
            let e = fit_horizon(&s, t, 60.0, Some(&cache)).unwrap();
            let f = fit_horizon(&s, t, 60.0, Some(&BoostCache::default())).unwrap();
            assert_eq!(e.delta_mg_dl, f.delta_mg_dl);
        }
    }

    /// The learnt response to planned inputs recovers the record's true response (+3 mg/dL
    /// per g and −30 mg/dL per U absorbed within the horizon) for a planned meal and for a
    /// meal with its bolus (insulin alone only by sign: on this record, as on real ones,
    /// boluses come with meals), sees no data after the origin, and learns nothing from a
    /// CGM-only record.
    #[test]
    fn plan_model_recovers_the_true_input_response() {
        let s = synthetic_with(8.0, true);
        let t0 = 7.0 * 1440.0 + 6.0 * 60.0;
        let boost = BoostCache::default();
        let m = plan_model(&s, t0, 60.0, Some(&boost)).expect("history");
        let (carbs, insulin) = (
            3.0 * 40.0 * cum2(55.0, TAU_CARBS_MIN),
            -30.0 * 3.0 * cum2(55.0, TAU_INSULIN_MIN),
        );
        let meal = vec![(t0 + 5.0, 40.0)];
        let bolus = vec![(t0 + 5.0, 3.0)];
        for (meals, boluses, truth) in [(&meal, &vec![], carbs), (&meal, &bolus, carbs + insulin)] {
            let e = m.effect(&plan_features(meals, boluses, t0, 60.0));
            assert!(
                (e - truth).abs() < 0.3 * truth.abs(),
                "effect {e} vs {truth}"
            );
        }
        // insulin alone: the right sign; its size is confounded (boluses come with meals)
        let e = m.effect(&plan_features(&[], &bolus, t0, 60.0));
        assert!(
            e < 0.0 && e > 1.5 * insulin,
            "insulin effect {e} vs {insulin}"
        );
        let cut = plan_model(&s.truncated(t0), t0, 60.0, None).unwrap();
        let all = plan_model(&s, t0, 60.0, None).unwrap();
        assert_eq!(
            (cut.ridge_mg_dl, cut.n_train),
            (all.ridge_mg_dl, all.n_train)
        );
        let cgm_only = InputSchedule {
            cgm: s.cgm.clone(),
            ..InputSchedule::default()
        };
        assert!(plan_model(&cgm_only, t0, 60.0, None).is_none());
        let times: Vec<f64> = (1..=120).map(|k| t0 + k as f64).collect();
        assert!(
            learnt_plan_effect(&cgm_only, t0, &times, &[(t0 + 5.0, 40.0)], &[], None).is_none()
        );
    }

    /// Planned inputs: an empty plan is zero effect; more insulin never raises and more
    /// carbohydrate never lowers; telling the forecast the recorded meal and bolus beats not
    /// telling it.
    #[test]
    fn complete_plan_replay_beats_blind_is_monotone_and_has_its_own_bands() {
        let s = synthetic_with(8.0, true);
        let (mut se_blind, mut se_told, mut n) = (0.0, 0.0, 0);
        let (boost, plan_boost) = (BoostCache::default(), BoostCache::default());
        for d in 5..8 {
            for hh in [7.5, 12.5, 19.0] {
                let t0 = d as f64 * 1440.0 + hh * 60.0 - 20.0;
                let within = |e: &[(f64, f64)]| -> Vec<(f64, f64)> {
                    e.iter()
                        .filter(|e| e.0 > t0 && e.0 <= t0 + 120.0)
                        .copied()
                        .collect()
                };
                let (meals, boluses) = (within(&s.carbs), within(&s.boluses));
                let seen = s.truncated(t0);
                let fit = |m: &[(f64, f64)], b: &[(f64, f64)]| {
                    let plan = CompletePlan {
                        meals: m,
                        boluses: b,
                    };
                    fit_horizon_complete(&seen, t0, 120.0, Some(&plan_boost), &plan).unwrap()
                };
                let told = fit(&meals, &boluses);
                let more_carbs: Vec<(f64, f64)> = meals.iter().map(|m| (m.0, m.1 + 20.0)).collect();
                let more_insulin: Vec<(f64, f64)> =
                    boluses.iter().map(|b| (b.0, b.1 + 2.0)).collect();
                assert!(fit(&more_carbs, &boluses).delta_mg_dl >= told.delta_mg_dl);
                assert!(fit(&meals, &more_insulin).delta_mg_dl <= told.delta_mg_dl);
                // the bands are the complete-plan model's own residuals: narrower than the
                // blind model's, which cannot know the meal
                let blind = fit_horizon(&seen, t0, 120.0, Some(&boost)).unwrap();
                assert!(
                    told.residual_q[4] - told.residual_q[1]
                        < blind.residual_q[4] - blind.residual_q[1]
                );
                let (g0, obs) = (cgm_at(&s.cgm, t0), cgm_at(&s.cgm, t0 + 120.0));
                se_blind += (g0 + blind.delta_mg_dl - obs).powi(2);
                se_told += (g0 + told.delta_mg_dl - obs).powi(2);
                n += 1;
            }
        }
        let (rb, rt) = ((se_blind / n as f64).sqrt(), (se_told / n as f64).sqrt());
        assert!(rt < 0.5 * rb, "complete-plan RMSE {rt} vs blind {rb}");
    }

    #[test]
    fn learnt_plan_effect_is_monotone_and_improves_replay() {
        let s = synthetic_with(8.0, true);
        let (mut se_blind, mut se_told, mut n) = (0.0, 0.0, 0);
        let boost = BoostCache::default();
        for d in 5..8 {
            for hh in [7.5, 12.5, 19.0] {
                let t0 = d as f64 * 1440.0 + hh * 60.0 - 20.0;
                let times: Vec<f64> = (1..=120).map(|k| t0 + k as f64).collect();
                let within = |e: &[(f64, f64)]| -> Vec<(f64, f64)> {
                    e.iter()
                        .filter(|e| e.0 > t0 && e.0 <= t0 + 120.0)
                        .copied()
                        .collect()
                };
                let (meals, boluses) = (within(&s.carbs), within(&s.boluses));
                let seen = s.truncated(t0);
                let r = PlanResponses::fit(&seen, t0, &times, Some(&boost)).unwrap();
                assert_eq!(r.effect(&times, &[], &[]), vec![0.0; 120]);
                let told = r.effect(&times, &meals, &boluses);
                let eb = r.effect(&times, &[], &boluses);
                let more: Vec<(f64, f64)> = boluses.iter().map(|b| (b.0, b.1 + 2.0)).collect();
                let eb2 = r.effect(&times, &[], &more);
                let em = r.effect(&times, &meals, &[]);
                let more_carbs: Vec<(f64, f64)> = meals.iter().map(|m| (m.0, m.1 + 20.0)).collect();
                let em2 = r.effect(&times, &more_carbs, &[]);
                for k in 0..120 {
                    assert!(
                        eb2[k] <= eb[k] && eb[k] <= 0.0,
                        "insulin effect at {k}: {} {}",
                        eb2[k],
                        eb[k]
                    );
                    assert!(
                        em2[k] >= em[k] && em[k] >= 0.0,
                        "carbohydrate effect at {k}"
                    );
                }
                let m = fit_horizon(&seen, t0, 120.0, None).unwrap();
                let blind = cgm_at(&s.cgm, t0) + m.delta_mg_dl;
                let obs = cgm_at(&s.cgm, t0 + 120.0);
                se_blind += (blind - obs).powi(2);
                se_told += (blind + told[119] - obs).powi(2);
                n += 1;
            }
        }
        let (rb, rt) = ((se_blind / n as f64).sqrt(), (se_told / n as f64).sqrt());
        assert!(rt < 0.7 * rb, "replay RMSE {rt} vs blind {rb}");
    }

    /// Paths ranked onto the hybrid's bands reproduce the bands at every time and keep each
    /// path's rank across times.
    #[test]
    fn ranked_paths_have_the_bands_marginals_and_keep_their_rank() {
        let n = 2000;
        let t_min = vec![5.0, 10.0, 15.0];
        let mut state = 7u64;
        let mut unif = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        // twin paths: a per-path level plus white noise at each time
        let paths: Vec<Vec<f64>> = (0..n)
            .map(|_| {
                let level = 40.0 * (unif() - 0.5);
                t_min
                    .iter()
                    .map(|_| 150.0 + level + 20.0 * (unif() - 0.5))
                    .collect()
            })
            .collect();
        let mut e = EnsemblePaths {
            t_min: t_min.clone(),
            paths,
            weights: vec![1.0 / n as f64; n],
            particle: (0..n).collect(),
        };
        let twin = e.bands().unwrap();
        let score = |p: &[f64]| -> f64 {
            p.iter()
                .zip(&twin)
                .map(|(v, tw)| (v - tw.median) / (tw.hi80 - tw.lo80))
                .sum()
        };
        let band = |m: f64, w: f64| Bands {
            median: m,
            lo50: m - 0.4 * w,
            hi50: m + 0.4 * w,
            lo80: m - w,
            hi80: m + w,
            lo95: m - 1.5 * w,
            hi95: m + 1.5 * w,
        };
        let target = vec![band(140.0, 10.0), band(130.0, 20.0), band(120.0, 30.0)];
        let lowest = (0..n)
            .min_by(|&a, &b| score(&e.paths[a]).total_cmp(&score(&e.paths[b])))
            .unwrap();
        rank_paths_onto_bands(&mut e, &twin, &target);
        let got = e.bands().unwrap();
        for (g, t) in got.iter().zip(&target) {
            for (a, b) in [
                (g.median, t.median),
                (g.lo80, t.lo80),
                (g.hi80, t.hi80),
                (g.lo95, t.lo95),
                (g.hi95, t.hi95),
            ] {
                assert!((a - b).abs() < 0.2, "{a} vs {b}");
            }
        }
        for k in 0..3 {
            let min = e.paths.iter().map(|p| p[k]).fold(f64::INFINITY, f64::min);
            assert_eq!(
                e.paths[lowest][k], min,
                "the lowest path stays lowest at {k}"
            );
        }
    }

    #[test]
    fn conformal_levels_widen_with_few_residuals_and_vanish_with_many() {
        // Upper edge: the ⌈(n+1)p⌉/n order statistic without rounding; lower edge symmetric.
        assert!((conformal_level(0.9, 9.0) - 1.0).abs() < 1e-12);
        assert!((conformal_level(0.1, 9.0) - 0.0).abs() < 1e-12);
        assert!((conformal_level(0.9, 90.0) - 0.91).abs() < 1e-12);
        assert!((conformal_level(0.25, 3.0) - 0.0).abs() < 1e-12);
        assert_eq!(conformal_level(0.975, 2.0), 1.0);
        for p in [0.025, 0.1, 0.25, 0.75, 0.9, 0.975] {
            let wide = conformal_level(p, 10.0);
            let narrow = conformal_level(p, 1e6);
            assert!((narrow - p).abs() < 1e-5);
            assert!((wide - 0.5).abs() >= (p - 0.5).abs());
        }
        // One day of rows (1440 / 14 ≈ 103) at 60 min: ≈ 24 independent residuals.
        let n = effective_residuals(103, 60.0);
        assert!((n - 103.0 * 14.0 / 60.0).abs() < 1e-12);
        assert_eq!(effective_residuals(103, 5.0), 103.0);
        assert_eq!(effective_residuals(0, 60.0), 1.0);
    }

    #[test]
    fn grid_and_interpolation() {
        assert_eq!(
            horizon_grid(0.0, &[30.0, 60.0, 120.0]),
            vec![30.0, 60.0, 120.0]
        );
        let per_min: Vec<f64> = (1..=100).map(f64::from).collect();
        let g = horizon_grid(0.0, &per_min);
        assert_eq!(g[..6], [5.0, 10.0, 15.0, 20.0, 30.0, 45.0]);
        assert_eq!(*g.last().unwrap(), 100.0);
        let m = |h: f64, d: f64| HorizonModel {
            horizon_min: h,
            delta_mg_dl: d,
            residual_q: [-2.0 * d, -d, -d / 2.0, d / 2.0, d, 2.0 * d],
            n_train: 100,
            boosted: false,
        };
        let ms = [m(10.0, 10.0), m(20.0, 30.0)];
        assert_eq!(interpolate(&ms, 5.0).0, 5.0);
        assert_eq!(interpolate(&ms, 15.0).0, 20.0);
        assert_eq!(interpolate(&ms, 25.0).0, 30.0);
    }
}
