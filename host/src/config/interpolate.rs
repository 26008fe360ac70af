//! `${NAME}` in the config file and its trusted sidecars, replaced by the environment's NAME before the TOML is read, as
//! Docker Compose and Vector do: `${NAME:-default}` gives `default` when NAME is unset or empty, `$${` writes a
//! literal `${` (a recovery command that runs `sh -c` with a shell variable of its own: `"echo $${HOME}"`). Names
//! are letters, digits and `_`, not starting with a digit. Lines whose first character (after spaces) is `#` are
//! comments and left as they are, unless they are inside a multi-line string. A value is put in as it is written:
//! for a string, write the reference inside the quotes (`password = "${DB_PASSWORD}"`); a value that holds a line
//! break is refused, since it would move every line an error points at.

/// Why a file could not be interpolated: its line and what is wrong (never a variable's value).
#[derive(Debug, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub message: String,
}

/// `text` with every reference replaced, reading variables through `env`.
pub fn interpolate(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<String, Problem> {
    let mut out = String::with_capacity(text.len());
    let mut open = Open::Nothing;
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let comment = open == Open::Nothing && line.trim_start().starts_with('#');
        open = open.after(line);
        if comment {
            out.push_str(line);
            continue;
        }
        let problem = |message: String| Problem { line: index + 1, message };
        let mut rest = line;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            let after = &rest[at..];
            if let Some(escaped) = after.strip_prefix("$${") {
                out.push_str("${");
                rest = escaped;
                continue;
            }
            let Some(reference) = after.strip_prefix("${") else {
                out.push('$');
                rest = &after[1..];
                continue;
            };
            let end = reference.find('}').ok_or_else(|| problem("`${` without its closing `}`".into()))?;
            let (name, default) = match reference[..end].split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (&reference[..end], None),
            };
            let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(problem(format!("`${{{name}}}` is not a variable name (letters, digits and `_`)")));
            }
            let value = match (env(name).filter(|v| !v.is_empty()), default) {
                (Some(value), _) => value,
                (None, Some(default)) => default.to_string(),
                (None, None) if env(name).is_some() => String::new(),
                (None, None) => {
                    return Err(problem(format!(
                        "environment variable {name} is not set (write `${{{name}:-default}}` for a default)"
                    )));
                }
            };
            if value.contains(['\n', '\r']) {
                return Err(problem(format!(
                    "environment variable {name} holds a line break, which a config line cannot"
                )));
            }
            out.push_str(&value);
            rest = &reference[end + 1..];
        }
        out.push_str(rest);
    }
    Ok(out)
}

/// The multi-line string a line leaves open, if any (TOML 1.0: `"""` basic, `'''` literal).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Open {
    Nothing,
    Basic,
    Literal,
}

impl Open {
    fn after(self, line: &str) -> Self {
        let bytes = line.as_bytes();
        let mut state = self;
        // One-line strings, which end with their line.
        let mut quoted: Option<u8> = None;
        let mut at = 0;
        while at < bytes.len() {
            let rest = &bytes[at..];
            match (state, quoted) {
                (Self::Nothing, None) => match rest {
                    [b'#', ..] => break,
                    [b'"', b'"', b'"', ..] => (state, at) = (Self::Basic, at + 2),
                    [b'\'', b'\'', b'\'', ..] => (state, at) = (Self::Literal, at + 2),
                    [quote @ (b'"' | b'\''), ..] => quoted = Some(*quote),
                    _ => {}
                },
                (Self::Nothing, Some(quote)) => match rest {
                    [b'\\', _, ..] if quote == b'"' => at += 1,
                    [byte, ..] if *byte == quote => quoted = None,
                    _ => {}
                },
                (Self::Basic, _) => match rest {
                    [b'\\', _, ..] => at += 1,
                    // A closing run of up to five quotes: the first one or two belong to the string.
                    [b'"', b'"', b'"', ..] => (state, at) = (Self::Nothing, at + run(rest, b'"') - 1),
                    _ => {}
                },
                (Self::Literal, _) => {
                    if rest.starts_with(b"'''") {
                        (state, at) = (Self::Nothing, at + run(rest, b'\'') - 1);
                    }
                }
            }
            at += 1;
        }
        state
    }
}

