//! Full-protocol validation against the FDA CiPA reference program: every drug and dose in
//! tests/data/cardiac/reference_selected.csv is paced for 1000 beats at 2000 ms from the control
//! steady state (last 250 analysed), on all cores, and compared with the reference's selected beat.
//! Prints a markdown table (used in benchmarks/cardiac_cipa.md) and the single-thread CPU time per
//! beat.
//!
//! `cargo run --release -p medtwin-cardiac --example cipa_validate [-- BEATS [drug,drug,…]]`

use medtwin_cardiac::assay::{run_dose, AssayOptions, DoseResult};
use medtwin_cardiac::classify::{category_index, leave_one_out, TdpClassifier, CATEGORIES};
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
    classify(&rows, &ours);
}

/// Ordinal-logistic TdP classifier on qNet averaged over 1–4 × Cmax, fitted to the reference's
/// and to medtwin's qNets (drugs with all four doses), with leave-one-out predictions.
fn classify(rows: &[HashMap<&str, &str>], ours: &[(DoseResult, f64)]) {
    let mut names: Vec<&str> = Vec::new();
    let mut x_ref = Vec::new();
    let mut x_ours = Vec::new();
    let mut y = Vec::new();
    for d in rows.iter().map(|r| r["drug"]) {
        if d == "control" || names.contains(&d) {
            continue;
        }
        let idx: Vec<usize> = (0..rows.len()).filter(|&i| rows[i]["drug"] == d).collect();
        if idx.len() != 4 {
            continue;
        }
        names.push(d);
        x_ref.push(
            idx.iter()
                .map(|&i| rows[i]["qNet"].parse::<f64>().unwrap())
                .sum::<f64>()
                / 4.0,
        );
        x_ours.push(idx.iter().map(|&i| ours[i].0.qnet_nc_per_uf).sum::<f64>() / 4.0);
        let risk = bundled_drug(d).unwrap().tdp_risk.unwrap();
        y.push(category_index(&risk).unwrap());
    }
    if names.len() < 4 {
        return;
    }
    println!();
    println!(
        "| drug | CiPA risk | mean qNet 1–4×Cmax ref | medtwin | LOO prediction ref | medtwin |"
    );
    println!("|---|---|---|---|---|---|");
    let loo_ref = leave_one_out(&x_ref, &y);
    let loo_ours = leave_one_out(&x_ours, &y);
    for i in 0..names.len() {
        println!(
            "| {} | {} | {:.3} | {:.3} | {} | {} |",
            names[i],
            CATEGORIES[y[i]],
            x_ref[i],
            x_ours[i],
            CATEGORIES[loo_ref.predicted[i]],
            CATEGORIES[loo_ours.predicted[i]]
        );
    }
    let full = TdpClassifier::fit(&x_ours, &y);
    println!();
    println!(
        "leave-one-out errors: reference qNets {}/{} (mean |Δcategory| {:.3}), medtwin qNets {}/{} ({:.3}); medtwin fit on all: b {:.3}, a {:?}, qNet mean {:.3} sd {:.3}",
        loo_ref.errors,
        names.len(),
        loo_ref.mean_abs_error,
        loo_ours.errors,
        names.len(),
        loo_ours.mean_abs_error,
        full.b,
        full.a,
        full.x_mean,
        full.x_sd
    );
}
