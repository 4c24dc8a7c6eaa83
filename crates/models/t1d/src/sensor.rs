//! Continuous glucose monitor (CGM) sensor model, as in simglucose 0.2.11.
//!
//! A CGM reading is the subcutaneous glucose `Gsub` (mg/dL) plus an additive, BG-independent,
//! autocorrelated noise, clipped to the sensor's range and held between samples:
//!
//! * the noise is the model of Breton M, Kovatchev B, *Analysis, modeling, and simulation of the
//!   accuracy of continuous glucose sensors*, J Diabetes Sci Technol 2(5):853–862, 2008: an
//!   autoregressive driving process sampled every 15 min, mapped through a Johnson S_U
//!   transform;
//! * the implementation follows simglucose 0.2.11 `sensor/noise_gen.py` (`CGMNoise`,
//!   `noise15_iter`) and `sensor/cgm.py` (`CGMSensor.measure`), including its block-wise cubic
//!   interpolation of the 15-min values onto the sensor grid (see [`CgmNoise`]).
//!
//! The random numbers come from ChaCha8 (`rand_chacha`), not numpy's MT19937, so a seed does not
//! reproduce simglucose's sequence; the process is statistically the same. Given the same N(0,1)
//! draws ([`CgmNoise::from_normals`]) the output matches simglucose to rounding error.
//!
//! Parameter values: simglucose 0.2.11 `params/sensor_params.csv`
//! (`shared/reference/simglucose/sensor_params.csv`, sha256 `a8b514dd…`, copied to
//! `crates/models/t1d/data/sensor_params.csv`).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

/// Sampling period of the noise driving process, min (simglucose `CGMNoise.MDL_SAMPLE_TIME`).
pub const NOISE_MODEL_STEP_MIN: u32 = 15;

/// Number of new 15-min driving values per interpolation block (simglucose `CGMNoise.PRECOMPUTE`).
/// One block therefore spans `10 × 15 = 150` min.
pub const NOISE_BLOCK_LEN: usize = 10;

/// The CGM sensors of simglucose 0.2.11 (`params/sensor_params.csv` rows).
///
/// Serialised in kebab case: `"dexcom"`, `"guardian-rt"`, `"navigator"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SensorKind {
    /// simglucose row `Dexcom`: 3-min sampling, range 39–600 mg/dL.
    Dexcom,
    /// simglucose row `GuardianRT` (Medtronic Guardian RT): 5-min sampling, range 39–600 mg/dL.
    GuardianRt,
    /// simglucose row `Navigator` (Abbott FreeStyle Navigator): 1-min sampling, range 32–600 mg/dL.
    Navigator,
}

impl SensorKind {
    /// All sensors, in `sensor_params.csv` order.
    pub const ALL: [SensorKind; 3] = [
        SensorKind::Dexcom,
        SensorKind::GuardianRt,
        SensorKind::Navigator,
    ];

