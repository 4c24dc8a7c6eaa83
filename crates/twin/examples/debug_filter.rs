//! Debug: trace the filter on a T1D-UOM participant.
use medtwin_twin::{InputSchedule, TwinEngine, TwinSettings};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (rec, _rep) =
        medtwin_io::import_t1d_uom(std::path::Path::new(&args[1]), &args[2]).expect("import");
    let s = InputSchedule::from_record(&rec).expect("cgm");
    println!(
        "cgm {} carbs {} bolus {} basal {} la {:?}",
        s.cgm.len(),
        s.carbs.len(),
        s.boluses.len(),
        s.basal_rates.len(),
        &s.long_acting[..s.long_acting.len().min(5)]
    );
    println!(
        "TDI first 3 days: {:.1} U/day",
        s.mean_daily_insulin_u(0.0, 4320.0)
    );
    let mut st = TwinSettings::default();
    st.noise.disturbance_sd_mg_kg_min = 2.0;
    let mut e = TwinEngine::start(&s, st).expect("start");
    let c = &e.calibration;
    println!(
        "calib: map {:?} prior {:?} rmse {:.1} prior_rmse {:.1} rho {:.2} diag {:?}",
        c.theta_map, e.prior.mean, c.rmse_mg_dl, c.prior_rmse_mg_dl, c.residual_rho, c.diagnostics
    );
    let mut t = 1440.0;
    let end: f64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(2.5);
    let every: f64 = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(60.0);
    while t < 1440.0 * end {
        t += every;
        e.assimilate_until(&s, t).unwrap();
        let g: f64 = e
            .filter
            .particles
            .iter()
            .zip(&e.filter.weights)
            .map(|(p, w)| p.expected_cgm_mg_dl() * w)
            .sum();
        let sdg: f64 = e
            .filter
            .particles
            .iter()
            .zip(&e.filter.weights)
            .map(|(p, w)| (p.expected_cgm_mg_dl() - g).powi(2) * w)
            .sum::<f64>()
            .sqrt();
        let bias: f64 = e
            .filter
            .particles
            .iter()
            .zip(&e.filter.weights)
            .map(|(p, w)| p.sensor_bias * w)
            .sum();
        let dist: f64 = e
            .filter
            .particles
            .iter()
            .zip(&e.filter.weights)
            .map(|(p, w)| p.disturbance * w)
            .sum();
        let th: Vec<f64> = (0..4)
            .map(|k| {
                e.filter.particles.iter().map(|p| p.theta[k]).sum::<f64>()
                    / e.filter.particles.len() as f64
            })
            .collect();
        let obs = s.cgm.iter().rev().find(|c| c.0 <= t).unwrap();
        let f = e.forecast(&s, 60, None, 1).unwrap();
        let f5 = f.bands[4].median;
        let o60 = s.cgm.iter().find(|c| c.0 >= t + 60.0).unwrap();
        println!("t={t:.0} obs {:.0}@{:.0} filt {g:.0}±{sdg:.0} b {bias:.1} d {dist:.2} ess {:.0} th {:.2?} f5 {f5:.0} | f60 {:.0} [{:.0},{:.0}] obs60 {:.0}", obs.1, obs.0, e.filter.last_ess, th, f.bands[59].median, f.bands[59].lo80, f.bands[59].hi80, o60.1);
    }
}
