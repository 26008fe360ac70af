//! Where a config came from (the file, its sidecars, its text), for error messages that name the file and the
//! line; and the error every config problem is reported as.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where a config came from.
#[derive(Clone, Default)]
pub struct Source {
    /// The file, or `None` for the built-in default.
    pub file: Option<PathBuf>,
    /// The file's text, to turn byte offsets into line numbers.
    pub text: String,
    /// Relative paths in the config are relative to this directory.
    pub base_dir: PathBuf,
    /// Sidecar files from the plugins folder whose tables were added (see [`Config::with_sidecars`](super::Config::with_sidecars)).
    pub sidecars: Vec<super::sidecar::Text>,
}

impl Source {
    /// The file name as shown in messages.
    pub fn name(&self) -> String {
        self.file.as_ref().map_or_else(|| "the built-in default config".into(), |f| f.display().to_string())
    }

    /// The file that holds the table at `offset`, as shown in messages.
    pub fn name_at(&self, offset: usize) -> String {
        match self.sidecar_at(offset) {
            Some(sidecar) => sidecar.file.display().to_string(),
            None => self.name(),
        }
    }

    /// The 1-based line of `offset` in the file that holds it; none for the built-in default.
    pub fn line_at(&self, offset: usize) -> Option<usize> {
        (self.file.is_some() || self.sidecar_at(offset).is_some()).then(|| self.line_of(offset))
    }

    /// The 1-based line of a byte offset in the file (or sidecar) that holds it.
    pub fn line_of(&self, offset: usize) -> usize {
        let (text, offset) = self.text_at(offset);
        text.as_bytes()[..offset.min(text.len())].iter().filter(|b| **b == b'\n').count() + 1
    }

    fn sidecar_at(&self, offset: usize) -> Option<&super::sidecar::Text> {
        self.sidecars.iter().rev().find(|sidecar| offset >= sidecar.offset)
    }

    /// The text that holds `offset`, and the offset within it.
    fn text_at(&self, offset: usize) -> (&str, usize) {
        match self.sidecar_at(offset) {
            Some(sidecar) => (&sidecar.text, offset - sidecar.offset),
            None => (&self.text, offset),
        }
    }

    /// The line where `key = ...` is written in the `[[check]]` table whose header is at `header`, its
    /// `[check.*]` sub-tables included, if it is.
    pub fn line_of_key(&self, header: std::ops::Range<usize>, key: &str) -> Option<usize> {
        let (text, start) = self.text_at(header.start);
        let shift = header.start - start;
        let header = start..header.end - shift;
        // The parser's span covers only the `[[check]]` header: the table runs to the next header that is neither
        // one of its sub-tables nor a line inside them.
        let rest = text.get(header.end..)?;
        let mut end = text.len();
        let mut offset = header.end;
        for line in rest.split_inclusive('\n') {
            let trimmed = line.trim_start();
            if trimmed.starts_with('[') && !trimmed.starts_with("[check.") {
                end = offset;
                break;
            }
            offset += line.len();
        }
        let table = text.get(header.start..end)?;
        let mut offset = header.start;
        for line in table.split_inclusive('\n') {
            let trimmed = line.trim_start();
            let unquoted = trimmed.strip_prefix(key).or_else(|| trimmed.strip_prefix(&format!("\"{key}\"")));
            if unquoted.is_some_and(|rest| rest.trim_start().starts_with('=')) {
                return Some(self.line_of(offset + shift));
            }
            offset += line.len();
        }
        None
    }

    /// The line of a part of the `[[check]]` table at `header`: `key = ...`, or its sub-table `[check.key]`.
    pub fn line_of_part(&self, header: std::ops::Range<usize>, key: &str) -> Option<usize> {
        self.line_of_key(header.clone(), key).or_else(|| {
            let (text, start) = self.text_at(header.start);
            let shift = header.start - start;
            let sub = format!("[check.{key}");
            let at = text.get(start..)?.find(&sub)?;
            Some(self.line_of(start + at + shift))
        })
    }

    /// Resolve a path from the config against the config's directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() { path.to_path_buf() } else { self.base_dir.join(path) }
    }
}

/// A config that cannot be used, with where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (or `environment variable X`).
    pub origin: String,
    pub line: Option<usize>,
    pub message: String,
}

impl ConfigError {
    pub fn new(origin: impl Into<String>, line: Option<usize>, message: impl Into<String>) -> Self {
        Self { origin: origin.into(), line, message: message.into() }
    }
}

/// A TOML error's message without the value it quotes: the value may be a secret (a token written without quotes is
/// "invalid type: integer `123...`, expected a string"), and errors are logged and shown by the API.
pub fn without_value(message: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(at) = message.find(prefix) {
            let rest = &message[at + prefix.len()..];
            let end = rest.find(", expected").unwrap_or(rest.len());
            let kind = &rest[..end];
            let kind = kind.find(['`', '"']).map_or(kind, |quote| kind[..quote].trim_end());
            return format!("{}{prefix}{kind}{}", &message[..at], &rest[end..]);
        }
    }
    // An enum's value: `unknown variant `VALUE`, expected one of ...`.
    if let Some(at) = message.find("unknown variant `")
        && let Some(end) = message[at + 17..].find('`')
    {
        return format!("{}unknown value{}", &message[..at], &message[at + 17 + end + 1..]);
    }
    message.to_string()
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}, line {line}: {}", self.origin, self.message),
            None => write!(f, "{}: {}", self.origin, self.message),
        }
    }
}

/// The file's text is left out: it may hold literal secrets.
impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Source").field("file", &self.file).field("base_dir", &self.base_dir).finish_non_exhaustive()
    }
}