    /// Parses `"dexcom"`, `"guardian-rt"` or `"navigator"`, case-insensitively. simglucose's own
    /// spelling `"GuardianRT"` (any case) is accepted too. Returns `None` for anything else.
    pub fn from_name(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "dexcom" => Some(SensorKind::Dexcom),
            "guardian-rt" | "guardianrt" => Some(SensorKind::GuardianRt),
            "navigator" => Some(SensorKind::Navigator),
            _ => None,
        }
    }

    /// medtwin name: `"dexcom"`, `"guardian-rt"` or `"navigator"` (inverse of [`Self::from_name`]).
    pub fn name(&self) -> &'static str {
        match self {
            SensorKind::Dexcom => "dexcom",
            SensorKind::GuardianRt => "guardian-rt",
            SensorKind::Navigator => "navigator",
        }
    }

    /// The `Name` column of simglucose's `sensor_params.csv`: `"Dexcom"`, `"GuardianRT"`, `"Navigator"`.
    pub fn simglucose_name(&self) -> &'static str {
        match self {
            SensorKind::Dexcom => "Dexcom",
            SensorKind::GuardianRt => "GuardianRT",
            SensorKind::Navigator => "Navigator",
        }
    }

    /// Parameters of this sensor, copied from simglucose 0.2.11 `params/sensor_params.csv`.
    /// The noise parameters are the same for all three sensors (Breton & Kovatchev 2008).
    pub fn params(&self) -> SensorParams {
        // sensor_params.csv: Name,PACF,gamma,lambda,delta,xi,sample_time,min,max
        //   Dexcom,0.7,-0.5444,15.9574,1.6898,-5.47,3.0,39.0,600.0
        //   GuardianRT,0.7,-0.5444,15.9574,1.6898,-5.47,5.0,39.0,600.0
        //   Navigator,0.7,-0.5444,15.9574,1.6898,-5.47,1.0,32.0,600.0
        let (sample_time_min, min_mg_dl) = match self {
            SensorKind::Dexcom => (3, 39.0),
            SensorKind::GuardianRt => (5, 39.0),
            SensorKind::Navigator => (1, 32.0),
        };
        SensorParams {
            pacf: 0.7,
            gamma: -0.5444,
            lambda: 15.9574,
            delta: 1.6898,
            xi: -5.47,
            sample_time_min,
            min_mg_dl,
            max_mg_dl: 600.0,
        }
    }
}

/// Parameters of a CGM sensor (one row of simglucose 0.2.11 `params/sensor_params.csv`).
///
/// Noise model (Breton & Kovatchev 2008, as coded in simglucose `noise_gen.py`): driving process
/// `e_0 = N(0,1)`, `e_k = pacf·(e_{k-1} + N(0,1))` every 15 min, noise
/// `xi + lambda·sinh((e − gamma)/delta)` mg/dL. Setting `xi = lambda = 0` gives zero noise.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SensorParams {
    /// Coefficient of the 15-min driving process (CSV `PACF`), dimensionless. Note that
    /// simglucose uses `e_k = PACF·(e_{k-1} + w_k)`, not `PACF·e_{k-1} + sqrt(1 − PACF²)·w_k`.
    pub pacf: f64,
    /// Johnson S_U location of the driving process (CSV `gamma`), dimensionless.
    pub gamma: f64,
    /// Johnson S_U scale of the noise (CSV `lambda`), mg/dL.
    pub lambda: f64,
    /// Johnson S_U shape (CSV `delta`), dimensionless, > 0.
    pub delta: f64,
    /// Johnson S_U offset of the noise (CSV `xi`), mg/dL.
    pub xi: f64,
    /// Sensor sampling period (CSV `sample_time`), min. Must be in `1..=150`.
    pub sample_time_min: u32,
    /// Lowest reported value (CSV `min`), mg/dL.
    pub min_mg_dl: f64,
    /// Highest reported value (CSV `max`), mg/dL.
    pub max_mg_dl: f64,
}

/// Source of the N(0,1) draws of the driving process.
#[derive(Debug, Clone)]
enum NormalSource {
    /// Seeded ChaCha8 generator (boxed: it is large).
    Rng(Box<ChaCha8Rng>),
    /// Given draws (numpy's, for replaying simglucose).
    Replay(std::vec::IntoIter<f64>),
}

impl NormalSource {
    /// Next N(0,1) draw, `None` when a replay is exhausted.
    fn next_normal(&mut self) -> Option<f64> {
        match self {
            NormalSource::Rng(rng) => Some(rng.sample(StandardNormal)),
            NormalSource::Replay(it) => it.next(),
        }
    }
}

