//! Linear compartmental PK models in closed form.
//!
//! One-, two- and three-compartment mammillary models (central compartment 1 with elimination,
//! peripheral compartments exchanging with it), dosed by IV bolus, zero-order infusion or
//! first-order absorption from a depot (lag time `ALAG`, bioavailability `F`), with additional
//! doses (`ADDL`/`II`) and steady state (`SS=1`/`II`), as in NONMEM's ADVAN1–4/11–12 and
//! mrgsolve's `pk1`/`pk2` models.
//!
//! ## Method
//! The system is linear, so the amount in compartment *i* is a superposition over doses of the
//! compartment's unit-impulse response, written as a sum of exponentials
//! `h(t) = Σ_k c_k e^(−λ_k t)`. The coefficients come from the transfer function of the
//! mammillary model (Gibaldi & Perrier, *Pharmacokinetics*, 2nd ed., 1982, Appendix B; Rowland &
//! Tozer, *Clinical Pharmacokinetics*, ch. 19): for a dose into the central compartment
//! `A₁(s) = Π_p (s + k_p1) / D(s)` and `A_p(s) = k_1p Π_(q≠p)(s + k_q1) / D(s)`, where
//! `D(s) = det(sI − K)` has the disposition rate constants `λ_k` (α, β, γ) as roots; a depot dose
//! multiplies by `k_a/(s + k_a)`. Partial fractions with distinct poles give
//! `c_k = N(−λ_k) / Π_(m≠k)(λ_m − λ_k)`. A zero-order infusion of duration `T` integrates the
//! impulse response: `Σ c_k (1 − e^(−λ_k t))/λ_k` while it runs and
//! `Σ c_k (e^(λ_k T) − 1)/λ_k · e^(−λ_k t)` after. Steady state sums the geometric series of past
//! doses term by term: `Σ_(n≥1) e^(−λ(t+nτ)) = e^(−λ t) e^(−λτ)/(1 − e^(−λτ))`.
//!
//! The disposition roots are those of a quadratic (two compartments) or a cubic (three, solved by
//! the trigonometric method; all roots of a mammillary model are real and positive). When the
//! absorption rate equals a disposition rate (a double pole), `k_a` is moved by a relative 1e-7,
//! which changes concentrations by ≈ 1e-7 relative.
//!
//! Verified against the engine's ODE integrator (see the `ode` module and tests) and against
//! mrgsolve (two-compartment oral model, tests/model.rs).

use crate::Dose;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Number of compartments of the disposition model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Disposition {
    /// Central compartment only.
    OneCompartment,
    /// Central + one peripheral.
    TwoCompartment,
    /// Central + two peripherals.
    ThreeCompartment,
}

/// How drug enters the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Absorption {
    /// Intravenous: doses (bolus or infusion) go into the central compartment (NONMEM CMT 1).
    Intravenous,
    /// First-order absorption from a depot (NONMEM CMT 1 = depot, CMT 2 = central), with lag
    /// time `ALAG` and bioavailability `F` applied to depot doses.
    FirstOrder,
}

/// A structural PK model: disposition × absorption.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PkModel {
    /// Compartments.
    pub disposition: Disposition,
    /// Route.
    pub absorption: Absorption,
}

/// Why a model could not be built or evaluated.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ModelError {
    /// Unknown model name.
    #[error("unknown PK model '{0}': expected one of 1cpt-iv, 1cpt-oral, 2cpt-iv, 2cpt-oral, 3cpt-iv, 3cpt-oral")]
    UnknownModel(String),
    /// A parameter is missing, not finite or out of its domain.
    #[error("parameter {name} = {value} is invalid: {reason}")]
    BadParameter {
        /// NONMEM-style parameter name (e.g. `CL`).
        name: String,
        /// The value given.
        value: f64,
        /// What is required.
        reason: &'static str,
    },
    /// A dose that this model cannot take.
    #[error("dose at t = {time_h} h: {reason}")]
    BadDose {
        /// Dose time, h.
        time_h: f64,
        /// What is wrong.
        reason: String,
    },
}

