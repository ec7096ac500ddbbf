//! `manycastctl keystore ...`: publishes group records and member certificates through
//! `dns_keystore::admin` (RFC 2136 updates signed with TSIG) and reads them back through the
//! DNSSEC-validating client (SPEC.md §8). Changes to an existing record (rotate, revoke) start
//! from the validated record, never from an unvalidated answer, so an on-path attacker cannot
//! make the admin sign a record of the attacker's choosing. Groups and VIPs are IPv4 or IPv6
//! (an IPv6 record lives at the group's nibble name, SPEC.md §8.2); a record's group and VIP
//! are of one family.

use clap::{Args, Subcommand};
use daemon_kit::wall_clock;
use dns_keystore::admin::{self, Admin};
use dns_keystore::cert_record::CertRecord;
use dns_keystore::client::{ClientConfig, KeystoreClient};
use dns_keystore::names;
use dns_keystore::record::{GroupFamily, GroupRecord};
use dns_keystore::validate::TrustAnchor;
use igmp_ext::{KeyId, Timestamp, UnverifiedCertificate};
use manycast_server::keys;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

type Error = Box<dyn std::error::Error>;

#[derive(Subcommand, Debug)]
pub enum KeystoreCommand {
    /// Publish (or replace) a group's record at its service and group-address names.
    Publish {
        #[command(flatten)]
        update: UpdateArgs,
        /// The multicast group address, IPv4 or IPv6 (for example ff3e::8000:1).
        #[arg(long)]
        group: IpAddr,
        /// The service label (`<name>.<zone>`).
        #[arg(long)]
        name: String,
        /// Who administers the group (no spaces, `;`, `=` or `,`).
        #[arg(long)]
        owner: String,
        /// The group's public key (.pub, or its .key); required unless --public.
        #[arg(long)]
        group_pub: Option<PathBuf>,
        /// Publish the group as public: joins are accepted as plain IGMPv3.
        #[arg(long)]
        public: bool,
        /// The unicast service VIP bound to the group (VIP mode), of the group's family.
        #[arg(long)]
        vip: Option<IpAddr>,
        /// Days of validity from now.
        #[arg(long, default_value_t = 365)]
        valid_days: u64,
    },
    /// Add a new group key (--add) or retire an old one (--retire) in the published record.
    Rotate {
        #[command(flatten)]
        update: UpdateArgs,
        #[arg(long)]
        group: IpAddr,
        /// The new group public key; published next to the current ones.
        #[arg(long, required_unless_present = "retire", conflicts_with = "retire")]
        add: Option<PathBuf>,
        /// The old group key (file or 16-hex-digit key id) to drop once certificates are reissued.
        #[arg(long)]
        retire: Option<String>,
    },
    /// Revoke a member key: its joins are refused once routers refresh the record.
    Revoke {
        #[command(flatten)]
        update: UpdateArgs,
        #[arg(long)]
        group: IpAddr,
        /// The member's key file, certificate file or 16-hex-digit key id.
        #[arg(long)]
        member_key: String,
    },
    /// Member certificates in the keystore (SPEC.md §8.7).
    #[command(subcommand)]
    Cert(KeystoreCertCommand),
    /// Look a group's record (and a member's certificate) up, DNSSEC-validated, and print it.
    Show {
        /// The keystore's DNS address.
        #[arg(long)]
        server: SocketAddr,
        /// The zone's trust anchor (`<state_dir>/trust-anchor.conf` of the keystore).
        #[arg(long)]
        trust_anchor: PathBuf,
        /// The group whose record to show.
        #[arg(long, required_unless_present = "member_key")]
        group: Option<IpAddr>,
        /// Also show the certificate published for this member (key file, certificate file or
        /// key id); with --group it is checked against the group's published keys.
        #[arg(long)]
        member_key: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeystoreCertCommand {
    /// Publish (or replace) a member certificate at `<member key id>.m.<zone>`.
    Publish {
        #[command(flatten)]
        update: UpdateArgs,
        /// The certificate file (`manycastctl cert issue`).
        #[arg(long)]
        cert: PathBuf,
    },
    /// Remove a member's published certificate (this does not revoke it: use `revoke`).
    Withdraw {
        #[command(flatten)]
        update: UpdateArgs,
        /// The certificate file.
        #[arg(
            long,
            required_unless_present = "member_key",
            conflicts_with = "member_key"
        )]
        cert: Option<PathBuf>,
        /// The member's key file or 16-hex-digit key id.
        #[arg(long)]
        member_key: Option<String>,
    },
}

