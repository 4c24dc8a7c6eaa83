//! The IKr-dynamic O'Hara–Rudy (ORd) endocardial myocyte of the FDA CiPA initiative.
//!
//! Equations: O'Hara, Virág, Varró & Rudy (2011) PLoS Comput Biol 7:e1002061 (the ORd model),
//! with IKr replaced by the Li et al. (2017) Circ Arrhythm Electrophysiol 10:e004628 hERG Markov
//! model with dynamic drug binding/trapping, and the Dutta et al. (2017) Front Physiol 8:616
//! optimised conductance scalings. Written from the published equations as implemented in the
//! FDA's reference code (github FDA/CiPA, `AP_simulation/models/newordherg_qNet.c` and
//! `funs/get_pars.R`); no code is copied.
//!
//! Only the endocardial cell type (the CiPA choice) is built.
//!
//! Units: time ms, voltage mV, concentrations mM (drug nM), currents µA/µF, fluxes mM/ms.

use crate::markov::{HergRates, MARKOV_LEN};

/// Number of ODE states (the reference's 49 minus its constant drug concentration `D`, which is
/// a parameter here: [`OrdParams::drug_nm`]).
pub const N_STATES: usize = 48;
/// Index of the first hERG Markov state (IC1); states `MARKOV0..N_STATES` are the Markov block.
pub const MARKOV0: usize = 39;

/// State names in order, with units (`mV`, `mM`, or `1` for gates and Markov occupancies).
pub const STATE_NAMES: [(&str, &str); N_STATES] = [
    ("v", "mV"),
    ("nai", "mM"),
    ("nass", "mM"),
    ("ki", "mM"),
    ("kss", "mM"),
    ("cai", "mM"),
    ("cass", "mM"),
    ("cansr", "mM"),
    ("cajsr", "mM"),
    ("m", "1"),
    ("hf", "1"),
    ("hs", "1"),
    ("j", "1"),
    ("hsp", "1"),
    ("jp", "1"),
    ("mL", "1"),
    ("hL", "1"),
    ("hLp", "1"),
    ("a", "1"),
    ("iF", "1"),
    ("iS", "1"),
    ("ap", "1"),
    ("iFp", "1"),
    ("iSp", "1"),
    ("d", "1"),
    ("ff", "1"),
    ("fs", "1"),
    ("fcaf", "1"),
    ("fcas", "1"),
    ("jca", "1"),
    ("nca", "1"),
    ("ffp", "1"),
    ("fcafp", "1"),
    ("xs1", "1"),
    ("xs2", "1"),
    ("xk1", "1"),
    ("Jrelnp", "mM/ms"),
    ("Jrelp", "mM/ms"),
    ("CaMKt", "1"),
    ("IC1", "1"),
    ("IC2", "1"),
    ("C1", "1"),
    ("C2", "1"),
    ("O", "1"),
    ("IO", "1"),
    ("IObound", "1"),
    ("Obound", "1"),
    ("Cbound", "1"),
];

/// The reference's pre-paced control state at a 2000 ms cycle length
/// (FDA/CiPA `models/newordherg_states_CL2000.txt`), the starting point of every assay.
pub const INITIAL_STATE_CL2000: [f64; N_STATES] = [
    -88.0145,
    6.46961,
    6.46967,
    145.501,
    145.501,
    7.45321e-05,
    7.30454e-05,
    1.37897,
    1.37944,
    0.00733485,
    0.698542,
    0.698542,
    0.698542,
    0.455526,
    0.698541,
    0.000187813,
    0.513396,
    0.307923,
    0.00100025,
    0.999555,
    0.871715,
    0.000509652,
    0.999555,
    0.905466,
    2.33382e-09,
    1.0,
    0.971897,
    1.0,
    1.0,
    1.0,
    0.0015391,
    1.0,
    1.0,
    0.130941,
    0.000192517,
    0.996756,
    1.46507e-07,
    1.83132e-07,
    0.00325232,
    0.999637,
    6.83208e-05,
    1.80145e-08,
    8.26619e-05,
    0.00015551,
    5.67623e-05,
    0.0,
    0.0,
    0.0,
];

/// Multipliers of the seven drug-affected conductances (1 = control ORd value).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ConductanceScales {
    /// INa maximal conductance factor.
    pub gna: f64,
    /// INaL maximal conductance factor.
    pub gnal: f64,
    /// Ito maximal conductance factor.
    pub gto: f64,
    /// ICaL permeability factor (also scales ICaNa and ICaK).
    pub pca: f64,
    /// IKr maximal conductance factor.
    pub gkr: f64,
    /// IKs maximal conductance factor.
    pub gks: f64,
    /// IK1 maximal conductance factor.
    pub gk1: f64,
}

