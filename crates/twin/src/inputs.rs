//! From a patient [`Record`] to what the model needs, on a 1-minute grid from an origin:
//! announced carbohydrate, insulin delivery and CGM observations.
//!
//! Documented modelling choices:
//! * **Time origin**: the first CGM reading, floored to the minute (UTC). Engine time is
//!   minutes from it.
//! * **Bolus** (U): delivered within its minute (rate `U/min` over one minute).
//! * **Pump basal** (`basal_rate`, U/h): holds until the next `basal_rate` entry.
//! * **Long-acting insulin** (`long_acting`, U): modelled as a constant basal appearance — the
//!   doses of the last 24 h spread evenly, `Σ doses in (t − 24 h, t] / 1440` U/min, the flat
//!   profile of glargine/degludec (Heinemann et al., Diabetes Care 23:644, 2000). Logs of
//!   long-acting injections are often sparse: when no dose is logged in the last 24 h but one
//!   was within the last 72 h, the 24-h total preceding the last logged dose carries forward
//!   (an assumed missed log, counted in [`InputSchedule::carried_long_acting_min`]).
//! * **Carbohydrate** (g): announced at its minute, eaten at 5 g/min by the UVA/Padova meal model.
//! * **Knowledge cut-off**: for a forecast from time `c`, meals and boluses after `c` are unknown
//!   (zero) and the basal known at `c` continues: the pump rate in force at `c`, and long-acting
//!   doses taken up to `c`.

use medtwin_io::{Record, RecordKind};
use serde::{Deserialize, Serialize};

/// Minutes in the long-acting insulin action window.
pub const LONG_ACTING_WINDOW_MIN: f64 = 1440.0;
/// Carry-forward limit for a missing long-acting log, minutes.
pub const LONG_ACTING_CARRY_MAX_MIN: f64 = 4320.0;

/// A record on the engine's minute grid.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct InputSchedule {
    /// Wall-clock instant of t = 0 (RFC 3339, UTC).
    pub origin_utc: String,
    /// CGM observations `(t_min, mg/dL)`, time-ordered; t rounded to the minute.
    pub cgm: Vec<(f64, f64)>,
    /// Announced carbohydrate `(t_min, g)`.
    pub carbs: Vec<(f64, f64)>,
    /// Boluses `(t_min, U)`.
    pub boluses: Vec<(f64, f64)>,
    /// Pump basal rate changes `(t_min, U/h)`.
    pub basal_rates: Vec<(f64, f64)>,
    /// Long-acting injections `(t_min, U)`.
    pub long_acting: Vec<(f64, f64)>,
    /// Minutes in which a long-acting basal was carried forward over a missing log.
    pub carried_long_acting_min: u64,
}

fn minutes_between(a: jiff::Timestamp, b: jiff::Timestamp) -> f64 {
    (b.as_second() - a.as_second()) as f64 / 60.0
        + (b.subsec_nanosecond() - a.subsec_nanosecond()) as f64 / 6e10
}

impl InputSchedule {
    /// Build the schedule of `record`. Returns `None` if the record has no CGM.
    pub fn from_record(record: &Record) -> Option<InputSchedule> {
        let first = record.of_kind(RecordKind::Cgm).map(|e| e.time).min()?;
        let origin = jiff::Timestamp::from_second(first.as_second().div_euclid(60) * 60).ok()?;
        Some(Self::from_record_at(record, origin))
    }

    /// The schedule of `record` on the minute grid of an explicit `origin` (entries before it
    /// get negative times). For continuing a twin from a window of its data: the entries must
    /// be those since the twin's time (plus the long-acting doses still acting), and the
    /// origin the twin's own, so minutes line up with the twin's schedule.
    pub fn from_record_at(record: &Record, origin: jiff::Timestamp) -> InputSchedule {
        let t = |e: &medtwin_io::RecordEntry| minutes_between(origin, e.time);
        let mut s = InputSchedule {
            origin_utc: origin.to_string(),
            ..InputSchedule::default()
        };
        for e in &record.entries {
            let tm = t(e);
            match e.kind {
                RecordKind::Cgm => s.cgm.push((tm.round(), e.value)),
                RecordKind::Carbs => s.carbs.push((tm.round(), e.value)),
                RecordKind::Bolus => s.boluses.push((tm.round(), e.value)),
                RecordKind::BasalRate => s.basal_rates.push((tm.round(), e.value)),
                RecordKind::LongActing => s.long_acting.push((tm.round(), e.value)),
                RecordKind::Smbg => {}
            }
        }
        s.cgm.dedup_by(|b, a| a.0 == b.0); // two readings rounded into one minute: keep the first
        s.carried_long_acting_min = s.count_carried();
        s
    }

