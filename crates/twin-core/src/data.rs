//! Measurements in PEtab's measurement-table layout: a tab-separated file with the columns
//! `observableId`, `time`, `measurement` and optionally `noiseParameters` (a number: σ of that
//! measurement). Other PEtab columns (`simulationConditionId`, …) are allowed and ignored.
//!
//! Source: PEtab v1 specification, "Measurement table".

use crate::TwinError;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// Observable (a model id named in the calibration spec).
    pub observable: String,
    /// Time (model time unit), ≥ 0.
    pub time: f64,
    /// Measured value (observable's unit).
    pub value: f64,
    /// σ of this measurement, overriding the observable's noise model.
    #[serde(default)]
    pub sigma: Option<f64>,
}

/// Parse a measurement table; `origin` names the file in errors (`origin:line: reason`).
///
/// Errors: [`TwinError::Data`] for a missing column, an unparsable or non-finite number, a
/// negative time or σ ≤ 0.
pub fn parse_measurements(text: &str, origin: &str) -> Result<Vec<Measurement>, TwinError> {
    let err = |line: usize, msg: String| TwinError::Data(format!("{origin}:{line}: {msg}"));
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end_matches('\r')))
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'));
    let (hl, header) = lines.next().ok_or_else(|| {
        err(
            1,
            "empty file: expected a header with observableId, time, measurement".into(),
        )
    })?;
    let cols: Vec<&str> = header.split('\t').map(str::trim).collect();
    let col = |name: &str| cols.iter().position(|c| *c == name);
    let (Some(c_obs), Some(c_time), Some(c_val)) =
        (col("observableId"), col("time"), col("measurement"))
    else {
        return Err(err(
            hl,
            format!(
                "header must be tab-separated and name observableId, time and measurement; got {:?}",
                cols
            ),
        ));
    };
    let c_sigma = col("noiseParameters");
    let mut out = Vec::new();
    for (ln, line) in lines {
        let f: Vec<&str> = line.split('\t').map(str::trim).collect();
        let get = |c: usize, name: &str| {
            f.get(c)
                .copied()
                .ok_or_else(|| err(ln, format!("missing column {name} ({} fields)", f.len())))
        };
        let num = |c: usize, name: &str| -> Result<f64, TwinError> {
            let s = get(c, name)?;
            let v: f64 = s
                .parse()
                .map_err(|_| err(ln, format!("{name} '{s}' is not a number")))?;
            if !v.is_finite() {
                return Err(err(ln, format!("{name} {v} is not finite")));
            }
            Ok(v)
        };
        let observable = get(c_obs, "observableId")?.to_string();
        if observable.is_empty() {
            return Err(err(ln, "empty observableId".into()));
        }
        let time = num(c_time, "time")?;
        if time < 0.0 {
            return Err(err(ln, format!("time {time} is negative")));
        }
        let value = num(c_val, "measurement")?;
        let sigma = match c_sigma {
            Some(c) if f.get(c).is_some_and(|s| !s.is_empty()) => {
                let s = num(c, "noiseParameters")?;
                if s <= 0.0 {
                    return Err(err(ln, format!("noiseParameters {s} must be > 0")));
                }
                Some(s)
            }
            _ => None,
        };
        out.push(Measurement {
            observable,
            time,
            value,
            sigma,
        });
    }
    Ok(out)
}

/// [`parse_measurements`] of a file.
pub fn read_measurements(path: &Path) -> Result<Vec<Measurement>, TwinError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| TwinError::Io(format!("{}: {e}", path.display())))?;
    parse_measurements(&text, &path.display().to_string())
}

/// Write measurements as a PEtab measurement table (`simulationConditionId` `default`).
pub fn measurements_tsv(ms: &[Measurement]) -> String {
    let mut s =
        String::from("observableId\tsimulationConditionId\ttime\tmeasurement\tnoiseParameters\n");
    for m in ms {
        let sigma = m.sigma.map(|v| v.to_string()).unwrap_or_default();
        s.push_str(&format!(
            "{}\tdefault\t{}\t{}\t{}\n",
            m.observable, m.time, m.value, sigma
        ));
    }
    s
}
