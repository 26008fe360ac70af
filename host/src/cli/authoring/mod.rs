//! What plugin authors run: `selfmon plugin new` (a crate ready to build, with a test), `selfmon plugin validate`
//! (what a component is, what it asks for, and what is wrong with it) and `selfmon plugin run` (one call in the same
//! sandbox the server uses).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::alerting::Alerting;
use crate::alerting::data::Stored;
use crate::alerting::engine::severity_name;
use crate::app::host::{load_plugins, runtime_for};
use crate::checks::board::Board;
use crate::config::{CheckConfig, Config, ConfigError, Env, LogSourceConfig, RuleConfig};
use crate::logs::Origin;
use crate::logs::parsing::{Parsing, parse};
use crate::runtime::plugins::{Plugins, load_file};
use crate::runtime::settings::describe_settings;
use crate::runtime::{
    CONTRACT_VERSION, Kind, PluginInfo, PluginSource, RuleRequest, Runtime, Sandbox, ValueKind, accepted_versions,
    capability,
};
use crate::storage::{Storage, to_millis};

/// `selfmon plugin run`'s options beside the file.
#[derive(Debug, Default)]
pub struct RunOptions {
    /// A checker's target (a URL or `host:port`); network access to it is granted.
    pub target: Option<String>,
    /// Further network grants, as a check's `allow`.
    pub allow: Vec<String>,
    /// PEM certificates a checker's TLS trusts besides the system's, as a check's `ca_file`.
    pub ca_file: Option<PathBuf>,
    /// `key=value` settings of the plugin's config.
    pub set: Vec<String>,
    /// `key=value` secrets: `env:NAME`, `file:/path` or the value itself.
    pub secrets: Vec<String>,
    /// The call's deadline.
    pub timeout: Option<Duration>,
}

/// What a command says when it cannot go on; printed as `error: ...`.
type Failure = String;

fn exit(result: Result<ExitCode, Failure>) -> ExitCode {
    result.unwrap_or_else(|message| {
        eprintln!("error: {message}");
        ExitCode::FAILURE
    })
}

/// `selfmon plugin validate FILE`: the plugin's metadata, its world, its imports and the capabilities they mean,
/// and any problem. Failure when it would not load.
pub async fn validate(config: &Config, file: &Path) -> ExitCode {
    exit(validate_file(config, file).await)
}

async fn validate_file(config: &Config, file: &Path) -> Result<ExitCode, Failure> {
    let runtime = runtime_for(config).map_err(|e| e.to_string())?;
    let bytes = read_component(config, file)?;
    println!("file: {} ({} KiB)", file.display(), bytes.len().div_ceil(1024));
    println!(
        "contract: this selfmon implements selfmon:plugin@{} and accepts {}",
        CONTRACT_VERSION,
        accepted_versions()
    );
    let (imports, exports) = match runtime.describe(&bytes).await {
        Ok(described) => described,
        Err(reason) => return Ok(problem(&reason)),
    };
    println!("exports:");
    for export in &exports {
        println!("  {}", printable(export));
    }
    println!("imports (what it may ask of selfmon):");
    let width = imports.iter().map(String::len).max().unwrap_or(0);
    for import in &imports {
        println!("  {:<width$}  {}", printable(import), capability(import));
    }
    let plugin = match runtime.load(&bytes, PluginSource::File(file.to_path_buf())).await {
        Ok(plugin) => plugin,
        Err(reason) => return Ok(problem(&reason)),
    };
    let info = &plugin.info;
    println!(
        "plugin: {} {} ({}), sha256 {}",
        printable(&info.name),
        printable(&info.version),
        plugin.kind().as_str(),
        plugin.sha256
    );
    println!("  {}", printable(&info.description));
    print!("{}", printable(&describe_settings(info)));
    if let Some(builtin) = builtin_names().into_iter().find(|name| *name == info.name) {
        return Ok(problem(&format!(
            "the name `{builtin}` is a built-in plugin's: selfmon refuses a dropped-in file of that name"
        )));
    }
    println!("ok: selfmon loads it as a {}", plugin.kind().as_str());
    Ok(ExitCode::SUCCESS)
}

