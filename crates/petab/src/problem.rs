//! A PEtab v1 problem loaded from its YAML file: SBML model, parameter, condition, observable
//! and measurement tables (PEtab v1 specification, sections "Parameter table",
//! "Condition table", "Observables table", "Measurement table").

use crate::expr::{self, Expr};
use crate::table::Tsv;
use crate::yaml::{self, Yaml};
use crate::PetabError;
use medtwin_sbml::SbmlModel;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Scale on which a parameter is estimated (`parameterScale`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Linear.
    Lin,
    /// Natural logarithm.
    Log,
    /// Decadic logarithm.
    Log10,
}

impl Scale {
    /// Linear value → scaled value.
    pub fn to_scale(self, x: f64) -> f64 {
        match self {
            Scale::Lin => x,
            Scale::Log => x.ln(),
            Scale::Log10 => x.log10(),
        }
    }
    /// Scaled value → linear value.
    pub fn to_lin(self, s: f64) -> f64 {
        match self {
            Scale::Lin => s,
            Scale::Log => s.exp(),
            Scale::Log10 => 10f64.powf(s),
        }
    }
}

/// One row of the parameter table.
#[derive(Debug, Clone, PartialEq)]
pub struct Parameter {
    /// `parameterId`.
    pub id: String,
    /// `parameterScale`.
    pub scale: Scale,
    /// `lowerBound`, linear scale.
    pub lower: f64,
    /// `upperBound`, linear scale.
    pub upper: f64,
    /// `nominalValue`, linear scale.
    pub nominal: f64,
    /// `estimate` = 1.
    pub estimate: bool,
}

/// Transformation of observable and measurement before the noise model
/// (`observableTransformation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transform {
    /// None.
    Lin,
    /// Natural log.
    Log,
    /// log10.
    Log10,
}

/// Noise distribution of the transformed measurement (`noiseDistribution`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Noise {
    /// Normal with standard deviation σ = noiseFormula.
    Normal,
    /// Laplace with scale b = noiseFormula.
    Laplace,
}

/// One row of the observables table.
#[derive(Debug, Clone, PartialEq)]
pub struct Observable {
    /// `observableId`.
    pub id: String,
    /// `observableFormula`.
    pub formula: Expr,
    /// `noiseFormula`.
    pub noise_formula: Expr,
    /// `observableTransformation` (default lin).
    pub transform: Transform,
    /// `noiseDistribution` (default normal).
    pub noise: Noise,
}

/// A number or a parameter-table id (condition cells, measurement overrides).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A literal (NaN in a condition cell: keep the model's value).
    Num(f64),
    /// A parameter of the parameter table.
    Par(String),
}

/// One row of the condition table: model entity id → value.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// `conditionId`.
    pub id: String,
    /// `(model entity id, value)` for every non-empty cell.
    pub values: Vec<(String, Value)>,
}

/// One row of the measurement table.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    /// Line in the measurement file (1-based).
    pub line: usize,
    /// Index into [`Problem::observables`].
    pub observable: usize,
    /// `preequilibrationConditionId`, if any.
    pub preeq: Option<String>,
    /// `simulationConditionId`.
    pub sim: String,
    /// `time` (model time units).
    pub time: f64,
    /// `measurement`.
    pub value: f64,
    /// `observableParameters` (`;`-separated), replacing `observableParameterN_<obs>`.
    pub obs_pars: Vec<Value>,
    /// `noiseParameters`, replacing `noiseParameterN_<obs>`.
    pub noise_pars: Vec<Value>,
}

/// A loaded PEtab problem.
#[derive(Debug, Clone)]
pub struct Problem {
    /// Directory of the YAML file.
    pub dir: PathBuf,
    /// The SBML model as loaded (parameter-table values not yet applied).
    pub model: SbmlModel,
    /// Parameter table rows.
    pub parameters: Vec<Parameter>,
    /// Observables table rows.
    pub observables: Vec<Observable>,
    /// Conditions by id.
    pub conditions: HashMap<String, Condition>,
    /// Measurement rows (NaN measurements dropped).
    pub measurements: Vec<Measurement>,
}

fn files(p: &Yaml, key: &str, file: &str) -> Result<Vec<String>, PetabError> {
    let v = p.get(key).map(|v| v.strings()).unwrap_or_default();
    if v.is_empty() {
        return Err(PetabError::Yaml(format!("{file}: no '{key}'")));
    }
    Ok(v)
}

