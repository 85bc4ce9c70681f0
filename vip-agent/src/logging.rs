//! Structured logs with tracing, friendly to journald.
//!
//! Under systemd (JOURNAL_STREAM is set) lines carry no timestamp or colour: journald adds
//! its own timestamp. `RUST_LOG` filters (default `info`); `VIP_AGENT_LOG_FORMAT=json`
//! prints one JSON object per event for log shippers. Records from the `log` crate (aya)
//! are forwarded into the same output.

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let json = std::env::var("VIP_AGENT_LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(!under_journald && std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = if json {
        builder.json().try_init()
    } else if under_journald {
        builder.without_time().try_init()
    } else {
        builder.try_init()
    };
}