/// How to reach the keystore and sign updates.
#[derive(Args, Debug)]
pub struct UpdateArgs {
    /// The keystore's DNS address.
    #[arg(long)]
    server: SocketAddr,
    /// The TSIG key file: raw key bytes, the keystore's `<state_dir>/tsig.key` (mode 0600).
    #[arg(long)]
    tsig_key: PathBuf,
    /// The TSIG key name the keystore is configured with.
    #[arg(long, default_value = "manycast-admin")]
    tsig_key_name: String,
    /// The keystore's zone.
    #[arg(long)]
    zone: String,
    /// TTL of the published records, seconds.
    #[arg(long, default_value_t = 300)]
    ttl: u32,
    /// Trust anchor to validate the current record with before changing it (rotate, revoke);
    /// default: trust-anchor.conf beside the TSIG key file, where the keystore writes both.
    #[arg(long)]
    trust_anchor: Option<PathBuf>,
}

fn read_tsig_key(path: &Path) -> Result<Vec<u8>, Error> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    // Whoever reads this key can rewrite the zone; the daemon refuses a loose one too.
    if mode & 0o077 != 0 {
        return Err(format!(
            "{}: TSIG key is readable by group or others (mode {mode:o}); chmod 600 it",
            path.display()
        )
        .into());
    }
    let key = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if key.len() < 16 {
        return Err(format!("{}: TSIG key is shorter than 16 bytes", path.display()).into());
    }
    Ok(key)
}

fn read_anchor(path: &Path) -> Result<TrustAnchor, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    TrustAnchor::parse(&text).map_err(|e| format!("{}: {e}", path.display()).into())
}

impl UpdateArgs {
    fn admin(&self) -> Result<Admin, Error> {
        let key = read_tsig_key(&self.tsig_key)?;
        Ok(Admin::new(
            self.server,
            &self.zone,
            &self.tsig_key_name,
            key,
            self.ttl,
        )?)
    }

    fn client(&self) -> Result<KeystoreClient, Error> {
        let (path, anchor) = match &self.trust_anchor {
            Some(p) => (p.clone(), read_anchor(p)?),
            None => {
                let p = self
                    .tsig_key
                    .parent()
                    .unwrap_or(Path::new("."))
                    .join("trust-anchor.conf");
                let anchor = read_anchor(&p).map_err(|e| {
                    format!("{e} (the default beside --tsig-key; give --trust-anchor)")
                })?;
                (p, anchor)
            }
        };
        let zone = names::zone_name(&self.zone)?;
        if anchor.zone != zone {
            return Err(format!(
                "{}: trust anchor is for zone {}, not {zone}",
                path.display(),
                anchor.zone
            )
            .into());
        }
        Ok(KeystoreClient::new(ClientConfig::new(self.server, anchor)))
    }

    /// The group's current record, DNSSEC-validated, then `change` applied and published.
    async fn change(&self, group: IpAddr, change: Change<'_>) -> Result<(), Error> {
        let client = self.client()?;
        let read = |e| format!("reading the record of {group}: {e}");
        match group {
            IpAddr::V4(g) => {
                let (current, _, _) = client.fetch(g, wall_clock()).await.map_err(read)?;
                self.apply(current, change).await
            }
            IpAddr::V6(g) => {
                let (current, _, _) = client.fetch6(g, wall_clock()).await.map_err(read)?;
                self.apply(current, change).await
            }
        }
    }

