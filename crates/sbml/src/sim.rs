//! Time-course simulation with events (SBML L3V2 §4.12): DOPRI5 between event times, trigger
//! transitions located by bisection, delayed/prioritised/persistent event semantics. Stiff
//! models switch to the BDF/NDF of `medtwin_simulate::bdf` (`bdf.rs` adapts the model; the
//! Rosenbrock method of `medtwin_simulate::rosenbrock` on request), models with `delay()` use the
//! method-of-steps integrator (`dde.rs`). With the environment variable `MEDTWIN_SBML_STATS`
//! set, each simulation prints its solver work (right-hand sides, steps) to stderr.

use crate::bdf::{stiffness_bound, ModelBdf};
use crate::dde::{DdeCtx, DdeStepper};
use crate::math::{Code, DelayHook, Tape};
use crate::model::{Deriv, SbmlModel, Stoich};
use crate::stiff::ModelRos;
use crate::Method;
use crate::{SbmlError, SimulateOptions, Table};
use medtwin_core::OdeModel;
use medtwin_simulate::{Dopri5, Integrator, SolveError, SolverOptions};
use std::cell::RefCell;
use std::time::Instant;

thread_local! {
    static SCRATCH: RefCell<(Vec<f64>, Vec<f64>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

impl SbmlModel {
    /// Initial state vector (values of the state slots at the initial time).
    pub fn initial_state(&self) -> Vec<f64> {
        self.state_slots.iter().map(|&s| self.base[s]).collect()
    }

    /// Fill `vals` with every slot's value at (t, x): constants, states, then the derived program
    /// (assignment rules, concentrations of amount-integrated species, reaction fluxes).
    pub(crate) fn fill(&self, t: f64, x: &[f64], vals: &mut Vec<f64>, stack: &mut Vec<f64>) {
        self.fill_h(t, x, vals, stack, None)
    }

    /// [`SbmlModel::fill`] with a history for `delay()`.
    pub(crate) fn fill_h(
        &self,
        t: f64,
        x: &[f64],
        vals: &mut Vec<f64>,
        stack: &mut Vec<f64>,
        hook: Option<&dyn DelayHook>,
    ) {
        // Previous solution of the algebraic variables is the Newton starting guess.
        let guess: Vec<f64> = if !self.alg_vars.is_empty() && vals.len() == self.base.len() {
            self.alg_vars.iter().map(|&a| vals[a]).collect()
        } else {
            Vec::new()
        };
        vals.clear();
        vals.extend_from_slice(&self.base);
        for (i, &s) in self.state_slots.iter().enumerate() {
            vals[s] = x[i];
        }
        if let (Some(tape), None) = (&self.tape, hook) {
            tape.run(vals, t);
        } else if self.alg_vars.is_empty() {
            for (sl, code) in &self.derived {
                vals[*sl] = code.eval_h(vals, t, stack, hook);
            }
        } else {
            for (&a, g) in self.alg_vars.iter().zip(&guess) {
                if g.is_finite() {
                    vals[a] = *g;
                }
            }
            self.newton(vals, t, &self.derived, stack);
        }
    }

    /// [`SbmlModel::fill`] for a caller that keeps `vals` to itself: after the first fill only the
    /// states are written and the tape recomputes every derived slot (the other slots are
    /// constants that nobody else writes into this buffer).
    pub(crate) fn fill_private(
        &self,
        t: f64,
        x: &[f64],
        vals: &mut Vec<f64>,
        stack: &mut Vec<f64>,
    ) {
        match &self.tape {
            Some(tape) if vals.len() >= self.base.len() => {
                for (i, &s) in self.state_slots.iter().enumerate() {
                    vals[s] = x[i];
                }
                tape.run(vals, t);
            }
            _ => self.fill(t, x, vals, stack),
        }
    }

    /// Indices into `derived` (in program order) of the entries needed to compute `roots`.
    pub(crate) fn sub_program(&self, roots: &[usize]) -> Vec<usize> {
        let mut need = vec![false; self.slots.len()];
        for &r in roots {
            need[r] = true;
        }
        let mut out = Vec::new();
        let mut deps = Vec::new();
        for (k, (sl, code)) in self.derived.iter().enumerate().rev() {
            if need[*sl] {
                out.push(k);
                deps.clear();
                code.slots(&mut deps);
                for &d in &deps {
                    need[d] = true;
                }
            }
        }
        out.reverse();
        out
    }

    /// Whether any of `roots` depends on a state (directly or through the derived program).
    pub(crate) fn reads_state(&self, roots: &[usize]) -> bool {
        let mut all: Vec<usize> = roots.to_vec();
        for k in self.sub_program(roots) {
            self.derived[k].1.slots(&mut all);
        }
        all.iter().any(|s| self.state_slots.contains(s))
    }

    /// The part of the derived program needed for `roots` as a register tape (None when the
    /// model needs the full fill: algebraic rules, `delay()`).
    pub(crate) fn partial_tape(&self, roots: &[usize]) -> Option<Tape> {
        if !self.alg_vars.is_empty() || !self.delays.is_empty() {
            return None;
        }
        let prog: Vec<(usize, Code)> = self
            .sub_program(roots)
            .into_iter()
            .map(|k| self.derived[k].clone())
            .collect();
        Tape::build(&prog, self.slots.len())
    }

    /// Fill the slots that `tape` (from [`SbmlModel::partial_tape`]) computes, at (t, x).
    pub(crate) fn fill_tape(&self, t: f64, x: &[f64], vals: &mut Vec<f64>, tape: &Tape) {
        if vals.len() < self.base.len() {
            vals.clear();
            vals.extend_from_slice(&self.base);
        }
        for (i, &s) in self.state_slots.iter().enumerate() {
            vals[s] = x[i];
        }
        tape.run(vals, t);
    }

    pub(crate) fn derivs_from(&self, t: f64, vals: &[f64], dx: &mut [f64], stack: &mut Vec<f64>) {
        self.derivs_from_h(t, vals, dx, stack, None)
    }

    /// [`SbmlModel::derivs_from`] with a history for `delay()`.
    pub(crate) fn derivs_from_h(
        &self,
        t: f64,
        vals: &[f64],
        dx: &mut [f64],
        stack: &mut Vec<f64>,
        hook: Option<&dyn DelayHook>,
    ) {
        if let Some((ptr, flux, coef)) = &self.flat_derivs {
            for (i, d) in dx.iter_mut().enumerate() {
                let (a, b) = (ptr[i] as usize, ptr[i + 1] as usize);
                let mut s = 0.0;
                for (&f, &c) in flux[a..b].iter().zip(&coef[a..b]) {
                    s += c * vals[f as usize];
                }
                *d = s;
            }
            return;
        }
        for (i, d) in self.derivs.iter().enumerate() {
            dx[i] = match d {
                Deriv::Zero => 0.0,
                Deriv::Rule(c) => c.eval_h(vals, t, stack, hook),
                Deriv::Reactions(terms) => {
                    let mut s = 0.0;
                    for term in terms {
                        let st = match term.stoich {
                            Stoich::Const(c) => c,
                            Stoich::Slot(q, sign) => sign * vals[q],
                        };
                        let f = term.factor.map(|c| vals[c]).unwrap_or(1.0);
                        s += st * vals[term.flux] * f;
                    }
                    s
                }
            };
        }
    }
}

impl OdeModel for SbmlModel {
    fn info(&self) -> &medtwin_core::ModelInfo {
        &self.info
    }

    /// Reactions and rate rules at time `t_min` (model time units); `u` is ignored (no inputs).
    fn rhs(&self, t_min: f64, x: &[f64], _u: &[f64], dx: &mut [f64]) {
        SCRATCH.with(|s| {
            let mut g = s.borrow_mut();
            let (vals, stack) = &mut *g;
            self.fill(t_min, x, vals, stack);
            self.derivs_from(t_min, vals, dx, stack);
        })
    }

    /// Species values (MathML units: concentration unless amount-valued) with assignment rules
    /// evaluated at the initial time (the trait carries no time).
    fn observe(&self, x: &[f64], out: &mut [f64]) {
        let mut vals = Vec::new();
        let mut stack = Vec::new();
        self.fill(self.init_time, x, &mut vals, &mut stack);
        for (o, id) in out.iter_mut().zip(&self.species_ids) {
            *o = self.ids.get(id).map(|&s| vals[s]).unwrap_or(f64::NAN);
        }
    }
}

impl SbmlModel {
    /// Absolute-tolerance weights of the states with initial values `x0`: a state's absolute
    /// tolerance is `atol × weight`. The rule is libRoadRunner's (2.x, CVODE
    /// `getAbsoluteToleranceVector`): the scalar tolerance times the state's initial magnitude
    /// (species are integrated as amounts, so a species in a 1e-15 L compartment gets a
    /// tolerance 1e-15 times smaller than the same concentration in 1 L), or, for a species
    /// starting at zero, times its compartment's size; other states starting at zero keep the
    /// scalar tolerance. Unlike libRoadRunner the weight is capped at 1 (a tolerance is never
    /// looser than the one asked for) and rounded down to a power of two (so that integrating
    /// `x / weight` instead of `x` is exact; the DOPRI5 path does that).
    pub(crate) fn atol_weights(&self, x0: &[f64]) -> Vec<f64> {
        use crate::model::Kind;
        self.state_slots
            .iter()
            .zip(x0)
            .map(|(&sl, &x)| {
                let slot = &self.slots[sl];
                let size = if x != 0.0 && x.is_finite() {
                    x.abs()
                } else {
                    match (slot.kind, slot.comp) {
                        (Kind::Species | Kind::HiddenAmount, Some(c))
                            if self.base[c].is_finite() && self.base[c] != 0.0 =>
                        {
                            self.base[c].abs()
                        }
                        _ => 1.0,
                    }
                };
                pow2_floor(size.min(1.0))
            })
            .collect()
    }
}

impl SbmlModel {
    /// The model's switch times (conditions on `time` alone, see
    /// `compile::analyse::switch_times`) strictly inside `(start, end)`, evaluated at the
    /// initial values (at `start`), sorted, without repeats; each with the index of its
    /// expression in `switch_times`. Non-finite values (e.g. a zero slope) are dropped.
    pub(crate) fn breakpoints(&self, start: f64, end: f64) -> Vec<(f64, usize)> {
        if self.switch_times.is_empty() {
            return Vec::new();
        }
        let (mut vals, mut stack) = (Vec::new(), Vec::new());
        self.fill(start, &self.initial_state(), &mut vals, &mut stack);
        self.breakpoints_from(&vals, &mut stack, start, end)
    }

    /// [`SbmlModel::breakpoints`] with the slot values `vals` given.
    pub(crate) fn breakpoints_from(
        &self,
        vals: &[f64],
        stack: &mut Vec<f64>,
        start: f64,
        end: f64,
    ) -> Vec<(f64, usize)> {
        let mut out: Vec<(f64, usize)> = self
            .switch_times
            .iter()
            .enumerate()
            .map(|(k, c)| (c.eval(vals, start, stack), k))
            .filter(|&(t, _)| t.is_finite() && t > start && t < end)
            .collect();
        out.sort_by(|a, b| a.0.total_cmp(&b.0));
        out.dedup_by(|a, b| a.0 == b.0);
        out
    }
}

/// The times at which the right-hand side is evaluated between the switch times `lo < hi`
/// (infinite: no switch on that side): `[lo + δ, hi − δ]` with `δ = 10⁻¹²·max(|T|, 1)`, so that
/// a condition on time has its value inside the interval at both ends and when an integrator
/// steps past `hi` (the BDF does, interpolating back): the right-hand side is continued
/// continuously instead of jumping, and the simulation restarts at `hi`. As AMICI's Heaviside
/// variables, which change only at their roots.
pub(crate) fn switch_window(lo: f64, hi: f64) -> (f64, f64) {
    let d = |t: f64| 1e-12 * t.abs().max(1.0);
    let a = if lo.is_finite() { lo + d(lo) } else { lo };
    let b = if hi.is_finite() { hi - d(hi) } else { hi };
    if a <= b {
        (a, b)
    } else {
        let mid = 0.5 * (lo + hi);
        (mid, mid)
    }
}

/// Largest power of two `<= v` for `v` in (0, 1], at least 2^-900.
fn pow2_floor(v: f64) -> f64 {
    if v >= 1.0 || v.is_nan() {
        return 1.0;
    }
    let e = v.log2().floor().max(-900.0) as i32;
    let p = 2f64.powi(e);
    if p > v {
        p * 0.5
    } else {
        p
    }
}

/// The model in the scaled states `y = x / w` (`w`: powers of two, so the scaling is exact;
/// None: unscaled): DOPRI5's scalar absolute tolerance on `y` is the per-state tolerance
/// `atol·w` on `x`. Times are clamped to `window` ([`switch_window`]).
struct Scaled<'a> {
    m: &'a SbmlModel,
    w: Option<&'a [f64]>,
    window: (f64, f64),
}

thread_local! {
    static UNSCALED: RefCell<Vec<f64>> = const { RefCell::new(Vec::new()) };
}

impl OdeModel for Scaled<'_> {
    fn info(&self) -> &medtwin_core::ModelInfo {
        &self.m.info
    }

    fn rhs(&self, t_min: f64, y: &[f64], u: &[f64], dy: &mut [f64]) {
        let t = t_min.clamp(self.window.0, self.window.1);
        let Some(ws) = self.w else {
            return self.m.rhs(t, y, u, dy);
        };
        UNSCALED.with(|b| {
            let mut x = b.borrow_mut();
            x.clear();
            x.extend(y.iter().zip(ws).map(|(v, w)| v * w));
            self.m.rhs(t, &x, u, dy);
        });
        for (d, w) in dy.iter_mut().zip(ws) {
            *d /= w;
        }
    }

    fn observe(&self, y: &[f64], out: &mut [f64]) {
        match self.w {
            None => self.m.observe(y, out),
            Some(ws) => {
                let x: Vec<f64> = y.iter().zip(ws).map(|(v, w)| v * w).collect();
                self.m.observe(&x, out)
            }
        }
    }
}

