//! Virtual populations from the 30 simglucose virtual patients.
//!
//! **Method** (one model per age group, fitted on that group's 10 bundled patients):
//! 1. *Free parameters*: the 25 parameters of the UVA/Padova S2008 model that are not fixed by
//!    the basal steady state ([`FREE_PARAMS`]), transformed to an unbounded scale: natural log,
//!    except the gastric-emptying fractions `b` and `d` (logit). Parameters that are constant
//!    in the source population (`HEb = 0.6`, `f = 0.9`, `ke1`, `ke2`, `Fsnc`) are held fixed.
//! 2. *Multivariate normal with a singular covariance*: 10 patients and 25 dimensions give a
//!    rank-≤ 9 sample covariance. We standardise each transformed parameter by its group SD, take
//!    the principal components of the resulting correlation matrix (through the eigenvectors of
//!    the 10 × 10 Gram matrix, cyclic Jacobi) and keep the leading components explaining
//!    ≥ 99 % of the variance ([`VARIANCE_KEPT`]); a candidate is `μ + s ⊙ Σ_k ξ_k·√λ_k·w_k`,
//!    `ξ_k ~ N(0, 1)`: a normal with the sample mean and the rank-reduced sample covariance.
//! 3. *Derived parameters* (Dalla Man et al. 2007, IEEE TBME 54:1740, basal relations, as the
//!    simglucose table was built — [`steady_state_patient`] reproduces every bundled patient):
//!    `Gpb = Gb·Vg`; `Ipb = Ib·Vi`; `m2 = 0.6·CL/(HEb·Vi·BW)`; `m4 = 0.4·CL/(Vi·BW)`;
//!    `m30 = HEb·m1/(1 − HEb)`; `Ilb = m2·Ipb/(m1 + m30)`; `u2ss = (m2 + m4)·Ipb − m1·Ilb`;
//!    `Et = ke1·max(Gpb − ke2, 0)`; `Gtb = (Fsnc + Et − EGPb + k1·Gpb)/k2`;
//!    `Vm0 = (EGPb − Fsnc − Et)·(Km0 + Gtb)/Gtb`; `kp1 = EGPb + kp2·Gpb + kp3·Ib`;
//!    `Isc1 = u2ss/(kd + ka1)`, `Isc2 = kd·Isc1/ka2`; basal state
//!    `x0 = (0, 0, 0, Gpb, Gtb, Ipb, 0, Ib, Ib, Ilb, Isc1, Isc2, Gpb)`.
//! 4. *Therapy parameters* (not part of the physiology; used by the controllers): within each
//!    group, ordinary least squares on the source patients of `ln TDI` on `ln(basal U/day)`
//!    (basal = `u2ss·BW/6000·1440`), then `ln CR` and `ln CF` on `ln TDI`; a generated patient
//!    gets the regression prediction plus a normal residual with the regression's residual SD.
//!    Age is drawn uniformly among the whole years of the group's observed range.
//! 5. *Acceptance–rejection* (Allen, Rieger & Musante 2016, CPT Pharmacometrics Syst Pharmacol
//!    5:140): a candidate is kept if its steady state exists (`Gtb > 0`, `EGPb > Fsnc + Et`,
//!    `kmin < kmax`, all derived rates positive and finite) and its basal glucose, basal insulin
//!    requirement (U/day), CR and CF lie within the group's observed range widened by
//!    [`PLAUSIBILITY_MARGIN`] (a factor 1.2 beyond each extreme on the log scale).
//!
//! Reproducibility: patient `i` is drawn from its own stream (`ChaCha8Rng::seed_from_u64(seed)`,
//! `set_stream(i)`), so a cohort of `n` patients is the prefix of any larger cohort with the same
//! seed, and generation is independent of thread count.

use crate::linalg::{ols, symmetric_eigen};
use medtwin_t1d::PatientParams;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use rayon::prelude::*;
use serde::Serialize;
use std::fmt;
use std::str::FromStr;
use thiserror::Error;

/// Fraction of standardised variance kept by the principal components.
pub const VARIANCE_KEPT: f64 = 0.99;
/// Widening of the observed plausibility ranges: accepted if `lo/1.2 ≤ value ≤ hi·1.2`.
pub const PLAUSIBILITY_MARGIN: f64 = 1.2;
/// The only source population: the 30 virtual patients bundled with simglucose 0.2.11.
pub const SOURCE_SIMGLUCOSE_30: &str = "simglucose-30";
/// Largest cohort [`generate_cohort`] will make.
pub const MAX_COHORT: usize = 10_000_000;
/// Candidates drawn per patient before giving up (acceptance rate far too low).
pub const MAX_ATTEMPTS_PER_PATIENT: usize = 10_000;

