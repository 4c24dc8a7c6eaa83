//! # medtwin-t1d
//!
//! The type 1 diabetes twin's model layer: the UVA/Padova S2008 model exactly as simglucose
//! 0.2.11 implements it ([`model`]), the 30 bundled virtual patients ([`params`]), CGM sensors
//! ([`sensor`]), insulin pumps ([`pump`]), simglucose's basal-bolus and PID controllers
//! and a model predictive controller ([`controller`], [`mpc`]), scenarios ([`scenario`]) with
//! simglucose-style random meals ([`random_meals`]), the closed-loop environment that ties them
//! together minute by minute ([`env`]) and the consensus glycaemic metrics ([`metrics`]).
//!
//! Nothing here knows about inference: calibration and assimilation live in `medtwin-infer` and
//! `medtwin-twin` and see this model only through its state, inputs and observation.

pub mod controller;
pub mod env;
pub mod insulin;
pub mod metrics;
pub mod model;
pub mod mpc;
pub mod params;
pub mod pump;
pub mod random_meals;
pub mod scenario;
pub mod sensor;

pub use model::{UvaPadova, VirtualPatient};
pub use params::{all_patients, patient, patient_names, PatientParams};
