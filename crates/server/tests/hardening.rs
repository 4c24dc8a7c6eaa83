//! Hardening of the server (issue 15): plausibility at ingest, redirects, security headers,
//! file permissions, credentials, token revocation, dashboard authorisation. Each test runs
//! the server in-process on a free loopback port with a temporary SQLite database.

use std::path::PathBuf;

use medtwin_server::ServerConfig;
use medtwin_store::{Role, Store};
use serde_json::{json, Value};

/// A server in this process, stopped on drop.
struct Srv {
    rt: tokio::runtime::Runtime,
    base: String,
    db: String,
    dir: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), medtwin_server::ServerError>>>,
}

impl Srv {
    fn start(name: &str) -> Srv {
        Srv::start_with(name, |_| {})
    }

    fn start_with(name: &str, tune: impl FnOnce(&mut ServerConfig)) -> Srv {
        Srv::start_on(name, None, tune)
    }

    /// A server on database `url` (default: SQLite `t.db` in the test's directory).
    fn start_on(name: &str, url: Option<String>, tune: impl FnOnce(&mut ServerConfig)) -> Srv {
        let dir = std::env::temp_dir().join(format!("medtwin-hard-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let db = url.unwrap_or_else(|| format!("sqlite://{}", dir.join("t.db").display()));
        let rt = medtwin_server::runtime().unwrap();
        let mut cfg = ServerConfig::new(&db, "127.0.0.1:0".parse().unwrap());
        cfg.particles = 20;
        cfg.workers = 1;
        tune(&mut cfg);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (addr, task) = rt.block_on(async {
            medtwin_server::start(cfg, async {
                let _ = stopped.await;
            })
            .await
            .unwrap()
        });
        Srv {
            rt,
            base: format!("http://{addr}"),
            db,
            dir,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// [`Srv::start`] on a fresh PostgreSQL database `medtwin_hard_{name}_{pid}` when
    /// `MEDTWIN_TEST_POSTGRES_URL` is set (CI sets it); `None` otherwise.
    fn start_pg(name: &str) -> Option<Srv> {
        let base = std::env::var("MEDTWIN_TEST_POSTGRES_URL")
            .ok()
            .filter(|b| !b.is_empty())?;
        let db = format!("medtwin_hard_{name}_{}", std::process::id());
        let rt = medtwin_server::runtime().unwrap();
        rt.block_on(async {
            let s = Store::open(&base).await.unwrap();
            s.execute_raw(&format!("DROP DATABASE IF EXISTS {db}"))
                .await
                .unwrap();
            s.execute_raw(&format!("CREATE DATABASE {db}"))
                .await
                .unwrap();
            s.close().await;
        });
        let (prefix, _) = base.rsplit_once('/').expect("postgres URL with /DB");
        let url = format!("{prefix}/{db}");
        Some(Srv::start_on(name, Some(url), |_| {}))
    }

    /// A new token (through a second store handle on the same database).
    fn token(&self, role: Role, patients: &[&str]) -> String {
        let ps: Vec<String> = patients.iter().map(|p| p.to_string()).collect();
        self.rt.block_on(async {
            let s = Store::open(&self.db).await.unwrap();
            let t = s.create_token(role, &ps, "test").await.unwrap();
            s.close().await;
            t
        })
    }

    /// A request that follows no redirect; 4xx/5xx are answers, not errors.
    fn call(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> Resp {
        let a: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into();
        let mut b = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(body.unwrap_or("").as_bytes().to_vec()).unwrap();
        let mut r = a.run(req).unwrap();
        let headers = r
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        Resp {
            status: r.status().as_u16(),
            headers,
            body: r.body_mut().read_to_string().unwrap_or_default(),
        }
    }

    fn bearer(&self, method: &str, path: &str, token: &str, body: Option<&Value>) -> Resp {
        let auth = format!("Bearer {token}");
        let b = body.map(Value::to_string);
        self.call(
            method,
            path,
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            b.as_deref(),
        )
    }
}

impl Srv {
    /// Stop the server (graceful: pending audit aggregates are written); the database stays.
    fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = self.rt.block_on(t);
        }
    }
}

impl Drop for Srv {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    /// The value of header `name` (lower case), if sent.
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

fn iso_minutes_ago(m: i64) -> String {
    jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() / 60 * 60 - m * 60)
        .unwrap()
        .to_string()
}

fn ms_minutes_ago(m: i64) -> i64 {
    (jiff::Timestamp::now().as_second() / 60 * 60 - m * 60) * 1000
}

/// Item a: far-past and future times and implausible doses are refused with their element
/// paths on the FHIR and Nightscout paths; nothing of such a request is stored.
#[test]
fn implausible_data_are_refused_with_element_paths() {
    implausible_data_are_refused_with_element_paths_on(Srv::start("plaus"));
}

fn implausible_data_are_refused_with_element_paths_on(s: Srv) {
    let admin = s.token(Role::Admin, &[]);
    assert_eq!(
        s.bearer("POST", "/patients", &admin, Some(&json!({"id": "p"})))
            .status,
        201
    );
    let obs = |t: &str, v: f64| {
        json!({"resource": {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "99504-3"}]},
            "subject": {"reference": "Patient/p"}, "effectiveDateTime": t,
            "valueQuantity": {"value": v, "system": "http://unitsofmeasure.org", "code": "mg/dL"}}})
    };
    let dose = json!({"resource": {"resourceType": "MedicationAdministration", "status": "completed",
        "medicationCodeableConcept": {"text": "aspart"}, "subject": {"reference": "Patient/p"},
        "effectiveDateTime": iso_minutes_ago(30),
        "dosage": {"dose": {"value": 1_000_000.0, "system": "http://unitsofmeasure.org", "code": "[IU]"}}}});
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        obs(&iso_minutes_ago(10), 120.0),
        obs("1900-01-01T00:00:00Z", 120.0),
        obs("0001-01-01T00:00:00Z", 121.0),
        dose,
    ]});
    let r = s.bearer("POST", "/fhir/Bundle", &admin, Some(&bundle));
    assert_eq!(r.status, 400, "{}", r.body);
    let paths: Vec<String> = r.json()["issue"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["expression"][0].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        paths,
        [
            "Bundle.entry[1].resource.effectiveDateTime",
            "Bundle.entry[2].resource.effectiveDateTime",
            "Bundle.entry[3].resource.dosage.dose.value",
        ]
    );

    // Nightscout: `date: 0`, a reading 10 min in the future, carbs 1e9, temp basal 500 U/h,
    // bolus 101 U; the valid documents of the same upload are not stored either.
    let entries = json!([
        {"type": "sgv", "sgv": 120, "date": ms_minutes_ago(5)},
        {"type": "sgv", "sgv": 121, "date": 0},
        {"type": "sgv", "sgv": 122, "date": ms_minutes_ago(-10)},
    ]);
    let r = s.bearer("POST", "/ns/p/api/v1/entries", &admin, Some(&entries));
    assert_eq!(r.status, 400, "{}", r.body);
    let e = r.json()["error"].as_str().unwrap().to_string();
    assert!(
        e.contains("entries[1].date: ") && e.contains("before the earliest"),
        "{e}"
    );
    assert!(
        e.contains("entries[2].date: ") && e.contains("in the future"),
        "{e}"
    );
    assert!(!e.contains("entries[0]"), "{e}");
    let t = iso_minutes_ago(20);
    let treatments = json!([
        {"eventType": "Meal Bolus", "created_at": t, "carbs": 1e9},
        {"eventType": "Temp Basal", "created_at": t, "absolute": 500, "duration": 30},
        {"eventType": "Correction Bolus", "created_at": t, "insulin": 101},
        {"eventType": "Correction Bolus", "created_at": iso_minutes_ago(25), "insulin": 2},
    ]);
    let r = s.bearer("POST", "/ns/p/api/v1/treatments", &admin, Some(&treatments));
    assert_eq!(r.status, 400, "{}", r.body);
    let e = r.json()["error"].as_str().unwrap().to_string();
    for p in [
        "treatments[0].carbs: ",
        "treatments[1].absolute: ",
        "treatments[2].insulin: ",
    ] {
        assert!(e.contains(p), "{p} missing in {e}");
    }
    assert!(!e.contains("treatments[3]"), "{e}");
    let n = s
        .bearer("GET", "/ns/p/api/v1/entries.json?count=100", &admin, None)
        .json();
    assert_eq!(n.as_array().unwrap().len(), 0, "nothing stored: {n}");
    // Plausible data are still accepted.
    let r = s.bearer(
        "POST",
        "/ns/p/api/v1/entries",
        &admin,
        Some(&json!([{"type": "sgv", "sgv": 120, "date": ms_minutes_ago(5)}])),
    );
    assert_eq!(r.status, 200, "{}", r.body);
}

