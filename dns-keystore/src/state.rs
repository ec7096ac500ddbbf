//! The daemon's state directory: the zone signing key, the TSIG key, the trust anchor and the
//! zone snapshot (SPEC.md §8.8), created on first start with safe permissions (keys 0600,
//! directory 0700). Every file is created whole or not at all (`snapshot::write_atomic`), so a
//! first start that fails (a full disk) leaves nothing that breaks the next one.

use crate::config::Config;
use crate::snapshot::{self, write_atomic};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hickory_proto::dnssec::crypto::Ed25519SigningKey;
use hickory_proto::dnssec::rdata::DNSKEY;
use hickory_proto::dnssec::{DnssecSigner, PublicKey as _, SigningKey as _};
use hickory_proto::rr::rdata::{A, NS, SOA};
use hickory_proto::rr::{Name, RData, Record};
use rustls_pki_types::PrivatePkcs8KeyDer;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

pub const ZONE_KEY_FILE: &str = "zone-key.pk8";
pub const TSIG_KEY_FILE: &str = "tsig.key";
pub const TRUST_ANCHOR_FILE: &str = "trust-anchor.conf";
/// The zone's records (SPEC.md §8.8), replaced atomically by every update.
pub const ZONE_STATE_FILE: &str = "zone.state";
/// hickory's sqlite journal, where versions before issue 17 kept updates; read once to migrate.
pub const LEGACY_JOURNAL_FILE: &str = "zone.jrnl";
/// The initial zone file versions before issue 17 wrote on first start.
pub const LEGACY_ZONE_FILE: &str = "zone.db";

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

/// Writes a state file whole or not at all (the operator's disk is at fault when it fails).
fn write_file(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    mode: u32,
    replace: bool,
) -> Result<(), StateError> {
    write_atomic(dir, name, bytes, mode, replace).map_err(|e| StateError::Io {
        path: dir.join(name),
        source: match e {
            snapshot::WriteError::NotWritten(e) | snapshot::WriteError::Unsynced(e) => e,
        },
    })
}

/// Writes a new key file readable by its owner only; fails if it exists.
fn write_secret(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StateError> {
    write_file(dir, name, bytes, 0o600, false)
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
    /// No snapshot yet but a journal of an earlier version: the zone is migrated from it.
    pub legacy_journal: bool,
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
    /// Opens the state directory, creating what is missing, in an order a failed start can
    /// resume from: the initial zone snapshot first, then the Ed25519 zone key (RFC 8080), a
    /// 256-bit TSIG key and the trust anchor. Temporary files of an interrupted write are
    /// removed (they never held an acknowledged update). A missing snapshot next to an existing
    /// zone key is damage, not a first start: refused rather than serving an empty zone.
    pub fn open_or_create(config: &Config) -> Result<State, StateError> {
        let dir = config.state_dir.clone();
        let zone = crate::names::zone_name(&config.zone).map_err(|e| StateError::Invalid {
            path: dir.clone(),
            message: e.to_string(),
        })?;
        if !dir.exists() {
            fs::create_dir_all(&dir).map_err(io(&dir))?;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(io(&dir))?;
            // The new directory's own entry must be durable before anything in it counts.
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                fs::File::open(parent)
                    .and_then(|p| p.sync_all())
                    .map_err(io(parent))?;
            }
        }
        for name in [
            ZONE_STATE_FILE,
            ZONE_KEY_FILE,
            TSIG_KEY_FILE,
            TRUST_ANCHOR_FILE,
        ] {
            let temp = dir.join(snapshot::temp_name(name));
            if temp.exists() {
                tracing::warn!("removing {}, left by an interrupted write", temp.display());
                fs::remove_file(&temp).map_err(io(&temp))?;
            }
        }
        let key_path = dir.join(ZONE_KEY_FILE);
        let legacy_journal =
            !dir.join(ZONE_STATE_FILE).exists() && dir.join(LEGACY_JOURNAL_FILE).exists();
        if !dir.join(ZONE_STATE_FILE).exists() && !legacy_journal {
            // An earlier version wrote its initial zone file (`zone.db`) next to the keys and
            // took no update before its journal existed: such a directory starts afresh.
            if key_path.exists() && !dir.join(LEGACY_ZONE_FILE).exists() {
                return Err(StateError::Invalid {
                    path: dir.join(ZONE_STATE_FILE),
                    message: format!(
                        "missing, but {ZONE_KEY_FILE} exists: the zone's records are lost; \
                         restore {ZONE_STATE_FILE} from a backup (or remove {ZONE_KEY_FILE} to \
                         start over with a new key and an empty zone)"
                    ),
                });
            }
            let bytes = snapshot::encode(1, &initial_zone(&zone, config)).map_err(|message| {
                StateError::Invalid {
                    path: dir.join(ZONE_STATE_FILE),
                    message,
                }
            })?;
            write_file(&dir, ZONE_STATE_FILE, &bytes, 0o600, false)?;
        }
        if !key_path.exists() {
            let pkcs8 = Ed25519SigningKey::generate_pkcs8().map_err(|e| StateError::Invalid {
                path: key_path.clone(),
                message: format!("cannot generate a key: {e}"),
            })?;
            write_secret(&dir, ZONE_KEY_FILE, pkcs8.secret_pkcs8_der())?;
        }
        let tsig_path = dir.join(TSIG_KEY_FILE);
        if !tsig_path.exists() {
            write_secret(&dir, TSIG_KEY_FILE, &random_bytes(32)?)?;
        }
        let state = State {
            zone_key_pkcs8: read_secret(&key_path)?,
            tsig_key: read_secret(&tsig_path)?,
            zone: zone.clone(),
            dir: dir.clone(),
            legacy_journal,
        };
        if state.tsig_key.len() < 16 {
            return Err(StateError::Invalid {
                path: tsig_path,
                message: "TSIG key shorter than 128 bits".into(),
            });
        }
        let anchor = state.trust_anchor()?;
        if fs::read_to_string(dir.join(TRUST_ANCHOR_FILE))
            .ok()
            .as_deref()
            != Some(&anchor)
        {
            write_file(&dir, TRUST_ANCHOR_FILE, anchor.as_bytes(), 0o644, true)?;
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

/// SOA, NS and the name server's address: what a new zone holds before any update.
fn initial_zone(zone: &Name, config: &Config) -> Vec<Record> {
    let ns_addr = match config.listen.ip() {
        std::net::IpAddr::V4(a) if !a.is_unspecified() => a,
        _ => std::net::Ipv4Addr::LOCALHOST,
    };
    let label = |l: &str| {
        Name::from_ascii(l)
            .and_then(|n| n.append_domain(zone))
            .expect("a fixed label under a valid zone name is a valid name")
    };
    let soa = SOA::new(
        label("ns"),
        label("hostmaster"),
        1,
        3600,
        600,
        86_400,
        config.record_ttl,
    );
    vec![
        Record::from_rdata(zone.clone(), 3600, RData::SOA(soa)),
        Record::from_rdata(zone.clone(), 3600, RData::NS(NS(label("ns")))),
        Record::from_rdata(label("ns"), 3600, RData::A(A(ns_addr))),
    ]
}
