//! Cost and accuracy of one Jacobian at the nominal parameters: forward sensitivities
//! (`Evaluator::sensitivities`) against central finite differences of the residuals
//! (2 × estimated parameters evaluations, relative step 1e-4 on θ).
//!
//! `cargo run --release -p medtwin-petab --example sens_timing -- P1.yaml [P2.yaml …]`
//!
//! With `SENS_TIMING_LLH_ONLY` set: the nominal llh, one evaluation's time and the number of
//! simulations retried at looser tolerances (`Evaluator::retries`) only.

use medtwin_petab::{Evaluator, Problem, SimSettings};
use std::time::Instant;

fn main() {
    println!("| problem | estimated | evaluation ms | sensitivities ms | finite-difference Jacobian ms | max difference (log scale, relative to largest) |");
    println!("|---|---|---|---|---|---|");
    for path in std::env::args().skip(1) {
        let name = std::path::Path::new(&path)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let pr = match Problem::load(&path) {
            Ok(p) => p,
            Err(e) => {
                println!("| {name} | load failed: {e} |");
                continue;
            }
        };
        let ev = Evaluator::new(&pr, SimSettings::default()).unwrap();
        let theta = pr.nominal();
        let est: Vec<usize> = (0..pr.parameters.len())
            .filter(|&i| pr.parameters[i].estimate)
            .collect();
        let t0 = Instant::now();
        let base = ev.residuals(&theta);
        let t_eval = t0.elapsed().as_secs_f64() * 1e3;
        if std::env::var_os("SENS_TIMING_LLH_ONLY").is_some() {
            match &base {
                Ok(r) => println!(
                    "| {name} | llh {:.6} | {t_eval:.0} ms | retried {} |",
                    r.iter().map(|x| x.llh).sum::<f64>(),
                    ev.retries()
                ),
                Err(e) => println!("| {name} | failed: {e} |"),
            }
            continue;
        }
        let t1 = Instant::now();
        let s = ev.sensitivities(&theta, &est);
        let t_sens = t1.elapsed().as_secs_f64() * 1e3;
        let (Ok(base), Ok(s)) = (base, s) else {
            let e = ev.sensitivities(&theta, &est).err();
            println!(
                "| {name} | {} | {t_eval:.0} | failed: {e:?} | | |",
                est.len()
            );
            continue;
        };
        let t2 = Instant::now();
        let mut worst = 0.0f64;
        let mut scale = 0.0f64;
        let mut fd_ok = true;
        let step: f64 = std::env::var("FD_STEP")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1e-4);
        for (k, &i) in est.iter().enumerate() {
            let h = step * theta[i].abs().max(1e-8);
            let at = |v: f64| {
                let mut th = theta.clone();
                th[i] = v;
                ev.residuals(&th)
            };
            let (Ok(p), Ok(m)) = (at(theta[i] + h), at(theta[i] - h)) else {
                if std::env::var_os("FD_VERBOSE").is_some() {
                    eprintln!("{}: finite difference failed", pr.parameters[i].id);
                }
                fd_ok = false;
                continue;
            };
            for ((a, b), r) in p.iter().zip(&m).zip(&base) {
                let w = theta[i].abs() / r.simulated.abs().max(1e-3);
                let fd = (a.simulated - b.simulated) / (2.0 * h) * w;
                let d = s.d[r.measurement][k].0 * w;
                scale = scale.max(fd.abs());
                worst = worst.max((d - fd).abs());
                if std::env::var_os("FD_VERBOSE").is_some()
                    && (d - fd).abs() > 1e-3 * fd.abs().max(1e-3)
                {
                    eprintln!(
                        "{} measurement {}: sens {d:.6e} fd {fd:.6e}",
                        pr.parameters[i].id, r.measurement
                    );
                }
            }
        }
        let t_fd = t2.elapsed().as_secs_f64() * 1e3;
        println!(
            "| {name} | {} | {t_eval:.0} | {t_sens:.0} | {t_fd:.0} | {:.1e}{} |",
            est.len(),
            worst / scale.max(1e-300),
            if fd_ok { "" } else { " (some FD failed)" }
        );
    }
}
