//! `manycast-verifier`: run the router-side join verifier, or ask a running one for its status.

use clap::Parser;
use manycast_verifier::config::Config;
use manycast_verifier::daemon::{query_status, Daemon};
use manycast_verifier::keys::Keys;
use manycast_verifier::status::Status;
use std::path::PathBuf;
use std::process::ExitCode;

/// The Manycast router-side join verifier: IGMPv3 querier, signed-join verification, and
/// in-kernel steering of client traffic (multicast routing, nftables).
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Configuration file (TOML); see the README's "Router verifier" section.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Print the ownership table and kernel entries of the running verifier, then exit.
    #[arg(long)]
    status: bool,
    /// With --status: print JSON instead of text.
    #[arg(long, requires = "status")]
    json: bool,
    /// Print the running verifier's Prometheus metrics, then exit.
    #[arg(long, conflicts_with = "status")]
    metrics: bool,
    /// The status socket to ask (default: the one in --config, else /run/manycast-verifier.sock).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Check the configuration and the key file (or the keystore trust anchor), and with
    /// `[site]` and a key file the router key and certificate, then exit.
    #[arg(long)]
    check_config: bool,
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("manycast-verifier: {msg}");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match &cli.config {
        Some(p) => match Config::load(p) {
            Ok(c) => Some(c),
            Err(e) => return fail(e),
        },
        None => None,
    };
    if cli.status || cli.metrics {
        let socket = cli
            .socket
            .or_else(|| config.as_ref().map(|c| c.status_socket.clone()))
            .unwrap_or_else(|| PathBuf::from("/run/manycast-verifier.sock"));
        let reply = match query_status(&socket, if cli.metrics { "metrics" } else { "status" }) {
            Ok(r) => r,
            Err(e) => return fail(e),
        };
        if cli.metrics || cli.json {
            println!("{}", reply.trim_end());
        } else {
            match serde_json::from_str::<Status>(&reply) {
                Ok(s) => print!("{}", s.render_text()),
                Err(e) => return fail(format!("unreadable status reply: {e}")),
            }
        }
        return ExitCode::SUCCESS;
    }
    let Some(config) = config else {
        return fail("--config is required to run the verifier (see --help)");
    };
    if cli.check_config {
        let keys = match Keys::load(&config) {
            Ok(k) => k,
            Err(e) => return fail(e),
        };
        if let Err(e) = manycast_verifier::daemon::site::check_credentials(&config, &keys) {
            return fail(e);
        }
        println!("configuration ok");
        return ExitCode::SUCCESS;
    }
    daemon_kit::logging::init();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("tokio runtime: {e}")),
    };
    let result = rt.block_on(async {
        let daemon = Daemon::start(config)?;
        daemon.run().await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}
