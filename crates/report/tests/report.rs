//! End-to-end tests: build a synthetic twin report and check the output.

use std::f64::consts::PI;
use std::path::PathBuf;

use medtwin_report::{
    cone_plot_svg, html_escape, write_twin_report, BacktestRow, Cone, ParameterPosterior,
    ReportError, Series, TwinReport,
};

/// A per-test output directory under the system temp dir.
fn out_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("medtwin-report-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Removes a test's output unless `MEDTWIN_KEEP_REPORT` is set (to look at it).
fn cleanup(dir: &std::path::Path) {
    if std::env::var_os("MEDTWIN_KEEP_REPORT").is_none() {
        let _ = std::fs::remove_dir_all(dir);
    } else {
        eprintln!("kept {}", dir.display());
    }
}

fn glucose(t: f64) -> f64 {
    // Daily rhythm plus meal-sized bumps every 6 h.
    140.0 + 55.0 * (2.0 * PI * t / 1440.0).sin() + 25.0 * (2.0 * PI * t / 360.0).sin()
}

/// Deterministic pseudo-random numbers in [0, 1).
fn lcg(seed: &mut u64) -> f64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (*seed >> 11) as f64 / (1u64 << 53) as f64
}

fn normal(seed: &mut u64) -> f64 {
    let (u1, u2) = (lcg(seed).max(1e-12), lcg(seed));
    (-2.0 * u1.ln()).sqrt() * (2.0 * PI * u2).cos()
}

fn cone(origin: f64, horizon_min: usize, sharpness: f64) -> Cone {
    let t_min: Vec<f64> = (0..=horizon_min).map(|k| origin + k as f64).collect();
    let median: Vec<f64> = t_min
        .iter()
        .map(|&t| glucose(t) + 8.0 * ((t - origin) / 60.0))
        .collect();
    let sd: Vec<f64> = t_min
        .iter()
        .map(|&t| (4.0 + 0.25 * (t - origin)) * sharpness)
        .collect();
    let band = |z: f64| -> Vec<f64> { median.iter().zip(&sd).map(|(m, s)| m + z * s).collect() };
    Cone {
        origin_min: origin,
        lo50: band(-0.674),
        hi50: band(0.674),
        lo80: band(-1.2816),
        hi80: band(1.2816),
        lo95: band(-1.96),
        hi95: band(1.96),
        t_min,
        median,
        p_below_70: 0.04 * sharpness,
        p_above_250: 0.31 * sharpness,
    }
}

