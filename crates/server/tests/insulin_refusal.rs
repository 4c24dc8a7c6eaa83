//! The server's what-if refuses insulin plans on a twin whose record holds no insulin (the same
//! rule and words as the CLI and the Python package: `medtwin_twin::decide::require_insulin_data`),
//! as a client error naming the plan, while meal-only plans are still answered.

use std::path::Path;

use medtwin_io::RecordKind;
use medtwin_server::live::{run_whatif, WhatifRequest};
use medtwin_twin::{InputSchedule, TwinEngine, TwinSettings};

#[test]
fn insulin_what_ifs_are_refused_on_a_twin_without_insulin_data() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/t1d-uom");
    let (mut rec, _) = medtwin_io::import_t1d_uom(&data, "2313").unwrap();
    rec.entries
        .retain(|e| e.kind == RecordKind::Cgm || e.kind == RecordKind::Carbs);
    let first = rec
        .of_kind(RecordKind::Cgm)
        .next()
        .unwrap()
        .time
        .as_second();
    rec.entries
        .retain(|e| e.time.as_second() < first + 30 * 3600);
    let sched = InputSchedule::from_record(&rec).unwrap();
    let settings = TwinSettings {
        n_particles: 50,
        ..TwinSettings::default()
    };
    let mut engine = TwinEngine::start(&sched, settings).unwrap();
    engine
        .assimilate_until(&sched, sched.last_cgm_min())
        .unwrap();
    let doc = engine.to_twin(&sched, Some("p".into()));
    let req = |plans: &str| -> WhatifRequest {
        serde_json::from_str(&format!(r#"{{"horizon_min": 60, "plans": {plans}}}"#)).unwrap()
    };
    let bolus = req(
        r#"[{"name": "meal", "meals": [{"at_min": 0, "carbs_g": 40}]},
                        {"name": "bolus", "boluses": [{"at_min": 0, "units": 4}]}]"#,
    );
    let (client_error, msg) = run_whatif("p", &doc, &bolus).unwrap_err();
    assert!(
        client_error,
        "a refusal is the request's fault, not the server's"
    );
    assert!(
        msg.starts_with("plans[1]: a what-if with an insulin plan: refused")
            && msg.contains("without any insulin data"),
        "{msg}"
    );
    let basal = req(r#"[{"name": "temp basal", "basal": [{"at_min": 0, "u_per_h": 0.5}]}]"#);
    assert!(run_whatif("p", &doc, &basal).is_err());
    let meal =
        req(r#"[{"name": "meal", "meals": [{"at_min": 0, "carbs_g": 40}]}, {"name": "none"}]"#);
    let ok = run_whatif("p", &doc, &meal).unwrap();
    assert_eq!(ok.outcomes.len(), 2);

    // Bad times and amounts are the request's fault, named in the API's fields.
    let late = req(r#"[{"name": "late", "meals": [{"at_min": 100, "carbs_g": 40}]}]"#);
    assert_eq!(
        run_whatif("p", &doc, &late).unwrap_err(),
        (
            true,
            "plans[0].meals[0].at_min = 100 is outside the horizon [0, 60] min".to_string()
        )
    );
    let negative = req(
        r#"[{"name": "meal"}, {"name": "neg", "meals": [{"at_min": 0, "carbs_g": 10}],
            "boluses": [{"at_min": 0, "units": 1}, {"at_min": 5, "units": -1}]}]"#,
    );
    assert_eq!(
        run_whatif("p", &doc, &negative).unwrap_err(),
        (
            true,
            "plans[1].boluses[1] amount -1 must be finite and >= 0".to_string()
        )
    );
    let basal = req(r#"[{"name": "b", "basal": [{"at_min": -1, "u_per_h": 1}]}]"#);
    let (client, msg) = run_whatif("p", &doc, &basal).unwrap_err();
    assert!(
        client && msg.starts_with("plans[0].basal[0].at_min = -1"),
        "{msg}"
    );
}
