//! # medtwin-cardiac
//!
//! Cardiac electrophysiology twins: the CiPA IKr-dynamic O'Hara–Rudy ventricular myocyte, drug
//! block and the qNet proarrhythmia assay.
//!
//! * [`model`]: the IKr-dynamic ORd endocardial myocyte (48 states; O'Hara et al. 2011, Li et al.
//!   2017, Dutta et al. 2017 scalings), right-hand side in exponential form.
//! * [`markov`]: the Li et al. (2017) hERG Markov model with dynamic drug binding and trapping.
//! * [`solver`]: adaptive second-order exponential (generalised Rush–Larsen) integrator.
//! * [`vtable`]: lookup table of the voltage-only terms (gate kinetics, hERG rates).
//! * [`metrics`]: the reference's beat metrics (APD50/90, EAD `max_dv`) and beat selection.
//! * [`drug`]: drugs (Hill block of six currents + hERG binding), TOML input, the 12 bundled CiPA
//!   training drugs.
//! * [`assay`]: the CiPA assay: pacing at 2000 ms from the control steady state, qNet per dose.
//! * [`classify`]: ordinal-logistic TdP risk classifier on mean qNet, leave-one-out error.
//! * [`samples`]: uncertainty propagation (bootstrap hERG + MCMC Hill samples) on all cores.
//! * [`report`]: self-contained HTML report (AP traces, qNet and APD90 vs dose with the samples'
//!   95 % intervals, results table, risk-class fractions of the samples).

// Dense small-matrix and state-vector kernels index several arrays in step.
#![allow(clippy::needless_range_loop)]

pub mod assay;
pub mod classify;
pub mod drug;
pub mod error;
pub mod markov;
pub mod metrics;
pub mod model;
pub mod report;
pub mod samples;
pub mod solver;
pub mod vtable;

pub use assay::{run_assay, run_dose, AssayOptions, DoseResult};
pub use drug::{bundled_drug, bundled_drugs, Drug};
pub use error::CardiacError;
