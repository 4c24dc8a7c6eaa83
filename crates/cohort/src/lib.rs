//! # medtwin-cohort
//!
//! Virtual cohorts and in-silico clinical trials on the UVA/Padova S2008 simulator:
//! * [`population`]: virtual populations fitted on the 30 simglucose patients (PCA-reduced
//!   multivariate normal of the log-parameters, steady-state derived parameters,
//!   acceptance–rejection on physiological plausibility);
//! * [`cohort_io`]: cohort Parquet files;
//! * [`spec`]: trial specifications (TOML);
//! * [`trial`]: parallel, reproducible execution streaming results to Parquet;
//! * [`analysis`]: per-arm statistics, effects with 95 % CI and PROCOVA.

#![warn(missing_docs)]

pub mod analysis;
pub mod cohort_io;
pub mod linalg;
pub mod population;
pub mod spec;
pub mod trial;

pub use cohort_io::{read_cohort_parquet, write_cohort_parquet, CohortFileError};
pub use population::{generate_cohort, CohortError, GeneratedCohort, Group};
pub use spec::{SpecError, TrialSpec};
pub use trial::{run_trial, TrialError, TrialSummary};
