//! # medtwin-report
//!
//! Self-contained HTML reports for calibrated patient digital twins.
//!
//! The main entry point is [`write_twin_report`], which turns a [`TwinReport`]
//! (recorded CGM, meals, boluses, forecast cones, parameter posteriors and a
//! forecast backtest) into a single `index.html` with inline SVG figures, plus
//! one standalone `.svg` file per figure next to it. The HTML file loads
//! nothing from the network: no scripts, no external CSS, no web fonts.
//!
//! All free text supplied by the caller (titles, labels, notes, table cells)
//! is HTML-escaped. Missing, empty or non-finite data never panics: the
//! affected figure is skipped and a visible note explains why.
//!
//! ```no_run
//! use medtwin_report::{write_twin_report, TwinReport};
//! let report = TwinReport { title: "Twin report".into(), ..Default::default() };
//! let index = write_twin_report(&report, std::path::Path::new("out/report")).unwrap();
//! println!("wrote {}", index.display());
//! ```
#![warn(missing_docs)]

pub mod cvga;
mod html;
mod plots;
mod stats;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A time series sampled at irregular times.
///
/// `t_min[i]` is the time of `values[i]` in minutes from the record origin
/// (see [`TwinReport::origin_label`]). Non-finite entries are ignored when
/// plotting; if the two vectors differ in length the extra entries are
/// ignored and the report says so.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// Sample times, minutes from the record origin.
    pub t_min: Vec<f64>,
    /// Sample values (for CGM: glucose in mg/dL).
    pub values: Vec<f64>,
}

/// A probabilistic glucose forecast ("cone") issued at `origin_min`.
///
/// All vectors are indexed like `t_min` (normally one entry per minute of
/// the forecast horizon). Quantile bands are in mg/dL: `lo50`/`hi50` are the
/// 25th/75th percentiles, `lo80`/`hi80` the 10th/90th and `lo95`/`hi95` the
/// 2.5th/97.5th. Rows with any non-finite value are skipped when drawing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cone {
    /// Forecast origin (the last moment the twin saw data), minutes from the record origin.
    pub origin_min: f64,
    /// Forecast times, minutes from the record origin.
    pub t_min: Vec<f64>,
    /// Median forecast, mg/dL.
    pub median: Vec<f64>,
    /// Lower edge of the central 50 % band, mg/dL.
    pub lo50: Vec<f64>,
    /// Upper edge of the central 50 % band, mg/dL.
    pub hi50: Vec<f64>,
    /// Lower edge of the central 80 % band, mg/dL.
    pub lo80: Vec<f64>,
    /// Upper edge of the central 80 % band, mg/dL.
    pub hi80: Vec<f64>,
    /// Lower edge of the central 95 % band, mg/dL.
    pub lo95: Vec<f64>,
    /// Upper edge of the central 95 % band, mg/dL.
    pub hi95: Vec<f64>,
    /// Probability that glucose drops below 70 mg/dL at some point within the horizon (0–1).
    pub p_below_70: f64,
    /// Probability that glucose exceeds 250 mg/dL at some point within the horizon (0–1).
    pub p_above_250: f64,
}

/// Prior and posterior samples of one model parameter.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ParameterPosterior {
    /// Short parameter name (e.g. `"ISF"`).
    pub name: String,
    /// Unit of the samples (e.g. `"mg/dL/U"`); may be empty for dimensionless parameters.
    pub unit: String,
    /// One-line human description shown in the parameter table.
    pub description: String,
    /// Samples from the population prior.
    pub prior_samples: Vec<f64>,
    /// Samples from the patient-specific posterior.
    pub posterior_samples: Vec<f64>,
}

/// One row of the rolling-origin forecast backtest, for one horizon.
///
/// Coverages are fractions in `[0, 1]` (values above 1.5 in a table are
/// taken to be percentages and shown as such).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BacktestRow {
    /// Forecast horizon, minutes.
    pub horizon_min: u32,
    /// Number of (forecast, observation) pairs evaluated.
    pub n: usize,
    /// Root-mean-square error of the median forecast, mg/dL.
    pub rmse_mg_dl: f64,
    /// Mean absolute error of the median forecast, mg/dL.
    pub mae_mg_dl: f64,
    /// RMSE of the persistence baseline (last observed value carried forward), mg/dL.
    pub persistence_rmse_mg_dl: f64,
    /// Fraction of observations inside the 80 % band.
    pub coverage_80: f64,
    /// Fraction of observations inside the 95 % band.
    pub coverage_95: f64,
    /// Mean width of the 80 % band, mg/dL.
    pub mean_width_80_mg_dl: f64,
}