impl Problem {
    /// Load a PEtab v1 problem from its YAML file (the first entry of `problems`; several
    /// condition/measurement/observable files are concatenated).
    ///
    /// Errors: [`PetabError::Io`], [`PetabError::Yaml`], [`PetabError::Table`] (file:line),
    /// [`PetabError::Sbml`].
    pub fn load(yaml_path: impl AsRef<Path>) -> Result<Problem, PetabError> {
        let yp = yaml_path.as_ref();
        let name = yp.display().to_string();
        let text =
            std::fs::read_to_string(yp).map_err(|e| PetabError::Io(format!("{name}: {e}")))?;
        let y = yaml::parse(&text).map_err(|e| PetabError::Yaml(format!("{name}: {e}")))?;
        let fv = y
            .get("format_version")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        if fv != "1" && fv != "1.0.0" {
            return Err(PetabError::Yaml(format!(
                "{name}: format_version '{fv}' (only PEtab v1 is supported)"
            )));
        }
        let dir = yp.parent().unwrap_or(Path::new(".")).to_path_buf();
        let param_file = y
            .get("parameter_file")
            .map(|v| v.strings())
            .and_then(|v| v.into_iter().next())
            .ok_or_else(|| PetabError::Yaml(format!("{name}: no parameter_file")))?;
        let Some(Yaml::List(problems)) = y.get("problems") else {
            return Err(PetabError::Yaml(format!("{name}: no 'problems' list")));
        };
        let p = problems
            .first()
            .ok_or_else(|| PetabError::Yaml(format!("{name}: empty 'problems'")))?;
        let sbml = files(p, "sbml_files", &name)?;
        let model = load_model(&dir.join(&sbml[0]))?;
        let parameters = read_parameters(&Tsv::read(&dir.join(&param_file))?)?;
        let mut observables = Vec::new();
        for f in files(p, "observable_files", &name)? {
            observables.extend(read_observables(&Tsv::read(&dir.join(f))?)?);
        }
        let mut conditions = HashMap::new();
        for f in files(p, "condition_files", &name)? {
            for c in read_conditions(&Tsv::read(&dir.join(f))?)? {
                conditions.insert(c.id.clone(), c);
            }
        }
        let mut measurements = Vec::new();
        for f in files(p, "measurement_files", &name)? {
            let t = Tsv::read(&dir.join(f))?;
            measurements.extend(read_measurements(&t, &observables, &conditions)?);
        }
        Ok(Problem {
            dir,
            model,
            parameters,
            observables,
            conditions,
            measurements,
        })
    }

    /// Nominal values of all parameters (linear scale), in parameter-table order.
    pub fn nominal(&self) -> Vec<f64> {
        self.parameters.iter().map(|p| p.nominal).collect()
    }
}

/// Load the SBML model; when the reader refuses it, retry once with the repairs of
/// [`crate::sbml_fix`].
fn load_model(path: &Path) -> Result<SbmlModel, PetabError> {
    let name = path.display().to_string();
    match medtwin_sbml::load_sbml(path) {
        Ok(m) => Ok(m),
        Err(first) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| PetabError::Io(format!("{name}: {e}")))?;
            let fixed = crate::sbml_fix::unwrap_grouping_applies(&text);
            if fixed == text {
                return Err(PetabError::Sbml(format!("{name}: {first}")));
            }
            medtwin_sbml::parse_sbml(&fixed)
                .map_err(|_| PetabError::Sbml(format!("{name}: {first}")))
        }
    }
}

fn read_parameters(t: &Tsv) -> Result<Vec<Parameter>, PetabError> {
    let (ci, cs, cl, cu, cn, ce) = (
        t.required("parameterId")?,
        t.required("parameterScale")?,
        t.required("lowerBound")?,
        t.required("upperBound")?,
        t.required("nominalValue")?,
        t.required("estimate")?,
    );
    let mut out = Vec::new();
    for (line, r) in &t.rows {
        let scale = match r[cs].as_str() {
            "lin" => Scale::Lin,
            "log" => Scale::Log,
            "log10" => Scale::Log10,
            s => return Err(t.error(*line, format!("parameterScale '{s}' (lin, log, log10)"))),
        };
        let estimate = match r[ce].as_str() {
            "1" => true,
            "0" => false,
            s => return Err(t.error(*line, format!("estimate '{s}' (0 or 1)"))),
        };
        let num = |c: usize, name: &str| -> Result<f64, PetabError> {
            if r[c].is_empty() {
                Ok(f64::NAN)
            } else {
                t.number(*line, name, &r[c])
            }
        };
        let p = Parameter {
            id: r[ci].clone(),
            scale,
            lower: num(cl, "lowerBound")?,
            upper: num(cu, "upperBound")?,
            nominal: num(cn, "nominalValue")?,
            estimate,
        };
        if p.nominal.is_nan() {
            return Err(t.error(*line, format!("parameter '{}' has no nominalValue", p.id)));
        }
        if estimate && (p.lower.is_nan() || p.upper.is_nan() || p.lower > p.upper) {
            return Err(t.error(
                *line,
                format!(
                    "parameter '{}': bounds missing or lowerBound > upperBound",
                    p.id
                ),
            ));
        }
        out.push(p);
    }
    Ok(out)
}

