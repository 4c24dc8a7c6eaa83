//! Stage 1, **parse**: the XML document (roxmltree) read into a [`RawModel`] of ids, attribute
//! values and MathML expression trees, in document order. Nothing is resolved here: ids are
//! still strings, and no check needs more than the element at hand (SBML level, required
//! packages, unsupported model or rule elements, attributes that are not numbers, MathML that
//! does not parse).

use crate::math::{parse_lambda, parse_math, Expr};
use crate::SbmlError;
use roxmltree::Node;

/// The namespace of MathML 2 (SBML L2 and L3 embed MathML in it).
const MATHML: &str = "http://www.w3.org/1998/Math/MathML";

/// A `<compartment>`.
pub(crate) struct RawCompartment {
    pub id: String,
    /// `spatialDimensions` (3 when absent).
    pub dims: f64,
    /// `size`, else the L1/L2 `volume` attribute.
    pub size: Option<f64>,
    /// `constant` (true when absent).
    pub constant: bool,
}

/// A `<species>`.
pub(crate) struct RawSpecies {
    pub id: String,
    pub compartment: String,
    /// `hasOnlySubstanceUnits` (false when absent).
    pub only_substance: bool,
    /// `constant` (false when absent).
    pub constant: bool,
    pub initial_amount: Option<f64>,
    pub initial_concentration: Option<f64>,
    /// `boundaryCondition` (false when absent).
    pub boundary: bool,
    pub conversion_factor: Option<String>,
}

/// A global `<parameter>`.
pub(crate) struct RawParameter {
    pub id: String,
    pub value: Option<f64>,
    /// `constant` (true when absent).
    pub constant: bool,
}

/// A `<speciesReference>` of a reaction.
pub(crate) struct RawSref {
    pub species: String,
    /// `stoichiometry` (1 when absent).
    pub stoich: f64,
    pub id: Option<String>,
    /// `constant` (true when absent).
    pub constant: bool,
    /// The L2 `<stoichiometryMath>`.
    pub math: Option<Expr>,
}

/// A `<reaction>`.
pub(crate) struct RawRxn {
    pub id: String,
    pub reactants: Vec<RawSref>,
    pub products: Vec<RawSref>,
    /// The kinetic law's math (None: no kinetic law, or one without math).
    pub law: Option<Expr>,
    /// Local parameters of the kinetic law (`id`, `value`; NaN when absent).
    pub locals: Vec<(String, f64)>,
    pub fast: bool,
}

/// A rule of `<listOfRules>`.
pub(crate) enum RawRule {
    /// `assignmentRule` (`rate == false`) or `rateRule` for `variable`; math None when absent.
    Variable {
        rate: bool,
        variable: String,
        math: Option<Expr>,
    },
    /// `algebraicRule` with math: its id (or metaid, or `#k` for the k-th algebraic rule).
    Algebraic { id: String, math: Expr },
}

/// An `<event>`.
pub(crate) struct RawEvent {
    /// Its id, or `event#k` for the k-th event.
    pub id: String,
    pub trigger: Option<Expr>,
    pub delay: Option<Expr>,
    pub priority: Option<Expr>,
    pub persistent: bool,
    pub initial_value: bool,
    /// `useValuesFromTriggerTime` (true when absent).
    pub uvftt: bool,
    /// Event assignments with math: (variable id, math).
    pub assigns: Vec<(String, Expr)>,
}

/// An SBML document as read: every element the compiler uses, with ids as strings.
pub(crate) struct RawModel {
    pub level: u32,
    pub version: u32,
    /// The model's id, else its name, else empty.
    pub model_id: String,
    /// Remarks on ignored content (constraints).
    pub notes: Vec<String>,
    /// The model's `conversionFactor`.
    pub conversion_factor: Option<String>,
    /// Function definitions with a lambda: (id, (parameters, body)), in document order.
    pub functions: Vec<(String, (Vec<String>, Expr))>,
    pub compartments: Vec<RawCompartment>,
    pub species: Vec<RawSpecies>,
    pub parameters: Vec<RawParameter>,
    pub reactions: Vec<RawRxn>,
    /// Initial assignments: (symbol, math; None when absent).
    pub initial_assignments: Vec<(String, Option<Expr>)>,
    pub rules: Vec<RawRule>,
    pub events: Vec<RawEvent>,
}

/// An element whose attributes are read.
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

/// The `<math>` child of `n`, parsed (`ctx` names the element in errors).
fn math_of(n: Node, ctx: &str) -> Result<Option<Expr>, SbmlError> {
    match n.children().find(|c| {
        c.is_element() && c.tag_name().name() == "math" && c.tag_name().namespace() == Some(MATHML)
    }) {
        Some(m) => parse_math(m, ctx),
        None => Ok(None),
    }
}

