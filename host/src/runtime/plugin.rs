//! A loaded plugin (its component checked against the contract, pre-instantiated, and what it says about itself),
//! and the calls selfmon makes into it: `info` at load, a checker's `validate` and `check`, a parser's `validate` and
//! `parse`, a rule's `validate` and `evaluate`, and `describe` for `selfmon plugin validate`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::Component;

use super::bindings::{
    self, Alert, CONTRACT_VERSION, CheckRequest, CheckResult, ParseOutcome, ParseRequest, PluginInfo, RuleRequest,
};
use super::state::{CallLabels, PluginState};
use super::{CallError, Grants, Redactor, Runtime, Sandbox, TlsConfig};

/// Where a plugin came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginSource {
    /// Compiled into selfmon, from the crate of this name in `plugins/`.
    Builtin(&'static str),
    /// Dropped into the plugins folder.
    File(PathBuf),
}

impl std::fmt::Display for PluginSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Builtin(_) => f.write_str("built-in"),
            Self::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// What a plugin does: the world of the contract it implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Checker,
    Parser,
    Rule,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Checker => "checker",
            Self::Parser => "parser",
            Self::Rule => "rule",
        }
    }
}

/// A plugin ready to be called.
pub struct Plugin {
    pub info: PluginInfo,
    pub source: PluginSource,
    /// SHA-256 of the component, hex.
    pub sha256: String,
    /// Size of the component in bytes.
    pub size: usize,
    exports: Exports,
}

enum Exports {
    Checker(bindings::CheckerPre<PluginState>),
    Parser(bindings::parser::ParserPre<PluginState>),
    Rule(bindings::rule::RulePre<PluginState>),
}

impl Plugin {
    pub fn kind(&self) -> Kind {
        self.exports.kind()
    }
}

impl Exports {
    fn kind(&self) -> Kind {
        match self {
            Exports::Checker(_) => Kind::Checker,
            Exports::Parser(_) => Kind::Parser,
            Exports::Rule(_) => Kind::Rule,
        }
    }
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin").field("name", &self.info.name).field("source", &self.source).finish()
    }
}

/// Limits of the calls selfmon makes on its own account (`info` at load time).
const INFO_TIMEOUT: Duration = Duration::from_secs(5);
const INFO_MEMORY: usize = 64 << 20;