/// Everything shown in a twin report. Fill it and call [`write_twin_report`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TwinReport {
    /// Report title (the page heading).
    pub title: String,
    /// Patient / subject identifier.
    pub patient_id: String,
    /// Citation of the data source, shown in the header.
    pub data_citation: String,
    /// Wall-clock time (with zone) of t = 0, e.g. `"2023-11-13 00:00 Europe/London"`.
    ///
    /// If it starts with `YYYY-MM-DD HH:MM`, tables also show approximate
    /// wall-clock times of forecast origins.
    pub origin_label: String,
    /// Recorded CGM, mg/dL.
    pub cgm: Series,
    /// Carbohydrate intake events: `(t_min, grams)`.
    pub carbs: Vec<(f64, f64)>,
    /// Insulin boluses: `(t_min, units)`.
    pub boluses: Vec<(f64, f64)>,
    /// Forecasts at several origins, shown over the recorded CGM trace.
    pub cones: Vec<Cone>,
    /// The same target window forecast by twins that saw more and more data,
    /// labelled e.g. `"after 1 day"`, in order of increasing data.
    pub narrowing: Vec<(String, Cone)>,
    /// Parameter posteriors versus the population prior.
    pub parameters: Vec<ParameterPosterior>,
    /// Forecast backtest, one row per horizon.
    pub backtest: Vec<BacktestRow>,
    /// Free paragraphs (methods, import warnings, …), rendered escaped.
    pub notes: Vec<String>,
    /// Extra tables: `(caption, header, rows)`, rendered escaped.
    pub tables: Vec<(String, Vec<String>, Vec<Vec<String>>)>,
}

/// Errors from report generation.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The output directory could not be created.
    #[error("cannot create output directory {}: {source}", path.display())]
    CreateDir {
        /// The directory that could not be created.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A report file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file that could not be written.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The plotting library failed while drawing a figure.
    #[error("could not draw figure `{figure}`: {message}")]
    Plot {
        /// Name of the figure.
        figure: String,
        /// What went wrong.
        message: String,
    },
    /// A figure had no finite data to show.
    #[error("nothing to plot in figure `{figure}`: {reason}")]
    NoData {
        /// Name of the figure.
        figure: String,
        /// Why there is nothing to show.
        reason: String,
    },
    /// A time window was empty, reversed or not finite.
    #[error("invalid time window [{from_min}, {to_min}] min: the end must be finite and after the start")]
    InvalidWindow {
        /// Window start, minutes.
        from_min: f64,
        /// Window end, minutes.
        to_min: f64,
    },
}

/// Writes the report into `out_dir` (created if missing) and returns the path
/// of `index.html`.
///
/// Besides `index.html` (fully self-contained, figures inline) each figure is
/// also written as a standalone SVG file next to it: `cgm.svg`,
/// `cones_overview.svg`, `cone_1.svg`, `cone_2.svg`, …, `narrowing.svg`,
/// `narrowing_width.svg`, `posteriors.svg` and `backtest.svg` (only those
/// that could be drawn). Figures without usable data are skipped with a note
/// in the HTML; only I/O failures return an error, naming the file.
pub fn write_twin_report(report: &TwinReport, out_dir: &Path) -> Result<PathBuf, ReportError> {
    let built = html::build(report);
    std::fs::create_dir_all(out_dir).map_err(|source| ReportError::CreateDir {
        path: out_dir.to_path_buf(),
        source,
    })?;
    for (name, svg) in &built.svgs {
        let path = out_dir.join(name);
        std::fs::write(&path, svg).map_err(|source| ReportError::Write { path, source })?;
    }
    let index = out_dir.join("index.html");
    std::fs::write(&index, &built.html).map_err(|source| ReportError::Write {
        path: index.clone(),
        source,
    })?;
    Ok(index)
}

/// Draws recorded CGM points and forecast cones over `[t_from_min, t_to_min]`
/// (minutes from the record origin) and returns a standalone SVG document.
///
/// Each cone is drawn as nested 95 / 80 / 50 % bands (increasing opacity)
/// with its median as a line and its origin as a dashed vertical line; the
/// 70–180 mg/dL target range is shaded. With a single cone, CGM readings up
/// to the origin are filled dots and later ones hollow circles (what the
/// twin had not seen). The x-axis is in hours (days for windows over four
/// days) since the record origin.
///
/// Returns [`ReportError::InvalidWindow`] for a reversed or non-finite
/// window and [`ReportError::NoData`] if neither CGM nor any cone has a
/// finite value inside it.
pub fn cone_plot_svg(
    cgm: &Series,
    cones: &[Cone],
    t_from_min: f64,
    t_to_min: f64,
    title: &str,
) -> Result<String, ReportError> {
    let points = stats::clean_series(cgm).points;
    let numbered: Vec<(usize, &Cone)> = cones.iter().enumerate().map(|(i, c)| (i + 1, c)).collect();
    plots::cone_figure(
        "cone plot",
        &points,
        &numbered,
        t_from_min,
        t_to_min,
        title,
        "record start",
        (1000, 440),
    )
}

/// Escapes `&`, `<`, `>`, `"` and `'` so that `s` can be placed in HTML text
/// or in a quoted attribute value.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_all_specials() {
        assert_eq!(
            html_escape(r#"<a href="x">Tom & 'Jerry'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;Tom &amp; &#39;Jerry&#39;&lt;/a&gt;"
        );
        assert_eq!(html_escape("plain µg/dL"), "plain µg/dL");
    }

    #[test]
    fn cone_plot_rejects_bad_window() {
        let s = Series {
            t_min: vec![0.0, 5.0],
            values: vec![100.0, 110.0],
        };
        assert!(matches!(
            cone_plot_svg(&s, &[], 10.0, 10.0, "x"),
            Err(ReportError::InvalidWindow { .. })
        ));
        assert!(matches!(
            cone_plot_svg(&s, &[], f64::NAN, 10.0, "x"),
            Err(ReportError::InvalidWindow { .. })
        ));
        assert!(matches!(
            cone_plot_svg(&s, &[], 100.0, 200.0, "x"),
            Err(ReportError::NoData { .. })
        ));
    }
}
