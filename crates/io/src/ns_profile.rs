//! Nightscout profiles: the scheduled basal rates of a patient, and relative (percent)
//! temporary basals resolved against them.
//!
//! A Nightscout profile document (`/api/v1/profile`, or one element of a `profile.json`
//! export) names its active profile in `defaultProfile` and holds the profiles in `store`; each
//! has a `basal` schedule (`[{"time": "HH:MM", "value": U/h}, …]`, local times of the profile's
//! `timezone`, each rate holding until the next time of day, the last one until midnight and the
//! first from midnight if it starts later), besides `sens`, `carbratio` and targets (not read
//! here). An export array holds several documents: the one with the latest `startDate` (else
//! `mills`, else the first) is used.
//!
//! A Nightscout `Temp Basal` with `percent` and no `absolute`/`rate` runs at
//! `scheduled × (100 + percent) / 100` (Nightscout's own rule: `percent` is the change, −100 is
//! zero delivery). [`resolve_percent_temp_basals`] writes that rate into the treatment as
//! `absolute`, so the ordinary Nightscout mapping imports it as a `basal_rate`.

use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde_json::{Map, Value};

/// Largest scheduled basal rate accepted, U/h (the ingest plausibility limit).
pub const MAX_BASAL_U_PER_H: f64 = 35.0;

/// A patient's scheduled basal rates over the day.
#[derive(Debug, Clone, PartialEq)]
pub struct BasalProfile {
    /// Profile name (`defaultProfile`).
    pub name: String,
    /// IANA time zone of the schedule's times (`UTC` when the profile names none).
    pub timezone: String,
    /// `(seconds after local midnight, U/h)`, ascending.
    pub steps: Vec<(u32, f64)>,
}

fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        Value::Object(o) => [
            "$numberLong",
            "$numberDouble",
            "$numberInt",
            "$numberDecimal",
        ]
        .iter()
        .find_map(|k| o.get(*k).and_then(num)),
        _ => None,
    }
}

fn hhmm(s: &str) -> Option<u32> {
    let (h, m) = s.trim().split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.get(..2).unwrap_or(m).parse().ok()?);
    (h < 24 && m < 60).then_some(h * 3600 + m * 60)
}