/// Event-loop iterations at one time point before the simulation fails, naming the event.
const MAX_EVENT_ITERATIONS: usize = 100_000;
/// Trigger transitions of one event, each a vanishing time (`Sim::chatter_dt`) after the
/// previous, after which further ones are accepted without firing.
const CHATTER_STRIKES: u32 = 3;

struct Pending {
    ev: usize,
    time: f64,
    values: Option<Vec<f64>>,
}

enum Out {
    Plain(usize),
    Amount(usize, usize),
    Conc(usize, usize),
}

struct Sim<'a> {
    m: &'a SbmlModel,
    vals: Vec<f64>,
    stack: Vec<f64>,
    state_of: Vec<Option<usize>>,
    prev: Vec<bool>,
    /// Per event: time its trigger last came true, and consecutive repeats within
    /// `chatter_dt` of each other; transitions accepted without firing (see `process_events`).
    last_on: Vec<f64>,
    strikes: Vec<u32>,
    chatter_dt: f64,
    suppressed: u64,
    pending: Vec<Pending>,
    rng: u64,
    deadline: Option<Instant>,
    /// History of a model with `delay()` (None for ODE models).
    dde: Option<&'a DdeCtx<'a>>,
    stepper: DdeStepper,
    /// Stiff integrator once the model is treated as stiff.
    stiff: Option<Stiff>,
    /// Derived-program entries the triggers read (None: use the full fill, for models with
    /// algebraic rules or `delay()`).
    trig_prog: Option<Tape>,
    /// Whether the triggers read only time and constants.
    time_only_triggers: bool,
    /// May switch to the stiff method when DOPRI5 gives up.
    auto: bool,
    rtol: f64,
    /// Absolute tolerance per state, and the weights (`atol / opts.atol`; None when all are 1)
    /// by which DOPRI5 integrates scaled states.
    atol: Vec<f64>,
    weights: Option<Vec<f64>>,
    h_max_bdf: f64,
    /// Times at which the right-hand side is evaluated ([`switch_window`]): between the
    /// switch times around the current time; unbounded without switches.
    window: (f64, f64),
    /// Start (or last state jump) time, DOPRI5's steps before it, and the output spacing
    /// (for DOPRI5's steps per output interval).
    t_begin: f64,
    steps_at_reset: u64,
    dt_out: f64,
}

