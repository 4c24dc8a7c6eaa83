//! Pharmacodynamic (PD) models driven by the PK concentration.
//!
//! * Direct effect: Emax ([`emax`]) and sigmoid Emax with a Hill coefficient ([`sigmoid_emax`]),
//!   `E = E0 + Emax·C^γ/(EC50^γ + C^γ)` (Holford & Sheiner 1981, Clin Pharmacokinet 6:429–453).
//! * Effect compartment ("link model"; Sheiner, Stanski, Vozeh, Miller & Ham 1979, Clin Pharmacol
//!   Ther 25:358–371): a hypothetical compartment of negligible amount with
//!   `dCe/dt = ke0·(C − Ce)`, `Ce(0) = 0`; the effect is then a direct function of `Ce`
//!   ([`effect_site_concentrations`]).
//! * Indirect response (Dayneka, Garg & Jusko 1993, J Pharmacokinet Biopharm 21:457–478): the
//!   drug inhibits or stimulates the production (`kin`) or loss (`kout`) of a response `R`:
//!
//!   ```text
//!   I   dR/dt = kin·(1 − I(C)) − kout·R          I(C) = Imax·C^γ/(IC50^γ + C^γ)
//!   II  dR/dt = kin − kout·(1 − I(C))·R
//!   III dR/dt = kin·(1 + S(C)) − kout·R          S(C) = Emax·C^γ/(EC50^γ + C^γ)
//!   IV  dR/dt = kin − kout·(1 + S(C))·R
//!   ```
//!
//!   with `R(0) = R0 = kin/kout` ([`indirect_response`]).
//!
//! ## Method
//! Both the effect site and the response are integrated **together with the PK amounts** as one
//! engine [`OdeModel`] ([`EffectCompartmentOde`], [`IndirectResponseOde`]: states = the PK amounts
//! of [`PkOde`] followed by `Ce` or `R`), by the engine's DOPRI5 through the same dose handling as
//! [`crate::ode::simulate_amounts`] (boluses, infusions, `F`, `ALAG`, `ADDL`, `SS=1`). The coupling
//! is therefore exact — `C(t)` inside the right-hand side is the integrated central amount / `V`,
//! not an interpolation of precomputed concentrations — and the only error is the integrator's,
//! set by `SolverOptions::rtol`/`atol`. For the effect compartment a closed form exists (one more
//! exponential per disposition rate, `ke0/V·Σ c_k (e^(−λ_k t) − e^(−ke0 t))/(ke0 − λ_k)`), but it
//! needs the impulse-response coefficients private to [`crate::model`] and a second copy of the
//! infusion/steady-state bookkeeping; the ODE path reuses both and is checked against the
//! analytic constant-infusion solution in `tests/pd.rs`. For `SS=1` records the PD state is made
//! periodic together with the PK state (the steady state of the coupled system).
//!
//! Units: time in hours (rates per hour), concentrations in the PK model's amount/L, `R` in the
//! response's own unit (`kin` is that unit per hour).

