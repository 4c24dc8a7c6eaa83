//! Uncertainty propagation (Li et al. 2019 Clin Pharmacol Ther 105:466; Chang et al. 2017 Front
//! Physiol 8:917): the assay repeated for every uncertainty sample of a drug's inputs, i.e. a
//! bootstrap sample of the dynamic hERG binding parameters (Kmax, Ku, n, halfmax, Vhalf) paired
//! with an MCMC sample of the Hill block (IC50, h) of the other six currents. Sample `i` (1-based)
//! is row `i` of both tables, as the FDA reference does (`get_pars.R`, `isamp`); sample 0 is the
//! point estimate (the drug's own optimal parameters).
//!
//! Input tables in the FDA/CiPA layout:
//! * `boot_pars.csv`: header `Kmax,Ku,n,halfmax,Vhalf[,slope]` (the hERG fit's `slope` is unused);
//! * `IC50_samples.csv`: header `ICaL_IC50,ICaL_h,IK1_IC50,IK1_h,IKs_IC50,IKs_h,INa_IC50,INa_h,
//!   INaL_IC50,INaL_h,Ito_IC50,Ito_h[,hERG_IC50,hERG_h]`, `NA` = current not blocked.
//!
//! The first 50 samples of each of the 12 CiPA training drugs are bundled
//! (`data/samples/<drug>_{boot_pars,IC50_samples}.csv`, provenance in
//! tests/data/cardiac/PROVENANCE.md).
//!
//! [`run_samples`] runs every sample × dose on the rayon pool; the result order (sample-major, then
//! dose) and every number are independent of the thread count, because each job is an independent,
//! deterministic simulation and the results are collected in job order.

use crate::assay::{run_params, AssayOptions, DoseResult};
use crate::classify::{TdpClassifier, CATEGORIES};
use crate::drug::{Blocks, Drug, HergDrug, HillBlock};
use crate::error::CardiacError;
use rayon::prelude::*;

/// Number of samples bundled per training drug.
pub const BUNDLED_SAMPLES: usize = 50;

/// The bundled tables of one drug: (boot_pars.csv, IC50_samples.csv).
fn bundled_tables(drug: &str) -> Option<(&'static str, &'static str)> {
    macro_rules! t {
        ($n:literal) => {
            Some((
                include_str!(concat!("../data/samples/", $n, "_boot_pars.csv")),
                include_str!(concat!("../data/samples/", $n, "_IC50_samples.csv")),
            ))
        };
    }
    match drug {
        "dofetilide" => t!("dofetilide"),
        "bepridil" => t!("bepridil"),
        "sotalol" => t!("sotalol"),
        "quinidine" => t!("quinidine"),
        "cisapride" => t!("cisapride"),
        "terfenadine" => t!("terfenadine"),
        "ondansetron" => t!("ondansetron"),
        "chlorpromazine" => t!("chlorpromazine"),
        "verapamil" => t!("verapamil"),
        "ranolazine" => t!("ranolazine"),
        "mexiletine" => t!("mexiletine"),
        "diltiazem" => t!("diltiazem"),
        _ => None,
    }
}

/// One uncertainty sample of a drug's inputs.
#[derive(Clone, Debug, PartialEq)]
pub struct UncertaintySample {
    /// 1-based row of the sample tables (0: the point estimate).
    pub index: usize,
    /// Dynamic hERG binding parameters.
    pub herg: HergDrug,
    /// Hill blocks of the other currents.
    pub block: Blocks,
}

impl UncertaintySample {
    /// The point estimate of `drug` as sample 0.
    pub fn point_estimate(drug: &Drug) -> Self {
        UncertaintySample {
            index: 0,
            herg: drug.herg,
            block: drug.block,
        }
    }

    /// `drug` with this sample's parameters (name, Cmax and risk kept).
    pub fn apply(&self, drug: &Drug) -> Drug {
        Drug {
            herg: self.herg,
            block: self.block,
            ..drug.clone()
        }
    }
}

