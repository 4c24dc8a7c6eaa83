//! Small numeric helpers: cleaning, quantiles, CGM metrics, cone evaluation,
//! number and time formatting.

use crate::{Cone, Series};

/// A series reduced to finite `(t, value)` pairs sorted by time.
pub(crate) struct CleanSeries {
    pub points: Vec<(f64, f64)>,
    /// Entries dropped because the two vectors had different lengths.
    pub length_mismatch: Option<(usize, usize)>,
    /// Entries dropped because time or value was not finite.
    pub non_finite: usize,
}

pub(crate) fn clean_series(s: &Series) -> CleanSeries {
    let mut points: Vec<(f64, f64)> = Vec::with_capacity(s.t_min.len().min(s.values.len()));
    let mut non_finite = 0;
    for (&t, &v) in s.t_min.iter().zip(&s.values) {
        if t.is_finite() && v.is_finite() {
            points.push((t, v));
        } else {
            non_finite += 1;
        }
    }
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    let length_mismatch =
        (s.t_min.len() != s.values.len()).then_some((s.t_min.len(), s.values.len()));
    CleanSeries {
        points,
        length_mismatch,
        non_finite,
    }
}

/// Finite events sorted by time.
pub(crate) fn clean_events(ev: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut v: Vec<(f64, f64)> = ev
        .iter()
        .copied()
        .filter(|(t, x)| t.is_finite() && x.is_finite())
        .collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v
}

/// One finite row of a cone.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConeRow {
    pub t: f64,
    pub med: f64,
    pub lo50: f64,
    pub hi50: f64,
    pub lo80: f64,
    pub hi80: f64,
    pub lo95: f64,
    pub hi95: f64,
}

impl ConeRow {
    pub fn band(&self, level: u32) -> (f64, f64) {
        match level {
            50 => (self.lo50, self.hi50),
            80 => (self.lo80, self.hi80),
            _ => (self.lo95, self.hi95),
        }
    }
    pub fn min(&self) -> f64 {
        self.lo95.min(self.lo80).min(self.lo50).min(self.med)
    }
    pub fn max(&self) -> f64 {
        self.hi95.max(self.hi80).max(self.hi50).max(self.med)
    }
}

/// Rows of a cone whose time and all quantiles are finite, sorted by time.
pub(crate) fn cone_rows(c: &Cone) -> Vec<ConeRow> {
    let n = [
        c.t_min.len(),
        c.median.len(),
        c.lo50.len(),
        c.hi50.len(),
        c.lo80.len(),
        c.hi80.len(),
        c.lo95.len(),
        c.hi95.len(),
    ]
    .into_iter()
    .min()
    .unwrap_or(0);
    let mut rows: Vec<ConeRow> = (0..n)
        .map(|i| ConeRow {
            t: c.t_min[i],
            med: c.median[i],
            lo50: c.lo50[i],
            hi50: c.hi50[i],
            lo80: c.lo80[i],
            hi80: c.hi80[i],
            lo95: c.lo95[i],
            hi95: c.hi95[i],
        })
        .filter(|r| {
            [r.t, r.med, r.lo50, r.hi50, r.lo80, r.hi80, r.lo95, r.hi95]
                .iter()
                .all(|x| x.is_finite())
        })
        .collect();
    rows.sort_by(|a, b| a.t.total_cmp(&b.t));
    rows
}

/// Linear interpolation of the cone at time `t`; `None` outside its span.
pub(crate) fn interp_row(rows: &[ConeRow], t: f64) -> Option<ConeRow> {
    let first = rows.first()?;
    let last = rows.last()?;
    if !(t >= first.t && t <= last.t) {
        return None;
    }
    let j = rows.partition_point(|r| r.t < t);
    if j == 0 {
        return Some(*first);
    }
    let (a, b) = (rows[j - 1], rows[j.min(rows.len() - 1)]);
    let dt = b.t - a.t;
    // Do not bridge holes much wider than the sampling step.
    if dt > 30.0 {
        return None;
    }
    let w = if dt > 0.0 { (t - a.t) / dt } else { 0.0 };
    let l = |x: f64, y: f64| x + w * (y - x);
    Some(ConeRow {
        t,
        med: l(a.med, b.med),
        lo50: l(a.lo50, b.lo50),
        hi50: l(a.hi50, b.hi50),
        lo80: l(a.lo80, b.lo80),
        hi80: l(a.hi80, b.hi80),
        lo95: l(a.lo95, b.lo95),
        hi95: l(a.hi95, b.hi95),
    })
}