use crate::model::{ModelError, PkModel, PkParams};
use crate::ode::{simulate_states, OdeError, PkOde};
use crate::Dose;
use medtwin_core::{ModelInfo, OdeModel, VariableInfo};
use medtwin_simulate::SolverOptions;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Why a PD computation failed.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum PdError {
    /// A PD parameter is not finite or out of its domain.
    #[error("PD parameter {name} = {value} is invalid: {reason}")]
    BadParameter {
        /// Parameter name (e.g. `kout`).
        name: &'static str,
        /// The value given.
        value: f64,
        /// What is required.
        reason: &'static str,
    },
    /// The PK part (parameters, doses) or its integration failed.
    #[error(transparent)]
    Ode(#[from] OdeError),
}

impl From<ModelError> for PdError {
    fn from(e: ModelError) -> Self {
        PdError::Ode(OdeError::Model(e))
    }
}

/// Direct Emax model `E = E0 + Emax·C/(EC50 + C)` (Holford & Sheiner 1981).
///
/// Units: `c` and `ec50` in the same concentration unit, `e0`/`emax` in the effect's unit.
/// `c ≥ 0`, `ec50 > 0` are expected; other values give the formula's value (possibly NaN).
pub fn emax(c: f64, e0: f64, emax: f64, ec50: f64) -> f64 {
    e0 + emax * c / (ec50 + c)
}

/// Sigmoid Emax (Hill) model `E = E0 + Emax·C^γ/(EC50^γ + C^γ)` (Holford & Sheiner 1981;
/// Hill 1910), computed as `Emax/(1 + (EC50/C)^γ)` to avoid overflow for large `γ`.
///
/// Units as [`emax`]; `hill` (γ) dimensionless, > 0. At `C = 0` the effect is `E0`.
pub fn sigmoid_emax(c: f64, e0: f64, emax: f64, ec50: f64, hill: f64) -> f64 {
    e0 + emax * hill_fraction(c, ec50, hill)
}

/// `C^γ/(C50^γ + C^γ)` ∈ [0, 1] for `c ≥ 0`.
fn hill_fraction(c: f64, c50: f64, hill: f64) -> f64 {
    if c <= 0.0 {
        if c == 0.0 {
            0.0
        } else {
            f64::NAN
        }
    } else {
        1.0 / (1.0 + (c50 / c).powf(hill))
    }
}

fn state(name: &str, unit: &str, description: &str) -> VariableInfo {
    VariableInfo {
        name: name.into(),
        unit: unit.into(),
        description: description.into(),
    }
}

fn extend_info(pk: &PkOde, name: &str, extra: VariableInfo, source: &str) -> ModelInfo {
    let mut info = pk.info().clone();
    info.name = format!("{}+{name}", info.name);
    info.source = format!("{}; {source}", info.source);
    info.observables.push(extra.clone());
    info.states.push(extra);
    info
}

/// PK model plus an effect compartment: states = PK amounts followed by `Ce` (amount/L),
/// `dCe/dt = ke0·(A_central/V − Ce)` (Sheiner et al. 1979). Inputs as [`PkOde`]; observables
/// `C`, `Ce`. Time in minutes (engine convention).
#[derive(Debug, Clone)]
pub struct EffectCompartmentOde {
    pk: PkOde,
    ke0_per_h: f64,
    info: ModelInfo,
}

impl EffectCompartmentOde {
    /// Build from a PK model, its parameters and `ke0` (1/h, finite, > 0).
    /// Errors: invalid PK parameters, or `ke0` out of domain.
    pub fn new(model: PkModel, p: &PkParams, ke0_per_h: f64) -> Result<Self, PdError> {
        positive("ke0", ke0_per_h)?;
        let pk = PkOde::new(model, p)?;
        let info = extend_info(
            &pk,
            "effect",
            state("Ce", "1/L", "effect-site concentration (amount/L)"),
            "effect compartment (Sheiner et al. 1979, Clin Pharmacol Ther 25:358)",
        );
        Ok(EffectCompartmentOde {
            pk,
            ke0_per_h,
            info,
        })
    }
}

impl OdeModel for EffectCompartmentOde {
    fn info(&self) -> &ModelInfo {
        &self.info
    }
    fn rhs(&self, _t_min: f64, x: &[f64], u: &[f64], dx: &mut [f64]) {
        let n = self.pk.n_pk();
        self.pk.pk_rhs(x, u, dx);
        dx[n] = self.ke0_per_h * (self.pk.concentration(x) - x[n]) / 60.0;
    }
    fn observe(&self, x: &[f64], out: &mut [f64]) {
        out[0] = self.pk.concentration(x);
        out[1] = x[self.pk.n_pk()];
    }
}

/// Effect-site concentrations `Ce` (amount/L) at `times_h` (h, any order; one value per time)
/// of PK model `model` with parameters `p` after `doses`, for the link rate `ke0_per_h` (1/h):
/// `dCe/dt = ke0·(C − Ce)`, `Ce = 0` before the first dose (Sheiner et al. 1979).
///
/// Integrated jointly with the PK amounts by DOPRI5 under `opts` (see the module docs).
/// Errors: `ke0` not finite and > 0, invalid PK parameters or doses, output time not finite,
/// integrator failure ([`PdError::Ode`]).
pub fn effect_site_concentrations(
    model: &PkModel,
    p: &PkParams,
    ke0_per_h: f64,
    doses: &[Dose],
    times_h: &[f64],
    opts: SolverOptions,
) -> Result<Vec<f64>, PdError> {
    let ode = EffectCompartmentOde::new(*model, p, ke0_per_h)?;
    let n = model.n_compartments();
    let x0 = vec![0.0; n + 1];
    let rows = simulate_states(&ode, model, p, doses, times_h, &x0, opts)?;
    Ok(rows.into_iter().map(|r| r[n]).collect())
}

/// Which of Jusko's four basic indirect-response models (Dayneka, Garg & Jusko 1993).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IndirectResponse {
    /// Model I: the drug inhibits production, `dR/dt = kin·(1 − I(C)) − kout·R`.
    InhibitProduction,
    /// Model II: the drug inhibits loss, `dR/dt = kin − kout·(1 − I(C))·R`.
    InhibitLoss,
    /// Model III: the drug stimulates production, `dR/dt = kin·(1 + S(C)) − kout·R`.
    StimulateProduction,
    /// Model IV: the drug stimulates loss, `dR/dt = kin − kout·(1 + S(C))·R`.
    StimulateLoss,
}