impl Runtime {
    /// Load a component: compile it (or take it from the cache), check it against the contract's worlds, and ask it
    /// for its info. The error says what is wrong, for the operator.
    pub async fn load(&self, bytes: &[u8], source: PluginSource) -> Result<Plugin, String> {
        let (cache, engine, owned) = (self.cache.clone(), self.engine.clone(), bytes.to_vec());
        let (component, sha256) = tokio::task::spawn_blocking(move || cache.component(&engine, &owned))
            .await
            .map_err(|e| format!("compiling failed: {e}"))?
            .map_err(|e| format!("not a WebAssembly component: {}", root_cause(&e)))?;
        let kind = self.check_contract(&component)?;
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| format!("imports something selfmon does not provide: {}", root_cause(&e)))?;
        let sandbox = Sandbox {
            labels: CallLabels { plugin: Arc::from(source_label(&source)), check: None },
            grants: Arc::new(Grants::default()),
            redactor: Redactor::default(),
            tls: TlsConfig::system(),
            memory_limit: INFO_MEMORY,
            timeout: INFO_TIMEOUT,
            data: None,
        };
        let (exports, info) = match kind {
            Kind::Checker => {
                let pre = bindings::CheckerPre::new(instance_pre)
                    .map_err(|e| format!("not a usable checker: {}", root_cause(&e)))?;
                let info = self
                    .call(&pre, &sandbox, async |store, checker| {
                        checker.selfmon_plugin_health_check().call_info(store).await
                    })
                    .await;
                (Exports::Checker(pre), info)
            }
            Kind::Parser => {
                let pre = bindings::parser::ParserPre::new(instance_pre)
                    .map_err(|e| format!("not a usable parser: {}", root_cause(&e)))?;
                let info = self
                    .call(&pre, &sandbox, async |store, parser| {
                        parser.selfmon_plugin_log_parser().call_info(store).await
                    })
                    .await;
                (Exports::Parser(pre), info)
            }
            Kind::Rule => {
                let pre = bindings::rule::RulePre::new(instance_pre)
                    .map_err(|e| format!("not a usable rule: {}", root_cause(&e)))?;
                let info = self
                    .call(&pre, &sandbox, async |store, rule| rule.selfmon_plugin_alert_rule().call_info(store).await)
                    .await;
                (Exports::Rule(pre), info)
            }
        };
        let info = info.map_err(|e| format!("`info` failed: {e}"))?;
        check_info(&info)?;
        Ok(Plugin { info, source, sha256, size: bytes.len(), exports })
    }

    /// Ask a plugin whether a configured check's request is acceptable. The outer error is a call that failed; the
    /// inner one is the plugin's own verdict.
    pub async fn validate(
        &self,
        plugin: &Plugin,
        sandbox: &Sandbox,
        request: &CheckRequest,
    ) -> Result<Result<(), String>, CallError> {
        let pre = checker(plugin)?;
        self.call(pre, sandbox, async |store, checker| {
            checker.selfmon_plugin_health_check().call_validate(store, request).await
        })
        .await
    }

    /// Run one check. The outer error is a call that failed; the inner one is a check the plugin could not carry out.
    pub async fn check(
        &self,
        plugin: &Plugin,
        sandbox: &Sandbox,
        request: &CheckRequest,
    ) -> Result<Result<CheckResult, String>, CallError> {
        let pre = checker(plugin)?;
        self.call(pre, sandbox, async |store, checker| {
            checker.selfmon_plugin_health_check().call_check(store, request).await
        })
        .await
    }

    /// Ask a parser whether a source's `parser_config` is acceptable. The outer error is a call that failed; the
    /// inner one is the parser's own verdict.
    pub async fn validate_parser(
        &self,
        plugin: &Plugin,
        sandbox: &Sandbox,
        config: &Vec<(String, String)>,
    ) -> Result<Result<(), String>, CallError> {
        let Exports::Parser(pre) = &plugin.exports else {
            return Err(CallError::Instantiate(format!("`{}` is not a parser plugin", plugin.info.name)));
        };
        self.call(pre, sandbox, async |store, parser| {
            parser.selfmon_plugin_log_parser().call_validate(store, config).await
        })
        .await
    }

    /// Parse a batch of lines. One outcome per line comes back (the SDK makes sure; a plugin that answers otherwise
    /// is treated as having failed).
    pub async fn parse(
        &self,
        plugin: &Plugin,
        sandbox: &Sandbox,
        request: &ParseRequest,
    ) -> Result<Vec<ParseOutcome>, CallError> {
        let Exports::Parser(pre) = &plugin.exports else {
            return Err(CallError::Instantiate(format!("`{}` is not a parser plugin", plugin.info.name)));
        };
        let outcomes = self
            .call(pre, sandbox, async |store, parser| {
                parser.selfmon_plugin_log_parser().call_parse(store, request).await
            })
            .await?;
        if outcomes.len() == request.lines.len() {
            Ok(outcomes)
        } else {
            Err(CallError::Trap(format!(
                "the parser answered {} outcomes for {} lines",
                outcomes.len(),
                request.lines.len()
            )))
        }
    }

    /// Ask a rule whether its config is acceptable. The outer error is a call that failed; the inner one is the
    /// rule's own verdict.
    pub async fn validate_rule(
        &self,
        plugin: &Plugin,
        sandbox: &Sandbox,
        config: &Vec<(String, String)>,
    ) -> Result<Result<(), String>, CallError> {
        let pre = rule(plugin)?;
        self.call(pre, sandbox, async |store, rule| rule.selfmon_plugin_alert_rule().call_validate(store, config).await)
            .await
    }

    /// Evaluate a rule once; its queries are answered by `sandbox.data`. The inner error is the rule's own report
    /// that it could not evaluate.
    pub async fn evaluate(
        &self,
        plugin: &Plugin,
        sandbox: &Sandbox,
        request: &RuleRequest,
    ) -> Result<Result<Vec<Alert>, String>, CallError> {
        let pre = rule(plugin)?;
        self.call(pre, sandbox, async |store, rule| {
            rule.selfmon_plugin_alert_rule().call_evaluate(store, request).await
        })
        .await
    }

    /// A component's imports and exports, when the bytes are a component at all: what `selfmon plugin validate`
    /// shows even of a plugin that does not load.
    pub async fn describe(&self, bytes: &[u8]) -> Result<(Vec<String>, Vec<String>), String> {
        let (cache, engine, owned) = (self.cache.clone(), self.engine.clone(), bytes.to_vec());
        let (component, _) = tokio::task::spawn_blocking(move || cache.component(&engine, &owned))
            .await
            .map_err(|e| format!("compiling failed: {e}"))?
            .map_err(|e| format!("not a WebAssembly component: {}", root_cause(&e)))?;
        let ty = component.component_type();
        Ok((
            ty.imports(&self.engine).map(|(name, _)| name.to_string()).collect(),
            ty.exports(&self.engine).map(|(name, _)| name.to_string()).collect(),
        ))
    }

    /// Whether a component was built for this host's contract and world, said in the plugin author's terms before
    /// wasmtime's own type checking (whose messages name missing imports, not versions).
    fn check_contract(&self, component: &Component) -> Result<Kind, String> {
        let ty = component.component_type();
        let imports: Vec<String> = ty.imports(&self.engine).map(|(name, _)| name.to_string()).collect();
        let exports: Vec<String> = ty.exports(&self.engine).map(|(name, _)| name.to_string()).collect();
        for name in imports.iter().chain(&exports) {
            if let Some((interface, version)) = name.strip_prefix("selfmon:plugin/").and_then(|n| n.split_once('@'))
                && !compatible(version)
            {
                return Err(format!(
                    "built against contract version {version} (`selfmon:plugin/{interface}`); this selfmon implements \
                     {CONTRACT_VERSION} and accepts {} (rebuild the plugin against a matching selfmon-sdk)",
                    accepted_versions()
                ));
            }
        }
        let exported = |interface: &str| exports.iter().any(|e| e.starts_with(&format!("selfmon:plugin/{interface}@")));
        if exported("health-check") {
            return Ok(Kind::Checker);
        }
        if exported("log-parser") {
            return Ok(Kind::Parser);
        }
        if exported("alert-rule") {
            return Ok(Kind::Rule);
        }
        let expected = format!("selfmon:plugin/health-check@{CONTRACT_VERSION}");
        Err(if exports.is_empty() {
            format!("exports nothing; a checker exports `{expected}` (a parser `log-parser`, a rule `alert-rule`)")
        } else {
            format!("exports {} but not `{expected}`", exports.join(", "))
        })
    }
}

