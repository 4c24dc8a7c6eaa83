//! Control-variability grid analysis (CVGA) plot.
//!
//! Magni L et al., *Evaluating the efficacy of closed-loop glucose regulation via
//! control-variability grid analysis*, J Diabetes Sci Technol 2(4):630–635, 2008: one point per
//! patient at (2.5th percentile of glucose, 97.5th percentile), both clipped — the lower to
//! 50–110 mg/dL on a reversed x-axis, the upper to 110–400 mg/dL — on a 3 × 3 grid with zones
//! A (90–110 / 110–180), B, C, D and E.

use crate::plots::render;
use crate::ReportError;
use plotters::prelude::*;

/// One patient's point: `(series label, lower 2.5th percentile mg/dL, upper 97.5th percentile mg/dL)`.
pub type CvgaPoint = (String, f64, f64);

/// Zone of a CVGA point (after clipping): "A", "Lower B", "B", "Upper B", "Lower C", "Upper C",
/// "Lower D", "Upper D" or "E".
pub fn cvga_zone(lower_mg_dl: f64, upper_mg_dl: f64) -> &'static str {
    let lo = lower_mg_dl.clamp(50.0, 110.0);
    let hi = upper_mg_dl.clamp(110.0, 400.0);
    let x = if lo >= 90.0 {
        0
    } else if lo >= 70.0 {
        1
    } else {
        2
    };
    let y = if hi <= 180.0 {
        0
    } else if hi <= 300.0 {
        1
    } else {
        2
    };
    match (x, y) {
        (0, 0) => "A",
        (1, 0) => "Lower B",
        (0, 1) => "Upper B",
        (1, 1) => "B",
        (2, 0) => "Lower C",
        (0, 2) => "Upper C",
        (2, 1) => "Lower D",
        (1, 2) => "Upper D",
        _ => "E",
    }
}

/// CVGA scatter as an SVG string; one colour per series label (e.g. controller).
/// Errors: plotting failures ([`ReportError::Plot`]); empty input ([`ReportError::NoData`]).
pub fn cvga_svg(points: &[CvgaPoint], title: &str) -> Result<String, ReportError> {
    let finite: Vec<&CvgaPoint> = points
        .iter()
        .filter(|p| p.1.is_finite() && p.2.is_finite())
        .collect();
    if finite.is_empty() {
        return Err(ReportError::NoData {
            figure: "cvga".into(),
            reason: "no finite points".into(),
        });
    }
    let mut labels: Vec<&str> = Vec::new();
    for p in &finite {
        if !labels.contains(&p.0.as_str()) {
            labels.push(&p.0);
        }
    }
    let palette = [
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
        RGBColor(255, 127, 14),
    ];
    render("cvga", (640, 560), |root| {
        // x is "110 − lower" so the axis runs 110 → 50 left to right.
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(52)
            .build_cartesian_2d(0f64..60f64, 110f64..400f64)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("2.5th percentile of glucose (mg/dL)")
            .y_desc("97.5th percentile of glucose (mg/dL)")
            .x_labels(7)
            .x_label_formatter(&|x| format!("{:.0}", 110.0 - x))
            .draw()?;
        let zone_fill = |x0: f64, x1: f64, y0: f64, y1: f64, c: RGBColor| {
            Rectangle::new([(x0, y0), (x1, y1)], c.mix(0.18).filled())
        };
        let (g, y, o, r) = (
            RGBColor(40, 160, 60),
            RGBColor(230, 200, 40),
            RGBColor(240, 140, 40),
            RGBColor(220, 50, 40),
        );
        chart.draw_series([
            zone_fill(0.0, 20.0, 110.0, 180.0, g),
            zone_fill(20.0, 40.0, 110.0, 180.0, g),
            zone_fill(0.0, 20.0, 180.0, 300.0, g),
            zone_fill(20.0, 40.0, 180.0, 300.0, y),
            zone_fill(40.0, 60.0, 110.0, 180.0, o),
            zone_fill(0.0, 20.0, 300.0, 400.0, o),
            zone_fill(40.0, 60.0, 180.0, 300.0, r),
            zone_fill(20.0, 40.0, 300.0, 400.0, r),
            zone_fill(40.0, 60.0, 300.0, 400.0, RGBColor(170, 20, 20)),
        ])?;
        for (x, yv, name) in [
            (10.0, 145.0, "A"),
            (30.0, 145.0, "Lower B"),
            (10.0, 240.0, "Upper B"),
            (30.0, 240.0, "B"),
            (50.0, 145.0, "Lower C"),
            (10.0, 350.0, "Upper C"),
            (50.0, 240.0, "Lower D"),
            (30.0, 350.0, "Upper D"),
            (50.0, 350.0, "E"),
        ] {
            chart.draw_series(std::iter::once(Text::new(
                name,
                (x - 4.0, yv),
                ("sans-serif", 13).into_font().color(&RGBColor(90, 90, 90)),
            )))?;
        }
        for (k, label) in labels.iter().enumerate() {
            let c = palette[k % palette.len()];
            chart
                .draw_series(finite.iter().filter(|p| p.0 == *label).map(|p| {
                    Circle::new(
                        (110.0 - p.1.clamp(50.0, 110.0), p.2.clamp(110.0, 400.0)),
                        4,
                        c.filled(),
                    )
                }))?
                .label(*label)
                .legend(move |(x, yy)| Circle::new((x, yy), 4, c.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperMiddle)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn zones_and_svg() {
        assert_eq!(cvga_zone(100.0, 150.0), "A");
        assert_eq!(cvga_zone(80.0, 150.0), "Lower B");
        assert_eq!(cvga_zone(40.0, 500.0), "E");
        assert_eq!(cvga_zone(95.0, 350.0), "Upper C");
        let svg = cvga_svg(
            &[("mpc".into(), 95.0, 170.0), ("bb".into(), 60.0, 320.0)],
            "CVGA",
        )
        .unwrap();
        assert!(svg.contains("<svg") && svg.contains("mpc"));
        assert!(cvga_svg(&[], "x").is_err());
    }
}
