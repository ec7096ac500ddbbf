//! Where the verifier's group keys come from: the offline key file or the DNSSEC-validating
//! keystore client. The core looks keys up through `igmp_ext::KeySource`; this module only
//! builds the source and, for the keystore, keeps it fresh.

use crate::config::{Config, ConfigError, KeySourceConfig};
use crate::keyfile::{FileKeySource, KeyFileError};
use dns_keystore::client::KeystoreClient;
use igmp_ext::mld_verifier::KeySource6;
use igmp_ext::KeySource;
use std::sync::Arc;
use std::time::Duration;

/// Why the key source could not be built (the operator's to fix).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeysError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    File(#[from] KeyFileError),
    #[error(transparent)]
    Marks(#[from] dns_keystore::marks::MarksError),
}

/// Where the verifier's group keys come from.
#[derive(Debug)]
pub enum Keys {
    /// The offline key file (`keys`).
    File(FileKeySource),
    /// The DNSSEC-validating keystore client (`[keystore]`), refreshed by its own task.
    Keystore(Arc<KeystoreClient>),
}

impl Keys {
    /// Loads the key file, or builds the keystore client and registers the configured groups
    /// (nothing is fetched yet: see [`Keys::start`]).
    pub fn load(cfg: &Config) -> Result<Keys, KeysError> {
        match cfg.key_source()? {
            KeySourceConfig::File(p) => Ok(Keys::File(FileKeySource::load(p)?)),
            KeySourceConfig::Keystore(ks) => {
                let marks = dns_keystore::marks::RollbackMarks::open(&ks.rollback_marks)?;
                let client =
                    KeystoreClient::with_rollback_marks(Config::keystore_client_config(ks)?, marks);
                for g in &ks.groups {
                    client.watch(*g);
                }
                for g in &ks.groups6 {
                    client.watch6(*g);
                }
                Ok(Keys::Keystore(Arc::new(client)))
            }
        }
    }

    /// For the keystore: fetches every group once (so that keys are there before the first
    /// join when the keystore is up; failures are logged and retried), then starts the
    /// refresher. Must run inside the tokio runtime.
    pub async fn start(&self, refresh: Duration) -> Option<tokio::task::JoinHandle<()>> {
        match self {
            Keys::File(_) => None,
            Keys::Keystore(client) => {
                client.refresh_due(daemon_kit::wall_clock()).await;
                Some(client.spawn_refresher(refresh))
            }
        }
    }

    pub fn source(&self) -> &dyn KeySource {
        match self {
            Keys::File(f) => f,
            Keys::Keystore(c) => c.as_ref(),
        }
    }

    /// Keys of IPv6 groups, for MLDv2 joins: the key file's, or the keystore client's for the
    /// groups in `keystore.groups6`.
    pub fn source6(&self) -> &dyn KeySource6 {
        match self {
            Keys::File(f) => f,
            Keys::Keystore(c) => c.as_ref(),
        }
    }
}