/// PK parameters with NONMEM/mrgsolve names. Units: clearances L/h, volumes L (or per kg when
/// doses are per kg), rate constants 1/h, lag h, `f_bio` dimensionless.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PkParams {
    /// Elimination clearance `CL`, L/h.
    pub cl_l_per_h: f64,
    /// Central volume `V` (`V1`, mrgsolve `VC`), L.
    pub v1_l: f64,
    /// Intercompartmental clearance to peripheral 1 `Q` (`Q2`), L/h.
    pub q2_l_per_h: f64,
    /// Peripheral volume `V2` (mrgsolve `VP`), L.
    pub v2_l: f64,
    /// Intercompartmental clearance to peripheral 2 `Q3`, L/h.
    pub q3_l_per_h: f64,
    /// Peripheral volume `V3`, L.
    pub v3_l: f64,
    /// Absorption rate constant `KA`, 1/h.
    pub ka_per_h: f64,
    /// Absorption lag time `ALAG`, h.
    pub lag_h: f64,
    /// Bioavailability `F` of depot doses (0–1, may exceed 1 for relative F).
    pub f_bio: f64,
}

impl Default for PkParams {
    /// Unit clearance and volume, no peripheral exchange, `KA` 1/h, no lag, `F` = 1.
    fn default() -> Self {
        PkParams {
            cl_l_per_h: 1.0,
            v1_l: 1.0,
            q2_l_per_h: 0.0,
            v2_l: 1.0,
            q3_l_per_h: 0.0,
            v3_l: 1.0,
            ka_per_h: 1.0,
            lag_h: 0.0,
            f_bio: 1.0,
        }
    }
}

impl PkParams {
    /// Build from named values (NONMEM names, case-insensitive): `CL`, `V`/`V1`/`VC`, `Q`/`Q2`,
    /// `V2`/`VP`, `Q3`, `V3`, `KA`, `ALAG`, `F`; also `KE` (= CL/V, 1/h), from which `V` is
    /// derived when `V` is not given. Unknown names are an error.
    pub fn from_named<'a>(
        values: impl IntoIterator<Item = (&'a str, f64)>,
    ) -> Result<Self, ModelError> {
        let mut p = PkParams::default();
        let mut ke = None;
        let mut have_v = false;
        for (name, v) in values {
            let is = |a: &str| name.eq_ignore_ascii_case(a);
            if is("CL") {
                p.cl_l_per_h = v
            } else if is("V") || is("V1") || is("VC") {
                p.v1_l = v;
                have_v = true
            } else if is("Q") || is("Q2") {
                p.q2_l_per_h = v
            } else if is("V2") || is("VP") {
                p.v2_l = v
            } else if is("Q3") {
                p.q3_l_per_h = v
            } else if is("V3") {
                p.v3_l = v
            } else if is("KA") {
                p.ka_per_h = v
            } else if is("ALAG") || is("ALAG1") {
                p.lag_h = v
            } else if is("F") || is("F1") {
                p.f_bio = v
            } else if is("KE") || is("K") || is("K10") {
                ke = Some(v)
            } else {
                return Err(ModelError::BadParameter {
                    name: name.into(),
                    value: v,
                    reason: "unknown parameter name",
                });
            }
        }
        if let (Some(ke), false) = (ke, have_v) {
            p.v1_l = p.cl_l_per_h / ke;
        }
        Ok(p)
    }
}

impl PkModel {
    /// Parse `1cpt-iv`, `1cpt-oral`, `2cpt-iv`, `2cpt-oral`, `3cpt-iv`, `3cpt-oral`.
    pub fn parse(name: &str) -> Result<Self, ModelError> {
        let (d, a) = name
            .split_once('-')
            .ok_or_else(|| ModelError::UnknownModel(name.into()))?;
        let disposition = match d {
            "1cpt" => Disposition::OneCompartment,
            "2cpt" => Disposition::TwoCompartment,
            "3cpt" => Disposition::ThreeCompartment,
            _ => return Err(ModelError::UnknownModel(name.into())),
        };
        let absorption = match a {
            "iv" => Absorption::Intravenous,
            "oral" => Absorption::FirstOrder,
            _ => return Err(ModelError::UnknownModel(name.into())),
        };
        Ok(PkModel {
            disposition,
            absorption,
        })
    }

