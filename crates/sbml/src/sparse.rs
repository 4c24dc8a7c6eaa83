//! The SBML side of the sparse linear algebra: the structural Jacobian pattern of a compiled
//! model. The pattern type, its finite-difference evaluation and the sparse LU live in
//! `medtwin_simulate::sparse` (shared by every model); the names are re-exported here.

use crate::model::SbmlModel;
pub(crate) use medtwin_simulate::sparse::{SparseJacobian as Jacobian, SparseLu};

/// Pattern of model `m` (dense when the model has no structural pattern, e.g. algebraic rules
/// solved inside the right-hand side).
pub(crate) fn model_pattern(m: &SbmlModel) -> Jacobian {
    let n = m.state_slots.len();
    match Jacobian::new(n, m.jac_rows.as_deref()) {
        Ok(j) => j,
        // The compiler builds one row per state; a mismatch would be a compiler bug. Fall back
        // to the dense pattern (always valid) rather than failing the simulation.
        Err(_) => Jacobian::new(n, None).unwrap_or_else(|_| unreachable!("dense pattern")),
    }
}
