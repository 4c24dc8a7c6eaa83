//! Errors of the cardiac crate.

use thiserror::Error;

/// What went wrong, naming the input and the value.
#[derive(Debug, Error)]
pub enum CardiacError {
    /// A drug TOML file or text did not parse.
    #[error("drug file {source_name}: {message}")]
    DrugToml {
        /// File name (or "bundled").
        source_name: String,
        /// Parser message with line and column.
        message: String,
    },
    /// A drug parameter is out of range.
    #[error("drug {drug}: {field} = {value} is invalid ({why})")]
    InvalidParameter {
        /// Drug name.
        drug: String,
        /// Field path, e.g. `block.ical.ic50_nm`.
        field: String,
        /// The offending value.
        value: f64,
        /// What is required.
        why: &'static str,
    },
    /// `--drug NAME` is not one of the bundled drugs.
    #[error("unknown drug '{name}'; bundled drugs: {known}")]
    UnknownDrug {
        /// The requested name.
        name: String,
        /// Comma-separated bundled names.
        known: String,
    },
    /// A dose (multiple of Cmax) is negative or not finite.
    #[error("dose {value} × Cmax is invalid (doses must be finite and ≥ 0)")]
    InvalidDose {
        /// The offending dose.
        value: f64,
    },
    /// The integrator failed (non-finite state).
    #[error("simulation of {drug} at {dose_x_cmax} × Cmax failed at beat {beat}, t = {t_ms} ms")]
    Solver {
        /// Drug name.
        drug: String,
        /// Dose, × Cmax.
        dose_x_cmax: f64,
        /// 1-based beat number.
        beat: usize,
        /// Beat time of the failure, ms.
        t_ms: f64,
    },
    /// An uncertainty-sample table did not parse or is missing.
    #[error("uncertainty samples {source_name}: {message}")]
    Samples {
        /// Table (or drug) name.
        source_name: String,
        /// What is wrong.
        message: String,
    },
}
