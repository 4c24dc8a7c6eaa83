//! UVA/Padova on every integrator behind `medtwin_simulate::Integrator`: the BDF/NDF and the
//! Rosenbrock method reach the same glucose as DOPRI5 through the same call (issue 16, one
//! solver stack), over a day with a meal, a bolus and basal insulin in one-minute
//! zero-order-hold calls as the environment makes them.

use medtwin_simulate::{BdfIntegrator, Dopri5, Integrator, RosenbrockIntegrator, SolverOptions};
use medtwin_t1d::model::input;
use medtwin_t1d::{patient, UvaPadova};

/// Inputs at minute `k`: 45 g at 5 g/min from 07:00 (Dbar 45 000 mg from then on), a 4.5 U
/// bolus at 07:05 over one minute, the patient's basal otherwise.
fn inputs(k: u32, basal_u_per_min: f64) -> [f64; 3] {
    let mut u = [0.0; 3];
    if (420..429).contains(&k) {
        u[input::CHO_G_PER_MIN] = 5.0;
    }
    if k >= 420 {
        u[input::MEAL_DOSE_MG] = 45_000.0;
    }
    u[input::INSULIN_U_PER_MIN] = basal_u_per_min + if k == 425 { 4.5 } else { 0.0 };
    u
}

/// Plasma glucose (mg/dL) every minute over 24 h on `integ`.
fn day<I: Integrator>(integ: &mut I, m: &UvaPadova) -> Vec<f64> {
    let mut x = m.p.x0;
    let basal = m.p.basal_u_per_min();
    let mut g = Vec::with_capacity(1440);
    for k in 0..1440u32 {
        let u = inputs(k, basal);
        integ
            .integrate(m, k as f64, k as f64 + 1.0, &mut x, &u)
            .unwrap_or_else(|e| panic!("minute {k}: {e}"));
        g.push(x[3] / m.p.vg);
    }
    g
}

#[test]
fn bdf_and_rosenbrock_agree_with_dopri5_on_a_patient_day() {
    let m = UvaPadova {
        p: patient("adult#001").expect("bundled patient"),
    };
    let tight = SolverOptions {
        rtol: 1e-10,
        atol: 1e-10,
        ..Default::default()
    };
    let reference = day(&mut Dopri5::new(13, tight), &m);
    // the meal moves glucose by tens of mg/dL: the comparison is not of two flat lines
    let (lo, hi) = reference
        .iter()
        .fold((f64::INFINITY, 0.0f64), |(a, b), &g| (a.min(g), b.max(g)));
    assert!(hi - lo > 20.0, "glucose range {lo}..{hi}");
    let opts = SolverOptions::default(); // rtol 1e-8, atol 1e-8, as the simulator runs
    let mut bdf = BdfIntegrator::new(opts);
    let mut ros = RosenbrockIntegrator::new(opts);
    for (name, g) in [
        ("bdf", day(&mut bdf, &m)),
        ("rosenbrock", day(&mut ros, &m)),
    ] {
        let worst = g
            .iter()
            .zip(&reference)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        println!("{name}: max |Δ plasma glucose| vs DOPRI5 {worst:.2e} mg/dL");
        assert!(worst < 1e-4, "{name}: max |Δ glucose| {worst:e} mg/dL");
    }
    println!("bdf {:?}\nrosenbrock {:?}", bdf.stats(), ros.stats());
    assert!(bdf.stats().accepted > 0 && ros.stats().accepted > 0);
}
