//! Stage 4, **analyse**: structure read off the compiled model: the dependency order of a
//! program ([`topo`], used by stage 3), the structural Jacobian pattern, whether the
//! right-hand side reads time, whether the derivatives are one sparse stoichiometry × flux
//! product, the register-machine tape of the derived program, the model description, and the
//! times at which conditions on `time` alone switch ([`switch_times`]).

use super::codegen::Programs;
use super::resolve::Symbols;
use super::states::Unknowns;
use crate::math::{Code, Op, RExpr, Tape};
use crate::model::{Deriv, Slot, Stoich};
use crate::SbmlError;
use medtwin_core::{ModelInfo, VariableInfo};
use std::collections::{HashMap, HashSet};

/// What [`analyse`] finds.
pub(crate) struct Analysis {
    /// Per state: the states its derivative depends on (None: unknown, treat as dense).
    pub jac_rows: Option<Vec<Vec<usize>>>,
    /// Whether the right-hand side reads `time`.
    pub time_dependent: bool,
    /// The derivatives as a CSR stoichiometry matrix (ptr, flux slots, coefficients) when
    /// every one is a sum of constant-stoichiometry terms without conversion factors.
    pub flat_derivs: Option<(Vec<u32>, Vec<u32>, Vec<f64>)>,
    /// The derived program as one register-machine tape (None with algebraic unknowns).
    pub tape: Option<Tape>,
    pub info: ModelInfo,
    /// Species ids in document order.
    pub species_ids: Vec<String>,
    /// The switch times of the right-hand side (see [`switch_times`]).
    pub switch_times: Vec<Code>,
}

/// Order `nodes` (slot, expression) so each is evaluated after the nodes it reads (depth-first
/// topological sort) and compile them. Errors: [`SbmlError::Unsupported`] naming a symbol on a
/// cycle (`what` names the program).
pub(crate) fn topo(
    nodes: Vec<(usize, RExpr)>,
    slots: &[Slot],
    what: &str,
) -> Result<Vec<(usize, Code)>, SbmlError> {
    let idx: HashMap<usize, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, (s, _))| (*s, i))
        .collect();
    let deps: Vec<Vec<usize>> = nodes
        .iter()
        .map(|(_, e)| {
            let mut d = Vec::new();
            e.deps(&mut d);
            d.into_iter().filter_map(|s| idx.get(&s).copied()).collect()
        })
        .collect();
    let mut mark = vec![0u8; nodes.len()];
    let mut order = Vec::with_capacity(nodes.len());
    for start in 0..nodes.len() {
        if mark[start] != 0 {
            continue;
        }
        // iterative DFS
        let mut stack = vec![(start, 0usize)];
        mark[start] = 1;
        while let Some(&mut (v, ref mut i)) = stack.last_mut() {
            if *i < deps[v].len() {
                let w = deps[v][*i];
                *i += 1;
                match mark[w] {
                    0 => {
                        mark[w] = 1;
                        stack.push((w, 0));
                    }
                    1 => {
                        return Err(SbmlError::Unsupported(format!(
                            "cyclic dependency ({what}) involving '{}' (algebraic loop)",
                            slots[nodes[w].0].id
                        )))
                    }
                    _ => {}
                }
            } else {
                mark[v] = 2;
                order.push(v);
                stack.pop();
            }
        }
    }
    Ok(order
        .into_iter()
        .map(|i| (nodes[i].0, Code::compile(&nodes[i].1)))
        .collect())
}

/// Analyse the compiled model.
pub(crate) fn analyse(sy: &Symbols, un: &Unknowns, pr: &Programs) -> Analysis {
    let (species_ids, info) = model_info(sy, un);
    Analysis {
        jac_rows: jacobian_pattern(un, pr),
        time_dependent: time_dependent(un, pr),
        flat_derivs: flat_derivs(&pr.derivs),
        tape: if un.alg_vars.is_empty() {
            Tape::build(&pr.derived, sy.slots.len())
        } else {
            None
        },
        info,
        species_ids,
        switch_times: switch_times(un, pr),
    }
}

