//! Timelines of dosing events and piecewise-constant rates, addressed by input name.
//!
//! Two kinds of timed input cover pharmacometrics and diabetes technology alike:
//! * a **dose** ([`TimedDose`]): an amount given at one time (insulin bolus in U, meal carbohydrate
//!   in g, drug dose in mg);
//! * a **rate** ([`TimedRate`]): a rate that holds from its time until the next rate on the same
//!   input (basal insulin in U/h, an infusion in mg/h).
//!
//! Times are minutes from the simulation origin. Validation happens on insertion, so a
//! [`Timeline`] never holds a negative, non-finite or out-of-span entry.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// An amount given at one instant on a named input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimedDose {
    /// Time in minutes from the origin.
    pub at_min: f64,
    /// Input name (e.g. `"bolus_u"`, `"carbs_g"`).
    pub input: String,
    /// Amount in the input's unit (≥ 0, finite).
    pub amount: f64,
}

/// A rate that holds from `at_min` until the next rate on the same input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimedRate {
    /// Time in minutes from the origin.
    pub at_min: f64,
    /// Input name (e.g. `"basal_u_per_h"`).
    pub input: String,
    /// Rate in the input's unit (≥ 0, finite).
    pub rate: f64,
}

/// Why a timeline entry was refused.
#[derive(Debug, Error, PartialEq)]
pub enum TimelineError {
    /// The value is negative or not finite.
    #[error("{what} on input '{input}' at t = {at_min} min has invalid value {value}: must be finite and >= 0")]
    InvalidValue {
        /// "dose" or "rate".
        what: &'static str,
        /// Input name.
        input: String,
        /// Time of the entry, minutes.
        at_min: f64,
        /// The refused value.
        value: f64,
    },
    /// The time is outside `[0, span_min]` or not finite.
    #[error("{what} on input '{input}' at t = {at_min} min is outside the simulated span [0, {span_min}] min")]
    OutOfSpan {
        /// "dose" or "rate".
        what: &'static str,
        /// Input name.
        input: String,
        /// Time of the entry, minutes.
        at_min: f64,
        /// End of the span, minutes.
        span_min: f64,
    },
}

/// Doses and rates over a span `[0, span_min]` minutes, kept sorted by time (stable for ties).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Timeline {
    span_min: f64,
    doses: Vec<TimedDose>,
    rates: Vec<TimedRate>,
}

impl Timeline {
    /// An empty timeline over `[0, span_min]` minutes.
    pub fn new(span_min: f64) -> Self {
        Timeline {
            span_min,
            doses: Vec::new(),
            rates: Vec::new(),
        }
    }

    /// End of the span in minutes.
    pub fn span_min(&self) -> f64 {
        self.span_min
    }

    fn check(
        &self,
        what: &'static str,
        input: &str,
        at_min: f64,
        value: f64,
    ) -> Result<(), TimelineError> {
        if !value.is_finite() || value < 0.0 {
            return Err(TimelineError::InvalidValue {
                what,
                input: input.into(),
                at_min,
                value,
            });
        }
        if !at_min.is_finite() || at_min < 0.0 || at_min > self.span_min {
            return Err(TimelineError::OutOfSpan {
                what,
                input: input.into(),
                at_min,
                span_min: self.span_min,
            });
        }
        Ok(())
    }

    /// Add a dose. Errors: negative/non-finite amount, time outside the span.
    pub fn add_dose(&mut self, at_min: f64, input: &str, amount: f64) -> Result<(), TimelineError> {
        self.check("dose", input, at_min, amount)?;
        let pos = self.doses.partition_point(|d| d.at_min <= at_min);
        self.doses.insert(
            pos,
            TimedDose {
                at_min,
                input: input.into(),
                amount,
            },
        );
        Ok(())
    }

    /// Add a rate change. Errors: negative/non-finite rate, time outside the span.
    pub fn add_rate(&mut self, at_min: f64, input: &str, rate: f64) -> Result<(), TimelineError> {
        self.check("rate", input, at_min, rate)?;
        let pos = self.rates.partition_point(|r| r.at_min <= at_min);
        self.rates.insert(
            pos,
            TimedRate {
                at_min,
                input: input.into(),
                rate,
            },
        );
        Ok(())
    }

    /// All doses, sorted by time.
    pub fn doses(&self) -> &[TimedDose] {
        &self.doses
    }

    /// All rate changes, sorted by time.
    pub fn rates(&self) -> &[TimedRate] {
        &self.rates
    }

    /// The rate on `input` in force at `t_min` (the last change at or before `t_min`), or `None`
    /// if no rate was set on that input yet.
    pub fn rate_at(&self, input: &str, t_min: f64) -> Option<f64> {
        self.rates
            .iter()
            .rev()
            .find(|r| r.input == input && r.at_min <= t_min)
            .map(|r| r.rate)
    }

    /// Sum of doses on `input` with `t0_min <= at_min < t1_min`.
    pub fn doses_in(&self, input: &str, t0_min: f64, t1_min: f64) -> f64 {
        let start = self.doses.partition_point(|d| d.at_min < t0_min);
        self.doses[start..]
            .iter()
            .take_while(|d| d.at_min < t1_min)
            .filter(|d| d.input == input)
            .map(|d| d.amount)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_hold_until_next_change() {
        let mut tl = Timeline::new(100.0);
        tl.add_rate(10.0, "basal", 1.0).unwrap();
        tl.add_rate(0.0, "basal", 0.5).unwrap();
        tl.add_rate(50.0, "other", 9.0).unwrap();
        assert_eq!(tl.rate_at("basal", 5.0), Some(0.5));
        assert_eq!(tl.rate_at("basal", 10.0), Some(1.0));
        assert_eq!(tl.rate_at("basal", 99.0), Some(1.0));
        assert_eq!(tl.rate_at("other", 49.0), None);
    }

    #[test]
    fn doses_sum_over_half_open_window() {
        let mut tl = Timeline::new(100.0);
        tl.add_dose(10.0, "bolus", 2.0).unwrap();
        tl.add_dose(10.0, "bolus", 1.0).unwrap();
        tl.add_dose(11.0, "bolus", 4.0).unwrap();
        tl.add_dose(10.5, "carbs", 40.0).unwrap();
        assert_eq!(tl.doses_in("bolus", 10.0, 11.0), 3.0);
        assert_eq!(tl.doses_in("bolus", 0.0, 100.0), 7.0);
        assert_eq!(tl.doses_in("carbs", 10.0, 11.0), 40.0);
    }

    #[test]
    fn refuses_bad_entries() {
        let mut tl = Timeline::new(100.0);
        assert!(matches!(
            tl.add_dose(5.0, "b", -1.0),
            Err(TimelineError::InvalidValue { .. })
        ));
        assert!(matches!(
            tl.add_dose(5.0, "b", f64::NAN),
            Err(TimelineError::InvalidValue { .. })
        ));
        assert!(matches!(
            tl.add_rate(101.0, "b", 1.0),
            Err(TimelineError::OutOfSpan { .. })
        ));
        assert!(tl.doses().is_empty() && tl.rates().is_empty());
    }
}
