//! Model definitions: metadata (names, units, bounds) and the right-hand side.
//!
//! Terminology follows SBML and PEtab: *states* are the ODE variables, *parameters* are constants
//! of one model instance, *inputs* are externally imposed rates held constant over each
//! integration interval, and *observables* are functions of the state that a measurement sees.

use serde::{Deserialize, Serialize};

/// A named quantity with its unit (UCUM code where one exists) and a one-line meaning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariableInfo {
    /// Identifier, unique within its list (e.g. `"Gp"`).
    pub name: String,
    /// UCUM unit code (e.g. `"mg/kg"`, `"pmol/L"`, `"mg/dL"`).
    pub unit: String,
    /// Human-readable meaning.
    pub description: String,
}

/// A model parameter with unit and plausibility bounds (used by priors and validation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParameterInfo {
    /// Identifier, unique within the model (e.g. `"kabs"`).
    pub name: String,
    /// UCUM unit code.
    pub unit: String,
    /// Lower bound (inclusive); physically impossible below.
    pub lower: f64,
    /// Upper bound (inclusive).
    pub upper: f64,
}

/// Everything a generic tool needs to know about a model's interface.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ModelInfo {
    /// Model identifier (e.g. `"uva-padova-s2008"`).
    pub name: String,
    /// Literature source (paper and equations) the model implements.
    pub source: String,
    /// ODE states, in the order of the state vector.
    pub states: Vec<VariableInfo>,
    /// Inputs, in the order of the input vector `u`.
    pub inputs: Vec<VariableInfo>,
    /// Observables, in the order written by [`OdeModel::observe`].
    pub observables: Vec<VariableInfo>,
}

impl ModelInfo {
    /// Index of the state called `name`, if any.
    pub fn state_index(&self, name: &str) -> Option<usize> {
        self.states.iter().position(|s| s.name == name)
    }
    /// Index of the input called `name`, if any.
    pub fn input_index(&self, name: &str) -> Option<usize> {
        self.inputs.iter().position(|s| s.name == name)
    }
    /// Index of the observable called `name`, if any.
    pub fn observable_index(&self, name: &str) -> Option<usize> {
        self.observables.iter().position(|s| s.name == name)
    }
}

/// An ordinary-differential-equation model `dx/dt = f(t, x, u)` with inputs `u` held constant
/// (zero-order hold) over each integration interval.
///
/// A model is data (its parameters live in `self`) plus this right-hand side. It knows nothing of
/// the solver that integrates it nor of the inference that calibrates it.
///
/// Shapes: `x.len() == dx.len() == info().states.len()`, `u.len() == info().inputs.len()`,
/// `out.len() == info().observables.len()`. Time `t_min` is in minutes.
pub trait OdeModel {
    /// Names, units and meaning of states, inputs and observables.
    fn info(&self) -> &ModelInfo;
    /// Number of states (length of the state vector).
    fn n_states(&self) -> usize {
        self.info().states.len()
    }
    /// Evaluate the right-hand side into `dx` (units: state unit per minute).
    fn rhs(&self, t_min: f64, x: &[f64], u: &[f64], dx: &mut [f64]);
    /// Write the observables of state `x` into `out`.
    fn observe(&self, x: &[f64], out: &mut [f64]);
}
