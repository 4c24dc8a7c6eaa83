//! The compiled [`SbmlModel`] (built by the staged compiler in `compile/`: parse → resolve →
//! compile → analyse), its initial values and the Newton solve of its algebraic unknowns.
//!
//! Representation (see the crate docs for the semantics):
//! * every compartment, species, parameter, reaction (its flux), species reference (its
//!   stoichiometry) and local parameter gets a *slot* in one value vector, holding the value the
//!   symbol has in MathML (species: concentration unless `hasOnlySubstanceUnits` or 0-D compartment);
//! * the ODE state is a subset of slots; a non-constant species in concentration units that has no
//!   rule is integrated as its *amount* in a hidden slot, its concentration being derived as
//!   `amount / compartment` (SBML L3V2 §4.6.4 / §4.11);
//! * every non-constant symbol that an event assigns to and no rule defines is a state with zero
//!   derivative, so events change only the state vector and the model itself stays immutable.

use crate::math::{Code, Tape};
use medtwin_core::ModelInfo;
use std::collections::HashMap;

/// What a slot stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Compartment,
    Species,
    Parameter,
    Reaction,
    SpeciesRef,
    LocalParameter,
    /// Amount of a species integrated in amount units while its symbol is a concentration.
    HiddenAmount,
    /// Value of an L2 `stoichiometryMath`.
    StoichMath,
    /// Conserved moiety of the fast subsystem (state integrated with the slow reactions).
    Conserved,
}

#[derive(Debug, Clone)]
pub(crate) struct Slot {
    pub id: String,
    pub kind: Kind,
    /// Species: slot of its compartment.
    pub comp: Option<usize>,
    /// Species: symbol is an amount (hasOnlySubstanceUnits or 0-D compartment).
    pub amount_units: bool,
    /// Species in concentration units integrated as amount: slot of the hidden amount.
    pub hidden: Option<usize>,
    /// Declared constant (cannot change during simulation).
    pub constant: bool,
}

