//! Patient-twin commands: import, twin fit / forecast / backtest / report, demo.

use crate::error::{io_fail, CliError};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use medtwin_io::{ImportReport, Record};
use medtwin_twin::backtest::BacktestOptions;
use medtwin_twin::lifecycle::{self, no_progress, Progress, Until};
use medtwin_twin::report::{twin_report, ReportOptions};
use medtwin_twin::{InputSchedule, Plan, Twin, TwinError, TwinSettings};
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum ImportCmd {
    /// Convert a T1D-UOM study folder (Glucose Data/, Insulin Data/, Nutrition Data/) for one participant.
    #[command(name = "t1d-uom")]
    T1dUom {
        /// The study folder.
        dir: PathBuf,
        /// Participant ID (e.g. 2313).
        #[arg(long)]
        participant: String,
        /// Output record CSV.
        #[arg(long)]
        out: PathBuf,
        /// Also write what the study records about the participant (id, weight, age, sex,
        /// insulin) to this patient.toml (nothing else is written unless asked; name it
        /// `patient.toml` beside the CSV for `twin` commands to read it).
        #[arg(long)]
        patient_toml: Option<PathBuf>,
    },
    /// Convert a Nightscout export (entries.json, treatments.json).
    Nightscout {
        /// entries.json (sgv/mbg).
        entries: PathBuf,
        /// treatments.json.
        treatments: PathBuf,
        /// Output record CSV.
        #[arg(long)]
        out: PathBuf,
        /// Also write the patient information to this patient.toml (the export holds none:
        /// an empty file).
        #[arg(long)]
        patient_toml: Option<PathBuf>,
        /// The patient's Nightscout profile.json (basal schedule): relative (percent) temp
        /// basals then resolve to scheduled × (100 + percent) / 100 U/h instead of being
        /// rejected.
        #[arg(long)]
        profile: Option<PathBuf>,
    },
    /// Convert a Dexcom Clarity CSV export (EGV, Insulin, Carbs, Calibration rows; local times).
    Clarity {
        /// The Clarity export (.csv).
        file: PathBuf,
        /// IANA time zone of the export's local timestamps (e.g. Europe/London).
        #[arg(long)]
        tz: String,
        /// Output record CSV.
        #[arg(long)]
        out: PathBuf,
    },
    /// Convert a Tidepool data-model JSON export (cbg, smbg, basal, bolus, food, insulin).
    Tidepool {
        /// The Tidepool export (.json).
        file: PathBuf,
        /// Output record CSV.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum TwinCmd {
    /// Calibrate a twin on a record and assimilate it up to a time; save it as JSON. Any SBML
    /// model: `twin fit MODEL.xml --data MEASUREMENTS.tsv --estimate ID[,ID…] --out twin.json`.
    Fit {
        /// Record CSV (medtwin record format), or an SBML model (.xml) for a generic twin.
        record: PathBuf,
        /// Generic twins (SBML models): data, estimated parameters, priors, noise, doses.
        #[command(flatten)]
        generic: crate::generic_twin::SpecArgs,
        /// Until: RFC 3339 time (2023-12-20T08:00:00Z), or an offset from the first CGM (36h, 5d).
        #[arg(long)]
        until: Option<String>,
        /// Output twin JSON.
        #[arg(long)]
        out: PathBuf,
        /// Particles.
        #[arg(long, default_value_t = 500)]
        particles: usize,
        /// Seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Assimilate newer data into a saved twin (the record must start where the twin's does).
    Update {
        /// Twin JSON.
        twin: PathBuf,
        /// The patient's record, now with newer data (generic twins: a PEtab measurement table).
        record: PathBuf,
        /// Generic twins: doses given since the last update (TOML, [[dose]] time, target, amount).
        #[arg(long)]
        doses: Option<PathBuf>,
        /// Until (RFC 3339 or offset from the first CGM); default: the last CGM.
        #[arg(long)]
        until: Option<String>,
        /// Output twin JSON (may be the input file).
        #[arg(long)]
        out: PathBuf,
    },
    /// Forecast from a saved twin, optionally with a planned future (TOML).
    Forecast {
        /// Twin JSON.
        twin: PathBuf,
        /// Plan TOML: [[meal]] at_min, carbs_g; [[bolus]] at_min, units; [[basal]] at_min, u_per_h (minutes after the twin's time).
        #[arg(long)]
        plan: Option<PathBuf>,
        /// Horizon, minutes (≤ 720).
        #[arg(long, default_value_t = 240)]
        horizon: u32,
        /// Generic twins: forecast until this time (model time unit).
        #[arg(long)]
        until: Option<f64>,
        /// Generic twins: time between forecast points (default: 20 points).
        #[arg(long)]
        step: Option<f64>,
        /// Output CSV.
        #[arg(long)]
        out: PathBuf,
    },
    /// Compare plans (meals, boluses, basal changes) on the same posterior, with common random numbers.
    Whatif {
        /// Twin JSON.
        twin: PathBuf,
        /// Plan TOML files (repeat); the plan's name is its file stem. An empty plan is "no action".
        #[arg(long = "plan", required = true)]
        plans: Vec<PathBuf>,
        /// Horizon, minutes (≤ 720).
        #[arg(long, default_value_t = 360)]
        horizon: u32,
        /// Generic twins: compare plans until this time (model time unit).
        #[arg(long)]
        until: Option<f64>,
        /// Generic twins: time between forecast points.
        #[arg(long)]
        step: Option<f64>,
        /// Output directory (summary.csv, <plan>.csv, <plan>.svg, index.html).
        #[arg(long)]
        out: PathBuf,
    },
    /// Recommend a meal bolus under the twin's uncertainty, beside the standard bolus calculator.
    Advise {
        /// Twin JSON.
        twin: PathBuf,
        /// Meal carbohydrate, g.
        #[arg(long)]
        carbs: f64,
        /// Minutes after the twin's time when the meal (and bolus) happen.
        #[arg(long, default_value_t = 0.0)]
        at: f64,
        /// Carbohydrate ratio, g/U (default: 500 / TDI).
        #[arg(long)]
        cr: Option<f64>,
        /// Correction factor, mg/dL per U (default: 1800 / TDI).
        #[arg(long)]
        cf: Option<f64>,
        /// Correction target, mg/dL.
        #[arg(long, default_value_t = 120.0)]
        target: f64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replay a record's meals: the twin's bolus advice vs the dose actually taken and the standard calculator.
    AdviseAudit {
        /// Record CSV.
        record: PathBuf,
        /// Output CSV (one row per audited meal).
        #[arg(long)]
        out: PathBuf,
        /// Particles.
        #[arg(long, default_value_t = 200)]
        particles: usize,
        /// Bolus grid step, U.
        #[arg(long, default_value_t = 1.0)]
        step: f64,
    },
    /// Backtest: rolling-origin forecasts scored against the recorded CGM (or, for an SBML
    /// model, against held-out measurements: --data, --origins, --window).
    Backtest {
        /// Record CSV, or an SBML model (.xml) for a generic twin.
        record: PathBuf,
        /// Generic twins: data, estimated parameters, priors, noise, doses.
        #[command(flatten)]
        generic: crate::generic_twin::SpecArgs,
        /// Generic twins: origins (model time unit).
        #[arg(long, value_delimiter = ',')]
        origins: Vec<f64>,
        /// Generic twins: forecast window after each origin (model time unit).
        #[arg(long, default_value_t = 0.0)]
        window: f64,
        /// `blind` (honest: no future inputs) or `recorded` (replay validation: the forecast is
        /// told the meals, boluses and basal changes recorded within the horizon).
        #[arg(long, default_value = "blind")]
        future_inputs: String,
        /// First origin (RFC 3339 or offset like 2d); default: after the 24 h warm-up.
        #[arg(long)]
        from: Option<String>,
        /// Last origin (RFC 3339 or offset); default: end of record.
        #[arg(long)]
        to: Option<String>,
        /// Minutes between origins.
        #[arg(long, default_value_t = 60)]
        origin_every: u32,
        /// Horizons, minutes.
        #[arg(long, value_delimiter = ',', default_value = "30,60,120")]
        horizons: Vec<u32>,
        /// Output metrics JSON.
        #[arg(long)]
        out: PathBuf,
        /// Particles.
        #[arg(long, default_value_t = 500)]
        particles: usize,
    },
    /// Self-contained HTML report (backtest, cones, posteriors) for a record.
    Report {
        /// Record CSV.
        record: PathBuf,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Days of the record to backtest after the warm-up (default: all).
        #[arg(long)]
        days: Option<f64>,
        /// Particles.
        #[arg(long, default_value_t = 500)]
        particles: usize,
    },
}

fn input_err(e: impl std::fmt::Display) -> CliError {
    CliError::input(e.to_string())
}

/// A lifecycle error: a broken twin document or a bad argument is the input's fault, the rest
/// (calibration, inference) a failure.
fn twin_err(e: TwinError) -> CliError {
    match e {
        TwinError::Document(_) | TwinError::Argument(_) => CliError::input(e.to_string()),
        _ => CliError::failure(e.to_string()),
    }
}

fn print_import_report(rep: &ImportReport) {
    for w in &rep.warnings {
        eprintln!("warning: {w}");
    }
    let n = rep.rejected.len();
    for r in rep.rejected.iter().take(20) {
        eprintln!("rejected: {r}");
    }
    if n > 20 {
        eprintln!("... and {} more rejected rows", n - 20);
    }
    let counts: Vec<String> = rep.counts.iter().map(|(k, v)| format!("{k}={v}")).collect();
    eprintln!("counts: {}", counts.join(", "));
}

fn import_notes(rep: &ImportReport) -> Vec<String> {
    let mut v: Vec<String> = rep
        .warnings
        .iter()
        .map(|w| format!("Import warning: {w}"))
        .collect();
    if !rep.rejected.is_empty() {
        v.push(format!(
            "Import: {} rows rejected (first: {})",
            rep.rejected.len(),
            rep.rejected[0]
        ));
    }
    v
}

pub fn import(c: ImportCmd) -> Result<(), CliError> {
    let (rec, rep, out, toml) = match c {
        ImportCmd::T1dUom {
            dir,
            participant,
            out,
            patient_toml,
        } => {
            let (r, rep) = medtwin_io::import_t1d_uom(&dir, &participant).map_err(input_err)?;
            (r, rep, out, patient_toml)
        }
        ImportCmd::Nightscout {
            entries,
            treatments,
            out,
            patient_toml,
            profile,
        } => {
            let (r, rep) = medtwin_io::import_nightscout_with_profile(
                &entries,
                &treatments,
                profile.as_deref(),
            )
            .map_err(input_err)?;
            (r, rep, out, patient_toml)
        }
        ImportCmd::Clarity { file, tz, out } => {
            let zone = jiff::tz::TimeZone::get(&tz)
                .map_err(|e| CliError::input(format!("--tz {tz}: not an IANA time zone ({e})")))?;
            let (r, rep) =
                medtwin_io::clarity::import_clarity_csv(&file, &zone).map_err(input_err)?;
            (r, rep, out, None)
        }
        ImportCmd::Tidepool { file, out } => {
            let (r, rep) = medtwin_io::tidepool::import_tidepool_json(&file).map_err(input_err)?;
            (r, rep, out, None)
        }
    };
    print_import_report(&rep);
    medtwin_io::write_record_csv(&rec, &out).map_err(|e| CliError::failure(e.to_string()))?;
    eprintln!("wrote {} entries to {}", rec.entries.len(), out.display());
    // Only the files asked for: a patient.toml only with --patient-toml.
    if let Some(toml) = toml {
        medtwin_io::write_patient_toml(&rec.patient, &toml)
            .map_err(|e| CliError::failure(e.to_string()))?;
        eprintln!("wrote the patient information to {}", toml.display());
    }
    Ok(())
}

fn read_record(path: &Path) -> Result<(Record, ImportReport), CliError> {
    let (rec, rep) = medtwin_io::read_record_csv(path).map_err(input_err)?;
    print_import_report(&rep);
    if rec.count_of(medtwin_io::RecordKind::Cgm) == 0 {
        return Err(CliError::input(format!(
            "{}: the record has no CGM readings",
            path.display()
        )));
    }
    Ok((rec, rep))
}

/// Parse a time argument: RFC 3339, or an offset (`90m`, `36h`, `5d`) from the schedule origin.
/// Returns minutes from the origin.
fn parse_time(arg: &str, what: &str, sched: &InputSchedule) -> Result<f64, CliError> {
    let s = arg.trim();
    let off = |num: &str, mult: f64| {
        num.parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .map(|v| v * mult)
    };
    let rel = if let Some(n) = s.strip_suffix('d') {
        off(n, 1440.0)
    } else if let Some(n) = s.strip_suffix('h') {
        off(n, 60.0)
    } else if let Some(n) = s.strip_suffix('m') {
        off(n, 1.0)
    } else {
        None
    };
    if let Some(v) = rel {
        return Ok(v);
    }
    let ts: jiff::Timestamp = s.parse().map_err(|e| {
        CliError::input(format!("--{what} '{arg}': not an RFC 3339 time (e.g. 2023-12-20T08:00:00Z) nor an offset like 36h or 5d: {e}"))
    })?;
    let origin = sched
        .origin()
        .ok_or_else(|| CliError::failure("record origin is not a valid time"))?;
    Ok((ts.as_second() - origin.as_second()) as f64 / 60.0)
}

fn bar(len: u64, msg: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(msg.to_string());
    pb
}

fn write_json(path: &Path, v: &impl serde::Serialize) -> Result<(), CliError> {
    let s = serde_json::to_string_pretty(v).map_err(|e| CliError::failure(e.to_string()))?;
    std::fs::write(path, s).map_err(|e| io_fail(path, e))
}

/// Refuse an insulin question (a plan with a bolus or basal change, or bolus advice) on a twin
/// whose record holds no insulin at all: its response to insulin was never observed, so any
/// answer would be the population prior's, presented as this person's.
fn require_insulin_data(schedule: &InputSchedule, what: &str) -> Result<(), CliError> {
    medtwin_twin::decide::require_insulin_data(schedule, what).map_err(CliError::input)
}

/// Read a plan TOML ([`medtwin_twin::RelativePlan`]); times are minutes after `t0`. Errors
/// name the file, entry and value.
fn read_plan(path: &Path, t0: f64, horizon: u32) -> Result<Plan, CliError> {
    let f = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::input(format!("{f}: cannot read: {e}")))?;
    let p: medtwin_twin::RelativePlan =
        toml::from_str(&text).map_err(|e| CliError::input(format!("{f}: {}", e.message())))?;
    p.to_plan(t0, horizon)
        .map_err(|e| CliError::input(format!("{f}: {e}")))
}

/// One CSV row of forecast bands: `t_min,median,lo50,hi50,lo80,hi80,lo95,hi95` (mg/dL).
fn band_row(t_min: f64, b: &medtwin_infer::Bands) -> String {
    format!(
        "{t_min:.0},{:.2},{:.2},{:.2},{:.2},{:.2},{:.2},{:.2}",
        b.median, b.lo50, b.hi50, b.lo80, b.hi80, b.lo95, b.hi95
    )
}

/// Per-horizon scores in order of minutes (the map's keys are strings: "120" sorts before "30").
/// Print the Brier scores of a backtest's risk forecasts.
fn print_risk(r: &medtwin_twin::RiskScore) {
    for (name, e) in [("P(< 70)", &r.below_70), ("P(> 250)", &r.above_250)] {
        println!(
            "{name} within {} min: Brier {:.3} (base-rate forecast {:.3}, skill {:.2}), mean forecast {:.3} vs observed {:.3}, n {}",
            r.horizon_min, e.brier, e.brier_base_rate, e.brier_skill, e.mean_predicted, e.base_rate, e.n
        );
    }
}

fn by_minutes<T>(m: &std::collections::BTreeMap<String, T>) -> Vec<(&String, &T)> {
    let mut v: Vec<(&String, &T)> = m.iter().collect();
    v.sort_by_key(|(h, _)| h.parse::<u32>().unwrap_or(u32::MAX));
    v
}

/// Whether a positional model/record argument is an SBML model (generic twin).
fn is_sbml(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("xml") || e.eq_ignore_ascii_case("sbml"))
}

fn read_twin(path: &Path) -> Result<Twin, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::input(format!("{}: {e}", path.display())))?;
    serde_json::from_str(&text)
        .map_err(|e| CliError::input(format!("{}: not a twin document: {e}", path.display())))
}

