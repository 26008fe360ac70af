//! The `selfmon` command: `serve`, `check`, `plugins`, `config check`, `logs search` (read from the database
//! directly, with `--follow`) and `graphql-schema`; `plugin new`, `validate` and `run` are in [`authoring`];
//! `healthcheck`, `completions` and `man` in [`service`].

pub mod authoring;
pub mod service;
mod storage;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::app::host::{Host, StartError, load_plugins};
use crate::checks::board::{Board, CheckState};
use crate::checks::health::Health;
use crate::config::Config;
use crate::logs::search::{Found, Search, SearchError};
use crate::logs::{LEVELS, StoredRecord, level_list};
use crate::runtime::Kind;
use crate::runtime::plugins::Plugins;
use crate::runtime::settings::describe_settings;
use crate::storage::{KeyFile, Privacy, Reader, StorageError};

/// Self-hosted monitoring with sandboxed WebAssembly plugins.
#[derive(Debug, Parser)]
#[command(name = "selfmon", version)]
pub struct Cli {
    /// The config file [default: ./selfmon.toml if present, else the built-in default]
    #[arg(long, short, global = true, env = "SELFMON_CONFIG")]
    pub config: Option<PathBuf>,

    /// How selfmon's own log is written to stderr: `text` for people, `json` (one object per line) for a collector.
    #[arg(long, global = true, value_enum, default_value = "text", env = "SELFMON_LOG_FORMAT")]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run checks on their schedules and serve the API until SIGINT or SIGTERM.
    Serve,
    /// Run checks once and print a table. Exit code: 0 all healthy, 1 degraded, 2 unhealthy, 3 unknown or error
    /// (the Nagios plugin convention). The checks they depend on run too, to explain failures, but only the named
    /// ones decide the exit code.
    Check {
        /// Checks to run [default: every enabled check].
        names: Vec<String>,
    },
    /// List the built-in and dropped-in plugins with what they accept, and the plugin files that were refused.
    Plugins,
    /// Write, check and try a plugin.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Work with the config file.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Work with the stored logs (read from the database directly: no server or key needed).
    Logs {
        #[command(subcommand)]
        command: LogsCommand,
    },
    /// Convert the database between plain and encrypted, or move it into PostgreSQL (while no selfmon serves it).
    Storage {
        #[command(subcommand)]
        command: StorageCommand,
    },
    /// Print the GraphQL schema (SDL) that `/graphql` serves.
    GraphqlSchema,
    /// Ask the API this config serves, on this machine, for `/health`: exit code 0 when it answers 200, 1
    /// otherwise (for a container's HEALTHCHECK or a supervisor).
    Healthcheck,
    /// Print the completion script for a shell: `source <(selfmon completions bash)`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page selfmon(1); with `--dir`, write it and one page per subcommand there.
    Man {
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

/// The format of selfmon's log on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum StorageCommand {
    /// Encrypt the plain database with `[storage] key`, in place.
    Encrypt,
    /// Decrypt the database encrypted with `[storage] key`, in place; remove the key from the config afterwards.
    Decrypt,
    /// Copy the SQLite database (`[storage] path`, with `[storage] key` if encrypted) into a PostgreSQL database;
    /// run again, it goes on where a copy that stopped left off. Counts are compared at the end.
    Migrate {
        /// The PostgreSQL database: a postgres:// URL, or env:NAME / file:/path holding one [default: `[storage]
        /// url`].
        #[arg(long)]
        to: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Make a crate for a new plugin, with a test, ready to build against the SDK.
    New {
        /// The plugin's name: lowercase letters, digits and `-`.
        name: String,
        #[arg(long, value_enum)]
        kind: PluginKind,
        /// Where to make it [default: the current directory].
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Depend on the SDK in this folder (a selfmon checkout's `sdk/`) [default: `selfmon-sdk` of this
        /// selfmon's version, from crates.io].
        #[arg(long, value_name = "PATH")]
        sdk: Option<PathBuf>,
    },
    /// Print what a component is (name, version, world), what it imports (and so asks of selfmon), and any
    /// problem that would keep selfmon from loading it. Exit code 1 on a problem.
    Validate { file: PathBuf },
    /// Call a plugin once in the server's sandbox: a checker runs one check (exit code as `check`); a parser parses
    /// the lines of stdin into JSON records; a rule evaluates against the configured store and prints its alerts.
    Run {
        /// The component file, or a built-in plugin's name (`tcp`, `tls`, `dns`, ...).
        #[arg(value_name = "FILE|NAME")]
        file: PathBuf,
        /// A checker's target (a URL or host:port); network access to it is granted.
        #[arg(long)]
        target: Option<String>,
        /// Further network grants (host:port, host:*, *.example.com:443), as a check's `allow`.
        #[arg(long)]
        allow: Vec<String>,
        /// PEM certificates a checker's TLS trusts besides the system's (or a server's own, to pin it), as a
        /// check's `ca_file`.
        #[arg(long, value_name = "PATH")]
        ca_file: Option<PathBuf>,
        /// A setting of the plugin's config as key=value; values are TOML (200, true, ["a"]) or else text. Repeat
        /// for more. (`--config` names selfmon's config file, as everywhere.)
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// A secret as key=value, where value is env:NAME, file:/path or the secret itself.
        #[arg(long = "secret", value_name = "KEY=VALUE")]
        secrets: Vec<String>,
        /// The call's deadline, such as 10s [default: the check default].
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<std::time::Duration>,
    },
}

/// What a new plugin does.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum PluginKind {
    Checker,
    Parser,
    Rule,
}

#[derive(Debug, Subcommand)]
pub enum LogsCommand {
    /// Search the stored log records, newest last; with `--follow`, go on printing new ones as they are stored.
    Search {
        /// Full-text query: words, "a phrase", prefix*, AND, OR, NOT [default: every record].
        query: Option<String>,
        /// Levels, comma-separated: error,critical.
        #[arg(long)]
        level: Option<String>,
        #[arg(long)]
        service: Option<String>,
        #[arg(long)]
        source: Option<String>,
        #[arg(long)]
        trace_id: Option<String>,
        #[arg(long)]
        user_id: Option<String>,
        /// Only records from this long ago on: 15m, 2h, 7d.
        #[arg(long, value_parser = humantime::parse_duration)]
        since: Option<std::time::Duration>,
        /// The newest this many records.
        #[arg(long, default_value_t = 50)]
        limit: u64,
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
        /// Keep printing matching records as they are stored, until interrupted.
        #[arg(long, short)]
        follow: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check the whole config, plugins' own validation included, without running anything.
    Check,
}

/// Nagios' UNKNOWN, also used for errors that stop a check from running at all.
const UNKNOWN: u8 = 3;

/// Run a parsed command line.
pub async fn run(cli: Cli) -> ExitCode {
    match &cli.command {
        Command::GraphqlSchema => {
            print!("{}", crate::api::graphql::sdl());
            return ExitCode::SUCCESS;
        }
        Command::Completions { shell } => return service::completions(*shell),
        Command::Man { dir } => return service::man(dir.as_deref()),
        _ => {}
    }
    // A new plugin needs no config.
    if let Command::Plugin { command: PluginCommand::New { name, kind, dir, sdk } } = &cli.command {
        let kind = match kind {
            PluginKind::Checker => Kind::Checker,
            PluginKind::Parser => Kind::Parser,
            PluginKind::Rule => Kind::Rule,
        };
        return authoring::scaffold(name, kind, dir, sdk.clone());
    }
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(if matches!(cli.command, Command::Check { .. }) { UNKNOWN } else { 1 });
        }
    };
    match cli.command {
        Command::Serve => serve(config).await,
        Command::Check { names } => check(config, &names).await,
        Command::Plugins => plugins(config).await,
        Command::Plugin { command: PluginCommand::Validate { file } } => authoring::validate(&config, &file).await,
        Command::Plugin { command: PluginCommand::Run { file, target, allow, ca_file, set, secrets, timeout } } => {
            let options = authoring::RunOptions { target, allow, ca_file, set, secrets, timeout };
            authoring::run(config, &file, options).await
        }
        Command::Plugin { command: PluginCommand::New { .. } } => unreachable!("made before the config is loaded"),
        Command::Config { command: ConfigCommand::Check } => config_check(config).await,
        Command::Logs { command } => logs(config, command).await,
        Command::Storage { command: StorageCommand::Migrate { to } } => storage::migrate(&config, to).await,
        Command::Storage { command } => storage::convert(&config, &command),
        Command::Healthcheck => service::healthcheck(&config).await,
        Command::GraphqlSchema | Command::Completions { .. } | Command::Man { .. } => {
            unreachable!("printed before the config is loaded")
        }
    }
}

async fn serve(config: Config) -> ExitCode {
    let shutdown = match shutdown_signal() {
        Ok(shutdown) => shutdown,
        Err(error) => {
            eprintln!("error: cannot listen for SIGINT and SIGTERM: {error}");
            return ExitCode::FAILURE;
        }
    };
    let address = config.server.api_listen;
    let listener = match tokio::net::TcpListener::bind(address).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("error: cannot listen on {address} (`[server] api_listen`): {error}");
            return ExitCode::FAILURE;
        }
    };
    // The log files, until everything is shut down and written.
    let journal = if config.logging.enabled {
        match crate::ops::journal::open(&config.logging, &config.source) {
            Ok(journal) => Some(journal),
            Err(error) => {
                eprintln!("error: `[logging]`: {error}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    let served = crate::app::serve(config, listener, shutdown).await;
    drop(journal);
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// SIGINT (Ctrl-C) or SIGTERM. The handlers are installed when this is called, not when the future is first
/// polled: a signal that arrives once selfmon answers requests shuts it down cleanly instead of killing it.
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

async fn build(config: Config) -> Result<Host, ExitCode> {
    Host::for_command(config).await.map_err(|error| {
        match error {
            StartError::Config(errors) => {
                for error in &errors {
                    eprintln!("error: {error}");
                }
            }
            other => eprintln!("error: {other}"),
        }
        ExitCode::from(UNKNOWN)
    })
}

async fn check(config: Config, names: &[String]) -> ExitCode {
    let host = match build(config).await {
        Ok(host) => host,
        Err(code) => return code,
    };
    for name in names {
        if !host.checks.iter().any(|c| &c.name == name) {
            let known: Vec<&str> = host.checks.iter().map(|c| c.name.as_str()).collect();
            eprintln!("error: no check named `{name}` (configured: {})", known.join(", "));
            return ExitCode::from(UNKNOWN);
        }
    }
    // The named checks, and the enabled checks they depend on, so a failure can be put down to its cause.
    let asked: Vec<&str> = if names.is_empty() {
        host.checks.iter().filter(|c| c.enabled).map(|c| c.name.as_str()).collect()
    } else {
        names.iter().map(String::as_str).collect()
    };
    let mut wanted = asked.clone();
    let mut i = 0;
    while i < wanted.len() {
        if let Some(check) = host.checks.iter().find(|c| c.name == wanted[i]) {
            for dependency in &check.depends_on {
                let enabled = host.checks.iter().any(|c| &c.name == dependency && c.enabled);
                if enabled && !wanted.contains(&dependency.as_str()) {
                    wanted.push(dependency);
                }
            }
        }
        i += 1;
    }
    let selected: Vec<_> = host.checks.iter().filter(|c| wanted.contains(&c.name.as_str())).cloned().collect();
    if selected.is_empty() {
        println!("No enabled checks.");
        return ExitCode::SUCCESS;
    }
    let board = Board::default();
    let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(host.config.scheduler.max_concurrent.max(1)));
    let mut runs = Vec::new();
    for check in selected {
        board.register(&check.name, &check.plugin.info.name, check.enabled, check.interval, &check.depends_on);
        let runtime = host.runtime.clone();
        let limit = limit.clone();
        runs.push(tokio::spawn(async move {
            let _permit = limit.acquire().await.expect("the semaphore stays open");
            check.run(&runtime).await
        }));
    }
    for run in runs {
        board.record(&run.await.expect("check runs do not panic"));
    }
    let states = board.snapshot();
    print!("{}", table(&states));
    // The checks asked for decide; the dependencies run only to explain them.
    ExitCode::from(exit_code(states.iter().filter(|s| asked.contains(&s.name.as_str())).map(|s| s.status)))
}

/// The overall exit code: any unhealthy is CRITICAL, then UNKNOWN, then WARNING, else OK.
fn exit_code(statuses: impl Iterator<Item = Health>) -> u8 {
    statuses.max().map_or(0, |worst| worst.nagios_code() as u8)
}

fn table(states: &[CheckState]) -> String {
    let rows: Vec<[String; 4]> = states
        .iter()
        .map(|s| {
            let time = s.response_time_ms.map_or_else(String::new, |ms| format!("{ms:.0} ms"));
            [s.name.clone(), s.status.as_str().to_string(), time, s.summary.clone()]
        })
        .collect();
    let header = ["CHECK", "STATUS", "TIME", "SUMMARY"].map(String::from);
    let width = |column: usize| rows.iter().chain([&header]).map(|row| row[column].chars().count()).max().unwrap_or(0);
    let widths = [width(0), width(1), width(2)];
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        out.push_str(&format!(
            "{:<w0$}  {:<w1$}  {:>w2$}  {}\n",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        ));
    }
    out
}

async fn plugins(config: Config) -> ExitCode {
    let (_runtime, plugins) = match load_plugins(&config).await {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", describe_plugins(&plugins, &config.source.resolve(&config.plugins.dir)));
    if plugins.refused().is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn describe_plugins(plugins: &Plugins, dir: &Path) -> String {
    let mut out = String::new();
    for plugin in plugins.iter() {
        let info = &plugin.info;
        out.push_str(&format!(
            "{} {}  {}, {}, {} KiB, sha256 {}\n  {}\n",
            info.name,
            info.version,
            plugin.kind().as_str(),
            plugin.source,
            plugin.size.div_ceil(1024),
            &plugin.sha256[..12],
            info.description
        ));
        out.push_str(&describe_settings(info));
        out.push('\n');
    }
    out.push_str(&format!("Drop-in folder: {}\n", dir.display()));
    if !plugins.refused().is_empty() {
        out.push_str("Refused:\n");
        for refused in plugins.refused() {
            out.push_str(&format!("  {}: {}\n", refused.file.display(), refused.reason));
        }
    }
    out
}

async fn logs(config: Config, command: LogsCommand) -> ExitCode {
    let LogsCommand::Search { query, level, service, source, trace_id, user_id, since, limit, json, follow } = command;
    let levels = level_list(level.as_deref());
    if let Some(bad) = levels.iter().find(|l| !LEVELS.contains(&l.as_str())) {
        eprintln!("error: `--level`: `{bad}` is not one of {}", LEVELS.join(", "));
        return ExitCode::FAILURE;
    }
    let base = &config.source.base_dir;
    let path = config.source.resolve(&config.storage.path);
    // Read-only: no migration, no writer, and it works for a user who may only read the store.
    let reader = match config.storage.url(base) {
        Ok(Some(url)) => Reader::postgres(&url, |file| std::fs::read(base.join(file))).await,
        Ok(None) if !path.exists() => {
            eprintln!("error: there is no database at {} (has selfmon run with this config?)", path.display());
            return ExitCode::FAILURE;
        }
        Ok(None) => {
            config.storage.key(base).map_err(StorageError::Url).and_then(|key| Reader::sqlite(&path, key.as_ref()))
        }
        Err(error) => Err(StorageError::Url(error)),
    };
    let reader = match reader {
        Ok(reader) => reader,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    // Users are stored as the privacy settings make them: look for the pseudonym of the id given.
    let user_id = match user_id {
        Some(user) if config.privacy.pseudonymize_users => {
            let env = |name: &str| std::env::var(name).ok();
            let key_file = path.with_file_name("privacy.key");
            match Privacy::build(&config.privacy, &config.source, &env, &key_file, KeyFile::Read) {
                Ok(privacy) => Some(privacy.lookup_id(&user)),
                Err(errors) => {
                    for error in errors {
                        eprintln!("error: {error}");
                    }
                    return ExitCode::FAILURE;
                }
            }
        }
        other => other,
    };
    let filter = Search {
        text: query.filter(|q| !q.trim().is_empty()),
        levels,
        service,
        source,
        trace_id,
        user_id,
        from: since.and_then(|s| std::time::SystemTime::now().checked_sub(s)),
        ..Search::default()
    };
    let print = |record: &StoredRecord| {
        if json {
            println!("{}", serde_json::to_string(record).unwrap_or_default());
        } else {
            let who = [record.service.as_deref(), record.logger.as_deref()].into_iter().flatten().collect::<Vec<_>>();
            let message = record.message.replace('\n', "\n    ");
            let who = if who.is_empty() { String::new() } else { format!("[{}] ", who.join(" ")) };
            println!("{} {:<8} {who}{message}", record.timestamp, record.level.to_ascii_uppercase());
        }
    };
    let search = async |search: Search| -> Result<Found, SearchError> {
        reader.read(move |db| Ok(crate::logs::store::search(db, &search))).await?
    };
    let found = match search(Search { limit: limit.clamp(1, 10_000), ..filter.clone() }).await {
        Ok(found) => found,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    for record in found.records.iter().rev() {
        print(record);
    }
    if follow {
        let head = reader.read(crate::logs::store::head).await.unwrap_or(0);
        let mut after = found.records.iter().map(|r| r.id).fold(head, i64::max);
        // Another process writes the database: look for new records twice a second.
        let mut ticks = tokio::time::interval(std::time::Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = tokio::signal::ctrl_c() => break,
            }
            match search(Search { after: Some(after), limit: 1000, ..filter.clone() }).await {
                Ok(found) => {
                    for record in &found.records {
                        print(record);
                        after = record.id;
                    }
                }
                Err(error) => {
                    eprintln!("error: {error}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    ExitCode::SUCCESS
}

async fn config_check(config: Config) -> ExitCode {
    let name = config.source.name();
    let host = match build(config).await {
        Ok(host) => host,
        Err(_) => return ExitCode::FAILURE,
    };
    if let Err(error) = crate::app::tls::Certificates::load(&host.config) {
        eprintln!("error: {error}");
        return ExitCode::FAILURE;
    }
    let enabled = host.checks.iter().filter(|c| c.enabled).count();
    let count = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    let rules = host.alerting.rules.iter().filter(|r| r.enabled).count();
    println!(
        "{name}: OK, {} ({enabled} enabled), {}, {} ({rules} enabled), {}, plugins: {}",
        count(host.checks.len(), "check"),
        count(host.log_sources.len(), "log source"),
        count(host.alerting.rules.len(), "alert rule"),
        count(host.alerting.channels.len(), "channel"),
        host.plugins.names().join(", ")
    );
    for refused in host.plugins.refused() {
        println!("warning: plugin file {} refused: {}", refused.file.display(), refused.reason);
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_status_decides_the_exit_code() {
        use Health::*;
        assert_eq!(exit_code([Healthy, Healthy].into_iter()), 0);
        assert_eq!(exit_code([Healthy, Degraded].into_iter()), 1);
        assert_eq!(exit_code([Degraded, Unknown].into_iter()), 3);
        assert_eq!(exit_code([Unknown, Unhealthy, Degraded].into_iter()), 2);
    }
}
