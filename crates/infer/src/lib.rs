//! # medtwin-infer
//!
//! Model-agnostic inference for digital twins, in the "plug-and-play" style of pomp (King,
//! Nguyen & Ionides, J Stat Softw 69(12), 2016): an algorithm needs only to
//! *draw an initial state* (`rinit`), *simulate the process forward* (`rprocess`) and
//! *evaluate the measurement density* (`dmeasure`) — see [`StateSpaceModel`]. Any model that
//! implements it (the UVA/Padova twin today; SBML, PK/PD or PDE twins later) gets:
//!
//! * [`ParticleFilter`]: sequential assimilation of observations (bootstrap particle filter,
//!   Gordon, Salmond & Smith, IEE Proc F 140(2), 1993) with systematic resampling and optional
//!   kernel jitter of slowly varying parameters (Liu & West 2001);
//! * [`forecast`]: propagate an ensemble to a horizon and summarise the predictive distribution
//!   ([`Bands`]: median, 50/80/95 % intervals, exceedance probabilities);
//! * [`optim::nelder_mead`] and [`optim::laplace`]: maximum-a-posteriori fits with a Laplace
//!   (Gaussian) uncertainty estimate.
//!
//! Randomness: every draw comes from generators derived from an explicit seed and the particle
//! index ([`stream_rng`]), so results do not depend on the number of threads.

#![warn(missing_docs)]

pub mod boost;
pub mod optim;
pub mod ridge;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use thiserror::Error;

/// An error raised while simulating a particle forward (e.g. solver failure).
#[derive(Debug, Clone, Error, PartialEq)]
#[error("{0}")]
pub struct ProcessError(pub String);

/// Errors of the inference algorithms.
#[derive(Debug, Clone, Error, PartialEq)]
pub enum InferError {
    /// Every particle failed to simulate or had zero likelihood.
    #[error("particle filter degenerate at t = {t_min} min: {why}")]
    Degenerate {
        /// Time of the failed update, minutes.
        t_min: f64,
        /// What happened.
        why: String,
    },
    /// Observations must be in time order.
    #[error("observation at t = {t_min} min is before the filter time {filter_t_min} min")]
    OutOfOrder {
        /// Observation time.
        t_min: f64,
        /// Current filter time.
        filter_t_min: f64,
    },
}

/// The plug-and-play interface between a model and the inference algorithms.
///
/// `Particle` carries everything one trajectory needs (state and, for joint state–parameter
/// estimation, the parameters). Inputs (doses, meals, infusions) are the model's business: the
/// implementation looks them up for `[t0, t1)` itself, so the algorithms never see them.
pub trait StateSpaceModel: Sync {
    /// One particle: state plus (optionally) parameters.
    type Particle: Clone + Send + Sync;
    /// Draw an initial particle at time `t0_min` from the prior.
    fn rinit(&self, t0_min: f64, rng: &mut ChaCha8Rng) -> Self::Particle;
    /// Simulate `x` forward from `t0_min` to `t1_min` (process noise included).
    fn rprocess(
        &self,
        x: &mut Self::Particle,
        t0_min: f64,
        t1_min: f64,
        rng: &mut ChaCha8Rng,
    ) -> Result<(), ProcessError>;
    /// Log density of observing `y` at `t_min` given `x`.
    fn dmeasure(&self, x: &Self::Particle, y: f64, t_min: f64) -> f64;
    /// Draw an observation given `x` (used for predictive bands that include measurement error).
    fn rmeasure(&self, x: &Self::Particle, t_min: f64, rng: &mut ChaCha8Rng) -> f64;
    /// Perturb slowly varying parameters after resampling (kernel jitter). Default: none.
    fn jitter(&self, _x: &mut Self::Particle, _rng: &mut ChaCha8Rng) {}
}