/// Errors of cohort generation.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum CohortError {
    /// Unknown source population.
    #[error("cohort.from: unknown source '{0}' (expected \"simglucose-30\" or a .parquet file)")]
    UnknownSource(String),
    /// Unknown age group.
    #[error("cohort.group: unknown group '{0}' (expected child, adolescent, adult or all)")]
    UnknownGroup(String),
    /// Cohort size out of range.
    #[error("cohort.n: {0} is outside 1..={MAX_COHORT}")]
    BadSize(usize),
    /// The bundled parameter table could not be read.
    #[error("bundled patients: {0}")]
    Bundled(String),
    /// Rejection sampling failed for a patient.
    #[error(
        "patient {index} ({group}): no plausible candidate in {MAX_ATTEMPTS_PER_PATIENT} draws"
    )]
    Exhausted {
        /// Cohort index.
        index: usize,
        /// Age group.
        group: Group,
    },
}

/// Age group of the simglucose population.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Group {
    /// `child#…` (7–12 years).
    Child,
    /// `adolescent#…` (14–19 years).
    Adolescent,
    /// `adult#…` (26–68 years).
    Adult,
    /// All three, patient `i` from group `[adolescent, adult, child][i % 3]`.
    All,
}

impl Group {
    /// The three concrete groups, in the order used by [`Group::All`].
    pub const CONCRETE: [Group; 3] = [Group::Adolescent, Group::Adult, Group::Child];
    /// Lower-case name (`child`, `adolescent`, `adult`, `all`), the prefix of patient names.
    pub fn name(self) -> &'static str {
        match self {
            Group::Child => "child",
            Group::Adolescent => "adolescent",
            Group::Adult => "adult",
            Group::All => "all",
        }
    }
    /// The concrete group of cohort patient `index` (itself unless [`Group::All`]).
    pub fn of_index(self, index: usize) -> Group {
        match self {
            Group::All => Group::CONCRETE[index % 3],
            g => g,
        }
    }
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Group {
    type Err = CohortError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "child" => Ok(Group::Child),
            "adolescent" => Ok(Group::Adolescent),
            "adult" => Ok(Group::Adult),
            "all" => Ok(Group::All),
            _ => Err(CohortError::UnknownGroup(s.to_string())),
        }
    }
}

/// Names of the free (sampled) parameters, in vector order. Units as in
/// [`medtwin_t1d::PatientParams`]; `EGPb` (mg/kg/min), `Gb` (mg/dL), `CL` (L/min) are the paper's.
pub const FREE_PARAMS: [&str; 25] = [
    "BW", "EGPb", "Gb", "Ib", "kabs", "kmax", "kmin", "b", "d", "Vg", "Vi", "Vmx", "Km0", "k1",
    "k2", "p2u", "m1", "CL", "ki", "kp2", "kp3", "kd", "ksc", "ka1", "ka2",
];
const LOGIT: [bool; 25] = {
    let mut a = [false; 25];
    a[7] = true;
    a[8] = true;
    a
};

/// Parameters held constant (taken from the source group): `HEb`, `f`, `ke1`, `ke2`, `Fsnc`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FixedParams {
    /// Basal hepatic insulin extraction, fraction.
    pub heb: f64,
    /// Fraction of intestinal absorption appearing in plasma.
    pub f: f64,
    /// Renal excretion rate, 1/min.
    pub ke1: f64,
    /// Renal threshold, mg/kg.
    pub ke2: f64,
    /// Insulin-independent utilisation, mg/kg/min.
    pub fsnc: f64,
}

/// Free parameters of a bundled patient (natural scale, order of [`FREE_PARAMS`]) and its fixed
/// parameters, recovered from the basal relations (inverse of [`steady_state_patient`]).
pub fn free_params_of(p: &PatientParams) -> ([f64; 25], FixedParams) {
    let gpb = p.x0[3];
    let heb = p.m30 / (p.m1 + p.m30);
    let egpb = p.kp1 - p.kp2 * gpb - p.kp3 * p.ib;
    let cl = p.m4 * p.vi * p.bw / 0.4;
    let free = [
        p.bw,
        egpb,
        gpb / p.vg,
        p.ib,
        p.kabs,
        p.kmax,
        p.kmin,
        p.b,
        p.d,
        p.vg,
        p.vi,
        p.vmx,
        p.km0,
        p.k1,
        p.k2,
        p.p2u,
        p.m1,
        cl,
        p.ki,
        p.kp2,
        p.kp3,
        p.kd,
        p.ksc,
        p.ka1,
        p.ka2,
    ];
    let fixed = FixedParams {
        heb,
        f: p.f,
        ke1: p.ke1,
        ke2: p.ke2,
        fsnc: p.fsnc,
    };
    (free, fixed)
}

/// Therapy settings of a patient: carbohydrate ratio (g/U), correction factor (mg/dL/U), total
/// daily insulin (U/day) and age (years).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Therapy {
    /// Carbohydrate ratio, g/U.
    pub cr_g_per_u: f64,
    /// Correction factor, mg/dL per U.
    pub cf_mg_dl_per_u: f64,
    /// Total daily insulin, U/day.
    pub tdi_u_per_day: f64,
    /// Age, years.
    pub age_years: f64,
}

