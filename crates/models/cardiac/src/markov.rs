//! The Li et al. (2017) hERG Markov model with dynamic drug binding and trapping: nine
//! occupancies (IC1, IC2, C1, C2, O, IO, IObound, Obound, Cbound) with voltage-dependent
//! transition rates `A·exp(B·V)·q^((T−20)/10)` (Li et al. 2017, Circ Arrhythm Electrophysiol
//! 10:e004628, Table/supplement; values as in FDA/CiPA `newordherg_pars.txt`).
//!
//! The block is linear in its states at fixed voltage, `dx/dt = Q(V) x`, and is advanced with
//! the matrix exponential (the Markov analogue of Rush–Larsen; scaling-and-squaring Padé(13,13)
//! after Higham 2005, or a Taylor series for short steps).

use crate::model::HergBinding;

/// Number of Markov occupancies.
pub const MARKOV_LEN: usize = 9;
const IC1: usize = 0;
const IC2: usize = 1;
const C1: usize = 2;
const C2: usize = 3;
const O: usize = 4;
const IO: usize = 5;
const IOB: usize = 6;
const OB: usize = 7;
const CB: usize = 8;

/// Rate law `A·exp(B·V)·q^((T−20)/10)` of one transition: (A 1/ms, B 1/mV, q).
type Law = (f64, f64, f64);

/// The 14 gating laws of the drug-free hERG model (Li et al. 2017), in the order
/// 1, 2, 3, 4, 11, 21, 31, 41, 51, 52, 53, 61, 62, 63.
pub const LI2017_GATING: [Law; 14] = [
    (0.0264, 4.631e-05, 4.843),
    (4.986e-06, -0.004226, 4.23),
    (0.001214, 0.008516, 4.962),
    (1.854e-05, -0.04641, 3.769),
    (0.0007868, 1.535e-08, 4.942),
    (5.455e-06, -0.1688, 4.156),
    (0.005509, 7.771e-09, 4.22),
    (0.001416, -0.02877, 1.459),
    (0.4492, 0.008595, 5.0),
    (0.3181, 3.613e-08, 4.663),
    (0.149, 0.004668, 2.412),
    (0.01241, 0.1725, 5.568),
    (0.3226, -0.0006575, 5.0),
    (0.008978, -0.02215, 5.682),
];

/// Voltage-independent constants of the hERG block for one parameter set.
#[derive(Clone, Debug)]
pub struct HergConstants {
    /// Prefactors A·q^((T−20)/10), 1/ms (gating order as [`LI2017_GATING`]).
    pub pre: [f64; 14],
    /// Exponents B, 1/mV.
    pub b: [f64; 14],
    /// Binding rate Kmax·Ku·Dⁿ/(Dⁿ + halfmax), 1/ms.
    pub k_bind: f64,
    /// Unbinding rate Ku, 1/ms.
    pub ku: f64,
    /// Trapping rate Kt, 1/ms.
    pub kt: f64,
    /// Vhalf of trapping, mV.
    pub vhalf_mv: f64,
}

impl HergConstants {
    /// Constants at temperature `temp_c` (°C) for drug concentration `drug_nm` (nM).
    pub fn new(temp_c: f64, binding: &HergBinding, drug_nm: f64) -> Self {
        let mut pre = [0.0; 14];
        let mut b = [0.0; 14];
        for (i, &(a, bb, q)) in LI2017_GATING.iter().enumerate() {
            pre[i] = a * ((temp_c - 20.0) * q.ln() / 10.0).exp();
            b[i] = bb;
        }
        let dn = if drug_nm > 0.0 {
            (binding.n * drug_nm.ln()).exp()
        } else {
            0.0
        };
        HergConstants {
            pre,
            b,
            k_bind: binding.kmax * binding.ku_per_ms * dn / (dn + binding.halfmax),
            ku: binding.ku_per_ms,
            kt: binding.kt_per_ms,
            vhalf_mv: binding.vhalf_mv,
        }
    }

