//! The daemon's TOML configuration (README "dns-keystore"), with documented defaults. A bad
//! file gives one line naming the file and the field, and changes nothing.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `dns-keystore.toml`. Every field but `zone` and `state_dir` has a default.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The zone this server is authoritative for, e.g. `groups.manycast.test`.
    pub zone: String,
    /// Where keys, the trust anchor and the sqlite journal live; created with mode 0700.
    pub state_dir: PathBuf,
    /// UDP and TCP address to serve on. Default `127.0.0.1:53`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// TTL of group records, in seconds. Default 300.
    #[serde(default = "default_record_ttl")]
    pub record_ttl: u32,
    /// How long RRSIGs stay valid, in seconds; the zone is re-signed every quarter of it.
    /// Default 7 days.
    #[serde(default = "default_signature_validity")]
    pub signature_validity: u64,
    /// Name of the TSIG key (RFC 8945) that authenticates updates. Default `manycast-admin`.
    #[serde(default = "default_tsig_key_name")]
    pub tsig_key_name: String,
    /// Queries per second allowed from one source address before its queries are dropped
    /// (a token bucket with this rate and burst). 0 disables the limit. Default 2000.
    #[serde(default = "default_rate_limit")]
    pub rate_limit_qps: u32,
    /// Largest update accepted, in records of the update section. Default 16.
    #[serde(default = "default_max_update_records")]
    pub max_update_records: usize,
    /// Prometheus text metrics are written to this file every `metrics_interval` seconds.
    /// Default: `<state_dir>/metrics.prom`.
    #[serde(default)]
    pub metrics_file: Option<PathBuf>,
    /// Seconds between metrics writes. Default 5.
    #[serde(default = "default_metrics_interval")]
    pub metrics_interval: u64,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 53))
}
fn default_record_ttl() -> u32 {
    300
}
fn default_signature_validity() -> u64 {
    7 * 24 * 3600
}
fn default_tsig_key_name() -> String {
    "manycast-admin".into()
}
fn default_rate_limit() -> u32 {
    2000
}
fn default_max_update_records() -> usize {
    16
}
fn default_metrics_interval() -> u64 {
    5
}

/// A config that could not be used: the operator's file is at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("config {path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: {source}")]
    Invalid {
        path: PathBuf,
        source: InvalidConfig,
    },
}

/// Config text that is not a valid config (syntax, a type, an unknown key or a value out of
/// range): one line naming the line or the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidConfig(String);

impl From<daemon_kit::ConfigError> for ConfigError {
    fn from(e: daemon_kit::ConfigError) -> Self {
        match e {
            daemon_kit::ConfigError::Read { path, source } => ConfigError::Read { path, source },
            daemon_kit::ConfigError::Invalid { path, message } => ConfigError::Invalid {
                path,
                source: InvalidConfig(message),
            },
        }
    }
}

impl Config {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Ok(daemon_kit::config::load(path, Config::check)?)
    }

    /// Parses and checks config text; the error is one line.
    pub fn parse(text: &str) -> Result<Config, InvalidConfig> {
        let config: Config = daemon_kit::config::parse(text).map_err(InvalidConfig)?;
        config.check().map_err(InvalidConfig)?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        crate::names::zone_name(&self.zone).map_err(|e| format!("zone: {e}"))?;
        if self.record_ttl == 0 || self.record_ttl > 86_400 {
            return Err("record_ttl: must be 1 to 86400 seconds".into());
        }
        if !(3600..=90 * 86_400).contains(&self.signature_validity) {
            return Err("signature_validity: must be 3600 to 7776000 seconds".into());
        }
        if hickory_proto::rr::Name::from_ascii(&self.tsig_key_name).is_err()
            || self.tsig_key_name.is_empty()
        {
            return Err("tsig_key_name: not a DNS name".into());
        }
        if !(1..=1000).contains(&self.max_update_records) {
            return Err("max_update_records: must be 1 to 1000".into());
        }
        if self.metrics_interval == 0 {
            return Err("metrics_interval: must be at least 1 second".into());
        }
        Ok(())
    }

    pub fn signature_validity(&self) -> Duration {
        Duration::from_secs(self.signature_validity)
    }

    pub fn metrics_path(&self) -> PathBuf {
        self.metrics_file
            .clone()
            .unwrap_or_else(|| self.state_dir.join("metrics.prom"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c = Config::parse("zone = \"groups.manycast.test\"\nstate_dir = \"/var/lib/ks\"\n")
            .unwrap();
        assert_eq!(c.listen, "127.0.0.1:53".parse().unwrap());
        assert_eq!(c.record_ttl, 300);
        assert_eq!(c.signature_validity, 604_800);
        assert_eq!(c.tsig_key_name, "manycast-admin");
        assert_eq!(c.rate_limit_qps, 2000);
        assert_eq!(c.max_update_records, 16);
        assert_eq!(c.metrics_path(), PathBuf::from("/var/lib/ks/metrics.prom"));
    }

    #[test]
    fn bad_configs_give_one_line_naming_the_field() {
        let cases = [
            ("state_dir = \"/x\"", "zone"),
            ("zone = \"a..b\"\nstate_dir = \"/x\"", "zone"),
            (
                "zone = \"z\"\nstate_dir = \"/x\"\nlisten = \"nope\"",
                "socket address",
            ),
            (
                "zone = \"z\"\nstate_dir = \"/x\"\nrecord_ttl = 0",
                "record_ttl",
            ),
            (
                "zone = \"z\"\nstate_dir = \"/x\"\nsignature_validity = 5",
                "signature_validity",
            ),
            ("zone = \"z\"\nstate_dir = \"/x\"\ncolour = 1", "colour"),
            ("zone = \"z\"\nstate_dir = ", "string"),
        ];
        for (text, expect) in cases {
            let err = Config::parse(text).unwrap_err().to_string();
            assert!(err.contains(expect), "{text:?}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn load_names_the_file_in_one_line() {
        let dir = std::env::temp_dir().join(format!("dns-keystore-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("ks.toml");
        let missing = Config::load(&dir.join("missing.toml")).unwrap_err();
        assert!(matches!(missing, ConfigError::Read { .. }), "{missing}");
        assert!(
            missing.to_string().starts_with(&format!(
                "config {}: cannot read: ",
                dir.join("missing.toml").display()
            )),
            "{missing}"
        );
        std::fs::write(&path, "zone = \"z\"\nstate_dir = \"/x\"\nrecord_ttl = 0\n").expect("write");
        let invalid = Config::load(&path).unwrap_err();
        assert_eq!(
            invalid.to_string(),
            format!(
                "config {}: record_ttl: must be 1 to 86400 seconds",
                path.display()
            )
        );
        std::fs::write(&path, "zone = \"z\"\nstate_dir = \"/x\"\n").expect("write");
        assert_eq!(Config::load(&path).expect("loads").zone, "z");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
