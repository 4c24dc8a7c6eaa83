//! The SBML side of the Rosenbrock method ([`crate::Method::Rosenbrock`]): the stepper is
//! `medtwin_simulate::rosenbrock` (Shampine 1982's 4th-order L-stable method, over a
//! [`BdfSystem`]); this module supplies the compiled model's right-hand side and its exact
//! Jacobian (the analytic sparse Jacobian of `ad.rs` where the model is differentiable, else
//! column-grouped finite differences, also forced by `MEDTWIN_SBML_FD_JACOBIAN`), and maps
//! [`RosenbrockError`] to [`SbmlError::Simulation`] with the same messages.

use crate::ad::AnalyticJac;
use crate::bdf::{BdfSystem, StiffStructures};
use crate::model::SbmlModel;
use crate::sparse::Jacobian;
use crate::SbmlError;
use medtwin_simulate::rosenbrock::{Rosenbrock, RosenbrockError};

impl From<RosenbrockError> for SbmlError {
    fn from(e: RosenbrockError) -> Self {
        SbmlError::Simulation(e.to_string())
    }
}

/// Right-hand-side buffers and Jacobian program of [`ModelRos`].
struct RosBufs {
    /// Analytic Jacobian program (None: finite differences).
    ad: Option<AnalyticJac>,
    /// Finite-difference increment floor per state (`atol / rtol`).
    fd_floor: Vec<f64>,
    vals: Vec<f64>,
    stack: Vec<f64>,
}

/// The model as a [`BdfSystem`] for the Rosenbrock stepper.
struct RosRhs<'a> {
    m: &'a SbmlModel,
    bufs: &'a mut RosBufs,
}

impl BdfSystem for RosRhs<'_> {
    fn rhs(&mut self, t: f64, y: &[f64], out: &mut [f64]) {
        let b = &mut *self.bufs;
        self.m.fill(t, y, &mut b.vals, &mut b.stack);
        self.m.derivs_from(t, &b.vals, out, &mut b.stack);
    }

    fn jacobian(&mut self, t: f64, y: &[f64], f: &[f64], jac: &mut Jacobian) {
        let m = self.m;
        let b = &mut *self.bufs;
        if let Some(ad) = b.ad.as_mut() {
            ad.eval(m, t, y, jac);
            return;
        }
        let (vals, stack) = (&mut b.vals, &mut b.stack);
        let mut rhs = |t: f64, y: &[f64], out: &mut [f64]| {
            m.fill(t, y, vals, stack);
            m.derivs_from(t, vals, out, stack);
        };
        jac.eval_fd(t, y, f, &b.fd_floor, &mut rhs);
    }

    fn name(&self, i: usize) -> String {
        self.m.slots[self.m.state_slots[i]].id.clone()
    }
}

/// The Rosenbrock stepper integrating a model's states.
pub(crate) struct ModelRos {
    /// The stepper (statistics, deadline).
    pub(crate) core: Rosenbrock,
    bufs: RosBufs,
}

impl ModelRos {
    /// Integrator for model `m` with relative tolerance `rtol`, absolute tolerances `atol` (one
    /// per state) and maximum step `h_max`.
    pub(crate) fn new(m: &SbmlModel, rtol: f64, atol: &[f64], h_max: f64) -> Self {
        let (jac, lu, mut ad) = StiffStructures::parts(m);
        if std::env::var_os("MEDTWIN_SBML_FD_JACOBIAN").is_some() {
            ad = None;
        }
        let core = Rosenbrock::new(rtol, atol, h_max, m.time_dependent, jac, lu);
        let bufs = RosBufs {
            ad,
            fd_floor: atol.iter().map(|a| a / rtol.max(1e-300)).collect(),
            vals: Vec::new(),
            stack: Vec::new(),
        };
        ModelRos { core, bufs }
    }

    /// Right-hand sides per finite-difference Jacobian (0 when the Jacobian is analytic).
    pub(crate) fn n_groups(&self) -> usize {
        if self.bufs.ad.is_some() {
            0
        } else {
            self.core.jacobian().n_groups()
        }
    }

    /// Forget the step size (after a state jump).
    pub(crate) fn reset(&mut self) {
        self.core.reset();
    }

    /// Advance `x` from `t0` to `t1`, ending on a step that lands on `t1` exactly.
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
        let mut sys = RosRhs {
            m,
            bufs: &mut self.bufs,
        };
        self.core.integrate(&mut sys, t0, t1, x)?;
        Ok(())
    }
}
