//! Load benchmark of the twin server on loopback: `P` patients send CGM readings (Nightscout
//! `POST /ns/{id}/api/v1/entries`, one reading per request, bearer token) at a fixed total
//! rate for `S` seconds, open-loop (each request has a scheduled send time; latency counts
//! from the schedule, so a server that falls behind is not flattered). `T` of the patients
//! first receive 24 h of history (the bundled T1D-UOM participant 2313, shifted in time) so
//! their twins are calibrated before the timed phase; for those, **forecast staleness** is the
//! time from a reading's acknowledgement until `GET /patients/{id}/forecast` reports a data
//! time at or after that reading.
//!
//! ```sh
//! cargo run --release -p medtwin-server --example load -- [--patients 1000] [--rate 1000] \
//!     [--seconds 30] [--twins 20] [--particles 200] [--workers N] [--db sqlite:///tmp/medtwin-load.db]
//! ```
//!
//! The server runs in this process (same machine, same cores as the load generator).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use medtwin_io::RecordKind;
use medtwin_server::client::{agent, request};
use medtwin_server::ServerConfig;
use medtwin_store::Role;

/// Acknowledged readings of the twin patients: patient → (data time s, ack instant).
type Acks = Arc<Mutex<HashMap<usize, Vec<(i64, Instant)>>>>;

fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pct(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * q).round() as usize]
}

