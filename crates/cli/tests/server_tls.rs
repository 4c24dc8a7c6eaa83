//! Built-in TLS: `medtwin serve --tls-cert --tls-key` with a self-signed certificate made in the
//! test (rcgen), HTTPS requests from a client that trusts only that certificate, the `Secure`
//! cookie, `medtwin push --ca-cert` over HTTPS, and clear errors for bad certificate/key files.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use medtwin_server::client::{agent, agent_trusting, request};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_medtwin"))
}

fn tmp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("medtwin-tls-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A self-signed certificate for 127.0.0.1 and localhost: (cert.pem, key.pem).
fn self_signed(dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("generate certificate");
    let cert = dir.join(format!("{stem}-cert.pem"));
    let key = dir.join(format!("{stem}-key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(db: &str, extra: &[&str]) -> Server {
    let mut child = bin()
        .args([
            "serve",
            "--db",
            db,
            "--addr",
            "127.0.0.1:0",
            "--particles",
            "50",
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

fn token(db: &str, role: &str, patients: &[&str]) -> String {
    let mut c = bin();
    c.args(["token", "create", "--db", db, "--role", role]);
    for p in patients {
        c.args(["--patient", p]);
    }
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

#[test]
fn https_with_a_self_signed_certificate() {
    let dir = tmp_dir("serve");
    let (cert, key) = self_signed(&dir, "server");
    let db = format!("sqlite://{}", dir.join("medtwin.db").display());
    let admin = token(&db, "admin", &[]);
    let s = start(
        &db,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    assert!(s.base.starts_with("https://127.0.0.1:"), "{}", s.base);
    let trusting = agent_trusting(&cert).unwrap();

    // HTTPS with a client that trusts the certificate.
    let (st, body) = request(&trusting, "GET", &format!("{}/healthz", s.base), &[], None).unwrap();
    assert_eq!(st, 200, "{body}");
    let bearer = format!("Bearer {admin}");
    let (st, body) = request(
        &trusting,
        "POST",
        &format!("{}/patients", s.base),
        &[
            ("authorization", &bearer),
            ("content-type", "application/json"),
        ],
        Some(br#"{"id": "p1"}"#),
    )
    .unwrap();
    assert_eq!(st, 201, "{body}");

    // A client verifying against the public roots refuses the self-signed certificate: the
    // connection really is TLS with this certificate, and verification is on.
    let e = request(&agent(), "GET", &format!("{}/healthz", s.base), &[], None).unwrap_err();
    assert!(
        e.to_lowercase().contains("certificate") || e.to_lowercase().contains("issuer"),
        "{e}"
    );

    // Plain HTTP to the TLS port gets no HTTP answer (the handshake fails, the connection
    // closes), and the server goes on serving HTTPS.
    let addr = s.base.trim_start_matches("https://");
    let mut plain = std::net::TcpStream::connect(addr).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(
        !String::from_utf8_lossy(&got).contains("200 OK"),
        "plain HTTP answered on the TLS port"
    );
    let (st, _) = request(&trusting, "GET", &format!("{}/healthz", s.base), &[], None).unwrap();
    assert_eq!(st, 200);

    // The dashboard cookie is `Secure` with built-in TLS (no --behind-tls-proxy needed).
    let form = format!("token={admin}&next=%2F");
    let no_redirect: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::from([
                    ureq::tls::Certificate::from_pem(&std::fs::read(&cert).unwrap()).unwrap(),
                ]))
                .build(),
        )
        .build()
        .into();
    let resp = no_redirect
        .post(&format!("{}/login", s.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .send(form)
        .unwrap();
    assert_eq!(resp.status().as_u16(), 303);
    let cookie = resp
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(cookie.starts_with("medtwin_token="), "{cookie}");
    assert!(cookie.contains("; Secure"), "{cookie}");
    assert!(cookie.contains("HttpOnly"), "{cookie}");

    // medtwin push over HTTPS, trusting the server's certificate.
    let rec = dir.join("rec.csv");
    let t0 = jiff::Timestamp::now().as_second() - 3600;
    let mut csv = String::from("time,kind,value,unit,insulin\n");
    for i in 0..6 {
        let t = jiff::Timestamp::from_second(t0 + i * 300).unwrap();
        csv.push_str(&format!("{t},cgm,{},mg/dL,\n", 120 + i));
    }
    std::fs::write(&rec, csv).unwrap();
    let o = bin()
        .args(["push"])
        .arg(&rec)
        .args(["--to", &s.base, "--patient", "p1", "--token", &admin])
        .arg("--ca-cert")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("6 stored"), "{out}");
    // Without --ca-cert the same push refuses the unknown certificate.
    let o = bin()
        .args(["push"])
        .arg(&rec)
        .args(["--to", &s.base, "--patient", "p1", "--token", &admin])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr).to_lowercase();
    assert!(
        err.contains("certificate") || err.contains("issuer"),
        "{err}"
    );
}

/// `medtwin serve` with bad TLS files: exit code 2 and a message naming the file and the
/// reason, before anything is listened on or opened; never a panic.
#[test]
fn bad_certificate_or_key_files_are_refused_clearly() {
    let dir = tmp_dir("bad");
    let (cert, key) = self_signed(&dir, "a");
    let (_cert_b, key_b) = self_signed(&dir, "b");
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let missing = dir.join("missing.pem");
    let db = format!("sqlite://{}", dir.join("medtwin.db").display());
    let serve = |c: &Path, k: &Path| {
        bin()
            .args(["serve", "--db", &db, "--addr", "127.0.0.1:0", "--tls-cert"])
            .arg(c)
            .arg("--tls-key")
            .arg(k)
            .output()
            .unwrap()
    };
    let cases: [(&Path, &Path, &[&str]); 5] = [
        (
            &missing,
            &key,
            &["--tls-cert", "missing.pem", "no such file"],
        ),
        (
            &cert,
            &missing,
            &["--tls-key", "missing.pem", "no such file"],
        ),
        (
            &garbage,
            &key,
            &["--tls-cert", "garbage.pem", "not a PEM file"],
        ),
        (&key, &key, &["--tls-cert", "a-key.pem", "private key"]),
        (
            &cert,
            &key_b,
            &["b-key.pem", "does not belong to the certificate"],
        ),
    ];
    for (c, k, want) in cases {
        let o = serve(c, k);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{}: {err}", c.display());
        assert!(!err.contains("panicked"), "{err}");
        for w in want {
            assert!(err.contains(w), "`{w}` not in: {err}");
        }
    }
    // Neither half alone.
    let o = bin()
        .args(["serve", "--db", &db, "--addr", "127.0.0.1:0", "--tls-cert"])
        .arg(&cert)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--tls-key"));
    // Nothing was created by the refused starts.
    assert!(!dir.join("medtwin.db").exists());
}
