//! The SBML compiler: SBML text to a compiled [`SbmlModel`], in four stages with an explicit
//! intermediate representation between them:
//!
//! 1. [`parse`]: XML → [`parse::RawModel`] (ids as strings, MathML as [`crate::math::Expr`]
//!    trees; checks that need only the element at hand);
//! 2. [`resolve`]: ids → value slots ([`resolve::Symbols`]: rules, assignments, events and
//!    reaction terms keyed by slot; expressions resolved to slot-addressed
//!    [`crate::math::RExpr`]s on demand), then [`states`]: which equation determines which
//!    unknown ([`states::Unknowns`]: algebraic rules matched, the fast subsystem, the ODE state,
//!    values nothing sets refused);
//! 3. [`codegen`]: expressions compiled to bytecode ([`codegen::Programs`]: derived and
//!    initial-value programs in dependency order, derivatives, events, delayed expressions);
//! 4. [`analyse`]: dependency order, structural Jacobian pattern, time dependence, the flat
//!    stoichiometry form and the register tape ([`analyse::Analysis`]).
//!
//! [`build`] runs them and assembles the [`SbmlModel`].

mod analyse;
mod codegen;
mod parse;
mod resolve;
mod states;

use crate::math::Code;
use crate::model::SbmlModel;
use crate::SbmlError;
use std::cell::RefCell;
use std::collections::HashMap;

/// Parse SBML text into a compiled model. `init_time` is the time at which initial assignments
/// are evaluated (the simulation start). `values` replace the value attributes of the
/// compartments, species (in the unit of their symbol) and parameters they name, before values
/// nothing sets are refused (see [`crate::load_sbml_with_values`]).
///
/// Errors: [`SbmlError::Options`] for a non-finite given value (and see
/// [`states::determine_unknowns`]); otherwise those of the stages ([`SbmlError::Xml`],
/// [`SbmlError::Invalid`], [`SbmlError::Unsupported`]), naming the element and id.
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
    let mut sy = resolve::resolve_symbols(raw, &given)?;
    // Operands of delay(), numbered in the order the resolver meets them.
    let delay_exprs = RefCell::new(Vec::new());
    let un = states::determine_unknowns(&mut sy, &delay_exprs, values)?;
    let pr = codegen::compile(&sy, &un, &delay_exprs)?;
    let an = analyse::analyse(&sy, &un, &pr);
    let mut m = SbmlModel {
        time_dependent: an.time_dependent,
        level: sy.level,
        version: sy.version,
        model_id: sy.model_id,
        slots: sy.slots,
        ids: sy.ids,
        base: sy.attr_val,
        init_prog: pr.init_prog,
        declared_init: pr.declared_init,
        tape: an.tape,
        stiff_cache: std::sync::OnceLock::new(),
        derived: pr.derived,
        alg_vars: un.alg_vars,
        alg_res: un.alg_res.iter().map(Code::compile).collect(),
        state_slots: un.state_slots,
        derivs: pr.derivs,
        flat_derivs: an.flat_derivs,
        events: pr.events,
        delays: pr.delays,
        jac_rows: an.jac_rows,
        info: an.info,
        n_assignment_rules: sy.assign_rules.len(),
        n_rate_rules: sy.rate_rules.len(),
        n_initial_assignments: sy.init_assign.len(),
        n_function_defs: sy.fns.len(),
        n_reactions: sy.rxns.len(),
        notes: sy.notes,
        init_time,
        species_ids: an.species_ids,
    };
    m.compute_initial(init_time);
    if m.delays.is_empty() && !m.state_slots.is_empty() {
        // The stiff solver's structures are part of compiling the model (timed as load).
        crate::bdf::StiffStructures::prepare(&m);
    }
    Ok(m)
}