/// A generator for stream `index` of experiment `seed`: ChaCha8 seeded by `seed` with the
/// stream number set to `index`, so each particle/patient has an independent, reproducible
/// stream whatever the thread schedule.
pub fn stream_rng(seed: u64, index: u64) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(index);
    r
}

/// Systematic resampling (Kitagawa 1996): `n` indices drawn from normalised weights `w` with
/// one uniform. Shapes: `w.len() >= 1`; returns `n` indices into `w`.
pub fn systematic_resample(w: &[f64], n: usize, u0: f64) -> Vec<usize> {
    let total: f64 = w.iter().sum();
    let mut out = Vec::with_capacity(n);
    let mut c = w[0] / total;
    let mut i = 0;
    for k in 0..n {
        let u = (u0 + k as f64) / n as f64;
        while u > c && i + 1 < w.len() {
            i += 1;
            c += w[i] / total;
        }
        out.push(i);
    }
    out
}

/// Bootstrap particle filter state: an equally weighted (after resampling) ensemble.
#[derive(Clone)]
pub struct ParticleFilter<P> {
    /// Particles.
    pub particles: Vec<P>,
    /// Normalised weights (sum 1).
    pub weights: Vec<f64>,
    /// Current filter time, minutes.
    pub t_min: f64,
    /// Accumulated log-likelihood of all assimilated observations.
    pub log_lik: f64,
    /// Seed of the filter's random streams.
    pub seed: u64,
    /// Number of updates done (advances the random streams).
    pub step: u64,
    /// Effective sample size after the last update (before resampling).
    pub last_ess: f64,
}

impl<P: Clone + Send + Sync> ParticleFilter<P> {
    /// `n` particles drawn from the model's `rinit` at `t0_min`.
    pub fn new<M: StateSpaceModel<Particle = P>>(
        model: &M,
        n: usize,
        t0_min: f64,
        seed: u64,
    ) -> Self {
        let particles: Vec<P> = (0..n)
            .into_par_iter()
            .map(|i| model.rinit(t0_min, &mut stream_rng(seed, i as u64)))
            .collect();
        Self::from_particles(particles, t0_min, seed)
    }

    /// A filter over given equally weighted particles.
    pub fn from_particles(particles: Vec<P>, t0_min: f64, seed: u64) -> Self {
        let n = particles.len().max(1);
        ParticleFilter {
            weights: vec![1.0 / n as f64; particles.len()],
            particles,
            t_min: t0_min,
            log_lik: 0.0,
            seed,
            step: 0,
            last_ess: n as f64,
        }
    }

    /// Random streams of the next use: (use number, particle) → a disjoint ChaCha8 stream.
    /// Use 0 is `rinit`'s; every propagation and resampling takes a fresh use number.
    fn next_rngs(&mut self, n: usize) -> Vec<ChaCha8Rng> {
        self.step += 1;
        (0..n)
            .map(|i| stream_rng(self.seed, (self.step << 24) | i as u64))
            .collect()
    }

    /// Propagate every particle to `t1_min` without an observation.
    /// Particles whose simulation fails get weight zero; error if all fail.
    pub fn advance<M: StateSpaceModel<Particle = P>>(
        &mut self,
        model: &M,
        t1_min: f64,
    ) -> Result<(), InferError> {
        if t1_min < self.t_min {
            return Err(InferError::OutOfOrder {
                t_min: t1_min,
                filter_t_min: self.t_min,
            });
        }
        if t1_min == self.t_min {
            return Ok(());
        }
        let t0 = self.t_min;
        let rngs = self.next_rngs(self.particles.len());
        let ok: Vec<bool> = self
            .particles
            .par_iter_mut()
            .zip(rngs)
            .map(|(p, mut r)| model.rprocess(p, t0, t1_min, &mut r).is_ok())
            .collect();
        for (w, ok) in self.weights.iter_mut().zip(&ok) {
            if !ok {
                *w = 0.0;
            }
        }
        let s: f64 = self.weights.iter().sum();
        if s.is_nan() || s <= 0.0 {
            return Err(InferError::Degenerate {
                t_min: t1_min,
                why: "every particle's simulation failed".into(),
            });
        }
        for w in &mut self.weights {
            *w /= s;
        }
        self.t_min = t1_min;
        Ok(())
    }

