//! The member's credentials (SPEC.md §11.1): the key and certificate files, checked against each
//! other, our groups and the group key, which is `group_pub` or the keystore's published key
//! that issued our certificate; and, with `[keystore]`, the task that fetches the record again
//! while the daemon runs. I/O (files, the keystore); the decisions are `keystore::check` and
//! `keystore::Watch`.

use crate::config::{Config, GroupKeySource, InvalidConfig};
use crate::keys;
use crate::keystore;
use dns_keystore::client::{FetchError, KeystoreClient};
use igmp_ext::ed25519_dalek::{SigningKey, VerifyingKey};
use igmp_ext::{KeyId, MemberCertificate, Timestamp};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, error, info, warn};

/// Why the credentials were refused, as one line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialsError {
    /// A key or certificate file that cannot be read or parsed, or a certificate the group key
    /// did not issue (the operator's files).
    #[error("{0}")]
    Keys(#[from] keys::KeyFileError),
    /// The certificate certifies another key than the member key file's.
    #[error("{}: certifies another key than {}", cert.display(), key.display())]
    OtherKey { cert: PathBuf, key: PathBuf },
    /// The certificate does not allow one of our groups.
    #[error("{}: does not allow {what} {group}", cert.display())]
    GroupNotAllowed {
        cert: PathBuf,
        what: &'static str,
        /// An IPv6 control group is looked for among the IPv6 groups (version 2, SPEC.md §4.2).
        group: std::net::IpAddr,
    },
    /// `group6` is set and the certificate's IPv6 section does not list it (a version 1
    /// certificate lists none).
    #[error("{}: does not allow group6 {group} (a version 2 certificate listing it is needed)", cert.display())]
    Group6NotAllowed {
        cert: PathBuf,
        group: std::net::Ipv6Addr,
    },
    /// A bad `[keystore]` (trust anchor file) or key source; exit status 2 like a bad file.
    #[error("{0}")]
    Config(#[from] InvalidConfig),
    /// The keystore could not be reached or gave no validated answer at start.
    #[error("keystore: group {group}: {source}")]
    KeystoreFetch { group: Ipv4Addr, source: FetchError },
    /// Our credentials do not match what the keystore publishes.
    #[error("keystore: {0}")]
    Keystore(#[from] keystore::Mismatch),
    /// The rollback marks file (`keystore.rollback_marks`) is unreadable or damaged.
    #[error("keystore: {0}")]
    Marks(#[from] dns_keystore::marks::MarksError),
}

/// Keys and certificate, checked against each other and the group key before anything starts.
#[derive(Debug)]
pub struct Credentials {
    pub key: SigningKey,
    pub cert: MemberCertificate,
    pub group_key: VerifyingKey,
}

/// Refuses a certificate that certifies another key than ours or does not allow our groups.
fn check_identity(
    config: &Config,
    key: &SigningKey,
    member_key: &VerifyingKey,
    groups: &[Ipv4Addr],
    groups6: &[std::net::Ipv6Addr],
) -> Result<(), CredentialsError> {
    if let Some(group) = config.group6.filter(|g| !groups6.contains(g)) {
        return Err(CredentialsError::Group6NotAllowed {
            cert: config.member_cert.clone(),
            group,
        });
    }
    if *member_key != key.verifying_key() {
        return Err(CredentialsError::OtherKey {
            cert: config.member_cert.clone(),
            key: config.member_key.clone(),
        });
    }
    for (what, group) in [
        ("group", std::net::IpAddr::V4(config.group)),
        ("control.group", config.control.group),
    ] {
        let listed = match group {
            std::net::IpAddr::V4(g) => groups.contains(&g),
            std::net::IpAddr::V6(g) => groups6.contains(&g),
        };
        if !listed {
            return Err(CredentialsError::GroupNotAllowed {
                cert: config.member_cert.clone(),
                what,
                group,
            });
        }
    }
    Ok(())
}

/// The keystore side of a running daemon: the client and the state of our credentials.
#[derive(Debug)]
pub struct KeystoreWatch {
    pub client: Arc<KeystoreClient>,
    pub every: Duration,
    pub watch: keystore::Watch,
    /// The group keys the record published at start: the control channel accepts peers
    /// certified by any of them (a rotation publishes two).
    pub published_keys: Vec<VerifyingKey>,
    /// The member and operator key ids the record revoked at start: the control channel drops
    /// those peers (SPEC.md §9.7).
    pub published_revoked: Vec<KeyId>,
}

/// Reads the key files and refuses a certificate that the group key did not issue, that is
/// not valid now, that certifies another key, or that does not allow our groups. The group key
/// is `group_pub`, or (`[keystore]`) the published key that issued our certificate, checked as
/// in [`keystore::check`] within `keystore.start_timeout_ms`.
pub async fn load_credentials(
    config: &Config,
    now: Timestamp,
) -> Result<(Credentials, Option<KeystoreWatch>), CredentialsError> {
    let key = keys::read_private_key(&config.member_key)?;
    match config.group_key_source()? {
        GroupKeySource::File(path) => {
            let group_key = keys::read_public_key(path)?;
            let cert = keys::read_verified_certificate(&config.member_cert, &group_key, now)?;
            let body = cert.body();
            check_identity(
                config,
                &key,
                &body.member_key,
                &body.groups,
                &cert.ipv6().groups,
            )?;
            let creds = Credentials {
                key,
                cert,
                group_key,
            };
            Ok((creds, None))
        }
        GroupKeySource::Keystore(ks) => {
            let client_config = keystore::client_config(ks)?;
            let client_max_stale = client_config.max_stale;
            let unverified = keys::read_certificate(&config.member_cert)?;
            let claimed = unverified.unverified_body();
            let groups6 = &unverified.unverified_ipv6().groups;
            check_identity(config, &key, &claimed.member_key, &claimed.groups, groups6)?;
            let marks = dns_keystore::marks::RollbackMarks::open(&ks.rollback_marks)?;
            let client = KeystoreClient::with_rollback_marks(client_config, marks);
            let member = ks
                .require_certificate
                .then(|| KeyId::of(&key.verifying_key()));
            let published =
                keystore::fetch_at_start(&client, config.group, member, ks.start_timeout())
                    .await
                    .map_err(|source| CredentialsError::KeystoreFetch {
                        group: config.group,
                        source,
                    })?;
            let (group_key, cert) =
                keystore::check(&unverified, &published, ks.require_certificate, now)?;
            let watch = KeystoreWatch {
                published_keys: published.record.keys.clone(),
                published_revoked: published.record.revoked.clone(),
                client: Arc::new(client),
                every: ks.refresh(),
                watch: keystore::Watch::new(
                    unverified,
                    ks.require_certificate,
                    client_max_stale,
                    daemon_kit::now(),
                    published.ttl,
                ),
            };
            let creds = Credentials {
                key,
                cert,
                group_key,
            };
            Ok((creds, Some(watch)))
        }
    }
}

/// Fetches the group record (and, under `require_certificate`, our certificate record) every
/// `keystore.refresh_ms` and sends each outcome.
pub fn spawn_keystore_refresher(
    watch: &KeystoreWatch,
    config: &Config,
    creds: &Credentials,
) -> (
    tokio::task::JoinHandle<()>,
    tokio::sync::mpsc::Receiver<Result<keystore::Published, FetchError>>,
) {
    let (client, group, every) = (watch.client.clone(), config.group, watch.every);
    let member = config
        .keystore
        .as_ref()
        .is_some_and(|k| k.require_certificate)
        .then(|| KeyId::of(&creds.key.verifying_key()));
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let task = tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let r = keystore::fetch(&client, group, member, daemon_kit::wall_clock()).await;
            if let Ok(p) = &r {
                let keys: Vec<String> = p
                    .record
                    .keys
                    .iter()
                    .map(|k| KeyId::of(k).to_string())
                    .collect();
                debug!(keys = %keys.join(","), revoked = p.record.revoked.len(), "keystore: record validated");
            }
            if tx.send(r).await.is_err() {
                break;
            }
        }
    });
    (task, rx)
}

/// Logs what a keystore refresh changed: loudly when our credentials stopped matching.
pub fn log_keystore_event(event: Option<keystore::WatchEvent>) {
    match event {
        Some(keystore::WatchEvent::Mismatch { reason, leave_at }) => error!(
            reason = reason.label(),
            %leave_at,
            "keystore: {reason}; serving on until the verifiers refuse our claims (one record TTL), then leaving"
        ),
        Some(keystore::WatchEvent::Cleared) => {
            info!("keystore: our credentials match the published record again")
        }
        Some(keystore::WatchEvent::FetchFailed(e)) => warn!("keystore refresh failed: {e}"),
        _ => {}
    }
}