/// The stiff integrator in use.
enum Stiff {
    Bdf(Box<ModelBdf>),
    Ros(Box<ModelRos>),
}

impl Stiff {
    fn integrate(
        &mut self,
        m: &SbmlModel,
        t0: f64,
        t1: f64,
        x: &mut [f64],
    ) -> Result<(), SbmlError> {
        match self {
            Stiff::Bdf(b) => b.integrate(m, t0, t1, x),
            Stiff::Ros(r) => r.integrate(m, t0, t1, x),
        }
    }

    fn reset(&mut self) {
        match self {
            Stiff::Bdf(b) => b.reset(),
            Stiff::Ros(r) => r.reset(),
        }
    }

    fn set_window(&mut self, window: (f64, f64)) {
        match self {
            Stiff::Bdf(b) => b.set_window(window),
            // The Rosenbrock method sees real time (it still restarts at switch times).
            Stiff::Ros(_) => {}
        }
    }

    fn set_deadline(&mut self, d: Option<Instant>) {
        match self {
            Stiff::Bdf(b) => b.core.deadline = d,
            Stiff::Ros(r) => r.core.deadline = d,
        }
    }

    fn stats(&self) -> String {
        match self {
            Stiff::Bdf(b) => {
                let s = b.stats();
                let (groups, fill) = b.structure();
                let kind = if groups == 0 {
                    "analytic".to_string()
                } else {
                    format!("finite-difference, {groups} RHS each")
                };
                format!(
                    "BDF, {} rhs, {} steps, {} rejected, {} Newton failures, {} Jacobians \
                     ({kind}), {} LU (fill {fill})",
                    s.rhs, s.steps, s.rejected, s.newton_fails, s.jacobians, s.factorizations
                )
            }
            Stiff::Ros(r) => {
                let kind = match r.n_groups() {
                    0 => "analytic".to_string(),
                    g => format!("finite-difference, {g} RHS each"),
                };
                format!(
                    "Rosenbrock, {} rhs, {} steps, {} rejected, Jacobians {kind}",
                    r.core.evals, r.core.steps, r.core.rejected
                )
            }
        }
    }
}