/// Right-hand side of one state.
#[derive(Debug, Clone)]
pub(crate) enum Deriv {
    Zero,
    Rule(Code),
    /// Σ stoichiometry × flux × conversion factor.
    Reactions(Vec<Term>),
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Term {
    /// Signed constant stoichiometry, or slot (with sign) of a variable one.
    pub stoich: Stoich,
    pub flux: usize,
    pub factor: Option<usize>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Stoich {
    Const(f64),
    Slot(usize, f64),
}

#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub id: String,
    pub trigger: Option<Code>,
    pub delay: Option<Code>,
    pub priority: Option<Code>,
    pub persistent: bool,
    pub initial_value: bool,
    pub use_trigger_values: bool,
    pub assigns: Vec<(usize, Code)>,
}

/// A delayed expression `x` of `delay(x, d)`: evaluated at a past time by running `prog` (the
/// derived quantities `x` reads) on the interpolated past state.
#[derive(Debug, Clone)]
pub(crate) struct DelayDef {
    pub x: Code,
    /// `x` before the start (initial-value expressions inlined, rates zero), read at time `t-d`.
    pub x_before: Code,
    pub prog: Vec<(usize, Code)>,
}

/// An SBML model compiled for simulation: value slots, ordered programs of bytecode
/// expressions, state derivatives and events. Build with [`crate::load_sbml`] or
/// [`crate::parse_sbml`]; simulate with [`crate::simulate`]. Implements [`medtwin_core::OdeModel`]
/// for the continuous part (reactions and rules; events need [`crate::simulate`]).
#[derive(Debug, Clone)]
pub struct SbmlModel {
    pub(crate) level: u32,
    pub(crate) version: u32,
    pub(crate) model_id: String,
    pub(crate) slots: Vec<Slot>,
    pub(crate) ids: HashMap<String, usize>,
    /// Values of every slot at the initial time (after initial assignments and rules).
    pub(crate) base: Vec<f64>,
    pub(crate) init_prog: Vec<(usize, Code)>,
    /// Species whose `init_prog` entry is their declared initial amount or concentration (not
    /// an initial assignment or rule): [`SbmlModel::set_value`] may replace it.
    pub(crate) declared_init: Vec<usize>,
    pub(crate) derived: Vec<(usize, Code)>,
    /// `derived` as one register-machine tape (None with algebraic rules or `delay()`).
    pub(crate) tape: Option<Tape>,
    /// The stiff solver's structures (Jacobian pattern, LU ordering and symbolic factorisation,
    /// analytic Jacobian program), built on first use and shared by clones.
    pub(crate) stiff_cache: std::sync::OnceLock<crate::bdf::StiffStructures>,
    /// Variables determined by algebraic rules, and the rules' residuals (same order).
    pub(crate) alg_vars: Vec<usize>,
    pub(crate) alg_res: Vec<Code>,
    pub(crate) state_slots: Vec<usize>,
    pub(crate) derivs: Vec<Deriv>,
    /// `derivs` as one sparse matrix–vector product (stoichiometry × fluxes) when every state
    /// derivative is a sum of constant-stoichiometry reaction terms without conversion factors:
    /// row `i` is `coef[ptr[i]..ptr[i+1]]` times the slots `flux[..]`.
    pub(crate) flat_derivs: Option<(Vec<u32>, Vec<u32>, Vec<f64>)>,
    pub(crate) events: Vec<Event>,
    /// Delayed expressions of `delay()` (empty for ODE models).
    pub(crate) delays: Vec<DelayDef>,
    /// Per state: the states its derivative depends on (None: unknown, treat as dense).
    pub(crate) jac_rows: Option<Vec<Vec<usize>>>,
    /// Whether the right-hand side reads `time` (non-autonomous).
    pub(crate) time_dependent: bool,
    /// Times at which a condition on `time` alone switches (compiled expressions of the slot
    /// values; see `compile::analyse::switch_times`): the simulator restarts at each.
    pub(crate) switch_times: Vec<Code>,
    pub(crate) info: ModelInfo,
    pub(crate) n_assignment_rules: usize,
    pub(crate) n_rate_rules: usize,
    pub(crate) n_initial_assignments: usize,
    pub(crate) n_function_defs: usize,
    pub(crate) n_reactions: usize,
    pub(crate) notes: Vec<String>,
    /// Time the initial values were computed for.
    pub(crate) init_time: f64,
    pub(crate) species_ids: Vec<String>,
}

/// The compiler's entry point (see `crate::compile`).
pub(crate) use crate::compile::build;

impl SbmlModel {
    /// Recompute the initial values of all slots for start time `t0`.
    pub(crate) fn compute_initial(&mut self, t0: f64) {
        let mut stack = Vec::new();
        let mut v = self.base.clone();
        for (sl, code) in &self.init_prog {
            v[*sl] = code.eval(&v, t0, &mut stack);
        }
        if !self.alg_vars.is_empty() {
            let prog: Vec<(usize, Code)> = self
                .init_prog
                .iter()
                .filter(|(s, _)| {
                    !self.alg_vars.contains(s) && self.slots[*s].kind != Kind::Conserved
                })
                .cloned()
                .collect();
            for &a in &self.alg_vars {
                if !v[a].is_finite() {
                    v[a] = 1.0;
                }
            }
            self.newton(&mut v, t0, &prog, &mut stack);
        }
        self.base = v;
        self.init_time = t0;
    }
}

impl SbmlModel {
    /// Solve the algebraic rules for `alg_vars` (Newton with a finite-difference Jacobian),
    /// re-running `prog` after each change. `v` holds the starting guess and receives the result.
    pub(crate) fn newton(
        &self,
        v: &mut [f64],
        t: f64,
        prog: &[(usize, Code)],
        stack: &mut Vec<f64>,
    ) {
        let n = self.alg_vars.len();
        let eval = |v: &mut [f64], stack: &mut Vec<f64>, r: &mut [f64]| {
            for (sl, code) in prog {
                v[*sl] = code.eval(v, t, stack);
            }
            for (ri, c) in r.iter_mut().zip(&self.alg_res) {
                *ri = c.eval(v, t, stack);
            }
        };
        let mut r = vec![0.0; n];
        let mut r2 = vec![0.0; n];
        let mut jac = vec![0.0; n * n];
        eval(v, stack, &mut r);
        for _ in 0..50 {
            if r.iter().all(|x| *x == 0.0) {
                break;
            }
            let g: Vec<f64> = self.alg_vars.iter().map(|&a| v[a]).collect();
            for j in 0..n {
                let h = 1e-7 * g[j].abs().max(1e-7);
                v[self.alg_vars[j]] = g[j] + h;
                eval(v, stack, &mut r2);
                for i in 0..n {
                    jac[i * n + j] = (r2[i] - r[i]) / h;
                }
                v[self.alg_vars[j]] = g[j];
            }
            let mut dx: Vec<f64> = r.iter().map(|x| -x).collect();
            if !solve_dense(&mut jac, &mut dx, n) {
                break;
            }
            let mut small = true;
            for j in 0..n {
                v[self.alg_vars[j]] = g[j] + dx[j];
                if dx[j].abs() > 1e-14 * g[j].abs().max(1e-300) {
                    small = false;
                }
            }
            eval(v, stack, &mut r);
            if small {
                break;
            }
        }
    }
}

/// Gaussian elimination with partial pivoting: solve `a x = b` in place (`b` becomes `x`).
fn solve_dense(a: &mut [f64], b: &mut [f64], n: usize) -> bool {
    for c in 0..n {
        let p = (c..n)
            .max_by(|&i, &j| a[i * n + c].abs().total_cmp(&a[j * n + c].abs()))
            .unwrap_or(c);
        if a[p * n + c] == 0.0 || !a[p * n + c].is_finite() {
            return false;
        }
        if p != c {
            for k in 0..n {
                a.swap(p * n + k, c * n + k);
            }
            b.swap(p, c);
        }
        for i in c + 1..n {
            let f = a[i * n + c] / a[c * n + c];
            for k in c..n {
                a[i * n + k] -= f * a[c * n + k];
            }
            b[i] -= f * b[c];
        }
    }
    for c in (0..n).rev() {
        let mut s = b[c];
        for k in c + 1..n {
            s -= a[c * n + k] * b[k];
        }
        b[c] = s / a[c * n + c];
    }
    true
}
