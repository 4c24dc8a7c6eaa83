//! # medtwin-sbml
//!
//! Import of SBML models (Levels 2 and 3, core up to L3V2) as [`medtwin_core::OdeModel`]s, and
//! time-course simulation with events in the layout of the SBML Test Suite.
//!
//! ## Supported
//! Compartments, species (amount/concentration, `hasOnlySubstanceUnits`, boundary and constant
//! species, conversion factors), parameters, reactions with kinetic laws and local parameters,
//! constant and variable stoichiometry (species-reference ids, L2 `stoichiometryMath`), function
//! definitions (inlined), initial assignments, assignment and rate rules, algebraic rules and
//! fast reactions (solved by Newton's method), events (delay, persistence, priority,
//! `initialValue`, `useValuesFromTriggerTime`), `delay()` as a delay differential equation
//! (method of steps on a recorded dense-output history; before the start the model rests in its
//! initial condition), csymbols `time`, `avogadro` and `rateOf` (of rate-ruled symbols,
//! reaction-changed species and constants), and
//! the MathML of SBML L3V2 (§3.4): arithmetic, `root`/`log` with qualifiers, piecewise,
//! relational/logical (`implies` included), trig/hyperbolic and inverses, `min`/`max`, `rem`,
//! `quotient`, `factorial`, `ceiling`/`floor`.
//!
//! ## Hierarchical models
//! Documents using the `comp` package are flattened first (submodels with `SUBMODEL__` id
//! prefixes, external model definitions, deletions, replaced elements and `replacedBy`, ports,
//! conversion factors for values, time and extent); see [`flatten_comp`].
//!
//! ## Refused
//! Parameters, species and (L3) compartments whose initial value nothing sets (no value
//! attribute, initial assignment, assignment rule or algebraic rule) are refused with
//! [`SbmlError::Invalid`] naming every such id (as libRoadRunner refuses unset parameters);
//! [`load_sbml_with_values`] gives them values.
//!
//! As [`SbmlError::Unsupported`], naming the element and its id:
//! Level 1, required packages other than `comp`, elements of other packages inside `comp`
//! models, variable stoichiometry in `fast` reactions,
//! `delay()` in models with algebraic rules or fast reactions,
//! `rateOf` of assignment-ruled symbols or of concentrations in varying compartments, cyclic
//! assignment rules, unknown MathML elements.
//!
//! ## Evaluation
//! Every expression is resolved to value *slots* and compiled to a flat stack-machine bytecode
//! (`math::Code`); piecewise compiles to conditional jumps. The right-hand side runs one
//! topologically ordered program (assignment rules, concentrations, fluxes) then the derivatives;
//! that program is translated once more into a register-machine tape (`math::Tape`: constants
//! in registers, specialised binary arithmetic, results written straight into their slots).
//! Event triggers and output columns run only the part of the program they read.
//!
//! ## Integration ([`Method`])
//! DOPRI5 (medtwin-simulate) for non-stiff models; for stiff ones (the Jacobian's Gershgorin
//! bound × time span exceeds 10⁴ at the start, or DOPRI5 exhausts its step budget or needs
//! more than 10 steps per output interval) a variable-order BDF/NDF (orders 1–5, Shampine &
//! Reichelt 1997) with modified Newton iterations that reuse the Jacobian and the LU factors
//! over many steps (as CVODE), an analytic sparse Jacobian (forward differentiation of the
//! compiled right-hand side; column-grouped finite differences where a construct is not
//! differentiated) and a sparse LU with a minimum-degree ordering; for `delay()` the
//! method-of-steps DOPRI5 with recorded dense output. The BDF/NDF, Rosenbrock, delay stepper
//! and sparse LU are model-independent (`medtwin_simulate::{bdf, rosenbrock, dde, sparse}`);
//! this crate supplies the model's right-hand side, analytic Jacobian, delayed-value lookups
//! and tolerances to them.
//! Every method uses per-state absolute tolerances scaled like libRoadRunner's (see
//! [`SimulateOptions::atol`]).
//! The previous stiff method, a Rosenbrock method with the exact sparse Jacobian per step and
//! a step ending on every output time, remains as [`Method::Rosenbrock`]. Speed against libRoadRunner: `benchmarks/sbml_vs_roadrunner.md`.
//!
//! Time is in the model's time unit (the `_min` names of [`medtwin_core::OdeModel`] do not
//! imply minutes here).

mod ad;
mod bdf;
mod comp;
mod compile;
mod dde;
mod math;
mod model;
mod sens;
mod sim;
mod sparse;
mod stiff;

pub use model::SbmlModel;
pub use sens::{initial_sensitivities, simulate_sensitivities, SensCourse, SensOptions, SensParam};

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;
use thiserror::Error;

/// Why loading or simulating an SBML model failed.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum SbmlError {
    /// File could not be read or written.
    #[error("I/O error: {0}")]
    Io(String),
    /// The document is not well-formed XML.
    #[error("XML error: {0}")]
    Xml(String),
    /// The document is not valid SBML (unknown identifiers, missing attributes, …).
    #[error("invalid SBML: {0}")]
    Invalid(String),
    /// A construct this importer deliberately does not simulate (named with its id).
    #[error("unsupported SBML construct: {0}")]
    Unsupported(String),
    /// Bad simulation options or settings file.
    #[error("bad options: {0}")]
    Options(String),
    /// The integration failed (solver error, event cascade, time limit).
    #[error("simulation failed: {0}")]
    Simulation(String),
}