    /// Origin as a timestamp.
    pub fn origin(&self) -> Option<jiff::Timestamp> {
        self.origin_utc.parse().ok()
    }

    /// Last CGM time, minutes.
    pub fn last_cgm_min(&self) -> f64 {
        self.cgm.last().map(|c| c.0).unwrap_or(0.0)
    }

    fn sum_in(v: &[(f64, f64)], t0: f64, t1: f64) -> f64 {
        let start = v.partition_point(|e| e.0 < t0);
        v[start..]
            .iter()
            .take_while(|e| e.0 < t1)
            .map(|e| e.1)
            .sum()
    }

    /// Carbohydrate announced in minute `[t, t+1)`, g; zero after `known_until`.
    pub fn carbs_g(&self, t_min: f64, known_until: f64) -> f64 {
        if t_min > known_until {
            return 0.0;
        }
        Self::sum_in(&self.carbs, t_min, t_min + 1.0)
    }

    /// Long-acting basal appearance at `t`, U/min, using doses up to `known_until`.
    fn long_acting_u_per_min(&self, t_min: f64, known_until: f64) -> (f64, bool) {
        let horizon = t_min.min(known_until);
        let end = self.long_acting.partition_point(|e| e.0 <= horizon);
        let doses = &self.long_acting[..end];
        // Sum of the doses in (from, ..]: a binary search, not a scan (this runs per particle
        // per simulated minute).
        let sum_after = |from: f64| -> f64 {
            doses[doses.partition_point(|e| e.0 <= from)..]
                .iter()
                .map(|e| e.1)
                .sum()
        };
        let recent = sum_after(t_min - LONG_ACTING_WINDOW_MIN);
        if recent > 0.0 {
            return (recent / LONG_ACTING_WINDOW_MIN, false);
        }
        if let Some(last) = doses.last() {
            if t_min - last.0 < LONG_ACTING_CARRY_MAX_MIN {
                return (
                    sum_after(last.0 - LONG_ACTING_WINDOW_MIN) / LONG_ACTING_WINDOW_MIN,
                    true,
                );
            }
        }
        (0.0, false)
    }

    fn count_carried(&self) -> u64 {
        if self.long_acting.is_empty() {
            return 0;
        }
        let end = self.last_cgm_min().max(0.0) as u64;
        (0..end)
            .step_by(60)
            .filter(|&t| self.long_acting_u_per_min(t as f64, f64::INFINITY).1)
            .count() as u64
            * 60
    }

    /// Insulin delivered in minute `[t, t+1)`, U/min: bolus (if known) + pump basal in force +
    /// long-acting appearance, with knowledge up to `known_until`.
    pub fn insulin_u_per_min(&self, t_min: f64, known_until: f64) -> f64 {
        let bolus = if t_min > known_until {
            0.0
        } else {
            Self::sum_in(&self.boluses, t_min, t_min + 1.0)
        };
        bolus
            + self.pump_basal_u_per_min(t_min, known_until)
            + self.long_acting_u_per_min(t_min, known_until).0
    }

    /// Pump basal rate in force at `t` (knowledge up to `known_until`), U/min.
    pub fn pump_basal_u_per_min(&self, t_min: f64, known_until: f64) -> f64 {
        let rate_time = t_min.min(known_until);
        let i = self.basal_rates.partition_point(|e| e.0 <= rate_time);
        if i > 0 {
            self.basal_rates[i - 1].1 / 60.0
        } else {
            0.0
        }
    }

    /// A copy with everything after `t_min` removed (what a twin fitted until `t_min` knows).
    pub fn truncated(&self, t_min: f64) -> InputSchedule {
        let cut = |v: &[(f64, f64)]| {
            v.iter()
                .copied()
                .filter(|e| e.0 <= t_min)
                .collect::<Vec<_>>()
        };
        InputSchedule {
            origin_utc: self.origin_utc.clone(),
            cgm: cut(&self.cgm),
            carbs: cut(&self.carbs),
            boluses: cut(&self.boluses),
            basal_rates: cut(&self.basal_rates),
            long_acting: cut(&self.long_acting),
            carried_long_acting_min: self.carried_long_acting_min,
        }
    }