/// Item b: the login's `next` must be a same-site path after percent-decoding; anything else
/// redirects to `/`.
#[test]
fn login_redirects_only_to_same_site_paths() {
    let s = Srv::start("redirect");
    let admin = s.token(Role::Admin, &[]);
    let login = |next: &str| {
        let body = format!("token={admin}&next={next}");
        let r = s.call(
            "POST",
            "/login",
            &[("content-type", "application/x-www-form-urlencoded")],
            Some(&body),
        );
        assert_eq!(r.status, 303, "{next}: {}", r.body);
        r.header("location").unwrap_or("").to_string()
    };
    // The form body is itself percent-decoded once: `%25` sends a literal `%`.
    for bad in [
        "//evil.example",
        "/%2F%2Fevil.example",
        "%2F%2Fevil.example",
        "/%09/evil.example",
        "/%2509/evil.example",
        "/%5C/evil.example",
        "/%255C/evil.example",
        "%2F%5Cevil.example",
        "/%252F/evil.example",
        "https://evil.example",
        "evil.example",
        "/ok%0D%0ALocation:%20https://evil.example",
        "/%2500",
        "",
    ] {
        assert_eq!(login(bad), "/", "next={bad}");
    }
    assert_eq!(login("/ui/patients/p1"), "/ui/patients/p1");
    assert_eq!(login("/ui/patients/p%2D1"), "/ui/patients/p-1");
    // GET /login?token=…&next=… shows the form (no login, no redirect, no bad `next`).
    let r = s.call(
        "GET",
        &format!("/login?token={admin}&next=/%09/evil.example"),
        &[],
        None,
    );
    assert_eq!(r.status, 200);
    assert!(!r.body.contains("evil.example"), "{}", r.body);
}

/// Item c: every dashboard answer carries the browser-hardening headers; JSON answers carry
/// nosniff.
#[test]
fn security_headers_on_every_html_route() {
    let s = Srv::start("headers");
    let admin = s.token(Role::Admin, &[]);
    assert_eq!(
        s.bearer("POST", "/patients", &admin, Some(&json!({"id": "p"})))
            .status,
        201
    );
    let cookie = format!("medtwin_token={admin}");
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let with_cookie = [
        ("cookie", cookie.as_str()),
        ("content-type", "application/x-www-form-urlencoded"),
    ];
    let login_ok = format!("token={admin}");
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a [(&'a str, &'a str)],
        Option<&'a str>,
        u16,
    );
    let cases: Vec<Case> = vec![
        ("GET", "/", &[], None, 200),
        ("GET", "/", &with_cookie, None, 200),
        ("GET", "/login", &[], None, 200),
        ("POST", "/login", &form, Some("token=wrong"), 401),
        ("POST", "/login", &form, Some(&login_ok), 303),
        ("GET", "/logout", &[], None, 303),
        ("GET", "/ui/patients/p", &[], None, 401),
        ("GET", "/ui/patients/p", &with_cookie, None, 200),
        (
            "POST",
            "/ui/patients/p/whatif",
            &with_cookie,
            Some("carbs_g=60&bolus_u=6&at_min=0"),
            200,
        ),
        ("GET", "/ui/style.css", &[], None, 200),
    ];
    for (m, path, h, body, want) in cases {
        let r = s.call(m, path, h, body);
        assert_eq!(r.status, want, "{m} {path}: {}", r.body);
        let csp = r.header("content-security-policy").unwrap_or_default();
        for part in [
            "default-src 'self'",
            "frame-ancestors 'none'",
            "script-src 'none'",
        ] {
            assert!(csp.contains(part), "{m} {path}: CSP `{csp}` lacks {part}");
        }
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        for (k, v) in [
            ("x-frame-options", "DENY"),
            ("x-content-type-options", "nosniff"),
            ("referrer-policy", "no-referrer"),
            ("cache-control", "no-store"),
        ] {
            assert_eq!(r.header(k), Some(v), "{m} {path}: {k}");
        }
        if r.header("content-type")
            .unwrap_or("")
            .starts_with("text/html")
        {
            // The CSP forbids inline styles and scripts: the pages must not need them.
            for bad in ["<script", "style=\"", "<style"] {
                assert!(!r.body.contains(bad), "{m} {path} holds {bad}");
            }
        }
    }
    for path in ["/patients", "/healthz", "/openapi.json", "/audit"] {
        let r = s.bearer("GET", path, &admin, None);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(
            r.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
    }
    let r = s.call("GET", "/patients", &[], None);
    assert_eq!(r.status, 401);
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
}

/// Item f: a token revoked by another process (a second store on the database, as
/// `medtwin token revoke` does) is refused by the running server within a second, also
/// after it was just used (cached); an expired token is refused.
#[test]
fn revoked_and_expired_tokens_are_refused() {
    revoked_and_expired_tokens_are_refused_on(Srv::start("revoke"));
}