    async fn apply<A: GroupFamily>(
        &self,
        current: GroupRecord<A>,
        change: Change<'_>,
    ) -> Result<(), Error> {
        let group = current.group;
        let next = match change {
            Change::AddKey(p) => admin::rotate_key(&current, keys::read_public_key(p)?),
            Change::RetireKey(old) => {
                if !current.keys.iter().any(|k| KeyId::of(k) == old) {
                    return Err(format!("group key {old} is not published for {group}").into());
                }
                admin::retire_key(&current, old)
            }
            Change::Revoke(member) => admin::revoke_member(&current, member),
        };
        self.admin()?.publish(&next).await?;
        match change {
            Change::Revoke(member) => println!(
                "published {group}: member key {member} revoked ({} revoked)",
                next.revoked.len()
            ),
            _ => println!("published {group}: {}", key_ids(&next)),
        }
        Ok(())
    }
}

/// What `rotate` and `revoke` change in the current record.
#[derive(Clone, Copy)]
enum Change<'a> {
    AddKey(&'a Path),
    RetireKey(KeyId),
    Revoke(KeyId),
}

/// What `keystore publish` writes, before its addresses say which family it is.
struct NewRecord {
    name: String,
    owner: String,
    protected: bool,
    keys: Vec<igmp_ext::ed25519_dalek::VerifyingKey>,
    not_before: Timestamp,
    not_after: Timestamp,
}

impl NewRecord {
    fn at<A: GroupFamily>(self, group: A, vip: Option<A>) -> GroupRecord<A> {
        GroupRecord {
            group,
            name: self.name,
            owner: self.owner,
            protected: self.protected,
            keys: self.keys,
            not_before: self.not_before,
            not_after: self.not_after,
            revoked: Vec::new(),
            vip,
        }
    }
}

/// Publishes a new record (`keystore publish`) after checking it as every reader will.
async fn publish<A: GroupFamily>(update: &UpdateArgs, record: GroupRecord<A>) -> Result<(), Error> {
    record.check()?;
    update.admin()?.publish(&record).await?;
    println!(
        "published {} as {}.{}: {}",
        record.group,
        record.name,
        update.zone.trim_end_matches('.'),
        key_ids(&record)
    );
    Ok(())
}

/// A member key id from a key file, a certificate file or 16 hex digits.
fn member_key_id(arg: &str) -> Result<KeyId, Error> {
    let path = Path::new(arg);
    if !path.exists() {
        return arg
            .parse::<KeyId>()
            .map_err(|_| format!("{arg}: neither a file nor a key id (16 hex digits)").into());
    }
    if let Ok(cert) = keys::read_certificate(path) {
        return Ok(KeyId::of(&cert.unverified_body().member_key));
    }
    Ok(KeyId::of(&keys::read_public_key(path)?))
}

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the async runtime: {e}").into())
}

pub fn run(command: KeystoreCommand) -> Result<(), Error> {
    runtime()?.block_on(run_async(command))
}

fn whole_seconds(t: Timestamp) -> Timestamp {
    Timestamp::from_secs(t.as_millis() / 1000)
}

