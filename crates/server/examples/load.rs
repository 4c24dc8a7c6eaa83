//! Load benchmark of the twin server on loopback: `P` patients, **every one with a live
//! (calibrated) twin**, send CGM readings (Nightscout `POST /ns/{id}/api/v1/entries`, one
//! reading per request, bearer token) at a fixed total rate for `S` seconds, open-loop (each
//! request has a scheduled send time; latency counts from the schedule, so a server that falls
//! behind is not flattered).
//!
//! **Seeding** (before the server starts, not timed): every patient gets the first 24 h of the
//! bundled T1D-UOM participant 2313 (CGM, insulin, carbohydrate; shifted so that it ends just
//! before the timed phase) and a twin calibrated on it. The twin is calibrated **once** and a
//! copy is stored for every patient (same history, so the same twin; the copies then diverge
//! as each patient receives its own readings) — calibrating 1 000 twins would only lengthen
//! the set-up. `--fit` makes the server calibrate every patient's twin itself instead (from
//! the same history, before the timed phase).
//!
//! **Forecast staleness** is measured on a random sample of the readings of all patients
//! (`--sample`, fraction): from the reading's acknowledgement until
//! `GET /patients/{id}/forecast` returns a forecast whose data time is at or after the
//! reading. Pollers ask every 100 ms per pending patient; the server computes a forecast on
//! such a request when its stored one is older than the twin, so the pollers' requests are
//! part of the load (they stand for clinicians and alerting reading forecasts).
//!
//! ```sh
//! cargo run --release -p medtwin-server --example load -- [--patients 1000] [--rate 1000] \
//!     [--seconds 60] [--particles 100] [--workers N] [--sample 0.02] [--pollers 8] [--fit] \
//!     [--twins N] [--listen 127.0.0.1:0] [--flood HOST [--flood-conns 50]] \
//!     [--db sqlite:///tmp/medtwin-load.db]
//! ```
//!
//! **Flood** (`--flood HOST`, issue 15): during the timed phase `wrk` (must be installed)
//! sends unauthenticated `GET /patients/<10 000 × 'A'>/forecast` as fast as it can over
//! `--flood-conns` connections to `http://HOST:PORT`, where HOST is another address of this
//! machine than the load generator's 127.0.0.1 (e.g. the eth0 address, with `--listen
//! 0.0.0.0:0`), so the server sees it as a different client, as an attacker would be. The
//! report adds wrk's summary (requests, rate, status classes) and the SQLite database + WAL
//! size before the timed phase, at its end and after the server stopped (the audit
//! aggregates are written on stop).
//!
//! The server runs in this process (same machine, same cores as the load generator). The
//! report includes the process's CPU use and the machine's load average during the run.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use medtwin_io::{Record, RecordKind};
use medtwin_server::client::{agent, request};
use medtwin_server::ServerConfig;
use medtwin_store::{NewDatum, Role};
use medtwin_twin::{InputSchedule, TwinEngine, TwinSettings};

fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn flag(name: &str) -> bool {
    std::env::args().any(|a| a == name)
}

fn pct(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// CPU seconds (user + system) of this process so far.
fn cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<f64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // Fields 14 and 15 of stat (utime, stime) are 12 and 13 after the ")"; clock ticks.
    (f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0)) / 100.0
}

