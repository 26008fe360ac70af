//! The expression rule: a condition in selfmon's condition language, evaluated against the stored metrics.
//!
//! ```toml
//! [[rule]]
//! name = "slow_openai"
//! condition = 'avg(check_duration_seconds{check="openai"}[5m]) > 5'
//! ```
//!
//! A condition that reads one metric is evaluated per series, Prometheus-style: `avg(check_duration_seconds[5m]) > 5`
//! raises one alert per check that is slow, labelled with the series' labels. With `series = "all"` (in the rule's
//! `config`), and always for a condition that reads several metrics, each metric is aggregated over all its
//! matching series and at most one alert is raised. A metric without a window
//! (`user_error_rate > 5`, `last(x)`) is its newest sample of the last hour. A condition without a value (no
//! samples yet, a division by zero) does not hold: a rule over a metric nobody reports stays quiet.

use std::time::Duration;

use selfmon_condition::{Comparison, Condition, Function, Selector};
use selfmon_sdk::prelude::*;
use selfmon_sdk::rule::{Aggregation, Alert, Context, Rule, SeriesValue, Severity, query};

/// How far back a metric without a window looks for its newest sample.
pub const LATEST_WITHIN: Duration = Duration::from_secs(3600);

pub struct Expression;

#[derive(Deserialize)]
pub struct Config {
    pub condition: String,
    pub threshold: Option<f64>,
    /// `each`: a condition over one metric is evaluated per series; `all`: over all its series together.
    #[serde(default)]
    pub series: Series,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Series {
    #[default]
    Each,
    All,
}

impl Rule for Expression {
    type Config = Config;

    fn info() -> PluginInfo {
        PluginInfo::new(
            "expression",
            env!("CARGO_PKG_VERSION"),
            "A condition over stored metrics, such as `avg(check_duration_seconds[5m]) > 5`",
        )
        .config(
            Setting::text("condition", "An aggregation over a metric and window, arithmetic, and a comparison")
                .required(),
        )
        .config(Setting::number(
            "threshold",
            "What the condition's value is compared with when it has no comparison of its own",
        ))
        .config(
            Setting::text(
                "series",
                "`each`: a condition over one metric raises an alert per series; `all`: its series taken together",
            )
            .default("each"),
        )
    }

    fn validate(config: &Config) -> Result<(), Error> {
        Parsed::new(config)?;
        Ok(())
    }

    fn evaluate(config: Config, _: &Context) -> Result<Vec<Alert>, Error> {
        Ok(Parsed::new(&config)?.evaluate(&Stored))
    }
}

selfmon_sdk::export_rule!(Expression);

/// Where the metrics come from: the host's query interface, or a test's table.
pub trait Metrics {
    fn aggregate(
        &self,
        metric: &str,
        matchers: &[(&str, &str)],
        aggregation: Aggregation,
        window: Duration,
    ) -> Option<f64>;
    fn aggregate_series(
        &self,
        metric: &str,
        matchers: &[(&str, &str)],
        aggregation: Aggregation,
        window: Duration,
    ) -> Vec<SeriesValue>;
}

struct Stored;

impl Metrics for Stored {
    fn aggregate(
        &self,
        metric: &str,
        matchers: &[(&str, &str)],
        aggregation: Aggregation,
        window: Duration,
    ) -> Option<f64> {
        query::aggregate(metric, matchers, aggregation, window)
    }

