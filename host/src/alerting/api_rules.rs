//! Alert rules as the API creates them, validated in full before they are stored.
//!
//! A rule's condition is in the [condition language](selfmon_condition); a rule that does not parse, names an
//! unknown severity or channel, or has a threshold that disagrees with its condition is refused with every problem
//! named.

use std::time::{Duration, SystemTime};

use selfmon_condition::Condition;
use serde::{Deserialize, Serialize};

use crate::alerting::alert::SEVERITIES;
use crate::storage::{rfc3339, to_millis};

/// The longest rule name.
const NAME_BYTES: usize = 64;
/// What a rule name may be (rules of the API and of the config alike).
pub const NAME_RULE: &str = "1 to 64 letters, digits, `_` or `-`";
/// The longest a condition may have to hold before its alert fires.
pub const MAX_HOLD: Duration = Duration::from_secs(7 * 86_400);
/// The longest description.
const DESCRIPTION_BYTES: usize = 1024;

/// A rule as a caller sends it: `POST /v1/alerts/rules` and the `createAlertRule` mutation.
#[derive(Debug, Clone, Deserialize, async_graphql::InputObject, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[graphql(name = "AlertRuleInput")]
pub struct RuleRequest {
    /// Letters, digits, `_` and `-`; unique.
    #[serde(default)]
    #[schema(required = true, pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub name: String,
    /// `avg(check_duration_seconds{check="openai"}[5m]) > 5`, or a value alone with `threshold`.
    #[serde(default)]
    #[schema(required = true, min_length = 1)]
    pub condition: String,
    /// What the condition's value is compared with; when the condition has its own comparison, they must agree.
    pub threshold: Option<f64>,
    /// info, low, medium, high or critical.
    #[serde(default)]
    #[schema(required = true, pattern = "^(info|low|medium|high|critical)$")]
    pub severity: String,
    /// Channels by name, or a kind's name for all its channels: dashboard, webhook, slack, discord, alertmanager,
    /// email, telegram.
    #[serde(default)]
    #[graphql(default)]
    pub notification_channels: Vec<String>,
    /// How long the condition must hold before the alert fires: `5m` (default: at once).
    #[serde(default, rename = "for")]
    #[graphql(name = "for")]
    pub hold: Option<String>,
    #[serde(default)]
    #[schema(max_length = 1024)]
    pub description: Option<String>,
}

/// A stored rule.
#[derive(Debug, Clone, PartialEq, Serialize, async_graphql::SimpleObject, utoipa::ToSchema)]
#[graphql(name = "AlertRule")]
pub struct Rule {
    pub name: String,
    pub condition: String,
    pub threshold: Option<f64>,
    pub severity: String,
    pub notification_channels: Vec<String>,
    /// Seconds the condition must hold before the alert fires.
    #[serde(rename = "for_seconds")]
    #[graphql(name = "forSeconds")]
    pub hold_seconds: f64,
    pub description: String,
    /// RFC 3339.
    pub created_at: String,
    /// The name of the API key that created it.
    pub created_by: Option<String>,
}

