//! Log-likelihood of a PEtab problem (PEtab v1 specification, "Objective function"): for each
//! pair (preequilibration, simulation condition) the model is simulated at the measurement
//! times, observables and noise parameters are evaluated with the measurement's overrides, and
//!
//! * normal: `llh_i = −½ ln(2π σ²) − ½ ((h(y) − h(m)) / σ)²`,
//! * laplace: `llh_i = −ln(2b) − |h(y) − h(m)| / b`,
//!
//! where h is the observable transformation; for log / log10 the density is of the measurement
//! itself, so `− ln(m)` / `− ln(m ln 10)` is added (as AMICI and libpetab compute it).
//! Objective priors are not part of `llh` (as AMICI's `llh`).

use crate::problem::{Measurement, Noise, Problem, Transform, Value};
use crate::PetabError;
use medtwin_core::OdeModel;
use medtwin_sbml::{Course, Method, SbmlModel, SensOptions, SensParam, SimulateOptions, StateDose};
use rayon::prelude::*;
use std::collections::HashMap;

/// Integrator settings of every simulation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimSettings {
    /// Relative tolerance.
    pub rtol: f64,
    /// Absolute tolerance (scaled per state by the SBML engine).
    pub atol: f64,
    /// Integration method.
    pub method: Method,
    /// Wall-time limit of one simulation, seconds (None: no limit). A simulation over it fails
    /// (fits treat the parameter vector as infeasible).
    pub time_limit: Option<f64>,
}

impl Default for SimSettings {
    /// rtol 1e-8, atol 1e-12, automatic method, no time limit.
    fn default() -> Self {
        SimSettings {
            rtol: 1e-8,
            atol: 1e-12,
            method: Method::Auto,
            time_limit: None,
        }
    }
}

/// One measurement's simulated value, noise parameter and log-likelihood contribution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Residual {
    /// Index into [`Problem::measurements`].
    pub measurement: usize,
    /// Simulated observable (untransformed).
    pub simulated: f64,
    /// Noise parameter σ (normal) or b (laplace).
    pub sigma: f64,
    /// Log-likelihood contribution.
    pub llh: f64,
}

struct Group {
    preeq: Option<String>,
    sim: String,
    times: Vec<f64>,
    vars: Vec<String>,
    /// (measurement index, row index into `times`).
    meas: Vec<(usize, usize)>,
}

/// Evaluates the log-likelihood of a problem for parameter vectors (linear scale, one value
/// per parameter-table row).
pub struct Evaluator<'a> {
    /// The problem.
    pub problem: &'a Problem,
    /// Integrator settings.
    pub settings: SimSettings,
    groups: Vec<Group>,
    par_index: HashMap<String, usize>,
    /// State ids (species reported as amounts), aligned with the state vector.
    state_ids: Vec<(String, usize)>,
    retries: std::sync::atomic::AtomicUsize,
}

