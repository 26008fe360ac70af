//! Privacy before storage: user ids become keyed pseudonyms, and personal data is cut out of free text.
//!
//! Every path into the store (log lines from files, syslog and the API, OTLP spans and logs, events) passes its
//! user ids and texts through one [`Privacy`] before they are written, so no raw user id, email address or token
//! reaches the database file.
//!
//! [`kept_key`] keeps a random key in a file beside the database, made on first use: the pseudonymization key when
//! `[privacy] key` is not set, and the dashboard's session-signing key.

use std::borrow::Cow;
use std::path::Path;

use hmac::{Hmac, KeyInit, Mac};
use regex::{Captures, Regex, RegexSet};
use sha2::Sha256;

use crate::config::{ConfigError, PrivacyConfig, Secret, Source};

/// The prefix of pseudonyms, so a stored id says what it is.
pub const PSEUDONYM_PREFIX: &str = "u_";

/// The built-in patterns, in the order they are applied (token shapes before the looser number shapes). A capture
/// group named `value` limits the redaction to that part of the match.
const DEFAULT_PATTERNS: [(&str, &str); 8] = [
    // Telegram Bot API tokens: the bot's numeric id, a colon, 35 characters (https://core.telegram.org/bots/api).
    ("telegram_token", r"\d{6,12}:[A-Za-z0-9_-]{30,}"),
    ("bearer", r"(?i)\bbearer\s+(?P<value>[A-Za-z0-9._~+/=-]{8,})"),
    // OpenAI (`sk-...`, `sk-proj-...`) and Anthropic (`sk-ant-api03-...`) keys, and the like.
    ("api_key", r"\b(?:sk|pk|rk)-[A-Za-z0-9_-]{16,}"),
    // `password=...`, `"api_key": "..."`, `token: ...`.
    (
        "secret",
        r#"(?i)\b(?:api[_-]?key|access[_-]?token|auth[_-]?token|secret|password|passwd|pwd)["']?\s*[:=]\s*["']?(?P<value>[^\s"'&,;]{3,})"#,
    ),
    ("email", r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"),
    // Card numbers: four groups of digits, or 15–16 digits starting 3–6, either passing the Luhn check.
    ("card", r"\b(?:\d{4}[ -]\d{4}[ -]\d{4}[ -]\d{1,7}|[3-6]\d{14,15})\b"),
    // Phone numbers: international (`+7 912 345-67-89`), or North American with separators.
    ("phone", r"\+\d{1,3}[\s.-]?\(?\d{1,4}\)?(?:[\s.-]?\d{2,4}){2,4}\b"),
    ("phone", r"(?:\(\d{3}\)\s?|\b\d{3}[.-])\d{3}[.-]\d{4}\b"),
];

/// Keys of JSON objects whose values are secrets: a whole segment of the key (between `.`, `_` or `-`) names one,
/// so `access_token` and `http.request.header.authorization` are, `input_tokens` is not.
const SECRET_KEYS: &str = r"(?i)(?:^|[._-])(?:password|passwd|pwd|secret|token|api[_-]?key|apikey|authorization|credentials?|private[_-]?key|cookie|set-cookie)(?:$|[._-])";

/// How user ids and texts are made safe to store.
pub struct Privacy {
    /// The pseudonymization key; none when user ids are stored as given.
    key: Option<Secret>,
    patterns: Vec<Pattern>,
    /// All patterns at once, to skip texts that have nothing to redact.
    any: RegexSet,
    /// Keys whose values are secrets whatever they look like (with the default patterns).
    secret_keys: Option<Regex>,
}

struct Pattern {
    name: String,
    regex: Regex,
}

impl std::fmt::Debug for Privacy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Privacy")
            .field("pseudonymize", &self.key.is_some())
            .field("patterns", &self.patterns.iter().map(|p| p.name.as_str()).collect::<Vec<_>>())
            .finish()
    }
}

impl Default for Privacy {
    /// Nothing pseudonymized or redacted.
    fn default() -> Self {
        Self { key: None, patterns: Vec::new(), any: RegexSet::empty(), secret_keys: None }
    }
}

/// What becomes of the file that keeps the pseudonymization key when the config sets none.
#[derive(Debug, Clone, Copy)]
pub enum KeyFile {
    /// Made when it does not exist yet (the server).
    Make,
    /// Read if it exists, never written (commands that only check or read): a key of the moment stands in.
    Read,
}