fn err(source: &str, message: String) -> CardiacError {
    CardiacError::Samples {
        source_name: source.to_string(),
        message,
    }
}

/// Parse a CSV table into its header and rows of optional numbers (`NA` → `None`).
#[allow(clippy::type_complexity)]
fn table(text: &str, source: &str) -> Result<(Vec<String>, Vec<Vec<Option<f64>>>), CardiacError> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let head: Vec<String> = lines
        .next()
        .ok_or_else(|| err(source, "empty file".into()))?
        .split(',')
        .map(|s| s.trim().trim_matches('"').to_string())
        .collect();
    let mut rows = Vec::new();
    for (i, l) in lines.enumerate() {
        let cells: Vec<&str> = l.split(',').map(|s| s.trim().trim_matches('"')).collect();
        if cells.len() != head.len() {
            return Err(err(
                source,
                format!(
                    "row {}: {} fields, header has {}",
                    i + 1,
                    cells.len(),
                    head.len()
                ),
            ));
        }
        let mut row = Vec::with_capacity(cells.len());
        for (c, name) in cells.iter().zip(&head) {
            if *c == "NA" || c.is_empty() {
                row.push(None);
            } else {
                let v: f64 = c.parse().map_err(|_| {
                    err(
                        source,
                        format!("row {}: {name} = '{c}' is not a number", i + 1),
                    )
                })?;
                if !v.is_finite() {
                    return Err(err(
                        source,
                        format!("row {}: {name} = {c} is not finite", i + 1),
                    ));
                }
                row.push(Some(v));
            }
        }
        rows.push(row);
    }
    Ok((head, rows))
}

fn col(head: &[String], name: &str, source: &str) -> Result<usize, CardiacError> {
    head.iter()
        .position(|h| h == name)
        .ok_or_else(|| err(source, format!("no column '{name}'")))
}

/// Pair the rows of a `boot_pars.csv` and an `IC50_samples.csv` text into samples 1, 2, … (as
/// many as the shorter table has rows). `names` name the two tables in errors.
pub fn parse_samples(
    boot_csv: &str,
    ic50_csv: &str,
    names: (&str, &str),
) -> Result<Vec<UncertaintySample>, CardiacError> {
    let (bh, brows) = table(boot_csv, names.0)?;
    let (ih, irows) = table(ic50_csv, names.1)?;
    let bc: Vec<usize> = ["Kmax", "Ku", "n", "halfmax", "Vhalf"]
        .iter()
        .map(|c| col(&bh, c, names.0))
        .collect::<Result<_, _>>()?;
    let currents = ["INa", "INaL", "Ito", "ICaL", "IKs", "IK1"];
    let mut ic = Vec::new();
    for c in currents {
        ic.push((
            col(&ih, &format!("{c}_IC50"), names.1)?,
            col(&ih, &format!("{c}_h"), names.1)?,
        ));
    }
    let n = brows.len().min(irows.len());
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let b = &brows[i];
        let get = |k: usize| {
            b[bc[k]].ok_or_else(|| err(names.0, format!("row {}: {} is NA", i + 1, bh[bc[k]])))
        };
        let herg = HergDrug {
            kmax: get(0)?,
            ku_per_ms: get(1)?,
            n: get(2)?,
            halfmax_nm_n: get(3)?,
            vhalf_mv: get(4)?,
        };
        let r = &irows[i];
        let hill = |k: usize| -> Option<HillBlock> {
            match (r[ic[k].0], r[ic[k].1]) {
                (Some(ic50_nm), Some(hill)) => Some(HillBlock { ic50_nm, hill }),
                _ => None,
            }
        };
        let block = Blocks {
            ina: hill(0),
            inal: hill(1),
            ito: hill(2),
            ical: hill(3),
            iks: hill(4),
            ik1: hill(5),
        };
        out.push(UncertaintySample {
            index: i + 1,
            herg,
            block,
        });
    }
    Ok(out)
}