/// Why a candidate has no valid steady state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SteadyStateFailure {
    /// A free parameter is non-finite or non-positive (or a fraction outside (0, 1)).
    BadParameter,
    /// `Gtb ≤ 0`: tissue glucose at basal would be negative.
    NegativeTissueGlucose,
    /// `EGPb ≤ Fsnc + Et`: no insulin-dependent utilisation left at basal (`Vm0 ≤ 0`).
    NoInsulinDependentUptake,
    /// `kmin ≥ kmax`.
    GastricRates,
    /// A derived quantity is not finite and positive.
    Derived,
}

/// Build a full parameter set from free parameters (natural scale, [`FREE_PARAMS`] order), fixed
/// parameters and therapy settings by the basal relations of the module documentation.
/// Errors: [`SteadyStateFailure`] when the basal state does not exist.
pub fn steady_state_patient(
    name: &str,
    free: &[f64; 25],
    fixed: &FixedParams,
    therapy: &Therapy,
) -> Result<PatientParams, SteadyStateFailure> {
    let [bw, egpb, gb, ib, kabs, kmax, kmin, b, d, vg, vi, vmx, km0, k1, k2, p2u, m1, cl, ki, kp2, kp3, kd, ksc, ka1, ka2] =
        *free;
    for (i, v) in free.iter().enumerate() {
        if !v.is_finite() || *v <= 0.0 || (LOGIT[i] && *v >= 1.0) {
            return Err(SteadyStateFailure::BadParameter);
        }
    }
    if kmin >= kmax {
        return Err(SteadyStateFailure::GastricRates);
    }
    let FixedParams {
        heb,
        f,
        ke1,
        ke2,
        fsnc,
    } = *fixed;
    let gpb = gb * vg;
    let ipb = ib * vi;
    let m2 = 0.6 * cl / (heb * vi * bw);
    let m4 = 0.4 * cl / (vi * bw);
    let m30 = heb * m1 / (1.0 - heb);
    let ilb = m2 * ipb / (m1 + m30);
    let u2ss = (m2 + m4) * ipb - m1 * ilb;
    let et = if gpb > ke2 { ke1 * (gpb - ke2) } else { 0.0 };
    let gtb = (fsnc + et - egpb + k1 * gpb) / k2;
    if gtb <= 0.0 || !gtb.is_finite() {
        return Err(SteadyStateFailure::NegativeTissueGlucose);
    }
    let uidb = egpb - fsnc - et;
    if uidb <= 0.0 {
        return Err(SteadyStateFailure::NoInsulinDependentUptake);
    }
    let vm0 = uidb * (km0 + gtb) / gtb;
    let kp1 = egpb + kp2 * gpb + kp3 * ib;
    let isc1 = u2ss / (kd + ka1);
    let isc2 = kd * isc1 / ka2;
    for v in [m2, m4, m30, ilb, u2ss, vm0, kp1, isc1, isc2] {
        if !v.is_finite() || v <= 0.0 {
            return Err(SteadyStateFailure::Derived);
        }
    }
    Ok(PatientParams {
        name: name.to_string(),
        x0: [
            0.0, 0.0, 0.0, gpb, gtb, ipb, 0.0, ib, ib, ilb, isc1, isc2, gpb,
        ],
        bw,
        ib,
        kabs,
        kmax,
        kmin,
        b,
        d,
        vg,
        vi,
        vmx,
        km0,
        k1,
        k2,
        p2u,
        m1,
        m2,
        m4,
        m30,
        ki,
        kp1,
        kp2,
        kp3,
        f,
        ke1,
        ke2,
        fsnc,
        vm0,
        kd,
        ka1,
        ka2,
        ksc,
        u2ss,
        cr_g_per_u: therapy.cr_g_per_u,
        cf_mg_dl_per_u: therapy.cf_mg_dl_per_u,
        age_years: therapy.age_years,
        tdi_u_per_day: therapy.tdi_u_per_day,
    })
}

/// Basal insulin requirement, U/day (`u2ss·BW/6000·1440`).
pub fn basal_u_per_day(p: &PatientParams) -> f64 {
    p.basal_u_per_min() * 1440.0
}

fn to_unbounded(i: usize, v: f64) -> f64 {
    if LOGIT[i] {
        (v / (1.0 - v)).ln()
    } else {
        v.ln()
    }
}
fn from_unbounded(i: usize, y: f64) -> f64 {
    if LOGIT[i] {
        1.0 / (1.0 + (-y).exp())
    } else {
        y.exp()
    }
}

/// An observed range `[lo, hi]` (natural scale).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Range {
    /// Smallest observed value.
    pub lo: f64,
    /// Largest observed value.
    pub hi: f64,
}

