//! A plugin's settings as the operator wrote them (a `[check.config]`, `[rule.config]` or `parser_config` table),
//! checked against what the plugin declares in its `info`: no unknown keys, every required key, the right kinds,
//! defaults filled in. Every problem is reported, each with the key it is about. And the settings described for
//! people, as `selfmon plugins` and `selfmon plugin validate` list them.

use serde_json::Value;

use super::{PluginInfo, Setting, ValueKind};
use crate::config::Env;

/// One thing wrong with a plugin's settings (a check's, a rule's, a log source's), and the key it is about (for the line number), if any.
#[derive(Debug)]
pub struct Problem {
    pub key: Option<String>,
    pub message: String,
}

impl Problem {
    pub fn at(key: &str, message: impl Into<String>) -> Self {
        Self { key: Some(key.to_string()), message: message.into() }
    }

    pub fn general(message: impl Into<String>) -> Self {
        Self { key: None, message: message.into() }
    }
}

/// `what` names the table (`config key`, `secret`).
pub fn unknown_key(what: &str, key: &str, accepted: &[Setting]) -> Problem {
    let accepted: Vec<&str> = accepted.iter().map(|s| s.name.as_str()).collect();
    Problem::at(
        key,
        if accepted.is_empty() {
            format!("unknown {what} `{key}` (the plugin takes none)")
        } else {
            format!("unknown {what} `{key}` (accepted: {})", accepted.join(", "))
        },
    )
}

/// The operator's config table against the declared settings: no unknown keys, every required key, the right
/// kinds, defaults (from the environment where allowed, then the declared ones) filled in.
pub fn settle_config(
    settings: &[Setting],
    table: &toml::Table,
    env: Option<&Env>,
) -> Result<Vec<(String, String)>, Vec<Problem>> {
    let mut problems = Vec::new();
    for key in table.keys() {
        if !settings.iter().any(|s| &s.name == key) {
            problems.push(unknown_key("config key", key, settings));
        }
    }
    let mut values = Vec::new();
    for setting in settings {
        match table.get(&setting.name) {
            Some(value) => {
                let json = toml_to_json(value);
                if let Err(expected) = check_kind(setting.kind, &json) {
                    problems
                        .push(Problem::at(&setting.name, format!("config key `{}` must be {expected}", setting.name)));
                }
                values.push((setting.name.clone(), json.to_string()));
            }
            None => {
                let from_env = setting.env.as_deref().and_then(|var| Some((var, env?(var)?)));
                if let Some((var, text)) = from_env {
                    let json = env_value(setting.kind, &text);
                    if let Err(expected) = check_kind(setting.kind, &json) {
                        problems.push(Problem::general(format!(
                            "config key `{}` from environment variable {var} must be {expected}",
                            setting.name
                        )));
                    }
                    values.push((setting.name.clone(), json.to_string()));
                } else if let Some(default) = &setting.default {
                    values.push((setting.name.clone(), default.clone()));
                } else if setting.required {
                    problems.push(Problem::general(format!(
                        "config key `{}` is required: {}",
                        setting.name, setting.description
                    )));
                }
            }
        }
    }
    if problems.is_empty() { Ok(values) } else { Err(problems) }
}

/// An environment variable's text as the JSON value of a setting: numbers and booleans parsed, the rest as text.
fn env_value(kind: ValueKind, text: &str) -> Value {
    match kind {
        ValueKind::Text | ValueKind::Duration => Value::String(text.to_string()),
        _ => serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string())),
    }
}

/// A TOML value of the config as the JSON a plugin is handed.
pub fn toml_to_json(value: &toml::Value) -> Value {
    match value {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(items) => Value::Array(items.iter().map(toml_to_json).collect()),
        toml::Value::Table(table) => Value::Object(table.iter().map(|(k, v)| (k.clone(), toml_to_json(v))).collect()),
    }
}

/// How a value kind is called in listings, and what a value of it must be.
fn kind_text(kind: ValueKind) -> (&'static str, &'static str) {
    match kind {
        ValueKind::Text => ("text", "a string"),
        ValueKind::Integer => ("integer", "a whole number"),
        ValueKind::Number => ("number", "a number"),
        ValueKind::Boolean => ("boolean", "true or false"),
        ValueKind::Duration => ("duration", "a duration such as \"10s\" or \"250ms\""),
        ValueKind::List => ("list", "a list"),
        ValueKind::Table => ("table", "a table"),
        ValueKind::Any => ("any", "any value"),
    }
}