impl Privacy {
    /// The `[privacy]` table made usable. Without a configured key, the key kept in `key_path` is used.
    pub fn build(
        config: &PrivacyConfig,
        source: &Source,
        env: &crate::config::Env,
        key_path: &Path,
        key_file: KeyFile,
    ) -> Result<Self, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut problem = |message: String| errors.push(ConfigError::new(source.name(), None, message));
        let mut patterns = Vec::new();
        if config.default_patterns {
            for (name, regex) in DEFAULT_PATTERNS {
                patterns.push(Pattern { name: name.into(), regex: Regex::new(regex).expect("the built-in patterns") });
            }
        }
        for pattern in &config.patterns {
            if pattern.name.is_empty() || !pattern.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                problem(format!("`[[privacy.patterns]]` name `{}` must be letters, digits and `_`", pattern.name));
            }
            match Regex::new(&pattern.regex) {
                Ok(regex) if regex.is_match("") => problem(format!(
                    "`[[privacy.patterns]]` `{}`: the regex matches the empty text, so it would redact everywhere",
                    pattern.name
                )),
                Ok(regex) => patterns.push(Pattern { name: pattern.name.clone(), regex }),
                Err(error) => problem(format!("`[[privacy.patterns]]` `{}`: not a valid regex: {error}", pattern.name)),
            }
        }
        let key = if !config.pseudonymize_users {
            None
        } else if let Some(reference) = &config.key {
            match reference.resolve(env, &source.base_dir) {
                Ok(key) if key.expose().len() >= 16 => Some(key),
                Ok(_) => {
                    problem("`[privacy] key` must be at least 16 characters".into());
                    None
                }
                Err(reason) => {
                    problem(format!("`[privacy] key` {reason}"));
                    None
                }
            }
        } else {
            let key = match key_file {
                KeyFile::Make => kept_key(key_path, "pseudonymizes user ids; back it up with the database"),
                KeyFile::Read => existing_key(key_path).and_then(|key| key.map_or_else(new_key, Ok)),
            };
            match key {
                Ok(key) => Some(key),
                Err(reason) => {
                    problem(format!("`[privacy]`: {reason}; or set `key`"));
                    None
                }
            }
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let any = RegexSet::new(patterns.iter().map(|p| p.regex.as_str())).expect("each pattern compiled on its own");
        let secret_keys = config.default_patterns.then(|| Regex::new(SECRET_KEYS).expect("the built-in key pattern"));
        Ok(Self { key, patterns, any, secret_keys })
    }

    /// Whether anything is redacted.
    pub fn redacts(&self) -> bool {
        !self.patterns.is_empty() || self.secret_keys.is_some()
    }

    /// The id to store for a user: its pseudonym (`u_` and 32 hex digits of the keyed hash), or the id itself when
    /// pseudonymization is off.
    pub fn user(&self, raw: &str) -> String {
        match &self.key {
            None => raw.to_string(),
            Some(key) => {
                let mut mac = Hmac::<Sha256>::new_from_slice(key.expose().as_bytes()).expect("HMAC takes any key");
                mac.update(raw.as_bytes());
                let digest = mac.finalize().into_bytes();
                let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
                format!("{PSEUDONYM_PREFIX}{hex}")
            }
        }
    }

    /// The stored id to look a user up by: `given` itself when it is a pseudonym already, else what [`Self::user`]
    /// makes of it.
    pub fn lookup_id(&self, given: &str) -> String {
        let pseudonym = given.strip_prefix(PSEUDONYM_PREFIX).is_some_and(|hex| {
            hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
        if pseudonym && self.key.is_some() { given.to_string() } else { self.user(given) }
    }

    /// The ids a user may be stored under: the pseudonym of `given`, and `given` itself (stored before
    /// pseudonymization was turned on, or a pseudonym given as such).
    pub fn stored_ids(&self, given: &str) -> Vec<String> {
        let mut ids = vec![self.user(given)];
        if ids[0] != given {
            ids.push(given.to_string());
        }
        ids
    }

    /// `text` with every match of a pattern replaced by `[redacted:NAME]`.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let matched = self.any.matches(text);
        if !matched.matched_any() {
            return Cow::Borrowed(text);
        }
        let mut text = Cow::Borrowed(text);
        for index in matched.iter() {
            let pattern = &self.patterns[index];
            let replaced = pattern.regex.replace_all(&text, |caps: &Captures| replacement(pattern, caps));
            if let Cow::Owned(changed) = replaced {
                text = Cow::Owned(changed);
            }
        }
        text
    }

    /// Redact in place.
    pub fn redact_string(&self, text: &mut String) {
        if let Cow::Owned(redacted) = self.redact(text) {
            *text = redacted;
        }
    }

    /// Redact every string in a JSON value (keys are left alone).
    pub fn redact_json(&self, value: &mut serde_json::Value) {
        match value {
            serde_json::Value::String(text) => self.redact_string(text),
            serde_json::Value::Array(items) => items.iter_mut().for_each(|item| self.redact_json(item)),
            serde_json::Value::Object(map) => self.redact_map(map),
            serde_json::Value::Number(number) => {
                // A card number sent as a number.
                let text = number.to_string();
                if let Cow::Owned(redacted) = self.redact(&text) {
                    *value = redacted.into();
                }
            }
            _ => {}
        }
    }

    /// Redact every value of a JSON object; with the default patterns, the whole value of a key that names a
    /// secret (`password`, `api_key`, `access_token`, `http.request.header.authorization`, ...).
    pub fn redact_map(&self, map: &mut serde_json::Map<String, serde_json::Value>) {
        for (key, value) in map.iter_mut() {
            if self.secret_keys.as_ref().is_some_and(|keys| keys.is_match(key)) && !value.is_null() {
                *value = "[redacted:secret]".into();
            } else {
                self.redact_json(value);
            }
        }
    }
}

