//! Stage 2, **resolve**: the ids of a [`RawModel`] mapped to value slots ([`Symbols`]), every
//! rule, initial assignment, event assignment and reaction term keyed by the slot it acts on,
//! and (with a [`Resolver`]) MathML trees turned into slot-addressed expressions ([`RExpr`]:
//! function definitions inlined, `rateOf` expanded). Errors name the element and the id.

use super::parse::{RawEvent, RawModel, RawRule, RawRxn, RawSref};
use crate::math::{Expr, Op, RExpr, AVOGADRO};
use crate::model::{Kind, Slot, Stoich, Term};
use crate::SbmlError;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

/// How a species starts and how reactions treat it.
pub(crate) struct SpeciesInit {
    pub slot: usize,
    pub amount: Option<f64>,
    pub conc: Option<f64>,
    pub boundary: bool,
    pub conv: Option<String>,
}

/// A species reference with its stoichiometry slot when it has `stoichiometryMath`.
pub(crate) struct SrefSyms {
    pub raw: RawSref,
    /// Slot of the value of its `stoichiometryMath` (Kind::StoichMath).
    pub math_slot: Option<usize>,
}

/// A reaction with its flux slot and the slots of its local parameters.
pub(crate) struct RxnSyms {
    pub id: String,
    pub flux: usize,
    pub law: Option<Expr>,
    pub fast: bool,
    pub reactants: Vec<SrefSyms>,
    pub products: Vec<SrefSyms>,
    /// Local parameter id → its private slot.
    pub locals: HashMap<String, usize>,
}

/// The model with every id mapped to a slot (output of [`resolve_symbols`]).
pub(crate) struct Symbols {
    pub level: u32,
    pub version: u32,
    pub model_id: String,
    pub notes: Vec<String>,
    pub fns: HashMap<String, (Vec<String>, Expr)>,
    pub slots: Vec<Slot>,
    pub ids: HashMap<String, usize>,
    /// Per slot: the value its attribute gives (NaN when none).
    pub attr_val: Vec<f64>,
    /// Compartments (L3, not 0-D), species and parameters declared without a value.
    pub no_value: Vec<usize>,
    pub spinit: Vec<SpeciesInit>,
    pub rxns: Vec<RxnSyms>,
    /// `stoichiometryMath`: (its slot, math, reaction id).
    pub stoich_math: Vec<(usize, Expr, String)>,
    pub init_assign: HashMap<usize, Expr>,
    pub assign_rules: HashMap<usize, Expr>,
    pub rate_rules: HashMap<usize, Expr>,
    /// Algebraic rules: (id, math).
    pub alg_rules: Vec<(String, Expr)>,
    pub events: Vec<RawEvent>,
    /// Slots some event assigns to.
    pub event_targets: HashSet<usize>,
    /// Per species changed by (slow) reactions: its terms.
    pub species_terms: HashMap<usize, Vec<Term>>,
    /// Fast reactions (SBML L2V4 §4.13.7, L3V1 §4.11.1): (reaction index, [(species, stoich ×
    /// conversion factor)]).
    pub fast_terms: Vec<(usize, Vec<(usize, f64)>)>,
    /// Species that fast reactions change (neither boundary nor constant).
    pub fast_species: Vec<usize>,
}

