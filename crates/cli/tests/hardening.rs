//! Hardening through the real `medtwin` binary (issue 15): token list/revoke/expiry, import
//! writing only what was asked for, the README's simulate example as written.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_medtwin"))
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("medtwin-cli-hard-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// `medtwin token create --expires-in`, `token list`, `token revoke ID`: a running server
/// refuses the revoked token within a second.
#[test]
fn token_list_revoke_and_expiry_through_the_binary() {
    let d = tmp("tokens");
    let db = format!("sqlite://{}", d.join("m.db").display());
    let create = |extra: &[&str]| {
        let t = ok(&bin()
            .args(["token", "create", "--db", &db, "--role", "admin"])
            .args(extra)
            .output()
            .unwrap());
        t.trim().to_string()
    };
    let keep = create(&["--label", "keep"]);
    let gone = create(&["--label", "gone", "--expires-in", "30d"]);
    let bad = bin()
        .args([
            "token",
            "create",
            "--db",
            &db,
            "--role",
            "admin",
            "--expires-in",
            "soon",
        ])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));

    let list = ok(&bin().args(["token", "list", "--db", &db]).output().unwrap());
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 3, "{list}");
    assert!(lines[0].starts_with("id\trole\tstatus"), "{list}");
    assert!(
        lines[1].contains("\tactive\t") && lines[1].contains("keep"),
        "{list}"
    );
    let row2: Vec<&str> = lines[2].split('\t').collect();
    assert_eq!(row2[2], "active");
    assert_eq!(row2[4], "gone");
    let expires: jiff::Timestamp = row2[6].parse().unwrap();
    let days = (expires.as_second() - jiff::Timestamp::now().as_second()) as f64 / 86400.0;
    assert!((days - 30.0).abs() < 0.01, "{days}");
    assert!(
        !list.contains(&keep[3..]) && !list.contains(&gone[3..]),
        "tokens listed: {list}"
    );
    let id = row2[0].to_string();

    // Serve, use the token, revoke it from another process.
    let mut child = bin()
        .args([
            "serve",
            "--db",
            &db,
            "--addr",
            "127.0.0.1:0",
            "--particles",
            "20",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let base = loop {
        let l = lines.next().expect("server exited").unwrap();
        if let Some(a) = l.strip_prefix("medtwin serve: listening on ") {
            break a.trim().to_string();
        }
    };
    let a = medtwin_server::client::agent();
    let get = |tok: &str| {
        let auth = format!("Bearer {tok}");
        medtwin_server::client::request(
            &a,
            "GET",
            &format!("{base}/patients"),
            &[("authorization", &auth)],
            None,
        )
        .unwrap()
        .0
    };
    assert_eq!(get(&gone), 200);
    ok(&bin()
        .args(["token", "revoke", &id, "--db", &db])
        .output()
        .unwrap());
    let t0 = Instant::now();
    while get(&gone) != 401 {
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "still accepted after 1 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "revoked token refused {} ms after `token revoke` returned",
        t0.elapsed().as_millis()
    );
    assert_eq!(get(&keep), 200);
    let _ = child.kill();
    let _ = child.wait();
    let list = ok(&bin().args(["token", "list", "--db", &db]).output().unwrap());
    assert!(
        list.lines().nth(2).unwrap().contains("\trevoked\t"),
        "{list}"
    );
    let o = bin()
        .args(["token", "revoke", "999", "--db", &db])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&d);
}

/// Item h: `import t1d-uom` writes the record CSV and nothing else; the participant's
/// patient.toml only where `--patient-toml` says. Importing two participants into one folder
/// no longer leaves the second one's patient.toml for the first one's record.
#[test]
fn import_writes_only_what_was_asked_for() {
    let d = tmp("import");
    let data = repo().join("tests/data/t1d-uom");
    let import = |p: &str, extra: &[&str]| {
        ok(&bin()
            .args(["import", "t1d-uom"])
            .arg(&data)
            .args(["--participant", p, "--out"])
            .arg(d.join(format!("{p}.csv")))
            .args(extra)
            .output()
            .unwrap());
    };
    import("2313", &[]);
    let files = |dir: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(files(&d), ["2313.csv"]);
    let toml = d.join("info").join("2313.toml");
    std::fs::create_dir_all(toml.parent().unwrap()).unwrap();
    import("2313", &["--patient-toml", toml.to_str().unwrap()]);
    assert_eq!(files(&d), ["2313.csv", "info"]);
    let info = medtwin_io::read_patient_toml(&toml).unwrap();
    assert_eq!(info.id.as_deref(), Some("T1D-UOM-2313"));
    let _ = std::fs::remove_dir_all(&d);
}

/// The README's "### Simulate" section: its TOML block and the summary it shows.
fn readme_simulate_example() -> (String, String) {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let sec = readme
        .split("\n### Simulate\n")
        .nth(1)
        .expect("README has a ### Simulate section");
    let sec = sec.split("\n### ").next().unwrap();
    let toml = sec
        .split("```toml\n")
        .nth(1)
        .and_then(|r| r.split("\n```").next())
        .expect("a ```toml block in ### Simulate")
        .to_string();
    let summary = sec
        .split("$ cat summary.csv\n")
        .nth(1)
        .and_then(|r| r.split("\n```").next())
        .expect("the summary shown in ### Simulate")
        .to_string();
    (toml, summary)
}

/// Item i: the README's simulate example runs as written (through the real binary) and
/// prints the summary the README shows (4 significant decimals as printed).
#[test]
fn readme_simulate_example_runs_as_written() {
    let d = tmp("readme");
    let (toml, shown) = readme_simulate_example();
    std::fs::write(d.join("example.toml"), &toml).unwrap();
    ok(&bin()
        .current_dir(&d)
        .args([
            "simulate",
            "example.toml",
            "--out",
            "adult1.csv",
            "--summary",
            "summary.csv",
        ])
        .output()
        .unwrap());
    let got = std::fs::read_to_string(d.join("summary.csv")).unwrap();
    let (got, shown): (Vec<&str>, Vec<&str>) = (got.lines().collect(), shown.lines().collect());
    assert_eq!(got.len(), shown.len(), "{got:?} vs README {shown:?}");
    assert_eq!(got[0], shown[0], "summary header");
    for (g, s) in got[1..].iter().zip(&shown[1..]) {
        for (a, b) in g.split(',').zip(s.split(',')) {
            match (a.parse::<f64>(), b.parse::<f64>()) {
                (Ok(x), Ok(y)) => assert!(
                    (x - y).abs() <= 1e-3 * y.abs().max(1.0),
                    "README shows {b}, the example gives {a}\n{g}\n{s}"
                ),
                _ => assert_eq!(a, b),
            }
        }
    }
    let traj = std::fs::read_to_string(d.join("adult1.csv")).unwrap();
    assert_eq!(traj.lines().count(), 1442, "header + minutes 0..=1440");
    let _ = std::fs::remove_dir_all(&d);
}
