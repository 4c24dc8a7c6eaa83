//! The stiff solvers behind [`Integrator`]: [`BdfIntegrator`] (the variable-order BDF/NDF of
//! [`crate::bdf`]) and [`RosenbrockIntegrator`] (the 4th-order Rosenbrock method of
//! [`crate::rosenbrock`]) integrate any [`OdeModel`] through the same call as [`crate::Dopri5`],
//! inputs held constant over each call (zero-order hold). The Jacobian is dense and by
//! column-grouped finite differences through [`Integrator::integrate`]; through
//! [`Integrator::integrate_with_jacobian`] it takes the model's [`OdeJacobian`] pattern and
//! analytic values where the model supplies them. Linear algebra: the sparse LU of
//! [`crate::sparse`].
//!
//! Tolerances and limits come from [`SolverOptions`] (`atol` for every state, the finite-
//! difference increment floor `atol / rtol`, `h_max_min`; `max_steps` per call for the BDF,
//! the Rosenbrock stepper's own 500 000). Failures are [`SolveError`] values
//! ([`SolveError::Setup`], [`SolveError::TimeLimit`], [`SolveError::Bdf`],
//! [`SolveError::Rosenbrock`]), never panics; on error `x` is left as it was given (the
//! steppers write it only on success).

use crate::bdf::Bdf;
use crate::ode_system::OdeModelSystem;
use crate::rosenbrock::Rosenbrock;
use crate::sparse::{SparseJacobian, SparseLu};
use crate::{Integrator, OdeJacobian, SolveError, SolverOptions, SolverStats};
use medtwin_core::OdeModel;
use std::time::Instant;

/// Where the Jacobian pattern of the stepper in use came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pattern {
    /// Dense ([`Integrator::integrate`]: the model type says nothing).
    Dense,
    /// [`OdeJacobian::jacobian_pattern`].
    Model,
}

/// Pattern of `n` states (`rows` None: dense) and its LU, or the setup error of `solver`.
fn structures(
    solver: &'static str,
    n: usize,
    rows: Option<Vec<Vec<usize>>>,
) -> Result<(SparseJacobian, SparseLu), SolveError> {
    let jac = SparseJacobian::new(n, rows.as_deref()).map_err(|e| SolveError::Setup {
        solver,
        why: e.to_string(),
    })?;
    let lu = SparseLu::new(&jac);
    Ok((jac, lu))
}

/// Finite-difference floors `atol / rtol` for `n` states.
fn fd_floor(opts: &SolverOptions, n: usize) -> Vec<f64> {
    vec![opts.atol / opts.rtol.max(1e-300); n]
}

/// The BDF/NDF of [`crate::bdf`] as an [`Integrator`] (see the module docs). Steps are not
/// clipped at `t1_min`: the solution there is interpolated and a following call that starts
/// from exactly the returned state with the same inputs continues the step history; a change
/// of inputs or state restarts at order 1 from the state given.
pub struct BdfIntegrator {
    opts: SolverOptions,
    /// Give up ([`SolveError::TimeLimit`]) once this instant has passed.
    pub deadline: Option<Instant>,
    core: Option<(Bdf, Pattern)>,
    floor: Vec<f64>,
    last_u: Vec<f64>,
    /// Work of steppers replaced (state count or pattern changed).
    retired: SolverStats,
}

impl BdfIntegrator {
    /// Integrator with the tolerances and limits `opts`; the stepper is built for the model
    /// at the first call.
    pub fn new(opts: SolverOptions) -> Self {
        BdfIntegrator {
            opts,
            deadline: None,
            core: None,
            floor: Vec::new(),
            last_u: Vec::new(),
            retired: SolverStats::default(),
        }
    }

    /// The stepper in use (statistics, Jacobian and LU), if a call has built one.
    pub fn stepper(&self) -> Option<&Bdf> {
        self.core.as_ref().map(|c| &c.0)
    }

    fn core_stats(b: &Bdf) -> SolverStats {
        SolverStats {
            rhs_evals: b.stats.rhs + b.jacobian().fd_evals,
            accepted: b.stats.steps,
            rejected: b.stats.rejected,
            restarts: b.stats.starts,
        }
    }

