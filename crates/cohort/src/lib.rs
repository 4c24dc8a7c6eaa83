//! # medtwin-cohort
//!
//! Virtual cohorts and in-silico clinical trials on the UVA/Padova S2008 simulator:
//! * [`population`]: virtual populations fitted on the 30 simglucose patients (PCA-reduced
//!   multivariate normal of the log-parameters, steady-state derived parameters,
//!   acceptance–rejection on physiological plausibility);
//! * [`cohort_io`]: cohort Parquet files;
//! * [`spec`]: trial specifications (TOML);
//! * [`trial`]: parallel, reproducible execution streaming results to Parquet;
//! * [`prognostic`]: PROCOVA prognostic scores from a baseline run-in, trained on historical
//!   virtual controls;
//! * [`analysis`]: effects with 95 % CI (paired / Welch t) and PROCOVA (ANCOVA);
//! * [`summary`]: `trial analyze` — `summary.json` and plots from a results file.

#![warn(missing_docs)]

pub mod analysis;
pub mod cohort_io;
pub mod linalg;
pub mod population;
pub mod prognostic;
pub mod spec;
pub mod summary;
pub mod trial;

pub use cohort_io::{read_cohort_parquet, write_cohort_parquet, CohortFileError};
pub use population::{generate_cohort, CohortError, GeneratedCohort, Group};
pub use spec::{SpecError, TrialSpec};
pub use summary::{analyze_dir, AnalyzeOptions, Summary};
pub use trial::{run_trial, RunControl, TrialError, TrialSummary};