/// How many of `quote` `bytes` starts with, at most five (TOML: three close a string, two more may precede them).
fn run(bytes: &[u8], quote: u8) -> usize {
    bytes.iter().take(5).take_while(|byte| **byte == quote).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("db.internal".into()),
            "PASSWORD" => Some("s3cr\"et".into()),
            "EMPTY" => Some(String::new()),
            "MULTI" => Some("a\nb".into()),
            _ => None,
        }
    }

    #[test]
    fn references_are_replaced_and_defaults_taken_when_unset_or_empty() {
        let text = "target = \"${HOST}:${PORT:-5432}\"\nmode = \"${EMPTY:-fallback}\"\nraw = ${EMPTY}x\n";
        let expected = "target = \"db.internal:5432\"\nmode = \"fallback\"\nraw = x\n";
        assert_eq!(interpolate(text, env).unwrap(), expected);
    }

    #[test]
    fn escapes_comments_and_lone_dollars_stay_as_written() {
        let text = "pattern = \"^cost \\\\$[0-9]+$\"\nliteral = \"$${HOST}\"\n  # see ${UNSET}\nx = 1 # $5\n";
        let expected = "pattern = \"^cost \\\\$[0-9]+$\"\nliteral = \"${HOST}\"\n  # see ${UNSET}\nx = 1 # $5\n";
        assert_eq!(interpolate(text, env).unwrap(), expected);
    }

    #[test]
    fn a_hash_line_inside_a_multi_line_string_is_not_a_comment() {
        let text = "a = \"\"\"\n# ${HOST}\n\"\"\"\nb = '''\n  # ${HOST} \"\"\"\n'''\n# ${UNSET}\nc = \"'''#\" # '''\n# ${UNSET}\n";
        let expected = "a = \"\"\"\n# db.internal\n\"\"\"\nb = '''\n  # db.internal \"\"\"\n'''\n# ${UNSET}\nc = \"'''#\" # '''\n# ${UNSET}\n";
        assert_eq!(interpolate(text, env).unwrap(), expected);
        // Strings that end in quotes of their own: four or five quotes close them.
        let text = "x = [\"\"\"a\"\"\"\", \"\"\"b\n# ${HOST}\n\"\"\"\"\"]\n# ${UNSET}\ny = '''it's'''' # don't '''\n# ${UNSET}\n";
        let expected = "x = [\"\"\"a\"\"\"\", \"\"\"b\n# db.internal\n\"\"\"\"\"]\n# ${UNSET}\ny = '''it's'''' # don't '''\n# ${UNSET}\n";
        assert_eq!(interpolate(text, env).unwrap(), expected);
    }

    #[test]
    fn problems_name_the_line_and_the_variable_but_never_a_value() {
        let problem = |text: &str| interpolate(text, env).unwrap_err();
        let unset = problem("a = 1\nb = \"${UNSET}\"\n");
        assert_eq!(unset.line, 2);
        assert!(unset.message.contains("UNSET is not set"), "{}", unset.message);
        assert!(problem("a = \"${HOST\"\n").message.contains("without its closing"));
        assert!(problem("a = \"${9LIVES}\"\n").message.contains("not a variable name"));
        let multi = problem("a = \"x\"\n\nb = \"${MULTI}\"\n");
        assert_eq!(multi.line, 3);
        assert!(!multi.message.contains("a\nb"));
        // A value is put in as written, quotes and all: the operator's own environment.
        assert_eq!(interpolate("p = '${PASSWORD}'\n", env).unwrap(), "p = 's3cr\"et'\n");
    }
}
