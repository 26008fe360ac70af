//! What plugin authors run: `selfmon plugin new` (a crate ready to build, with a test), `selfmon plugin validate`
//! (what a component is, what it asks for, and what is wrong with it) and `selfmon plugin run` (one call in the same
//! sandbox the server uses).

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use crate::config::{CheckConfig, Config, LogSourceConfig, RuleConfig};

/// A config table from TOML values: what the command line's options say, checked like the config file.
fn table_into<T: serde::de::DeserializeOwned>(pairs: Vec<(&str, toml::Value)>) -> Result<T, String> {
    toml::Value::Table(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
        .try_into()
        .map_err(|e| e.to_string())
}
use crate::runtime::{Kind, PluginSource, Runtime};

/// `selfmon plugin run`'s options beside the file.
#[derive(Debug, Default)]
pub struct RunOptions {
    /// A checker's target (a URL or `host:port`); network access to it is granted.
    pub target: Option<String>,
    /// Further network grants, as a check's `allow`.
    pub allow: Vec<String>,
    /// `key=value` settings; values are TOML (`200`, `true`, `["a"]`) or else text.
    pub config: Vec<String>,
    /// `key=value` secrets: `env:NAME`, `file:/path` or the value itself.
    pub secrets: Vec<String>,
    /// The call's deadline.
    pub timeout: Option<std::time::Duration>,
}

/// `selfmon plugin validate FILE`: the plugin's metadata, its world, its imports and the capabilities they mean,
/// and any problem. Failure when it would not load.
pub async fn validate(config: &Config, file: &Path) -> ExitCode {
    let runtime = match crate::runtime_for(config) {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let max = config.plugins.max_file_size.as_u64();
    let bytes = match std::fs::metadata(file)
        .and_then(|m| if m.len() > max { Ok(None) } else { std::fs::read(file).map(Some) })
    {
        Ok(Some(bytes)) => bytes,
        Ok(None) => {
            eprintln!("{}: over the limit of {max} bytes (`[plugins] max_file_size`)", file.display());
            return ExitCode::FAILURE;
        }
        Err(error) => {
            eprintln!("{}: cannot read: {error}", file.display());
            return ExitCode::FAILURE;
        }
    };
    println!("file: {} ({} KiB)", file.display(), bytes.len().div_ceil(1024));
    println!(
        "contract: this selfmon implements selfmon:plugin@{} and accepts {}",
        crate::runtime::CONTRACT_VERSION,
        crate::runtime::accepted_versions()
    );
    let (imports, exports) = match runtime.describe(&bytes).await {
        Ok(described) => described,
        Err(reason) => {
            println!("problem: {reason}");
            return ExitCode::FAILURE;
        }
    };
    println!("exports:");
    for export in &exports {
        println!("  {export}");
    }
    println!("imports (what it may ask of selfmon):");
    let width = imports.iter().map(String::len).max().unwrap_or(0);
    for import in &imports {
        println!("  {import:<width$}  {}", crate::runtime::capability(import));
    }
    match runtime.load(&bytes, PluginSource::File(file.to_path_buf())).await {
        Ok(plugin) => {
            let info = &plugin.info;
            println!("plugin: {} {} ({}), sha256 {}", info.name, info.version, plugin.kind().as_str(), plugin.sha256);
            println!("  {}", info.description);
            print!("{}", crate::cli::describe_settings(info));
            println!("ok: selfmon loads it as a {}", plugin.kind().as_str());
            ExitCode::SUCCESS
        }
        Err(reason) => {
            println!("problem: {reason}");
            ExitCode::FAILURE
        }
    }
}

/// `selfmon plugin run FILE`: a checker runs one check and prints the result (exit code as `selfmon check`); a
/// parser parses the lines of stdin and prints one JSON record per line; a rule evaluates once against the
/// configured store and prints its alerts.
pub async fn run(mut config: Config, file: &Path, options: RunOptions) -> ExitCode {
    let (runtime, mut plugins) = match crate::load_plugins(&config).await {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let plugin = match crate::plugins::load_file(&runtime, file, config.plugins.max_file_size.as_u64()).await {
        Ok(plugin) => plugin,
        Err(reason) => {
            eprintln!("error: {}: {reason}", file.display());
            return ExitCode::FAILURE;
        }
    };
    let (name, kind) = (plugin.info.name.clone(), plugin.kind());
    plugins.replace(plugin);
    let table = match settings(&options.config) {
        Ok(table) => table,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::FAILURE;
        }
    };
    config.log_sources.clear();
    config.rules.clear();
    config.alerting.default_rules = false;
    let env = |variable: &str| std::env::var(variable).ok();
    match kind {
        Kind::Checker => {
            let mut secrets = BTreeMap::new();
            for pair in &options.secrets {
                let Some((key, value)) = pair.split_once('=') else {
                    eprintln!("error: `--secret {pair}` is not key=value");
                    return ExitCode::FAILURE;
                };
                secrets.insert(key.to_string(), toml::Value::String(value.to_string()));
            }
            let mut check = vec![
                ("name", name.clone().into()),
                ("plugin", name.clone().into()),
                ("allow", options.allow.clone().into()),
                ("config", table.into()),
                ("secrets", toml::Value::Table(secrets.into_iter().collect())),
            ];
            if let Some(target) = &options.target {
                check.push(("target", target.clone().into()));
            }
            if let Some(timeout) = options.timeout {
                check.push(("timeout", humantime::format_duration(timeout).to_string().into()));
            }
            config.checks.clear();
            match table_into::<CheckConfig>(check) {
                Ok(parsed) => config.checks.push(toml::Spanned::new(0..0, parsed)),
                Err(error) => {
                    eprintln!("error: {error}");
                    return ExitCode::FAILURE;
                }
            }
            run_check(&config, &plugins, &runtime, &env).await
        }
        Kind::Parser => {
            let source = vec![
                ("name", name.clone().into()),
                ("kind", "http".into()),
                ("parser", name.clone().into()),
                ("parser_config", table.into()),
            ];
            match table_into::<LogSourceConfig>(source) {
                Ok(source) => run_parser(source, &plugins, &runtime).await,
                Err(error) => {
                    eprintln!("error: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Kind::Rule => {
            let rule = vec![("name", name.clone().into()), ("plugin", name.clone().into()), ("config", table.into())];
            match table_into::<RuleConfig>(rule) {
                Ok(rule) => config.rules.push(toml::Spanned::new(0..0, rule)),
                Err(error) => {
                    eprintln!("error: {error}");
                    return ExitCode::FAILURE;
                }
            }
            run_rule(&config, &plugins, &runtime, &env).await
        }
    }
}

/// `key=value` pairs into a config table: values in TOML where they parse (`200`, `true`, `["a", "b"]`), text
/// otherwise.
fn settings(pairs: &[String]) -> Result<toml::Table, String> {
    let mut table = toml::Table::new();
    for pair in pairs {
        let (key, value) = pair.split_once('=').ok_or_else(|| format!("`--set {pair}` is not key=value"))?;
        let value = toml::from_str::<toml::Table>(&format!("v = {value}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.to_string()));
        table.insert(key.trim().to_string(), value);
    }
    Ok(table)
}

async fn run_check(
    config: &Config,
    plugins: &crate::plugins::Plugins,
    runtime: &Runtime,
    env: &crate::checks::Env,
) -> ExitCode {
    let checks = match crate::checks::build(config, plugins, runtime, env).await {
        Ok(checks) => checks,
        Err(errors) => {
            for error in errors {
                eprintln!("error: {}", error.message);
            }
            return ExitCode::FAILURE;
        }
    };
    let Some(check) = checks.first() else { return ExitCode::FAILURE };
    let run = check.run(runtime).await;
    println!(
        "{}: {} - {} ({:.1} ms)",
        run.check,
        run.health.as_str(),
        run.summary,
        run.duration.as_secs_f64() * 1000.0
    );
    for (key, value) in &run.details {
        println!("  {key}: {value}");
    }
    for metric in &run.metrics {
        let labels: Vec<String> = metric.labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        println!("  metric {}{{{}}} {}", metric.name, labels.join(","), metric.value);
    }
    if let Some(error) = &run.error {
        println!("  error: {error}");
    }
    ExitCode::from(u8::try_from(run.health.nagios_code()).unwrap_or(3))
}

async fn run_parser(source: LogSourceConfig, plugins: &crate::plugins::Plugins, runtime: &Runtime) -> ExitCode {
    let parser_config =
        source.parser_config.iter().map(|(k, v)| (k.clone(), crate::checks::toml_to_json(v).to_string())).collect();
    let parsing = match crate::logs::Parsing::resolve(source.parser(), parser_config, plugins) {
        Ok(parsing) => parsing,
        Err(reason) => {
            eprintln!("error: {reason}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(reason) = parsing.validate(runtime).await {
        eprintln!("error: `--set`: {reason}");
        return ExitCode::FAILURE;
    }
    let lines: Vec<String> = std::io::stdin().lock().lines().map_while(Result::ok).collect();
    let origin = crate::logs::Origin { source: source.name.clone(), service: None };
    let (records, counts) = crate::logs::parse(runtime, &parsing, &origin, lines, SystemTime::now()).await;
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
            "user_id": record.user_id,
            "fields": fields,
            "parsed": record.parsed,
            "error": record.error,
        });
        println!("{line}");
    }
    eprintln!("{} records, {} kept raw", records.len(), records.iter().filter(|r| !r.parsed).count());
    if counts.parser_failures > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

async fn run_rule(
    config: &Config,
    plugins: &crate::plugins::Plugins,
    runtime: &Runtime,
    env: &crate::checks::Env,
) -> ExitCode {
    let alerting = match crate::alerting::Alerting::build(config, plugins, runtime, env).await {
        Ok(alerting) => alerting,
        Err(errors) => {
            for error in errors {
                eprintln!("error: {}", error.message);
            }
            return ExitCode::FAILURE;
        }
    };
    let Some(spec) = alerting.rules.first() else { return ExitCode::FAILURE };
    let storage = match crate::storage::Storage::open(&config.source.resolve(&config.storage.path)) {
        Ok(storage) => storage,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let board = std::sync::Arc::new(crate::health::Board::default());
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
    if let Ok(runs) = storage.latest_runs().await {
        for run in runs {
            board.record(&run);
        }
    }
    let now = SystemTime::now();
    let data = std::sync::Arc::new(crate::alerting::data::Stored { storage: storage.clone(), board, now });
    let sandbox = crate::runtime::Sandbox { data: Some(data), ..spec.sandbox.clone() };
    let request = crate::runtime::RuleRequest {
        name: spec.name.clone(),
        config: spec.config.clone(),
        now_ms: crate::storage::to_millis(now),
    };
    let code = match runtime.evaluate(&spec.plugin, &sandbox, &request).await {
        Ok(Ok(alerts)) if alerts.is_empty() => {
            println!("{}: no alert holds now", spec.name);
            ExitCode::SUCCESS
        }
        Ok(Ok(alerts)) => {
            for alert in alerts {
                let labels: Vec<String> = alert.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                println!("{:?} {}: {} [{}]", alert.severity, alert.name, alert.summary, labels.join(", "));
            }
            ExitCode::SUCCESS
        }
        Ok(Err(reason)) => {
            eprintln!("error: the rule could not evaluate: {reason}");
            ExitCode::FAILURE
        }
        Err(failure) => {
            eprintln!("error: {failure}");
            ExitCode::FAILURE
        }
    };
    let _ = storage.close().await;
    code
}

/// `selfmon plugin new NAME --kind KIND`: a crate in `dir/NAME` with the plugin, a test, and the toolchain selfmon
/// is built with; `sdk` is the `sdk/` folder of a selfmon checkout.
pub fn scaffold(name: &str, kind: Kind, dir: &Path, sdk: Option<PathBuf>) -> ExitCode {
    let valid = !name.is_empty()
        && name.len() <= 48
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        eprintln!("error: `{name}` is not a plugin name: lowercase letters, digits and `-`, starting with a letter");
        return ExitCode::FAILURE;
    }
    let Some(sdk) = sdk.or_else(|| {
        let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk");
        bundled.join("Cargo.toml").is_file().then_some(bundled)
    }) else {
        eprintln!("error: pass `--sdk PATH` to the `sdk/` folder of a selfmon checkout");
        return ExitCode::FAILURE;
    };
    let sdk = match sdk.canonicalize() {
        Ok(sdk) if sdk.join("Cargo.toml").is_file() => sdk,
        _ => {
            eprintln!("error: {} is not selfmon's sdk/ folder (no Cargo.toml)", sdk.display());
            return ExitCode::FAILURE;
        }
    };
    let root = dir.join(name);
    if root.exists() {
        eprintln!("error: {} exists already", root.display());
        return ExitCode::FAILURE;
    }
    let type_name: String = name
        .split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
        })
        .collect();
    let fill = |template: &str| {
        template
            .replace("{{name}}", name)
            .replace("{{crate}}", name)
            .replace("{{file}}", &name.replace('-', "_"))
            .replace("{{type}}", &type_name)
            .replace("{{sdk}}", &sdk.display().to_string().replace('\\', "/"))
    };
    let source = match kind {
        Kind::Checker => include_str!("templates/checker.rs.in"),
        Kind::Parser => include_str!("templates/parser.rs.in"),
        Kind::Rule => include_str!("templates/rule.rs.in"),
    };
    let files = [
        ("Cargo.toml", fill(include_str!("templates/Cargo.toml.in"))),
        ("rust-toolchain.toml", include_str!("../../../rust-toolchain.toml").to_string()),
        ("src/lib.rs", fill(source)),
    ];
    for (path, text) in &files {
        let path = root.join(path);
        let written = path.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|()| std::fs::write(&path, text));
        if let Err(error) = written {
            eprintln!("error: cannot write {}: {error}", path.display());
            return ExitCode::FAILURE;
        }
    }
    println!("Made {} ({} `{name}`, against {})", root.display(), kind.as_str(), sdk.display());
    println!("  cd {} && cargo test && cargo build --release --target wasm32-wasip2", root.display());
    println!("  selfmon plugin validate target/wasm32-wasip2/release/{}.wasm", name.replace('-', "_"));
    ExitCode::SUCCESS
}
