//! Stage 2b, **resolve the unknowns**: which equation determines which slot. Algebraic rules are
//! matched to the variables they determine; the fast subsystem becomes algebraic unknowns and
//! conserved moieties; given values and values nothing sets are checked; and the ODE state is
//! chosen (rate rules, species changed by reactions as amounts, event targets).

use super::resolve::{terms_expr, Symbols};
use crate::math::{Op, RExpr};
use crate::model::{Kind, Slot};
use crate::SbmlError;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

/// The unknowns of the model and the equations that determine them.
pub(crate) struct Unknowns {
    /// Variables determined by algebraic rules and fast reactions.
    pub alg_vars: Vec<usize>,
    /// Their residuals (same order as `alg_vars`).
    pub alg_res: Vec<RExpr>,
    /// Conserved moieties of the fast subsystem: their derivatives and initial values.
    pub conserved_deriv: HashMap<usize, RExpr>,
    pub conserved_init: HashMap<usize, RExpr>,
    /// The state slots, as a set and in state order.
    pub states: HashSet<usize>,
    pub state_slots: Vec<usize>,
    /// Per state: the slot whose rate rule or reaction terms give its derivative (None: zero).
    pub deriv_src: Vec<Option<usize>>,
}

/// Determine the unknowns of `sy` (adds the conserved-moiety and hidden-amount slots).
/// `delays` collects the `delay()` operands met while resolving; `values` are the values the
/// caller gives (see [`crate::load_sbml_with_values`]).
///
/// Errors: [`SbmlError::Unsupported`] for algebraic rules without a variable to determine,
/// linearly dependent fast reactions or one without a kinetic law; [`SbmlError::Options`] for
/// a given value of an id that is not a compartment, species or parameter, or that a rule
/// determines; [`SbmlError::Invalid`] naming every id whose initial value nothing sets, and a
/// variable with both an assignment and a rate rule.
pub(crate) fn determine_unknowns(
    sy: &mut Symbols,
    delays: &RefCell<Vec<RExpr>>,
    values: &[(String, f64)],
) -> Result<Unknowns, SbmlError> {
    let (mut alg_vars, mut alg_res) = if sy.alg_rules.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        match_algebraic_rules(sy, delays)?
    };
    let (mut conserved_deriv, mut conserved_init) = (HashMap::new(), HashMap::new());
    if !sy.fast_terms.is_empty() {
        let (vars, res, deriv, init) = fast_subsystem(sy, delays)?;
        alg_vars.extend(vars);
        alg_res.extend(res);
        (conserved_deriv, conserved_init) = (deriv, init);
    }
    let alg_set: HashSet<usize> = alg_vars.iter().copied().collect();
    check_values(sy, &alg_set, values)?;
    let (states, state_slots, deriv_src) = select_states(sy, &alg_set)?;
    Ok(Unknowns {
        alg_vars,
        alg_res,
        conserved_deriv,
        conserved_init,
        states,
        state_slots,
        deriv_src,
    })
}