fn revoked_and_expired_tokens_are_refused_on(s: Srv) {
    let admin = s.token(Role::Admin, &[]);
    let clin = s.token(Role::Admin, &[]);
    assert_eq!(s.bearer("GET", "/patients", &clin, None).status, 200);
    let cookie = format!("medtwin_token={clin}");
    assert!(s
        .call("GET", "/", &[("cookie", &cookie)], None)
        .body
        .contains("id=\"patients\""));
    let id = s.rt.block_on(async {
        let st = Store::open(&s.db).await.unwrap();
        let list = st.list_tokens().await.unwrap();
        assert_eq!(list.len(), 2);
        assert!(list.iter().all(|t| t.revoked_ms.is_none()));
        let id = list[1].id;
        assert!(st.revoke_token(id).await.unwrap());
        assert!(!st.revoke_token(9999).await.unwrap());
        st.close().await;
        id
    });
    let t0 = std::time::Instant::now();
    let mut refused_after = None;
    while t0.elapsed() < std::time::Duration::from_secs(3) {
        if s.bearer("GET", "/patients", &clin, None).status == 401 {
            refused_after = Some(t0.elapsed());
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let after = refused_after.expect("revoked token still accepted after 3 s");
    eprintln!("revoked token refused after {} ms", after.as_millis());
    assert!(after < std::time::Duration::from_secs(1), "{after:?}");
    // Every way of presenting it is refused; the other token still works.
    let sha1 = medtwin_store::sha1_hex(&clin);
    assert_eq!(
        s.call("GET", "/patients", &[("api-secret", &sha1)], None)
            .status,
        401
    );
    assert!(!s
        .call("GET", "/", &[("cookie", &cookie)], None)
        .body
        .contains("id=\"patients\""));
    assert_eq!(s.bearer("GET", "/patients", &admin, None).status, 200);
    let listed = s.rt.block_on(async {
        let st = Store::open(&s.db).await.unwrap();
        let l = st.list_tokens().await.unwrap();
        st.close().await;
        l
    });
    assert!(listed
        .iter()
        .find(|t| t.id == id)
        .unwrap()
        .revoked_ms
        .is_some());

    // Expiry: valid for 1 s.
    let short = s.rt.block_on(async {
        let st = Store::open(&s.db).await.unwrap();
        let t = st
            .create_token_expiring(
                Role::Admin,
                &[],
                "short",
                Some(medtwin_store::now_ms() + 1000),
            )
            .await
            .unwrap();
        st.close().await;
        t
    });
    assert_eq!(s.bearer("GET", "/patients", &short, None).status, 200);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(s.bearer("GET", "/patients", &short, None).status, 401);
}

/// Item g: every HTML and JSON route × role (admin, clinician of `pat-a`, device of `pat-a`,
/// no credentials) answers the expected status; a device token sees no patient data on any
/// page; an unknown patient is a 404.
#[test]
fn routes_by_role_matrix() {
    routes_by_role_matrix_on(Srv::start("matrix"));
}

fn routes_by_role_matrix_on(s: Srv) {
    let admin = s.token(Role::Admin, &[]);
    for id in ["pat-a", "pat-b"] {
        assert_eq!(
            s.bearer("POST", "/patients", &admin, Some(&json!({"id": id})))
                .status,
            201
        );
    }
    let clin = s.token(Role::Clinician, &["pat-a"]);
    let dev = s.token(Role::Device, &["pat-a"]);
    let reading = |m: i64| {
        json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Observation", "status": "final",
             "code": {"coding": [{"system": "http://loinc.org", "code": "99504-3"}]},
             "subject": {"reference": "Patient/pat-a"}, "effectiveDateTime": iso_minutes_ago(m),
             "valueQuantity": {"value": 123, "system": "http://unitsofmeasure.org", "code": "mg/dL"}}}]})
        .to_string()
    };
    let ns = |m: i64| json!([{"type": "sgv", "sgv": 124, "date": ms_minutes_ago(m)}]).to_string();
    let tr = |m: i64| {
        json!([{"eventType": "Correction Bolus", "created_at": iso_minutes_ago(m), "insulin": 1}])
            .to_string()
    };
    let obs1 = |m: i64| {
        json!({"resourceType": "Observation", "status": "final",
             "code": {"coding": [{"system": "http://loinc.org", "code": "99504-3"}]},
             "subject": {"reference": "Patient/pat-a"}, "effectiveDateTime": iso_minutes_ago(m),
             "valueQuantity": {"value": 125, "system": "http://unitsofmeasure.org", "code": "mg/dL"}})
        .to_string()
    };
    let profile = json!({"defaultProfile": "Day", "store": {"Day": {"timezone": "UTC",
        "basal": [{"time": "00:00", "value": 0.8}]}}})
    .to_string();
    let whatif = json!({"horizon_min": 60, "plans": [{"name": "x"}]}).to_string();
    let form = "carbs_g=10&bolus_u=1&at_min=0";
    // (method, path, body, expected status for admin, clinician, device, none)
    let mut routes: Vec<(&str, String, Option<String>, [u16; 4])> = vec![
        (
            "POST",
            "/patients".into(),
            Some(r#"{"id":"pat-c"}"#.into()),
            [201, 403, 403, 401],
        ),
        ("GET", "/patients".into(), None, [200, 200, 403, 401]),
        (
            "GET",
            "/patients/pat-a/twin".into(),
            None,
            [200, 200, 403, 401],
        ),
        (
            "GET",
            "/patients/pat-b/twin".into(),
            None,
            [200, 403, 403, 401],
        ),
        (
            "GET",
            "/patients/doesnotexist/twin".into(),
            None,
            [404, 403, 403, 401],
        ),
        (
            "GET",
            "/patients/pat-a/forecast".into(),
            None,
            [404, 404, 403, 401],
        ),
        (
            "GET",
            "/patients/pat-b/forecast".into(),
            None,
            [404, 403, 403, 401],
        ),
        (
            "POST",
            "/patients/pat-a/whatif".into(),
            Some(whatif.clone()),
            [409, 409, 403, 401],
        ),
        (
            "POST",
            "/patients/pat-b/whatif".into(),
            Some(whatif),
            [409, 403, 403, 401],
        ),
        (
            "GET",
            "/ns/pat-a/api/v1/entries.json".into(),
            None,
            [200, 200, 403, 401],
        ),
        (
            "GET",
            "/ns/pat-b/api/v1/entries.json".into(),
            None,
            [200, 403, 403, 401],
        ),
        (
            "GET",
            "/ns/doesnotexist/api/v1/entries.json".into(),
            None,
            [404, 403, 403, 401],
        ),
        (
            "GET",
            "/ns/pat-a/api/v1/entries".into(),
            None,
            [200, 200, 403, 401],
        ),
        (
            "GET",
            "/ns/pat-b/api/v1/entries".into(),
            None,
            [200, 403, 403, 401],
        ),
        (
            "POST",
            "/ns/pat-b/api/v1/profile".into(),
            Some(profile.clone()),
            [200, 403, 403, 401],
        ),
        ("GET", "/login".into(), None, [200, 200, 200, 200]),
        ("GET", "/ui/style.css".into(), None, [200, 200, 200, 200]),
        ("GET", "/audit".into(), None, [200, 403, 403, 401]),
        ("GET", "/openapi.json".into(), None, [200, 200, 200, 200]),
        ("GET", "/healthz".into(), None, [200, 200, 200, 200]),
        (
            "POST",
            "/ns/pat-b/api/v1/entries".into(),
            Some(ns(40)),
            [200, 403, 403, 401],
        ),
        ("GET", "/".into(), None, [200, 200, 403, 200]),
        (
            "GET",
            "/ui/patients/pat-a".into(),
            None,
            [200, 200, 403, 401],
        ),
        (
            "GET",
            "/ui/patients/pat-b".into(),
            None,
            [200, 403, 403, 401],
        ),
        (
            "GET",
            "/ui/patients/doesnotexist".into(),
            None,
            [404, 403, 403, 401],
        ),
        (
            "POST",
            "/ui/patients/pat-a/whatif".into(),
            Some(form.into()),
            [200, 200, 403, 401],
        ),
        (
            "POST",
            "/ui/patients/pat-b/whatif".into(),
            Some(form.into()),
            [200, 403, 403, 401],
        ),
        (
            "POST",
            "/ui/patients/doesnotexist/whatif".into(),
            Some(form.into()),
            [404, 403, 403, 401],
        ),
        (
            "POST",
            "/fhir/Patient".into(),
            Some(r#"{"resourceType":"Patient","id":"pat-d"}"#.into()),
            [201, 403, 403, 401],
        ),
        (
            "GET",
            "/fhir/Patient/pat-a".into(),
            None,
            [200, 200, 403, 401],
        ),
        (
            "GET",
            "/fhir/Patient/pat-b".into(),
            None,
            [200, 403, 403, 401],
        ),
        (
            "GET",
            "/fhir/Patient/doesnotexist".into(),
            None,
            [404, 403, 403, 401],
        ),
    ];
    // Ingest routes: each role sends its own (distinct) data.
    for (k, m) in [(0usize, 10i64), (1, 11), (2, 12), (3, 13)] {
        let mut want = [0u16; 4];
        for (j, w) in want.iter_mut().enumerate() {
            *w = if j == k {
                if k == 3 {
                    401
                } else {
                    200
                }
            } else {
                0
            };
        }
        routes.push(("POST", "/fhir/Bundle".into(), Some(reading(m)), want));
        routes.push((
            "POST",
            "/ns/pat-a/api/v1/entries".into(),
            Some(ns(m + 20)),
            want,
        ));
        routes.push((
            "POST",
            "/ns/pat-a/api/v1/treatments".into(),
            Some(tr(m + 20)),
            want,
        ));
        // The `.json` aliases Nightscout uploaders use, the profile, one FHIR Observation.
        routes.push((
            "POST",
            "/ns/pat-a/api/v1/entries.json".into(),
            Some(ns(m + 60)),
            want,
        ));
        routes.push((
            "POST",
            "/ns/pat-a/api/v1/treatments.json".into(),
            Some(tr(m + 60)),
            want,
        ));
        for path in ["/ns/pat-a/api/v1/profile", "/ns/pat-a/api/v1/profile.json"] {
            routes.push(("POST", path.into(), Some(profile.clone()), want));
        }
        let created = want.map(|w| if w == 200 { 201 } else { w });
        routes.push((
            "POST",
            "/fhir/Observation".into(),
            Some(obs1(m + 80)),
            created,
        ));
    }
    // Logging out last (it only clears the cookie): 303 for everyone.
    routes.push(("GET", "/logout".into(), None, [303, 303, 303, 303]));
    let roles: [(&str, Option<&str>); 4] = [
        ("admin", Some(&admin)),
        ("clinician", Some(&clin)),
        ("device", Some(&dev)),
        ("none", None),
    ];
    let mut failures = Vec::new();
    let mut n = 0;
    for (method, path, body, want) in &routes {
        let html = path == "/" || path.starts_with("/ui/");
        for (k, (role, tok)) in roles.iter().enumerate() {
            if want[k] == 0 {
                continue;
            }
            let cookie = tok.map(|t| format!("medtwin_token={t}"));
            let auth = tok.map(|t| format!("Bearer {t}"));
            let ctype = if html {
                "application/x-www-form-urlencoded"
            } else {
                "application/json"
            };
            let mut h: Vec<(&str, &str)> = vec![("content-type", ctype)];
            match (html, &cookie, &auth) {
                (true, Some(c), _) => h.push(("cookie", c)),
                (false, _, Some(a)) => h.push(("authorization", a)),
                _ => {}
            }
            let r = s.call(method, path, &h, body.as_deref());
            n += 1;
            if r.status != want[k] {
                failures.push(format!(
                    "{method} {path} as {role}: {} (expected {}): {}",
                    r.status,
                    want[k],
                    r.body.chars().take(200).collect::<String>()
                ));
            }
            if html && *role == "device" {
                for leak in ["pat-a", "123", "124", "id=\"patients\"", "glucose-chart"] {
                    if r.body.contains(leak) {
                        failures.push(format!("{method} {path} as device shows `{leak}`"));
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{n} requests; failures:\n{}",
        failures.join("\n")
    );
    // The clinician's list holds its patient only; the admin's all.
    let cl = s.call(
        "GET",
        "/",
        &[("cookie", &format!("medtwin_token={clin}"))],
        None,
    );
    assert!(cl.body.contains("/ui/patients/pat-a") && !cl.body.contains("pat-b"));
    let ad = s.call(
        "GET",
        "/",
        &[("cookie", &format!("medtwin_token={admin}"))],
        None,
    );
    assert!(ad.body.contains("/ui/patients/pat-b"));
}

/// Unauthenticated floods cannot grow the audit log without bound: ids are truncated to 128
/// characters, and the refused requests of a client are one record per minute plus its
/// first one.
#[test]
fn unauthenticated_flood_audit_is_bounded() {
    let mut s = Srv::start_with("flood", |c| c.client_auth_failures_per_min = 0.0);
    let long = "A".repeat(10_000);
    let db_file = s.dir.join("t.db");
    let size = |p: &std::path::Path| {
        ["", "-wal"]
            .iter()
            .map(|x| {
                std::fs::metadata(format!("{}{x}", p.display()))
                    .map(|m| m.len())
                    .unwrap_or(0)
            })
            .sum::<u64>()
    };
    let before = size(&db_file);
    let n = 1000;
    let t0 = std::time::Instant::now();
    for _ in 0..n {
        let r = s.call("GET", &format!("/patients/{long}/forecast"), &[], None);
        assert_eq!(r.status, 401);
    }
    let secs = t0.elapsed().as_secs_f64();
    let after = size(&db_file);
    eprintln!(
        "{n} unauthenticated requests in {secs:.2} s: database + WAL {before} -> {after} bytes"
    );
    s.stop();
    let rows = s.rt.block_on(async {
        let st = Store::open(&s.db).await.unwrap();
        let l = st.audit_log(None, 100_000).await.unwrap();
        st.close().await;
        l
    });
    let anon: Vec<_> = rows
        .iter()
        .filter(|r| r.actor.starts_with("anonymous"))
        .collect();
    assert!(
        anon.iter()
            .all(|r| r.actor.starts_with("anonymous@127.0.0.1")),
        "{anon:?}"
    );
    assert!(anon
        .iter()
        .all(|r| r.patient_id.as_deref().map_or(0, |p| p.chars().count()) <= 128));
    // One record per client and minute for the first refusal, one aggregate per minute.
    let single = anon.iter().filter(|r| r.patient_id.is_some()).count();
    let aggregated: Vec<_> = anon.iter().filter(|r| r.patient_id.is_none()).collect();
    assert!((1..=2).contains(&single), "{single} single records");
    assert!((1..=2).contains(&aggregated.len()), "{aggregated:?}");
    let counted: usize = aggregated
        .iter()
        .map(|r| {
            r.detail
                .split(' ')
                .next()
                .unwrap()
                .parse::<usize>()
                .unwrap()
        })
        .sum();
    assert_eq!(
        single + counted,
        n,
        "every refused request is accounted for"
    );
}

/// Per-client limits: refused authentications beyond the limit, and requests beyond the
/// rate, get 429 with Retry-After.
#[test]
fn rate_limits_answer_429_with_retry_after() {
    let s = Srv::start("ratelimit");
    let (mut n401, mut n429, mut retry) = (0, 0, None);
    for i in 0..300 {
        let r = s.bearer("GET", "/patients", &format!("mt_wrong{i}"), None);
        match r.status {
            401 => n401 += 1,
            429 => {
                n429 += 1;
                retry = r.header("retry-after").map(str::to_string);
            }
            other => panic!("{other}"),
        }
    }
    eprintln!("300 wrong tokens: {n401} x 401, {n429} x 429 (Retry-After {retry:?})");
    assert!((60..=62).contains(&n401), "{n401}");
    assert_eq!(n401 + n429, 300);
    let retry: u64 = retry.expect("Retry-After").parse().unwrap();
    assert!((1..=60).contains(&retry));

    let s = Srv::start_with("ratelimit2", |c| c.client_rate_per_s = 20.0);
    let statuses: Vec<u16> = (0..100)
        .map(|_| s.call("GET", "/healthz", &[], None).status)
        .collect();
    let ok = statuses.iter().filter(|x| **x == 200).count();
    eprintln!("100 requests at rate limit 20/s: {ok} x 200");
    assert!((40..=70).contains(&ok), "{ok}");
    let r = s.call("GET", "/healthz", &[], None);
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").is_some());
}

/// Per-token limits: a burst beyond the limit gets 429 with `Retry-After`, another token is
/// unaffected, the bucket refills; requests without a valid credential have their own
/// per-address bucket of the same size.
#[test]
fn per_token_rate_limit() {
    // 120 per minute: a burst of 120, then 2 per second.
    let s = Srv::start_with("tokenlimit", |c| c.rate_limit_per_min = 120.0);
    let a = s.token(Role::Admin, &[]);
    let b = s.token(Role::Admin, &[]);
    let mut statuses = Vec::new();
    let mut first_429 = None;
    let t0 = std::time::Instant::now();
    for _ in 0..150 {
        let r = s.bearer("GET", "/patients", &a, None);
        if r.status == 429 && first_429.is_none() {
            first_429 = Some(r);
        } else {
            statuses.push(r.status);
        }
    }
    let took = t0.elapsed().as_secs_f64();
    let ok = statuses.iter().filter(|x| **x == 200).count();
    let limited = 150 - ok;
    eprintln!("150 requests of one token in {took:.2} s at 120/min: {ok} x 200, {limited} x 429");
    assert!(
        statuses.iter().all(|x| *x == 200 || *x == 429),
        "{statuses:?}"
    );
    // The burst (120) plus what refilled while the loop ran (2/s).
    assert!(
        ok >= 120 && ok <= 120 + (took * 2.0).ceil() as usize + 1,
        "{ok} in {took} s"
    );
    let r = first_429.expect("no 429 after 150 requests at a limit of 120/min");
    let retry: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert!(
        r.json()["error"].as_str().unwrap().contains("this token"),
        "{}",
        r.body
    );
    // Still limited right now; another token is not.
    assert_eq!(s.bearer("GET", "/patients", &a, None).status, 429);
    assert_eq!(s.bearer("GET", "/patients", &b, None).status, 200);
    // Refills at 2 per second.
    std::thread::sleep(std::time::Duration::from_millis(1600));
    assert_eq!(s.bearer("GET", "/patients", &a, None).status, 200);

    // Without a valid credential: the client address's own bucket (the tokens' requests did
    // not spend from it), 429 once it is empty, and the tokens are unaffected by that.
    let anon: Vec<u16> = (0..130)
        .map(|_| s.call("GET", "/healthz", &[], None).status)
        .collect();
    let ok = anon.iter().filter(|x| **x == 200).count();
    eprintln!("130 unauthenticated requests at 120/min: {ok} x 200");
    assert!((120..=124).contains(&ok), "{ok}");
    let r = s.call("GET", "/healthz", &[], None);
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").is_some());
    assert_eq!(s.bearer("GET", "/patients", &b, None).status, 200);

    // 0: no per-token limit.
    let s = Srv::start_with("tokenlimit0", |c| c.rate_limit_per_min = 0.0);
    let a = s.token(Role::Admin, &[]);
    assert!((0..300).all(|_| s.bearer("GET", "/patients", &a, None).status == 200));
}

/// `POST /fhir/Patient`: id from `id` or the first `identifier.value`, 201 with `Location`,
/// 200 when it exists, 400 `OperationOutcome` naming the element; the patient then takes data.
#[test]
fn fhir_patient_create() {
    fhir_patient_create_on(Srv::start("fhirpatient"));
}

fn fhir_patient_create_on(s: Srv) {
    let admin = s.token(Role::Admin, &[]);
    let post = |body: &str| {
        s.call(
            "POST",
            "/fhir/Patient",
            &[
                ("authorization", &format!("Bearer {admin}")),
                ("content-type", "application/fhir+json"),
            ],
            Some(body),
        )
    };
    // By id: 201, Location, the resource echoed.
    let r = post(
        r#"{"resourceType": "Patient", "id": "amy-1", "gender": "female", "birthDate": "1990-04-01"}"#,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.header("location"), Some("/fhir/Patient/amy-1"));
    let v = r.json();
    assert_eq!(v["resourceType"], "Patient");
    assert_eq!(v["id"], "amy-1");
    assert_eq!(v["gender"], "female");
    // Again: 200 (exists), same Location.
    let r = post(r#"{"resourceType": "Patient", "id": "amy-1"}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("location"), Some("/fhir/Patient/amy-1"));
    // No id: the first identifier with a value (as the HL7 CGM IG's examples send it).
    let r = post(
        r#"{"resourceType": "Patient", "identifier": [{"system": "http://example.org/mrn"}, {"system": "http://example.org/mrn", "value": "mrn-0042"}]}"#,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.header("location"), Some("/fhir/Patient/mrn-0042"));
    assert_eq!(r.json()["id"], "mrn-0042");
    // Readable, and it takes data.
    let r = s.bearer("GET", "/fhir/Patient/mrn-0042", &admin, None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["id"], "mrn-0042");
    let obs = json!({"resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "99504-3"}]},
        "subject": {"reference": "Patient/mrn-0042"}, "effectiveDateTime": iso_minutes_ago(5),
        "valueQuantity": {"value": 111, "system": "http://unitsofmeasure.org", "code": "mg/dL"}});
    assert_eq!(
        s.bearer("POST", "/fhir/Observation", &admin, Some(&obs))
            .status,
        201
    );

    // Bad resources: 400, OperationOutcome naming the element; nothing created.
    let bad: [(&str, &str); 8] = [
        (
            r#"{"resourceType": "Observation", "id": "x1"}"#,
            "Patient.resourceType",
        ),
        (r#"{"id": "x2"}"#, "Patient.resourceType"),
        (r#"{"resourceType": "Patient"}"#, "Patient.id"),
        (
            r#"{"resourceType": "Patient", "id": "has space"}"#,
            "Patient.id",
        ),
        (r#"{"resourceType": "Patient", "id": 42}"#, "Patient.id"),
        (
            r#"{"resourceType": "Patient", "identifier": {"value": "x3"}}"#,
            "Patient.identifier",
        ),
        (
            r#"{"resourceType": "Patient", "identifier": [{"value": 7}]}"#,
            "Patient.identifier[0].value",
        ),
        (
            r#"{"resourceType": "Patient", "identifier": [{"value": "bad/id"}]}"#,
            "Patient.identifier[0].value",
        ),
    ];
    for (body, at) in bad {
        let r = post(body);
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        let v = r.json();
        assert_eq!(v["resourceType"], "OperationOutcome", "{}", r.body);
        let exprs: Vec<String> = v["issue"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|i| i["expression"].as_array().cloned().unwrap_or_default())
            .filter_map(|e| e.as_str().map(str::to_string))
            .collect();
        assert!(
            exprs.iter().any(|e| e == at),
            "{body}: {exprs:?} lacks {at}"
        );
    }
    let r = post("{not json");
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["resourceType"], "OperationOutcome");
    let list = s.bearer("GET", "/patients", &admin, None).json();
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["id"].as_str())
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    // The OpenAPI document lists the route.
    let doc = s.call("GET", "/openapi.json", &[], None).json();
    assert!(doc["paths"]["/fhir/Patient"]["post"].is_object());
}

/// Percent temp basals: refused with the element and the reason while no profile is known;
/// after `POST /ns/{id}/api/v1/profile` they are stored as the scheduled rate × (100 +
/// percent) / 100; a profile without a usable schedule is refused naming the element.
#[test]
fn percent_temp_basals_resolve_against_the_uploaded_profile() {
    percent_temp_basals_resolve_against_the_uploaded_profile_on(Srv::start("percent"));
}

fn percent_temp_basals_resolve_against_the_uploaded_profile_on(s: Srv) {
    let admin = s.token(Role::Admin, &[]);
    assert_eq!(
        s.bearer("POST", "/patients", &admin, Some(&json!({"id": "p1"})))
            .status,
        201
    );
    let dev = s.token(Role::Device, &["p1"]);
    let at = iso_minutes_ago(30);
    let treatments = json!([
        {"eventType": "Correction Bolus", "created_at": iso_minutes_ago(40), "insulin": 1.5},
        {"eventType": "Temp Basal", "created_at": at, "percent": -25, "duration": 60}
    ]);
    // No profile yet: 400 naming the element and what to do; nothing stored (not the bolus).
    let r = s.bearer("POST", "/ns/p1/api/v1/treatments", &dev, Some(&treatments));
    assert_eq!(r.status, 400, "{}", r.body);
    let e = r.json()["error"].as_str().unwrap().to_string();
    assert!(
        e.contains("treatments[1].percent") && e.contains("no profile"),
        "{e}"
    );
    assert!(e.contains("/ns/p1/api/v1/profile"), "{e}");
    let data = |s: &Srv| {
        s.rt.block_on(async {
            let st = Store::open(&s.db).await.unwrap();
            let d = st.data("p1", 0).await.unwrap();
            st.close().await;
            d
        })
    };
    assert!(data(&s).is_empty());

    // A profile with a broken schedule: 400 naming the element; nothing kept.
    let bad = json!({"defaultProfile": "Day", "store": {"Day": {"timezone": "UTC",
        "basal": [{"time": "00:00", "value": 1.0}, {"time": "12:00", "value": -2}]}}});
    let r = s.bearer("POST", "/ns/p1/api/v1/profile", &dev, Some(&bad));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body.contains("profile.store.Day.basal[1].value"),
        "{}",
        r.body
    );
    assert_eq!(
        s.bearer("POST", "/ns/p1/api/v1/treatments", &dev, Some(&treatments))
            .status,
        400
    );

    // The profile as AndroidAPS/Loop upload it (an array, newest startDate used).
    let profile = json!([
        {"defaultProfile": "Day", "startDate": "2025-01-01T00:00:00.000Z", "store": {"Day": {"timezone": "UTC",
            "basal": [{"time": "00:00", "value": 1.0, "timeAsSeconds": 0}, {"time": "12:00", "value": 2.0, "timeAsSeconds": 43200}],
            "sens": [{"time": "00:00", "value": 50}], "carbratio": [{"time": "00:00", "value": 10}]}}},
        {"defaultProfile": "Old", "startDate": "2024-01-01T00:00:00.000Z", "store": {"Old": {"basal": [{"time": "00:00", "value": 9.0}]}}}
    ]);
    let r = s.bearer("POST", "/ns/p1/api/v1/profile", &dev, Some(&profile));
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["profile"], "Day");
    assert_eq!(v["basal"][1], json!({"time": "12:00", "value": 2.0}));
    let r = s.bearer("POST", "/ns/p1/api/v1/treatments", &dev, Some(&treatments));
    assert_eq!(r.status, 200, "{}", r.body);
    let t: jiff::Timestamp = at.parse().unwrap();
    let hour = t.to_zoned(jiff::tz::TimeZone::UTC).hour();
    let want = if hour < 12 { 0.75 } else { 1.5 };
    let d = data(&s);
    let basal: Vec<f64> = d
        .iter()
        .filter(|x| x.entry.kind == medtwin_io::RecordKind::BasalRate)
        .map(|x| x.entry.value)
        .collect();
    assert_eq!(basal, vec![want], "{d:?}");
    assert_eq!(d.len(), 2);
    // A percent below -100 is refused with its element.
    let r = s.bearer(
        "POST",
        "/ns/p1/api/v1/treatments",
        &dev,
        Some(&json!([{"eventType": "Temp Basal", "created_at": iso_minutes_ago(20), "percent": -150, "duration": 30}])),
    );
    assert_eq!(r.status, 400);
    assert!(r.body.contains("treatments[0].percent"), "{}", r.body);
    // Another patient's profile is not this token's to write.
    assert_eq!(
        s.bearer("POST", "/ns/p2/api/v1/profile", &dev, Some(&profile))
            .status,
        403
    );
}

/// Patient-relative plausibility: data more than the margin (90 days) before the patient's
/// record start are refused naming the element; within the margin (back-filling) they are
/// stored; a patient without CGM has no record start yet.
#[test]
fn data_long_before_the_record_start_are_refused() {
    let s = Srv::start("recordstart");
    let admin = s.token(Role::Admin, &[]);
    assert_eq!(
        s.bearer("POST", "/patients", &admin, Some(&json!({"id": "p1"})))
            .status,
        201
    );
    let sgv = |m: i64, v: i64| json!([{"type": "sgv", "sgv": v, "date": ms_minutes_ago(m)}]);
    let day = 24 * 60;
    // No CGM yet: an old reading (after 2000) is accepted and starts the record.
    assert_eq!(
        s.bearer(
            "POST",
            "/ns/p1/api/v1/entries",
            &admin,
            Some(&sgv(30 * day, 120))
        )
        .status,
        200
    );
    // 80 days before the record start: within the margin.
    assert_eq!(
        s.bearer(
            "POST",
            "/ns/p1/api/v1/entries",
            &admin,
            Some(&sgv(110 * day, 121))
        )
        .status,
        200
    );
    // The record now starts 110 days ago; 210 days ago is beyond 90 days before it.
    let r = s.bearer(
        "POST",
        "/ns/p1/api/v1/entries",
        &admin,
        Some(&json!([{"type": "sgv", "sgv": 130, "date": ms_minutes_ago(5)}, {"type": "sgv", "sgv": 131, "date": ms_minutes_ago(210 * day)}])),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let e = r.json()["error"].as_str().unwrap().to_string();
    assert!(
        e.contains("entries[1]") && e.contains("record start"),
        "{e}"
    );
    // Nothing of it stored (the recent reading neither), on the FHIR path too.
    let n = s
        .bearer("GET", "/ns/p1/api/v1/entries.json?count=100", &admin, None)
        .json();
    assert_eq!(n.as_array().unwrap().len(), 2);
    let obs = json!({"resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "99504-3"}]},
        "subject": {"reference": "Patient/p1"}, "effectiveDateTime": iso_minutes_ago(400 * day),
        "valueQuantity": {"value": 111, "system": "http://unitsofmeasure.org", "code": "mg/dL"}});
    let r = s.bearer("POST", "/fhir/Observation", &admin, Some(&obs));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("record start"), "{}", r.body);

    // Margin 0: no patient-relative limit.
    let s = Srv::start_with("recordstart0", |c| c.record_start_margin_days = 0.0);
    let admin = s.token(Role::Admin, &[]);
    s.bearer("POST", "/patients", &admin, Some(&json!({"id": "p1"})));
    assert_eq!(
        s.bearer("POST", "/ns/p1/api/v1/entries", &admin, Some(&sgv(5, 120)))
            .status,
        200
    );
    assert_eq!(
        s.bearer(
            "POST",
            "/ns/p1/api/v1/entries",
            &admin,
            Some(&sgv(400 * day, 120))
        )
        .status,
        200
    );
}

/// Item a, partial success: a `batch` bundle stores its valid entries and reports each
/// refused one with its element path; the same entries as a `transaction` store nothing.
#[test]
fn batch_bundles_store_valid_entries_and_report_the_others() {
    batch_bundles_store_valid_entries_and_report_the_others_on(Srv::start("batch"));
}

fn batch_bundles_store_valid_entries_and_report_the_others_on(s: Srv) {
    let admin = s.token(Role::Admin, &[]);
    assert_eq!(
        s.bearer("POST", "/patients", &admin, Some(&json!({"id": "p"})))
            .status,
        201
    );
    let obs = |t: &str, v: f64| {
        json!({"resource": {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "99504-3"}]},
            "subject": {"reference": "Patient/p"}, "effectiveDateTime": t,
            "valueQuantity": {"value": v, "system": "http://unitsofmeasure.org", "code": "mg/dL"}}})
    };
    let entries = json!([
        obs(&iso_minutes_ago(10), 120.0),
        obs("1970-01-01T00:00:00Z", 121.0),
        obs(&iso_minutes_ago(5), 122.0),
        {"resource": {"resourceType": "MedicationAdministration", "status": "completed",
         "subject": {"reference": "Patient/p"}, "effectiveDateTime": iso_minutes_ago(5),
         "dosage": {"dose": {"value": 1e6, "system": "http://unitsofmeasure.org", "code": "[IU]"}}}},
    ]);
    let count = || {
        s.bearer("GET", "/ns/p/api/v1/entries.json?count=100", &admin, None)
            .json()
            .as_array()
            .unwrap()
            .len()
    };
    let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
    let r = s.bearer("POST", "/fhir/Bundle", &admin, Some(&tx));
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(count(), 0);
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": entries});
    let r = s.bearer("POST", "/fhir/Bundle", &admin, Some(&batch));
    assert_eq!(r.status, 200, "{}", r.body);
    let b = r.json();
    assert_eq!(b["type"], "batch-response");
    let st: Vec<&str> = b["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["response"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        st,
        [
            "201 Created",
            "400 Bad Request",
            "201 Created",
            "400 Bad Request"
        ]
    );
    assert_eq!(
        b["entry"][1]["response"]["outcome"]["issue"][0]["expression"][0],
        "Bundle.entry[1].resource.effectiveDateTime"
    );
    assert_eq!(
        b["entry"][3]["response"]["outcome"]["issue"][0]["expression"][0],
        "Bundle.entry[3].resource.dosage.dose.value"
    );
    assert_eq!(count(), 2);
}

/// Timeouts: a client that opens a request and never finishes its head is disconnected after
/// the header-read timeout; complete requests on other connections are still answered.
#[test]
fn incomplete_request_heads_are_disconnected() {
    use std::io::{Read, Write};
    let s = Srv::start_with("headtimeout", |c| c.header_read_timeout_s = 1.0);
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut socks: Vec<std::net::TcpStream> = (0..20)
        .map(|_| {
            let mut t = std::net::TcpStream::connect(&addr).unwrap();
            t.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .unwrap();
            t.set_read_timeout(Some(std::time::Duration::from_secs(6)))
                .unwrap();
            t
        })
        .collect();
    let t0 = std::time::Instant::now();
    assert_eq!(s.call("GET", "/healthz", &[], None).status, 200);
    for (i, t) in socks.iter_mut().enumerate() {
        let mut buf = [0u8; 512];
        // Closed: end of stream (possibly after a 408 answer) or a reset; open: WouldBlock.
        let closed = loop {
            match t.read(&mut buf) {
                Ok(0) => break true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => break false,
                Err(_) => break true,
            }
        };
        assert!(
            closed,
            "incomplete request {i} still open after {:?}",
            t0.elapsed()
        );
    }
    let waited = t0.elapsed().as_secs_f64();
    eprintln!("20 incomplete request heads closed after {waited:.2} s");
    assert!(waited < 4.0, "{waited}");
}

/// Timeouts: a request whose body never completes is answered 408 after the request timeout
/// (here 1 s), and nothing of it is stored.
#[test]
fn stalled_request_bodies_get_408() {
    use std::io::{Read, Write};
    let s = Srv::start_with("reqtimeout", |c| c.request_timeout_s = 1.0);
    let admin = s.token(Role::Admin, &[]);
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut t = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        t,
        "POST /ns/stall/api/v1/entries HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {admin}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n[{{\"type\": \"sgv\""
    )
    .unwrap();
    t.set_read_timeout(Some(std::time::Duration::from_secs(8)))
        .unwrap();
    let t0 = std::time::Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while let Ok(n) = t.read(&mut buf) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        if got.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let waited = t0.elapsed().as_secs_f64();
    let head = String::from_utf8_lossy(&got);
    assert!(
        head.starts_with("HTTP/1.1 408"),
        "after {waited:.2} s: {head:?}"
    );
    assert!((0.9..5.0).contains(&waited), "answered after {waited:.2} s");
    let r = s.call(
        "GET",
        "/ns/stall/api/v1/entries",
        &[("authorization", &format!("Bearer {admin}"))],
        None,
    );
    assert!(
        r.status == 404 || !r.body.contains("sgv"),
        "{} {}",
        r.status,
        r.body
    );
}

/// Limits on what-if size: more than 1000 entries in a plan → 413, a horizon over 720 min or
/// more than 8 plans → 400, each with a message naming the value; checked before any work
/// (the patient's twin is not even calibrated).
#[test]
fn whatif_plan_size_and_horizon_are_limited() {
    whatif_plan_size_and_horizon_are_limited_on(Srv::start("whatiflimit"));
}

fn whatif_plan_size_and_horizon_are_limited_on(s: Srv) {
    let admin = s.token(Role::Admin, &[]);
    assert_eq!(
        s.bearer("POST", "/patients", &admin, Some(&json!({"id": "p"})))
            .status,
        201
    );
    let meals: Vec<Value> = (0..1001)
        .map(|i| json!({"at_min": (i % 240) as f64, "carbs_g": 1.0}))
        .collect();
    let big = json!({"horizon_min": 240, "plans": [{"name": "a", "meals": meals}]});
    let r = s.bearer("POST", "/patients/p/whatif", &admin, Some(&big));
    assert_eq!(r.status, 413, "{}", r.body);
    let e = r.json()["error"].as_str().unwrap().to_string();
    assert!(
        e.contains("plans[0]") && e.contains("1001") && e.contains("1000"),
        "{e}"
    );

    let long = json!({"horizon_min": 100000, "plans": [{"name": "a"}]});
    let r = s.bearer("POST", "/patients/p/whatif", &admin, Some(&long));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("horizon_min = 100000"), "{}", r.body);

    let plans: Vec<Value> = (0..9).map(|i| json!({"name": format!("p{i}")})).collect();
    let many = json!({"horizon_min": 60, "plans": plans});
    let r = s.bearer("POST", "/patients/p/whatif", &admin, Some(&many));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("9 given"), "{}", r.body);

    // Within the limits the request goes on to the twin (not calibrated here: 409).
    let ok = json!({"horizon_min": 240, "plans": [{"name": "a", "meals": [{"at_min": 10.0, "carbs_g": 40.0}]}]});
    assert_eq!(
        s.bearer("POST", "/patients/p/whatif", &admin, Some(&ok))
            .status,
        409
    );
}

/// Conflicts: a different value at a stored time is a 409 naming the element, the time and
/// both values (Nightscout and FHIR transactions: nothing of the upload stored; FHIR batch:
/// `409 Conflict` with an OperationOutcome for that entry, the others stored); identical
/// re-sends stay idempotent duplicates.
#[test]
fn differing_values_at_stored_times_are_conflicts() {
    differing_values_at_stored_times_are_conflicts_on(Srv::start("conflict"));
}

fn differing_values_at_stored_times_are_conflicts_on(s: Srv) {
    let admin = s.token(Role::Admin, &[]);
    assert_eq!(
        s.bearer("POST", "/patients", &admin, Some(&json!({"id": "p"})))
            .status,
        201
    );
    let count = || {
        s.bearer("GET", "/ns/p/api/v1/entries.json?count=100", &admin, None)
            .json()
            .as_array()
            .unwrap()
            .len()
    };
    let (t1, t2, t3) = (ms_minutes_ago(20), ms_minutes_ago(15), ms_minutes_ago(10));
    let sgv = |t: i64, v: f64| json!({"type": "sgv", "date": t, "sgv": v});
    let ns = "/ns/p/api/v1/entries";
    let r = s.bearer("POST", ns, &admin, Some(&json!([sgv(t1, 120.0)])));
    assert_eq!(
        (r.status, r.json()["inserted"].as_u64()),
        (200, Some(1)),
        "{}",
        r.body
    );
    let r = s.bearer("POST", ns, &admin, Some(&json!([sgv(t1, 120.0)])));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (
            r.json()["duplicates"].as_u64(),
            r.json()["conflicts"].as_u64()
        ),
        (Some(1), None)
    );
    let r = s.bearer(
        "POST",
        ns,
        &admin,
        Some(&json!([sgv(t2, 110.0), sgv(t1, 130.0)])),
    );
    assert_eq!(r.status, 409, "{}", r.body);
    let e = r.json()["error"].as_str().unwrap().to_string();
    assert!(
        e.contains("entries[1]") && e.contains("120") && e.contains("130"),
        "{e}"
    );
    assert!(!e.contains("entries[0]"), "{e}");
    assert_eq!(count(), 1, "nothing of a conflicting upload is stored");

    let obs = |t: &str, v: f64| {
        json!({"resource": {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "99504-3"}]},
            "subject": {"reference": "Patient/p"}, "effectiveDateTime": t,
            "valueQuantity": {"value": v, "system": "http://unitsofmeasure.org", "code": "mg/dL"}}})
    };
    let iso = |ms: i64| jiff::Timestamp::from_millisecond(ms).unwrap().to_string();
    // Transaction: all or nothing.
    let tx = json!({"resourceType": "Bundle", "type": "transaction",
        "entry": [obs(&iso(t3), 100.0), obs(&iso(t1), 125.0)]});
    let r = s.bearer("POST", "/fhir/Bundle", &admin, Some(&tx));
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(r.json()["resourceType"], "OperationOutcome");
    assert!(
        r.body.contains("125") && r.body.contains("120"),
        "{}",
        r.body
    );
    assert_eq!(count(), 1);
    // Batch: two differing values at one new time, a conflict with a stored value, an
    // identical re-send, a new value.
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        obs(&iso(t2), 111.0), obs(&iso(t2), 112.0), obs(&iso(t1), 125.0),
        obs(&iso(t1), 120.0), obs(&iso(t3), 100.0)]});
    let r = s.bearer("POST", "/fhir/Bundle", &admin, Some(&batch));
    assert_eq!(r.status, 200, "{}", r.body);
    let b = r.json();
    let st: Vec<&str> = b["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["response"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        st,
        [
            "201 Created",
            "409 Conflict",
            "409 Conflict",
            "200 OK",
            "201 Created"
        ]
    );
    let o = &b["entry"][1]["response"]["outcome"]["issue"][0];
    assert_eq!(o["expression"][0], "Bundle.entry[1].resource");
    assert_eq!(o["code"], "conflict");
    let d = o["diagnostics"].as_str().unwrap();
    assert!(
        d.contains("stored as 111") && d.contains("this one is 112"),
        "{d}"
    );
    assert_eq!(count(), 3);
}