/// Summary of one cone, and how it did against the recorded CGM.
#[derive(Debug, Clone)]
pub(crate) struct ConeSummary {
    pub horizon_min: f64,
    pub mean_width: [f64; 3], // 50, 80, 95
    pub n_obs: usize,
    pub inside80: f64,
    pub inside95: f64,
    pub mae: f64,
}

pub(crate) fn summarize_cone(c: &Cone, cgm: &[(f64, f64)]) -> Option<ConeSummary> {
    let rows = cone_rows(c);
    let (first, last) = (rows.first()?, rows.last()?);
    let n = rows.len() as f64;
    let mean_width = [50, 80, 95].map(|lv| {
        rows.iter()
            .map(|r| {
                let (lo, hi) = r.band(lv);
                hi - lo
            })
            .sum::<f64>()
            / n
    });
    let start = if c.origin_min.is_finite() {
        c.origin_min.max(first.t)
    } else {
        first.t
    };
    let mut n_obs = 0usize;
    let (mut in80, mut in95, mut abs) = (0usize, 0usize, 0.0);
    for &(t, v) in cgm {
        if t <= start && c.origin_min.is_finite() {
            continue;
        }
        if let Some(r) = interp_row(&rows, t) {
            n_obs += 1;
            in80 += usize::from(v >= r.lo80 && v <= r.hi80);
            in95 += usize::from(v >= r.lo95 && v <= r.hi95);
            abs += (v - r.med).abs();
        }
    }
    let frac = |k: usize| {
        if n_obs > 0 {
            k as f64 / n_obs as f64
        } else {
            f64::NAN
        }
    };
    let horizon_min = if c.origin_min.is_finite() {
        last.t - c.origin_min
    } else {
        last.t - first.t
    };
    Some(ConeSummary {
        horizon_min,
        mean_width,
        n_obs,
        inside80: frac(in80),
        inside95: frac(in95),
        mae: if n_obs > 0 {
            abs / n_obs as f64
        } else {
            f64::NAN
        },
    })
}

pub(crate) use medtwin_infer::quantile_sorted;

/// Finite values, sorted.
pub(crate) fn sorted_finite(xs: &[f64]) -> Vec<f64> {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    v
}

pub(crate) fn mean_sd(xs: &[f64]) -> (f64, f64) {
    if xs.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = xs.len() as f64;
    let m = xs.iter().sum::<f64>() / n;
    if xs.len() < 2 {
        return (m, f64::NAN);
    }
    let var = xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0);
    (m, var.sqrt())
}

/// Median spacing of consecutive sample times.
pub(crate) fn median_step(points: &[(f64, f64)]) -> f64 {
    let mut d: Vec<f64> = points
        .windows(2)
        .map(|w| w[1].0 - w[0].0)
        .filter(|d| *d > 0.0)
        .collect();
    d.sort_by(f64::total_cmp);
    quantile_sorted(&d, 0.5)
}

/// Splits a sorted series where consecutive samples are further apart than `max_gap`.
pub(crate) fn split_gaps(points: &[(f64, f64)], max_gap: f64) -> Vec<&[(f64, f64)]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..points.len() {
        if points[i].0 - points[i - 1].0 > max_gap {
            out.push(&points[start..i]);
            start = i;
        }
    }
    if start < points.len() {
        out.push(&points[start..]);
    }
    out
}