    /// Evaluate the voltage-dependent rates at `v_mv`.
    #[inline]
    pub fn rates_at(&self, v_mv: f64, out: &mut HergRates) {
        for i in 0..14 {
            out.r[i] = self.pre[i] * (self.b[i] * v_mv).exp();
        }
        out.trap = self.kt / (1.0 + (-(v_mv - self.vhalf_mv) / 6.789).exp());
    }
}

/// Transition rates of the hERG model at one voltage, 1/ms.
#[derive(Clone, Copy, Debug, Default)]
pub struct HergRates {
    /// Gating rates in [`LI2017_GATING`] order.
    pub r: [f64; 14],
    /// Voltage-dependent release from trapping, Kt/(1+exp(−(V−Vhalf)/6.789)).
    pub trap: f64,
}

/// A 9×9 matrix (row-major), generator or propagator of the Markov block.
pub type Mat9 = [[f64; MARKOV_LEN]; MARKOV_LEN];

impl HergRates {
    /// Generator `Q` (columns sum to zero): `dx/dt = Q x`.
    pub fn generator(&self, c: &HergConstants) -> Mat9 {
        let r = &self.r;
        let (r1, r2, r3, r4, r11, r21, r31, r41) = (r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]);
        let (r51, r52, r53, r61, r62, r63) = (r[8], r[9], r[10], r[11], r[12], r[13]);
        let ku_io = if r63 > 0.0 { c.ku * r53 / r63 } else { 0.0 };
        let transitions: [(usize, usize, f64); 20] = [
            (IC1, IC2, r11),
            (IC2, IC1, r21),
            (IC2, IO, r3),
            (IO, IC2, r4),
            (C1, IC1, r51),
            (IC1, C1, r61),
            (C1, C2, r1),
            (C2, C1, r2),
            (C2, O, r31),
            (O, C2, r41),
            (C2, IC2, r52),
            (IC2, C2, r62),
            (O, IO, r53),
            (IO, O, r63),
            (O, OB, c.k_bind),
            (OB, O, c.ku),
            (IO, IOB, c.k_bind),
            (IOB, IO, ku_io),
            (CB, IOB, self.trap),
            (CB, OB, self.trap),
        ];
        let mut q = [[0.0; MARKOV_LEN]; MARKOV_LEN];
        for &(from, to, k) in &transitions {
            q[to][from] += k;
            q[from][from] -= k;
        }
        q[CB][IOB] += c.kt;
        q[IOB][IOB] -= c.kt;
        q[CB][OB] += c.kt;
        q[OB][OB] -= c.kt;
        q
    }
}

fn matmul(a: &Mat9, b: &Mat9) -> Mat9 {
    let mut c = [[0.0; MARKOV_LEN]; MARKOV_LEN];
    for i in 0..MARKOV_LEN {
        for k in 0..MARKOV_LEN {
            let aik = a[i][k];
            for j in 0..MARKOV_LEN {
                c[i][j] += aik * b[k][j];
            }
        }
    }
    c
}

/// Solve `d · X = n` for X (Gaussian elimination with partial pivoting; `d` is a Padé
/// denominator, well conditioned after scaling).
fn solve(mut d: Mat9, mut n: Mat9) -> Mat9 {
    for col in 0..MARKOV_LEN {
        let piv = (col..MARKOV_LEN)
            .max_by(|&a, &b| d[a][col].abs().total_cmp(&d[b][col].abs()))
            .unwrap_or(col);
        d.swap(col, piv);
        n.swap(col, piv);
        let inv = 1.0 / d[col][col];
        for row in col + 1..MARKOV_LEN {
            let f = d[row][col] * inv;
            if f == 0.0 {
                continue;
            }
            for j in col..MARKOV_LEN {
                d[row][j] -= f * d[col][j];
            }
            for j in 0..MARKOV_LEN {
                n[row][j] -= f * n[col][j];
            }
        }
    }
    for col in (0..MARKOV_LEN).rev() {
        let inv = 1.0 / d[col][col];
        for j in 0..MARKOV_LEN {
            n[col][j] *= inv;
        }
        for row in 0..col {
            let f = d[row][col];
            if f == 0.0 {
                continue;
            }
            for j in 0..MARKOV_LEN {
                n[row][j] -= f * n[col][j];
            }
        }
    }
    n
}