async fn run_async(command: KeystoreCommand) -> Result<(), Error> {
    match command {
        KeystoreCommand::Publish {
            update,
            group,
            name,
            owner,
            group_pub,
            public,
            vip,
            valid_days,
        } => {
            let keys = match group_pub {
                Some(p) => vec![keys::read_public_key(&p)?],
                None => Vec::new(),
            };
            let start = whole_seconds(wall_clock());
            let not_after =
                start.saturating_add(Duration::from_secs(valid_days.saturating_mul(86_400)));
            let record = NewRecord {
                name,
                owner,
                protected: !public,
                keys,
                not_before: start,
                not_after,
            };
            match (group, vip) {
                (IpAddr::V4(g), None) => publish(&update, record.at(g, None)).await?,
                (IpAddr::V4(g), Some(IpAddr::V4(v))) => {
                    publish(&update, record.at(g, Some(v))).await?
                }
                (IpAddr::V6(g), None) => publish(&update, record.at(g, None)).await?,
                (IpAddr::V6(g), Some(IpAddr::V6(v))) => {
                    publish(&update, record.at(g, Some(v))).await?
                }
                (g, Some(v)) => {
                    return Err(format!("--vip {v} is not of --group {g}'s address family").into())
                }
            }
        }
        KeystoreCommand::Rotate {
            update,
            group,
            add,
            retire,
        } => {
            let change = match (&add, retire) {
                (Some(p), _) => Change::AddKey(p),
                (None, Some(old)) => Change::RetireKey(member_key_id(&old)?),
                (None, None) => return Err("give --add or --retire".into()),
            };
            update.change(group, change).await?;
        }
        KeystoreCommand::Revoke {
            update,
            group,
            member_key,
        } => {
            let member = member_key_id(&member_key)?;
            update.change(group, Change::Revoke(member)).await?;
        }
        KeystoreCommand::Cert(KeystoreCertCommand::Publish { update, cert }) => {
            let record = CertRecord::new(keys::read_certificate(&cert)?)
                .map_err(|e| format!("{}: {e}", cert.display()))?;
            update.admin()?.publish_certificate(&record).await?;
            let b = record.certificate().unverified_body();
            println!(
                "published the certificate of {} (key {}) at {}",
                b.member_id,
                record.member_key_id(),
                names::member_name(&names::zone_name(&update.zone)?, record.member_key_id())
            );
        }
        KeystoreCommand::Cert(KeystoreCertCommand::Withdraw {
            update,
            cert,
            member_key,
        }) => {
            let member = match (cert, member_key) {
                (Some(c), _) => {
                    KeyId::of(&keys::read_certificate(&c)?.unverified_body().member_key)
                }
                (None, Some(m)) => member_key_id(&m)?,
                (None, None) => return Err("give --cert or --member-key".into()),
            };
            update.admin()?.withdraw_certificate(member).await?;
            println!("withdrew the certificate of member key {member}");
        }
        KeystoreCommand::Show {
            server,
            trust_anchor,
            group,
            member_key,
            json,
        } => {
            let client =
                KeystoreClient::new(ClientConfig::new(server, read_anchor(&trust_anchor)?));
            let now = wall_clock();
            let failed = |e| format!("{}: {e}", group.map_or(String::new(), |g| g.to_string()));
            let member_key = member_key.as_deref();
            return match group {
                Some(IpAddr::V4(g)) => {
                    let fetched = client.fetch(g, now).await.map_err(failed)?;
                    show(&client, Some(fetched), member_key, json).await
                }
                Some(IpAddr::V6(g)) => {
                    let fetched = client.fetch6(g, now).await.map_err(failed)?;
                    show(&client, Some(fetched), member_key, json).await
                }
                None => show::<std::net::Ipv4Addr>(&client, None, member_key, json).await,
            };
        }
    }
    Ok(())
}

