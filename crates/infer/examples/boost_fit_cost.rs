//! Cost of one boosted-tree fit of the size the hybrid forecast uses (60 days of CGM at
//! 14-min spacing ≈ 6 000 rows × 21 features, default settings):
//! `cargo run --release -p medtwin-infer --example boost_fit_cost`.
use medtwin_infer::boost::{BoostSettings, BoostedTrees};

fn main() {
    let (n, p) = (6000, 21);
    let mut state = 1u64;
    let mut u = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let x: Vec<Vec<f64>> = (0..n).map(|_| (0..p).map(|_| u()).collect()).collect();
    let y: Vec<f64> = x
        .iter()
        .map(|r| 30.0 * (r[0] - 0.5).abs() + 10.0 * r[1] * r[2])
        .collect();
    let reps = 10;
    let t = std::time::Instant::now();
    let mut s = 0.0;
    for _ in 0..reps {
        let m = BoostedTrees::fit(&x, &y, &BoostSettings::default()).expect("fit");
        s += m.predict(&x[0]);
    }
    let ms = t.elapsed().as_secs_f64() * 1e3 / reps as f64;
    println!("{n} rows x {p} features: {ms:.1} ms per fit (checksum {s:.3})");
}