impl BasalProfile {
    /// The profile of a Nightscout profile document or export array (`what` names it in
    /// errors, e.g. `profile`). Errors name the element: no active profile, a missing or empty
    /// `basal`, a bad time or rate (negative, not a number, over 35 U/h), an unknown time zone.
    pub fn from_nightscout(v: &Value, what: &str) -> Result<BasalProfile, String> {
        let (doc, at) = match v {
            Value::Array(a) => {
                if a.is_empty() {
                    return Err(format!("{what}: an empty array holds no profile"));
                }
                let key = |d: &Value| -> (i64, i64) {
                    let start = d
                        .get("startDate")
                        .and_then(Value::as_str)
                        .and_then(|s| s.parse::<Timestamp>().ok())
                        .map(|t| t.as_millisecond())
                        .unwrap_or(i64::MIN);
                    let mills = d.get("mills").and_then(num).unwrap_or(f64::MIN) as i64;
                    (start, mills)
                };
                let (i, d) = a
                    .iter()
                    .enumerate()
                    .max_by_key(|(i, d)| (key(d), std::cmp::Reverse(*i)))
                    .expect("non-empty");
                (d, format!("{what}[{i}]"))
            }
            other => (other, what.to_string()),
        };
        let Some(doc) = doc.as_object() else {
            return Err(format!("{at}: a profile document must be a JSON object"));
        };
        // A document with a `store` of named profiles, or one profile itself.
        let (profile, at, name): (&Map<String, Value>, String, String) = match doc
            .get("store")
            .and_then(Value::as_object)
        {
            Some(store) => {
                let name = match doc.get("defaultProfile").and_then(Value::as_str) {
                    Some(n) => n.to_string(),
                    None if store.len() == 1 => store.keys().next().cloned().unwrap_or_default(),
                    None => {
                        return Err(format!(
                        "{at}.defaultProfile: required to choose among the {} profiles in `store`",
                        store.len()
                    ))
                    }
                };
                let p = store.get(&name).and_then(Value::as_object).ok_or_else(|| {
                    format!("{at}.store: no profile named `{name}` (defaultProfile)")
                })?;
                (p, format!("{at}.store.{name}"), name)
            }
            None => (doc, at.clone(), "profile".into()),
        };
        let timezone = profile
            .get("timezone")
            .or_else(|| doc.get("timezone"))
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .unwrap_or("UTC")
            .trim()
            .to_string();
        TimeZone::get(&timezone)
            .map_err(|_| format!("{at}.timezone: unknown time zone `{timezone}`"))?;
        let basal = match profile.get("basal") {
            Some(Value::Array(b)) if !b.is_empty() => b,
            Some(Value::Array(_)) => return Err(format!("{at}.basal: the schedule is empty")),
            Some(v) if num(v).is_some() => {
                // A single rate for the whole day (older Nightscout profiles).
                let r = num(v).unwrap_or(0.0);
                check_rate(r, &format!("{at}.basal"))?;
                return Ok(BasalProfile {
                    name,
                    timezone,
                    steps: vec![(0, r)],
                });
            }
            Some(_) => return Err(format!("{at}.basal: expected an array of {{time, value}}")),
            None => return Err(format!("{at}.basal: required (the scheduled basal rates)")),
        };
        let mut steps: Vec<(u32, f64)> = Vec::new();
        for (i, s) in basal.iter().enumerate() {
            let here = format!("{at}.basal[{i}]");
            let secs = match (
                s.get("timeAsSeconds").and_then(num),
                s.get("time").and_then(Value::as_str),
            ) {
                (Some(x), _) if (0.0..86400.0).contains(&x) => x as u32,
                (_, Some(t)) => hhmm(t)
                    .ok_or_else(|| format!("{here}.time: `{t}` is not a time of day HH:MM"))?,
                _ => return Err(format!("{here}.time: required (HH:MM)")),
            };
            let r = s
                .get("value")
                .and_then(num)
                .ok_or_else(|| format!("{here}.value: required (U/h)"))?;
            check_rate(r, &format!("{here}.value"))?;
            if let Some(&(prev, _)) = steps.last() {
                if secs <= prev {
                    return Err(format!(
                        "{here}.time: times must increase through the day ({:02}:{:02} after {:02}:{:02})",
                        secs / 3600,
                        secs / 60 % 60,
                        prev / 3600,
                        prev / 60 % 60
                    ));
                }
            }
            steps.push((secs, r));
        }
        Ok(BasalProfile {
            name,
            timezone,
            steps,
        })
    }

    /// The scheduled rate at `t`, U/h.
    pub fn rate_at(&self, t: Timestamp) -> f64 {
        let tz = TimeZone::get(&self.timezone).unwrap_or(TimeZone::UTC);
        let local = t.to_zoned(tz);
        let secs = local.hour() as u32 * 3600 + local.minute() as u32 * 60 + local.second() as u32;
        // Before the first step: the first step's rate (Nightscout starts the day with it).
        self.steps
            .iter()
            .rev()
            .find(|(s, _)| *s <= secs)
            .or_else(|| self.steps.first())
            .map(|(_, r)| *r)
            .unwrap_or(0.0)
    }
}

