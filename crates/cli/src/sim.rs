//! `patients`, `simulate`, `metrics`, `bench`.

use crate::error::{io_fail, CliError};
use medtwin_simulate::SolverOptions;
use medtwin_t1d::env::{
    patient_seed, simulate_patient, MinuteRow, SummaryAccumulator, TrajectorySummary,
};
use medtwin_t1d::metrics::glycaemic_metrics;
use medtwin_t1d::scenario::Scenario;
use rayon::prelude::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Header of trajectory CSVs.
pub const TRAJECTORY_HEADER: &str =
    "t_min,plasma_glucose_mg_dl,sc_glucose_mg_dl,cgm_mg_dl,insulin_u_per_min,carbs_g_per_min";
/// Header of summary CSVs.
pub const SUMMARY_HEADER: &str = "patient,mean_mg_dl,sd_mg_dl,cv_pct,gmi_pct,tbr54_pct,tbr70_pct,tir_pct,tar180_pct,tar250_pct,lbgi,hbgi,risk_index,total_insulin_u,total_carbs_g";

pub fn patients() -> Result<(), CliError> {
    let all = medtwin_t1d::all_patients().map_err(|e| CliError::failure(e.to_string()))?;
    let mut out = format!(
        "{:<15} {:>6} {:>7} {:>8} {:>8} {:>9} {:>10} {:>9}\n",
        "patient", "age_y", "BW_kg", "Gb_mg_dl", "CR_g_U", "CF_mg_dl_U", "basal_U_h", "TDI_U_d"
    );
    for p in all {
        out.push_str(&format!(
            "{:<15} {:>6.0} {:>7.1} {:>8.1} {:>8.1} {:>9.1} {:>10.3} {:>9.1}\n",
            p.name,
            p.age_years,
            p.bw,
            p.basal_glucose_mg_dl(),
            p.cr_g_per_u,
            p.cf_mg_dl_per_u,
            p.basal_u_per_min() * 60.0,
            p.tdi_u_per_day
        ));
    }
    // A closed pipe (e.g. `| head`) is not an error worth a panic.
    let _ = std::io::stdout().write_all(out.as_bytes());
    Ok(())
}

fn summary_line(name: &str, s: &TrajectorySummary) -> String {
    let m = &s.metrics;
    format!(
        "{name},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4},{:.6},{:.6},{:.6},{:.4},{:.4}",
        m.mean_mg_dl,
        m.sd_mg_dl,
        m.cv_pct,
        m.gmi_pct,
        m.tbr54_pct,
        m.tbr70_pct,
        m.tir_pct,
        m.tar180_pct,
        m.tar250_pct,
        m.lbgi,
        m.hbgi,
        m.risk_index,
        s.total_insulin_u,
        s.total_carbs_g
    )
}

fn partial_path(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".partial");
    PathBuf::from(s)
}

/// Simulate one patient; write its trajectory to `traj` (through a `.partial` file renamed on
/// success) and return its summary.
fn run_one(
    scen: &Scenario,
    index: usize,
    name: &str,
    traj: Option<&Path>,
) -> Result<TrajectorySummary, CliError> {
    let p = medtwin_t1d::patient(name).map_err(|e| CliError::input(e.to_string()))?;
    let mut acc = SummaryAccumulator::default();
    let mut writer = match traj {
        Some(path) => {
            let tmp = partial_path(path);
            let f = std::fs::File::create(&tmp).map_err(|e| io_fail(&tmp, e))?;
            let mut w = std::io::BufWriter::new(f);
            writeln!(w, "{TRAJECTORY_HEADER}").map_err(|e| io_fail(&tmp, e))?;
            Some((w, tmp))
        }
        None => None,
    };
    let mut write_err: Option<std::io::Error> = None;
    let res = simulate_patient(
        &p,
        scen,
        patient_seed(scen.sensor_seed, index),
        SolverOptions::default(),
        |r: &MinuteRow| {
            acc.push(r);
            if let (Some((w, _)), None) = (writer.as_mut(), write_err.as_ref()) {
                if let Err(e) = writeln!(
                    w,
                    "{},{},{},{},{},{}",
                    r.t_min,
                    r.plasma_glucose_mg_dl,
                    r.sc_glucose_mg_dl,
                    r.cgm_mg_dl,
                    r.insulin_u_per_min,
                    r.carbs_g_per_min
                ) {
                    write_err = Some(e);
                }
            }
        },
    );
    let cleanup = |w: &Option<(std::io::BufWriter<std::fs::File>, PathBuf)>| {
        if let Some((_, tmp)) = w {
            let _ = std::fs::remove_file(tmp);
        }
    };
    if let Err(e) = res {
        cleanup(&writer);
        return Err(CliError::failure(format!("{name}: simulation failed: {e}")));
    }
    if let Some(e) = write_err {
        cleanup(&writer);
        return Err(CliError::failure(format!(
            "{name}: writing trajectory: {e}"
        )));
    }
    if let (Some((mut w, tmp)), Some(path)) = (writer, traj) {
        w.flush().map_err(|e| io_fail(&tmp, e))?;
        drop(w);
        std::fs::rename(&tmp, path).map_err(|e| io_fail(path, e))?;
    }
    acc.finish()
        .ok_or_else(|| CliError::failure(format!("{name}: no CGM sample produced")))
}