fn synthetic() -> TwinReport {
    let t: Vec<f64> = (0..(2 * 288))
        .map(|k| k as f64 * 5.0)
        .filter(|t| !(1500.0..1600.0).contains(t))
        .collect();
    let values = t.iter().map(|&t| glucose(t)).collect();
    let mut seed = 7u64;
    let mut param =
        |name: &str, unit: &str, desc: &str, prior: (f64, f64), post: (f64, f64), log: bool| {
            let draw = |(m, s): (f64, f64), seed: &mut u64| -> Vec<f64> {
                (0..2000)
                    .map(|_| {
                        let z = normal(seed);
                        if log {
                            (m + s * z).exp()
                        } else {
                            m + s * z
                        }
                    })
                    .collect()
            };
            ParameterPosterior {
                name: name.into(),
                unit: unit.into(),
                description: desc.into(),
                prior_samples: draw(prior, &mut seed),
                posterior_samples: draw(post, &mut seed),
            }
        };
    let parameters = vec![
        param(
            "ISF",
            "mg/dL/U",
            "Insulin sensitivity factor",
            (40.0, 12.0),
            (52.0, 3.0),
            false,
        ),
        param(
            "k_abs",
            "1/min",
            "Carbohydrate absorption rate",
            (-4.0, 1.5),
            (-3.6, 0.3),
            true,
        ),
    ];
    TwinReport {
        title: "Digital twin of patient <P01> & friends".into(),
        patient_id: "P01".into(),
        data_citation: "Synthetic test data (sine waves), medtwin test suite.".into(),
        origin_label: "2023-11-13 00:00 Europe/London".into(),
        cgm: Series { t_min: t, values },
        carbs: vec![
            (7.0 * 60.0, 45.0),
            (12.5 * 60.0, 60.0),
            (19.0 * 60.0, 70.0),
            (31.0 * 60.0, 40.0),
            (36.5 * 60.0, 55.0),
        ],
        boluses: vec![
            (6.9 * 60.0, 4.5),
            (12.4 * 60.0, 6.0),
            (18.9 * 60.0, 7.0),
            (31.0 * 60.0, 4.0),
            (36.4 * 60.0, 5.5),
        ],
        cones: vec![
            cone(8.0 * 60.0, 240, 1.0),
            cone(20.0 * 60.0, 240, 1.0),
            cone(33.0 * 60.0, 240, 1.0),
        ],
        narrowing: vec![
            ("after 1 day".into(), cone(40.0 * 60.0, 180, 1.6)),
            ("after 3 days".into(), cone(40.0 * 60.0, 180, 1.0)),
            ("after 7 days".into(), cone(40.0 * 60.0, 180, 0.6)),
        ],
        parameters,
        backtest: vec![
            BacktestRow {
                horizon_min: 30,
                n: 500,
                rmse_mg_dl: 18.2,
                mae_mg_dl: 13.1,
                persistence_rmse_mg_dl: 21.0,
                coverage_80: 0.78,
                coverage_95: 0.93,
                mean_width_80_mg_dl: 41.0,
            },
            BacktestRow {
                horizon_min: 120,
                n: 480,
                rmse_mg_dl: 41.5,
                mae_mg_dl: 31.0,
                persistence_rmse_mg_dl: 40.2,
                coverage_80: 0.66,
                coverage_95: 0.90,
                mean_width_80_mg_dl: 88.0,
            },
        ],
        notes: vec![
            "Methods: the twin was calibrated by <b>SMC</b> on the first day.".into(),
            "Import warning: 20 readings missing on day 2.\n\nSecond paragraph.".into(),
        ],
        tables: vec![(
            "Imported files <raw>".into(),
            vec!["File".into(), "Rows".into()],
            vec![
                vec!["cgm.csv".into(), "576".into()],
                vec!["meals & insulin.csv".into(), "10".into()],
            ],
        )],
    }
}