/// Backward-Euler step of the Markov block: solves `(I − h·q)·y = x` (Gaussian elimination with
/// partial pivoting; `I − h·q` is a nonsingular M-matrix because the columns of `q` sum to zero
/// and its off-diagonal entries are ≥ 0). L-stable and first order; conserves total probability.
pub fn backward_euler(q: &Mat9, h: f64, x: &[f64]) -> [f64; MARKOV_LEN] {
    let mut a = [[0.0; MARKOV_LEN]; MARKOV_LEN];
    let mut b = [0.0; MARKOV_LEN];
    for i in 0..MARKOV_LEN {
        for j in 0..MARKOV_LEN {
            a[i][j] = -h * q[i][j];
        }
        a[i][i] += 1.0;
        b[i] = x[i];
    }
    for col in 0..MARKOV_LEN {
        let piv = (col..MARKOV_LEN)
            .max_by(|&r, &s| a[r][col].abs().total_cmp(&a[s][col].abs()))
            .unwrap_or(col);
        a.swap(col, piv);
        b.swap(col, piv);
        let inv = 1.0 / a[col][col];
        for row in col + 1..MARKOV_LEN {
            let f = a[row][col] * inv;
            if f == 0.0 {
                continue;
            }
            for j in col..MARKOV_LEN {
                a[row][j] -= f * a[col][j];
            }
            b[row] -= f * b[col];
        }
    }
    for col in (0..MARKOV_LEN).rev() {
        let mut v = b[col];
        for j in col + 1..MARKOV_LEN {
            v -= a[col][j] * b[j];
        }
        b[col] = v / a[col][col];
    }
    b
}

/// Matrix exponential `exp(q·h)` by scaling and squaring with the (13,13) Padé approximant
/// (Higham 2005, SIAM J Matrix Anal Appl 26:1179, Algorithm 2.3: `‖qh/2ˢ‖₁ ≤ θ₁₃ = 5.37`, backward
/// error below the unit roundoff; six 9×9 products and one solve before the `s` squarings — about
/// three squarings fewer than a (6,6) approximant with `‖·‖₁ ≤ 0.5`).
pub fn expm(q: &Mat9, h: f64) -> Mat9 {
    const THETA13: f64 = 5.371920351148152;
    // Padé(13,13) coefficients b_0 … b_13 (Higham 2005, eq. 2.11)
    const B: [f64; 14] = [
        64764752532480000.0,
        32382376266240000.0,
        7771770303897600.0,
        1187353796428800.0,
        129060195264000.0,
        10559470521600.0,
        670442572800.0,
        33522128640.0,
        1323241920.0,
        40840800.0,
        960960.0,
        16380.0,
        182.0,
        1.0,
    ];
    let norm = (0..MARKOV_LEN)
        .map(|j| (0..MARKOV_LEN).map(|i| q[i][j].abs()).sum::<f64>())
        .fold(0.0, f64::max)
        * h;
    let s = if norm > THETA13 {
        (norm / THETA13).log2().ceil() as i32
    } else {
        0
    };
    let scale = h / 2f64.powi(s);
    let mut a = [[0.0; MARKOV_LEN]; MARKOV_LEN];
    for i in 0..MARKOV_LEN {
        for j in 0..MARKOV_LEN {
            a[i][j] = q[i][j] * scale;
        }
    }
    let a2 = matmul(&a, &a);
    let a4 = matmul(&a2, &a2);
    let a6 = matmul(&a4, &a2);
    let mut u_in = [[0.0; MARKOV_LEN]; MARKOV_LEN];
    let mut v_in = [[0.0; MARKOV_LEN]; MARKOV_LEN];
    for i in 0..MARKOV_LEN {
        for j in 0..MARKOV_LEN {
            u_in[i][j] = B[13] * a6[i][j] + B[11] * a4[i][j] + B[9] * a2[i][j];
            v_in[i][j] = B[12] * a6[i][j] + B[10] * a4[i][j] + B[8] * a2[i][j];
        }
    }
    let mut u = matmul(&a6, &u_in);
    let mut v = matmul(&a6, &v_in);
    for i in 0..MARKOV_LEN {
        for j in 0..MARKOV_LEN {
            u[i][j] += B[7] * a6[i][j] + B[5] * a4[i][j] + B[3] * a2[i][j];
            v[i][j] += B[6] * a6[i][j] + B[4] * a4[i][j] + B[2] * a2[i][j];
        }
        u[i][i] += B[1];
        v[i][i] += B[0];
    }
    let u = matmul(&a, &u);
    let mut num = [[0.0; MARKOV_LEN]; MARKOV_LEN];
    let mut den = [[0.0; MARKOV_LEN]; MARKOV_LEN];
    for i in 0..MARKOV_LEN {
        for j in 0..MARKOV_LEN {
            num[i][j] = v[i][j] + u[i][j];
            den[i][j] = v[i][j] - u[i][j];
        }
    }
    let mut e = solve(den, num);
    for _ in 0..s {
        e = matmul(&e, &e);
    }
    e
}

