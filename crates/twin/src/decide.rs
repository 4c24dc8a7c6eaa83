//! Decisions on a calibrated twin: compare plans (what-if) and recommend a meal bolus.
//!
//! Every plan is simulated on the same posterior ensemble with **common random numbers**
//! (particle i draws the same random stream under every plan), so differences between plans
//! are differences of the plans, not Monte-Carlo noise.

use crate::engine::{TwinEngine, TwinError, HIGH_MG_DL, LOW_MG_DL};
use crate::inputs::InputSchedule;
use crate::model::Plan;
use medtwin_infer::{Bands, EnsemblePaths};
use medtwin_t1d::metrics::risk;
use serde::Serialize;

/// Level-2 hypoglycaemia threshold, mg/dL (Battelino et al. 2019).
pub const VERY_LOW_MG_DL: f64 = 54.0;
/// Pre-meal CGM below this is "low" for the advisor (lower end of the ADA pre-prandial target
/// 80–130 mg/dL, *Standards of Care in Diabetes* 2024, §6).
pub const LOW_PREMEAL_MG_DL: f64 = 80.0;
/// A CGM trend at or below this is "falling" (the CGM trend-arrow convention: −1 to
/// −2 mg/dL/min "falling"; Klonoff & Kerr, J Diabetes Sci Technol 11:1063, 2017).
pub const FALLING_MG_DL_PER_MIN: f64 = -1.0;
/// Meals of at least this much carbohydrate get a bolus unless glucose is low or falling
/// (issue 14's rule), g.
pub const MEAL_NEEDS_BOLUS_G: f64 = 30.0;

/// Outcome distribution of one plan.
#[derive(Debug, Clone, Serialize)]
pub struct PlanOutcome {
    /// Plan name.
    pub name: String,
    /// Forecast times, minutes from the record origin.
    pub t_min: Vec<f64>,
    /// Predictive bands at each time, mg/dL.
    pub bands: Vec<Bands>,
    /// P(CGM < 70 mg/dL at any time within the horizon).
    pub p_below_70: f64,
    /// P(CGM < 54 mg/dL within the horizon).
    pub p_below_54: f64,
    /// P(CGM > 250 mg/dL within the horizon).
    pub p_above_250: f64,
    /// Expected % of the horizon in 70–180 mg/dL.
    pub expected_tir_pct: f64,
    /// Expected Kovatchev risk index (LBGI + HBGI over the path).
    pub expected_risk_index: f64,
}

fn outcome(name: &str, e: &EnsemblePaths) -> Result<PlanOutcome, TwinError> {
    let tir = |p: &[f64]| {
        100.0 * p.iter().filter(|v| (70.0..=180.0).contains(*v)).count() as f64
            / p.len().max(1) as f64
    };
    let ri = |p: &[f64]| {
        p.iter()
            .map(|&v| {
                let (l, h) = risk(v);
                l + h
            })
            .sum::<f64>()
            / p.len().max(1) as f64
    };
    Ok(PlanOutcome {
        name: name.to_string(),
        t_min: e.t_min.clone(),
        bands: e.bands()?,
        p_below_70: e.probability(|p| p.iter().any(|&v| v < LOW_MG_DL)),
        p_below_54: e.probability(|p| p.iter().any(|&v| v < VERY_LOW_MG_DL)),
        p_above_250: e.probability(|p| p.iter().any(|&v| v > HIGH_MG_DL)),
        expected_tir_pct: e.expectation(tir),
        expected_risk_index: e.expectation(ri),
    })
}

/// Simulate each plan over `horizon_min` minutes from the twin's time with common random
/// numbers (`seed`). Plans hold absolute engine minutes.
pub fn whatif(
    engine: &TwinEngine,
    schedule: &InputSchedule,
    plans: &[(String, Plan)],
    horizon_min: u32,
    seed: u64,
) -> Result<Vec<PlanOutcome>, TwinError> {
    let t0 = engine.filter.t_min;
    let times: Vec<f64> = (1..=horizon_min).map(|k| t0 + k as f64).collect();
    let refs: Vec<Option<&Plan>> = plans.iter().map(|(_, p)| Some(p)).collect();
    let paths = engine.paths_for_plans(schedule, &times, &refs, seed)?;
    plans
        .iter()
        .zip(&paths)
        .map(|((name, _), e)| outcome(name, e))
        .collect()
}