/// Map every id of `raw` to a slot. `given` replaces the value attributes of the compartments,
/// species and parameters it names.
///
/// Errors: [`SbmlError::Invalid`] for a duplicate id, an unknown compartment, species,
/// conversion factor or rule/assignment variable, a species reference to a non-species;
/// [`SbmlError::Unsupported`] for variable or non-constant conversion factors in fast
/// reactions and species changed by a fast reaction and a rule or event.
pub(crate) fn resolve_symbols(
    raw: RawModel,
    given: &HashMap<&str, f64>,
) -> Result<Symbols, SbmlError> {
    let l3 = raw.level == 3;
    let mut s = Symbols {
        level: raw.level,
        version: raw.version,
        model_id: raw.model_id,
        notes: raw.notes,
        fns: raw.functions.into_iter().collect(),
        slots: Vec::new(),
        ids: HashMap::new(),
        attr_val: Vec::new(),
        no_value: Vec::new(),
        spinit: Vec::new(),
        rxns: Vec::new(),
        stoich_math: Vec::new(),
        init_assign: HashMap::new(),
        assign_rules: HashMap::new(),
        rate_rules: HashMap::new(),
        alg_rules: Vec::new(),
        events: Vec::new(),
        event_targets: HashSet::new(),
        species_terms: HashMap::new(),
        fast_terms: Vec::new(),
        fast_species: Vec::new(),
    };
    // Compartments.
    let mut comp_dims: HashMap<usize, f64> = HashMap::new();
    for c in raw.compartments {
        let size = given.get(c.id.as_str()).copied().or(c.size);
        let unset = size.is_none() && c.dims != 0.0 && l3;
        let size = size.unwrap_or(if c.dims == 0.0 || !l3 { 1.0 } else { f64::NAN });
        let i = s.add(c.id, Kind::Compartment, size, c.constant)?;
        comp_dims.insert(i, c.dims);
        if unset {
            s.no_value.push(i);
        }
    }
    // Species.
    for sp in raw.species {
        let cs = *s.ids.get(&sp.compartment).ok_or_else(|| {
            SbmlError::Invalid(format!(
                "species '{}': unknown compartment '{}'",
                sp.id, sp.compartment
            ))
        })?;
        let hosu = sp.only_substance || comp_dims.get(&cs).copied() == Some(0.0);
        let i = s.add(sp.id.clone(), Kind::Species, f64::NAN, sp.constant)?;
        s.slots[i].comp = Some(cs);
        s.slots[i].amount_units = hosu;
        let (amount, conc) = match given.get(sp.id.as_str()) {
            Some(&v) if hosu => (Some(v), None),
            Some(&v) => (None, Some(v)),
            None => (sp.initial_amount, sp.initial_concentration),
        };
        if amount.is_none() && conc.is_none() {
            s.no_value.push(i);
        }
        s.spinit.push(SpeciesInit {
            slot: i,
            amount,
            conc,
            boundary: sp.boundary,
            conv: sp.conversion_factor,
        });
    }
    // Parameters.
    for p in raw.parameters {
        let v = given.get(p.id.as_str()).copied().or(p.value);
        let i = s.add(p.id, Kind::Parameter, v.unwrap_or(f64::NAN), p.constant)?;
        if v.is_none() {
            s.no_value.push(i);
        }
    }
    s.declare_reactions(raw.reactions)?;
    s.attach_rules(raw.initial_assignments, raw.rules, raw.events)?;
    s.reaction_terms(raw.conversion_factor)?;
    Ok(s)
}

impl Symbols {
    /// Add a slot; ids of local parameters, hidden amounts and stoichiometry math stay private.
    fn add(&mut self, id: String, kind: Kind, v: f64, constant: bool) -> Result<usize, SbmlError> {
        let i = self.slots.len();
        if kind != Kind::LocalParameter && kind != Kind::HiddenAmount && kind != Kind::StoichMath {
            if self.ids.contains_key(&id) {
                return Err(SbmlError::Invalid(format!("duplicate identifier '{id}'")));
            }
            self.ids.insert(id.clone(), i);
        }
        self.slots.push(Slot {
            id,
            kind,
            comp: None,
            amount_units: false,
            hidden: None,
            constant,
        });
        self.attr_val.push(v);
        Ok(i)
    }

    /// Slots of reactions (fluxes) and species-reference ids; then local parameters; then
    /// `stoichiometryMath` values.
    fn declare_reactions(&mut self, reactions: Vec<RawRxn>) -> Result<(), SbmlError> {
        let mut locals = Vec::new();
        for r in reactions {
            let flux = self.add(r.id.clone(), Kind::Reaction, f64::NAN, false)?;
            for sr in r.reactants.iter().chain(&r.products) {
                if let Some(sid) = &sr.id {
                    self.add(sid.clone(), Kind::SpeciesRef, sr.stoich, sr.constant)?;
                }
            }
            let wrap = |v: Vec<RawSref>| -> Vec<SrefSyms> {
                v.into_iter()
                    .map(|raw| SrefSyms {
                        raw,
                        math_slot: None,
                    })
                    .collect()
            };
            locals.push(r.locals);
            self.rxns.push(RxnSyms {
                id: r.id,
                flux,
                law: r.law,
                fast: r.fast,
                reactants: wrap(r.reactants),
                products: wrap(r.products),
                locals: HashMap::new(),
            });
        }
        // Local parameters get private slots.
        for (k, ls) in locals.into_iter().enumerate() {
            for (pid, v) in ls {
                let id = format!("{}.{}", self.rxns[k].id, pid);
                let i = self.add(id, Kind::LocalParameter, v, true)?;
                self.rxns[k].locals.insert(pid, i);
            }
        }
        // Stoichiometry math slots.
        let mut rxns = std::mem::take(&mut self.rxns);
        for r in rxns.iter_mut() {
            for sr in r.reactants.iter_mut().chain(r.products.iter_mut()) {
                if let Some(m) = sr.raw.math.take() {
                    let id = format!("stoichiometryMath({}:{})", r.id, sr.raw.species);
                    let i = self.add(id, Kind::StoichMath, f64::NAN, false)?;
                    self.stoich_math.push((i, m, r.id.clone()));
                    sr.math_slot = Some(i);
                }
            }
        }
        self.rxns = rxns;
        Ok(())
    }

