//! # medtwin-petab
//!
//! PEtab v1 calibration problems (Schmiester et al., PLoS Comput Biol 17:e1008646, 2021; the
//! PEtab v1 specification at petab.readthedocs.io): the YAML problem file, parameter,
//! condition, observable and measurement tables, observable/noise formulas, the
//! log-likelihood at any parameter vector over an SBML model simulated by `medtwin-sbml`
//! (preequilibration to steady state included), and multi-start fits.

pub mod expr;
pub mod fit;
pub mod objective;
pub mod problem;
pub mod sbml_fix;
pub mod table;
pub mod yaml;

pub use objective::{Evaluator, Residual, ResidualSens, SimSettings};
pub use problem::Problem;

use thiserror::Error;

/// Why loading or evaluating a PEtab problem failed.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum PetabError {
    /// A file could not be read.
    #[error("I/O error: {0}")]
    Io(String),
    /// The YAML problem file is malformed or not PEtab v1.
    #[error("problem file: {0}")]
    Yaml(String),
    /// A bad table entry, with its file and 1-based line.
    #[error("{file}:{line}: {msg}")]
    Table {
        /// Table file.
        file: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        msg: String,
    },
    /// The SBML model failed to load, or a value could not be set on it.
    #[error("SBML: {0}")]
    Sbml(String),
    /// A formula could not be evaluated (unknown identifier, missing override).
    #[error("evaluation: {0}")]
    Eval(String),
    /// A simulation failed.
    #[error("simulation: {0}")]
    Simulation(String),
    /// Bad fit options.
    #[error("fit: {0}")]
    Fit(String),
}