    /// The model's name as accepted by [`PkModel::parse`].
    pub fn name(&self) -> &'static str {
        match (self.disposition, self.absorption) {
            (Disposition::OneCompartment, Absorption::Intravenous) => "1cpt-iv",
            (Disposition::OneCompartment, Absorption::FirstOrder) => "1cpt-oral",
            (Disposition::TwoCompartment, Absorption::Intravenous) => "2cpt-iv",
            (Disposition::TwoCompartment, Absorption::FirstOrder) => "2cpt-oral",
            (Disposition::ThreeCompartment, Absorption::Intravenous) => "3cpt-iv",
            (Disposition::ThreeCompartment, Absorption::FirstOrder) => "3cpt-oral",
        }
    }

    /// The structural parameters this model uses, NONMEM names (the default parametrisation).
    pub fn parameter_names(&self) -> &'static [&'static str] {
        match (self.disposition, self.absorption) {
            (Disposition::OneCompartment, Absorption::Intravenous) => &["CL", "V"],
            (Disposition::OneCompartment, Absorption::FirstOrder) => &["CL", "V", "KA"],
            (Disposition::TwoCompartment, Absorption::Intravenous) => &["CL", "V", "Q", "V2"],
            (Disposition::TwoCompartment, Absorption::FirstOrder) => &["CL", "V", "Q", "V2", "KA"],
            (Disposition::ThreeCompartment, Absorption::Intravenous) => {
                &["CL", "V", "Q", "V2", "Q3", "V3"]
            }
            (Disposition::ThreeCompartment, Absorption::FirstOrder) => {
                &["CL", "V", "Q", "V2", "Q3", "V3", "KA"]
            }
        }
    }

    /// Number of peripheral compartments.
    pub fn n_peripheral(&self) -> usize {
        match self.disposition {
            Disposition::OneCompartment => 0,
            Disposition::TwoCompartment => 1,
            Disposition::ThreeCompartment => 2,
        }
    }

    /// Number of compartments including the depot: the length of [`PkModel::amounts`]'s output.
    /// Order: `[depot (oral only), central, peripheral 1, peripheral 2]`.
    pub fn n_compartments(&self) -> usize {
        1 + self.n_peripheral() + usize::from(self.absorption == Absorption::FirstOrder)
    }

    /// Index of the central compartment in the amount vector (0 for IV, 1 for oral).
    pub fn central_index(&self) -> usize {
        usize::from(self.absorption == Absorption::FirstOrder)
    }

    /// NONMEM compartment number (1-based) of the central compartment.
    pub fn central_cmt(&self) -> u32 {
        self.central_index() as u32 + 1
    }

    /// Check parameter domains: CL ≥ 0, V > 0, Q ≥ 0 and V2/V3 > 0 where used, KA > 0 for oral,
    /// ALAG ≥ 0, F ≥ 0, all finite.
    pub fn validate(&self, p: &PkParams) -> Result<(), ModelError> {
        let bad = |name: &str, value: f64, reason| {
            Err(ModelError::BadParameter {
                name: name.into(),
                value,
                reason,
            })
        };
        let checks: [(&str, f64, bool, &'static str); 3] = [
            (
                "CL",
                p.cl_l_per_h,
                p.cl_l_per_h >= 0.0,
                "must be finite and >= 0",
            ),
            ("V", p.v1_l, p.v1_l > 0.0, "must be finite and > 0"),
            ("F", p.f_bio, p.f_bio >= 0.0, "must be finite and >= 0"),
        ];
        for (n, v, ok, why) in checks {
            if !v.is_finite() || !ok {
                return bad(n, v, why);
            }
        }
        if self.n_peripheral() >= 1 {
            if !(p.q2_l_per_h.is_finite() && p.q2_l_per_h >= 0.0) {
                return bad("Q", p.q2_l_per_h, "must be finite and >= 0");
            }
            if !(p.v2_l.is_finite() && p.v2_l > 0.0) {
                return bad("V2", p.v2_l, "must be finite and > 0");
            }
        }
        if self.n_peripheral() == 2 {
            if !(p.q3_l_per_h.is_finite() && p.q3_l_per_h >= 0.0) {
                return bad("Q3", p.q3_l_per_h, "must be finite and >= 0");
            }
            if !(p.v3_l.is_finite() && p.v3_l > 0.0) {
                return bad("V3", p.v3_l, "must be finite and > 0");
            }
        }
        if self.absorption == Absorption::FirstOrder {
            if !(p.ka_per_h.is_finite() && p.ka_per_h > 0.0) {
                return bad("KA", p.ka_per_h, "must be finite and > 0");
            }
            if !(p.lag_h.is_finite() && p.lag_h >= 0.0) {
                return bad("ALAG", p.lag_h, "must be finite and >= 0");
            }
        }
        Ok(())
    }

    /// Micro rate constants `(k10, [(k1p, kp1); peripherals])`, 1/h.
    fn micro(&self, p: &PkParams) -> (f64, Vec<(f64, f64)>) {
        let k10 = p.cl_l_per_h / p.v1_l;
        let mut per = Vec::new();
        if self.n_peripheral() >= 1 {
            per.push((p.q2_l_per_h / p.v1_l, p.q2_l_per_h / p.v2_l));
        }
        if self.n_peripheral() == 2 {
            per.push((p.q3_l_per_h / p.v1_l, p.q3_l_per_h / p.v3_l));
        }
        (k10, per)
    }

    /// Disposition rate constants (roots of `D(s) = det(sI − K)` negated), 1/h, largest first.
    pub fn disposition_rates(&self, p: &PkParams) -> Vec<f64> {
        let (k10, per) = self.micro(p);
        match per.len() {
            0 => vec![k10],
            1 => {
                let (k12, k21) = per[0];
                let b = k10 + k12 + k21;
                let c = k10 * k21;
                let disc = (b * b - 4.0 * c).max(0.0).sqrt();
                let alpha = 0.5 * (b + disc);
                // β = c/α avoids cancellation when β ≪ α.
                let beta = if alpha > 0.0 { c / alpha } else { 0.0 };
                vec![alpha, beta]
            }
            _ => {
                let (k12, k21) = per[0];
                let (k13, k31) = per[1];
                // λ³ − a2 λ² + a1 λ − a0 = 0 for the rates λ (s = −λ).
                let a2 = k10 + k12 + k13 + k21 + k31;
                let a1 = k10 * k21 + k10 * k31 + k21 * k31 + k12 * k31 + k13 * k21;
                let a0 = k10 * k21 * k31;
                cubic_real_roots(a2, a1, a0)
            }
        }
    }

    /// Impulse response of compartment `to` (index in the amount vector) to a unit dose into
    /// compartment `from` at t = 0: `(c_k, λ_k)` pairs with `A(t) = Σ c_k e^(−λ_k t)`.
    fn impulse(&self, p: &PkParams, from: usize, to: usize) -> Vec<(f64, f64)> {
        let (_, per) = self.micro(p);
        let oral = self.absorption == Absorption::FirstOrder;
        let ci = self.central_index();
        let mut poles = self.disposition_rates(p);
        if oral && from == 0 {
            if to == 0 {
                return vec![(1.0, p.ka_per_h)];
            }
            let mut ka = p.ka_per_h;
            while poles.iter().any(|&l| (l - ka).abs() <= 1e-7 * ka.max(l)) {
                ka *= 1.0 + 1e-7;
            }
            poles.push(ka);
        } else if oral && to == 0 {
            return Vec::new();
        }
        // Numerator N(s) as a product of (s + r) factors times a gain.
        let (gain, roots): (f64, Vec<f64>) = if to == ci {
            (1.0, per.iter().map(|&(_, kp1)| kp1).collect())
        } else {
            let pi = to - ci - 1;
            let (k1p, _) = per[pi];
            let others = per
                .iter()
                .enumerate()
                .filter(|&(q, _)| q != pi)
                .map(|(_, &(_, kq1))| kq1)
                .collect();
            (k1p, others)
        };
        let gain = if oral && from == 0 {
            gain * poles[poles.len() - 1]
        } else {
            gain
        };
        poles
            .iter()
            .enumerate()
            .map(|(k, &lk)| {
                let num: f64 = roots.iter().map(|&r| r - lk).product::<f64>() * gain;
                let den: f64 = poles
                    .iter()
                    .enumerate()
                    .filter(|&(m, _)| m != k)
                    .map(|(_, &lm)| lm - lk)
                    .product();
                (num / den, lk)
            })
            .collect()
    }

    /// Amounts in every compartment at `t_h` (hours) after all `doses` given up to and
    /// including `t_h` (a bolus at exactly `t_h` counts). Output order as
    /// [`PkModel::n_compartments`]. Units: the doses' amount unit.
    ///
    /// Errors: invalid parameters ([`PkModel::validate`]); a dose into a compartment other
    /// than the depot/central (CMT 1/2 oral, CMT 1 IV); an `SS`/`ADDL` dose without `II > 0`;
    /// an infusion longer than its steady-state interval.
    pub fn amounts(&self, p: &PkParams, doses: &[Dose], t_h: f64) -> Result<Vec<f64>, ModelError> {
        let all: Vec<usize> = (0..self.n_compartments()).collect();
        let v = self.evaluate(p, doses, &[t_h], &all)?;
        Ok(v.into_iter().map(|row| row[0]).collect())
    }

    /// Central concentration at `t_h` (amount unit / volume unit): central amount / `V`.
    pub fn concentration(&self, p: &PkParams, doses: &[Dose], t_h: f64) -> Result<f64, ModelError> {
        Ok(self.concentrations(p, doses, &[t_h])?[0])
    }

    /// Central concentrations at each of `times_h` (any order); the impulse responses are
    /// computed once for all times.
    pub fn concentrations(
        &self,
        p: &PkParams,
        doses: &[Dose],
        times_h: &[f64],
    ) -> Result<Vec<f64>, ModelError> {
        let ci = self.central_index();
        let mut v = self.evaluate(p, doses, times_h, &[ci])?;
        let mut c = v.pop().unwrap_or_default();
        for x in c.iter_mut() {
            *x /= p.v1_l;
        }
        Ok(c)
    }

    /// Amounts of compartments `targets` (rows) at `times_h` (columns).
    fn evaluate(
        &self,
        p: &PkParams,
        doses: &[Dose],
        times_h: &[f64],
        targets: &[usize],
    ) -> Result<Vec<Vec<f64>>, ModelError> {
        self.validate(p)?;
        let n = self.n_compartments();
        for d in doses {
            self.dose_compartment(d)?;
            let dur = self.duration(p, d);
            if (d.ss || d.addl > 0) && !(d.ii_h > 0.0 && d.ii_h.is_finite()) {
                return Err(ModelError::BadDose {
                    time_h: d.time_h,
                    reason: "SS or ADDL needs II > 0".into(),
                });
            }
            if d.ss && dur > d.ii_h {
                return Err(ModelError::BadDose {
                    time_h: d.time_h,
                    reason: format!(
                        "steady-state infusion of {dur} h is longer than its interval II = {} h",
                        d.ii_h
                    ),
                });
            }
        }
        // responses[from][k] for each target k
        let responses: Vec<Vec<Vec<(f64, f64)>>> = (0..n)
            .map(|from| {
                targets
                    .iter()
                    .map(|&to| self.impulse(p, from, to))
                    .collect()
            })
            .collect();
        let mut out = vec![vec![0.0; times_h.len()]; targets.len()];
        for (ti, &t_h) in times_h.iter().enumerate() {
            // NONMEM SS=1: the last steady-state dose record at or before t resets the system
            // at the record's time (with a lag, the past doses of the series act until the
            // record's own dose arrives).
            let start = doses
                .iter()
                .rposition(|d| d.ss && d.time_h <= t_h)
                .unwrap_or(0);
            for d in &doses[start..] {
                let from = d.cmt as usize - 1;
                let (amount, t0) = self.effective(p, d);
                let ss_active = d.ss && d.time_h <= t_h;
                if t0 > t_h && !ss_active {
                    continue;
                }
                let dur = self.duration(p, d);
                for (k, row) in out.iter_mut().enumerate() {
                    let h = &responses[from][k];
                    let mut acc = 0.0;
                    for j in 0..=d.addl {
                        let tj = t0 + j as f64 * d.ii_h;
                        if tj > t_h {
                            break;
                        }
                        acc += unit_response(h, t_h - tj, dur);
                    }
                    if ss_active {
                        acc += ss_past_response(h, t_h - t0, dur, d.ii_h);
                    }
                    row[ti] += amount * acc;
                }
            }
        }
        Ok(out)
    }

    /// Index in the amount vector that a dose enters (NONMEM `CMT`).
    pub fn dose_compartment(&self, d: &Dose) -> Result<usize, ModelError> {
        let max = match self.absorption {
            Absorption::Intravenous => 1,
            Absorption::FirstOrder => 2,
        };
        if d.cmt == 0 || d.cmt > max {
            return Err(ModelError::BadDose {
                time_h: d.time_h,
                reason: format!(
                    "CMT {} is not a dosing compartment of model {} (allowed: 1..={max})",
                    d.cmt,
                    self.name()
                ),
            });
        }
        Ok(d.cmt as usize - 1)
    }

    /// Dose amount after bioavailability and its start time after the lag (depot doses only).
    fn effective(&self, p: &PkParams, d: &Dose) -> (f64, f64) {
        if self.absorption == Absorption::FirstOrder && d.cmt == 1 {
            (d.amount * p.f_bio, d.time_h + p.lag_h)
        } else {
            (d.amount, d.time_h)
        }
    }

    /// Infusion duration, h (0 for a bolus). With a fixed `RATE`, bioavailability changes the
    /// duration to `F·AMT/RATE` (NONMEM and mrgsolve semantics), not the rate.
    fn duration(&self, p: &PkParams, d: &Dose) -> f64 {
        if d.rate > 0.0 {
            self.effective(p, d).0 / d.rate
        } else {
            0.0
        }
    }
}

