//! Secret values removed from whatever a plugin hands back or writes, before selfmon stores, logs or serves it.
//!
//! A plugin should never echo a secret; a buggy or hostile one might. The host knows every secret it handed to a
//! call, so it can make sure none of them leaves again.

use std::borrow::Cow;
use std::sync::Arc;

/// What replaces a secret.
pub const MARK: &str = "[redacted]";

/// Secrets shorter than this are not searched for: they would match ordinary text.
const SHORTEST: usize = 4;

/// The secrets of one configured check.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Arc<[String]>,
}

impl Redactor {
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        let mut secrets: Vec<String> = secrets.into_iter().filter(|s| s.len() >= SHORTEST).collect();
        // Longest first, so a secret containing another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Self { secrets: secrets.into() }
    }

    /// `text` with every secret replaced by [`MARK`].
    pub fn apply<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut text = Cow::Borrowed(text);
        for secret in self.secrets.iter() {
            if text.contains(secret.as_str()) {
                text = Cow::Owned(text.replace(secret.as_str(), MARK));
            }
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_occurrence_of_every_secret_goes() {
        let redactor = Redactor::new(["sk-live-123456".to_string(), "sk-live".to_string(), "pw".to_string()]);
        assert_eq!(redactor.apply("key sk-live-123456, again sk-live-123456"), "key [redacted], again [redacted]");
        assert_eq!(redactor.apply("prefix sk-live only"), "prefix [redacted] only");
        assert_eq!(redactor.apply("pw is too short to hunt for"), "pw is too short to hunt for");
        assert!(matches!(Redactor::default().apply("untouched"), Cow::Borrowed(_)));
    }
}
