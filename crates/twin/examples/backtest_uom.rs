//! Backtest the twin on one T1D-UOM participant: `cargo run --release -p medtwin-twin --example
//! backtest_uom -- DIR PARTICIPANT [DAYS]`. Prints metrics JSON.
use medtwin_twin::{backtest, BacktestOptions, InputSchedule, TwinSettings};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(&args[1]);
    let pid = &args[2];
    let days: f64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(10.0);
    let (rec, _rep) = medtwin_io::import_t1d_uom(&dir, pid).expect("import");
    let sched = InputSchedule::from_record(&rec).expect("cgm");
    let mut settings = TwinSettings::default();
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<f64>().ok());
    if let Some(v) = env("MT_GSD") {
        settings.noise.glucose_sd_mg_dl_per_sqrt_min = v;
    }
    if let Some(v) = env("MT_MEAL_RATE") {
        settings.noise.unannounced_meal_rate_per_h = v;
    }
    if let Some(v) = env("MT_MEAL_G") {
        settings.noise.unannounced_meal_mean_g = v;
    }
    if let Some(v) = env("MT_SENS_ABS") {
        settings.noise.sensor_sd_abs_mg_dl = v;
    }
    if let Some(v) = env("MT_SENS_REL") {
        settings.noise.sensor_sd_rel = v;
    }
    if let Some(v) = env("MT_RW") {
        settings.noise.theta_rw_sd_per_sqrt_h = [v, v];
    }
    if let Some(v) = env("MT_DSD") {
        settings.noise.disturbance_sd_mg_kg_min = v;
    }
    if let Some(v) = env("MT_TAU") {
        settings.noise.disturbance_tau_min = v;
    }
    if let Some(v) = env("MT_BSD") {
        settings.noise.sensor_bias_sd_mg_dl = v;
    }
    if let Some(v) = env("MT_BTAU") {
        settings.noise.sensor_bias_tau_min = v;
    }
    if let Some(v) = env("MT_N") {
        settings.n_particles = v as usize;
    }
    let opts = BacktestOptions {
        from_min: 0.0,
        to_min: 1440.0 * (1.0 + days),
        origin_every_min: 60.0,
        horizons_min: std::env::var("MT_H")
            .ok()
            .map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect())
            .unwrap_or(vec![30, 60, 120]),
        settings,
        n_cones: 0,
        cone_horizon_min: 240,
    };
    let (r, _) = backtest(&sched, &opts, &mut |_, _| {}).expect("backtest");
    for (h, m) in &r.horizons {
        println!(
            "{pid} h={h:>3} rmse {:6.1} pers {:6.1} ratio {:.3} cov80 {:.2} cov95 {:.2} w80 {:5.1} bias {:6.1} n {}",
            m.rmse_mg_dl, m.persistence_rmse_mg_dl, m.rmse_mg_dl / m.persistence_rmse_mg_dl, m.coverage_80, m.coverage_95, m.mean_width_80_mg_dl, m.bias_mg_dl, m.n
        );
    }
    println!(
        "{pid} wall {:.1} s, update {:.2} ms, skipped obs {}",
        r.wall_s, r.mean_update_ms, r.skipped_observations
    );
}
