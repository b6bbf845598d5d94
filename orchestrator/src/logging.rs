//! Logging setup: `tracing` to stderr, filtered by `--log-level`, else `RUST_LOG`.

use std::io::IsTerminal as _;
use tracing_subscriber::EnvFilter;

pub fn init(flag: Option<&str>, default: &str) -> Result<(), String> {
    let filter = match flag {
        Some(f) => EnvFilter::try_new(f).map_err(|e| format!("--log-level `{f}`: {e}"))?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default)),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
    Ok(())
}
