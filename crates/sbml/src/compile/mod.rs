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
        switch_times: an.switch_times,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An L3V2 document whose `<model>` holds `body`.
    fn doc(body: &str) -> String {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<sbml xmlns="http://www.sbml.org/sbml/level3/version2/core" level="3" version="2">
<model id="m">{body}</model></sbml>"#
        )
    }

    fn math(inner: &str) -> String {
        format!(r#"<math xmlns="http://www.w3.org/1998/Math/MathML">{inner}</math>"#)
    }

    /// A → B → C by mass action in one compartment (concentration units), k1 and k2 global.
    fn chain() -> String {
        let law = |k: &str, s: &str| {
            format!(
                "<kineticLaw>{}</kineticLaw>",
                math(&format!("<apply><times/><ci>{k}</ci><ci>{s}</ci></apply>"))
            )
        };
        let rxn = |id: &str, a: &str, b: &str, k: &str| {
            format!(
                r#"<reaction id="{id}" reversible="false"><listOfReactants><speciesReference species="{a}" stoichiometry="1" constant="true"/></listOfReactants><listOfProducts><speciesReference species="{b}" stoichiometry="1" constant="true"/></listOfProducts>{}</reaction>"#,
                law(k, a)
            )
        };
        doc(&format!(
            r#"<listOfCompartments><compartment id="c" size="2" constant="true"/></listOfCompartments>
<listOfSpecies>
<species id="A" compartment="c" initialConcentration="1" hasOnlySubstanceUnits="false" boundaryCondition="false" constant="false"/>
<species id="B" compartment="c" initialConcentration="0" hasOnlySubstanceUnits="false" boundaryCondition="false" constant="false"/>
<species id="C" compartment="c" initialAmount="0" hasOnlySubstanceUnits="true" boundaryCondition="false" constant="false"/>
</listOfSpecies>
<listOfParameters><parameter id="k1" value="0.5" constant="true"/><parameter id="k2" value="0.25" constant="true"/></listOfParameters>
<listOfReactions>{}{}</listOfReactions>"#,
            rxn("R1", "A", "B", "k1"),
            rxn("R2", "B", "C", "k2")
        ))
    }

    fn err(text: &str) -> String {
        match build(text, 0.0, &[]) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn parse_reads_elements_in_document_order_without_resolving() {
        let body = format!(
            r#"<listOfParameters><parameter id="p" constant="false"/></listOfParameters>
<listOfRules><algebraicRule>{}</algebraicRule><rateRule variable="nowhere">{}</rateRule></listOfRules>
<listOfEvents><event useValuesFromTriggerTime="false"><trigger initialValue="false" persistent="false">{}</trigger></event></listOfEvents>"#,
            math("<ci>p</ci>"),
            math("<cn>1</cn>"),
            math("<true/>")
        );
        let raw = parse::parse(&doc(&body)).expect("parses: ids are not resolved yet");
        assert_eq!((raw.level, raw.version, raw.model_id.as_str()), (3, 2, "m"));
        assert_eq!(raw.parameters.len(), 1);
        assert!(raw.parameters[0].value.is_none() && !raw.parameters[0].constant);
        assert!(matches!(&raw.rules[0], parse::RawRule::Algebraic { id, .. } if id == "#0"));
        assert!(matches!(
            &raw.rules[1],
            parse::RawRule::Variable { rate: true, variable, math: Some(_) } if variable == "nowhere"
        ));
        let ev = &raw.events[0];
        assert_eq!(ev.id, "event#0");
        assert!(!ev.uvftt && !ev.persistent && !ev.initial_value && ev.trigger.is_some());
        // The unknown rule variable is the resolve stage's error, naming rule and id.
        let msg = err(&doc(&body));
        assert!(
            msg.contains("rateRule 'nowhere': unknown variable 'nowhere'"),
            "{msg}"
        );
    }

    #[test]
    fn parse_refuses_what_the_element_alone_shows() {
        let msg = err(&doc(
            r#"<listOfParameters><parameter id="p" value="1.2.3"/></listOfParameters>"#,
        ));
        assert!(
            msg.contains("attribute value='1.2.3' is not a number"),
            "{msg}"
        );
        let msg = err(&doc(
            "<listOfRules><fancyRule variable=\"x\"/></listOfRules>",
        ));
        assert!(msg.contains("rule element <fancyRule> 'x'"), "{msg}");
    }

    #[test]
    fn resolve_errors_name_the_element_and_the_id() {
        let ok = chain();
        assert!(build(&ok, 0.0, &[]).is_ok());
        let cases = [
            (
                ok.replace(
                    r#"species="B" stoichiometry"#,
                    r#"species="Q" stoichiometry"#,
                ),
                "reaction 'R1': unknown species 'Q'",
            ),
            (
                ok.replace(
                    r#"compartment="c" initialAmount"#,
                    r#"compartment="d" initialAmount"#,
                ),
                "species 'C': unknown compartment 'd'",
            ),
            (
                ok.replace(r#"<parameter id="k2""#, r#"<parameter id="k1""#),
                "duplicate identifier 'k1'",
            ),
            (
                ok.replace("<ci>k2</ci>", "<ci>k9</ci>"),
                "unknown identifier 'k9' in kineticLaw of reaction 'R2'",
            ),
            (
                ok.replace(
                    r#"species="A" stoichiometry"#,
                    r#"species="k1" stoichiometry"#,
                ),
                "reaction 'R1': 'k1' is not a species",
            ),
        ];
        for (text, want) in cases {
            let msg = err(&text);
            assert!(msg.contains(want), "wanted '{want}' in: {msg}");
        }
    }

    #[test]
    fn states_codegen_and_analysis_of_a_chain() {
        let m = build(&chain(), 0.0, &[]).expect("builds");
        // A and B (concentrations) are integrated as hidden amounts, C directly; slot order.
        let names: Vec<&str> = m
            .state_slots
            .iter()
            .map(|&s| m.slots[s].id.as_str())
            .collect();
        assert_eq!(names, ["amount(A)", "amount(B)", "C"]);
        // Initial values: amount(A) = 1 × 2, concentration B = 0, fluxes k·[S].
        let v = |id: &str| m.base[m.slots.iter().position(|s| s.id == id).unwrap()];
        assert_eq!(
            (v("amount(A)"), v("A"), v("R1"), v("R2")),
            (2.0, 1.0, 0.5, 0.0)
        );
        // Jacobian pattern: d amount(A) reads A only; d amount(B) reads A and B; dC reads B
        // (each through the concentration = amount / size of the derived program).
        let rows = m
            .jac_rows
            .as_ref()
            .expect("pattern known without algebraic rules");
        assert_eq!(rows, &vec![vec![0], vec![0, 1], vec![1]]);
        // Constant stoichiometry, no conversion factors: one sparse product.
        let (ptr, _, coef) = m.flat_derivs.as_ref().expect("flat derivatives");
        assert_eq!(ptr, &vec![0, 1, 3, 4]);
        assert_eq!(coef, &vec![-1.0, 1.0, -1.0, 1.0]);
        assert!(!m.time_dependent && m.tape.is_some());
    }

    #[test]
    fn analyse_refuses_cyclic_assignment_rules_naming_a_symbol() {
        let body = format!(
            r#"<listOfParameters><parameter id="a" constant="false"/><parameter id="b" constant="false"/></listOfParameters>
<listOfRules><assignmentRule variable="a">{}</assignmentRule><assignmentRule variable="b">{}</assignmentRule></listOfRules>"#,
            math("<ci>b</ci>"),
            math("<ci>a</ci>")
        );
        let msg = err(&doc(&body));
        assert!(
            msg.contains("cyclic dependency (assignment rules / kinetic laws)"),
            "{msg}"
        );
        assert!(msg.contains("'a'") || msg.contains("'b'"), "{msg}");
    }

    #[test]
    fn delay_operands_are_numbered_the_same_on_every_build() {
        let mut params = String::from(r#"<parameter id="x" value="1" constant="false"/>"#);
        let mut rules = format!(
            r#"<rateRule variable="x">{}</rateRule>"#,
            math("<cn>1</cn>")
        );
        for k in 1..=6 {
            params.push_str(&format!(r#"<parameter id="d{k}" constant="false"/>"#));
            let delayed = format!(
                r#"<apply><csymbol encoding="text" definitionURL="http://www.sbml.org/sbml/symbols/delay">delay</csymbol><apply><times/><cn>{k}</cn><ci>x</ci></apply><cn>{k}</cn></apply>"#
            );
            rules.push_str(&format!(
                r#"<assignmentRule variable="d{k}">{}</assignmentRule>"#,
                math(&delayed)
            ));
        }
        let text = doc(&format!(
            "<listOfParameters>{params}</listOfParameters><listOfRules>{rules}</listOfRules>"
        ));
        let first = build(&text, 0.0, &[]).expect("builds");
        assert_eq!(first.delays.len(), 6);
        for _ in 0..20 {
            let m = build(&text, 0.0, &[]).expect("builds");
            assert_eq!(format!("{:?}", m.derived), format!("{:?}", first.derived));
            assert_eq!(format!("{:?}", m.delays), format!("{:?}", first.delays));
        }
    }
}
