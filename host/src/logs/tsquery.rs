//! The search text's syntax (words, `"a phrase"`, `prefix*`, `AND`, `OR`, `NOT`, parentheses: SQLite's FTS5
//! query syntax) as a PostgreSQL `tsquery`, for the full-text index of a PostgreSQL store. Words are matched
//! lower-cased, as the index (`to_tsvector('simple', ...)`) keeps them. `NOT` binds tightest, then `AND` (also
//! implied between terms), then `OR`, as in FTS5.

/// The `tsquery` text of a search, or why the search is not valid.
pub fn translate(text: &str) -> Result<String, String> {
    let tokens = tokens(text)?;
    if let Some(Token::Words(words, _)) =
        tokens.iter().find(|t| matches!(t, Token::Words(words, _) if words.iter().any(|w| w.len() > LONGEST_WORD)))
    {
        let long = words.iter().find(|w| w.len() > LONGEST_WORD).map_or(0, String::len);
        return Err(format!("a word of {long} bytes is longer than the {LONGEST_WORD} the index keeps"));
    }
    let mut parser = Parser { tokens, at: 0 };
    let query = parser.or()?;
    match parser.tokens.get(parser.at) {
        None => Ok(query),
        Some(token) => Err(format!("unexpected {}", token.describe())),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    /// Lower-cased words (several for a phrase), and whether the last is a prefix.
    Words(Vec<String>, bool),
    And,
    Or,
    Not,
    Open,
    Close,
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Self::Words(words, _) => format!("\"{}\"", words.join(" ")),
            Self::And => "AND".into(),
            Self::Or => "OR".into(),
            Self::Not => "NOT".into(),
            Self::Open => "\"(\"".into(),
            Self::Close => "\")\"".into(),
        }
    }
}

/// The words of a stretch of text: runs of letters and digits, as the index splits them (a bare term of several,
/// such as `user_id`, is a phrase of them, as in FTS5).
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect()
}

/// The longest word PostgreSQL's text search keeps, in bytes.
const LONGEST_WORD: usize = 2047;

fn tokens(text: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' | ')' => {
                chars.next();
                out.push(if c == '(' { Token::Open } else { Token::Close });
            }
            '"' => {
                chars.next();
                let mut phrase = String::new();
                loop {
                    match chars.next() {
                        None => return Err("unterminated string".into()),
                        // A doubled quote is a quote inside the phrase.
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            phrase.push('"');
                        }
                        Some('"') => break,
                        Some(c) => phrase.push(c),
                    }
                }
                let prefix = chars.next_if_eq(&'*').is_some();
                let words = words(&phrase);
                if !words.is_empty() {
                    out.push(Token::Words(words, prefix));
                }
            }
            _ => {
                let mut bare = String::new();
                while let Some(c) = chars.next_if(|c| c.is_alphanumeric() || *c == '_' || !c.is_ascii()) {
                    bare.push(c);
                }
                if bare.is_empty() {
                    return Err(format!("syntax error near \"{c}\""));
                }
                let prefix = chars.next_if_eq(&'*').is_some();
                let token = match bare.as_str() {
                    "AND" if !prefix => Token::And,
                    "OR" if !prefix => Token::Or,
                    "NOT" if !prefix => Token::Not,
                    // Symbols the index keeps no word of match nothing, and are left out.
                    _ if words(&bare).is_empty() => continue,
                    _ => Token::Words(words(&bare), prefix),
                };
                out.push(token);
            }
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn or(&mut self) -> Result<String, String> {
        let mut query = self.and()?;
        while self.peek() == Some(&Token::Or) {
            self.at += 1;
            query = format!("({query} | {})", self.and()?);
        }
        Ok(query)
    }

    fn and(&mut self) -> Result<String, String> {
        let mut query = self.not()?;
        loop {
            match self.peek() {
                Some(Token::And) => self.at += 1,
                Some(Token::Words(..) | Token::Open) => {}
                _ => return Ok(query),
            }
            query = format!("({query} & {})", self.not()?);
        }
    }

    fn not(&mut self) -> Result<String, String> {
        let mut query = self.primary()?;
        while self.peek() == Some(&Token::Not) {
            self.at += 1;
            query = format!("({query} & !{})", self.primary()?);
        }
        Ok(query)
    }

    fn primary(&mut self) -> Result<String, String> {
        let token = self.tokens.get(self.at).cloned().ok_or_else(|| "syntax error near the end".to_string())?;
        self.at += 1;
        match token {
            Token::Open => {
                let query = self.or()?;
                if self.peek() != Some(&Token::Close) {
                    return Err("syntax error: a \"(\" is not closed".into());
                }
                self.at += 1;
                Ok(query)
            }
            Token::Words(words, prefix) => {
                let last = words.len() - 1;
                let lexemes: Vec<String> = words
                    .iter()
                    .enumerate()
                    .map(|(i, word)| format!("'{word}'{}", if prefix && i == last { ":*" } else { "" }))
                    .collect();
                Ok(if lexemes.len() == 1 { lexemes.concat() } else { format!("({})", lexemes.join(" <-> ")) })
            }
            other => Err(format!("syntax error near {}", other.describe())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::translate;

    #[test]
    fn searches_become_tsqueries_with_fts5_precedence() {
        for (search, tsquery) in [
            ("Timeout", "'timeout'"),
            ("connection refused", "('connection' & 'refused')"),
            ("\"connection refused\"", "('connection' <-> 'refused')"),
            ("conn*", "'conn':*"),
            ("\"database conn\"*", "('database' <-> 'conn':*)"),
            ("a OR b c", "('a' | ('b' & 'c'))"),
            ("a AND b OR c", "(('a' & 'b') | 'c')"),
            ("error NOT debug", "('error' & !'debug')"),
            ("(a OR b) NOT c", "(('a' | 'b') & !'c')"),
            ("user_id42 café", "(('user' <-> 'id42') & 'café')"),
            ("\"say \"\"hi\"\"\"", "('say' <-> 'hi')"),
            ("deploy ✓", "'deploy'"),
        ] {
            assert_eq!(translate(search).as_deref(), Ok(tsquery), "{search}");
        }
    }

    #[test]
    fn malformed_searches_say_what_is_wrong() {
        for (search, says) in [
            ("\"open", "unterminated string"),
            ("(a OR b", "not closed"),
            ("a OR", "near the end"),
            ("AND a", "near AND"),
            ("a)", "unexpected \")\""),
            ("a - b", "near \"-\""),
            (&"x".repeat(3000), "a word of 3000 bytes"),
            ("", "near the end"),
        ] {
            let error = translate(search).unwrap_err();
            assert!(error.contains(says), "{search}: {error}");
        }
    }
}
