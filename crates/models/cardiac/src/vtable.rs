//! Lookup table of the model's voltage-only terms ([`crate::model::voltage_terms`]: gate targets
//! and rates, mixing fractions, GHK/NCX/NaK exponentials and the hERG rates), the standard
//! speed-up of cardiac cell codes (e.g. openCARP/CARP and Chaste lookup tables): about 65 of the
//! ≈ 80 `exp` of a right-hand side are replaced by a linear interpolation between two table rows.
//!
//! Rows every `dv_mv` over `[v_lo_mv, v_hi_mv]` are computed lazily in blocks of
//! [`BLOCK_ROWS`] the first time a voltage in the block is needed (a paced beat visits only part
//! of the range); outside the range, or for a non-finite voltage, the terms are computed directly.
//! Interpolation error of a term `f`: at most `dv²/8·|f''|` — at 0.01 mV a relative 4e-6 or less
//! for every term whose voltage scales are ≥ 3 mV (all but one; largest: the `fcas` rate, where
//! `fss` and `τ_fcas` both vary on 3–4 mV); the one faster term, the 0.2154-mV switch in Ito's
//! `dti_develop` factor of the phosphorylated inactivation time constants, has a relative error
//! ≤ 3e-4 in a window of ≈ 1 mV around 13 mV (unit test: largest relative errors over 20 000
//! voltages).

use crate::markov::HergConstants;
use crate::model::{voltage_terms, N_VTERMS};

/// Rows computed together when one of them is first needed.
pub const BLOCK_ROWS: usize = 256;

/// Voltage-only terms of one parameter set (extracellular K+ and hERG constants) on a grid.
#[derive(Clone, Debug)]
pub struct VoltageTable {
    ko_mm: f64,
    herg: HergConstants,
    v_lo_mv: f64,
    dv_mv: f64,
    n_rows: usize,
    /// `n_rows × N_VTERMS` values, row-major (rows of unbuilt blocks are zero).
    rows: Vec<f64>,
    built: Vec<bool>,
}

impl VoltageTable {
    /// Table for extracellular K+ `ko_mm` (mM) and the hERG constants `herg`, rows every `dv_mv`
    /// (mV) over `[v_lo_mv, v_hi_mv]`. A non-positive or non-finite spacing or an empty range
    /// gives a table that computes every lookup directly.
    pub fn new(ko_mm: f64, herg: &HergConstants, v_lo_mv: f64, v_hi_mv: f64, dv_mv: f64) -> Self {
        let ok = dv_mv > 0.0 && dv_mv.is_finite() && v_hi_mv > v_lo_mv && v_lo_mv.is_finite();
        let n_rows = if ok {
            ((v_hi_mv - v_lo_mv) / dv_mv).ceil() as usize + 1
        } else {
            0
        };
        VoltageTable {
            ko_mm,
            herg: herg.clone(),
            v_lo_mv,
            dv_mv,
            n_rows,
            rows: vec![0.0; n_rows * N_VTERMS],
            built: vec![false; n_rows.div_ceil(BLOCK_ROWS)],
        }
    }

    fn build_block(&mut self, b: usize) {
        let mut vt = [0.0; N_VTERMS];
        for row in b * BLOCK_ROWS..((b + 1) * BLOCK_ROWS).min(self.n_rows) {
            voltage_terms(
                self.v_lo_mv + row as f64 * self.dv_mv,
                self.ko_mm,
                &self.herg,
                &mut vt,
            );
            self.rows[row * N_VTERMS..(row + 1) * N_VTERMS].copy_from_slice(&vt);
        }
        self.built[b] = true;
    }

    /// The voltage-only terms at `v_mv` into `out`: interpolated linearly between the two rows
    /// around `v_mv`, or computed directly outside the table.
    pub fn terms(&mut self, v_mv: f64, out: &mut [f64; N_VTERMS]) {
        let u = (v_mv - self.v_lo_mv) / self.dv_mv;
        if !(u >= 0.0 && u < self.n_rows.saturating_sub(1) as f64) {
            voltage_terms(v_mv, self.ko_mm, &self.herg, out);
            return;
        }
        let row = u as usize;
        let w = u - row as f64;
        for b in [row / BLOCK_ROWS, (row + 1) / BLOCK_ROWS] {
            if !self.built[b] {
                self.build_block(b);
            }
        }
        let a = &self.rows[row * N_VTERMS..(row + 1) * N_VTERMS];
        let c = &self.rows[(row + 1) * N_VTERMS..(row + 2) * N_VTERMS];
        for i in 0..N_VTERMS {
            out[i] = a[i] + w * (c[i] - a[i]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{HergBinding, OrdParams};

    #[test]
    fn interpolated_terms_match_the_direct_ones() {
        let p = OrdParams::control();
        let herg = HergConstants::new(p.temp_c, &HergBinding::none(), 0.0);
        let mut t = VoltageTable::new(p.ko_mm, &herg, -120.0, 80.0, 0.01);
        let mut got = [0.0; N_VTERMS];
        let mut want = [0.0; N_VTERMS];
        let mut worst: f64 = 0.0;
        let mut worst_outside_dti: f64 = 0.0;
        for k in 0..20_000 {
            // off-grid voltages over the whole range
            let v = -119.99 + k as f64 * 0.009_987_3;
            t.terms(v, &mut got);
            voltage_terms(v, p.ko_mm, &herg, &mut want);
            for i in 0..N_VTERMS {
                let rel = (got[i] - want[i]).abs() / want[i].abs().max(1e-300);
                worst = worst.max(rel);
                if !(11.0..16.0).contains(&v) {
                    worst_outside_dti = worst_outside_dti.max(rel);
                }
            }
        }
        assert!(worst < 3e-4, "largest relative error {worst}");
        assert!(
            worst_outside_dti < 5e-6,
            "largest relative error away from dti_develop's switch {worst_outside_dti}"
        );
        assert!(worst > 0.0, "the check must see the interpolation");
        // outside the table: the direct values
        for v in [-130.0, 85.0] {
            t.terms(v, &mut got);
            voltage_terms(v, p.ko_mm, &herg, &mut want);
            assert_eq!(got, want);
        }
    }
}