/// Parse SBML text into a [`RawModel`].
///
/// Errors: [`SbmlError::Xml`] (not well-formed), [`SbmlError::Invalid`] (no `<sbml>` root or
/// `<model>`, an attribute that is not a number, malformed MathML),
/// [`SbmlError::Unsupported`] (Level 1, a required package, an unknown model or rule element,
/// an unknown MathML element).
pub(crate) fn parse(text: &str) -> Result<RawModel, SbmlError> {
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
    let notes = check_model_elements(model, &ns)?;
    let functions = parse_functions(model, &ns)?;
    let (compartments, species, parameters) = parse_quantities(model, &ns)?;
    let reactions = list(model, &ns, "listOfReactions", "reaction")
        .into_iter()
        .map(|r| parse_reaction(r, &ns))
        .collect::<Result<Vec<_>, _>>()?;
    let (initial_assignments, rules) = parse_rules(model, &ns)?;
    let events = parse_events(model, &ns)?;
    Ok(RawModel {
        level,
        version,
        model_id: mel.s("id").or_else(|| mel.s("name")).unwrap_or_default(),
        notes,
        conversion_factor: mel.s("conversionFactor"),
        functions,
        compartments,
        species,
        parameters,
        reactions,
        initial_assignments,
        rules,
        events,
    })
}

