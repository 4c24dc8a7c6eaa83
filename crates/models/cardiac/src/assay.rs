//! The CiPA in-silico assay (Dutta et al. 2017; FDA/CiPA `AP_simulation.R`): for each dose, pace
//! the IKr-dynamic ORd cell at a 2000 ms cycle length for 1000 beats from the control steady
//! state, analyse the last 250 beats with the reference metrics, keep the beat with the largest
//! dV/dt between 30 % repolarisation and APD90, and report its qNet (∫ INaL + ICaL + Ito + IKr +
//! IKs + IK1 over the beat, nC/µF), APD90, APD50 and whether any analysed beat had an EAD.

use crate::drug::Drug;
use crate::error::CardiacError;
use crate::metrics::{beat_metrics, sample_grid, select_beat, BeatMetrics};
use crate::model::{OrdParams, INITIAL_STATE_CL2000, N_STATES};
use crate::solver::{Integrator, SolverOptions};
use rayon::prelude::*;

/// Pacing protocol and integrator settings.
#[derive(Clone, Debug)]
pub struct AssayOptions {
    /// Beats paced per dose (reference: 1000).
    pub beats: usize,
    /// Final beats analysed for the beat selection (reference: 250).
    pub analysed_beats: usize,
    /// Cycle length, ms (reference: 2000; must be a whole number of ms).
    pub bcl_ms: usize,
    /// Integrator tolerances.
    pub solver: SolverOptions,
    /// State at the start of the first beat (reference: the control CL2000 steady state).
    pub initial: [f64; N_STATES],
}

impl Default for AssayOptions {
    fn default() -> Self {
        AssayOptions {
            beats: 1000,
            analysed_beats: 250,
            bcl_ms: 2000,
            solver: SolverOptions::default(),
            initial: INITIAL_STATE_CL2000,
        }
    }
}

/// Outcome of one dose (or the control).
#[derive(Clone, Debug)]
pub struct DoseResult {
    /// Drug name ("control" for the control row).
    pub drug: String,
    /// Dose, multiple of Cmax (0 for the control).
    pub dose_x_cmax: f64,
    /// Free concentration, nM.
    pub conc_nm: f64,
    /// qNet of the selected beat, nC/µF.
    pub qnet_nc_per_uf: f64,
    /// APD90 of the selected beat, ms (`None`: not repolarised).
    pub apd90_ms: Option<f64>,
    /// APD50 of the selected beat, ms.
    pub apd50_ms: Option<f64>,
    /// Analysed beats with an EAD (`max_dv > 0`).
    pub ead_beats: usize,
    /// Analysed beats without an analysis window (depolarisation failure).
    pub no_depol_beats: usize,
    /// Analysed beats without APD90 (repolarisation failure).
    pub no_repol_beats: usize,
    /// 1-based number of the selected beat.
    pub selected_beat: usize,
    /// Metrics of the selected beat.
    pub metrics: BeatMetrics,
    /// Membrane potential of the selected beat on the 1-ms grid, mV (`bcl_ms + 1` values).
    pub trace_v_mv: Vec<f64>,
    /// Mean accepted integrator steps per beat.
    pub steps_per_beat: f64,
    /// State at the start of the selected beat.
    pub selected_state: [f64; N_STATES],
}

impl DoseResult {
    /// Whether any analysed beat showed an early afterdepolarisation.
    pub fn ead(&self) -> bool {
        self.ead_beats > 0
    }
}

/// One beat's qNet and metrics with its grid trace.
struct AnalysedBeat {
    qnet: f64,
    metrics: BeatMetrics,
    v: Vec<f64>,
    start: [f64; N_STATES],
}

