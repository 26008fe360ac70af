//! The language of alert conditions: an aggregation over a metric and a window, arithmetic, and a comparison.
//!
//! ```text
//! avg(check_duration_seconds{check="openai"}[5m]) > 5
//! rate(log_errors_total[1m]) * 60 > 10
//! last(system_memory_used_ratio) > 0.9
//! user_error_rate > 5                      # a bare metric is its latest value
//! ```
//!
//! The grammar:
//!
//! ```text
//! condition := sum [comparison number]
//! sum       := product (("+" | "-") product)*
//! product   := unary (("*" | "/") unary)*
//! unary     := "-" unary | number | "(" sum ")" | function "(" selector ")" | selector
//! selector  := metric ["{" matcher ("," matcher)* [","] "}"] ["[" duration "]"]
//! matcher   := label ("=" | "!=") "string"
//! function  := avg | min | max | sum | count | last | rate | increase
//! duration  := (digits ("ms" | "s" | "m" | "h" | "d" | "w"))+          # 5m, 1h30m
//! ```
//!
//! The comparison may be left out when the rule gives a threshold of its own (then the condition is "above the
//! threshold"). Errors carry the column where parsing stopped.

use std::fmt;
use std::time::Duration;

/// A parsed condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub expr: Expr,
    /// `> 5`; absent when the condition is only the value to compare.
    pub comparison: Option<(Comparison, f64)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Number(f64),
    /// An aggregation of one metric's samples; a bare metric is [`Function::Last`].
    Series {
        function: Function,
        selector: Selector,
    },
    Negate(Box<Expr>),
    Binary(Box<Expr>, Operator, Box<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    Avg,
    Min,
    Max,
    Sum,
    Count,
    Last,
    /// Increase per second over the range, counter resets allowed for.
    Rate,
    /// Increase over the range, counter resets allowed for.
    Increase,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    Add,
    Subtract,
    Multiply,
    Divide,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    Greater,
    GreaterOrEqual,
    Less,
    LessOrEqual,
    Equal,
    NotEqual,
}

/// A metric name, label matchers, and the window of samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    pub metric: String,
    pub matchers: Vec<Matcher>,
    pub range: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher {
    pub label: String,
    pub equal: bool,
    pub value: String,
}

/// Why a condition does not parse, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based, in characters.
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at column {}: {}", self.column, self.message)
    }
}

impl std::error::Error for ParseError {}

/// The longest condition accepted, in bytes.
pub const MAX_LENGTH: usize = 1024;
/// The deepest nesting of parentheses and operators accepted.
const MAX_DEPTH: usize = 32;

impl Condition {
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        if text.len() > MAX_LENGTH {
            return Err(ParseError { column: 1, message: format!("longer than {MAX_LENGTH} bytes") });
        }
        let mut parser = Parser { chars: text.chars().collect(), at: 0, depth: 0 };
        parser.skip_space();
        if parser.at == parser.chars.len() {
            return Err(parser.error("the condition is empty"));
        }
        let expr = parser.sum()?;
        let comparison = match parser.comparison() {
            Some(comparison) => {
                parser.skip_space();
                let number = parser.signed_number().ok_or_else(|| parser.error("expected a number to compare with"))?;
                Some((comparison, number))
            }
            None => None,
        };
        parser.skip_space();
        if let Some(c) = parser.peek() {
            return Err(parser.error(&format!("unexpected `{c}`")));
        }
        Ok(Self { expr, comparison })
    }

    /// Every metric the condition reads.
    pub fn selectors(&self) -> Vec<&Selector> {
        fn walk<'a>(expr: &'a Expr, out: &mut Vec<&'a Selector>) {
            match expr {
                Expr::Number(_) => {}
                Expr::Series { selector, .. } => out.push(selector),
                Expr::Negate(inner) => walk(inner, out),
                Expr::Binary(left, _, right) => {
                    walk(left, out);
                    walk(right, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.expr, &mut out);
        out
    }
}

impl Expr {
    /// The expression's value, with `series` giving each aggregation's. `None` when a series has no value or the
    /// arithmetic has no finite result (a division by zero): a condition without a value does not hold.
    pub fn evaluate(&self, series: &mut impl FnMut(Function, &Selector) -> Option<f64>) -> Option<f64> {
        let value = match self {
            Self::Number(number) => *number,
            Self::Series { function, selector } => series(*function, selector)?,
            Self::Negate(inner) => -inner.evaluate(series)?,
            Self::Binary(left, operator, right) => {
                let (left, right) = (left.evaluate(series)?, right.evaluate(series)?);
                match operator {
                    Operator::Add => left + right,
                    Operator::Subtract => left - right,
                    Operator::Multiply => left * right,
                    Operator::Divide => left / right,
                }
            }
        };
        value.is_finite().then_some(value)
    }
}

impl Comparison {
    /// Whether `value` compares so with `threshold`.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Self::Greater => value > threshold,
            Self::GreaterOrEqual => value >= threshold,
            Self::Less => value < threshold,
            Self::LessOrEqual => value <= threshold,
            Self::Equal => value == threshold,
            Self::NotEqual => value != threshold,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Greater => ">",
            Self::GreaterOrEqual => ">=",
            Self::Less => "<",
            Self::LessOrEqual => "<=",
            Self::Equal => "==",
            Self::NotEqual => "!=",
        }
    }
}

