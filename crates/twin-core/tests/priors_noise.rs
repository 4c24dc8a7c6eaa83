//! The joint Gaussian prior (`prior_correlation`) and the combined residual-error noise model.

use medtwin_twin_core::{CalibrationSpec, Estimated, Noise, Prior};

fn lognormal(id: &str, median: f64, sd_log: f64) -> Estimated {
    Estimated {
        id: id.into(),
        prior: Prior::LogNormal { median, sd_log },
        lower: None,
        upper: None,
    }
}

/// With a correlation matrix the prior is the bivariate normal on the log scale:
/// checked against the closed-form density.
#[test]
fn correlated_prior_is_the_bivariate_normal_on_the_log_scale() {
    let (m1, s1, m2, s2, rho) = (2.0_f64, 0.3_f64, 0.5_f64, 0.6_f64, -0.7_f64);
    let spec = CalibrationSpec {
        estimate: vec![lognormal("CL", m1, s1), lognormal("V", m2, s2)],
        prior_correlation: Some(vec![1.0, rho, rho, 1.0]),
        ..CalibrationSpec::default()
    };
    let l = spec.correlation_factor().unwrap().unwrap();
    for z in [[0.7, -0.7], [0.2, -0.3], [1.5, 0.4]] {
        let (u, v) = ((z[0] - m1.ln()) / s1, (z[1] - m2.ln()) / s2);
        let q = (u * u - 2.0 * rho * u * v + v * v) / (1.0 - rho * rho);
        let want =
            -0.5 * q - (2.0 * std::f64::consts::PI * s1 * s2 * (1.0 - rho * rho).sqrt()).ln();
        let got = spec.log_prior(&z, Some(&l));
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    }
    // Without the correlation the prior is the product of the marginals.
    let indep = CalibrationSpec {
        prior_correlation: None,
        ..spec.clone()
    };
    let z = [0.2, -0.3];
    let want: f64 = indep
        .estimate
        .iter()
        .zip(z)
        .map(|(e, zi)| e.log_prior(zi))
        .sum();
    assert_eq!(indep.log_prior(&z, None), want);
    // Round trip through TOML.
    let toml = "prior_correlation = [1.0, -0.7, -0.7, 1.0]\n[[estimate]]\nid = \"CL\"\nprior = { distribution = \"log-normal\", median = 2.0, sd_log = 0.3 }\n[[estimate]]\nid = \"V\"\nprior = { distribution = \"log-normal\", median = 0.5, sd_log = 0.6 }\n";
    let parsed = CalibrationSpec::from_toml(toml, "spec.toml").unwrap();
    assert_eq!(parsed.prior_correlation, spec.prior_correlation);
}

/// Bad correlation matrices are refused with the reason.
#[test]
fn bad_prior_correlation_is_refused_with_the_reason() {
    let base = CalibrationSpec {
        estimate: vec![lognormal("a", 1.0, 0.5), lognormal("b", 1.0, 0.5)],
        ..CalibrationSpec::default()
    };
    let err = |r: Vec<f64>, spec: &CalibrationSpec| {
        CalibrationSpec {
            prior_correlation: Some(r),
            ..spec.clone()
        }
        .correlation_factor()
        .unwrap_err()
        .to_string()
    };
    assert!(err(vec![1.0, 0.5, 0.5], &base).contains("3 entries"));
    assert!(err(vec![1.0, 0.5, 0.4, 1.0], &base).contains("must be equal"));
    assert!(err(vec![2.0, 0.0, 0.0, 1.0], &base).contains("diagonal"));
    assert!(err(vec![1.0, 1.0, 1.0, 1.0], &base).contains("(-1, 1)"));
    let mut uni = base.clone();
    uni.estimate[1].prior = Prior::Uniform {
        lower: 0.1,
        upper: 2.0,
    };
    assert!(err(vec![1.0, 0.1, 0.1, 1.0], &uni).contains("uniform prior"));
    let three = CalibrationSpec {
        estimate: vec![
            lognormal("a", 1.0, 0.5),
            lognormal("b", 1.0, 0.5),
            lognormal("c", 1.0, 0.5),
        ],
        ..CalibrationSpec::default()
    };
    // Pairwise valid, jointly not positive definite.
    let r = vec![1.0, 0.9, -0.9, 0.9, 1.0, 0.9, -0.9, 0.9, 1.0];
    assert!(err(r, &three).contains("not positive definite"));
}

/// Combined error: Normal with variance σ_add² + σ_prop² m²; additive and proportional are its
/// special cases; invalid parameters are refused.
#[test]
fn combined_noise_is_normal_with_prediction_dependent_variance() {
    let c = Noise::Combined {
        sigma_add: 0.5,
        sigma_prop: 0.1,
    };
    let (y, m) = (11.0, 10.0);
    let sd = (0.25_f64 + 1.0).sqrt();
    let want = Noise::Normal { sigma: sd }.log_density(y, m);
    assert!((c.log_density(y, m) - want).abs() < 1e-14);
    assert_eq!(c.draw(m, 2.0), m + 2.0 * sd);
    let add = Noise::Combined {
        sigma_add: 0.5,
        sigma_prop: 0.0,
    };
    assert_eq!(
        add.log_density(y, m),
        Noise::Normal { sigma: 0.5 }.log_density(y, m)
    );
    let prop = Noise::Combined {
        sigma_add: 0.0,
        sigma_prop: 0.1,
    };
    assert!((prop.sd_at(m) - 1.0).abs() < 1e-15);
    assert!(prop.log_density(1.0, 0.0).is_finite() || prop.log_density(1.0, 0.0) < -1e10);
    assert!(c.check().is_ok());
    let both_zero = Noise::Combined {
        sigma_add: 0.0,
        sigma_prop: 0.0,
    };
    assert!(both_zero.check().unwrap_err().contains("not both 0"));
    assert!(Noise::Combined {
        sigma_add: -1.0,
        sigma_prop: 0.1
    }
    .check()
    .is_err());
    let toml = "[[observable]]\nid = \"C\"\nnoise = { distribution = \"combined\", sigma_add = 0.5, sigma_prop = 0.1 }\n";
    let spec = CalibrationSpec::from_toml(toml, "spec.toml").unwrap();
    assert_eq!(spec.observables[0].noise, c);
}
