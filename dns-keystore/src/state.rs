//! The daemon's state directory: the zone signing key, the TSIG key, the trust anchor and the
//! initial zone, created on first start with safe permissions (keys 0600, directory 0700).

use crate::config::Config;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hickory_proto::dnssec::crypto::Ed25519SigningKey;
use hickory_proto::dnssec::rdata::DNSKEY;
use hickory_proto::dnssec::{DnssecSigner, PublicKey as _, SigningKey as _};
use hickory_proto::rr::Name;
use rustls_pki_types::PrivatePkcs8KeyDer;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

pub const ZONE_KEY_FILE: &str = "zone-key.pk8";
pub const TSIG_KEY_FILE: &str = "tsig.key";
pub const TRUST_ANCHOR_FILE: &str = "trust-anchor.conf";
pub const ZONE_FILE: &str = "zone.db";
pub const JOURNAL_FILE: &str = "zone.jrnl";

/// A state directory problem: the operator's files or permissions are at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    #[error("state {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes a new file readable by its owner only; fails if it exists.
fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

/// Reads a secret and refuses it if others may read it (as ssh does).
fn read_secret(path: &Path) -> Result<Vec<u8>, StateError> {
    let meta = fs::metadata(path).map_err(io(path))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(StateError::Invalid {
            path: path.to_owned(),
            message: "readable by group or others; chmod 600 it".into(),
        });
    }
    fs::read(path).map_err(io(path))
}

fn random_bytes(n: usize) -> Result<Vec<u8>, StateError> {
    let path = Path::new("/dev/urandom");
    let mut buf = vec![0u8; n];
    std::io::Read::read_exact(&mut fs::File::open(path).map_err(io(path))?, &mut buf)
        .map_err(io(path))?;
    Ok(buf)
}

/// The keys a running keystore uses.
pub struct State {
    pub dir: PathBuf,
    pub zone: Name,
    zone_key_pkcs8: Vec<u8>,
    pub tsig_key: Vec<u8>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("dir", &self.dir)
            .field("zone", &self.zone)
            .finish_non_exhaustive()
    }
}

impl State {
    /// Opens the state directory, creating what is missing: the Ed25519 zone key (RFC 8080),
    /// a 256-bit TSIG key, the trust anchor and (when there is no journal yet) the zone file.
    pub fn open_or_create(config: &Config) -> Result<State, StateError> {
        let dir = config.state_dir.clone();
        let zone = crate::names::zone_name(&config.zone).map_err(|e| StateError::Invalid {
            path: dir.clone(),
            message: e.to_string(),
        })?;
        if !dir.exists() {
            fs::create_dir_all(&dir).map_err(io(&dir))?;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(io(&dir))?;
        }
        let key_path = dir.join(ZONE_KEY_FILE);
        if !key_path.exists() {
            let pkcs8 = Ed25519SigningKey::generate_pkcs8().map_err(|e| StateError::Invalid {
                path: key_path.clone(),
                message: format!("cannot generate a key: {e}"),
            })?;
            write_secret(&key_path, pkcs8.secret_pkcs8_der())?;
        }
        let tsig_path = dir.join(TSIG_KEY_FILE);
        if !tsig_path.exists() {
            write_secret(&tsig_path, &random_bytes(32)?)?;
        }
        let state = State {
            zone_key_pkcs8: read_secret(&key_path)?,
            tsig_key: read_secret(&tsig_path)?,
            zone: zone.clone(),
            dir: dir.clone(),
        };
        if state.tsig_key.len() < 16 {
            return Err(StateError::Invalid {
                path: tsig_path,
                message: "TSIG key shorter than 128 bits".into(),
            });
        }
        let anchor = dir.join(TRUST_ANCHOR_FILE);
        fs::write(&anchor, state.trust_anchor()?).map_err(io(&anchor))?;
        if !dir.join(JOURNAL_FILE).exists() {
            let zone_path = dir.join(ZONE_FILE);
            fs::write(&zone_path, initial_zone(&zone, config)).map_err(io(&zone_path))?;
        }
        Ok(state)
    }

    fn signing_key(&self) -> Result<Ed25519SigningKey, StateError> {
        Ed25519SigningKey::from_pkcs8(&PrivatePkcs8KeyDer::from(self.zone_key_pkcs8.as_slice()))
            .map_err(|e| StateError::Invalid {
                path: self.dir.join(ZONE_KEY_FILE),
                message: format!("not an Ed25519 PKCS#8 key: {e}"),
            })
    }

    /// The zone's one key (flags 257: zone key and secure entry point), signing every RRset.
    pub fn dnskey(&self) -> Result<DNSKEY, StateError> {
        let public = self
            .signing_key()?
            .to_public_key()
            .map_err(|e| StateError::Invalid {
                path: self.dir.join(ZONE_KEY_FILE),
                message: e.to_string(),
            })?;
        Ok(DNSKEY::new(true, true, false, public))
    }

    pub fn signer(&self, validity: std::time::Duration) -> Result<DnssecSigner, StateError> {
        Ok(DnssecSigner::new(
            self.dnskey()?,
            Box::new(self.signing_key()?),
            self.zone.clone(),
            validity,
        ))
    }

    /// The trust anchor in BIND's `trust-anchors` syntax, which `delv -a` reads as is and
    /// [`crate::validate::TrustAnchor::parse`] reads too (SPEC.md §8.5).
    pub fn trust_anchor(&self) -> Result<String, StateError> {
        let key = self.dnskey()?;
        Ok(format!(
            "trust-anchors {{ \"{}\" static-key {} 3 15 \"{}\"; }};\n",
            self.zone,
            key.flags(),
            BASE64.encode(key.public_key().public_bytes())
        ))
    }
}

fn initial_zone(zone: &Name, config: &Config) -> String {
    let ns_addr = match config.listen.ip() {
        std::net::IpAddr::V4(a) if !a.is_unspecified() => a,
        _ => std::net::Ipv4Addr::LOCALHOST,
    };
    format!(
        "$ORIGIN {zone}\n\
         @ 3600 IN SOA ns.{zone} hostmaster.{zone} 1 3600 600 86400 {ttl}\n\
         @ 3600 IN NS ns.{zone}\n\
         ns 3600 IN A {ns_addr}\n",
        ttl = config.record_ttl
    )
}