/// Busy and total jiffies of the whole machine (all processes).
fn machine_cpu() -> (f64, f64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<f64> = s
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    let total: f64 = v.iter().sum();
    let idle = v.get(3).unwrap_or(&0.0) + v.get(4).unwrap_or(&0.0);
    (total - idle, total)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether reading `g` is in the staleness sample (a fixed pseudo-random subset that covers
/// all patients).
fn sampled(g: usize, fraction: f64) -> bool {
    let h = (g as u64 ^ 0x9e37_79b9_7f4a_7c15).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    (((h >> 33) % 1_000_000) as f64) < fraction * 1_000_000.0
}

/// An acknowledged reading in the staleness sample: patient, data time (s), acknowledged at.
type Pending = (usize, i64, Instant);

fn main() {
    let patients: usize = arg("--patients", 1000);
    let rate: f64 = arg("--rate", 1000.0);
    let seconds: f64 = arg("--seconds", 60.0);
    let particles: usize = arg("--particles", 100);
    let threads: usize = arg("--threads", 64);
    let sample: f64 = arg("--sample", 0.02);
    let n_pollers: usize = arg("--pollers", 8).max(1);
    let fit = flag("--fit");
    // Patients with a live twin (default: all); the others have no history (no twin), which
    // measures ingest alone.
    let twins: usize = arg("--twins", patients).min(patients);
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
    let flood: Option<String> = std::env::args()
        .position(|a| a == "--flood")
        .and_then(|i| std::env::args().nth(i + 1));
    let flood_conns: usize = arg("--flood-conns", 50);
    let listen: std::net::SocketAddr = arg("--listen", "127.0.0.1:0".parse().unwrap());
    let rt = medtwin_server::runtime().expect("runtime");
    let mut cfg = ServerConfig::new(&db, listen);
    cfg.particles = particles;
    cfg.workers = arg("--workers", cfg.workers);
    // One admin token stands for all 1 000 devices here: no per-token limit (the per-client
    // limit, 2 000 requests/s, stays on).
    cfg.rate_limit_per_min = 0.0;
    let workers = cfg.workers;

    // Real CGM values to replay (T1D-UOM 2313) and its first 24 h as every patient's history.
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/t1d-uom");
    let (rec, _) = medtwin_io::import_t1d_uom(&data, "2313").expect("bundled T1D-UOM data");
    let cgm: Vec<f64> = rec.of_kind(RecordKind::Cgm).map(|e| e.value).collect();
    let per_patient = (rate * seconds / patients as f64).ceil() as i64;
    let now_min = jiff::Timestamp::now().as_second() / 60;
    // Data time of the last history reading; timed readings follow every 5 min, the last one
    // at most 5 min before now (the server rejects future timestamps).
    let t_start_s = (now_min - 5 * (per_patient + 1)) * 60;
    let hist_start = rec.of_kind(RecordKind::Cgm).next().unwrap().time;
    let shift_s = t_start_s - 86_400 - hist_start.as_second();
    let hist: Vec<medtwin_io::RecordEntry> = rec
        .entries
        .iter()
        .filter(|e| {
            e.time.as_second() >= hist_start.as_second()
                && e.time.as_second() <= hist_start.as_second() + 86_400
        })
        .map(|e| {
            let mut e = e.clone();
            e.time = jiff::Timestamp::from_second(e.time.as_second() + shift_s).unwrap();
            e
        })
        .collect();
    let last_hist_ms = hist
        .iter()
        .filter(|e| e.kind == RecordKind::Cgm)
        .map(|e| e.time.as_millisecond())
        .max()
        .unwrap();

    let t_seed = Instant::now();
    let twin_json = if fit {
        None
    } else {
        let record = Record::new(Default::default(), hist.clone());
        let sched = InputSchedule::from_record(&record).unwrap();
        let settings = TwinSettings {
            n_particles: particles,
            ..TwinSettings::default()
        };
        let mut e = TwinEngine::start(&sched, settings).expect("calibration");
        e.assimilate_until(&sched, sched.last_cgm_min()).unwrap();
        Some(e.to_twin(&sched, None))
    };
    let admin = rt.block_on(async {
        let store = medtwin_store::Store::open(&db).await.expect("store");
        let admin = store
            .create_token(Role::Admin, &[], "load")
            .await
            .expect("token");
        for p in 0..patients {
            let pid = format!("p{p}");
            let hist: &[medtwin_io::RecordEntry] = if p < twins { &hist } else { &[] };
            let rows: Vec<NewDatum> = hist
                .iter()
                .map(|e| NewDatum {
                    patient_id: pid.clone(),
                    entry: e.clone(),
                    source_unit: e.unit.clone(),
                })
                .collect();
            store
                .ingest(
                    std::slice::from_ref(&pid),
                    &rows,
                    medtwin_store::now_ms(),
                    &[],
                )
                .await
                .expect("seed history");
            if let Some(t) = twin_json.as_ref().filter(|_| p < twins) {
                let mut t = t.clone();
                t.patient_id = Some(pid.clone());
                let doc = serde_json::to_string(&t).unwrap();
                store
                    .save_twin(&pid, "ok", "", last_hist_ms, Some(&doc))
                    .await
                    .expect("seed twin");
            }
        }
        store.close().await;
        admin
    });
    eprintln!(
        "seeded {patients} patients with 24 h of history{} in {:.1} s",
        if fit {
            ""
        } else {
            " and a copy of one calibrated twin"
        },
        t_seed.elapsed().as_secs_f64()
    );

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (addr, task) = rt.block_on(async {
        medtwin_server::start(cfg, async {
            let _ = stop_rx.await;
        })
        .await
        .expect("server")
    });
    let base = format!("http://127.0.0.1:{}", addr.port());
    let auth = format!("Bearer {admin}");
    let a = agent();
    let hdr = [("authorization", auth.as_str())];
    // Every patient's twin must be live (calibrated) before the timed phase.
    let t_fit = Instant::now();
    loop {
        let h: serde_json::Value = request(&a, "GET", &format!("{base}/healthz"), &[], None)
            .ok()
            .and_then(|r| serde_json::from_str(&r.1).ok())
            .unwrap_or_default();
        let live = &h["live"];
        let ready = if fit {
            live["fits"].as_u64().unwrap_or(0) as usize >= twins
        } else {
            true
        };
        if ready && live["queued"].as_u64() == Some(0) {
            break;
        }
        assert!(
            t_fit.elapsed() < Duration::from_secs(3600),
            "twins not ready after 1 h: {h}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    if twins > 0 {
        let probe = request(&a, "GET", &format!("{base}/patients/p0/twin"), &hdr, None).unwrap();
        assert!(probe.1.contains("\"status\":\"ok\""), "{}", probe.1);
    }
    eprintln!(
        "{twins} live twins of {patients} patients ({particles} particles, {workers} twin workers) ready after {:.1} s; \
         load: {rate} readings/s for {seconds} s; load average {}",
        t_fit.elapsed().as_secs_f64(),
        loadavg()
    );

    // Timed phase.
    let n_total = (rate * seconds) as usize;
    let t0 = Instant::now() + Duration::from_millis(200);
    let db_size = || {
        db.strip_prefix("sqlite://").map_or(0, |p| {
            ["", "-wal"]
                .iter()
                .map(|x| {
                    std::fs::metadata(format!("{p}{x}"))
                        .map(|m| m.len())
                        .unwrap_or(0)
                })
                .sum::<u64>()
        })
    };
    let size_before = db_size();
    let flooder = flood.as_ref().map(|host| {
        let url = format!(
            "http://{host}:{}/patients/{}/forecast",
            addr.port(),
            "A".repeat(10_000)
        );
        let secs = seconds.ceil() as u64;
        std::process::Command::new("wrk")
            .args(["-t2", &format!("-c{flood_conns}"), &format!("-d{secs}s")])
            .arg(&url)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("--flood needs wrk on the PATH")
    });
    let done = Arc::new(AtomicBool::new(false));
    let cpu0 = cpu_s();
    let m0 = machine_cpu();
    let monitor = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut loads = Vec::new();
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(5));
                loads.push(loadavg());
            }
            loads
        })
    };
    let (poll_tx, pollers): (Vec<mpsc::Sender<Pending>>, Vec<_>) = (0..n_pollers)
        .map(|_| {
            let (tx, rx) = mpsc::channel::<Pending>();
            let (done, base, auth) = (done.clone(), base.clone(), auth.clone());
            let h = std::thread::spawn(move || {
                let a = agent();
                let hdr = [("authorization", auth.as_str())];
                let mut stale: Vec<f64> = Vec::new();
                let mut get_ms: Vec<f64> = Vec::new();
                let mut pending: HashMap<usize, Vec<(i64, Instant)>> = HashMap::new();
                let mut patients_seen = std::collections::HashSet::new();
                loop {
                    while let Ok((p, d, ack)) = rx.try_recv() {
                        pending.entry(p).or_default().push((d, ack));
                        patients_seen.insert(p);
                    }
                    let finished = done.load(Ordering::Relaxed);
                    if finished && pending.values().all(|v| v.is_empty()) {
                        break;
                    }
                    if finished && t0.elapsed().as_secs_f64() > seconds + 120.0 {
                        break; // forecasts that never catch up are counted as missing
                    }
                    for (p, v) in pending.iter_mut() {
                        if v.is_empty() {
                            continue;
                        }
                        let sent = Instant::now();
                        let Ok((200, body)) = request(
                            &a,
                            "GET",
                            &format!("{base}/patients/p{p}/forecast"),
                            &hdr,
                            None,
                        ) else {
                            continue;
                        };
                        let now = Instant::now();
                        get_ms.push(now.duration_since(sent).as_secs_f64() * 1e3);
                        // The data time only (the bands are not needed here).
                        let Some(dt) = body
                            .split_once("\"data_time\":\"")
                            .and_then(|(_, r)| r.split_once('"'))
                            .and_then(|(t, _)| t.parse::<jiff::Timestamp>().ok())
                        else {
                            continue;
                        };
                        v.retain(|(data_s, ack)| {
                            if *data_s <= dt.as_second() {
                                stale.push(now.duration_since(*ack).as_secs_f64());
                                false
                            } else {
                                true
                            }
                        });
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                let missing: usize = pending.values().map(Vec::len).sum();
                (stale, get_ms, missing, patients_seen)
            });
            (tx, h)
        })
        .unzip();
    let handles: Vec<_> = (0..threads)
        .map(|w| {
            let (base, auth, cgm) = (base.clone(), auth.clone(), cgm.clone());
            let poll_tx = poll_tx.clone();
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
                            if p < twins && sampled(g, sample) {
                                let _ = poll_tx[p % poll_tx.len()].send((p, data_s, end));
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
    drop(poll_tx);
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
    let cpu_ingest = cpu_s() - cpu0;
    let m1 = machine_cpu();
    let load_end = loadavg();
    done.store(true, Ordering::Relaxed);
    let mut stale = Vec::new();
    let mut get_ms = Vec::new();
    let mut missing = 0;
    let mut seen = std::collections::HashSet::new();
    for h in pollers {
        let (s, g, m, ps) = h.join().unwrap();
        stale.extend(s);
        get_ms.extend(g);
        missing += m;
        seen.extend(ps);
    }
    let loads = monitor.join().unwrap();
    let size_end = db_size();
    let flood_report = flooder.map(|c| {
        let o = c.wait_with_output().expect("wrk");
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        out.lines()
            .filter(|l| {
                l.contains("requests in")
                    || l.contains("Requests/sec")
                    || l.contains("Non-2xx")
                    || l.contains("Socket errors")
            })
            .map(str::trim)
            .collect::<Vec<_>>()
            .join("; ")
    });
    let health = request(&a, "GET", &format!("{base}/healthz"), &[], None)
        .map(|r| r.1)
        .unwrap_or_default();
    println!(
        "load: {} readings acknowledged ({errors} errors) from {patients} patients in {elapsed:.1} s = {:.0} readings/s (target {rate})",
        lat.len(),
        lat.len() as f64 / elapsed
    );
    println!(
        "ingest latency from schedule, ms: p50 {:.1}  p99 {:.1}  max {:.1}",
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99),
        pct(&mut lat, 1.0)
    );
    println!(
        "ingest service time, ms:          p50 {:.1}  p99 {:.1}",
        pct(&mut service, 0.5),
        pct(&mut service, 0.99)
    );
    println!(
        "forecast staleness, {twins} live twins ({particles} particles, {workers} twin workers), s: \
         p50 {:.2}  p99 {:.2}  max {:.2}  ({} sampled readings of {} patients; {missing} never reflected)",
        pct(&mut stale, 0.5),
        pct(&mut stale, 0.99),
        pct(&mut stale, 1.0),
        stale.len(),
        seen.len()
    );
    println!(
        "GET forecast, ms: p50 {:.1}  p99 {:.1}  ({} requests)",
        pct(&mut get_ms, 0.5),
        pct(&mut get_ms, 0.99),
        get_ms.len()
    );
    println!(
        "CPU: this process {:.2} cores; whole machine {:.0} % busy of {} cores; load average {} at the end (1/5/15 min), every 5 s: {}",
        cpu_ingest / elapsed,
        100.0 * (m1.0 - m0.0) / (m1.1 - m0.1).max(1.0),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        load_end,
        loads
            .iter()
            .map(|l| l.split(' ').next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let h: serde_json::Value = serde_json::from_str(&health).unwrap_or_default();
    let mut live = h["live"].clone();
    if let Some(m) = live.as_object_mut() {
        m.remove("fitted_patients");
    }
    println!("server live twins: {live}");
    let _ = stop_tx.send(());
    let _ = rt.block_on(task);
    if let Some(f) = flood_report {
        println!(
            "flood (wrk, unauthenticated, {flood_conns} connections from {}): {f}",
            flood.as_deref().unwrap_or("")
        );
        println!(
            "database + WAL: {size_before} bytes before the timed phase, {size_end} at its end, {} after stop (+{} bytes)",
            db_size(),
            db_size().saturating_sub(size_before)
        );
        let audit = rt.block_on(async {
            let s = medtwin_store::Store::open(&db).await.expect("store");
            let l = s.audit_log(None, 1_000_000).await.expect("audit");
            s.close().await;
            l
        });
        let anon: Vec<_> = audit
            .iter()
            .filter(|r| r.actor.starts_with("anonymous"))
            .collect();
        println!(
            "audit: {} records in all, {} of them for refused unauthenticated requests",
            audit.len(),
            anon.len()
        );
    }
}