    /// The stepper for `n` states with the pattern from `pattern` (built, or rebuilt when `n`
    /// or the pattern's source changed), reset when the inputs changed.
    fn prepare(
        &mut self,
        n: usize,
        u: &[f64],
        source: Pattern,
        rows: impl FnOnce() -> Option<Vec<Vec<usize>>>,
    ) -> Result<(), SolveError> {
        let rebuild = match &self.core {
            Some((b, p)) => b.jacobian().n != n || *p != source,
            None => true,
        };
        if rebuild {
            if let Some((old, _)) = self.core.take() {
                self.retired += Self::core_stats(&old);
            }
            let (jac, lu) = structures("BDF", n, rows())?;
            let o = &self.opts;
            let mut b = Bdf::new(n, n, o.rtol, vec![o.atol; n], o.h_max_min, jac, lu);
            b.max_steps = o.max_steps as u64;
            self.floor = fd_floor(o, n);
            self.core = Some((b, source));
        }
        let Some((b, _)) = self.core.as_mut() else {
            unreachable!("stepper built above")
        };
        if self.last_u != u {
            b.reset();
            self.last_u.clear();
            self.last_u.extend_from_slice(u);
        }
        b.deadline = self.deadline;
        Ok(())
    }
}

impl Integrator for BdfIntegrator {
    fn integrate<M: OdeModel + ?Sized>(
        &mut self,
        model: &M,
        t0_min: f64,
        t1_min: f64,
        x: &mut [f64],
        u: &[f64],
    ) -> Result<(), SolveError> {
        self.prepare(model.n_states(), u, Pattern::Dense, || None)?;
        let mut sys = OdeModelSystem::borrowed(model, u, &self.floor)?;
        let Some((b, _)) = self.core.as_mut() else {
            unreachable!("prepared above")
        };
        Ok(b.integrate(&mut sys, t0_min, t1_min, x)?)
    }

    fn integrate_with_jacobian<M: OdeJacobian + ?Sized>(
        &mut self,
        model: &M,
        t0_min: f64,
        t1_min: f64,
        x: &mut [f64],
        u: &[f64],
    ) -> Result<(), SolveError> {
        self.prepare(model.n_states(), u, Pattern::Model, || {
            model.jacobian_pattern()
        })?;
        let mut sys = OdeModelSystem::borrowed_with_jacobian(model, u, &self.floor)?;
        let Some((b, _)) = self.core.as_mut() else {
            unreachable!("prepared above")
        };
        Ok(b.integrate(&mut sys, t0_min, t1_min, x)?)
    }

    fn reset(&mut self) {
        if let Some((b, _)) = self.core.as_mut() {
            b.reset();
        }
    }

    fn stats(&self) -> SolverStats {
        let mut s = self.retired;
        if let Some((b, _)) = &self.core {
            s += Self::core_stats(b);
        }
        s
    }
}

/// The Rosenbrock method of [`crate::rosenbrock`] as an [`Integrator`] (see the module docs).
/// Every call ends on a step landing on `t1_min` exactly and starts afresh from the state
/// given (one right-hand side and one Jacobian; the step size carries over), so each call
/// counts as a restart. The right-hand side is treated as depending on time explicitly (one
/// extra right-hand side per step for `∂f/∂t`).
pub struct RosenbrockIntegrator {
    opts: SolverOptions,
    /// Give up ([`SolveError::TimeLimit`]) once this instant has passed.
    pub deadline: Option<Instant>,
    core: Option<(Rosenbrock, Pattern)>,
    floor: Vec<f64>,
    retired: SolverStats,
    calls: u64,
}

impl RosenbrockIntegrator {
    /// Integrator with the tolerances and limits `opts` (its `max_steps` does not apply: the
    /// stepper allows 500 000 per call); the stepper is built for the model at the first call.
    pub fn new(opts: SolverOptions) -> Self {
        RosenbrockIntegrator {
            opts,
            deadline: None,
            core: None,
            floor: Vec::new(),
            retired: SolverStats::default(),
            calls: 0,
        }
    }

    fn core_stats(r: &Rosenbrock) -> SolverStats {
        SolverStats {
            rhs_evals: r.evals,
            accepted: r.steps,
            rejected: r.rejected,
            restarts: 0,
        }
    }

