//! The twin report pipeline: backtest over a record, cones at several origins, cones narrowing
//! as data accrue, posterior against prior — assembled into a [`medtwin_report::TwinReport`].

use crate::backtest::{BacktestOptions, BacktestResult};
use crate::engine::{Twin, TwinError};
use crate::inputs::InputSchedule;
use crate::learning::{learning_curve, LearningCurve, LearningOptions};
use crate::prior::{N_THETA, THETA_DESCRIPTIONS, THETA_NAMES, THETA_UNITS};
use medtwin_infer::Forecast;
use medtwin_io::Record;
use medtwin_report::{BacktestRow, Cone, ParameterPosterior, Series, TwinReport};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

/// What to put in the report.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    /// Backtest options (their settings are the twin's).
    pub backtest: BacktestOptions,
    /// Days of data the twins of the "learning from more data" section see before its
    /// evaluation window ([`crate::learning`]), e.g. `[1, 3, 7, 14]`.
    pub narrowing_days: Vec<f64>,
    /// Length of that evaluation window at the end of the record (or of the backtest span),
    /// days.
    pub learning_eval_days: f64,
    /// Patient identifier shown in the report.
    pub patient_id: String,
    /// Citation of the data source.
    pub citation: String,
    /// Notes from the import (warnings with counts).
    pub import_notes: Vec<String>,
    /// Wall-clock label of t = 0.
    pub origin_label: String,
}

/// Everything the report pipeline produces.
pub struct ReportOutput {
    /// The report data (write it with [`medtwin_report::write_twin_report`]).
    pub report: TwinReport,
    /// Backtest scores.
    pub backtest: BacktestResult,
    /// The learning curve (or why it could not be measured: a record too short).
    pub learning: Result<LearningCurve, TwinError>,
    /// The twin after the whole record.
    pub twin: Twin,
}

/// Convert a forecast into a report cone.
pub fn cone(origin_min: f64, f: &Forecast) -> Cone {
    cone_from_bands(origin_min, &f.t_min, &f.bands, f.p_below, f.p_above)
}

/// A report cone from per-time bands and exceedance probabilities.
pub fn cone_from_bands(
    origin_min: f64,
    t_min: &[f64],
    bands: &[medtwin_infer::Bands],
    p_below_70: f64,
    p_above_250: f64,
) -> Cone {
    let col = |g: &dyn Fn(&medtwin_infer::Bands) -> f64| bands.iter().map(g).collect::<Vec<f64>>();
    Cone {
        origin_min,
        t_min: t_min.to_vec(),
        median: col(&|b| b.median),
        lo50: col(&|b| b.lo50),
        hi50: col(&|b| b.hi50),
        lo80: col(&|b| b.lo80),
        hi80: col(&|b| b.hi80),
        lo95: col(&|b| b.lo95),
        hi95: col(&|b| b.hi95),
        p_below_70,
        p_above_250,
    }
}

