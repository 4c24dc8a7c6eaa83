//! Client side: `medtwin push` (a record file to a server, as FHIR transaction bundles).

use std::path::Path;

use crate::ServerError;

/// Entries per pushed bundle.
pub const PUSH_CHUNK: usize = 500;

/// Summary of a push.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushSummary {
    /// Bundles sent.
    pub bundles: usize,
    /// Data sent.
    pub sent: usize,
    /// Of those, newly stored (`201 Created`).
    pub created: usize,
    /// Already stored (`200 OK`).
    pub existing: usize,
    /// Rows of the file rejected by the reader (not sent).
    pub rejected_rows: usize,
}

/// A blocking HTTP agent that returns 4xx/5xx answers as responses (not errors). HTTPS
/// servers are verified against Mozilla's root certificates (webpki-roots).
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(300)))
        .build()
        .into()
}

/// [`agent`], but HTTPS servers are verified against the certificates in the PEM file `ca`
/// only (a private CA, or a self-signed server certificate). Errors: the file cannot be read
/// or holds no certificate (input, naming the file).
pub fn agent_trusting(ca: &Path) -> Result<ureq::Agent, ServerError> {
    let certs = crate::tls::load_certs_as("--ca-cert", ca).map_err(ServerError::Input)?;
    let roots: Vec<ureq::tls::Certificate<'static>> = certs
        .iter()
        .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
        .collect();
    Ok(ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(300)))
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::from(roots))
                .build(),
        )
        .build()
        .into())
}

/// Send the record CSV at `record` (medtwin record format, read by
/// [`medtwin_io::read_record_csv`]) for `patient` to the server at `base_url` (e.g.
/// `http://127.0.0.1:8080`) as FHIR transaction bundles of [`PUSH_CHUNK`] entries, with
/// `Authorization: Bearer token`. Idempotent: pushing the same file twice stores nothing new.
/// A `429` (rate limit) is waited out as its `Retry-After` says and the bundle sent again.
///
/// An `https://` server is verified against Mozilla's roots, or only against the
/// certificates in the PEM file `ca` when given (see [`agent_trusting`]).
///
/// Errors: unreadable file (input); the server refuses a bundle (the OperationOutcome's
/// diagnostics are in the message; bundles before it stay stored) or cannot be reached.
pub fn push(
    record: &Path,
    base_url: &str,
    patient: &str,
    token: &str,
    ca: Option<&Path>,
) -> Result<PushSummary, ServerError> {
    let agent = match ca {
        Some(ca) => agent_trusting(ca)?,
        None => agent(),
    };
    let (rec, report) =
        medtwin_io::read_record_csv(record).map_err(|e| ServerError::Input(e.to_string()))?;
    for r in report.rejected.iter().take(10) {
        eprintln!("rejected: {r}");
    }
    let mut s = PushSummary {
        rejected_rows: report.rejected.len(),
        ..PushSummary::default()
    };
    let url = format!("{}/fhir/Bundle", base_url.trim_end_matches('/'));
    for chunk in rec.entries.chunks(PUSH_CHUNK) {
        let bundle = crate::fhir::bundle_of(patient, chunk);
        let body = bundle.to_string();
        let mut waited = 0u64;
        let mut resp = loop {
            let resp = agent
                .post(&url)
                .header("authorization", &format!("Bearer {token}"))
                .header("content-type", "application/fhir+json")
                .send(&body)
                .map_err(|e| ServerError::Io(format!("{url}: {e}")))?;
            // Over the server's rate limit: wait as told (at most 10 min in all), send again.
            if resp.status().as_u16() == 429 && waited < 600 {
                let wait = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(1)
                    .clamp(1, 60);
                std::thread::sleep(std::time::Duration::from_secs(wait));
                waited += wait;
                continue;
            }
            break resp;
        };
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| ServerError::Io(format!("{url}: {e}")))?;
        if status != 200 {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let diag: Vec<String> = v["issue"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|i| i["diagnostics"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_else(|| vec![body.chars().take(500).collect()]);
            let msg = format!(
                "{url}: HTTP {status} after {} bundles: {}",
                s.bundles,
                diag.join("; ")
            );
            return Err(if (400..500).contains(&status) {
                ServerError::Input(msg)
            } else {
                ServerError::Io(msg)
            });
        }
        let v: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| ServerError::Io(format!("{url}: {e}")))?;
        for e in v["entry"].as_array().into_iter().flatten().skip(1) {
            match e["response"]["status"].as_str() {
                Some(st) if st.starts_with("201") => s.created += 1,
                _ => s.existing += 1,
            }
        }
        s.bundles += 1;
        s.sent += chunk.len();
    }
    Ok(s)
}

/// One blocking HTTP request (tests, benchmarks): `method` `url` with `headers` and an
/// optional body; returns `(status, body text)`. Errors only when the server cannot be
/// reached or the answer is not readable.
pub fn request(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<(u16, String), String> {
    let mut b = ureq::http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b
        .body(body.map(<[u8]>::to_vec).unwrap_or_default())
        .map_err(|e| e.to_string())?;
    let mut resp = agent.run(req).map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let text = resp
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_string()
        .map_err(|e| e.to_string())?;
    Ok((status, text))
}
