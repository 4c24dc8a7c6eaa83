//! Drugs: Hill-equation block of INa, INaL, Ito, ICaL, IKs, IK1 and the Li et al. (2017)
//! dynamic hERG binding; per-drug TOML input and the 12 bundled CiPA training drugs.
//!
//! A drug file:
//!
//! ```toml
//! name = "mydrug"
//! cmax_nm = 2.0                  # therapeutic free Cmax, nM (doses are multiples of it)
//! tdp_risk = "high"              # optional: "high" | "intermediate" | "low"
//! [herg]                         # dynamic hERG binding (Li et al. 2017)
//! kmax = 35.1                    # dimensionless
//! ku_per_ms = 1.816e-05          # 1/ms
//! n = 1.08                       # Hill coefficient
//! halfmax_nm_n = 216.6           # nM^n
//! vhalf_mv = -1.0                # mV
//! [block.ical]                   # any of ina, inal, ito, ical, iks, ik1; omitted = no block
//! ic50_nm = 260.3
//! hill = 1.163
//! ```
//!
//! Conductance factor under block: `1 / (1 + (D/IC50)^h)` (reference `get_pars.R`).

use crate::error::CardiacError;
use crate::model::{ConductanceScales, HergBinding, OrdParams};
use serde::Deserialize;
use std::collections::BTreeMap;

/// The bundled training-drug table (TOML), see `data/cipa_training_drugs.toml`.
pub const BUNDLED_TOML: &str = include_str!("../data/cipa_training_drugs.toml");

/// Trapping rate constant the reference uses for every drug, 1/ms.
pub const KT_PER_MS: f64 = 3.5e-5;

/// Hill block of one current.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HillBlock {
    /// Concentration of half block, nM.
    pub ic50_nm: f64,
    /// Hill coefficient.
    pub hill: f64,
}

impl HillBlock {
    /// Remaining conductance fraction at `conc_nm`: `1/(1+(D/IC50)^h)`.
    pub fn remaining(&self, conc_nm: f64) -> f64 {
        1.0 / (1.0 + (conc_nm / self.ic50_nm).powf(self.hill))
    }
}

/// Hill blocks per current (all optional).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Blocks {
    /// Fast sodium current.
    pub ina: Option<HillBlock>,
    /// Late sodium current.
    pub inal: Option<HillBlock>,
    /// Transient outward current.
    pub ito: Option<HillBlock>,
    /// L-type calcium current.
    pub ical: Option<HillBlock>,
    /// Slow delayed rectifier.
    pub iks: Option<HillBlock>,
    /// Inward rectifier.
    pub ik1: Option<HillBlock>,
}

/// Dynamic hERG binding parameters of a drug (Li et al. 2017).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HergDrug {
    /// Maximal drug effect.
    pub kmax: f64,
    /// Unbinding rate, 1/ms.
    pub ku_per_ms: f64,
    /// Hill coefficient of binding.
    pub n: f64,
    /// Half-maximal binding, nM^n.
    pub halfmax_nm_n: f64,
    /// Trapping half voltage, mV.
    pub vhalf_mv: f64,
}

/// A drug: Cmax, hERG binding and Hill blocks.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Drug {
    /// Name (lower case for bundled drugs).
    pub name: String,
    /// Therapeutic free Cmax, nM.
    pub cmax_nm: f64,
    /// CiPA TdP risk category when known: "high", "intermediate" or "low".
    #[serde(default)]
    pub tdp_risk: Option<String>,
    /// Dynamic hERG binding.
    pub herg: HergDrug,
    /// Hill block of the other currents.
    #[serde(default)]
    pub block: Blocks,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DrugTable {
    drug: Vec<Drug>,
}

fn check(
    drug: &str,
    field: &str,
    value: f64,
    ok: bool,
    why: &'static str,
) -> Result<(), CardiacError> {
    if ok && value.is_finite() {
        Ok(())
    } else {
        Err(CardiacError::InvalidParameter {
            drug: drug.to_string(),
            field: field.to_string(),
            value,
            why,
        })
    }
}

