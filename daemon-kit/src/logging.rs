//! The daemons' logs: `tracing` lines on stderr, at `info` unless `RUST_LOG` says otherwise.

/// Installs the subscriber; call once, at the start of `main`.
pub fn init() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
}