/// Refuse core elements of `<model>` that are not implemented; notes on ignored ones.
fn check_model_elements(model: Node, ns: &str) -> Result<Vec<String>, SbmlError> {
    let mut notes = Vec::new();
    for c in elems(model, ns) {
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
    Ok(notes)
}

/// Function definitions: (id, lambda) of those whose math is a lambda.
#[allow(clippy::type_complexity)]
fn parse_functions(model: Node, ns: &str) -> Result<Vec<(String, (Vec<String>, Expr))>, SbmlError> {
    let mut fns = Vec::new();
    for f in list(model, ns, "listOfFunctionDefinitions", "functionDefinition") {
        let id = El { n: f }.s("id").unwrap_or_default();
        let ctx = format!("functionDefinition '{id}'");
        if let Some(m) = f
            .children()
            .find(|c| c.is_element() && c.tag_name().name() == "math")
        {
            if let Some(l) = parse_lambda(m, &ctx)? {
                fns.push((id, l));
            }
        }
    }
    Ok(fns)
}

/// Compartments, species and global parameters.
#[allow(clippy::type_complexity)]
fn parse_quantities(
    model: Node,
    ns: &str,
) -> Result<(Vec<RawCompartment>, Vec<RawSpecies>, Vec<RawParameter>), SbmlError> {
    let mut compartments = Vec::new();
    for c in list(model, ns, "listOfCompartments", "compartment") {
        let e = El { n: c };
        compartments.push(RawCompartment {
            id: e.s("id").unwrap_or_default(),
            dims: e.f("spatialDimensions")?.unwrap_or(3.0),
            size: e.f("size")?.or(e.f("volume")?),
            constant: e.b("constant").unwrap_or(true),
        });
    }
    let mut species = Vec::new();
    for s in list(model, ns, "listOfSpecies", "species") {
        let e = El { n: s };
        species.push(RawSpecies {
            id: e.s("id").unwrap_or_default(),
            compartment: e.s("compartment").unwrap_or_default(),
            only_substance: e.b("hasOnlySubstanceUnits").unwrap_or(false),
            constant: e.b("constant").unwrap_or(false),
            initial_amount: e.f("initialAmount")?,
            initial_concentration: e.f("initialConcentration")?,
            boundary: e.b("boundaryCondition").unwrap_or(false),
            conversion_factor: e.s("conversionFactor"),
        });
    }
    let mut parameters = Vec::new();
    for p in list(model, ns, "listOfParameters", "parameter") {
        let e = El { n: p };
        parameters.push(RawParameter {
            id: e.s("id").unwrap_or_default(),
            value: e.f("value")?,
            constant: e.b("constant").unwrap_or(true),
        });
    }
    Ok((compartments, species, parameters))
}

/// One reaction: species references (with `stoichiometryMath`), kinetic law, local parameters.
fn parse_reaction(r: Node, ns: &str) -> Result<RawRxn, SbmlError> {
    let e = El { n: r };
    let id = e.s("id").unwrap_or_default();
    let mut sides = [Vec::new(), Vec::new()];
    for (k, ln) in ["listOfReactants", "listOfProducts"].iter().enumerate() {
        for sr in list(r, ns, ln, "speciesReference") {
            let se = El { n: sr };
            let ctx = format!("stoichiometryMath of reaction '{id}'");
            let math = match child(sr, ns, "stoichiometryMath") {
                Some(sm) => math_of(sm, &ctx)?,
                None => None,
            };
            sides[k].push(RawSref {
                species: se.s("species").unwrap_or_default(),
                stoich: se.f("stoichiometry")?.unwrap_or(1.0),
                id: se.s("id"),
                constant: se.b("constant").unwrap_or(true),
                math,
            });
        }
    }
    let mut law = None;
    let mut locals = Vec::new();
    if let Some(kl) = child(r, ns, "kineticLaw") {
        law = math_of(kl, &format!("kineticLaw of reaction '{id}'"))?;
        for lname in [
            ("listOfParameters", "parameter"),
            ("listOfLocalParameters", "localParameter"),
        ] {
            for p in list(kl, ns, lname.0, lname.1) {
                let pe = El { n: p };
                locals.push((
                    pe.s("id").unwrap_or_default(),
                    pe.f("value")?.unwrap_or(f64::NAN),
                ));
            }
        }
    }
    let [reactants, products] = sides;
    Ok(RawRxn {
        fast: e.b("fast") == Some(true),
        id,
        reactants,
        products,
        law,
        locals,
    })
}

/// Initial assignments and rules.
#[allow(clippy::type_complexity)]
fn parse_rules(
    model: Node,
    ns: &str,
) -> Result<(Vec<(String, Option<Expr>)>, Vec<RawRule>), SbmlError> {
    let mut init = Vec::new();
    for ia in list(model, ns, "listOfInitialAssignments", "initialAssignment") {
        let sym = El { n: ia }.s("symbol").unwrap_or_default();
        let math = math_of(ia, &format!("initialAssignment '{sym}'"))?;
        init.push((sym, math));
    }
    let mut rules = Vec::new();
    let mut n_alg = 0;
    if let Some(lr) = child(model, ns, "listOfRules") {
        for r in elems(lr, ns) {
            let e = El { n: r };
            let name = r.tag_name().name();
            let var = e.s("variable").unwrap_or_default();
            match name {
                "assignmentRule" | "rateRule" => {
                    let math = math_of(r, &format!("{name} '{var}'"))?;
                    rules.push(RawRule::Variable {
                        rate: name == "rateRule",
                        variable: var,
                        math,
                    });
                }
                "algebraicRule" => {
                    let id = e
                        .s("id")
                        .or(e.s("metaid"))
                        .unwrap_or_else(|| format!("#{n_alg}"));
                    if let Some(math) = math_of(r, &format!("algebraicRule '{id}'"))? {
                        rules.push(RawRule::Algebraic { id, math });
                        n_alg += 1;
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
    Ok((init, rules))
}

/// Events: trigger, delay, priority and the assignments that have math.
fn parse_events(model: Node, ns: &str) -> Result<Vec<RawEvent>, SbmlError> {
    let mut events = Vec::new();
    for (k, ev) in list(model, ns, "listOfEvents", "event")
        .into_iter()
        .enumerate()
    {
        let e = El { n: ev };
        let id = e.s("id").unwrap_or_else(|| format!("event#{k}"));
        let ctx = format!("event '{id}'");
        let (mut trigger, mut persistent, mut initial_value) = (None, true, true);
        if let Some(t) = child(ev, ns, "trigger") {
            let te = El { n: t };
            trigger = math_of(t, &format!("trigger of {ctx}"))?;
            persistent = te.b("persistent").unwrap_or(true);
            initial_value = te.b("initialValue").unwrap_or(true);
        }
        let delay = match child(ev, ns, "delay") {
            Some(d) => math_of(d, &format!("delay of {ctx}"))?,
            None => None,
        };
        let priority = match child(ev, ns, "priority") {
            Some(d) => math_of(d, &format!("priority of {ctx}"))?,
            None => None,
        };
        let mut assigns = Vec::new();
        for ea in list(ev, ns, "listOfEventAssignments", "eventAssignment") {
            let v = El { n: ea }.s("variable").unwrap_or_default();
            if let Some(m) = math_of(ea, &format!("eventAssignment '{v}' of {ctx}"))? {
                assigns.push((v, m));
            }
        }
        events.push(RawEvent {
            id,
            trigger,
            delay,
            priority,
            persistent,
            initial_value,
            uvftt: e.b("useValuesFromTriggerTime").unwrap_or(true),
            assigns,
        });
    }
    Ok(events)
}
