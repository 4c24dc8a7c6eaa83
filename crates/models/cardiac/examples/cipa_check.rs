//! Quick check against the reference: `cargo run --release -p medtwin-cardiac --example cipa_check -- [drug dose] [beats] [rtol] [gate_atol] [slaved_z] [be|exp] [table_dv_mv] [vtable_dv_mv]`.
use medtwin_cardiac::assay::{run_dose, AssayOptions};
use medtwin_cardiac::drug::bundled_drug;
use std::time::Instant;

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let (drug, dose) = if a.len() >= 2 && a[0] != "control" {
        (Some(bundled_drug(&a[0]).unwrap()), a[1].parse().unwrap())
    } else {
        (None, 0.0)
    };
    let mut opts = AssayOptions::default();
    if let Some(b) = a.get(2) {
        opts.beats = b.parse().unwrap();
        opts.analysed_beats = opts.analysed_beats.min(opts.beats);
    }
    if let Some(r) = a.get(3) {
        opts.solver.rtol = r.parse().unwrap();
    }
    if let Some(g) = a.get(4) {
        opts.solver.gate_atol = g.parse().unwrap();
    }
    if let Some(z) = a.get(5) {
        opts.solver.slaved_z = z.parse().unwrap();
    }
    if let Some(p) = a.get(6) {
        opts.solver.markov_be_predictor = p == "be";
    }
    if let Some(d) = a.get(7) {
        opts.solver.markov_table_dv_mv = d.parse().unwrap();
    }
    if let Some(d) = a.get(8) {
        opts.solver.voltage_table_dv_mv = d.parse().unwrap();
    }
    let t0 = Instant::now();
    let r = run_dose(drug.as_ref(), dose, &opts).unwrap();
    let el = t0.elapsed().as_secs_f64();
    println!(
        "{} {} qnet {:.4} apd90 {:?} apd50 {:?} ead {} beat {} steps/beat {:.0} ms/beat {:.3}",
        r.drug,
        r.dose_x_cmax,
        r.qnet_nc_per_uf,
        r.apd90_ms,
        r.apd50_ms,
        r.ead_beats,
        r.selected_beat,
        r.steps_per_beat,
        el * 1000.0 / opts.beats as f64
    );
}