impl ConductanceScales {
    /// The Dutta et al. (2017) optimised scalings as the reference applies them: GKr ×1.114/1.1
    /// (the reference first sets GKr's divisor to 1.1), GNaL ×2.661, GKs ×1.870, GK1 ×1.698,
    /// PCa ×1.007; INa and Ito unchanged.
    pub fn dutta2017() -> Self {
        ConductanceScales {
            gna: 1.0,
            gnal: 2.661,
            gto: 1.0,
            pca: 1.007,
            gkr: 1.114 / 1.1,
            gks: 1.870,
            gk1: 1.698,
        }
    }
}

/// Dynamic hERG drug-binding parameters of Li et al. (2017).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HergBinding {
    /// Maximal drug effect at saturating concentration (dimensionless).
    pub kmax: f64,
    /// Unbinding rate, 1/ms.
    pub ku_per_ms: f64,
    /// Hill coefficient of binding (dimensionless).
    pub n: f64,
    /// Concentration for half-maximal binding rate, nM^n.
    pub halfmax: f64,
    /// Voltage of half-maximal trapping, mV.
    pub vhalf_mv: f64,
    /// Trapping rate constant Kt, 1/ms (reference: 3.5e-5 with drug, 0 in control).
    pub kt_per_ms: f64,
}

impl HergBinding {
    /// No drug: Kmax = 0, Kt = 0 (as the reference's control run).
    pub fn none() -> Self {
        HergBinding {
            kmax: 0.0,
            ku_per_ms: 0.0,
            n: 1.0,
            halfmax: 1.0,
            vhalf_mv: 1.0,
            kt_per_ms: 0.0,
        }
    }
}

/// Everything the right-hand side needs; build with [`OrdParams::control`] and adjust.
#[derive(Clone, Debug)]
pub struct OrdParams {
    /// Conductance multipliers (Dutta scalings × Hill block).
    pub scale: ConductanceScales,
    /// hERG drug binding.
    pub binding: HergBinding,
    /// Free drug concentration, nM (constant during a run).
    pub drug_nm: f64,
    /// Extracellular K+, mM (5.4).
    pub ko_mm: f64,
    /// Temperature of the hERG Q10 rate correction, °C (37).
    pub temp_c: f64,
    /// Stimulus current, µA/µF (-80).
    pub stim_amp_ua_per_uf: f64,
    /// Stimulus duration from each beat's start, ms (0.5).
    pub stim_duration_ms: f64,
}

impl OrdParams {
    /// The CiPA control cell: Dutta scalings, no drug, ko 5.4 mM, 37 °C, -80 µA/µF for 0.5 ms.
    pub fn control() -> Self {
        OrdParams {
            scale: ConductanceScales::dutta2017(),
            binding: HergBinding::none(),
            drug_nm: 0.0,
            ko_mm: 5.4,
            temp_c: 37.0,
            stim_amp_ua_per_uf: -80.0,
            stim_duration_ms: 0.5,
        }
    }
}

/// The six currents of qNet and their sum at one instant, µA/µF.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct NetCurrents {
    /// INaL + ICaL + Ito + IKr + IKs + IK1 (the qNet integrand), µA/µF.
    pub qnet_integrand: f64,
    /// dV/dt, mV/ms.
    pub dvdt: f64,
}

/// Right-hand side in "exponential form": for each non-Markov state `i`,
/// `dy_i/dt = p_i - k_i * y_i` with `k_i >= 0` (gates and release fluxes have `k_i > 0`,
/// every other state `k_i = 0` and `p_i` is its derivative). The Markov block is linear,
/// `dx/dt = Q(v) x`, and is returned as rates in [`HergRates`].
#[derive(Clone, Debug)]
pub struct Rates {
    /// Production terms p_i (only `0..MARKOV0` used), per ms in state units.
    pub p: [f64; N_STATES],
    /// Relaxation rates k_i (only `0..MARKOV0` used), 1/ms.
    pub k: [f64; N_STATES],
    /// Markov transition rates at this voltage.
    pub herg: HergRates,
    /// Currents for qNet and dV/dt.
    pub net: NetCurrents,
}

impl Default for Rates {
    fn default() -> Self {
        Rates {
            p: [0.0; N_STATES],
            k: [0.0; N_STATES],
            herg: HergRates::default(),
            net: NetCurrents::default(),
        }
    }
}

// Physical constants and geometry (ORd 2011).
const NAO: f64 = 140.0;
const CAO: f64 = 1.8;
const RGAS: f64 = 8314.0;
const TEMP_K: f64 = 310.0;
const FARADAY: f64 = 96485.0;
const RTF: f64 = RGAS * TEMP_K / FARADAY;
const L_CM: f64 = 0.01;
const RAD_CM: f64 = 0.0011;
/// The ORd model's geometry uses 3.14, not π (kept for agreement with the reference).
#[allow(clippy::approx_constant)]
const ORD_PI: f64 = 3.14;
const VCELL: f64 = 1000.0 * ORD_PI * RAD_CM * RAD_CM * L_CM;
const AGEO: f64 = 2.0 * ORD_PI * RAD_CM * RAD_CM + 2.0 * ORD_PI * RAD_CM * L_CM;
const ACAP: f64 = 2.0 * AGEO;
const VMYO: f64 = 0.68 * VCELL;
const VNSR: f64 = 0.0552 * VCELL;
const VJSR: f64 = 0.0048 * VCELL;
const VSS: f64 = 0.02 * VCELL;
const KM_CAMK: f64 = 0.15;

