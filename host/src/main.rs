//! The `selfmon` binary: thin glue around [`selfmon::cli`].

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

mod allocator;

fn main() -> ExitCode {
    allocator::configure();
    raise_open_file_limit();
    // Variables already set win over `.env`. The working directory's `.env` is read before the command line, so
    // it may set SELFMON_CONFIG; the config file's own directory is read after.
    let _ = dotenvy::from_path(".env");
    let cli = selfmon::cli::Cli::parse();
    if let Some(dir) = cli.config.as_deref().and_then(std::path::Path::parent) {
        let _ = dotenvy::from_path(dir.join(".env"));
    }
    // Human-readable lines on stderr, and JSON lines in the log files once `serve` opens them; both at SELFMON_LOG.
    let level = || EnvFilter::try_from_env("SELFMON_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(std::io::stderr().is_terminal())
                .with_writer(std::io::stderr)
                .with_filter(level()),
        )
        .with(selfmon::ops::journal::Journal.with_filter(level()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(selfmon::cli::run(cli))
}

/// Open files (and so connections) up to the hard limit the system sets, not the soft one (often 1 024): each client
/// connection is one, and `[server] max_connections` is 4 096 per listener by default.
fn raise_open_file_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = rustix::process::Rlimit { current: limit.maximum, maximum: limit.maximum };
        if let Err(error) = setrlimit(Resource::Nofile, raised) {
            eprintln!("warning: cannot raise the open-file limit: {error}");
        }
    }
}