/// How a value kind is called in listings.
pub fn kind_name(kind: ValueKind) -> &'static str {
    kind_text(kind).0
}

/// `Err` names what the value should have been.
fn check_kind(kind: ValueKind, value: &Value) -> Result<(), &'static str> {
    let ok = match kind {
        ValueKind::Text => value.is_string(),
        ValueKind::Integer => value.is_i64() || value.is_u64(),
        ValueKind::Number => value.is_number(),
        ValueKind::Boolean => value.is_boolean(),
        ValueKind::Duration => value.as_str().is_some_and(|s| humantime::parse_duration(s).is_ok()),
        ValueKind::List => value.is_array(),
        ValueKind::Table => value.is_object(),
        ValueKind::Any => true,
    };
    if ok { Ok(()) } else { Err(kind_text(kind).1) }
}

/// A plugin's default target and the config keys and secrets it accepts, indented under its name.
pub fn describe_settings(info: &PluginInfo) -> String {
    let mut out = String::new();
    if let Some(target) = &info.default_target {
        out.push_str(&format!("  default target: {target}\n"));
    }
    for (title, settings) in [("config", &info.config), ("secrets", &info.secrets)] {
        if !settings.is_empty() {
            out.push_str(&format!("  {title}:\n"));
            let rows: Vec<[String; 4]> = settings.iter().map(describe_setting).collect();
            let width = |i: usize| rows.iter().map(|r| r[i].len()).max().unwrap_or(0);
            let (name, kind, presence) = (width(0), width(1), width(2));
            for [a, b, c, d] in &rows {
                out.push_str(&format!("    {a:<name$}  {b:<kind$}  {c:<presence$}  {d}\n"));
            }
        }
    }
    out
}

/// Name, kind, where its value comes from, description.
fn describe_setting(setting: &Setting) -> [String; 4] {
    let kind = kind_name(setting.kind);
    let mut presence = match (&setting.default, setting.required) {
        (_, true) => "required".to_string(),
        (Some(default), false) => format!("default {default}"),
        (None, false) => "optional".to_string(),
    };
    if let Some(variable) = &setting.env {
        presence = format!("{presence}, env {variable}");
    }
    [setting.name.clone(), kind.to_string(), presence, setting.description.clone()]
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// The messages of `problems`.
    pub fn messages(problems: Vec<Problem>) -> Vec<String> {
        problems.into_iter().map(|p| p.message).collect()
    }

    /// A setting as a plugin would declare it.
    pub fn setting(name: &str, kind: ValueKind, default: Option<&str>, required: bool) -> Setting {
        Setting {
            name: name.into(),
            description: format!("the {name}"),
            kind,
            default: default.map(Into::into),
            required,
            env: None,
        }
    }

    #[test]
    fn config_gets_defaults_and_rejects_unknown_missing_and_mistyped_keys() {
        let settings = [
            setting("method", ValueKind::Text, Some("\"GET\""), false),
            setting("expect_status", ValueKind::List, Some("[200]"), false),
            setting("slow", ValueKind::Duration, None, false),
            setting("url", ValueKind::Text, None, true),
        ];
        let table: toml::Table = toml::from_str("url = \"http://x\"\nexpect_status = [200, \"3xx\"]").unwrap();
        let values = settle_config(&settings, &table, None).unwrap();
        assert_eq!(
            values,
            [
                ("method".into(), "\"GET\"".into()),
                ("expect_status".into(), "[200,\"3xx\"]".into()),
                ("url".into(), "\"http://x\"".into())
            ]
        );

        let table: toml::Table = toml::from_str("methd = \"GET\"\nslow = \"soon\"").unwrap();
        let problems = messages(settle_config(&settings, &table, None).unwrap_err());
        assert_eq!(
            problems,
            [
                "unknown config key `methd` (accepted: method, expect_status, slow, url)",
                "config key `slow` must be a duration such as \"10s\" or \"250ms\"",
                "config key `url` is required: the url",
            ]
        );
    }
}