fn replacement(pattern: &Pattern, caps: &Captures) -> String {
    let whole = caps.get(0).expect("group 0 is the match");
    if pattern.name == "card" && !luhn(whole.as_str()) {
        return whole.as_str().to_string();
    }
    let marker = format!("[redacted:{}]", pattern.name);
    match caps.name("value") {
        Some(value) => {
            let text = whole.as_str();
            let (start, end) = (value.start() - whole.start(), value.end() - whole.start());
            format!("{}{marker}{}", &text[..start], &text[end..])
        }
        None => marker,
    }
}

/// Whether the digits of `text` pass the Luhn check that card numbers carry.
fn luhn(text: &str) -> bool {
    let digits: Vec<u32> = text.chars().filter_map(|c| c.to_digit(10)).collect();
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| if i % 2 == 1 { if d * 2 > 9 { d * 2 - 9 } else { d * 2 } } else { *d })
        .sum();
    digits.len() >= 13 && sum.is_multiple_of(10)
}

/// The key kept in `path`, if there is one.
fn existing_key(path: &Path) -> Result<Option<Secret>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim().len() >= 32 => Ok(Some(Secret::new(text.trim().to_string()))),
        Ok(_) => Err(format!("the key file {} is too short (at least 32 characters)", path.display())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(format!("cannot read the key file {}: {error}", path.display())),
    }
}

/// A new random key: 32 bytes, as hex.
fn new_key() -> Result<Secret, String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("cannot make a key: {e}"))?;
    Ok(Secret::new(bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()))
}

