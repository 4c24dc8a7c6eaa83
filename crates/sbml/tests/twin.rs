//! Twin-readiness: an imported SBML model driven through the same machinery as the built-in
//! models — the `OdeModel` trait integrated by medtwin-simulate's DOPRI5, doses from a
//! medtwin-core `Timeline`, and medtwin-infer's particle filter assimilating noisy observations.

use medtwin_core::{OdeModel, Timeline};
use medtwin_infer::{stream_rng, ParticleFilter, ProcessError, StateSpaceModel};
use medtwin_sbml::{parse_sbml, SbmlModel};
use medtwin_simulate::{Dopri5, Integrator, SolverOptions};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// One-compartment oral PK: gut --ka--> central (volume V) --ke--> ; time in hours, mg, L.
const PK: &str = include_str!("../../../tests/data/twin/oral_pk_1cpt.xml");

const KA: f64 = 1.2;
const KE: f64 = 0.15;
const V: f64 = 20.0;
const DOSE: &str = "oral_mg";

/// Bateman function superposed over the doses: central concentration (mg/L) at `t` hours.
fn analytic_conc(tl: &Timeline, t: f64) -> f64 {
    tl.doses()
        .iter()
        .filter(|d| d.at_min <= t)
        .map(|d| {
            let s = t - d.at_min;
            d.amount * KA / (V * (KA - KE)) * ((-KE * s).exp() - (-KA * s).exp())
        })
        .sum()
}

/// Integrate the model through the `OdeModel` interface from 0 to `t_end`, adding each dose of
/// the timeline to the gut amount at its time; returns the state at each requested time.
fn simulate_with_doses(m: &SbmlModel, tl: &Timeline, times: &[f64]) -> Vec<Vec<f64>> {
    let gut = m.state_index("A_gut").expect("A_gut is a state");
    let mut integ = Dopri5::new(
        m.n_states(),
        SolverOptions {
            rtol: 1e-10,
            atol: 1e-12,
            h_max_min: 1.0,
            max_steps: 100_000,
        },
    );
    let mut x = m.initial_state();
    let mut t = 0.0;
    let mut out = Vec::new();
    for &tk in times {
        // Doses due in [t, tk) are given at their times.
        let mut due: Vec<(f64, f64)> = tl
            .doses()
            .iter()
            .filter(|d| d.input == DOSE && d.at_min >= t && d.at_min < tk)
            .map(|d| (d.at_min, d.amount))
            .collect();
        due.sort_by(|a, b| a.0.total_cmp(&b.0));
        for (at, amount) in due {
            integ.integrate(m, t, at, &mut x, &[]).unwrap();
            x[gut] += amount;
            integ.reset();
            t = at;
        }
        integ.integrate(m, t, tk, &mut x, &[]).unwrap();
        t = tk;
        out.push(x.clone());
    }
    out
}

fn timeline() -> Timeline {
    let mut tl = Timeline::new(48.0);
    tl.add_dose(0.0, DOSE, 100.0).unwrap();
    tl.add_dose(12.0, DOSE, 100.0).unwrap();
    tl.add_dose(24.0, DOSE, 50.0).unwrap();
    tl
}

#[test]
fn sbml_model_with_timeline_doses_matches_bateman() {
    let m = parse_sbml(PK).unwrap();
    assert_eq!(m.info().states.len(), 2);
    let tl = timeline();
    let central = m.state_index("C").expect("C is integrated as an amount");
    let times: Vec<f64> = (1..=96).map(|k| k as f64 * 0.5).collect();
    let xs = simulate_with_doses(&m, &tl, &times);
    for (t, x) in times.iter().zip(&xs) {
        let c = x[central] / V;
        let exact = analytic_conc(&tl, *t);
        assert!(
            (c - exact).abs() < 1e-7 * exact.max(1e-3),
            "t = {t}: {c} vs {exact}"
        );
    }
    // observe() reports species in their SBML units: C as a concentration.
    let mut obs = vec![0.0; 2];
    m.observe(&xs[10], &mut obs);
    assert!((obs[1] - xs[10][central] / V).abs() < 1e-12);
}

/// The SBML model as a state-space model for the particle filter: state = model state,
/// multiplicative process noise on the central amount, log-normal concentration measurements.
struct PkTwin {
    m: SbmlModel,
    tl: Timeline,
    central: usize,
    gut: usize,
    sigma: f64,
}

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(1e-300);
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

impl StateSpaceModel for PkTwin {
    type Particle = Vec<f64>;

    fn rinit(&self, _t0: f64, _rng: &mut ChaCha8Rng) -> Vec<f64> {
        self.m.initial_state()
    }

    fn rprocess(
        &self,
        x: &mut Vec<f64>,
        t0: f64,
        t1: f64,
        rng: &mut ChaCha8Rng,
    ) -> Result<(), ProcessError> {
        let mut integ = Dopri5::new(self.m.n_states(), SolverOptions::default());
        let mut t = t0;
        let mut due: Vec<(f64, f64)> = self
            .tl
            .doses()
            .iter()
            .filter(|d| d.at_min >= t0 && d.at_min < t1)
            .map(|d| (d.at_min, d.amount))
            .collect();
        due.sort_by(|a, b| a.0.total_cmp(&b.0));
        for (at, amount) in due {
            integ
                .integrate(&self.m, t, at, x, &[])
                .map_err(|e| ProcessError(e.to_string()))?;
            x[self.gut] += amount;
            integ.reset();
            t = at;
        }
        integ
            .integrate(&self.m, t, t1, x, &[])
            .map_err(|e| ProcessError(e.to_string()))?;
        x[self.central] *= (0.05 * normal(rng)).exp();
        Ok(())
    }

