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

use crate::math::{parse_lambda, parse_math, Code, Expr, Op, RExpr, AVOGADRO};
use crate::SbmlError;
use medtwin_core::{ModelInfo, VariableInfo};
use roxmltree::Node;
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
    pub(crate) derived: Vec<(usize, Code)>,
    pub(crate) state_slots: Vec<usize>,
    pub(crate) derivs: Vec<Deriv>,
    pub(crate) events: Vec<Event>,
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
            Expr::Delay(..) => {
                return Err(SbmlError::Unsupported(format!("csymbol delay() in {ctx}")))
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
                self.rate_of(sl, ctx, depth + 1)?
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
/// are evaluated (the simulation start).
pub(crate) fn build(text: &str, init_time: f64) -> Result<SbmlModel, SbmlError> {
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
    if level < 2 || level > 3 {
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

    // Compartments.
    let mut comp_dims: HashMap<usize, f64> = HashMap::new();
    for c in list(model, &ns, "listOfCompartments", "compartment") {
        let e = El { n: c };
        let id = e.s("id").unwrap_or_default();
        let dims = e.f("spatialDimensions")?.unwrap_or(3.0);
        let size = e.f("size")?.or(e.f("volume")?);
        let size = size.unwrap_or(if dims == 0.0 || !l3 { 1.0 } else { f64::NAN });
        let constant = e.b("constant").unwrap_or(!l3 || true);
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
        spinit.push(SpInit {
            slot: i,
            amount: e.f("initialAmount")?,
            conc: e.f("initialConcentration")?,
            boundary: e.b("boundaryCondition").unwrap_or(false),
            conv: e.s("conversionFactor"),
        });
    }
    // Parameters.
    for p in list(model, &ns, "listOfParameters", "parameter") {
        let e = El { n: p };
        let id = e.s("id").unwrap_or_default();
        let v = e.f("value")?.unwrap_or(f64::NAN);
        let constant = e.b("constant").unwrap_or(true);
        add(
            &mut slots,
            &mut attr_val,
            &mut ids,
            id,
            Kind::Parameter,
            v,
            constant,
        )?;
    }
    // Reactions (structure first; math resolved later).
    let mut raw_rxns = Vec::new();
    let mut stoich_math: Vec<(usize, Expr, String)> = Vec::new();
    for r in list(model, &ns, "listOfReactions", "reaction") {
        let e = El { n: r };
        let id = e.s("id").unwrap_or_default();
        if e.b("fast") == Some(true) {
            return Err(SbmlError::Unsupported(format!(
                "fast reaction '{id}' (fast=\"true\")"
            )));
        }
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
                    if math_of(r, MATHML, "algebraicRule")?.is_some() {
                        let id = e.s("id").or(e.s("metaid")).unwrap_or_default();
                        return Err(SbmlError::Unsupported(format!("algebraicRule '{id}'")));
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
    for r in &raw_rxns {
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

    // States.
    let mut states: HashSet<usize> = HashSet::new();
    let mut state_slots = Vec::new();
    let mut deriv_src: Vec<Option<usize>> = Vec::new(); // Some(slot with rate rule / species terms)
    let n_named = slots.len();
    for sl in 0..n_named {
        let kind = slots[sl].kind;
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
        if rate_rules.contains_key(&sl) && !(kind == Kind::Species && !slots[sl].amount_units) {
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
    let derived = topo(dnodes, &slots, "assignment rules / kinetic laws")?;

    // Initial-value program.
    let mut inodes: Vec<(usize, RExpr)> = Vec::new();
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
        if let Some(e) = e {
            inodes.push((sl, e));
        }
    }
    let init_prog = topo(inodes, &slots, "initial assignments")?;

    // Derivatives.
    let mut derivs = Vec::new();
    for (i, src) in deriv_src.iter().enumerate() {
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
                    Deriv::Rule(Code::compile(&e))
                } else if let Some(t) = species_terms.get(sl) {
                    Deriv::Reactions(t.clone())
                } else {
                    Deriv::Zero
                }
            }
        };
        let _ = i;
        derivs.push(d);
    }

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
    let mut m = SbmlModel {
        level,
        version,
        model_id,
        slots,
        ids,
        base: attr_val,
        init_prog,
        derived,
        state_slots,
        derivs,
        events,
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
        self.base = v;
        self.init_time = t0;
    }
}