pub fn twin(c: TwinCmd) -> Result<(), CliError> {
    match c {
        TwinCmd::Fit {
            record,
            generic,
            out,
            ..
        } if is_sbml(&record) => crate::generic_twin::fit(&record, &generic, &out),
        TwinCmd::Fit {
            record,
            until,
            out,
            particles,
            seed,
            ..
        } => {
            let (rec, _) = read_record(&record)?;
            let sched = InputSchedule::from_record(&rec)
                .ok_or_else(|| CliError::input("record has no CGM"))?;
            let until_min = match until {
                Some(u) => parse_time(&u, "until", &sched)?,
                None => sched.last_cgm_min(),
            };
            if particles == 0 {
                return Err(CliError::input("--particles must be >= 1"));
            }
            let settings = TwinSettings {
                n_particles: particles,
                seed,
                ..TwinSettings::default()
            };
            if until_min < settings.calibration_window_min {
                return Err(CliError::input(format!(
                    "--until is {until_min:.0} min after the first CGM; the twin needs at least the {} min calibration window",
                    settings.calibration_window_min
                )));
            }
            let mut pb: Option<ProgressBar> = None;
            let (twin, _) = lifecycle::fit(
                &sched,
                settings,
                Until::Minute(until_min),
                lifecycle::CLI_FIT_STOP_MIN,
                rec.patient.id.clone(),
                &mut |p| match p {
                    Progress::Calibrated(cal) => {
                        eprintln!(
                            "calibration: MAP RMSE {:.1} mg/dL (prior {:.1}), converged {}, insulin scale {:.2}",
                            cal.rmse_mg_dl, cal.prior_rmse_mg_dl, cal.converged, cal.insulin_scale
                        );
                        for d in &cal.diagnostics {
                            eprintln!("calibration diagnostic: {d}");
                        }
                    }
                    Progress::Assimilating { done, total } => pb
                        .get_or_insert_with(|| bar(total.max(1) as u64, "assimilate"))
                        .set_position(done as u64),
                },
            )
            .map_err(|e| CliError::failure(e.to_string()))?;
            if let Some(p) = pb {
                p.finish_and_clear();
            }
            write_json(&out, &twin)?;
            eprintln!(
                "twin at t = {:.0} min ({} particles) written to {}",
                twin.t_min,
                twin.particles.len(),
                out.display()
            );
            Ok(())
        }
        TwinCmd::Update {
            twin,
            record,
            doses,
            out,
            ..
        } if crate::generic_twin::is_generic_twin(&twin) => {
            crate::generic_twin::update(&twin, &record, doses.as_deref(), &out)
        }
        TwinCmd::Update {
            twin,
            record,
            until,
            out,
            ..
        } => {
            let doc = read_twin(&twin)?;
            let (rec, _) = read_record(&record)?;
            let sched = InputSchedule::from_record(&rec)
                .ok_or_else(|| CliError::input("record has no CGM"))?;
            let until_min = match until {
                Some(u) => parse_time(&u, "until", &sched)?,
                None => sched.last_cgm_min(),
            };
            if until_min < doc.t_min {
                return Err(CliError::input(format!(
                    "--until ({until_min:.0} min) is before the twin's time ({:.0} min)",
                    doc.t_min
                )));
            }
            // One filter stop at the end (as every `twin update` so far).
            let (updated, done) = lifecycle::update(
                &doc,
                &sched,
                Until::Minute(until_min),
                f64::INFINITY,
                &mut no_progress,
            )
            .map_err(|e| match e {
                TwinError::Argument(m) => CliError::input(format!("{}: {m}", record.display())),
                e => twin_err(e),
            })?;
            write_json(&out, &updated)?;
            eprintln!(
                "assimilated {} new CGM readings: twin now at t = {:.0} min",
                done.readings, updated.t_min
            );
            Ok(())
        }
        TwinCmd::AdviseAudit {
            record,
            out,
            particles,
            step,
        } => {
            if particles == 0 || !(step > 0.0 && step.is_finite()) {
                return Err(CliError::input("--particles and --step must be positive"));
            }
            let (rec, _) = read_record(&record)?;
            let sched = InputSchedule::from_record(&rec)
                .ok_or_else(|| CliError::input("record has no CGM"))?;
            let settings = TwinSettings {
                n_particles: particles,
                ..TwinSettings::default()
            };
            let mut pb: Option<ProgressBar> = None;
            let a = medtwin_twin::decide::audit_advice(&sched, settings, step, &mut |d, n| {
                pb.get_or_insert_with(|| bar(n as u64, "meals"))
                    .set_position(d as u64);
            })
            .map_err(|e| CliError::failure(e.to_string()))?;
            if let Some(p) = pb {
                p.finish_and_clear();
            }
            let mut lines = vec![
                "time_utc,t_min,carbs_g,taken_u,advised_u,standard_u,cr_g_per_u,cgm_mg_dl,cgm_trend_mg_dl_per_min,p_below_70_no_bolus,p_below_70_advised,constraint_met,refused,reason"
                    .to_string(),
            ];
            for r in &a.rows {
                lines.push(format!(
                    "{},{:.0},{:.1},{:.2},{:.2},{:.2},{:.2},{:.0},{:.2},{:.3},{:.3},{},{},\"{}\"",
                    r.time_utc,
                    r.t_min,
                    r.carbs_g,
                    r.taken_u,
                    r.advised_u,
                    r.standard_u,
                    r.cr_g_per_u,
                    r.cgm_mg_dl,
                    r.cgm_trend_mg_dl_per_min,
                    r.p_below_70_no_bolus,
                    r.p_below_70_advised,
                    r.constraint_met,
                    r.refused,
                    r.reason.replace('"', "\"\"")
                ));
            }
            std::fs::write(&out, lines.join("\n") + "\n").map_err(|e| io_fail(&out, e))?;
            println!(
                "{} meals: advice differs from the dose taken by > 1 U in {:.0} % (mean |diff| {:.2} U, mean diff {:+.2} U); standard calculator mean |diff| {:.2} U; refused {:.0} %; P(<70) above the limit even with the advice (refusals, and 0 U for low or falling glucose) {:.0} %; 0 U for meals >= {:.0} g: {}",
                a.n_meals,
                100.0 * a.frac_differs_gt_1u,
                a.mean_abs_diff_u,
                a.mean_diff_u,
                a.standard_mean_abs_diff_u,
                100.0 * a.frac_refused,
                100.0 * a.frac_constraint_unmet,
                medtwin_twin::decide::MEAL_NEEDS_BOLUS_G,
                a.n_zero_advice_large_meals
            );
            Ok(())
        }
        TwinCmd::Whatif {
            twin,
            plans,
            until,
            step,
            out,
            ..
        } if crate::generic_twin::is_generic_twin(&twin) => {
            crate::generic_twin::whatif(&twin, &plans, until, step, &out)
        }
        TwinCmd::Whatif {
            twin,
            plans,
            horizon,
            out,
            ..
        } => whatif_cmd(&twin, &plans, horizon, &out),
        TwinCmd::Advise {
            twin,
            carbs,
            at,
            cr,
            cf,
            target,
            json,
        } => advise_cmd(&twin, carbs, at, cr, cf, target, json),
        TwinCmd::Forecast {
            twin,
            plan,
            until,
            step,
            out,
            ..
        } if crate::generic_twin::is_generic_twin(&twin) => {
            crate::generic_twin::forecast(&twin, plan.as_deref(), until, step, &out)
        }
        TwinCmd::Forecast {
            twin,
            plan,
            horizon,
            out,
            ..
        } => {
            if horizon == 0 || horizon > 720 {
                return Err(CliError::input(format!(
                    "--horizon {horizon} must be in 1..=720 minutes"
                )));
            }
            let doc = read_twin(&twin)?;
            let plan = match plan {
                Some(p) => Some(read_plan(&p, doc.t_min, horizon)?),
                None => None,
            };
            if plan
                .as_ref()
                .is_some_and(|p| !p.boluses.is_empty() || !p.basal_rates.is_empty())
            {
                require_insulin_data(&doc.schedule, "forecast with an insulin plan")?;
            }
            let f = lifecycle::forecast(&doc, horizon, plan.as_ref()).map_err(twin_err)?;
            let origin = doc.schedule.origin();
            let mut lines = vec!["time,t_min,median_mg_dl,lo50_mg_dl,hi50_mg_dl,lo80_mg_dl,hi80_mg_dl,lo95_mg_dl,hi95_mg_dl".to_string()];
            for (t, b) in f.t_min.iter().zip(&f.bands) {
                let time = origin
                    .and_then(|o| {
                        jiff::Timestamp::from_second(o.as_second() + (*t as i64) * 60).ok()
                    })
                    .map(|ts| ts.to_string())
                    .unwrap_or_default();
                lines.push(format!("{time},{}", band_row(t - doc.t_min, b)));
            }
            std::fs::write(&out, lines.join("\n") + "\n").map_err(|e| io_fail(&out, e))?;
            println!(
                "P(glucose < 70 mg/dL within {horizon} min) = {:.3}",
                f.p_below
            );
            println!(
                "P(glucose > 250 mg/dL within {horizon} min) = {:.3}",
                f.p_above
            );
            Ok(())
        }
        TwinCmd::Backtest {
            record,
            generic,
            origins,
            window,
            out,
            ..
        } if is_sbml(&record) => {
            crate::generic_twin::backtest_cmd(&record, &generic, &origins, window, &out)
        }
        TwinCmd::Backtest {
            record,
            from,
            to,
            origin_every,
            horizons,
            out,
            particles,
            future_inputs,
            ..
        } => {
            let future_inputs_recorded = match future_inputs.as_str() {
                "blind" => false,
                "recorded" => true,
                other => {
                    return Err(CliError::input(format!(
                        "--future-inputs '{other}': expected blind or recorded"
                    )))
                }
            };
            let (rec, _) = read_record(&record)?;
            let sched = InputSchedule::from_record(&rec)
                .ok_or_else(|| CliError::input("record has no CGM"))?;
            if horizons.is_empty() || horizons.iter().any(|&h| h == 0 || h > 720) {
                return Err(CliError::input("--horizons must be 1..=720 minutes each"));
            }
            if origin_every == 0 {
                return Err(CliError::input("--origin-every must be >= 1"));
            }
            let from_min = match from {
                Some(f) => parse_time(&f, "from", &sched)?,
                None => 0.0,
            };
            let to_min = match to {
                Some(t) => parse_time(&t, "to", &sched)?,
                None => f64::INFINITY,
            };
            let opts = BacktestOptions {
                future_inputs_recorded,
                from_min,
                to_min,
                origin_every_min: origin_every as f64,
                horizons_min: horizons,
                settings: TwinSettings {
                    n_particles: particles.max(1),
                    ..TwinSettings::default()
                },
                n_cones: 0,
                cone_horizon_min: 0,
            };
            let mut pb: Option<ProgressBar> = None;
            let (r, _) = lifecycle::backtest(&sched, &opts, None, &mut |d, n| {
                let p = pb.get_or_insert_with(|| bar(n as u64, "backtest"));
                p.set_position(d as u64);
            })
            .map_err(|e| CliError::failure(e.to_string()))?;
            if let Some(p) = pb {
                p.finish_and_clear();
            }
            write_json(&out, &r)?;
            for (h, s) in by_minutes(&r.horizons) {
                println!(
                    "h={h:>3} min: RMSE {:.1} (persistence {:.1}, ratio {:.3}), MAE {:.1}, coverage80 {:.3}, coverage95 {:.3}, width80 {:.1}, n {}",
                    s.rmse_mg_dl,
                    s.persistence_rmse_mg_dl,
                    s.rmse_mg_dl / s.persistence_rmse_mg_dl,
                    s.mae_mg_dl,
                    s.coverage_80,
                    s.coverage_95,
                    s.mean_width_80_mg_dl,
                    s.n
                );
            }
            print_risk(&r.risk);
            eprintln!(
                "{} origins in {:.1} s; mean assimilation update {:.2} ms",
                r.n_origins, r.wall_s, r.mean_update_ms
            );
            Ok(())
        }
        TwinCmd::Report {
            record,
            out,
            days,
            particles,
        } => {
            let (rec, rep) = read_record(&record)?;
            let id = rec
                .patient
                .id
                .clone()
                .unwrap_or_else(|| record.display().to_string());
            report(&rec, &rep, &out, days, particles, &id, "")
        }
    }
}