/// Structural Jacobian pattern: the states each derivative depends on through the derived
/// program (unknown, i.e. dense, when algebraic rules are solved inside the evaluation).
fn jacobian_pattern(un: &Unknowns, pr: &Programs) -> Option<Vec<Vec<usize>>> {
    let (state_slots, dmap) = (&un.state_slots, &pr.dmap);
    if !un.alg_vars.is_empty() {
        return None;
    }
    let state_index: HashMap<usize, usize> = state_slots
        .iter()
        .enumerate()
        .map(|(i, &s)| (s, i))
        .collect();
    let mut rows = Vec::with_capacity(pr.deriv_reads.len());
    for reads in &pr.deriv_reads {
        let mut seen = HashSet::new();
        let mut todo = reads.clone();
        let mut row = Vec::new();
        while let Some(sl) = todo.pop() {
            if !seen.insert(sl) {
                continue;
            }
            if let Some(&i) = state_index.get(&sl) {
                row.push(i);
            }
            if let Some(e) = dmap.get(&sl) {
                e.deps(&mut todo);
            }
        }
        row.sort_unstable();
        rows.push(row);
    }
    Some(rows)
}

/// Whether the derived program, a derivative or an algebraic residual reads `time`.
fn time_dependent(un: &Unknowns, pr: &Programs) -> bool {
    let (derived, derivs, alg_res) = (&pr.derived, &pr.derivs, &un.alg_res);
    derived.iter().any(|(_, c)| c.reads_time())
        || derivs
            .iter()
            .any(|d| matches!(d, Deriv::Rule(c) if c.reads_time()))
        || alg_res.iter().any(|r| Code::compile(r).reads_time())
}

/// `derivs` as a CSR stoichiometry matrix when every derivative is a sum of constant-
/// stoichiometry reaction terms without conversion factors.
#[allow(clippy::type_complexity)]
fn flat_derivs(derivs: &[Deriv]) -> Option<(Vec<u32>, Vec<u32>, Vec<f64>)> {
    let mut ptr = vec![0u32];
    let mut flux = Vec::new();
    let mut coef = Vec::new();
    let mut ok = true;
    for d in derivs {
        match d {
            Deriv::Zero => {}
            Deriv::Rule(_) => ok = false,
            Deriv::Reactions(ts) => {
                for t in ts {
                    match (t.stoich, t.factor) {
                        (Stoich::Const(c), None) => {
                            flux.push(t.flux as u32);
                            coef.push(c);
                        }
                        _ => ok = false,
                    }
                }
            }
        }
        ptr.push(flux.len() as u32);
    }
    ok.then_some((ptr, flux, coef))
}

/// The model description (states, species as observables) and the species ids.
fn model_info(sy: &Symbols, un: &Unknowns) -> (Vec<String>, ModelInfo) {
    let (slots, spinit, state_slots) = (&sy.slots, &sy.spinit, &un.state_slots);
    let (level, version) = (sy.level, sy.version);
    let species_ids: Vec<String> = spinit.iter().map(|s| slots[s.slot].id.clone()).collect();
    let info = ModelInfo {
        name: sy.model_id.clone(),
        source: format!("SBML Level {level} Version {version}"),
        states: state_slots
            .iter()
            .map(|&s| VariableInfo {
                name: slots[s].id.clone(),
                unit: String::new(),
                description: format!("{:?}", slots[s].kind),
            })
            .collect(),
        inputs: Vec::new(),
        observables: species_ids
            .iter()
            .map(|s| VariableInfo {
                name: s.clone(),
                unit: String::new(),
                description: "species (SBML units)".into(),
            })
            .collect(),
    };
    (species_ids, info)
}

