//! Random daily meals with the statistics of simglucose 0.2.11's `RandomScenario`
//! (`simulation/scenario_gen.py`; shared NOTES.md §3.10).
//!
//! Every simulated day (a new day is drawn at every midnight of simulated clock time, and once
//! at the start for the day in progress) has six slots — breakfast, snack, lunch, snack, dinner,
//! snack. For each slot, in this order of random draws:
//! 1. the meal happens with probability `p`;
//! 2. if so, its time (minutes after midnight) is `round(truncnorm(lb, ub, mu, sigma))`;
//! 3. and its amount is `max(round(N(mu_g, sd_g)), 0)` grams.
//!
//! | slot | p | lb–ub (h) | mu (h) | sigma (min) | mu_g (g) | sd_g (g) |
//! |---|---|---|---|---|---|---|
//! | breakfast | 0.95 | 5–9 | 7 | 60 | 45 | 10 |
//! | snack | 0.3 | 9–10 | 9.5 | 30 | 10 | 5 |
//! | lunch | 0.95 | 10–14 | 12 | 60 | 70 | 10 |
//! | snack | 0.3 | 14–16 | 15 | 30 | 10 | 5 |
//! | dinner | 0.95 | 16–20 | 18 | 60 | 80 | 10 |
//! | snack | 0.3 | 20–23 | 21.5 | 30 | 10 | 5 |
//!
//! The statistics are simglucose's; the random stream is not (ChaCha8 instead of numpy's
//! Mersenne Twister, and the truncated normal is drawn by rejection), so individual days are not
//! numpy-identical. Each patient gets an independent, reproducible stream:
//! `ChaCha8Rng::seed_from_u64(seed)` with `set_stream(patient_index)`. Two slots drawn at the
//! same minute are announced together (summed); simglucose would announce only the first.
//! simglucose's extra re-draw when the scenario starts exactly at midnight (an RNG-order quirk)
//! is not reproduced.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

/// Minutes per day.
pub const DAY_MIN: u64 = 1440;

/// One meal slot of simglucose's `RandomScenario`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MealSlot {
    /// Probability that the meal happens on a given day.
    pub p: f64,
    /// Earliest time, minutes after midnight.
    pub lb_min: f64,
    /// Latest time, minutes after midnight.
    pub ub_min: f64,
    /// Mean of the (untruncated) time distribution, minutes after midnight.
    pub mu_min: f64,
    /// Standard deviation of the (untruncated) time distribution, min.
    pub sigma_min: f64,
    /// Mean amount, g.
    pub mu_g: f64,
    /// Standard deviation of the amount, g.
    pub sd_g: f64,
}

/// The six slots of simglucose 0.2.11 `RandomScenario.create_scenario` (NOTES.md §3.10).
pub const SLOTS: [MealSlot; 6] = [
    MealSlot {
        p: 0.95,
        lb_min: 300.0,
        ub_min: 540.0,
        mu_min: 420.0,
        sigma_min: 60.0,
        mu_g: 45.0,
        sd_g: 10.0,
    },
    MealSlot {
        p: 0.3,
        lb_min: 540.0,
        ub_min: 600.0,
        mu_min: 570.0,
        sigma_min: 30.0,
        mu_g: 10.0,
        sd_g: 5.0,
    },
    MealSlot {
        p: 0.95,
        lb_min: 600.0,
        ub_min: 840.0,
        mu_min: 720.0,
        sigma_min: 60.0,
        mu_g: 70.0,
        sd_g: 10.0,
    },
    MealSlot {
        p: 0.3,
        lb_min: 840.0,
        ub_min: 960.0,
        mu_min: 900.0,
        sigma_min: 30.0,
        mu_g: 10.0,
        sd_g: 5.0,
    },
    MealSlot {
        p: 0.95,
        lb_min: 960.0,
        ub_min: 1200.0,
        mu_min: 1080.0,
        sigma_min: 60.0,
        mu_g: 80.0,
        sd_g: 10.0,
    },
    MealSlot {
        p: 0.3,
        lb_min: 1200.0,
        ub_min: 1380.0,
        mu_min: 1290.0,
        sigma_min: 30.0,
        mu_g: 10.0,
        sd_g: 5.0,
    },
];

