//! Built-in TLS (`medtwin serve --tls-cert CERT.pem --tls-key KEY.pem`): rustls with the `ring`
//! crypto provider, TLS 1.2 and 1.3, HTTP/1.1 over it (ALPN `http/1.1`).
//!
//! The certificate file holds the server certificate first and then any intermediate
//! certificates (PEM `CERTIFICATE` blocks, as Let's Encrypt's `fullchain.pem`); the key file
//! holds one unencrypted private key (PEM `PRIVATE KEY` (PKCS#8), `RSA PRIVATE KEY` (PKCS#1) or
//! `EC PRIVATE KEY` (SEC1)). Every problem (missing or unreadable file, no PEM block of the
//! right kind, a malformed block, an encrypted key, a key that does not belong to the
//! certificate, a key type rustls does not support) is an error naming the file and the reason;
//! nothing is served until both load.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls;

/// The certificate chain and key files of built-in TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain (server certificate first).
    pub cert: PathBuf,
    /// PEM private key (unencrypted).
    pub key: PathBuf,
}

fn read(what: &str, path: &Path) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path).map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::NotFound => "no such file".to_string(),
            std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
            _ => e.to_string(),
        };
        format!("{what} {}: cannot read: {why}", path.display())
    })?;
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(format!("{what} {}: the file is empty", path.display()));
    }
    Ok(bytes)
}

fn pem_error(e: rustls_pki_types::pem::Error) -> String {
    use rustls_pki_types::pem::Error as E;
    match e {
        E::MissingSectionEnd { end_marker } => format!(
            "a PEM block is not closed (missing `{}`)",
            String::from_utf8_lossy(&end_marker)
        ),
        E::IllegalSectionStart { line } => format!(
            "malformed PEM block start `{}`",
            String::from_utf8_lossy(&line)
        ),
        E::Base64Decode(m) => format!("a PEM block is not valid base64 ({m})"),
        E::Io(e) => e.to_string(),
        E::NoItemsFound => "no PEM block found".into(),
        other => format!("{other:?}"),
    }
}

/// The certificate chain in `path` (PEM). Errors name the file and the reason.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    load_certs_as("--tls-cert", path)
}

/// [`load_certs`], the option named `what` in errors (e.g. `--ca-cert`).
pub fn load_certs_as(what: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read(what, path)?;
    let mut certs = Vec::new();
    for c in CertificateDer::pem_slice_iter(&bytes) {
        certs.push(c.map_err(|e| format!("{what} {}: {}", path.display(), pem_error(e)))?);
    }
    if certs.is_empty() {
        let text = String::from_utf8_lossy(&bytes);
        let hint = if text.contains("PRIVATE KEY-----") {
            " (it holds a private key, not a certificate: is it the key file?)"
        } else if !text.contains("-----BEGIN") {
            " (not a PEM file; a DER certificate converts with `openssl x509 -inform der -in CERT.der -out CERT.pem`)"
        } else {
            ""
        };
        return Err(format!(
            "{what} {}: no PEM `CERTIFICATE` block found{hint}",
            path.display()
        ));
    }
    Ok(certs)
}

/// The private key in `path` (PEM, unencrypted). Errors name the file and the reason.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let what = "--tls-key";
    let bytes = read(what, path)?;
    let text = String::from_utf8_lossy(&bytes);
    if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")
        || text.contains("Proc-Type: 4,ENCRYPTED")
    {
        return Err(format!(
            "{what} {}: the private key is encrypted (passphrase-protected); give an unencrypted key, e.g. `openssl pkey -in KEY.pem -out KEY-plain.pem`, readable only by the server's user",
            path.display()
        ));
    }
    match PrivateKeyDer::from_pem_slice(&bytes) {
        Ok(k) => Ok(k),
        Err(rustls_pki_types::pem::Error::NoItemsFound) => {
            let hint = if text.contains("-----BEGIN CERTIFICATE-----") {
                " (it holds a certificate: is it the certificate file? give the key here and the certificate to --tls-cert)"
            } else if !text.contains("-----BEGIN") {
                " (not a PEM file)"
            } else {
                ""
            };
            Err(format!(
                "{what} {}: no PEM private key block (`PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY`) found{hint}",
                path.display()
            ))
        }
        Err(e) => Err(format!("{what} {}: {}", path.display(), pem_error(e))),
    }
}

/// The rustls server configuration of `files` (ring provider, TLS 1.2/1.3, ALPN `http/1.1`).
/// Errors: see the module documentation; each names the file and the reason.
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, String> {
    let certs = load_certs(&files.cert)?;
    let key = load_key(&files.key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?
        .with_no_client_auth();
    let mut cfg = builder.with_single_cert(certs, key).map_err(|e| {
        let why = match &e {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                "the private key does not belong to the certificate".to_string()
            }
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown) => {
                "cannot check that the private key belongs to the certificate (is the certificate valid X.509?)".to_string()
            }
            rustls::Error::General(m) => m.clone(),
            other => other.to_string(),
        };
        format!(
            "--tls-cert {} / --tls-key {}: {why}",
            files.cert.display(),
            files.key.display()
        )
    })?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str, body: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("medtwin-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    #[test]
    fn bad_files_are_named_with_the_reason() {
        let missing = PathBuf::from("/nonexistent/medtwin/cert.pem");
        let e = load_certs(&missing).unwrap_err();
        assert!(
            e.contains("/nonexistent/medtwin/cert.pem") && e.contains("no such file"),
            "{e}"
        );

        let empty = tmp("empty.pem", "\n");
        let e = load_certs(&empty).unwrap_err();
        assert!(e.contains("empty.pem") && e.contains("empty"), "{e}");

        let garbage = tmp("garbage.pem", "hello, I am not a certificate\n");
        let e = load_certs(&garbage).unwrap_err();
        assert!(
            e.contains("garbage.pem") && e.contains("not a PEM file"),
            "{e}"
        );
        let e = load_key(&garbage).unwrap_err();
        assert!(
            e.contains("garbage.pem") && e.contains("no PEM private key"),
            "{e}"
        );

        let unclosed = tmp("unclosed.pem", "-----BEGIN CERTIFICATE-----\nMIIB\n");
        let e = load_certs(&unclosed).unwrap_err();
        assert!(
            e.contains("unclosed.pem") && e.contains("not closed"),
            "{e}"
        );

        let bad64 = tmp(
            "bad64.pem",
            "-----BEGIN CERTIFICATE-----\n!!!!not base64!!!!\n-----END CERTIFICATE-----\n",
        );
        let e = load_certs(&bad64).unwrap_err();
        assert!(e.contains("bad64.pem") && e.contains("base64"), "{e}");

        let key_as_cert = tmp(
            "key.pem",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        );
        let e = load_certs(&key_as_cert).unwrap_err();
        assert!(e.contains("is it the key file"), "{e}");

        let cert_as_key = tmp(
            "cert.pem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        let e = load_key(&cert_as_key).unwrap_err();
        assert!(e.contains("is it the certificate file"), "{e}");

        let enc = tmp(
            "enc.pem",
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
        );
        let e = load_key(&enc).unwrap_err();
        assert!(e.contains("enc.pem") && e.contains("encrypted"), "{e}");

        // Well-formed PEM around bytes that are no certificate or key: refused when the pair
        // is checked, naming both files.
        let e = server_config(&TlsFiles {
            cert: cert_as_key.clone(),
            key: key_as_cert.clone(),
        })
        .unwrap_err();
        assert!(e.contains("cert.pem") && e.contains("key.pem"), "{e}");
    }
}