    fn target(&self, v: &str, what: &str) -> Result<usize, SbmlError> {
        self.ids
            .get(v)
            .copied()
            .ok_or_else(|| SbmlError::Invalid(format!("{what}: unknown variable '{v}'")))
    }

    /// Key initial assignments, rules and event assignments by the slot they set.
    fn attach_rules(
        &mut self,
        init: Vec<(String, Option<Expr>)>,
        rules: Vec<RawRule>,
        events: Vec<RawEvent>,
    ) -> Result<(), SbmlError> {
        for (sym, math) in init {
            let sl = self.target(&sym, &format!("initialAssignment '{sym}'"))?;
            if let Some(m) = math {
                self.init_assign.insert(sl, m);
            }
        }
        for r in rules {
            match r {
                RawRule::Variable {
                    rate,
                    variable,
                    math,
                } => {
                    let name = if rate { "rateRule" } else { "assignmentRule" };
                    let sl = self.target(&variable, &format!("{name} '{variable}'"))?;
                    if let Some(m) = math {
                        if rate {
                            self.rate_rules.insert(sl, m);
                        } else {
                            self.assign_rules.insert(sl, m);
                        }
                    }
                }
                RawRule::Algebraic { id, math } => self.alg_rules.push((id, math)),
            }
        }
        for ev in &events {
            for (v, _) in &ev.assigns {
                let what = format!("eventAssignment of event '{}'", ev.id);
                let sl = self.target(v, &what)?;
                self.event_targets.insert(sl);
            }
        }
        self.events = events;
        Ok(())
    }

    /// The assignment rules in slot order (so that resolving them, which numbers the `delay()`
    /// operands and reports the first error, does not depend on hash order).
    pub(crate) fn assign_rules_by_slot(&self) -> Vec<(usize, &Expr)> {
        let mut v: Vec<(usize, &Expr)> = self.assign_rules.iter().map(|(s, e)| (*s, e)).collect();
        v.sort_unstable_by_key(|p| p.0);
        v
    }

    /// A [`Resolver`] of expressions over these symbols; `delays` collects `delay()` operands.
    pub(crate) fn resolver<'m>(&'m self, delays: &'m RefCell<Vec<RExpr>>) -> Resolver<'m> {
        Resolver {
            ids: &self.ids,
            slots: &self.slots,
            fns: &self.fns,
            rate_rules: &self.rate_rules,
            assign_rules: &self.assign_rules,
            species_terms: &self.species_terms,
            delays,
        }
    }