/// The CGM noise process alone: an endless iterator of additive noise values (mg/dL), one per
/// sensor sample (every `sample_time_min` minutes, starting with the sample at `t = 0`).
///
/// Exactly the construction of simglucose 0.2.11 `noise_gen.py` (`CGMNoise` + `noise15_iter`),
/// model from Breton & Kovatchev, JDST 2(5):853–862, 2008:
///
/// 1. driving process every 15 min: `e_0 = N(0,1)`, `e_k = pacf·(e_{k-1} + N(0,1))`;
/// 2. Johnson S_U transform: `n_k = xi + lambda·sinh((e_k − gamma)/delta)`;
/// 3. values are produced in blocks: the knots `[last, n_{j+1}, …, n_{j+10}]` at `0, 15, …, 150`
///    min (`last` is the final knot of the previous block, or `n_0` for the first block) are
///    interpolated by a not-a-knot cubic spline (scipy `interp1d(kind="cubic")`, see
///    [`interp_cubic_not_a_knot`]) at `t = s, 2s, …, floor(150/s)·s` min (`s` = sample time;
///    `t = 0` is dropped). Each block thus yields `floor(150/s)` values.
///
/// So the value returned first (used for the `t = 0` sample) is the spline at `t = s`, not `n_0`.
/// If `s` does not divide 150 the grid restarts at each block's knot 0, as in simglucose.
#[derive(Debug, Clone)]
pub struct CgmNoise {
    /// Sensor parameters (noise and sample time).
    params: SensorParams,
    /// Where the N(0,1) draws come from.
    source: NormalSource,
    /// Driving process state `e_k`; `None` before the first draw.
    e: Option<f64>,
    /// Last transformed 15-min value (first knot of the next block); `None` before the first block.
    knot_last: Option<f64>,
    /// Noise values of the current block not yet returned.
    block: Vec<f64>,
    /// Index of the next value of `block` to return.
    pos: usize,
}

impl CgmNoise {
    /// Noise process with N(0,1) draws from `ChaCha8Rng::seed_from_u64(seed)` (`rand_distr::StandardNormal`).
    ///
    /// # Panics
    /// If `params.sample_time_min` is 0 or greater than 150 (simglucose fails on those too).
    pub fn new(params: SensorParams, seed: u64) -> Self {
        Self::with_source(
            params,
            NormalSource::Rng(Box::new(ChaCha8Rng::seed_from_u64(seed))),
        )
    }

    /// Noise process driven by the given N(0,1) draws, in the order simglucose's
    /// `noise15_iter` makes them (first `e_0`, then one per 15-min step). Used to replay numpy's
    /// `RandomState(seed).randn()` stream and reproduce simglucose exactly. The iterator ends
    /// (`None`) when a block needs more draws than remain.
    ///
    /// # Panics
    /// As [`CgmNoise::new`].
    pub fn from_normals(params: SensorParams, normals: Vec<f64>) -> Self {
        Self::with_source(params, NormalSource::Replay(normals.into_iter()))
    }

    /// Common constructor; checks the sample time.
    fn with_source(params: SensorParams, source: NormalSource) -> Self {
        let block_min = NOISE_BLOCK_LEN as u32 * NOISE_MODEL_STEP_MIN;
        assert!(
            (1..=block_min).contains(&params.sample_time_min),
            "CGM sample time must be 1..={block_min} min, got {}",
            params.sample_time_min
        );
        Self {
            params,
            source,
            e: None,
            knot_last: None,
            block: Vec::new(),
            pos: 0,
        }
    }

    /// The sensor parameters of this process.
    pub fn params(&self) -> &SensorParams {
        &self.params
    }

    /// Next 15-min noise value (simglucose `noise15_iter.__next__`), mg/dL.
    fn next15(&mut self) -> Option<f64> {
        let w = self.source.next_normal()?;
        let p = &self.params;
        let e = match self.e {
            None => w,
            Some(prev) => p.pacf * (prev + w),
        };
        self.e = Some(e);
        Some(p.xi + p.lambda * ((e - p.gamma) / p.delta).sinh())
    }

