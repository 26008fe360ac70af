//! Log sources: each `[[log_source]]` table is built once into a [`Source`] (its parser, and how it receives its
//! lines), which a start-up or a reload starts: [`file`](mod@file) tails files, [`syslog`] listens, and an [`http`] source is
//! served by the API's `POST /v1/logs`. What they receive goes down the one [ingest](crate::logs::ingest) path.

pub mod file;
pub mod http;
mod identity;
pub mod syslog;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, ConfigError, LogSourceConfig, LogSourceKind};
use crate::logs::ingest::Sink;
use crate::logs::parsing::Parsing;
use crate::logs::sources::file::Tailer;
use crate::logs::sources::syslog::{BindError, Listen, Listener};
use crate::logs::{Origin, SELFMON_SOURCE};
use crate::runtime::Runtime;
use crate::runtime::plugins::Plugins;

/// How a source receives its lines.
#[derive(Debug, Clone)]
pub enum Input {
    /// Tailed files: paths and globs, absolute.
    File(Vec<String>),
    /// Syslog over UDP and TCP.
    Syslog(Vec<Listen>),
    /// Lines posted to the API naming the source.
    Http,
}

/// A configured log source, ready to start.
#[derive(Debug, Clone)]
pub struct Source {
    /// Its table (file paths made absolute).
    pub config: LogSourceConfig,
    pub parsing: Parsing,
    pub input: Input,
}

impl Source {
    /// The `[[log_source]]` tables built, with their parsers (file paths made absolute); every problem with any of
    /// them is reported.
    pub async fn build(config: &Config, plugins: &Plugins, runtime: &Runtime) -> Result<Vec<Self>, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut sources = Vec::new();
        let mut names = std::collections::BTreeSet::new();
        for spanned in &config.log_sources {
            let source = spanned.get_ref();
            let line = config.source.line_at(spanned.span().start);
            let mut problem = |message: String| {
                errors.push(ConfigError::new(
                    config.source.name_at(spanned.span().start),
                    line,
                    format!("log source `{}`: {message}", source.name),
                ))
            };
            if !names.insert(source.name.clone()) {
                problem("the name is used twice".into());
            }
            if source.name == SELFMON_SOURCE {
                problem("`selfmon` is the source of selfmon's own log; name it otherwise".into());
            }
            let parsing = match Parsing::for_source(source, plugins) {
                Ok(parsing) => match parsing.validate(runtime).await {
                    Ok(()) => Some(parsing),
                    Err(reason) => {
                        problem(format!("`parser_config`: {reason}"));
                        None
                    }
                },
                Err(reason) => {
                    problem(format!("`parser`: {reason}"));
                    None
                }
            };
            if source.poll < std::time::Duration::from_millis(50) {
                problem("`poll` must be at least 50ms".into());
            }
            match source.kind {
                LogSourceKind::File | LogSourceKind::Http if !source.listen.is_empty() => {
                    problem("`listen` is for `kind = \"syslog\"`".into());
                }
                LogSourceKind::File if source.paths.is_empty() => problem("`paths` is empty".into()),
                LogSourceKind::File => {
                    for pattern in &source.paths {
                        if let Err(error) = glob::Pattern::new(pattern) {
                            problem(format!("`paths`: `{pattern}` is not a valid pattern: {error}"));
                        }
                    }
                    if let Some(parsing) = parsing {
                        let mut resolved = source.clone();
                        resolved.paths = source
                            .paths
                            .iter()
                            .map(|p| config.source.resolve(std::path::Path::new(p)).display().to_string())
                            .collect();
                        sources.push(Self { input: Input::File(resolved.paths.clone()), config: resolved, parsing });
                    }
                }
                LogSourceKind::Http | LogSourceKind::Syslog if !source.paths.is_empty() => {
                    problem("`paths` is for `kind = \"file\"`".into());
                }
                LogSourceKind::Http => {
                    sources.extend(parsing.map(|parsing| Self { config: source.clone(), parsing, input: Input::Http }))
                }
                LogSourceKind::Syslog => {
                    if source.listen.is_empty() {
                        problem(
                            "`listen` is empty (for example [\"udp://0.0.0.0:5514\", \"tcp://0.0.0.0:5514\"])".into(),
                        );
                    }
                    let mut addresses = Vec::new();
                    for address in &source.listen {
                        match Listen::parse(address) {
                            Ok(address) => addresses.push(address),
                            Err(reason) => problem(format!("`listen`: {reason}")),
                        }
                    }
                    let input = Input::Syslog(addresses);
                    sources.extend(parsing.map(|parsing| Self { config: source.clone(), parsing, input }));
                }
            }
        }
        if errors.is_empty() { Ok(sources) } else { Err(errors) }
    }

    /// Start receiving: a file source tails, a syslog source binds every address (all or nothing) and listens; an
    /// `http` source is served by the API. Whether anything was started.
    pub async fn start(
        &self,
        runtime: &Arc<Runtime>,
        sink: &Sink,
        tasks: &TaskTracker,
        stop: CancellationToken,
    ) -> Result<bool, BindError> {
        let origin = Origin { source: self.config.name.clone(), service: self.config.service.clone() };
        let parsing = self.parsing.clone();
        match &self.input {
            Input::File(patterns) => {
                let tailer = Tailer {
                    sink: sink.clone(),
                    runtime: runtime.clone(),
                    parsing,
                    origin,
                    patterns: patterns.clone(),
                    poll: self.config.poll,
                };
                tailer.spawn(tasks, stop);
            }
            Input::Syslog(addresses) => {
                let listener = Listener { sink: sink.clone(), runtime: runtime.clone(), parsing, origin };
                listener.spawn(addresses, tasks, stop).await?;
            }
            Input::Http => return Ok(false),
        }
        Ok(true)
    }

    /// Its table and the digests of its parsers: a source whose fingerprint has not changed need not restart.
    pub fn fingerprint(&self, plugins: &Plugins) -> String {
        let digests: Vec<String> = self
            .parsing
            .plugin_names()
            .iter()
            .map(|name| plugins.get(name).map(|p| p.sha256.clone()).unwrap_or_default())
            .collect();
        format!("{:?} {}", self.config, digests.join(","))
    }
}