    /// The reaction terms of every species (slow reactions), the stoichiometry of the fast
    /// reactions, and the species fast reactions change.
    fn reaction_terms(&mut self, model_conv: Option<String>) -> Result<(), SbmlError> {
        let (slots, ids) = (&self.slots, &self.ids);
        for (ri, r) in self.rxns.iter().enumerate() {
            if r.fast {
                self.fast_terms.push((ri, Vec::new()));
            }
            for (sign, side) in [(-1.0, &r.reactants), (1.0, &r.products)] {
                for sr in side {
                    let (species, rid) = (&sr.raw.species, &r.id);
                    let sp = *ids.get(species).ok_or_else(|| {
                        SbmlError::Invalid(format!("reaction '{rid}': unknown species '{species}'"))
                    })?;
                    if slots[sp].kind != Kind::Species {
                        return Err(SbmlError::Invalid(format!(
                            "reaction '{rid}': '{species}' is not a species"
                        )));
                    }
                    let st = match (sr.math_slot, &sr.raw.id) {
                        (Some(i), _) => Stoich::Slot(i, sign),
                        (None, Some(sid)) => {
                            let q = ids[sid];
                            let varying = !slots[q].constant
                                || self.assign_rules.contains_key(&q)
                                || self.init_assign.contains_key(&q)
                                || self.rate_rules.contains_key(&q)
                                || self.event_targets.contains(&q);
                            if varying {
                                Stoich::Slot(q, sign)
                            } else {
                                Stoich::Const(sign * sr.raw.stoich)
                            }
                        }
                        (None, None) => Stoich::Const(sign * sr.raw.stoich),
                    };
                    let spi = self.spinit.iter().find(|s| s.slot == sp);
                    let conv = spi
                        .and_then(|s| s.conv.clone())
                        .or_else(|| model_conv.clone());
                    let factor = match conv {
                        Some(c) => Some(*ids.get(&c).ok_or_else(|| {
                            SbmlError::Invalid(format!("unknown conversionFactor '{c}'"))
                        })?),
                        None => None,
                    };
                    if r.fast {
                        let Stoich::Const(c) = st else {
                            return Err(SbmlError::Unsupported(format!(
                                "variable stoichiometry in fast reaction '{rid}'"
                            )));
                        };
                        // Conversion factors scale the species' share of the extent.
                        let cf = match factor {
                            None => 1.0,
                            Some(f) if slots[f].constant && !self.init_assign.contains_key(&f) => {
                                self.attr_val[f]
                            }
                            Some(_) => {
                                return Err(SbmlError::Unsupported(format!(
                                    "non-constant conversion factor on a species of fast reaction '{rid}'"
                                )))
                            }
                        };
                        if let Some(ft) = self.fast_terms.last_mut() {
                            ft.1.push((sp, c * cf));
                        }
                        continue;
                    }
                    self.species_terms.entry(sp).or_default().push(Term {
                        stoich: st,
                        flux: r.flux,
                        factor,
                    });
                }
            }
        }
        // Boundary and constant species are not changed by reactions.
        let fixed_species: HashSet<usize> = self
            .spinit
            .iter()
            .filter(|s| s.boundary || self.slots[s.slot].constant)
            .map(|s| s.slot)
            .collect();
        for sl in &fixed_species {
            self.species_terms.remove(sl);
        }
        for (_, ts) in &self.fast_terms {
            for (sp, _) in ts {
                if !fixed_species.contains(sp) && !self.fast_species.contains(sp) {
                    self.fast_species.push(*sp);
                }
            }
        }
        for sp in &self.fast_species {
            if self.rate_rules.contains_key(sp)
                || self.assign_rules.contains_key(sp)
                || self.event_targets.contains(sp)
            {
                return Err(SbmlError::Unsupported(format!(
                    "species '{}' changed by a fast reaction and by a rule or event",
                    self.slots[*sp].id
                )));
            }
        }
        Ok(())
    }
}

/// Σ stoichiometry × flux (× conversion factor) of reaction terms, as an expression.
pub(crate) fn terms_expr(ts: &[Term]) -> RExpr {
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
}

/// Resolves [`Expr`] trees to slot-addressed [`RExpr`]s (function calls inlined, `rateOf`
/// expanded to the symbol's time derivative).
pub(crate) struct Resolver<'m> {
    ids: &'m HashMap<String, usize>,
    slots: &'m [Slot],
    fns: &'m HashMap<String, (Vec<String>, Expr)>,
    rate_rules: &'m HashMap<usize, Expr>,
    assign_rules: &'m HashMap<usize, Expr>,
    species_terms: &'m HashMap<usize, Vec<Term>>,
    /// Delayed expressions met so far (`delay(x, d)`: the resolved `x`), numbered in order.
    delays: &'m RefCell<Vec<RExpr>>,
}

fn subst(e: &Expr, map: &HashMap<&str, &Expr>) -> Expr {
    match e {
        Expr::Sym(s) => match map.get(s.as_str()) {
            Some(r) => (*r).clone(),
            None => e.clone(),
        },
        Expr::Apply(op, a) => Expr::Apply(*op, a.iter().map(|x| subst(x, map)).collect()),
        Expr::Call(f, a) => Expr::Call(f.clone(), a.iter().map(|x| subst(x, map)).collect()),
        Expr::Piecewise(p, o) => Expr::Piecewise(
            p.iter()
                .map(|(v, c)| (subst(v, map), subst(c, map)))
                .collect(),
            o.as_ref().map(|o| Box::new(subst(o, map))),
        ),
        Expr::Delay(a, b) => Expr::Delay(Box::new(subst(a, map)), Box::new(subst(b, map))),
        Expr::RateOf(a) => Expr::RateOf(Box::new(subst(a, map))),
        _ => e.clone(),
    }
}

