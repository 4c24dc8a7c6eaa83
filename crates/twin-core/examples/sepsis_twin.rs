//! The sepsis twin experiment (issue 16 item 5): hidden true patients of Reynolds et al. 2006,
//! noisy observations of the first hours, calibration through the generic twin layer, and the
//! probability of the true outcome class as observations accrue; then anti-inflammatory
//! what-if plans. Run: `cargo run --release -p medtwin-twin-core --example sepsis_twin`.

use medtwin_twin_core::sepsis::{experiment, Scenario};
use std::time::Instant;

fn main() {
    let t0 = Instant::now();
    for sc in Scenario::standard() {
        let r = experiment(&sc, &[6.0, 12.0, 18.0, 24.0]).expect("experiment runs");
        println!(
            "{:<34} true class {:<14} P(true class) by window: {}",
            sc.name,
            r.true_class,
            r.by_window
                .iter()
                .map(|(h, p, w)| format!("{h:>2} h: {p:.2} (80% width D@48h {w:.2})"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    println!("total {:.1} s", t0.elapsed().as_secs_f64());
}