impl<'a> Sim<'a> {
    fn hook(&self) -> Option<&'a dyn DelayHook> {
        self.dde.map(|c| c as &dyn DelayHook)
    }

    fn fill(&mut self, t: f64, x: &[f64]) {
        let hook = self.hook();
        self.m.fill_h(t, x, &mut self.vals, &mut self.stack, hook);
    }

    fn eval(&mut self, c: &Code, t: f64) -> f64 {
        let hook = self.hook();
        c.eval_h(&self.vals, t, &mut self.stack, hook)
    }

    /// xorshift64* (fixed seed: runs are reproducible).
    fn next_random(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11
    }

    fn check_time(&self) -> Result<(), SbmlError> {
        if let Some(d) = self.deadline {
            if Instant::now() > d {
                return Err(SbmlError::Simulation("time limit exceeded".into()));
            }
        }
        Ok(())
    }

    /// Trigger values at (t, x) computing only what the triggers read; leaves `self.vals`
    /// partially filled (callers that evaluate anything else must [`Sim::fill`] first).
    fn triggers_fast(&mut self, t: f64, x: &[f64]) -> Vec<bool> {
        let Some(tape) = self.trig_prog.take() else {
            return self.triggers(t, x);
        };
        if self.time_only_triggers && self.vals.len() >= self.m.base.len() {
            // The triggers read no state: skip writing it.
            tape.run(&mut self.vals, t);
        } else {
            self.m.fill_tape(t, x, &mut self.vals, &tape);
        }
        self.trig_prog = Some(tape);
        let m = self.m;
        m.events
            .iter()
            .map(|e| {
                e.trigger
                    .as_ref()
                    .map(|c| c.eval(&self.vals, t, &mut self.stack) != 0.0)
                    .unwrap_or(false)
            })
            .collect()
    }

    fn triggers(&mut self, t: f64, x: &[f64]) -> Vec<bool> {
        self.fill(t, x);
        let m = self.m;
        m.events
            .iter()
            .map(|e| {
                e.trigger
                    .as_ref()
                    .map(|c| self.eval(c, t) != 0.0)
                    .unwrap_or(false)
            })
            .collect()
    }

    fn eval_assigns(&mut self, ev: usize, t: f64) -> Vec<f64> {
        let m = self.m;
        m.events[ev]
            .assigns
            .iter()
            .map(|(_, c)| self.eval(c, t))
            .collect()
    }

    /// Execute event `ev`'s assignments with precomputed `values`. A species in concentration
    /// units keeps amount = value × compartment size *before* this event's assignments (as the
    /// test suite expects when an event sets a species and its compartment together).
    /// `self.vals` must hold the values at (t, x) before the assignments.
    fn apply(&mut self, ev: usize, x: &mut [f64], values: &[f64]) {
        let e = &self.m.events[ev];
        for ((sl, _), v) in e.assigns.iter().zip(values) {
            if let Some(i) = self.state_of[*sl] {
                x[i] = *v;
            } else if let Some(h) = self.m.slots[*sl].hidden {
                let comp = self.m.slots[*sl].comp.unwrap_or(0);
                if let Some(i) = self.state_of[h] {
                    x[i] = v * self.vals[comp];
                }
            }
        }
    }

    /// Fire newly triggered events and execute every event due at `t`, in priority order.
    /// Returns whether any event was executed (the state may have jumped).
    fn process_events(&mut self, t: f64, x: &mut [f64]) -> Result<bool, SbmlError> {
        if self.m.events.is_empty() {
            return Ok(false);
        }
        // Nothing to do when no trigger changed and no event is due.
        if self.trig_prog.is_some()
            && !self.pending.iter().any(|p| p.time <= t)
            && self.triggers_fast(t, x) == self.prev
        {
            return Ok(false);
        }
        let mut executed = false;
        let mut guard = 0usize;
        let mut fired = vec![0usize; self.m.events.len()];
        loop {
            guard += 1;
            if guard > MAX_EVENT_ITERATIONS {
                let (e, n) = fired
                    .iter()
                    .enumerate()
                    .max_by_key(|(_, &n)| n)
                    .unwrap_or((0, &0));
                return Err(SbmlError::Simulation(format!(
                    "event cascade does not terminate at t = {t}: event '{}' executed {n} times",
                    self.m.events[e].id
                )));
            }
            let now = self.triggers(t, x);
            for (e, &on) in now.iter().enumerate() {
                let ev = &self.m.events[e];
                if on && !self.prev[e] {
                    // Chattering: a trigger that comes true again a vanishing time after it last
                    // did (a state reset onto the trigger's boundary, e.g. `V < 0 → V = 0` with
                    // dV/dt < 0 at V = 0) would fire in an endless series of zero-length
                    // intervals. After CHATTER_STRIKES such repeats the transition is accepted
                    // without firing (as libRoadRunner's CVODE integrator does) until the
                    // trigger comes true again after a real interval.
                    let since = t - self.last_on[e];
                    if since > 0.0 {
                        if since <= self.chatter_dt {
                            self.strikes[e] += 1;
                        } else {
                            self.strikes[e] = 0;
                        }
                    }
                    self.last_on[e] = t;
                    if self.strikes[e] >= CHATTER_STRIKES {
                        self.suppressed += 1;
                        self.prev[e] = on;
                        continue;
                    }
                    fired[e] += 1;
                    let delay = match &ev.delay {
                        Some(c) => self.eval(c, t),
                        None => 0.0,
                    };
                    let values = if ev.use_trigger_values {
                        Some(self.eval_assigns(e, t))
                    } else {
                        None
                    };
                    self.pending.push(Pending {
                        ev: e,
                        time: t + delay,
                        values,
                    });
                }
                if !on && !ev.persistent {
                    self.pending.retain(|p| p.ev != e);
                }
                self.prev[e] = on;
            }
            // Ready events, highest priority first; ties broken at random (SBML L3V2 §4.12.6).
            let mut best_pr = f64::NEG_INFINITY;
            let mut cands: Vec<usize> = Vec::new();
            for (k, p) in self.pending.iter().enumerate() {
                if p.time > t {
                    continue;
                }
                let m = self.m;
                let pr = match &m.events[p.ev].priority {
                    Some(c) => {
                        let hook = self.dde.map(|c| c as &dyn DelayHook);
                        c.eval_h(&self.vals, t, &mut self.stack, hook)
                    }
                    None => f64::NEG_INFINITY,
                };
                let pr = if pr.is_nan() { f64::NEG_INFINITY } else { pr };
                if cands.is_empty() || pr > best_pr {
                    best_pr = pr;
                    cands.clear();
                    cands.push(k);
                } else if pr == best_pr {
                    cands.push(k);
                }
            }
            if cands.is_empty() {
                break;
            }
            let k = if cands.len() == 1 {
                cands[0]
            } else {
                cands[(self.next_random() % cands.len() as u64) as usize]
            };
            let p = self.pending.remove(k);
            let values = match p.values {
                Some(v) => v,
                None => self.eval_assigns(p.ev, t),
            };
            self.apply(p.ev, x, &values);
            executed = true;
        }
        Ok(executed)
    }

    fn advance(
        &mut self,
        integ: &mut Dopri5,
        t0: f64,
        t1: f64,
        x: &mut [f64],
    ) -> Result<(), SbmlError> {
        if x.is_empty() || t1 <= t0 {
            return Ok(());
        }
        if let Some(ctx) = self.dde {
            return self.stepper.integrate(ctx, t0, t1, x);
        }
        let span = t1 - t0;
        if let (Some(r), false) = (self.stiff.as_mut(), span < 1e-9 * t0.abs().max(1.0)) {
            r.set_window(self.window);
            return r.integrate(self.m, t0, t1, x);
        }
        if span < 1e-9 * t0.abs().max(1.0) {
            // Too short for the step-size controller: one explicit Euler step.
            let mut dx = vec![0.0; x.len()];
            self.m
                .rhs(t0.clamp(self.window.0, self.window.1), x, &[], &mut dx);
            for (xi, d) in x.iter_mut().zip(&dx) {
                *xi += span * d;
            }
            return Ok(());
        }
        let x0 = x.to_vec();
        let unbounded = self.window == (f64::NEG_INFINITY, f64::INFINITY);
        let res = match &self.weights {
            None if unbounded => integ.integrate(self.m, t0, t1, x, &[]),
            None => {
                let sys = Scaled {
                    m: self.m,
                    w: None,
                    window: self.window,
                };
                integ.integrate(&sys, t0, t1, x, &[])
            }
            Some(w) => {
                for (v, w) in x.iter_mut().zip(w) {
                    *v /= w;
                }
                let sys = Scaled {
                    m: self.m,
                    w: Some(w),
                    window: self.window,
                };
                let r = integ.integrate(&sys, t0, t1, x, &[]);
                for (v, w) in x.iter_mut().zip(w) {
                    *v *= w;
                }
                r
            }
        };
        match res {
            Ok(()) => {
                // Mildly stiff: DOPRI5 needs more than 10 steps per output interval (its steps
                // are stability-limited, not accuracy-limited); the BDF takes over from here.
                let steps = integ.stats().accepted.saturating_sub(self.steps_at_reset) as f64;
                if self.t_begin.is_nan() {
                    self.t_begin = t0;
                }
                let intervals = ((t1 - self.t_begin) / self.dt_out).max(1.0);
                if self.auto && steps > 500.0 && steps > 10.0 * intervals {
                    let mut r = Stiff::Bdf(Box::new(ModelBdf::new(
                        self.m,
                        self.rtol,
                        &self.atol,
                        self.h_max_bdf,
                    )));
                    r.set_deadline(self.deadline);
                    self.stiff = Some(r);
                }
                Ok(())
            }
            Err(SolveError::TooManySteps { .. } | SolveError::StepTooSmall { .. }) if self.auto => {
                // DOPRI5 gives up: the model is stiff here; continue with the BDF.
                x.copy_from_slice(&x0);
                let mut r = Stiff::Bdf(Box::new(ModelBdf::new(
                    self.m,
                    self.rtol,
                    &self.atol,
                    self.h_max_bdf,
                )));
                r.set_deadline(self.deadline);
                let res = r.integrate(self.m, t0, t1, x);
                self.stiff = Some(r);
                res
            }
            Err(e) => Err(SbmlError::Simulation(e.to_string())),
        }
    }

    fn reset(&mut self, integ: &mut Dopri5) {
        // DOPRI5's step count restarts its stiffness test after a state jump (restarts take
        // small steps that say nothing about stiffness).
        self.steps_at_reset = integ.stats().accepted;
        self.t_begin = f64::NAN;
        integ.reset();
        if let Some(r) = self.stiff.as_mut() {
            r.reset();
        }
    }
}