#[test]
fn full_report_has_all_sections_and_files() {
    let dir = out_dir("full");
    let index = write_twin_report(&synthetic(), &dir).expect("report written");
    assert_eq!(index, dir.join("index.html"));
    let html = std::fs::read_to_string(&index).unwrap();

    // Document structure.
    assert!(html.starts_with("<!DOCTYPE html>"));
    for id in [
        "summary",
        "cgm",
        "forecasts",
        "narrowing",
        "parameters",
        "backtest",
        "tables",
        "notes",
    ] {
        assert!(
            html.contains(&format!("<section id=\"{id}\">")),
            "missing section {id}"
        );
    }
    assert!(html.contains("P01"));
    assert!(html.contains("2023-11-13 00:00 Europe/London"));
    assert!(html.contains("Synthetic test data"));
    // Escaping of every user-supplied text.
    assert!(html.contains("Digital twin of patient &lt;P01&gt; &amp; friends"));
    assert!(!html.contains("<P01>"));
    assert!(!html.contains("<b>SMC</b>"));
    assert!(html.contains("&lt;b&gt;SMC&lt;/b&gt;"));
    assert!(html.contains("Imported files &lt;raw&gt;"));
    assert!(html.contains("meals &amp; insulin.csv"));
    // Self-contained: no scripts or external resources.
    assert!(!html.contains("<script"));
    assert!(!html.contains("<link"));
    assert!(
        !html.contains("http://")
            || html.matches("http://").count()
                == html.matches("xmlns=\"http://www.w3.org/2000/svg\"").count()
    );
    assert!(!html.contains("https://"));

    // Figures: inline SVG with polygons (bands), paths (lines), text labels.
    let n_svg = html.matches("<svg").count();
    // cgm, AGP, overview, 3 cones, narrowing, narrowing width, posteriors, backtest
    assert_eq!(n_svg, 10, "expected 10 inline figures");
    assert!(html.contains("Ambulatory glucose profile"));
    assert!(html.contains("Hypoglycaemia episodes:"));
    assert!(html.contains("<polygon"));
    assert!(html.contains("<polyline") || html.contains("<path"));
    assert!(html.contains("Glucose (mg/dL)"));
    assert!(html.contains("Hours since 2023-11-13 00:00 Europe/London"));
    assert!(html.contains("Median forecast"));
    assert!(html.contains("95 % band"));
    assert!(html.contains("Population prior"));
    assert!(html.contains("ISF (mg/dL/U)"));
    assert!(
        html.contains("log scale"),
        "k_abs spans decades and should use a log axis"
    );
    assert!(!html.contains("Figure skipped"));

    // Tables: summary metrics, cones, backtest ratio column.
    assert!(html.contains("Time in range 70–180"));
    assert!(html.contains("RMSE ratio"));
    assert!(html.contains(">0.87<"), "30-min RMSE ratio 18.2/21.0");
    assert!(html.contains(">1.03<"), "120-min RMSE ratio 41.5/40.2");
    assert!(
        html.contains("Tue 2023-11-14 09:00"),
        "wall-clock of cone #3 origin"
    );

    // Standalone SVG files next to the HTML.
    for f in [
        "cgm.svg",
        "agp.svg",
        "cones_overview.svg",
        "cone_1.svg",
        "cone_2.svg",
        "cone_3.svg",
        "narrowing.svg",
        "narrowing_width.svg",
        "posteriors.svg",
        "backtest.svg",
    ] {
        let svg = std::fs::read_to_string(dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(
            svg.contains("<svg") && svg.contains("xmlns=\"http://www.w3.org/2000/svg\""),
            "{f}"
        );
        assert!(svg.trim_end().ends_with("</svg>"), "{f} not closed");
    }
    cleanup(&dir);
}

#[test]
fn nan_and_empty_inputs_do_not_panic() {
    let dir = out_dir("nan");
    let mut r = synthetic();
    // CGM with NaNs, infinities and mismatched lengths.
    r.cgm.values[3] = f64::NAN;
    r.cgm.values[10] = f64::INFINITY;
    r.cgm.t_min[20] = f64::NAN;
    r.cgm.t_min.push(5000.0);
    // A cone that is entirely NaN, one with ragged vectors, one with holes.
    let mut bad = r.cones[0].clone();
    bad.median.iter_mut().for_each(|v| *v = f64::NAN);
    let mut ragged = r.cones[1].clone();
    ragged.hi95.truncate(10);
    ragged.p_below_70 = f64::NAN;
    let mut holes = r.cones[2].clone();
    for k in (50..80).chain(150..160) {
        holes.lo80[k] = f64::NAN;
    }
    r.cones = vec![bad, ragged, holes, Cone::default()];
    r.narrowing.push(("empty".into(), Cone::default()));
    r.parameters.push(ParameterPosterior {
        name: "empty".into(),
        ..Default::default()
    });
    r.parameters.push(ParameterPosterior {
        name: "constant".into(),
        unit: "".into(),
        description: "".into(),
        prior_samples: vec![1.0; 50],
        posterior_samples: vec![f64::NAN, 1.0, 1.0],
    });
    r.backtest.push(BacktestRow {
        horizon_min: 60,
        n: 0,
        rmse_mg_dl: f64::NAN,
        ..Default::default()
    });
    r.carbs.push((f64::NAN, 20.0));
    r.boluses.push((100.0, f64::INFINITY));
    r.tables.push((
        "ragged".into(),
        vec![],
        vec![
            vec!["a".into()],
            vec![],
            vec!["1".into(), "2".into(), "3".into()],
        ],
    ));

    let index = write_twin_report(&r, &dir).expect("report written");
    let html = std::fs::read_to_string(index).unwrap();
    assert!(html.contains("Data warning"));
    assert!(
        html.contains("Figure skipped"),
        "the all-NaN cone panel is skipped with a note"
    );
    assert!(html.contains("no finite forecast"));
    assert!(html.contains("empty: no finite samples"));
    assert!(html.contains("</html>"));
    cleanup(&dir);
}

#[test]
fn completely_empty_report_still_renders() {
    let dir = out_dir("empty");
    let index = write_twin_report(&TwinReport::default(), &dir).expect("report written");
    let html = std::fs::read_to_string(index).unwrap();
    assert!(html.contains("No CGM data"));
    assert!(html.contains("No forecasts were supplied"));
    assert!(html.contains("Figure skipped"));
    assert_eq!(html.matches("<svg").count(), 0);

    // All-NaN CGM behaves like empty.
    let r = TwinReport {
        cgm: Series {
            t_min: vec![f64::NAN; 5],
            values: vec![f64::NAN; 5],
        },
        parameters: vec![ParameterPosterior {
            name: "x".into(),
            prior_samples: vec![f64::NAN],
            ..Default::default()
        }],
        backtest: vec![BacktestRow::default()],
        ..Default::default()
    };
    write_twin_report(&r, &out_dir("allnan")).expect("report written");
    cleanup(&dir);
    cleanup(&out_dir("allnan"));
}

#[test]
fn cone_plot_svg_is_reusable() {
    let r = synthetic();
    let svg = cone_plot_svg(&r.cgm, &r.cones[..1], 6.0 * 60.0, 12.5 * 60.0, "One <cone>").unwrap();
    assert!(svg.starts_with("<svg"));
    assert!(svg.contains("One &lt;cone&gt;"));
    assert!(svg.contains("<polygon"));
    assert!(svg.contains("CGM after the origin"));
    // Several cones and a window with only CGM.
    assert!(cone_plot_svg(&r.cgm, &r.cones, 0.0, 2880.0, "all").is_ok());
    assert!(cone_plot_svg(&r.cgm, &[], 0.0, 600.0, "cgm only").is_ok());
    assert!(matches!(
        cone_plot_svg(&Series::default(), &[], 0.0, 600.0, "nothing"),
        Err(ReportError::NoData { .. })
    ));
}

#[test]
fn io_error_names_the_file() {
    // A regular file where the output directory should be.
    let base = out_dir("io");
    std::fs::create_dir_all(&base).unwrap();
    let blocker = base.join("not_a_dir");
    std::fs::write(&blocker, "x").unwrap();
    let err = write_twin_report(&TwinReport::default(), &blocker.join("sub")).unwrap_err();
    assert!(matches!(err, ReportError::CreateDir { .. }));
    assert!(err.to_string().contains("not_a_dir"), "{err}");
    // index.html is a directory: writing it fails and names it.
    let d2 = base.join("out");
    std::fs::create_dir_all(d2.join("index.html")).unwrap();
    let err = write_twin_report(&TwinReport::default(), &d2).unwrap_err();
    assert!(matches!(err, ReportError::Write { .. }));
    assert!(err.to_string().contains("index.html"), "{err}");
    cleanup(&base);
}

#[test]
fn escape_is_public() {
    assert_eq!(html_escape("a<b"), "a&lt;b");
}

#[test]
fn long_record_uses_days_and_limits_panels() {
    let dir = out_dir("long");
    let mut r = synthetic();
    let t: Vec<f64> = (0..(14 * 288)).map(|k| k as f64 * 5.0).collect();
    r.cgm = Series {
        values: t.iter().map(|&t| glucose(t)).collect(),
        t_min: t,
    };
    r.carbs = (0..42)
        .map(|k| (k as f64 * 480.0 + 420.0, 30.0 + (k % 3) as f64 * 20.0))
        .collect();
    r.boluses = r.carbs.iter().map(|&(t, g)| (t - 5.0, g / 10.0)).collect();
    r.cones = (0..30)
        .map(|k| cone(600.0 + k as f64 * 600.0, 120, 1.0))
        .collect();
    let index = write_twin_report(&r, &dir).expect("report written");
    let html = std::fs::read_to_string(index).unwrap();
    assert!(html.contains("Days since 2023-11-13 00:00 Europe/London"));
    assert!(html.contains("Only the first 24 of 30 forecasts"));
    assert!(dir.join("cone_24.svg").exists());
    assert!(!dir.join("cone_25.svg").exists());
    assert!(
        !dir.join("cones_overview.svg").exists(),
        "no overview for records over 7 days"
    );
    cleanup(&dir);
}
