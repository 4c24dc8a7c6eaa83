//! Any [`OdeModel`] as a [`BdfSystem`], so the stiff solvers ([`crate::bdf::Bdf`],
//! [`crate::rosenbrock::Rosenbrock`]) integrate the same models as [`crate::Dopri5`]: inputs
//! held constant at `u` over the call (zero-order hold, as in [`crate::Integrator`]), the
//! Jacobian analytic where the model supplies it ([`OdeModelSystem::with_jacobian`] on an
//! [`OdeJacobian`] model), else by column-grouped finite differences over the stepper's
//! pattern (dense: [`SparseJacobian::new`]`(n, None)`; a sparse pattern saves right-hand sides).
//!
//! The [`crate::Integrator`]s over the stiff solvers ([`crate::BdfIntegrator`],
//! [`crate::RosenbrockIntegrator`]) drive the steppers through this adapter; use it directly
//! to drive a stepper yourself.

use crate::bdf::{BdfError, BdfSystem};
use crate::sparse::SparseJacobian;
use crate::OdeJacobian;
use medtwin_core::OdeModel;
use std::borrow::Cow;

/// An analytic Jacobian: [`OdeJacobian::analytic_jacobian`] of the model type.
type JacFn<M> = fn(&M, f64, &[f64], &[f64], &mut SparseJacobian) -> bool;

/// An [`OdeModel`] with inputs `u` held constant, as a one-block [`BdfSystem`].
pub struct OdeModelSystem<'a, M: OdeModel + ?Sized> {
    model: &'a M,
    u: &'a [f64],
    /// Finite-difference increment floor per state.
    floor: Cow<'a, [f64]>,
    /// The model's analytic Jacobian, if it may have one (it may still decline).
    analytic: Option<JacFn<M>>,
}

impl<'a, M: OdeModel + ?Sized> OdeModelSystem<'a, M> {
    /// `model` with inputs `u` (one value per model input, in the model's input units) and the
    /// finite-difference increment floor per state (`floor`, state units; usually
    /// `atol / rtol`); the Jacobian by finite differences.
    ///
    /// Errors: [`BdfError::Setup`] when `u` or `floor` has the wrong length.
    pub fn new(model: &'a M, u: &'a [f64], floor: Vec<f64>) -> Result<Self, BdfError> {
        Self::checked(model, u, Cow::Owned(floor), None)
    }

    /// As [`OdeModelSystem::new`] with the floor borrowed.
    pub(crate) fn borrowed(model: &'a M, u: &'a [f64], floor: &'a [f64]) -> Result<Self, BdfError> {
        Self::checked(model, u, Cow::Borrowed(floor), None)
    }

    fn checked(
        model: &'a M,
        u: &'a [f64],
        floor: Cow<'a, [f64]>,
        analytic: Option<JacFn<M>>,
    ) -> Result<Self, BdfError> {
        let n = model.n_states();
        let n_in = model.info().inputs.len();
        if u.len() != n_in {
            return Err(BdfError::Setup(format!(
                "{} input values for {n_in} model inputs",
                u.len()
            )));
        }
        if floor.len() != n {
            return Err(BdfError::Setup(format!(
                "{} finite-difference floors for {n} states",
                floor.len()
            )));
        }
        Ok(OdeModelSystem {
            model,
            u,
            floor,
            analytic,
        })
    }
}

impl<'a, M: OdeJacobian + ?Sized> OdeModelSystem<'a, M> {
    /// As [`OdeModelSystem::new`], the Jacobian from [`OdeJacobian::analytic_jacobian`]
    /// where the model supplies it (finite differences where it returns false).
    ///
    /// Errors: [`BdfError::Setup`] when `u` or `floor` has the wrong length.
    pub fn with_jacobian(model: &'a M, u: &'a [f64], floor: Vec<f64>) -> Result<Self, BdfError> {
        Self::checked(model, u, Cow::Owned(floor), Some(M::analytic_jacobian))
    }

    /// As [`OdeModelSystem::with_jacobian`] with the floor borrowed.
    pub(crate) fn borrowed_with_jacobian(
        model: &'a M,
        u: &'a [f64],
        floor: &'a [f64],
    ) -> Result<Self, BdfError> {
        Self::checked(model, u, Cow::Borrowed(floor), Some(M::analytic_jacobian))
    }
}

