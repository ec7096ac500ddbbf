//! The TLS clients of `https` health checks (SPEC.md §11.9): rustls on ring, one client
//! configuration per check, built once at start from its CA file or the system's roots, or,
//! under `danger_skip_verify`, a verifier that takes any certificate.

use crate::health::{CheckSpec, Probe, Verify};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::TlsConnector;

/// Per check (in order), the TLS client of an `https` check, `None` for the others. The error
/// is one line naming the check: a CA file that cannot be read or holds no usable CA
/// certificate, or no system root certificate when a check needs them.
pub fn tls_connectors(specs: &[CheckSpec]) -> Result<Vec<Option<TlsConnector>>, String> {
    // rustls 0.23.48 deprecates ring's provider for lacking post-quantum key exchange; a health
    // check carries no secret worth recording for later decryption, and aws-lc-rs would add a
    // large C build for nothing here.
    #[expect(deprecated)]
    let provider = Arc::new(ring::default_provider());
    // Read once, and only if a check verifies against them.
    let mut system: Option<Arc<RootCertStore>> = None;
    let mut out = Vec::with_capacity(specs.len());
    for spec in specs {
        let Probe::Https { verify, .. } = &spec.probe else {
            out.push(None);
            continue;
        };
        let at = |e: String| format!("health check {:?}: {e}", spec.name);
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("ring's default provider supports TLS 1.2 and 1.3");
        let config = match verify {
            Verify::SystemRoots => {
                let roots = match &system {
                    Some(r) => r.clone(),
                    None => system.insert(system_roots().map_err(at)?).clone(),
                };
                builder.with_root_certificates(roots)
            }
            Verify::CaFile(path) => builder.with_root_certificates(ca_file(path).map_err(at)?),
            Verify::DangerSkip => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider.clone()))),
        }
        .with_no_client_auth();
        out.push(Some(TlsConnector::from(Arc::new(config))));
    }
    Ok(out)
}

/// The CA certificates of a PEM file, as trust anchors.
fn ca_file(path: &Path) -> Result<RootCertStore, String> {
    let at = |e: &dyn std::fmt::Display| format!("ca {}: {e}", path.display());
    let pem = std::fs::read(path).map_err(|e| at(&e))?;
    let mut roots = RootCertStore::empty();
    for (n, cert) in CertificateDer::pem_slice_iter(&pem).enumerate() {
        let cert = cert.map_err(|e| at(&format!("certificate {}: {e}", n + 1)))?;
        roots
            .add(cert)
            .map_err(|e| at(&format!("certificate {}: {e}", n + 1)))?;
    }
    if roots.is_empty() {
        return Err(at(&"no PEM CERTIFICATE in it"));
    }
    Ok(roots)
}

/// The system's roots (`rustls-native-certs`: `SSL_CERT_FILE`/`SSL_CERT_DIR`, else the
/// distribution's bundle). Unreadable entries are skipped as long as some load.
fn system_roots() -> Result<Arc<RootCertStore>, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        let why = found
            .errors
            .first()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        return Err(format!(
            "no system root certificates{why}: install ca-certificates or set ca = \"/path/ca.pem\""
        ));
    }
    Ok(Arc::new(roots))
}

