//! The 30 virtual patients of the UVA/Padova S2008 simulator as distributed with simglucose 0.2.11
//! (`data/vpatient_params.csv`, `data/Quest.csv`; provenance and licence in `data/PROVENANCE.md`).

use serde::{Deserialize, Serialize};
use thiserror::Error;

static VPATIENT_CSV: &str = include_str!("../data/vpatient_params.csv");
static QUEST_CSV: &str = include_str!("../data/Quest.csv");

/// Errors from looking up or building patient parameters.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ParamsError {
    /// No bundled virtual patient has this name.
    #[error("unknown patient '{0}': expected one of adolescent#001..#010, adult#001..#010, child#001..#010")]
    UnknownPatient(String),
    /// A bundled CSV could not be parsed (a build defect, reported rather than panicking).
    #[error("bundled parameter table is malformed: {0}")]
    Malformed(String),
    /// A parameter is outside its physical range.
    #[error("parameter '{name}' = {value} is invalid: {why}")]
    Invalid {
        /// Parameter name.
        name: String,
        /// Offending value.
        value: f64,
        /// Reason.
        why: String,
    },
}

/// UVA/Padova S2008 parameters of one patient, as used by simglucose's right-hand side.
///
/// Units follow Dalla Man et al. 2007 (IEEE TBME 54:1740, Table 1) and Kovatchev et al. 2009:
/// rate constants in 1/min, volumes in dL/kg (`vg`) or L/kg (`vi`), masses per kg body weight.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatientParams {
    /// Patient name, e.g. `adult#001`.
    pub name: String,
    /// Initial state (13 values, order of [`crate::model::STATE_NAMES`]).
    pub x0: [f64; 13],
    /// Body weight, kg.
    pub bw: f64,
    /// Basal plasma insulin, pmol/L.
    pub ib: f64,
    /// Intestinal absorption rate, 1/min.
    pub kabs: f64,
    /// Max / min gastric emptying rates, 1/min.
    pub kmax: f64,
    pub kmin: f64,
    /// Gastric emptying shape parameters (fractions of the dose; `d` is the paper's c), dimensionless.
    pub b: f64,
    pub d: f64,
    /// Glucose distribution volume, dL/kg.
    pub vg: f64,
    /// Insulin distribution volume, L/kg.
    pub vi: f64,
    /// Insulin-dependent utilisation: Vmx (mg/kg/min per pmol/L), Km0 (mg/kg).
    pub vmx: f64,
    pub km0: f64,
    /// Glucose kinetics rate constants, 1/min.
    pub k1: f64,
    pub k2: f64,
    /// Rate of insulin action on peripheral glucose utilisation, 1/min.
    pub p2u: f64,
    /// Insulin kinetics rate constants, 1/min.
    pub m1: f64,
    pub m2: f64,
    pub m4: f64,
    pub m30: f64,
    /// Rate of delayed insulin signal, 1/min.
    pub ki: f64,
    /// Endogenous glucose production: kp1 (mg/kg/min), kp2 (1/min), kp3 (mg/kg/min per pmol/L).
    pub kp1: f64,
    pub kp2: f64,
    pub kp3: f64,
    /// Fraction of intestinal absorption appearing in plasma, dimensionless.
    pub f: f64,
    /// Renal excretion rate (1/min) and threshold (mg/kg).
    pub ke1: f64,
    pub ke2: f64,
    /// Insulin-independent utilisation, mg/kg/min.
    pub fsnc: f64,
    /// Basal insulin-dependent utilisation, mg/kg/min.
    pub vm0: f64,
    /// Subcutaneous insulin rate constants, 1/min.
    pub kd: f64,
    pub ka1: f64,
    pub ka2: f64,
    /// Subcutaneous glucose rate constant, 1/min.
    pub ksc: f64,
    /// Steady-state basal insulin infusion, pmol/kg/min.
    pub u2ss: f64,
    /// Carbohydrate ratio, g/U (Quest.csv).
    pub cr_g_per_u: f64,
    /// Correction factor, mg/dL per U (Quest.csv).
    pub cf_mg_dl_per_u: f64,
    /// Age, years (Quest.csv).
    pub age_years: f64,
    /// Total daily insulin, U/day (Quest.csv).
    pub tdi_u_per_day: f64,
}

impl PatientParams {
    /// Basal insulin rate that holds this patient at steady state, U/min (`u2ss·BW/6000`).
    pub fn basal_u_per_min(&self) -> f64 {
        self.u2ss * self.bw / medtwin_core::units::INSULIN_PMOL_PER_U
    }
    /// Age group from the name: `"child"`, `"adolescent"` or `"adult"`.
    pub fn group(&self) -> &str {
        self.name.split('#').next().unwrap_or("")
    }
    /// Basal subcutaneous glucose, mg/dL (initial `Gs/Vg`).
    pub fn basal_glucose_mg_dl(&self) -> f64 {
        self.x0[12] / self.vg
    }
}