impl<'a> Evaluator<'a> {
    /// Group the measurements by condition pair and check that every identifier the formulas
    /// read can be resolved. Errors: [`PetabError::Table`] naming the measurement line.
    pub fn new(problem: &'a Problem, settings: SimSettings) -> Result<Self, PetabError> {
        let par_index: HashMap<String, usize> = problem
            .parameters
            .iter()
            .enumerate()
            .map(|(i, p)| (p.id.clone(), i))
            .collect();
        let mut by_key: HashMap<(Option<String>, String), usize> = HashMap::new();
        let mut groups: Vec<Group> = Vec::new();
        for m in &problem.measurements {
            let key = (m.preeq.clone(), m.sim.clone());
            let g = *by_key.entry(key).or_insert_with(|| {
                groups.push(Group {
                    preeq: m.preeq.clone(),
                    sim: m.sim.clone(),
                    times: Vec::new(),
                    vars: Vec::new(),
                    meas: Vec::new(),
                });
                groups.len() - 1
            });
            groups[g].times.push(m.time);
        }
        for g in &mut groups {
            g.times.sort_by(f64::total_cmp);
            g.times.dedup();
        }
        for (i, m) in problem.measurements.iter().enumerate() {
            let g = by_key[&(m.preeq.clone(), m.sim.clone())];
            let grp = &mut groups[g];
            let row = grp.times.partition_point(|&t| t < m.time);
            grp.meas.push((i, row));
            let o = &problem.observables[m.observable];
            for v in o.formula.vars().into_iter().chain(o.noise_formula.vars()) {
                if problem.model.value(&v).is_some() && !grp.vars.contains(&v) {
                    grp.vars.push(v);
                }
            }
        }
        let model = &problem.model;
        let mut state_ids = Vec::new();
        for id in model.default_variables() {
            if let Some(i) = model.state_index(&id) {
                state_ids.push((id, i));
            }
        }
        Ok(Evaluator {
            problem,
            settings,
            groups,
            par_index,
            state_ids,
            retries: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// Number of simulations (condition pairs) per evaluation.
    pub fn n_simulations(&self) -> usize {
        self.groups.len()
    }

    /// Simulations that failed at the requested tolerances and succeeded at looser ones
    /// (see [`Evaluator::simulate`]), counted since construction.
    pub fn retries(&self) -> usize {
        self.retries.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// `medtwin_sbml::simulate_course`; when the integrator fails (e.g. the BDF's step size
    /// underflows at a discontinuity of a piecewise function of time, which the SBML engine
    /// does not locate), retry with both tolerances ×100, then ×10⁴ (counted in
    /// [`Evaluator::retries`]).
    pub fn simulate(
        &self,
        m: &SbmlModel,
        opts: &SimulateOptions,
        course: &Course,
    ) -> Result<medtwin_sbml::Table, medtwin_sbml::SbmlError> {
        let mut o = opts.clone();
        let mut attempt = 0;
        loop {
            match self.run(m, &o, course) {
                Err(medtwin_sbml::SbmlError::Simulation(e))
                    if attempt < 2 && !e.contains("time limit") =>
                {
                    attempt += 1;
                    o.rtol *= 100.0;
                    o.atol *= 100.0;
                    self.retries
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                r => return r,
            }
        }
    }

    fn run(
        &self,
        m: &SbmlModel,
        opts: &SimulateOptions,
        course: &Course,
    ) -> Result<medtwin_sbml::Table, medtwin_sbml::SbmlError> {
        match self.settings.time_limit {
            Some(s) => {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs_f64(s);
                medtwin_sbml::simulate_course_with_deadline(m, opts, course, deadline)
            }
            None => medtwin_sbml::simulate_course(m, opts, course),
        }
    }

    /// Log-likelihood at `theta` (linear scale, parameter-table order).
    pub fn llh(&self, theta: &[f64]) -> Result<f64, PetabError> {
        Ok(self.residuals(theta)?.iter().map(|r| r.llh).sum())
    }

    /// Per-measurement simulated values and log-likelihood contributions at `theta`
    /// (linear scale), in measurement order.
    pub fn residuals(&self, theta: &[f64]) -> Result<Vec<Residual>, PetabError> {
        let base = self.base_model(theta)?;
        let mut pre: Vec<&str> = self
            .groups
            .iter()
            .filter_map(|g| g.preeq.as_deref())
            .collect();
        pre.sort_unstable();
        pre.dedup();
        let states: HashMap<&str, Vec<f64>> = pre
            .par_iter()
            .map(|&c| {
                let mut mp = base.clone();
                self.apply(&mut mp, c, theta)?;
                Ok((c, self.steady_state(&mp, c)?))
            })
            .collect::<Result<_, PetabError>>()?;
        let parts: Vec<Vec<Residual>> = self
            .groups
            .par_iter()
            .map(|g| self.group(&base, g, g.preeq.as_deref().map(|c| &states[c]), theta))
            .collect::<Result<_, _>>()?;
        let mut out: Vec<Residual> = parts.into_iter().flatten().collect();
        out.sort_by_key(|r| r.measurement);
        Ok(out)
    }

    /// The model with every parameter-table parameter that is a model entity set to `theta`.
    fn base_model(&self, theta: &[f64]) -> Result<SbmlModel, PetabError> {
        let mut m = self.problem.model.clone();
        for (p, &v) in self.problem.parameters.iter().zip(theta) {
            if m.value(&p.id).is_some() {
                m.set_value(&p.id, v)
                    .map_err(|e| PetabError::Sbml(format!("parameter '{}': {e}", p.id)))?;
            }
        }
        Ok(m)
    }

    fn value(&self, v: &Value, theta: &[f64]) -> Result<f64, PetabError> {
        match v {
            Value::Num(x) => Ok(*x),
            Value::Par(id) => {
                self.par_index.get(id).map(|&i| theta[i]).ok_or_else(|| {
                    PetabError::Eval(format!("'{id}' is not in the parameter table"))
                })
            }
        }
    }

    /// Apply condition `id` to `m`; returns the species ids it sets (re-initialised states).
    fn apply(&self, m: &mut SbmlModel, id: &str, theta: &[f64]) -> Result<Vec<String>, PetabError> {
        let c = &self.problem.conditions[id];
        let mut set = Vec::new();
        for (target, v) in &c.values {
            let x = self.value(v, theta)?;
            if x.is_nan() {
                continue;
            }
            m.set_value(target, x)
                .map_err(|e| PetabError::Sbml(format!("condition '{id}', '{target}': {e}")))?;
            set.push(target.clone());
        }
        Ok(set)
    }

    fn options(&self, start: f64, vars: Vec<String>) -> SimulateOptions {
        SimulateOptions {
            start,
            vars: Some(vars),
            rtol: self.settings.rtol,
            atol: self.settings.atol,
            method: self.settings.method,
            ..SimulateOptions::default()
        }
    }

    /// Steady state of `m` (state vector) by simulating to times 1, 10, …, 1e10 until the
    /// weighted RMS of the derivative (weights 1e-12 + 1e-8·|x|, AMICI's default steady-state
    /// tolerances in spirit) is below 1.
    fn steady_state(&self, m: &SbmlModel, cond: &str) -> Result<Vec<f64>, PetabError> {
        let n = m.n_states();
        if self.state_ids.len() != n {
            return Err(PetabError::Eval(format!(
                "preequilibration: {} of the model's {n} states have ids",
                self.state_ids.len()
            )));
        }
        let times: Vec<f64> = (0..=10).map(|k| 10f64.powi(k)).collect();
        let ids: Vec<String> = self.state_ids.iter().map(|(s, _)| s.clone()).collect();
        let mut opts = self.options(0.0, ids.clone());
        opts.amount = ids;
        let tab = self
            .run(
                m,
                &opts,
                &Course {
                    times: Some(&times),
                    doses: &[],
                },
            )
            .map_err(|e| PetabError::Simulation(format!("preequilibration '{cond}': {e}")))?;
        let mut dx = vec![0.0; n];
        let mut best = (f64::INFINITY, Vec::new());
        for (row, &t) in tab.rows.iter().zip(&times) {
            let mut x = vec![0.0; n];
            for (k, (_, i)) in self.state_ids.iter().enumerate() {
                x[*i] = row[k + 1];
            }
            m.rhs(t, &x, &[], &mut dx);
            let wrms = steady_state_wrms(&dx, &x);
            if wrms < 1.0 {
                return Ok(x);
            }
            if wrms < best.0 {
                best = (wrms, x);
            }
        }
        if best.0 < 1e6 {
            return Ok(best.1);
        }
        Err(PetabError::Simulation(format!(
            "preequilibration '{cond}': no steady state by t = 1e10 (weighted derivative norm {:.3e})",
            best.0
        )))
    }

    /// Simulate one condition pair (`ss`: the preequilibration steady state, if any) and
    /// evaluate its measurements.
    fn group(
        &self,
        base: &SbmlModel,
        g: &Group,
        ss: Option<&Vec<f64>>,
        theta: &[f64],
    ) -> Result<Vec<Residual>, PetabError> {
        let mut m = base.clone();
        let set = self.apply(&mut m, &g.sim, theta)?;
        let mut doses = Vec::new();
        let mut start = 0.0;
        if let Some(ss) = ss {
            let x0 = m.initial_state();
            for (id, i) in &self.state_ids {
                if !set.contains(id) && ss[*i] != x0[*i] {
                    doses.push(StateDose {
                        time: -1e-9,
                        state: *i,
                        amount: ss[*i] - x0[*i],
                    });
                }
            }
            start = -1e-9;
        }
        let opts = self.options(start, g.vars.clone());
        let tab = self
            .simulate(
                &m,
                &opts,
                &Course {
                    times: Some(&g.times),
                    doses: &doses,
                },
            )
            .map_err(|e| PetabError::Simulation(format!("condition '{}': {e}", g.sim)))?;
        let col: HashMap<&str, usize> = g
            .vars
            .iter()
            .enumerate()
            .map(|(k, v)| (v.as_str(), k + 1))
            .collect();
        let mut out = Vec::with_capacity(g.meas.len());
        for &(mi, row) in &g.meas {
            let meas = &self.problem.measurements[mi];
            let r = &tab.rows[row];
            out.push(self.residual(mi, meas, &|v| col.get(v).map(|&c| r[c]), theta)?);
        }
        Ok(out)
    }

    fn residual(
        &self,
        mi: usize,
        meas: &Measurement,
        model_value: &dyn Fn(&str) -> Option<f64>,
        theta: &[f64],
    ) -> Result<Residual, PetabError> {
        let o = &self.problem.observables[meas.observable];
        let over = |list: &[Value], prefix: &str, name: &str| -> Option<Result<f64, PetabError>> {
            let rest = name.strip_prefix(prefix)?;
            let (k, obs) = rest.split_once('_')?;
            if obs != o.id {
                return None;
            }
            let k: usize = k.parse().ok()?;
            Some(match list.get(k.wrapping_sub(1)) {
                Some(v) => self.value(v, theta),
                None => Err(PetabError::Eval(format!("no override {k} for '{name}'"))),
            })
        };
        let err = std::cell::RefCell::new(None);
        let env = |name: &str| -> Option<f64> {
            if let Some(r) = over(&meas.obs_pars, "observableParameter", name)
                .or_else(|| over(&meas.noise_pars, "noiseParameter", name))
            {
                return match r {
                    Ok(x) => Some(x),
                    Err(e) => {
                        *err.borrow_mut() = Some(e);
                        None
                    }
                };
            }
            if name == "time" || name == "t" {
                return Some(meas.time);
            }
            model_value(name).or_else(|| self.par_index.get(name).map(|&i| theta[i]))
        };
        let at = |e: String| {
            err.borrow_mut().take().unwrap_or(PetabError::Eval(format!(
                "measurement line {} (observable '{}'): {e}",
                meas.line, o.id
            )))
        };
        let y = o.formula.eval(&env).map_err(at)?;
        let sigma = o.noise_formula.eval(&env).map_err(at)?;
        Ok(Residual {
            measurement: mi,
            simulated: y,
            sigma,
            llh: log_density(meas.value, y, sigma, o.transform, o.noise),
        })
    }
}

/// Per-measurement derivatives of the simulated observable and of σ with respect to the
/// estimated parameters (linear scale), from [`Evaluator::sensitivities`].
#[derive(Debug, Clone, PartialEq)]
pub struct ResidualSens {
    /// Residuals at θ (as [`Evaluator::residuals`]).
    pub residuals: Vec<Residual>,
    /// `d[i][k] = (∂y_i/∂θ_k, ∂σ_i/∂θ_k)` for measurement `i` and the `k`-th index of `est`.
    pub d: Vec<Vec<(f64, f64)>>,
}

/// One measurement's residual and its derivatives (∂y/∂θ_k, ∂σ/∂θ_k).
type SensRow = (Residual, Vec<(f64, f64)>);

impl Evaluator<'_> {
    /// Sensitivity parameters of a model built from the base model and `conds`: per estimated
    /// parameter, the model ids whose value it is (the parameter itself when it is a model
    /// entity not overridden by a condition, and the condition targets mapped to it).
    fn sens_params(&self, conds: &[&str], theta: &[f64], est: &[usize]) -> Vec<SensParam> {
        let pars = &self.problem.parameters;
        est.iter()
            .map(|&i| {
                let id = &pars[i].id;
                let mut ids = Vec::new();
                let overridden = conds.iter().any(|c| {
                    self.problem.conditions[*c]
                        .values
                        .iter()
                        .any(|(t, v)| t == id && !matches!(v, Value::Num(x) if x.is_nan()))
                });
                if self.problem.model.value(id).is_some() && !overridden {
                    ids.push(id.clone());
                }
                for c in conds {
                    for (t, v) in &self.problem.conditions[*c].values {
                        if matches!(v, Value::Par(p) if p == id) && !ids.contains(t) {
                            ids.push(t.clone());
                        }
                    }
                }
                SensParam {
                    ids,
                    value: theta[i],
                }
            })
            .collect()
    }

    fn sens_options(&self, start: f64, vars: Vec<String>) -> SensOptions {
        SensOptions {
            start,
            rtol: self.settings.rtol,
            atol: self.settings.atol,
            vars,
            deadline: self
                .settings
                .time_limit
                .map(|s| std::time::Instant::now() + std::time::Duration::from_secs_f64(s)),
            error_test_sensitivities: false,
        }
    }

    /// Steady state and its sensitivities (index `k * n + i`) for preequilibration `cond`, by
    /// the criterion of [`Evaluator::steady_state`] on a sensitivity simulation.
    fn steady_state_sens(
        &self,
        base: &SbmlModel,
        cond: &str,
        theta: &[f64],
        est: &[usize],
    ) -> Result<(Vec<f64>, Vec<f64>), PetabError> {
        let mut m = base.clone();
        self.apply(&mut m, cond, theta)?;
        let params = self.sens_params(&[cond], theta, est);
        let n = m.n_states();
        let mut dx = vec![0.0; n];
        let mut best = (f64::INFINITY, Vec::new(), Vec::new());
        let (mut x, mut sx) = medtwin_sbml::initial_sensitivities(&m, &params)
            .map_err(|e| PetabError::Simulation(format!("preequilibration '{cond}': {e}")))?;
        let mut t0 = 0.0;
        // One run per decade, stopping at the first time that passes the test (the
        // sensitivity system of a model without a unique steady state can keep changing).
        let opts = self.sens_options(0.0, Vec::new());
        for k in 0..=10 {
            let t = 10f64.powi(k);
            let sc = medtwin_sbml::simulate_sensitivities(
                &m,
                &params,
                &[t],
                Some((&x, &sx)),
                &SensOptions {
                    start: t0,
                    ..opts.clone()
                },
            )
            .map_err(|e| PetabError::Simulation(format!("preequilibration '{cond}': {e}")))?;
            x = sc.states[0].clone();
            sx = sc.state_sens[0].clone();
            t0 = t;
            m.rhs(t, &x, &[], &mut dx);
            let wrms = steady_state_wrms(&dx, &x);
            if wrms < 1.0 {
                return Ok((x, sx));
            }
            if wrms < best.0 {
                best = (wrms, x.clone(), sx.clone());
            }
        }
        if best.0 < 1e6 {
            return Ok((best.1, best.2));
        }
        Err(PetabError::Simulation(format!(
            "preequilibration '{cond}': no steady state by t = 1e10 (weighted derivative norm {:.3e})",
            best.0
        )))
    }

    /// Residuals at `theta` (linear scale) and their derivatives with respect to the
    /// parameters `est` (parameter-table indices), by forward sensitivities of the model
    /// ([`medtwin_sbml::simulate_sensitivities`]) through preequilibration, condition and
    /// observable/noise formulas (the formulas are differentiated by central differences,
    /// relative step 1e-6). Errors: as [`Evaluator::residuals`], plus
    /// [`PetabError::Simulation`] for models the sensitivity solver does not support (events).
    pub fn sensitivities(&self, theta: &[f64], est: &[usize]) -> Result<ResidualSens, PetabError> {
        let base = self.base_model(theta)?;
        let mut pre: Vec<&str> = self
            .groups
            .iter()
            .filter_map(|g| g.preeq.as_deref())
            .collect();
        pre.sort_unstable();
        pre.dedup();
        let states: HashMap<&str, (Vec<f64>, Vec<f64>)> = pre
            .par_iter()
            .map(|&c| Ok((c, self.steady_state_sens(&base, c, theta, est)?)))
            .collect::<Result<_, PetabError>>()?;
        let parts: Vec<Vec<SensRow>> = self
            .groups
            .par_iter()
            .map(|g| self.group_sens(&base, g, g.preeq.as_deref().map(|c| &states[c]), theta, est))
            .collect::<Result<_, _>>()?;
        let mut out: Vec<SensRow> = parts.into_iter().flatten().collect();
        out.sort_by_key(|r| r.0.measurement);
        let (residuals, d) = out.into_iter().unzip();
        Ok(ResidualSens { residuals, d })
    }

    fn group_sens(
        &self,
        base: &SbmlModel,
        g: &Group,
        ss: Option<&(Vec<f64>, Vec<f64>)>,
        theta: &[f64],
        est: &[usize],
    ) -> Result<Vec<SensRow>, PetabError> {
        let mut m = base.clone();
        let set = self.apply(&mut m, &g.sim, theta)?;
        let params = self.sens_params(&[g.sim.as_str()], theta, est);
        let fail = |e: medtwin_sbml::SbmlError| {
            PetabError::Simulation(format!("condition '{}': {e}", g.sim))
        };
        let (mut x0, mut s0) = medtwin_sbml::initial_sensitivities(&m, &params).map_err(fail)?;
        let n = x0.len();
        if let Some((xs, sss)) = ss {
            for (id, i) in &self.state_ids {
                if !set.contains(id) {
                    x0[*i] = xs[*i];
                    for k in 0..est.len() {
                        s0[k * n + *i] = sss[k * n + *i];
                    }
                }
            }
        }
        let sc = medtwin_sbml::simulate_sensitivities(
            &m,
            &params,
            &g.times,
            Some((&x0, &s0)),
            &self.sens_options(0.0, g.vars.clone()),
        )
        .map_err(fail)?;
        let col: HashMap<&str, usize> = g
            .vars
            .iter()
            .enumerate()
            .map(|(k, v)| (v.as_str(), k))
            .collect();
        let nv = g.vars.len();
        let mut out = Vec::with_capacity(g.meas.len());
        let mut th = theta.to_vec();
        for &(mi, row) in &g.meas {
            let meas = &self.problem.measurements[mi];
            let vals = &sc.vars[row];
            let dv = &sc.var_sens[row];
            let r = self.residual(mi, meas, &|v| col.get(v).map(|&c| vals[c]), theta)?;
            let mut d = Vec::with_capacity(est.len());
            for (k, &i) in est.iter().enumerate() {
                let h = 1e-6 * theta[i].abs().max(1e-8);
                let mut at = |sign: f64| -> Result<Residual, PetabError> {
                    th[i] = theta[i] + sign * h;
                    let res = self.residual(
                        mi,
                        meas,
                        &|v| col.get(v).map(|&c| vals[c] + sign * h * dv[k * nv + c]),
                        &th,
                    );
                    th[i] = theta[i];
                    res
                };
                let (p, q) = (at(1.0)?, at(-1.0)?);
                d.push((
                    (p.simulated - q.simulated) / (2.0 * h),
                    (p.sigma - q.sigma) / (2.0 * h),
                ));
            }
            out.push((r, d));
        }
        Ok(out)
    }
}

/// Log-density of measurement `m` given simulation `y` and noise parameter `sigma`
/// (see the module documentation). Non-positive values under a log transformation give NaN.
pub fn log_density(m: f64, y: f64, sigma: f64, t: Transform, noise: Noise) -> f64 {
    let (hm, hy, jac) = match t {
        Transform::Lin => (m, y, 0.0),
        Transform::Log => (m.ln(), y.ln(), m.ln()),
        Transform::Log10 => (m.log10(), y.log10(), (m * std::f64::consts::LN_10).ln()),
    };
    let r = hm - hy;
    match noise {
        Noise::Normal => {
            -0.5 * (2.0 * std::f64::consts::PI * sigma * sigma).ln()
                - 0.5 * (r / sigma).powi(2)
                - jac
        }
        Noise::Laplace => -(2.0 * sigma).ln() - r.abs() / sigma - jac,
    }
}

/// Weighted RMS of the state derivatives `dx` at states `x` for the preequilibration's
/// steady-state test (weights `1e-12 + 1e-8·|x|`, per state); < 1 counts as steady.
fn steady_state_wrms(dx: &[f64], x: &[f64]) -> f64 {
    (dx.iter()
        .zip(x)
        .map(|(d, x)| (d / (1e-12 + 1e-8 * x.abs())).powi(2))
        .sum::<f64>()
        / dx.len().max(1) as f64)
        .sqrt()
}
