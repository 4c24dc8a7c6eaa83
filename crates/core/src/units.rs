//! Unit conversions shared by every layer. Each conversion exists here once.
//!
//! Codes follow UCUM (Unified Code for Units of Measure): `mg/dL`, `mmol/L`, `U` (insulin unit,
//! UCUM `[iU]`), `g`, `U/h`, `min`.

/// mg/dL of glucose per mmol/L: molar mass of glucose C6H12O6 = 180.156 g/mol, so
/// 1 mmol/L = 180.156 mg/L = 18.0156 mg/dL.
pub const GLUCOSE_MG_DL_PER_MMOL_L: f64 = 18.0156;

/// pmol of insulin per international unit, the convention of the UVA/Padova simulator
/// (1 U = 6000 pmol; Kovatchev et al. 2009).
pub const INSULIN_PMOL_PER_U: f64 = 6000.0;

/// Convert glucose from mmol/L to mg/dL.
pub fn glucose_mmol_l_to_mg_dl(mmol_l: f64) -> f64 {
    mmol_l * GLUCOSE_MG_DL_PER_MMOL_L
}

/// Convert glucose from mg/dL to mmol/L.
pub fn glucose_mg_dl_to_mmol_l(mg_dl: f64) -> f64 {
    mg_dl / GLUCOSE_MG_DL_PER_MMOL_L
}

/// A glucose unit accepted at the I/O edge, by UCUM code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlucoseUnit {
    /// `mg/dL`
    MgDl,
    /// `mmol/L`
    MmolL,
}

impl GlucoseUnit {
    /// Parse a UCUM code (case-insensitive; `mg/dl`, `mmol/l` also accepted).
    /// Returns `None` for anything else.
    pub fn from_ucum(code: &str) -> Option<Self> {
        match code.trim().to_ascii_lowercase().as_str() {
            "mg/dl" => Some(GlucoseUnit::MgDl),
            "mmol/l" => Some(GlucoseUnit::MmolL),
            _ => None,
        }
    }
    /// Convert a value in this unit to mg/dL.
    pub fn to_mg_dl(self, v: f64) -> f64 {
        match self {
            GlucoseUnit::MgDl => v,
            GlucoseUnit::MmolL => glucose_mmol_l_to_mg_dl(v),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn glucose_round_trip() {
        let v = 5.5;
        assert!((glucose_mg_dl_to_mmol_l(glucose_mmol_l_to_mg_dl(v)) - v).abs() < 1e-12);
        assert!((glucose_mmol_l_to_mg_dl(10.0) - 180.156).abs() < 1e-9);
        assert_eq!(GlucoseUnit::from_ucum("mmol/L"), Some(GlucoseUnit::MmolL));
        assert_eq!(GlucoseUnit::from_ucum("mg/dL"), Some(GlucoseUnit::MgDl));
        assert_eq!(GlucoseUnit::from_ucum("g/L"), None);
    }
}
