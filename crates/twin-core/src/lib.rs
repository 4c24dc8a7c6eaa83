//! # medtwin-twin-core
//!
//! The model-agnostic digital-twin layer: any model that can simulate its observables under
//! parameter values and a plan of doses ([`TwinModel`], the only thing inference asks of a
//! model, as pomp's `rprocess`) becomes a twin of one patient.
//!
//! * [`model`]: [`TwinModel`], the intervention [`Plan`] and the adapter [`SbmlTwinModel`]
//!   that makes any SBML model a twin model.
//! * [`spec`]: the [`CalibrationSpec`] — estimated parameters with priors, bounds and scales,
//!   measurement noise per observable (normal / log-normal, PEtab's noise models), outcome
//!   classes.
//! * [`data`]: measurements in PEtab's measurement-table layout.
//! * [`fit`]: the posterior (MAP, Laplace, importance sampling) of the estimated parameters.
//! * [`twin`]: the lifecycle — [`Twin::fit`], [`Twin::update`], [`Twin::forecast`],
//!   [`Twin::whatif`], save/load in a versioned format.
//! * [`backtest`](mod@backtest): rolling-origin validation on held-out data.
//! * [`pk`]: the pharmacokinetic adapter — a patient's closed-form PK model as a
//!   [`TwinModel`] with the population fit as prior, and the therapeutic-drug-monitoring (TDM)
//!   twin, holdout backtest and dose recommendation built on it.
//! * [`sepsis`]: the worked example — the Reynolds 2006 acute-inflammation twin.
//!
//! Times are in the model's time unit ([`TwinModel::time_unit`]), from the model's start.

#![warn(missing_docs)]

pub mod backtest;
pub mod data;
pub mod fit;
pub mod model;
pub mod pk;
pub mod sepsis;
pub mod spec;
pub mod twin;

pub use backtest::{backtest, BacktestResult};
pub use data::{read_measurements, Measurement};
pub use fit::{ParameterSummary, Posterior};
pub use model::{Dose, Plan, SbmlTwinModel, TwinModel};
pub use spec::{CalibrationSpec, Estimated, Noise, ObservableSpec, OutcomeRule, Outcomes, Prior};
pub use twin::{ModelSource, Prediction, Twin};

use thiserror::Error;

/// Why a twin operation failed. Each message names the file, line, id or value at fault.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum TwinError {
    /// The model could not be compiled or simulated (unknown id, bad dose, solver failure).
    #[error("model: {0}")]
    Model(String),
    /// The calibration spec is invalid.
    #[error("calibration spec: {0}")]
    Spec(String),
    /// A measurement is malformed or impossible.
    #[error("data: {0}")]
    Data(String),
    /// Calibration found no finite posterior.
    #[error("calibration: {0}")]
    Fit(String),
    /// A saved twin is not in this build's format.
    #[error("saved twin: {0}")]
    Format(String),
    /// Reading or writing a file failed.
    #[error("{0}")]
    Io(String),
}