/// The times at which a condition of the right-hand side switches when that condition depends
/// only on `time` and constants: every relational operator (`lt`, `leq`, `gt`, `geq`, with
/// two operands) in an assignment rule, kinetic law or rate rule whose operands differ by an
/// expression affine in `time`, `a − b = c₀ + c₁·time` with `c₀`, `c₁` free of time and state
/// (constants, parameters, and assignment rules of those), gives the time `−c₀ / c₁` — e.g.
/// `piecewise(0, time − T < 0, 1)`, `leq(time, T_end)`. The expressions are compiled (they read
/// the model's slot values, so they follow parameter changes); the simulator evaluates them at
/// its start and stops and restarts exactly at each (AMICI turns such conditions into events).
/// Slots an event assigns are not constants (their switches are left to the integrator).
/// Duplicates (same expression) are listed once; order is that of the first occurrence.
pub(crate) fn switch_times(un: &Unknowns, pr: &Programs) -> Vec<Code> {
    let mut varying: HashSet<usize> = un.state_slots.iter().copied().collect();
    varying.extend(un.alg_vars.iter().copied());
    for e in &pr.events {
        varying.extend(e.assigns.iter().map(|(s, _)| *s));
    }
    let an = TimeAffine {
        dmap: &pr.dmap,
        varying,
        memo: std::cell::RefCell::new(HashMap::new()),
    };
    // dmap is a HashMap: sort by slot so that the order does not depend on hashing.
    let mut keyed: Vec<(usize, &RExpr)> = pr.dmap.iter().map(|(k, e)| (*k, e)).collect();
    keyed.sort_by_key(|(k, _)| *k);
    let exprs = keyed
        .into_iter()
        .map(|(_, e)| e)
        .chain(pr.rule_exprs.iter());
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for e in exprs {
        visit(e, &mut |node| {
            let RExpr::Apply(op, args) = node else {
                return;
            };
            if !matches!(op, Op::Lt | Op::Leq | Op::Gt | Op::Geq) || args.len() != 2 {
                return;
            }
            let g = sub(args[0].clone(), args[1].clone());
            let Some((c0, c1)) = an.affine(&g, 0) else {
                return;
            };
            if c1 == RExpr::Num(0.0) {
                return;
            }
            let t = RExpr::Apply(Op::Divide, vec![neg(c0), c1]);
            if seen.insert(format!("{t:?}")) {
                out.push(Code::compile(&t));
            }
        });
    }
    out
}

/// Call `f` on `e` and every subexpression evaluated at the current time (not inside the
/// delayed operand of `delay()`).
fn visit(e: &RExpr, f: &mut dyn FnMut(&RExpr)) {
    f(e);
    match e {
        RExpr::Apply(_, a) => a.iter().for_each(|x| visit(x, f)),
        RExpr::Piecewise(p, o) => {
            for (v, c) in p {
                visit(v, f);
                visit(c, f);
            }
            if let Some(o) = o {
                visit(o, f);
            }
        }
        RExpr::Delay(_, _, d) => visit(d, f),
        RExpr::RateOf(x) => visit(x, f),
        _ => {}
    }
}

fn sub(a: RExpr, b: RExpr) -> RExpr {
    match b {
        RExpr::Num(0.0) => a,
        b => RExpr::Apply(Op::Minus, vec![a, b]),
    }
}

fn neg(a: RExpr) -> RExpr {
    match a {
        RExpr::Num(v) => RExpr::Num(-v),
        a => RExpr::Apply(Op::Minus, vec![a]),
    }
}

fn add(a: RExpr, b: RExpr) -> RExpr {
    match (a, b) {
        (RExpr::Num(0.0), b) => b,
        (a, RExpr::Num(0.0)) => a,
        (a, b) => RExpr::Apply(Op::Plus, vec![a, b]),
    }
}

fn mul(a: RExpr, b: RExpr) -> RExpr {
    match (a, b) {
        (RExpr::Num(0.0), _) | (_, RExpr::Num(0.0)) => RExpr::Num(0.0),
        (RExpr::Num(1.0), b) => b,
        (a, b) => RExpr::Apply(Op::Times, vec![a, b]),
    }
}