/// A plugin's checker exports, or the error a check gets for naming a plugin of another kind.
fn checker(plugin: &Plugin) -> Result<&bindings::CheckerPre<PluginState>, CallError> {
    match &plugin.exports {
        Exports::Checker(pre) => Ok(pre),
        other => {
            Err(CallError::Instantiate(format!("`{}` is a {}, not a checker", plugin.info.name, other.kind().as_str())))
        }
    }
}

/// A plugin's rule exports.
fn rule(plugin: &Plugin) -> Result<&bindings::rule::RulePre<PluginState>, CallError> {
    match &plugin.exports {
        Exports::Rule(pre) => Ok(pre),
        other => {
            Err(CallError::Instantiate(format!("`{}` is a {}, not a rule", plugin.info.name, other.kind().as_str())))
        }
    }
}

fn source_label(source: &PluginSource) -> String {
    match source {
        PluginSource::Builtin(name) => (*name).to_string(),
        PluginSource::File(path) => {
            path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into())
        }
    }
}

/// Whether a plugin's contract version can run here: the same major and minor (any patch) while the major is 0.
fn compatible(version: &str) -> bool {
    let major_minor = |v: &str| v.split('.').take(2).map(str::to_string).collect::<Vec<_>>();
    major_minor(version) == major_minor(CONTRACT_VERSION)
}

