//! `manycastctl`: the admin tool. Makes the group key, member keys and member certificates,
//! publishes them to the keystore (`keystore.rs`), and drives a running cluster through a
//! daemon's admin socket (`cluster.rs`: members, allocation, move, drain, rebalance, watch),
//! with an operator certificate for actions on other members (`operator.rs`).

mod cluster;
mod keystore;
mod operator;

use clap::{Parser, Subcommand};
use daemon_kit::wall_clock as now;
use igmp_ext::cert::Ipv6Grant;
use igmp_ext::{CertificateBody, KeyId, MemberId, SiteId, Slice, Slice6, SliceSet, SliceSet6};
use manycast_server::keys;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "manycastctl",
    version,
    about = "Manycast admin tool: keys, member certificates, the keystore and the running cluster"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Key pairs: the group key (kept by the admin) and member keys (one per server).
    #[command(subcommand)]
    Key(KeyCommand),
    /// Member certificates, signed by the group key.
    #[command(subcommand)]
    Cert(CertCommand),
    /// The DNS keystore: publish, rotate, revoke, publish certificates, show (SPEC.md §8).
    #[command(subcommand)]
    Keystore(keystore::KeystoreCommand),
    /// Operator certificates: the group key certifies an operator key, which signs moves,
    /// rebalances and drains of other members (SPEC.md §9.7).
    #[command(subcommand)]
    Operator(operator::OperatorCommand),
    #[command(flatten)]
    Cluster(cluster::ClusterCommand),
}