/// Number of gates whose target and rate depend on the voltage only (and on `ko`): states
/// `9..=29` and `31..=35` (every gate but `nca`, state 30, which depends on `cass`).
const N_VGATES: usize = 26;
/// Slot of voltage-only gate `state` in [`voltage_terms`] (`p` at `2·slot`, `k` at `2·slot + 1`).
#[inline(always)]
const fn vgate_slot(state: usize) -> usize {
    if state <= 29 {
        state - 9
    } else {
        state - 10
    }
}
/// The states of the voltage-only gates, in slot order.
const VGATE_STATES: [usize; N_VGATES] = [
    9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 31, 32, 33,
    34, 35,
];
// Other voltage-only terms (indices into the voltage-term array).
const VT_AIF: usize = 2 * N_VGATES; // Ito fast-inactivation fraction
const VT_AFCAF: usize = VT_AIF + 1; // ICaL fast Ca-inactivation fraction
const VT_XKB: usize = VT_AIF + 2; // IKb gate
const VT_RK1: usize = VT_AIF + 3; // IK1 rectification
const VT_E1: usize = VT_AIF + 4; // exp(vF/RT)
const VT_E2: usize = VT_AIF + 5; // exp(2vF/RT)
const VT_HCA: usize = VT_AIF + 6; // NCX exp(0.1670 vF/RT)
const VT_HNA: usize = VT_AIF + 7; // NCX exp(0.5224 vF/RT)
const VT_KNAI: usize = VT_AIF + 8; // NaK Na affinity inside, mM
const VT_KNAO: usize = VT_AIF + 9; // NaK Na affinity outside, mM
const VT_HERG: usize = VT_AIF + 10; // 14 hERG gating rates, then the trapping release rate
/// Number of voltage-only terms of the model (see [`voltage_terms`]).
pub const N_VTERMS: usize = VT_HERG + 15;

/// Store gate `state`'s target `inf` and time constant `tau_ms` as `p = inf/τ`, `k = 1/τ`.
#[inline(always)]
fn vgate(vt: &mut [f64; N_VTERMS], state: usize, inf: f64, tau_ms: f64) {
    let k = 1.0 / tau_ms;
    let s = vgate_slot(state);
    vt[2 * s] = inf * k;
    vt[2 * s + 1] = k;
}

/// Set gate `i` to relax to `inf` with time constant `tau_ms`.
#[inline(always)]
fn gate(r: &mut Rates, i: usize, inf: f64, tau_ms: f64) {
    let k = 1.0 / tau_ms;
    r.k[i] = k;
    r.p[i] = inf * k;
}

#[inline(always)]
fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + x.exp())
}

