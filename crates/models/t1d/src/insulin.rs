//! Exact solution of the UVA/Padova insulin subsystem between input changes (issue 19).
//!
//! The seven insulin states of the S2008 model — subcutaneous `Isc1`, `Isc2` (Kovatchev et al.,
//! JDST 3:44, 2009), plasma and liver insulin `Ip`, `Il` (Dalla Man et al., IEEE TBME 54:1740,
//! 2007, eq. 3), remote insulin action `X` (eq. 18) and the delayed insulin signal `I1`, `Id`
//! (eq. 11) — form a linear system with constant coefficients, driven only by the subcutaneous
//! insulin infusion, and do not depend on glucose:
//!
//! ```text
//! Isc1' = s − (ka1 + kd)·Isc1            Ip' = −(m2 + m4)·Ip + m1·Il + ka1·Isc1 + ka2·Isc2
//! Isc2' = kd·Isc1 − ka2·Isc2             Il' = −(m1 + m30)·Il + m2·Ip
//! X'    = −p2u·X + p2u·(Ip/Vi − Ib)      I1' = −ki·(I1 − Ip/Vi),   Id' = −ki·(Id − I1)
//! ```
//!
//! With the infusion `s` held constant (zero-order hold) the solution is the steady state for
//! `s` plus a sum of exponentials in the six rates `−(ka1+kd)`, `−ka2`, the two eigenvalues
//! `μ1, μ2` of the `Ip/Il` block, `−p2u`, `−ki`, and a `τ·e^{−ki·τ}` term for `Id` (I1 → Id is a
//! Jordan block: both decay at `ki`). [`InsulinModes`] holds the rates of one patient,
//! [`InsulinTrajectory`] the coefficients of one constant-input interval, found by solving the
//! cascade Isc1 → Isc2 → (Ip, Il) → X, I1 → Id state by state (method of undetermined
//! coefficients). Glucose only sees `X` and `Id`, so [`crate::model::VirtualPatient`]
//! integrates the six nonlinear gut and glucose states with DOPRI5 and evaluates `X`, `Id` in
//! closed form at every stage time: the fast `Ip/Il` mode (eigenvalue down to ≈ −1.2 /min),
//! which capped DOPRI5's step at its stability limit, is no longer integrated at all.
//!
//! The coefficients of two coupled modes with rates `a ≠ b` carry `1/(a − b)`: when two coupled
//! rates lie within [`MIN_RELATIVE_GAP`] of each other (or the parameters are not those of a
//! stable system) the modes are declared unusable ([`InsulinModes::usable`]) and the patient
//! falls back to integrating all 13 states numerically, as before.

use crate::params::PatientParams;
use medtwin_core::units::INSULIN_PMOL_PER_U;

/// Smallest relative distance `|a − b| / max(|a|, |b|)` between two coupled mode rates for
/// which the closed form is used (the coefficients grow like `1/(a − b)`, so rounding errors
/// grow by at most ≈ 1/gap per coupling; at 1e-3 and two couplings that is ≈ 1e-10 relative,
/// far below the integrator tolerance of 1e-8). The 30 bundled patients' smallest gap is
/// 7.6e-3 (adult#010: `ka2` vs `p2u`).
pub const MIN_RELATIVE_GAP: f64 = 1e-3;

/// Positions in the 13-state vector of the insulin block, in block order
/// `[Isc1, Isc2, Ip, Il, X, I1, Id]`.
pub const BLOCK_STATES: [usize; 7] = [10, 11, 5, 9, 6, 7, 8];

// Block-order indices.
const ISC1: usize = 0;
const ISC2: usize = 1;
const IP: usize = 2;
const IL: usize = 3;
const X: usize = 4;
const I1: usize = 5;
const ID: usize = 6;
// Basis functions: e^{rate[b]·τ} for b < 6 (rates of Isc1, Isc2, μ1, μ2, X, I1/Id) and
// τ·e^{−ki·τ} for b = 6.
const B_TAU: usize = 6;

/// The mode rates of one patient's insulin subsystem (1/min, all negative) and the eigenvectors
/// of its `Ip/Il` block.
#[derive(Debug, Clone, PartialEq)]
pub struct InsulinModes {
    /// Parameters the modes were computed from: `[ka1, kd, ka2, m1, m2, m4, m30, p2u, ki, vi,
    /// ib, bw]` (compared before each use, so that changed parameters recompute them).
    key: [f64; 12],
    /// Rates of the basis functions `e^{rate·τ}`: `−(ka1+kd)`, `−ka2`, `μ1`, `μ2`, `−p2u`,
    /// `−ki`, 1/min.
    pub rates: [f64; 6],
    /// Eigenvectors `(Ip, Il)` of the `Ip/Il` block for `μ1`, `μ2`.
    vecs: [[f64; 2]; 2],
    /// Whether the closed form is well conditioned for these parameters (see
    /// [`MIN_RELATIVE_GAP`]); if not, the caller must integrate numerically.
    pub usable: bool,
}