/// `danger_skip_verify`: any certificate, any name, any date. The handshake's signature is
/// still checked against the certificate presented, which proves nothing about who it is.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{Outcome, Probe};
    use std::net::TcpStream as StdTcpStream;
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    fn run(cmd: &mut Command) {
        let out = cmd.output().expect("run openssl");
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A CA and a server certificate it signed for `localhost` only, in `dir`.
    fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
        let p = |f: &str| dir.join(f);
        run(Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
            .args(["-subj", "/CN=manycast test CA", "-keyout"])
            .args([p("ca.key"), "-out".into(), p("ca.pem")]));
        run(Command::new("openssl")
            .args(["req", "-new", "-newkey", "ec", "-pkeyopt"])
            .args([
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-subj",
                "/CN=localhost",
            ])
            .arg("-keyout")
            .args([p("k.pem"), "-out".into(), p("c.csr")]));
        std::fs::write(
            p("ext"),
            "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-CAcreateserial", "-in"])
            .args([
                p("c.csr"),
                "-CA".into(),
                p("ca.pem"),
                "-CAkey".into(),
                p("ca.key"),
            ])
            .args(["-extfile".into(), p("ext"), "-out".into(), p("c.pem")]));
        (p("ca.pem"), p("c.pem"), p("k.pem"))
    }

    /// `openssl s_server -www` (answers `GET /` with 200), killed when dropped, even when the
    /// test fails.
    struct TlsServer(Child);

    impl TlsServer {
        fn start(cert: &Path, key: &Path) -> (TlsServer, u16) {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .unwrap()
                .port();
            let child = Command::new("openssl")
                .args(["s_server", "-quiet", "-www", "-accept"])
                .arg(format!("127.0.0.1:{port}"))
                .arg("-cert")
                .arg(cert)
                .arg("-key")
                .arg(key)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start openssl s_server");
            let server = TlsServer(child);
            // A hang guard only: wait until it listens.
            let deadline = Instant::now() + Duration::from_secs(20);
            while StdTcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "s_server never listened");
                std::thread::sleep(Duration::from_millis(20));
            }
            (server, port)
        }
    }

    impl Drop for TlsServer {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn spec(host: &str, port: u16, expect_status: u16, verify: Verify) -> CheckSpec {
        CheckSpec {
            name: "web".into(),
            probe: Probe::Https {
                host: host.into(),
                port,
                path: "/".into(),
                expect_status,
                verify,
            },
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            rise: 1,
            fall: 1,
        }
    }

    async fn check(spec: CheckSpec) -> Outcome {
        let tls = tls_connectors(std::slice::from_ref(&spec))
            .unwrap()
            .pop()
            .flatten();
        assert!(tls.is_some());
        // A hang guard, as the checker's own timeout.
        tokio::time::timeout(
            Duration::from_secs(10),
            super::super::probe(&spec.probe, tls),
        )
        .await
        .expect("the probe returns")
    }

    #[test]
    fn https_checks_against_openssl_s_server() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key) = certificates(dir.path());
        let (server, port) = TlsServer::start(&cert, &key);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let with_ca = || Verify::CaFile(ca.clone());
            // Verified against the configured CA, for the URL's host name.
            assert_eq!(check(spec("localhost", port, 200, with_ca())).await, Outcome::Pass);
            // The same GET: another expected status fails it as the HTTP check would.
            let o = check(spec("localhost", port, 204, with_ca())).await;
            assert!(matches!(&o, Outcome::Slow(w) if w.contains("HTTP status 200, expected 204")), "{o:?}");
            // The right CA, the wrong name: the certificate is for localhost only.
            let o = check(spec("127.0.0.1", port, 200, with_ca())).await;
            assert!(matches!(&o, Outcome::Slow(w) if w.starts_with("TLS handshake: invalid peer certificate")), "{o:?}");
            // Verification on without the CA: a private CA is not among the system's roots.
            let o = check(spec("localhost", port, 200, Verify::SystemRoots)).await;
            assert!(
                matches!(&o, Outcome::Slow(w) if w.contains("invalid peer certificate: UnknownIssuer")),
                "{o:?}"
            );
            // Told not to verify: any certificate, any name.
            assert_eq!(check(spec("127.0.0.1", port, 200, Verify::DangerSkip)).await, Outcome::Pass);
        });
        drop(server);
        rt.block_on(async {
            // Killed: refused, dead.
            let o = check(spec("localhost", port, 200, Verify::CaFile(ca.clone()))).await;
            assert!(
                matches!(&o, Outcome::Dead(w) if w.starts_with("connect:")),
                "{o:?}"
            );
        });
    }

    #[test]
    fn a_plain_http_server_fails_the_handshake() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = l.local_addr().unwrap().port();
            let server = tokio::spawn(async move {
                let (mut c, _) = l.accept().await.unwrap();
                let mut hello = [0u8; 512];
                let _ = c.read(&mut hello).await;
                let _ = c.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
            });
            let o = check(spec("127.0.0.1", port, 200, Verify::DangerSkip)).await;
            assert!(
                matches!(&o, Outcome::Slow(w) if w.starts_with("TLS handshake:")),
                "{o:?}"
            );
            server.await.unwrap();
        });
    }

    #[test]
    fn ca_files_that_cannot_be_used_are_one_line_errors() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let cases = [
            (dir.path().join("missing.pem"), "No such file"),
            (empty, "no PEM CERTIFICATE in it"),
            (garbage, "certificate 1:"),
        ];
        for (path, want) in cases {
            let Err(e) =
                tls_connectors(&[spec("localhost", 443, 200, Verify::CaFile(path.clone()))])
            else {
                panic!("{} was taken", path.display());
            };
            assert!(
                e.starts_with(&format!("health check \"web\": ca {}: ", path.display()))
                    && e.contains(want)
                    && !e.contains('\n'),
                "{e}"
            );
        }
    }
}
