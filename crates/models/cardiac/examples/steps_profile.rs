//! Where the integrator spends its steps in one control beat (diagnostic):
//! `steps_profile [rtol] [max_step_ms] [table_dv_mv] [be|exp] [beats] [vtable_dv_mv]`.
use medtwin_cardiac::model::{OrdParams, INITIAL_STATE_CL2000};
use medtwin_cardiac::solver::{Integrator, SolverOptions};
fn main() {
    let rtol: f64 = std::env::args().nth(1).map_or(1e-4, |s| s.parse().unwrap());
    let mut it = Integrator::new(
        OrdParams::control(),
        SolverOptions {
            rtol,
            max_step_ms: std::env::args().nth(2).map_or(5.0, |s| s.parse().unwrap()),
            markov_table_dv_mv: std::env::args().nth(3).map_or(0.0, |s| s.parse().unwrap()),
            markov_be_predictor: std::env::args().nth(4).is_none_or(|s| s == "be"),
            voltage_table_dv_mv: std::env::args().nth(6).map_or(0.0, |s| s.parse().unwrap()),
            ..Default::default()
        },
    );
    let beats: usize = std::env::args().nth(5).map_or(1, |s| s.parse().unwrap());
    let mut y = INITIAL_STATE_CL2000;
    let mut o = it.beat(&mut y, 2000.0, true).unwrap();
    for _ in 1..beats {
        o = it.beat(&mut y, 2000.0, true).unwrap();
    }
    println!("table (computed, applied): {:?}", it.table_stats());
    let edges = [
        0.0, 1.0, 5.0, 20.0, 100.0, 250.0, 300.0, 400.0, 1000.0, 2000.0,
    ];
    for w in edges.windows(2) {
        let n = o
            .trace
            .iter()
            .filter(|p| p.t_ms > w[0] && p.t_ms <= w[1])
            .count();
        println!("{:>6}-{:<6} {n}", w[0], w[1]);
    }
    println!(
        "steps {} rejected {} qnet {}",
        o.steps, o.rejected, o.qnet_nc_per_uf
    );
    let mut hist = [0usize; 8];
    for w in o.trace.windows(2) {
        let h = w[1].t_ms - w[0].t_ms;
        let k = ((h.log10() + 3.0).floor().max(0.0) as usize).min(7);
        hist[k] += 1;
    }
    println!("step sizes by decade from 1e-3 ms: {hist:?}");
}