/// Every term of the model that depends on the membrane potential `v_mv` only (for extracellular
/// K+ `ko_mm` and the hERG constants `herg`), written to `vt` ([`N_VTERMS`] values): the
/// exponential-form `p` (1/ms) and `k` (1/ms) of the 26 voltage-only gates (INa, INaL, Ito,
/// ICaL except `nca`, IKs, IK1), the Ito and ICaL mixing fractions, the IKb gate, the IK1
/// rectification, the GHK exponentials `exp(z·vF/RT)` (z = 1, 2), the NCX factors
/// `exp(0.1670·vF/RT)`, `exp(0.5224·vF/RT)`, the NaK Na+ affinities (mM) and the hERG rates
/// (1/ms). These are the ≈ 65 `exp` of a right-hand side that a voltage table
/// ([`crate::vtable::VoltageTable`]) can interpolate. Equations as in [`rates`] (ORd 2011).
pub fn voltage_terms(
    v: f64,
    ko: f64,
    herg: &crate::markov::HergConstants,
    vt: &mut [f64; N_VTERMS],
) {
    // INa, INaL
    let mss = sigmoid(-(v + 39.57) / 9.871);
    let tm = 1.0 / (6.765 * ((v + 11.64) / 34.77).exp() + 8.552 * (-(v + 77.42) / 5.955).exp());
    vgate(vt, 9, mss, tm);
    let hss = sigmoid((v + 82.90) / 6.086);
    let thf =
        1.0 / (1.432e-5 * (-(v + 1.196) / 6.285).exp() + 6.149 * ((v + 0.5096) / 20.27).exp());
    let ths =
        1.0 / (0.009794 * (-(v + 17.95) / 28.05).exp() + 0.3343 * ((v + 5.730) / 56.66).exp());
    vgate(vt, 10, hss, thf);
    vgate(vt, 11, hss, ths);
    let tj = 2.038
        + 1.0 / (0.02136 * (-(v + 100.6) / 8.281).exp() + 0.3052 * ((v + 0.9941) / 38.45).exp());
    vgate(vt, 12, hss, tj);
    let hssp = sigmoid((v + 89.1) / 6.086);
    vgate(vt, 13, hssp, 3.0 * ths);
    vgate(vt, 14, hss, 1.46 * tj);
    let mlss = sigmoid(-(v + 42.85) / 5.264);
    vgate(vt, 15, mlss, tm);
    vgate(vt, 16, sigmoid((v + 87.61) / 7.488), 200.0);
    vgate(vt, 17, sigmoid((v + 93.81) / 7.488), 600.0);
    // Ito (endocardial)
    let ass = sigmoid(-(v - 14.34) / 14.82);
    let ta = 1.0515
        / (1.0 / (1.2089 * (1.0 + (-(v - 18.4099) / 29.3814).exp()))
            + 3.5 / (1.0 + ((v + 100.0) / 29.3814).exp()));
    vgate(vt, 18, ass, ta);
    let iss = sigmoid((v + 43.94) / 5.711);
    let tif = 4.562
        + 1.0 / (0.3933 * (-(v + 100.0) / 100.0).exp() + 0.08004 * ((v + 50.0) / 16.59).exp());
    let tis = 23.62
        + 1.0 / (0.001416 * (-(v + 96.52) / 59.05).exp() + 1.780e-8 * ((v + 114.1) / 8.079).exp());
    vt[VT_AIF] = sigmoid((v - 213.6) / 151.2);
    vgate(vt, 19, iss, tif);
    vgate(vt, 20, iss, tis);
    let assp = sigmoid(-(v - 24.34) / 14.82);
    vgate(vt, 21, assp, ta);
    let dti_develop =
        1.354 + 1.0e-4 / (((v - 167.4) / 15.89).exp() + (-(v - 12.23) / 0.2154).exp());
    let dti_recover = 1.0 - 0.5 / (1.0 + ((v + 70.0) / 20.0).exp());
    vgate(vt, 22, iss, dti_develop * dti_recover * tif);
    vgate(vt, 23, iss, dti_develop * dti_recover * tis);
    // ICaL
    let dss = sigmoid(-(v + 3.940) / 4.230);
    let td = 0.6 + 1.0 / ((-0.05 * (v + 6.0)).exp() + (0.09 * (v + 14.0)).exp());
    vgate(vt, 24, dss, td);
    let fss = sigmoid((v + 19.58) / 3.696);
    let tff =
        7.0 + 1.0 / (0.0045 * (-(v + 20.0) / 10.0).exp() + 0.0045 * ((v + 20.0) / 10.0).exp());
    let tfs =
        1000.0 + 1.0 / (0.000035 * (-(v + 5.0) / 4.0).exp() + 0.000035 * ((v + 5.0) / 6.0).exp());
    vgate(vt, 25, fss, tff);
    vgate(vt, 26, fss, tfs);
    let tfcaf = 7.0 + 1.0 / (0.04 * (-(v - 4.0) / 7.0).exp() + 0.04 * ((v - 4.0) / 7.0).exp());
    let tfcas = 100.0 + 1.0 / (0.00012 * (-v / 3.0).exp() + 0.00012 * (v / 7.0).exp());
    vt[VT_AFCAF] = 0.3 + 0.6 / (1.0 + ((v - 10.0) / 10.0).exp());
    vgate(vt, 27, fss, tfcaf);
    vgate(vt, 28, fss, tfcas);
    vgate(vt, 29, fss, 75.0);
    vgate(vt, 31, fss, 2.5 * tff);
    vgate(vt, 32, fss, 2.5 * tfcaf);
    // IKs, IK1, IKb
    let xs1ss = sigmoid(-(v + 11.60) / 8.932);
    let txs1 = 817.3
        + 1.0 / (2.326e-4 * ((v + 48.28) / 17.80).exp() + 0.001292 * (-(v + 210.0) / 230.0).exp());
    vgate(vt, 33, xs1ss, txs1);
    let txs2 = 1.0 / (0.01 * ((v - 50.0) / 20.0).exp() + 0.0193 * (-(v + 66.54) / 31.0).exp());
    vgate(vt, 34, xs1ss, txs2);
    let xk1ss = 1.0 / (1.0 + (-(v + 2.5538 * ko + 144.59) / (1.5692 * ko + 3.8115)).exp());
    let txk1 = 122.2 / ((-(v + 127.2) / 20.36).exp() + ((v + 236.8) / 69.33).exp());
    vgate(vt, 35, xk1ss, txk1);
    vt[VT_RK1] = sigmoid((v + 105.8 - 2.6 * ko) / 9.493);
    vt[VT_XKB] = 1.0 / (1.0 + (-(v - 14.48) / 18.34).exp());
    // GHK, NCX and NaK exponentials
    let vfrt = v / RTF;
    vt[VT_E1] = vfrt.exp();
    vt[VT_E2] = (2.0 * vfrt).exp();
    vt[VT_HCA] = (0.1670 * vfrt).exp();
    vt[VT_HNA] = (0.5224 * vfrt).exp();
    let delta = -0.1550;
    vt[VT_KNAI] = 9.073 * (delta * v / (3.0 * RTF)).exp();
    vt[VT_KNAO] = 27.78 * ((1.0 - delta) * v / (3.0 * RTF)).exp();
    let mut hr = HergRates::default();
    herg.rates_at(v, &mut hr);
    vt[VT_HERG..VT_HERG + 14].copy_from_slice(&hr.r);
    vt[VT_HERG + 14] = hr.trap;
}

