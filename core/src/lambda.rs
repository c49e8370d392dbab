//! What the three Lambda binaries share at start.

/// JSON logs at `RUST_LOG`'s level, `info` when it is unset or does not parse: the handlers'
/// per-event summaries are `info`, and an unset variable must not drop them.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().json().with_env_filter(filter).init();
}