impl IndirectResponse {
    /// All four, in the order I–IV.
    pub const ALL: [IndirectResponse; 4] = [
        IndirectResponse::InhibitProduction,
        IndirectResponse::InhibitLoss,
        IndirectResponse::StimulateProduction,
        IndirectResponse::StimulateLoss,
    ];

    /// Whether the drug effect is an inhibition (`Imax ≤ 1`) rather than a stimulation.
    pub fn inhibits(self) -> bool {
        matches!(
            self,
            IndirectResponse::InhibitProduction | IndirectResponse::InhibitLoss
        )
    }
}

/// Parameters of an indirect-response model.
///
/// Units: `kin` in response units per hour, `kout_per_h` in 1/h (so the baseline
/// `R0 = kin/kout` is in response units), `c50` (IC50 or EC50) in the PK concentration unit
/// (amount/L), `max_effect` (Imax, 0–1, for inhibition; Emax ≥ 0 for stimulation) and `hill`
/// (γ > 0) dimensionless.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct IndirectParams {
    /// Zero-order production rate `kin`, response unit/h.
    pub kin: f64,
    /// First-order loss rate constant `kout`, 1/h.
    pub kout_per_h: f64,
    /// `Imax` (inhibition, 0 ≤ Imax ≤ 1) or `Emax` (stimulation, ≥ 0), dimensionless.
    pub max_effect: f64,
    /// `IC50` or `EC50`, concentration unit (amount/L).
    pub c50: f64,
    /// Hill coefficient γ (1 for the hyperbolic model).
    pub hill: f64,
}

impl IndirectParams {
    /// Baseline response `R0 = kin/kout` (response unit).
    pub fn baseline(&self) -> f64 {
        self.kin / self.kout_per_h
    }

    /// Check domains for model `kind`: `kin`, `kout`, `c50`, `hill` finite and > 0;
    /// `max_effect` finite, ≥ 0, and ≤ 1 for the inhibition models.
    pub fn validate(&self, kind: IndirectResponse) -> Result<(), PdError> {
        positive("kin", self.kin)?;
        positive("kout", self.kout_per_h)?;
        positive("c50", self.c50)?;
        positive("hill", self.hill)?;
        let m = self.max_effect;
        if !(m.is_finite() && m >= 0.0) {
            return Err(PdError::BadParameter {
                name: "max_effect",
                value: m,
                reason: "must be finite and >= 0",
            });
        }
        if kind.inhibits() && m > 1.0 {
            return Err(PdError::BadParameter {
                name: "max_effect",
                value: m,
                reason: "Imax of an inhibition model must be <= 1",
            });
        }
        Ok(())
    }

    /// The drug term `I(C)` or `S(C)` = `max_effect·C^γ/(c50^γ + C^γ)` at concentration `c`.
    pub fn drug_effect(&self, c: f64) -> f64 {
        self.max_effect * hill_fraction(c.max(0.0), self.c50, self.hill)
    }

    /// `dR/dt` (response unit/h) of model `kind` at response `r` and concentration `c`.
    pub fn rate(&self, kind: IndirectResponse, r: f64, c: f64) -> f64 {
        let e = self.drug_effect(c);
        match kind {
            IndirectResponse::InhibitProduction => self.kin * (1.0 - e) - self.kout_per_h * r,
            IndirectResponse::InhibitLoss => self.kin - self.kout_per_h * (1.0 - e) * r,
            IndirectResponse::StimulateProduction => self.kin * (1.0 + e) - self.kout_per_h * r,
            IndirectResponse::StimulateLoss => self.kin - self.kout_per_h * (1.0 + e) * r,
        }
    }