/// Gap threshold used to break CGM lines.
pub(crate) fn gap_threshold(points: &[(f64, f64)]) -> f64 {
    let step = median_step(points);
    if step.is_finite() {
        (3.0 * step).max(16.0)
    } else {
        16.0
    }
}

/// Standard CGM metrics (international consensus, Battelino et al. 2019).
#[derive(Debug, Clone)]
pub(crate) struct CgmMetrics {
    pub n: usize,
    pub span_min: f64,
    pub step_min: f64,
    pub coverage: f64,
    pub mean: f64,
    pub sd: f64,
    pub cv: f64,
    pub gmi: f64,
    /// Fractions: <54, 54–69, 70–180, 181–250, >250.
    pub ranges: [f64; 5],
}

pub(crate) fn cgm_metrics(points: &[(f64, f64)]) -> Option<CgmMetrics> {
    if points.is_empty() {
        return None;
    }
    let vals: Vec<f64> = points.iter().map(|p| p.1).collect();
    let (mean, sd) = mean_sd(&vals);
    let n = vals.len();
    let mut counts = [0usize; 5];
    for &v in &vals {
        let k = if v < 54.0 {
            0
        } else if v < 70.0 {
            1
        } else if v <= 180.0 {
            2
        } else if v <= 250.0 {
            3
        } else {
            4
        };
        counts[k] += 1;
    }
    let span_min = points[n - 1].0 - points[0].0;
    let step_min = median_step(points);
    let coverage = if step_min.is_finite() && span_min > 0.0 {
        ((n as f64) / (span_min / step_min + 1.0)).min(1.0)
    } else {
        f64::NAN
    };
    Some(CgmMetrics {
        n,
        span_min,
        step_min,
        coverage,
        mean,
        sd,
        cv: if mean > 0.0 { sd / mean } else { f64::NAN },
        gmi: 3.31 + 0.02392 * mean,
        ranges: counts.map(|c| c as f64 / n as f64),
    })
}

/// Formats with fixed decimals; "—" for non-finite.
pub(crate) fn fmt_f(x: f64, decimals: usize) -> String {
    if x.is_finite() {
        let s = format!("{x:.decimals$}");
        if s.starts_with('-') && s[1..].chars().all(|c| c == '0' || c == '.') {
            s[1..].to_string()
        } else {
            s
        }
    } else {
        "—".to_string()
    }
}

/// Formats a fraction as a percentage; "—" for non-finite.
pub(crate) fn fmt_pct(frac: f64, decimals: usize) -> String {
    if frac.is_finite() {
        format!("{} %", fmt_f(frac * 100.0, decimals))
    } else {
        "—".to_string()
    }
}

/// Formats with about `sig` significant digits.
pub(crate) fn fmt_sig(x: f64, sig: i32) -> String {
    if !x.is_finite() {
        return "—".to_string();
    }
    if x == 0.0 {
        return "0".to_string();
    }
    let mag = x.abs().log10().floor() as i32;
    if !(-3..6).contains(&mag) {
        return format!("{:.*e}", (sig - 1).max(0) as usize, x);
    }
    let decimals = (sig - 1 - mag).max(0) as usize;
    fmt_f(x, decimals)
}