/// Action of the matrix exponential, `exp(q·h)·x`: for `‖q·h‖₁ > 4` through [`expm`], otherwise
/// by a Taylor series on substeps with `‖q·h_sub‖₁ ≤ 1`, each series summed until its terms fall below 1e-17 of the result
/// (probability mass is conserved to rounding because the columns of `q` sum to zero).
pub fn expm_action(q: &Mat9, h: f64, x: &[f64]) -> [f64; MARKOV_LEN] {
    let norm = (0..MARKOV_LEN)
        .map(|j| (0..MARKOV_LEN).map(|i| q[i][j].abs()).sum::<f64>())
        .fold(0.0, f64::max)
        * h;
    if norm > 4.0 {
        return apply(&expm(q, h), x);
    }
    let subs = norm.ceil().max(1.0);
    let hs = h / subs;
    let mut cur = [0.0; MARKOV_LEN];
    cur.copy_from_slice(&x[..MARKOV_LEN]);
    for _ in 0..subs as usize {
        let mut sum = cur;
        let mut term = cur;
        for k in 1..40 {
            let f = hs / k as f64;
            let mut next = [0.0; MARKOV_LEN];
            for i in 0..MARKOV_LEN {
                let mut acc = 0.0;
                for j in 0..MARKOV_LEN {
                    acc += q[i][j] * term[j];
                }
                next[i] = acc * f;
            }
            term = next;
            let mut tn = 0.0;
            let mut sn = 0.0;
            for i in 0..MARKOV_LEN {
                sum[i] += term[i];
                tn += term[i].abs();
                sn += sum[i].abs();
            }
            if tn <= 1e-17 * sn {
                break;
            }
        }
        cur = sum;
    }
    cur
}

/// `m · x` for a propagator `m`.
#[inline]
pub fn apply(m: &Mat9, x: &[f64]) -> [f64; MARKOV_LEN] {
    let mut out = [0.0; MARKOV_LEN];
    for i in 0..MARKOV_LEN {
        out[i] = (0..MARKOV_LEN).map(|j| m[i][j] * x[j]).sum();
    }
    out
}