/// The scheduled basal rates a Nightscout export leaves out: a `Temp Basal` runs for its
/// `duration` (or until the next temp basal or a cancel, `duration` 0), after which the pump
/// returns to `profile`'s schedule. Returns `(time, U/h)` at `from`, at each schedule change
/// (local times of the profile's time zone, daylight-saving aware) and at each temp basal's
/// end, for every such instant in `[from, to]` at which no temp basal runs; sorted. A temp
/// basal without a duration runs until the next one. Treatments that are not temp basals, or
/// have no usable time, are ignored.
pub fn scheduled_basal_rates(
    profile: &BasalProfile,
    treatments: &[Value],
    from: Timestamp,
    to: Timestamp,
) -> Vec<(Timestamp, f64)> {
    // (start, duration in min; None = a cancel), sorted by start
    let mut events: Vec<(Timestamp, Option<f64>)> = treatments
        .iter()
        .filter_map(|t| {
            let o = t.as_object()?;
            if o.get("eventType").and_then(Value::as_str).map(str::trim) != Some("Temp Basal") {
                return None;
            }
            let at = treatment_time(o)?;
            match o.get("duration").and_then(num) {
                Some(d) if d <= 0.0 => Some((at, None)),
                Some(d) if d.is_finite() => Some((at, Some(d))),
                _ => Some((at, Some(f64::INFINITY))),
            }
        })
        .collect();
    events.sort_by_key(|e| e.0);
    let mut running: Vec<(Timestamp, Timestamp)> = Vec::new();
    for (i, &(start, dur)) in events.iter().enumerate() {
        let Some(dur) = dur else { continue };
        let mut end = match dur.is_finite() {
            true => start
                .checked_add(jiff::SignedDuration::from_secs_f64(dur * 60.0))
                .unwrap_or(Timestamp::MAX),
            false => Timestamp::MAX,
        };
        if let Some(next) = events.get(i + 1) {
            end = end.min(next.0);
        }
        running.push((start, end));
    }
    let tz = TimeZone::get(&profile.timezone).unwrap_or(TimeZone::UTC);
    let mut at: Vec<Timestamp> = vec![from];
    at.extend(running.iter().map(|r| r.1));
    if let (Ok(first), Ok(last)) = (
        from.to_zoned(tz.clone()).date().yesterday(),
        to.to_zoned(tz.clone()).date().tomorrow(),
    ) {
        let mut day = first;
        while day <= last {
            for &(secs, _) in &profile.steps {
                let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
                if let Ok(z) = day.at(h as i8, m as i8, s as i8, 0).to_zoned(tz.clone()) {
                    at.push(z.timestamp());
                }
            }
            match day.tomorrow() {
                Ok(d) => day = d,
                Err(_) => break,
            }
        }
    }
    at.retain(|t| *t >= from && *t <= to);
    at.sort();
    at.dedup();
    at.into_iter()
        .filter(|t| !running.iter().any(|(s, e)| s <= t && t < e))
        .map(|t| (t, profile.rate_at(t)))
        .collect()
}

fn check_rate(r: f64, at: &str) -> Result<(), String> {
    if !r.is_finite() || r < 0.0 {
        return Err(format!("{at}: basal rate {r} U/h must be zero or more"));
    }
    if r > MAX_BASAL_U_PER_H {
        return Err(format!(
            "{at}: basal rate {r} U/h is implausible (more than {MAX_BASAL_U_PER_H} U/h)"
        ));
    }
    Ok(())
}

fn treatment_time(o: &Map<String, Value>) -> Option<Timestamp> {
    ["created_at", "timestamp", "date", "mills"]
        .iter()
        .find_map(|k| match o.get(*k)? {
            Value::String(s) => s.trim().parse::<Timestamp>().ok(),
            Value::Object(d) if d.contains_key("$date") => match d.get("$date")? {
                Value::String(s) => s.trim().parse::<Timestamp>().ok(),
                v => num(v).and_then(|ms| Timestamp::from_millisecond(ms as i64).ok()),
            },
            v => num(v)
                .filter(|ms| ms.is_finite() && ms.abs() < 1e17)
                .and_then(|ms| Timestamp::from_millisecond(ms.round() as i64).ok()),
        })
}