    fn aggregate_series(
        &self,
        metric: &str,
        matchers: &[(&str, &str)],
        aggregation: Aggregation,
        window: Duration,
    ) -> Vec<SeriesValue> {
        query::aggregate_series(metric, matchers, aggregation, window)
    }
}

/// A condition ready to evaluate.
pub struct Parsed {
    text: String,
    condition: Condition,
    comparison: Comparison,
    threshold: f64,
    series: Series,
}

impl Parsed {
    pub fn new(config: &Config) -> Result<Self, String> {
        let condition = Condition::parse(&config.condition).map_err(|e| format!("`condition` {e}"))?;
        let (comparison, threshold) = match (condition.comparison, config.threshold) {
            (Some((comparison, number)), None) => (comparison, number),
            (Some((comparison, number)), Some(threshold)) if number == threshold => (comparison, number),
            (Some((_, number)), Some(threshold)) => {
                return Err(format!("`condition` compares with {number} but `threshold` is {threshold}"));
            }
            (None, Some(threshold)) => (Comparison::Greater, threshold),
            (None, None) => {
                return Err("`condition` has no comparison (such as `> 5`) and there is no `threshold`".into());
            }
        };
        let selectors = condition.selectors();
        let several = selectors.iter().any(|s| s.metric != selectors[0].metric || s.matchers != selectors[0].matchers);
        let all = several || config.series == Series::All;
        if all && selectors.iter().any(|s| s.matchers.iter().any(|m| !m.equal)) {
            return Err("`!=` works only in conditions over one metric evaluated per series".into());
        }
        Ok(Self { text: config.condition.trim().to_string(), condition, comparison, threshold, series: config.series })
    }

    /// One alert per series (or one in all) for which the condition holds.
    pub fn evaluate(&self, metrics: &impl Metrics) -> Vec<Alert> {
        let selectors = self.condition.selectors();
        let one_series = selectors.windows(2).all(|w| w[0].metric == w[1].metric && w[0].matchers == w[1].matchers);
        match selectors.first() {
            Some(first) if one_series && self.series == Series::Each => self.per_series(first, metrics),
            _ => {
                let value = self.condition.expr.evaluate(&mut |function, selector| {
                    let equal = equal_matchers(selector);
                    metrics.aggregate(&selector.metric, &pairs(&equal), aggregation(function), window(selector))
                });
                value
                    .filter(|v| self.comparison.holds(*v, self.threshold))
                    .map(|v| self.alert(v, &[]))
                    .into_iter()
                    .collect()
            }
        }
    }

    /// Each series of the one metric the condition reads, with every aggregation in it applied to that series.
    fn per_series(&self, first: &Selector, metrics: &impl Metrics) -> Vec<Alert> {
        let equal = equal_matchers(first);
        let excluded: Vec<(&str, &str)> =
            first.matchers.iter().filter(|m| !m.equal).map(|m| (m.label.as_str(), m.value.as_str())).collect();
        // Each series' labels, and the value of every aggregation of it the condition uses.
        let mut by_labels: Vec<(Labels, Vec<Aggregated>)> = Vec::new();
        for selector in self.condition.selectors() {
            let function = aggregation_of(&self.condition, selector);
            for function in function {
                let window = window(selector);
                for series in metrics.aggregate_series(&selector.metric, &pairs(&equal), aggregation(function), window)
                {
                    if excluded.iter().any(|(label, value)| series.label(label) == Some(value)) {
                        continue;
                    }
                    let mut labels = series.labels.clone();
                    labels.sort();
                    match by_labels.iter_mut().find(|(l, _)| *l == labels) {
                        Some((_, values)) => values.push((function, window, series.value)),
                        None => by_labels.push((labels, vec![(function, window, series.value)])),
                    }
                }
            }
        }
        by_labels
            .into_iter()
            .filter_map(|(labels, values)| {
                let value = self.condition.expr.evaluate(&mut |function, selector| {
                    values.iter().find(|(f, w, _)| *f == function && *w == window(selector)).map(|(_, _, v)| *v)
                })?;
                self.comparison.holds(value, self.threshold).then(|| self.alert(value, &labels))
            })
            .collect()
    }

    fn alert(&self, value: f64, labels: &[(String, String)]) -> Alert {
        let shown: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let of = if shown.is_empty() { String::new() } else { format!(" for {}", shown.join(", ")) };
        let summary =
            format!("{} is {}{of} ({} {})", self.subject(), round(value), self.comparison.as_str(), self.threshold);
        let mut alert =
            Alert::new(Severity::High, summary).annotation("value", round(value)).annotation("condition", &self.text);
        for (name, value) in labels {
            alert = alert.label(name, value);
        }
        alert
    }

