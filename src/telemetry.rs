//! Logging, the same for the binary and for tests: human-readable lines by default or one JSON
//! object per line (`--log-format json`), filtered by `RUST_LOG` (default `info`). Auth tokens
//! and holder tokens are never logged: spans carry the method, path, request id and the auth
//! token's *name* only.

use std::io::IsTerminal;

use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::EnvFilter;

use clap::ValueEnum;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber; a second call (several tests in one binary) is a no-op.
pub fn init() {
    init_with(LogFormat::Text);
}

/// Installs the global subscriber for the server (log lines on stdout) in the given format; a
/// second call is a no-op.
pub fn init_with(format: LogFormat) {
    let ansi = std::io::stdout().is_terminal();
    install(format, BoxMakeWriter::new(std::io::stdout), ansi);
}

/// For the client subcommands: their stdout is their answer (`--json`), so logs go to stderr.
pub fn init_for_client(format: LogFormat) {
    let ansi = std::io::stderr().is_terminal();
    install(format, BoxMakeWriter::new(std::io::stderr), ansi);
}

/// `ansi`: colour codes only for a terminal; a file, a pipe or a container's log gets plain text.
fn install(format: LogFormat, writer: BoxMakeWriter, ansi: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(writer);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}

/// For tests: logs only when `TEST_LOG` is set, so a passing run stays quiet.
pub fn init_for_tests() {
    if std::env::var_os("TEST_LOG").is_some() {
        init();
    }
}
