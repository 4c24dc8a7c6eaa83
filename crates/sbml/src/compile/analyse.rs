//! Stage 4, **analyse**: structure read off the compiled model: the dependency order of a
//! program ([`topo`], used by stage 3), the structural Jacobian pattern, whether the
//! right-hand side reads time, whether the derivatives are one sparse stoichiometry × flux
//! product, the register-machine tape of the derived program, and the model description.

use super::codegen::Programs;
use super::resolve::Symbols;
use super::states::Unknowns;
use crate::math::{Code, RExpr, Tape};
use crate::model::{Deriv, Slot, Stoich};
use crate::SbmlError;
use medtwin_core::{ModelInfo, VariableInfo};
use std::collections::{HashMap, HashSet};

/// What [`analyse`] finds.
pub(crate) struct Analysis {
    /// Per state: the states its derivative depends on (None: unknown, treat as dense).
    pub jac_rows: Option<Vec<Vec<usize>>>,
    /// Whether the right-hand side reads `time`.
    pub time_dependent: bool,
    /// The derivatives as a CSR stoichiometry matrix (ptr, flux slots, coefficients) when
    /// every one is a sum of constant-stoichiometry terms without conversion factors.
    pub flat_derivs: Option<(Vec<u32>, Vec<u32>, Vec<f64>)>,
    /// The derived program as one register-machine tape (None with algebraic unknowns).
    pub tape: Option<Tape>,
    pub info: ModelInfo,
    /// Species ids in document order.
    pub species_ids: Vec<String>,
}

/// Order `nodes` (slot, expression) so each is evaluated after the nodes it reads (depth-first
/// topological sort) and compile them. Errors: [`SbmlError::Unsupported`] naming a symbol on a
/// cycle (`what` names the program).
pub(crate) fn topo(
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

/// Analyse the compiled model.
pub(crate) fn analyse(sy: &Symbols, un: &Unknowns, pr: &Programs) -> Analysis {
    let (species_ids, info) = model_info(sy, un);
    Analysis {
        jac_rows: jacobian_pattern(un, pr),
        time_dependent: time_dependent(un, pr),
        flat_derivs: flat_derivs(&pr.derivs),
        tape: if un.alg_vars.is_empty() {
            Tape::build(&pr.derived, sy.slots.len())
        } else {
            None
        },
        info,
        species_ids,
    }
}

/// Structural Jacobian pattern: the states each derivative depends on through the derived
/// program (unknown, i.e. dense, when algebraic rules are solved inside the evaluation).
fn jacobian_pattern(un: &Unknowns, pr: &Programs) -> Option<Vec<Vec<usize>>> {
    let (state_slots, dmap) = (&un.state_slots, &pr.dmap);
    if !un.alg_vars.is_empty() {
        return None;
    }
    let state_index: HashMap<usize, usize> = state_slots
        .iter()
        .enumerate()
        .map(|(i, &s)| (s, i))
        .collect();
    let mut rows = Vec::with_capacity(pr.deriv_reads.len());
    for reads in &pr.deriv_reads {
        let mut seen = HashSet::new();
        let mut todo = reads.clone();
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
}

/// Whether the derived program, a derivative or an algebraic residual reads `time`.
fn time_dependent(un: &Unknowns, pr: &Programs) -> bool {
    let (derived, derivs, alg_res) = (&pr.derived, &pr.derivs, &un.alg_res);
    derived.iter().any(|(_, c)| c.reads_time())
        || derivs
            .iter()
            .any(|d| matches!(d, Deriv::Rule(c) if c.reads_time()))
        || alg_res.iter().any(|r| Code::compile(r).reads_time())
}

/// `derivs` as a CSR stoichiometry matrix when every derivative is a sum of constant-
/// stoichiometry reaction terms without conversion factors.
#[allow(clippy::type_complexity)]
fn flat_derivs(derivs: &[Deriv]) -> Option<(Vec<u32>, Vec<u32>, Vec<f64>)> {
    let mut ptr = vec![0u32];
    let mut flux = Vec::new();
    let mut coef = Vec::new();
    let mut ok = true;
    for d in derivs {
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
}

/// The model description (states, species as observables) and the species ids.
fn model_info(sy: &Symbols, un: &Unknowns) -> (Vec<String>, ModelInfo) {
    let (slots, spinit, state_slots) = (&sy.slots, &sy.spinit, &un.state_slots);
    let (level, version) = (sy.level, sy.version);
    let species_ids: Vec<String> = spinit.iter().map(|s| slots[s.slot].id.clone()).collect();
    let info = ModelInfo {
        name: sy.model_id.clone(),
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
    (species_ids, info)
}