    /// A copy that starts at `t_min`: CGM, carbohydrate and boluses before it are dropped (a
    /// record that begins there); the pump's basal programme and long-acting doses are kept
    /// (therapy settings, and doses still acting at `t_min`). Used to give a twin only the
    /// most recent days of a record ([`crate::learning`]).
    pub fn since(&self, t_min: f64) -> InputSchedule {
        let keep = |v: &[(f64, f64)]| {
            v.iter()
                .copied()
                .filter(|e| e.0 >= t_min)
                .collect::<Vec<_>>()
        };
        InputSchedule {
            origin_utc: self.origin_utc.clone(),
            cgm: keep(&self.cgm),
            carbs: keep(&self.carbs),
            boluses: keep(&self.boluses),
            basal_rates: self.basal_rates.clone(),
            long_acting: self.long_acting.clone(),
            carried_long_acting_min: self.carried_long_acting_min,
        }
    }

    /// Total daily insulin estimate over `[t0, t1)`, U/day (for diagnostics and priors).
    pub fn mean_daily_insulin_u(&self, t0: f64, t1: f64) -> f64 {
        if t1 <= t0 {
            return 0.0;
        }
        let mut total = 0.0;
        let mut t = t0;
        while t < t1 {
            total += self.insulin_u_per_min(t, f64::INFINITY);
            t += 1.0;
        }
        total / (t1 - t0) * 1440.0
    }
}

/// The bundled T1D-UOM participant's (tests/data/t1d-uom, 2313) first `hours` of data, for
/// tests.
#[cfg(test)]
pub(crate) fn bundled(hours: i64) -> InputSchedule {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/t1d-uom");
    let (mut rec, _) = medtwin_io::import_t1d_uom(&dir, "2313").unwrap();
    let first = rec
        .of_kind(medtwin_io::RecordKind::Cgm)
        .map(|e| e.time.as_second())
        .min()
        .unwrap();
    rec.entries
        .retain(|e| e.time.as_second() < first + hours * 3600);
    InputSchedule::from_record(&rec).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched() -> InputSchedule {
        InputSchedule {
            origin_utc: "2024-01-01T00:00:00Z".into(),
            cgm: vec![(0.0, 100.0)],
            carbs: vec![(60.0, 50.0)],
            boluses: vec![(60.0, 5.0)],
            basal_rates: vec![(0.0, 0.6), (120.0, 1.2)],
            long_acting: vec![(0.0, 14.4)],
            carried_long_acting_min: 0,
        }
    }

    #[test]
    fn inputs_respect_the_knowledge_cutoff() {
        let s = sched();
        let la = 14.4 / 1440.0;
        assert!((s.insulin_u_per_min(30.0, f64::INFINITY) - (0.01 + la)).abs() < 1e-12);
        assert!((s.insulin_u_per_min(60.0, f64::INFINITY) - (5.0 + 0.01 + la)).abs() < 1e-12);
        assert!((s.insulin_u_per_min(130.0, f64::INFINITY) - (0.02 + la)).abs() < 1e-12);
        // known only until 50: no bolus, old basal continues
        assert!((s.insulin_u_per_min(60.0, 50.0) - (0.01 + la)).abs() < 1e-12);
        assert!((s.insulin_u_per_min(130.0, 50.0) - (0.01 + la)).abs() < 1e-12);
        assert_eq!(s.carbs_g(60.0, 50.0), 0.0);
        assert_eq!(s.carbs_g(60.0, 60.0), 50.0);
    }

    #[test]
    fn long_acting_carries_forward_over_a_missing_log() {
        let s = sched();
        // 30 h after the only dose: no dose in the last 24 h, carried forward
        let (r, carried) = s.long_acting_u_per_min(1800.0, f64::INFINITY);
        assert!(carried && (r - 0.01).abs() < 1e-12);
        // beyond 72 h: nothing
        assert_eq!(s.long_acting_u_per_min(5000.0, f64::INFINITY).0, 0.0);
    }
}