    /// Steady-state response under a constant concentration `c` (Dayneka et al. 1993, Table I):
    /// I `kin(1 − I)/kout`, II `kin/(kout(1 − I))` (infinite when `I = 1`), III
    /// `kin(1 + S)/kout`, IV `kin/(kout(1 + S))`.
    pub fn steady_state(&self, kind: IndirectResponse, c: f64) -> f64 {
        let e = self.drug_effect(c);
        let r0 = self.baseline();
        match kind {
            IndirectResponse::InhibitProduction => r0 * (1.0 - e),
            IndirectResponse::InhibitLoss => r0 / (1.0 - e),
            IndirectResponse::StimulateProduction => r0 * (1.0 + e),
            IndirectResponse::StimulateLoss => r0 / (1.0 + e),
        }
    }
}

fn positive(name: &'static str, v: f64) -> Result<(), PdError> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(PdError::BadParameter {
            name,
            value: v,
            reason: "must be finite and > 0",
        })
    }
}

/// PK model plus an indirect response: states = PK amounts followed by `R`, with `dR/dt` of
/// [`IndirectParams::rate`] at `C = A_central/V` (Dayneka, Garg & Jusko 1993). Inputs as
/// [`PkOde`]; observables `C`, `R`. Time in minutes (engine convention).
#[derive(Debug, Clone)]
pub struct IndirectResponseOde {
    pk: PkOde,
    kind: IndirectResponse,
    params: IndirectParams,
    info: ModelInfo,
}

impl IndirectResponseOde {
    /// Build from a PK model and parameters, the response type and its parameters.
    /// Errors: invalid PK or PD parameters.
    pub fn new(
        model: PkModel,
        p: &PkParams,
        kind: IndirectResponse,
        ip: &IndirectParams,
    ) -> Result<Self, PdError> {
        ip.validate(kind)?;
        let pk = PkOde::new(model, p)?;
        let info = extend_info(
            &pk,
            "indirect-response",
            state("R", "1", "response (unit of kin/kout)"),
            "indirect response (Dayneka, Garg & Jusko 1993, J Pharmacokinet Biopharm 21:457)",
        );
        Ok(IndirectResponseOde {
            pk,
            kind,
            params: *ip,
            info,
        })
    }
}

impl OdeModel for IndirectResponseOde {
    fn info(&self) -> &ModelInfo {
        &self.info
    }
    fn rhs(&self, _t_min: f64, x: &[f64], u: &[f64], dx: &mut [f64]) {
        let n = self.pk.n_pk();
        self.pk.pk_rhs(x, u, dx);
        dx[n] = self.params.rate(self.kind, x[n], self.pk.concentration(x)) / 60.0;
    }
    fn observe(&self, x: &[f64], out: &mut [f64]) {
        out[0] = self.pk.concentration(x);
        out[1] = x[self.pk.n_pk()];
    }
}

/// Response `R(t)` of indirect-response model `kind` at `times_h` (h, any order; one value per
/// time, in the response unit of `ip.kin/ip.kout_per_h`), driven by the central concentration
/// of PK model `model` with parameters `p` after `doses`; `R = kin/kout` before the first dose.
///
/// Integrated jointly with the PK amounts by DOPRI5 under `opts` (see the module docs); `SS=1`
/// records reset PK and response to the periodic state of the coupled system.
/// Errors: PD parameters out of domain ([`IndirectParams::validate`]), invalid PK parameters or
/// doses, output time not finite, integrator failure or steady state not reached
/// ([`PdError::Ode`]).
pub fn indirect_response(
    model: &PkModel,
    p: &PkParams,
    kind: IndirectResponse,
    ip: &IndirectParams,
    doses: &[Dose],
    times_h: &[f64],
    opts: SolverOptions,
) -> Result<Vec<f64>, PdError> {
    let ode = IndirectResponseOde::new(*model, p, kind, ip)?;
    let n = model.n_compartments();
    let mut x0 = vec![0.0; n + 1];
    x0[n] = ip.baseline();
    let rows = simulate_states(&ode, model, p, doses, times_h, &x0, opts)?;
    Ok(rows.into_iter().map(|r| r[n]).collect())
}