/// Sodium currents INa, INaL; returns (INa, INaL).
fn sodium(y: &[f64], p: &OrdParams, ena: f64, f_camk: f64) -> (f64, f64) {
    let v = y[0];
    let (m, hf, hs, j, hsp, jp) = (y[9], y[10], y[11], y[12], y[13], y[14]);
    let h = 0.99 * hf + 0.01 * hs;
    let hp = 0.99 * hf + 0.01 * hsp;
    let gna = 75.0 * p.scale.gna;
    let ina = gna * (v - ena) * m * m * m * ((1.0 - f_camk) * h * j + f_camk * hp * jp);
    let gnal = 0.0075 * p.scale.gnal;
    let inal = gnal * (v - ena) * y[15] * ((1.0 - f_camk) * y[16] + f_camk * y[17]);
    (ina, inal)
}

/// Transient outward current Ito (endocardial).
fn transient_outward(y: &[f64], p: &OrdParams, ek: f64, f_camk: f64, vt: &[f64]) -> f64 {
    let v = y[0];
    let aif = vt[VT_AIF];
    let ais = 1.0 - aif;
    let i = aif * y[19] + ais * y[20];
    let ip = aif * y[22] + ais * y[23];
    let gto = 0.02 * p.scale.gto;
    gto * (v - ek) * ((1.0 - f_camk) * y[18] * i + f_camk * y[21] * ip)
}

/// GHK driving force of a cation of valence `z`, with `vffrt = vF²/RT` and `e = exp(z·vF/RT)`.
#[inline(always)]
fn ghk(z: f64, vffrt: f64, e: f64, inside: f64, outside: f64) -> f64 {
    z * z * vffrt * (inside * e - outside) / (e - 1.0)
}

/// L-type calcium current (ICaL, ICaNa, ICaK) and the `nca` rates; returns (ICaL, ICaNa, ICaK).
fn calcium_l(y: &[f64], p: &OrdParams, f_camk: f64, vt: &[f64], r: &mut Rates) -> (f64, f64, f64) {
    let v = y[0];
    let (nass, kss, cass) = (y[2], y[4], y[6]);
    let f = 0.6 * y[25] + 0.4 * y[26];
    let afcaf = vt[VT_AFCAF];
    let afcas = 1.0 - afcaf;
    let fca = afcaf * y[27] + afcas * y[28];
    let fp = 0.6 * y[31] + 0.4 * y[26];
    let fcap = afcaf * y[32] + afcas * y[28];
    // nca: dn/dt = anca*k2n - n*km2n with km2n = jca
    let (jca, nca) = (y[29], y[30]);
    let k2n = 1000.0;
    let km2n = jca;
    let anca = 1.0 / (k2n / km2n + (1.0 + 0.002 / cass).powi(4));
    r.p[30] = anca * k2n;
    r.k[30] = km2n;

    let vffrt = v * FARADAY / RTF;
    let (e1, e2) = (vt[VT_E1], vt[VT_E2]);
    let phi_cal = ghk(2.0, vffrt, e2, cass, 0.341 * CAO);
    let phi_cana = ghk(1.0, vffrt, e1, 0.75 * nass, 0.75 * NAO);
    let phi_cak = ghk(1.0, vffrt, e1, 0.75 * kss, 0.75 * p.ko_mm);
    let pca = 0.0001 * p.scale.pca;
    let pcap = 1.1 * pca;
    let gate_np = y[24] * (f * (1.0 - nca) + jca * fca * nca);
    let gate_p = y[24] * (fp * (1.0 - nca) + jca * fcap * nca);
    let mix = (1.0 - f_camk) * pca * gate_np + f_camk * pcap * gate_p;
    (
        mix * phi_cal,
        0.00125 * mix * phi_cana,
        3.574e-4 * mix * phi_cak,
    )
}

