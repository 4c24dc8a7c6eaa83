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
}

impl AdvisorSettings {
    /// Defaults from the person's total daily insulin when CR/CF are not known: the "500 rule"
    /// (CR = 500/TDI g/U) and the "1800 rule" (CF = 1800/TDI mg/dL/U) (Walsh & Roberts, *Pumping
    /// Insulin*; Davidson et al. 2003), target 120 mg/dL, ≤ 25 U in 0.5 U steps, P(<70) ≤ 5 %
    /// within 4 h, 4-h insulin action.
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
    /// Whether some bolus met the hypoglycaemia constraint (else the smallest-risk-of-hypo one).
    pub constraint_met: bool,
    /// Why the advisor refuses to advise, when no candidate bolus (not even none) keeps
    /// P(< 70 mg/dL) within the limit: the twin is too uncertain, or hypoglycaemia is already
    /// likely; `recommended_bolus_u` is then only the least-hypoglycaemic candidate.
    pub refusal: Option<String>,
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
    /// Settings used.
    pub settings: AdvisorSettings,
    /// Every candidate: (bolus U, expected risk index, P(<70)).
    pub candidates: Vec<(f64, f64, f64)>,
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

/// Recommend a bolus for `carbs_g` eaten `at_offset_min` minutes after the twin's time: the
/// grid bolus minimising the expected Kovatchev risk index over the horizon subject to
/// P(< 70 mg/dL) ≤ `max_p_below_70` (if no bolus meets it, the one with the lowest P(<70)).
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
    let mut candidates = Vec::new();
    let mut outcomes = Vec::new();
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
    let plans: Vec<Plan> = grid
        .iter()
        .chain(std::iter::once(&standard_bolus))
        .map(|&b| plan_for(b))
        .collect();
    let refs: Vec<Option<&Plan>> = plans.iter().map(Some).collect();
    let mut paths = engine.paths_for_plans(schedule, &times, &refs, seed)?;
    let standard_paths = paths.pop().expect("the standard bolus plan");
    for (&b, e) in grid.iter().zip(&paths) {
        let o = outcome(&format!("{b:.1} U"), e)?;
        candidates.push((b, o.expected_risk_index, o.p_below_70));
        outcomes.push(o);
    }
    let feasible: Vec<usize> = (0..outcomes.len())
        .filter(|&i| outcomes[i].p_below_70 <= s.max_p_below_70)
        .collect();
    let constraint_met = !feasible.is_empty();
    let best = if constraint_met {
        feasible.into_iter().min_by(|&a, &b| {
            outcomes[a]
                .expected_risk_index
                .total_cmp(&outcomes[b].expected_risk_index)
        })
    } else {
        (0..outcomes.len())
            .min_by(|&a, &b| outcomes[a].p_below_70.total_cmp(&outcomes[b].p_below_70))
    }
    .unwrap_or(0);
    let standard = outcome("standard calculator", &standard_paths)?;
    let refusal = (!constraint_met).then(|| {
        format!(
            "no bolus keeps P(<70 mg/dL within {} min) <= {:.0} %: the lowest reachable is {:.0} % (with {:.1} U); \
             the twin's uncertainty is too wide, or hypoglycaemia already likely, to advise safely",
            s.horizon_min,
            100.0 * s.max_p_below_70,
            100.0 * outcomes[best].p_below_70,
            candidates[best].0
        )
    });
    let mut recommended = outcomes.swap_remove(best);
    recommended.name = "twin recommendation".into();
    Ok(Advice {
        carbs_g,
        at_min: at,
        recommended_bolus_u: candidates[best].0,
        constraint_met,
        refusal,
        recommended,
        standard_bolus_u: standard_bolus,
        standard,
        iob_u: iob,
        cgm_mg_dl: cgm,
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
    /// Recorded carbohydrate, g.
    pub carbs_g: f64,
    /// Bolus recorded within ±30 min of the meal, U.
    pub taken_u: f64,
    /// Twin advice, U.
    pub advised_u: f64,
    /// Standard calculator, U.
    pub standard_u: f64,
    /// Whether the advice met the P(<70) constraint.
    pub constraint_met: bool,
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
    /// Fraction of meals where no bolus met the hypoglycaemia constraint.
    pub frac_constraint_unmet: f64,
    /// Rows.
    pub rows: Vec<AuditRow>,
}

/// Replay a record: at every recorded meal of ≥ 10 g after the warm-up, the twin (fitted on
/// data up to one minute before the meal, knowing nothing of the meal or its bolus) advises a
/// bolus (grid step `step_u`, other settings from [`AdvisorSettings::from_tdi`]) for the
/// recorded carbohydrate; compare with the bolus actually taken (sum of boluses
/// within ±30 min) and with the standard calculator. `progress(done, total)` after each meal.
pub fn audit_advice(
    schedule: &InputSchedule,
    settings: crate::engine::TwinSettings,
    step_u: f64,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<AuditSummary, TwinError> {
    let mut engine = TwinEngine::start(schedule, settings.clone())?;
    let mut s = AdvisorSettings::from_tdi(engine.calibration.window_tdi_u_per_day);
    s.step_u = step_u;
    let meals: Vec<(f64, f64)> = schedule
        .carbs
        .iter()
        .copied()
        .filter(|m| m.1 >= 10.0 && m.0 - 1.0 > engine.filter.t_min)
        .collect();
    let mut rows = Vec::new();
    for (k, &(t, g)) in meals.iter().enumerate() {
        if t - 1.0 <= engine.filter.t_min {
            continue;
        }
        engine.assimilate_until(schedule, t - 1.0)?;
        let a = advise(&engine, schedule, g, 1.0, &s, settings.seed)?;
        // (+ 0.0 turns the empty sum's −0.0 into 0.0)
        let taken: f64 = schedule
            .boluses
            .iter()
            .filter(|b| (b.0 - t).abs() <= 30.0)
            .map(|b| b.1)
            .sum::<f64>()
            + 0.0;
        rows.push(AuditRow {
            t_min: t,
            carbs_g: g,
            taken_u: taken,
            advised_u: a.recommended_bolus_u,
            standard_u: a.standard_bolus_u,
            constraint_met: a.constraint_met,
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
        rows,
    })
}
