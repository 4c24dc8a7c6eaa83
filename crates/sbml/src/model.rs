//! Reading an SBML document (roxmltree) and building the compiled [`SbmlModel`].
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

use crate::math::{parse_lambda, parse_math, Code, Expr, Op, RExpr, Tape, AVOGADRO};
use crate::SbmlError;
use medtwin_core::{ModelInfo, VariableInfo};
use roxmltree::Node;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

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

struct El<'a, 'i> {
    n: Node<'a, 'i>,
}

fn elems<'a, 'i>(n: Node<'a, 'i>, ns: &str) -> Vec<Node<'a, 'i>> {
    n.children()
        .filter(|c| c.is_element() && c.tag_name().namespace() == Some(ns))
        .collect()
}

fn child<'a, 'i>(n: Node<'a, 'i>, ns: &str, name: &str) -> Option<Node<'a, 'i>> {
    elems(n, ns)
        .into_iter()
        .find(|c| c.tag_name().name() == name)
}

fn list<'a, 'i>(n: Node<'a, 'i>, ns: &str, list: &str, item: &str) -> Vec<Node<'a, 'i>> {
    match child(n, ns, list) {
        Some(l) => elems(l, ns)
            .into_iter()
            .filter(|c| c.tag_name().name() == item)
            .collect(),
        None => Vec::new(),
    }
}

impl El<'_, '_> {
    fn s(&self, a: &str) -> Option<String> {
        self.n.attribute(a).map(|s| s.trim().to_string())
    }
    fn f(&self, a: &str) -> Result<Option<f64>, SbmlError> {
        match self.n.attribute(a) {
            None => Ok(None),
            Some(v) => {
                let t = v.trim();
                let x = match t {
                    "INF" => f64::INFINITY,
                    "-INF" => f64::NEG_INFINITY,
                    "NaN" => f64::NAN,
                    _ => t.parse::<f64>().map_err(|_| {
                        SbmlError::Invalid(format!("attribute {a}='{t}' is not a number"))
                    })?,
                };
                Ok(Some(x))
            }
        }
    }
    fn b(&self, a: &str) -> Option<bool> {
        self.n
            .attribute(a)
            .map(|v| matches!(v.trim(), "true" | "1"))
    }
}

fn math_of(n: Node, ns_math: &str, ctx: &str) -> Result<Option<Expr>, SbmlError> {
    match n.children().find(|c| {
        c.is_element() && c.tag_name().name() == "math" && c.tag_name().namespace() == Some(ns_math)
    }) {
        Some(m) => parse_math(m, ctx),
        None => Ok(None),
    }
}

const MATHML: &str = "http://www.w3.org/1998/Math/MathML";

struct RawSref {
    species: String,
    stoich: f64,
    id: Option<String>,
    math: Option<Expr>,
}

struct RawRxn {
    id: String,
    reactants: Vec<RawSref>,
    products: Vec<RawSref>,
    law: Option<Expr>,
    locals: Vec<(String, f64)>,
    fast: bool,
}

struct RawEvent {
    id: String,
    trigger: Option<Expr>,
    delay: Option<Expr>,
    priority: Option<Expr>,
    persistent: bool,
    initial_value: bool,
    uvftt: bool,
    assigns: Vec<(String, Expr)>,
}

struct Resolver<'m> {
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
    fn resolve(
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
    fn rate_of(&self, sl: usize, ctx: &str, depth: usize) -> Result<RExpr, SbmlError> {
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
            {
                let terms: &[Term] = self
                    .species_terms
                    .get(&sl)
                    .map(|v| v.as_slice())
                    .unwrap_or(&[]);
                let mut sum = Vec::new();
                for t in terms {
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
                    sum.push(RExpr::Apply(Op::Times, f));
                }
                let total = RExpr::Apply(Op::Plus, sum);
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
        }
        Ok(RExpr::Num(0.0))
    }
}

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

