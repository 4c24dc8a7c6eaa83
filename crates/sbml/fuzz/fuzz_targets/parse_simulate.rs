//! Fuzz the SBML reader (XML, MathML, comp flattening, compilation) and, for documents that
//! compile, a short simulation under a deadline. Any panic is a finding; errors are fine.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = medtwin_sbml::flatten_comp(text, None);
    if let Ok(model) = medtwin_sbml::parse_sbml(text) {
        let _ = medtwin_sbml::info(&model);
        let opts = medtwin_sbml::SimulateOptions {
            end: 1.0,
            steps: 4,
            rtol: 1e-6,
            atol: 1e-9,
            ..Default::default()
        };
        let _ = medtwin_sbml::simulate_with_deadline(
            &model,
            &opts,
            Instant::now() + Duration::from_millis(20),
        );
    }
});
