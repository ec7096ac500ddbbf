//! Operator certificates and operator-signed cluster requests (SPEC.md §9.7): `operator issue`
//! certifies an operator key with the group key (as `cert issue` certifies a member key), and
//! `--operator-key/--operator-cert` on move, rebalance, drain and resume sign the control
//! request, which members verify against the group key before acting on another member.

use clap::{Args, Subcommand};
use control_channel::wire::{OperatorAuthority, RequestAction};
use daemon_kit::wall_clock as now;
use igmp_ext::operator::{sign_request, OperatorCertificate, OperatorCertificateBody};
use igmp_ext::KeyId;
use manycast_server::admin::protocol::AdminRequest;
use manycast_server::keys;
use std::path::{Path, PathBuf};
use std::time::Duration;

type Error = Box<dyn std::error::Error>;

const LABEL: &str = "MANYCAST OPERATOR CERTIFICATE";

#[derive(Subcommand, Debug)]
pub enum OperatorCommand {
    /// Certify an operator key (make one with `key new`) for one cluster's control group.
    Issue {
        /// The group's private key.
        #[arg(long)]
        group_key: PathBuf,
        /// The operator's public key (.pub, or its .key).
        #[arg(long)]
        operator_key: PathBuf,
        /// The cluster's control group (`control.group` in the servers' config); an IPv6
        /// group's certificate names its cluster id (SPEC.md §9.1).
        #[arg(long)]
        control_group: std::net::IpAddr,
        /// Days of validity from now.
        #[arg(long, default_value_t = 30)]
        valid_days: u64,
        /// Where to write the certificate (PEM).
        #[arg(long)]
        out: PathBuf,
    },
    /// Decode an operator certificate; with --group-pub also check it now.
    Show {
        file: PathBuf,
        #[arg(long)]
        group_pub: Option<PathBuf>,
    },
}

/// The operator's key and certificate: needed to move units, rebalance, or drain or resume
/// another member than the daemon's own.
#[derive(Args, Debug, Clone, Default)]
pub struct Operator {
    /// The operator's private key (`key new`).
    #[arg(long, requires = "operator_cert")]
    operator_key: Option<PathBuf>,
    /// The operator certificate (`operator issue`).
    #[arg(long, requires = "operator_key")]
    operator_cert: Option<PathBuf>,
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (label, bytes) = pem_rfc7468::decode_vec(text.as_bytes())
        .map_err(|e| format!("{}: not a PEM file: {e}", path.display()))?;
    if label != LABEL {
        return Err(format!("{}: not an operator certificate ({label})", path.display()).into());
    }
    Ok(bytes)
}

impl Operator {
    /// `request` as is without an operator key; else wrapped with the operator's signature
    /// over `action`, the control request it becomes.
    pub fn authorize(
        &self,
        request: AdminRequest,
        action: Option<RequestAction>,
    ) -> Result<AdminRequest, Error> {
        let (Some(key), Some(cert), Some(action)) =
            (&self.operator_key, &self.operator_cert, action)
        else {
            return Ok(request);
        };
        let key = keys::read_private_key(key)?;
        let certificate = read(cert)?;
        let body = OperatorCertificateBody::decode_unverified(&certificate)?;
        if body.operator_key != key.verifying_key() {
            return Err(format!("{}: certifies another key", cert.display()).into());
        }
        let issued_at = now();
        let signature = sign_request(&key, body.cluster, issued_at, &action.signed_bytes());
        Ok(AdminRequest::Authorized {
            authority: OperatorAuthority {
                certificate,
                issued_at: issued_at.as_millis(),
                signature: signature.to_vec(),
            },
            request: Box::new(request),
        })
    }
}

pub fn run(command: OperatorCommand) -> Result<(), Error> {
    match command {
        OperatorCommand::Issue {
            group_key,
            operator_key,
            control_group,
            valid_days,
            out,
        } => {
            let group_key = keys::read_private_key(&group_key)?;
            let operator_key = keys::read_public_key(&operator_key)?;
            let start = now();
            let cluster = match control_group {
                std::net::IpAddr::V4(g) => g,
                std::net::IpAddr::V6(g) => control_channel::cluster_id6(g),
            };
            let cert = OperatorCertificateBody {
                operator_key,
                issuer: KeyId::of(&group_key.verifying_key()),
                not_before: start,
                not_after: start
                    .saturating_add(Duration::from_secs(valid_days.saturating_mul(86_400))),
                cluster,
            }
            .issue(&group_key)?;
            let pem =
                pem_rfc7468::encode_string(LABEL, pem_rfc7468::LineEnding::LF, cert.as_bytes())?;
            std::fs::write(&out, pem).map_err(|e| format!("{}: {e}", out.display()))?;
            println!(
                "certified operator key {} for control group {control_group} until {}: {}",
                cert.key_id(),
                cert.body().not_after,
                out.display()
            );
        }
        OperatorCommand::Show { file, group_pub } => {
            let bytes = read(&file)?;
            let b = OperatorCertificateBody::decode_unverified(&bytes)?;
            println!("operator    key {}", KeyId::of(&b.operator_key));
            println!("issuer      {}", b.issuer);
            println!("cluster     {}", b.cluster);
            println!(
                "valid       {} .. {} (Unix seconds)",
                b.not_before, b.not_after
            );
            if let Some(p) = group_pub {
                let key = keys::read_public_key(&p)?;
                match OperatorCertificate::verify(&bytes, &[key], b.cluster, &[], now()) {
                    Ok(_) => println!("signature   valid"),
                    Err(e) => return Err(format!("INVALID: {e}").into()),
                }
            }
        }
    }
    Ok(())
}
