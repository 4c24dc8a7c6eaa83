//! Integration tests of the twin server: the real `medtwin serve` binary on a free loopback
//! port with a temporary SQLite database (and, when `MEDTWIN_TEST_POSTGRES_URL` is set, the
//! same tests against PostgreSQL, each in a fresh database).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use medtwin_server::client::{agent, request};
use serde_json::{json, Value};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_medtwin"))
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tmp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("medtwin-server-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Database URLs to run a test against: SQLite in `dir`, plus a fresh PostgreSQL database
/// when `MEDTWIN_TEST_POSTGRES_URL` is set.
fn databases(dir: &Path, name: &str) -> Vec<String> {
    let mut v = vec![format!("sqlite://{}", dir.join("medtwin.db").display())];
    match std::env::var("MEDTWIN_TEST_POSTGRES_URL") {
        Ok(base) if !base.is_empty() => {
            let db = format!("medtwin_{name}_{}", std::process::id());
            let rt = medtwin_server::runtime().unwrap();
            rt.block_on(async {
                let s = medtwin_store::Store::open(&base).await.unwrap();
                s.execute_raw(&format!("DROP DATABASE IF EXISTS {db}")).await.unwrap();
                s.execute_raw(&format!("CREATE DATABASE {db}")).await.unwrap();
                s.close().await;
            });
            let (prefix, _) = base.rsplit_once('/').expect("postgres URL with /DB");
            v.push(format!("{prefix}/{db}"));
        }
        _ => eprintln!(
            "note: MEDTWIN_TEST_POSTGRES_URL not set: {name} runs on SQLite only (CI runs PostgreSQL too)"
        ),
    }
    v
}

struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(db: &str, extra: &[&str]) -> Server {
        let mut child = bin()
            .args([
                "serve",
                "--db",
                db,
                "--addr",
                "127.0.0.1:0",
                "--particles",
                "100",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start medtwin serve");
        let out = child.stdout.take().unwrap();
        let mut lines = BufReader::new(out).lines();
        let base = loop {
            let l = lines
                .next()
                .expect("server exited before listening")
                .unwrap();
            if let Some(a) = l.strip_prefix("medtwin serve: listening on ") {
                break a.trim().to_string();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Server { child, base }
    }
    fn kill9(&mut self) {
        let _ = Command::new("kill")
            .args(["-9", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn token(db: &str, role: &str, patients: &[&str]) -> String {
    let mut c = bin();
    c.args(["token", "create", "--db", db, "--role", role]);
    for p in patients {
        c.args(["--patient", p]);
    }
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t = String::from_utf8(o.stdout).unwrap().trim().to_string();
    assert!(t.starts_with("mt_") && t.len() == 67, "{t}");
    t
}

type Resp = (u16, String);

fn call(method: &str, url: &str, auth: Option<&str>, body: Option<&Value>) -> Resp {
    let a = agent();
    let bearer = auth.map(|t| format!("Bearer {t}"));
    let mut h: Vec<(&str, &str)> = vec![("content-type", "application/json")];
    if let Some(b) = &bearer {
        h.push(("authorization", b));
    }
    let bytes = body.map(|b| b.to_string().into_bytes());
    request(&a, method, url, &h, bytes.as_deref()).unwrap()
}

fn json_of(r: &Resp) -> Value {
    serde_json::from_str(&r.1).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.1))
}

fn iso(t: jiff::Timestamp) -> String {
    t.to_string()
}

fn minutes_ago(m: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() / 60 * 60 - m * 60).unwrap()
}

fn cgm_obs(patient: &str, t: jiff::Timestamp, v: f64, code: &str) -> Value {
    json!({"resource": {"resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "99504-3"}]},
        "subject": {"reference": format!("Patient/{patient}")},
        "effectiveDateTime": iso(t),
        "valueQuantity": {"value": v, "unit": code, "system": "http://unitsofmeasure.org", "code": code}}})
}

fn bundle(entries: Vec<Value>) -> Value {
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
}

fn n_entries(base: &str, pid: &str, tok: &str) -> usize {
    let r = call(
        "GET",
        &format!("{base}/ns/{pid}/api/v1/entries.json?count=10000"),
        Some(tok),
        None,
    );
    assert_eq!(r.0, 200, "{}", r.1);
    json_of(&r).as_array().unwrap().len()
}

#[test]
fn server_ingest_access_audit() {
    let dir = tmp_dir("ingest");
    for db in databases(&dir, "ingest") {
        eprintln!("== {db}");
        ingest_access_audit(&db);
    }
}

fn ingest_access_audit(db: &str) {
    let admin = token(db, "admin", &[]);
    let clin = token(db, "clinician", &["p1"]);
    let clin2 = token(db, "clinician", &["p2"]);
    let dev = token(db, "device", &["p1"]);
    // A device token needs exactly one patient: bad input, exit code 2.
    let o = bin()
        .args(["token", "create", "--db", db, "--role", "device"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let srv = Server::start(db, &[]);
    let b = srv.base.clone();

    // Patients: admin only.
    assert_eq!(
        call(
            "POST",
            &format!("{b}/patients"),
            Some(&admin),
            Some(&json!({"id": "p1"}))
        )
        .0,
        201
    );
    assert_eq!(
        call(
            "POST",
            &format!("{b}/patients"),
            Some(&admin),
            Some(&json!({"id": "p1"}))
        )
        .0,
        200
    );
    assert_eq!(
        call(
            "POST",
            &format!("{b}/patients"),
            Some(&admin),
            Some(&json!({"id": "p2"}))
        )
        .0,
        201
    );
    assert_eq!(
        call(
            "POST",
            &format!("{b}/patients"),
            Some(&clin),
            Some(&json!({"id": "p3"}))
        )
        .0,
        403
    );
    assert_eq!(
        call(
            "POST",
            &format!("{b}/patients"),
            Some(&admin),
            Some(&json!({"id": "bad id!"}))
        )
        .0,
        400
    );

    // 401: no token, unknown token.
    assert_eq!(
        call("GET", &format!("{b}/patients/p1/forecast"), None, None).0,
        401
    );
    assert_eq!(
        call(
            "GET",
            &format!("{b}/patients/p1/forecast"),
            Some("mt_nope"),
            None
        )
        .0,
        401
    );
    assert_eq!(
        call(
            "POST",
            &format!("{b}/fhir/Bundle"),
            None,
            Some(&bundle(vec![]))
        )
        .0,
        401
    );

    // FHIR ingest by the device: 3 CGM (one in mmol/L), a bolus, a basal rate, carbs.
    let t0 = minutes_ago(30);
    let plus = |m: i64| jiff::Timestamp::from_second(t0.as_second() + m * 60).unwrap();
    let mut es = vec![
        cgm_obs("p1", plus(0), 120.0, "mg/dL"),
        cgm_obs("p1", plus(5), 125.0, "mg/dL"),
    ];
    let mut mmol = cgm_obs("p1", plus(10), 7.0, "mmol/L");
    mmol["resource"]["code"]["coding"][0]["code"] = json!("105272-9");
    es.push(mmol);
    es.push(json!({"resource": {"resourceType": "MedicationAdministration", "status": "completed",
        "medicationCodeableConcept": {"text": "insulin aspart"},
        "subject": {"reference": "Patient/p1"}, "effectiveDateTime": iso(plus(1)),
        "dosage": {"dose": {"value": 4.5, "unit": "U", "system": "http://unitsofmeasure.org", "code": "[IU]"}}}}));
    es.push(json!({"resource": {"resourceType": "MedicationAdministration", "status": "in-progress",
        "subject": {"reference": "Patient/p1"}, "effectiveDateTime": iso(plus(0)),
        "dosage": {"rateQuantity": {"value": 0.8, "unit": "U/h", "system": "http://unitsofmeasure.org", "code": "[IU]/h"}}}}));
    es.push(json!({"resource": {"resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "9059-7"}]},
        "subject": {"reference": "Patient/p1"}, "effectiveDateTime": iso(plus(1)),
        "valueQuantity": {"value": 45, "unit": "g", "system": "http://unitsofmeasure.org", "code": "g"}}}));
    let good = bundle(es);
    let r = call("POST", &format!("{b}/fhir/Bundle"), Some(&dev), Some(&good));
    assert_eq!(r.0, 200, "{}", r.1);
    let v = json_of(&r);
    assert_eq!(v["type"], "transaction-response");
    let statuses: Vec<&str> = v["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["response"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, vec!["201 Created"; 6]);
    // Same bundle again: stored once.
    let r = call("POST", &format!("{b}/fhir/Bundle"), Some(&dev), Some(&good));
    assert_eq!(r.0, 200);
    let statuses: Vec<String> = json_of(&r)["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["response"]["status"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(statuses, vec!["200 OK".to_string(); 6]);
    assert_eq!(n_entries(&b, "p1", &clin), 3);
    let latest = json_of(&call(
        "GET",
        &format!("{b}/ns/p1/api/v1/entries.json?count=1"),
        Some(&clin),
        None,
    ));
    assert_eq!(latest.as_array().unwrap().len(), 1);
    assert_eq!(
        latest[0]["sgv"], 126,
        "7.0 mmol/L = 126.1 mg/dL, newest first: {latest}"
    );

    // Nightscout upload with api-secret = SHA-1 of the device token; idempotent.
    let sha1 = medtwin_store::sha1_hex(&dev);
    let ns = json!([{"type": "sgv", "sgv": 131, "date": plus(15).as_millisecond(), "direction": "Flat", "device": "xDrip-DexcomG6"}]);
    let a = agent();
    let post_ns = |body: &Value, secret: &str| {
        request(
            &a,
            "POST",
            &format!("{b}/ns/p1/api/v1/entries"),
            &[("api-secret", secret), ("content-type", "application/json")],
            Some(body.to_string().as_bytes()),
        )
        .unwrap()
    };
    let r = post_ns(&ns, &sha1);
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(json_of(&r)["inserted"], 1);
    let r = post_ns(&ns, &sha1);
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(json_of(&r)["inserted"], 0);
    assert_eq!(json_of(&r)["duplicates"], 1);
    assert_eq!(
        n_entries(&b, "p1", &clin),
        4,
        "same reading twice is stored once"
    );
    assert_eq!(
        post_ns(&ns, "0000000000000000000000000000000000000000").0,
        401
    );
    let tr = json!([{"eventType": "Meal Bolus", "created_at": iso(plus(16)), "insulin": 3.0, "carbs": 30}]);
    let r = request(
        &a,
        "POST",
        &format!("{b}/ns/p1/api/v1/treatments"),
        &[("api-secret", &sha1)],
        Some(tr.to_string().as_bytes()),
    )
    .unwrap();
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(json_of(&r)["inserted"], 2);

    // 403: device reads; clinician of another patient; device writing another patient.
    assert_eq!(
        call(
            "GET",
            &format!("{b}/ns/p1/api/v1/entries.json?count=5"),
            Some(&dev),
            None
        )
        .0,
        403
    );
    assert_eq!(
        call(
            "GET",
            &format!("{b}/patients/p1/forecast"),
            Some(&dev),
            None
        )
        .0,
        403
    );
    assert_eq!(
        call(
            "GET",
            &format!("{b}/patients/p1/forecast"),
            Some(&clin2),
            None
        )
        .0,
        403
    );
    assert_eq!(
        call(
            "POST",
            &format!("{b}/ns/p2/api/v1/entries"),
            Some(&dev),
            Some(&ns)
        )
        .0,
        403
    );
    let r = call(
        "POST",
        &format!("{b}/fhir/Bundle"),
        Some(&dev),
        Some(&bundle(vec![cgm_obs("p2", plus(3), 100.0, "mg/dL")])),
    );
    assert_eq!(r.0, 403, "{}", r.1);
    assert_eq!(json_of(&r)["resourceType"], "OperationOutcome");
    assert_eq!(call("GET", &format!("{b}/audit"), Some(&clin), None).0, 403);
    // Not calibrated yet: 404 with the reason.
    let r = call(
        "GET",
        &format!("{b}/patients/p1/forecast"),
        Some(&clin),
        None,
    );
    assert_eq!(r.0, 404, "{}", r.1);

    // Malformed input: 4xx with reasons, nothing stored.
    let before = n_entries(&b, "p1", &clin);
    let wrong_unit = bundle(vec![
        cgm_obs("p1", plus(20), 140.0, "mg/dL"),
        cgm_obs("p1", plus(21), 140.0, "mg"),
    ]);
    let r = call(
        "POST",
        &format!("{b}/fhir/Bundle"),
        Some(&dev),
        Some(&wrong_unit),
    );
    assert_eq!(r.0, 400, "{}", r.1);
    let oo = json_of(&r);
    assert_eq!(oo["resourceType"], "OperationOutcome");
    assert!(
        oo["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("wrong unit `mg`"),
        "{oo}"
    );
    assert_eq!(
        oo["issue"][0]["expression"][0],
        "Bundle.entry[1].resource.valueQuantity.code"
    );
    let mut mol_on_mass = cgm_obs("p1", plus(22), 7.0, "mmol/L"); // 99504-3 is mass/volume
    mol_on_mass["resource"]["status"] = json!("final");
    assert_eq!(
        call(
            "POST",
            &format!("{b}/fhir/Bundle"),
            Some(&dev),
            Some(&bundle(vec![
                cgm_obs("p1", plus(20), 140.0, "mg/dL"),
                mol_on_mass
            ]))
        )
        .0,
        400
    );
    let future = bundle(vec![
        cgm_obs("p1", plus(20), 140.0, "mg/dL"),
        cgm_obs(
            "p1",
            jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() + 3600).unwrap(),
            150.0,
            "mg/dL",
        ),
    ]);
    let r = call(
        "POST",
        &format!("{b}/fhir/Bundle"),
        Some(&dev),
        Some(&future),
    );
    assert_eq!(r.0, 400);
    assert!(r.1.contains("in the future"), "{}", r.1);
    let a2 = agent();
    let r = request(
        &a2,
        "POST",
        &format!("{b}/fhir/Bundle"),
        &[("authorization", &format!("Bearer {dev}"))],
        Some(b"{\"resourceType\": \"Bundle\", "),
    )
    .unwrap();
    assert_eq!(r.0, 400);
    assert!(
        r.1.contains("OperationOutcome") && r.1.contains("not a FHIR JSON Bundle"),
        "{}",
        r.1
    );
    let r = post_ns(
        &json!([{"type": "sgv", "sgv": 140, "date": plus(20).as_millisecond()}, {"type": "sgv", "sgv": 5000, "date": plus(21).as_millisecond()}]),
        &sha1,
    );
    assert_eq!(r.0, 400, "{}", r.1);
    assert!(r.1.contains("impossible glucose"), "{}", r.1);
    let r = post_ns(
        &json!([{"type": "sgv", "sgv": 140, "date": jiff::Timestamp::now().as_millisecond() + 7_200_000}]),
        &sha1,
    );
    assert_eq!(r.0, 400, "{}", r.1);
    let r = request(
        &a2,
        "POST",
        &format!("{b}/ns/p1/api/v1/entries"),
        &[("api-secret", &sha1)],
        Some(b"[{\"type\": "),
    )
    .unwrap();
    assert_eq!(r.0, 400);
    assert!(r.1.contains("invalid JSON"), "{}", r.1);
    // Oversize body (> 4 MiB): 413. The server answers as soon as the limit is passed and closes
    // the connection, so the client may still be writing the tail (a TCP race: "Broken pipe" or
    // "reset"); such attempts are retried — a 413 must still be received.
    let big = vec![b' '; (4 << 20) + 16];
    let mut r = Err(String::new());
    for _ in 0..10 {
        r = request(
            &a2,
            "POST",
            &format!("{b}/ns/p1/api/v1/entries"),
            &[("api-secret", &sha1)],
            Some(&big),
        );
        match &r {
            Err(e) if e.contains("Broken pipe") || e.contains("reset") => continue,
            _ => break,
        }
    }
    let r = r.unwrap();
    assert_eq!(r.0, 413);
    assert_eq!(
        n_entries(&b, "p1", &clin),
        before,
        "malformed requests stored nothing"
    );

    // Audit: every read/write of patient data, including refusals; append-only.
    let r = call(
        "GET",
        &format!("{b}/audit?patient=p1&limit=1000"),
        Some(&admin),
        None,
    );
    assert_eq!(r.0, 200);
    let log = json_of(&r);
    let rows = log.as_array().unwrap();
    let has = |action: &str, outcome: i64| {
        rows.iter()
            .any(|x| x["action"] == action && x["outcome"] == outcome)
    };
    assert!(has("POST /fhir/Bundle", 200), "{log}");
    let all = json_of(&call(
        "GET",
        &format!("{b}/audit?limit=10000"),
        Some(&admin),
        None,
    ));
    assert!(
        all.as_array()
            .unwrap()
            .iter()
            .any(|x| x["action"] == "POST /fhir/Bundle" && x["outcome"] == 400),
        "refused ingest is audited too"
    );
    let p2 = json_of(&call(
        "GET",
        &format!("{b}/audit?patient=p2"),
        Some(&admin),
        None,
    ));
    assert!(
        p2.as_array()
            .unwrap()
            .iter()
            .any(|x| x["action"] == "POST /fhir/Bundle" && x["outcome"] == 403),
        "{p2}"
    );
    assert!(has("GET /ns/{id}/api/v1/entries", 200));
    assert!(has("GET /ns/{id}/api/v1/entries", 403));
    assert!(has("GET /patients/{id}/forecast", 401));
    assert!(has("GET /patients/{id}/forecast", 403));
    assert!(has("POST /ns/{id}/api/v1/entries", 400));
    assert!(has("POST /patients", 201));
    assert!(rows
        .iter()
        .any(|x| x["actor"].as_str().unwrap().ends_with("/device")));
    // No API route changes the audit log, and the database refuses it.
    assert_eq!(
        call("DELETE", &format!("{b}/audit"), Some(&admin), None).0,
        405
    );
    let rt = medtwin_server::runtime().unwrap();
    rt.block_on(async {
        let s = medtwin_store::Store::open(db).await.unwrap();
        assert!(s
            .execute_raw("UPDATE audit SET outcome = 200")
            .await
            .is_err());
        assert!(s.execute_raw("DELETE FROM audit").await.is_err());
        s.close().await;
    });

    // OpenAPI generated from the handlers.
    let r = call("GET", &format!("{b}/openapi.json"), None, None);
    assert_eq!(r.0, 200);
    let api = json_of(&r);
    for p in [
        "/fhir/Bundle",
        "/patients/{id}/forecast",
        "/patients/{id}/whatif",
        "/ns/{patient_id}/api/v1/entries",
        "/patients",
    ] {
        assert!(api["paths"][p].is_object(), "{p} missing from openapi.json");
    }
    assert!(api["components"]["schemas"]["ForecastDoc"].is_object());
}

/// Import the bundled T1D-UOM participant 2313 and write the first `hours` of it (plus the
/// rest separately): `(first.csv, rest rows)`.
fn uom_record(dir: &Path, hours: i64) -> (PathBuf, Vec<String>) {
    let full = dir.join("full.csv");
    let o = bin()
        .args(["import", "t1d-uom"])
        .arg(repo().join("tests/data/t1d-uom"))
        .args(["--participant", "2313", "--out"])
        .arg(&full)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(&full).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap().to_string();
    let rows: Vec<String> = lines.map(str::to_string).collect();
    let t_of = |r: &str| {
        r.split(',')
            .next()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .unwrap()
    };
    let first_cgm = rows
        .iter()
        .find(|r| r.contains(",cgm,"))
        .map(|r| t_of(r))
        .unwrap();
    let cut = first_cgm.as_second() + hours * 3600;
    let (a, b): (Vec<String>, Vec<String>) =
        rows.into_iter().partition(|r| t_of(r).as_second() < cut);
    let first = dir.join("first.csv");
    std::fs::write(&first, format!("{header}\n{}\n", a.join("\n"))).unwrap();
    (first, b)
}

fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let t = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "timed out after {secs} s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn server_live_twin_whatif_kill9_restart() {
    let dir = tmp_dir("live");
    let (first, rest) = uom_record(&dir, 26);
    for db in databases(&dir, "live") {
        eprintln!("== {db}");
        live_twin(&db, &dir, &first, &rest);
    }
}

fn live_twin(db: &str, dir: &Path, first: &Path, rest: &[String]) {
    let admin = token(db, "admin", &[]);
    let mut srv = Server::start(db, &["--horizon", "60"]);
    let b = srv.base.clone();
    for p in ["uom", "stream"] {
        assert_eq!(
            call(
                "POST",
                &format!("{b}/patients"),
                Some(&admin),
                Some(&json!({"id": p}))
            )
            .0,
            201
        );
    }
    // medtwin push: the first 26 h of the real record, as FHIR bundles; again: nothing new.
    let push = |file: &Path, base: &str| {
        let o = bin()
            .arg("push")
            .arg(file)
            .args(["--to", base, "--patient", "uom", "--token", &admin])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    let out = push(first, &b);
    assert!(
        out.contains("already present") && !out.contains(" 0 stored"),
        "{out}"
    );
    let out2 = push(first, &b);
    assert!(out2.contains(" 0 stored"), "{out2}");

    // The twin calibrates after 24 h of CGM and forecasts.
    let last_cgm = std::fs::read_to_string(first)
        .unwrap()
        .lines()
        .filter(|l| l.contains(",cgm,"))
        .map(|l| {
            l.split(',')
                .next()
                .unwrap()
                .parse::<jiff::Timestamp>()
                .unwrap()
        })
        .max()
        .unwrap();
    let fc = wait_for("the first forecast", 600, || {
        let r = call(
            "GET",
            &format!("{b}/patients/uom/forecast"),
            Some(&admin),
            None,
        );
        (r.0 == 200).then(|| json_of(&r))
    });
    assert_eq!(
        fc["data_time"]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .unwrap(),
        last_cgm
    );
    let bands = fc["bands"].as_array().unwrap();
    assert_eq!(bands.len(), 60);
    for p in bands {
        let g = |k: &str| p[k].as_f64().unwrap();
        assert!(g("lo95") <= g("lo80") && g("lo80") <= g("lo50") && g("lo50") <= g("median"));
        assert!(g("median") <= g("hi50") && g("hi50") <= g("hi80") && g("hi80") <= g("hi95"));
        assert!(g("lo95") > 0.0 && g("hi95") < 1000.0);
    }
    for k in ["p_below_70", "p_above_250"] {
        let p = fc[k].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&p), "{k} = {p}");
    }
    let twin = json_of(&call(
        "GET",
        &format!("{b}/patients/uom/twin"),
        Some(&admin),
        None,
    ));
    assert_eq!(twin["status"], "ok");
    assert_eq!(twin["parameters"].as_array().unwrap().len(), 4);

    // One predictive distribution: the what-if of an empty plan is the forecast (same horizon),
    // within Monte-Carlo error: P(< 70) within 0.05, medians within 10 mg/dL at every time.
    let req = json!({"horizon_min": bands.len(), "plans": [{"name": "none"}]});
    let r = call(
        "POST",
        &format!("{b}/patients/uom/whatif"),
        Some(&admin),
        Some(&req),
    );
    assert_eq!(r.0, 200, "{}", r.1);
    let none = json_of(&r)["outcomes"][0].clone();
    let dp = (none["p_below_70"].as_f64().unwrap() - fc["p_below_70"].as_f64().unwrap()).abs();
    assert!(
        dp <= 0.05,
        "P(<70): what-if {} vs forecast {}",
        none["p_below_70"],
        fc["p_below_70"]
    );
    let mut compared = 0;
    for w in none["bands"].as_array().unwrap() {
        let f = bands
            .iter()
            .find(|p| p["minutes_ahead"] == w["minutes_ahead"])
            .unwrap_or_else(|| panic!("forecast has no point at {}", w["minutes_ahead"]));
        let (mw, mf) = (w["median"].as_f64().unwrap(), f["median"].as_f64().unwrap());
        assert!(
            (mw - mf).abs() <= 10.0,
            "{} min: what-if median {mw} vs forecast {mf}",
            w["minutes_ahead"]
        );
        compared += 1;
    }
    assert!(compared >= 10, "compared {compared} times");

    // What-if: a 60 g meal without insulin raises the median 2 h later.
    let req = json!({"horizon_min": 180, "plans": [{"name": "none"}, {"name": "meal", "meals": [{"at_min": 0, "carbs_g": 60}]}]});
    let r = call(
        "POST",
        &format!("{b}/patients/uom/whatif"),
        Some(&admin),
        Some(&req),
    );
    assert_eq!(r.0, 200, "{}", r.1);
    let w = json_of(&r);
    let med = |i: usize| {
        w["outcomes"][i]["bands"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["minutes_ahead"] == 120.0)
            .unwrap()["median"]
            .as_f64()
            .unwrap()
    };
    assert!(med(1) > med(0) + 20.0, "meal {} vs none {}", med(1), med(0));
    let bad = json!({"horizon_min": 180, "plans": [{"name": "x", "meals": [{"at_min": -5, "carbs_g": 60}]}]});
    assert_eq!(
        call(
            "POST",
            &format!("{b}/patients/uom/whatif"),
            Some(&admin),
            Some(&bad)
        )
        .0,
        400
    );

    if db.starts_with("sqlite") {
        dashboard_in_chromium(&b, db, dir);
    }

    // A stream of 10 000 readings; kill -9 in the middle; every acknowledged reading survives.
    let n = 10_000i64;
    let start = jiff::Timestamp::now().as_second() / 60 * 60 - (n + 5) * 60;
    let reading = |i: i64| json!([{"type": "sgv", "sgv": (140.0 + 40.0 * (i as f64 / 90.0).sin()).round(), "date": (start + i * 60) * 1000}]);
    let send = |base: &str, from: i64, to: i64| -> Vec<i64> {
        let a = agent();
        let auth = format!("Bearer {admin}");
        let mut acked = Vec::new();
        let mut i = from;
        while i < to {
            match request(
                &a,
                "POST",
                &format!("{base}/ns/stream/api/v1/entries"),
                &[("authorization", &auth)],
                Some(reading(i).to_string().as_bytes()),
            ) {
                Ok((200, _)) => acked.push(i),
                // Over the per-token rate limit: wait and send the same reading again.
                Ok((429, _)) => {
                    std::thread::sleep(Duration::from_millis(500));
                    continue;
                }
                _ => break,
            }
            i += 1;
        }
        acked
    };
    let acked = std::thread::scope(|s| {
        let h = s.spawn(|| send(&b, 0, n));
        // Kill once a few thousand readings are acknowledged (checked from the store side).
        wait_for("3000 readings", 600, || {
            (n_entries(&b, "stream", &admin) >= 3000).then_some(())
        });
        srv.kill9();
        h.join().unwrap()
    });
    assert!(
        acked.len() >= 3000 && (acked.len() as i64) < n,
        "acked {}",
        acked.len()
    );
    let srv2 = Server::start(db, &["--horizon", "60"]);
    let b2 = srv2.base.clone();
    let stored: std::collections::HashSet<i64> = json_of(&call(
        "GET",
        &format!("{b2}/ns/stream/api/v1/entries.json?count=10000"),
        Some(&admin),
        None,
    ))
    .as_array()
    .unwrap()
    .iter()
    .map(|e| (e["date"].as_i64().unwrap() / 1000 - start) / 60)
    .collect();
    let lost: Vec<&i64> = acked.iter().filter(|i| !stored.contains(i)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged readings lost after kill -9: {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    println!(
        "kill -9 after {} acknowledged readings: 0 lost ({} stored)",
        acked.len(),
        stored.len()
    );
    // The client resends from the first unacknowledged reading; idempotent, so exactly n.
    let next = *acked.last().unwrap() + 1;
    let acked2 = send(&b2, next, n);
    assert_eq!(acked2.len() as i64, n - next);
    assert_eq!(n_entries(&b2, "stream", &admin), n as usize);

    // Restart resumes the saved twin (no new calibration) and assimilates newer data.
    let twin_before = json_of(&call(
        "GET",
        &format!("{b2}/patients/uom/twin"),
        Some(&admin),
        None,
    ));
    assert_eq!(twin_before["status"], "ok");
    let header = "time,kind,value,unit,insulin";
    let t_of = |r: &str| {
        r.split(',')
            .next()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .unwrap()
    };
    let cut = last_cgm.as_second() + 2 * 3600;
    let more: Vec<&String> = rest.iter().filter(|r| t_of(r).as_second() < cut).collect();
    let more_csv = dir.join("more.csv");
    std::fs::write(
        &more_csv,
        format!(
            "{header}\n{}\n",
            more.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        ),
    )
    .unwrap();
    push(&more_csv, &b2);
    let new_last = more
        .iter()
        .filter(|l| l.contains(",cgm,"))
        .map(|l| t_of(l))
        .max()
        .unwrap();
    wait_for("the resumed twin's forecast", 600, || {
        let r = call(
            "GET",
            &format!("{b2}/patients/uom/forecast"),
            Some(&admin),
            None,
        );
        let t = json_of(&r)["data_time"]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .unwrap();
        (t == new_last).then_some(())
    });
    let health = json_of(&call("GET", &format!("{b2}/healthz"), None, None));
    let fitted: Vec<&str> = health["live"]["fitted_patients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        !fitted.contains(&"uom"),
        "uom was re-calibrated instead of resumed: {health}"
    );
    let twin_after = json_of(&call(
        "GET",
        &format!("{b2}/patients/uom/twin"),
        Some(&admin),
        None,
    ));
    assert!(twin_after["version"].as_i64().unwrap() > twin_before["version"].as_i64().unwrap());
    assert_eq!(
        twin_after["parameters"][0]["calibration_map"],
        twin_before["parameters"][0]["calibration_map"]
    );
}

fn chromium() -> Option<String> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .map(str::to_string)
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
}

/// Real headless Chromium logs in with a clinician token, opens the patient and finds the
/// chart; the screenshot is kept under the target directory.
fn dashboard_in_chromium(base: &str, db: &str, dir: &Path) {
    let Some(chrome) = chromium() else {
        eprintln!("SKIP dashboard browser test: chromium not found (apt-get install chromium; CI installs it)");
        return;
    };
    let clin = token(db, "clinician", &["uom"]);
    let profile = dir.join("chromium-profile");
    let flags = |out: &mut Command, prof: &Path| {
        out.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1100,1400",
        ])
        .arg(format!("--user-data-dir={}", prof.display()));
    };
    let dom = dom_after_login(
        &chrome,
        &profile,
        base,
        &clin,
        "/ui/patients/uom",
        "Patient uom",
    );
    assert!(dom.contains("id=\"glucose-chart\""), "no chart in the DOM");
    assert!(
        dom.contains("class=\"forecast-band\"") && dom.contains("class=\"cgm\""),
        "chart without cone or CGM"
    );
    assert!(
        dom.contains("id=\"parameters\"") && dom.contains("Vmx"),
        "no calibrated parameters"
    );
    assert!(dom.contains("id=\"whatif\""), "no what-if form");
    // The patient list: the clinician sees its patient with the latest glucose.
    let list = dom_after_login(
        &chrome,
        &dir.join("chromium-list"),
        base,
        &clin,
        "/",
        "id=\"patients\"",
    );
    assert!(
        list.contains("id=\"patients\"") && list.contains("href=\"/ui/patients/uom\""),
        "patient list without the patient: {list}"
    );
    assert!(
        !list.contains("/ui/patients/stream"),
        "a clinician sees only assigned patients"
    );
    // Without the cookie the patient page asks to log in.
    let mut c = Command::new(&chrome);
    flags(&mut c, &dir.join("chromium-anon"));
    let o = c
        .arg("--dump-dom")
        .arg(format!("{base}/ui/patients/uom"))
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&o.stdout).contains("glucose-chart"));
    whatif_in_chromium(&chrome, base, &clin, dir);
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-patient.png");
    let _ = std::fs::remove_file(&shot);
    let mut c = Command::new(&chrome);
    flags(&mut c, &profile);
    let o = c
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("{base}/ui/patients/uom"))
        .output()
        .unwrap();
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 10_000,
        "screenshot missing or empty ({size} bytes): {}",
        String::from_utf8_lossy(&o.stderr)
    );
    println!("dashboard screenshot: {}", shot.display());
}

/// Chromium driven over the DevTools protocol (`--remote-debugging-pipe`: JSON messages ending
/// in NUL on file descriptors 3 and 4, mapped to the child's stdin and stdout by `sh`).
struct Cdp {
    child: Child,
    to_chrome: std::process::ChildStdin,
    from_chrome: std::sync::mpsc::Receiver<Value>,
    next_id: u64,
}

impl Cdp {
    fn start(chrome: &str, profile: &Path) -> Cdp {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg("exec \"$0\" \"$@\" 3<&0 4>&1 0</dev/null 1>&2")
            .arg(chrome)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--window-size=1100,1400",
                "--remote-debugging-pipe",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium with --remote-debugging-pipe");
        let to_chrome = child.stdin.take().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || loop {
            let mut buf = Vec::new();
            match out.read_until(0, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    buf.pop_if(|b| *b == 0);
                    if let Ok(v) = serde_json::from_slice::<Value>(&buf) {
                        if tx.send(v).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        Cdp {
            child,
            to_chrome,
            from_chrome: rx,
            next_id: 0,
        }
    }

    /// Send a command (to a page session when `session` is given) and wait for its answer.
    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        use std::io::Write;
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = msg.to_string().into_bytes();
        bytes.push(0);
        self.to_chrome.write_all(&bytes).unwrap();
        self.to_chrome.flush().unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self
                .from_chrome
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no answer from Chromium to {method}"));
            if v["id"] == id {
                assert!(v["error"].is_null(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Evaluate a JavaScript expression in the page; its value.
    fn eval(&mut self, session: &str, expr: &str) -> Value {
        let r = self.call(
            Some(session),
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true}),
        );
        r["result"]["value"].clone()
    }
}

impl Drop for Cdp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Standard base64 (for the screenshot Chromium returns).
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let clean: Vec<u8> = s.bytes().filter(|c| !b"=\r\n".contains(c)).collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let v: Vec<u32> = chunk.iter().map(|&c| val(c) as u32).collect();
        let n = v.iter().fold(0u32, |acc, x| (acc << 6) | x) << (6 * (4 - v.len()));
        for i in 0..v.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

/// Open the login form (`GET /login?next=NEXT`) in a new page, type the token and submit it
/// like a user (tokens never travel in URLs); the page's session id.
fn login_in_chromium(cdp: &mut Cdp, base: &str, token: &str, next: &str) -> String {
    let url = format!("{base}/login?next={next}");
    let target = cdp.call(None, "Target.createTarget", json!({"url": url}));
    let target_id = target["targetId"].as_str().unwrap().to_string();
    let attached = cdp.call(
        None,
        "Target.attachToTarget",
        json!({"targetId": target_id, "flatten": true}),
    );
    let session = attached["sessionId"].as_str().unwrap().to_string();
    wait_for("the login form", 120, || {
        let v = cdp.eval(
            &session,
            "document.readyState === 'complete' && !!document.querySelector('input[name=token]')",
        );
        (v.as_bool() == Some(true)).then_some(())
    });
    let submitted = cdp.eval(
        &session,
        &format!(
            "(() => {{ const f = document.querySelector('form[action=\\'/login\\']');\
              f.querySelector('input[name=token]').value = '{token}';\
              f.querySelector('button[type=submit]').click(); return true; }})()"
        ),
    );
    assert_eq!(submitted, json!(true));
    session
}

/// The DOM of `next` after logging in through the form in Chromium (profile `profile`, whose
/// cookie later runs reuse), once it contains `ready`.
fn dom_after_login(
    chrome: &str,
    profile: &Path,
    base: &str,
    token: &str,
    next: &str,
    ready: &str,
) -> String {
    let mut cdp = Cdp::start(chrome, profile);
    let session = login_in_chromium(&mut cdp, base, token, next);
    let mut last = String::new();
    let dom = wait_for(
        &format!("`{ready}` in {next} after logging in"),
        120,
        || {
            let v = cdp.eval(&session, "document.documentElement.outerHTML");
            last = v.as_str().unwrap_or_default().to_string();
            last.contains(ready).then(|| last.clone())
        },
    );
    let _ = cdp.call(None, "Browser.close", json!({}));
    dom
}

/// Real Chromium logs in as the clinician, opens the patient page, fills in the what-if form
/// and submits it like a user (button click), then finds the plans' outcomes in the page that
/// comes back; a screenshot of it is kept under the target directory.
fn whatif_in_chromium(chrome: &str, base: &str, clin: &str, dir: &Path) {
    let mut cdp = Cdp::start(chrome, &dir.join("chromium-whatif"));
    let session = login_in_chromium(&mut cdp, base, clin, "/ui/patients/uom");
    let wait_js = |cdp: &mut Cdp, what: &str, expr: &str| {
        wait_for(what, 120, || {
            let v = cdp.eval(&session, expr);
            (v.as_bool() == Some(true)).then_some(())
        })
    };
    wait_js(
        &mut cdp,
        "the patient page with the what-if form",
        "document.readyState === 'complete' && !!document.querySelector('form#whatif button[type=submit]')",
    );
    let filled = cdp.eval(
        &session,
        "(() => { const f = document.querySelector('form#whatif');\
          f.querySelector('input[name=carbs_g]').value = '45';\
          f.querySelector('input[name=bolus_u]').value = '3';\
          f.querySelector('input[name=at_min]').value = '15';\
          f.querySelector('button[type=submit]').click(); return true; })()",
    );
    assert_eq!(filled, json!(true));
    wait_js(
        &mut cdp,
        "the what-if result in the page",
        "document.readyState === 'complete' && !!document.getElementById('whatif-result')",
    );
    let table = cdp.eval(
        &session,
        "document.getElementById('whatif-result').innerText",
    );
    let table = table.as_str().unwrap_or_default().to_string();
    assert!(
        table.contains("no action") && table.contains("45 g + 3 U at 15 min"),
        "what-if table without both plans: {table}"
    );
    // Each plan row: name, P(<70), P(<54), P(>250), expected TIR % — numbers in range.
    for row in table
        .lines()
        .filter(|l| l.contains("no action") || l.contains("45 g"))
    {
        let nums: Vec<f64> = row
            .split('\t')
            .skip(1)
            .filter_map(|x| x.trim().parse().ok())
            .collect();
        assert_eq!(nums.len(), 4, "row `{row}`");
        assert!(
            nums[..3].iter().all(|p| (0.0..=1.0).contains(p)),
            "row `{row}`"
        );
        assert!((0.0..=100.0).contains(&nums[3]), "row `{row}`");
    }
    // The page still shows the patient's chart and the form after the post.
    assert_eq!(
        cdp.eval(
            &session,
            "!!document.getElementById('glucose-chart') && !!document.getElementById('whatif')"
        ),
        json!(true)
    );
    let shot = cdp.call(
        Some(&session),
        "Page.captureScreenshot",
        json!({"format": "png", "captureBeyondViewport": true}),
    );
    let png = base64_decode(shot["data"].as_str().unwrap());
    assert!(png.starts_with(b"\x89PNG"), "not a PNG screenshot");
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-whatif.png");
    std::fs::write(&path, &png).unwrap();
    println!(
        "what-if in Chromium: {table:?}; screenshot {}",
        path.display()
    );
    let _ = cdp.call(None, "Browser.close", json!({}));
}
