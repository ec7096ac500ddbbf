//! The offline key source: group public keys and revocations read from a TOML file. The
//! DNSSEC-validating dns-keystore client implements the same `KeySource` trait and is chosen
//! with `[keystore]` instead (see `keys::Keys`); the file is the fallback for routers without
//! the keystore.
//!
//! ```toml
//! [[group]]
//! group = "232.1.1.1"          # or an IPv6 group, "ff3e::8000:1", for MLDv2 joins
//! keys = ["<64 hex digits: Ed25519 group public key>"]
//! revoked_members = ["<16 hex digits: member key id>"]
//! ```

use igmp_ext::ed25519_dalek::VerifyingKey;
use igmp_ext::mld_verifier::{GroupKeys6, KeySource6};
use igmp_ext::verify::{GroupKey, KeyLookupError};
use igmp_ext::{GroupKeys, KeyId, KeySource, Timestamp};
use serde::Deserialize;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    #[serde(default)]
    group: Vec<GroupEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupEntry {
    group: IpAddr,
    keys: Vec<String>,
    #[serde(default)]
    revoked_members: Vec<String>,
}

/// Why a key file was refused (the operator's to fix).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    #[error("cannot read key file {}: {source}", path.display())]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// The file's text, with what is wrong in it.
    #[error("key file {}: {source}", path.display())]
    Invalid {
        path: std::path::PathBuf,
        source: KeyFileSyntaxError,
    },
}

/// What is wrong in a key file's text, in one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyFileSyntaxError(pub String);

/// Group keys from a file; answers from memory, as `KeySource` requires.
#[derive(Debug, Clone, Default)]
pub struct FileKeySource {
    groups: HashMap<Ipv4Addr, Arc<GroupKeys>>,
    groups6: HashMap<Ipv6Addr, Arc<GroupKeys6>>,
}

impl FileKeySource {
    pub fn load(path: &std::path::Path) -> Result<Self, KeyFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|source| KeyFileError::Invalid {
            path: path.to_owned(),
            source,
        })
    }

    /// Parses the file's text; the error says what is wrong, in one line.
    pub fn parse(text: &str) -> Result<Self, KeyFileSyntaxError> {
        let file: KeyFile = toml::from_str(text)
            .map_err(|e| KeyFileSyntaxError(e.message().replace('\n', " ").trim().to_owned()))?;
        let mut groups = HashMap::new();
        let mut groups6 = HashMap::new();
        for g in file.group {
            let keys = g
                .keys
                .iter()
                .map(|k| {
                    let bytes: [u8; 32] = hex::decode(k)
                        .ok()
                        .and_then(|b| b.try_into().ok())
                        .ok_or_else(|| {
                            format!("group {}: key {k:?} is not 32 hex bytes", g.group)
                        })?;
                    VerifyingKey::from_bytes(&bytes)
                        .map(GroupKey::new)
                        .map_err(|_| format!("group {}: key {k:?} is not an Ed25519 key", g.group))
                })
                .collect::<Result<Vec<_>, String>>()
                .map_err(KeyFileSyntaxError)?;
            let revoked_members = g
                .revoked_members
                .iter()
                .map(|r| {
                    r.parse::<KeyId>()
                        .map_err(|_| format!("group {}: bad key id {r:?}", g.group))
                })
                .collect::<Result<Vec<_>, String>>()
                .map_err(KeyFileSyntaxError)?;
            match g.group {
                IpAddr::V4(group) => {
                    let keys = GroupKeys {
                        group,
                        keys,
                        revoked_members,
                    };
                    groups.insert(group, Arc::new(keys));
                }
                IpAddr::V6(group) => {
                    let keys = GroupKeys6 {
                        group,
                        keys,
                        revoked_members,
                    };
                    groups6.insert(group, Arc::new(keys));
                }
            }
        }
        Ok(FileKeySource { groups, groups6 })
    }

    /// The file text for `keys` (used by tests and the lab to write key files).
    pub fn render(keys: &[GroupKeys]) -> String {
        keys.iter()
            .map(|g| render_entry(&g.group.to_string(), &g.keys, &g.revoked_members))
            .collect()
    }

    /// The same for IPv6 groups.
    pub fn render6(keys: &[GroupKeys6]) -> String {
        keys.iter()
            .map(|g| render_entry(&g.group.to_string(), &g.keys, &g.revoked_members))
            .collect()
    }

    pub fn groups(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.groups.keys().copied()
    }
}

