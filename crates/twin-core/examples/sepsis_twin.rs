//! The sepsis twin experiment (issue 16 item 5): hidden true patients of Reynolds et al. 2006,
//! noisy observations of the first hours, calibration through the generic twin layer, and the
//! probability of the true outcome class as observations accrue; then anti-inflammatory
//! what-if plans on one twin.
//!
//! Run: `cargo run --release -p medtwin-twin-core --example sepsis_twin [-- --write-data DIR]`
//! (`--write-data` writes the aseptic patient's measurements of 0–12 h and 12–24 h as PEtab
//! measurement tables, the files bundled in `tests/data/sepsis/`).

use medtwin_twin_core::data::measurements_tsv;
use medtwin_twin_core::sepsis::{experiment, observations, source, spec, Scenario};
use medtwin_twin_core::{Dose, Plan, Twin};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let aseptic = Scenario {
        name: "low virulence, P0 1.3 (aseptic)".into(),
        k_pg: 0.3,
        p0: 1.3,
    };
    if let Some(i) = args.iter().position(|a| a == "--write-data") {
        let dir = std::path::PathBuf::from(args.get(i + 1).ok_or("--write-data DIR")?);
        let all = observations(&aseptic, 24.0, 3.0, 11)?;
        let (a, b): (Vec<_>, Vec<_>) = all.into_iter().partition(|m| m.time <= 12.0);
        std::fs::write(dir.join("aseptic_0-12h.tsv"), measurements_tsv(&a))?;
        std::fs::write(dir.join("aseptic_12-24h.tsv"), measurements_tsv(&b))?;
        return Ok(());
    }
    let t0 = Instant::now();
    println!("| hidden patient | true class | P(true class) after 6 / 12 / 18 / 24 h | 80 % width of D at 48 h (6 / 24 h) |");
    println!("|---|---|---|---|");
    for sc in Scenario::standard() {
        let r = experiment(&sc, &[6.0, 12.0, 18.0, 24.0])?;
        let p: Vec<String> = r.by_window.iter().map(|w| format!("{:.2}", w.1)).collect();
        println!(
            "| {} | {} | {} | {:.2} / {:.2} |",
            sc.name,
            r.true_class,
            p.join(" / "),
            r.by_window[0].2,
            r.by_window[3].2
        );
    }
    println!("twin experiment: {:.1} s", t0.elapsed().as_secs_f64());

    // What-if on the aseptic patient's twin after 24 h of data.
    let t1 = Instant::now();
    let twin = Twin::fit(
        source(),
        spec()?,
        Plan::default(),
        observations(&aseptic, 24.0, 3.0, 11)?,
    )?;
    let dose = |time: f64, amount: f64| Plan {
        doses: vec![Dose {
            time,
            target: "C_A".into(),
            amount,
            duration: 0.0,
        }],
    };
    let plans = vec![
        ("no action".to_string(), Plan::default()),
        ("C_A 0.5 at 24 h".to_string(), dose(24.0, 0.5)),
        ("C_A 1 at 24 h".to_string(), dose(24.0, 1.0)),
        ("C_A 2 at 24 h".to_string(), dose(24.0, 2.0)),
        ("C_A 1 at 36 h".to_string(), dose(36.0, 1.0)),
    ];
    let res = twin.whatif(&plans, &[48.0])?;
    println!("\n| plan (aseptic patient, 24 h of data) | P(healthy) | P(aseptic death) | P(septic death) | D at 48 h (median) |");
    println!("|---|---|---|---|---|");
    for (name, p) in &res {
        println!(
            "| {name} | {:.2} | {:.2} | {:.2} | {:.2} |",
            p.probability("healthy"),
            p.probability("aseptic death"),
            p.probability("septic death"),
            p.of("D").map_or(f64::NAN, |o| o.bands[0].median)
        );
    }
    println!("fit + 5 plans: {:.1} s", t1.elapsed().as_secs_f64());
    Ok(())
}
