//! Incremental loading keeps the twin's meaning: a twin continued from the window of data the
//! server loads (`live::twin_window`, through the store) ends in exactly the state, and
//! forecasts exactly (with the history the server adds for forecasts), as the same twin
//! continued from the patient's whole record.

use std::path::Path;

use medtwin_io::{Record, RecordKind};
use medtwin_store::{NewDatum, Store};
use medtwin_twin::{InputSchedule, TwinEngine, TwinSettings};

#[test]
fn windowed_continuation_matches_the_whole_record() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/t1d-uom");
    let (rec, _) = medtwin_io::import_t1d_uom(&data, "2313").unwrap();
    let first = rec
        .of_kind(RecordKind::Cgm)
        .next()
        .unwrap()
        .time
        .as_second();
    let upto = |h: i64| {
        Record::new(
            Default::default(),
            rec.entries
                .iter()
                .filter(|e| e.time.as_second() < first + h * 3600)
                .cloned()
                .collect(),
        )
    };
    let (rec30, rec40) = (upto(30), upto(40));
    // The window must reach back for the inputs still acting; the test needs some.
    assert!(rec40
        .entries
        .iter()
        .any(|e| e.kind == RecordKind::BasalRate || e.kind == RecordKind::LongActing));

    let dir = std::env::temp_dir().join(format!("medtwin-incremental-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("t.db").display());
    let rt = medtwin_server::runtime().unwrap();
    let store = rt.block_on(async {
        let store = Store::open(&url).await.unwrap();
        let rows: Vec<NewDatum> = rec40
            .entries
            .iter()
            .map(|e| NewDatum {
                patient_id: "p".into(),
                entry: e.clone(),
                source_unit: e.unit.clone(),
            })
            .collect();
        store
            .ingest(&["p".to_string()], &rows, 0, &[])
            .await
            .unwrap();
        store
    });

    let sched30 = InputSchedule::from_record(&rec30).unwrap();
    let settings = TwinSettings {
        n_particles: 40,
        ..TwinSettings::default()
    };
    let mut e = TwinEngine::start(&sched30, settings).unwrap();
    e.assimilate_until(&sched30, sched30.last_cgm_min())
        .unwrap();
    let twin = e.to_twin(&sched30, Some("p".into()));
    let origin = twin.schedule.origin().unwrap();

    // Continued from the whole record.
    let full = InputSchedule::from_record(&rec40).unwrap();
    let mut a = TwinEngine::from_twin(&twin).unwrap();
    // Continued from the server's window.
    let (window, last_ms) = rt
        .block_on(medtwin_server::live::twin_window(
            &store, "p", origin, twin.t_min,
        ))
        .unwrap();
    assert!(
        window.entries.len() < rec40.entries.len() / 2,
        "not a window"
    );
    let win = InputSchedule::from_record_at(&window, origin);
    assert_eq!(win.last_cgm_min(), full.last_cgm_min());
    assert_eq!(
        last_ms,
        rec40
            .of_kind(RecordKind::Cgm)
            .map(|e| e.time.as_millisecond())
            .max()
            .unwrap()
    );
    let mut b = TwinEngine::from_twin(&twin).unwrap();
    let until = full.last_cgm_min();
    let mut t = twin.t_min;
    while t < until {
        t = (t + 360.0).min(until);
        a.assimilate_until(&full, t).unwrap();
        b.assimilate_until(&win, t).unwrap();
    }
    let (ta, tb) = (a.to_twin(&full, None), b.to_twin(&win, None));
    assert_eq!(ta.particles, tb.particles);
    assert_eq!(ta.weights, tb.weights);
    assert_eq!(ta.log_lik, tb.log_lik);
    // Forecasts: the server completes the window with the recorded history (what the hybrid
    // forecast learns from).
    let history = rt
        .block_on(medtwin_server::live::forecast_history(&store, "p", last_ms))
        .unwrap();
    let win_f = medtwin_server::live::with_history(&win, b.filter.t_min, &history).unwrap();
    let fa = a.forecast(&full, 120, None, 1).unwrap();
    let fb = b.forecast(&win_f, 120, None, 1).unwrap();
    assert_eq!(fa.p_below, fb.p_below);
    for (x, y) in fa.bands.iter().zip(&fb.bands) {
        assert_eq!((x.median, x.lo95, x.hi95), (y.median, y.lo95, y.hi95));
    }
    rt.block_on(store.close());
    let _ = std::fs::remove_dir_all(&dir);
}