/// One stop of a time course: an output row, doses, a switch time, or several (the row
/// first, then the doses; at a switch time the integrators restart).
struct Stop {
    t: f64,
    output: bool,
    doses: Vec<(usize, f64)>,
    restart: bool,
}

/// The stops of a course: the output grid of `opts` (or `course.times`) merged with the dose
/// times, sorted. Errors name the offending time or state.
fn stops(
    m: &SbmlModel,
    opts: &SimulateOptions,
    course: &crate::Course,
) -> Result<Vec<Stop>, SbmlError> {
    let mut out: Vec<Stop> = match course.times {
        None => (0..=opts.steps)
            .map(|k| Stop {
                t: if k == opts.steps {
                    opts.end
                } else {
                    opts.start + (opts.end - opts.start) / opts.steps as f64 * k as f64
                },
                output: true,
                doses: Vec::new(),
                restart: false,
            })
            .collect(),
        Some(ts) => {
            for (i, w) in ts.windows(2).enumerate() {
                if w[1] < w[0] {
                    return Err(SbmlError::Options(format!(
                        "output times must be sorted: time {} (index {}) follows {}",
                        w[1],
                        i + 1,
                        w[0]
                    )));
                }
            }
            ts.iter()
                .map(|&t| Stop {
                    t,
                    output: true,
                    doses: Vec::new(),
                    restart: false,
                })
                .collect()
        }
    };
    for t in out.iter().map(|s| s.t) {
        if !t.is_finite() || t < opts.start {
            return Err(SbmlError::Options(format!(
                "output time {t} is before the start {} or not finite",
                opts.start
            )));
        }
    }
    for d in course.doses {
        if d.state >= m.state_slots.len() {
            return Err(SbmlError::Options(format!(
                "dose at time {} targets state {} but the model has {} states",
                d.time,
                d.state,
                m.state_slots.len()
            )));
        }
        if !d.time.is_finite() || d.time < opts.start || !d.amount.is_finite() {
            return Err(SbmlError::Options(format!(
                "dose of {} into state {} at time {}: time must be finite and >= the start {}, amount finite",
                d.amount, d.state, d.time, opts.start
            )));
        }
        match out.iter_mut().find(|s| s.t == d.time) {
            Some(s) => s.doses.push((d.state, d.amount)),
            None => out.push(Stop {
                t: d.time,
                output: false,
                doses: vec![(d.state, d.amount)],
                restart: false,
            }),
        }
    }
    out.sort_by(|a, b| a.t.total_cmp(&b.t));
    Ok(out)
}

/// Mark the stops at the switch times `at` (sorted) as restarts, adding stops where needed.
fn add_restarts(stops: &mut Vec<Stop>, at: &[f64]) {
    if at.is_empty() {
        return;
    }
    for &t in at {
        match stops.iter_mut().find(|s| s.t == t) {
            Some(s) => s.restart = true,
            None => stops.push(Stop {
                t,
                output: false,
                doses: Vec::new(),
                restart: true,
            }),
        }
    }
    stops.sort_by(|a, b| a.t.total_cmp(&b.t));
}