    fn dmeasure(&self, x: &Vec<f64>, y: f64, _t: f64) -> f64 {
        let c = x[self.central] / V;
        if c <= 0.0 || y <= 0.0 {
            return f64::NEG_INFINITY;
        }
        let z = (y.ln() - c.ln()) / self.sigma;
        -0.5 * z * z - (self.sigma * y * (2.0 * std::f64::consts::PI).sqrt()).ln()
    }

    fn rmeasure(&self, x: &Vec<f64>, _t: f64, rng: &mut ChaCha8Rng) -> f64 {
        x[self.central] / V * (self.sigma * normal(rng)).exp()
    }
}

#[test]
fn particle_filter_assimilates_sbml_model() {
    let m = parse_sbml(PK).unwrap();
    let tl = timeline();
    let twin = PkTwin {
        central: m.state_index("C").unwrap(),
        gut: m.state_index("A_gut").unwrap(),
        m: m.clone(),
        tl: tl.clone(),
        sigma: 0.1,
    };
    // Observations every 2 h from the analytic truth with 10 % log-normal noise.
    let mut rng = stream_rng(7, 0);
    let obs: Vec<(f64, f64)> = (1..=24)
        .map(|k| {
            let t = 2.0 * k as f64;
            (t, analytic_conc(&tl, t) * (0.1 * normal(&mut rng)).exp())
        })
        .collect();
    let run = |model: &PkTwin| {
        let mut pf = ParticleFilter::new(model, 200, 0.0, 11);
        for &(t, y) in &obs {
            pf.assimilate(model, t, y, 0.5).unwrap();
        }
        pf
    };
    let pf = run(&twin);
    assert!(pf.log_lik.is_finite());
    let mean_c: f64 = pf
        .particles
        .iter()
        .zip(&pf.weights)
        .map(|(p, w)| w * p[twin.central] / V)
        .sum();
    let truth = analytic_conc(&tl, 48.0);
    assert!(
        (mean_c - truth).abs() < 0.15 * truth,
        "filtered {mean_c} vs true {truth}"
    );
    // The same data under a twin that missed the 12 h dose is far less likely.
    let mut wrong_tl = Timeline::new(48.0);
    wrong_tl.add_dose(0.0, DOSE, 100.0).unwrap();
    wrong_tl.add_dose(24.0, DOSE, 50.0).unwrap();
    let wrong = PkTwin {
        tl: wrong_tl,
        m,
        central: twin.central,
        gut: twin.gut,
        sigma: 0.1,
    };
    let pf_wrong = run(&wrong);
    assert!(
        pf_wrong.log_lik < pf.log_lik - 10.0,
        "log-lik with the right doses {} vs missing dose {}",
        pf.log_lik,
        pf_wrong.log_lik
    );
}

/// `simulate_course` at irregular output times with doses into the gut amount reproduces the
/// Bateman superposition, and `set_value` of an elimination rate changes the course as the
/// analytic solution with that rate says.
#[test]
fn simulate_course_with_doses_and_set_value_matches_bateman() {
    use medtwin_sbml::{simulate_course, Course, SimulateOptions, StateDose};
    let mut m = parse_sbml(PK).unwrap();
    let gut = m.state_index("A_gut").unwrap();
    let tl = timeline();
    let doses: Vec<StateDose> = tl
        .doses()
        .iter()
        .map(|d| StateDose {
            time: d.at_min,
            state: gut,
            amount: d.amount,
        })
        .collect();
    // Irregular times, one at a dose time (recorded before the dose: a trough).
    let times = [0.25, 1.0, 3.7, 12.0, 12.5, 23.9, 30.0, 47.5];
    let opts = SimulateOptions {
        vars: Some(vec!["C".into()]),
        rtol: 1e-10,
        atol: 1e-12,
        ..SimulateOptions::default()
    };
    let course = Course {
        times: Some(&times),
        doses: &doses,
    };
    let tab = simulate_course(&m, &opts, &course).unwrap();
    assert_eq!(tab.rows.len(), times.len());
    for (row, &t) in tab.rows.iter().zip(&times) {
        assert_eq!(row[0], t);
        // A dose at exactly t contributes nothing yet (zero elapsed time), as in the course.
        let exact = analytic_conc(&tl, t);
        assert!(
            (row[1] - exact).abs() < 1e-7 * exact.max(1e-3),
            "t = {t}: {} vs {exact}",
            row[1]
        );
    }
    // Doubling ke through set_value: compare against the Bateman solution with 2·ke.
    assert_eq!(m.value("ke"), Some(KE));
    assert!(m.parameter_ids().contains(&"ka".to_string()));
    m.set_value("ke", 2.0 * KE).unwrap();
    let tab2 = simulate_course(&m, &opts, &course).unwrap();
    let ke2 = 2.0 * KE;
    for (row, &t) in tab2.rows.iter().zip(&times) {
        let exact: f64 = tl
            .doses()
            .iter()
            .filter(|d| d.at_min <= t)
            .map(|d| {
                let s = t - d.at_min;
                d.amount * KA / (V * (KA - ke2)) * ((-ke2 * s).exp() - (-KA * s).exp())
            })
            .sum();
        assert!(
            (row[1] - exact).abs() < 1e-7 * exact.max(1e-3),
            "ke doubled, t = {t}: {} vs {exact}",
            row[1]
        );
    }
    // Bad requests are errors that say what is wrong.
    let err = m.set_value("nope", 1.0).unwrap_err().to_string();
    assert!(err.contains("nope"), "{err}");
    let unsorted = [2.0, 1.0];
    let err = simulate_course(
        &m,
        &opts,
        &Course {
            times: Some(&unsorted),
            doses: &[],
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("sorted"), "{err}");
}