fn render_entry(group: &str, keys: &[GroupKey], revoked: &[KeyId]) -> String {
    let ks: Vec<String> = keys
        .iter()
        .map(|k| format!("\"{}\"", hex::encode(k.key.as_bytes())))
        .collect();
    let rs: Vec<String> = revoked.iter().map(|r| format!("\"{r}\"")).collect();
    format!(
        "[[group]]\ngroup = \"{group}\"\nkeys = [{}]\nrevoked_members = [{}]\n\n",
        ks.join(", "),
        rs.join(", ")
    )
}

impl KeySource6 for FileKeySource {
    fn group_keys6(
        &self,
        group: Ipv6Addr,
        _now: Timestamp,
    ) -> Result<Arc<GroupKeys6>, KeyLookupError> {
        self.groups6
            .get(&group)
            .cloned()
            .ok_or(KeyLookupError::UnknownGroup)
    }
}

impl KeySource for FileKeySource {
    fn group_keys(
        &self,
        group: Ipv4Addr,
        _now: Timestamp,
    ) -> Result<Arc<GroupKeys>, KeyLookupError> {
        self.groups
            .get(&group)
            .cloned()
            .ok_or(KeyLookupError::UnknownGroup)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use igmp_ext::fixtures::{Fixture, NOW};
    use igmp_ext::{JoinVerifier, Slice, VerifierConfig};

    #[test]
    fn round_trips_and_verifies_fixture_joins() {
        let f = Fixture::new(2);
        let mut gk = f.group_keys();
        gk.revoked_members
            .push(KeyId::of(&f.members[1].key.verifying_key()));
        let text = FileKeySource::render(&[gk.clone()]);
        let src = FileKeySource::parse(&text).expect("parses");
        assert_eq!(*src.group_keys(f.group, NOW).unwrap(), gk);
        assert_eq!(
            src.group_keys(Ipv4Addr::new(232, 9, 9, 9), NOW),
            Err(KeyLookupError::UnknownGroup)
        );
        let mut v = JoinVerifier::new(VerifierConfig::default(), f.links());
        let ok = v.handle_datagram(NOW, 1, &f.join(0, &[Slice::ALL], 1, 1), &src);
        assert!(ok.is_ok(), "{ok:?}");
        let revoked = v.handle_datagram(NOW, 1, &f.join(1, &[Slice::ALL], 2, 2), &src);
        assert_eq!(revoked.unwrap_err().reason, igmp_ext::Reason::Revoked);
    }

    /// IPv6 groups (MLDv2 joins) sit in the same file, looked up by `KeySource6`.
    #[test]
    fn ipv6_groups_round_trip_and_verify_fixture_mld_joins() {
        use igmp_ext::fixtures::{GROUP6, IFINDEX};
        use igmp_ext::mld_verifier::{MldJoinVerifier, MldOutcome};
        use igmp_ext::verify6::MldVerifierConfig;
        let f = Fixture::dual_stack(1, igmp_ext::SliceSet6::full());
        let gk6 = (*f.key_source6()[&GROUP6]).clone();
        let text = FileKeySource::render(&[f.group_keys()])
            + &FileKeySource::render6(std::slice::from_ref(&gk6));
        let src = FileKeySource::parse(&text).expect("parses");
        assert_eq!(*src.group_keys6(GROUP6, NOW).unwrap(), gk6);
        assert!(src.group_keys(f.group, NOW).is_ok());
        let mut v = MldJoinVerifier::new(
            MldVerifierConfig::default(),
            &VerifierConfig::default(),
            f.links6(),
        );
        let d = f.datagram6(0, &f.claims6(&[igmp_ext::Slice6::ALL], 1, NOW, 1));
        let r = v.handle_datagram(NOW, IFINDEX, &d, &src);
        assert!(matches!(r, Ok(MldOutcome::Join { .. })), "{r:?}");
    }

    #[test]
    fn bad_key_files_say_what_is_wrong() {
        let e = FileKeySource::parse("[[group]]\ngroup = \"232.1.1.1\"\nkeys = [\"abcd\"]\n")
            .unwrap_err();
        assert!(e.0.contains("not 32 hex bytes"), "{e}");
        let e = FileKeySource::parse("[[group]]\ngroup = \"nope\"\nkeys = []\n").unwrap_err();
        assert!(!e.0.is_empty());
    }
}