/// The key kept in `path`, made (32 random bytes, hex, readable by the owner only) when the file does not exist;
/// `purpose` says what for, in the log line that announces a new one.
pub fn kept_key(path: &Path, purpose: &str) -> Result<Secret, String> {
    if let Some(key) = existing_key(path)? {
        return Ok(key);
    }
    let key = new_key()?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        super::private_dir(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(path).and_then(|mut file| std::io::Write::write_all(&mut file, key.expose().as_bytes()));
    match written {
        Ok(()) => {
            tracing::info!(path = %path.display(), "Made the key that {purpose}");
            Ok(key)
        }
        // Another process made it first.
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => kept_key(path, purpose),
        Err(error) => Err(format!("cannot write the key file {}: {error}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn privacy(config: &PrivacyConfig) -> Privacy {
        let dir = tempfile::tempdir().unwrap();
        Privacy::build(config, &Source::default(), &|_| None, &dir.path().join("privacy.key"), KeyFile::Make).unwrap()
    }

    #[test]
    fn the_default_patterns_cut_out_personal_data_and_leave_the_rest() {
        let privacy = privacy(&PrivacyConfig::default());
        let cases = [
            ("mail anna.k+coach@example.co.uk now", "mail [redacted:email] now"),
            ("call +7 912 345-67-89 today", "call [redacted:phone] today"),
            ("call (415) 555-0132", "call [redacted:phone]"),
            ("card 4111 1111 1111 1111 ok", "card [redacted:card] ok"),
            ("card 4111111111111111", "card [redacted:card]"),
            ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.abc", "Authorization: Bearer [redacted:bearer]"),
            ("key sk-proj-AbCdEf0123456789xyzXYZ used", "key [redacted:api_key] used"),
            ("GET /bot123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw0/getMe", "GET /bot[redacted:telegram_token]/getMe"),
            (r#"{"password": "hunter22"}"#, r#"{"password": "[redacted:secret]"}"#),
            ("login failed password=s3cr3t&user=1", "login failed password=[redacted:secret]&user=1"),
        ];
        for (given, expected) in cases {
            assert_eq!(privacy.redact(given), expected, "{given}");
        }
        // Not personal data: timestamps, ids, durations, numbers that fail the Luhn check, versions.
        for kept in [
            "took 1234 ms at 1700000000123",
            "order 4111111111111112 shipped",
            "trace 4bf92f3577b34da6a3ce929d0e0e4736",
            "version 1.2.3-rc.4 on port 5432",
            "user 42 sent 3 messages",
        ] {
            assert_eq!(privacy.redact(kept), kept);
        }
    }

    #[test]
    fn secrets_in_json_are_found_by_their_key_and_numbers_are_checked_too() {
        let privacy = privacy(&PrivacyConfig::default());
        let mut value = serde_json::json!({
            "password": "hunter22", "api_key": 12345678, "http.request.header.authorization": "Basic dXNlcjpwYXNz",
            "nested": {"access_token": "abc", "card": 4111111111111111u64},
            "gen_ai.usage.input_tokens": 1500, "tokens": 3, "user": "anna"
        });
        privacy.redact_json(&mut value);
        assert_eq!(
            value,
            serde_json::json!({
                "password": "[redacted:secret]", "api_key": "[redacted:secret]",
                "http.request.header.authorization": "[redacted:secret]",
                "nested": {"access_token": "[redacted:secret]", "card": "[redacted:card]"},
                "gen_ai.usage.input_tokens": 1500, "tokens": 3, "user": "anna"
            })
        );
    }

    #[test]
    fn pseudonyms_are_stable_keyed_and_not_the_id() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("data/privacy.key");
        let config = PrivacyConfig::default();
        let first = Privacy::build(&config, &Source::default(), &|_| None, &file, KeyFile::Make).unwrap();
        let again = Privacy::build(&config, &Source::default(), &|_| None, &file, KeyFile::Make).unwrap();
        let pseudonym = first.user("telegram:123456");
        assert!(pseudonym.starts_with("u_") && pseudonym.len() == 34, "{pseudonym}");
        assert_eq!(again.user("telegram:123456"), pseudonym, "the kept key gives the same pseudonym");
        assert_ne!(first.user("telegram:123457"), pseudonym);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let other = privacy(&PrivacyConfig::default());
        assert_ne!(other.user("telegram:123456"), pseudonym, "another key, another pseudonym");
        let off = privacy(&PrivacyConfig { pseudonymize_users: false, ..PrivacyConfig::default() });
        assert_eq!(off.user("telegram:123456"), "telegram:123456");
        assert_eq!(first.stored_ids(&pseudonym), vec![first.user(&pseudonym), pseudonym.clone()]);
    }

    #[test]
    fn operator_patterns_are_checked_and_applied() {
        let config = |regex: &str| PrivacyConfig {
            patterns: vec![crate::config::PatternConfig { name: "passport".into(), regex: regex.into() }],
            ..PrivacyConfig::default()
        };
        let privacy = privacy(&config(r"\b\d{4} \d{6}\b"));
        assert_eq!(privacy.redact("passport 4510 123456 given"), "passport [redacted:passport] given");
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k");
        let errors =
            Privacy::build(&config("(unclosed"), &Source::default(), &|_| None, &key, KeyFile::Make).unwrap_err();
        assert!(errors[0].message.contains("`passport`: not a valid regex"), "{errors:?}");
        let errors = Privacy::build(&config("x*"), &Source::default(), &|_| None, &key, KeyFile::Make).unwrap_err();
        assert!(errors[0].message.contains("matches the empty text"), "{errors:?}");
    }
}
