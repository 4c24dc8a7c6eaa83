//! The model side of a twin: the small trait every twin model implements (pomp's plug-and-play
//! `rprocess`: simulate the process under parameters and a plan), the plan of interventions, and
//! the adapter that makes any SBML model a [`TwinModel`].

use crate::TwinError;
use medtwin_sbml::{parse_sbml, simulate_course, Course, SbmlModel, SimulateOptions, StateDose};
use serde::{Deserialize, Serialize};

/// An amount given at one time into a model quantity (a species amount or a rate-ruled
/// parameter): a drug bolus, a pathogen inoculum, an anti-inflammatory dose.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dose {
    /// Time of the dose in the model's time unit ([`TwinModel::time_unit`]), measured from the
    /// model's start.
    pub time: f64,
    /// Id of the quantity the dose adds to (must be a state of the model).
    pub target: String,
    /// Amount added, in the target's amount unit (finite; negative removes).
    pub amount: f64,
    /// Duration of a zero-order infusion of `amount`, in the model's time unit; 0 (the
    /// default, also when absent from TOML) is an instantaneous bolus. Supported by PK twins
    /// ([`crate::pk::PkTwinModel`]); an SBML twin refuses a dose with a duration.
    #[serde(default)]
    pub duration: f64,
}

/// An intervention plan: the doses given after (or before) the twin's data. "No plan" and an
/// empty plan are the same plan. Read from TOML as `[[dose]] time, target, amount` (and
/// `duration` for an infusion).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Plan {
    /// Doses in any order.
    #[serde(default, rename = "dose")]
    pub doses: Vec<Dose>,
}

impl Plan {
    /// Read a plan from TOML text (`[[dose]] time, target, amount[, duration]`) and
    /// [`Plan::check`] it; `origin` names the file in errors.
    ///
    /// Errors: [`TwinError::Data`] (`origin: …`) for malformed TOML or a bad dose.
    pub fn from_toml(text: &str, origin: &str) -> Result<Plan, TwinError> {
        let plan: Plan =
            toml::from_str(text).map_err(|e| TwinError::Data(format!("{origin}: {e}")))?;
        plan.check()
            .map_err(|e| TwinError::Data(format!("{origin}: {e}")))?;
        Ok(plan)
    }

    /// Check every dose: time finite and ≥ 0, amount finite. Errors: the first bad dose,
    /// numbered from 1 with its target and values.
    pub fn check(&self) -> Result<(), String> {
        for (i, d) in self.doses.iter().enumerate() {
            if !d.time.is_finite() || d.time < 0.0 || !d.amount.is_finite() {
                return Err(format!(
                    "dose {} (target {}): time must be >= 0 and amount finite, got time {} amount {}",
                    i + 1,
                    d.target,
                    d.time,
                    d.amount
                ));
            }
        }
        Ok(())
    }

    /// This plan followed by `other`'s doses.
    pub fn merged(&self, other: &Plan) -> Plan {
        let mut doses = self.doses.clone();
        doses.extend(other.doses.iter().cloned());
        Plan { doses }
    }
}

/// What a twin needs from a model: simulate named observables at chosen times under
/// parameter values and a plan. Implementations are deterministic (the same inputs give the
/// same outputs) and thread-safe (calibration simulates in parallel).
pub trait TwinModel: Send + Sync {
    /// Ids of the parameters a calibration may estimate.
    fn parameter_ids(&self) -> Vec<String>;
    /// Nominal value of a parameter (or of an initial value, e.g. a species' initial
    /// concentration), `None` when `id` is unknown.
    fn nominal(&self, id: &str) -> Option<f64>;
    /// Whether `id` can be observed (returned by [`TwinModel::simulate`]).
    fn has_observable(&self, id: &str) -> bool;
    /// The model's time unit (e.g. `"h"`); every time of a twin is in it.
    fn time_unit(&self) -> String;
    /// Simulate from the model's start (time 0): `values` override parameters or initial
    /// values by id, `plan` adds doses, and the result is `[time][observable]` at `times`
    /// (sorted, ≥ 0) for the observables `observables`.
    ///
    /// Errors: [`TwinError::Model`] naming the unknown id, the bad dose or the solver failure.
    fn simulate(
        &self,
        values: &[(&str, f64)],
        plan: &Plan,
        times: &[f64],
        observables: &[String],
    ) -> Result<Vec<Vec<f64>>, TwinError>;
}

