//! Late data are re-assimilated from a kept filter state: a twin that receives a CGM reading
//! late (after newer ones were assimilated) ends exactly where a twin that received it in time
//! does.

use std::path::Path;
use std::time::{Duration, Instant};

use medtwin_io::{RecordEntry, RecordKind};
use medtwin_server::client::{agent, request};
use medtwin_server::ServerConfig;
use medtwin_store::Role;
use serde_json::Value;

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let t = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(t.elapsed() < Duration::from_secs(600), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_late_reading_is_reassimilated_as_if_in_time() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/t1d-uom");
    let (rec, _) = medtwin_io::import_t1d_uom(&data, "2313").unwrap();
    let first = rec
        .of_kind(RecordKind::Cgm)
        .next()
        .unwrap()
        .time
        .as_second();
    let part = |a: i64, b: i64| -> Vec<RecordEntry> {
        rec.entries
            .iter()
            .filter(|e| (first + a * 3600..first + b * 3600).contains(&e.time.as_second()))
            .cloned()
            .collect()
    };
    let (part1, part2) = (part(-48, 26), part(26, 28));
    let cgm2: Vec<&RecordEntry> = part2.iter().filter(|e| e.kind == RecordKind::Cgm).collect();
    let late = cgm2[cgm2.len() / 2].clone(); // about 1 h before the newest reading
    let part2_without: Vec<RecordEntry> = part2.iter().filter(|e| **e != late).cloned().collect();
    let last_cgm = |v: &[RecordEntry]| {
        v.iter()
            .filter(|e| e.kind == RecordKind::Cgm)
            .map(|e| e.time)
            .max()
            .unwrap()
    };

    let dir = std::env::temp_dir().join(format!("medtwin-late-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = format!("sqlite://{}", dir.join("t.db").display());
    let rt = medtwin_server::runtime().unwrap();
    let admin = rt.block_on(async {
        let s = medtwin_store::Store::open(&db).await.unwrap();
        let t = s.create_token(Role::Admin, &[], "test").await.unwrap();
        s.close().await;
        t
    });
    let mut cfg = ServerConfig::new(&db, "127.0.0.1:0".parse().unwrap());
    cfg.particles = 40;
    cfg.horizon_min = 30;
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
    let push = |pid: &str, entries: &[RecordEntry]| {
        let b = medtwin_server::fhir::bundle_of(pid, entries).to_string();
        let r = request(
            &a,
            "POST",
            &format!("{base}/fhir/Bundle"),
            &hdr,
            Some(b.as_bytes()),
        )
        .unwrap();
        assert_eq!(r.0, 200, "{}", r.1);
    };
    let twin = |pid: &str| -> Value {
        let r = request(
            &a,
            "GET",
            &format!("{base}/patients/{pid}/twin"),
            &hdr,
            None,
        )
        .unwrap();
        serde_json::from_str(&r.1).unwrap()
    };
    let at = |pid: &str, t: jiff::Timestamp| {
        wait_for(&format!("{pid}'s twin at {t}"), || {
            let v = twin(pid);
            (v["status"] == "ok" && v["data_time"].as_str() == Some(t.to_string().as_str()))
                .then_some(v)
        })
    };
    let health = || -> Value {
        let r = request(&a, "GET", &format!("{base}/healthz"), &[], None).unwrap();
        serde_json::from_str(&r.1).unwrap()
    };
    // Both patients: the same first 26 h (calibration), then the next 2 h; `late` gets one
    // reading of those 2 h only after the others were assimilated.
    for p in ["late", "ontime"] {
        push(p, &part1);
        at(p, last_cgm(&part1));
    }
    push("ontime", &part2);
    push("late", &part2_without);
    let end = last_cgm(&part2);
    let ontime = at("ontime", end);
    let before = at("late", end);
    // One reading fewer: the twins differ (else the comparison below would prove nothing).
    assert_ne!(before["parameters"], ontime["parameters"]);
    assert_eq!(health()["live"]["reassimilations"], 0);
    push("late", std::slice::from_ref(&late));
    wait_for("the re-assimilation", || {
        (health()["live"]["reassimilations"] == 1).then_some(())
    });
    let replayed = at("late", end);
    assert_eq!(replayed["parameters"], ontime["parameters"]);
    assert_eq!(health()["live"]["late_ignored"], 0);
    // Its forecast is recomputed from the re-assimilated twin: the same as the other's.
    let fc = |pid: &str| -> Value {
        let r = request(
            &a,
            "GET",
            &format!("{base}/patients/{pid}/forecast"),
            &hdr,
            None,
        )
        .unwrap();
        assert_eq!(r.0, 200, "{}", r.1);
        serde_json::from_str(&r.1).unwrap()
    };
    let (fl, fo) = (fc("late"), fc("ontime"));
    assert_eq!(fl["bands"], fo["bands"]);
    assert_eq!(fl["p_below_70"], fo["p_below_70"]);
    // A reading older than every kept filter state is stored, counted, not assimilated.
    let old = part1
        .iter()
        .find(|e| e.kind == RecordKind::Cgm && e.time.as_second() > first + 20 * 3600)
        .unwrap();
    let mut older = old.clone();
    older.time = jiff::Timestamp::from_second(old.time.as_second() + 120).unwrap();
    push("late", std::slice::from_ref(&older));
    wait_for("the ignored late reading", || {
        (health()["live"]["late_ignored"] == 1).then_some(())
    });
    let _ = stop.send(());
    let _ = rt.block_on(task);
    let _ = std::fs::remove_dir_all(&dir);
}