fn add(
    slots: &mut Vec<Slot>,
    attr_val: &mut Vec<f64>,
    ids: &mut HashMap<String, usize>,
    id: String,
    kind: Kind,
    v: f64,
    constant: bool,
) -> Result<usize, SbmlError> {
    let i = slots.len();
    if kind != Kind::LocalParameter && kind != Kind::HiddenAmount && kind != Kind::StoichMath {
        if ids.contains_key(&id) {
            return Err(SbmlError::Invalid(format!("duplicate identifier '{id}'")));
        }
        ids.insert(id.clone(), i);
    }
    slots.push(Slot {
        id,
        kind,
        comp: None,
        amount_units: false,
        hidden: None,
        constant,
    });
    attr_val.push(v);
    Ok(i)
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
    let opt = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(text, opt)
        .map_err(|e| SbmlError::Xml(e.to_string()))?;
    let root = doc.root_element();
    if root.tag_name().name() != "sbml" {
        return Err(SbmlError::Invalid("root element is not <sbml>".into()));
    }
    let ns = root.tag_name().namespace().unwrap_or("").to_string();
    let level: u32 = root
        .attribute("level")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let version: u32 = root
        .attribute("version")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if !(2..=3).contains(&level) {
        return Err(SbmlError::Unsupported(format!(
            "SBML Level {level} (only Levels 2 and 3 are supported)"
        )));
    }
    for a in root.attributes() {
        if a.name() == "required" && a.namespace().is_some() && a.value() == "true" {
            return Err(SbmlError::Unsupported(format!(
                "required SBML package '{}'",
                a.namespace().unwrap_or("")
            )));
        }
    }
    let model = child(root, &ns, "model").ok_or_else(|| SbmlError::Invalid("no <model>".into()))?;
    let mel = El { n: model };
    let model_id = mel.s("id").or_else(|| mel.s("name")).unwrap_or_default();
    let l3 = level == 3;
    let mut notes = Vec::new();
    // Refuse core elements that are not implemented.
    for c in elems(model, &ns) {
        let n = c.tag_name().name();
        match n {
            "notes"
            | "annotation"
            | "listOfFunctionDefinitions"
            | "listOfUnitDefinitions"
            | "listOfCompartmentTypes"
            | "listOfSpeciesTypes"
            | "listOfCompartments"
            | "listOfSpecies"
            | "listOfParameters"
            | "listOfInitialAssignments"
            | "listOfRules"
            | "listOfReactions"
            | "listOfEvents" => {}
            "listOfConstraints" => {
                notes.push("constraints are ignored (they do not affect simulation)".to_string())
            }
            _ => return Err(SbmlError::Unsupported(format!("model element <{n}>"))),
        }
    }

    // Function definitions.
    let mut fns = HashMap::new();
    for f in list(
        model,
        &ns,
        "listOfFunctionDefinitions",
        "functionDefinition",
    ) {
        let id = El { n: f }.s("id").unwrap_or_default();
        let ctx = format!("functionDefinition '{id}'");
        if let Some(m) = f
            .children()
            .find(|c| c.is_element() && c.tag_name().name() == "math")
        {
            if let Some(l) = parse_lambda(m, &ctx)? {
                fns.insert(id, l);
            }
        }
    }

    let mut slots: Vec<Slot> = Vec::new();
    let mut ids: HashMap<String, usize> = HashMap::new();
    let mut attr_val: Vec<f64> = Vec::new();
    // Compartments (L3, not 0-D), species and parameters declared without a value.
    let mut no_value: Vec<usize> = Vec::new();

    // Compartments.
    let mut comp_dims: HashMap<usize, f64> = HashMap::new();
    for c in list(model, &ns, "listOfCompartments", "compartment") {
        let e = El { n: c };
        let id = e.s("id").unwrap_or_default();
        let dims = e.f("spatialDimensions")?.unwrap_or(3.0);
        let size = given
            .get(id.as_str())
            .copied()
            .or(e.f("size")?)
            .or(e.f("volume")?);
        let unset = size.is_none() && dims != 0.0 && l3;
        let size = size.unwrap_or(if dims == 0.0 || !l3 { 1.0 } else { f64::NAN });
        let constant = e.b("constant").unwrap_or(true);
        let i = add(
            &mut slots,
            &mut attr_val,
            &mut ids,
            id,
            Kind::Compartment,
            size,
            constant,
        )?;
        comp_dims.insert(i, dims);
        if unset {
            no_value.push(i);
        }
    }
    // Species.
    struct SpInit {
        slot: usize,
        amount: Option<f64>,
        conc: Option<f64>,
        boundary: bool,
        conv: Option<String>,
    }
    let mut spinit = Vec::new();
    for s in list(model, &ns, "listOfSpecies", "species") {
        let e = El { n: s };
        let id = e.s("id").unwrap_or_default();
        let comp = e.s("compartment").unwrap_or_default();
        let cs = *ids.get(&comp).ok_or_else(|| {
            SbmlError::Invalid(format!("species '{id}': unknown compartment '{comp}'"))
        })?;
        let hosu = e.b("hasOnlySubstanceUnits").unwrap_or(false)
            || comp_dims.get(&cs).copied() == Some(0.0);
        let constant = e.b("constant").unwrap_or(false);
        let i = add(
            &mut slots,
            &mut attr_val,
            &mut ids,
            id.clone(),
            Kind::Species,
            f64::NAN,
            constant,
        )?;
        slots[i].comp = Some(cs);
        slots[i].amount_units = hosu;
        let (amount, conc) = match given.get(id.as_str()) {
            Some(&v) if hosu => (Some(v), None),
            Some(&v) => (None, Some(v)),
            None => (e.f("initialAmount")?, e.f("initialConcentration")?),
        };
        if amount.is_none() && conc.is_none() {
            no_value.push(i);
        }
        spinit.push(SpInit {
            slot: i,
            amount,
            conc,
            boundary: e.b("boundaryCondition").unwrap_or(false),
            conv: e.s("conversionFactor"),
        });
    }
    // Parameters.
    for p in list(model, &ns, "listOfParameters", "parameter") {
        let e = El { n: p };
        let id = e.s("id").unwrap_or_default();
        let v = match given.get(id.as_str()) {
            Some(&v) => Some(v),
            None => e.f("value")?,
        };
        let constant = e.b("constant").unwrap_or(true);
        let i = add(
            &mut slots,
            &mut attr_val,
            &mut ids,
            id,
            Kind::Parameter,
            v.unwrap_or(f64::NAN),
            constant,
        )?;
        if v.is_none() {
            no_value.push(i);
        }
    }
    // Reactions (structure first; math resolved later).
    let mut raw_rxns = Vec::new();
    let mut stoich_math: Vec<(usize, Expr, String)> = Vec::new();
    for r in list(model, &ns, "listOfReactions", "reaction") {
        let e = El { n: r };
        let id = e.s("id").unwrap_or_default();
        let fast = e.b("fast") == Some(true);
        add(
            &mut slots,
            &mut attr_val,
            &mut ids,
            id.clone(),
            Kind::Reaction,
            f64::NAN,
            false,
        )?;
        let mut sides = [Vec::new(), Vec::new()];
        for (k, ln) in ["listOfReactants", "listOfProducts"].iter().enumerate() {
            for sr in list(r, &ns, ln, "speciesReference") {
                let se = El { n: sr };
                let species = se.s("species").unwrap_or_default();
                let sid = se.s("id");
                let stoich = se.f("stoichiometry")?.unwrap_or(1.0);
                let constant = se.b("constant").unwrap_or(true);
                let ctx = format!("stoichiometryMath of reaction '{id}'");
                let math = match child(sr, &ns, "stoichiometryMath") {
                    Some(sm) => math_of(sm, MATHML, &ctx)?,
                    None => None,
                };
                if let Some(sid) = &sid {
                    add(
                        &mut slots,
                        &mut attr_val,
                        &mut ids,
                        sid.clone(),
                        Kind::SpeciesRef,
                        stoich,
                        constant,
                    )?;
                }
                sides[k].push(RawSref {
                    species,
                    stoich,
                    id: sid,
                    math,
                });
            }
        }
        let mut law = None;
        let mut locals = Vec::new();
        if let Some(kl) = child(r, &ns, "kineticLaw") {
            law = math_of(kl, MATHML, &format!("kineticLaw of reaction '{id}'"))?;
            for lname in [
                ("listOfParameters", "parameter"),
                ("listOfLocalParameters", "localParameter"),
            ] {
                for p in list(kl, &ns, lname.0, lname.1) {
                    let pe = El { n: p };
                    locals.push((
                        pe.s("id").unwrap_or_default(),
                        pe.f("value")?.unwrap_or(f64::NAN),
                    ));
                }
            }
        }
        let [reactants, products] = sides;
        raw_rxns.push(RawRxn {
            id,
            reactants,
            products,
            law,
            locals,
            fast,
        });
    }
    // Local parameters get private slots.
    let mut rxn_locals: Vec<HashMap<String, usize>> = Vec::new();
    for r in &raw_rxns {
        let mut m = HashMap::new();
        for (pid, v) in &r.locals {
            let i = add(
                &mut slots,
                &mut attr_val,
                &mut ids,
                format!("{}.{}", r.id, pid),
                Kind::LocalParameter,
                *v,
                true,
            )?;
            m.insert(pid.clone(), i);
        }
        rxn_locals.push(m);
    }
    // Stoichiometry math slots.
    for r in raw_rxns.iter_mut() {
        for sr in r.reactants.iter_mut().chain(r.products.iter_mut()) {
            if let Some(m) = sr.math.take() {
                let i = add(
                    &mut slots,
                    &mut attr_val,
                    &mut ids,
                    format!("stoichiometryMath({}:{})", r.id, sr.species),
                    Kind::StoichMath,
                    f64::NAN,
                    false,
                )?;
                stoich_math.push((i, m, r.id.clone()));
                sr.id = Some(format!("#{i}"));
            }
        }
    }
    let model_conv = mel.s("conversionFactor");

    // Rules and initial assignments.
    let target = |ids: &HashMap<String, usize>, v: &str, what: &str| -> Result<usize, SbmlError> {
        ids.get(v)
            .copied()
            .ok_or_else(|| SbmlError::Invalid(format!("{what}: unknown variable '{v}'")))
    };
    let mut init_assign: HashMap<usize, Expr> = HashMap::new();
    for ia in list(model, &ns, "listOfInitialAssignments", "initialAssignment") {
        let e = El { n: ia };
        let sym = e.s("symbol").unwrap_or_default();
        let ctx = format!("initialAssignment '{sym}'");
        let sl = target(&ids, &sym, &ctx)?;
        if let Some(m) = math_of(ia, MATHML, &ctx)? {
            init_assign.insert(sl, m);
        }
    }
    let mut assign_rules: HashMap<usize, Expr> = HashMap::new();
    let mut rate_rules: HashMap<usize, Expr> = HashMap::new();
    let mut alg_rules: Vec<(String, Expr)> = Vec::new();
    if let Some(lr) = child(model, &ns, "listOfRules") {
        for r in elems(lr, &ns) {
            let e = El { n: r };
            let name = r.tag_name().name();
            let var = e.s("variable").unwrap_or_default();
            match name {
                "assignmentRule" | "rateRule" => {
                    let ctx = format!("{name} '{var}'");
                    let sl = target(&ids, &var, &ctx)?;
                    if let Some(m) = math_of(r, MATHML, &ctx)? {
                        if name == "assignmentRule" {
                            assign_rules.insert(sl, m);
                        } else {
                            rate_rules.insert(sl, m);
                        }
                    }
                }
                "algebraicRule" => {
                    let id = e
                        .s("id")
                        .or(e.s("metaid"))
                        .unwrap_or_else(|| format!("#{}", alg_rules.len()));
                    if let Some(m) = math_of(r, MATHML, &format!("algebraicRule '{id}'"))? {
                        alg_rules.push((id, m));
                    }
                }
                "notes" | "annotation" => {}
                other => {
                    return Err(SbmlError::Unsupported(format!(
                        "rule element <{other}> '{var}'"
                    )))
                }
            }
        }
    }

    // Events (raw).
    let mut raw_events = Vec::new();
    for (k, ev) in list(model, &ns, "listOfEvents", "event")
        .into_iter()
        .enumerate()
    {
        let e = El { n: ev };
        let id = e.s("id").unwrap_or_else(|| format!("event#{k}"));
        let ctx = format!("event '{id}'");
        let (mut trigger, mut persistent, mut initial_value) = (None, true, true);
        if let Some(t) = child(ev, &ns, "trigger") {
            let te = El { n: t };
            trigger = math_of(t, MATHML, &format!("trigger of {ctx}"))?;
            persistent = te.b("persistent").unwrap_or(true);
            initial_value = te.b("initialValue").unwrap_or(true);
        }
        let delay = match child(ev, &ns, "delay") {
            Some(d) => math_of(d, MATHML, &format!("delay of {ctx}"))?,
            None => None,
        };
        let priority = match child(ev, &ns, "priority") {
            Some(d) => math_of(d, MATHML, &format!("priority of {ctx}"))?,
            None => None,
        };
        let uvftt = e.b("useValuesFromTriggerTime").unwrap_or(true);
        let mut assigns = Vec::new();
        for ea in list(ev, &ns, "listOfEventAssignments", "eventAssignment") {
            let v = El { n: ea }.s("variable").unwrap_or_default();
            if let Some(m) = math_of(ea, MATHML, &format!("eventAssignment '{v}' of {ctx}"))? {
                assigns.push((v, m));
            }
        }
        raw_events.push(RawEvent {
            id,
            trigger,
            delay,
            priority,
            persistent,
            initial_value,
            uvftt,
            assigns,
        });
    }
    let mut event_targets: HashSet<usize> = HashSet::new();
    for ev in &raw_events {
        for (v, _) in &ev.assigns {
            event_targets.insert(target(
                &ids,
                v,
                &format!("eventAssignment of event '{}'", ev.id),
            )?);
        }
    }

    // Reaction terms per species.
    let mut species_terms: HashMap<usize, Vec<Term>> = HashMap::new();
    let mut rxn_slot_of = Vec::new();
    // Fast reactions (SBML L2V4 §4.13.7, L3V1 §4.11.1): (reaction index, [(species, stoich)]).
    let mut fast_terms: Vec<(usize, Vec<(usize, f64)>)> = Vec::new();
    for (ri, r) in raw_rxns.iter().enumerate() {
        if r.fast {
            fast_terms.push((ri, Vec::new()));
        }
        let flux = ids[&r.id];
        rxn_slot_of.push(flux);
        for (sign, side) in [(-1.0, &r.reactants), (1.0, &r.products)] {
            for sr in side {
                let sp = *ids.get(&sr.species).ok_or_else(|| {
                    SbmlError::Invalid(format!(
                        "reaction '{}': unknown species '{}'",
                        r.id, sr.species
                    ))
                })?;
                if slots[sp].kind != Kind::Species {
                    return Err(SbmlError::Invalid(format!(
                        "reaction '{}': '{}' is not a species",
                        r.id, sr.species
                    )));
                }
                let st = match &sr.id {
                    Some(sid) if sid.starts_with('#') => {
                        Stoich::Slot(sid[1..].parse().unwrap_or(0), sign)
                    }
                    Some(sid) => {
                        let q = ids[sid];
                        let varying = !slots[q].constant
                            || assign_rules.contains_key(&q)
                            || init_assign.contains_key(&q)
                            || rate_rules.contains_key(&q)
                            || event_targets.contains(&q);
                        if varying {
                            Stoich::Slot(q, sign)
                        } else {
                            Stoich::Const(sign * sr.stoich)
                        }
                    }
                    None => Stoich::Const(sign * sr.stoich),
                };
                let spi = spinit.iter().find(|s| s.slot == sp);
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
                            "variable stoichiometry in fast reaction '{}'",
                            r.id
                        )));
                    };
                    // Conversion factors scale the species' share of the extent.
                    let cf = match factor {
                        None => 1.0,
                        Some(f) if slots[f].constant && !init_assign.contains_key(&f) => {
                            attr_val[f]
                        }
                        Some(_) => {
                            return Err(SbmlError::Unsupported(format!(
                                "non-constant conversion factor on a species of fast reaction '{}'",
                                r.id
                            )))
                        }
                    };
                    if let Some(ft) = fast_terms.last_mut() {
                        ft.1.push((sp, c * cf));
                    }
                    continue;
                }
                species_terms.entry(sp).or_default().push(Term {
                    stoich: st,
                    flux,
                    factor,
                });
            }
        }
    }
    // Boundary and constant species are not changed by reactions.
    for s in &spinit {
        if s.boundary || slots[s.slot].constant {
            species_terms.remove(&s.slot);
        }
    }

    let fixed_species: HashSet<usize> = spinit
        .iter()
        .filter(|s| s.boundary || slots[s.slot].constant)
        .map(|s| s.slot)
        .collect();
    let mut fast_species: Vec<usize> = Vec::new();
    for (_, ts) in &fast_terms {
        for (sp, _) in ts {
            if !fixed_species.contains(sp) && !fast_species.contains(sp) {
                fast_species.push(*sp);
            }
        }
    }
    for sp in &fast_species {
        if rate_rules.contains_key(sp)
            || assign_rules.contains_key(sp)
            || event_targets.contains(sp)
        {
            return Err(SbmlError::Unsupported(format!(
                "species '{}' changed by a fast reaction and by a rule or event",
                slots[*sp].id
            )));
        }
    }

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
                raw_rxns[fast_terms[0].0].id
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
            let r = &raw_rxns[*ri];
            let law = match &r.law {
                Some(l) => res.resolve(
                    l,
                    &rxn_locals[*ri],
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
    for (k, r) in raw_rxns.iter().enumerate() {
        let e = match &r.law {
            Some(l) => res.resolve(
                l,
                &rxn_locals[k],
                &format!("kineticLaw of reaction '{}'", r.id),
                0,
            )?,
            None => RExpr::Num(0.0),
        };
        rxn_law.insert(rxn_slot_of[k], e);
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
                Some(SpInit { conc: Some(c), .. }) => Some(if s.amount_units {
                    RExpr::Apply(Op::Times, vec![RExpr::Num(*c), comp])
                } else {
                    RExpr::Num(*c)
                }),
                Some(SpInit {
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
        n_reactions: raw_rxns.len(),
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