    /// Assimilate observation `y` at `t_min`: propagate, weight by `dmeasure`, resample
    /// (systematic, when ESS < `resample_frac`·N) and jitter parameters.
    pub fn assimilate<M: StateSpaceModel<Particle = P>>(
        &mut self,
        model: &M,
        t_min: f64,
        y: f64,
        resample_frac: f64,
    ) -> Result<(), InferError> {
        self.advance(model, t_min)?;
        let logw: Vec<f64> = self
            .particles
            .iter()
            .zip(&self.weights)
            .map(|(p, &w)| {
                if w > 0.0 {
                    w.ln() + model.dmeasure(p, y, t_min)
                } else {
                    f64::NEG_INFINITY
                }
            })
            .collect();
        let m = logw.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        if !m.is_finite() {
            return Err(InferError::Degenerate {
                t_min,
                why: format!("observation {y} has zero likelihood under every particle"),
            });
        }
        let w: Vec<f64> = logw.iter().map(|l| (l - m).exp()).collect();
        let s: f64 = w.iter().sum();
        // p(y | past) = sum_i w_i^prev p(y | x_i)
        self.log_lik += m + s.ln();
        self.weights = w.iter().map(|v| v / s).collect();
        let ess = 1.0 / self.weights.iter().map(|v| v * v).sum::<f64>();
        self.last_ess = ess;
        if ess < resample_frac * self.particles.len() as f64 {
            let mut rngs = self.next_rngs(self.particles.len() + 1);
            let u0 = rngs.pop().map(|mut r| r.random::<f64>()).unwrap_or(0.5);
            let idx = systematic_resample(&self.weights, self.particles.len(), u0);
            let old = std::mem::take(&mut self.particles);
            self.particles = idx
                .par_iter()
                .zip(rngs)
                .map(|(&j, mut r)| {
                    let mut p = old[j].clone();
                    model.jitter(&mut p, &mut r);
                    p
                })
                .collect();
            let n = self.particles.len() as f64;
            self.weights = vec![1.0 / n; self.particles.len()];
        }
        Ok(())
    }
}

/// Summary of a predictive distribution at one time: weighted quantiles.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Bands {
    /// Median.
    pub median: f64,
    /// 25th / 75th percentiles (50 % interval).
    pub lo50: f64,
    /// 75th percentile.
    pub hi50: f64,
    /// 10th / 90th percentiles (80 % interval).
    pub lo80: f64,
    /// 90th percentile.
    pub hi80: f64,
    /// 2.5th / 97.5th percentiles (95 % interval).
    pub lo95: f64,
    /// 97.5th percentile.
    pub hi95: f64,
}

/// Quantile `q ∈ [0,1]` (clamped) of already sorted data by linear interpolation between order
/// statistics (Hyndman & Fan type 7, R's default); NaN for empty data.
pub fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let i = pos.floor() as usize;
    let j = (i + 1).min(sorted.len() - 1);
    sorted[i] + (pos - i as f64) * (sorted[j] - sorted[i])
}

/// Weighted quantile `q ∈ [0,1]` of `values` (sorted pairs `(value, weight)`), by the inverse
/// of the weighted empirical CDF. Shapes: non-empty, weights ≥ 0 with positive sum.
pub fn weighted_quantile(sorted: &[(f64, f64)], q: f64) -> f64 {
    let total: f64 = sorted.iter().map(|p| p.1).sum();
    let target = q * total;
    let mut c = 0.0;
    for &(v, w) in sorted {
        c += w;
        if c >= target {
            return v;
        }
    }
    sorted.last().map(|p| p.0).unwrap_or(f64::NAN)
}

