//! `manycast-server`: the member daemon. A thin shell over [`manycast_server::daemon`].

use clap::Parser;
use manycast_server::config::Config;
use manycast_server::credentials::load_credentials;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "manycast-server",
    version,
    about = "Manycast member daemon: signed slice joins, control group, native UDP or VIP TCP service"
)]
struct Cli {
    /// The TOML configuration file.
    #[arg(long, default_value = "/etc/manycast/server.toml")]
    config: PathBuf,
    /// Check the configuration, the keys and the certificate, then exit.
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("manycast-server: {e}");
            return ExitCode::from(2);
        }
    };
    // A `[keystore]` whose trust anchor cannot be read is a bad configuration too.
    if let Some(ks) = &config.keystore {
        if let Err(e) = manycast_server::keystore::client_config(ks) {
            eprintln!("manycast-server: {}: {e}", cli.config.display());
            return ExitCode::from(2);
        }
    }
    // So is an `https` health check whose CA file (or the system's roots) cannot be read.
    let checks = config.health_checks().map_err(|e| e.0);
    if let Err(e) = checks.and_then(|c| manycast_server::daemon::health::tls_connectors(&c)) {
        eprintln!("manycast-server: {}: {e}", cli.config.display());
        return ExitCode::from(2);
    }
    if cli.check_config {
        let now = daemon_kit::wall_clock();
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("manycast-server: tokio runtime: {e}");
                return ExitCode::from(2);
            }
        };
        return match rt.block_on(load_credentials(&config, now)) {
            Ok((c, _)) => {
                println!(
                    "configuration OK: member {} for group {}",
                    c.cert.body().member_id,
                    config.group
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("manycast-server: {e}");
                ExitCode::from(2)
            }
        };
    }
    daemon_kit::logging::init();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("manycast-server: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(manycast_server::daemon::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("manycast-server: {e}");
            ExitCode::FAILURE
        }
    }
}
