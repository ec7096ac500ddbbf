//! `dns-keystore`: the DNSSEC-signed keystore daemon. Everything is in the library; this parses
//! the command line, sets up logging and turns errors into one line and a non-zero exit.

use clap::Parser;
use dns_keystore::config::Config;
use std::path::PathBuf;
use std::process::ExitCode;

/// DNSSEC-signed DNS server for Manycast group records and keys (RFC 2136 updates with TSIG).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The TOML config file (see README "dns-keystore").
    #[arg(short, long, default_value = "/etc/manycast/dns-keystore.toml")]
    config: PathBuf,
    /// Create the state directory (keys, trust anchor, zone) and exit without serving.
    #[arg(long)]
    init_only: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    daemon_kit::logging::init();
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dns-keystore: {e}");
            return ExitCode::from(2);
        }
    };
    if args.init_only {
        return match dns_keystore::state::State::open_or_create(&config) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("dns-keystore: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("dns-keystore: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dns_keystore::server::run(config, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dns-keystore: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