/// What an import lets a plugin do, in an operator's words.
pub fn capability(import: &str) -> &'static str {
    let interface = import.split('@').next().unwrap_or(import);
    match interface {
        "selfmon:plugin/types" => "the contract's types (no capability)",
        "selfmon:plugin/host" => "write records to selfmon's log",
        "selfmon:plugin/query" => "read stored metrics, log counts and check states (read-only)",
        "selfmon:plugin/tls" => "TLS handshakes made by selfmon, only with granted targets",
        "selfmon:plugin/dns" => "DNS lookups made by selfmon, only of granted names through granted servers",
        "wasi:http/outgoing-handler" => "HTTP(S) requests, only to the targets its check is granted",
        "wasi:sockets/tcp" | "wasi:sockets/tcp-create-socket" => "TCP connections, only to granted targets",
        "wasi:sockets/ip-name-lookup" => "name lookups, only of granted hosts",
        "wasi:sockets/udp" | "wasi:sockets/udp-create-socket" => "UDP sockets (every address is refused)",
        "wasi:sockets/network" | "wasi:sockets/instance-network" => "the network handle the socket calls need",
        "wasi:clocks/wall-clock" | "wasi:clocks/monotonic-clock" => "clocks",
        "wasi:random/random" | "wasi:random/insecure" | "wasi:random/insecure-seed" => "random numbers",
        "wasi:filesystem/types" | "wasi:filesystem/preopens" => "files (none are given: no folder is opened to it)",
        "wasi:cli/environment" => "environment variables and arguments (none are given)",
        "wasi:cli/exit" => "exiting (ends the call as a failure)",
        "wasi:cli/stdin" => "standard input (always empty)",
        "wasi:cli/stdout" | "wasi:cli/stderr" => "standard output and error (into selfmon's log, capped)",
        _ if interface.starts_with("wasi:cli/terminal-") => "terminal queries (there is no terminal)",
        _ if interface.starts_with("wasi:io/") => "streams and polling, for the interfaces listed here",
        _ if interface.starts_with("wasi:http/") => "HTTP types, for its requests",
        _ => "not provided by selfmon: the plugin cannot load",
    }
}

/// The contract versions this host accepts, as people write them: `0.1.x`.
pub fn accepted_versions() -> String {
    let mut parts = CONTRACT_VERSION.split('.');
    format!("{}.{}.x", parts.next().unwrap_or("0"), parts.next().unwrap_or("0"))
}

/// The innermost message of an error chain: wasmtime wraps the useful part in context.
fn root_cause(error: &wasmtime::Error) -> String {
    error.chain().last().map_or_else(|| error.to_string(), ToString::to_string)
}

/// A plugin's self-description must be usable: operators type its name, and its defaults must be JSON.
fn check_info(info: &PluginInfo) -> Result<(), String> {
    let valid_name = info.name.len() <= 64
        && info.name.starts_with(|c: char| c.is_ascii_lowercase())
        && info.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid_name {
        return Err(format!("its name `{}` is not lowercase letters, digits, `-` and `_`", info.name));
    }
    if info.version.trim().is_empty() {
        return Err(format!("plugin `{}` gives no version", info.name));
    }
    let mut seen = std::collections::BTreeSet::new();
    for setting in info.config.iter().chain(&info.secrets) {
        if !seen.insert(setting.name.as_str()) {
            return Err(format!("plugin `{}` declares `{}` twice", info.name, setting.name));
        }
        if let Some(default) = &setting.default
            && serde_json::from_str::<serde_json::Value>(default).is_err()
        {
            return Err(format!("plugin `{}`: the default of `{}` is not JSON", info.name, setting.name));
        }
    }
    Ok(())
}