impl Range {
    fn of(v: impl Iterator<Item = f64>) -> Range {
        v.fold(
            Range {
                lo: f64::INFINITY,
                hi: f64::NEG_INFINITY,
            },
            |r, x| Range {
                lo: r.lo.min(x),
                hi: r.hi.max(x),
            },
        )
    }
    /// Whether `v` lies within the range widened by [`PLAUSIBILITY_MARGIN`].
    pub fn admits(&self, v: f64) -> bool {
        v.is_finite() && v >= self.lo / PLAUSIBILITY_MARGIN && v <= self.hi * PLAUSIBILITY_MARGIN
    }
}

/// The fitted population model of one age group.
#[derive(Debug, Clone, Serialize)]
pub struct GroupModel {
    /// The group.
    pub group: Group,
    /// Mean of the transformed free parameters (log, logit for `b`, `d`).
    pub mean: Vec<f64>,
    /// SD of the transformed free parameters (n − 1).
    pub sd: Vec<f64>,
    /// Kept principal directions scaled by √λ, in standardised units (`components[k][j]`).
    pub components: Vec<Vec<f64>>,
    /// Fraction of standardised variance explained by the kept components.
    pub variance_explained: f64,
    /// Fixed parameters of the group.
    pub fixed: FixedParams,
    /// `ln TDI = a + b·ln basal_u_per_day` : (a, b, residual SD).
    pub tdi_on_basal: (f64, f64, f64),
    /// `ln CR = a + b·ln TDI`: (a, b, residual SD).
    pub cr_on_tdi: (f64, f64, f64),
    /// `ln CF = a + b·ln TDI`: (a, b, residual SD).
    pub cf_on_tdi: (f64, f64, f64),
    /// Observed basal glucose, mg/dL.
    pub range_gb: Range,
    /// Observed basal insulin requirement, U/day.
    pub range_basal: Range,
    /// Observed CR, g/U.
    pub range_cr: Range,
    /// Observed CF, mg/dL/U.
    pub range_cf: Range,
    /// Observed age, years.
    pub range_age: Range,
}

/// The 10 bundled patients of a concrete group. Errors: the bundled table is unreadable.
pub fn source_patients(group: Group) -> Result<Vec<PatientParams>, CohortError> {
    let all = medtwin_t1d::all_patients().map_err(|e| CohortError::Bundled(e.to_string()))?;
    Ok(all
        .into_iter()
        .filter(|p| group == Group::All || p.group() == group.name())
        .collect())
}

