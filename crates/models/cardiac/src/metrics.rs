//! Beat metrics exactly as the CiPA reference computes them (FDA/CiPA `AP_simulation.R` and
//! `funs/metric_funs.R`): the beat is sampled on the reference's 1-ms output grid (cubic Hermite
//! interpolation of V between integrator steps, linear for dV/dt), then
//!
//! * upstroke time `t_up`: grid time of the largest forward difference of V;
//! * `vmax` and its time; `vrest`: the minimum of V before `vmax`;
//! * if `vmax ≥ 0` and `vrest < −40 mV`: the first grid times after the peak at which V has fallen
//!   30 %, 50 % and 90 % of the way to `vrest`; APD50/APD90 are those times minus `t_up`;
//! * `max_dv`: the largest dV/dt on the grid strictly between 30 % repolarisation (or the peak)
//!   and APD90 (or the beat's end), when that window is longer than 1 ms. A positive `max_dv` is an
//!   early afterdepolarisation (EAD).

use crate::solver::TracePoint;

/// Metrics of one beat (reference definitions; `None` where the reference reports NA).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BeatMetrics {
    /// Peak membrane potential, mV.
    pub vmax_mv: f64,
    /// Minimum potential before the peak, mV (`None` when the peak is at t = 0).
    pub vrest_mv: Option<f64>,
    /// APD at 50 % repolarisation, ms.
    pub apd50_ms: Option<f64>,
    /// APD at 90 % repolarisation, ms.
    pub apd90_ms: Option<f64>,
    /// Largest dV/dt between 30 % repolarisation and APD90, mV/ms.
    pub max_dv_mv_per_ms: Option<f64>,
}

/// Sample a beat trace on the integer-ms grid `0..=bcl_ms`: (V mV, dV/dt mV/ms) per grid point.
pub fn sample_grid(trace: &[TracePoint], bcl_ms: usize) -> (Vec<f64>, Vec<f64>) {
    let mut v = Vec::with_capacity(bcl_ms + 1);
    let mut dv = Vec::with_capacity(bcl_ms + 1);
    let mut k = 0usize;
    for g in 0..=bcl_ms {
        let t = g as f64;
        while k + 2 < trace.len() && trace[k + 1].t_ms < t {
            k += 1;
        }
        let (a, b) = (trace[k], trace[(k + 1).min(trace.len() - 1)]);
        let dt = b.t_ms - a.t_ms;
        if dt <= 0.0 {
            v.push(a.v_mv);
            dv.push(a.dvdt_mv_per_ms);
            continue;
        }
        let s = ((t - a.t_ms) / dt).clamp(0.0, 1.0);
        let (s2, s3) = (s * s, s * s * s);
        let h00 = 2.0 * s3 - 3.0 * s2 + 1.0;
        let h10 = s3 - 2.0 * s2 + s;
        let h01 = -2.0 * s3 + 3.0 * s2;
        let h11 = s3 - s2;
        v.push(
            h00 * a.v_mv + h10 * dt * a.dvdt_mv_per_ms + h01 * b.v_mv + h11 * dt * b.dvdt_mv_per_ms,
        );
        dv.push(a.dvdt_mv_per_ms + s * (b.dvdt_mv_per_ms - a.dvdt_mv_per_ms));
    }
    (v, dv)
}

/// First grid index after `i_max` where `v` has fallen to `rest + (v[i_max] − rest)(1 − pct)`.
fn find_rep(v: &[f64], rest: f64, i_max: usize, pct: f64) -> Option<usize> {
    let level = rest + (v[i_max] - rest) * (1.0 - pct);
    (i_max + 1..v.len()).find(|&i| v[i] <= level)
}

/// Reference metrics of one beat from its 1-ms grid samples (`v`, `dv` as [`sample_grid`]).
pub fn beat_metrics(v: &[f64], dv: &[f64]) -> BeatMetrics {
    let n = v.len();
    let mut i_up = 0;
    let mut best = f64::NEG_INFINITY;
    for i in 0..n - 1 {
        let d = v[i + 1] - v[i];
        if d > best {
            best = d;
            i_up = i;
        }
    }
    let mut i_max = 0;
    for i in 1..n {
        if v[i] > v[i_max] {
            i_max = i;
        }
    }
    let vmax = v[i_max];
    let vrest = v[..i_max].iter().copied().reduce(f64::min);
    let (mut t_start, mut t_end) = ((n - 1) as f64, (n - 1) as f64);
    if vmax >= 0.0 {
        t_start = i_max as f64;
    }
    let (mut apd50, mut apd90) = (None, None);
    if let Some(rest) = vrest.filter(|&r| vmax >= 0.0 && r < -40.0) {
        if let Some(i30) = find_rep(v, rest, i_max, 0.3) {
            t_start = i30 as f64;
            if let Some(i50) = find_rep(v, rest, i_max, 0.5) {
                apd50 = Some(i50 as f64 - i_up as f64);
                if let Some(i90) = find_rep(v, rest, i_max, 0.9) {
                    apd90 = Some(i90 as f64 - i_up as f64);
                    t_end = i90 as f64;
                }
            }
        }
    }
    let max_dv = if t_end - t_start > 1.0 {
        (0..n)
            .filter(|&i| (i as f64) > t_start && (i as f64) < t_end)
            .map(|i| dv[i])
            .reduce(f64::max)
    } else {
        None
    };
    BeatMetrics {
        vmax_mv: vmax,
        vrest_mv: vrest,
        apd50_ms: apd50,
        apd90_ms: apd90,
        max_dv_mv_per_ms: max_dv,
    }
}

/// The reference's choice among the analysed beats: summary of EADs and the kept beat.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Selection {
    /// Index (into the analysed beats) of the kept beat: the largest `max_dv`, or the last beat
    /// when no beat has a `max_dv` (depolarisation failure).
    pub keep: usize,
    /// Beats with `max_dv > 0` (EADs).
    pub ead_beats: usize,
    /// Beats without a `max_dv` (no depolarisation or no analysis window).
    pub no_depol_beats: usize,
    /// Beats without APD90 (no repolarisation).
    pub no_repol_beats: usize,
}

/// Apply the reference's beat-selection rule to the analysed beats' metrics.
pub fn select_beat(beats: &[BeatMetrics]) -> Selection {
    let mut keep = None;
    let mut best = f64::NEG_INFINITY;
    let mut ead = 0;
    let mut no_depol = 0;
    for (i, b) in beats.iter().enumerate() {
        match b.max_dv_mv_per_ms {
            Some(d) => {
                if d > 0.0 {
                    ead += 1;
                }
                if d > best {
                    best = d;
                    keep = Some(i);
                }
            }
            None => no_depol += 1,
        }
    }
    Selection {
        keep: keep.unwrap_or(beats.len().saturating_sub(1)),
        ead_beats: ead,
        no_depol_beats: no_depol,
        no_repol_beats: beats.iter().filter(|b| b.apd90_ms.is_none()).count(),
    }
}
