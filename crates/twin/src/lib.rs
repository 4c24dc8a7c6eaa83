//! # medtwin-twin
//!
//! The type 1 diabetes **patient twin**: a UVA/Padova model calibrated to one person's record,
//! updated as new CGM readings arrive, forecasting with honest uncertainty.
//!
//! Pipeline: [`inputs`] (record → minute grid) → [`prior`] (population prior from the 30
//! virtual patients) → [`calibrate`] (MAP + Laplace on an initial window) → [`engine`]
//! (particle-filter assimilation through `medtwin-infer`'s model-agnostic interface, forecasts,
//! save/restore) → [`backtest`] (scored forecasts at rolling origins). [`lifecycle`] is what
//! the CLI and the server call: fit, update (to a time or by catch-up slices), forecast,
//! what-if, advice on a saved twin, and late-data replay. [`generic`] puts the model and the
//! prior on the model-agnostic twin layer (`medtwin-twin-core`).

#![warn(missing_docs)]

pub mod backtest;
pub mod calibrate;
pub mod decide;
pub mod engine;
pub mod generic;
pub mod hybrid;
pub mod inputs;
pub mod learning;
pub mod lifecycle;
pub mod model;
pub mod prior;
pub mod report;

pub use backtest::{
    backtest, BacktestOptions, BacktestResult, EventScore, HorizonScore, RiskPoint, RiskScore,
};
pub use engine::{Twin, TwinEngine, TwinError, TwinSettings};
pub use inputs::InputSchedule;
pub use learning::{learning_curve, LearningCurve, LearningOptions, LearningPoint};
pub use lifecycle::{Assimilated, Checkpoints, Progress, Until};
pub use model::{NoiseSettings, Plan, RelativePlan};