/// The first `n` bundled samples of a CiPA training drug (`n` ≤ [`BUNDLED_SAMPLES`]).
pub fn bundled_samples(drug: &str, n: usize) -> Result<Vec<UncertaintySample>, CardiacError> {
    let (b, i) = bundled_tables(&drug.to_lowercase()).ok_or_else(|| {
        err(
            drug,
            "no bundled uncertainty samples (only the 12 CiPA training drugs have them); \
             give the FDA-layout tables with --samples-dir"
                .into(),
        )
    })?;
    let s = parse_samples(b, i, ("bundled boot_pars.csv", "bundled IC50_samples.csv"))?;
    if n > s.len() {
        return Err(err(
            drug,
            format!(
                "{n} samples requested, {} bundled; give the full FDA tables with --samples-dir",
                s.len()
            ),
        ));
    }
    Ok(s.into_iter().take(n).collect())
}

/// Outcome of one sample at one dose.
#[derive(Clone, Debug)]
pub struct SampleResult {
    /// Sample index (1-based; 0 = point estimate).
    pub sample: usize,
    /// Dose, × Cmax.
    pub dose_x_cmax: f64,
    /// The assay result, or the integrator failure message.
    pub result: Result<DoseResult, String>,
}

/// Run the assay for every sample × dose on the rayon pool (`samples` with invalid parameters are
/// reported as failed rows). Output order: sample-major, then dose, as given.
pub fn run_samples(
    drug: &Drug,
    doses_x_cmax: &[f64],
    samples: &[UncertaintySample],
    opts: &AssayOptions,
) -> Result<Vec<SampleResult>, CardiacError> {
    for &d in doses_x_cmax {
        if !d.is_finite() || d < 0.0 {
            return Err(CardiacError::InvalidDose { value: d });
        }
    }
    let jobs: Vec<(usize, f64)> = (0..samples.len())
        .flat_map(|s| doses_x_cmax.iter().map(move |&d| (s, d)))
        .collect();
    Ok(jobs
        .par_iter()
        .map(|&(s, dose)| {
            let smp = &samples[s];
            let d = smp.apply(drug);
            let result = d.validate().map_err(|e| e.to_string()).and_then(|_| {
                run_params(d.params_at(dose * d.cmax_nm), &d.name, dose, opts)
                    .map_err(|e| e.to_string())
            });
            SampleResult {
                sample: smp.index,
                dose_x_cmax: dose,
                result,
            }
        })
        .collect())
}

fn opt(x: Option<f64>) -> String {
    x.map_or_else(|| "NA".to_string(), |v| format!("{v}"))
}

/// `samples.csv` text: header
/// `drug,sample,dose_x_cmax,qnet_nc_per_uf,apd90_ms,apd50_ms,ead_beats,no_repol_beats,status`,
/// one row per sample × dose (`status` is `ok` or the failure; failed rows have `NA` metrics).
pub fn samples_csv(drug: &str, rows: &[SampleResult]) -> String {
    let mut s = String::from(
        "drug,sample,dose_x_cmax,qnet_nc_per_uf,apd90_ms,apd50_ms,ead_beats,no_repol_beats,status\n",
    );
    for r in rows {
        match &r.result {
            Ok(d) => s.push_str(&format!(
                "{drug},{},{},{:.6},{},{},{},{},ok\n",
                r.sample,
                r.dose_x_cmax,
                d.qnet_nc_per_uf,
                opt(d.apd90_ms),
                opt(d.apd50_ms),
                d.ead_beats,
                d.no_repol_beats
            )),
            Err(e) => s.push_str(&format!(
                "{drug},{},{},NA,NA,NA,NA,NA,\"failed: {}\"\n",
                r.sample,
                r.dose_x_cmax,
                e.replace('"', "'")
            )),
        }
    }
    s
}

/// Empirical quantile (linear interpolation between order statistics, R type 7) of sorted `v`.
pub fn quantile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let h = (sorted.len() - 1) as f64 * p.clamp(0.0, 1.0);
    let lo = h.floor() as usize;
    let hi = h.ceil() as usize;
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