/// Login by form POST only: a token in the URL no longer logs in (200 login form, no cookie);
/// the form keeps a same-site `next`; the cookie is `Secure` only when the server runs behind a
/// TLS proxy; an unknown patient's page is a 404.
#[test]
fn login_by_form_post_only_and_secure_cookie_behind_tls() {
    let s = Srv::start("loginpost");
    let admin = s.token(Role::Admin, &[]);
    let r = s.call(
        "GET",
        &format!("/login?token={admin}&next=/ui/patients/p"),
        &[],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("set-cookie"), None, "a token in the URL logged in");
    assert!(r.body.contains("method=\"post\""), "{}", r.body);
    assert!(
        r.body.contains("name=\"next\" value=\"/ui/patients/p\""),
        "{}",
        r.body
    );
    assert!(!r.body.contains(&admin), "the token is echoed");
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let r = s.call(
        "POST",
        "/login",
        &form,
        Some(&format!("token={admin}&next=/")),
    );
    assert_eq!(r.status, 303);
    let c = r.header("set-cookie").unwrap().to_string();
    assert!(c.contains("HttpOnly") && !c.contains("Secure"), "{c}");
    let cookie = format!("medtwin_token={admin}");
    let r = s.call(
        "GET",
        "/ui/patients/doesnotexist",
        &[("cookie", &cookie)],
        None,
    );
    assert_eq!(r.status, 404, "{}", r.body);

    let s = Srv::start_with("loginpost-tls", |c| c.secure_cookies = true);
    let admin = s.token(Role::Admin, &[]);
    let r = s.call("POST", "/login", &form, Some(&format!("token={admin}")));
    assert_eq!(r.status, 303);
    let c = r.header("set-cookie").unwrap().to_string();
    assert!(c.contains("; Secure") && c.contains("HttpOnly"), "{c}");
    let r = s.call("GET", "/logout", &[], None);
    assert!(r.header("set-cookie").unwrap().contains("; Secure"));
}