/// Compact tick label: at most 2 decimals, trailing zeros trimmed.
pub(crate) fn fmt_tick(x: f64) -> String {
    if !x.is_finite() {
        return String::new();
    }
    let s = format!("{x:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

/// Tick label for data of arbitrary magnitude.
pub(crate) fn fmt_axis(x: f64) -> String {
    if !x.is_finite() {
        return String::new();
    }
    let a = x.abs();
    if a < 1e-12 {
        return "0".to_string();
    }
    if !(1e-4..1e6).contains(&a) {
        return format!("{x:.1e}");
    }
    // Enough decimals for 4 significant digits, then trim trailing zeros.
    let decimals = (3 - a.log10().floor() as i32).max(0) as usize;
    let s = format!("{x:.decimals$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        &s
    };
    s.to_string()
}

/// "26.5 h" from minutes.
pub(crate) fn fmt_hours(min: f64) -> String {
    if !min.is_finite() {
        return "—".to_string();
    }
    format!("{} h", fmt_f(min / 60.0, 1))
}

/// Wall-clock origin parsed from labels like `2023-11-13 00:00 Europe/London`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WallOrigin {
    days: i64,
    minute: i64,
}

impl WallOrigin {
    /// Local minute of the day of t = 0.
    pub(crate) fn minute_of_day(&self) -> i64 {
        self.minute
    }
}

pub(crate) fn parse_origin(label: &str) -> Option<WallOrigin> {
    let b = label.trim().as_bytes();
    if b.len() < 16 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = std::str::from_utf8(&b[r]).ok()?;
        if s.bytes().all(|c| c.is_ascii_digit()) {
            s.parse().ok()
        } else {
            None
        }
    };
    if b[4] != b'-' || b[7] != b'-' || !(b[10] == b' ' || b[10] == b'T') || b[13] != b':' {
        return None;
    }
    let (y, m, d, hh, mm) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 {
        return None;
    }
    Some(WallOrigin {
        days: days_from_civil(y, m, d),
        minute: hh * 60 + mm,
    })
}

/// Approximate wall-clock time `t_min` after the origin (no DST handling).
pub(crate) fn wall_clock(o: WallOrigin, t_min: f64) -> String {
    if !t_min.is_finite() || t_min.abs() > 1e9 {
        return "—".to_string();
    }
    let total = o.days * 1440 + o.minute + t_min.round() as i64;
    let days = total.div_euclid(1440);
    let mins = total.rem_euclid(1440);
    let (y, m, d) = civil_from_days(days);
    const WD: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    let wd = WD[days.rem_euclid(7) as usize];
    format!(
        "{wd} {y:04}-{m:02}-{d:02} {:02}:{:02}",
        mins / 60,
        mins % 60
    )
}

// Howard Hinnant's date algorithms.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// One time-of-day slot of the ambulatory glucose profile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct AgpSlot {
    /// Slot centre, minutes after local midnight.
    pub minute_of_day: f64,
    /// 5, 25, 50, 75 and 95 % of the CGM values within ±30 min of the slot centre (any day),
    /// mg/dL; NaN with fewer than [`AGP_MIN_VALUES`] values.
    pub p: [f64; 5],
    /// Values pooled.
    pub n: usize,
}

/// Fewer pooled values than this in a slot: no AGP percentiles there.
pub(crate) const AGP_MIN_VALUES: usize = 5;

/// The ambulatory glucose profile (Bergenstal et al., Diabetes Technol Ther 15:198, 2013;
/// Battelino et al., Diabetes Care 42:1593, 2019): 5/25/50/75/95 % of CGM by time of day, in
/// 96 slots of 15 min, each pooling the values within ±30 min of its centre over all days (the
/// day wraps at midnight). `cgm` is `(t_min, mg/dL)`; `origin_minute_of_day` the local time
/// of t = 0 (no DST handling).
pub(crate) fn agp(cgm: &[(f64, f64)], origin_minute_of_day: f64) -> Vec<AgpSlot> {
    let tod: Vec<(f64, f64)> = cgm
        .iter()
        .filter(|c| c.0.is_finite() && c.1.is_finite())
        .map(|c| ((origin_minute_of_day + c.0).rem_euclid(1440.0), c.1))
        .collect();
    (0..96)
        .map(|k| {
            let centre = 15.0 * k as f64 + 7.5;
            let mut v: Vec<f64> = tod
                .iter()
                .filter(|c| {
                    let d = (c.0 - centre).abs();
                    d.min(1440.0 - d) <= 30.0
                })
                .map(|c| c.1)
                .collect();
            v.sort_by(f64::total_cmp);
            let p = if v.len() >= AGP_MIN_VALUES {
                [0.05, 0.25, 0.5, 0.75, 0.95].map(|q| quantile_sorted(&v, q))
            } else {
                [f64::NAN; 5]
            };
            AgpSlot {
                minute_of_day: centre,
                p,
                n: v.len(),
            }
        })
        .collect()
}