/// Lazily filled table of exact hERG propagators `exp(Q(V)·h)` on a voltage grid, for the
/// step lengths `h_l = h_max·2^(−l/4)` (`l = 0, 1, …`, so `h_{l+4} = h_l/2` exactly) that the
/// integrator restricts itself to.
///
/// `exp(Q(V)·h_l)·x` is linearly interpolated between the propagators at the two grid voltages
/// around `V` (spacing `dv_mv`; interpolation error `≈ dv²/8·|∂²exp(Q h)/∂V²|`, below 1e-6 per
/// step at 0.05 mV in the unit test). A grid cell is computed with [`expm`] the first time a step
/// needs it; since paced beats repeat almost exactly, later beats find nearly all cells filled,
/// so a step costs two 9×9 matrix–vector products instead of a matrix exponential. The table is
/// bound to one parameter set (its [`HergConstants`]); it holds at most `max_cells` propagators
/// (648 bytes each) and answers `None` beyond that, outside `[v_lo, v_hi]`, or for a step length
/// that is not a level, and the caller then computes the propagator directly.
#[derive(Clone, Debug)]
pub struct PropagatorTable {
    herg: HergConstants,
    v_lo_mv: f64,
    dv_mv: f64,
    n_v: usize,
    levels_ms: Vec<f64>,
    /// Cell index + 1 of (level, voltage node) (0: not yet computed); `level·n_v + node`.
    index: Vec<u32>,
    cells: Vec<Mat9>,
    max_cells: usize,
    /// Cells computed so far (table misses).
    pub computed: usize,
    /// Propagator applications answered from the table.
    pub applied: usize,
}

impl PropagatorTable {
    /// Levels `h_max_ms·2^(−l/4)` down to `h_min_ms`, voltage nodes every `dv_mv` over
    /// `[v_lo_mv, v_hi_mv]`, at most `max_cells` propagators.
    ///
    /// # Panics
    /// Never; a non-positive or non-finite `dv_mv`, `h_max_ms` or range gives an empty table
    /// (every lookup answers `None`).
    pub fn new(
        herg: &HergConstants,
        h_max_ms: f64,
        h_min_ms: f64,
        v_lo_mv: f64,
        v_hi_mv: f64,
        dv_mv: f64,
        max_cells: usize,
    ) -> Self {
        let ok = dv_mv > 0.0
            && dv_mv.is_finite()
            && h_max_ms > 0.0
            && h_max_ms.is_finite()
            && h_min_ms > 0.0
            && v_hi_mv > v_lo_mv;
        let (n_v, mut levels_ms) = if ok {
            (
                ((v_hi_mv - v_lo_mv) / dv_mv).ceil() as usize + 1,
                Vec::new(),
            )
        } else {
            (0, Vec::new())
        };
        if ok {
            for l in 0.. {
                let h = if l < 4 {
                    h_max_ms * (-(l as f64) / 4.0).exp2()
                } else {
                    levels_ms[l - 4] * 0.5
                };
                if h < h_min_ms {
                    break;
                }
                levels_ms.push(h);
            }
        }
        PropagatorTable {
            herg: herg.clone(),
            v_lo_mv,
            dv_mv,
            n_v,
            index: vec![0; n_v * levels_ms.len()],
            levels_ms,
            cells: Vec::new(),
            max_cells: max_cells.min(u32::MAX as usize - 1),
            computed: 0,
            applied: 0,
        }
    }

    /// The step lengths of the levels, ms (longest first).
    pub fn levels_ms(&self) -> &[f64] {
        &self.levels_ms
    }

    /// The longest level not above `h_ms`: (level, its length ms); `None` below the shortest.
    pub fn level_at_most(&self, h_ms: f64) -> Option<(usize, f64)> {
        let h0 = *self.levels_ms.first()?;
        let l = if h_ms >= h0 {
            0
        } else {
            (-4.0 * (h_ms / h0).log2()).ceil().max(0.0) as usize
        };
        // guard the rounding of log2 at a level boundary
        let l = if l > 0 && self.levels_ms.get(l - 1).is_some_and(|&h| h <= h_ms) {
            l - 1
        } else {
            l
        };
        self.levels_ms.get(l).map(|&h| (l, h))
    }

