//! The SBML compiler: SBML text to a compiled [`SbmlModel`], in stages
//! [`parse`] → [`resolve`] → compile → analyse.

mod parse;
mod resolve;

use crate::math::{Code, Expr, Op, RExpr, Tape};
use crate::model::{DelayDef, Deriv, Event, Kind, SbmlModel, Slot, Stoich, Term};
use crate::SbmlError;
use medtwin_core::{ModelInfo, VariableInfo};
use resolve::Resolver;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

/// Order `nodes` (slot, expression) so each is evaluated after the nodes it reads.
fn topo(
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

/// Parse SBML text into a compiled model. `init_time` is the time at which initial assignments
/// are evaluated (the simulation start). `values` replace the value attributes of the
/// compartments, species (in the unit of their symbol) and parameters they name, before values
/// nothing sets are refused (see [`crate::load_sbml_with_values`]).
pub(crate) fn build(
    text: &str,
    init_time: f64,
    values: &[(String, f64)],
) -> Result<SbmlModel, SbmlError> {
    let given: HashMap<&str, f64> = values.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    if let Some((id, v)) = values.iter().find(|(_, v)| !v.is_finite()) {
        return Err(SbmlError::Options(format!(
            "value of '{id}' must be finite, got {v}"
        )));
    }
    let raw = parse::parse(text)?;
    let sy = resolve::resolve_symbols(raw, &given)?;
    let resolve::Symbols {
        level,
        version,
        model_id,
        notes,
        fns,
        mut slots,
        ids,
        mut attr_val,
        no_value,
        spinit,
        rxns,
        stoich_math,
        init_assign,
        assign_rules,
        rate_rules,
        alg_rules,
        events: raw_events,
        event_targets,
        species_terms,
        fast_terms,
        fast_species,
    } = sy;
    let delay_exprs: RefCell<Vec<RExpr>> = RefCell::new(Vec::new());
    // States.
    // Algebraic rules (SBML L3V2 §4.9.4): match each rule to a variable no other construct
    // determines, then solve the residuals by Newton's method inside every evaluation.
    let mut alg_vars: Vec<usize> = Vec::new();
    let mut alg_res: Vec<RExpr> = Vec::new();
    if !alg_rules.is_empty() {
        let res = Resolver {
            ids: &ids,
            slots: &slots,
            fns: &fns,
            rate_rules: &rate_rules,
            assign_rules: &assign_rules,
            species_terms: &species_terms,
            delays: &delay_exprs,
        };
        let none = HashMap::new();
        let mut ar0: HashMap<usize, RExpr> = HashMap::new();
        for (sl, e) in &assign_rules {
            ar0.insert(
                *sl,
                res.resolve(e, &none, &format!("assignmentRule '{}'", slots[*sl].id), 0)?,
            );
        }
        let candidate = |sl: usize| -> bool {
            let s = &slots[sl];
            matches!(
                s.kind,
                Kind::Compartment | Kind::Species | Kind::Parameter | Kind::SpeciesRef
            ) && !s.constant
                && !assign_rules.contains_key(&sl)
                && !rate_rules.contains_key(&sl)
                && !species_terms.contains_key(&sl)
                && !event_targets.contains(&sl)
                && !fast_species.contains(&sl)
        };
        let mut rule_vars: Vec<Vec<usize>> = Vec::new();
        for (id, e) in &alg_rules {
            let r = res.resolve(e, &none, &format!("algebraicRule '{id}'"), 0)?;
            // Variables read directly or through assignment rules.
            let mut seen = HashSet::new();
            let mut todo = Vec::new();
            r.deps(&mut todo);
            let mut vars = Vec::new();
            while let Some(d) = todo.pop() {
                if !seen.insert(d) {
                    continue;
                }
                if let Some(a) = ar0.get(&d) {
                    a.deps(&mut todo);
                } else if candidate(d) {
                    vars.push(d);
                }
            }
            vars.sort();
            rule_vars.push(vars);
            alg_res.push(r);
        }
        // Bipartite matching (augmenting paths).
        let mut owner: HashMap<usize, usize> = HashMap::new();
        fn aug(
            r: usize,
            rv: &[Vec<usize>],
            owner: &mut HashMap<usize, usize>,
            seen: &mut HashSet<usize>,
        ) -> bool {
            for &v in &rv[r] {
                if seen.insert(v) {
                    let free = match owner.get(&v) {
                        None => true,
                        Some(&o) => aug(o, rv, owner, seen),
                    };
                    if free {
                        owner.insert(v, r);
                        return true;
                    }
                }
            }
            false
        }
        for (r, rule) in alg_rules.iter().enumerate() {
            if !aug(r, &rule_vars, &mut owner, &mut HashSet::new()) {
                return Err(SbmlError::Unsupported(format!(
                    "algebraicRule '{}': no variable left for it to determine (overdetermined or a true DAE)",
                    rule.0
                )));
            }
        }
        let mut pairs: Vec<(usize, usize)> = owner.into_iter().map(|(v, r)| (r, v)).collect();
        pairs.sort();
        alg_vars = pairs.iter().map(|p| p.1).collect();
    }
    // Fast subsystem: the fast species become algebraic unknowns fixed by (a) the conserved
    // moieties L·amount = y (L spans the left null space of the fast stoichiometry), each y a
    // state driven by the slow reactions, and (b) fast kinetic laws = 0 (equilibrium).
    let mut conserved_deriv: HashMap<usize, RExpr> = HashMap::new();
    let mut conserved_init: HashMap<usize, RExpr> = HashMap::new();
    if !fast_terms.is_empty() {
        let na = fast_species.len();
        let mf = fast_terms.len();
        // A = N_f^T (mf x na)
        let mut a = vec![0.0; mf * na];
        for (j, (_, ts)) in fast_terms.iter().enumerate() {
            for (sp, c) in ts {
                if let Some(i) = fast_species.iter().position(|x| x == sp) {
                    a[j * na + i] += c;
                }
            }
        }
        let (pivots, rref) = rref(&mut a, mf, na);
        if pivots.len() < mf {
            return Err(SbmlError::Unsupported(format!(
                "linearly dependent fast reactions (e.g. '{}')",
                rxns[fast_terms[0].0].id
            )));
        }
        let amount_expr = |slots: &[Slot], sp: usize| -> RExpr {
            let s = &slots[sp];
            if s.amount_units {
                RExpr::Slot(sp)
            } else {
                RExpr::Apply(
                    Op::Times,
                    vec![RExpr::Slot(sp), RExpr::Slot(s.comp.unwrap_or(0))],
                )
            }
        };
        let terms_expr = |ts: &[Term]| -> RExpr {
            RExpr::Apply(
                Op::Plus,
                ts.iter()
                    .map(|t| {
                        let st = match t.stoich {
                            Stoich::Const(c) => RExpr::Num(c),
                            Stoich::Slot(q, sign) => {
                                RExpr::Apply(Op::Times, vec![RExpr::Num(sign), RExpr::Slot(q)])
                            }
                        };
                        let mut f = vec![st, RExpr::Slot(t.flux)];
                        if let Some(c) = t.factor {
                            f.push(RExpr::Slot(c));
                        }
                        RExpr::Apply(Op::Times, f)
                    })
                    .collect(),
            )
        };
        let mut residuals = Vec::new();
        let free: Vec<usize> = (0..na).filter(|c| !pivots.contains(c)).collect();
        for (k, &f) in free.iter().enumerate() {
            let mut l = vec![0.0; na];
            l[f] = 1.0;
            for (r, &pc) in pivots.iter().enumerate() {
                l[pc] = -rref[r * na + f];
            }
            let y = slots.len();
            slots.push(Slot {
                id: format!("conserved#{k}"),
                kind: Kind::Conserved,
                comp: None,
                amount_units: true,
                hidden: None,
                constant: false,
            });
            attr_val.push(f64::NAN);
            let mut sum = Vec::new();
            let mut dsum = Vec::new();
            for (i, &li) in l.iter().enumerate() {
                if li != 0.0 {
                    sum.push(RExpr::Apply(
                        Op::Times,
                        vec![RExpr::Num(li), amount_expr(&slots, fast_species[i])],
                    ));
                    let ts = species_terms
                        .get(&fast_species[i])
                        .map(|v| v.as_slice())
                        .unwrap_or(&[]);
                    dsum.push(RExpr::Apply(
                        Op::Times,
                        vec![RExpr::Num(li), terms_expr(ts)],
                    ));
                }
            }
            let total = RExpr::Apply(Op::Plus, sum);
            residuals.push(RExpr::Apply(Op::Minus, vec![total.clone(), RExpr::Slot(y)]));
            conserved_init.insert(y, total);
            conserved_deriv.insert(y, RExpr::Apply(Op::Plus, dsum));
        }
        let res = Resolver {
            ids: &ids,
            slots: &slots,
            fns: &fns,
            rate_rules: &rate_rules,
            assign_rules: &assign_rules,
            species_terms: &species_terms,
            delays: &delay_exprs,
        };
        for (ri, _) in &fast_terms {
            let r = &rxns[*ri];
            let law = match &r.law {
                Some(l) => res.resolve(
                    l,
                    &r.locals,
                    &format!("kineticLaw of fast reaction '{}'", r.id),
                    0,
                )?,
                None => {
                    return Err(SbmlError::Unsupported(format!(
                        "fast reaction '{}' without kinetic law",
                        r.id
                    )))
                }
            };
            residuals.push(law);
        }
        alg_vars.extend(fast_species.iter().copied());
        alg_res.extend(residuals);
    }
    let alg_set: HashSet<usize> = alg_vars.iter().copied().collect();
    // Given values: only for declared compartments, species and parameters, and not for ids
    // whose initial value an initial assignment or a rule determines (it would be overwritten).
    for (id, _) in values {
        let sl = ids.get(id.as_str()).copied().filter(|&sl| {
            matches!(
                slots[sl].kind,
                Kind::Compartment | Kind::Species | Kind::Parameter
            )
        });
        let Some(sl) = sl else {
            return Err(SbmlError::Options(format!(
                "cannot set '{id}': no such compartment, species or global parameter"
            )));
        };
        if init_assign.contains_key(&sl) || assign_rules.contains_key(&sl) || alg_set.contains(&sl)
        {
            return Err(SbmlError::Options(format!(
                "cannot set '{id}': an initial assignment or rule determines its value"
            )));
        }
    }
    // A value that nothing defines (no attribute, initial assignment, assignment rule or
    // algebraic rule; a rate rule or an event needs a starting value) is refused, naming every
    // such id, as libRoadRunner refuses unset parameters (instead of simulating NaN).
    let unset: Vec<String> = no_value
        .iter()
        .filter(|&&sl| {
            !init_assign.contains_key(&sl)
                && !assign_rules.contains_key(&sl)
                && !alg_set.contains(&sl)
        })
        .map(|&sl| {
            let kind = match slots[sl].kind {
                Kind::Compartment => "compartment",
                Kind::Species => "species",
                _ => "parameter",
            };
            format!("{kind} '{}'", slots[sl].id)
        })
        .collect();
    if !unset.is_empty() {
        return Err(SbmlError::Invalid(format!(
            "no value, initial assignment or rule sets the initial value of {}",
            unset.join(", ")
        )));
    }

    let mut states: HashSet<usize> = HashSet::new();
    let mut state_slots = Vec::new();
    let mut deriv_src: Vec<Option<usize>> = Vec::new(); // Some(slot with rate rule / species terms)
    let n_named = slots.len();
    for sl in 0..n_named {
        let kind = slots[sl].kind;
        if alg_set.contains(&sl) {
            continue;
        }
        if kind == Kind::Conserved {
            states.insert(sl);
            state_slots.push(sl);
            deriv_src.push(Some(sl));
            continue;
        }
        if matches!(
            kind,
            Kind::Reaction | Kind::LocalParameter | Kind::HiddenAmount | Kind::StoichMath
        ) {
            continue;
        }
        if assign_rules.contains_key(&sl) {
            if rate_rules.contains_key(&sl) {
                return Err(SbmlError::Invalid(format!(
                    "'{}' has both an assignment and a rate rule",
                    slots[sl].id
                )));
            }
            continue;
        }
        if rate_rules.contains_key(&sl) && (kind != Kind::Species || slots[sl].amount_units) {
            states.insert(sl);
            state_slots.push(sl);
            deriv_src.push(Some(sl));
            continue;
        }
        if kind == Kind::Species {
            if slots[sl].constant && slots[sl].amount_units {
                continue;
            }
            if slots[sl].amount_units {
                states.insert(sl);
                state_slots.push(sl);
                deriv_src.push(Some(sl));
            } else {
                let h = slots.len();
                let id = format!("amount({})", slots[sl].id);
                slots.push(Slot {
                    id,
                    kind: Kind::HiddenAmount,
                    comp: slots[sl].comp,
                    amount_units: true,
                    hidden: None,
                    constant: false,
                });
                attr_val.push(f64::NAN);
                slots[sl].hidden = Some(h);
                states.insert(h);
                state_slots.push(h);
                deriv_src.push(Some(sl));
            }
            continue;
        }
        if event_targets.contains(&sl) {
            states.insert(sl);
            state_slots.push(sl);
            deriv_src.push(None);
        }
    }

    let res = Resolver {
        ids: &ids,
        slots: &slots,
        fns: &fns,
        rate_rules: &rate_rules,
        assign_rules: &assign_rules,
        species_terms: &species_terms,
        delays: &delay_exprs,
    };
    let none = HashMap::new();
    // Resolved rule expressions.
    let mut ar: HashMap<usize, RExpr> = HashMap::new();
    for (sl, e) in &assign_rules {
        ar.insert(
            *sl,
            res.resolve(e, &none, &format!("assignmentRule '{}'", slots[*sl].id), 0)?,
        );
    }
    let mut rxn_law: HashMap<usize, RExpr> = HashMap::new();
    for r in rxns.iter() {
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
    for (sl, e, rid) in &stoich_math {
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

    // Derived program.
    let mut dnodes: Vec<(usize, RExpr)> = Vec::new();
    for (sl, e) in &ar {
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
    for (sl, e) in &rxn_law {
        dnodes.push((*sl, e.clone()));
    }
    for (sl, e) in &sm {
        dnodes.push((*sl, e.clone()));
    }
    dnodes.sort_by_key(|(s, _)| *s);
    let dmap: HashMap<usize, RExpr> = dnodes.iter().cloned().collect();
    let derived = topo(dnodes, &slots, "assignment rules / kinetic laws")?;

    // Initial-value program.
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
                Some(resolve::SpeciesInit { conc: Some(c), .. }) => Some(if s.amount_units {
                    RExpr::Apply(Op::Times, vec![RExpr::Num(*c), comp])
                } else {
                    RExpr::Num(*c)
                }),
                Some(resolve::SpeciesInit {
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
        let e = e.or_else(|| conserved_init.get(&sl).cloned());
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
    let init_prog = topo(inodes, &slots, "initial assignments")?;

    // Derivatives, and the slots each reads directly (for the Jacobian's sparsity pattern).
    let mut derivs = Vec::new();
    let mut deriv_reads: Vec<Vec<usize>> = Vec::new();
    for (i, src) in deriv_src.iter().enumerate() {
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
                    Deriv::Rule(Code::compile(&e))
                } else if let Some(e) = conserved_deriv.get(sl) {
                    e.deps(&mut reads);
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
        let _ = i;
        derivs.push(d);
        deriv_reads.push(reads);
    }
    // Structural Jacobian pattern: the states each derivative depends on through the derived
    // program (unknown, i.e. dense, when algebraic rules are solved inside the evaluation).
    let jac_rows = if alg_vars.is_empty() {
        let state_index: HashMap<usize, usize> = state_slots
            .iter()
            .enumerate()
            .map(|(i, &s)| (s, i))
            .collect();
        let mut rows = Vec::with_capacity(deriv_reads.len());
        for reads in deriv_reads {
            let mut seen = HashSet::new();
            let mut todo = reads;
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
    } else {
        None
    };

    // Events.
    let mut events = Vec::new();
    for ev in &raw_events {
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

    // Delayed expressions: each evaluated on the interpolated past state after the part of the
    // derived program it reads.
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
            x_before: Code::compile(&x.before_start(&imap, 0)),
            x: Code::compile(&x),
            prog,
        });
    }

    let species_ids: Vec<String> = spinit.iter().map(|s| slots[s.slot].id.clone()).collect();
    let info = ModelInfo {
        name: model_id.clone(),
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
    let time_dependent = derived.iter().any(|(_, c)| c.reads_time())
        || derivs
            .iter()
            .any(|d| matches!(d, Deriv::Rule(c) if c.reads_time()))
        || alg_res.iter().any(|r| Code::compile(r).reads_time());
    let flat_derivs = {
        let mut ptr = vec![0u32];
        let mut flux = Vec::new();
        let mut coef = Vec::new();
        let mut ok = true;
        for d in &derivs {
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
    };
    let tape = if alg_vars.is_empty() {
        Tape::build(&derived, slots.len())
    } else {
        None
    };
    let mut m = SbmlModel {
        time_dependent,
        level,
        version,
        model_id,
        slots,
        ids,
        base: attr_val,
        init_prog,
        declared_init,
        tape,
        stiff_cache: std::sync::OnceLock::new(),
        derived,
        alg_vars: alg_vars.clone(),
        alg_res: alg_res.iter().map(Code::compile).collect(),
        state_slots,
        derivs,
        flat_derivs,
        events,
        delays,
        jac_rows,
        info,
        n_assignment_rules: assign_rules.len(),
        n_rate_rules: rate_rules.len(),
        n_initial_assignments: init_assign.len(),
        n_function_defs: fns.len(),
        n_reactions: rxns.len(),
        notes,
        init_time,
        species_ids,
    };
    m.compute_initial(init_time);
    if m.delays.is_empty() && !m.state_slots.is_empty() {
        // The stiff solver's structures are part of compiling the model (timed as load).
        crate::bdf::StiffStructures::prepare(&m);
    }
    Ok(m)
}
/// Reduced row echelon form of the `rows x cols` matrix `a` (in place); returns the pivot
/// columns (one per non-zero row) and the reduced matrix.
fn rref(a: &mut [f64], rows: usize, cols: usize) -> (Vec<usize>, Vec<f64>) {
    let mut pivots = Vec::new();
    let mut r = 0;
    for c in 0..cols {
        if r == rows {
            break;
        }
        let p = (r..rows)
            .max_by(|&i, &j| a[i * cols + c].abs().total_cmp(&a[j * cols + c].abs()))
            .unwrap_or(r);
        if a[p * cols + c].abs() < 1e-12 {
            continue;
        }
        for k in 0..cols {
            a.swap(p * cols + k, r * cols + k);
        }
        let d = a[r * cols + c];
        for k in 0..cols {
            a[r * cols + k] /= d;
        }
        for i in 0..rows {
            if i != r {
                let f = a[i * cols + c];
                if f != 0.0 {
                    for k in 0..cols {
                        a[i * cols + k] -= f * a[r * cols + k];
                    }
                }
            }
        }
        pivots.push(c);
        r += 1;
    }
    (pivots, a.to_vec())
}