fn report(
    rec: &Record,
    rep: &ImportReport,
    out: &Path,
    days: Option<f64>,
    particles: usize,
    id: &str,
    citation: &str,
) -> Result<(), CliError> {
    if particles == 0 || days.is_some_and(|d| d.is_nan() || d <= 0.0) {
        return Err(CliError::input("--particles and --days must be positive"));
    }
    let settings = TwinSettings {
        n_particles: particles,
        ..TwinSettings::default()
    };
    let origin_label = InputSchedule::from_record(rec)
        .and_then(|s| s.origin())
        .map(|o| {
            o.to_zoned(jiff::tz::TimeZone::UTC)
                .strftime("%Y-%m-%d %H:%M UTC")
                .to_string()
        })
        .unwrap_or_default();
    let opts = ReportOptions {
        backtest: BacktestOptions {
            future_inputs_recorded: false,
            from_min: 0.0,
            to_min: days
                .map(|d| settings.calibration_window_min + d * 1440.0)
                .unwrap_or(f64::INFINITY),
            origin_every_min: 60.0,
            horizons_min: vec![30, 60, 120],
            settings,
            n_cones: 8,
            cone_horizon_min: 240,
        },
        narrowing_days: vec![1.0, 3.0, 7.0, 14.0],
        learning_eval_days: 2.0,
        patient_id: id.to_string(),
        citation: citation.to_string(),
        import_notes: import_notes(rep),
        origin_label,
    };
    std::fs::create_dir_all(out).map_err(|e| io_fail(out, e))?;
    let mut current: Option<(String, ProgressBar)> = None;
    let result = twin_report(rec, &opts, &mut |stage, d, n| {
        if current.as_ref().map(|c| c.0.as_str()) != Some(stage) {
            if let Some((_, p)) = current.take() {
                p.finish_and_clear();
            }
            current = Some((stage.to_string(), bar(n as u64, stage)));
        }
        if let Some((_, p)) = &current {
            p.set_position(d as u64);
        }
    })
    .map_err(|e| CliError::failure(e.to_string()))?;
    if let Some((_, p)) = current {
        p.finish_and_clear();
    }
    let index = medtwin_report::write_twin_report(&result.report, out)
        .map_err(|e| CliError::failure(e.to_string()))?;
    write_json(&out.join("metrics.json"), &result.backtest)?;
    write_json(&out.join("twin.json"), &result.twin)?;
    for (h, s) in by_minutes(&result.backtest.horizons) {
        println!(
            "h={h:>3} min: RMSE {:.1} mg/dL (persistence {:.1}), coverage80 {:.2}, coverage95 {:.2}, n {}",
            s.rmse_mg_dl, s.persistence_rmse_mg_dl, s.coverage_80, s.coverage_95, s.n
        );
    }
    print_risk(&result.backtest.risk);
    println!("report: {}", index.display());
    Ok(())
}