impl GroupModel {
    /// Fit the model of a concrete group (not [`Group::All`]) on the bundled patients.
    /// Errors: the bundled table is unreadable or degenerate.
    pub fn fit(group: Group) -> Result<GroupModel, CohortError> {
        let src = source_patients(group)?;
        let n = src.len();
        if n < 3 || group == Group::All {
            return Err(CohortError::Bundled(format!(
                "group {group}: {n} source patients, need a concrete group with ≥ 3"
            )));
        }
        let nf = n as f64;
        let rows: Vec<[f64; 25]> = src
            .iter()
            .map(|p| {
                let (free, _) = free_params_of(p);
                let mut y = [0.0; 25];
                for (i, v) in free.iter().enumerate() {
                    y[i] = to_unbounded(i, *v);
                }
                y
            })
            .collect();
        let (_, fixed) = free_params_of(&src[0]);
        let mean: Vec<f64> = (0..25)
            .map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / nf)
            .collect();
        let sd: Vec<f64> = (0..25)
            .map(|j| {
                (rows.iter().map(|r| (r[j] - mean[j]).powi(2)).sum::<f64>() / (nf - 1.0)).sqrt()
            })
            .collect();
        // standardised data Z (n × 25); zero-SD columns stay 0
        let z: Vec<Vec<f64>> = rows
            .iter()
            .map(|r| {
                (0..25)
                    .map(|j| {
                        if sd[j] > 0.0 {
                            (r[j] - mean[j]) / sd[j]
                        } else {
                            0.0
                        }
                    })
                    .collect()
            })
            .collect();
        let mut gram = vec![0.0; n * n];
        for a in 0..n {
            for b in 0..n {
                gram[a * n + b] =
                    z[a].iter().zip(&z[b]).map(|(x, y)| x * y).sum::<f64>() / (nf - 1.0);
            }
        }
        let (vals, vecs) = symmetric_eigen(&gram, n);
        let total: f64 = vals.iter().filter(|v| **v > 0.0).sum();
        let mut components = Vec::new();
        let mut kept = 0.0;
        for (l, v) in vals.iter().zip(&vecs) {
            if *l <= 1e-12 * total || kept >= VARIANCE_KEPT * total {
                break;
            }
            // direction in parameter space scaled by √λ: Zᵀ v / √(n − 1)
            let w: Vec<f64> = (0..25)
                .map(|j| (0..n).map(|a| z[a][j] * v[a]).sum::<f64>() / (nf - 1.0).sqrt())
                .collect();
            components.push(w);
            kept += l;
        }
        let lbasal: Vec<f64> = src.iter().map(|p| basal_u_per_day(p).ln()).collect();
        let ltdi: Vec<f64> = src.iter().map(|p| p.tdi_u_per_day.ln()).collect();
        let lcr: Vec<f64> = src.iter().map(|p| p.cr_g_per_u.ln()).collect();
        let lcf: Vec<f64> = src.iter().map(|p| p.cf_mg_dl_per_u.ln()).collect();
        let degenerate = || CohortError::Bundled(format!("group {group}: degenerate regression"));
        Ok(GroupModel {
            group,
            mean,
            sd,
            components,
            variance_explained: kept / total,
            fixed,
            tdi_on_basal: ols(&lbasal, &ltdi).ok_or_else(degenerate)?,
            cr_on_tdi: ols(&ltdi, &lcr).ok_or_else(degenerate)?,
            cf_on_tdi: ols(&ltdi, &lcf).ok_or_else(degenerate)?,
            range_gb: Range::of(src.iter().map(|p| p.basal_glucose_mg_dl())),
            range_basal: Range::of(src.iter().map(basal_u_per_day)),
            range_cr: Range::of(src.iter().map(|p| p.cr_g_per_u)),
            range_cf: Range::of(src.iter().map(|p| p.cf_mg_dl_per_u)),
            range_age: Range::of(src.iter().map(|p| p.age_years)),
        })
    }

    /// Draw one candidate (may be implausible): returns the parameters or why it failed.
    pub fn candidate<R: Rng + ?Sized>(
        &self,
        name: &str,
        rng: &mut R,
    ) -> Result<PatientParams, Rejection> {
        let mut y = self.mean.clone();
        for w in &self.components {
            let xi: f64 = rng.sample(StandardNormal);
            for j in 0..25 {
                y[j] += self.sd[j] * xi * w[j];
            }
        }
        let mut free = [0.0; 25];
        for (j, v) in free.iter_mut().enumerate() {
            *v = from_unbounded(j, y[j]);
        }
        // therapy: regressions with residual noise (drawn before plausibility checks so the
        // number of draws per candidate is fixed)
        let e_tdi: f64 = rng.sample(StandardNormal);
        let e_cr: f64 = rng.sample(StandardNormal);
        let e_cf: f64 = rng.sample(StandardNormal);
        let age_lo = self.range_age.lo.round() as i64;
        let age_hi = self.range_age.hi.round().max(age_lo as f64) as i64;
        let age = rng.random_range(age_lo..=age_hi) as f64;
        let provisional = Therapy {
            cr_g_per_u: 1.0,
            cf_mg_dl_per_u: 1.0,
            tdi_u_per_day: 1.0,
            age_years: age,
        };
        let mut p = steady_state_patient(name, &free, &self.fixed, &provisional)
            .map_err(Rejection::SteadyState)?;
        let basal = basal_u_per_day(&p);
        let (a, b, s) = self.tdi_on_basal;
        let ltdi = a + b * basal.ln() + s * e_tdi;
        let (a, b, s) = self.cr_on_tdi;
        p.cr_g_per_u = (a + b * ltdi + s * e_cr).exp();
        let (a, b, s) = self.cf_on_tdi;
        p.cf_mg_dl_per_u = (a + b * ltdi + s * e_cf).exp();
        p.tdi_u_per_day = ltdi.exp().max(basal);
        if !self.range_gb.admits(p.basal_glucose_mg_dl()) {
            return Err(Rejection::BasalGlucose);
        }
        if !self.range_basal.admits(basal) {
            return Err(Rejection::BasalInsulin);
        }
        if !self.range_cr.admits(p.cr_g_per_u) {
            return Err(Rejection::CarbRatio);
        }
        if !self.range_cf.admits(p.cf_mg_dl_per_u) {
            return Err(Rejection::CorrectionFactor);
        }
        Ok(p)
    }
}

/// Why a candidate was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// No valid basal steady state.
    SteadyState(SteadyStateFailure),
    /// Basal glucose outside the widened observed range.
    BasalGlucose,
    /// Basal insulin requirement (U/day) outside the widened observed range.
    BasalInsulin,
    /// Carbohydrate ratio outside the widened observed range.
    CarbRatio,
    /// Correction factor outside the widened observed range.
    CorrectionFactor,
}

/// Acceptance statistics of one group.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Acceptance {
    /// Candidates drawn.
    pub drawn: u64,
    /// Candidates accepted.
    pub accepted: u64,
    /// Rejected: no steady state.
    pub rejected_steady_state: u64,
    /// Rejected: basal glucose.
    pub rejected_basal_glucose: u64,
    /// Rejected: basal insulin.
    pub rejected_basal_insulin: u64,
    /// Rejected: CR.
    pub rejected_cr: u64,
    /// Rejected: CF.
    pub rejected_cf: u64,
}

