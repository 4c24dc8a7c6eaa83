//! The SBML side of the stiff solver: the BDF/NDF stepper itself is
//! `medtwin_simulate::bdf` (model-independent, over a [`BdfSystem`]); this module supplies
//! what is specific to a compiled SBML model — the cached Jacobian pattern, sparse LU ordering
//! and analytic Jacobian program ([`StiffStructures`]), the model's right-hand side as a
//! [`BdfSystem`] ([`ModelBdf`]: analytic Jacobian of `ad.rs` where every construct can be
//! differentiated, else column-grouped finite differences, also forced by the environment
//! variable `MEDTWIN_SBML_FD_JACOBIAN`), the stiffness bound used by `Method::Auto`, and the
//! mapping of [`BdfError`] to [`SbmlError::Simulation`] with the same messages.

use crate::ad::AnalyticJac;
use crate::model::SbmlModel;
use crate::sparse::{Jacobian, SparseLu};
use crate::SbmlError;
pub(crate) use medtwin_simulate::bdf::{Bdf, BdfError, BdfStats, BdfSystem};

impl From<BdfError> for SbmlError {
    fn from(e: BdfError) -> Self {
        SbmlError::Simulation(e.to_string())
    }
}

/// What the BDF needs to know about a model's structure: the Jacobian pattern, the sparse LU's
/// ordering and symbolic factorisation, and the analytic Jacobian program (None: finite
/// differences). Built once per model ([`crate::model::SbmlModel`] caches it).
#[derive(Debug, Clone)]
pub(crate) struct StiffStructures {
    jac: Jacobian,
    lu: SparseLu,
    ad: Option<AnalyticJac>,
}

impl StiffStructures {
    /// Build and cache the structures of `m` (no-op when already cached).
    pub(crate) fn prepare(m: &SbmlModel) {
        m.stiff_cache.get_or_init(|| StiffStructures::new(m));
    }

    /// Copies of the cached structures (built on first use).
    pub(crate) fn parts(m: &SbmlModel) -> (Jacobian, SparseLu, Option<AnalyticJac>) {
        let s = m.stiff_cache.get_or_init(|| StiffStructures::new(m));
        (s.jac.clone(), s.lu.clone(), s.ad.clone())
    }

    fn new(m: &SbmlModel) -> Self {
        let jac = crate::sparse::model_pattern(m);
        let lu = SparseLu::new(&jac);
        let ad = AnalyticJac::new(m, &jac);
        StiffStructures { jac, lu, ad }
    }
}

/// Gershgorin bound of the Jacobian's spectral radius at (t, x) (max over rows of Σ|J_ij|,
/// from the analytic or finite-difference sparse Jacobian): an explicit method needs steps
/// below about 3.3 / this for stability. `weights` are the states' absolute-tolerance weights
/// ([`SbmlModel::atol_weights`]): finite-difference increments scale with them.
pub(crate) fn stiffness_bound(m: &SbmlModel, t: f64, x: &[f64], weights: &[f64]) -> f64 {
    let n = x.len();
    if n == 0 {
        return 0.0;
    }
    StiffStructures::prepare(m);
    let Some(st) = m.stiff_cache.get() else {
        return 0.0;
    };
    let mut jac = st.jac.clone();
    match st.ad.clone() {
        Some(mut ad) => ad.eval(m, t, x, &mut jac),
        None => {
            let (mut vals, mut stack) = (Vec::new(), Vec::new());
            let mut f0 = vec![0.0; n];
            m.fill(t, x, &mut vals, &mut stack);
            m.derivs_from(t, &vals, &mut f0, &mut stack);
            let mut rhs = |t: f64, y: &[f64], out: &mut [f64]| {
                m.fill(t, y, &mut vals, &mut stack);
                m.derivs_from(t, &vals, out, &mut stack);
            };
            let floor: Vec<f64> = weights.iter().map(|w| 1e-6 * w).collect();
            jac.eval_fd(t, x, &f0, &floor, &mut rhs);
        }
    }
    let mut best = 0.0f64;
    for i in 0..n {
        let s: f64 = jac.val[jac.ptr[i]..jac.ptr[i + 1]]
            .iter()
            .map(|v| v.abs())
            .sum();
        if s.is_finite() {
            best = best.max(s);
        }
    }
    best
}

/// The model's own right-hand side (one block): [`ModelBdf::integrate`].
struct ModelRhs<'a> {
    m: &'a SbmlModel,
    bufs: &'a mut ModelBufs,
}

/// Buffers and Jacobian program of [`ModelRhs`], owned by [`ModelBdf`].
#[derive(Default)]
struct ModelBufs {
    /// Analytic Jacobian program (None: finite differences).
    ad: Option<AnalyticJac>,
    /// Finite-difference increment floor per state (`atol / rtol`).
    fd_floor: Vec<f64>,
    vals: Vec<f64>,
    stack: Vec<f64>,
    /// Times outside this interval are evaluated at its ends (`sim::switch_window`:
    /// the right-hand side between two switch times; unbounded without switches).
    window: (f64, f64),
}