impl Drug {
    /// Parse one drug from TOML text; `source_name` names the file in errors.
    pub fn from_toml(text: &str, source_name: &str) -> Result<Drug, CardiacError> {
        let d: Drug = toml::from_str(text).map_err(|e| CardiacError::DrugToml {
            source_name: source_name.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        d.validate()?;
        Ok(d)
    }

    /// Check every parameter's range (names the field and value).
    pub fn validate(&self) -> Result<(), CardiacError> {
        let n = &self.name;
        check(
            n,
            "cmax_nm",
            self.cmax_nm,
            self.cmax_nm > 0.0,
            "must be > 0",
        )?;
        let h = &self.herg;
        check(n, "herg.kmax", h.kmax, h.kmax >= 0.0, "must be ≥ 0")?;
        check(
            n,
            "herg.ku_per_ms",
            h.ku_per_ms,
            h.ku_per_ms >= 0.0,
            "must be ≥ 0",
        )?;
        check(n, "herg.n", h.n, h.n > 0.0, "must be > 0")?;
        check(
            n,
            "herg.halfmax_nm_n",
            h.halfmax_nm_n,
            h.halfmax_nm_n > 0.0,
            "must be > 0",
        )?;
        check(n, "herg.vhalf_mv", h.vhalf_mv, true, "must be finite")?;
        if let Some(r) = &self.tdp_risk {
            if !matches!(r.as_str(), "high" | "intermediate" | "low") {
                return Err(CardiacError::DrugToml {
                    source_name: n.clone(),
                    message: format!(
                        "tdp_risk = \"{r}\": expected \"high\", \"intermediate\" or \"low\""
                    ),
                });
            }
        }
        for (cur, b) in self.blocks() {
            if let Some(b) = b {
                check(
                    n,
                    &format!("block.{cur}.ic50_nm"),
                    b.ic50_nm,
                    b.ic50_nm > 0.0,
                    "must be > 0",
                )?;
                check(
                    n,
                    &format!("block.{cur}.hill"),
                    b.hill,
                    b.hill > 0.0,
                    "must be > 0",
                )?;
            }
        }
        Ok(())
    }

    fn blocks(&self) -> [(&'static str, Option<HillBlock>); 6] {
        let b = &self.block;
        [
            ("ina", b.ina),
            ("inal", b.inal),
            ("ito", b.ito),
            ("ical", b.ical),
            ("iks", b.iks),
            ("ik1", b.ik1),
        ]
    }

    /// Model parameters at free concentration `conc_nm` (reference `get_pars.R`: Hill factors
    /// only when `conc_nm > 0`, then the Dutta scalings; hERG binding with Kt = 3.5e-5 /ms).
    pub fn params_at(&self, conc_nm: f64) -> OrdParams {
        let mut p = OrdParams::control();
        let s: &mut ConductanceScales = &mut p.scale;
        if conc_nm > 0.0 {
            let b = &self.block;
            let f = |x: Option<HillBlock>| x.map_or(1.0, |h| h.remaining(conc_nm));
            s.gna *= f(b.ina);
            s.gnal *= f(b.inal);
            s.gto *= f(b.ito);
            s.pca *= f(b.ical);
            s.gks *= f(b.iks);
            s.gk1 *= f(b.ik1);
        }
        p.binding = HergBinding {
            kmax: self.herg.kmax,
            ku_per_ms: self.herg.ku_per_ms,
            n: self.herg.n,
            halfmax: self.herg.halfmax_nm_n,
            vhalf_mv: self.herg.vhalf_mv,
            kt_per_ms: KT_PER_MS,
        };
        p.drug_nm = conc_nm;
        p
    }
}

/// The 12 CiPA training drugs (bundled, validated), in the file's order.
pub fn bundled_drugs() -> Vec<Drug> {
    let t: DrugTable = toml::from_str(BUNDLED_TOML).expect("bundled drug table parses");
    t.drug
}

/// A bundled drug by (case-insensitive) name.
pub fn bundled_drug(name: &str) -> Result<Drug, CardiacError> {
    let all = bundled_drugs();
    let by_name: BTreeMap<String, Drug> = all.iter().map(|d| (d.name.clone(), d.clone())).collect();
    by_name
        .get(&name.to_lowercase())
        .cloned()
        .ok_or_else(|| CardiacError::UnknownDrug {
            name: name.to_string(),
            known: all
                .iter()
                .map(|d| d.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_table_has_twelve_valid_drugs() {
        let d = bundled_drugs();
        assert_eq!(d.len(), 12);
        for x in &d {
            x.validate().unwrap();
        }
        let dof = bundled_drug("Dofetilide").unwrap();
        assert_eq!(dof.cmax_nm, 2.0);
        assert!(dof.block.iks.is_none());
        assert!(matches!(
            bundled_drug("aspirin"),
            Err(CardiacError::UnknownDrug { .. })
        ));
    }

    #[test]
    fn hill_factors_follow_the_reference() {
        let dof = bundled_drug("dofetilide").unwrap();
        let p = dof.params_at(8.0);
        let ical = 1.0 / (1.0 + (8.0f64 / 260.3).powf(1.163));
        assert!((p.scale.pca - 1.007 * ical).abs() < 1e-15);
        assert_eq!(p.scale.gks, 1.870);
        let p0 = dof.params_at(0.0);
        assert_eq!(p0.scale, ConductanceScales::dutta2017());
    }

    #[test]
    fn bad_toml_names_field() {
        let t = "name = \"x\"\ncmax_nm = -1\n[herg]\nkmax = 1\nku_per_ms = 1\nn = 1\nhalfmax_nm_n = 1\nvhalf_mv = 0\n";
        let e = Drug::from_toml(t, "x.toml").unwrap_err().to_string();
        assert!(e.contains("cmax_nm") && e.contains("-1"), "{e}");
        let e = Drug::from_toml("name = 3", "y.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("y.toml"), "{e}");
    }
}
