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
    let opts = BacktestOptions {
        from_min: 0.0,
        to_min: 1440.0 * (1.0 + days),
        origin_every_min: 60.0,
        horizons_min: vec![30, 60, 120],
        settings: TwinSettings::default(),
        n_cones: 0,
        cone_horizon_min: 240,
    };
    let r = backtest(&sched, &opts, &mut |_, _| {}).expect("backtest");
    println!("{pid}: {}", serde_json::to_string(&r).unwrap());
}