/// See [`crate::simulate_with_deadline`] and [`crate::simulate_course`].
pub(crate) fn run(
    model: &SbmlModel,
    opts: &SimulateOptions,
    course: &crate::Course,
    deadline: Option<Instant>,
) -> Result<Table, SbmlError> {
    let opts = &match course.times {
        Some(ts) => SimulateOptions {
            end: ts
                .iter()
                .copied()
                .chain(course.doses.iter().map(|d| d.time))
                .fold(opts.start, f64::max),
            steps: ts.len().max(1),
            ..opts.clone()
        },
        None => opts.clone(),
    };
    if opts.end.is_nan() || opts.start.is_nan() || opts.end < opts.start || opts.steps == 0 {
        return Err(SbmlError::Options(
            "need end >= start and steps >= 1".into(),
        ));
    }
    let stops = stops(model, opts, course)?;
    let owned;
    let m = if model.init_time != opts.start {
        let mut c = model.clone();
        c.compute_initial(opts.start);
        owned = c;
        &owned
    } else {
        model
    };
    // Switch times of conditions on time alone: the integrators stop and restart there.
    let switches: Vec<f64> = if m.delays.is_empty() {
        m.breakpoints(opts.start, opts.end)
            .into_iter()
            .map(|b| b.0)
            .collect()
    } else {
        Vec::new()
    };
    let mut stops = stops;
    add_restarts(&mut stops, &switches);
    // Output columns.
    let vars: Vec<String> = match &opts.vars {
        Some(v) => v.clone(),
        None => m.default_variables(),
    };
    let mut outs = Vec::new();
    for v in &vars {
        let &sl = m
            .ids
            .get(v)
            .ok_or_else(|| SbmlError::Options(format!("unknown variable '{v}'")))?;
        let s = &m.slots[sl];
        let comp = s.comp.unwrap_or(0);
        let is_sp = s.kind == crate::model::Kind::Species;
        outs.push(if is_sp && opts.amount.contains(v) && !s.amount_units {
            Out::Amount(sl, comp)
        } else if is_sp && opts.concentration.contains(v) && s.amount_units {
            Out::Conc(sl, comp)
        } else {
            Out::Plain(sl)
        });
    }
    let mut state_of = vec![None; m.slots.len()];
    for (i, &s) in m.state_slots.iter().enumerate() {
        state_of[s] = Some(i);
    }
    let x_init = m.initial_state();
    let weights = m.atol_weights(&x_init);
    let atol: Vec<f64> = weights.iter().map(|w| opts.atol * w).collect();
    let ctx = if m.delays.is_empty() {
        None
    } else {
        Some(DdeCtx::new(m, opts.start, &x_init))
    };
    let dt = (opts.end - opts.start) / opts.steps as f64;
    // Largest step of every integrator (`opts.max_step`: short pulses in time-dependent
    // expressions are not stepped over).
    let max_step = match opts.max_step {
        None => f64::INFINITY,
        Some(h) if h > 0.0 => h,
        Some(h) => {
            return Err(SbmlError::Options(format!(
                "maximum step must be positive, got {h}"
            )))
        }
    };
    // The stiff method steps past output times (Hermite output) unless events need watching.
    let h_max_stiff = if m.events.is_empty() {
        (opts.end - opts.start).max(1e-300)
    } else if dt > 0.0 {
        dt
    } else {
        1.0
    }
    .min(max_step);
    // BDF steps past output times (interpolated output) also with events: triggers are checked
    // on the interpolated solution at every sub-interval end.
    let h_max_bdf = (opts.end - opts.start).max(1e-300).min(max_step);
    let bdf = || Stiff::Bdf(Box::new(ModelBdf::new(m, opts.rtol, &atol, h_max_bdf)));
    let stiff = if !m.delays.is_empty() {
        None
    } else {
        match opts.method {
            Method::Stiff => Some(bdf()),
            Method::Rosenbrock => Some(Stiff::Ros(Box::new(ModelRos::new(
                m,
                opts.rtol,
                &atol,
                h_max_stiff,
            )))),
            Method::Explicit => None,
            Method::Auto => {
                let rho = stiffness_bound(m, opts.start, &x_init, &weights);
                if rho * (opts.end - opts.start) > 1e4 {
                    Some(bdf())
                } else {
                    None
                }
            }
        }
    };
    let mut stiff = stiff;
    if let Some(r) = stiff.as_mut() {
        r.set_deadline(deadline);
    }
    let mut stepper = DdeStepper::new(
        opts.rtol,
        &atol,
        (if dt > 0.0 { dt } else { 1.0 }).min(max_step),
    );
    stepper.deadline = deadline;
    let mut roots = Vec::new();
    for e in &m.events {
        if let Some(c) = &e.trigger {
            c.slots(&mut roots);
        }
    }
    let trig_prog = m.partial_tape(&roots);
    // Triggers that read only time and constants can be checked without the state.
    let time_only_triggers = trig_prog.is_some() && !m.events.is_empty() && !m.reads_state(&roots);
    // Output columns need only part of the derived program.
    let mut roots = Vec::new();
    for o in &outs {
        match *o {
            Out::Plain(s) => roots.push(s),
            Out::Amount(s, c) | Out::Conc(s, c) => roots.extend([s, c]),
        }
    }
    let out_prog = m.partial_tape(&roots);
    let mut sim = Sim {
        time_only_triggers,
        trig_prog,
        stiff,
        auto: opts.method == Method::Auto && m.delays.is_empty(),
        rtol: opts.rtol,
        atol: atol.clone(),
        weights: if weights.iter().all(|&w| w == 1.0) {
            None
        } else {
            Some(weights.clone())
        },
        h_max_bdf,
        window: switch_window(
            f64::NEG_INFINITY,
            switches.first().copied().unwrap_or(f64::INFINITY),
        ),
        t_begin: opts.start,
        steps_at_reset: 0,
        dt_out: if dt > 0.0 { dt } else { 1.0 },
        dde: ctx.as_ref(),
        stepper,
        m,
        vals: Vec::new(),
        stack: Vec::new(),
        state_of,
        prev: m.events.iter().map(|e| e.initial_value).collect(),
        last_on: vec![f64::NEG_INFINITY; m.events.len()],
        strikes: vec![0; m.events.len()],
        chatter_dt: 1e-9 * (opts.end - opts.start).max(opts.end.abs()).max(1e-300),
        suppressed: 0,
        pending: Vec::new(),
        rng: 0x9E37_79B9_7F4A_7C15,
        deadline,
    };
    let n = m.state_slots.len();
    let sopts = SolverOptions {
        rtol: opts.rtol,
        atol: opts.atol,
        h_max_min: (if dt > 0.0 { dt } else { 1.0 }).min(max_step),
        max_steps: if opts.method == Method::Auto {
            5_000
        } else {
            200_000
        },
    };
    let mut integ = Dopri5::new(n, sopts);
    let mut x = x_init.clone();
    let mut t = opts.start;
    // Time of `x` (behind `t` while only time-dependent triggers are being checked).
    let mut tx = t;
    let mut rows = Vec::with_capacity(opts.steps + 1);
    let record = |sim: &mut Sim, t: f64, x: &[f64], rows: &mut Vec<Vec<f64>>| {
        match &out_prog {
            Some(p) => sim.m.fill_tape(t, x, &mut sim.vals, p),
            None => sim.fill(t, x),
        }
        let mut row = Vec::with_capacity(outs.len() + 1);
        row.push(t);
        for o in &outs {
            row.push(match *o {
                Out::Plain(s) => sim.vals[s],
                Out::Amount(s, c) => sim.vals[s] * sim.vals[c],
                Out::Conc(s, c) => sim.vals[s] / sim.vals[c],
            });
        }
        rows.push(row);
    };
    if sim.process_events(t, &mut x)? {
        if let Some(c) = sim.dde {
            c.hist.borrow_mut().restart_at(t, &x);
        }
    }
    for stop in &stops {
        let tk = stop.t;
        while t < tk {
            sim.check_time()?;
            let next_due = sim
                .pending
                .iter()
                .map(|p| p.time)
                .filter(|&pt| pt > t)
                .fold(f64::INFINITY, f64::min);
            // With events, advance in sub-intervals of at most dt/10 so that short trigger
            // windows between output times are not stepped over.
            let sub = if sim.m.events.is_empty() {
                f64::INFINITY
            } else {
                t + dt / 10.0
            };
            let t1 = tk.min(next_due).min(if sub > t { sub } else { tk });
            if time_only_triggers {
                // The state is only needed where an event may fire and at output times: check
                // the triggers on time alone and integrate from where the state is (`tx`).
                let changed = sim.triggers_fast(t1, &x) != sim.prev;
                let due = sim.pending.iter().any(|p| p.time <= t1);
                if !changed && !due && t1 < tk {
                    t = t1;
                    continue;
                }
                let mut hi = t1;
                if changed {
                    let mut lo = t;
                    let mut it = 0;
                    while hi - lo > 1e-13 * hi.abs().max(1.0) && it < 200 {
                        it += 1;
                        let mid = 0.5 * (lo + hi);
                        if mid <= lo || mid >= hi {
                            break;
                        }
                        if sim.triggers_fast(mid, &x) != sim.prev {
                            hi = mid;
                        } else {
                            lo = mid;
                        }
                    }
                }
                sim.check_time()?;
                sim.advance(&mut integ, tx, hi, &mut x)?;
                t = hi;
                tx = hi;
                if sim.process_events(t, &mut x)? {
                    sim.reset(&mut integ);
                }
                continue;
            }
            let x0 = x.clone();
            sim.advance(&mut integ, t, t1, &mut x)?;
            let changed = !sim.m.events.is_empty() && sim.triggers_fast(t1, &x) != sim.prev;
            if changed {
                // Locate the first trigger change by bisection.
                let (mut lo, mut hi) = (t, t1);
                let (mut xlo, mut xhi) = (x0, x.clone());
                let mut it = 0;
                while hi - lo > 1e-13 * hi.abs().max(1.0) && it < 200 {
                    it += 1;
                    sim.check_time()?;
                    let mid = 0.5 * (lo + hi);
                    if mid <= lo || mid >= hi {
                        break;
                    }
                    let mut xm = xlo.clone();
                    match sim.dde {
                        Some(c) => c.hist.borrow().state_at(mid, &mut xm),
                        None => sim.advance(&mut integ, lo, mid, &mut xm)?,
                    }
                    if sim.triggers_fast(mid, &xm) != sim.prev {
                        hi = mid;
                        xhi = xm;
                    } else {
                        lo = mid;
                        xlo = xm;
                    }
                }
                t = hi;
                x = xhi;
                if let Some(c) = sim.dde {
                    c.hist.borrow_mut().restart_at(t, &x);
                }
            } else {
                t = t1;
            }
            // Without a trigger change or a due event there is nothing to execute.
            let may_fire =
                changed || sim.trig_prog.is_none() || sim.pending.iter().any(|p| p.time <= t);
            if may_fire && sim.process_events(t, &mut x)? {
                sim.reset(&mut integ);
                if let Some(c) = sim.dde {
                    c.hist.borrow_mut().restart_at(t, &x);
                    sim.stepper.reset();
                }
            }
            tx = t;
        }
        if time_only_triggers && tx < tk {
            sim.advance(&mut integ, tx, tk, &mut x)?;
        }
        t = tk;
        tx = t;
        if stop.output {
            record(&mut sim, t, &x, &mut rows);
        }
        if stop.restart {
            let next = switches.iter().copied().find(|&b| b > tk);
            sim.window = switch_window(tk, next.unwrap_or(f64::INFINITY));
            sim.reset(&mut integ);
        }
        if !stop.doses.is_empty() {
            for &(i, amount) in &stop.doses {
                x[i] += amount;
            }
            sim.reset(&mut integ);
            if let Some(c) = sim.dde {
                c.hist.borrow_mut().restart_at(t, &x);
                sim.stepper.reset();
            }
            if sim.process_events(t, &mut x)? {
                sim.reset(&mut integ);
            }
        }
    }
    if std::env::var_os("MEDTWIN_SBML_STATS").is_some() {
        let st = integ.stats();
        eprintln!(
            "dopri5: {} rhs, {} accepted, {} rejected; {} chattering trigger transitions not fired; stiff: {}",
            st.rhs_evals,
            st.accepted,
            st.rejected,
            sim.suppressed,
            sim.stiff
                .as_ref()
                .map(|r| r.stats())
                .unwrap_or_else(|| "unused".into())
        );
    }
    let mut header = vec!["time".to_string()];
    header.extend(vars);
    Ok(Table { header, rows })
}