/// Median and central 95 % interval of `v` (NaN-free).
fn median_ci(mut v: Vec<f64>) -> Option<[f64; 3]> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some([quantile(&v, 0.5), quantile(&v, 0.025), quantile(&v, 0.975)])
}

/// Summary of one dose over the samples.
#[derive(Clone, Debug, PartialEq)]
pub struct DoseSummary {
    /// Dose, × Cmax.
    pub dose_x_cmax: f64,
    /// Samples simulated successfully.
    pub n_ok: usize,
    /// Samples whose simulation failed.
    pub n_failed: usize,
    /// qNet median, 2.5 % and 97.5 % quantiles, nC/µF.
    pub qnet: Option<[f64; 3]>,
    /// APD90 median, 2.5 % and 97.5 % quantiles over the repolarised samples, ms.
    pub apd90: Option<[f64; 3]>,
    /// Samples with an EAD in any analysed beat.
    pub ead_samples: usize,
    /// Samples whose selected beat did not repolarise (APD90 NA).
    pub no_repol_samples: usize,
}

/// Per-dose summaries, in the order the doses first appear.
pub fn summarize(rows: &[SampleResult]) -> Vec<DoseSummary> {
    let mut doses: Vec<f64> = Vec::new();
    for r in rows {
        if !doses.contains(&r.dose_x_cmax) {
            doses.push(r.dose_x_cmax);
        }
    }
    doses
        .iter()
        .map(|&dose| {
            let at: Vec<&SampleResult> = rows.iter().filter(|r| r.dose_x_cmax == dose).collect();
            let ok: Vec<&DoseResult> = at.iter().filter_map(|r| r.result.as_ref().ok()).collect();
            DoseSummary {
                dose_x_cmax: dose,
                n_ok: ok.len(),
                n_failed: at.len() - ok.len(),
                qnet: median_ci(ok.iter().map(|d| d.qnet_nc_per_uf).collect()),
                apd90: median_ci(ok.iter().filter_map(|d| d.apd90_ms).collect()),
                ead_samples: ok.iter().filter(|d| d.ead()).count(),
                no_repol_samples: ok.iter().filter(|d| d.apd90_ms.is_none()).count(),
            }
        })
        .collect()
}

/// `samples_summary.csv` text, one row per dose.
pub fn summary_csv(drug: &str, s: &[DoseSummary]) -> String {
    let mut out = String::from(
        "drug,dose_x_cmax,n_ok,n_failed,qnet_median,qnet_lo95,qnet_hi95,apd90_median_ms,\
         apd90_lo95_ms,apd90_hi95_ms,ead_samples,no_repol_samples\n",
    );
    let f = |x: Option<[f64; 3]>, k: usize, p: usize| {
        x.map_or("NA".to_string(), |v| format!("{:.*}", p, v[k]))
    };
    for d in s {
        out.push_str(&format!(
            "{drug},{},{},{},{},{},{},{},{},{},{},{}\n",
            d.dose_x_cmax,
            d.n_ok,
            d.n_failed,
            f(d.qnet, 0, 4),
            f(d.qnet, 1, 4),
            f(d.qnet, 2, 4),
            f(d.apd90, 0, 1),
            f(d.apd90, 1, 1),
            f(d.apd90, 2, 1),
            d.ead_samples,
            d.no_repol_samples
        ));
    }
    out
}

/// TdP risk call with its uncertainty: each sample's qNet averaged over the (non-zero) doses is
/// classified; the fractions of samples per class are the CiPA way of reporting the uncertainty
/// of the call (Li et al. 2019).
#[derive(Clone, Debug, PartialEq)]
pub struct RiskUncertainty {
    /// Samples classified (all doses simulated successfully).
    pub n: usize,
    /// Fraction of samples called low, intermediate, high.
    pub fractions: [f64; 3],
    /// Category with the largest fraction (0 low, 1 intermediate, 2 high).
    pub call: usize,
    /// Median and 95 % interval of the per-sample mean qNet, nC/µF.
    pub mean_qnet: Option<[f64; 3]>,
}