    /// The condition without its comparison.
    fn subject(&self) -> &str {
        match self.condition.comparison {
            Some((comparison, _)) => {
                self.text.rsplit_once(comparison.as_str()).map_or(&self.text, |(left, _)| left.trim_end())
            }
            None => &self.text,
        }
    }
}

type Labels = Vec<(String, String)>;

/// A series' value under one function and window.
type Aggregated = (Function, Duration, f64);

/// Every function applied to `selector` in the condition (a metric may appear as `max(x[5m]) - min(x[5m])`).
fn aggregation_of(condition: &Condition, selector: &Selector) -> Vec<Function> {
    fn walk(expr: &selfmon_condition::Expr, selector: &Selector, out: &mut Vec<Function>) {
        use selfmon_condition::Expr;
        match expr {
            Expr::Number(_) => {}
            Expr::Series { function, selector: s } if s == selector && !out.contains(function) => out.push(*function),
            Expr::Series { .. } => {}
            Expr::Negate(inner) => walk(inner, selector, out),
            Expr::Binary(left, _, right) => {
                walk(left, selector, out);
                walk(right, selector, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&condition.expr, selector, &mut out);
    out
}

fn equal_matchers(selector: &Selector) -> Vec<(String, String)> {
    selector.matchers.iter().filter(|m| m.equal).map(|m| (m.label.clone(), m.value.clone())).collect()
}

fn pairs(owned: &[(String, String)]) -> Vec<(&str, &str)> {
    owned.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

fn window(selector: &Selector) -> Duration {
    selector.range.unwrap_or(LATEST_WITHIN)
}

fn aggregation(function: Function) -> Aggregation {
    match function {
        Function::Avg => Aggregation::Avg,
        Function::Min => Aggregation::Min,
        Function::Max => Aggregation::Max,
        Function::Sum => Aggregation::Sum,
        Function::Count => Aggregation::Count,
        Function::Last => Aggregation::Last,
        Function::Rate => Aggregation::Rate,
        Function::Increase => Aggregation::Increase,
    }
}

/// A value as people read it: at most four significant decimals.
fn round(value: f64) -> String {
    let text = format!("{value:.4}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" { "0".into() } else { text.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Metric name, labels, aggregation and value.
    type Row = (&'static str, Vec<(&'static str, &'static str)>, Aggregation, f64);

    /// Series by metric name: labels and one value per aggregation.
    struct Table(Vec<Row>);

    impl Metrics for Table {
        fn aggregate(
            &self,
            metric: &str,
            matchers: &[(&str, &str)],
            aggregation: Aggregation,
            _: Duration,
        ) -> Option<f64> {
            let values: Vec<f64> =
                self.aggregate_series(metric, matchers, aggregation, Duration::ZERO).iter().map(|s| s.value).collect();
            (!values.is_empty()).then(|| values.iter().sum())
        }

        fn aggregate_series(
            &self,
            metric: &str,
            matchers: &[(&str, &str)],
            aggregation: Aggregation,
            _: Duration,
        ) -> Vec<SeriesValue> {
            self.0
                .iter()
                .filter(|(m, labels, a, _)| {
                    *m == metric && *a == aggregation && matchers.iter().all(|pair| labels.contains(pair))
                })
                .map(|(_, labels, _, value)| SeriesValue {
                    labels: labels.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect(),
                    value: *value,
                })
                .collect()
        }
    }

    fn parsed(condition: &str, threshold: Option<f64>) -> Parsed {
        Parsed::new(&Config { condition: condition.into(), threshold, series: Series::Each }).unwrap()
    }

    #[test]
    fn one_alert_per_series_that_holds() {
        let table = Table(vec![
            ("check_duration_seconds", vec![("check", "openai"), ("plugin", "openai")], Aggregation::Avg, 7.25),
            ("check_duration_seconds", vec![("check", "db"), ("plugin", "postgres")], Aggregation::Avg, 0.1),
            ("check_duration_seconds", vec![("check", "claude"), ("plugin", "anthropic")], Aggregation::Avg, 5.5),
        ]);
        let alerts = parsed("avg(check_duration_seconds[5m]) > 5", None).evaluate(&table);
        assert_eq!(alerts.len(), 2);
        assert_eq!(
            alerts[0].labels(),
            [("check".to_string(), "openai".to_string()), ("plugin".into(), "openai".into())]
        );
        assert_eq!(
            alerts[0].summary(),
            "avg(check_duration_seconds[5m]) is 7.25 for check=openai, plugin=openai (> 5)"
        );
        assert!(alerts[1].labels().contains(&("check".into(), "claude".into())));

        let not_claude = parsed(r#"avg(check_duration_seconds{check!="claude"}[5m]) > 5"#, None).evaluate(&table);
        assert_eq!(not_claude.len(), 1);
        let only_db = parsed(r#"avg(check_duration_seconds{check="db"}[5m])"#, Some(0.05)).evaluate(&table);
        assert_eq!(only_db.len(), 1);
    }

    #[test]
    fn arithmetic_over_one_metric_stays_per_series_and_several_metrics_aggregate() {
        let table = Table(vec![
            ("log_errors_total", vec![], Aggregation::Rate, 0.2),
            ("a", vec![("x", "1")], Aggregation::Last, 3.0),
            ("b", vec![], Aggregation::Last, 2.0),
        ]);
        let errors = parsed("rate(log_errors_total[1m]) * 60 > 10", None).evaluate(&table);
        assert_eq!(errors[0].summary(), "rate(log_errors_total[1m]) * 60 is 12 (> 10)");
        assert!(parsed("rate(log_errors_total[1m]) * 60 > 12", None).evaluate(&table).is_empty());
        let both = parsed("a / b >= 1.5", None).evaluate(&table);
        assert_eq!(both.len(), 1);
        assert!(both[0].labels().is_empty(), "several metrics give one alert without series labels");
    }

    #[test]
    fn series_all_takes_every_series_together() {
        let table = Table(vec![
            ("ai_cost_dollars_total", vec![("model", "gpt-4o")], Aggregation::Increase, 40.0),
            ("ai_cost_dollars_total", vec![("model", "claude")], Aggregation::Increase, 40.0),
        ]);
        let each = parsed("increase(ai_cost_dollars_total[1d]) > 50", None);
        assert!(each.evaluate(&table).is_empty(), "no model alone is over the budget");
        let all = Parsed::new(&Config {
            condition: "increase(ai_cost_dollars_total[1d]) > 50".into(),
            threshold: None,
            series: Series::All,
        })
        .unwrap();
        let alerts = all.evaluate(&table);
        assert_eq!(alerts.len(), 1, "together they are");
        assert_eq!(alerts[0].summary(), "increase(ai_cost_dollars_total[1d]) is 80 (> 50)");
    }

    #[test]
    fn no_data_means_no_alert() {
        let empty = Table(Vec::new());
        assert!(parsed("avg(user_satisfaction_rating[1h]) < 3", None).evaluate(&empty).is_empty());
        assert!(parsed("user_error_rate > 5", None).evaluate(&empty).is_empty());
        assert!(parsed("a / b > 1", None).evaluate(&empty).is_empty());
    }

    #[test]
    fn a_config_that_cannot_work_is_refused_with_the_reason() {
        let refused = |condition: &str, threshold: Option<f64>| {
            Parsed::new(&Config { condition: condition.into(), threshold, series: Series::Each }).err().unwrap()
        };
        assert_eq!(refused("avg(x) > 1", None), "`condition` at column 5: `avg` needs a range, such as `x[5m]`");
        assert!(refused("x > 1", Some(2.0)).contains("compares with 1 but `threshold` is 2"));
        assert!(refused("x", None).contains("no comparison"));
        assert!(refused(r#"last(a{k!="v"}) + b > 1"#, None).contains("`!=`"));
    }
}
