//! Uncertainty propagation: the point-estimate sample reproduces the point-estimate assay exactly,
//! and the sample study's output does not depend on the number of threads. Few beats, so that the
//! debug-mode test stays fast.

use medtwin_cardiac::assay::{run_dose, AssayOptions};
use medtwin_cardiac::classify::training_classifier;
use medtwin_cardiac::drug::bundled_drug;
use medtwin_cardiac::samples::{
    bundled_samples, risk_uncertainty, run_samples, samples_csv, summarize, UncertaintySample,
};

fn short() -> AssayOptions {
    AssayOptions {
        beats: 2,
        analysed_beats: 2,
        ..AssayOptions::default()
    }
}

#[test]
fn point_estimate_sample_equals_the_point_estimate_run() {
    let dof = bundled_drug("dofetilide").unwrap();
    let opts = short();
    let s0 = UncertaintySample::point_estimate(&dof);
    let rows = run_samples(&dof, &[4.0], &[s0], &opts).unwrap();
    let a = rows[0].result.as_ref().unwrap();
    let b = run_dose(Some(&dof), 4.0, &opts).unwrap();
    assert_eq!(a.qnet_nc_per_uf.to_bits(), b.qnet_nc_per_uf.to_bits());
    assert_eq!(a.apd90_ms, b.apd90_ms);
    assert_eq!(a.selected_state, b.selected_state);
}

#[test]
fn sample_study_is_independent_of_the_thread_count() {
    let dof = bundled_drug("dofetilide").unwrap();
    let opts = short();
    let smp = bundled_samples("dofetilide", 2).unwrap();
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| run_samples(&dof, &[1.0, 4.0], &smp, &opts).unwrap())
    };
    let one = run(1);
    let two = run(2);
    let (t1, t2) = (
        samples_csv("dofetilide", &one),
        samples_csv("dofetilide", &two),
    );
    assert_eq!(t1, t2);
    let lines: Vec<&str> = t1.lines().collect();
    assert_eq!(lines.len(), 5, "{t1}");
    assert!(lines[1].starts_with("dofetilide,1,1,"), "{t1}");
    assert!(lines[4].starts_with("dofetilide,2,4,"), "{t1}");
    // samples differ from each other (they are not the point estimate repeated)
    assert_ne!(
        lines[1].split(',').nth(3),
        lines[3].split(',').nth(3),
        "{t1}"
    );
    let s = summarize(&one);
    assert_eq!(s.len(), 2);
    assert_eq!((s[0].n_ok, s[0].n_failed), (2, 0));
    let q = s[0].qnet.unwrap();
    assert!(q[1] <= q[0] && q[0] <= q[2], "{q:?}");
    let (c, left_out) = training_classifier("dofetilide");
    assert!(left_out);
    let r = risk_uncertainty(&one, &c);
    assert_eq!(r.n, 2);
    assert!((r.fractions.iter().sum::<f64>() - 1.0).abs() < 1e-12);
}