    /// Computes the next block (simglucose `CGMNoise._get_noise_seq`). `None` if the draws ran out.
    fn refill(&mut self) -> Option<()> {
        let first = match self.knot_last {
            Some(v) => v,
            None => self.next15()?,
        };
        let mut knots = [0.0; NOISE_BLOCK_LEN + 1];
        knots[0] = first;
        for k in knots.iter_mut().skip(1) {
            *k = self.next15()?;
        }
        self.knot_last = Some(knots[NOISE_BLOCK_LEN]);
        let s = self.params.sample_time_min;
        let n_out = (NOISE_BLOCK_LEN as u32 * NOISE_MODEL_STEP_MIN / s) as usize;
        let t: Vec<f64> = (1..=n_out).map(|j| (j as u32 * s) as f64).collect();
        self.block = interp_cubic_not_a_knot(f64::from(NOISE_MODEL_STEP_MIN), &knots, &t);
        self.pos = 0;
        Some(())
    }
}

impl Iterator for CgmNoise {
    /// Additive noise, mg/dL.
    type Item = f64;

    fn next(&mut self) -> Option<f64> {
        if self.pos >= self.block.len() {
            self.refill()?;
        }
        let v = self.block[self.pos];
        self.pos += 1;
        Some(v)
    }
}

/// Not-a-knot cubic spline through `(i·h, y[i])`, `i = 0..y.len()`, evaluated at each `t` —
/// the interpolant of scipy `interp1d(x, y, kind="cubic")` (`make_interp_spline(k=3)` with the
/// default not-a-knot end conditions) for equally spaced `x`.
///
/// Not-a-knot: the third derivative is continuous at the second and the second-to-last knot
/// (so the first two and the last two pieces are each one cubic). Points outside
/// `[0, (n−1)·h]` are extrapolated with the end pieces (scipy raises instead).
///
/// # Panics
/// If `y.len() < 4` or `h <= 0`.
pub fn interp_cubic_not_a_knot(h: f64, y: &[f64], t: &[f64]) -> Vec<f64> {
    let n = y.len();
    assert!(
        n >= 4,
        "not-a-knot cubic spline needs at least 4 knots, got {n}"
    );
    assert!(h > 0.0, "knot spacing must be positive, got {h}");
    // Unknowns: second derivatives m[0..n] at the knots.
    //   row 0:     m0 − 2 m1 + m2 = 0                       (not-a-knot at x1)
    //   row i:     m_{i−1} + 4 m_i + m_{i+1} = 6 (y_{i+1} − 2 y_i + y_{i−1}) / h²,  i = 1..n−2
    //   row n−1:   m_{n−3} − 2 m_{n−2} + m_{n−1} = 0         (not-a-knot at x_{n−2})
    let mut a = vec![vec![0.0; n]; n];
    let mut b = vec![0.0; n];
    a[0][0] = 1.0;
    a[0][1] = -2.0;
    a[0][2] = 1.0;
    for i in 1..n - 1 {
        a[i][i - 1] = 1.0;
        a[i][i] = 4.0;
        a[i][i + 1] = 1.0;
        b[i] = 6.0 * (y[i + 1] - 2.0 * y[i] + y[i - 1]) / (h * h);
    }
    a[n - 1][n - 3] = 1.0;
    a[n - 1][n - 2] = -2.0;
    a[n - 1][n - 1] = 1.0;
    let m = solve_dense(a, b);

    t.iter()
        .map(|&ti| {
            let i = ((ti / h).floor().max(0.0) as usize).min(n - 2);
            let x0 = i as f64 * h;
            let (l, r) = (x0 + h - ti, ti - x0);
            m[i] * l * l * l / (6.0 * h)
                + m[i + 1] * r * r * r / (6.0 * h)
                + (y[i] / h - m[i] * h / 6.0) * l
                + (y[i + 1] / h - m[i + 1] * h / 6.0) * r
        })
        .collect()
}

/// Gaussian elimination with partial pivoting for a small dense system `a·x = b`.
fn solve_dense(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
    let n = b.len();
    for col in 0..n {
        let piv = (col..n)
            .max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))
            .unwrap_or(col);
        a.swap(col, piv);
        b.swap(col, piv);
        for row in col + 1..n {
            let f = a[row][col] / a[col][col];
            if f != 0.0 {
                let (top, bottom) = a.split_at_mut(row);
                for (x, p) in bottom[0][col..].iter_mut().zip(&top[col][col..]) {
                    *x -= f * p;
                }
                b[row] -= f * b[col];
            }
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let s: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    x
}

