//! Uncertainty that narrows as data accrue, on T1D-UOM participants (issue 14, item 3):
//! `cargo run --release -p medtwin-twin --example learning_uom -- DIR SPAN_DAYS EVAL_DAYS ID [ID ...]`.
//! Each record is cut to its first SPAN_DAYS days; the last EVAL_DAYS of that are forecast by
//! twins that saw 1, 3, 7 and 14 days before them (MT_DAYS=1,3,7,14 overrides), origins every
//! 60 min, horizons 30/60/120 min. Prints per participant and pooled: mean 80 % width,
//! coverage 80/95 %, 60-min RMSE.
use medtwin_twin::{learning_curve, BacktestOptions, InputSchedule, LearningOptions, TwinSettings};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!("usage: learning_uom DIR SPAN_DAYS EVAL_DAYS ID [ID ...]");
        std::process::exit(2);
    }
    let dir = std::path::PathBuf::from(&args[1]);
    let span: f64 = args[2].parse().unwrap_or(17.0);
    let eval_days: f64 = args[3].parse().unwrap_or(2.0);
    let days: Vec<f64> = std::env::var("MT_DAYS")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or(vec![1.0, 3.0, 7.0, 14.0]);
    let opts = LearningOptions {
        days: days.clone(),
        eval_days,
        backtest: BacktestOptions {
            from_min: 0.0,
            to_min: f64::INFINITY,
            origin_every_min: 60.0,
            horizons_min: vec![30, 60, 120],
            settings: TwinSettings::default(),
            n_cones: 0,
            cone_horizon_min: 0,
            future_inputs_recorded: false,
        },
    };
    // pooled per d: (sum width, n, inside80, inside95, sum sq err 60, n60)
    let mut pooled = vec![(0.0, 0usize, 0.0, 0.0, 0.0, 0usize); days.len()];
    for pid in &args[4..] {
        let (rec, _rep) = match medtwin_io::import_t1d_uom(&dir, pid) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("{pid}: import failed: {e}");
                continue;
            }
        };
        let Some(full) = InputSchedule::from_record(&rec) else {
            continue;
        };
        let sched = full.truncated(span * 1440.0);
        let t0 = std::time::Instant::now();
        let c = match learning_curve(&sched, &opts, &mut |_, _, _| {}) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{pid}: {e}");
                continue;
            }
        };
        for p in &c.points {
            let h60 = p.horizons.get("60").copied().unwrap_or_default();
            println!(
                "{pid} d={:>4} w80 {:6.1} cov80 {:.3} cov95 {:.3} rmse60 {:5.1} pers60 {:5.1} n {}",
                p.days_of_data,
                p.mean_width_80_mg_dl,
                p.coverage_80,
                p.coverage_95,
                h60.rmse_mg_dl,
                h60.persistence_rmse_mg_dl,
                p.n
            );
            let k = days.iter().position(|&d| d == p.days_of_data).unwrap_or(0);
            let a = &mut pooled[k];
            a.0 += p.mean_width_80_mg_dl * p.n as f64;
            a.1 += p.n;
            a.2 += p.coverage_80 * p.n as f64;
            a.3 += p.coverage_95 * p.n as f64;
            a.4 += h60.rmse_mg_dl.powi(2) * h60.n as f64;
            a.5 += h60.n;
        }
        println!(
            "{pid} width ratio last/first {:?}, skipped {:?}, wall {:.1} s",
            c.width_ratio(),
            c.skipped_days,
            t0.elapsed().as_secs_f64()
        );
    }
    for (k, d) in days.iter().enumerate() {
        let a = pooled[k];
        let n = a.1.max(1) as f64;
        println!(
            "pooled d={d:>4} w80 {:6.1} cov80 {:.3} cov95 {:.3} rmse60 {:5.1} n {}",
            a.0 / n,
            a.2 / n,
            a.3 / n,
            (a.4 / a.5.max(1) as f64).sqrt(),
            a.1
        );
    }
}