impl Acceptance {
    /// Accepted / drawn (NaN if nothing was drawn).
    pub fn rate(&self) -> f64 {
        self.accepted as f64 / self.drawn as f64
    }
    fn add(&mut self, o: &Acceptance) {
        self.drawn += o.drawn;
        self.accepted += o.accepted;
        self.rejected_steady_state += o.rejected_steady_state;
        self.rejected_basal_glucose += o.rejected_basal_glucose;
        self.rejected_basal_insulin += o.rejected_basal_insulin;
        self.rejected_cr += o.rejected_cr;
        self.rejected_cf += o.rejected_cf;
    }
    fn reject(&mut self, r: Rejection) {
        match r {
            Rejection::SteadyState(_) => self.rejected_steady_state += 1,
            Rejection::BasalGlucose => self.rejected_basal_glucose += 1,
            Rejection::BasalInsulin => self.rejected_basal_insulin += 1,
            Rejection::CarbRatio => self.rejected_cr += 1,
            Rejection::CorrectionFactor => self.rejected_cf += 1,
        }
    }
}

/// A generated cohort with its acceptance statistics.
#[derive(Debug, Clone)]
pub struct GeneratedCohort {
    /// Patients in cohort order; names `<group>#v<seed>-<index from 1, 6 digits>`.
    pub patients: Vec<PatientParams>,
    /// Acceptance statistics per concrete group present, in [`Group::CONCRETE`] order.
    pub acceptance: Vec<(Group, Acceptance)>,
}

impl fmt::Display for GeneratedCohort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} virtual patients", self.patients.len())?;
        for (g, a) in &self.acceptance {
            writeln!(
                f,
                "  {g:<10} accepted {}/{} = {:.1} % (rejected: steady state {}, basal glucose {}, basal insulin {}, CR {}, CF {})",
                a.accepted,
                a.drawn,
                100.0 * a.rate(),
                a.rejected_steady_state,
                a.rejected_basal_glucose,
                a.rejected_basal_insulin,
                a.rejected_cr,
                a.rejected_cf
            )?;
        }
        Ok(())
    }
}

/// Generate `n` virtual patients of `group` from the source population `from` (only
/// `"simglucose-30"`) with `seed`, by the method of the module documentation. Runs on the rayon
/// pool; the result does not depend on the thread count.
/// Errors: unknown source, `n` outside `1..=MAX_COHORT`, or a patient with no plausible
/// candidate in [`MAX_ATTEMPTS_PER_PATIENT`] draws.
pub fn generate_cohort(
    from: &str,
    group: Group,
    n: usize,
    seed: u64,
) -> Result<GeneratedCohort, CohortError> {
    if from != SOURCE_SIMGLUCOSE_30 {
        return Err(CohortError::UnknownSource(from.to_string()));
    }
    if n == 0 || n > MAX_COHORT {
        return Err(CohortError::BadSize(n));
    }
    let models: Vec<GroupModel> = Group::CONCRETE
        .iter()
        .map(|g| GroupModel::fit(*g))
        .collect::<Result<_, _>>()?;
    let model_of = |g: Group| {
        let k = Group::CONCRETE.iter().position(|c| *c == g).unwrap_or(0);
        &models[k]
    };
    let results: Vec<Result<(PatientParams, Acceptance), CohortError>> = (0..n)
        .into_par_iter()
        .map(|i| {
            let g = group.of_index(i);
            let m = model_of(g);
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(i as u64);
            let name = format!("{g}#v{seed}-{:06}", i + 1);
            let mut acc = Acceptance::default();
            for _ in 0..MAX_ATTEMPTS_PER_PATIENT {
                acc.drawn += 1;
                match m.candidate(&name, &mut rng) {
                    Ok(p) => {
                        acc.accepted += 1;
                        return Ok((p, acc));
                    }
                    Err(r) => acc.reject(r),
                }
            }
            Err(CohortError::Exhausted { index: i, group: g })
        })
        .collect();
    let mut patients = Vec::with_capacity(n);
    let mut acceptance: Vec<(Group, Acceptance)> = Vec::new();
    for (i, r) in results.into_iter().enumerate() {
        let (p, a) = r?;
        let g = group.of_index(i);
        match acceptance.iter_mut().find(|(h, _)| *h == g) {
            Some((_, t)) => t.add(&a),
            None => acceptance.push((g, a)),
        }
        patients.push(p);
    }
    acceptance.sort_by_key(|(g, _)| Group::CONCRETE.iter().position(|c| c == g));
    Ok(GeneratedCohort {
        patients,
        acceptance,
    })
}

/// One row of the marginal comparison of generated and source populations (transformed scale:
/// log, logit for `b`, `d`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MarginalRow {
    /// Concrete group.
    pub group: Group,
    /// Parameter name ([`FREE_PARAMS`] or `CR`, `CF`, `TDI`, `basal_u_per_day`).
    pub parameter: String,
    /// Source mean.
    pub source_mean: f64,
    /// Source SD (n − 1).
    pub source_sd: f64,
    /// Generated mean.
    pub generated_mean: f64,
    /// Generated SD (n − 1).
    pub generated_sd: f64,
}