/// Resolve relative `Temp Basal` treatments (`percent` without `absolute`/`rate`, duration
/// not 0) of `treatments` against `profile`: each gets `absolute` = scheduled rate at its time ×
/// (100 + percent) / 100. Returns how many were resolved, or the problems, each naming the
/// element (`{what}[i].percent`): no profile known, a percent below −100 or not a number, a
/// treatment without a usable time. Nothing is changed when there is a problem.
pub fn resolve_percent_temp_basals(
    treatments: &mut [Value],
    profile: Option<&BasalProfile>,
    what: &str,
) -> Result<usize, Vec<String>> {
    let mut problems = Vec::new();
    let mut fills: Vec<(usize, f64)> = Vec::new();
    for (i, t) in treatments.iter().enumerate() {
        let Some(o) = t.as_object() else { continue };
        if o.get("eventType").and_then(Value::as_str).map(str::trim) != Some("Temp Basal") {
            continue;
        }
        let has_rate = ["absolute", "rate"]
            .iter()
            .any(|k| o.get(*k).is_some_and(|v| num(v).is_some()));
        if has_rate || !o.contains_key("percent") {
            continue;
        }
        if o.get("duration").and_then(num) == Some(0.0) {
            continue; // a cancel
        }
        let Some(pct) = o.get("percent").and_then(num).filter(|p| p.is_finite()) else {
            problems.push(format!("{what}[{i}].percent: not a number"));
            continue;
        };
        if pct < -100.0 {
            problems.push(format!(
                "{what}[{i}].percent: {pct} is below -100 (percent is the change from the scheduled basal; -100 is zero delivery)"
            ));
            continue;
        }
        let Some(profile) = profile else {
            problems.push(format!(
                "{what}[{i}].percent: a relative (percent) Temp Basal needs the patient's scheduled basal rate, and no profile is known (upload the Nightscout profile first, or send `absolute` U/h)"
            ));
            continue;
        };
        let Some(time) = treatment_time(o) else {
            problems.push(format!(
                "{what}[{i}].created_at: a usable time is required to find the scheduled basal"
            ));
            continue;
        };
        let rate = profile.rate_at(time) * (100.0 + pct) / 100.0;
        fills.push((i, (rate * 1000.0).round() / 1000.0));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    for (i, rate) in &fills {
        if let Some(o) = treatments[*i].as_object_mut() {
            o.insert("absolute".into(), Value::from(*rate));
        }
    }
    Ok(fills.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn export() -> Value {
        json!([
            {"defaultProfile": "Old", "startDate": "2024-01-01T00:00:00.000Z",
             "store": {"Old": {"basal": [{"time": "00:00", "value": 5.0}], "timezone": "UTC"}}},
            {"defaultProfile": "Day", "startDate": "2024-06-01T00:00:00.000Z", "units": "mg/dl",
             "store": {
                "Day": {"timezone": "Europe/London", "dia": 4,
                        "basal": [{"time": "00:00", "value": 0.8, "timeAsSeconds": 0},
                                  {"time": "06:30", "value": 1.2, "timeAsSeconds": 23400},
                                  {"time": "22:00", "value": 0.6, "timeAsSeconds": 79200}],
                        "sens": [{"time": "00:00", "value": 50}], "carbratio": [{"time": "00:00", "value": 10}]},
                "Sport": {"basal": [{"time": "00:00", "value": 0.3}]}}}
        ])
    }

    #[test]
    fn newest_export_document_and_its_default_profile() {
        let p = BasalProfile::from_nightscout(&export(), "profile").unwrap();
        assert_eq!(p.name, "Day");
        assert_eq!(p.timezone, "Europe/London");
        assert_eq!(p.steps, vec![(0, 0.8), (23400, 1.2), (79200, 0.6)]);
        // Local times: 07:00 BST is 06:00Z.
        let t = |s: &str| s.parse::<Timestamp>().unwrap();
        assert_eq!(p.rate_at(t("2024-07-01T06:00:00Z")), 1.2);
        assert_eq!(p.rate_at(t("2024-07-01T05:00:00Z")), 0.8);
        assert_eq!(p.rate_at(t("2024-07-01T21:30:00Z")), 0.6);
        // In winter London is UTC.
        assert_eq!(p.rate_at(t("2024-12-01T06:00:00Z")), 0.8);
    }

    #[test]
    fn bad_profiles_name_the_element() {
        let cases = [
            (json!([]), "empty array"),
            (
                json!({"store": {"A": {}, "B": {}}}),
                "profile.defaultProfile",
            ),
            (
                json!({"defaultProfile": "X", "store": {"A": {}}}),
                "no profile named `X`",
            ),
            (
                json!({"store": {"A": {"basal": []}}}),
                "profile.store.A.basal",
            ),
            (
                json!({"store": {"A": {}}}),
                "profile.store.A.basal: required",
            ),
            (
                json!({"basal": [{"time": "25:00", "value": 1}]}),
                "profile.basal[0].time",
            ),
            (
                json!({"basal": [{"time": "00:00", "value": -1}]}),
                "profile.basal[0].value",
            ),
            (
                json!({"basal": [{"time": "00:00", "value": 90}]}),
                "implausible",
            ),
            (
                json!({"basal": [{"time": "00:00"}]}),
                "profile.basal[0].value: required",
            ),
            (
                json!({"basal": [{"time": "08:00", "value": 1}, {"time": "07:00", "value": 1}]}),
                "profile.basal[1].time",
            ),
            (
                json!({"timezone": "Mars/Olympus", "basal": [{"time": "00:00", "value": 1}]}),
                "unknown time zone",
            ),
        ];
        for (v, want) in cases {
            let e = BasalProfile::from_nightscout(&v, "profile").unwrap_err();
            assert!(e.contains(want), "{v}: {e}");
        }
    }

    /// The schedule returns after each temp basal (its duration, a cancel, or the next temp),
    /// follows its local-time changes (British Summer Time: 06:30 local is 05:30Z) and is not
    /// emitted while a temp basal runs.
    #[test]
    fn scheduled_rates_fill_the_time_without_temp_basals() {
        let p = BasalProfile::from_nightscout(&export(), "profile").unwrap();
        let t = |s: &str| s.parse::<Timestamp>().unwrap();
        let treatments = vec![
            json!({"eventType": "Temp Basal", "absolute": 2.0, "duration": 60, "created_at": "2024-06-01T10:00:00Z"}),
            json!({"eventType": "Temp Basal", "absolute": 0.0, "duration": 120, "created_at": "2024-06-01T14:00:00Z"}),
            json!({"eventType": "Temp Basal", "duration": 0, "created_at": "2024-06-01T14:30:00Z"}),
            json!({"eventType": "Temp Basal", "absolute": 3.0, "created_at": "2024-06-01T18:00:00Z"}),
            json!({"eventType": "Temp Basal", "absolute": 1.0, "duration": 30, "created_at": "2024-06-01T19:00:00Z"}),
            json!({"eventType": "Meal Bolus", "insulin": 3, "created_at": "2024-06-01T13:00:00Z"}),
        ];
        let got = scheduled_basal_rates(
            &p,
            &treatments,
            t("2024-06-01T05:00:00Z"),
            t("2024-06-02T00:00:00Z"),
        );
        let want: Vec<(Timestamp, f64)> = [
            ("2024-06-01T05:00:00Z", 0.8),
            ("2024-06-01T05:30:00Z", 1.2),
            ("2024-06-01T11:00:00Z", 1.2),
            ("2024-06-01T14:30:00Z", 1.2),
            ("2024-06-01T19:30:00Z", 1.2),
            ("2024-06-01T21:00:00Z", 0.6),
            ("2024-06-01T23:00:00Z", 0.8),
        ]
        .iter()
        .map(|(s, r)| (t(s), *r))
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn percent_temp_basals_resolve_against_the_schedule() {
        let p = BasalProfile::from_nightscout(&export(), "profile").unwrap();
        let mut tr = vec![
            json!({"eventType": "Temp Basal", "created_at": "2024-07-01T06:00:00Z", "percent": -30, "duration": 60}),
            json!({"eventType": "Temp Basal", "created_at": "2024-07-01T05:00:00Z", "percent": 50, "duration": 30}),
            json!({"eventType": "Temp Basal", "created_at": "2024-07-01T05:00:00Z", "absolute": 0.4, "percent": -50, "duration": 30}),
            json!({"eventType": "Temp Basal", "created_at": "2024-07-01T05:10:00Z", "percent": 0, "duration": 0}),
            json!({"eventType": "Correction Bolus", "created_at": "2024-07-01T05:00:00Z", "insulin": 1}),
        ];
        assert_eq!(
            resolve_percent_temp_basals(&mut tr, Some(&p), "treatments"),
            Ok(2)
        );
        assert_eq!(tr[0]["absolute"], json!(0.84));
        assert_eq!(tr[1]["absolute"], json!(1.2));
        assert_eq!(tr[2]["absolute"], json!(0.4));
        assert!(tr[3].get("absolute").is_none());

        // No profile: a clear error naming the element; nothing changed.
        let mut tr = vec![
            json!({"eventType": "Temp Basal", "created_at": "2024-07-01T06:00:00Z", "percent": -30, "duration": 60}),
        ];
        let e = resolve_percent_temp_basals(&mut tr, None, "treatments").unwrap_err();
        assert!(
            e[0].contains("treatments[0].percent") && e[0].contains("no profile"),
            "{e:?}"
        );
        assert!(tr[0].get("absolute").is_none());
        let mut tr = vec![
            json!({"eventType": "Temp Basal", "created_at": "2024-07-01T06:00:00Z", "percent": -130, "duration": 60}),
        ];
        let e = resolve_percent_temp_basals(&mut tr, Some(&p), "treatments").unwrap_err();
        assert!(e[0].contains("below -100"), "{e:?}");
    }
}