fn problem(reason: &str) -> ExitCode {
    println!("problem: {}", printable(reason));
    ExitCode::FAILURE
}

/// Text from a plugin with its control characters escaped, so a component cannot drive the terminal.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() && c != '\n' { c.escape_default().to_string() } else { c.to_string() })
        .collect()
}

/// The names of the built-in plugins (`checker-http` is `http`).
fn builtin_names() -> Vec<&'static str> {
    selfmon_plugin_artifacts::BUILTIN
        .iter()
        .map(|(crate_name, _)| crate_name.split_once('-').map_or(*crate_name, |(_, name)| name))
        .collect()
}

/// The bytes of a plugin file within `[plugins] max_file_size`.
fn read_component(config: &Config, file: &Path) -> Result<Vec<u8>, Failure> {
    let max = config.plugins.max_file_size.as_u64();
    let metadata = std::fs::metadata(file).map_err(|e| format!("{}: cannot read: {e}", file.display()))?;
    if !metadata.is_file() {
        return Err(format!("{}: not a file", file.display()));
    }
    if metadata.len() > max {
        return Err(format!("{}: {} bytes is over `[plugins] max_file_size` ({max})", file.display(), metadata.len()));
    }
    std::fs::read(file).map_err(|e| format!("{}: cannot read: {e}", file.display()))
}

/// `selfmon plugin run FILE|NAME`: a checker runs one check and prints the result (exit code as `selfmon check`); a
/// parser parses the lines of stdin and prints one JSON record per line; a rule evaluates once against the
/// configured store and prints its alerts.
pub async fn run(config: Config, file: &Path, options: RunOptions) -> ExitCode {
    exit(run_file(config, file, options).await)
}

async fn run_file(mut config: Config, file: &Path, options: RunOptions) -> Result<ExitCode, Failure> {
    let (runtime, mut plugins) = load_plugins(&config).await.map_err(|e| e.to_string())?;
    // A built-in plugin by its name (`selfmon plugin run tcp`), unless a file of that name is here.
    let builtin = file
        .to_str()
        .filter(|_| !file.is_file())
        .and_then(|name| plugins.get(name))
        .filter(|plugin| matches!(plugin.source, PluginSource::Builtin(_)))
        .map(|plugin| (plugin.info.name.clone(), plugin.kind(), settings(&plugin.info, &options.set)));
    let (name, kind, table) = match builtin {
        Some((name, kind, table)) => (name, kind, table?),
        None => {
            let plugin = load_file(&runtime, file, config.plugins.max_file_size.as_u64()).await.map_err(|reason| {
                let builtins = builtin_names().join(", ");
                format!("{}: {reason} (built-in plugins are named without a path: {builtins})", file.display())
            })?;
            let (name, kind, table) = (plugin.info.name.clone(), plugin.kind(), settings(&plugin.info, &options.set)?);
            plugins.add(plugin);
            (name, kind, table)
        }
    };
    let for_checkers = [
        ("--target", options.target.is_some()),
        ("--allow", !options.allow.is_empty()),
        ("--ca-file", options.ca_file.is_some()),
        ("--secret", !options.secrets.is_empty()),
        ("--timeout", options.timeout.is_some()),
    ];
    if kind != Kind::Checker
        && let Some((option, _)) = for_checkers.iter().find(|(_, given)| *given)
    {
        return Err(format!("`{option}` is for checkers; `{name}` is a {}", kind.as_str()));
    }
    config.log_sources.clear();
    config.rules.clear();
    config.alerting.default_rules = false;
    let env = |variable: &str| std::env::var(variable).ok();
    match kind {
        Kind::Checker => {
            let mut secrets = toml::Table::new();
            for pair in &options.secrets {
                let (key, value) = pair.split_once('=').ok_or("`--secret` takes KEY=VALUE")?;
                secrets.insert(key.to_string(), value.into());
            }
            let mut check = vec![
                ("name", name.clone().into()),
                ("plugin", name.into()),
                ("allow", options.allow.into()),
                ("config", table.into()),
                ("secrets", secrets.into()),
            ];
            if let Some(target) = options.target {
                check.push(("target", target.into()));
            }
            if let Some(ca_file) = options.ca_file {
                let ca_file = std::path::absolute(&ca_file).map_err(|e| format!("`--ca-file`: {e}"))?;
                check.push(("ca_file", ca_file.display().to_string().into()));
            }
            if let Some(timeout) = options.timeout {
                // A timeout may not be longer than the interval, which a single run does not have.
                let interval = timeout.max(Duration::from_secs(30));
                check.push(("timeout", humantime::format_duration(timeout).to_string().into()));
                check.push(("interval", humantime::format_duration(interval).to_string().into()));
            }
            config.checks.clear();
            config.checks.push(toml::Spanned::new(0..0, table_into::<CheckConfig>(check)?));
            run_check(&config, &plugins, &runtime, &env).await
        }
        Kind::Parser => {
            let source = vec![
                ("name", name.clone().into()),
                ("kind", "http".into()),
                ("parser", name.into()),
                ("parser_config", table.into()),
            ];
            run_parser(&table_into::<LogSourceConfig>(source)?, &plugins, &runtime).await
        }
        Kind::Rule => {
            let rule = vec![("name", name.clone().into()), ("plugin", name.into()), ("config", table.into())];
            config.rules.push(toml::Spanned::new(0..0, table_into::<RuleConfig>(rule)?));
            run_rule(&config, &plugins, &runtime, &env).await
        }
    }
}