/// Settings of the bolus advisor.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AdvisorSettings {
    /// Carbohydrate ratio, g/U.
    pub cr_g_per_u: f64,
    /// Correction factor, mg/dL per U.
    pub cf_mg_dl_per_u: f64,
    /// Correction target, mg/dL.
    pub target_mg_dl: f64,
    /// Largest bolus considered, U.
    pub max_bolus_u: f64,
    /// Bolus grid step, U.
    pub step_u: f64,
    /// Maximum acceptable P(< 70 mg/dL within the horizon).
    pub max_p_below_70: f64,
    /// Horizon, minutes.
    pub horizon_min: u32,
    /// Insulin action time for insulin on board (linear decay), minutes.
    pub insulin_action_min: f64,
    /// The twin adjusts the standard calculator's dose `S` within `[S·(1 − f), S·(1 + f)]`
    /// (widened to at least ±2 U): it may go lower only for safety and never higher. The
    /// mechanistic dose response is not validated well enough on real records to choose
    /// doses freely (README, "Replay validation"), so the calculator the clinician configured
    /// anchors the advice and the twin checks and tunes it.
    pub adjust_frac: f64,
}

impl AdvisorSettings {
    /// Defaults from the person's total daily insulin when CR/CF are not known: the "500 rule"
    /// (CR = 500/TDI g/U) and the "1800 rule" (CF = 1800/TDI mg/dL/U) (Walsh & Roberts, *Pumping
    /// Insulin*; Davidson et al. 2003), target 120 mg/dL, ≤ 25 U in 0.5 U steps, P(<70) ≤ 5 %
    /// within 4 h, 4-h insulin action, adjustment within ±50 % of the calculator.
    pub fn from_tdi(tdi_u_per_day: f64) -> Self {
        let tdi = if tdi_u_per_day > 1.0 {
            tdi_u_per_day
        } else {
            40.0
        };
        AdvisorSettings {
            cr_g_per_u: 500.0 / tdi,
            cf_mg_dl_per_u: 1800.0 / tdi,
            target_mg_dl: 120.0,
            max_bolus_u: 25.0,
            step_u: 0.5,
            max_p_below_70: 0.05,
            horizon_min: 240,
            insulin_action_min: 240.0,
            adjust_frac: 0.5,
        }
    }
}

/// A bolus recommendation beside the standard calculator's answer.
#[derive(Debug, Clone, Serialize)]
pub struct Advice {
    /// Meal carbohydrate, g.
    pub carbs_g: f64,
    /// Meal time, minutes from the record origin.
    pub at_min: f64,
    /// Recommended bolus (given with the meal), U.
    pub recommended_bolus_u: f64,
    /// Whether the recommended dose meets the hypoglycaemia constraint. `false` for a refusal,
    /// and for 0 U advised because glucose is low or falling while even no insulin leaves
    /// P(< 70) above the limit.
    pub constraint_met: bool,
    /// Why the advisor refuses to advise: no candidate bolus (not even none) keeps
    /// P(< 70 mg/dL) within the limit while glucose is neither low nor falling, so the twin's
    /// own forecast contradicts the situation or is too uncertain; `recommended_bolus_u` is then
    /// only the least-hypoglycaemic candidate.
    pub refusal: Option<String>,
    /// Why this dose, in words (always set; for a refusal the refusal's reason).
    pub reason: String,
    /// Its outcome distribution.
    pub recommended: PlanOutcome,
    /// Standard calculator bolus: carbs/CR + (CGM − target)/CF − IOB, ≥ 0, U.
    pub standard_bolus_u: f64,
    /// Its outcome distribution.
    pub standard: PlanOutcome,
    /// Insulin on board used by the calculator, U.
    pub iob_u: f64,
    /// Last CGM used by the calculator, mg/dL.
    pub cgm_mg_dl: f64,
    /// CGM trend over the last 20 min (least-squares slope), mg/dL/min; `None` with fewer
    /// than two readings there.
    pub cgm_trend_mg_dl_per_min: Option<f64>,
    /// P(< 70 mg/dL within the horizon) with the meal and no bolus.
    pub p_below_70_no_bolus: f64,
    /// The dose range the twin chose in, `[lo, hi]` U (see [`AdvisorSettings::adjust_frac`]).
    pub dose_range_u: (f64, f64),
    /// Settings used.
    pub settings: AdvisorSettings,
    /// Every candidate: (bolus U, expected risk index, P(<70)).
    pub candidates: Vec<(f64, f64, f64)>,
}