/// Pace `params` for `opts.beats` beats and apply the reference's analysis and beat selection.
/// `label`/`dose_x_cmax` only name the result (and errors).
pub fn run_params(
    params: OrdParams,
    label: &str,
    dose_x_cmax: f64,
    opts: &AssayOptions,
) -> Result<DoseResult, CardiacError> {
    let conc_nm = params.drug_nm;
    let mut integ = Integrator::new(params, opts.solver);
    let mut y = opts.initial;
    let first_analysed = opts.beats.saturating_sub(opts.analysed_beats);
    let mut analysed: Vec<BeatMetrics> = Vec::with_capacity(opts.analysed_beats);
    let mut best: Option<(usize, AnalysedBeat)> = None;
    let mut best_dv = f64::NEG_INFINITY;
    let mut steps = 0usize;
    for beat in 0..opts.beats {
        let record = beat >= first_analysed;
        let start = y;
        let out = integ
            .beat(&mut y, opts.bcl_ms as f64, record)
            .map_err(|f| CardiacError::Solver {
                drug: label.to_string(),
                dose_x_cmax,
                beat: beat + 1,
                t_ms: f.t_ms,
            })?;
        steps += out.steps;
        if !record {
            continue;
        }
        let (v, dv) = sample_grid(&out.trace, opts.bcl_ms);
        let m = beat_metrics(&v, &dv);
        analysed.push(m);
        // keep the running choice of the selection rule (first largest max_dv, else last beat)
        let candidate = match m.max_dv_mv_per_ms {
            Some(d) if d > best_dv => {
                best_dv = d;
                true
            }
            _ => best_dv == f64::NEG_INFINITY,
        };
        if candidate {
            best = Some((
                beat + 1,
                AnalysedBeat {
                    qnet: out.qnet_nc_per_uf,
                    metrics: m,
                    v,
                    start,
                },
            ));
        }
    }
    let sel = select_beat(&analysed);
    let (selected_beat, b) = best.expect("at least one analysed beat");
    debug_assert_eq!(selected_beat, first_analysed + sel.keep + 1);
    Ok(DoseResult {
        drug: label.to_string(),
        dose_x_cmax,
        conc_nm,
        qnet_nc_per_uf: b.qnet,
        apd90_ms: b.metrics.apd90_ms,
        apd50_ms: b.metrics.apd50_ms,
        ead_beats: sel.ead_beats,
        no_depol_beats: sel.no_depol_beats,
        no_repol_beats: sel.no_repol_beats,
        selected_beat,
        metrics: b.metrics,
        trace_v_mv: b.v,
        steps_per_beat: steps as f64 / opts.beats.max(1) as f64,
        selected_state: b.start,
    })
}

/// Run one dose of `drug` (`None` = control; the dose is then ignored).
pub fn run_dose(
    drug: Option<&Drug>,
    dose_x_cmax: f64,
    opts: &AssayOptions,
) -> Result<DoseResult, CardiacError> {
    if !dose_x_cmax.is_finite() || dose_x_cmax < 0.0 {
        return Err(CardiacError::InvalidDose { value: dose_x_cmax });
    }
    match drug {
        None => run_params(OrdParams::control(), "control", 0.0, opts),
        Some(d) => run_params(
            d.params_at(dose_x_cmax * d.cmax_nm),
            &d.name,
            dose_x_cmax,
            opts,
        ),
    }
}

/// The control and every dose of `drug`, in parallel on the rayon pool; control first.
pub fn run_assay(
    drug: &Drug,
    doses_x_cmax: &[f64],
    opts: &AssayOptions,
) -> Result<Vec<DoseResult>, CardiacError> {
    for &d in doses_x_cmax {
        if !d.is_finite() || d < 0.0 {
            return Err(CardiacError::InvalidDose { value: d });
        }
    }
    let mut jobs: Vec<Option<f64>> = vec![None];
    jobs.extend(doses_x_cmax.iter().map(|&d| Some(d)));
    jobs.par_iter()
        .map(|j| match j {
            None => run_dose(None, 0.0, opts),
            Some(d) => run_dose(Some(drug), *d, opts),
        })
        .collect()
}

fn opt(x: Option<f64>) -> String {
    x.map_or_else(|| "NA".to_string(), |v| format!("{v}"))
}

/// `results.csv` text: header `drug,dose_x_cmax,qnet_nc_per_uf,apd90_ms,apd50_ms,ead`, one row per
/// result (the control row's drug is `control`); missing APDs are `NA`.
pub fn results_csv(results: &[DoseResult]) -> String {
    let mut s = String::from("drug,dose_x_cmax,qnet_nc_per_uf,apd90_ms,apd50_ms,ead\n");
    for r in results {
        s.push_str(&format!(
            "{},{},{:.6},{},{},{}\n",
            r.drug,
            r.dose_x_cmax,
            r.qnet_nc_per_uf,
            opt(r.apd90_ms),
            opt(r.apd50_ms),
            r.ead()
        ));
    }
    s
}