pub fn simulate(
    scenario: &Path,
    out: Option<&Path>,
    summary: Option<&Path>,
    no_traj: bool,
) -> Result<(), CliError> {
    let scen = Scenario::from_file(scenario).map_err(|e| CliError::input(e.to_string()))?;
    if out.is_none() && !no_traj {
        return Err(CliError::input(
            "--out PATH is required unless --no-trajectory is given",
        ));
    }
    if out.is_none() && summary.is_none() {
        return Err(CliError::input(
            "nothing to write: give --out and/or --summary",
        ));
    }
    let several = scen.patients.len() > 1;
    let traj_paths: Vec<Option<PathBuf>> = scen
        .patients
        .iter()
        .map(|n| match (out, no_traj) {
            (Some(o), false) if several => Some(o.join(format!("{n}.csv"))),
            (Some(o), false) => Some(o.to_path_buf()),
            _ => None,
        })
        .collect();
    let mut created_dir = false;
    if let (Some(o), true, false) = (out, several, no_traj) {
        if !o.exists() {
            std::fs::create_dir_all(o).map_err(|e| io_fail(o, e))?;
            created_dir = true;
        }
    }
    let results: Vec<Result<TrajectorySummary, CliError>> = scen
        .patients
        .par_iter()
        .enumerate()
        .map(|(i, n)| run_one(&scen, i, n, traj_paths[i].as_deref()))
        .collect();
    if let Some(pos) = results.iter().position(|r| r.is_err()) {
        // No partial output: remove everything this run wrote.
        for p in traj_paths.iter().flatten() {
            let _ = std::fs::remove_file(p);
        }
        if created_dir {
            if let Some(o) = out {
                let _ = std::fs::remove_dir(o);
            }
        }
        return match results.into_iter().nth(pos) {
            Some(Err(e)) => Err(e),
            _ => Err(CliError::failure("simulation failed")),
        };
    }
    let mut lines = vec![SUMMARY_HEADER.to_string()];
    for (n, r) in scen.patients.iter().zip(results) {
        if let Ok(s) = r {
            lines.push(summary_line(n, &s));
        }
    }
    if let Some(sp) = summary {
        let tmp = partial_path(sp);
        std::fs::write(&tmp, lines.join("\n") + "\n").map_err(|e| io_fail(&tmp, e))?;
        std::fs::rename(&tmp, sp).map_err(|e| io_fail(sp, e))?;
    }
    eprintln!(
        "simulated {} patient(s) x {} min",
        scen.patients.len(),
        scen.duration_min
    );
    Ok(())
}

