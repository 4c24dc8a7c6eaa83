//! The benchmark fit of `benchmarks/petab.md` without the CLI: 10 Latin-hypercube starts
//! (seed 1, no nominal start), Fisher LM, 20000 evaluations and 30 s per start, 5 s per
//! simulation.
//!
//! `cargo run --release -p medtwin-petab --example fit_bench -- P.yaml sens|fd`

use medtwin_petab::fit::{fit, FitOptions, Gradient};
use medtwin_petab::{Evaluator, Problem, SimSettings};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: fit_bench P.yaml sens|fd");
        std::process::exit(2);
    }
    let gradient = match args[2].as_str() {
        "fd" => Gradient::FiniteDifferences,
        _ => Gradient::Sensitivities,
    };
    let pr = Problem::load(&args[1]).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
    let ev = Evaluator::new(
        &pr,
        SimSettings {
            time_limit: Some(5.0),
            ..SimSettings::default()
        },
    )
    .unwrap();
    let opts = FitOptions {
        starts: 10,
        seed: 1,
        max_evals: 20000,
        nominal_start: false,
        time_limit: Some(30.0),
        gradient,
        ..FitOptions::default()
    };
    let r = fit(&ev, &opts).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
    let mut secs: Vec<f64> = r.starts.iter().map(|s| s.seconds).collect();
    secs.sort_by(f64::total_cmp);
    let reach = r
        .starts
        .iter()
        .filter(|s| s.objective <= r.nominal_objective + 0.1)
        .count();
    println!(
        "best {:.4} nominal {:.4} diff {:+.2e} within0.1 {} reach_nominal {} median_s {:.2} min_s {:.2} max_s {:.2} wall {:.1} evals {}",
        r.best().objective,
        r.nominal_objective,
        r.best().objective - r.nominal_objective,
        r.within(0.1).0,
        reach,
        secs[secs.len() / 2],
        secs[0],
        secs[secs.len() - 1],
        r.seconds,
        r.starts.iter().map(|s| s.evals).sum::<usize>()
    );
}