/// Algebraic rules (SBML L3V2 §4.9.4): match each rule to a variable no other construct
/// determines (augmenting paths); the residuals are solved by Newton's method inside every
/// evaluation. Returns the matched variables and the rules' residuals (rule order).
fn match_algebraic_rules(
    sy: &Symbols,
    delay_exprs: &RefCell<Vec<RExpr>>,
) -> Result<(Vec<usize>, Vec<RExpr>), SbmlError> {
    let (slots, assign_rules, rate_rules) = (&sy.slots, &sy.assign_rules, &sy.rate_rules);
    let (species_terms, event_targets, fast_species) =
        (&sy.species_terms, &sy.event_targets, &sy.fast_species);
    let alg_rules = &sy.alg_rules;
    let res = sy.resolver(delay_exprs);
    let mut alg_res = Vec::new();
    let none = HashMap::new();
    let mut ar0: HashMap<usize, RExpr> = HashMap::new();
    for (sl, e) in sy.assign_rules_by_slot() {
        ar0.insert(
            sl,
            res.resolve(e, &none, &format!("assignmentRule '{}'", slots[sl].id), 0)?,
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
    for (id, e) in alg_rules {
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
    let alg_vars = pairs.iter().map(|p| p.1).collect();
    Ok((alg_vars, alg_res))
}

/// Fast subsystem: the fast species become algebraic unknowns fixed by (a) the conserved
/// moieties L·amount = y (L spans the left null space of the fast stoichiometry), each y a
/// state driven by the slow reactions, and (b) fast kinetic laws = 0 (equilibrium).
/// Returns (fast species, residuals, conserved derivatives, conserved initial values).
#[allow(clippy::type_complexity)]
fn fast_subsystem(
    sy: &mut Symbols,
    delay_exprs: &RefCell<Vec<RExpr>>,
) -> Result<
    (
        Vec<usize>,
        Vec<RExpr>,
        HashMap<usize, RExpr>,
        HashMap<usize, RExpr>,
    ),
    SbmlError,
> {
    let mut conserved_deriv: HashMap<usize, RExpr> = HashMap::new();
    let mut conserved_init: HashMap<usize, RExpr> = HashMap::new();
    let fast_terms = sy.fast_terms.clone();
    let fast_species = sy.fast_species.clone();
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
            sy.rxns[fast_terms[0].0].id
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
    let mut residuals = Vec::new();
    let free: Vec<usize> = (0..na).filter(|c| !pivots.contains(c)).collect();
    for (k, &f) in free.iter().enumerate() {
        let mut l = vec![0.0; na];
        l[f] = 1.0;
        for (r, &pc) in pivots.iter().enumerate() {
            l[pc] = -rref[r * na + f];
        }
        let y = sy.slots.len();
        sy.slots.push(Slot {
            id: format!("conserved#{k}"),
            kind: Kind::Conserved,
            comp: None,
            amount_units: true,
            hidden: None,
            constant: false,
        });
        sy.attr_val.push(f64::NAN);
        let mut sum = Vec::new();
        let mut dsum = Vec::new();
        for (i, &li) in l.iter().enumerate() {
            if li != 0.0 {
                sum.push(RExpr::Apply(
                    Op::Times,
                    vec![RExpr::Num(li), amount_expr(&sy.slots, fast_species[i])],
                ));
                let ts = sy
                    .species_terms
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
    let res = sy.resolver(delay_exprs);
    for (ri, _) in &fast_terms {
        let r = &sy.rxns[*ri];
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
    Ok((fast_species, residuals, conserved_deriv, conserved_init))
}

/// Given values only for declared compartments, species and parameters, and not for ids whose
/// initial value an initial assignment or a rule determines (it would be overwritten); and a
/// value that nothing defines (no attribute, initial assignment, assignment rule or algebraic
/// rule; a rate rule or an event needs a starting value) is refused, naming every such id, as
/// libRoadRunner refuses unset parameters (instead of simulating NaN).
fn check_values(
    sy: &Symbols,
    alg_set: &HashSet<usize>,
    values: &[(String, f64)],
) -> Result<(), SbmlError> {
    let (ids, slots, init_assign, assign_rules) =
        (&sy.ids, &sy.slots, &sy.init_assign, &sy.assign_rules);
    let no_value = &sy.no_value;
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

    Ok(())
}

/// The ODE state, in slot order: conserved moieties, rate-ruled symbols, species (a species in
/// concentration units is integrated as its amount in a new hidden slot) and event targets.
/// Returns (state set, state slots, derivative source per state).
#[allow(clippy::type_complexity)]
fn select_states(
    sy: &mut Symbols,
    alg_set: &HashSet<usize>,
) -> Result<(HashSet<usize>, Vec<usize>, Vec<Option<usize>>), SbmlError> {
    let Symbols {
        slots,
        attr_val,
        assign_rules,
        rate_rules,
        event_targets,
        ..
    } = sy;
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
    Ok((states, state_slots, deriv_src))
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
