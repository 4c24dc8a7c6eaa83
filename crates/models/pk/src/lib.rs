//! # medtwin-pk
//!
//! Pharmacokinetic/pharmacodynamic (PK/PD) twins: the model-informed precision dosing loop of
//! pharmacometrics (a patient's drug levels → a Bayesian individual model → the next dose).
//!
//! * [`data`]: the NONMEM-style event table (`ID, TIME, AMT, RATE, II, ADDL, SS, CMT, EVID, MDV,
//!   DV` plus covariates; time in hours) and importers for the R data sets Theoph, Phenobarb and
//!   Indometh;
//! * [`model`]: one-, two- and three-compartment linear PK with IV bolus, zero-order infusion and
//!   first-order absorption (lag time, bioavailability), steady state (`SS`/`II`) and additional
//!   doses (`ADDL`), in closed form and through the engine's ODE integrator;
//! * [`pd`]: direct (sigmoid) Emax, effect compartment and Jusko's four indirect-response models;
//! * [`nca`]: non-compartmental analysis (AUC by linear-up/log-down, Cmax, Tmax, t½, CL/F);
//! * [`pop`]: population (nonlinear mixed-effects) fits by FOCE-I.
//!
//! Therapeutic drug monitoring (a patient's twin with the population fit as prior, holdout
//! backtests, dose recommendation) is in `medtwin-twin-core`'s `pk` module: the posterior maths
//! belong to the generic twin layer, which depends on this crate (not the reverse).
//!
//! Units: time in **hours** throughout this crate (the pharmacometric convention; the engine's
//! minutes appear only where a PK model is handed to `medtwin-simulate`), amounts in the data set's
//! amount unit (e.g. mg), volumes in L, concentrations in amount/L, clearances in L/h.

#![warn(missing_docs)]

pub mod data;
pub mod model;
pub mod nca;
pub mod ode;
pub mod pd;
pub mod pop;
pub mod report;

/// One dosing event of a subject (a NONMEM dose record after `ADDL` bookkeeping is left to the
/// model: the event keeps `ii_h`/`addl`/`ss` as given).
///
/// Units: `time_h` in hours from the subject's origin; `amount` in the data set's amount unit;
/// `rate` in amount per hour (0 = bolus; > 0 = zero-order infusion of duration `amount / rate`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Dose {
    /// Time of the (first) dose, hours.
    pub time_h: f64,
    /// Amount (≥ 0, finite).
    pub amount: f64,
    /// Infusion rate, amount/h; 0 for a bolus.
    pub rate: f64,
    /// Dosing compartment, NONMEM numbering: 1 = depot for models with first-order absorption,
    /// central otherwise; 2 = central for models with first-order absorption.
    pub cmt: u32,
    /// Interdose interval for `addl` and `ss`, hours (0 when neither is used).
    pub ii_h: f64,
    /// Number of additional doses, each `ii_h` after the previous.
    pub addl: u32,
    /// Steady state: the dose is the last of an infinite series every `ii_h` (NONMEM `SS=1`,
    /// which resets the system to that steady state).
    pub ss: bool,
}

impl Dose {
    /// A bolus of `amount` at `time_h` into compartment `cmt`.
    pub fn bolus(time_h: f64, amount: f64, cmt: u32) -> Self {
        Dose {
            time_h,
            amount,
            rate: 0.0,
            cmt,
            ii_h: 0.0,
            addl: 0,
            ss: false,
        }
    }
}