/// Real exports: Nightscout mongoexport (JSON lines, extended-JSON numbers) and arrays are
/// both accepted, a broken line is named; a FHIR Observation with `effectivePeriod` is stored
/// at the period's start; `POST /fhir/Observation` stores one resource (201, 200 on re-send,
/// 409 for a different value, 400 with `Observation.…` paths).
#[test]
fn mongoexport_lines_effective_period_and_single_observation() {
    mongoexport_lines_effective_period_and_single_observation_on(Srv::start("exports"));
}

fn mongoexport_lines_effective_period_and_single_observation_on(s: Srv) {
    let admin = s.token(Role::Admin, &[]);
    assert_eq!(
        s.bearer("POST", "/patients", &admin, Some(&json!({"id": "p"})))
            .status,
        201
    );
    let entries = |n: usize| -> Vec<Value> {
        s.bearer(
            "GET",
            &format!("/ns/p/api/v1/entries.json?count={n}"),
            &admin,
            None,
        )
        .json()
        .as_array()
        .unwrap()
        .clone()
    };
    let (t1, t2, t3) = (ms_minutes_ago(30), ms_minutes_ago(25), ms_minutes_ago(20));
    let lines = format!(
        "{{\"_id\":{{\"$oid\":\"a1\"}},\"type\":\"sgv\",\"date\":{{\"$numberLong\":\"{t1}\"}},\"sgv\":101}}\n\n{{\"type\":\"sgv\",\"date\":{t2},\"sgv\":{{\"$numberInt\":\"102\"}}}}\n"
    );
    let auth = format!("Bearer {admin}");
    let h = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    let r = s.call("POST", "/ns/p/api/v1/entries", &h, Some(&lines));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["inserted"], 2, "{}", r.body);
    let arr = json!([{"type": "sgv", "date": t3, "sgv": 103}]).to_string();
    let r = s.call("POST", "/ns/p/api/v1/entries", &h, Some(&arr));
    assert_eq!(
        (r.status, r.json()["inserted"].as_u64()),
        (200, Some(1)),
        "{}",
        r.body
    );
    let bad = format!("{{\"type\":\"sgv\",\"date\":{t1},\"sgv\":101}}\n{{\"type\": sgv}}\n");
    let r = s.call("POST", "/ns/p/api/v1/entries", &h, Some(&bad));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("line 2"), "{}", r.body);
    assert_eq!(entries(100).len(), 3);

    let start = jiff::Timestamp::from_millisecond(ms_minutes_ago(15)).unwrap();
    let end = jiff::Timestamp::from_millisecond(ms_minutes_ago(10)).unwrap();
    let obs = |v: f64| {
        json!({"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "99504-3"}]},
            "subject": {"reference": "Patient/p"},
            "effectivePeriod": {"start": start.to_string(), "end": end.to_string()},
            "valueQuantity": {"value": v, "system": "http://unitsofmeasure.org", "code": "mg/dL"}})
    };
    let r = s.bearer("POST", "/fhir/Observation", &admin, Some(&obs(140.0)));
    assert_eq!(r.status, 201, "{}", r.body);
    let newest = &entries(1)[0];
    assert_eq!(newest["sgv"].as_f64(), Some(140.0), "{newest}");
    assert_eq!(
        newest["date"].as_i64(),
        Some(start.as_millisecond()),
        "{newest}"
    );
    assert_eq!(
        s.bearer("POST", "/fhir/Observation", &admin, Some(&obs(140.0)))
            .status,
        200
    );
    let r = s.bearer("POST", "/fhir/Observation", &admin, Some(&obs(150.0)));
    assert_eq!(r.status, 409, "{}", r.body);
    let mut broken = obs(140.0);
    broken["effectivePeriod"] = json!({"start": "yesterday"});
    let r = s.bearer("POST", "/fhir/Observation", &admin, Some(&broken));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body.contains("Observation.effectivePeriod.start"),
        "{}",
        r.body
    );
    assert_eq!(entries(100).len(), 4);
}