/// Response at `t ≥ 0` after a unit dose (bolus when `dur == 0`, else a zero-order infusion of
/// total amount 1 over `dur` hours).
fn unit_response(h: &[(f64, f64)], t: f64, dur: f64) -> f64 {
    if dur <= 0.0 {
        return h.iter().map(|&(c, l)| c * (-l * t).exp()).sum();
    }
    let rate = 1.0 / dur;
    if t < dur {
        rate * h.iter().map(|&(c, l)| c * integral_exp(l, t)).sum::<f64>()
    } else {
        rate * h
            .iter()
            .map(|&(c, l)| c * integral_exp(l, dur) * (-l * (t - dur)).exp())
            .sum::<f64>()
    }
}

/// `∫₀ᵗ e^(−λ u) du = (1 − e^(−λ t))/λ`, accurate for small `λ t`.
fn integral_exp(l: f64, t: f64) -> f64 {
    if (l * t).abs() < 1e-8 {
        t * (1.0 - 0.5 * l * t)
    } else {
        -(-l * t).exp_m1() / l
    }
}

/// Sum over the infinitely many doses before the steady-state dose (at `−τ, −2τ, …` relative to
/// the current dose) of the unit response at `t` after the current dose; needs `dur ≤ τ`.
/// `t` may be negative (down to `−ALAG`, before the current dose has arrived): past doses whose
/// arrival is still ahead contribute nothing, those still infusing their partial response, the
/// rest a geometric series `Σ_(n≥n₁) e^(−λ(t+nτ))`.
fn ss_past_response(h: &[(f64, f64)], t: f64, dur: f64, tau: f64) -> f64 {
    // Past doses n = 1, …, n1 − 1 have not finished (or not started) their infusion at t.
    let mut n1 = 1u64;
    let mut head = 0.0;
    while t + n1 as f64 * tau < dur.max(0.0) || t + (n1 as f64) * tau < 0.0 {
        let u = t + n1 as f64 * tau;
        if u >= 0.0 {
            head += unit_response(h, u, dur);
        }
        n1 += 1;
    }
    let u1 = t + n1 as f64 * tau;
    head + h
        .iter()
        .map(|&(c, l)| {
            if c == 0.0 {
                return 0.0; // e.g. the zero pole of an uncoupled peripheral (Q = 0)
            }
            // The post-dose form of one past dose at u ≥ dur, summed over n ≥ n1.
            let first = if dur <= 0.0 {
                c * (-l * u1).exp()
            } else {
                c * integral_exp(l, dur) / dur * (-l * (u1 - dur)).exp()
            };
            first / -(-l * tau).exp_m1()
        })
        .sum::<f64>()
}

