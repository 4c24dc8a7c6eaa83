//! Demo and measurement: acceptance rates per group (10 000 candidates' worth of patients),
//! marginal comparison files, trial throughput (1000 patients × 1 day) and PROCOVA on a parallel
//! trial. Run: `cargo run --release -p medtwin-cohort --example trial_demo -- OUT_DIR [N] [--no-mpc]`.
//!
//! Scale mode: `trial_demo OUT_DIR --scale 1000,10000,50000` runs a crossover trial (basal-bolus
//! vs PID, 1 day, Dexcom noise) per cohort size and prints patient-days, wall time, throughput
//! and the process's peak resident memory (VmHWM, Linux) after each.

use medtwin_cohort::population::{compare_marginals, write_marginals_csv, write_marginals_svg};
use medtwin_cohort::{
    generate_cohort, run_trial, write_cohort_parquet, Group, RunControl, TrialSpec,
};
use std::path::{Path, PathBuf};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let out = PathBuf::from(args.get(1).map(String::as_str).unwrap_or("trial-demo"));
    let ctl = RunControl {
        progress: &|_| {},
        cancel: None,
        resume: false,
    };
    if let Some(i) = args.iter().position(|a| a == "--scale") {
        let sizes: Vec<usize> = args
            .get(i + 1)
            .ok_or("--scale needs sizes")?
            .split(',')
            .map(|s| s.parse())
            .collect::<Result<_, _>>()?;
        println!("patients,patient_days,wall_s,patient_days_per_s,peak_rss_mb");
        for n in sizes {
            let t = format!(
                "[cohort]\nfrom = \"simglucose-30\"\ngroup = \"all\"\nn = {n}\nseed = 7\n\
                 [scenario]\ndays = 1\nrandom_meals_seed = 11\nsensor = {{ kind = \"dexcom\", noise = true }}\n\
                 [design]\nkind = \"crossover\"\n[[arm]]\nname = \"bb\"\ncontroller = {{ kind = \"basal-bolus\" }}\n\
                 [[arm]]\nname = \"pid\"\ncontroller = {{ kind = \"pid\" }}\n[[endpoint]]\nmetric = \"tir_pct\"\n"
            );
            let spec = TrialSpec::from_toml_str(&t, "<scale>", Path::new("."))?;
            let dir = out.join(format!("scale-{n}"));
            let t0 = Instant::now();
            let s = run_trial(&spec, &dir, &ctl)?;
            let wall = t0.elapsed().as_secs_f64();
            println!(
                "{n},{},{wall:.2},{:.0},{:.0}",
                s.patient_days,
                s.patient_days as f64 / wall,
                peak_rss_mb()
            );
        }
        return Ok(());
    }
    let n: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(1000);
    let with_mpc = !args.iter().any(|a| a == "--no-mpc");
    std::fs::create_dir_all(&out)?;
    for g in [Group::Child, Group::Adolescent, Group::Adult, Group::All] {
        let t = Instant::now();
        let c = generate_cohort("simglucose-30", g, 10_000, 7)?;
        print!("{g}: generated in {:.2} s\n{c}", t.elapsed().as_secs_f64());
        if g == Group::All {
            let rows = compare_marginals(&c.patients)?;
            write_marginals_csv(&out.join("marginals.csv"), &rows)?;
            write_marginals_svg(&out.join("marginals.svg"), &rows)?;
            write_cohort_parquet(&out.join("cohort-all.parquet"), &c.patients)?;
        }
    }
    for (design, arms) in [
        (
            "crossover",
            vec![
                ("bb", "{ kind = \"basal-bolus\" }"),
                ("pid", "{ kind = \"pid\" }"),
            ],
        ),
        (
            "parallel",
            vec![
                ("bb", "{ kind = \"basal-bolus\" }"),
                (
                    "bb-target-110",
                    "{ kind = \"basal-bolus\", target_mg_dl = 110 }",
                ),
            ],
        ),
        (
            "crossover",
            vec![
                ("bb", "{ kind = \"basal-bolus\" }"),
                ("mpc", "{ kind = \"mpc\" }"),
            ],
        ),
    ] {
        if arms[1].0 == "mpc" && !with_mpc {
            continue;
        }
        let mut t = format!(
            "[cohort]\nfrom = \"simglucose-30\"\ngroup = \"adult\"\nn = {n}\nseed = 7\n\
             [scenario]\ndays = 1\nrandom_meals_seed = 11\nsensor = {{ kind = \"dexcom\", noise = true }}\npump = \"insulet\"\n\
             [design]\nkind = \"{design}\"\n"
        );
        for (name, c) in &arms {
            t += &format!("[[arm]]\nname = \"{name}\"\ncontroller = {c}\n");
        }
        for m in ["tir_pct", "mean_mg_dl", "tbr70_pct", "risk_index"] {
            t += &format!("[[endpoint]]\nmetric = \"{m}\"\n");
        }
        let spec = TrialSpec::from_toml_str(&t, "<demo>", Path::new("."))?;
        let dir = out.join(format!("{design}-{}", arms[1].0));
        let s = run_trial(&spec, &dir, &ctl)?;
        println!("\n===== {design} {} vs {} =====\n{s}", arms[1].0, arms[0].0);
    }
    Ok(())
}

/// Peak resident set size of this process, MB (Linux `VmHWM`; NaN elsewhere).
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}