/// Read and compile an SBML file (L2 or L3 core). Initial values are computed for time 0;
/// [`simulate`] recomputes them when the start time differs.
///
/// Errors: [`SbmlError::Io`], [`SbmlError::Xml`], [`SbmlError::Invalid`],
/// [`SbmlError::Unsupported`].
pub fn load_sbml(path: impl AsRef<Path>) -> Result<SbmlModel, SbmlError> {
    load_sbml_with_values(path, &[])
}

/// [`load_sbml`] with values given for some ids before the model is checked and compiled:
/// each `(id, value)` replaces the `value` of a global parameter, the `size` of a compartment
/// or the initial value of a species (in the unit of its symbol: a concentration unless
/// `hasOnlySubstanceUnits` or in a 0-D compartment), as if the document said so. This is how a
/// model whose file leaves values unset (refused by [`load_sbml`] with their ids, as
/// libRoadRunner refuses them) is made loadable; `medtwin sbml simulate --set ID=VALUE` uses it.
///
/// Errors: those of [`load_sbml`], and [`SbmlError::Options`] for a non-finite value, an id
/// that is no compartment, species or global parameter, or an id whose initial value an
/// initial assignment, assignment rule or algebraic rule determines.
pub fn load_sbml_with_values(
    path: impl AsRef<Path>,
    values: &[(String, f64)],
) -> Result<SbmlModel, SbmlError> {
    let p = path.as_ref();
    let text =
        std::fs::read_to_string(p).map_err(|e| SbmlError::Io(format!("{}: {e}", p.display())))?;
    parse_in(&text, p.parent(), values)
}

/// Compile SBML given as text; see [`load_sbml`]. Documents using the `comp` package are
/// flattened first (external model definitions need [`load_sbml`], which knows the directory).
pub fn parse_sbml(text: &str) -> Result<SbmlModel, SbmlError> {
    parse_in(text, None, &[])
}

/// [`parse_sbml`] with values given for some ids; see [`load_sbml_with_values`].
pub fn parse_sbml_with_values(
    text: &str,
    values: &[(String, f64)],
) -> Result<SbmlModel, SbmlError> {
    parse_in(text, None, values)
}

fn parse_in(
    text: &str,
    dir: Option<&Path>,
    values: &[(String, f64)],
) -> Result<SbmlModel, SbmlError> {
    if comp::uses_comp(text) {
        let flat = comp::flatten(text, dir)?;
        return model::build(&flat, 0.0, values);
    }
    model::build(text, 0.0, values)
}

/// Flatten a document that uses the `comp` package into core SBML text (submodels instantiated
/// with `SUBMODEL__` id prefixes, deletions and replacements applied). `dir` is where external
/// model files are looked up. Documents without `comp` are returned unchanged.
pub fn flatten_comp(text: &str, dir: Option<&Path>) -> Result<String, SbmlError> {
    if comp::uses_comp(text) {
        comp::flatten(text, dir)
    } else {
        Ok(text.to_string())
    }
}

/// Options of a time course (SBML Test Suite settings, §"settings file" of the suite README).
#[derive(Debug, Clone, PartialEq)]
pub struct SimulateOptions {
    /// Start time (model time units).
    pub start: f64,
    /// End time (model time units), `>= start`.
    pub end: f64,
    /// Number of output intervals: the table has `steps + 1` rows.
    pub steps: usize,
    /// Output columns (SBML ids) after `time`; `None` = all species then non-constant
    /// parameters and compartments.
    pub vars: Option<Vec<String>>,
    /// Species to report as amounts (amount = concentration × compartment size if needed).
    pub amount: Vec<String>,
    /// Species to report as concentrations.
    pub concentration: Vec<String>,
    /// Integrator relative tolerance (DOPRI5).
    pub rtol: f64,
    /// Integrator absolute tolerance, scaled per state as libRoadRunner scales CVODE's: a
    /// state's tolerance is `atol` times its initial magnitude (species are integrated as
    /// amounts) or, for a species starting at zero, times its compartment's size, never more
    /// than `atol` (so tiny compartments and nanomolar values in molar units are resolved).
    pub atol: f64,
    /// Integration method.
    pub method: Method,
    /// Largest integration step (model time units), for every method; `None`: no limit beyond
    /// the integrators' own (DOPRI5: the output interval; BDF: the span). Short pulses written
    /// as piecewise functions of time (stimulus currents of cardiac cell models) are stepped
    /// over unless the step is limited to a fraction of the pulse width.
    pub max_step: Option<f64>,
}

/// Integration method of [`simulate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Method {
    /// DOPRI5 unless the model looks stiff at the start (Gershgorin bound of the Jacobian ×
    /// time span above 10⁴), then the variable-order BDF ([`Method::Stiff`]); DOPRI5 also hands
    /// over to the BDF when it gives up (step budget, step-size underflow) or needs more than
    /// 10 steps per output interval (over 500 steps since the start or the last event).
    #[default]
    Auto,
    /// Explicit Dormand–Prince 5(4) (medtwin-simulate's `Dopri5`).
    Explicit,
    /// Variable-order (1–5) BDF/NDF (Shampine & Reichelt 1997) with modified Newton iterations
    /// that reuse the Jacobian and the sparse LU of `I − c·J` over many steps (as CVODE,
    /// Hindmarsh et al. 2005): for stiff reaction networks.
    Stiff,
    /// Linearly implicit 4th-order Rosenbrock method (Shampine 1982) with the exact sparse
    /// Jacobian (analytic where the model is differentiable) at every step and a step ending on
    /// every output time (the previous stiff method; kept for comparison: the BDF is faster at
    /// tight tolerances).
    Rosenbrock,
}