fn model_rhs(
    m: &SbmlModel,
    vals: &mut Vec<f64>,
    stack: &mut Vec<f64>,
    t: f64,
    y: &[f64],
    dy: &mut [f64],
) {
    m.fill_private(t, y, vals, stack);
    m.derivs_from(t, vals, dy, stack);
}

impl BdfSystem for ModelRhs<'_> {
    fn rhs(&mut self, t: f64, y: &[f64], out: &mut [f64]) {
        let t = t.clamp(self.bufs.window.0, self.bufs.window.1);
        model_rhs(self.m, &mut self.bufs.vals, &mut self.bufs.stack, t, y, out);
    }

    fn jacobian(&mut self, t: f64, y: &[f64], f: &[f64], jac: &mut Jacobian) {
        let m = self.m;
        let b = &mut *self.bufs;
        let t = t.clamp(b.window.0, b.window.1);
        if let Some(ad) = b.ad.as_mut() {
            ad.eval(m, t, y, jac);
        } else {
            let (vals, stack) = (&mut b.vals, &mut b.stack);
            let mut rhs = |t: f64, y: &[f64], out: &mut [f64]| {
                model_rhs(m, vals, stack, t, y, out);
            };
            jac.eval_fd(t, y, f, &b.fd_floor, &mut rhs);
        }
    }

    fn name(&self, i: usize) -> String {
        self.m.slots[self.m.state_slots[i]].id.clone()
    }
}

/// The BDF/NDF integrating a model's own states: [`Bdf`] plus the model's right-hand-side
/// buffers and Jacobian program.
pub(crate) struct ModelBdf {
    /// The stepper (statistics, deadline).
    pub(crate) core: Bdf,
    model: ModelBufs,
}

impl ModelBdf {
    /// Integrator for model `m` with relative tolerance `rtol`, absolute tolerances `atol` (one
    /// per state, × [`SbmlModel::atol_weights`]) and maximum step `h_max`.
    pub(crate) fn new(m: &SbmlModel, rtol: f64, atol: &[f64], h_max: f64) -> Self {
        let n = m.state_slots.len();
        let StiffStructures { jac, lu, mut ad } = m
            .stiff_cache
            .get_or_init(|| StiffStructures::new(m))
            .clone();
        if std::env::var_os("MEDTWIN_SBML_FD_JACOBIAN").is_some() {
            ad = None;
        }
        let core = Bdf::new(n, n, rtol, atol.to_vec(), h_max, jac, lu);
        let model = ModelBufs {
            ad,
            fd_floor: atol.iter().map(|a| a / rtol.max(1e-300)).collect(),
            vals: Vec::new(),
            stack: Vec::new(),
            window: (f64::NEG_INFINITY, f64::INFINITY),
        };
        ModelBdf { core, model }
    }

    /// Evaluate the right-hand side (and Jacobian) at times clamped to `window` (`lo <= hi`;
    /// see `sim::switch_window`).
    pub(crate) fn set_window(&mut self, window: (f64, f64)) {
        self.model.window = window;
    }

    /// Right-hand sides per finite-difference Jacobian (0 when the Jacobian is analytic), and
    /// the fill of the LU factors.
    pub(crate) fn structure(&self) -> (usize, usize) {
        let g = if self.model.ad.is_some() {
            0
        } else {
            self.core.jacobian().n_groups()
        };
        (g, self.core.lu().fill())
    }

    /// Solver statistics.
    pub(crate) fn stats(&self) -> BdfStats {
        self.core.stats
    }

    /// Forget the history (after a state jump): the next call restarts at order 1.
    pub(crate) fn reset(&mut self) {
        self.core.reset();
    }