/// A bolus-advice request as a person gives it (the CLI's `twin advise`, the Python package's
/// `twin.advise`): the meal and optional calculator settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdviceRequest {
    /// Meal carbohydrate, g (in (0, 300]).
    pub carbs_g: f64,
    /// Meal time, minutes after the twin's time (0–240).
    pub at_min: f64,
    /// Carbohydrate ratio, g/U (positive); `None`: the 500 rule.
    pub cr_g_per_u: Option<f64>,
    /// Correction factor, mg/dL per U (positive); `None`: the 1800 rule.
    pub cf_mg_dl_per_u: Option<f64>,
    /// Correction target, mg/dL (70–200).
    pub target_mg_dl: f64,
}

impl AdviceRequest {
    /// Check the request and build the advisor's settings for a person with total daily
    /// insulin `tdi_u_per_day` ([`AdvisorSettings::from_tdi`], then the request's CR, CF and
    /// target). Errors name the value and its allowed range.
    pub fn settings(&self, tdi_u_per_day: f64) -> Result<AdvisorSettings, String> {
        self.check()?;
        let mut s = AdvisorSettings::from_tdi(tdi_u_per_day);
        if let Some(v) = self.cr_g_per_u {
            s.cr_g_per_u = v;
        }
        if let Some(v) = self.cf_mg_dl_per_u {
            s.cf_mg_dl_per_u = v;
        }
        s.target_mg_dl = self.target_mg_dl;
        Ok(s)
    }

    /// Check the request alone (before any twin is read). Errors name the value and its
    /// allowed range.
    pub fn check(&self) -> Result<(), String> {
        let (carbs, at, target) = (self.carbs_g, self.at_min, self.target_mg_dl);
        if !carbs.is_finite() || carbs <= 0.0 || carbs > 300.0 {
            return Err(format!("carbohydrate {carbs} g must be in (0, 300] g"));
        }
        if !at.is_finite() || !(0.0..=240.0).contains(&at) {
            return Err(format!("meal time {at} min must be within 0–240 minutes"));
        }
        for (name, v) in [
            ("carbohydrate ratio (g/U)", self.cr_g_per_u),
            ("correction factor (mg/dL per U)", self.cf_mg_dl_per_u),
        ] {
            if let Some(v) = v.filter(|v| !v.is_finite() || *v <= 0.0) {
                return Err(format!("{name} {v} must be positive"));
            }
        }
        if !(70.0..=200.0).contains(&target) {
            return Err(format!("target {target} mg/dL must be within 70–200 mg/dL"));
        }
        Ok(())
    }
}

/// Insulin on board at `t`: boluses of the last `action_min` minutes with linear decay.
pub fn insulin_on_board(schedule: &InputSchedule, t_min: f64, action_min: f64) -> f64 {
    schedule
        .boluses
        .iter()
        .filter(|b| b.0 <= t_min && b.0 > t_min - action_min)
        .map(|b| b.1 * (1.0 - (t_min - b.0) / action_min))
        .sum()
}

