//! # medtwin-core
//!
//! The engine core: what a *model* is, what *inputs* and *dosing timelines* are, and the few unit
//! conversions every layer shares. It knows nothing of any disease, any solver or any file format.
//!
//! * [`model`]: the [`OdeModel`] trait — named states, parameters (with units and bounds), inputs
//!   and observables, plus a right-hand side `dx/dt = f(t, x, u)` evaluated with inputs `u` held
//!   constant over an integration interval (zero-order hold), as in SBML/PEtab terminology.
//! * [`timeline`]: a [`Timeline`] of timed dose events (bolus amounts) and piecewise-constant
//!   rates (infusions, basal rates), addressed by input name.
//! * [`units`]: unit conversions (glucose mg/dL ↔ mmol/L, insulin U ↔ pmol), each defined once.
//!
//! Time inside the engine is always in **minutes** from a stated origin.

#![warn(missing_docs)]

pub mod model;
pub mod timeline;
pub mod units;

pub use model::{ModelInfo, OdeModel, ParameterInfo, VariableInfo};
pub use timeline::{TimedDose, TimedRate, Timeline, TimelineError};