fn transformed(p: &PatientParams) -> Vec<(String, f64)> {
    let (free, _) = free_params_of(p);
    let mut v: Vec<(String, f64)> = free
        .iter()
        .enumerate()
        .map(|(i, x)| (FREE_PARAMS[i].to_string(), to_unbounded(i, *x)))
        .collect();
    v.push(("CR".into(), p.cr_g_per_u.ln()));
    v.push(("CF".into(), p.cf_mg_dl_per_u.ln()));
    v.push(("TDI".into(), p.tdi_u_per_day.ln()));
    v.push(("basal_u_per_day".into(), basal_u_per_day(p).ln()));
    v
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let s = if v.len() > 1 {
        (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    (m, s)
}

/// Compare the marginal means and SDs of every transformed parameter between the generated
/// `patients` and the bundled source patients, per concrete group present (group from the name
/// prefix). Errors: the bundled table is unreadable.
pub fn compare_marginals(patients: &[PatientParams]) -> Result<Vec<MarginalRow>, CohortError> {
    let mut out = Vec::new();
    for g in Group::CONCRETE {
        let gen: Vec<Vec<(String, f64)>> = patients
            .iter()
            .filter(|p| p.group() == g.name())
            .map(transformed)
            .collect();
        if gen.is_empty() {
            continue;
        }
        let src: Vec<Vec<(String, f64)>> = source_patients(g)?.iter().map(transformed).collect();
        for k in 0..gen[0].len() {
            let (sm, ss) = mean_sd(&src.iter().map(|r| r[k].1).collect::<Vec<_>>());
            let (gm, gs) = mean_sd(&gen.iter().map(|r| r[k].1).collect::<Vec<_>>());
            out.push(MarginalRow {
                group: g,
                parameter: gen[0][k].0.clone(),
                source_mean: sm,
                source_sd: ss,
                generated_mean: gm,
                generated_sd: gs,
            });
        }
    }
    Ok(out)
}

/// Write the marginal comparison as CSV (`group,parameter,source_mean,source_sd,
/// generated_mean,generated_sd`; transformed scale). Errors: I/O, naming the file.
pub fn write_marginals_csv(path: &std::path::Path, rows: &[MarginalRow]) -> Result<(), String> {
    let mut s = String::from("group,parameter,source_mean,source_sd,generated_mean,generated_sd\n");
    for r in rows {
        s += &format!(
            "{},{},{:.6},{:.6},{:.6},{:.6}\n",
            r.group, r.parameter, r.source_mean, r.source_sd, r.generated_mean, r.generated_sd
        );
    }
    std::fs::write(path, s).map_err(|e| format!("{}: {e}", path.display()))
}

/// Write the marginal comparison as an SVG figure: for each group a panel with one row per
/// parameter showing the standardised difference of means `(generated − source)/source SD`
/// (dot) and the SD ratio `generated/source` minus 1 (cross), with ±0.35 guide lines.
/// Errors: drawing or I/O, naming the file.
pub fn write_marginals_svg(path: &std::path::Path, rows: &[MarginalRow]) -> Result<(), String> {
    use plotters::prelude::*;
    let groups: Vec<Group> = Group::CONCRETE
        .into_iter()
        .filter(|g| rows.iter().any(|r| r.group == *g))
        .collect();
    let params: Vec<String> = {
        let mut v: Vec<String> = Vec::new();
        for r in rows {
            if !v.contains(&r.parameter) {
                v.push(r.parameter.clone());
            }
        }
        v
    };
    let e = |x: &dyn std::fmt::Display| format!("{}: {x}", path.display());
    let h = 40 + 18 * params.len() as u32;
    let root = SVGBackend::new(path, (320 * groups.len().max(1) as u32, h)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let panels = root.split_evenly((1, groups.len().max(1)));
    for (g, area) in groups.iter().zip(panels.iter()) {
        let np = params.len() as f64;
        let mut chart = ChartBuilder::on(area)
            .caption(format!("{g}: generated vs source"), ("sans-serif", 14))
            .margin(6)
            .x_label_area_size(40)
            .y_label_area_size(110)
            .build_cartesian_2d(-1.5f64..1.5f64, -0.5f64..np - 0.5)
            .map_err(|x| e(&x))?;
        let labels = params.clone();
        chart
            .configure_mesh()
            .y_labels(params.len())
            .x_labels(7)
            .light_line_style(WHITE)
            .y_label_formatter(&|y| {
                let i = y.round() as i64;
                if (y - i as f64).abs() < 1e-6 && i >= 0 && (i as usize) < labels.len() {
                    labels[labels.len() - 1 - i as usize].clone()
                } else {
                    String::new()
                }
            })
            .x_desc("Δmean/SD (dot), SD ratio − 1 (cross)")
            .draw()
            .map_err(|x| e(&x))?;
        for xg in [-0.35, 0.0, 0.35] {
            chart
                .draw_series(LineSeries::new(
                    vec![(xg, -0.5), (xg, np - 0.5)],
                    RGBColor(180, 180, 180),
                ))
                .map_err(|x| e(&x))?;
        }
        let pts: Vec<(f64, f64, f64)> = rows
            .iter()
            .filter(|r| r.group == *g)
            .filter_map(|r| {
                let i = params.iter().position(|p| *p == r.parameter)?;
                let y = np - 1.0 - i as f64;
                let sd = r.source_sd.max(1e-12);
                let dm = ((r.generated_mean - r.source_mean) / sd).clamp(-1.5, 1.5);
                let dr = (r.generated_sd / sd - 1.0).clamp(-1.5, 1.5);
                Some((y, dm, dr))
            })
            .collect();
        chart
            .draw_series(
                pts.iter()
                    .map(|(y, dm, _)| Circle::new((*dm, *y), 3, BLUE.filled())),
            )
            .map_err(|x| e(&x))?;
        chart
            .draw_series(pts.iter().map(|(y, _, dr)| Cross::new((*dr, *y), 3, RED)))
            .map_err(|x| e(&x))?;
    }
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use medtwin_simulate::SolverOptions;
    use medtwin_t1d::VirtualPatient;

    #[test]
    fn steady_state_relations_reproduce_every_bundled_patient() {
        for p in medtwin_t1d::all_patients().unwrap() {
            let (free, fixed) = free_params_of(&p);
            let th = Therapy {
                cr_g_per_u: p.cr_g_per_u,
                cf_mg_dl_per_u: p.cf_mg_dl_per_u,
                tdi_u_per_day: p.tdi_u_per_day,
                age_years: p.age_years,
            };
            let q = steady_state_patient(&p.name, &free, &fixed, &th).unwrap();
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1e-9);
            for (i, (a, b)) in p.x0.iter().zip(&q.x0).enumerate() {
                assert!(close(*a, *b), "{} x0[{i}]: {a} vs {b}", p.name);
            }
            for (n, a, b) in [
                ("m2", p.m2, q.m2),
                ("m4", p.m4, q.m4),
                ("m30", p.m30, q.m30),
                ("vm0", p.vm0, q.vm0),
                ("kp1", p.kp1, q.kp1),
                ("u2ss", p.u2ss, q.u2ss),
            ] {
                assert!(close(a, b), "{} {n}: {a} vs {b}", p.name);
            }
        }
    }

    #[test]
    fn generated_patients_hold_basal_glucose_for_24h() {
        let c = generate_cohort("simglucose-30", Group::All, 200, 3).unwrap();
        assert_eq!(c.patients.len(), 200);
        let opts = SolverOptions::default();
        let mut worst: f64 = 0.0;
        for p in &c.patients {
            let g0 = p.basal_glucose_mg_dl();
            let basal = p.basal_u_per_min();
            let mut vp = VirtualPatient::new(p.clone(), opts);
            for _ in 0..1440 {
                vp.step(0.0, basal).unwrap();
                worst = worst.max((vp.sc_glucose_mg_dl() - g0).abs());
                worst = worst.max((vp.plasma_glucose_mg_dl() - g0).abs());
            }
        }
        assert!(worst < 1.0, "drift {worst} mg/dL");
    }

    #[test]
    fn marginal_means_match_source_and_generation_is_reproducible() {
        for g in [Group::Child, Group::Adolescent, Group::Adult] {
            let c = generate_cohort("simglucose-30", g, 1500, 11).unwrap();
            let rows = compare_marginals(&c.patients).unwrap();
            assert_eq!(rows.len(), 29);
            for r in &rows {
                // within 0.35 source SD (rejection truncates the tails a little)
                let tol = 0.35 * r.source_sd + 1e-9;
                assert!(
                    (r.generated_mean - r.source_mean).abs() <= tol,
                    "{g} {}: generated {} vs source {} (sd {})",
                    r.parameter,
                    r.generated_mean,
                    r.source_mean,
                    r.source_sd
                );
            }
            let dir = std::env::temp_dir();
            let csv = dir.join(format!("medtwin-marg-{}-{g}.csv", std::process::id()));
            let svg = csv.with_extension("svg");
            write_marginals_csv(&csv, &rows).unwrap();
            write_marginals_svg(&svg, &rows).unwrap();
            assert!(std::fs::read_to_string(&svg).unwrap().contains("<svg"));
            assert_eq!(std::fs::read_to_string(&csv).unwrap().lines().count(), 30);
            std::fs::remove_file(csv).unwrap();
            std::fs::remove_file(svg).unwrap();
            let a = c.acceptance[0].1;
            assert!(a.rate() > 0.05, "{g}: acceptance {}", a.rate());
        }
        let a = generate_cohort("simglucose-30", Group::Adult, 20, 5).unwrap();
        let b = generate_cohort("simglucose-30", Group::Adult, 10, 5).unwrap();
        assert_eq!(&a.patients[..10], &b.patients[..]);
        assert!(generate_cohort("simglucose-30", Group::Adult, 0, 5).is_err());
        assert!(matches!(
            generate_cohort("nope", Group::Adult, 3, 5),
            Err(CohortError::UnknownSource(_))
        ));
        assert!("teen".parse::<Group>().is_err());
    }
}
