//! Issue 15, item 5: one patient's backlog cannot stall the other patients' twins. A patient
//! whose twin must catch up on days of data (a pump or phone that uploads a week at once, or a
//! first import) is brought up to date in slices of at most
//! [`medtwin_server::live::CATCH_UP_SLICE_MIN`] minutes of twin time, and is queued again
//! behind the patients waiting; so a patient whose 26 h of CGM arrive meanwhile is calibrated
//! while the backlog is still being worked off, not after it.

use std::path::Path;
use std::time::{Duration, Instant};

use medtwin_io::{RecordEntry, RecordKind};
use medtwin_server::client::{agent, request};
use medtwin_server::ServerConfig;
use medtwin_store::{NewDatum, Role};
use serde_json::Value;

#[test]
fn one_patients_backlog_does_not_stall_another_patients_twin() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/t1d-uom");
    let (rec, _) = medtwin_io::import_t1d_uom(&data, "2313").unwrap();
    let first = rec
        .of_kind(RecordKind::Cgm)
        .next()
        .unwrap()
        .time
        .as_second();
    // Every datum of hours [0, h) of the record, shifted so that hour h ends 10 min ago.
    let now_s = jiff::Timestamp::now().as_second() / 60 * 60;
    let part = |h: i64| -> Vec<RecordEntry> {
        let shift = now_s - 600 - (first + h * 3600);
        rec.entries
            .iter()
            .filter(|e| (first..first + h * 3600).contains(&e.time.as_second()))
            .map(|e| {
                let mut e = e.clone();
                e.time = jiff::Timestamp::from_second(e.time.as_second() + shift).unwrap();
                e
            })
            .collect()
    };
    let backlog_days = 6;
    let backlog = part(24 * backlog_days);
    let cgm_days = |v: &[RecordEntry]| {
        let t: Vec<i64> = v
            .iter()
            .filter(|e| e.kind == RecordKind::Cgm)
            .map(|e| e.time.as_second())
            .collect();
        (t.iter().max().unwrap() - t.iter().min().unwrap()) as f64 / 86_400.0
    };
    assert!(cgm_days(&backlog) > 5.0, "{} days", cgm_days(&backlog));
    let quiet = part(26);
    let last_ms = |v: &[RecordEntry]| {
        v.iter()
            .filter(|e| e.kind == RecordKind::Cgm)
            .map(|e| e.time.as_millisecond())
            .max()
            .unwrap()
    };
    let backlog_last = last_ms(&backlog);

    let dir = std::env::temp_dir().join(format!("medtwin-isolation-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = format!("sqlite://{}", dir.join("t.db").display());
    let rt = medtwin_server::runtime().unwrap();
    // The backlog is in the store before the server starts: the start-up sweep queues it.
    let admin = rt.block_on(async {
        let s = medtwin_store::Store::open(&db).await.unwrap();
        let t = s.create_token(Role::Admin, &[], "test").await.unwrap();
        let rows: Vec<NewDatum> = backlog
            .iter()
            .map(|e| NewDatum {
                patient_id: "busy".into(),
                entry: e.clone(),
                source_unit: e.unit.clone(),
            })
            .collect();
        s.ingest(&["busy".to_string()], &rows, medtwin_store::now_ms(), &[])
            .await
            .unwrap();
        s.close().await;
        t
    });
    let mut cfg = ServerConfig::new(&db, "127.0.0.1:0".parse().unwrap());
    cfg.particles = 500;
    cfg.horizon_min = 30;
    // One twin thread: the strictest case (with one per core, as many backlogs as cores
    // would otherwise stall everyone).
    cfg.workers = 1;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (addr, task) = rt.block_on(async {
        medtwin_server::start(cfg, async {
            let _ = stopped.await;
        })
        .await
        .unwrap()
    });
    let base = format!("http://{addr}");
    let auth = format!("Bearer {admin}");
    let a = agent();
    let hdr = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    let twin = |pid: &str| -> Value {
        let r = request(
            &a,
            "GET",
            &format!("{base}/patients/{pid}/twin"),
            &hdr,
            None,
        )
        .unwrap();
        serde_json::from_str(&r.1).unwrap_or_default()
    };
    let data_ms = |v: &Value| {
        v["data_time"]
            .as_str()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map(|t| t.as_millisecond())
    };
    let wait = |what: &str, f: &mut dyn FnMut() -> bool| {
        let t = Instant::now();
        while !f() {
            assert!(t.elapsed() < Duration::from_secs(900), "timed out: {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
        t.elapsed()
    };
    // The start-up sweep has queued the backlogged patient and a worker has taken it: it is
    // in its first fit (no twin saved yet) when the other patient's data arrive.
    std::thread::sleep(Duration::from_millis(300));
    let r = request(&a, "GET", &format!("{base}/healthz"), &[], None).unwrap();
    let h: Value = serde_json::from_str(&r.1).unwrap();
    assert_eq!(h["live"]["queued"], 0, "{h}");
    assert_eq!(
        twin("busy")["status"],
        "none",
        "the backlog was worked off too fast to test"
    );
    // Meanwhile another patient's first 26 h arrive, in one upload.
    let b = medtwin_server::fhir::bundle_of("quiet", &quiet).to_string();
    let r = request(
        &a,
        "POST",
        &format!("{base}/fhir/Bundle"),
        &hdr,
        Some(b.as_bytes()),
    )
    .unwrap();
    assert_eq!(r.0, 200, "{}", r.1);
    let mut busy_then = Value::Null;
    let waited = wait("the quiet patient's twin", &mut || {
        let q = twin("quiet");
        if q["status"] == "ok" {
            busy_then = twin("busy");
            true
        } else {
            false
        }
    });
    let busy_ms = data_ms(&busy_then);
    let behind_h = busy_ms.map(|t| (backlog_last - t) as f64 / 3.6e6);
    eprintln!(
        "quiet patient calibrated {:.1} s after its upload; the backlogged twin was then at {:?} ({behind_h:?} h behind its {:.1} days of data)",
        waited.as_secs_f64(),
        busy_then["data_time"],
        cgm_days(&backlog)
    );
    // The backlogged twin was calibrated first (it was queued first), but its backlog was not
    // worked off before the other patient's turn: at least 2 of its 6 days were still to come.
    assert_eq!(busy_then["status"], "ok", "{busy_then}");
    assert!(
        behind_h.is_some_and(|h| h > 48.0),
        "the quiet patient waited for the whole backlog: {busy_then}"
    );
    // And the backlog is still worked off to its end.
    let caught_up = wait("the backlog to be worked off", &mut || {
        data_ms(&twin("busy")) == Some(backlog_last)
    });
    eprintln!("backlog worked off {:.1} s later", caught_up.as_secs_f64());
    let r = request(&a, "GET", &format!("{base}/healthz"), &[], None).unwrap();
    let h: Value = serde_json::from_str(&r.1).unwrap();
    assert_eq!(h["live"]["failures"], 0, "{h}");
    let _ = stop.send(());
    let _ = rt.block_on(task);
    let _ = std::fs::remove_dir_all(&dir);
}