fn key_ids<A: GroupFamily>(r: &GroupRecord<A>) -> String {
    if r.keys.is_empty() {
        return "no group keys (public)".into();
    }
    let ids: Vec<String> = r.keys.iter().map(|k| KeyId::of(k).to_string()).collect();
    format!("group keys {}", ids.join(", "))
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Checks a published certificate against the group's published record: issuer among the
/// keys, signature, validity now, the group among its groups (its IPv6 groups for an IPv6
/// record), the key not revoked.
fn verdict<A: GroupFamily>(
    cert: &UnverifiedCertificate,
    record: &GroupRecord<A>,
    now: Timestamp,
) -> String {
    let b = cert.unverified_body();
    let Some(key) = record.keys.iter().find(|k| KeyId::of(k) == b.issuer) else {
        return format!("INVALID: issuer {} is not among the group's keys", b.issuer);
    };
    if let Err(e) = cert.clone().verify(key, now) {
        return format!("INVALID: {e}");
    }
    let group: IpAddr = record.group.into();
    let certified = match group {
        IpAddr::V4(g) => b.groups.contains(&g),
        IpAddr::V6(g) => cert.unverified_ipv6().groups.contains(&g),
    };
    if !certified {
        return format!("INVALID: not certified for {}", record.group);
    }
    if record.revoked.contains(&KeyId::of(&b.member_key)) {
        return "REVOKED".into();
    }
    format!("valid (group key {})", b.issuer)
}

/// Prints the `fetched` group record (validated, with its TTL and signature expiry) and the
/// certificate published for `member_key`, checked against the record.
async fn show<A: GroupFamily>(
    client: &KeystoreClient,
    fetched: Option<(GroupRecord<A>, u32, u64)>,
    member_key: Option<&str>,
    json: bool,
) -> Result<(), Error> {
    let now = wall_clock();
    let mut out = serde_json::Map::new();
    let mut text = String::new();
    let mut record = None;
    if let Some((r, ttl, sig_expires)) = fetched {
        let keys: Vec<serde_json::Value> = r
            .keys
            .iter()
            .map(|k| serde_json::json!({ "id": KeyId::of(k).to_string(), "p": b64(k.as_bytes()) }))
            .collect();
        out.insert(
            "group".into(),
            serde_json::json!({
                "group": r.group.to_string(),
                "name": r.name,
                "owner": r.owner,
                "protected": r.protected,
                "keys": keys,
                "not_before": r.not_before.as_millis() / 1000,
                "not_after": r.not_after.as_millis() / 1000,
                "revoked": r.revoked.iter().map(KeyId::to_string).collect::<Vec<_>>(),
                "vip": r.vip.map(|v| v.to_string()),
                "ttl": ttl,
                "signatures_expire": sig_expires,
                "dnssec": "validated",
            }),
        );
        let list = |v: Vec<String>| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(", ")
            }
        };
        text.push_str(&format!(
            "group       {}  (DNSSEC validated, TTL {ttl} s, signatures until {sig_expires})\n\
             name        {}\nowner       {}\nflags       {}\n\
             keys        {}\nvalid       {} .. {} (Unix seconds)\nrevoked     {}\nvip         {}\n",
            r.group,
            r.name,
            r.owner,
            if r.protected { "protected" } else { "public" },
            list(r.keys.iter().map(|k| KeyId::of(k).to_string()).collect()),
            r.not_before.as_millis() / 1000,
            r.not_after.as_millis() / 1000,
            list(r.revoked.iter().map(KeyId::to_string).collect()),
            r.vip.map_or("none".to_string(), |v| v.to_string()),
        ));
        record = Some(r);
    }
    let mut bad = None;
    if let Some(member) = member_key {
        let member = member_key_id(member)?;
        let (c, ttl, _) = client
            .fetch_certificate(member, now)
            .await
            .map_err(|e| format!("certificate of {member}: {e}"))?;
        let cert = c.certificate();
        let b = cert.unverified_body();
        let v6 = cert.unverified_ipv6();
        let groups: Vec<String> = b
            .groups
            .iter()
            .map(|g| g.to_string())
            .chain(v6.groups.iter().map(|g| g.to_string()))
            .collect();
        let slices6: Vec<String> = v6.slices.iter().map(|s| s.to_string()).collect();
        let verdict = match &record {
            Some(r) => verdict(cert, r, now),
            None => "not checked (no --group)".to_string(),
        };
        if verdict.starts_with("INVALID") || verdict == "REVOKED" {
            bad = Some(verdict.clone());
        }
        out.insert(
            "certificate".into(),
            serde_json::json!({
                "member_id": b.member_id.0,
                "member_key_id": member.to_string(),
                "issuer": b.issuer.to_string(),
                "not_before_ms": b.not_before.as_millis(),
                "not_after_ms": b.not_after.as_millis(),
                "groups": groups,
                "slices": b.slices.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                "slices6": slices6,
                "ttl": ttl,
                "dnssec": "validated",
                "verdict": verdict,
            }),
        );
        text.push_str(&format!(
            "certificate {} (key {member}, DNSSEC validated, TTL {ttl} s)\n\
             issuer      {}\nvalid       {} .. {} (Unix seconds)\ngroups      {}\n\
             slices      {}\nslices6     {}\nsignature   {verdict}\n",
            b.member_id,
            b.issuer,
            b.not_before,
            b.not_after,
            groups.join(" "),
            b.slices,
            if slices6.is_empty() {
                "none".to_owned()
            } else {
                slices6.join(" ")
            },
        ));
    }
    if json {
        println!("{}", serde_json::Value::Object(out));
    } else {
        print!("{text}");
    }
    match bad {
        Some(v) => Err(format!("published certificate is {v}").into()),
        None => Ok(()),
    }
}