/// Least-squares slope of the CGM readings in `[t − 20, t]`, mg/dL/min (`None` with fewer
/// than two readings or no time spread).
pub fn cgm_trend_mg_dl_per_min(schedule: &InputSchedule, t_min: f64) -> Option<f64> {
    let lo = schedule.cgm.partition_point(|c| c.0 < t_min - 20.0);
    let hi = schedule.cgm.partition_point(|c| c.0 <= t_min);
    let w = &schedule.cgm[lo..hi];
    if w.len() < 2 {
        return None;
    }
    let n = w.len() as f64;
    let (mt, mg) = (
        w.iter().map(|c| c.0).sum::<f64>() / n,
        w.iter().map(|c| c.1).sum::<f64>() / n,
    );
    let sxx: f64 = w.iter().map(|c| (c.0 - mt).powi(2)).sum();
    let sxy: f64 = w.iter().map(|c| (c.0 - mt) * (c.1 - mg)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

/// The pre-meal state the advisor's rules look at.
struct MealContext {
    cgm: f64,
    trend: Option<f64>,
    iob: f64,
    standard: f64,
}

impl MealContext {
    fn low_or_falling(&self) -> bool {
        self.cgm < LOW_PREMEAL_MG_DL || self.trend.is_some_and(|t| t <= FALLING_MG_DL_PER_MIN)
    }

    fn describe(&self) -> String {
        let trend = match self.trend {
            Some(t) => format!("{t:+.1} mg/dL/min"),
            None => "trend unknown".into(),
        };
        format!("CGM {:.0} mg/dL ({trend})", self.cgm)
    }

    /// The dose range `[lo, hi]` of the advice (see [`AdvisorSettings::adjust_frac`]); below
    /// `lo` only for safety. A meal of ≥ [`MEAL_NEEDS_BOLUS_G`] with glucose neither low nor
    /// falling keeps a floor of the calculator's lower end.
    fn range(&self, carbs_g: f64, s: &AdvisorSettings) -> (f64, f64) {
        let f = s.adjust_frac.clamp(0.0, 1.0);
        let hi = (self.standard * (1.0 + f))
            .max(self.standard + 2.0)
            .min(s.max_bolus_u);
        let lo = if carbs_g >= MEAL_NEEDS_BOLUS_G && !self.low_or_falling() {
            (self.standard * (1.0 - f))
                .min(self.standard - 2.0)
                .max(0.0)
        } else {
            0.0
        };
        (lo, hi)
    }
}

/// Choose among the candidates (see [`advise`]): `(index, refusal, reason)`.
fn choose(
    grid: &[f64],
    outcomes: &[PlanOutcome],
    ctx: &MealContext,
    (lo, hi): (f64, f64),
    carbs_g: f64,
    s: &AdvisorSettings,
) -> (usize, Option<String>, String) {
    let ok = |i: &usize| outcomes[*i].p_below_70 <= s.max_p_below_70;
    let by_risk = |a: &usize, b: &usize| {
        outcomes[*a]
            .expected_risk_index
            .total_cmp(&outcomes[*b].expected_risk_index)
    };
    let eps = 1e-9;
    let limit = 100.0 * s.max_p_below_70;
    let in_range = (0..grid.len())
        .filter(|&i| grid[i] >= lo - eps && grid[i] <= hi + eps)
        .filter(ok)
        .min_by(by_risk);
    if let Some(i) = in_range {
        let mut why = format!(
            "lowest expected risk index within {lo:.1}–{hi:.1} U (standard calculator {:.1} U ± {:.0} %) with P(<70 within {} min) {:.1} % <= {limit:.0} %; {}",
            ctx.standard,
            100.0 * s.adjust_frac,
            s.horizon_min,
            100.0 * outcomes[i].p_below_70,
            ctx.describe()
        );
        if grid[i] == 0.0 && carbs_g >= MEAL_NEEDS_BOLUS_G {
            why += &if ctx.low_or_falling() {
                format!("; no bolus now: glucose is low (< {LOW_PREMEAL_MG_DL:.0}) or falling (<= {FALLING_MG_DL_PER_MIN:.0} mg/dL/min)")
            } else {
                format!(
                    "; no bolus: insulin on board {:.1} U already covers the meal by the calculator",
                    ctx.iob
                )
            };
        }
        return (i, None, why);
    }
    // Lower than the calculator, for safety: the largest safe dose below the range.
    let below = (0..grid.len())
        .filter(|&i| grid[i] < lo - eps)
        .filter(ok)
        .max_by(|a, b| grid[*a].total_cmp(&grid[*b]));
    if let Some(i) = below {
        let at_lo = (0..grid.len())
            .filter(|&i| grid[i] >= lo - eps)
            .map(|i| outcomes[i].p_below_70)
            .next()
            .unwrap_or(f64::NAN);
        let why = format!(
            "reduced below the calculator's range ({lo:.1}–{hi:.1} U) for safety: from {lo:.1} U the twin forecasts P(<70 within {} min) {:.1} % > {limit:.0} %; {}",
            s.horizon_min,
            100.0 * at_lo,
            ctx.describe()
        );
        return (i, None, why);
    }
    let least = (0..grid.len())
        .min_by(|&a, &b| outcomes[a].p_below_70.total_cmp(&outcomes[b].p_below_70))
        .unwrap_or(0);
    if ctx.low_or_falling() {
        // Not a refusal: with glucose low or falling the advice is clear, no insulin now.
        let why = format!(
            "no bolus now: glucose is low (< {LOW_PREMEAL_MG_DL:.0} mg/dL) or falling (<= {FALLING_MG_DL_PER_MIN:.0} mg/dL/min), {}, \
             and the twin forecasts P(<70 within {} min) {:.0} % even without insulin: treat or recheck, and bolus once glucose rises",
            ctx.describe(),
            s.horizon_min,
            100.0 * outcomes[0].p_below_70
        );
        return (0, None, why);
    }
    let why = format!(
        "no bolus keeps P(<70 mg/dL within {} min) <= {limit:.0} %: the lowest reachable is {:.0} % (with {:.1} U); {}; \
         hypoglycaemia is already likely or the twin's uncertainty is too wide to advise safely",
        s.horizon_min,
        100.0 * outcomes[least].p_below_70,
        grid[least],
        ctx.describe()
    );
    (least, Some(why.clone()), why)
}

/// Recommend a bolus for `carbs_g` eaten `at_offset_min` minutes after the twin's time.
///
/// The standard calculator's dose `S` (carbs/CR + (CGM − target)/CF − IOB) anchors the advice:
/// among grid doses in `[S(1 − f), S(1 + f)]` (at least ±2 U, [`AdvisorSettings::adjust_frac`])
/// the twin picks the one minimising the expected Kovatchev risk index over the horizon
/// subject to P(< 70 mg/dL) ≤ `max_p_below_70`. When no dose in that range is safe, the
/// largest safe dose below it; when none at all is, a refusal (the least-hypoglycaemic dose,
/// with the reason). For a meal of ≥ [`MEAL_NEEDS_BOLUS_G`] g the range starts above 0 unless
/// CGM is below [`LOW_PREMEAL_MG_DL`] or falling at ≤ [`FALLING_MG_DL_PER_MIN`], so 0 U comes
/// only from those, from insulin on board, or from safety — and [`Advice::reason`] says which.
pub fn advise(
    engine: &TwinEngine,
    schedule: &InputSchedule,
    carbs_g: f64,
    at_offset_min: f64,
    s: &AdvisorSettings,
    seed: u64,
) -> Result<Advice, TwinError> {
    let t0 = engine.filter.t_min;
    let at = t0 + at_offset_min.round();
    let times: Vec<f64> = (1..=s.horizon_min).map(|k| t0 + k as f64).collect();
    let plan_for = |bolus: f64| Plan {
        meals: vec![(at, carbs_g)],
        boluses: if bolus > 0.0 {
            vec![(at, bolus)]
        } else {
            vec![]
        },
        basal_rates: vec![],
    };
    let n = (s.max_bolus_u / s.step_u).floor() as usize;
    let grid: Vec<f64> = (0..=n).map(|k| k as f64 * s.step_u).collect();
    let cgm = schedule
        .cgm
        .iter()
        .rev()
        .find(|c| c.0 <= t0)
        .map(|c| c.1)
        .unwrap_or(s.target_mg_dl);
    let iob = insulin_on_board(schedule, t0, s.insulin_action_min);
    let standard_bolus =
        (carbs_g / s.cr_g_per_u + (cgm - s.target_mg_dl) / s.cf_mg_dl_per_u - iob).max(0.0);
    let ctx = MealContext {
        cgm,
        trend: cgm_trend_mg_dl_per_min(schedule, t0),
        iob,
        standard: standard_bolus,
    };
    let plans: Vec<Plan> = grid
        .iter()
        .chain(std::iter::once(&standard_bolus))
        .map(|&b| plan_for(b))
        .collect();
    let refs: Vec<Option<&Plan>> = plans.iter().map(Some).collect();
    let mut paths = engine.paths_for_plans(schedule, &times, &refs, seed)?;
    let standard_paths = paths.pop().expect("the standard bolus plan");
    let mut candidates = Vec::new();
    let mut outcomes = Vec::new();
    for (&b, e) in grid.iter().zip(&paths) {
        let o = outcome(&format!("{b:.1} U"), e)?;
        candidates.push((b, o.expected_risk_index, o.p_below_70));
        outcomes.push(o);
    }
    let range = ctx.range(carbs_g, s);
    let (best, refusal, reason) = choose(&grid, &outcomes, &ctx, range, carbs_g, s);
    let standard = outcome("standard calculator", &standard_paths)?;
    let p_below_70_no_bolus = outcomes[0].p_below_70;
    let mut recommended = outcomes.swap_remove(best);
    recommended.name = "twin recommendation".into();
    Ok(Advice {
        carbs_g,
        at_min: at,
        recommended_bolus_u: candidates[best].0,
        constraint_met: recommended.p_below_70 <= s.max_p_below_70,
        refusal,
        reason,
        recommended,
        standard_bolus_u: standard_bolus,
        standard,
        iob_u: iob,
        cgm_mg_dl: cgm,
        cgm_trend_mg_dl_per_min: ctx.trend,
        p_below_70_no_bolus,
        dose_range_u: range,
        settings: *s,
        candidates,
    })
}

/// One audited meal: the twin's advice and the standard calculator's answer beside the bolus
/// the person actually took.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRow {
    /// Meal time, minutes from the record origin.
    pub t_min: f64,
    /// Meal time, RFC 3339 UTC (empty when the schedule has no origin).
    pub time_utc: String,
    /// Recorded carbohydrate, g.
    pub carbs_g: f64,
    /// Bolus recorded within ±30 min of the meal, U.
    pub taken_u: f64,
    /// Twin advice, U.
    pub advised_u: f64,
    /// Standard calculator, U.
    pub standard_u: f64,
    /// Carbohydrate ratio the calculator used, g/U.
    pub cr_g_per_u: f64,
    /// Last CGM before the meal, mg/dL.
    pub cgm_mg_dl: f64,
    /// CGM trend over the 20 min before the meal, mg/dL/min (NaN when unknown).
    pub cgm_trend_mg_dl_per_min: f64,
    /// P(< 70 mg/dL within the horizon) with the meal and no bolus.
    pub p_below_70_no_bolus: f64,
    /// P(< 70 mg/dL within the horizon) with the advised bolus.
    pub p_below_70_advised: f64,
    /// Whether the advised dose met the P(<70) constraint ([`Advice::constraint_met`]).
    pub constraint_met: bool,
    /// Whether the advisor refused ([`Advice::refusal`]).
    pub refused: bool,
    /// The advisor's reason ([`Advice::reason`]).
    pub reason: String,
}

/// Summary of an advice audit.
#[derive(Debug, Clone, Serialize)]
pub struct AuditSummary {
    /// Meals audited.
    pub n_meals: usize,
    /// Fraction of meals where |advice − taken| > 1 U.
    pub frac_differs_gt_1u: f64,
    /// Mean |advice − taken|, U.
    pub mean_abs_diff_u: f64,
    /// Mean (advice − taken), U.
    pub mean_diff_u: f64,
    /// Mean |standard − taken|, U.
    pub standard_mean_abs_diff_u: f64,
    /// Fraction of meals where no bolus met the hypoglycaemia constraint (refusals, and 0 U
    /// advised for low or falling glucose with the risk above the limit even so).
    pub frac_constraint_unmet: f64,
    /// Fraction of meals the advisor refused ([`Advice::refusal`]).
    pub frac_refused: f64,
    /// Meals of ≥ [`MEAL_NEEDS_BOLUS_G`] g advised 0 U.
    pub n_zero_advice_large_meals: usize,
    /// Rows.
    pub rows: Vec<AuditRow>,
}

/// Fewest recorded meal boluses for the audit's calculator to use the person's own
/// carbohydrate ratio (else the 500 rule).
pub const MIN_MEAL_BOLUSES_FOR_CR: usize = 5;

/// Replay a record: at every recorded meal of ≥ 10 g after the warm-up, the twin (fitted on
/// data up to one minute before the meal or before the first bolus recorded up to 30 min
/// ahead of it, whichever is earlier, so knowing nothing of the meal or its bolus) advises a
/// bolus (grid step `step_u`, other settings from [`AdvisorSettings::from_tdi`]) for the
/// recorded carbohydrate; compare with the bolus actually taken (sum of boluses
/// within ±30 min) and with the standard calculator. The calculator's carbohydrate ratio is
/// the person's own (median carbs/bolus of the meal boluses recorded before the meal,
/// [`crate::hybrid::recorded_carb_ratio`]) once [`MIN_MEAL_BOLUSES_FOR_CR`] are known, else
/// the 500 rule. `progress(done, total)` after each meal.
pub fn audit_advice(
    schedule: &InputSchedule,
    settings: crate::engine::TwinSettings,
    step_u: f64,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<AuditSummary, TwinError> {
    let mut engine = TwinEngine::start(schedule, settings.clone())?;
    let mut base = AdvisorSettings::from_tdi(engine.calibration.window_tdi_u_per_day);
    base.step_u = step_u;
    let origin = schedule.origin();
    let meals: Vec<(f64, f64)> = schedule
        .carbs
        .iter()
        .copied()
        .filter(|m| m.1 >= 10.0 && m.0 - 1.0 > engine.filter.t_min)
        .collect();
    let mut rows = Vec::new();
    for (k, &(t, g)) in meals.iter().enumerate() {
        // the advice comes before the meal and before any bolus taken for it (a pre-bolus up
        // to 30 min ahead), so the twin knows neither, and insulin on board excludes it
        let first_bolus = schedule
            .boluses
            .iter()
            .filter(|b| b.0 >= t - 30.0 && b.0 <= t && b.1 > 0.0)
            .map(|b| b.0)
            .fold(t, f64::min);
        let t_advice = first_bolus - 1.0;
        if t_advice <= engine.filter.t_min {
            continue;
        }
        engine.assimilate_until(schedule, t_advice)?;
        let mut s = base;
        // meals whose ±30-min bolus window closed before this meal
        if let (Some(cr), n) =
            crate::hybrid::recorded_carb_ratio(schedule, f64::NEG_INFINITY, t - 31.0)
        {
            if n >= MIN_MEAL_BOLUSES_FOR_CR && cr.is_finite() && cr > 0.0 {
                s.cr_g_per_u = cr;
            }
        }
        let a = advise(&engine, schedule, g, t - t_advice, &s, settings.seed)?;
        // (+ 0.0 turns the empty sum's −0.0 into 0.0)
        let taken: f64 = schedule
            .boluses
            .iter()
            .filter(|b| (b.0 - t).abs() <= 30.0)
            .map(|b| b.1)
            .sum::<f64>()
            + 0.0;
        let time_utc = origin
            .and_then(|o| {
                o.checked_add(jiff::SignedDuration::from_secs((t * 60.0) as i64))
                    .ok()
            })
            .map(|ts| ts.to_string())
            .unwrap_or_default();
        rows.push(AuditRow {
            t_min: t,
            time_utc,
            carbs_g: g,
            taken_u: taken,
            advised_u: a.recommended_bolus_u,
            standard_u: a.standard_bolus_u,
            cr_g_per_u: s.cr_g_per_u,
            cgm_mg_dl: a.cgm_mg_dl,
            cgm_trend_mg_dl_per_min: a.cgm_trend_mg_dl_per_min.unwrap_or(f64::NAN),
            p_below_70_no_bolus: a.p_below_70_no_bolus,
            p_below_70_advised: a.recommended.p_below_70,
            constraint_met: a.constraint_met,
            refused: a.refusal.is_some(),
            reason: a.reason,
        });
        progress(k + 1, meals.len());
    }
    let n = rows.len().max(1) as f64;
    Ok(AuditSummary {
        n_meals: rows.len(),
        frac_differs_gt_1u: rows
            .iter()
            .filter(|r| (r.advised_u - r.taken_u).abs() > 1.0)
            .count() as f64
            / n,
        mean_abs_diff_u: rows
            .iter()
            .map(|r| (r.advised_u - r.taken_u).abs())
            .sum::<f64>()
            / n,
        mean_diff_u: rows.iter().map(|r| r.advised_u - r.taken_u).sum::<f64>() / n,
        standard_mean_abs_diff_u: rows
            .iter()
            .map(|r| (r.standard_u - r.taken_u).abs())
            .sum::<f64>()
            / n,
        frac_constraint_unmet: rows.iter().filter(|r| !r.constraint_met).count() as f64 / n,
        frac_refused: rows.iter().filter(|r| r.refused).count() as f64 / n,
        n_zero_advice_large_meals: rows
            .iter()
            .filter(|r| r.carbs_g >= MEAL_NEEDS_BOLUS_G && r.advised_u == 0.0)
            .count(),
        rows,
    })
}

/// Refuse an insulin question (a what-if with a bolus or basal plan, bolus advice) on a twin
/// whose record holds no insulin at all (no bolus, basal rate or long-acting dose): such a twin
/// has never seen this person's response to insulin. `Err` carries the reason, prefixed by
/// `what` (the CLI exits with status 2 on it; the Python package raises `InputError`).
pub fn require_insulin_data(schedule: &InputSchedule, what: &str) -> Result<(), String> {
    if schedule.boluses.is_empty()
        && schedule.basal_rates.is_empty()
        && schedule.long_acting.is_empty()
    {
        return Err(format!(
            "{what}: refused: this twin was calibrated without any insulin data (no bolus, basal \
             rate or long-acting dose in its record), so it has never seen this person's response to \
             insulin; add the insulin log to the record and refit"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome_with(p_below_70: f64, risk: f64) -> PlanOutcome {
        PlanOutcome {
            name: String::new(),
            t_min: vec![],
            bands: vec![],
            p_below_70,
            p_below_54: 0.0,
            p_above_250: 0.0,
            expected_tir_pct: 0.0,
            expected_risk_index: risk,
        }
    }

    fn ctx(cgm: f64, trend: Option<f64>, standard: f64) -> MealContext {
        MealContext {
            cgm,
            trend,
            iob: 0.0,
            standard,
        }
    }

    /// Grid 0..=20 U; P(<70) rises with the dose, risk index minimal at `best` U.
    fn outcomes(p_per_u: f64, p0: f64, best: f64) -> (Vec<f64>, Vec<PlanOutcome>) {
        let grid: Vec<f64> = (0..=20).map(f64::from).collect();
        let o = grid
            .iter()
            .map(|&b| outcome_with(p0 + p_per_u * b, (b - best).powi(2)))
            .collect();
        (grid, o)
    }

    #[test]
    fn advice_stays_within_the_calculator_range_and_says_why() {
        let s = AdvisorSettings::from_tdi(40.0);
        // the twin's risk optimum (20 U) is far above the calculator (8 U): capped at +50 %
        let c = ctx(140.0, Some(0.0), 8.0);
        let range = c.range(60.0, &s);
        assert_eq!(range, (4.0, 12.0));
        let (grid, o) = outcomes(0.001, 0.0, 20.0);
        let (i, refusal, why) = choose(&grid, &o, &c, range, 60.0, &s);
        assert_eq!(grid[i], 12.0);
        assert!(refusal.is_none());
        assert!(
            why.contains("4.0–12.0 U") && why.contains("CGM 140"),
            "{why}"
        );
        // a 0 U optimum for a 60-g meal is not allowed while glucose is neither low nor falling
        let (grid, o) = outcomes(0.001, 0.0, 0.0);
        let (i, _, _) = choose(&grid, &o, &c, range, 60.0, &s);
        assert_eq!(grid[i], 4.0);
    }

    #[test]
    fn zero_units_for_a_large_meal_only_when_low_falling_or_unsafe_and_the_reason_says_which() {
        let s = AdvisorSettings::from_tdi(40.0);
        let (grid, o) = outcomes(0.001, 0.0, 0.0);
        for (c, word) in [
            (ctx(75.0, Some(0.0), 5.0), "low"),
            (ctx(120.0, Some(-2.0), 5.0), "falling"),
        ] {
            let range = c.range(60.0, &s);
            assert_eq!(range.0, 0.0);
            let (i, refusal, why) = choose(&grid, &o, &c, range, 60.0, &s);
            assert_eq!(grid[i], 0.0);
            assert!(refusal.is_none());
            assert!(why.contains(word), "{why}");
        }
        // unsafe from 3 U up: reduced below the range, with the twin's P(<70) named
        let c = ctx(140.0, Some(0.0), 8.0);
        let (grid, o) = outcomes(0.02, 0.0, 8.0);
        let range = c.range(60.0, &s);
        let (i, refusal, why) = choose(&grid, &o, &c, range, 60.0, &s);
        assert_eq!(grid[i], 2.0, "largest dose with P(<70) <= 5 %");
        assert!(refusal.is_none());
        assert!(why.starts_with("reduced below"), "{why}");
        // nothing safe, not even 0 U: a refusal naming the lowest reachable risk
        let (grid, o) = outcomes(0.01, 0.2, 8.0);
        let (i, refusal, why) = choose(&grid, &o, &c, range, 60.0, &s);
        assert_eq!(grid[i], 0.0);
        assert!(refusal.is_some());
        assert!(why.contains("lowest reachable is 20 %"), "{why}");
        // the same with glucose falling: clear advice (0 U now), not a refusal
        let c = ctx(110.0, Some(-1.5), 8.0);
        let (i, refusal, why) = choose(&grid, &o, &c, c.range(60.0, &s), 60.0, &s);
        assert_eq!(grid[i], 0.0);
        assert!(refusal.is_none());
        assert!(
            why.starts_with("no bolus now") && why.contains("20 %"),
            "{why}"
        );
    }

    #[test]
    fn advice_requests_are_checked_and_set_the_calculator() {
        let r = AdviceRequest {
            carbs_g: 60.0,
            at_min: 15.0,
            cr_g_per_u: Some(8.0),
            cf_mg_dl_per_u: None,
            target_mg_dl: 110.0,
        };
        let s = r.settings(40.0).unwrap();
        assert_eq!(
            (s.cr_g_per_u, s.cf_mg_dl_per_u, s.target_mg_dl),
            (8.0, 45.0, 110.0)
        );
        let bad = |f: fn(&mut AdviceRequest)| {
            let mut b = r;
            f(&mut b);
            b.settings(40.0).unwrap_err()
        };
        assert!(bad(|b| b.carbs_g = -3.0).contains("carbohydrate -3 g"));
        assert!(bad(|b| b.at_min = 300.0).contains("meal time 300"));
        assert!(bad(|b| b.cf_mg_dl_per_u = Some(0.0)).contains("correction factor"));
        assert!(bad(|b| b.target_mg_dl = 250.0).contains("target 250"));
    }

    #[test]
    fn cgm_trend_is_the_least_squares_slope_of_the_last_20_minutes() {
        let s = InputSchedule {
            cgm: vec![(0.0, 200.0), (90.0, 150.0), (95.0, 140.0), (100.0, 130.0)],
            ..InputSchedule::default()
        };
        assert_eq!(cgm_trend_mg_dl_per_min(&s, 100.0), Some(-2.0));
        assert_eq!(cgm_trend_mg_dl_per_min(&s, 50.0), None);
    }
}
