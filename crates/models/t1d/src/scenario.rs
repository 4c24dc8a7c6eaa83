//! Scenario files (TOML): which patients, how long, which controller, sensor and pump, and the
//! timed meals, boluses and basal rates.
//!
//! ```toml
//! patient = "adult#001"            # or ["child#004", "adult#002"] or "all"
//! start = "2018-01-01T00:00:00"    # optional wall-clock start (civil time, no zone)
//! duration_min = 1440
//! [controller]
//! kind = "basal-bolus"             # "basal-bolus" | "pid" | "open-loop" | "mpc"
//! target_mg_dl = 140
//! [sensor]
//! kind = "dexcom"                  # "dexcom" | "guardian-rt" | "navigator"
//! noise = false
//! seed = 1
//! [pump]
//! kind = "insulet"                 # "insulet" | "cozmo"   (or pump = "insulet")
//! [[meal]]
//! at_min = 420
//! carbs_g = 45
//! [[bolus]]                        # extra insulin bolus, U (delivered over one minute)
//! at_min = 425
//! units = 4.5
//! [[basal]]                        # open-loop basal rate from at_min until the next entry
//! at_min = 0
//! u_per_h = 0.9
//! [random_meals]                   # optional: simglucose RandomScenario meals (added to [[meal]])
//! seed = 7                         # per-patient streams derived from (seed, patient index)
//! ```
//! Random meals follow the clock: a new day is drawn at every midnight of `start` + t (midnight
//! if `start` is absent); see [`crate::random_meals`].
//! Every problem is reported as a [`ScenarioError`] naming the file, the field and the value.

use crate::controller::ControllerSpec;
use crate::params::{patient_names, PatientParams};
use crate::pump::PumpKind;
use crate::random_meals::RandomMealSpec;
use crate::sensor::SensorKind;
use medtwin_core::Timeline;
use serde::Deserialize;
use std::path::Path;
use thiserror::Error;

/// Timeline input name for announced meals (g).
pub const CARBS_G: &str = "carbs_g";
/// Timeline input name for scenario boluses (U).
pub const BOLUS_U: &str = "bolus_u";
/// Timeline input name for scenario basal rates (U/h).
pub const BASAL_U_PER_H: &str = "basal_u_per_h";