/// A test body and the name of its database.
type NamedTest = (&'static str, fn(Srv));

/// The tests whose outcome depends on the database (roles, revocation, plausibility, conflicts,
/// batch partial success, profiles, exports, what-if limits) again on PostgreSQL when
/// `MEDTWIN_TEST_POSTGRES_URL` is set (CI sets it; each on a fresh database).
#[test]
fn database_dependent_tests_on_postgresql() {
    let tests: [NamedTest; 9] = [
        ("plaus", implausible_data_are_refused_with_element_paths_on),
        ("revoke", revoked_and_expired_tokens_are_refused_on),
        ("matrix", routes_by_role_matrix_on),
        ("fhirpatient", fhir_patient_create_on),
        (
            "percent",
            percent_temp_basals_resolve_against_the_uploaded_profile_on,
        ),
        (
            "batch",
            batch_bundles_store_valid_entries_and_report_the_others_on,
        ),
        (
            "conflict",
            differing_values_at_stored_times_are_conflicts_on,
        ),
        (
            "exports",
            mongoexport_lines_effective_period_and_single_observation_on,
        ),
        ("whatiflimit", whatif_plan_size_and_horizon_are_limited_on),
    ];
    for (name, test) in tests {
        let Some(s) = Srv::start_pg(name) else {
            eprintln!("note: MEDTWIN_TEST_POSTGRES_URL not set: the hardening tests ran on SQLite only (CI runs PostgreSQL too)");
            return;
        };
        eprintln!("{name} on PostgreSQL");
        test(s);
    }
}

/// What-ifs computed at once are limited (`ServerConfig::max_concurrent_whatifs`): with one
/// slot and no wait, a what-if sent while a large one runs is a 503 with `Retry-After`, and is
/// answered once the slot is free.
#[test]
fn concurrent_whatifs_are_limited() {
    use medtwin_io::RecordKind;
    use medtwin_twin::{InputSchedule, TwinEngine, TwinSettings};
    let s = Srv::start_with("whatifslots", |c| {
        c.max_concurrent_whatifs = 1;
        c.whatif_wait_s = 0.0;
    });
    let admin = s.token(Role::Admin, &[]);
    assert_eq!(
        s.bearer("POST", "/patients", &admin, Some(&json!({"id": "p"})))
            .status,
        201
    );
    // A calibrated twin for `p` (26 h of the bundled participant 2313), saved as the server
    // saves its twins.
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/t1d-uom");
    let (mut rec, _) = medtwin_io::import_t1d_uom(&data, "2313").unwrap();
    let first = rec
        .of_kind(RecordKind::Cgm)
        .next()
        .unwrap()
        .time
        .as_second();
    rec.entries
        .retain(|e| e.time.as_second() < first + 26 * 3600);
    let sched = InputSchedule::from_record(&rec).unwrap();
    let settings = TwinSettings {
        n_particles: 50,
        ..TwinSettings::default()
    };
    let mut engine = TwinEngine::start(&sched, settings).unwrap();
    engine
        .assimilate_until(&sched, sched.last_cgm_min())
        .unwrap();
    let doc = serde_json::to_string(&engine.to_twin(&sched, Some("p".into()))).unwrap();
    let last_ms = rec
        .of_kind(RecordKind::Cgm)
        .map(|e| e.time.as_millisecond())
        .max()
        .unwrap();
    s.rt.block_on(async {
        let st = Store::open(&s.db).await.unwrap();
        st.save_twin("p", "ok", "", last_ms, Some(&doc))
            .await
            .unwrap();
        st.close().await;
    });
    let big_plan = |k: usize| {
        let meals: Vec<Value> = (0..1000)
            .map(|i| json!({"at_min": (i % 720) as f64, "carbs_g": 1.0}))
            .collect();
        json!({"name": format!("p{k}"), "meals": meals})
    };
    let big = json!({"horizon_min": 720, "plans": (0..8).map(big_plan).collect::<Vec<_>>()});
    let small = json!({"horizon_min": 60, "plans": [{"name": "meal", "meals": [{"at_min": 0, "carbs_g": 30}]}]});
    let done = std::sync::atomic::AtomicBool::new(false);
    let (big_status, busy) = std::thread::scope(|sc| {
        let h = sc.spawn(|| {
            let r = s.bearer("POST", "/patients/p/whatif", &admin, Some(&big));
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            r.status
        });
        // Small what-ifs while the large one runs: refused while its slot is taken.
        let mut busy = None;
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            std::thread::sleep(std::time::Duration::from_millis(50));
            let r = s.bearer("POST", "/patients/p/whatif", &admin, Some(&small));
            if r.status == 503 && busy.is_none() && !done.load(std::sync::atomic::Ordering::SeqCst)
            {
                busy = Some(r);
            }
        }
        (h.join().unwrap(), busy)
    });
    assert_eq!(big_status, 200);
    let busy = busy.expect("no what-if was refused while the large one ran");
    assert_eq!(busy.header("retry-after"), Some("5"), "{busy:?}");
    assert!(
        busy.json()["error"]
            .as_str()
            .unwrap()
            .contains("what-if slot"),
        "{}",
        busy.body
    );
    // The slot is free again.
    let r = s.bearer("POST", "/patients/p/whatif", &admin, Some(&small));
    assert_eq!(r.status, 200, "{}", r.body);
}
