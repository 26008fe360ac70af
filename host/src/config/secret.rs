//! Secrets in config: how they are referred to, and a value type that never shows itself.

use std::fmt;

use serde::Deserialize;

/// Looks up an environment variable (the process environment, or a stand-in in tests): where `env:` references and
/// plugins' declared environment defaults are read.
pub type Env = dyn Fn(&str) -> Option<String> + Sync;

/// How the config names a secret: `env:NAME`, `file:/path`, or the value itself.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct SecretRef(String);

impl SecretRef {
    /// A reference as written (`env:NAME`, `file:/path` or the value), from an environment variable's value.
    pub fn new(text: String) -> Self {
        Self(text)
    }

    /// Whether it refers to an environment variable or a file rather than holding the value itself.
    pub fn is_reference(&self) -> bool {
        self.0.starts_with("env:") || self.0.starts_with("file:")
    }

    /// Look the secret up; a relative `file:` path is taken from `base` (the config file's directory). Errors name
    /// the reference, never a value.
    pub fn resolve(&self, var: impl Fn(&str) -> Option<String>, base: &std::path::Path) -> Result<Secret, String> {
        if let Some(name) = self.0.strip_prefix("env:") {
            return var(name)
                .map(Secret)
                .ok_or_else(|| format!("refers to environment variable `{name}`, which is not set"));
        }
        if let Some(path) = self.0.strip_prefix("file:") {
            return std::fs::read_to_string(base.join(path))
                .map(|text| Secret(text.trim_end_matches(['\n', '\r']).to_string()))
                .map_err(|e| format!("refers to file `{path}`, which cannot be read: {e}"));
        }
        Ok(Secret(self.0.clone()))
    }
}

/// References are shown only when they are references; a literal value is redacted.
impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_reference() { write!(f, "{:?}", self.0) } else { f.write_str("\"[redacted]\"") }
    }
}

/// A secret value. `Debug` and `Display` redact it, and it has no `Serialize`: the only way out is
/// [`Secret::expose`], used where the value is handed to the plugin instance that needs it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_resolve_and_values_stay_hidden() {
        let env = |name: &str| (name == "TOKEN").then(|| "s3cret".to_string());
        let base = std::path::Path::new("/etc/selfmon");
        let secret = SecretRef("env:TOKEN".into()).resolve(env, base).unwrap();
        assert_eq!(secret.expose(), "s3cret");
        assert_eq!(format!("{secret} {secret:?}"), "[redacted] [redacted]");
        assert_eq!(format!("{:?}", SecretRef("hunter2".into())), "\"[redacted]\"");
        assert_eq!(format!("{:?}", SecretRef("env:TOKEN".into())), "\"env:TOKEN\"");

        let err = SecretRef("env:MISSING".into()).resolve(env, base).unwrap_err();
        assert_eq!(err, "refers to environment variable `MISSING`, which is not set");

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "from-a-file\n").unwrap();
        let secret = SecretRef("file:token".into()).resolve(env, dir.path()).unwrap();
        assert_eq!(secret.expose(), "from-a-file", "relative to the config's directory, without the newline");
    }
}