/// [`Bands`] of weighted samples. Returns `None` if there is no sample with positive weight.
pub fn bands(values: &[f64], weights: &[f64]) -> Option<Bands> {
    let mut s: Vec<(f64, f64)> = values
        .iter()
        .zip(weights)
        .filter(|(v, w)| v.is_finite() && **w > 0.0)
        .map(|(v, w)| (*v, *w))
        .collect();
    if s.is_empty() {
        return None;
    }
    s.sort_by(|a, b| a.0.total_cmp(&b.0));
    let q = |p: f64| weighted_quantile(&s, p);
    Some(Bands {
        median: q(0.5),
        lo50: q(0.25),
        hi50: q(0.75),
        lo80: q(0.10),
        hi80: q(0.90),
        lo95: q(0.025),
        hi95: q(0.975),
    })
}

/// A forecast: per output time, the predictive [`Bands`] of the observation and, per particle,
/// whether its path crossed below/above thresholds.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Forecast {
    /// Forecast times, minutes.
    pub t_min: Vec<f64>,
    /// Bands at each time (predictive: includes measurement error via `rmeasure`).
    pub bands: Vec<Bands>,
    /// P(observation below `low` at any output time within the horizon).
    pub p_below: f64,
    /// P(observation above `high` at any output time within the horizon).
    pub p_above: f64,
}

/// Simulated predictive paths of an ensemble: one observation draw per particle per time.
#[derive(Debug, Clone)]
pub struct EnsemblePaths {
    /// Output times, minutes.
    pub t_min: Vec<f64>,
    /// `paths[i][k]`: particle i's drawn observation at `t_min[k]` (failed particles dropped).
    pub paths: Vec<Vec<f64>>,
    /// Normalised weights of the kept paths.
    pub weights: Vec<f64>,
    /// Index of each kept path's particle in the filter (paths of two plans simulated with the
    /// same seed pair up by this index: common random numbers).
    pub particle: Vec<usize>,
}

impl EnsemblePaths {
    /// Weighted probability that a path satisfies `pred`.
    pub fn probability(&self, pred: impl Fn(&[f64]) -> bool) -> f64 {
        self.paths
            .iter()
            .zip(&self.weights)
            .filter(|(p, _)| pred(p))
            // fold from +0.0: an empty f64 sum is −0.0, printed "-0.000"
            .fold(0.0, |acc, (_, w)| acc + w)
    }
    /// Weighted mean over paths of `stat(path)`.
    pub fn expectation(&self, stat: impl Fn(&[f64]) -> f64) -> f64 {
        self.paths
            .iter()
            .zip(&self.weights)
            .map(|(p, w)| w * stat(p))
            .sum()
    }
    /// [`Bands`] at each output time.
    pub fn bands(&self) -> Result<Vec<Bands>, InferError> {
        (0..self.t_min.len())
            .map(|k| {
                let v: Vec<f64> = self.paths.iter().map(|p| p[k]).collect();
                bands(&v, &self.weights).ok_or_else(|| InferError::Degenerate {
                    t_min: self.t_min[k],
                    why: "no finite prediction".into(),
                })
            })
            .collect()
    }

    /// The [`Forecast`] of these paths: bands at each output time, and the probabilities that
    /// a path goes below `low` / above `high` at any output time.
    pub fn forecast(&self, low: f64, high: f64) -> Result<Forecast, InferError> {
        Ok(self.forecast_with_bands(self.bands()?, low, high))
    }

    /// As [`EnsemblePaths::forecast`] with `bands` already computed from these paths.
    pub fn forecast_with_bands(&self, bands: Vec<Bands>, low: f64, high: f64) -> Forecast {
        Forecast {
            t_min: self.t_min.clone(),
            bands,
            p_below: self.probability(|p| p.iter().any(|&v| v < low)),
            p_above: self.probability(|p| p.iter().any(|&v| v > high)),
        }
    }
}

