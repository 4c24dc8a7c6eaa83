//! Stage 3, **compile**: every expression resolved ([`super::resolve::Resolver`]) and compiled
//! to bytecode ([`Code`]): the derived program (assignment rules, concentrations of species
//! integrated as amounts, reaction fluxes, stoichiometry math) and the initial-value program,
//! both in dependency order ([`super::analyse::topo`]); the state derivatives; the events; and
//! the delayed expressions of `delay()`.

use super::analyse::topo;
use super::resolve::{Resolver, SpeciesInit, Symbols};
use super::states::Unknowns;
use crate::math::{Code, Expr, Op, RExpr};
use crate::model::{DelayDef, Deriv, Event, Kind, Stoich};
use crate::SbmlError;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

/// The compiled programs of a model.
pub(crate) struct Programs {
    /// Derived quantities in evaluation order.
    pub derived: Vec<(usize, Code)>,
    /// The derived program's expressions by slot (for dependency analysis).
    pub dmap: HashMap<usize, RExpr>,
    /// Initial values in evaluation order.
    pub init_prog: Vec<(usize, Code)>,
    /// Species whose initial value is their declared amount or concentration.
    pub declared_init: Vec<usize>,
    /// Per state: its derivative, and the slots it reads directly.
    pub derivs: Vec<Deriv>,
    pub deriv_reads: Vec<Vec<usize>>,
    /// The expressions of the derivatives given by rules (rate rules, conserved moieties), for
    /// the analysis of time switches.
    pub rule_exprs: Vec<RExpr>,
    pub events: Vec<Event>,
    pub delays: Vec<DelayDef>,
}

/// Resolved definitions of derived slots: assignment rules, kinetic laws (by flux slot) and
/// stoichiometry math.
struct Definitions {
    ar: HashMap<usize, RExpr>,
    rxn_law: HashMap<usize, RExpr>,
    sm: HashMap<usize, RExpr>,
}

/// Compile the model's expressions (`delay_exprs` collects the `delay()` operands).
///
/// Errors: those of resolving ([`SbmlError::Invalid`] for unknown identifiers or functions,
/// [`SbmlError::Unsupported`] for unsupported `rateOf`); [`SbmlError::Unsupported`] for
/// cyclic assignment rules or initial assignments, and `delay()` with algebraic unknowns;
/// [`SbmlError::Invalid`] for an event assigning to a constant or rule-defined symbol.
pub(crate) fn compile(
    sy: &Symbols,
    un: &Unknowns,
    delay_exprs: &RefCell<Vec<RExpr>>,
) -> Result<Programs, SbmlError> {
    let res = sy.resolver(delay_exprs);
    let defs = resolve_definitions(sy, &res)?;
    let (derived, dmap) = derived_program(sy, &defs)?;
    let (init_prog, imap, declared_init) = initial_program(sy, un, &res, &defs)?;
    let (derivs, deriv_reads, rule_exprs) = derivatives(sy, un, &res)?;
    let events = compile_events(sy, un, &res)?;
    let delays = delayed_expressions(sy, un, delay_exprs, &derived, &dmap, &imap)?;
    Ok(Programs {
        derived,
        dmap,
        init_prog,
        declared_init,
        derivs,
        deriv_reads,
        rule_exprs,
        events,
        delays,
    })
}

/// Resolve assignment rules, kinetic laws and stoichiometry math.
fn resolve_definitions(sy: &Symbols, res: &Resolver) -> Result<Definitions, SbmlError> {
    let (slots, stoich_math) = (&sy.slots, &sy.stoich_math);
    let none = HashMap::new();
    // Resolved rule expressions.
    let mut ar: HashMap<usize, RExpr> = HashMap::new();
    for (sl, e) in sy.assign_rules_by_slot() {
        ar.insert(
            sl,
            res.resolve(e, &none, &format!("assignmentRule '{}'", slots[sl].id), 0)?,
        );
    }
    let mut rxn_law: HashMap<usize, RExpr> = HashMap::new();
    for r in sy.rxns.iter() {
        let e = match &r.law {
            Some(l) => res.resolve(
                l,
                &r.locals,
                &format!("kineticLaw of reaction '{}'", r.id),
                0,
            )?,
            None => RExpr::Num(0.0),
        };
        rxn_law.insert(r.flux, e);
    }
    let mut sm: HashMap<usize, RExpr> = HashMap::new();
    for (sl, e, rid) in stoich_math {
        sm.insert(
            *sl,
            res.resolve(
                e,
                &none,
                &format!("stoichiometryMath in reaction '{rid}'"),
                0,
            )?,
        );
    }
    Ok(Definitions { ar, rxn_law, sm })
}