/// Real roots of `λ³ − a2 λ² + a1 λ − a0 = 0` (three real roots for a mammillary model),
/// largest first; trigonometric method (Nickalls 1993, Math Gazette 77:354).
fn cubic_real_roots(a2: f64, a1: f64, a0: f64) -> Vec<f64> {
    // Depressed cubic via λ = x + a2/3: x³ + p x + q = 0.
    let s = a2 / 3.0;
    let p = a1 - a2 * a2 / 3.0;
    let q = -2.0 * s * s * s + a1 * s - a0;
    let m = (-p / 3.0).max(0.0).sqrt();
    let mut roots: Vec<f64> = if m == 0.0 {
        vec![s, s, s]
    } else {
        let arg = (-q / (2.0 * m * m * m)).clamp(-1.0, 1.0);
        let th = arg.acos() / 3.0;
        (0..3)
            .map(|k| s + 2.0 * m * (th - 2.0 * std::f64::consts::PI * k as f64 / 3.0).cos())
            .collect()
    };
    // Polish each root with Newton steps on the original cubic.
    for r in roots.iter_mut() {
        for _ in 0..3 {
            let f = ((*r - a2) * *r + a1) * *r - a0;
            let df = (3.0 * *r - 2.0 * a2) * *r + a1;
            if df.abs() > 0.0 {
                *r -= f / df;
            }
        }
    }
    roots.sort_by(|a, b| b.total_cmp(a));
    roots
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cubic_roots_reproduce_coefficients() {
        // (λ−3)(λ−1)(λ−0.1) = λ³ − 4.1λ² + 3.4λ − 0.3
        let r = cubic_real_roots(4.1, 3.4, 0.3);
        assert!((r[0] - 3.0).abs() < 1e-12 && (r[1] - 1.0).abs() < 1e-12);
        assert!((r[2] - 0.1).abs() < 1e-12, "{r:?}");
    }

    #[test]
    fn one_compartment_bolus_is_exponential() {
        let m = PkModel::parse("1cpt-iv").unwrap();
        let p = PkParams::from_named([("CL", 2.0), ("V", 10.0)]).unwrap();
        let c = m
            .concentration(&p, &[Dose::bolus(0.0, 100.0, 1)], 3.0)
            .unwrap();
        assert!((c - 10.0 * (-0.2f64 * 3.0).exp()).abs() < 1e-13);
    }
}
