//! In-silico evaluation of the controllers in the style of Kovatchev et al., *In silico
//! preclinical trials: a proof of concept in closed-loop control of type 1 diabetes*, J Diabetes
//! Sci Technol 3(1):44–55, 2009: all 30 virtual patients, Dexcom CGM noise on, several days of
//! simglucose-style random meals (NOTES.md §3.10), and three controllers — MPC
//! ([`medtwin_t1d::mpc`]), simglucose's basal-bolus and PID.
//!
//! Usage: `cargo run --release -p medtwin-t1d --example evaluate_controllers -- OUT.csv
//! [--days 5] [--seed 1] [--only SUBSTRING] [--trace DIR] [--controllers mpc,basal-bolus,pid]`
//!
//! Prints, per patient group, mean TIR (70–180 mg/dL), mean % < 70, mean % < 54, the largest
//! % < 54 of any patient and mean glucose, then checks the targets (MPC mean TIR ≥ basal-bolus;
//! MPC mean % < 70 ≤ half of basal-bolus's; no MPC patient > 1 % < 54) and the MPC decision time.
//! Writes a CVGA-ready CSV (Magni et al., JDST 2(4):630, 2008): per controller and patient, the
//! 2.5th and 97.5th percentiles of glucose clipped to 50–400 mg/dL. Metrics are computed on the
//! subcutaneous glucose (simglucose's "BG") at the CGM sample times, every 3 min.
//! Every controller sees the same meals and the same sensor noise for a given patient.

use medtwin_simulate::SolverOptions;
use medtwin_t1d::controller::{Controller, ControllerSpec};
use medtwin_t1d::env::{patient_seed, simulate_patient_with};
use medtwin_t1d::metrics::glycaemic_metrics;
use medtwin_t1d::random_meals::RandomMealSpec;
use medtwin_t1d::scenario::Scenario;
use medtwin_t1d::sensor::SensorKind;
use rayon::prelude::*;
use std::io::Write;

struct Outcome {
    patient: String,
    group: String,
    controller: String,
    tir: f64,
    tbr70: f64,
    tbr54: f64,
    mean: f64,
    tar250: f64,
    p025: f64,
    p975: f64,
    insulin_u_per_day: f64,
    mpc_calls: u64,
    mpc_total_s: f64,
    mpc_max_s: f64,
    mpc_over_20ms: u64,
    error: Option<String>,
}