/// Any SBML model as a [`TwinModel`]: parameters are its constant global parameters plus any
/// species or compartment (for initial values), observables are any of its ids (species in
/// their own units), doses go into states. Integration: medtwin-sbml's automatic method with
/// events, at `rtol` 1e-8 and `atol` 1e-10 scaled per state.
#[derive(Debug, Clone)]
pub struct SbmlTwinModel {
    model: SbmlModel,
    source: String,
    time_unit: String,
    options: SimulateOptions,
}

impl SbmlTwinModel {
    /// Compile SBML text. `time_unit` names the model's time unit (SBML models rarely state
    /// it in a form a program can read; the twin reports times in it).
    ///
    /// Errors: [`TwinError::Model`] with the SBML loader's message.
    pub fn from_sbml(text: &str, time_unit: &str) -> Result<Self, TwinError> {
        let model = parse_sbml(text).map_err(|e| TwinError::Model(e.to_string()))?;
        Ok(SbmlTwinModel {
            model,
            source: text.to_string(),
            time_unit: time_unit.to_string(),
            options: SimulateOptions {
                rtol: 1e-8,
                atol: 1e-10,
                ..SimulateOptions::default()
            },
        })
    }

    /// The SBML text the model was compiled from (saved with the twin).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The compiled model.
    pub fn sbml(&self) -> &SbmlModel {
        &self.model
    }
}

impl TwinModel for SbmlTwinModel {
    fn parameter_ids(&self) -> Vec<String> {
        let mut ids = self.model.parameter_ids();
        ids.extend(self.model.species_ids().iter().cloned());
        ids
    }

    fn nominal(&self, id: &str) -> Option<f64> {
        self.model.value(id)
    }

    fn has_observable(&self, id: &str) -> bool {
        self.model.value(id).is_some()
    }

    fn time_unit(&self) -> String {
        self.time_unit.clone()
    }

    fn simulate(
        &self,
        values: &[(&str, f64)],
        plan: &Plan,
        times: &[f64],
        observables: &[String],
    ) -> Result<Vec<Vec<f64>>, TwinError> {
        let mut m = self.model.clone();
        for &(id, v) in values {
            m.set_value(id, v)
                .map_err(|e| TwinError::Model(format!("setting {id} = {v}: {e}")))?;
        }
        let doses = plan
            .doses
            .iter()
            .map(|d| {
                if d.duration != 0.0 {
                    return Err(TwinError::Model(format!(
                        "dose at time {} into '{}' has duration {}: SBML twins take instantaneous doses only (model an infusion as a rate rule or reaction in the SBML)",
                        d.time, d.target, d.duration
                    )));
                }
                let state = m.state_index(&d.target).ok_or_else(|| {
                    TwinError::Model(format!(
                        "dose at time {} targets '{}', which is not a state of the model",
                        d.time, d.target
                    ))
                })?;
                Ok(StateDose {
                    time: d.time,
                    state,
                    amount: d.amount,
                })
            })
            .collect::<Result<Vec<_>, TwinError>>()?;
        let opts = SimulateOptions {
            vars: Some(observables.to_vec()),
            ..self.options.clone()
        };
        let course = Course {
            times: Some(times),
            doses: &doses,
        };
        let tab =
            simulate_course(&m, &opts, &course).map_err(|e| TwinError::Model(e.to_string()))?;
        Ok(tab.rows.into_iter().map(|r| r[1..].to_vec()).collect())
    }
}