/// Run the pipeline on `record`. `progress(stage, done, total)` reports long stages.
pub fn twin_report(
    record: &Record,
    opts: &ReportOptions,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<ReportOutput, TwinError> {
    let schedule = InputSchedule::from_record(record)
        .ok_or_else(|| TwinError::Record("no CGM readings".into()))?;
    let (bt, twin) = crate::lifecycle::backtest(
        &schedule,
        &opts.backtest,
        Some(opts.patient_id.clone()),
        &mut |d, n| progress("backtest", d, n),
    )?;
    let theta_samples = twin.theta_samples();
    // Learning from more data: the record's last days forecast by twins that saw d days
    // before them (crate::learning); the cones at the window's first origin are the figure.
    let hmax = opts
        .backtest
        .horizons_min
        .iter()
        .copied()
        .max()
        .unwrap_or(60) as f64;
    let span = schedule.truncated(opts.backtest.to_min + hmax);
    let learning = learning_curve(
        &span,
        &LearningOptions {
            days: opts.narrowing_days.clone(),
            eval_days: opts.learning_eval_days,
            backtest: opts.backtest.clone(),
        },
        &mut |d, done, n| {
            let k = opts
                .narrowing_days
                .iter()
                .position(|&x| x == d)
                .unwrap_or(0);
            if done == n {
                progress("learning from more data", k + 1, opts.narrowing_days.len());
            }
        },
    );
    let mut narrowing = Vec::new();
    let mut learning_tables = Vec::new();
    let mut learning_note = None;
    match &learning {
        Ok(c) => {
            for p in &c.points {
                if let Some((origin, f)) = &p.cone {
                    let d = p.days_of_data;
                    let label = if d == 1.0 {
                        "after 1 day of data".to_string()
                    } else {
                        format!("after {d} days of data")
                    };
                    narrowing.push((label, cone(*origin, f)));
                }
            }
            learning_tables.push(learning_table(c));
        }
        Err(e) => learning_note = Some(format!("Learning from more data: not measured ({e}).")),
    }
    // Parameters: population prior vs posterior (natural units).
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(opts.backtest.settings.seed);
    let parameters: Vec<ParameterPosterior> = (0..N_THETA)
        .map(|k| {
            let prior_samples = Normal::new(twin.prior.mean[k], twin.prior.sd[k])
                .map(|n| (0..2000).map(|_| n.sample(&mut rng).exp()).collect())
                .unwrap_or_default();
            ParameterPosterior {
                name: THETA_NAMES[k].into(),
                unit: THETA_UNITS[k].into(),
                description: THETA_DESCRIPTIONS[k].into(),
                prior_samples,
                posterior_samples: theta_samples.iter().map(|t| t[k].exp()).collect(),
            }
        })
        .collect();
    let backtest_rows: Vec<BacktestRow> = bt
        .horizons
        .iter()
        .map(|(h, s)| BacktestRow {
            horizon_min: h.parse().unwrap_or(0),
            n: s.n,
            rmse_mg_dl: s.rmse_mg_dl,
            mae_mg_dl: s.mae_mg_dl,
            persistence_rmse_mg_dl: s.persistence_rmse_mg_dl,
            coverage_80: s.coverage_80,
            coverage_95: s.coverage_95,
            mean_width_80_mg_dl: s.mean_width_80_mg_dl,
        })
        .collect();
    let mut backtest_rows = backtest_rows;
    backtest_rows.sort_by_key(|r| r.horizon_min);
    let c = &twin.calibration;
    let fmt = |v: f64| format!("{v:.4}");
    let calib_rows: Vec<Vec<String>> = (0..N_THETA)
        .map(|k| {
            let post: Vec<f64> = theta_samples.iter().map(|t| t[k].exp()).collect();
            let mut sorted = post.clone();
            sorted.sort_by(f64::total_cmp);
            let med = sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN);
            vec![
                THETA_NAMES[k].into(),
                THETA_UNITS[k].into(),
                fmt(twin.prior.mean[k].exp()),
                fmt(c.theta_map[k].exp()),
                format!("{:.3}", c.cov[k * N_THETA + k].sqrt()),
                fmt(med),
            ]
        })
        .collect();
    let mut tables = vec![(
        "Calibration: population prior centre, MAP on the first day (with Laplace log-SD), and the posterior median after the whole record".to_string(),
        ["parameter", "unit", "prior centre", "MAP (day 1)", "MAP log-SD", "posterior median (end)"].iter().map(|s| s.to_string()).collect(),
        calib_rows,
    )];
    tables.push((
        "Twin diagnostics".into(),
        vec!["quantity".into(), "value".into()],
        vec![
            vec![
                "base virtual patient".into(),
                twin.prior.base_patient.clone(),
            ],
            vec![
                "insulin dose scale (TDI_base / TDI_person)".into(),
                format!("{:.3}", c.insulin_scale),
            ],
            vec![
                "person's insulin on day 1, U/day".into(),
                format!("{:.1}", c.window_tdi_u_per_day),
            ],
            vec![
                "MAP fit RMSE vs prior-mean RMSE, mg/dL".into(),
                format!("{:.1} vs {:.1}", c.rmse_mg_dl, c.prior_rmse_mg_dl),
            ],
            vec!["calibration converged".into(), c.converged.to_string()],
            vec![
                "calibration diagnostics".into(),
                if c.diagnostics.is_empty() {
                    "none".into()
                } else {
                    c.diagnostics.join("; ")
                },
            ],
            vec![
                "particles".into(),
                opts.backtest.settings.n_particles.to_string(),
            ],
            vec!["forecast origins scored".into(), bt.n_origins.to_string()],
            vec![
                "mean assimilation update, ms".into(),
                format!("{:.2}", bt.mean_update_ms),
            ],
            vec!["backtest wall time, s".into(), format!("{:.1}", bt.wall_s)],
            vec![
                "observations skipped by the filter".into(),
                bt.skipped_observations.to_string(),
            ],
            vec![
                "minutes with long-acting basal carried over a missing log".into(),
                schedule.carried_long_acting_min.to_string(),
            ],
        ],
    ));
    let mut notes = vec![
        "Method. The twin is the UVA/Padova S2008 model (Dalla Man 2007; Kovatchev 2009) driven by the recorded boluses, basal insulin and carbohydrate. \
         Four parameters (insulin sensitivity Vmx, glucose production kp1, absorption rate kabs, carb factor) have a prior built from the simulator's 20 adult and adolescent virtual patients; \
         they are fitted by maximum a posteriori on the first day (Laplace uncertainty), then a 500-particle bootstrap filter assimilates every CGM reading, with process noise for unrecorded meals, \
         an Ornstein–Uhlenbeck glucose disturbance and an autocorrelated sensor bias. Forecasts know only the data up to their origin: no future meals or boluses; the basal in force continues."
            .to_string(),
        "Unknown body weight: insulin doses are scaled by the ratio of the base patient's total daily insulin to the person's (first day), and insulin sensitivity is calibrated. \
         Long-acting insulin is modelled as a flat basal appearance of the last 24 h of doses, carried forward up to 72 h over a missing log."
            .to_string(),
    ];
    notes.push(fit_quality(&bt, &parameters));
    notes.extend(learning_note);
    notes.extend(opts.import_notes.iter().cloned());
    tables.extend(learning_tables);
    let report = TwinReport {
        title: "medtwin patient twin report".into(),
        patient_id: opts.patient_id.clone(),
        data_citation: opts.citation.clone(),
        origin_label: opts.origin_label.clone(),
        cgm: Series {
            t_min: schedule.cgm.iter().map(|c| c.0).collect(),
            values: schedule.cgm.iter().map(|c| c.1).collect(),
        },
        carbs: schedule.carbs.clone(),
        boluses: schedule.boluses.clone(),
        cones: bt.cones.iter().map(|(o, f)| cone(*o, f)).collect(),
        narrowing,
        parameters,
        backtest: backtest_rows,
        notes,
        tables,
    };
    Ok(ReportOutput {
        report,
        backtest: bt,
        learning,
        twin,
    })
}