/// A CGM sensor: simglucose 0.2.11 `CGMSensor` (`sensor/cgm.py`).
///
/// At each multiple of the sample time the reading is `clip(Gsub + noise, min, max)` mg/dL with
/// one new value of [`CgmNoise`]; between samples the last reading is held.
#[derive(Debug, Clone)]
pub struct CgmSensor {
    /// Sensor parameters.
    params: SensorParams,
    /// Seed of the noise process (kept for `reset`).
    seed: u64,
    /// Whether readings are noisy.
    noise_on: bool,
    /// The noise process; `None` when noise is off.
    noise: Option<CgmNoise>,
    /// Last reading, mg/dL (held between samples; 0 before the first).
    last_mg_dl: f64,
}

impl CgmSensor {
    /// Sensor `kind` with its simglucose parameters. With `noise = false` readings are exactly
    /// `Gsub` clipped to the sensor range (no random numbers drawn); otherwise the noise is
    /// [`CgmNoise::new`]`(kind.params(), seed)`.
    pub fn new(kind: SensorKind, noise: bool, seed: u64) -> Self {
        Self::from_params(kind.params(), noise, seed)
    }

    /// Sensor with custom parameters (see [`SensorParams`]); otherwise as [`CgmSensor::new`].
    ///
    /// # Panics
    /// If `noise` is true and `params.sample_time_min` is not in `1..=150`, or if `noise` is
    /// false and the sample time is 0.
    pub fn from_params(params: SensorParams, noise: bool, seed: u64) -> Self {
        assert!(
            params.sample_time_min > 0,
            "CGM sample time must be positive"
        );
        let mut s = Self {
            params,
            seed,
            noise_on: noise,
            noise: None,
            last_mg_dl: 0.0,
        };
        s.reset();
        s
    }

    /// Sampling period, min.
    pub fn sample_time_min(&self) -> u32 {
        self.params.sample_time_min
    }

    /// The sensor parameters.
    pub fn params(&self) -> &SensorParams {
        &self.params
    }

    /// Restarts the noise process from the seed and sets the held value back to 0 mg/dL
    /// (simglucose `CGMSensor.reset`).
    pub fn reset(&mut self) {
        self.noise = self.noise_on.then(|| CgmNoise::new(self.params, self.seed));
        self.last_mg_dl = 0.0;
    }

    /// Reading at time `t_min` (min) for subcutaneous glucose `gsub_mg_dl` (mg/dL), in mg/dL —
    /// simglucose `CGMSensor.measure`.
    ///
    /// If `t_min` is a multiple of the sample time, returns `clip(gsub + next noise, min, max)`
    /// and remembers it; otherwise returns the last such value (zero-order hold). `gsub_mg_dl` is
    /// then ignored. Before the first sample the held value is 0 mg/dL, as in simglucose. Every
    /// call at a sample time consumes one noise value, also repeated calls at the same `t_min`
    /// (simglucose's `env.reset()` measures twice at `t = 0`). NaN input gives NaN, as in Python.
    pub fn measure(&mut self, t_min: u64, gsub_mg_dl: f64) -> f64 {
        if !t_min.is_multiple_of(u64::from(self.params.sample_time_min)) {
            return self.last_mg_dl;
        }
        let raw = match self.noise.as_mut() {
            Some(gen) => gsub_mg_dl + gen.next().expect("the seeded CGM noise process is endless"),
            None => gsub_mg_dl,
        };
        // Python `min(max(raw, lo), hi)`, including its NaN behaviour.
        let v = if self.params.min_mg_dl > raw {
            self.params.min_mg_dl
        } else {
            raw
        };
        let v = if self.params.max_mg_dl < v {
            self.params.max_mg_dl
        } else {
            v
        };
        self.last_mg_dl = v;
        v
    }
}