/// Slow and inward-rectifier potassium currents; returns (IKs, IK1).
fn potassium(y: &[f64], p: &OrdParams, ek: f64, eks: f64, vt: &[f64]) -> (f64, f64) {
    let v = y[0];
    let cai = y[5];
    let ksca = 1.0 + 0.6 / (1.0 + (3.8e-5 / cai).powf(1.4));
    let gks = 0.0034 * p.scale.gks;
    let iks = gks * ksca * y[33] * y[34] * (v - eks);
    let ko = p.ko_mm;
    let gk1 = 0.1908 * p.scale.gk1;
    let ik1 = gk1 * ko.sqrt() * vt[VT_RK1] * y[35] * (v - ek);
    (iks, ik1)
}

/// Na/Ca exchanger current into one compartment (`na`, `ca`: that compartment's Na+/Ca2+, mM;
/// `hca`, `hna`: the voltage factors `exp(0.1670·vF/RT)`, `exp(0.5224·vF/RT)`).
fn ncx(hca: f64, hna: f64, na: f64, ca: f64, share: f64) -> f64 {
    const KNA1: f64 = 15.0;
    const KNA2: f64 = 5.0;
    const KNA3: f64 = 88.12;
    const KASYMM: f64 = 12.5;
    const WNA: f64 = 6.0e4;
    const WCA: f64 = 6.0e4;
    const WNACA: f64 = 5.0e3;
    const KCAON: f64 = 1.5e6;
    const KCAOFF: f64 = 5.0e3;
    let h1 = 1.0 + na / KNA3 * (1.0 + hna);
    let h2 = (na * hna) / (KNA3 * h1);
    let h3 = 1.0 / h1;
    let h4 = 1.0 + na / KNA1 * (1.0 + na / KNA2);
    let h5 = na * na / (h4 * KNA1 * KNA2);
    let h6 = 1.0 / h4;
    let h7 = 1.0 + NAO / KNA3 * (1.0 + 1.0 / hna);
    let h8 = NAO / (KNA3 * hna * h7);
    let h9 = 1.0 / h7;
    let h10 = KASYMM + 1.0 + NAO / KNA1 * (1.0 + NAO / KNA2);
    let h11 = NAO * NAO / (h10 * KNA1 * KNA2);
    let h12 = 1.0 / h10;
    let k1 = h12 * CAO * KCAON;
    let k2 = KCAOFF;
    let k3p = h9 * WCA;
    let k3pp = h8 * WNACA;
    let k3 = k3p + k3pp;
    let k4p = h3 * WCA / hca;
    let k4pp = h2 * WNACA;
    let k4 = k4p + k4pp;
    let k5 = KCAOFF;
    let k6 = h6 * ca * KCAON;
    let k7 = h5 * h2 * WNA;
    let k8 = h8 * h11 * WNA;
    let x1 = k2 * k4 * (k7 + k6) + k5 * k7 * (k2 + k3);
    let x2 = k1 * k7 * (k4 + k5) + k4 * k6 * (k1 + k8);
    let x3 = k1 * k3 * (k7 + k6) + k8 * k6 * (k2 + k3);
    let x4 = k2 * k8 * (k4 + k5) + k3 * k5 * (k1 + k8);
    let sum = x1 + x2 + x3 + x4;
    let (e1, e2, e3, e4) = (x1 / sum, x2 / sum, x3 / sum, x4 / sum);
    let km_ca_act = 150.0e-6;
    let allo = 1.0 / (1.0 + (km_ca_act / ca) * (km_ca_act / ca));
    let jncx_na = 3.0 * (e4 * k7 - e1 * k8) + e3 * k4pp - e2 * k3pp;
    let jncx_ca = e2 * k2 - e1 * k1;
    share * 0.0008 * allo * (jncx_na + 2.0 * jncx_ca)
}