impl Function {
    const ALL: [(&'static str, Self); 8] = [
        ("avg", Self::Avg),
        ("min", Self::Min),
        ("max", Self::Max),
        ("sum", Self::Sum),
        ("count", Self::Count),
        ("last", Self::Last),
        ("rate", Self::Rate),
        ("increase", Self::Increase),
    ];

    pub fn as_str(self) -> &'static str {
        Self::ALL.iter().find(|(_, f)| *f == self).map_or("?", |(name, _)| name)
    }
}

struct Parser {
    chars: Vec<char>,
    at: usize,
    depth: usize,
}

impl Parser {
    fn error(&self, message: &str) -> ParseError {
        ParseError { column: self.at + 1, message: message.to_string() }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.at += 1;
        }
    }

    /// Consume `token` (after spaces) if it is next.
    fn eat(&mut self, token: &str) -> bool {
        self.skip_space();
        let end = self.at + token.chars().count();
        if end <= self.chars.len() && self.chars[self.at..end].iter().copied().eq(token.chars()) {
            self.at = end;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, token: &str, what: &str) -> Result<(), ParseError> {
        if self.eat(token) { Ok(()) } else { Err(self.error(&format!("expected `{token}` {what}"))) }
    }

    fn nest(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH { Err(self.error("nested too deeply")) } else { Ok(()) }
    }

    fn sum(&mut self) -> Result<Expr, ParseError> {
        self.nest()?;
        let mut left = self.product()?;
        loop {
            let operator = if self.eat("+") {
                Operator::Add
            } else if self.eat("-") {
                Operator::Subtract
            } else {
                break;
            };
            left = Expr::Binary(Box::new(left), operator, Box::new(self.product()?));
        }
        self.depth -= 1;
        Ok(left)
    }

    fn product(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.unary()?;
        loop {
            let operator = if self.eat("*") {
                Operator::Multiply
            } else if self.eat("/") {
                Operator::Divide
            } else {
                break;
            };
            left = Expr::Binary(Box::new(left), operator, Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        self.skip_space();
        if self.eat("-") {
            self.nest()?;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(Expr::Negate(Box::new(inner)));
        }
        if self.eat("(") {
            let inner = self.sum()?;
            self.expect(")", "to close the parenthesis")?;
            return Ok(inner);
        }
        self.skip_space();
        if let Some(number) = self.number() {
            return Ok(Expr::Number(number));
        }
        let start = self.at;
        let Some(name) = self.name() else {
            return Err(match self.peek() {
                Some(c) => self.error(&format!("expected a metric, a function, a number or `(`, found `{c}`")),
                None => self.error("expected a metric, a function, a number or `(`, found the end"),
            });
        };
        let function = Function::ALL.iter().find(|(n, _)| *n == name).map(|(_, f)| *f);
        match function {
            Some(function) if self.eat("(") => {
                self.skip_space();
                let selector_at = self.at;
                let selector = self.selector()?;
                self.expect(")", &format!("to close `{name}(`"))?;
                if selector.range.is_none() && !matches!(function, Function::Last) {
                    return Err(ParseError {
                        column: selector_at + 1,
                        message: format!("`{name}` needs a range, such as `{}[5m]`", selector.metric),
                    });
                }
                Ok(Expr::Series { function, selector })
            }
            None if self.peek() == Some('(') => Err(ParseError {
                column: start + 1,
                message: format!(
                    "`{name}` is not a function: use {}",
                    Function::ALL.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                ),
            }),
            _ => {
                self.at = start;
                let selector = self.selector()?;
                if selector.range.is_some() {
                    return Err(ParseError {
                        column: start + 1,
                        message: format!(
                            "a range selects many samples: aggregate it, as in `avg({}[...])`",
                            selector.metric
                        ),
                    });
                }
                Ok(Expr::Series { function: Function::Last, selector })
            }
        }
    }

    fn selector(&mut self) -> Result<Selector, ParseError> {
        let metric = self.name().ok_or_else(|| self.error("expected a metric name"))?;
        let mut matchers = Vec::new();
        if self.peek() == Some('{') {
            self.at += 1;
            loop {
                self.skip_space();
                if self.eat("}") {
                    break;
                }
                let label = self.name().ok_or_else(|| self.error("expected a label name"))?;
                let equal = if self.eat("!=") {
                    false
                } else if self.eat("=") {
                    true
                } else {
                    return Err(self.error(&format!("expected `=` or `!=` after label `{label}`")));
                };
                self.skip_space();
                let value = self.string()?;
                matchers.push(Matcher { label, equal, value });
                if !self.eat(",") {
                    self.expect("}", "to close the label matchers")?;
                    break;
                }
            }
        }
        let range = if self.peek() == Some('[') {
            self.at += 1;
            self.skip_space();
            let range = self.duration()?;
            self.expect("]", "to close the range")?;
            Some(range)
        } else {
            None
        };
        Ok(Selector { metric, matchers, range })
    }

    /// A metric or label name: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
    fn name(&mut self) -> Option<String> {
        let start = self.at;
        if !self.peek().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':') {
            return None;
        }
        while self.peek().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            self.at += 1;
        }
        Some(self.chars[start..self.at].iter().collect())
    }

    fn string(&mut self) -> Result<String, ParseError> {
        if self.peek() != Some('"') {
            return Err(self.error("expected a quoted value, such as \"openai\""));
        }
        let start = self.at;
        self.at += 1;
        let mut value = String::new();
        loop {
            match self.peek() {
                None => {
                    self.at = start;
                    return Err(self.error("the quoted value is not closed"));
                }
                Some('"') => {
                    self.at += 1;
                    return Ok(value);
                }
                Some('\\') => {
                    self.at += 1;
                    match self.peek() {
                        Some(c @ ('"' | '\\')) => value.push(c),
                        _ => return Err(self.error("only \\\" and \\\\ may be escaped")),
                    }
                    self.at += 1;
                }
                Some(c) => {
                    value.push(c);
                    self.at += 1;
                }
            }
        }
    }

    /// An unsigned decimal number: `5`, `0.9`, `1e3`.
    fn number(&mut self) -> Option<f64> {
        let start = self.at;
        while self.peek().is_some_and(|c| c.is_ascii_digit() || c == '.') {
            self.at += 1;
        }
        if self.at > start && matches!(self.peek(), Some('e' | 'E')) {
            let mark = self.at;
            self.at += 1;
            if matches!(self.peek(), Some('+' | '-')) {
                self.at += 1;
            }
            if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.at = mark;
            }
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.at += 1;
            }
        }
        let text: String = self.chars[start..self.at].iter().collect();
        match text.parse::<f64>() {
            Ok(number) if number.is_finite() => Some(number),
            _ => {
                self.at = start;
                None
            }
        }
    }

    fn signed_number(&mut self) -> Option<f64> {
        if self.eat("-") {
            self.skip_space();
            self.number().map(|n| -n)
        } else {
            self.number()
        }
    }

    fn comparison(&mut self) -> Option<Comparison> {
        [
            (">=", Comparison::GreaterOrEqual),
            ("<=", Comparison::LessOrEqual),
            ("==", Comparison::Equal),
            ("!=", Comparison::NotEqual),
            (">", Comparison::Greater),
            ("<", Comparison::Less),
        ]
        .into_iter()
        .find(|(token, _)| self.eat(token))
        .map(|(_, comparison)| comparison)
    }

    /// `5m`, `1h30m`, `500ms`.
    fn duration(&mut self) -> Result<Duration, ParseError> {
        let start = self.at;
        let mut total = Duration::ZERO;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            let digits_at = self.at;
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.at += 1;
            }
            let count: u64 = self.chars[digits_at..self.at]
                .iter()
                .collect::<String>()
                .parse()
                .map_err(|_| self.error("the duration is too long"))?;
            let unit = if self.eat("ms") {
                Duration::from_millis(1)
            } else if self.eat("s") {
                Duration::from_secs(1)
            } else if self.eat("m") {
                Duration::from_secs(60)
            } else if self.eat("h") {
                Duration::from_secs(3600)
            } else if self.eat("d") {
                Duration::from_secs(86_400)
            } else if self.eat("w") {
                Duration::from_secs(604_800)
            } else {
                return Err(self.error("expected a unit: ms, s, m, h, d or w"));
            };
            let part = u32::try_from(count)
                .ok()
                .and_then(|count| unit.checked_mul(count))
                .ok_or_else(|| self.error("the duration is too long"))?;
            total = total.checked_add(part).ok_or_else(|| self.error("the duration is too long"))?;
        }
        if self.at == start {
            return Err(self.error("expected a duration, such as 5m"));
        }
        if total.is_zero() {
            self.at = start;
            return Err(self.error("the range must be longer than zero"));
        }
        Ok(total)
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.metric)?;
        if !self.matchers.is_empty() {
            let matchers: Vec<String> = self
                .matchers
                .iter()
                .map(|m| {
                    let value = m.value.replace('\\', "\\\\").replace('"', "\\\"");
                    format!("{}{}\"{value}\"", m.label, if m.equal { "=" } else { "!=" })
                })
                .collect();
            write!(f, "{{{}}}", matchers.join(","))?;
        }
        if let Some(range) = self.range {
            if range.subsec_millis() == 0 && range.subsec_nanos() == 0 {
                write!(f, "[{}s]", range.as_secs())?;
            } else {
                write!(f, "[{}ms]", range.as_millis())?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selector(metric: &str, matchers: &[(&str, &str)], range: Option<u64>) -> Selector {
        Selector {
            metric: metric.into(),
            matchers: matchers
                .iter()
                .map(|(label, value)| Matcher { label: (*label).into(), equal: true, value: (*value).into() })
                .collect(),
            range: range.map(Duration::from_secs),
        }
    }

    #[test]
    fn the_documented_examples_parse() {
        let openai = Condition::parse(r#"avg(check_duration_seconds{check="openai"}[5m]) > 5"#).unwrap();
        assert_eq!(
            openai,
            Condition {
                expr: Expr::Series {
                    function: Function::Avg,
                    selector: selector("check_duration_seconds", &[("check", "openai")], Some(300)),
                },
                comparison: Some((Comparison::Greater, 5.0)),
            }
        );
        let errors = Condition::parse("rate(log_errors_total[1m]) * 60 > 10").unwrap();
        assert_eq!(
            errors.expr,
            Expr::Binary(
                Box::new(Expr::Series {
                    function: Function::Rate,
                    selector: selector("log_errors_total", &[], Some(60))
                }),
                Operator::Multiply,
                Box::new(Expr::Number(60.0)),
            )
        );
        assert_eq!(
            Condition::parse("last(system_memory_used_ratio) > 0.9").unwrap().comparison,
            Some((Comparison::Greater, 0.9))
        );
        let bare = Condition::parse("user_error_rate > 5").unwrap();
        assert_eq!(
            bare.expr,
            Expr::Series { function: Function::Last, selector: selector("user_error_rate", &[], None) }
        );
        assert_eq!(bare.selectors().len(), 1);
    }

    #[test]
    fn arithmetic_binds_as_usual_and_the_comparison_is_optional() {
        let c = Condition::parse("1 + 2 * -x{a!=\"b\\\"c\",} <= -3e2").unwrap();
        let Expr::Binary(left, Operator::Add, right) = &c.expr else { panic!("{c:?}") };
        assert_eq!(**left, Expr::Number(1.0));
        let Expr::Binary(_, Operator::Multiply, negated) = &**right else { panic!("{right:?}") };
        let Expr::Negate(series) = &**negated else { panic!("{negated:?}") };
        let Expr::Series { selector, .. } = &**series else { panic!("{series:?}") };
        assert_eq!(selector.matchers, [Matcher { label: "a".into(), equal: false, value: "b\"c".into() }]);
        assert_eq!(c.comparison, Some((Comparison::LessOrEqual, -300.0)));
        assert_eq!(Condition::parse("max(cpu[1h30m])").unwrap().comparison, None);
        assert_eq!(
            Condition::parse("(a + b) / 2 == 1").unwrap().selectors().iter().map(|s| &s.metric).collect::<Vec<_>>(),
            ["a", "b"]
        );
    }

    #[test]
    fn errors_say_what_and_where() {
        let error = |text: &str| Condition::parse(text).unwrap_err().to_string();
        assert_eq!(error(""), "at column 1: the condition is empty");
        assert_eq!(error("avg(latency) > 5"), "at column 5: `avg` needs a range, such as `latency[5m]`");
        assert_eq!(
            error("latency[5m] > 5"),
            "at column 1: a range selects many samples: aggregate it, as in `avg(latency[...])`"
        );
        assert_eq!(error("avg(latency[5]) > 5"), "at column 14: expected a unit: ms, s, m, h, d or w");
        assert_eq!(error("avg(latency[0s]) > 5"), "at column 13: the range must be longer than zero");
        assert_eq!(error("x{check=openai} > 5"), "at column 9: expected a quoted value, such as \"openai\"");
        assert_eq!(error("x{check=\"openai} > 5"), "at column 9: the quoted value is not closed");
        assert_eq!(error("x > "), "at column 5: expected a number to compare with");
        assert_eq!(error("x > 5 5"), "at column 7: unexpected `5`");
        assert_eq!(error("(x > 5"), "at column 4: expected `)` to close the parenthesis");
        assert_eq!(error("x >> 5"), "at column 4: expected a number to compare with");
        assert_eq!(error("> 5"), "at column 1: expected a metric, a function, a number or `(`, found `>`");
        assert_eq!(
            error("median(x[5m]) > 1"),
            "at column 1: `median` is not a function: use avg, min, max, sum, count, last, rate, increase"
        );
        assert!(error(&"(".repeat(100)).ends_with("nested too deeply"));
        assert!(error(&"x".repeat(2000)).ends_with(&format!("longer than {MAX_LENGTH} bytes")));
    }

    #[test]
    fn selectors_print_back_as_they_parse() {
        let c = Condition::parse(r#"avg(d{check="a\"b"}[90s]) > 1"#).unwrap();
        let printed = c.selectors()[0].to_string();
        assert_eq!(printed, r#"d{check="a\"b"}[90s]"#);
        assert_eq!(Condition::parse(&format!("avg({printed})")).unwrap().selectors()[0], c.selectors()[0]);
        let fine = Condition::parse("avg(d[1500ms])").unwrap();
        assert_eq!(fine.selectors()[0].to_string(), "d[1500ms]");
    }

    #[test]
    fn evaluation_follows_precedence_and_refuses_what_has_no_value() {
        let c = Condition::parse("rate(errors[1m]) * 60 - -2 / x > 10").unwrap();
        let mut values = |function: Function, selector: &Selector| match (function, selector.metric.as_str()) {
            (Function::Rate, "errors") => Some(0.25),
            (Function::Last, "x") => Some(4.0),
            _ => None,
        };
        assert_eq!(c.expr.evaluate(&mut values), Some(15.5));
        let (comparison, threshold) = c.comparison.unwrap();
        assert!(comparison.holds(15.5, threshold) && !comparison.holds(10.0, threshold));
        assert_eq!(Condition::parse("y + 1").unwrap().expr.evaluate(&mut values), None);
        assert_eq!(Condition::parse("1 / (x - 4)").unwrap().expr.evaluate(&mut values), None);
        assert!(Comparison::NotEqual.holds(1.0, 2.0) && Comparison::LessOrEqual.holds(2.0, 2.0));
    }
}

/// Fuzz targets (`scripts/fuzz` runs them for as long as it is given; the suite runs them briefly).
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    /// A selector in the language, with the label value it matches.
    fn selector() -> impl Strategy<Value = (String, String)> {
        let function = prop::sample::select(&["avg", "min", "max", "sum", "count", "last", "rate", "increase"][..]);
        let unit = prop::sample::select(&["s", "m", "h", "d"][..]);
        (function, "[a-z_][a-z0-9_]{0,20}", ".{0,12}", 1u32..1000, unit).prop_map(
            |(function, metric, value, n, unit)| {
                let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
                (format!("{function}({metric}{{check=\"{escaped}\"}}[{n}{unit}])"), value)
            },
        )
    }

    /// An expression: numbers and selectors under arithmetic, negation and parentheses; with every label value in it.
    fn expression() -> impl Strategy<Value = (String, Vec<String>)> {
        let leaf = prop_oneof![
            (0u32..100_000).prop_map(|n| (n.to_string(), Vec::new())),
            selector().prop_map(|(text, value)| (text, vec![value])),
        ];
        leaf.prop_recursive(4, 16, 2, |inner| {
            prop_oneof![
                (inner.clone(), prop::sample::select(&["+", "-", "*", "/"][..]), inner.clone()).prop_map(
                    |((a, mut values), op, (b, more))| {
                        values.extend(more);
                        (format!("{a} {op} {b}"), values)
                    }
                ),
                inner.clone().prop_map(|(text, values)| (format!("({text})"), values)),
                inner.prop_map(|(text, values)| (format!("-({text})"), values)),
            ]
        })
    }

    fn label_values(expr: &Expr, into: &mut Vec<String>) {
        match expr {
            Expr::Number(_) => {}
            Expr::Series { selector, .. } => into.extend(selector.matchers.iter().map(|m| m.value.clone())),
            Expr::Negate(inner) => label_values(inner, into),
            Expr::Binary(a, _, b) => {
                label_values(a, into);
                label_values(b, into);
            }
        }
    }

    proptest! {
        /// Any text parses or is refused at a column inside it: never a panic.
        #[test]
        fn any_text(text in any::<String>()) {
            if let Err(error) = Condition::parse(&text) {
                prop_assert!(error.column >= 1 && error.column <= text.chars().count() + 1, "{error} in {text:?}");
            }
        }

        /// Every condition the language allows parses, with its threshold and every label value as written.
        #[test]
        fn every_condition_parses((text, values) in expression(), threshold in 0u32..1_000_000) {
            let condition = format!("{text} >= {threshold}");
            prop_assume!(condition.len() <= MAX_LENGTH);
            let parsed = Condition::parse(&condition);
            prop_assert!(parsed.is_ok(), "{condition}: {parsed:?}");
            let parsed = parsed.unwrap();
            prop_assert_eq!(parsed.comparison, Some((Comparison::GreaterOrEqual, f64::from(threshold))));
            let mut found = Vec::new();
            label_values(&parsed.expr, &mut found);
            prop_assert_eq!(found, values);
        }
    }
}