    fn prepare(
        &mut self,
        n: usize,
        source: Pattern,
        rows: impl FnOnce() -> Option<Vec<Vec<usize>>>,
    ) -> Result<(), SolveError> {
        let rebuild = match &self.core {
            Some((r, p)) => r.jacobian().n != n || *p != source,
            None => true,
        };
        if rebuild {
            if let Some((old, _)) = self.core.take() {
                self.retired += Self::core_stats(&old);
            }
            let (jac, lu) = structures("Rosenbrock", n, rows())?;
            let o = &self.opts;
            let r = Rosenbrock::new(o.rtol, &vec![o.atol; n], o.h_max_min, true, jac, lu);
            self.floor = fd_floor(o, n);
            self.core = Some((r, source));
        }
        self.calls += 1;
        Ok(())
    }
}

impl Integrator for RosenbrockIntegrator {
    fn integrate<M: OdeModel + ?Sized>(
        &mut self,
        model: &M,
        t0_min: f64,
        t1_min: f64,
        x: &mut [f64],
        u: &[f64],
    ) -> Result<(), SolveError> {
        self.prepare(model.n_states(), Pattern::Dense, || None)?;
        let mut sys = OdeModelSystem::borrowed(model, u, &self.floor)?;
        let Some((r, _)) = self.core.as_mut() else {
            unreachable!("prepared above")
        };
        r.deadline = self.deadline;
        Ok(r.integrate(&mut sys, t0_min, t1_min, x)?)
    }

    fn integrate_with_jacobian<M: OdeJacobian + ?Sized>(
        &mut self,
        model: &M,
        t0_min: f64,
        t1_min: f64,
        x: &mut [f64],
        u: &[f64],
    ) -> Result<(), SolveError> {
        self.prepare(model.n_states(), Pattern::Model, || {
            model.jacobian_pattern()
        })?;
        let mut sys = OdeModelSystem::borrowed_with_jacobian(model, u, &self.floor)?;
        let Some((r, _)) = self.core.as_mut() else {
            unreachable!("prepared above")
        };
        r.deadline = self.deadline;
        Ok(r.integrate(&mut sys, t0_min, t1_min, x)?)
    }

    fn reset(&mut self) {
        if let Some((r, _)) = self.core.as_mut() {
            r.reset();
        }
    }

