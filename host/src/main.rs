//! The `selfmon` binary: thin glue around [`selfmon::cli`].

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use selfmon::cli::LogFormat;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

fn main() -> ExitCode {
    keep_large_buffers_apart();
    selfmon::storage::pages::set_aside();
    raise_open_file_limit();
    // One TLS provider for every client and server selfmon makes, its own HTTP client's defaults included.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Variables already set win over `.env`. The working directory's `.env` is read before the command line, so
    // it may set SELFMON_CONFIG; the config file's own directory is read after.
    let _ = dotenvy::from_path(".env");
    let cli = selfmon::cli::Cli::parse();
    if let Some(dir) = cli.config.as_deref().and_then(std::path::Path::parent) {
        let _ = dotenvy::from_path(dir.join(".env"));
    }
    // Lines on stderr (human-readable, or JSON with `--log-format json`), and JSON lines in the log files once
    // `serve` opens them; both at SELFMON_LOG.
    let level = || EnvFilter::try_from_env("SELFMON_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let json = cli.log_format == LogFormat::Json;
    let text = (!json).then(|| {
        tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .with_filter(level())
    });
    tracing_subscriber::registry()
        .with(text)
        .with(selfmon::ops::journal::Journal { stderr: json }.with_filter(level()))
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

/// selfmon's own allocations go to jemalloc. At a steady load glibc's heap kept growing (about 0.1 MiB a minute in
/// an hour's soak) by free fragments left in its pages by allocations of different lifetimes: heaptrack showed
/// nothing live behind it and `malloc_trim` released none of it. jemalloc's size classes keep like with like and it
/// hands freed pages back on its own. C libraries (SQLite, libcrypto) keep glibc's malloc, tuned below.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings (read at its start; `_RJEM_MALLOC_CONF` in the environment adds to them): allocations of
/// 256 KiB and more (bodies as they inflate, decoded batches) come from an arena that returns them to the system as
/// soon as they are freed, so a flood of large requests leaves nothing behind.
#[unsafe(export_name = "_rjem_malloc_conf")]
static JEMALLOC_SETTINGS: &[u8; 26] = b"oversize_threshold:262144\0";

/// glibc's malloc serves the C libraries: SQLite above all (its statements and schemas, sort buffers of megabytes for
/// large queries, and pages beyond the block [`selfmon::storage::pages`] sets aside for its caches). Allocations of 256 KiB and more get their own mapping, given back to the system when freed; glibc would
/// otherwise raise that threshold to the size of each large buffer freed, up to 32 MiB, and keep later ones in its
/// arenas. The heap is also kept in two arenas (unless `MALLOC_ARENA_MAX` is set in the environment selfmon starts
/// with): glibc gives each thread that allocates its own arena, up to eight per core, SQLite's readers run on
/// whichever of tokio's blocking threads is free, and each arena keeps the free fragments its threads left. (Measured
/// while all of selfmon's allocations went through glibc: the cap halved the soak's growth besides SQLite.)
fn keep_large_buffers_apart() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called before any thread is started.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}
