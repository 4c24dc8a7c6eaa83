//! Delay differential equations (`delay()`, SBML L3V2 §3.4.7) by the method of steps: the
//! stepper is `medtwin_simulate::dde` (DOPRI5 from the shared tableau, recording every accepted
//! step's continuous extension in a [`DenseHistory`], steps capped at the smallest delay seen);
//! this module supplies the model side: a delayed expression at time `t` is evaluated on the
//! state interpolated at `t - d` (the initial state for times before the start, with `time`
//! itself running back), after re-running the derived quantities it reads. Errors keep the
//! messages this crate has always shown.

use crate::math::DelayHook;
use crate::model::SbmlModel;
use crate::SbmlError;
use medtwin_simulate::dde::{DdeDopri5, DdeSystem, DenseHistory};
use medtwin_simulate::SolveError;
use std::cell::{Cell, RefCell};

/// The solution so far (see [`DenseHistory`]).
pub(crate) type History = DenseHistory;

/// History plus the model: evaluates delayed expressions.
pub(crate) struct DdeCtx<'a> {
    m: &'a SbmlModel,
    pub(crate) hist: RefCell<History>,
    depth: Cell<u32>,
    /// Smallest positive delay met so far (bounds the step size).
    pub(crate) min_delay: Cell<f64>,
}

impl<'a> DdeCtx<'a> {
    pub(crate) fn new(m: &'a SbmlModel, start: f64, x0: &[f64]) -> Self {
        DdeCtx {
            m,
            hist: RefCell::new(History::new(start, x0)),
            depth: Cell::new(0),
            min_delay: Cell::new(f64::INFINITY),
        }
    }
}

impl DelayHook for DdeCtx<'_> {
    fn delayed(&self, k: usize, d: f64, t: f64) -> f64 {
        let Some(def) = self.m.delays.get(k) else {
            return f64::NAN;
        };
        if d.is_nan() || self.depth.get() > 16 {
            return f64::NAN;
        }
        let d = d.max(0.0);
        if d > 0.0 && d < self.min_delay.get() {
            self.min_delay.set(d);
        }
        let s = t - d;
        let start = self.hist.borrow().start();
        if s < start {
            let mut stack = Vec::new();
            return def.x_before.eval(&self.m.base, s, &mut stack);
        }
        let mut xs = vec![0.0; self.m.state_slots.len()];
        self.hist.borrow().state_at(s, &mut xs);
        let mut vals = self.m.base.clone();
        for (i, &sl) in self.m.state_slots.iter().enumerate() {
            vals[sl] = xs[i];
        }
        let mut stack = Vec::new();
        self.depth.set(self.depth.get() + 1);
        for (sl, code) in &def.prog {
            vals[*sl] = code.eval_h(&vals, s, &mut stack, Some(self));
        }
        let v = def.x.eval_h(&vals, s, &mut stack, Some(self));
        self.depth.set(self.depth.get() - 1);
        v
    }
}

/// The model with its delay context as a [`DdeSystem`].
struct DdeRhs<'c, 'a> {
    ctx: &'c DdeCtx<'a>,
    vals: &'c mut Vec<f64>,
    stack: &'c mut Vec<f64>,
}

impl DdeSystem for DdeRhs<'_, '_> {
    fn rhs(&mut self, t: f64, x: &[f64], dx: &mut [f64]) {
        let (ctx, m) = (self.ctx, self.ctx.m);
        m.fill_h(t, x, self.vals, self.stack, Some(ctx));
        m.derivs_from_h(t, self.vals, dx, self.stack, Some(ctx));
    }

    fn step_cap(&self) -> f64 {
        self.ctx.min_delay.get()
    }

    fn record_step(&mut self, ta: f64, tb: f64, r: &[f64]) {
        self.ctx.hist.borrow_mut().push_step(ta, tb, r);
    }

    fn name(&self, i: usize) -> String {
        let m = self.ctx.m;
        m.slots[m.state_slots[i]].id.clone()
    }
}

/// The delay stepper for one simulation: `medtwin_simulate`'s [`DdeDopri5`] with the
/// right-hand-side buffers.
pub(crate) struct DdeStepper {
    core: DdeDopri5,
    vals: Vec<f64>,
    stack: Vec<f64>,
    /// Give up (error) once this instant has passed.
    pub(crate) deadline: Option<std::time::Instant>,
}

impl DdeStepper {
    /// Stepper with relative tolerance `rtol`, absolute tolerances `atol` (one per state) and
    /// largest step `h_max`.
    pub(crate) fn new(rtol: f64, atol: &[f64], h_max: f64) -> Self {
        DdeStepper {
            core: DdeDopri5::new(rtol, atol, h_max),
            vals: Vec::new(),
            stack: Vec::new(),
            deadline: None,
        }
    }

    /// Forget the step size (after a state jump).
    pub(crate) fn reset(&mut self) {
        self.core.reset();
    }

    /// Integrate `x` from `t0` to exactly `t1`, appending the steps to the history.
    ///
    /// Errors: [`SbmlError::Simulation`] (time limit, more than 200 000 steps, step-size
    /// underflow, non-finite values).
    pub(crate) fn integrate(
        &mut self,
        ctx: &DdeCtx,
        t0: f64,
        t1: f64,
        x: &mut [f64],
    ) -> Result<(), SbmlError> {
        self.core.deadline = self.deadline;
        let mut sys = DdeRhs {
            ctx,
            vals: &mut self.vals,
            stack: &mut self.stack,
        };
        self.core
            .integrate(&mut sys, t0, t1, x)
            .map_err(|e| SbmlError::Simulation(message(e)))
    }
}

/// The message this crate has always shown for a delay-stepper failure.
fn message(e: SolveError) -> String {
    match e {
        SolveError::TimeLimit => "time limit exceeded".into(),
        SolveError::TooManySteps {
            t0_min,
            t1_min,
            max_steps,
        } => format!("more than {max_steps} steps between t = {t0_min} and {t1_min}"),
        SolveError::StepTooSmall { t_min, .. } => format!("step size underflow at t = {t_min}"),
        SolveError::NonFinite { t_min, .. } => {
            format!("non-finite value in the delay equations at t = {t_min}")
        }
        e => e.to_string(),
    }
}
