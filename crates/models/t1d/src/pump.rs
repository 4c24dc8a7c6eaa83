//! Insulin pumps as in simglucose 0.2.11 (`actuator/pump.py`, `params/pump_params.csv`).
//!
//! `basal(a) = clip(round(a·6000/inc_basal)·inc_basal/6000, min_basal, max_basal)` and likewise
//! for the bolus, with `a` in U/min; the increment is applied in pmol/min (so the quantum is
//! 8.3e-6 U/min) and the limits in U/min — reproduced as implemented (shared NOTES.md §3.7;
//! simglucose issue #71 argues the limits were meant as U/h).

use serde::{Deserialize, Serialize};

/// A pump model from simglucose's `pump_params.csv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PumpKind {
    /// Insulet (Omnipod): bolus and basal ≤ 30 U/min.
    Insulet,
    /// Cozmo: bolus ≤ 75 U/min, basal ≤ 35 U/min.
    Cozmo,
}

/// Pump limits and increments.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PumpParams {
    /// Bolus limits, U/min.
    pub min_bolus: f64,
    /// Max bolus rate, U/min.
    pub max_bolus: f64,
    /// Bolus increment, pmol/min.
    pub inc_bolus: f64,
    /// Min basal, U/min.
    pub min_basal: f64,
    /// Max basal, U/min.
    pub max_basal: f64,
    /// Basal increment, pmol/min.
    pub inc_basal: f64,
}

impl PumpKind {
    /// Parse `"insulet"` or `"cozmo"` (case-insensitive).
    pub fn from_name(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "insulet" => Some(PumpKind::Insulet),
            "cozmo" => Some(PumpKind::Cozmo),
            _ => None,
        }
    }
    /// Lower-case name.
    pub fn name(&self) -> &'static str {
        match self {
            PumpKind::Insulet => "insulet",
            PumpKind::Cozmo => "cozmo",
        }
    }
    /// Values from `data/pump_params.csv`.
    pub fn params(&self) -> PumpParams {
        match self {
            PumpKind::Insulet => PumpParams {
                min_bolus: 0.0,
                max_bolus: 30.0,
                inc_bolus: 0.05,
                min_basal: 0.0,
                max_basal: 30.0,
                inc_basal: 0.05,
            },
            PumpKind::Cozmo => PumpParams {
                min_bolus: 0.0,
                max_bolus: 75.0,
                inc_bolus: 0.05,
                min_basal: 0.0,
                max_basal: 35.0,
                inc_basal: 0.05,
            },
        }
    }
}

fn quantise(a_u_per_min: f64, inc_pmol: f64, lo: f64, hi: f64) -> f64 {
    let pmol = medtwin_core::units::INSULIN_PMOL_PER_U;
    // Python's round() rounds half to even.
    let q = (a_u_per_min * pmol / inc_pmol).round_ties_even() * inc_pmol / pmol;
    q.clamp(lo, hi)
}

impl PumpParams {
    /// Delivered basal for a requested basal `a` (U/min).
    pub fn basal(&self, a_u_per_min: f64) -> f64 {
        quantise(a_u_per_min, self.inc_basal, self.min_basal, self.max_basal)
    }
    /// Delivered bolus for a requested bolus rate `a` (U/min).
    pub fn bolus(&self, a_u_per_min: f64) -> f64 {
        quantise(a_u_per_min, self.inc_bolus, self.min_bolus, self.max_bolus)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn clips_and_quantises() {
        let p = PumpKind::Insulet.params();
        assert_eq!(p.basal(-1.0), 0.0);
        assert_eq!(p.bolus(100.0), 30.0);
        assert!((p.basal(0.021125) - 0.021125).abs() < 1e-5);
        assert_eq!(PumpKind::Cozmo.params().bolus(100.0), 75.0);
    }
}