/// The derived program: assignment rules, concentrations of species integrated as amounts,
/// fluxes and stoichiometry math, in dependency order; and its expressions by slot.
#[allow(clippy::type_complexity)]
fn derived_program(
    sy: &Symbols,
    defs: &Definitions,
) -> Result<(Vec<(usize, Code)>, HashMap<usize, RExpr>), SbmlError> {
    let slots = &sy.slots;
    let Definitions { ar, rxn_law, sm } = defs;
    let mut dnodes: Vec<(usize, RExpr)> = Vec::new();
    for (sl, e) in ar {
        dnodes.push((*sl, e.clone()));
    }
    for (sl, s) in slots.iter().enumerate() {
        if let (Kind::Species, Some(h)) = (s.kind, s.hidden) {
            dnodes.push((
                sl,
                RExpr::Apply(
                    Op::Divide,
                    vec![RExpr::Slot(h), RExpr::Slot(s.comp.unwrap_or(0))],
                ),
            ));
        }
    }
    for (sl, e) in rxn_law {
        dnodes.push((*sl, e.clone()));
    }
    for (sl, e) in sm {
        dnodes.push((*sl, e.clone()));
    }
    dnodes.sort_by_key(|(s, _)| *s);
    let dmap: HashMap<usize, RExpr> = dnodes.iter().cloned().collect();
    let derived = topo(dnodes, slots, "assignment rules / kinetic laws")?;
    Ok((derived, dmap))
}

/// The initial-value program (initial assignments, rules, declared species values, hidden
/// amounts, conserved moieties; `delay()` read at the initial time) in dependency order, its
/// expressions by slot, and the species whose value is declared.
#[allow(clippy::type_complexity)]
fn initial_program(
    sy: &Symbols,
    un: &Unknowns,
    res: &Resolver,
    defs: &Definitions,
) -> Result<(Vec<(usize, Code)>, HashMap<usize, RExpr>, Vec<usize>), SbmlError> {
    let (slots, init_assign, spinit) = (&sy.slots, &sy.init_assign, &sy.spinit);
    let Definitions { ar, rxn_law, sm } = defs;
    let none = HashMap::new();
    let mut inodes: Vec<(usize, RExpr)> = Vec::new();
    let mut declared_init: Vec<usize> = Vec::new();
    for sl in 0..slots.len() {
        let s = &slots[sl];
        let e = if let Some(ia) = init_assign.get(&sl) {
            Some(res.resolve(ia, &none, &format!("initialAssignment '{}'", s.id), 0)?)
        } else if let Some(a) = ar.get(&sl) {
            Some(a.clone())
        } else if let Some(l) = rxn_law.get(&sl) {
            Some(l.clone())
        } else if let Some(m) = sm.get(&sl) {
            Some(m.clone())
        } else if s.kind == Kind::Species {
            let si = spinit.iter().find(|x| x.slot == sl);
            if si.is_some_and(|x| x.conc.is_some() || x.amount.is_some()) {
                declared_init.push(sl);
            }
            let comp = RExpr::Slot(s.comp.unwrap_or(0));
            match si {
                Some(SpeciesInit { conc: Some(c), .. }) => Some(if s.amount_units {
                    RExpr::Apply(Op::Times, vec![RExpr::Num(*c), comp])
                } else {
                    RExpr::Num(*c)
                }),
                Some(SpeciesInit {
                    amount: Some(a), ..
                }) => Some(if s.amount_units {
                    RExpr::Num(*a)
                } else {
                    RExpr::Apply(Op::Divide, vec![RExpr::Num(*a), comp])
                }),
                _ => None,
            }
        } else if s.kind == Kind::HiddenAmount {
            let sp = slots.iter().position(|x| x.hidden == Some(sl)).unwrap_or(0);
            Some(RExpr::Apply(
                Op::Times,
                vec![RExpr::Slot(sp), RExpr::Slot(s.comp.unwrap_or(0))],
            ))
        } else {
            None
        };
        let e = e.or_else(|| un.conserved_init.get(&sl).cloned());
        if let Some(e) = e {
            inodes.push((sl, e));
        }
    }
    let imap: HashMap<usize, RExpr> = inodes.iter().cloned().collect();
    for (_, e) in inodes.iter_mut() {
        if e.has_delay() {
            *e = e.at_initial_time(&imap);
        }
    }
    let init_prog = topo(inodes, slots, "initial assignments")?;
    Ok((init_prog, imap, declared_init))
}

/// Derivatives, and the slots each reads directly (for the Jacobian's sparsity pattern).
/// Per state its derivative and the slots it reads; the rule expressions among them.
type Derivatives = (Vec<Deriv>, Vec<Vec<usize>>, Vec<RExpr>);