fn key(p: &PatientParams) -> [f64; 12] {
    [
        p.ka1, p.kd, p.ka2, p.m1, p.m2, p.m4, p.m30, p.p2u, p.ki, p.vi, p.ib, p.bw,
    ]
}

fn far(a: f64, b: f64) -> bool {
    (a - b).abs() >= MIN_RELATIVE_GAP * a.abs().max(b.abs())
}

impl InsulinModes {
    /// The modes of `p`'s insulin subsystem. Never fails: parameters for which the closed form
    /// is not usable (non-finite, not strictly decaying, coupled rates closer than
    /// [`MIN_RELATIVE_GAP`], degenerate `Ip/Il` eigenvectors) give `usable == false`.
    pub fn new(p: &PatientParams) -> Self {
        let (a, b) = (-(p.m2 + p.m4), p.m1);
        let (c, d) = (p.m2, -(p.m1 + p.m30));
        let tr = a + d;
        let det = a * d - b * c;
        let disc = 0.25 * tr * tr - det;
        // the larger-magnitude root directly, the other from the product (no cancellation)
        let mu_fast = 0.5 * tr - disc.max(0.0).sqrt();
        let mu_slow = det / mu_fast;
        let rates = [-(p.ka1 + p.kd), -p.ka2, mu_slow, mu_fast, -p.p2u, -p.ki];
        // eigenvector of [[a, b], [c, d]] for μ from whichever row is better conditioned
        let vec = |mu: f64| {
            let v1 = [b, mu - a];
            let v2 = [mu - d, c];
            if v1[0].hypot(v1[1]) >= v2[0].hypot(v2[1]) {
                v1
            } else {
                v2
            }
        };
        let vecs = [vec(mu_slow), vec(mu_fast)];
        let vdet = vecs[0][0] * vecs[1][1] - vecs[1][0] * vecs[0][1];
        let vnorm = vecs[0][0].hypot(vecs[0][1]) * vecs[1][0].hypot(vecs[1][1]);
        let mut usable = key(p).iter().all(|v| v.is_finite())
            && p.vi > 0.0
            && disc > 0.0
            && rates.iter().all(|r| r.is_finite() && *r < 0.0)
            && vdet.abs() >= MIN_RELATIVE_GAP * vnorm
            && far(mu_slow, mu_fast);
        // coupled pairs: Isc1 → Isc2; Isc1, Isc2 → Ip/Il modes; every upstream mode → X, I1
        for up in 0..4 {
            for down in (up + 1)..6 {
                if (up, down) == (2, 3) {
                    continue; // μ1, μ2 are the same block (checked above)
                }
                usable &= far(rates[up], rates[down]);
            }
        }
        InsulinModes {
            key: key(p),
            rates,
            vecs,
            usable,
        }
    }

    /// Whether these modes were computed from `p`'s current insulin parameters.
    pub fn matches(&self, p: &PatientParams) -> bool {
        self.key == key(p)
    }
}

/// The insulin block's solution on one interval of constant infusion, anchored at `t0_min`:
/// `z(t) = z* + Σ_b c_b·φ_b(t − t0)` with the basis functions of [`InsulinModes`].
#[derive(Debug, Clone, PartialEq)]
pub struct InsulinTrajectory {
    /// Anchor time, minutes.
    pub t0_min: f64,
    /// Infusion held on the interval, U/min (as passed by the caller).
    pub insulin_u_per_min: f64,
    /// Steady state for the infusion, block order (units of [`crate::model::STATE_NAMES`]).
    zstar: [f64; 7],
    /// Coefficients, `c[state][basis]`.
    c: [[f64; 7]; 7],
    rates: [f64; 6],
}

