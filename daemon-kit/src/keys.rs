//! Key and certificate files. Private keys are PKCS#8 PEM (RFC 8410) written with mode 0600,
//! public keys SubjectPublicKeyInfo PEM, so `openssl pkey -in group.key -text` reads them;
//! member certificates are PEM-armoured (RFC 7468) with the label below around the bytes of
//! SPEC.md §4.

use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{SigningKey, VerifyingKey};
use igmp_ext::{MemberCertificate, Timestamp, UnverifiedCertificate};
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// PEM label of a member certificate.
pub const CERT_LABEL: &str = "MANYCAST MEMBER CERTIFICATE";

/// What went wrong with a key or certificate file, and which file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a {what} ({detail})")]
    Format {
        path: PathBuf,
        what: &'static str,
        detail: String,
    },
    #[error("{path}: refusing to overwrite an existing file")]
    Exists { path: PathBuf },
    #[error("{path}: private key is readable by group or others (mode {mode:o}); chmod 600 it")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("{path}: certificate does not verify against the group key: {detail}")]
    Certificate { path: PathBuf, detail: String },
    #[error("the operating system's random number generator failed: {0}")]
    Random(getrandom::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyFileError + '_ {
    move |source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A fresh key from the operating system's CSPRNG.
pub fn generate() -> Result<SigningKey, KeyFileError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(KeyFileError::Random)?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Writes `bytes` to a new file with `mode`; never replaces an existing file, so a key cannot be
/// lost to a typo.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyFileError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                KeyFileError::Exists {
                    path: path.to_owned(),
                }
            } else {
                KeyFileError::Io {
                    path: path.to_owned(),
                    source: e,
                }
            }
        })?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

pub fn write_private_key(path: &Path, key: &SigningKey) -> Result<(), KeyFileError> {
    // PKCS#8 v1 (RFC 8410 §7, no embedded public key): OpenSSL 3.0 refuses the v2 form that
    // `SigningKey::to_pkcs8_pem` writes, and the public key follows from the seed anyway.
    let v1 = ed25519_dalek::pkcs8::KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    };
    let pem = v1
        .to_pkcs8_pem(Default::default())
        .map_err(|e| KeyFileError::Format {
            path: path.to_owned(),
            what: "PKCS#8 key",
            detail: e.to_string(),
        })?;
    write_new(path, pem.as_bytes(), 0o600)
}

pub fn write_public_key(path: &Path, key: &VerifyingKey) -> Result<(), KeyFileError> {
    let pem = key
        .to_public_key_pem(Default::default())
        .map_err(|e| KeyFileError::Format {
            path: path.to_owned(),
            what: "public key",
            detail: e.to_string(),
        })?;
    write_new(path, pem.as_bytes(), 0o644)
}

/// Reads a private key, refusing one that others can read.
pub fn read_private_key(path: &Path) -> Result<SigningKey, KeyFileError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(path).map_err(io(path))?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    let text = fs::read_to_string(path).map_err(io(path))?;
    SigningKey::from_pkcs8_pem(&text).map_err(|e| KeyFileError::Format {
        path: path.to_owned(),
        what: "PKCS#8 Ed25519 private key",
        detail: e.to_string(),
    })
}

/// Reads a public key from SPKI PEM, or the public half of a private key file.
pub fn read_public_key(path: &Path) -> Result<VerifyingKey, KeyFileError> {
    let text = fs::read_to_string(path).map_err(io(path))?;
    if let Ok(k) = VerifyingKey::from_public_key_pem(&text) {
        return Ok(k);
    }
    read_private_key(path)
        .map(|k| k.verifying_key())
        .map_err(|_| KeyFileError::Format {
            path: path.to_owned(),
            what: "Ed25519 public key (SPKI PEM) or private key",
            detail: "neither parses".into(),
        })
}

pub fn write_certificate(path: &Path, cert: &MemberCertificate) -> Result<(), KeyFileError> {
    let pem = pem_rfc7468::encode_string(CERT_LABEL, pem_rfc7468::LineEnding::LF, cert.as_bytes())
        .map_err(|e| KeyFileError::Format {
            path: path.to_owned(),
            what: "certificate",
            detail: e.to_string(),
        })?;
    write_new(path, pem.as_bytes(), 0o644)
}

/// Reads certificate bytes without checking them.
pub fn read_certificate(path: &Path) -> Result<UnverifiedCertificate, KeyFileError> {
    let text = fs::read_to_string(path).map_err(io(path))?;
    let format = |detail: String| KeyFileError::Format {
        path: path.to_owned(),
        what: "member certificate",
        detail,
    };
    let (label, bytes) =
        pem_rfc7468::decode_vec(text.as_bytes()).map_err(|e| format(e.to_string()))?;
    if label != CERT_LABEL {
        return Err(format(format!(
            "PEM label is {label:?}, expected {CERT_LABEL:?}"
        )));
    }
    UnverifiedCertificate::decode(&bytes).map_err(|e| format(e.to_string()))
}

/// Reads a certificate and checks it against the group key at `now`.
pub fn read_verified_certificate(
    path: &Path,
    group_key: &VerifyingKey,
    now: Timestamp,
) -> Result<MemberCertificate, KeyFileError> {
    read_certificate(path)?
        .verify(group_key, now)
        .map_err(|e| KeyFileError::Certificate {
            path: path.to_owned(),
            detail: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use igmp_ext::fixtures::{Fixture, NOW};

    #[test]
    fn keys_and_certificates_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let f = Fixture::new(1);
        let key = dir.path().join("group.key");
        let public = dir.path().join("group.pub");
        let cert = dir.path().join("m1.cert");
        write_private_key(&key, &f.group_key).unwrap();
        write_public_key(&public, &f.group_key.verifying_key()).unwrap();
        write_certificate(&cert, &f.members[0].cert).unwrap();
        assert_eq!(
            read_private_key(&key).unwrap().to_bytes(),
            f.group_key.to_bytes()
        );
        assert_eq!(
            read_public_key(&public).unwrap(),
            f.group_key.verifying_key()
        );
        assert_eq!(read_public_key(&key).unwrap(), f.group_key.verifying_key());
        let back = read_verified_certificate(&cert, &f.group_key.verifying_key(), NOW).unwrap();
        assert_eq!(&back, &f.members[0].cert);
        assert!(std::fs::read_to_string(&key)
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(std::fs::read_to_string(&cert).unwrap().contains(CERT_LABEL));
    }

    #[test]
    fn refuses_overwrite_loose_permissions_and_garbage() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k");
        write_private_key(&key, &generate().unwrap()).unwrap();
        assert!(matches!(
            write_private_key(&key, &generate().unwrap()),
            Err(KeyFileError::Exists { .. })
        ));
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            read_private_key(&key),
            Err(KeyFileError::Permissions { mode: 0o644, .. })
        ));
        let junk = dir.path().join("junk");
        std::fs::write(&junk, "hello").unwrap();
        assert!(matches!(
            read_public_key(&junk),
            Err(KeyFileError::Format { .. })
        ));
        assert!(matches!(
            read_certificate(&junk),
            Err(KeyFileError::Format { .. })
        ));
        let other = Fixture::new(1);
        let wrong = SigningKey::from_bytes(&[0x33; 32]).verifying_key();
        let cert = dir.path().join("c");
        write_certificate(&cert, &other.members[0].cert).unwrap();
        assert!(matches!(
            read_verified_certificate(&cert, &wrong, NOW),
            Err(KeyFileError::Certificate { .. })
        ));
    }
}