/// The `[random_meals]` table of a scenario file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RandomMealSpec {
    /// Seed of the meal streams (one independent stream per patient index).
    pub seed: u64,
}

/// A meal drawn for one day.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DrawnMeal {
    /// Slot index (0 = breakfast … 5 = evening snack).
    pub slot: usize,
    /// Time, whole minutes after midnight.
    pub minute_of_day: u64,
    /// Amount, whole grams (≥ 0).
    pub carbs_g: f64,
}

/// Draw one day's meals from `rng` with simglucose's slot statistics, in slot order.
pub fn draw_day<R: Rng + ?Sized>(rng: &mut R) -> Vec<DrawnMeal> {
    let mut out = Vec::with_capacity(6);
    for (slot, s) in SLOTS.iter().enumerate() {
        if rng.random::<f64>() < s.p {
            // truncated normal by rejection (acceptance ≥ 68 % for these bounds)
            let t = loop {
                let z: f64 = rng.sample(StandardNormal);
                let t = s.mu_min + s.sigma_min * z;
                if (s.lb_min..=s.ub_min).contains(&t) {
                    break t;
                }
            };
            let z: f64 = rng.sample(StandardNormal);
            let amount = (s.mu_g + s.sd_g * z).round_ties_even().max(0.0);
            out.push(DrawnMeal {
                slot,
                minute_of_day: t.round_ties_even() as u64,
                carbs_g: amount,
            });
        }
    }
    out
}

/// A per-patient random meal stream over simulated time.
#[derive(Debug, Clone)]
pub struct RandomMeals {
    rng: ChaCha8Rng,
    start_minute_of_day: u64,
    day_index: Option<u64>,
    today: Vec<DrawnMeal>,
}

impl RandomMeals {
    /// The stream of patient `patient_index` for `seed`; simulated minute 0 is
    /// `start_minute_of_day` minutes after midnight (taken modulo one day).
    pub fn new(seed: u64, patient_index: u64, start_minute_of_day: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(patient_index);
        RandomMeals {
            rng,
            start_minute_of_day: start_minute_of_day % DAY_MIN,
            day_index: None,
            today: Vec::new(),
        }
    }

    /// Grams announced at simulated minute `t_min` (0 if none). Calls must come with
    /// non-decreasing `t_min`: a new day is drawn whenever `t_min` crosses a midnight (days
    /// skipped by a jump are drawn and discarded, so the stream does not depend on call pattern).
    pub fn carbs_at(&mut self, t_min: u64) -> f64 {
        let clock = self.start_minute_of_day + t_min;
        let day = clock / DAY_MIN;
        while self.day_index.is_none_or(|d| d < day) {
            self.today = draw_day(&mut self.rng);
            self.day_index = Some(self.day_index.map_or(0, |d| d + 1));
        }
        let mod_ = clock % DAY_MIN;
        // meals earlier than the start time on the first day are never announced
        self.today
            .iter()
            .filter(|m| m.minute_of_day == mod_)
            .map(|m| m.carbs_g)
            .sum()
    }