pub fn metrics(path: &Path, json: bool, sample_min: u64) -> Result<(), CliError> {
    if sample_min == 0 {
        return Err(CliError::input("--sample-min must be >= 1"));
    }
    let mut rdr = csv::Reader::from_path(path)
        .map_err(|e| CliError::input(format!("{}: {e}", path.display())))?;
    let hdr = rdr
        .headers()
        .map_err(|e| CliError::input(format!("{}: {e}", path.display())))?
        .clone();
    let col = |n: &str| {
        hdr.iter().position(|h| h == n).ok_or_else(|| {
            CliError::input(format!(
                "{}: missing column '{n}' (expected header {TRAJECTORY_HEADER})",
                path.display()
            ))
        })
    };
    let (ct, cg, ci, cc) = (
        col("t_min")?,
        col("sc_glucose_mg_dl")?,
        col("insulin_u_per_min")?,
        col("carbs_g_per_min")?,
    );
    let mut g = Vec::new();
    let (mut ins, mut carbs) = (0.0, 0.0);
    for (i, rec) in rdr.records().enumerate() {
        let line = i + 2;
        let rec = rec.map_err(|e| CliError::input(format!("{}:{line}: {e}", path.display())))?;
        let num = |c: usize, what: &str| -> Result<f64, CliError> {
            rec.get(c)
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|v| v.is_finite())
                .ok_or_else(|| {
                    CliError::input(format!(
                        "{}:{line}: {what} '{}' is not a number",
                        path.display(),
                        rec.get(c).unwrap_or("")
                    ))
                })
        };
        let t = num(ct, "t_min")?;
        let v = num(cg, "sc_glucose_mg_dl")?;
        if v <= 0.0 || v > 1000.0 {
            return Err(CliError::input(format!(
                "{}:{line}: glucose {v} mg/dL is impossible",
                path.display()
            )));
        }
        if t >= 0.0 && t.fract() == 0.0 && (t as u64).is_multiple_of(sample_min) {
            g.push(v);
        }
        ins += num(ci, "insulin_u_per_min")?;
        carbs += num(cc, "carbs_g_per_min")?;
    }
    let m = glycaemic_metrics(&g)
        .ok_or_else(|| CliError::input(format!("{}: no glucose samples", path.display())))?;
    let s = TrajectorySummary {
        metrics: m,
        total_insulin_u: ins,
        total_carbs_g: carbs,
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&s).map_err(|e| CliError::failure(e.to_string()))?
        );
    } else {
        let hdr: Vec<&str> = SUMMARY_HEADER.split(',').skip(1).collect();
        let line = summary_line("x", &s);
        for (h, v) in hdr.iter().zip(line.split(',').skip(1)) {
            println!("{h:<16} {v}");
        }
        println!("{:<16} {}", "n_samples", m.n);
    }
    Ok(())
}

pub fn bench(days: u64, reps: usize) -> Result<(), CliError> {
    if days == 0 || reps == 0 {
        return Err(CliError::input("--days and --reps must be >= 1"));
    }
    let names = medtwin_t1d::patient_names();
    let mut scen = Scenario::reference_day(names.clone());
    let mut tl = medtwin_core::Timeline::new((1440 * days) as f64);
    for d in 0..days {
        for (at, g) in [(420.0, 45.0), (720.0, 70.0), (1080.0, 80.0)] {
            tl.add_dose(d as f64 * 1440.0 + at, medtwin_t1d::scenario::CARBS_G, g)
                .map_err(|e| CliError::failure(e.to_string()))?;
        }
    }
    scen.timeline = tl;
    scen.duration_min = 1440 * days;
    let params: Vec<_> = names
        .iter()
        .map(|n| medtwin_t1d::patient(n))
        .collect::<Result<_, _>>()
        .map_err(|e| CliError::failure(e.to_string()))?;
    let run = |p: &medtwin_t1d::PatientParams| -> Result<f64, CliError> {
        let mut acc = SummaryAccumulator::default();
        simulate_patient(p, &scen, 1, SolverOptions::default(), |r| acc.push(r))
            .map_err(|e| CliError::failure(e.to_string()))?;
        Ok(acc
            .finish()
            .map(|s| s.metrics.mean_mg_dl)
            .unwrap_or(f64::NAN))
    };
    let patient_days = (names.len() as u64 * days * reps as u64) as f64;
    // warm-up
    for p in &params {
        run(p)?;
    }
    let t0 = Instant::now();
    let mut check = 0.0;
    for _ in 0..reps {
        for p in &params {
            check += run(p)?;
        }
    }
    let single = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    for _ in 0..reps {
        let v: Result<Vec<f64>, CliError> = params.par_iter().map(run).collect();
        check += v?.iter().sum::<f64>();
    }
    let multi = t1.elapsed().as_secs_f64();
    let threads = rayon::current_num_threads();
    println!("reference scenario (3 meals/day, basal-bolus, noise-free Dexcom, Insulet), 30 patients x {days} day(s) x {reps} rep(s)");
    println!(
        "single thread : {:.3} ms per patient-day ({:.0} patient-days/s)",
        1e3 * single / patient_days,
        patient_days / single
    );
    println!(
        "{threads} threads     : {:.3} ms per patient-day wall ({:.0} patient-days/s)",
        1e3 * multi / patient_days,
        patient_days / multi
    );
    println!("simglucose 0.2.11 reference: 11.6 s CPU per patient-day -> speed-up x{:.0} single-threaded", 11.6 / (single / patient_days));
    println!("(checksum {:.3})", check);
    Ok(())
}
