//! Sidecar files: `*.toml` files in the plugins folder (by convention `NAME.toml` beside `NAME.wasm`) holding
//! `[[check]]`, `[[log_source]]` and `[[rule]]` tables, added to the config's own. Dropping a plugin in with its
//! sidecar is all it takes to put it to work; errors in a sidecar name the sidecar and its line.
//!
//! A sidecar concerns its plugin's own work, so it is held to what a plugin may do: no recovery actions (they run
//! commands), no `env:` or `file:` secret references (they read selfmon's environment and files), no `ca_file`, and
//! no log sources that read files or listen for syslog, unless the main config names it in
//! `[plugins] trusted_sidecars`. Also which files of
//! the plugins folder selfmon reads ([`Extension`], [`folder_files`]): `*.wasm` and `*.toml`, hidden ones left alone.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::{CheckConfig, Config, ConfigError, LogSourceConfig, LogSourceKind, RuleConfig, Source};

/// A sidecar's text, and where its tables' spans start in the config's offsets (past the main file's text and every
/// earlier sidecar's).
#[derive(Clone)]
pub struct Text {
    pub offset: usize,
    pub file: PathBuf,
    pub text: String,
}

/// The text is left out: it may hold literal secrets.
impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Text").field("offset", &self.offset).field("file", &self.file).finish_non_exhaustive()
    }
}

/// What a sidecar may hold.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Tables {
    #[serde(default, rename = "check")]
    checks: Vec<Spanned<CheckConfig>>,
    #[serde(default, rename = "log_source")]
    log_sources: Vec<Spanned<LogSourceConfig>>,
    #[serde(default, rename = "rule")]
    rules: Vec<Spanned<RuleConfig>>,
}

/// What the plugins folder holds that selfmon reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extension {
    /// `*.wasm`: plugin components.
    Component,
    /// `*.toml`: sidecars.
    Sidecar,
}

impl Extension {
    /// The kind of folder file `path` is; none for any other file, and for hidden ones (editors and copies in
    /// progress write them).
    pub fn of(path: &Path) -> Option<Self> {
        if path.file_name().is_some_and(|name| name.to_string_lossy().starts_with('.')) {
            return None;
        }
        match path.extension()?.to_str()? {
            "wasm" => Some(Self::Component),
            "toml" => Some(Self::Sidecar),
            _ => None,
        }
    }
}

/// The files of one kind in the plugins folder `dir`, in name order.
pub fn folder_files(dir: &Path, kind: Extension) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.is_file() && Extension::of(path) == Some(kind))
        .collect();
    files.sort();
    files
}

impl Config {
    /// Add the tables of every sidecar in the plugins folder. Every sidecar that cannot be read or parsed is
    /// reported; then nothing is added.
    pub fn with_sidecars(mut self) -> Result<Self, Vec<ConfigError>> {
        let dir = self.source.resolve(&self.plugins.dir);
        let mut errors = Vec::new();
        let mut offset = self.source.text.len() + 1;
        for file in folder_files(&dir, Extension::Sidecar) {
            let origin = file.display().to_string();
            let text = match std::fs::read_to_string(&file) {
                Ok(text) => text,
                Err(error) => {
                    errors.push(ConfigError::new(origin, None, format!("cannot read: {error}")));
                    continue;
                }
            };
            let trusted = file
                .file_name()
                .is_some_and(|name| self.plugins.trusted_sidecars.iter().any(|t| name.to_string_lossy() == *t));
            // Only the operator's own sidecars take `${VAR}`: one dropped in with a plugin could otherwise read the
            // environment's secrets into a check's target.
            let text = if trusted {
                match super::interpolate::interpolate(&text, |name| std::env::var(name).ok()) {
                    Ok(text) => text,
                    Err(problem) => {
                        errors.push(ConfigError::new(origin, Some(problem.line), problem.message));
                        continue;
                    }
                }
            } else {
                text
            };
            let sidecar = Text { offset, file, text };
            match toml::from_str::<Tables>(&sidecar.text) {
                Ok(tables) => {
                    let shift = |span: std::ops::Range<usize>| span.start + offset..span.end + offset;
                    if !trusted {
                        let mut source = self.source.clone();
                        source.sidecars.push(sidecar.clone());
                        errors.extend(beyond_its_plugin(&tables, &source, shift));
                    }
                    for table in tables.checks {
                        self.checks.push(Spanned::new(shift(table.span()), table.into_inner()));
                    }
                    for table in tables.log_sources {
                        self.log_sources.push(Spanned::new(shift(table.span()), table.into_inner()));
                    }
                    for table in tables.rules {
                        self.rules.push(Spanned::new(shift(table.span()), table.into_inner()));
                    }
                }
                Err(error) => {
                    let line = error.span().map(|span| {
                        sidecar.text.as_bytes()[..span.start.min(sidecar.text.len())]
                            .iter()
                            .filter(|b| **b == b'\n')
                            .count()
                            + 1
                    });
                    let message = format!(
                        "{} (a sidecar holds only [[check]], [[log_source]] and [[rule]] tables)",
                        super::without_value(error.message().trim_end())
                    );
                    errors.push(ConfigError::new(origin, line, message));
                }
            }
            offset += sidecar.text.len() + 1;
            self.source.sidecars.push(sidecar);
        }
        if errors.is_empty() { Ok(self) } else { Err(errors) }
    }
}

