//! Simulation-throughput benchmark, the same workload as `medtwin bench` (reference scenario:
//! 3 meals a day, basal-bolus, noise-free Dexcom, Insulet; all 30 patients) without building the
//! CLI.
//!
//! Usage: `cargo run --release -p medtwin-t1d --example bench_sim -- [--days 1] [--reps 5]
//! [--noise] [--pid] [--closed-form-insulin]` (single-threaded; `--noise` switches Dexcom noise
//! on, `--pid` replaces basal-bolus by simglucose's PID controller, the trial's second arm;
//! `--closed-form-insulin` solves the insulin block exactly and integrates only the gut/glucose
//! states, `VirtualPatient::set_closed_form_insulin`).

use medtwin_core::Timeline;
use medtwin_simulate::SolverOptions;
use medtwin_t1d::controller::{Controller, ControllerSpec};
use medtwin_t1d::env::{simulate_patient_integrated, SummaryAccumulator};
use medtwin_t1d::scenario::{Scenario, CARBS_G};
use std::time::Instant;

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU time of this thread, ns (Linux `/proc/thread-self/schedstat`; `None` elsewhere): on a
/// shared machine wall time includes the time other processes hold the core.
fn cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let days = arg(&args, "--days", 1).max(1);
    let reps = arg(&args, "--reps", 5).max(1) as usize;
    let names = medtwin_t1d::patient_names();
    let mut scen = Scenario::reference_day(names.clone());
    let mut tl = Timeline::new((1440 * days) as f64);
    for d in 0..days {
        for (at, g) in [(420.0, 45.0), (720.0, 70.0), (1080.0, 80.0)] {
            tl.add_dose(d as f64 * 1440.0 + at, CARBS_G, g)?;
        }
    }
    scen.timeline = tl;
    scen.duration_min = 1440 * days;
    scen.sensor_noise = args.iter().any(|a| a == "--noise");
    if args.iter().any(|a| a == "--pid") {
        scen.controller = ControllerSpec::Pid {
            p: 1e-3,
            i: 1e-5,
            d: 1e-3,
            target_mg_dl: 140.0,
        };
    }
    let closed_form = args.iter().any(|a| a == "--closed-form-insulin");
    let params: Vec<_> = names
        .iter()
        .map(|n| medtwin_t1d::patient(n))
        .collect::<Result<_, _>>()?;
    let fingerprint = std::cell::Cell::new(0u64);
    let work = std::cell::Cell::new(medtwin_simulate::SolverStats::default());
    let run =
        |i: usize, p: &medtwin_t1d::PatientParams| -> Result<f64, Box<dyn std::error::Error>> {
            let mut acc = SummaryAccumulator::default();
            let mut c = Controller::new(&scen.controller, p);
            let mut fp = 0u64;
            let s = simulate_patient_integrated(
                p,
                &scen,
                i,
                1,
                SolverOptions::default(),
                closed_form,
                &mut c,
                |r| {
                    acc.push(r);
                    fp = fp.rotate_left(7) ^ r.sc_glucose_mg_dl.to_bits() ^ r.cgm_mg_dl.to_bits();
                },
            )?;
            let mut w = work.get();
            w.rhs_evals += s.rhs_evals;
            w.accepted += s.accepted;
            w.rejected += s.rejected;
            w.restarts += s.restarts;
            work.set(w);
            fingerprint.set(fingerprint.get().rotate_left(3) ^ fp);
            Ok(acc
                .finish()
                .map(|s| s.metrics.mean_mg_dl)
                .unwrap_or(f64::NAN))
        };
    for (i, p) in params.iter().enumerate() {
        run(i, p)?;
    }
    // bit pattern of every row's sc glucose and CGM of the warm-up pass: equal fingerprints mean
    // bit-identical trajectories
    let fp = fingerprint.get();
    let (w, pd0) = (work.get(), (params.len() as u64 * days) as f64);
    println!(
        "per patient-day: {:.0} right-hand-side evaluations, {:.0} accepted steps, {:.0} rejected, {:.0} restarts",
        w.rhs_evals as f64 / pd0,
        w.accepted as f64 / pd0,
        w.rejected as f64 / pd0,
        w.restarts as f64 / pd0
    );
    let mut per_rep = Vec::new();
    let mut check = 0.0;
    let pd = (params.len() as u64 * days) as f64;
    let c0 = cpu_ns();
    for _ in 0..reps {
        let t0 = Instant::now();
        for (i, p) in params.iter().enumerate() {
            check += run(i, p)?;
        }
        per_rep.push(t0.elapsed().as_secs_f64() / pd);
    }
    per_rep.sort_by(|a, b| a.total_cmp(b));
    let med = per_rep[per_rep.len() / 2];
    // The kernel updates a thread's CPU time at scheduler ticks (~4 ms): measured over all
    // repetitions together, not per repetition.
    if let (Some(c0), Some(c1)) = (c0, cpu_ns()) {
        let c = (c1 - c0) as f64 * 1e-9 / (pd * reps as f64);
        println!(
            "CPU time (this thread, all reps): {:.1} us per patient-day ({:.0} patient-days per CPU-second)",
            1e6 * c,
            1.0 / c
        );
    }
    println!(
        "30 patients x {days} day(s) x {reps} rep(s), single thread, wall: median {:.1} us per patient-day \
         (min {:.1}, max {:.1}; {:.0} patient-days/s); checksum {:.6}, fingerprint {fp:016x}",
        1e6 * med,
        1e6 * per_rep[0],
        1e6 * per_rep[per_rep.len() - 1],
        1.0 / med,
        check / reps as f64
    );
    Ok(())
}