impl<M: OdeModel + ?Sized> BdfSystem for OdeModelSystem<'_, M> {
    fn rhs(&mut self, t: f64, y: &[f64], out: &mut [f64]) {
        self.model.rhs(t, y, self.u, out);
    }

    fn jacobian(&mut self, t: f64, y: &[f64], f: &[f64], jac: &mut SparseJacobian) {
        let (model, u) = (self.model, self.u);
        if let Some(analytic) = self.analytic {
            if analytic(model, t, y, u, jac) {
                return;
            }
        }
        let mut rhs = |t: f64, y: &[f64], out: &mut [f64]| model.rhs(t, y, u, out);
        jac.eval_fd(t, y, f, &self.floor, &mut rhs);
    }

    fn name(&self, i: usize) -> String {
        crate::state_name(self.model, i)
    }
}

#[cfg(test)]
mod tests {
    use super::OdeModelSystem;
    use crate::bdf::{Bdf, BdfError};
    use crate::rosenbrock::Rosenbrock;
    use crate::sparse::{SparseJacobian, SparseLu};
    use medtwin_core::{ModelInfo, OdeModel, VariableInfo};

    /// Stiff, with an input: y' = −1000 (y − u·cos t), z' = y − z.
    struct Stiff(ModelInfo);
    impl OdeModel for Stiff {
        fn info(&self) -> &ModelInfo {
            &self.0
        }
        fn rhs(&self, t: f64, x: &[f64], u: &[f64], dx: &mut [f64]) {
            dx[0] = -1000.0 * (x[0] - u[0] * t.cos());
            dx[1] = x[0] - x[1];
        }
        fn observe(&self, x: &[f64], out: &mut [f64]) {
            out[0] = x[0];
        }
    }
    fn var(n: &str) -> VariableInfo {
        VariableInfo {
            name: n.into(),
            unit: "1".into(),
            description: String::new(),
        }
    }
    fn model() -> Stiff {
        Stiff(ModelInfo {
            states: vec![var("y"), var("z")],
            inputs: vec![var("u")],
            observables: vec![var("y")],
            ..Default::default()
        })
    }

    #[test]
    fn bdf_and_rosenbrock_integrate_an_ode_model() {
        let m = model();
        let u = [2.0];
        // y = 2000 (1000 cos t + sin t)/(1000² + 1) + c e^{−1000 t}, y(0) = 2 ⇒ c ≈ 2e-6.
        let exact = |t: f64| {
            let a = 1000.0f64;
            2.0 * a * (a * t.cos() + t.sin()) / (a * a + 1.0)
                + (2.0 - 2.0 * a * a / (a * a + 1.0)) * (-a * t).exp()
        };
        let rows = [vec![0], vec![0, 1]];
        let jac = SparseJacobian::new(2, Some(&rows)).unwrap();
        let lu = SparseLu::new(&jac);
        let mut sys = OdeModelSystem::new(&m, &u, vec![1e-2; 2]).unwrap();
        let mut b = Bdf::new(2, 2, 1e-8, vec![1e-10; 2], 10.0, jac.clone(), lu.clone());
        let mut x = [2.0, 0.0];
        for k in 0..10 {
            let (t0, t1) = (k as f64, k as f64 + 1.0);
            b.integrate(&mut sys, t0, t1, &mut x).unwrap();
            assert!((x[0] - exact(t1)).abs() < 1e-6, "t {t1}: {x:?}");
        }
        // Stiffness shows as few steps: an explicit method would need > 3 300 (h < 3.3e-3).
        assert!(b.stats.steps < 1000, "{:?}", b.stats);
        let mut r = Rosenbrock::new(1e-8, &[1e-10; 2], 10.0, true, jac, lu);
        let mut x = [2.0, 0.0];
        r.integrate(&mut sys, 0.0, 10.0, &mut x).unwrap();
        assert!((x[0] - exact(10.0)).abs() < 1e-6, "{x:?}");
    }

    #[test]
    fn wrong_input_or_floor_length_is_an_error() {
        let m = model();
        assert!(matches!(
            OdeModelSystem::new(&m, &[], vec![1.0; 2]),
            Err(BdfError::Setup(_))
        ));
        assert!(matches!(
            OdeModelSystem::new(&m, &[1.0], vec![1.0]),
            Err(BdfError::Setup(_))
        ));
    }
}