/// What an untrusted sidecar's tables ask for beyond its plugin's own work, each naming the sidecar, the line and
/// the field.
fn beyond_its_plugin(
    tables: &Tables,
    source: &Source,
    shift: impl Fn(std::ops::Range<usize>) -> std::ops::Range<usize>,
) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let mut refuse = |span: std::ops::Range<usize>, line: Option<usize>, what: String| {
        let line = line.or_else(|| source.line_at(span.start));
        errors.push(ConfigError::new(
            source.name_at(span.start),
            line,
            format!("{what}: a sidecar may not set this unless `[plugins] trusted_sidecars` names it"),
        ));
    };
    for check in &tables.checks {
        let (span, config) = (shift(check.span()), check.get_ref());
        let name = &config.name;
        if config.recovery.is_some() {
            let line = source.line_of_part(span.clone(), "recovery");
            refuse(span.clone(), line, format!("check `{name}`: `recovery` (runs a command or request)"));
        }
        if config.ca_file.is_some() {
            let line = source.line_of_key(span.clone(), "ca_file");
            refuse(span.clone(), line, format!("check `{name}`: `ca_file` (reads a file)"));
        }
        for (key, reference) in &config.secrets {
            if reference.is_reference() {
                let line = source.line_of_key(span.clone(), key);
                refuse(span.clone(), line, format!("check `{name}`: `secrets.{key}` (an `env:` or `file:` reference)"));
            }
        }
    }
    for log_source in &tables.log_sources {
        let (span, config) = (shift(log_source.span()), log_source.get_ref());
        if matches!(config.kind, LogSourceKind::File | LogSourceKind::Syslog) {
            let line = source.line_of_key(span.clone(), "kind");
            let what =
                format!("log source `{}`: `kind = \"{}\"` (reads files or listens)", config.name, config.kind.as_str());
            refuse(span, line, what);
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecar_tables_are_added_and_errors_name_the_sidecar_and_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("selfmon.toml");
        let text = "[plugins]\ndir = \"plugins\"\n\n[[check]]\nname = \"a\"\nplugin = \"http\"\n";
        std::fs::create_dir(dir.path().join("plugins")).unwrap();
        std::fs::write(
            dir.path().join("plugins/extra.toml"),
            "# checks for extra\n\n[[check]]\nname = \"b\"\nplugin = \"extra\"\ntarget = \"http://127.0.0.1:1\"\n",
        )
        .unwrap();
        let config = Config::parse(text, Some(&main)).unwrap().with_sidecars().unwrap();
        let names: Vec<&str> = config.checks.iter().map(|c| c.get_ref().name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        let b = config.checks[1].span();
        assert!(config.source.name_at(b.start).ends_with("plugins/extra.toml"));
        assert_eq!(config.source.line_at(b.start), Some(3));
        assert_eq!(config.source.line_of_key(b, "target"), Some(6));
        let a = config.checks[0].span();
        assert!(config.source.name_at(a.start).ends_with("selfmon.toml"));
        assert_eq!(config.source.line_at(a.start), Some(4));

        std::fs::write(dir.path().join("plugins/broken.toml"), "# not a sidecar\n\n[server]\n").unwrap();
        let errors = Config::parse(text, Some(&main)).unwrap().with_sidecars().unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].origin.ends_with("plugins/broken.toml"), "{errors:?}");
        assert_eq!(errors[0].line, Some(3), "{errors:?}");
        assert!(errors[0].message.contains("only [[check]]"), "{errors:?}");
    }
}
