//! The daemons' logs: `tracing` lines on stderr, at `info` unless `RUST_LOG` says otherwise.

/// Installs the subscriber; call once, at the start of `main`. Colours only on a terminal: a
/// log file or the journal gets plain text that tools can read.
pub fn init() {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
}