/// A hypoglycaemia episode in the CGM record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct HypoEpisode {
    /// First reading below 70 mg/dL, minutes after t = 0.
    pub start_min: f64,
    /// First reading of the 15 min at or above 70 mg/dL that ended it (or the last reading
    /// below, if the record or a gap ends it), minutes.
    pub end_min: f64,
    /// Lowest reading, mg/dL.
    pub nadir_mg_dl: f64,
    /// Whether it reached level 2 (< 54 mg/dL for at least 15 min).
    pub level2: bool,
}

/// Hypoglycaemia episodes as the international consensus counts CGM events (Battelino et al.,
/// Lancet Diabetes Endocrinol 11:42, 2023): at least 15 consecutive minutes below 70 mg/dL,
/// ended by at least 15 consecutive minutes at or above 70; level 2 when below 54 mg/dL for at
/// least 15 minutes within it. A gap over 30 min between readings ends an episode. `cgm` is
/// `(t_min, mg/dL)`, time-ordered.
pub(crate) fn hypo_episodes(cgm: &[(f64, f64)]) -> Vec<HypoEpisode> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < cgm.len() {
        if cgm[i].1 >= 70.0 {
            i += 1;
            continue;
        }
        let start = cgm[i].0;
        let (mut nadir, mut last_below) = (cgm[i].1, cgm[i].0);
        let (mut run54, mut longest54) = (None::<f64>, 0.0f64);
        let mut end = None;
        let mut j = i;
        while j < cgm.len() {
            let (t, v) = cgm[j];
            if j > i && t - cgm[j - 1].0 > 30.0 {
                break;
            }
            if v < 70.0 {
                last_below = t;
                nadir = nadir.min(v);
            } else {
                // recovered once readings stay at or above 70 for 15 min
                let k = cgm[j..].iter().take_while(|c| c.1 >= 70.0).last();
                if k.is_some_and(|c| c.0 - t >= 15.0) {
                    end = Some(t);
                    break;
                }
            }
            if v < 54.0 {
                let s = *run54.get_or_insert(t);
                longest54 = longest54.max(t - s);
            } else {
                run54 = None;
            }
            j += 1;
        }
        let end_min = end.unwrap_or(last_below);
        if end_min - start >= 15.0 {
            out.push(HypoEpisode {
                start_min: start,
                end_min,
                nadir_mg_dl: nadir,
                level2: longest54 >= 15.0,
            });
        }
        i = j.max(i + 1);
    }
    out
}

#[cfg(test)]
mod tests {

    #[test]
    fn agp_pools_by_time_of_day_and_wraps_midnight() {
        // three days of 5-min CGM: 100 mg/dL, except 200 between 12:00 and 13:00
        let cgm: Vec<(f64, f64)> = (0..3 * 288)
            .map(|k| {
                let t = 5.0 * k as f64;
                let tod = t.rem_euclid(1440.0);
                (
                    t,
                    if (720.0..780.0).contains(&tod) {
                        200.0
                    } else {
                        100.0
                    },
                )
            })
            .collect();
        let a = agp(&cgm, 0.0);
        assert_eq!(a.len(), 96);
        let noon = a.iter().find(|s| s.minute_of_day == 727.5).unwrap();
        assert_eq!(noon.p[2], 200.0);
        assert_eq!(a[0].p, [100.0; 5]);
        assert_eq!(
            a[0].n,
            3 * 12,
            "±30 min around 00:07:30 wraps to the previous evening"
        );
        // an origin at 06:00 local shifts the profile by 6 h
        let b = agp(&cgm, 360.0);
        let six_pm = b.iter().find(|s| s.minute_of_day == 1087.5).unwrap();
        assert_eq!(six_pm.p[2], 200.0);
        assert!(agp(&cgm[..3], 0.0).iter().all(|s| s.p[0].is_nan()));
    }