fn derivatives(sy: &Symbols, un: &Unknowns, res: &Resolver) -> Result<Derivatives, SbmlError> {
    let (slots, rate_rules, species_terms) = (&sy.slots, &sy.rate_rules, &sy.species_terms);
    let none = HashMap::new();
    let mut derivs = Vec::new();
    let mut rule_exprs = Vec::new();
    let mut deriv_reads: Vec<Vec<usize>> = Vec::new();
    for src in &un.deriv_src {
        let mut reads = Vec::new();
        let d = match src {
            None => Deriv::Zero,
            Some(sl) => {
                if let Some(r) = rate_rules.get(sl) {
                    let ctx = format!("rateRule '{}'", slots[*sl].id);
                    let mut e = res.resolve(r, &none, &ctx, 0)?;
                    let s = &slots[*sl];
                    if s.kind == Kind::Species && !s.amount_units {
                        // d(amount)/dt = d[S]/dt * V + [S] * dV/dt
                        let comp = s.comp.unwrap_or(0);
                        let dv = res.rate_of(comp, &ctx, 1)?;
                        e = RExpr::Apply(
                            Op::Plus,
                            vec![
                                RExpr::Apply(Op::Times, vec![e, RExpr::Slot(comp)]),
                                RExpr::Apply(Op::Times, vec![RExpr::Slot(*sl), dv]),
                            ],
                        );
                    }
                    e.deps(&mut reads);
                    let c = Deriv::Rule(Code::compile(&e));
                    rule_exprs.push(e);
                    c
                } else if let Some(e) = un.conserved_deriv.get(sl) {
                    e.deps(&mut reads);
                    rule_exprs.push(e.clone());
                    Deriv::Rule(Code::compile(e))
                } else if let Some(t) = species_terms.get(sl) {
                    for term in t {
                        reads.push(term.flux);
                        if let Stoich::Slot(q, _) = term.stoich {
                            reads.push(q);
                        }
                        if let Some(f) = term.factor {
                            reads.push(f);
                        }
                    }
                    Deriv::Reactions(t.clone())
                } else {
                    Deriv::Zero
                }
            }
        };
        derivs.push(d);
        deriv_reads.push(reads);
    }
    Ok((derivs, deriv_reads, rule_exprs))
}

/// Events: trigger, delay and priority, and the assignments (to states or species integrated
/// as amounts only).
fn compile_events(sy: &Symbols, un: &Unknowns, res: &Resolver) -> Result<Vec<Event>, SbmlError> {
    let (ids, slots, states) = (&sy.ids, &sy.slots, &un.states);
    let none = HashMap::new();
    let mut events = Vec::new();
    for ev in &sy.events {
        let ctx = format!("event '{}'", ev.id);
        let c = |e: &Option<Expr>, what: &str| -> Result<Option<Code>, SbmlError> {
            match e {
                Some(e) => Ok(Some(Code::compile(&res.resolve(
                    e,
                    &none,
                    &format!("{what} of {ctx}"),
                    0,
                )?))),
                None => Ok(None),
            }
        };
        let mut assigns = Vec::new();
        for (v, e) in &ev.assigns {
            let sl = ids[v];
            if !states.contains(&sl) && slots[sl].hidden.is_none() {
                return Err(SbmlError::Invalid(format!(
                    "{ctx} assigns to '{v}', which is constant or defined by an assignment rule"
                )));
            }
            assigns.push((
                sl,
                Code::compile(&res.resolve(
                    e,
                    &none,
                    &format!("eventAssignment '{v}' of {ctx}"),
                    0,
                )?),
            ));
        }
        events.push(Event {
            id: ev.id.clone(),
            trigger: c(&ev.trigger, "trigger")?,
            delay: c(&ev.delay, "delay")?,
            priority: c(&ev.priority, "priority")?,
            persistent: ev.persistent,
            initial_value: ev.initial_value,
            use_trigger_values: ev.uvftt,
            assigns,
        });
    }
    Ok(events)
}

/// Delayed expressions: each evaluated on the interpolated past state after the part of the
/// derived program it reads.
fn delayed_expressions(
    sy: &Symbols,
    un: &Unknowns,
    delay_exprs: &RefCell<Vec<RExpr>>,
    derived: &[(usize, Code)],
    dmap: &HashMap<usize, RExpr>,
    imap: &HashMap<usize, RExpr>,
) -> Result<Vec<DelayDef>, SbmlError> {
    let (slots, alg_vars) = (&sy.slots, &un.alg_vars);
    let dx = delay_exprs.borrow().clone();
    if !dx.is_empty() && !alg_vars.is_empty() {
        return Err(SbmlError::Unsupported(format!(
            "delay() in a model whose variable '{}' is set by an algebraic rule or fast reaction",
            slots[alg_vars[0]].id
        )));
    }
    let mut delays = Vec::new();
    for x in dx {
        let mut need = HashSet::new();
        let mut todo = Vec::new();
        x.deps(&mut todo);
        while let Some(d) = todo.pop() {
            if need.insert(d) {
                if let Some(e) = dmap.get(&d) {
                    e.deps(&mut todo);
                }
            }
        }
        let prog = derived
            .iter()
            .filter(|(s, _)| need.contains(s))
            .cloned()
            .collect();
        delays.push(DelayDef {
            x_before: Code::compile(&x.before_start(imap, 0)),
            x: Code::compile(&x),
            prog,
        });
    }
    Ok(delays)
}