#[derive(Subcommand, Debug)]
enum KeyCommand {
    /// Make a key pair: PREFIX.key (PKCS#8 PEM, mode 0600) and PREFIX.pub (SPKI PEM).
    New {
        /// Path prefix, for example /etc/manycast/group or keys/srv1.
        prefix: PathBuf,
    },
    /// Show a key's id and the base64 value to publish in DNS (`p=` tag, RFC 8463).
    Show {
        /// A .pub or .key file.
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum CertCommand {
    /// Certify a member key for groups and slices.
    Issue {
        /// The group's private key.
        #[arg(long)]
        group_key: PathBuf,
        /// The member's public key (.pub, or its .key).
        #[arg(long)]
        member_key: PathBuf,
        /// The member's id in the cluster (ties between equal epochs go to the lower id).
        #[arg(long)]
        id: u32,
        /// An IPv4 group the member may join; repeat for several.
        #[arg(long = "group", required_unless_present = "groups6")]
        groups: Vec<Ipv4Addr>,
        /// A slice the member may claim (ADDR/LEN or ADDR/MASK); repeat; default: all.
        #[arg(long = "slice")]
        slices: Vec<Slice>,
        /// An IPv6 group the member may join (a version 2 certificate, SPEC.md §4.2); repeat.
        #[arg(long = "group6")]
        groups6: Vec<Ipv6Addr>,
        /// An IPv6 slice the member may claim (2001:db8::/32 or 0:0:0:100::/0:0:0:300::);
        /// repeat; default with --group6: all.
        #[arg(long = "slice6", requires = "groups6")]
        slices6: Vec<Slice6>,
        /// Issue a router certificate naming this site (a site router of a site hierarchy:
        /// a version 3 certificate, SPEC.md §4.3); a number from 1 (0 is no site).
        #[arg(long, value_parser = parse_site)]
        site: Option<SiteId>,
        /// Days of validity from now.
        #[arg(long, default_value_t = 365)]
        valid_days: u64,
        /// Where to write the certificate.
        #[arg(long)]
        out: PathBuf,
    },
    /// Decode a certificate; with --group-pub also check its signature and validity now.
    Show {
        file: PathBuf,
        #[arg(long)]
        group_pub: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

/// A site id for `--site`: 1 to 4294967295; 0 names no site, so it is refused here rather than
/// issued as a member certificate.
fn parse_site(s: &str) -> Result<SiteId, String> {
    match s.parse::<u32>() {
        Ok(0) => Err("site 0 is no site: a router certificate names a site from 1".into()),
        Ok(n) => Ok(SiteId(n)),
        Err(e) => Err(format!("a site is a number from 1 to {}: {e}", u32::MAX)),
    }
}

fn with_ext(prefix: &std::path::Path, ext: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(ext);
    PathBuf::from(s)
}

fn b64(bytes: &[u8]) -> String {
    // The DNS `p=` tag is plain base64 of the raw key; PEM's encoder gives exactly that body.
    pem_rfc7468::encode_string("K", pem_rfc7468::LineEnding::LF, bytes)
        .map(|pem| pem.lines().filter(|l| !l.starts_with("-----")).collect())
        .unwrap_or_default()
}

fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.command {
        Command::Keystore(command) => keystore::run(command)?,
        Command::Cluster(command) => cluster::run(command)?,
        Command::Operator(command) => operator::run(command)?,
        Command::Key(KeyCommand::New { prefix }) => {
            let key = keys::generate()?;
            let (private, public) = (with_ext(&prefix, ".key"), with_ext(&prefix, ".pub"));
            keys::write_private_key(&private, &key)?;
            keys::write_public_key(&public, &key.verifying_key())?;
            println!(
                "key id {}: {} (private, 0600), {}",
                KeyId::of(&key.verifying_key()),
                private.display(),
                public.display()
            );
        }
        Command::Key(KeyCommand::Show { file, json }) => {
            let key = keys::read_public_key(&file)?;
            let (id, p) = (KeyId::of(&key), b64(key.as_bytes()));
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "key_id": id.to_string(), "p": p })
                );
            } else {
                println!("key id  {id}\ndns     k=ed25519; p={p}");
            }
        }
        Command::Cert(CertCommand::Issue {
            group_key,
            member_key,
            id,
            groups,
            slices,
            groups6,
            slices6,
            site,
            valid_days,
            out,
        }) => {
            let group_key = keys::read_private_key(&group_key)?;
            let member_key = keys::read_public_key(&member_key)?;
            let start = now();
            let slices: SliceSet = if slices.is_empty() {
                SliceSet::full()
            } else {
                slices.into_iter().collect()
            };
            let body = CertificateBody {
                member_id: MemberId(id),
                member_key,
                issuer: KeyId::of(&group_key.verifying_key()),
                not_before: start,
                not_after: start
                    .saturating_add(Duration::from_secs(valid_days.saturating_mul(86_400))),
                groups,
                slices,
            };
            let ipv6 = Ipv6Grant {
                slices: match (groups6.is_empty(), slices6.is_empty()) {
                    (true, _) => SliceSet6::new(),
                    (false, true) => SliceSet6::full(),
                    (false, false) => slices6.into_iter().collect(),
                },
                groups: groups6,
            };
            let cert = match site {
                Some(site) => body.issue_router_with_ipv6(site, &ipv6, &group_key)?,
                None => body.issue_with_ipv6(&ipv6, &group_key)?,
            };
            keys::write_certificate(&out, &cert)?;
            let v6 = if ipv6.is_empty() {
                String::new()
            } else {
                format!(" and IPv6 {}", ipv6.slices)
            };
            let router = site.map_or(String::new(), |s| format!(" as a router of {s}"));
            println!(
                "certified {}{router} (key {}) for {}{v6} until {}: {}",
                body.member_id,
                KeyId::of(&member_key),
                body.slices,
                body.not_after,
                out.display()
            );
        }
        Command::Cert(CertCommand::Show {
            file,
            group_pub,
            json,
        }) => {
            let cert = keys::read_certificate(&file)?;
            let verdict = match group_pub {
                None => "not checked (no --group-pub)".to_string(),
                Some(p) => match cert.clone().verify(&keys::read_public_key(&p)?, now()) {
                    Ok(_) => "valid".to_string(),
                    Err(e) => format!("INVALID: {e}"),
                },
            };
            let b = cert.unverified_body();
            let v6 = cert.unverified_ipv6();
            let groups6: Vec<String> = v6.groups.iter().map(|g| g.to_string()).collect();
            let slices6: Vec<String> = v6.slices.iter().map(|s| s.to_string()).collect();
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "member_id": b.member_id.0,
                        "member_key_id": KeyId::of(&b.member_key).to_string(),
                        "issuer": b.issuer.to_string(),
                        "not_before_ms": b.not_before.as_millis(),
                        "not_after_ms": b.not_after.as_millis(),
                        "groups": b.groups.iter().map(|g| g.to_string()).collect::<Vec<_>>(),
                        "slices": b.slices.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                        "groups6": groups6,
                        "slices6": slices6,
                        "site": cert.unverified_site().map(|s| s.0),
                        "verdict": verdict,
                    })
                );
            } else {
                println!(
                    "member      {} (key {})",
                    b.member_id,
                    KeyId::of(&b.member_key)
                );
                println!("issuer      {}", b.issuer);
                println!(
                    "valid       {} .. {} (Unix seconds)",
                    b.not_before, b.not_after
                );
                println!(
                    "groups      {}",
                    b.groups
                        .iter()
                        .map(|g| g.to_string())
                        .collect::<Vec<_>>()
                        .join(" ")
                );
                println!("slices      {}", b.slices);
                if !groups6.is_empty() || !slices6.is_empty() {
                    println!("groups6     {}", groups6.join(" "));
                    println!("slices6     {}", slices6.join(" "));
                }
                if let Some(site) = cert.unverified_site() {
                    println!("site        {} (router certificate)", site.0);
                }
                println!("signature   {verdict}");
            }
            if verdict.starts_with("INVALID") {
                return Err("certificate does not verify".into());
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("manycastctl: {e}");
            ExitCode::FAILURE
        }
    }
}