/// A scenario problem: which file, which field, what was wrong.
#[derive(Debug, Error, Clone, PartialEq)]
#[error("{file}: {field}: {message}")]
pub struct ScenarioError {
    /// The scenario file (or `<string>`).
    pub file: String,
    /// The field (TOML path, e.g. `meal[2].carbs_g`).
    pub field: String,
    /// What is wrong, with the offending value.
    pub message: String,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum PatientSel {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SensorToml {
    #[serde(default = "default_sensor")]
    kind: String,
    #[serde(default)]
    noise: bool,
    #[serde(default = "default_seed")]
    seed: u64,
}
fn default_sensor() -> String {
    "dexcom".into()
}
fn default_seed() -> u64 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PumpTable {
    kind: String,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum PumpToml {
    Name(String),
    Table(PumpTable),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MealToml {
    at_min: f64,
    carbs_g: f64,
}
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BolusToml {
    at_min: f64,
    units: f64,
}
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BasalToml {
    at_min: f64,
    u_per_h: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RandomMealsToml {
    seed: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioToml {
    patient: PatientSel,
    start: Option<String>,
    duration_min: f64,
    controller: Option<ControllerSpec>,
    sensor: Option<SensorToml>,
    pump: Option<PumpToml>,
    #[serde(default)]
    meal: Vec<MealToml>,
    #[serde(default)]
    bolus: Vec<BolusToml>,
    #[serde(default)]
    basal: Vec<BasalToml>,
    random_meals: Option<RandomMealsToml>,
}

/// Minutes after midnight of an ISO 8601 civil date-time `YYYY-MM-DDTHH:MM[:SS]` (seconds are
/// ignored); `None` if it does not have that form.
pub fn minute_of_day(start: &str) -> Option<u64> {
    let (date, time) = start.split_once(['T', ' '])?;
    if date.len() != 10 || date.as_bytes()[4] != b'-' || date.as_bytes()[7] != b'-' {
        return None;
    }
    let mut it = time.split(':');
    let h: u64 = it.next()?.parse().ok()?;
    let m: u64 = it.next()?.parse().ok()?;
    if let Some(sec) = it.next() {
        let sec: f64 = sec.parse().ok()?;
        if !(0.0..61.0).contains(&sec) {
            return None;
        }
    }
    if h > 23 || m > 59 || it.next().is_some() {
        return None;
    }
    Some(h * 60 + m)
}

/// A validated scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Patients to simulate, by bundled name.
    pub patients: Vec<String>,
    /// Optional wall-clock start as written (civil time, ISO 8601).
    pub start: Option<String>,
    /// Duration, minutes (whole).
    pub duration_min: u64,
    /// Controller.
    pub controller: ControllerSpec,
    /// CGM sensor kind.
    pub sensor: SensorKind,
    /// Whether CGM noise is on.
    pub sensor_noise: bool,
    /// Noise seed (per patient stream derived from it and the patient's index).
    pub sensor_seed: u64,
    /// Pump.
    pub pump: PumpKind,
    /// Meals ([`CARBS_G`], g), boluses ([`BOLUS_U`], U) and basal rates ([`BASAL_U_PER_H`], U/h).
    pub timeline: Timeline,
    /// Random meals (simglucose `RandomScenario` statistics), announced in addition to the
    /// timeline's meals; `None` for none.
    pub random_meals: Option<RandomMealSpec>,
}

impl Scenario {
    /// Read and validate a scenario file. Errors name the file, field and value.
    pub fn from_file(path: &Path) -> Result<Scenario, ScenarioError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
            file: file.clone(),
            field: "(file)".into(),
            message: format!("cannot read: {e}"),
        })?;
        Scenario::from_toml_str(&text, &file)
    }

    /// Parse and validate scenario TOML text; `file` names the source in errors.
    pub fn from_toml_str(text: &str, file: &str) -> Result<Scenario, ScenarioError> {
        let err = |field: &str, message: String| ScenarioError {
            file: file.into(),
            field: field.into(),
            message,
        };
        let raw: ScenarioToml = toml::from_str(text).map_err(|e| {
            let span = e.span().map(|s| {
                let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                format!("line {line}: ")
            });
            err(
                "(toml)",
                format!("{}{}", span.unwrap_or_default(), e.message()),
            )
        })?;
        let known = patient_names();
        let patients = match raw.patient {
            PatientSel::One(s) if s == "all" => known.clone(),
            PatientSel::One(s) => vec![s],
            PatientSel::Many(v) => v,
        };
        if patients.is_empty() {
            return Err(err("patient", "empty patient list".into()));
        }
        for p in &patients {
            if !known.contains(p) {
                return Err(err(
                    "patient",
                    format!("unknown patient '{p}' (expected adolescent#001..#010, adult#001..#010, child#001..#010 or \"all\")"),
                ));
            }
        }
        if !raw.duration_min.is_finite()
            || raw.duration_min <= 0.0
            || raw.duration_min.fract() != 0.0
        {
            return Err(err(
                "duration_min",
                format!(
                    "{} is not a positive whole number of minutes",
                    raw.duration_min
                ),
            ));
        }
        if raw.duration_min > 525_600.0 * 10.0 {
            return Err(err(
                "duration_min",
                format!("{} exceeds 10 years", raw.duration_min),
            ));
        }
        let duration_min = raw.duration_min as u64;
        let sensor_t = raw.sensor.unwrap_or(SensorToml {
            kind: default_sensor(),
            noise: false,
            seed: 1,
        });
        let sensor = SensorKind::from_name(&sensor_t.kind).ok_or_else(|| {
            err(
                "sensor.kind",
                format!(
                    "unknown sensor '{}' (expected dexcom, guardian-rt or navigator)",
                    sensor_t.kind
                ),
            )
        })?;
        let pump_name = match raw.pump {
            None => "insulet".to_string(),
            Some(PumpToml::Name(s)) => s,
            Some(PumpToml::Table(t)) => t.kind,
        };
        let pump = PumpKind::from_name(&pump_name).ok_or_else(|| {
            err(
                "pump.kind",
                format!("unknown pump '{pump_name}' (expected insulet or cozmo)"),
            )
        })?;
        let controller = raw.controller.unwrap_or_default();
        if let ControllerSpec::BasalBolus { target_mg_dl }
        | ControllerSpec::Pid { target_mg_dl, .. } = controller
        {
            if !target_mg_dl.is_finite() || !(40.0..=400.0).contains(&target_mg_dl) {
                return Err(err(
                    "controller.target_mg_dl",
                    format!("{target_mg_dl} is outside 40–400 mg/dL"),
                ));
            }
        }
        if let ControllerSpec::Mpc {
            target_mg_dl,
            horizon_min,
            suspend_mg_dl,
        } = controller
        {
            if !target_mg_dl.is_finite() || !(90.0..=250.0).contains(&target_mg_dl) {
                return Err(err(
                    "controller.target_mg_dl",
                    format!("{target_mg_dl} is outside 90–250 mg/dL (MPC)"),
                ));
            }
            if !horizon_min.is_finite() || !(30.0..=600.0).contains(&horizon_min) {
                return Err(err(
                    "controller.horizon_min",
                    format!("{horizon_min} is outside 30–600 min"),
                ));
            }
            if !suspend_mg_dl.is_finite() || !(40.0..=target_mg_dl).contains(&suspend_mg_dl) {
                return Err(err(
                    "controller.suspend_mg_dl",
                    format!("{suspend_mg_dl} is outside 40 mg/dL – target ({target_mg_dl} mg/dL)"),
                ));
            }
        }
        let random_meals = match raw.random_meals {
            None => None,
            Some(r) => {
                if r.seed < 0 {
                    return Err(err(
                        "random_meals.seed",
                        format!("{} must be a non-negative integer", r.seed),
                    ));
                }
                if let Some(st) = &raw.start {
                    if minute_of_day(st).is_none() {
                        return Err(err(
                            "start",
                            format!("'{st}' is not YYYY-MM-DDTHH:MM[:SS] (random meals need the time of day)"),
                        ));
                    }
                }
                Some(RandomMealSpec {
                    seed: r.seed as u64,
                })
            }
        };
        if !raw.basal.is_empty() && controller != ControllerSpec::OpenLoop {
            return Err(err(
                "basal",
                "basal events apply only with controller.kind = \"open-loop\" (the controller sets the basal)".into(),
            ));
        }
        let mut timeline = Timeline::new(duration_min as f64);
        let whole = |field: String, at: f64| -> Result<(), ScenarioError> {
            if at.is_finite() && at.fract() != 0.0 {
                return Err(ScenarioError {
                    file: file.into(),
                    field,
                    message: format!(
                        "{at} is not a whole minute (inputs change on the 1-min grid)"
                    ),
                });
            }
            Ok(())
        };
        let in_span = |field: String, at: f64| -> Result<(), ScenarioError> {
            if !at.is_finite() || at < 0.0 || at >= duration_min as f64 {
                return Err(ScenarioError {
                    file: file.into(),
                    field,
                    message: format!("{at} is outside the simulated span [0, {duration_min}) min"),
                });
            }
            Ok(())
        };
        let amount = |field: String, v: f64| -> Result<(), ScenarioError> {
            if !v.is_finite() || v < 0.0 {
                return Err(ScenarioError {
                    file: file.into(),
                    field,
                    message: format!("{v} must be finite and >= 0"),
                });
            }
            Ok(())
        };
        for (i, m) in raw.meal.iter().enumerate() {
            in_span(format!("meal[{i}].at_min"), m.at_min)?;
            whole(format!("meal[{i}].at_min"), m.at_min)?;
            amount(format!("meal[{i}].carbs_g"), m.carbs_g)?;
            timeline
                .add_dose(m.at_min, CARBS_G, m.carbs_g)
                .map_err(|e| err(&format!("meal[{i}]"), e.to_string()))?;
        }
        for (i, b) in raw.bolus.iter().enumerate() {
            in_span(format!("bolus[{i}].at_min"), b.at_min)?;
            whole(format!("bolus[{i}].at_min"), b.at_min)?;
            amount(format!("bolus[{i}].units"), b.units)?;
            timeline
                .add_dose(b.at_min, BOLUS_U, b.units)
                .map_err(|e| err(&format!("bolus[{i}]"), e.to_string()))?;
        }
        for (i, b) in raw.basal.iter().enumerate() {
            in_span(format!("basal[{i}].at_min"), b.at_min)?;
            whole(format!("basal[{i}].at_min"), b.at_min)?;
            amount(format!("basal[{i}].u_per_h"), b.u_per_h)?;
            timeline
                .add_rate(b.at_min, BASAL_U_PER_H, b.u_per_h)
                .map_err(|e| err(&format!("basal[{i}]"), e.to_string()))?;
        }
        Ok(Scenario {
            patients,
            start: raw.start,
            duration_min,
            controller,
            sensor,
            sensor_noise: sensor_t.noise,
            sensor_seed: sensor_t.seed,
            pump,
            timeline,
            random_meals,
        })
    }

    /// Minutes after midnight at simulated minute 0 (0 if `start` is absent or has no time).
    pub fn start_minute_of_day(&self) -> u64 {
        self.start.as_deref().and_then(minute_of_day).unwrap_or(0)
    }

    /// The reference scenario of the shared simglucose benchmark (NOTES.md §4): 24 h, meals
    /// 45 g at 07:00, 70 g at 12:00, 80 g at 18:00, basal-bolus (target 140), noise-free Dexcom,
    /// Insulet pump.
    pub fn reference_day(patients: Vec<String>) -> Scenario {
        let mut timeline = Timeline::new(1440.0);
        for (at, g) in [(420.0, 45.0), (720.0, 70.0), (1080.0, 80.0)] {
            // Within the span and non-negative by construction.
            let _ = timeline.add_dose(at, CARBS_G, g);
        }
        Scenario {
            patients,
            start: Some("2018-01-01T00:00:00".into()),
            duration_min: 1440,
            controller: ControllerSpec::default(),
            sensor: SensorKind::Dexcom,
            sensor_noise: false,
            sensor_seed: 1,
            pump: PumpKind::Insulet,
            timeline,
            random_meals: None,
        }
    }

    /// Whether `p` is one of this scenario's patients.
    pub fn includes(&self, p: &PatientParams) -> bool {
        self.patients.iter().any(|n| n == &p.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"
patient = "adult#001"
start = "2018-01-01T00:00:00"
duration_min = 1440
[controller]
kind = "basal-bolus"
target_mg_dl = 140
[sensor]
kind = "dexcom"
noise = false
seed = 1
[pump]
kind = "insulet"
[[meal]]
at_min = 420
carbs_g = 45
[[bolus]]
at_min = 425
units = 4.5
"#;

    #[test]
    fn parses_the_documented_example() {
        let s = Scenario::from_toml_str(OK, "s.toml").unwrap();
        assert_eq!(s.patients, vec!["adult#001"]);
        assert_eq!(s.duration_min, 1440);
        assert_eq!(s.timeline.doses_in(CARBS_G, 0.0, 1440.0), 45.0);
        assert_eq!(s.timeline.doses_in(BOLUS_U, 0.0, 1440.0), 4.5);
    }

    #[test]
    fn errors_name_file_field_and_value() {
        let cases = [
            (OK.replace("adult#001", "adult#099"), "patient", "adult#099"),
            (
                OK.replace("\"dexcom\"", "\"libre\""),
                "sensor.kind",
                "libre",
            ),
            (
                OK.replace("carbs_g = 45", "carbs_g = -45"),
                "meal[0].carbs_g",
                "-45",
            ),
            (
                OK.replace("at_min = 420", "at_min = 2000"),
                "meal[0].at_min",
                "2000",
            ),
            (
                OK.replace("seed = 1", "seed = 1\ncolour = 3"),
                "(toml)",
                "colour",
            ),
            (
                OK.replace("\"insulet\"", "\"medtronic\""),
                "pump.kind",
                "medtronic",
            ),
            ("patient = [".to_string(), "(toml)", "line"),
        ];
        for (text, field, needle) in cases {
            let e = Scenario::from_toml_str(&text, "bad.toml").unwrap_err();
            assert_eq!(e.field, field, "{e}");
            assert!(
                e.to_string().contains(needle) && e.to_string().starts_with("bad.toml"),
                "{e}"
            );
        }
    }

    #[test]
    fn random_meals_and_mpc_parse_and_validate() {
        let base = "patient = \"all\"\nstart = \"2018-01-01T06:30:00\"\nduration_min = 2880\n[controller]\nkind = \"mpc\"\n";
        let s = Scenario::from_toml_str(&format!("{base}[random_meals]\nseed = 9\n"), "r.toml")
            .unwrap();
        assert_eq!(s.random_meals, Some(RandomMealSpec { seed: 9 }));
        assert_eq!(s.start_minute_of_day(), 390);
        assert_eq!(s.controller, ControllerSpec::mpc_default());
        let cases = [
            (
                format!("{base}[random_meals]\nseed = -2\n"),
                "random_meals.seed",
                "-2",
            ),
            (format!("{base}[random_meals]\nsed = 2\n"), "(toml)", "sed"),
            (
                base.replace("06:30:00", "6h") + "[random_meals]\nseed = 1\n",
                "start",
                "6h",
            ),
            (
                base.replace("kind = \"mpc\"", "kind = \"mpc\"\nhorizon_min = 5"),
                "controller.horizon_min",
                "5",
            ),
            (
                base.replace("kind = \"mpc\"", "kind = \"mpc\"\nsuspend_mg_dl = 20"),
                "controller.suspend_mg_dl",
                "20",
            ),
        ];
        for (text, field, needle) in cases {
            let e = Scenario::from_toml_str(&text, "bad.toml").unwrap_err();
            assert_eq!(e.field, field, "{e}");
            assert!(
                e.to_string().contains(needle) && e.to_string().starts_with("bad.toml"),
                "{e}"
            );
        }
    }

    #[test]
    fn all_expands_to_thirty() {
        let s = Scenario::from_toml_str("patient = \"all\"\nduration_min = 60", "x").unwrap();
        assert_eq!(s.patients.len(), 30);
    }
}