/// A config table from TOML values: what the command line's options say, checked like the config file.
fn table_into<T: serde::de::DeserializeOwned>(pairs: Vec<(&str, toml::Value)>) -> Result<T, Failure> {
    toml::Value::Table(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
        .try_into()
        .map_err(|e: toml::de::Error| e.to_string())
}

/// `key=value` pairs into a config table: a setting the plugin declares as text takes the value as written;
/// others are TOML (`200`, `true`, `["a", "b"]`), or text when they do not parse.
fn settings(info: &PluginInfo, pairs: &[String]) -> Result<toml::Table, Failure> {
    let mut table = toml::Table::new();
    for pair in pairs {
        let (key, value) = pair.split_once('=').ok_or_else(|| format!("`--set {pair}` is not KEY=VALUE"))?;
        let key = key.trim();
        let text = info.config.iter().any(|s| s.name == key && matches!(s.kind, ValueKind::Text));
        let parsed = (!text)
            .then(|| toml::from_str::<toml::Table>(&format!("v = {value}")).ok().and_then(|mut t| t.remove("v")))
            .flatten();
        table.insert(key.to_string(), parsed.unwrap_or_else(|| toml::Value::String(value.to_string())));
    }
    Ok(table)
}

/// Config problems as one failure, a line each (the file is the command line's, so only the messages).
fn messages(errors: Vec<ConfigError>) -> Failure {
    errors.iter().map(|e| e.message.as_str()).collect::<Vec<_>>().join("\n")
}

async fn run_check(config: &Config, plugins: &Plugins, runtime: &Runtime, env: &Env) -> Result<ExitCode, Failure> {
    let checks = crate::checks::build(config, plugins, runtime, env).await.map_err(messages)?;
    let check = checks.first().ok_or("no check was built")?;
    let run = check.run(runtime).await;
    println!(
        "{}: {} - {} ({:.1} ms)",
        run.check,
        run.health.as_str(),
        printable(&run.summary),
        run.duration.as_secs_f64() * 1000.0
    );
    for (key, value) in &run.details {
        println!("  {}: {}", printable(key), printable(value));
    }
    for metric in &run.metrics {
        let labels: Vec<String> = metric.labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        println!("  metric {}{{{}}} {}", printable(&metric.name), printable(&labels.join(",")), metric.value);
    }
    if let Some(error) = &run.error {
        println!("  error: {}", printable(error));
    }
    Ok(ExitCode::from(u8::try_from(run.health.nagios_code()).unwrap_or(3)))
}

async fn run_parser(source: &LogSourceConfig, plugins: &Plugins, runtime: &Runtime) -> Result<ExitCode, Failure> {
    let parsing = Parsing::for_source(source, plugins)?;
    parsing.validate(runtime).await.map_err(|reason| format!("`--set`: {reason}"))?;
    // Every line, bytes that are not UTF-8 replaced, as the file tailer reads them.
    let mut input = Vec::new();
    std::io::stdin().lock().read_to_end(&mut input).map_err(|e| format!("cannot read stdin: {e}"))?;
    let lines: Vec<String> = input.split(|b| *b == b'\n').map(|l| String::from_utf8_lossy(l).into_owned()).collect();
    let lines = match lines.split_last() {
        Some((last, rest)) if last.is_empty() => rest.to_vec(),
        _ => lines,
    };
    let origin = Origin { source: source.name.clone(), service: None };
    let (records, counts) = parse(runtime, &parsing, &origin, lines, SystemTime::now()).await;
    for record in &records {
        let fields = record.fields.as_deref().and_then(|f| serde_json::from_str::<serde_json::Value>(f).ok());
        let line = serde_json::json!({
            "timestamp": humantime::format_rfc3339_nanos(record.ts).to_string(),
            "level": record.level,
            "service": record.service,
            "logger": record.logger,
            "message": record.message,
            "trace_id": record.trace_id,
            "span_id": record.span_id,
            "correlation_id": record.correlation_id,
            "user_id": record.user_id,
            "fields": fields,
            "parsed": record.parsed,
            "error": record.error,
        });
        println!("{line}");
    }
    eprintln!("{} records, {} kept raw", records.len(), records.iter().filter(|r| !r.parsed).count());
    Ok(if counts.parser_failures > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

async fn run_rule(config: &Config, plugins: &Plugins, runtime: &Runtime, env: &Env) -> Result<ExitCode, Failure> {
    let alerting = Alerting::build(config, plugins, runtime, env).await.map_err(messages)?;
    let spec = alerting.rules.first().ok_or("no rule was built")?;
    let path = config.source.resolve(&config.storage.path);
    if !path.is_file() {
        return Err(format!(
            "there is no store at {} (`[storage] path`): a rule reads what a running selfmon stored",
            path.display()
        ));
    }
    let key = config.storage.key(&config.source.base_dir)?;
    let storage = Storage::open_with_key(&path, key).map_err(|e| e.to_string())?;
    let board = Arc::new(Board::default());
    for check in &config.checks {
        let check = check.get_ref();
        board.register(
            &check.name,
            &check.plugin,
            check.enabled,
            check.interval.unwrap_or_default(),
            &check.depends_on,
        );
    }
    for run in storage.latest_runs().await.map_err(|e| e.to_string())? {
        board.record(&run);
    }
    let now = SystemTime::now();
    let data = Arc::new(Stored { storage: storage.clone(), board, now });
    let sandbox = Sandbox { data: Some(data), ..spec.sandbox.clone() };
    let request = RuleRequest { name: spec.name.clone(), config: spec.config.clone(), now_ms: to_millis(now) };
    let evaluated = runtime.evaluate(&spec.plugin, &sandbox, &request).await;
    let _ = storage.close().await;
    let alerts =
        evaluated.map_err(|e| e.to_string())?.map_err(|reason| format!("the rule could not evaluate: {reason}"))?;
    if alerts.is_empty() {
        println!("{}: no alert holds now", spec.name);
    }
    for alert in alerts {
        let labels: Vec<String> = alert.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!(
            "{} {}: {} [{}]",
            severity_name(alert.severity),
            printable(&alert.name),
            printable(&alert.summary),
            printable(&labels.join(", "))
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Names a scaffolded crate may not have: cargo's reserved ones and Rust's keywords.
const RESERVED: [&str; 12] =
    ["test", "std", "core", "alloc", "proc-macro", "self", "super", "crate", "type", "fn", "mod", "use"];

/// `selfmon plugin new NAME --kind KIND`: a crate in `dir/NAME` with the plugin, a test, and the toolchain selfmon
/// is built with. It depends on `selfmon-sdk` of this selfmon's version, or with `sdk` on the SDK in that folder
/// (a selfmon checkout's `sdk/`).
pub fn scaffold(name: &str, kind: Kind, dir: &Path, sdk: Option<PathBuf>) -> ExitCode {
    exit(make_crate(name, kind, dir, sdk))
}

fn make_crate(name: &str, kind: Kind, dir: &Path, sdk: Option<PathBuf>) -> Result<ExitCode, Failure> {
    let valid = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid || RESERVED.contains(&name) {
        return Err(format!(
            "`{name}` cannot be a plugin's name: up to 64 lowercase letters, digits and `-`, starting with a letter, \
             and not one of {}",
            RESERVED.join(", ")
        ));
    }
    if builtin_names().contains(&name) {
        return Err(format!("`{name}` is a built-in plugin's name: selfmon would refuse the file"));
    }
    let (dependency, against) = match sdk {
        // The SDK is versioned with selfmon: the one this selfmon's plugins are built with.
        None => {
            let version = env!("CARGO_PKG_VERSION");
            (format!("\"{version}\""), format!("selfmon-sdk {version} from crates.io"))
        }
        Some(sdk) => {
            let manifest = std::fs::read_to_string(sdk.join("Cargo.toml")).unwrap_or_default();
            if !manifest.lines().any(|line| line.trim() == "name = \"selfmon-sdk\"") {
                return Err(format!(
                    "{} is not selfmon's sdk/ folder (its Cargo.toml is not `selfmon-sdk`)",
                    sdk.display()
                ));
            }
            let sdk = sdk.canonicalize().map_err(|e| format!("{}: {e}", sdk.display()))?;
            let path = sdk.to_str().ok_or_else(|| format!("{}: the path is not UTF-8", sdk.display()))?;
            // A TOML string, escaped (a Windows path's backslashes).
            (format!("{{ path = {} }}", toml::Value::String(path.to_string())), sdk.display().to_string())
        }
    };
    let root = dir.join(name);
    if root.exists() {
        return Err(format!("{} exists already", root.display()));
    }
    let type_name: String = name
        .split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
        })
        .chain(std::iter::once("Plugin".to_string()))
        .collect();
    let file = name.replace('-', "_");
    let fill = |template: &str| {
        template
            .replace("{{name}}", name)
            .replace("{{file}}", &file)
            .replace("{{type}}", &type_name)
            .replace("{{sdk}}", &dependency)
    };
    let source = match kind {
        Kind::Checker => include_str!("templates/checker.rs.in"),
        Kind::Parser => include_str!("templates/parser.rs.in"),
        Kind::Rule => include_str!("templates/rule.rs.in"),
    };
    let files = [
        ("Cargo.toml", fill(include_str!("templates/Cargo.toml.in"))),
        ("rust-toolchain.toml", include_str!("../../../../rust-toolchain.toml").to_string()),
        ("src/lib.rs", fill(source)),
    ];
    for (path, text) in &files {
        let path = root.join(path);
        path.parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&path, text))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    println!("Made {} ({} `{name}`, against {against})", root.display(), kind.as_str());
    println!("  cd {} && cargo test && cargo build --release --target wasm32-wasip2", root.display());
    println!("  selfmon plugin validate target/wasm32-wasip2/release/{file}.wasm");
    Ok(ExitCode::SUCCESS)
}