/// Propagate (clones of) the ensemble from `filter.t_min` through `times` (increasing, after the
/// filter time), drawing one observation per particle per time with `rmeasure`. `seed` makes it
/// reproducible; reusing it across alternative inputs (plans) gives **common random numbers**:
/// particle i uses the same random stream under every plan, so differences between plans are
/// not Monte-Carlo noise. Particles whose simulation fails are dropped.
pub fn simulate_paths<M: StateSpaceModel>(
    model: &M,
    filter: &ParticleFilter<M::Particle>,
    times: &[f64],
    seed: u64,
) -> Result<EnsemblePaths, InferError> {
    let t0 = filter.t_min;
    let paths: Vec<Option<Vec<f64>>> = filter
        .particles
        .par_iter()
        .enumerate()
        .map(|(i, p)| {
            let mut x = p.clone();
            let mut r = stream_rng(seed, i as u64);
            let mut t = t0;
            let mut out = Vec::with_capacity(times.len());
            for &tk in times {
                if tk > t {
                    model.rprocess(&mut x, t, tk, &mut r).ok()?;
                    t = tk;
                }
                out.push(model.rmeasure(&x, tk, &mut r));
            }
            Some(out)
        })
        .collect();
    let mut weights = Vec::new();
    let mut kept = Vec::new();
    let mut particle = Vec::new();
    for (i, (p, wi)) in paths.into_iter().zip(&filter.weights).enumerate() {
        if let Some(p) = p {
            kept.push(p);
            weights.push(*wi);
            particle.push(i);
        }
    }
    let ws: f64 = weights.iter().sum();
    if kept.is_empty() || ws.is_nan() || ws <= 0.0 {
        return Err(InferError::Degenerate {
            t_min: t0,
            why: "every forecast path failed".into(),
        });
    }
    for w in &mut weights {
        *w /= ws;
    }
    Ok(EnsemblePaths {
        t_min: times.to_vec(),
        paths: kept,
        weights,
        particle,
    })
}