impl Resolver<'_> {
    pub(crate) fn resolve(
        &self,
        e: &Expr,
        locals: &HashMap<String, usize>,
        ctx: &str,
        depth: usize,
    ) -> Result<RExpr, SbmlError> {
        if depth > 64 {
            return Err(SbmlError::Unsupported(format!(
                "recursion too deep (recursive function or rateOf) in {ctx}"
            )));
        }
        Ok(match e {
            Expr::Num(c) => RExpr::Num(*c),
            Expr::Time => RExpr::Time,
            Expr::Avogadro => RExpr::Num(AVOGADRO),
            Expr::Sym(s) => {
                if let Some(&sl) = locals.get(s) {
                    RExpr::Slot(sl)
                } else if let Some(&sl) = self.ids.get(s) {
                    if self.slots[sl].kind == Kind::LocalParameter {
                        return Err(SbmlError::Invalid(format!(
                            "unknown identifier '{s}' in {ctx}"
                        )));
                    }
                    RExpr::Slot(sl)
                } else {
                    return Err(SbmlError::Invalid(format!(
                        "unknown identifier '{s}' in {ctx}"
                    )));
                }
            }
            Expr::Apply(op, a) => {
                let args = a
                    .iter()
                    .map(|x| self.resolve(x, locals, ctx, depth))
                    .collect::<Result<Vec<_>, _>>()?;
                RExpr::Apply(*op, args)
            }
            Expr::Piecewise(p, o) => {
                let mut pieces = Vec::new();
                for (v, c) in p {
                    pieces.push((
                        self.resolve(v, locals, ctx, depth)?,
                        self.resolve(c, locals, ctx, depth)?,
                    ));
                }
                let other = match o {
                    Some(o) => Some(Box::new(self.resolve(o, locals, ctx, depth)?)),
                    None => None,
                };
                RExpr::Piecewise(pieces, other)
            }
            Expr::Call(f, a) => {
                let (params, body) = self.fns.get(f).ok_or_else(|| {
                    SbmlError::Invalid(format!("call of unknown function '{f}' in {ctx}"))
                })?;
                if params.len() != a.len() {
                    return Err(SbmlError::Invalid(format!(
                        "function '{f}' takes {} arguments, {} given in {ctx}",
                        params.len(),
                        a.len()
                    )));
                }
                let map: HashMap<&str, &Expr> =
                    params.iter().map(|s| s.as_str()).zip(a.iter()).collect();
                let inl = subst(body, &map);
                self.resolve(&inl, locals, ctx, depth + 1)?
            }
            Expr::Delay(x, d) => {
                let x = self.resolve(x, locals, ctx, depth)?;
                let d = self.resolve(d, locals, ctx, depth)?;
                let mut v = self.delays.borrow_mut();
                v.push(x.clone());
                RExpr::Delay(v.len() - 1, Box::new(x), Box::new(d))
            }
            Expr::RateOf(a) => {
                let sl = match a.as_ref() {
                    Expr::Sym(s) => match locals.get(s).or_else(|| self.ids.get(s)) {
                        Some(&sl) => sl,
                        None => {
                            return Err(SbmlError::Invalid(format!(
                                "rateOf of unknown '{s}' in {ctx}"
                            )))
                        }
                    },
                    _ => {
                        return Err(SbmlError::Unsupported(format!(
                            "rateOf of an expression in {ctx}"
                        )))
                    }
                };
                RExpr::RateOf(Box::new(self.rate_of(sl, ctx, depth + 1)?))
            }
        })
    }

    /// Time derivative of slot `sl` as an expression (for csymbol rateOf, SBML L3V2 §3.4.6).
    pub(crate) fn rate_of(&self, sl: usize, ctx: &str, depth: usize) -> Result<RExpr, SbmlError> {
        let s = &self.slots[sl];
        if let Some(r) = self.rate_rules.get(&sl) {
            return self.resolve(r, &HashMap::new(), ctx, depth);
        }
        if self.assign_rules.contains_key(&sl) {
            return Err(SbmlError::Unsupported(format!(
                "rateOf('{}') of an assignment-ruled symbol in {ctx}",
                s.id
            )));
        }
        if s.kind == Kind::Species {
            let terms: &[Term] = self
                .species_terms
                .get(&sl)
                .map(|v| v.as_slice())
                .unwrap_or(&[]);
            let total = terms_expr(terms);
            if s.amount_units {
                return Ok(total);
            }
            // d[S]/dt = (dA/dt - [S] dV/dt) / V
            let comp = s.comp.unwrap_or(0);
            let dv = self.rate_of(comp, ctx, depth + 1)?;
            let num = RExpr::Apply(
                Op::Minus,
                vec![total, RExpr::Apply(Op::Times, vec![RExpr::Slot(sl), dv])],
            );
            return Ok(RExpr::Apply(Op::Divide, vec![num, RExpr::Slot(comp)]));
        }
        Ok(RExpr::Num(0.0))
    }
}
