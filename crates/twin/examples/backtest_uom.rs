//! Backtest the twin on T1D-UOM participants and pool the scores:
//! `cargo run --release -p medtwin-twin --example backtest_uom -- DIR DAYS ID [ID ...]`.
//! Environment overrides of the noise settings (for tuning): MT_DSD, MT_TAU, MT_BSD, MT_BTAU,
//! MT_SENS_ABS, MT_SENS_REL, MT_GSD, MT_MEAL_RATE, MT_MEAL_G, MT_RW, MT_N, MT_H (horizons);
//! MT_DUMP=DIR writes every scored point per participant to DIR/ID.csv; MT_REPLAY=1 runs the
//! replay validation (forecasts told the recorded future meals, boluses and basal changes);
//! MT_LEARNT=1 gives plans the learnt response (`TwinSettings::learnt_plan_response`);
//! MT_COEF=1 prints the learnt responses at days 3, 6 and 9 instead of backtesting;
//! MT_CGM_ONLY=1 drops every meal and insulin entry (a CGM-only record); MT_EVERY=MIN sets the
//! spacing of forecast origins (default 60).
use medtwin_twin::backtest::{score, ScoredPoint};
use medtwin_twin::{backtest, BacktestOptions, InputSchedule, TwinSettings};

fn print(label: &str, scores: &std::collections::BTreeMap<String, medtwin_twin::HorizonScore>) {
    // in order of minutes (the keys are strings: "120" sorts before "30")
    let mut rows: Vec<_> = scores.iter().collect();
    rows.sort_by_key(|(h, _)| h.parse::<u32>().unwrap_or(u32::MAX));
    for (h, m) in rows {
        println!(
            "{label} h={h:>3} rmse {:6.1} pers {:6.1} ratio {:.3} cov80 {:.3} cov95 {:.3} w80 {:5.1} bias {:6.1} n {}",
            m.rmse_mg_dl,
            m.persistence_rmse_mg_dl,
            m.rmse_mg_dl / m.persistence_rmse_mg_dl,
            m.coverage_80,
            m.coverage_95,
            m.mean_width_80_mg_dl,
            m.bias_mg_dl,
            m.n
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: backtest_uom DIR DAYS ID [ID ...]");
        std::process::exit(2);
    }
    let dir = std::path::PathBuf::from(&args[1]);
    let days: f64 = args[2].parse().unwrap_or(14.0);
    let mut settings = TwinSettings::default();
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<f64>().ok());
    let n = &mut settings.noise;
    if let Some(v) = env("MT_GSD") {
        n.glucose_sd_mg_dl_per_sqrt_min = v;
    }
    if let Some(v) = env("MT_MEAL_RATE") {
        n.unannounced_meal_rate_per_h = v;
    }
    if let Some(v) = env("MT_MEAL_G") {
        n.unannounced_meal_mean_g = v;
    }
    if let Some(v) = env("MT_SENS_ABS") {
        n.sensor_sd_abs_mg_dl = v;
    }
    if let Some(v) = env("MT_SENS_REL") {
        n.sensor_sd_rel = v;
    }
    if let Some(v) = env("MT_RW") {
        n.theta_rw_sd_per_sqrt_h = [v, v];
    }
    if let Some(v) = env("MT_DSD") {
        n.disturbance_sd_mg_kg_min = v;
    }
    if let Some(v) = env("MT_TAU") {
        n.disturbance_tau_min = v;
    }
    if let Some(v) = env("MT_BSD") {
        n.sensor_bias_sd_mg_dl = v;
    }
    if let Some(v) = env("MT_BTAU") {
        n.sensor_bias_tau_min = v;
    }
    settings.learnt_plan_response = std::env::var("MT_LEARNT").is_ok_and(|v| v == "1");
    if let Some(v) = env("MT_N") {
        settings.n_particles = v as usize;
    }
    let horizons: Vec<u32> = std::env::var("MT_H")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or(vec![30, 60, 120]);
    let mut pooled: Vec<ScoredPoint> = Vec::new();
    let mut pooled_risk = Vec::new();
    for pid in &args[3..] {
        let (rec, _rep) = match medtwin_io::import_t1d_uom(&dir, pid) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("{pid}: import failed: {e}");
                continue;
            }
        };
        let Some(mut sched) = InputSchedule::from_record(&rec) else {
            continue;
        };
        if std::env::var("MT_CGM_ONLY").is_ok_and(|v| v == "1") {
            sched = InputSchedule {
                cgm: sched.cgm,
                origin_utc: sched.origin_utc,
                ..InputSchedule::default()
            };
        }
        if std::env::var("MT_COEF").is_ok_and(|v| v == "1") {
            for d in [3.0, 6.0, 9.0] {
                for h in [60.0, 120.0, 240.0] {
                    let r = medtwin_twin::hybrid::plan_model(&sched, d * 1440.0 + 720.0, h, None);
                    if let Some(r) = r {
                        println!(
                            "{pid} day {d} h {h}: ridge mg/dL per feature (carbs tau 40/20/total, insulin tau 70/35/total) {:.2?} ({} meal boluses)",
                            r.ridge_mg_dl, r.n_meal_boluses
                        );
                    }
                }
            }
            continue;
        }
        let opts = BacktestOptions {
            future_inputs_recorded: std::env::var("MT_REPLAY").is_ok_and(|v| v == "1"),
            from_min: 0.0,
            to_min: 1440.0 * (1.0 + days),
            origin_every_min: env("MT_EVERY").unwrap_or(60.0),
            horizons_min: horizons.clone(),
            settings: settings.clone(),
            n_cones: 0,
            cone_horizon_min: 0,
        };
        match backtest(&sched, &opts, &mut |_, _| {}) {
            Ok((r, _)) => {
                print(pid, &r.horizons);
                print(
                    &format!("{pid} (meal/bolus in horizon)"),
                    &r.horizons_with_inputs,
                );
                println!(
                    "{pid} wall {:.1} s, mean update {:.2} ms, origins {}, skipped obs {}",
                    r.wall_s, r.mean_update_ms, r.n_origins, r.skipped_observations
                );
                if let Ok(dump) = std::env::var("MT_DUMP") {
                    let path = std::path::Path::new(&dump).join(format!("{pid}.csv"));
                    let mut t = String::from(
                        "origin_min,horizon_min,observed_mg_dl,median_mg_dl,persistence_mg_dl,lo80,hi80,lo95,hi95\n",
                    );
                    for p in &r.points {
                        t += &format!(
                            "{},{},{},{},{},{},{},{},{}\n",
                            p.origin_min,
                            p.horizon_min,
                            p.observed_mg_dl,
                            p.median_mg_dl,
                            p.persistence_mg_dl,
                            p.lo80,
                            p.hi80,
                            p.lo95,
                            p.hi95
                        );
                    }
                    if let Err(e) = std::fs::write(&path, t) {
                        eprintln!("{}: {e}", path.display());
                    }
                    let mut t = String::from("kind,t_min,value\n");
                    for (kind, v) in [
                        ("cgm", &sched.cgm),
                        ("carbs", &sched.carbs),
                        ("bolus", &sched.boluses),
                        ("basal_rate", &sched.basal_rates),
                        ("long_acting", &sched.long_acting),
                    ] {
                        for (tm, x) in v {
                            t += &format!("{kind},{tm},{x}\n");
                        }
                    }
                    let path = std::path::Path::new(&dump).join(format!("{pid}.inputs.csv"));
                    if let Err(e) = std::fs::write(&path, t) {
                        eprintln!("{}: {e}", path.display());
                    }
                }
                pooled.extend(r.points);
                pooled_risk.extend(r.risk_points);
            }
            Err(e) => eprintln!("{pid}: backtest failed: {e}"),
        }
    }
    print("pooled", &score(&pooled, &horizons));
    let hmax = horizons.iter().copied().max().unwrap_or(60);
    let risk = medtwin_twin::RiskScore::from_points(&pooled_risk, hmax);
    for (name, e) in [("P(<70)", &risk.below_70), ("P(>250)", &risk.above_250)] {
        println!(
            "pooled {name} within {hmax} min: Brier {:.4} base-rate {:.4} skill {:.3} mean forecast {:.3} observed {:.3} n {}",
            e.brier, e.brier_base_rate, e.brier_skill, e.mean_predicted, e.base_rate, e.n
        );
        for b in e.reliability.iter().filter(|b| b.n > 0) {
            println!(
                "  [{:.1}, {:.1}): n {:>4} forecast {:.3} observed {:.3}",
                b.p_lo, b.p_hi, b.n, b.mean_predicted, b.observed_frequency
            );
        }
    }
    let with_inputs: Vec<ScoredPoint> =
        pooled.into_iter().filter(|p| p.inputs_in_horizon).collect();
    print(
        "pooled (meal/bolus in horizon)",
        &score(&with_inputs, &horizons),
    );
}