/// Percentile with linear interpolation between order statistics (numpy's default).
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q / 100.0 * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut out_path: Option<String> = None;
    let (mut days, mut seed) = (5u64, 1u64);
    let mut only: Option<String> = None;
    let mut trace_dir: Option<String> = None;
    let mut which = vec![
        "mpc".to_string(),
        "basal-bolus".to_string(),
        "pid".to_string(),
    ];
    let mut i = 0;
    while i < args.len() {
        let next = |i: usize| {
            args.get(i + 1)
                .cloned()
                .unwrap_or_else(|| panic!("{} needs a value", args[i]))
        };
        match args[i].as_str() {
            "--days" => {
                days = next(i).parse().expect("--days: integer");
                i += 1;
            }
            "--seed" => {
                seed = next(i).parse().expect("--seed: integer");
                i += 1;
            }
            "--trace" => {
                trace_dir = Some(next(i));
                i += 1;
            }
            "--only" => {
                only = Some(next(i));
                i += 1;
            }
            "--controllers" => {
                which = next(i).split(',').map(str::to_string).collect();
                i += 1;
            }
            a => out_path = Some(a.to_string()),
        }
        i += 1;
    }
    let Some(out_path) = out_path else {
        eprintln!("usage: evaluate_controllers OUT.csv [--days N] [--seed S] [--only SUBSTR] [--controllers a,b]");
        std::process::exit(2);
    };
    let names = medtwin_t1d::patient_names();
    let mut base = Scenario::reference_day(names.clone());
    base.timeline = medtwin_core::Timeline::new((1440 * days) as f64);
    base.duration_min = 1440 * days;
    base.sensor = SensorKind::Dexcom;
    base.sensor_noise = true;
    base.sensor_seed = seed;
    base.random_meals = Some(RandomMealSpec { seed });
    let specs: Vec<(String, ControllerSpec)> = which
        .iter()
        .map(|w| {
            let spec = match w.as_str() {
                "mpc" => ControllerSpec::mpc_default(),
                "basal-bolus" => ControllerSpec::default(),
                "pid" => ControllerSpec::Pid {
                    p: 1e-3,
                    i: 1e-5,
                    d: 1e-3,
                    target_mg_dl: 140.0,
                },
                other => panic!("unknown controller {other}"),
            };
            (w.clone(), spec)
        })
        .collect();
    let jobs: Vec<(usize, String, usize)> = names
        .iter()
        .enumerate()
        .filter(|(_, n)| only.as_ref().is_none_or(|o| n.contains(o.as_str())))
        .flat_map(|(k, n)| (0..specs.len()).map(move |c| (k, n.clone(), c)))
        .collect();
    let t0 = std::time::Instant::now();
    let outcomes: Vec<Outcome> = jobs
        .par_iter()
        .map(|(index, name, c)| {
            let p = medtwin_t1d::patient(name).expect("bundled patient");
            let (cname, spec) = &specs[*c];
            let mut scen = base.clone();
            scen.controller = spec.clone();
            let mut controller = Controller::new(spec, &p);
            let mut g = Vec::new();
            let mut insulin = 0.0;
            let mut trace: Option<Vec<String>> = trace_dir.as_ref().map(|_| Vec::new());
            let res = simulate_patient_with(
                &p,
                &scen,
                *index,
                patient_seed(seed, *index),
                SolverOptions::default(),
                &mut controller,
                |r| {
                    if let Some(tr) = trace.as_mut() {
                        tr.push(format!(
                            "{},{:.2},{:.2},{:.5},{:.3}",
                            r.t_min,
                            r.sc_glucose_mg_dl,
                            r.cgm_mg_dl,
                            r.insulin_u_per_min,
                            r.carbs_g_per_min
                        ));
                    }
                    if r.cgm_sampled && r.t_min > 0 {
                        g.push(r.sc_glucose_mg_dl);
                    }
                    insulin += r.insulin_u_per_min;
                },
            );
            if let (Some(dir), Some(rows)) = (trace_dir.as_ref(), trace) {
                let path = format!("{dir}/{cname}_{}.csv", name.replace('#', ""));
                let body = format!(
                    "t_min,sc_glucose_mg_dl,cgm_mg_dl,insulin_u_per_min,carbs_g_per_min\n{}\n",
                    rows.join("\n")
                );
                std::fs::write(&path, body).expect("write trace CSV");
            }
            let m = glycaemic_metrics(&g);
            let mut sorted: Vec<f64> = g.iter().map(|v| v.clamp(50.0, 400.0)).collect();
            sorted.sort_by(f64::total_cmp);
            let timing = match &controller {
                Controller::Mpc(m) => m.timing(),
                _ => Default::default(),
            };
            Outcome {
                patient: name.clone(),
                group: p.group().to_string(),
                controller: cname.clone(),
                tir: m.map_or(f64::NAN, |m| m.tir_pct),
                tbr70: m.map_or(f64::NAN, |m| m.tbr70_pct),
                tbr54: m.map_or(f64::NAN, |m| m.tbr54_pct),
                mean: m.map_or(f64::NAN, |m| m.mean_mg_dl),
                tar250: m.map_or(f64::NAN, |m| m.tar250_pct),
                p025: percentile(&sorted, 2.5),
                p975: percentile(&sorted, 97.5),
                insulin_u_per_day: insulin / days as f64,
                mpc_calls: timing.calls,
                mpc_total_s: timing.total_s,
                mpc_max_s: timing.max_s,
                mpc_over_20ms: timing.over_20ms,
                error: res.err().map(|e| e.to_string()),
            }
        })
        .collect();
    let wall = t0.elapsed().as_secs_f64();

    // ---- CSV
    let mut f =
        std::io::BufWriter::new(std::fs::File::create(&out_path).expect("create output CSV"));
    writeln!(f, "controller,patient,group,p2_5_mg_dl,p97_5_mg_dl,tir_pct,tbr70_pct,tbr54_pct,tar250_pct,mean_mg_dl,insulin_u_per_day").unwrap();
    for o in &outcomes {
        writeln!(
            f,
            "{},{},{},{:.2},{:.2},{:.3},{:.3},{:.3},{:.3},{:.2},{:.2}",
            o.controller,
            o.patient,
            o.group,
            o.p025,
            o.p975,
            o.tir,
            o.tbr70,
            o.tbr54,
            o.tar250,
            o.mean,
            o.insulin_u_per_day
        )
        .unwrap();
    }
    drop(f);

    // ---- CVGA plot (Magni et al. 2008) beside the CSV
    let points: Vec<medtwin_report::cvga::CvgaPoint> = outcomes
        .iter()
        .filter(|o| o.controller != "pid")
        .map(|o| (o.controller.to_string(), o.p025, o.p975))
        .collect();
    let svg_path = std::path::Path::new(&out_path).with_extension("svg");
    match medtwin_report::cvga::cvga_svg(&points, "CVGA: MPC vs basal-bolus, 30 virtual patients") {
        Ok(svg) => std::fs::write(&svg_path, svg).expect("write CVGA SVG"),
        Err(e) => eprintln!("CVGA plot skipped: {e}"),
    }
    for c in ["mpc", "basal-bolus"] {
        let mut zones = std::collections::BTreeMap::new();
        for o in outcomes.iter().filter(|o| o.controller == c) {
            *zones
                .entry(medtwin_report::cvga::cvga_zone(o.p025, o.p975))
                .or_insert(0) += 1;
        }
        println!("CVGA zones {c}: {zones:?}");
    }

    // ---- per-patient detail
    if std::env::var_os("EVAL_VERBOSE").is_some() {
        for o in &outcomes {
            println!(
                "{:<15} {:<12} TIR {:6.2} <70 {:5.2} <54 {:5.2} >250 {:5.2} mean {:6.1} p2.5 {:6.1} p97.5 {:6.1} ins {:5.1} U/d{}",
                o.patient,
                o.controller,
                o.tir,
                o.tbr70,
                o.tbr54,
                o.tar250,
                o.mean,
                o.p025,
                o.p975,
                o.insulin_u_per_day,
                o.error.as_ref().map(|e| format!(" ERROR {e}")).unwrap_or_default()
            );
        }
    }
    for o in outcomes.iter().filter(|o| o.error.is_some()) {
        println!(
            "simulation failed: {} {}: {}",
            o.patient,
            o.controller,
            o.error.as_deref().unwrap_or("")
        );
    }

    // ---- table per group
    println!(
        "\n{} days, random meals seed {seed}, Dexcom noise on, {} simulations in {wall:.1} s wall",
        days,
        outcomes.len()
    );
    println!(
        "{:<11} {:<12} {:>3} {:>8} {:>7} {:>7} {:>12} {:>9} {:>8}",
        "group", "controller", "n", "TIR %", "<70 %", "<54 %", "max <54 %", "mean BG", ">250 %"
    );
    let stats = |grp: Option<&str>, c: &str| {
        let v: Vec<&Outcome> = outcomes
            .iter()
            .filter(|o| o.controller == c && grp.is_none_or(|g| o.group == g))
            .collect();
        let n = v.len() as f64;
        let mean = |f: &dyn Fn(&Outcome) -> f64| v.iter().map(|o| f(o)).sum::<f64>() / n;
        (
            v.len(),
            mean(&|o| o.tir),
            mean(&|o| o.tbr70),
            mean(&|o| o.tbr54),
            v.iter().map(|o| o.tbr54).fold(0.0, f64::max),
            mean(&|o| o.mean),
            mean(&|o| o.tar250),
        )
    };
    for grp in [Some("child"), Some("adolescent"), Some("adult"), None] {
        for (c, _) in &specs {
            let (n, tir, t70, t54, m54, mbg, t250) = stats(grp, c);
            if n == 0 {
                continue;
            }
            println!(
                "{:<11} {:<12} {:>3} {:>8.2} {:>7.2} {:>7.2} {:>12.2} {:>9.1} {:>8.2}",
                grp.unwrap_or("all"),
                c,
                n,
                tir,
                t70,
                t54,
                m54,
                mbg,
                t250
            );
        }
    }
    if specs.iter().any(|s| s.0 == "mpc") && specs.iter().any(|s| s.0 == "basal-bolus") {
        let (_, tir_m, t70_m, _, m54_m, _, _) = stats(None, "mpc");
        let (_, tir_b, t70_b, _, _, _, _) = stats(None, "basal-bolus");
        let yes = |b: bool| if b { "MET" } else { "NOT MET" };
        println!("\ntargets:");
        println!(
            "  MPC mean TIR {tir_m:.2} % >= basal-bolus {tir_b:.2} %: {}",
            yes(tir_m >= tir_b)
        );
        println!(
            "  MPC mean <70 {t70_m:.2} % <= half of basal-bolus {t70_b:.2} %: {}",
            yes(t70_m <= 0.5 * t70_b)
        );
        println!(
            "  no MPC patient > 1 % < 54 (max {m54_m:.2} %): {}",
            yes(m54_m <= 1.0)
        );
    }
    let (calls, total, max, over) = outcomes.iter().fold((0u64, 0.0f64, 0.0f64, 0u64), |a, o| {
        (
            a.0 + o.mpc_calls,
            a.1 + o.mpc_total_s,
            a.2.max(o.mpc_max_s),
            a.3 + o.mpc_over_20ms,
        )
    });
    if calls > 0 {
        println!(
            "MPC decision time: mean {:.3} ms, max {:.3} ms, {over} of {calls} decisions > 20 ms (wall clock, {} rayon threads)",
            1e3 * total / calls as f64,
            1e3 * max,
            rayon::current_num_threads()
        );
    }
    println!("CVGA CSV written to {out_path}");
}