    fn cell(&mut self, level: usize, node: usize) -> Option<&Mat9> {
        let slot = level * self.n_v + node;
        let mut at = self.index[slot];
        if at == 0 {
            if self.cells.len() >= self.max_cells {
                return None;
            }
            let mut r = HergRates::default();
            self.herg
                .rates_at(self.v_lo_mv + node as f64 * self.dv_mv, &mut r);
            let q = r.generator(&self.herg);
            self.cells.push(expm(&q, self.levels_ms[level]));
            self.computed += 1;
            at = self.cells.len() as u32;
            self.index[slot] = at;
        }
        Some(&self.cells[at as usize - 1])
    }

    /// `exp(Q(v_mv)·h_level)·x`, interpolated linearly in V between grid propagators; `None`
    /// when `level` is not a level, `v_mv` is outside the grid or not finite, or the table is
    /// full (the caller then computes the propagator directly).
    pub fn apply(&mut self, level: usize, v_mv: f64, x: &[f64]) -> Option<[f64; MARKOV_LEN]> {
        if level >= self.levels_ms.len() {
            return None;
        }
        let u = (v_mv - self.v_lo_mv) / self.dv_mv;
        if !(u >= 0.0 && u < (self.n_v - 1) as f64) {
            return None;
        }
        let node = u as usize;
        let w = u - node as f64;
        let a = apply(self.cell(level, node)?, x);
        let b = apply(self.cell(level, node + 1)?, x);
        self.applied += 1;
        let mut out = [0.0; MARKOV_LEN];
        for i in 0..MARKOV_LEN {
            out[i] = a[i] + w * (b[i] - a[i]);
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expm_matches_taylor_series_and_conserves_probability() {
        let c = HergConstants::new(37.0, &HergBinding::none(), 0.0);
        let mut r = HergRates::default();
        c.rates_at(30.0, &mut r);
        let q = r.generator(&c);
        for h in [0.001, 0.3, 5.0, 40.0] {
            let e = expm(&q, h);
            // reference: Taylor series on h/1024, squared 10 times
            let sub = h / 1024.0;
            let mut t = [[0.0; MARKOV_LEN]; MARKOV_LEN];
            let mut term = [[0.0; MARKOV_LEN]; MARKOV_LEN];
            for i in 0..MARKOV_LEN {
                t[i][i] = 1.0;
                term[i][i] = 1.0;
            }
            for k in 1..30 {
                term = matmul(&term, &q);
                for row in term.iter_mut() {
                    for v in row.iter_mut() {
                        *v *= sub / k as f64;
                    }
                }
                for i in 0..MARKOV_LEN {
                    for j in 0..MARKOV_LEN {
                        t[i][j] += term[i][j];
                    }
                }
            }
            for _ in 0..10 {
                t = matmul(&t, &t);
            }
            let x: [f64; MARKOV_LEN] = [0.3, 0.1, 0.05, 0.05, 0.1, 0.1, 0.1, 0.1, 0.1];
            let ax = expm_action(&q, h, &x);
            let ex = apply(&e, &x);
            for i in 0..MARKOV_LEN {
                assert!(
                    (ax[i] - ex[i]).abs() < 1e-12,
                    "action h {h} [{i}]: {} vs {}",
                    ax[i],
                    ex[i]
                );
            }
            for i in 0..MARKOV_LEN {
                let col: f64 = (0..MARKOV_LEN).map(|k| e[k][i]).sum();
                assert!((col - 1.0).abs() < 1e-12, "column {i} sums to {col}");
                for j in 0..MARKOV_LEN {
                    assert!(
                        (e[i][j] - t[i][j]).abs() < 1e-11,
                        "h {h} ({i},{j}): {} vs {}",
                        e[i][j],
                        t[i][j]
                    );
                }
            }
        }
    }

    #[test]
    fn backward_euler_conserves_probability_and_is_first_order() {
        let c = HergConstants::new(37.0, &HergBinding::none(), 0.0);
        let mut r = HergRates::default();
        c.rates_at(-88.0, &mut r);
        let q = r.generator(&c);
        let x: [f64; MARKOV_LEN] = [0.3, 0.1, 0.05, 0.05, 0.1, 0.1, 0.1, 0.1, 0.1];
        // stiff step (‖q h‖ ≫ 1): stays a probability vector
        let y = backward_euler(&q, 5.0, &x);
        assert!((y.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(y.iter().all(|v| *v >= -1e-15), "{y:?}");
        // error vs the exact propagator shrinks like h² per step
        let err = |h: f64| {
            let a = backward_euler(&q, h, &x);
            let e = expm_action(&q, h, &x);
            (0..MARKOV_LEN)
                .map(|i| (a[i] - e[i]).abs())
                .fold(0.0, f64::max)
        };
        let (e1, e2) = (err(1e-4), err(5e-5));
        assert!(e1 / e2 > 3.5 && e1 / e2 < 4.5, "{e1} {e2}");
    }

    #[test]
    fn propagator_table_matches_the_exact_propagator() {
        let binding = HergBinding {
            kmax: 1e5,
            ku_per_ms: 1.8e-4,
            n: 0.9,
            halfmax: 5e6,
            vhalf_mv: -147.0,
            kt_per_ms: 3.5e-5,
        };
        let c = HergConstants::new(37.0, &binding, 30.0);
        let mut t = PropagatorTable::new(&c, 5.0, 1e-5, -150.0, 100.0, 0.05, 1000);
        let lv = t.levels_ms().to_vec();
        // levels h_max·2^(−l/4), each fourth one exactly half of the level four above
        assert_eq!(lv[0], 5.0);
        assert!((lv[1] - 5.0 * 2f64.powf(-0.25)).abs() < 1e-15);
        assert!(lv.windows(5).all(|w| w[4] == 0.5 * w[0]));
        assert!(*lv.last().unwrap() >= 1e-5 && lv.last().unwrap() * 2f64.powf(-0.25) < 1e-5);
        for h in [5.0, 4.9, 1.0, 0.0101, 3e-4] {
            let (l, hl) = t.level_at_most(h).unwrap();
            assert!(hl <= h && (l == 0 || lv[l - 1] > h), "{h}: level {l} {hl}");
        }
        assert!(t.level_at_most(1e-6).is_none());
        let x: [f64; MARKOV_LEN] = [0.3, 0.1, 0.05, 0.05, 0.1, 0.1, 0.1, 0.1, 0.1];
        let mut worst: f64 = 0.0;
        for &v in &[-88.013, -40.31, 0.027, 19.99, 45.6] {
            for &l in &[0usize, 7, 20, 45] {
                let got = t.apply(l, v, &x).unwrap();
                let mut r = HergRates::default();
                c.rates_at(v, &mut r);
                let want = expm_action(&r.generator(&c), lv[l], &x);
                for i in 0..MARKOV_LEN {
                    worst = worst.max((got[i] - want[i]).abs());
                }
                assert!((got.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            }
        }
        assert!(worst < 1e-6, "interpolation error {worst}");
        assert!(worst > 0.0, "the check must see the interpolation");
        // outside the grid, beyond the levels, or with a full table: no answer
        assert!(t.apply(0, -151.0, &x).is_none());
        assert!(t.apply(0, f64::NAN, &x).is_none());
        assert!(t.apply(lv.len(), 0.0, &x).is_none());
        let mut full = PropagatorTable::new(&c, 5.0, 1e-5, -150.0, 100.0, 0.05, 1);
        assert!(full.apply(0, 0.01, &x).is_none());
        assert_eq!(t.computed, 40);
        assert_eq!(t.applied, 20);
    }
}