impl RuleRequest {
    /// The rule to store, or every problem with the request.
    /// `channels` are the names a rule may use.
    pub fn validate(
        self,
        channels: &[String],
        created_by: Option<String>,
        now: SystemTime,
    ) -> Result<Rule, Vec<String>> {
        let mut problems = Vec::new();
        if !valid_rule_name(&self.name) {
            problems.push(format!("`name` must be {NAME_RULE}"));
        }
        match Condition::parse(&self.condition) {
            Err(_) if self.condition.trim().is_empty() => problems.push("`condition` is required".into()),
            Ok(condition) => match (condition.comparison, self.threshold) {
                (None, None) => problems.push(
                    "`condition` has no comparison (such as `> 5`) and there is no `threshold` to compare with".into(),
                ),
                (Some((_, number)), Some(threshold)) if number != threshold => problems.push(format!(
                    "`condition` compares with {number} but `threshold` is {threshold}: make them agree or leave one out"
                )),
                _ => {}
            },
            Err(error) => problems.push(format!("`condition` {error}")),
        }
        if self.threshold.is_some_and(|t| !t.is_finite()) {
            problems.push("`threshold` must be a finite number".into());
        }
        if self.severity.is_empty() {
            problems.push(format!("`severity` is required: one of {}", SEVERITIES.join(", ")));
        } else if !SEVERITIES.contains(&self.severity.as_str()) {
            problems.push(format!("`severity` must be one of {}, not `{}`", SEVERITIES.join(", "), self.severity));
        }
        for channel in &self.notification_channels {
            if !channels.contains(channel) {
                problems.push(format!("`notification_channels`: `{channel}` is not one of {}", channels.join(", ")));
            }
        }
        let hold = match self.hold.as_deref().map(humantime::parse_duration).transpose() {
            Ok(hold) if hold.is_some_and(|h| h > MAX_HOLD) => {
                problems.push("`for` must be at most 7 days".into());
                Duration::ZERO
            }
            Ok(hold) => hold.unwrap_or(Duration::ZERO),
            Err(_) => {
                let text = self.hold.as_deref().unwrap_or_default();
                problems.push(format!("`for`: `{text}` is not a duration such as `5m` or `30s`"));
                Duration::ZERO
            }
        };
        let description = self.description.unwrap_or_default();
        if description.len() > DESCRIPTION_BYTES {
            problems.push(format!("`description` is longer than {DESCRIPTION_BYTES} bytes"));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut channels: Vec<String> = Vec::new();
        for channel in self.notification_channels {
            if !channels.contains(&channel) {
                channels.push(channel);
            }
        }
        Ok(Rule {
            name: self.name,
            condition: self.condition,
            threshold: self.threshold,
            severity: self.severity,
            notification_channels: channels,
            hold_seconds: hold.as_secs_f64(),
            description,
            created_at: rfc3339(to_millis(now)),
            created_by,
        })
    }
}

/// Whether a rule name is [`NAME_RULE`].
pub fn valid_rule_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= NAME_BYTES
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channels() -> Vec<String> {
        ["dashboard", "webhook", "email", "ops"].map(String::from).to_vec()
    }

    fn request(json: serde_json::Value) -> RuleRequest {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn the_original_platforms_example_is_accepted() {
        let rule = request(serde_json::json!({
            "name": "high_user_errors", "condition": "user_error_rate > 5", "threshold": 5.0,
            "severity": "high", "notification_channels": ["webhook", "email"]
        }))
        .validate(&channels(), Some("ops".into()), SystemTime::UNIX_EPOCH)
        .unwrap();
        assert_eq!(rule.notification_channels, ["webhook", "email"]);
        assert_eq!(rule.created_at, "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn every_problem_is_named() {
        let problems = request(serde_json::json!({
            "name": "bad name", "condition": "avg(latency) > 5", "severity": "urgent",
            "notification_channels": ["pager", "email", "pager"], "for": "soon"
        }))
        .validate(&channels(), None, SystemTime::UNIX_EPOCH)
        .unwrap_err();
        assert_eq!(problems.len(), 6, "{problems:#?}");
        assert!(problems[1].starts_with("`condition` at column 5: `avg` needs a range"), "{}", problems[1]);
        assert!(problems[2].contains("not `urgent`") && problems[3].contains("`pager`"));
        assert_eq!(problems[5], "`for`: `soon` is not a duration such as `5m` or `30s`");
        let missing =
            request(serde_json::json!({"name": "a"})).validate(&channels(), None, SystemTime::UNIX_EPOCH).unwrap_err();
        assert_eq!(
            missing,
            ["`condition` is required", "`severity` is required: one of info, low, medium, high, critical"]
        );
        let repeated = request(serde_json::json!({
            "name": "a", "condition": "x > 1", "severity": "low", "notification_channels": ["webhook", "email", "webhook"]
        }));
        assert_eq!(
            repeated.validate(&channels(), None, SystemTime::UNIX_EPOCH).unwrap().notification_channels,
            ["webhook", "email"]
        );

        let disagree =
            request(serde_json::json!({"name": "a", "condition": "x > 5", "threshold": 6, "severity": "low"}));
        assert!(
            disagree.validate(&channels(), None, SystemTime::UNIX_EPOCH).unwrap_err()[0]
                .contains("compares with 5 but")
        );
        let neither = request(serde_json::json!({"name": "a", "condition": "x", "severity": "low"}));
        assert!(neither.validate(&channels(), None, SystemTime::UNIX_EPOCH).unwrap_err()[0].contains("no comparison"));
        let threshold_only =
            request(serde_json::json!({"name": "a", "condition": "x", "threshold": 1, "severity": "low"}));
        assert!(threshold_only.validate(&channels(), None, SystemTime::UNIX_EPOCH).is_ok());
    }
}