/// Na/K pump current INaK (endocardial); `knai`, `knao`: the voltage-dependent Na+ affinities,
/// mM.
fn nak(knai: f64, knao: f64, nai: f64, ki: f64, ko: f64) -> f64 {
    let (k1p, k1m, k2p, k2m) = (949.5, 182.4, 687.2, 39.4);
    let (k3p, k3m, k4p, k4m) = (1899.0, 79300.0, 639.0, 40.0);
    let (kki, kko) = (0.5, 0.3582);
    let (mgadp, mgatp, kmgatp) = (0.05, 9.8, 1.698e-7);
    let (h, ep, khp, knap, kxkur) = (1.0e-7, 4.2, 1.698e-7, 224.0, 292.0);
    let pp = ep / (1.0 + h / khp + nai / knap + ki / kxkur);
    let denom_i = (1.0 + nai / knai).powi(3) + (1.0 + ki / kki).powi(2) - 1.0;
    let denom_o = (1.0 + NAO / knao).powi(3) + (1.0 + ko / kko).powi(2) - 1.0;
    let a1 = k1p * (nai / knai).powi(3) / denom_i;
    let b1 = k1m * mgadp;
    let a2 = k2p;
    let b2 = k2m * (NAO / knao).powi(3) / denom_o;
    let a3 = k3p * (ko / kko).powi(2) / denom_o;
    let b3 = k3m * pp * h / (1.0 + mgatp / kmgatp);
    let a4 = k4p * mgatp / kmgatp / (1.0 + mgatp / kmgatp);
    let b4 = k4m * (ki / kki).powi(2) / denom_i;
    let x1 = a4 * a1 * a2 + b2 * b4 * b3 + a2 * b4 * b3 + b3 * a1 * a2;
    let x2 = b2 * b1 * b4 + a1 * a2 * a3 + a3 * b1 * b4 + a2 * a3 * b4;
    let x3 = a2 * a3 * a4 + b3 * b2 * b1 + b2 * b1 * a4 + a3 * a4 * b1;
    let x4 = b4 * b3 * b2 + a3 * a4 * a1 + b2 * a4 * a1 + b3 * b2 * a1;
    let sum = x1 + x2 + x3 + x4;
    let (e1, e2, e3, e4) = (x1 / sum, x2 / sum, x3 / sum, x4 / sum);
    let jnak_na = 3.0 * (e1 * a3 - e2 * b3);
    let jnak_k = 2.0 * (e4 * b1 - e3 * a1);
    30.0 * (jnak_na + jnak_k)
}

/// Evaluate the model with stimulus current `istim` (µA/µF; the integrator decides when the
/// stimulus is on): fills `r` (exponential-form rates of every state, hERG rates, qNet integrand
/// and dV/dt). `y` has [`N_STATES`] entries in [`STATE_NAMES`] order.
pub fn rates(
    istim: f64,
    y: &[f64],
    p: &OrdParams,
    herg: &crate::markov::HergConstants,
    r: &mut Rates,
) {
    let mut vt = [0.0; N_VTERMS];
    voltage_terms(y[0], p.ko_mm, herg, &mut vt);
    rates_with(istim, y, p, &vt, r);
}

/// [`rates`] with the voltage-only terms `vt` supplied ([`voltage_terms`] at `y[0]`, or their
/// interpolation from a [`crate::vtable::VoltageTable`]).
pub fn rates_with(istim: f64, y: &[f64], p: &OrdParams, vt: &[f64; N_VTERMS], r: &mut Rates) {
    let v = y[0];
    for (s, &i) in VGATE_STATES.iter().enumerate() {
        r.p[i] = vt[2 * s];
        r.k[i] = vt[2 * s + 1];
    }
    r.herg.r.copy_from_slice(&vt[VT_HERG..VT_HERG + 14]);
    r.herg.trap = vt[VT_HERG + 14];
    let (nai, nass, ki, kss, cai, cass, cansr, cajsr) =
        (y[1], y[2], y[3], y[4], y[5], y[6], y[7], y[8]);
    // CaMK
    let camkt = y[38];
    let camkb = 0.05 * (1.0 - camkt) / (1.0 + 0.0015 / cass);
    let camka = camkb + camkt;
    r.p[38] = 0.05 * camkb * (camkb + camkt) - 0.00068 * camkt;
    r.k[38] = 0.0;
    let f_camk = 1.0 / (1.0 + KM_CAMK / camka);
    // reversal potentials
    let ko = p.ko_mm;
    let ena = RTF * (NAO / nai).ln();
    let ek = RTF * (ko / ki).ln();
    let pkna = 0.01833;
    let eks = RTF * ((ko + pkna * NAO) / (ki + pkna * nai)).ln();

    let (ina, inal) = sodium(y, p, ena, f_camk);
    let ito = transient_outward(y, p, ek, f_camk, vt);
    let (ical, icana, icak) = calcium_l(y, p, f_camk, vt, r);
    let o = y[MARKOV0 + 4];
    let gkr = 0.046 * p.scale.gkr;
    let ikr = gkr * (ko / 5.4).sqrt() * o * (v - ek);
    let (iks, ik1) = potassium(y, p, ek, eks, vt);
    let (hca, hna) = (vt[VT_HCA], vt[VT_HNA]);
    let inaca_i = ncx(hca, hna, nai, cai, 0.8);
    let inaca_ss = ncx(hca, hna, nass, cass, 0.2);
    let inak = nak(vt[VT_KNAI], vt[VT_KNAO], nai, ki, ko);
    let ikb = 0.003 * vt[VT_XKB] * (v - ek);
    let vffrt = v * FARADAY / RTF;
    let inab = 3.75e-10 * ghk(1.0, vffrt, vt[VT_E1], nai, NAO);
    let icab = 2.5e-8 * ghk(2.0, vffrt, vt[VT_E2], cai, 0.341 * CAO);
    let ipca = 0.0005 * cai / (0.0005 + cai);
    let dvdt = -(ina
        + inal
        + ito
        + ical
        + icana
        + icak
        + ikr
        + iks
        + ik1
        + inaca_i
        + inaca_ss
        + inak
        + inab
        + ikb
        + ipca
        + icab
        + istim);
    r.p[0] = dvdt;
    r.k[0] = 0.0;
    r.net = NetCurrents {
        qnet_integrand: inal + ical + ito + ikr + iks + ik1,
        dvdt,
    };
    calcium_handling(y, ical, f_camk, r);
    // ionic concentrations
    let jdiff_na = (nass - nai) / 2.0;
    let jdiff_k = (kss - ki) / 2.0;
    let jdiff = (cass - cai) / 0.2;
    r.p[1] = -(ina + inal + 3.0 * inaca_i + 3.0 * inak + inab) * ACAP / (FARADAY * VMYO)
        + jdiff_na * VSS / VMYO;
    r.p[2] = -(icana + 3.0 * inaca_ss) * ACAP / (FARADAY * VSS) - jdiff_na;
    r.p[3] = -(ito + ikr + iks + ik1 + ikb + istim - 2.0 * inak) * ACAP / (FARADAY * VMYO)
        + jdiff_k * VSS / VMYO;
    r.p[4] = -icak * ACAP / (FARADAY * VSS) - jdiff_k;
    let bcai = 1.0
        / (1.0 + 0.05 * 0.00238 / (0.00238 + cai).powi(2) + 0.07 * 0.0005 / (0.0005 + cai).powi(2));
    let jup = serca(cai, cansr, f_camk);
    r.p[5] = bcai
        * (-(ipca + icab - 2.0 * inaca_i) * ACAP / (2.0 * FARADAY * VMYO) - jup * VNSR / VMYO
            + jdiff * VSS / VMYO);
    let bcass = 1.0
        / (1.0
            + 0.047 * 0.00087 / (0.00087 + cass).powi(2)
            + 1.124 * 0.0087 / (0.0087 + cass).powi(2));
    let jrel = (1.0 - f_camk) * y[36] + f_camk * y[37];
    r.p[6] = bcass
        * (-(ical - 2.0 * inaca_ss) * ACAP / (2.0 * FARADAY * VSS) + jrel * VJSR / VSS - jdiff);
    let jtr = (cansr - cajsr) / 100.0;
    r.p[7] = jup - jtr * VJSR / VNSR;
    let bcajsr = 1.0 / (1.0 + 10.0 * 0.8 / (0.8 + cajsr).powi(2));
    r.p[8] = bcajsr * (jtr - jrel);
    for i in 1..9 {
        r.k[i] = 0.0;
    }
}