/// Decomposition of expressions as `c₀ + c₁·time` with `c₀`, `c₁` constant.
struct TimeAffine<'a> {
    dmap: &'a HashMap<usize, RExpr>,
    /// Slots that change during a simulation other than through `time` (states, algebraic
    /// variables, event targets).
    varying: HashSet<usize>,
    memo: std::cell::RefCell<HashMap<usize, bool>>,
}

impl TimeAffine<'_> {
    /// Whether `e` reads neither time nor anything that varies (through derived slots too).
    fn constant(&self, e: &RExpr) -> bool {
        match e {
            RExpr::Num(_) => true,
            RExpr::Time | RExpr::Delay(..) | RExpr::RateOf(_) => false,
            RExpr::Slot(s) => self.slot_constant(*s),
            RExpr::Apply(_, a) => a.iter().all(|x| self.constant(x)),
            RExpr::Piecewise(p, o) => {
                p.iter().all(|(v, c)| self.constant(v) && self.constant(c))
                    && o.as_ref().is_none_or(|o| self.constant(o))
            }
        }
    }

    fn slot_constant(&self, s: usize) -> bool {
        if self.varying.contains(&s) {
            return false;
        }
        let Some(e) = self.dmap.get(&s) else {
            return true;
        };
        if let Some(&k) = self.memo.borrow().get(&s) {
            return k;
        }
        // Cycles were refused by the compiler; the provisional `false` only guards recursion.
        self.memo.borrow_mut().insert(s, false);
        let k = self.constant(e);
        self.memo.borrow_mut().insert(s, k);
        k
    }

    /// `(c₀, c₁)` with `e = c₀ + c₁·time`, or None when `e` is not of that form.
    fn affine(&self, e: &RExpr, depth: usize) -> Option<(RExpr, RExpr)> {
        if self.constant(e) {
            return Some((e.clone(), RExpr::Num(0.0)));
        }
        if depth > 32 {
            return None;
        }
        let d = depth + 1;
        match e {
            RExpr::Time => Some((RExpr::Num(0.0), RExpr::Num(1.0))),
            RExpr::Slot(s) if !self.varying.contains(s) => self.affine(self.dmap.get(s)?, d),
            RExpr::Apply(Op::Plus, a) => {
                let mut acc = (RExpr::Num(0.0), RExpr::Num(0.0));
                for x in a {
                    let (c0, c1) = self.affine(x, d)?;
                    acc = (add(acc.0, c0), add(acc.1, c1));
                }
                Some(acc)
            }
            RExpr::Apply(Op::Minus, a) if a.len() == 1 => {
                let (c0, c1) = self.affine(&a[0], d)?;
                Some((neg(c0), neg(c1)))
            }
            RExpr::Apply(Op::Minus, a) if a.len() == 2 => {
                let (a0, a1) = self.affine(&a[0], d)?;
                let (b0, b1) = self.affine(&a[1], d)?;
                Some((sub(a0, b0), sub(a1, b1)))
            }
            RExpr::Apply(Op::Times, a) => {
                // One factor may depend on time; the others scale it.
                let mut k = RExpr::Num(1.0);
                let mut lin = None;
                for x in a {
                    if self.constant(x) {
                        k = mul(k, x.clone());
                    } else if lin.is_none() {
                        lin = Some(self.affine(x, d)?);
                    } else {
                        return None;
                    }
                }
                let (c0, c1) = lin?;
                Some((mul(k.clone(), c0), mul(k, c1)))
            }
            RExpr::Apply(Op::Divide, a) if a.len() == 2 && self.constant(&a[1]) => {
                let (c0, c1) = self.affine(&a[0], d)?;
                let div = |x: RExpr| match x {
                    RExpr::Num(0.0) => x,
                    x => RExpr::Apply(Op::Divide, vec![x, a[1].clone()]),
                };
                Some((div(c0), div(c1)))
            }
            _ => None,
        }
    }
}
