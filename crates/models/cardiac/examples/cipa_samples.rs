//! Timing of an uncertainty run without the CLI: the bundled samples of one drug at 1–4 × Cmax,
//! full protocol, on the rayon pool; prints the per-dose summary and the beats simulated (measure
//! CPU with `/usr/bin/time`): `cipa_samples [drug] [n_samples]` (default dofetilide 4).
use medtwin_cardiac::assay::AssayOptions;
use medtwin_cardiac::drug::bundled_drug;
use medtwin_cardiac::samples::{bundled_samples, run_samples, summarize};
use std::time::Instant;

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let name = a.first().map_or("dofetilide", |s| s.as_str());
    let n: usize = a.get(1).map_or(4, |s| s.parse().expect("n_samples"));
    let drug = bundled_drug(name).expect("bundled drug");
    let samples = bundled_samples(name, n).expect("bundled samples");
    let opts = AssayOptions::default();
    let doses = [1.0, 2.0, 3.0, 4.0];
    let t0 = Instant::now();
    let rows = run_samples(&drug, &doses, &samples, &opts).expect("samples");
    let wall = t0.elapsed().as_secs_f64();
    let failed = rows.iter().filter(|r| r.result.is_err()).count();
    for s in summarize(&rows) {
        println!("{s:?}");
    }
    println!(
        "{name}: {} runs ({failed} failed), {} beats, wall {wall:.1} s",
        rows.len(),
        rows.len() * opts.beats
    );
}