impl Default for SimulateOptions {
    /// 0 to 10 in 100 steps, all variables, rtol 1e-10, atol 1e-12, automatic method, no
    /// maximum step.
    fn default() -> Self {
        SimulateOptions {
            start: 0.0,
            end: 10.0,
            steps: 100,
            vars: None,
            amount: Vec::new(),
            concentration: Vec::new(),
            rtol: 1e-10,
            atol: 1e-12,
            method: Method::Auto,
            max_step: None,
        }
    }
}

/// Comparison tolerances of a test-suite settings file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerances {
    /// `absolute` of the settings file.
    pub absolute: f64,
    /// `relative` of the settings file.
    pub relative: f64,
}

/// A simulation result: `header[0] == "time"`, then one column per variable; each row has
/// `header.len()` values.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Table {
    /// Column names.
    pub header: Vec<String>,
    /// Rows of values, one per output time.
    pub rows: Vec<Vec<f64>>,
}

fn split_ids(s: &str) -> Vec<String> {
    s.split(',')
        .map(|x| x.trim().to_string())
        .filter(|x| !x.is_empty())
        .collect()
}

/// Parse a test-suite settings file (`CASE-settings.txt`: `start`, `duration`, `steps`,
/// `variables`, `absolute`, `relative`, `amount`, `concentration`) into options plus the
/// comparison tolerances. The integrator tolerances are set well inside the comparison band:
/// rtol = min(1e-10, relative·1e-6), atol = min(1e-12, absolute·1e-6).
///
/// Errors: [`SbmlError::Io`], [`SbmlError::Options`] for missing or malformed keys.
pub fn read_settings_with_tolerances(
    path: impl AsRef<Path>,
) -> Result<(SimulateOptions, Tolerances), SbmlError> {
    let p = path.as_ref();
    let text =
        std::fs::read_to_string(p).map_err(|e| SbmlError::Io(format!("{}: {e}", p.display())))?;
    let mut o = SimulateOptions::default();
    let (mut start, mut duration, mut steps) = (None, None, None);
    let mut tol = Tolerances {
        absolute: 1e-10,
        relative: 1e-4,
    };
    let num = |k: &str, v: &str| -> Result<f64, SbmlError> {
        v.trim()
            .parse::<f64>()
            .map_err(|_| SbmlError::Options(format!("settings: bad {k} '{v}'")))
    };
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let k = k.trim();
        match k {
            "start" => start = Some(num(k, v)?),
            "duration" => duration = Some(num(k, v)?),
            "steps" => steps = Some(num(k, v)? as usize),
            "variables" => o.vars = Some(split_ids(v)),
            "absolute" => tol.absolute = num(k, v)?,
            "relative" => tol.relative = num(k, v)?,
            "amount" => o.amount = split_ids(v),
            "concentration" => o.concentration = split_ids(v),
            _ => {}
        }
    }
    o.start = start.ok_or_else(|| SbmlError::Options("settings: no start".into()))?;
    o.end = o.start + duration.ok_or_else(|| SbmlError::Options("settings: no duration".into()))?;
    o.steps = steps.ok_or_else(|| SbmlError::Options("settings: no steps".into()))?;
    o.rtol = (tol.relative * 1e-6).clamp(1e-12, 1e-10);
    o.atol = (tol.absolute * 1e-6).clamp(1e-20, 1e-12);
    Ok((o, tol))
}

/// Parse a test-suite settings file; see [`read_settings_with_tolerances`].
pub fn read_settings(path: impl AsRef<Path>) -> Result<SimulateOptions, SbmlError> {
    read_settings_with_tolerances(path).map(|(o, _)| o)
}

/// Simulate a time course from `opts.start` to `opts.end` with `opts.steps + 1` output rows,
/// handling rules and events (SBML L3V2 §4.12). Species columns are in the model's own units
/// unless listed in `opts.amount` / `opts.concentration`.
///
/// Errors: [`SbmlError::Options`] (unknown variable, bad range), [`SbmlError::Simulation`].
pub fn simulate(model: &SbmlModel, opts: &SimulateOptions) -> Result<Table, SbmlError> {
    sim::run(model, opts, &Course::default(), None)
}

/// A bolus into one state at a known time: the state (an amount for species, see
/// [`SbmlModel::state_index`]) jumps by `amount` (state units; may be negative, e.g. a sample
/// withdrawn). Events whose triggers the jump changes fire at that time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StateDose {
    /// Time of the dose (model time units), `>=` the course's start.
    pub time: f64,
    /// Index into the state vector.
    pub state: usize,
    /// Change of the state (state units).
    pub amount: f64,
}

/// What a time course adds to [`SimulateOptions`]: output times other than the uniform grid,
/// and doses into states.
#[derive(Debug, Clone, Copy, Default)]
pub struct Course<'a> {
    /// Output times (sorted, each `>= opts.start`; repeats allowed); `None`: the grid of
    /// `opts.start`, `opts.end`, `opts.steps`. With `Some`, `opts.end` and `opts.steps` are
    /// ignored.
    pub times: Option<&'a [f64]>,
    /// Doses, in any order. At a time that is also an output time the row is recorded before
    /// the dose (the NONMEM convention: a level at dose time is a trough).
    pub doses: &'a [StateDose],
}