/// The learning-curve table: one row per twin (days of data before the evaluation window).
fn learning_table(c: &LearningCurve) -> (String, Vec<String>, Vec<Vec<String>>) {
    let rows = c
        .points
        .iter()
        .map(|p| {
            let h60 = p.horizons.get("60").copied().unwrap_or_default();
            vec![
                format!("{}", p.days_of_data),
                format!("{:.1}", p.mean_width_80_mg_dl),
                format!("{:.2}", p.coverage_80),
                format!("{:.2}", p.coverage_95),
                format!("{:.1}", h60.rmse_mg_dl),
                format!("{:.1}", h60.persistence_rmse_mg_dl),
                p.n.to_string(),
            ]
        })
        .collect();
    let skipped = if c.skipped_days.is_empty() {
        String::new()
    } else {
        format!(
            "; not enough record before the window for {:?} days",
            c.skipped_days
        )
    };
    (
        format!(
            "Learning from more data: the same window (the last {:.1} days, origins every hour, horizons 30/60/120 min) forecast by twins given only the days of data before it. Bands should narrow with more data while the 80 % band keeps covering about 80 %{skipped}",
            (c.eval_window_min.1 - c.eval_window_min.0) / 1440.0
        ),
        [
            "days of data",
            "mean 80 % width, mg/dL",
            "coverage 80 %",
            "coverage 95 %",
            "RMSE 60 min, mg/dL",
            "persistence RMSE 60 min",
            "scored forecasts",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        rows,
    )
}

/// Posterior SD / prior SD of a parameter above which the report says the data do not pin it
/// down (log scale).
pub const NOT_PINNED_SD_RATIO: f64 = 0.5;

/// The report's plain statement of fit quality: forecast error against persistence, band
/// coverage, and which parameters the data pin down (posterior/prior SD of the log-parameter).
fn fit_quality(bt: &BacktestResult, parameters: &[ParameterPosterior]) -> String {
    let sd = |v: &[f64]| {
        let l: Vec<f64> = v.iter().filter(|x| **x > 0.0).map(|x| x.ln()).collect();
        let n = l.len().max(2) as f64;
        let m = l.iter().sum::<f64>() / n;
        (l.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    };
    let mut pinned = Vec::new();
    let mut loose = Vec::new();
    for p in parameters {
        let r = sd(&p.posterior_samples) / sd(&p.prior_samples);
        let item = format!("{} ({r:.2})", p.name);
        if r > NOT_PINNED_SD_RATIO {
            loose.push(item);
        } else {
            pinned.push(item);
        }
    }
    let horizons: Vec<String> = ["30", "60", "120"]
        .iter()
        .filter_map(|h| bt.horizons.get(*h).map(|s| (h, s)))
        .map(|(h, s)| {
            format!(
                "{h} min: RMSE {:.1} mg/dL ({:.2} × persistence), 80 % band covers {:.0} %",
                s.rmse_mg_dl,
                s.rmse_mg_dl / s.persistence_rmse_mg_dl,
                100.0 * s.coverage_80
            )
        })
        .collect();
    format!(
        "Fit quality. Backtest of input-blind forecasts over this record: {}. Parameters the data pin down (posterior/prior SD of the log-parameter ≤ {NOT_PINNED_SD_RATIO}): {}; not pinned down (the prior still dominates, answers that depend on them are as uncertain as the population): {}. A small ratio after a particle filter can also mean the particles collapsed rather than that the data are informative. What-if and advice answers for meals and insulin rest on the mechanistic model's dose response, which the replay validation (`medtwin twin backtest --future-inputs recorded`) scores on recorded meals and boluses.",
        if horizons.is_empty() {
            "no horizon scored".to_string()
        } else {
            horizons.join("; ")
        },
        if pinned.is_empty() { "none".to_string() } else { pinned.join(", ") },
        if loose.is_empty() { "none".to_string() } else { loose.join(", ") }
    )
}