    /// Advance the model state `x` from `t0` to `t1` (continuing the step history when `x`
    /// is the last output; see `medtwin_simulate::bdf`).
    ///
    /// Errors: [`SbmlError::Simulation`] (step-size underflow, step budget, non-finite state,
    /// time limit).
    pub(crate) fn integrate(
        &mut self,
        m: &SbmlModel,
        t0: f64,
        t1: f64,
        x: &mut [f64],
    ) -> Result<(), SbmlError> {
        let mut sys = ModelRhs {
            m,
            bufs: &mut self.model,
        };
        self.core.integrate(&mut sys, t0, t1, x)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::{parse_sbml, simulate, Method, SimulateOptions};

    fn rate_rule_model(rules: &[(&str, f64, &str)]) -> String {
        let mut params = String::new();
        let mut rr = String::new();
        for (id, v, math) in rules {
            params.push_str(&format!(
                r#"<parameter id="{id}" value="{v}" constant="false"/>"#
            ));
            rr.push_str(&format!(
                r#"<rateRule variable="{id}"><math xmlns="http://www.w3.org/1998/Math/MathML">{math}</math></rateRule>"#
            ));
        }
        format!(
            r#"<sbml xmlns="http://www.sbml.org/sbml/level3/version2/core" level="3" version="2">
  <model id="m"><listOfParameters>{params}</listOfParameters><listOfRules>{rr}</listOfRules></model></sbml>"#
        )
    }

    fn ci(x: &str) -> String {
        format!("<ci>{x}</ci>")
    }
    fn cn(v: f64) -> String {
        format!("<cn>{v:e}</cn>")
    }
    fn ap(op: &str, args: &[String]) -> String {
        format!("<apply><{op}/>{}</apply>", args.concat())
    }

    /// Robertson's stiff chemical kinetics (Robertson 1966; Hairer & Wanner, Solving ODEs II,
    /// §IV.1): y1' = −0.04 y1 + 1e4 y2 y3, y2' = 0.04 y1 − 1e4 y2 y3 − 3e7 y2²,
    /// y3' = 3e7 y2².
    fn robertson() -> String {
        let y2y3 = ap("times", &[cn(1e4), ci("y2"), ci("y3")]);
        let y1 = ap("times", &[cn(0.04), ci("y1")]);
        let y22 = ap("times", &[cn(3e7), ci("y2"), ci("y2")]);
        rate_rule_model(&[
            (
                "y1",
                1.0,
                &ap(
                    "plus",
                    &[ap("minus", std::slice::from_ref(&y1)), y2y3.clone()],
                ),
            ),
            (
                "y2",
                0.0,
                &ap("minus", &[ap("minus", &[y1.clone(), y2y3]), y22.clone()]),
            ),
            ("y3", 0.0, &y22),
        ])
    }

    #[test]
    fn robertson_matches_reference_values() {
        // Reference at t = 40 (Hairer & Wanner's test set, computed with RADAU5 at tolerance
        // 1e-14): y1 = 0.7158270687193, y2 = 9.185534764e-6, y3 = 0.2841637457.
        let m = parse_sbml(&robertson()).unwrap();
        let opts = SimulateOptions {
            end: 40.0,
            steps: 4,
            rtol: 1e-8,
            atol: 1e-14,
            method: Method::Stiff,
            ..Default::default()
        };
        let t = simulate(&m, &opts).unwrap();
        let last = t.rows.last().unwrap();
        let want = [0.7158270687193, 9.185534764e-6, 0.2841637457];
        for (k, w) in want.iter().enumerate() {
            let got = last[1 + k];
            assert!(
                (got - w).abs() <= 2e-6 * w.abs(),
                "y{}: {got} vs {w}",
                k + 1
            );
        }
        // Long run (to t = 4e5, where y2 ≈ 2e-8): mass is conserved and the solver copes.
        let opts = SimulateOptions {
            end: 4e5,
            steps: 10,
            rtol: 1e-6,
            atol: 1e-12,
            method: Method::Stiff,
            ..Default::default()
        };
        let t = simulate(&m, &opts).unwrap();
        for row in &t.rows {
            let s = row[1] + row[2] + row[3];
            assert!((s - 1.0).abs() < 1e-6, "{row:?}");
            assert!(row[2] >= -1e-12, "{row:?}");
        }
        let last = t.rows.last().unwrap();
        // Reference at t = 4e5 (libRoadRunner/CVODE at rtol 1e-12, atol 1e-20):
        // y1 = 4.938274521e-3, y2 = 1.984994e-8, y3 = 0.9950617056.
        assert!(
            (last[1] - 4.938274521e-3).abs() < 1e-4 * 4.938274521e-3,
            "{last:?}"
        );
        assert!(
            (last[2] - 1.984994e-8).abs() < 1e-4 * 1.984994e-8,
            "{last:?}"
        );
        assert!((last[3] - 0.9950617056).abs() < 1e-6, "{last:?}");
    }

    #[test]
    fn step_size_underflow_names_a_state_with_non_finite_derivative() {
        // x' = -1 from 1, y' = sqrt(x): no solution past t = 1 (sqrt of a negative).
        let m = parse_sbml(&rate_rule_model(&[
            ("x", 1.0, &cn(-1.0)),
            ("y", 0.0, &ap("root", &[ci("x")])),
        ]))
        .unwrap();
        let opts = SimulateOptions {
            end: 2.0,
            steps: 4,
            method: Method::Stiff,
            ..Default::default()
        };
        match simulate(&m, &opts) {
            Err(crate::SbmlError::Simulation(msg)) => assert!(
                msg.contains("underflow") && msg.contains("derivative of 'y' is not finite"),
                "{msg}"
            ),
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn finite_difference_jacobian_path_matches_analytic_path() {
        // The fallback (finite-difference Jacobian) on Robertson to t = 40 agrees with the
        // reference as well, and the analytic path needs no right-hand sides for Jacobians.
        let m = parse_sbml(&robertson()).unwrap();
        let want = [0.7158270687193, 9.185534764e-6, 0.2841637457];
        for analytic in [true, false] {
            let mut b = super::ModelBdf::new(&m, 1e-8, &[1e-14; 3], 40.0);
            assert!(
                b.model.ad.is_some(),
                "Robertson's right-hand side is differentiable"
            );
            if !analytic {
                b.model.ad = None;
            }
            let mut x = m.initial_state();
            b.integrate(&m, 0.0, 40.0, &mut x).unwrap();
            for (k, w) in want.iter().enumerate() {
                assert!(
                    (x[k] - w).abs() <= 2e-6 * w.abs(),
                    "analytic {analytic}: {x:?}"
                );
            }
            assert!(b.stats().jacobians > 0);
            assert_eq!(b.core.jacobian().fd_evals == 0, analytic);
        }
    }

    #[test]
    fn bdf_tracks_smooth_and_stiff_components() {
        // y' = −y + 10 sin t, y(0) = 0: y = 5(sin t − cos t + e^{−t}); and a second,
        // stiff component z' = −1000 (z − cos t), z(0) = 1 (tracks cos t).
        let y = ap(
            "plus",
            &[
                ap("minus", &[ci("y")]),
                ap(
                    "times",
                    &[cn(10.0), ap("sin", &["<csymbol definitionURL=\"http://www.sbml.org/sbml/symbols/time\">t</csymbol>".to_string()])],
                ),
            ],
        );
        let z = ap(
            "times",
            &[
                cn(-1000.0),
                ap(
                    "minus",
                    &[ci("z"), ap("cos", &["<csymbol definitionURL=\"http://www.sbml.org/sbml/symbols/time\">t</csymbol>".to_string()])],
                ),
            ],
        );
        let m = parse_sbml(&rate_rule_model(&[("y", 0.0, &y), ("z", 1.0, &z)])).unwrap();
        for (rtol, bound) in [(1e-6, 2e-5), (1e-9, 2e-8)] {
            let opts = SimulateOptions {
                end: 10.0,
                steps: 50,
                rtol,
                atol: rtol * 1e-2,
                method: Method::Stiff,
                ..Default::default()
            };
            let t = simulate(&m, &opts).unwrap();
            for row in &t.rows {
                let s = row[0];
                let ye = 5.0 * (s.sin() - s.cos() + (-s).exp());
                // z = cos t + O(1/1000) lag: the exact solution of the linear equation.
                let (a, w) = (1000.0f64, 1.0f64);
                let ze = a * (a * s.cos() + w * s.sin()) / (a * a + w * w)
                    + (1.0 - a * a / (a * a + w * w)) * (-a * s).exp();
                assert!(
                    (row[1] - ye).abs() < bound * 10.0,
                    "rtol {rtol}: {row:?} y {ye}"
                );
                assert!(
                    (row[2] - ze).abs() < bound * 10.0,
                    "rtol {rtol}: {row:?} z {ze}"
                );
            }
        }
    }

    #[test]
    fn auto_switches_from_dopri5_on_mild_stiffness() {
        // y' = −50 (y − cos t), y(0) = 0, over [0, 150] with 10 outputs: the Jacobian bound ×
        // span is 7500 (below Auto's stiffness threshold), but DOPRI5's steps are limited by
        // stability to ≈ 0.066, i.e. hundreds per output interval, so Auto hands over to the
        // BDF; the result must still match y = k(k cos t + sin t)/(k² + 1) − k²/(k² + 1)·e^{−kt}.
        let time = "<csymbol definitionURL=\"http://www.sbml.org/sbml/symbols/time\">t</csymbol>";
        let y = ap(
            "times",
            &[
                cn(-50.0),
                ap("minus", &[ci("y"), ap("cos", &[time.to_string()])]),
            ],
        );
        let m = parse_sbml(&rate_rule_model(&[("y", 0.0, &y)])).unwrap();
        let opts = SimulateOptions {
            end: 150.0,
            steps: 10,
            rtol: 1e-8,
            atol: 1e-12,
            ..Default::default()
        };
        let t = simulate(&m, &opts).unwrap();
        let k = 50.0f64;
        for row in &t.rows {
            let s = row[0];
            let exact = k * (k * s.cos() + s.sin()) / (k * k + 1.0)
                - k * k / (k * k + 1.0) * (-k * s).exp();
            assert!((row[1] - exact).abs() < 1e-6, "{row:?} vs {exact}");
        }
    }
}