fn main() {
    let patients: usize = arg("--patients", 1000);
    let rate: f64 = arg("--rate", 1000.0);
    let seconds: f64 = arg("--seconds", 30.0);
    let twins: usize = arg("--twins", 20).min(patients);
    let particles: usize = arg("--particles", 200);
    let threads: usize = arg("--threads", 64);
    let db: String = arg(
        "--db",
        format!(
            "sqlite://{}",
            std::env::temp_dir().join("medtwin-load.db").display()
        ),
    );
    if let Some(path) = db.strip_prefix("sqlite://") {
        for ext in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{path}{ext}"));
        }
    }
    let rt = medtwin_server::runtime().expect("runtime");
    let mut cfg = ServerConfig::new(&db, "127.0.0.1:0".parse().unwrap());
    cfg.particles = particles;
    cfg.workers = arg("--workers", cfg.workers);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (addr, task, admin) = rt.block_on(async {
        let store = medtwin_store::Store::open(&db).await.expect("store");
        let admin = store
            .create_token(Role::Admin, &[], "load")
            .await
            .expect("token");
        store.close().await;
        let (addr, task) = medtwin_server::start(cfg, async {
            let _ = stop_rx.await;
        })
        .await
        .expect("server");
        (addr, task, admin)
    });
    let base = format!("http://{addr}");
    let auth = format!("Bearer {admin}");
    let a = agent();
    let hdr = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];

    // Real CGM values to replay (T1D-UOM 2313) and its first 24 h for the twin patients.
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/t1d-uom");
    let (rec, _) = medtwin_io::import_t1d_uom(&data, "2313").expect("bundled T1D-UOM data");
    let cgm: Vec<f64> = rec.of_kind(RecordKind::Cgm).map(|e| e.value).collect();
    let first = rec.first_time().unwrap();
    let per_patient = (rate * seconds / patients as f64).ceil() as i64;
    let now_min = jiff::Timestamp::now().as_second() / 60;
    // Data time of the seeding reading; timed readings follow every 5 min, the last one at
    // most 5 min before now (the server rejects future timestamps).
    let t_start_s = (now_min - 5 * (per_patient + 1)) * 60;
    let hist_start = rec
        .of_kind(RecordKind::Cgm)
        .next()
        .map(|e| e.time)
        .unwrap_or(first);
    let shift_s = t_start_s - 86_400 - hist_start.as_second();

    eprintln!("creating {patients} patients; seeding {twins} with 24 h of history ...");
    for p in 0..patients {
        let body = format!("{{\"id\": \"p{p}\"}}");
        let r = request(
            &a,
            "POST",
            &format!("{base}/patients"),
            &hdr,
            Some(body.as_bytes()),
        )
        .unwrap();
        assert!(r.0 == 201 || r.0 == 200, "{r:?}");
    }
    let hist: Vec<medtwin_io::RecordEntry> = rec
        .entries
        .iter()
        .filter(|e| {
            e.time.as_second() >= hist_start.as_second()
                && e.time.as_second() < hist_start.as_second() + 86_400
        })
        .map(|e| {
            let mut e = e.clone();
            e.time = jiff::Timestamp::from_second(e.time.as_second() + shift_s).unwrap();
            e
        })
        .collect();
    for p in 0..twins {
        let b = medtwin_server::fhir::bundle_of(&format!("p{p}"), &hist);
        let r = request(
            &a,
            "POST",
            &format!("{base}/fhir/Bundle"),
            &hdr,
            Some(b.to_string().as_bytes()),
        )
        .unwrap();
        assert_eq!(r.0, 200, "{}", r.1);
    }
    // One reading at the start so the 24 h window is complete, then wait for the twins.
    let t_fit = Instant::now();
    for p in 0..twins {
        let body = format!(
            "[{{\"type\":\"sgv\",\"sgv\":{},\"date\":{}}}]",
            cgm[288].round(),
            t_start_s * 1000
        );
        request(
            &a,
            "POST",
            &format!("{base}/ns/p{p}/api/v1/entries"),
            &hdr,
            Some(body.as_bytes()),
        )
        .unwrap();
    }
    loop {
        let ready = (0..twins)
            .filter(|p| {
                request(
                    &a,
                    "GET",
                    &format!("{base}/patients/p{p}/forecast"),
                    &hdr,
                    None,
                )
                .map(|r| r.0 == 200)
                .unwrap_or(false)
            })
            .count();
        if ready == twins {
            break;
        }
        assert!(
            t_fit.elapsed() < Duration::from_secs(1800),
            "twins not ready after 30 min ({ready}/{twins})"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    eprintln!("{twins} twins calibrated in {:.1} s; load: {rate} readings/s from {patients} patients for {seconds} s", t_fit.elapsed().as_secs_f64());

    // Timed phase.
    let n_total = (rate * seconds) as usize;
    let acks: Acks = Arc::new(Mutex::new(HashMap::new()));
    let t0 = Instant::now() + Duration::from_millis(200);
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let (acks, done, base, auth) = (acks.clone(), done.clone(), base.clone(), auth.clone());
        std::thread::spawn(move || {
            let a = agent();
            let hdr = [("authorization", auth.as_str())];
            let mut stale: Vec<f64> = Vec::new();
            let mut pending: HashMap<usize, Vec<(i64, Instant)>> = HashMap::new();
            while !done.load(std::sync::atomic::Ordering::Relaxed)
                || pending.values().any(|v| !v.is_empty())
            {
                if let Ok(mut m) = acks.lock() {
                    for (p, v) in m.drain() {
                        pending.entry(p).or_default().extend(v);
                    }
                }
                for (p, v) in pending.iter_mut() {
                    if v.is_empty() {
                        continue;
                    }
                    let Ok((200, body)) = request(
                        &a,
                        "GET",
                        &format!("{base}/patients/p{p}/forecast"),
                        &hdr,
                        None,
                    ) else {
                        continue;
                    };
                    let doc: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                    let Some(dt) = doc["data_time"]
                        .as_str()
                        .and_then(|s| s.parse::<jiff::Timestamp>().ok())
                    else {
                        continue;
                    };
                    let now = Instant::now();
                    v.retain(|(data_s, ack)| {
                        if *data_s <= dt.as_second() {
                            stale.push(now.duration_since(*ack).as_secs_f64());
                            false
                        } else {
                            true
                        }
                    });
                }
                if done.load(std::sync::atomic::Ordering::Relaxed)
                    && t0.elapsed().as_secs_f64() > seconds + 120.0
                {
                    break; // give up on forecasts that never catch up (counted as missing)
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let missing: usize = pending.values().map(Vec::len).sum();
            (stale, missing)
        })
    };
    let handles: Vec<_> = (0..threads)
        .map(|w| {
            let (base, auth, cgm, acks) = (base.clone(), auth.clone(), cgm.clone(), acks.clone());
            std::thread::spawn(move || {
                let a = agent();
                let hdr = [
                    ("authorization", auth.as_str()),
                    ("content-type", "application/json"),
                ];
                let mut lat = Vec::new();
                let mut service = Vec::new();
                let mut errors = 0usize;
                let mut g = w;
                while g < n_total {
                    let (k, p) = (g / patients, g % patients);
                    let due = t0 + Duration::from_secs_f64(g as f64 / rate);
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    let data_s = t_start_s + (k as i64 + 1) * 300;
                    let v = cgm[(289 + k + p * 7) % cgm.len()].round();
                    let body = format!(
                        "[{{\"type\":\"sgv\",\"sgv\":{v},\"date\":{}}}]",
                        data_s * 1000
                    );
                    let sent = Instant::now();
                    match request(
                        &a,
                        "POST",
                        &format!("{base}/ns/p{p}/api/v1/entries"),
                        &hdr,
                        Some(body.as_bytes()),
                    ) {
                        Ok((200, _)) => {
                            let end = Instant::now();
                            lat.push(end.duration_since(due).as_secs_f64() * 1000.0);
                            service.push(end.duration_since(sent).as_secs_f64() * 1000.0);
                            if p < twins {
                                if let Ok(mut m) = acks.lock() {
                                    m.entry(p).or_default().push((data_s, end));
                                }
                            }
                        }
                        _ => errors += 1,
                    }
                    g += threads;
                }
                (lat, service, errors)
            })
        })
        .collect();
    let mut lat = Vec::new();
    let mut service = Vec::new();
    let mut errors = 0;
    for h in handles {
        let (l, s, e) = h.join().unwrap();
        lat.extend(l);
        service.extend(s);
        errors += e;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut stale, missing) = poller.join().unwrap();
    let health = request(&a, "GET", &format!("{base}/healthz"), &[], None)
        .map(|r| r.1)
        .unwrap_or_default();
    println!("load: {} readings acknowledged ({errors} errors) from {patients} patients in {elapsed:.1} s = {:.0} readings/s (target {rate})", lat.len(), lat.len() as f64 / elapsed);
    println!(
        "latency from schedule, ms: p50 {:.1}  p99 {:.1}  max {:.1}",
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99),
        pct(&mut lat, 1.0)
    );
    println!(
        "service time, ms:          p50 {:.1}  p99 {:.1}",
        pct(&mut service, 0.5),
        pct(&mut service, 0.99)
    );
    println!("forecast staleness for {twins} live twins ({particles} particles), s: p50 {:.2}  p99 {:.2}  max {:.2}  ({} readings measured, {missing} never reflected)", pct(&mut stale, 0.5), pct(&mut stale, 0.99), pct(&mut stale, 1.0), stale.len());
    println!("server: {health}");
    let _ = stop_tx.send(());
    let _ = rt.block_on(task);
}