impl RiskUncertainty {
    /// Name of the majority call.
    pub fn call_name(&self) -> &'static str {
        CATEGORIES[self.call]
    }
}

/// Classify every sample by its qNet averaged over the doses > 0 with `classifier`.
pub fn risk_uncertainty(rows: &[SampleResult], classifier: &TdpClassifier) -> RiskUncertainty {
    let mut ids: Vec<usize> = rows.iter().map(|r| r.sample).collect();
    ids.dedup();
    let mut means = Vec::new();
    for id in ids {
        let mine: Vec<&SampleResult> = rows
            .iter()
            .filter(|r| r.sample == id && r.dose_x_cmax > 0.0)
            .collect();
        if mine.is_empty() || mine.iter().any(|r| r.result.is_err()) {
            continue;
        }
        let m = mine
            .iter()
            .map(|r| r.result.as_ref().map_or(0.0, |d| d.qnet_nc_per_uf))
            .sum::<f64>()
            / mine.len() as f64;
        means.push(m);
    }
    let mut counts = [0usize; 3];
    for &m in &means {
        counts[classifier.predict(m)] += 1;
    }
    let n = means.len();
    let fractions = counts.map(|c| if n > 0 { c as f64 / n as f64 } else { 0.0 });
    let call = (0..3)
        .max_by(|&a, &b| counts[a].cmp(&counts[b]).then(b.cmp(&a)))
        .unwrap_or(0);
    RiskUncertainty {
        n,
        fractions,
        call,
        mean_qnet: median_ci(means),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drug::bundled_drugs;

    #[test]
    fn every_training_drug_has_fifty_parsable_samples() {
        for d in bundled_drugs() {
            let s = bundled_samples(&d.name, BUNDLED_SAMPLES).unwrap();
            assert_eq!(s.len(), 50, "{}", d.name);
            for x in &s {
                x.apply(&d).validate().unwrap();
            }
            // the blocked currents are the optimal fit's (NA columns agree)
            assert_eq!(
                s[0].block.iks.is_some(),
                d.block.iks.is_some(),
                "{}",
                d.name
            );
            assert_eq!(
                s[0].block.ina.is_some(),
                d.block.ina.is_some(),
                "{}",
                d.name
            );
        }
        assert!(bundled_samples("aspirin", 1).is_err());
        assert!(bundled_samples("dofetilide", 51).is_err());
    }

    #[test]
    fn first_dofetilide_sample_is_the_first_table_row() {
        let s = bundled_samples("dofetilide", 1).unwrap();
        assert_eq!(s[0].index, 1);
        assert_eq!(s[0].herg.kmax, 33.18);
        assert_eq!(s[0].herg.vhalf_mv, -1.13);
        assert_eq!(
            s[0].block.ical,
            Some(HillBlock {
                ic50_nm: 29060000.0,
                hill: 0.5139
            })
        );
        assert!(s[0].block.iks.is_none());
    }

    #[test]
    fn parse_errors_name_row_and_column() {
        let e = parse_samples("Kmax,Ku\n1,2\n", "ICaL_IC50\n1\n", ("b.csv", "i.csv"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("b.csv") && e.contains("'n'"), "{e}");
        let e = parse_samples(
            "Kmax,Ku,n,halfmax,Vhalf\n1,x,1,1,1\n",
            "ICaL_IC50\n1\n",
            ("b.csv", "i.csv"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("row 1") && e.contains("Ku"), "{e}");
    }

    #[test]
    fn quantiles_follow_r_type_7() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&v, 0.5), 2.5);
        assert!((quantile(&v, 0.025) - 1.075).abs() < 1e-12);
        assert_eq!(quantile(&v, 1.0), 4.0);
    }
}