    #[test]
    fn hypo_episodes_follow_the_consensus_definition() {
        let mut v = vec![100.0; 60];
        for x in v.iter_mut().take(16).skip(10) {
            *x = 60.0; // 30 min below 70: an episode (ends at index 16)
        }
        for x in v.iter_mut().take(22).skip(20) {
            *x = 50.0; // two readings, 10 min below: too short
        }
        for x in v.iter_mut().take(42).skip(30) {
            *x = 50.0; // 55 min below 54, with one 80 at 36 that does not end it
        }
        v[36] = 80.0;
        let cgm: Vec<(f64, f64)> = v
            .iter()
            .enumerate()
            .map(|(k, &g)| (5.0 * k as f64, g))
            .collect();
        let e = hypo_episodes(&cgm);
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(
            (e[0].start_min, e[0].end_min, e[0].nadir_mg_dl),
            (50.0, 80.0, 60.0)
        );
        assert!(!e[0].level2);
        assert_eq!((e[1].start_min, e[1].end_min), (150.0, 210.0));
        assert!(e[1].level2);
    }
    use super::*;

    #[test]
    fn quantiles_and_format() {
        let v = sorted_finite(&[3.0, f64::NAN, 1.0, 2.0, f64::INFINITY]);
        assert_eq!(v, vec![1.0, 2.0, 3.0]);
        assert_eq!(quantile_sorted(&v, 0.5), 2.0);
        assert_eq!(quantile_sorted(&v, 0.25), 1.5);
        assert!(quantile_sorted(&[], 0.5).is_nan());
        assert_eq!(fmt_f(f64::NAN, 1), "—");
        assert_eq!(fmt_f(-0.01, 1), "0.0");
        assert_eq!(fmt_sig(0.012345, 3), "0.0123");
        assert_eq!(fmt_sig(1234.6, 3), "1235");
        assert_eq!(fmt_tick(6.0), "6");
        assert_eq!(fmt_tick(0.25), "0.25");
        assert_eq!(fmt_pct(0.705, 1), "70.5 %");
        assert_eq!(fmt_axis(0.05), "0.05");
        assert_eq!(fmt_axis(0.001), "0.001");
        assert_eq!(fmt_axis(0.15), "0.15");
        assert_eq!(fmt_axis(250.0), "250");
        assert_eq!(fmt_axis(-0.0), "0");
        assert_eq!(fmt_axis(2.5e-7), "2.5e-7");
    }

    #[test]
    fn wall_clock_from_label() {
        let o = parse_origin("2023-11-13 00:00 Europe/London").unwrap();
        assert_eq!(wall_clock(o, 26.0 * 60.0), "Tue 2023-11-14 02:00");
        assert_eq!(wall_clock(o, -30.0), "Sun 2023-11-12 23:30");
        assert!(parse_origin("day 0").is_none());
        assert!(parse_origin("2023-13-01 00:00").is_none());
    }

    #[test]
    fn metrics_ranges() {
        let pts: Vec<(f64, f64)> = [50.0, 60.0, 100.0, 200.0, 300.0]
            .iter()
            .enumerate()
            .map(|(i, v)| (i as f64 * 5.0, *v))
            .collect();
        let m = cgm_metrics(&pts).unwrap();
        assert_eq!(m.ranges, [0.2; 5]);
        assert!((m.coverage - 1.0).abs() < 1e-12);
        assert!(cgm_metrics(&[]).is_none());
    }

    #[test]
    fn gaps_split() {
        let pts = vec![
            (0.0, 1.0),
            (5.0, 1.0),
            (10.0, 1.0),
            (60.0, 1.0),
            (65.0, 1.0),
        ];
        let segs = split_gaps(&pts, gap_threshold(&pts));
        assert_eq!(segs.len(), 2);
        assert_eq!(segs[1].len(), 2);
    }
}