/// Locate the bundled demo data: `tests/data/t1d-uom` under the working directory, else under
/// the source tree the binary was built from.
fn demo_data_dir() -> Option<PathBuf> {
    let here = PathBuf::from("tests/data/t1d-uom");
    if here.is_dir() {
        return Some(here);
    }
    let built = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/t1d-uom");
    built.is_dir().then_some(built)
}

/// The bundled demo participant.
pub const DEMO_PARTICIPANT: &str = "2313";

pub fn demo(out: &Path, days: u64, particles: usize) -> Result<(), CliError> {
    let dir = demo_data_dir().ok_or_else(|| {
        CliError::input(
            "bundled demo data tests/data/t1d-uom not found: run from the repository root",
        )
    })?;
    eprintln!("medtwin demo: T1D-UOM participant {DEMO_PARTICIPANT} (bundled, CC BY 4.0)");
    let (rec, rep) = medtwin_io::import_t1d_uom(&dir, DEMO_PARTICIPANT).map_err(input_err)?;
    print_import_report(&rep);
    std::fs::create_dir_all(out).map_err(|e| io_fail(out, e))?;
    medtwin_io::write_record_csv(&rec, &out.join("record.csv"))
        .map_err(|e| CliError::failure(e.to_string()))?;
    report(
        &rec,
        &rep,
        out,
        Some(days as f64),
        particles,
        &format!("T1D-UOM {DEMO_PARTICIPANT}"),
        medtwin_io::T1D_UOM_CITATION,
    )
}