fn table(csv_text: &str) -> Result<(Vec<String>, Vec<Vec<String>>), ParamsError> {
    let mut rdr = csv::Reader::from_reader(csv_text.as_bytes());
    let header = rdr
        .headers()
        .map_err(|e| ParamsError::Malformed(e.to_string()))?
        .iter()
        .map(|s| s.trim().to_string())
        .collect();
    let mut rows = Vec::new();
    for r in rdr.records() {
        let r = r.map_err(|e| ParamsError::Malformed(e.to_string()))?;
        rows.push(r.iter().map(|s| s.trim().to_string()).collect());
    }
    Ok((header, rows))
}

fn get(header: &[String], row: &[String], col: &str) -> Result<f64, ParamsError> {
    let i = header
        .iter()
        .position(|h| h == col)
        .ok_or_else(|| ParamsError::Malformed(format!("missing column {col}")))?;
    row.get(i)
        .and_then(|v| v.parse::<f64>().ok())
        .ok_or_else(|| ParamsError::Malformed(format!("bad value in column {col}")))
}

/// Names of the 30 bundled virtual patients, in table order (adolescents, adults, children).
pub fn patient_names() -> Vec<String> {
    VPATIENT_CSV
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').next())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Parameters of the bundled virtual patient `name` (e.g. `"adult#001"`).
/// Errors: [`ParamsError::UnknownPatient`].
pub fn patient(name: &str) -> Result<PatientParams, ParamsError> {
    let (h, rows) = table(VPATIENT_CSV)?;
    let row = rows
        .iter()
        .find(|r| r.first().map(String::as_str) == Some(name))
        .ok_or_else(|| ParamsError::UnknownPatient(name.to_string()))?;
    let (qh, qrows) = table(QUEST_CSV)?;
    let q = qrows
        .iter()
        .find(|r| r.first().map(String::as_str) == Some(name))
        .ok_or_else(|| ParamsError::Malformed(format!("{name} missing from Quest.csv")))?;
    let g = |c: &str| get(&h, row, c);
    let mut x0 = [0.0; 13];
    for (i, x) in x0.iter_mut().enumerate() {
        *x = g(&format!("x0_{:>2}", i + 1))?;
    }
    Ok(PatientParams {
        name: name.to_string(),
        x0,
        bw: g("BW")?,
        ib: g("Ib")?,
        kabs: g("kabs")?,
        kmax: g("kmax")?,
        kmin: g("kmin")?,
        b: g("b")?,
        d: g("d")?,
        vg: g("Vg")?,
        vi: g("Vi")?,
        vmx: g("Vmx")?,
        km0: g("Km0")?,
        k1: g("k1")?,
        k2: g("k2")?,
        p2u: g("p2u")?,
        m1: g("m1")?,
        m2: g("m2")?,
        m4: g("m4")?,
        m30: g("m30")?,
        ki: g("ki")?,
        kp1: g("kp1")?,
        kp2: g("kp2")?,
        kp3: g("kp3")?,
        f: g("f")?,
        ke1: g("ke1")?,
        ke2: g("ke2")?,
        fsnc: g("Fsnc")?,
        vm0: g("Vm0")?,
        kd: g("kd")?,
        ka1: g("ka1")?,
        ka2: g("ka2")?,
        ksc: g("ksc")?,
        u2ss: g("u2ss")?,
        cr_g_per_u: get(&qh, q, "CR")?,
        cf_mg_dl_per_u: get(&qh, q, "CF")?,
        age_years: get(&qh, q, "Age")?,
        tdi_u_per_day: get(&qh, q, "TDI")?,
    })
}

/// All 30 bundled virtual patients.
pub fn all_patients() -> Result<Vec<PatientParams>, ParamsError> {
    patient_names().iter().map(|n| patient(n)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn thirty_patients_with_expected_values() {
        let all = all_patients().unwrap();
        assert_eq!(all.len(), 30);
        let a1 = patient("adult#001").unwrap();
        assert_eq!(a1.cr_g_per_u, 10.0);
        // u2ss/(ka1+kd) = isc1ss (NOTES §2 unit check)
        assert!((a1.u2ss / (a1.ka1 + a1.kd) - a1.x0[10]).abs() < 1e-3);
        assert!(matches!(
            patient("adult#011"),
            Err(ParamsError::UnknownPatient(_))
        ));
        assert_eq!(all.iter().filter(|p| p.group() == "child").count(), 10);
    }
}
