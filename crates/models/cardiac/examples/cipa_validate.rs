//! Full-protocol validation against the FDA CiPA reference program: every drug and dose in
//! tests/data/cardiac/reference_selected.csv is paced for 1000 beats at 2000 ms from the control
//! steady state (last 250 analysed), on all cores, and compared with the reference's selected beat.
//! Prints a markdown table (used in benchmarks/cardiac_cipa.md) and the single-thread CPU time per
//! beat.
//!
//! `cargo run --release -p medtwin-cardiac --example cipa_validate [-- BEATS]`

use medtwin_cardiac::assay::{run_dose, AssayOptions, DoseResult};
use medtwin_cardiac::drug::bundled_drug;
use rayon::prelude::*;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

fn main() {
    let beats: usize = std::env::args()
        .nth(1)
        .map_or(1000, |s| s.parse().expect("BEATS"));
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../tests/data/cardiac/reference_selected.csv");
    let text = std::fs::read_to_string(&p).expect("reference table");
    let mut lines = text.lines();
    let head: Vec<&str> = lines.next().unwrap().split(',').collect();
    let rows: Vec<HashMap<&str, &str>> = lines
        .map(|l| head.iter().copied().zip(l.split(',')).collect())
        .collect();
    let opts = AssayOptions {
        beats,
        analysed_beats: 250.min(beats),
        ..AssayOptions::default()
    };
    let t0 = Instant::now();
    let ours: Vec<(DoseResult, f64)> = rows
        .par_iter()
        .map(|r| {
            let dose: f64 = r["dose"].parse().unwrap();
            let drug = (r["drug"] != "control").then(|| bundled_drug(r["drug"]).unwrap());
            let t = Instant::now();
            let res = run_dose(drug.as_ref(), dose, &opts).unwrap();
            (res, t.elapsed().as_secs_f64())
        })
        .collect();
    let wall = t0.elapsed().as_secs_f64();
    println!("| drug | dose ×Cmax | qNet ref | qNet medtwin | Δ nC/µF | APD90 ref | APD90 medtwin | EAD beats ref / medtwin | no-repol beats ref / medtwin |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut worst: f64 = 0.0;
    let mut cpu = 0.0;
    for (r, (o, secs)) in rows.iter().zip(&ours) {
        cpu += secs;
        let q_ref: f64 = r["qNet"].parse().unwrap();
        let d = o.qnet_nc_per_uf - q_ref;
        let regular = r["EADs"] == "0" && r["noRepols"] == "0";
        if regular {
            worst = worst.max(d.abs());
        }
        println!(
            "| {} | {} | {:.3} | {:.3} | {:+.3} | {} | {} | {} / {} | {} / {} |",
            r["drug"],
            r["dose"],
            q_ref,
            o.qnet_nc_per_uf,
            d,
            r["APD90"],
            o.apd90_ms.map_or("NA".into(), |v| format!("{v}")),
            r["EADs"],
            o.ead_beats,
            r["noRepols"],
            o.no_repol_beats
        );
    }
    let n_beats = (rows.len() * beats) as f64;
    println!();
    println!("largest |ΔqNet| over rows without EADs or repolarisation failure: {worst:.3} nC/µF");
    println!(
        "{} runs × {beats} beats: wall {wall:.1} s on {} threads; {:.3} ms per beat per thread (sum of run times / beats)",
        rows.len(),
        rayon::current_num_threads(),
        cpu * 1000.0 / n_beats
    );
}