fn read_observables(t: &Tsv) -> Result<Vec<Observable>, PetabError> {
    let (ci, cf, cn) = (
        t.required("observableId")?,
        t.required("observableFormula")?,
        t.required("noiseFormula")?,
    );
    let (ct, cd) = (
        t.col("observableTransformation"),
        t.col("noiseDistribution"),
    );
    let mut out = Vec::new();
    for (line, r) in &t.rows {
        let parse = |c: usize, what: &str| {
            expr::parse(&r[c]).map_err(|e| t.error(*line, format!("{what} '{}': {e}", r[c])))
        };
        let transform = match ct.map(|c| r[c].as_str()).unwrap_or("") {
            "" | "lin" => Transform::Lin,
            "log" => Transform::Log,
            "log10" => Transform::Log10,
            s => return Err(t.error(*line, format!("observableTransformation '{s}'"))),
        };
        let noise = match cd.map(|c| r[c].as_str()).unwrap_or("") {
            "" | "normal" => Noise::Normal,
            "laplace" => Noise::Laplace,
            s => return Err(t.error(*line, format!("noiseDistribution '{s}' (normal, laplace)"))),
        };
        out.push(Observable {
            id: r[ci].clone(),
            formula: parse(cf, "observableFormula")?,
            noise_formula: parse(cn, "noiseFormula")?,
            transform,
            noise,
        });
    }
    Ok(out)
}

fn value(cell: &str) -> Value {
    match cell.parse::<f64>() {
        Ok(x) => Value::Num(x),
        Err(_) => Value::Par(cell.to_string()),
    }
}

fn read_conditions(t: &Tsv) -> Result<Vec<Condition>, PetabError> {
    let ci = t.required("conditionId")?;
    let mut out = Vec::new();
    for (_, r) in &t.rows {
        let values = t
            .header
            .iter()
            .enumerate()
            .filter(|(j, h)| *j != ci && h.as_str() != "conditionName" && !r[*j].is_empty())
            .map(|(j, h)| (h.clone(), value(&r[j])))
            .collect();
        out.push(Condition {
            id: r[ci].clone(),
            values,
        });
    }
    Ok(out)
}

fn overrides(cell: &str) -> Vec<Value> {
    if cell.is_empty() {
        return Vec::new();
    }
    cell.split(';').map(|s| value(s.trim())).collect()
}

fn read_measurements(
    t: &Tsv,
    observables: &[Observable],
    conditions: &HashMap<String, Condition>,
) -> Result<Vec<Measurement>, PetabError> {
    let (co, cs, cm, ct) = (
        t.required("observableId")?,
        t.required("simulationConditionId")?,
        t.required("measurement")?,
        t.required("time")?,
    );
    let (cp, cop, cnp) = (
        t.col("preequilibrationConditionId"),
        t.col("observableParameters"),
        t.col("noiseParameters"),
    );
    let mut out = Vec::new();
    for (line, r) in &t.rows {
        let observable = observables
            .iter()
            .position(|o| o.id == r[co])
            .ok_or_else(|| t.error(*line, format!("unknown observableId '{}'", r[co])))?;
        let preeq = cp.map(|c| r[c].clone()).filter(|s| !s.is_empty());
        for c in preeq.iter().chain(std::iter::once(&r[cs])) {
            if !conditions.contains_key(c) {
                return Err(t.error(*line, format!("unknown condition '{c}'")));
            }
        }
        let value = t.number(*line, "measurement", &r[cm])?;
        let time = t.number(*line, "time", &r[ct])?;
        if !time.is_finite() {
            return Err(t.error(
                *line,
                format!(
                    "time '{}': steady-state measurements are not supported",
                    r[ct]
                ),
            ));
        }
        if value.is_nan() {
            continue;
        }
        out.push(Measurement {
            line: *line,
            observable,
            preeq,
            sim: r[cs].clone(),
            time,
            value,
            obs_pars: cop.map(|c| overrides(&r[c])).unwrap_or_default(),
            noise_pars: cnp.map(|c| overrides(&r[c])).unwrap_or_default(),
        });
    }
    Ok(out)
}