    fn stats(&self) -> SolverStats {
        let mut s = self.retired;
        if let Some((r, _)) = &self.core {
            s += Self::core_stats(r);
        }
        s.restarts = self.calls;
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bdf::BdfError;
    use crate::rosenbrock::RosenbrockError;
    use crate::Dopri5;
    use medtwin_core::{ModelInfo, VariableInfo};

    fn var(n: &str) -> VariableInfo {
        VariableInfo {
            name: n.into(),
            unit: "1".into(),
            description: String::new(),
        }
    }

    /// Stiff, with an input: y' = −1000 (y − u·cos t), z' = y − z; the analytic Jacobian
    /// counts its calls.
    struct Stiff {
        info: ModelInfo,
        analytic: bool,
        calls: std::cell::Cell<u64>,
    }
    impl OdeModel for Stiff {
        fn info(&self) -> &ModelInfo {
            &self.info
        }
        fn rhs(&self, t: f64, x: &[f64], u: &[f64], dx: &mut [f64]) {
            dx[0] = -1000.0 * (x[0] - u[0] * t.cos());
            dx[1] = x[0] - x[1];
        }
        fn observe(&self, x: &[f64], out: &mut [f64]) {
            out[0] = x[0];
        }
    }
    impl OdeJacobian for Stiff {
        fn jacobian_pattern(&self) -> Option<Vec<Vec<usize>>> {
            Some(vec![vec![0], vec![0, 1]])
        }
        fn analytic_jacobian(
            &self,
            _t: f64,
            _x: &[f64],
            _u: &[f64],
            j: &mut SparseJacobian,
        ) -> bool {
            if !self.analytic {
                return false;
            }
            self.calls.set(self.calls.get() + 1);
            // rows: [0: (0)], [1: (0), (1)]
            j.val.copy_from_slice(&[-1000.0, 1.0, -1.0]);
            true
        }
    }
    fn stiff(analytic: bool) -> Stiff {
        Stiff {
            info: ModelInfo {
                states: vec![var("y"), var("z")],
                inputs: vec![var("u")],
                observables: vec![var("y")],
                ..Default::default()
            },
            analytic,
            calls: std::cell::Cell::new(0),
        }
    }
    /// y(t) for y(0) = y0 under input u from t = t0.
    fn exact(t: f64, t0: f64, y0: f64, u: f64) -> f64 {
        let a = 1000.0f64;
        let p = |t: f64| u * a * (a * t.cos() + t.sin()) / (a * a + 1.0);
        p(t) + (y0 - p(t0)) * (-a * (t - t0)).exp()
    }

    fn opts() -> SolverOptions {
        SolverOptions {
            rtol: 1e-9,
            atol: 1e-12,
            h_max_min: 10.0,
            max_steps: 100_000,
        }
    }

    /// One-minute calls over 20 minutes, the input switching from 2 to 0.5 at t = 10, through
    /// the trait only (as twin code calls it); returns y(20).
    fn run<I: Integrator>(integ: &mut I, m: &Stiff, with_jac: bool) -> f64 {
        let mut x = [2.0, 0.0];
        for k in 0..20 {
            let u = [if k < 10 { 2.0 } else { 0.5 }];
            let (t0, t1) = (k as f64, k as f64 + 1.0);
            if with_jac {
                integ
                    .integrate_with_jacobian(m, t0, t1, &mut x, &u)
                    .unwrap();
            } else {
                integ.integrate(m, t0, t1, &mut x, &u).unwrap();
            }
        }
        x[0]
    }

    #[test]
    fn stiff_integrators_agree_with_dopri5_and_the_exact_solution() {
        let m = stiff(false);
        let y10 = exact(10.0, 0.0, 2.0, 2.0);
        let want = exact(20.0, 10.0, y10, 0.5);
        let mut d = Dopri5::new(2, opts());
        let yd = run(&mut d, &m, false);
        let mut b = BdfIntegrator::new(opts());
        let yb = run(&mut b, &m, false);
        let mut r = RosenbrockIntegrator::new(opts());
        let yr = run(&mut r, &m, false);
        for (name, y) in [("dopri5", yd), ("bdf", yb), ("rosenbrock", yr)] {
            assert!((y - want).abs() < 1e-7, "{name}: {y} vs {want}");
        }
        // stiffness shows as steps: DOPRI5 is stability-limited (h ≲ 3.3e-3)
        let (sd, sb) = (d.stats(), b.stats());
        assert!(sd.accepted > 5_000, "{sd:?}");
        assert!(sb.accepted < sd.accepted / 10, "{sb:?} vs {sd:?}");
        // the BDF continued its history over the minutes, restarting where the input changed
        assert_eq!(sb.restarts, 2, "{sb:?}");
        assert_eq!(r.stats().restarts, 20);
        // DOPRI5 ignores the Jacobian: the same steps through either call
        let mut d2 = Dopri5::new(2, opts());
        assert_eq!(run(&mut d2, &m, true), yd);
    }

    #[test]
    fn analytic_jacobian_replaces_finite_differences() {
        let m = stiff(true);
        let want = exact(20.0, 10.0, exact(10.0, 0.0, 2.0, 2.0), 0.5);
        let mut b = BdfIntegrator::new(opts());
        let y = run(&mut b, &m, true);
        assert!((y - want).abs() < 1e-7, "{y} vs {want}");
        let bdf = b.stepper().unwrap();
        assert_eq!(bdf.jacobian().fd_evals, 0);
        assert!(m.calls.get() > 0 && m.calls.get() == bdf.stats.jacobians);
        // the model's pattern: 3 structural non-zeros instead of 4
        assert_eq!(bdf.jacobian().col.len(), 3);
        let mut r = RosenbrockIntegrator::new(opts());
        let calls = m.calls.get();
        let y = run(&mut r, &m, true);
        assert!((y - want).abs() < 1e-7, "{y} vs {want}");
        assert!(m.calls.get() > calls);
        // a model that declines falls back to finite differences over its pattern
        let fd = stiff(false);
        let mut b = BdfIntegrator::new(opts());
        let y = run(&mut b, &fd, true);
        assert!((y - want).abs() < 1e-7);
        let bdf = b.stepper().unwrap();
        assert!(bdf.jacobian().fd_evals > 0 && bdf.jacobian().n_groups() == 2);
    }

    /// x' = 1, y' = √(1 − x): the derivative of y is NaN once x passes 1 (t = 1).
    struct Wall(ModelInfo);
    impl OdeModel for Wall {
        fn info(&self) -> &ModelInfo {
            &self.0
        }
        fn rhs(&self, _t: f64, x: &[f64], _u: &[f64], dx: &mut [f64]) {
            dx[0] = 1.0;
            dx[1] = (1.0 - x[0]).sqrt();
        }
        fn observe(&self, x: &[f64], out: &mut [f64]) {
            out[0] = x[0];
        }
    }
    struct BadPattern(Stiff);
    impl OdeModel for BadPattern {
        fn info(&self) -> &ModelInfo {
            self.0.info()
        }
        fn rhs(&self, t: f64, x: &[f64], u: &[f64], dx: &mut [f64]) {
            self.0.rhs(t, x, u, dx)
        }
        fn observe(&self, x: &[f64], out: &mut [f64]) {
            self.0.observe(x, out)
        }
    }
    impl OdeJacobian for BadPattern {
        fn jacobian_pattern(&self) -> Option<Vec<Vec<usize>>> {
            Some(vec![vec![0]])
        }
    }

    #[test]
    fn each_failure_is_its_error_variant_with_the_solvers_message() {
        let m = stiff(false);
        let mut b = BdfIntegrator::new(opts());
        // setup: inputs of the wrong length, a pattern with the wrong number of rows
        let e = b.integrate(&m, 0.0, 1.0, &mut [1.0, 0.0], &[]).unwrap_err();
        assert!(
            matches!(e, SolveError::Setup { solver: "BDF", .. }),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "BDF setup: 0 input values for 1 model inputs"
        );
        let bad = BadPattern(stiff(false));
        let e = b
            .integrate_with_jacobian(&bad, 0.0, 1.0, &mut [1.0, 0.0], &[1.0])
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "BDF setup: Jacobian pattern has 1 rows for 2 states"
        );
        let mut r = RosenbrockIntegrator::new(opts());
        let e = r
            .integrate_with_jacobian(&bad, 0.0, 1.0, &mut [1.0, 0.0], &[1.0])
            .unwrap_err();
        assert!(
            matches!(
                e,
                SolveError::Setup {
                    solver: "Rosenbrock",
                    ..
                }
            ),
            "{e:?}"
        );
        // a state of the wrong length
        let e = b.integrate(&m, 0.0, 1.0, &mut [1.0], &[1.0]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "BDF setup: state of length 1 for 2 components"
        );
        // deadline (checked every 8 BDF / 16 Rosenbrock steps: a step cap forces many)
        let mut slow = opts();
        slow.h_max_min = 1e-3;
        let mut bs = BdfIntegrator::new(slow);
        bs.deadline = Some(Instant::now() - std::time::Duration::from_secs(1));
        let e = bs
            .integrate(&m, 0.0, 1.0, &mut [2.0, 0.0], &[2.0])
            .unwrap_err();
        assert_eq!(e, SolveError::TimeLimit);
        assert_eq!(e.to_string(), "time limit exceeded");
        let mut rs = RosenbrockIntegrator::new(slow);
        rs.deadline = bs.deadline;
        let e = rs
            .integrate(&m, 0.0, 1.0, &mut [2.0, 0.0], &[2.0])
            .unwrap_err();
        assert_eq!(e, SolveError::TimeLimit);
        // step-size underflow at a wall of non-finite derivatives, naming the state
        let w = Wall(ModelInfo {
            states: vec![var("x"), var("y")],
            ..Default::default()
        });
        let mut x = [0.0, 0.0];
        let e = BdfIntegrator::new(opts())
            .integrate(&w, 0.0, 2.0, &mut x, &[])
            .unwrap_err();
        assert_eq!(x, [0.0, 0.0], "x is left as given");
        let SolveError::Bdf(BdfError::StepUnderflow { t, nonfinite, .. }) = &e else {
            panic!("{e:?}")
        };
        assert!(
            (t - 1.0).abs() < 1e-3 && nonfinite.as_deref() == Some("y"),
            "{e}"
        );
        assert!(
            e.to_string()
                .starts_with("BDF: step size underflow at t = "),
            "{e}"
        );
        let e = RosenbrockIntegrator::new(opts())
            .integrate(&w, 0.0, 2.0, &mut x, &[])
            .unwrap_err();
        let SolveError::Rosenbrock(RosenbrockError::StepUnderflow { t }) = e else {
            panic!("{e:?}")
        };
        assert!((t - 1.0).abs() < 1e-3, "{t}");
        assert!(e
            .to_string()
            .starts_with("stiff solver: step size underflow at t = "));
    }
}