impl InsulinTrajectory {
    /// The solution from the block state `z0` (block order, see [`BLOCK_STATES`]) at `t0_min`
    /// under `insulin_u_per_min` (U/min) for a patient `p` with modes `m` (which must be
    /// [`InsulinModes::usable`] and match `p`; otherwise the coefficients are meaningless but
    /// finite or NaN — never a panic).
    pub fn new(
        p: &PatientParams,
        m: &InsulinModes,
        t0_min: f64,
        z0: &[f64; 7],
        insulin_u_per_min: f64,
    ) -> Self {
        let r = m.rates;
        let s = insulin_u_per_min * INSULIN_PMOL_PER_U / p.bw; // pmol/kg/min
                                                               // steady state for s
        let mut zs = [0.0; 7];
        zs[ISC1] = s / (p.ka1 + p.kd);
        zs[ISC2] = p.kd * zs[ISC1] / p.ka2;
        let g = p.ka1 * zs[ISC1] + p.ka2 * zs[ISC2];
        let (a, b) = (-(p.m2 + p.m4), p.m1);
        let (cc, d) = (p.m2, -(p.m1 + p.m30));
        let det = a * d - b * cc;
        zs[IP] = -g * d / det;
        zs[IL] = g * cc / det;
        zs[I1] = zs[IP] / p.vi;
        zs[ID] = zs[I1];
        zs[X] = zs[I1] - p.ib;
        let w0: [f64; 7] = std::array::from_fn(|i| z0[i] - zs[i]);
        let mut c = [[0.0; 7]; 7];
        // scalar state w' = rate[kb]·w + Σ_b f_b·e^{rate[b]τ}, w(0) = w0: particular terms
        // f_b/(rate[b] − rate[kb]), the resonant one (b = kb) as f·τ·e^{rate[kb]τ}
        let scalar = |kb: usize, f: &[f64; 7], w0: f64| {
            let mut row = [0.0; 7];
            let mut rest = w0;
            for bb in 0..6 {
                if f[bb] == 0.0 {
                    continue;
                }
                if bb == kb {
                    row[B_TAU] += f[bb];
                } else {
                    row[bb] = f[bb] / (r[bb] - r[kb]);
                    rest -= row[bb];
                }
            }
            row[kb] += rest;
            row
        };
        c[ISC1][0] = w0[ISC1];
        let f: [f64; 7] = std::array::from_fn(|bb| p.kd * c[ISC1][bb]);
        c[ISC2] = scalar(1, &f, w0[ISC2]);
        // (Ip, Il)' = M (Ip, Il) + (ka1·Isc1 + ka2·Isc2, 0)
        let (mut rip, mut ril) = (w0[IP], w0[IL]);
        for bb in 0..2 {
            let fb = p.ka1 * c[ISC1][bb] + p.ka2 * c[ISC2][bb];
            let rb = r[bb];
            let dd = (rb - a) * (rb - d) - b * cc;
            c[IP][bb] = fb * (rb - d) / dd;
            c[IL][bb] = fb * cc / dd;
            rip -= c[IP][bb];
            ril -= c[IL][bb];
        }
        let [v1, v2] = m.vecs;
        let vdet = v1[0] * v2[1] - v2[0] * v1[1];
        let al1 = (rip * v2[1] - v2[0] * ril) / vdet;
        let al2 = (v1[0] * ril - rip * v1[1]) / vdet;
        c[IP][2] = al1 * v1[0];
        c[IL][2] = al1 * v1[1];
        c[IP][3] = al2 * v2[0];
        c[IL][3] = al2 * v2[1];
        let f: [f64; 7] = std::array::from_fn(|bb| p.p2u / p.vi * c[IP][bb]);
        c[X] = scalar(4, &f, w0[X]);
        let f: [f64; 7] = std::array::from_fn(|bb| p.ki / p.vi * c[IP][bb]);
        c[I1] = scalar(5, &f, w0[I1]);
        let f: [f64; 7] = std::array::from_fn(|bb| p.ki * c[I1][bb]);
        c[ID] = scalar(5, &f, w0[ID]);
        InsulinTrajectory {
            t0_min,
            insulin_u_per_min,
            zstar: zs,
            c,
            rates: r,
        }
    }

    /// The basis functions at `t_min` (`τ = t − t0`).
    #[inline]
    fn basis(&self, t_min: f64) -> [f64; 7] {
        let tau = t_min - self.t0_min;
        let r = &self.rates;
        let e: [f64; 6] = std::array::from_fn(|k| (r[k] * tau).exp());
        [e[0], e[1], e[2], e[3], e[4], e[5], tau * e[5]]
    }

    /// Remote insulin action `X` (pmol/L) and delayed insulin signal `Id` (pmol/L) at `t_min`:
    /// what the glucose subsystem reads.
    #[inline]
    pub fn x_and_id(&self, t_min: f64) -> (f64, f64) {
        let e = self.basis(t_min);
        let (cx, cd) = (&self.c[X], &self.c[ID]);
        let x = self.zstar[X]
            + cx[0] * e[0]
            + cx[1] * e[1]
            + cx[2] * e[2]
            + cx[3] * e[3]
            + cx[4] * e[4];
        let id = self.zstar[ID]
            + cd[0] * e[0]
            + cd[1] * e[1]
            + cd[2] * e[2]
            + cd[3] * e[3]
            + cd[5] * e[5]
            + cd[6] * e[6];
        (x, id)
    }