fn whatif_cmd(
    twin: &Path,
    plan_files: &[PathBuf],
    horizon: u32,
    out: &Path,
) -> Result<(), CliError> {
    if horizon == 0 || horizon > 720 {
        return Err(CliError::input(format!(
            "--horizon {horizon} must be in 1..=720 minutes"
        )));
    }
    let doc = read_twin(twin)?;
    let mut plans = Vec::new();
    for p in plan_files {
        let name = p
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "plan".into());
        if plans.iter().any(|(n, _): &(String, Plan)| n == &name) {
            return Err(CliError::input(format!(
                "{}: two plans are named '{name}'",
                p.display()
            )));
        }
        plans.push((name, read_plan(p, doc.t_min, horizon)?));
    }
    if plans
        .iter()
        .any(|(_, p)| !p.boluses.is_empty() || !p.basal_rates.is_empty())
    {
        require_insulin_data(&doc.schedule, "what-if with an insulin plan")?;
    }
    let outcomes = lifecycle::whatif(&doc, &plans, horizon).map_err(twin_err)?;
    std::fs::create_dir_all(out).map_err(|e| io_fail(out, e))?;
    let mut summary = vec!["plan,p_below_70,p_below_54,p_above_250,expected_tir_pct,expected_risk_index,median_end_mg_dl,lo80_end_mg_dl,hi80_end_mg_dl".to_string()];
    let hist_from = doc.t_min - 180.0;
    let cgm = medtwin_report::Series {
        t_min: doc
            .schedule
            .cgm
            .iter()
            .filter(|c| c.0 >= hist_from)
            .map(|c| c.0)
            .collect(),
        values: doc
            .schedule
            .cgm
            .iter()
            .filter(|c| c.0 >= hist_from)
            .map(|c| c.1)
            .collect(),
    };
    let mut html = String::from("<!doctype html><html><head><meta charset=\"utf-8\"><title>medtwin what-if</title></head><body style=\"font-family:sans-serif\"><h1>What-if comparison</h1><table border=\"1\" cellpadding=\"4\" style=\"border-collapse:collapse\"><tr><th>plan</th><th>P(&lt;70)</th><th>P(&lt;54)</th><th>P(&gt;250)</th><th>expected TIR %</th><th>expected risk index</th></tr>");
    let mut figs = String::from("<div style=\"display:flex;flex-wrap:wrap\">");
    for o in &outcomes {
        let end = o.bands.last().copied();
        summary.push(format!(
            "{},{:.4},{:.4},{:.4},{:.2},{:.3},{:.1},{:.1},{:.1}",
            o.name,
            o.p_below_70,
            o.p_below_54,
            o.p_above_250,
            o.expected_tir_pct,
            o.expected_risk_index,
            end.map(|b| b.median).unwrap_or(f64::NAN),
            end.map(|b| b.lo80).unwrap_or(f64::NAN),
            end.map(|b| b.hi80).unwrap_or(f64::NAN)
        ));
        let mut rows = vec![
            "t_min,median_mg_dl,lo50_mg_dl,hi50_mg_dl,lo80_mg_dl,hi80_mg_dl,lo95_mg_dl,hi95_mg_dl"
                .to_string(),
        ];
        for (t, b) in o.t_min.iter().zip(&o.bands) {
            rows.push(band_row(t - doc.t_min, b));
        }
        let csv = out.join(format!("{}.csv", o.name));
        std::fs::write(&csv, rows.join("\n") + "\n").map_err(|e| io_fail(&csv, e))?;
        let cone = medtwin_twin::report::cone_from_bands(
            doc.t_min,
            &o.t_min,
            &o.bands,
            o.p_below_70,
            o.p_above_250,
        );
        let svg = medtwin_report::cone_plot_svg(
            &cgm,
            &[cone],
            hist_from,
            doc.t_min + horizon as f64,
            &format!("plan: {}", o.name),
        )
        .map_err(|e| CliError::failure(e.to_string()))?;
        let svg_path = out.join(format!("{}.svg", o.name));
        std::fs::write(&svg_path, &svg).map_err(|e| io_fail(&svg_path, e))?;
        html.push_str(&format!(
            "<tr><td>{}</td><td>{:.1} %</td><td>{:.1} %</td><td>{:.1} %</td><td>{:.1}</td><td>{:.2}</td></tr>",
            medtwin_report::html_escape(&o.name),
            100.0 * o.p_below_70,
            100.0 * o.p_below_54,
            100.0 * o.p_above_250,
            o.expected_tir_pct,
            o.expected_risk_index
        ));
        figs.push_str(&format!(
            "<div style=\"width:48%;min-width:420px\">{svg}</div>"
        ));
        println!(
            "{:<20} P(<70) {:5.1} %  P(<54) {:5.1} %  P(>250) {:5.1} %  E[TIR] {:5.1} %  E[risk] {:6.2}",
            o.name,
            100.0 * o.p_below_70,
            100.0 * o.p_below_54,
            100.0 * o.p_above_250,
            o.expected_tir_pct,
            o.expected_risk_index
        );
    }
    html.push_str("</table>");
    html.push_str(&figs);
    html.push_str("</div><p>All plans were simulated on the same posterior ensemble with common random numbers.</p></body></html>");
    let sp = out.join("summary.csv");
    std::fs::write(&sp, summary.join("\n") + "\n").map_err(|e| io_fail(&sp, e))?;
    let hp = out.join("index.html");
    std::fs::write(&hp, html).map_err(|e| io_fail(&hp, e))?;
    Ok(())
}

