//! CPU bound of the server's what-if limits (issue 15): the largest request
//! `POST /patients/{id}/whatif` accepts — 8 plans of 1 000 entries each, a 720-min horizon —
//! run through [`medtwin_server::live::run_whatif`] (what the handler runs) on a twin of the
//! bundled T1D-UOM participant 2313 with `PARTICLES` particles (the server's default: 500),
//! against a typical request (1 plan, 3 entries, 240 min). Wall time and this process's CPU
//! time (user + system, all threads), best of `REPS`.
//!
//! ```sh
//! cargo run --release -p medtwin-server --example whatif_cost -- [PARTICLES] [REPS]
//! ```

use std::path::Path;
use std::time::Instant;

use medtwin_server::live::{run_whatif, BasalSpec, BolusSpec, MealSpec, PlanSpec, WhatifRequest};
use medtwin_twin::{InputSchedule, TwinEngine, TwinSettings};

/// CPU seconds (user + system) of this process so far.
fn cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<f64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    (f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0)) / 100.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(500);
    let reps: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3);
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/t1d-uom");
    let (rec, _) = medtwin_io::import_t1d_uom(&data, "2313").expect("bundled T1D-UOM data");
    let sched = InputSchedule::from_record(&rec).expect("a schedule");
    let settings = TwinSettings {
        n_particles: n,
        ..TwinSettings::default()
    };
    let mut e = TwinEngine::start(&sched, settings).expect("calibration");
    e.assimilate_until(&sched, e.filter.t_min + 120.0)
        .expect("assimilation");
    let doc = e.to_twin(&sched, Some("p".into()));

    // The largest accepted request: 8 plans × 1 000 entries, horizon 720 min.
    let h = 720u32;
    let big_plan = |k: usize| PlanSpec {
        name: format!("plan{k}"),
        meals: (0..334)
            .map(|i| MealSpec {
                at_min: (i * 2 % 720) as f64,
                carbs_g: 1.0,
            })
            .collect(),
        boluses: (0..333)
            .map(|i| BolusSpec {
                at_min: (i * 2 % 720) as f64 + 1.0,
                units: 0.01,
            })
            .collect(),
        basal: (0..333)
            .map(|i| BasalSpec {
                at_min: (i * 2 % 720) as f64,
                u_per_h: 0.8,
            })
            .collect(),
    };
    let largest = WhatifRequest {
        horizon_min: h,
        plans: (0..8).map(big_plan).collect(),
    };
    let typical = WhatifRequest {
        horizon_min: 240,
        plans: vec![PlanSpec {
            name: "meal".into(),
            meals: vec![MealSpec {
                at_min: 0.0,
                carbs_g: 60.0,
            }],
            boluses: vec![BolusSpec {
                at_min: 0.0,
                units: 6.0,
            }],
            basal: vec![BasalSpec {
                at_min: 0.0,
                u_per_h: 0.8,
            }],
        }],
    };
    for (name, req) in [("typical", &typical), ("largest accepted", &largest)] {
        let entries: usize = req
            .plans
            .iter()
            .map(|p| p.meals.len() + p.boluses.len() + p.basal.len())
            .sum();
        let (mut wall, mut cpu) = (f64::INFINITY, f64::INFINITY);
        for _ in 0..reps {
            let (t, c) = (Instant::now(), cpu_s());
            let out = run_whatif("p", &doc, req).expect("what-if");
            assert_eq!(out.outcomes.len(), req.plans.len());
            wall = wall.min(t.elapsed().as_secs_f64());
            cpu = cpu.min(cpu_s() - c);
        }
        println!(
            "{name}: {} plans, {entries} entries, horizon {} min, {n} particles: wall {wall:.2} s, CPU {cpu:.2} s (best of {reps})",
            req.plans.len(),
            req.horizon_min
        );
    }
}