/// Forecast: [`simulate_paths`] summarised as [`Bands`] per time plus the probabilities that
/// a path goes below `low` / above `high` at any output time.
pub fn forecast<M: StateSpaceModel>(
    model: &M,
    filter: &ParticleFilter<M::Particle>,
    times: &[f64],
    low: f64,
    high: f64,
    seed: u64,
) -> Result<Forecast, InferError> {
    simulate_paths(model, filter, times, seed)?.forecast(low, high)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_distr::{Distribution, Normal};

    #[test]
    fn probability_of_an_event_no_path_meets_is_positive_zero() {
        let e = EnsemblePaths {
            t_min: vec![1.0],
            paths: vec![vec![100.0], vec![120.0]],
            weights: vec![0.5, 0.5],
            particle: vec![0, 1],
        };
        let p = e.probability(|p| p[0] < 70.0);
        assert!(p == 0.0 && p.is_sign_positive(), "{p}");
        assert_eq!(format!("{:.3}", p), "0.000");
        assert_eq!(e.probability(|p| p[0] > 110.0), 0.5);
    }

    /// Linear-Gaussian random walk x' = x + N(0, q dt), y = x + N(0, r): the Kalman filter is
    /// exact, so the particle filter's mean/variance/log-likelihood must match it.
    struct Rw {
        q: f64,
        r: f64,
    }
    impl StateSpaceModel for Rw {
        type Particle = f64;
        fn rinit(&self, _t: f64, rng: &mut ChaCha8Rng) -> f64 {
            Normal::new(0.0, 1.0).unwrap().sample(rng)
        }
        fn rprocess(
            &self,
            x: &mut f64,
            t0: f64,
            t1: f64,
            rng: &mut ChaCha8Rng,
        ) -> Result<(), ProcessError> {
            *x += Normal::new(0.0, (self.q * (t1 - t0)).sqrt())
                .unwrap()
                .sample(rng);
            Ok(())
        }
        fn dmeasure(&self, x: &f64, y: f64, _t: f64) -> f64 {
            -0.5 * (y - x).powi(2) / self.r - 0.5 * (2.0 * std::f64::consts::PI * self.r).ln()
        }
        fn rmeasure(&self, x: &f64, _t: f64, rng: &mut ChaCha8Rng) -> f64 {
            x + Normal::new(0.0, self.r.sqrt()).unwrap().sample(rng)
        }
    }

    #[test]
    fn particle_filter_matches_kalman_filter() {
        let m = Rw { q: 0.5, r: 0.3 };
        let ys = [0.3, 0.9, 1.4, 0.8, 1.9, 2.5, 2.2, 3.0];
        // Kalman filter
        let (mut mu, mut p, mut ll) = (0.0, 1.0, 0.0);
        for (k, &y) in ys.iter().enumerate() {
            if k > 0 {
                p += m.q;
            }
            let s = p + m.r;
            ll += -0.5 * (y - mu) * (y - mu) / s - 0.5 * (2.0 * std::f64::consts::PI * s).ln();
            let kg = p / s;
            mu += kg * (y - mu);
            p *= 1.0 - kg;
        }
        let mut pf = ParticleFilter::new(&m, 20_000, 0.0, 42);
        for (k, &y) in ys.iter().enumerate() {
            pf.assimilate(&m, k as f64, y, 0.5).unwrap();
        }
        let mean: f64 = pf
            .particles
            .iter()
            .zip(&pf.weights)
            .map(|(x, w)| x * w)
            .sum();
        let var: f64 = pf
            .particles
            .iter()
            .zip(&pf.weights)
            .map(|(x, w)| w * (x - mean).powi(2))
            .sum();
        assert!((mean - mu).abs() < 0.02, "mean {mean} vs KF {mu}");
        assert!((var - p).abs() < 0.02, "var {var} vs KF {p}");
        assert!(
            (pf.log_lik - ll).abs() < 0.05,
            "loglik {} vs KF {ll}",
            pf.log_lik
        );
        // never resampling must give the same likelihood (importance weights carried over)
        let mut pf0 = ParticleFilter::new(&m, 20_000, 0.0, 43);
        for (k, &y) in ys.iter().enumerate() {
            pf0.assimilate(&m, k as f64, y, 0.0).unwrap();
        }
        assert!(
            (pf0.log_lik - ll).abs() < 0.1,
            "no-resampling loglik {} vs KF {ll}",
            pf0.log_lik
        );
        // Forecast 4 steps ahead: predictive variance p + 4q + r, 95 % band ±1.96 sd
        let f = forecast(&m, &pf, &[ys.len() as f64 + 3.0], -1e9, 1e9, 7).unwrap();
        let sd = (p + 4.0 * m.q + m.r).sqrt();
        let b = f.bands[0];
        assert!((b.median - mu).abs() < 0.05);
        assert!(
            ((b.hi95 - b.lo95) / 2.0 - 1.96 * sd).abs() < 0.08,
            "{b:?} sd {sd}"
        );
    }

    #[test]
    fn reproducible_for_a_seed_regardless_of_threads() {
        let m = Rw { q: 0.5, r: 0.3 };
        let run = || {
            let mut pf = ParticleFilter::new(&m, 500, 0.0, 9);
            for k in 0..5 {
                pf.assimilate(&m, k as f64, k as f64 * 0.5, 0.5).unwrap();
            }
            pf.particles
        };
        let a = run();
        let b = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(run);
        assert_eq!(a, b);
    }

    #[test]
    fn systematic_resampling_counts() {
        let idx = systematic_resample(&[0.1, 0.6, 0.3], 10, 0.5);
        let c = |j| idx.iter().filter(|&&i| i == j).count();
        assert_eq!((c(0), c(1), c(2)), (1, 6, 3));
    }
}