/// [`simulate`] at chosen output times with doses into states: the time course of a twin's
/// plan. Rows: one per output time, in order.
///
/// Errors: [`SbmlError::Options`] (unsorted or early output times, a dose into a state that
/// does not exist, non-finite values), [`SbmlError::Simulation`].
pub fn simulate_course(
    model: &SbmlModel,
    opts: &SimulateOptions,
    course: &Course,
) -> Result<Table, SbmlError> {
    sim::run(model, opts, course, None)
}

/// [`simulate_course`] that gives up with [`SbmlError::Simulation`] ("time limit exceeded")
/// once `deadline` has passed: for fits, where some parameter vectors make a model very slow.
pub fn simulate_course_with_deadline(
    model: &SbmlModel,
    opts: &SimulateOptions,
    course: &Course,
    deadline: Instant,
) -> Result<Table, SbmlError> {
    sim::run(model, opts, course, Some(deadline))
}

/// [`simulate`] that gives up with [`SbmlError::Simulation`] once `deadline` has passed.
pub fn simulate_with_deadline(
    model: &SbmlModel,
    opts: &SimulateOptions,
    deadline: Instant,
) -> Result<Table, SbmlError> {
    sim::run(model, opts, &Course::default(), Some(deadline))
}

fn fmt_num(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "INF".into()
    } else if v == f64::NEG_INFINITY {
        "-INF".into()
    } else {
        format!("{v}")
    }
}

/// Render a table as CSV text (header line, then one line per row; NaN/INF/-INF spelled as in
/// the test suite).
pub fn to_csv(table: &Table) -> String {
    let mut s = table.header.join(",");
    s.push('\n');
    for r in &table.rows {
        let line: Vec<String> = r.iter().map(|v| fmt_num(*v)).collect();
        s.push_str(&line.join(","));
        s.push('\n');
    }
    s
}

/// Write a table as CSV (see [`to_csv`]). Errors: [`SbmlError::Io`].
pub fn write_csv(table: &Table, path: impl AsRef<Path>) -> Result<(), SbmlError> {
    let p = path.as_ref();
    std::fs::write(p, to_csv(table)).map_err(|e| SbmlError::Io(format!("{}: {e}", p.display())))
}

impl SbmlModel {
    /// Index in the [`medtwin_core::OdeModel`] state vector of the quantity `id` (a species —
    /// its amount when the species is integrated in amount units behind a concentration
    /// symbol —, a parameter or compartment changed by rate rules or events), or `None` when
    /// `id` is not a state (constant, assignment-ruled or unknown). This is where dosing
    /// events from a [`medtwin_core::Timeline`] add their amounts.
    pub fn state_index(&self, id: &str) -> Option<usize> {
        let &sl = self.ids.get(id)?;
        let target = self.slots[sl].hidden.unwrap_or(sl);
        self.state_slots.iter().position(|&s| s == target)
    }

    /// Ids of the model's global parameters declared constant, in document order: the values a
    /// calibration may estimate or a PEtab condition may set ([`SbmlModel::set_value`]).
    pub fn parameter_ids(&self) -> Vec<String> {
        use model::Kind;
        self.slots
            .iter()
            .filter(|s| s.kind == Kind::Parameter && s.constant)
            .map(|s| s.id.clone())
            .collect()
    }

    /// Current value of `id` (parameter, compartment, species in its own units) at the
    /// initial time, after initial assignments and rules; `None` for unknown ids.
    pub fn value(&self, id: &str) -> Option<f64> {
        self.ids.get(id).map(|&sl| self.base[sl])
    }

    /// Set the value of parameter, compartment or species `id` (species: in the unit of its
    /// symbol, a concentration unless `hasOnlySubstanceUnits`) and recompute everything
    /// derived from it at the initial time (initial assignments, assignment rules, amounts of
    /// concentration species), as a PEtab condition or a calibration step does.
    ///
    /// Errors ([`SbmlError::Options`]): unknown id, a non-finite value, or an id whose initial
    /// value an initial assignment or assignment rule determines (the set value would be
    /// overwritten).
    pub fn set_value(&mut self, id: &str, value: f64) -> Result<(), SbmlError> {
        let &sl = self.ids.get(id).ok_or_else(|| {
            SbmlError::Options(format!(
                "unknown id '{id}': no such parameter, compartment or species"
            ))
        })?;
        if !value.is_finite() {
            return Err(SbmlError::Options(format!(
                "value of '{id}' must be finite, got {value}"
            )));
        }
        if self.declared_init.contains(&sl) {
            let code = math::Code::compile(&math::RExpr::Num(value));
            if let Some(entry) = self.init_prog.iter_mut().find(|(s, _)| *s == sl) {
                entry.1 = code;
            }
        } else if self.init_prog.iter().any(|(s, _)| *s == sl) {
            return Err(SbmlError::Options(format!(
                "'{id}' is set by an initial assignment or assignment rule; set the quantities it depends on instead"
            )));
        }
        self.base[sl] = value;
        let t0 = self.init_time;
        self.compute_initial(t0);
        Ok(())
    }