#[cfg(test)]
pub(crate) mod tests {
    /// `dx/dt = u(t) − k·x` with a drug input `u` written as piecewise functions of time, as
    /// the PEtab benchmark models write them: `u = 0` while `time − Ton < 0`, `A` while
    /// `time <= Toff`, then 0 (`Ton`, `Toff` parameters).
    pub(crate) fn pulse_model(t_on: f64, t_off: f64) -> String {
        let m = |x: &str| format!(r#"<math xmlns="http://www.w3.org/1998/Math/MathML">{x}</math>"#);
        let time = r#"<csymbol encoding="text" definitionURL="http://www.sbml.org/sbml/symbols/time">time</csymbol>"#;
        let u = format!(
            "<piecewise><piece><cn>0</cn><apply><lt/><apply><minus/>{time}<ci>Ton</ci></apply><cn>0</cn></apply></piece>\
             <piece><ci>A</ci><apply><leq/>{time}<ci>Toff</ci></apply></piece><otherwise><cn>0</cn></otherwise></piecewise>"
        );
        format!(
            r#"<sbml xmlns="http://www.sbml.org/sbml/level3/version2/core" level="3" version="2"><model id="pulse">
<listOfParameters><parameter id="x" value="0" constant="false"/><parameter id="u" value="0" constant="false"/>
<parameter id="k" value="0.7" constant="true"/><parameter id="A" value="3" constant="true"/>
<parameter id="Ton" value="{t_on}" constant="true"/><parameter id="Toff" value="{t_off}" constant="true"/></listOfParameters>
<listOfRules><assignmentRule variable="u">{}</assignmentRule>
<rateRule variable="x">{}</rateRule></listOfRules></model></sbml>"#,
            m(&u),
            m("<apply><minus/><ci>u</ci><apply><times/><ci>k</ci><ci>x</ci></apply></apply>")
        )
    }

    /// The closed form of [`pulse_model`] (k = 0.7, A = 3).
    fn pulse_exact(t: f64, t_on: f64, t_off: f64) -> f64 {
        let (k, a) = (0.7, 3.0);
        let rise = |s: f64| a / k * (1.0 - (-k * s).exp());
        if t <= t_on {
            0.0
        } else if t <= t_off {
            rise(t - t_on)
        } else {
            rise(t_off - t_on) * (-k * (t - t_off)).exp()
        }
    }

    /// A short pulse between output times (which a step-size controller starting on the
    /// constant zero solution would step over entirely) matches its closed form at the
    /// default tolerances with every method: the switch times are found at compile time
    /// and the integrators restart there.
    #[test]
    fn pulse_written_as_piecewise_of_time_matches_its_closed_form() {
        use crate::{parse_sbml, simulate, Method, SimulateOptions};
        let (t_on, t_off) = (3.3, 3.8);
        let m = parse_sbml(&pulse_model(t_on, t_off)).unwrap();
        let bps: Vec<f64> = m.breakpoints(0.0, 40.0).iter().map(|b| b.0).collect();
        assert_eq!(bps, vec![t_on, t_off]);
        for method in [Method::Auto, Method::Explicit, Method::Stiff] {
            let opts = SimulateOptions {
                end: 40.0,
                steps: 4,
                vars: Some(vec!["x".into()]),
                method,
                ..Default::default()
            };
            let tab = simulate(&m, &opts).unwrap();
            for row in &tab.rows {
                let want = pulse_exact(row[0], t_on, t_off);
                assert!(
                    (row[1] - want).abs() <= 1e-7 * want.abs().max(1e-3),
                    "{method:?} at t = {}: {} vs closed form {want}",
                    row[0],
                    row[1]
                );
            }
            assert!(
                tab.rows[1][1] > 1e-3,
                "{method:?}: the pulse was stepped over"
            );
        }
    }
    /// Per-state absolute tolerances against libRoadRunner 2.10's
    /// `integrator.getAbsoluteToleranceVector()` for the same document at
    /// `absolute_tolerance = 1e-12` (printed by libroadrunner 2.10.0 from PyPI): libRoadRunner
    /// multiplies by the initial amount (species) or value (rate-rule variables), or for a
    /// species starting at 0 by its compartment's size (a 0-size compartment: unscaled), without
    /// a cap. medtwin caps the factor at 1 and rounds it down to a power of two, so its
    /// tolerance is min(libRoadRunner's, atol) within a factor 2 below.
    #[test]
    fn absolute_tolerances_scale_as_libroadrunner() {
        let doc = r#"<sbml xmlns="http://www.sbml.org/sbml/level3/version1/core" level="3" version="1">
<model id="m"><listOfCompartments>
 <compartment id="C" size="5" constant="true" spatialDimensions="3"/>
 <compartment id="D" size="1e-3" constant="true" spatialDimensions="3"/>
 <compartment id="Z" size="0" constant="true" spatialDimensions="3"/></listOfCompartments>
<listOfSpecies>
 <species id="A" compartment="C" initialConcentration="20" hasOnlySubstanceUnits="false" boundaryCondition="false" constant="false"/>
 <species id="B" compartment="C" initialConcentration="0" hasOnlySubstanceUnits="false" boundaryCondition="false" constant="false"/>
 <species id="E" compartment="D" initialConcentration="0" hasOnlySubstanceUnits="false" boundaryCondition="false" constant="false"/>
 <species id="F" compartment="D" initialConcentration="0.5" hasOnlySubstanceUnits="false" boundaryCondition="false" constant="false"/>
 <species id="G" compartment="Z" initialAmount="0" hasOnlySubstanceUnits="true" boundaryCondition="false" constant="false"/></listOfSpecies>
<listOfParameters><parameter id="p" value="100" constant="false"/><parameter id="q" value="0" constant="false"/>
 <parameter id="k" value="1" constant="true"/></listOfParameters>
<listOfRules><rateRule variable="p"><math xmlns="http://www.w3.org/1998/Math/MathML"><cn>1</cn></math></rateRule>
 <rateRule variable="q"><math xmlns="http://www.w3.org/1998/Math/MathML"><cn>1</cn></math></rateRule></listOfRules>
<listOfReactions><reaction id="r" reversible="false">
 <listOfReactants><speciesReference species="A" stoichiometry="1" constant="true"/></listOfReactants>
 <listOfProducts><speciesReference species="B" stoichiometry="1" constant="true"/><speciesReference species="E" stoichiometry="1" constant="true"/><speciesReference species="F" stoichiometry="1" constant="true"/><speciesReference species="G" stoichiometry="1" constant="true"/></listOfProducts>
 <kineticLaw><math xmlns="http://www.w3.org/1998/Math/MathML"><apply><times/><ci>k</ci><ci>A</ci></apply></math></kineticLaw>
</reaction></listOfReactions></model></sbml>"#;
        let m = crate::parse_sbml(doc).unwrap();
        let atol = 1e-12;
        let w = m.atol_weights(&m.initial_state());
        let roadrunner = [
            ("A", 1e-10),
            ("B", 5e-12),
            ("E", 1e-15),
            ("F", 5e-16),
            ("G", 1e-12),
            ("p", 1e-10),
            ("q", 1e-12),
        ];
        assert_eq!(w.len(), roadrunner.len());
        for (id, rr) in roadrunner {
            let ours = atol * w[m.state_index(id).unwrap()];
            let want = f64::min(rr, atol);
            assert!(
                ours <= want * (1.0 + 1e-12) && ours > 0.5 * want,
                "{id}: {ours:e}, libRoadRunner {rr:e}"
            );
        }
    }
}