fn advise_cmd(
    twin: &Path,
    carbs: f64,
    at: f64,
    cr: Option<f64>,
    cf: Option<f64>,
    target: f64,
    json: bool,
) -> Result<(), CliError> {
    let request = medtwin_twin::decide::AdviceRequest {
        carbs_g: carbs,
        at_min: at,
        cr_g_per_u: cr,
        cf_mg_dl_per_u: cf,
        target_mg_dl: target,
    };
    // the request's own errors first, before the twin file is read
    request.check().map_err(CliError::input)?;
    let doc = read_twin(twin)?;
    require_insulin_data(&doc.schedule, "bolus advice")?;
    let s = request
        .settings(doc.calibration.window_tdi_u_per_day)
        .map_err(CliError::input)?;
    let a = lifecycle::advise(&doc, carbs, at, &s).map_err(twin_err)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&a).map_err(|e| CliError::failure(e.to_string()))?
        );
        return Ok(());
    }
    println!(
        "meal {carbs:.0} g at +{at:.0} min; CGM {:.0} mg/dL; insulin on board {:.2} U",
        a.cgm_mg_dl, a.iob_u
    );
    println!(
        "settings: CR {:.1} g/U, CF {:.1} mg/dL/U, target {:.0} mg/dL",
        s.cr_g_per_u, s.cf_mg_dl_per_u, s.target_mg_dl
    );
    if let Some(why) = &a.refusal {
        println!("ADVICE REFUSED: {why}");
    } else {
        println!("why: {}", a.reason);
    }
    let mut rows = vec![("standard calculator", a.standard_bolus_u, &a.standard)];
    if a.refusal.is_none() {
        rows.insert(0, ("twin advice", a.recommended_bolus_u, &a.recommended));
    }
    for (label, b, o) in rows {
        let end = o.bands.last().copied();
        println!(
            "{label:<20} {b:5.1} U  P(<70) {:5.1} %  P(<54) {:5.1} %  P(>250) {:5.1} %  E[TIR] {:5.1} %  E[risk] {:6.2}  4-h median {:.0} [80 %: {:.0}–{:.0}]",
            100.0 * o.p_below_70,
            100.0 * o.p_below_54,
            100.0 * o.p_above_250,
            o.expected_tir_pct,
            o.expected_risk_index,
            end.map(|b| b.median).unwrap_or(f64::NAN),
            end.map(|b| b.lo80).unwrap_or(f64::NAN),
            end.map(|b| b.hi80).unwrap_or(f64::NAN)
        );
    }
    Ok(())
}