    /// Species ids in document order.
    pub fn species_ids(&self) -> &[String] {
        &self.species_ids
    }

    /// Variables reported when no list is given: species, then non-constant compartments and
    /// parameters.
    pub fn default_variables(&self) -> Vec<String> {
        use model::Kind;
        let mut v = self.species_ids.clone();
        for s in &self.slots {
            if matches!(s.kind, Kind::Compartment | Kind::Parameter) && !s.constant {
                v.push(s.id.clone());
            }
        }
        v
    }
}

/// Human-readable summary: level/version, counts, species with initial values, parameters,
/// rules, events and notes about ignored constructs.
pub fn info(m: &SbmlModel) -> String {
    use model::Kind;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "model '{}' (SBML Level {} Version {})",
        m.model_id, m.level, m.version
    );
    let count = |k: Kind| m.slots.iter().filter(|x| x.kind == k).count();
    let _ = writeln!(
        s,
        "compartments: {}, species: {}, parameters: {}, reactions: {}, function definitions: {}",
        count(Kind::Compartment),
        count(Kind::Species),
        count(Kind::Parameter),
        m.n_reactions,
        m.n_function_defs
    );
    let _ = writeln!(
        s,
        "initial assignments: {}, assignment rules: {}, rate rules: {}, events: {}, ODE states: {}",
        m.n_initial_assignments,
        m.n_assignment_rules,
        m.n_rate_rules,
        m.events.len(),
        m.state_slots.len()
    );
    let _ = writeln!(s, "species:");
    for id in &m.species_ids {
        let sl = &m.slots[m.ids[id]];
        let comp = sl.comp.map(|c| m.slots[c].id.clone()).unwrap_or_default();
        let unit = if sl.amount_units {
            "amount"
        } else {
            "concentration"
        };
        let _ = writeln!(
            s,
            "  {id} in {comp}: initial {} ({unit}){}",
            m.base[m.ids[id]],
            if sl.constant { ", constant" } else { "" }
        );
    }
    let _ = writeln!(s, "parameters:");
    for x in m.slots.iter().filter(|x| x.kind == Kind::Parameter) {
        let _ = writeln!(
            s,
            "  {} = {}{}",
            x.id,
            m.base[m.ids[&x.id]],
            if x.constant { "" } else { " (variable)" }
        );
    }
    if !m.events.is_empty() {
        let _ = writeln!(s, "events:");
        for e in &m.events {
            let _ = writeln!(
                s,
                "  {}: {} assignment(s){}{}{}",
                e.id,
                e.assigns.len(),
                if e.delay.is_some() { ", delayed" } else { "" },
                if e.priority.is_some() {
                    ", prioritised"
                } else {
                    ""
                },
                if e.persistent { "" } else { ", non-persistent" }
            );
        }
    }
    for n in &m.notes {
        let _ = writeln!(s, "note: {n}");
    }
    let _ = writeln!(
        s,
        "not supported by medtwin (refused at load with the element and id named): delay() together with algebraic rules \
         or fast reactions, required packages other than comp, variable stoichiometry in fast reactions, rateOf of assignment-rule \
         targets, SBML Level 1"
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODEL: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<sbml xmlns="http://www.sbml.org/sbml/level3/version2/core" level="3" version="2">
  <model id="decay">
    <listOfCompartments><compartment id="c" size="2" constant="true" spatialDimensions="3"/></listOfCompartments>
    <listOfSpecies>
      <species id="A" compartment="c" initialConcentration="1" hasOnlySubstanceUnits="false" boundaryCondition="false" constant="false"/>
    </listOfSpecies>
    <listOfParameters><parameter id="k" value="0.5" constant="false"/></listOfParameters>
    <listOfReactions>
      <reaction id="r" reversible="false">
        <listOfReactants><speciesReference species="A" stoichiometry="1" constant="true"/></listOfReactants>
        <kineticLaw><math xmlns="http://www.w3.org/1998/Math/MathML">
          <apply><times/><ci>k</ci><ci>A</ci><ci>c</ci></apply></math></kineticLaw>
      </reaction>
    </listOfReactions>
    <listOfEvents>
      <event id="e" useValuesFromTriggerTime="true">
        <trigger initialValue="false" persistent="true"><math xmlns="http://www.w3.org/1998/Math/MathML">
          <apply><geq/><csymbol definitionURL="http://www.sbml.org/sbml/symbols/time">t</csymbol><cn>1</cn></apply></math></trigger>
        <listOfEventAssignments><eventAssignment variable="k"><math xmlns="http://www.w3.org/1998/Math/MathML"><cn>0</cn></math></eventAssignment></listOfEventAssignments>
      </event>
    </listOfEvents>
  </model>
</sbml>"#;

    #[test]
    fn decay_with_event_matches_closed_form() {
        let m = parse_sbml(MODEL).unwrap();
        let opts = SimulateOptions {
            end: 2.0,
            steps: 4,
            vars: Some(vec!["A".into(), "k".into()]),
            amount: vec!["A".into()],
            ..Default::default()
        };
        let t = simulate(&m, &opts).unwrap();
        assert_eq!(t.header, vec!["time", "A", "k"]);
        assert_eq!(t.rows.len(), 5);
        // amount 2·exp(-0.5 t) until t = 1, then constant.
        for row in &t.rows {
            let expected = 2.0 * (-0.5 * row[0].min(1.0)).exp();
            assert!((row[1] - expected).abs() < 1e-8, "{row:?}");
        }
        assert_eq!(t.rows[4][2], 0.0);
        assert!(to_csv(&t).starts_with("time,A,k\n0,2,0.5\n"));
        assert!(info(&m).contains("species: 1"));
    }

    #[test]
    fn endless_event_cascade_is_an_error_naming_the_event() {
        // `flip` and `flop` re-trigger each other at the same time point forever.
        let ev = |id: &str, rel: &str, v: i32| {
            format!(
                r#"<event id="{id}" useValuesFromTriggerTime="true"><trigger initialValue="false" persistent="true">
  <math xmlns="http://www.w3.org/1998/Math/MathML"><apply><{rel}/><ci>x</ci><cn>0</cn></apply></math></trigger>
  <listOfEventAssignments><eventAssignment variable="x"><math xmlns="http://www.w3.org/1998/Math/MathML"><cn>{v}</cn></math>
  </eventAssignment></listOfEventAssignments></event>"#
            )
        };
        let doc = format!(
            r#"<sbml xmlns="http://www.sbml.org/sbml/level3/version2/core" level="3" version="2">
  <model id="m"><listOfParameters><parameter id="x" value="-1" constant="false"/></listOfParameters>
  <listOfRules><rateRule variable="x"><math xmlns="http://www.w3.org/1998/Math/MathML"><cn>1</cn></math></rateRule></listOfRules>
  <listOfEvents>{}{}</listOfEvents></model></sbml>"#,
            ev("flip", "gt", -1),
            ev("flop", "lt", 1)
        );
        let m = parse_sbml(&doc).unwrap();
        match simulate(&m, &SimulateOptions::default()) {
            Err(SbmlError::Simulation(msg)) => assert!(
                msg.contains("does not terminate at t = 0")
                    && (msg.contains("'flip'") || msg.contains("'flop'")),
                "{msg}"
            ),
            other => panic!("expected a simulation error, got {other:?}"),
        }
    }

    #[test]
    fn values_nothing_sets_are_refused_with_their_ids() {
        let doc = |extra: &str| {
            format!(
                r#"<sbml xmlns="http://www.sbml.org/sbml/level3/version2/core" level="3" version="2">
  <model id="m"><listOfCompartments><compartment id="c" size="1" constant="true"/>
    <compartment id="nosize" spatialDimensions="3" constant="true"/></listOfCompartments>
  <listOfSpecies><species id="s" compartment="c" hasOnlySubstanceUnits="false" boundaryCondition="false" constant="false"/>
  </listOfSpecies>
  <listOfParameters><parameter id="k" constant="true"/><parameter id="q" constant="false"/>
    <parameter id="set" value="2" constant="true"/></listOfParameters>
  <listOfRules><rateRule variable="q"><math xmlns="http://www.w3.org/1998/Math/MathML"><ci>k</ci></math></rateRule></listOfRules>
  {extra}</model></sbml>"#
            )
        };
        match parse_sbml(&doc("")) {
            Err(SbmlError::Invalid(msg)) => {
                for id in [
                    "compartment 'nosize'",
                    "species 's'",
                    "parameter 'k'",
                    "parameter 'q'",
                ] {
                    assert!(msg.contains(id), "{id} not named in: {msg}");
                }
                assert!(!msg.contains("'set'"), "{msg}");
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
        // Initial assignments (and assignment rules) set them.
        let ia = |id: &str| {
            format!(
                r#"<initialAssignment symbol="{id}"><math xmlns="http://www.w3.org/1998/Math/MathML"><ci>set</ci></math></initialAssignment>"#
            )
        };
        let all = format!(
            "<listOfInitialAssignments>{}{}{}{}</listOfInitialAssignments>",
            ia("nosize"),
            ia("s"),
            ia("k"),
            ia("q")
        );
        let m = parse_sbml(&doc(&all)).unwrap();
        let t = simulate(&m, &SimulateOptions::default()).unwrap();
        assert_eq!(t.rows[0][1], 2.0);
    }

    #[test]
    fn given_values_make_unset_ids_loadable() {
        let doc = r#"<sbml xmlns="http://www.sbml.org/sbml/level3/version2/core" level="3" version="2">
  <model id="m"><listOfCompartments><compartment id="c" spatialDimensions="3" constant="true"/></listOfCompartments>
  <listOfSpecies><species id="s" compartment="c" hasOnlySubstanceUnits="false" boundaryCondition="false" constant="false"/>
    <species id="a" compartment="c" initialAmount="1" hasOnlySubstanceUnits="true" boundaryCondition="false" constant="false"/>
  </listOfSpecies>
  <listOfParameters><parameter id="k" constant="true"/><parameter id="r" constant="true"/>
    <parameter id="set" value="2" constant="true"/></listOfParameters>
  <listOfInitialAssignments><initialAssignment symbol="r"><math xmlns="http://www.w3.org/1998/Math/MathML"><ci>set</ci></math></initialAssignment></listOfInitialAssignments>
  <listOfRules><rateRule variable="s"><math xmlns="http://www.w3.org/1998/Math/MathML"><ci>k</ci></math></rateRule></listOfRules>
  </model></sbml>"#;
        let v = |pairs: &[(&str, f64)]| -> Vec<(String, f64)> {
            pairs.iter().map(|(k, x)| (k.to_string(), *x)).collect()
        };
        // Still refused naming what is left unset.
        match parse_sbml_with_values(doc, &v(&[("c", 2.0), ("s", 3.0)])) {
            Err(SbmlError::Invalid(msg)) => {
                assert!(msg.contains("parameter 'k'"), "{msg}");
                assert!(!msg.contains("'c'") && !msg.contains("'s'"), "{msg}");
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
        // All given: s is a concentration 3 in c = 2 (amount 6) rising at k = 0.5 per unit time;
        // the given value of a set one (a) replaces it.
        let m = parse_sbml_with_values(doc, &v(&[("c", 2.0), ("s", 3.0), ("k", 0.5), ("a", 7.0)]))
            .unwrap();
        let opts = SimulateOptions {
            end: 2.0,
            steps: 2,
            vars: Some(vec!["s".into(), "a".into(), "c".into()]),
            amount: vec!["s".into()],
            ..Default::default()
        };
        let t = simulate(&m, &opts).unwrap();
        assert_eq!(t.rows[0][1..], [6.0, 7.0, 2.0]);
        assert!(
            (t.rows[2][1] - 2.0 * (3.0 + 0.5 * 2.0)).abs() < 1e-9,
            "{:?}",
            t.rows
        );
        // Unknown ids, ids an initial assignment sets, and non-finite values are refused.
        for (pairs, what) in [
            (v(&[("nope", 1.0)]), "'nope'"),
            (v(&[("r", 1.0)]), "initial assignment"),
            (v(&[("k", f64::NAN)]), "finite"),
        ] {
            match parse_sbml_with_values(doc, &pairs) {
                Err(SbmlError::Options(msg)) => assert!(msg.contains(what), "{msg}"),
                other => panic!("{pairs:?}: expected Options, got {other:?}"),
            }
        }
    }

    #[test]
    fn delay_equation_matches_method_of_steps() {
        // dx/dt = -0.5·x(t-1), x = 1 before the start: x = 1 - t/2 on [0, 1], then
        // x = 1/2 - ((t-1) - (t-1)²/4)/2 on [1, 2].
        let m = parse_sbml(
            r#"<sbml xmlns="http://www.sbml.org/sbml/level3/version2/core" level="3" version="2">
  <model id="dde"><listOfParameters><parameter id="x" value="1" constant="false"/></listOfParameters>
  <listOfRules><rateRule variable="x"><math xmlns="http://www.w3.org/1998/Math/MathML">
    <apply><times/><cn>-0.5</cn><apply><csymbol definitionURL="http://www.sbml.org/sbml/symbols/delay">delay</csymbol>
    <ci>x</ci><cn>1</cn></apply></apply></math></rateRule></listOfRules></model></sbml>"#,
        )
        .unwrap();
        let opts = SimulateOptions {
            end: 2.0,
            steps: 8,
            ..Default::default()
        };
        let t = simulate(&m, &opts).unwrap();
        for row in &t.rows {
            let s = row[0];
            let exact = if s <= 1.0 {
                1.0 - 0.5 * s
            } else {
                0.5 - 0.5 * ((s - 1.0) - 0.25 * (s - 1.0).powi(2))
            };
            assert!((row[1] - exact).abs() < 1e-8, "{row:?} vs {exact}");
        }
    }

    #[test]
    fn unsupported_is_named() {
        // delay() together with an algebraic rule is refused, naming the variable.
        let bad = r#"<sbml xmlns="http://www.sbml.org/sbml/level3/version2/core" level="3" version="2">
  <model id="m"><listOfParameters><parameter id="k" constant="false"/><parameter id="q" value="1" constant="false"/></listOfParameters>
  <listOfRules><rateRule variable="q"><math xmlns="http://www.w3.org/1998/Math/MathML"><cn>1</cn></math></rateRule>
  <algebraicRule><math xmlns="http://www.w3.org/1998/Math/MathML"><apply><minus/><ci>k</ci>
    <apply><csymbol definitionURL="http://www.sbml.org/sbml/symbols/delay">delay</csymbol><ci>q</ci><cn>1</cn></apply></apply>
  </math></algebraicRule></listOfRules></model></sbml>"#;
        match parse_sbml(bad) {
            Err(SbmlError::Unsupported(msg)) => {
                assert!(msg.contains("delay") && msg.contains("'k'"), "{msg}")
            }
            other => panic!("expected Unsupported, got {other:?}"),
        }
    }

    #[test]
    fn comp_submodels_are_flattened_with_replacements() {
        // Two instances of one definition; the parent's k replaces the first instance's k, and
        // the second instance's time runs 2x slower (timeConversionFactor).
        let doc = r#"<sbml xmlns="http://www.sbml.org/sbml/level3/version1/core"
  xmlns:comp="http://www.sbml.org/sbml/level3/version1/comp/version1" level="3" version="1" comp:required="true">
  <model id="top">
    <listOfParameters>
      <parameter id="k" value="3" constant="true">
        <comp:listOfReplacedElements><comp:replacedElement comp:submodelRef="A" comp:portRef="k_port"/></comp:listOfReplacedElements>
      </parameter>
      <parameter id="two" value="2" constant="true"/>
    </listOfParameters>
    <comp:listOfSubmodels>
      <comp:submodel comp:id="A" comp:modelRef="growth"/>
      <comp:submodel comp:id="B" comp:modelRef="growth" comp:timeConversionFactor="two"/>
    </comp:listOfSubmodels>
  </model>
  <comp:listOfModelDefinitions>
    <comp:modelDefinition id="growth">
      <listOfParameters>
        <parameter id="k" value="1" constant="true"/>
        <parameter id="x" value="0" constant="false"/>
      </listOfParameters>
      <listOfRules><rateRule variable="x"><math xmlns="http://www.w3.org/1998/Math/MathML"><ci>k</ci></math></rateRule></listOfRules>
      <comp:listOfPorts><comp:port comp:id="k_port" comp:idRef="k"/></comp:listOfPorts>
    </comp:modelDefinition>
  </comp:listOfModelDefinitions>
</sbml>"#;
        let flat = flatten_comp(doc, None).unwrap();
        assert!(!flat.contains("A__k\""), "{flat}");
        let m = parse_sbml(doc).unwrap();
        let opts = SimulateOptions {
            end: 2.0,
            steps: 2,
            vars: Some(vec!["A__x".into(), "B__x".into(), "B__k".into()]),
            ..Default::default()
        };
        let t = simulate(&m, &opts).unwrap();
        let last = &t.rows[2];
        assert!((last[1] - 6.0).abs() < 1e-9, "{last:?}");
        assert!((last[2] - 1.0).abs() < 1e-9, "{last:?}");
        assert_eq!(last[3], 1.0);
    }

    #[test]
    fn register_tape_matches_stack_bytecode_on_suite_models() {
        // Every suite model (when the suite is present): the derived program evaluated by the
        // register tape equals the stack bytecode, at the initial state and at a perturbed one.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/reference/sbml-test-suite/semantic");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            eprintln!("SBML test suite not found at {}: skipped", dir.display());
            return;
        };
        let mut checked = 0;
        for e in entries.flatten() {
            let case = e.file_name().to_string_lossy().to_string();
            let f = e.path().join(format!("{case}-sbml-l3v2.xml"));
            let Ok(m) = load_sbml(&f) else { continue };
            let Some(tape) = &m.tape else { continue };
            for scale in [1.0, 1.37] {
                let x: Vec<f64> = m.initial_state().iter().map(|v| v * scale + 0.01).collect();
                let t = 0.7;
                let mut a = m.base.clone();
                for (i, &s) in m.state_slots.iter().enumerate() {
                    a[s] = x[i];
                }
                let mut b = a.clone();
                let mut stack = Vec::new();
                for (sl, code) in &m.derived {
                    a[*sl] = code.eval(&a, t, &mut stack);
                }
                tape.run(&mut b, t);
                for (k, (va, vb)) in a.iter().zip(&b).enumerate() {
                    let same = va == vb
                        || (va.is_nan() && vb.is_nan())
                        || (va - vb).abs() <= 1e-14 * va.abs();
                    assert!(
                        same,
                        "case {case}: slot {} = {va} vs tape {vb}",
                        m.slots[k].id
                    );
                }
            }
            checked += 1;
        }
        assert!(checked > 1000, "only {checked} suite models checked");
    }

    #[test]
    fn stiff_method_matches_closed_form() {
        // A -> B (k1 = 1e4), B -> (k2 = 1): B(t) = k1/(k2-k1)·(e^{-k1 t} - e^{-k2 t}).
        let m = parse_sbml(
            r#"<sbml xmlns="http://www.sbml.org/sbml/level3/version2/core" level="3" version="2">
  <model id="stiff"><listOfCompartments><compartment id="c" size="1" constant="true"/></listOfCompartments>
  <listOfSpecies>
    <species id="A" compartment="c" initialAmount="1" hasOnlySubstanceUnits="true" boundaryCondition="false" constant="false"/>
    <species id="B" compartment="c" initialAmount="0" hasOnlySubstanceUnits="true" boundaryCondition="false" constant="false"/>
  </listOfSpecies>
  <listOfReactions>
    <reaction id="r1" reversible="false"><listOfReactants><speciesReference species="A" stoichiometry="1" constant="true"/></listOfReactants>
      <listOfProducts><speciesReference species="B" stoichiometry="1" constant="true"/></listOfProducts>
      <kineticLaw><math xmlns="http://www.w3.org/1998/Math/MathML"><apply><times/><cn>10000</cn><ci>A</ci></apply></math></kineticLaw></reaction>
    <reaction id="r2" reversible="false"><listOfReactants><speciesReference species="B" stoichiometry="1" constant="true"/></listOfReactants>
      <kineticLaw><math xmlns="http://www.w3.org/1998/Math/MathML"><ci>B</ci></math></kineticLaw></reaction>
  </listOfReactions></model></sbml>"#,
        )
        .unwrap();
        for method in [Method::Stiff, Method::Rosenbrock, Method::Auto] {
            let opts = SimulateOptions {
                end: 3.0,
                steps: 30,
                rtol: 1e-8,
                atol: 1e-12,
                method,
                ..Default::default()
            };
            let t = simulate(&m, &opts).unwrap();
            for row in &t.rows[1..] {
                let (k1, k2, s) = (1e4f64, 1.0f64, row[0]);
                let b = k1 / (k2 - k1) * ((-k1 * s).exp() - (-k2 * s).exp());
                assert!(
                    (row[2] - b).abs() < 1e-6 * b.abs(),
                    "{method:?} {row:?} vs {b}"
                );
            }
        }
    }
}
