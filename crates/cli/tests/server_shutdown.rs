//! Clean shutdown of `medtwin serve` (issue 15): SIGINT under light load (a twin being fitted,
//! readings still arriving) finishes the queued twin updates and closes the store without
//! errors — no "closed pool" twin-update failures in the log, every queued twin saved — and
//! exits 0.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use medtwin_server::client::{agent, request};
use serde_json::{json, Value};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_medtwin"))
}

fn post(url: &str, token: &str, body: &Value) -> (u16, String) {
    let bearer = format!("Bearer {token}");
    let h = [
        ("content-type", "application/json"),
        ("authorization", bearer.as_str()),
    ];
    request(&agent(), "POST", url, &h, Some(body.to_string().as_bytes())).unwrap()
}

#[cfg(unix)]
#[test]
fn server_sigint_under_load_drains_the_twin_queue_without_pool_errors() {
    let dir = std::env::temp_dir().join(format!("medtwin-server-shutdown-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = format!("sqlite://{}", dir.join("s.db").display());
    let o = bin()
        .args(["token", "create", "--db", &db, "--role", "admin"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let admin = String::from_utf8(o.stdout).unwrap().trim().to_string();
    let mut child = bin()
        .args([
            "serve",
            "--db",
            &db,
            "--addr",
            "127.0.0.1:0",
            "--particles",
            "50",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
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
    // Three patients with 30 h of CGM each: their twins are fitted right away.
    let now_ms = jiff::Timestamp::now().as_millisecond() / 60_000 * 60_000;
    for p in ["a", "b", "c"] {
        assert_eq!(
            post(&format!("{base}/patients"), &admin, &json!({"id": p})).0,
            201
        );
        let sgv: Vec<Value> = (0..360)
            .map(|i| {
                let t = now_ms - (360 - i) * 300_000;
                let v = 120.0 + 40.0 * ((i as f64) / 24.0).sin();
                json!({"type": "sgv", "date": t, "sgv": v.round()})
            })
            .collect();
        let r = post(
            &format!("{base}/ns/{p}/api/v1/entries"),
            &admin,
            &json!(sgv),
        );
        assert_eq!(r.0, 200, "{}", r.1);
    }
    // Light load: one reading every 50 ms until the server stops answering.
    let running = Arc::new(AtomicBool::new(true));
    let load = {
        let (running, base, admin) = (running.clone(), base.clone(), admin.clone());
        std::thread::spawn(move || {
            let mut sent = 0;
            while running.load(Ordering::Relaxed) {
                let t = now_ms + sent * 1000;
                let body = json!([{"type": "sgv", "date": t, "sgv": 130}]);
                let bearer = format!("Bearer {admin}");
                let h = [
                    ("content-type", "application/json"),
                    ("authorization", bearer.as_str()),
                ];
                if request(
                    &agent(),
                    "POST",
                    &format!("{base}/ns/a/api/v1/entries"),
                    &h,
                    Some(body.to_string().as_bytes()),
                )
                .is_err()
                {
                    break;
                }
                sent += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            sent
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let t0 = Instant::now();
    let k = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(k.success());
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "server still running 90 s after SIGINT"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    running.store(false, Ordering::Relaxed);
    let sent = load.join().unwrap();
    let log = stderr.join().unwrap();
    eprintln!(
        "{log}\n--- stopped {:.1} s after SIGINT; {sent} readings sent under load",
        t0.elapsed().as_secs_f64()
    );
    assert!(status.success(), "exit status {status}: {log}");
    assert!(log.contains("medtwin serve: stopping"), "{log}");
    for bad in ["closed pool", "PoolClosed", "failed", "internal error"] {
        assert!(!log.contains(bad), "`{bad}` in the log:\n{log}");
    }
    // The queue was drained: every patient's twin was fitted and saved before the store closed.
    let rt = medtwin_server::runtime().unwrap();
    rt.block_on(async {
        let store = medtwin_store::Store::open(&db).await.unwrap();
        for p in ["a", "b", "c"] {
            assert!(
                store.load_twin(p).await.unwrap().is_some(),
                "no twin saved for `{p}`: {log}"
            );
        }
        store.close().await;
    });
    let _ = std::fs::remove_dir_all(&dir);
}