    /// The whole block (block order) at `t_min`. The four compartments that cannot become
    /// negative from non-negative data (`Isc1`, `Isc2`, `Ip`, `Il`) are clamped at 0 against
    /// rounding in the sum.
    pub fn state_at(&self, t_min: f64) -> [f64; 7] {
        let e = self.basis(t_min);
        let (zs, c) = (&self.zstar, &self.c);
        // only the basis functions a state can contain (the others' coefficients are 0)
        let upto4 =
            |i: usize| zs[i] + c[i][0] * e[0] + c[i][1] * e[1] + c[i][2] * e[2] + c[i][3] * e[3];
        let mut z = [
            zs[ISC1] + c[ISC1][0] * e[0],
            zs[ISC2] + c[ISC2][0] * e[0] + c[ISC2][1] * e[1],
            upto4(IP),
            upto4(IL),
            upto4(X) + c[X][4] * e[4],
            upto4(I1) + c[I1][5] * e[5],
            upto4(ID) + c[ID][5] * e[5] + c[ID][6] * e[6],
        ];
        for i in [ISC1, ISC2, IP, IL] {
            z[i] = z[i].max(0.0);
        }
        z
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::UvaPadova;
    use crate::params::patient;
    use medtwin_core::OdeModel;
    use medtwin_simulate::{Dopri5, Integrator, SolverOptions};

    /// The closed form agrees with a tight DOPRI5 solution of the full model's insulin states,
    /// from a state far from steady state, for every bundled patient.
    #[test]
    fn closed_form_matches_tight_numerical_solution() {
        for name in crate::params::patient_names() {
            let p = patient(&name).unwrap();
            let m = InsulinModes::new(&p);
            assert!(m.usable, "{name}: {:?}", m.rates);
            let model = UvaPadova { p: p.clone() };
            let mut x = p.x0;
            // a bolus in the depot, extra plasma insulin, perturbed action states
            x[10] += 400.0;
            x[11] += 50.0;
            x[5] *= 1.7;
            x[6] += 3.0;
            x[7] *= 1.3;
            let ins = 2.0 * p.basal_u_per_min();
            let z0: [f64; 7] = std::array::from_fn(|i| x[BLOCK_STATES[i]]);
            let tr = InsulinTrajectory::new(&p, &m, 10.0, &z0, ins);
            let mut s = Dopri5::new(
                13,
                SolverOptions {
                    rtol: 1e-12,
                    atol: 1e-12,
                    ..Default::default()
                },
            );
            let u = [0.0, ins, 0.0];
            let mut t = 10.0;
            for t1 in [10.3, 11.0, 17.5, 60.0, 250.0, 900.0] {
                s.integrate(&model, t, t1, &mut x, &u).unwrap();
                t = t1;
                let z = tr.state_at(t1);
                let (xa, id) = tr.x_and_id(t1);
                assert!((xa - z[X]).abs() <= 1e-10 * xa.abs().max(1.0));
                assert!((id - z[ID]).abs() <= 1e-10 * id.abs());
                for (i, zi) in z.iter().enumerate() {
                    let want = x[BLOCK_STATES[i]];
                    assert!(
                        (zi - want).abs() <= 1e-9 * want.abs().max(1.0),
                        "{name} t={t1} state {i}: {zi} vs {want}"
                    );
                }
            }
            // at the anchor the closed form returns the initial state
            let z = tr.state_at(10.0);
            for i in 0..7 {
                assert!((z[i] - z0[i]).abs() <= 1e-10 * z0[i].abs().max(1.0));
            }
            let mut dx = [0.0; 13];
            model.rhs(0.0, &p.x0, &[0.0, p.basal_u_per_min(), 0.0], &mut dx);
            assert!(dx.iter().all(|v| v.is_finite()));
        }
    }

    #[test]
    fn near_coincident_or_bad_rates_are_not_usable() {
        let mut p = patient("adult#001").unwrap();
        assert!(InsulinModes::new(&p).usable);
        // ka2 equal to p2u: Isc2 → Ip → X resonate
        p.ka2 = p.p2u;
        let m = InsulinModes::new(&p);
        assert!(!m.usable);
        assert!(!m.matches(&patient("adult#001").unwrap()));
        let mut p = patient("adult#001").unwrap();
        p.ki = 0.0;
        assert!(!InsulinModes::new(&p).usable);
        p.ki = f64::NAN;
        assert!(!InsulinModes::new(&p).usable);
        // the same rate on uncoupled modes (X and I1) is fine
        let mut p = patient("adult#001").unwrap();
        p.p2u = p.ki;
        assert!(InsulinModes::new(&p).usable);
    }
}