/// SERCA uptake minus leak, mM/ms.
fn serca(cai: f64, cansr: f64, f_camk: f64) -> f64 {
    let jupnp = 0.004375 * cai / (cai + 0.00092);
    let jupp = 2.75 * 0.004375 * cai / (cai + 0.00092 - 0.00017);
    let jleak = 0.0039375 * cansr / 15.0;
    (1.0 - f_camk) * jupnp + f_camk * jupp - jleak
}

/// Ryanodine-receptor release relaxations (states 36, 37).
fn calcium_handling(y: &[f64], ical: f64, _f_camk: f64, r: &mut Rates) {
    let cajsr = y[8];
    let bt = 4.75;
    let jrel_inf = 0.5 * bt * (-ical) / (1.0 + (1.5 / cajsr).powi(8));
    let tau_rel = (bt / (1.0 + 0.0123 / cajsr)).max(0.001);
    gate(r, 36, jrel_inf, tau_rel);
    let btp = 1.25 * bt;
    let jrel_infp = 0.5 * btp * (-ical) / (1.0 + (1.5 / cajsr).powi(8));
    let tau_relp = (btp / (1.0 + 0.0123 / cajsr)).max(0.001);
    gate(r, 37, jrel_infp, tau_relp);
}

/// Plain derivative dy/dt of all [`N_STATES`] states at beat time `t_ms` (stimulus on for
/// `t_ms <= stim_duration_ms`, as the reference), for checks and generic integrators.
pub fn derivative(
    t_ms: f64,
    y: &[f64],
    p: &OrdParams,
    herg: &crate::markov::HergConstants,
    dy: &mut [f64],
) -> NetCurrents {
    let mut r = Rates::default();
    let istim = if t_ms <= p.stim_duration_ms {
        p.stim_amp_ua_per_uf
    } else {
        0.0
    };
    rates(istim, y, p, herg, &mut r);
    for i in 0..MARKOV0 {
        dy[i] = r.p[i] - r.k[i] * y[i];
    }
    let mut x = [0.0; MARKOV_LEN];
    x.copy_from_slice(&y[MARKOV0..]);
    let q = r.herg.generator(herg);
    for i in 0..MARKOV_LEN {
        dy[MARKOV0 + i] = (0..MARKOV_LEN).map(|j| q[i][j] * x[j]).sum();
    }
    r.net
}
