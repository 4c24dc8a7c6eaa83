//! Timing entry point for the libRoadRunner comparison (`benchmarks/sbml_vs_roadrunner.py`):
//! load+compile an SBML file and simulate it once with 1000 output intervals.
//!
//! ```sh
//! cargo run --release -p medtwin-sbml --example sbml_bench -- MODEL.xml --end T \
//!     [--steps 1000] [--rtol 1e-6] [--atol 1e-12] [--repeat 5] [--limit-s 60] [--method auto|explicit|stiff|rosenbrock] [--all-concentrations] [--out result.csv]
//! ```
//! Prints one JSON line: `load_ms` (median over `--repeat` loads: read, parse, compile,
//! initial values), `sim_ms` (median over `--repeat` simulations from 0 to T; `sim_min_ms` the
//! fastest of them, `sim_all_ms` all of them; a single run when
//! one takes over 5 s; an error once one exceeds `--limit-s`), the number of states, and the
//! error (if any).

use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first().cloned() else {
        eprintln!("usage: sbml_bench MODEL.xml --end T [--steps N] [--rtol R] [--atol A] [--repeat K] [--out CSV]");
        std::process::exit(2);
    };
    let end: f64 = arg(&args, "--end", 100.0);
    let steps: usize = arg(&args, "--steps", 1000);
    let repeat: usize = arg(&args, "--repeat", 5).max(1);
    let out: String = arg(&args, "--out", String::new());
    let opts = medtwin_sbml::SimulateOptions {
        start: 0.0,
        end,
        steps,
        rtol: arg(&args, "--rtol", 1e-6),
        atol: arg(&args, "--atol", 1e-12),
        method: match arg(&args, "--method", String::from("auto")).as_str() {
            "explicit" => medtwin_sbml::Method::Explicit,
            "stiff" => medtwin_sbml::Method::Stiff,
            "rosenbrock" => medtwin_sbml::Method::Rosenbrock,
            _ => medtwin_sbml::Method::Auto,
        },
        ..Default::default()
    };
    let all_conc = args.iter().any(|a| a == "--all-concentrations");
    let mut loads = Vec::new();
    let mut model = None;
    for _ in 0..repeat {
        let t = Instant::now();
        match medtwin_sbml::load_sbml(&path) {
            Ok(m) => model = Some(m),
            Err(e) => {
                println!(
                    "{{\"model\":\"{path}\",\"error\":\"{}\"}}",
                    e.to_string().replace('"', "'")
                );
                return;
            }
        }
        loads.push(1e3 * t.elapsed().as_secs_f64());
    }
    let Some(model) = model else { return };
    let mut opts = opts;
    if all_conc {
        // Species columns as concentrations (libRoadRunner's `[S]`).
        opts.concentration = model.species_ids().to_vec();
    }
    let mut sims = Vec::new();
    let mut table = None;
    let limit: f64 = arg(&args, "--limit-s", 60.0);
    for _ in 0..repeat {
        let t = Instant::now();
        let deadline = t + std::time::Duration::from_secs_f64(limit);
        match medtwin_sbml::simulate_with_deadline(&model, &opts, deadline) {
            Ok(tb) => table = Some(tb),
            Err(e) => {
                println!(
                    "{{\"model\":\"{path}\",\"load_ms\":{},\"error\":\"{}\"}}",
                    median(loads),
                    e.to_string().replace('"', "'")
                );
                return;
            }
        }
        sims.push(1e3 * t.elapsed().as_secs_f64());
        if t.elapsed().as_secs_f64() > 5.0 {
            break; // slow: one run is enough
        }
    }
    if let (Some(tb), false) = (&table, out.is_empty()) {
        if let Err(e) = medtwin_sbml::write_csv(tb, &out) {
            eprintln!("{e}");
        }
    }
    println!(
        "{{\"model\":\"{path}\",\"load_ms\":{:.4},\"sim_ms\":{:.4},\"sim_min_ms\":{:.4},\"sim_all_ms\":[{}],\"states\":{},\"rows\":{}}}",
        median(loads),
        median(sims.clone()),
        sims.iter().copied().fold(f64::INFINITY, f64::min),
        sims.iter()
            .map(|v| format!("{v:.4}"))
            .collect::<Vec<_>>()
            .join(","),
        model.initial_state().len(),
        table.map(|t| t.rows.len()).unwrap_or(0)
    );
}