    /// All meals `(simulated minute, grams)` in `[0, duration_min)` for this stream (consumes a
    /// fresh copy of the stream; the result equals what [`RandomMeals::carbs_at`] announces).
    pub fn schedule(&self, duration_min: u64) -> Vec<(u64, f64)> {
        let mut s = RandomMeals::new(0, 0, self.start_minute_of_day);
        s.rng = self.rng.clone();
        s.day_index = self.day_index;
        s.today = self.today.clone();
        let mut out = Vec::new();
        for t in 0..duration_min {
            let g = s.carbs_at(t);
            if g > 0.0 {
                out.push((t, g));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reproducible_and_independent_per_patient() {
        let a = RandomMeals::new(7, 0, 0).schedule(5 * DAY_MIN);
        let b = RandomMeals::new(7, 0, 0).schedule(5 * DAY_MIN);
        let c = RandomMeals::new(7, 1, 0).schedule(5 * DAY_MIN);
        let d = RandomMeals::new(8, 0, 0).schedule(5 * DAY_MIN);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
        assert!(a.len() >= 10, "{a:?}");
        // calling minute by minute gives the same as the schedule
        let mut s = RandomMeals::new(7, 0, 0);
        let e: Vec<(u64, f64)> = (0..5 * DAY_MIN)
            .filter_map(|t| Some((t, s.carbs_at(t))).filter(|x| x.1 > 0.0))
            .collect();
        assert_eq!(a, e);
    }

    #[test]
    fn start_offset_skips_earlier_meals_of_first_day() {
        // starting at 23:00: first day has only a possible meal at 23:00 exactly; day 2 is full
        let s = RandomMeals::new(3, 0, 23 * 60).schedule(DAY_MIN + 60);
        assert!(s.iter().all(|&(t, _)| t >= 60), "{s:?}");
    }

    /// Truncated-normal mean and sd of N(mu, sigma) restricted to [lb, ub].
    fn truncnorm_moments(s: &MealSlot) -> (f64, f64) {
        let phi = |x: f64| (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
        // Phi by numerical integration (bounds are within ±2 sigma)
        let cdf = |a: f64, b: f64| {
            let n = 2000;
            let h = (b - a) / n as f64;
            (0..n)
                .map(|i| phi(a + (i as f64 + 0.5) * h) * h)
                .sum::<f64>()
        };
        let (a, b) = (
            (s.lb_min - s.mu_min) / s.sigma_min,
            (s.ub_min - s.mu_min) / s.sigma_min,
        );
        let z = cdf(a, b);
        let mean = s.mu_min + s.sigma_min * (phi(a) - phi(b)) / z;
        let var = s.sigma_min.powi(2)
            * (1.0 + (a * phi(a) - b * phi(b)) / z - ((phi(a) - phi(b)) / z).powi(2));
        (mean, var.sqrt())
    }

    #[test]
    fn slot_statistics_match_simglucose_within_monte_carlo_error() {
        let days = 20_000usize;
        let mut rng = ChaCha8Rng::seed_from_u64(12345);
        let mut count = [0usize; 6];
        let mut tsum = [0.0f64; 6];
        let mut gsum = [0.0f64; 6];
        let mut gsq = [0.0f64; 6];
        for _ in 0..days {
            for m in draw_day(&mut rng) {
                let s = &SLOTS[m.slot];
                assert!(m.minute_of_day as f64 >= s.lb_min && m.minute_of_day as f64 <= s.ub_min);
                assert!(m.carbs_g >= 0.0 && m.carbs_g.fract() == 0.0);
                count[m.slot] += 1;
                tsum[m.slot] += m.minute_of_day as f64;
                gsum[m.slot] += m.carbs_g;
                gsq[m.slot] += m.carbs_g * m.carbs_g;
            }
        }
        for (k, s) in SLOTS.iter().enumerate() {
            let n = count[k] as f64;
            // frequency: binomial, 4.5 standard errors
            let se_p = (s.p * (1.0 - s.p) / days as f64).sqrt();
            assert!(
                (n / days as f64 - s.p).abs() < 4.5 * se_p,
                "slot {k}: freq {}",
                n / days as f64
            );
            // time: truncated-normal mean (rounding to the minute is symmetric)
            let (tm, tsd) = truncnorm_moments(s);
            let se_t = tsd / n.sqrt();
            assert!(
                (tsum[k] / n - tm).abs() < 4.5 * se_t + 0.05,
                "slot {k}: time {} vs {tm}",
                tsum[k] / n
            );
            // amount: mean mu_g (max(·,0) matters only for the snacks: P(N(10,5) < 0) = 2.3 %,
            // E[max(X,0)] − mu = sigma·phi(2) − mu·Phi(−2) ≈ 0.042 g), sd ≈ sd_g
            let mean_g = gsum[k] / n;
            let sd_g = (gsq[k] / n - mean_g * mean_g).sqrt();
            let bias = if s.mu_g < 20.0 { 0.042 } else { 0.0 };
            let se_g = s.sd_g / n.sqrt();
            assert!(
                (mean_g - s.mu_g - bias).abs() < 4.5 * se_g + 0.01,
                "slot {k}: amount {mean_g}"
            );
            assert!(
                (sd_g / s.sd_g - 1.0).abs() < 0.05,
                "slot {k}: amount sd {sd_g}"
            );
        }
    }
}
