//! Alerts, rules, silences, notification attempts and webhook subscriptions as the API shows and changes them;
//! every change is a security record of selfmon's own log, naming who made it.

use std::time::SystemTime;

use super::{Queries, change, storage};
use crate::alerting::alert::Alert;
use crate::alerting::api_rules::{Rule, RuleRequest};
use crate::alerting::channels::Attempt;
use crate::alerting::engine::RuleStatus;
use crate::alerting::rules;
use crate::alerting::silences::{Silence, SilenceRequest};
use crate::api::error::QueryError;
use crate::events::webhooks::{Delivery, Webhook, WebhookRequest};
use crate::storage::Page;

impl Queries {
    pub async fn rules(&self, offset: u64, limit: u64) -> Result<Page<Rule>, QueryError> {
        self.storage.rules(offset, limit).await.map_err(storage)
    }

    pub async fn rule(&self, name: &str) -> Result<Rule, QueryError> {
        self.storage.rule(name.to_string()).await.map_err(storage)?.ok_or_else(|| {
            let message = if self.config_rule(name) {
                format!("`{name}` is a rule of the config, not of the API: see /v1/alerts/rule-states")
            } else {
                format!("no rule named `{name}`")
            };
            QueryError::NotFound { code: "unknown_rule", message }
        })
    }

    /// Whether a rule of that name comes from the config (or is one of the defaults).
    fn config_rule(&self, name: &str) -> bool {
        self.live().alerting.rules.iter().any(|r| r.name == name)
    }

    /// Validate and store a new rule; `caller` is the name of the key that asked.
    pub async fn create_rule(&self, request: RuleRequest, caller: Option<String>) -> Result<Rule, QueryError> {
        let live = self.live();
        let rule = request
            .validate(&live.alerting.channel_names(), caller, SystemTime::now())
            .map_err(QueryError::Rejected)?;
        if self.config_rule(&rule.name) {
            return Err(QueryError::Conflict(format!("the config has a rule named `{}`", rule.name)));
        }
        let expression = live.alerting.expression.as_ref().ok_or_else(|| {
            QueryError::Unavailable("the `expression` rule plugin is not loaded, so rules cannot be created".into())
        })?;
        let spec = rules::from_api(&rule, expression, &live.alerting.config, live.alerting.memory_limit);
        match self.runtime.validate_rule(expression, &spec.sandbox, &spec.config).await {
            Ok(Ok(())) => {}
            Ok(Err(reason)) => return Err(QueryError::Rejected(vec![reason])),
            Err(failure) => return Err(QueryError::Unavailable(format!("the `expression` plugin failed: {failure}"))),
        }
        let rule = self.storage.create_rule(rule).await.map_err(change)?;
        tracing::info!(target: "selfmon::security", rule = %rule.name, by = rule.created_by.as_deref(), "Alert rule created");
        Ok(rule)
    }

    pub async fn delete_rule(&self, name: &str, caller: Option<&str>) -> Result<(), QueryError> {
        if self.config_rule(name) {
            return Err(QueryError::Conflict(format!(
                "`{name}` is a rule of the config: change or disable it there (`enabled = false`)"
            )));
        }
        self.storage.delete_rule(name.to_string()).await.map_err(change)?;
        tracing::info!(target: "selfmon::security", rule = name, by = caller, "Alert rule deleted");
        Ok(())
    }

    /// Active alerts (pending and firing) or the resolved history, newest first.
    pub async fn alerts(&self, active: bool, offset: u64, limit: u64) -> Result<Page<Alert>, QueryError> {
        self.storage.alerts(active, offset, limit).await.map_err(storage)
    }

    pub async fn alert(&self, id: i64) -> Result<Alert, QueryError> {
        self.storage
            .alert(id)
            .await
            .map_err(storage)?
            .ok_or_else(|| QueryError::NotFound { code: "unknown_alert", message: format!("no alert with id {id}") })
    }

    pub async fn acknowledge(&self, id: i64, caller: Option<String>, comment: String) -> Result<Alert, QueryError> {
        if comment.len() > 1024 {
            return Err(QueryError::Invalid("`comment` is longer than 1024 bytes".into()));
        }
        let alert = self.storage.acknowledge(id, caller, comment).await.map_err(change)?;
        tracing::info!(target: "selfmon::security", alert = id, by = alert.acknowledged_by.as_deref(), "Alert acknowledged");
        Ok(alert)
    }

    /// Every rule (defaults, config and API) with how it fared at its last evaluation, by name.
    pub fn rule_states(&self) -> Vec<RuleStatus> {
        self.rule_status.lock().expect("rule status lock").values().cloned().collect()
    }

    pub async fn create_silence(&self, request: SilenceRequest, caller: Option<String>) -> Result<Silence, QueryError> {
        let span = request.validate(SystemTime::now()).map_err(QueryError::Rejected)?;
        let silence = self.storage.create_silence(request, span, caller).await.map_err(storage)?;
        tracing::info!(target: "selfmon::security", silence = silence.id, by = silence.created_by.as_deref(), matchers = ?silence.matchers, "Silence created");
        Ok(silence)
    }

    /// Attempts to deliver notifications, newest first.
    pub async fn notification_attempts(&self, offset: u64, limit: u64) -> Result<Page<Attempt>, QueryError> {
        self.storage.notification_attempts(offset, limit).await.map_err(storage)
    }

    pub async fn silences(&self, offset: u64, limit: u64) -> Result<Page<Silence>, QueryError> {
        self.storage.silences(offset, limit).await.map_err(storage)
    }

    pub async fn silence(&self, id: i64) -> Result<Silence, QueryError> {
        self.storage
            .silence(id)
            .await
            .map_err(storage)?
            .ok_or_else(|| QueryError::NotFound { code: "unknown_silence", message: format!("no silence {id}") })
    }

    pub async fn expire_silence(&self, id: i64, caller: Option<&str>) -> Result<Silence, QueryError> {
        let silence = self.storage.expire_silence(id).await.map_err(change)?;
        tracing::info!(target: "selfmon::security", silence = id, by = caller, "Silence expired");
        Ok(silence)
    }

    pub async fn webhooks(&self) -> Result<Vec<Webhook>, QueryError> {
        self.storage.webhooks().await.map_err(storage)
    }

    pub async fn create_webhook(
        &self,
        mut request: WebhookRequest,
        caller: Option<&str>,
    ) -> Result<Webhook, QueryError> {
        request.validate().map_err(QueryError::Rejected)?;
        if let Some(problem) = self.webhook_reach.check_url(&request.url).await {
            tracing::warn!(target: "selfmon::security", to = %destination(&request.url), by = caller, "Refused a webhook to an address it may not reach");
            return Err(QueryError::Rejected(vec![problem]));
        }
        let webhook = self.storage.create_webhook(request).await.map_err(change)?;
        tracing::info!(target: "selfmon::security", webhook = webhook.id, to = %destination(&webhook.url), by = caller, "Webhook created");
        Ok(webhook)
    }

    pub async fn delete_webhook(&self, id: i64, caller: Option<&str>) -> Result<(), QueryError> {
        self.storage.delete_webhook(id).await.map_err(change)?;
        tracing::info!(target: "selfmon::security", webhook = id, by = caller, "Webhook deleted");
        Ok(())
    }

    /// A webhook's delivery attempts, newest first.
    pub async fn deliveries(&self, id: i64, offset: u64, limit: u64) -> Result<Page<Delivery>, QueryError> {
        if !self.storage.webhook_exists(id).await.map_err(storage)? {
            return Err(QueryError::NotFound { code: "unknown_webhook", message: format!("no webhook with id {id}") });
        }
        self.storage.deliveries(id, offset, limit).await.map_err(storage)
    }
}

/// Where a webhook goes, for the security log: its scheme, host and port, never its path, query or user (which
/// often carry a token).
fn destination(url: &str) -> String {
    match url.parse::<http::Uri>() {
        Ok(uri) => format!(
            "{}://{}{}",
            uri.scheme_str().unwrap_or("?"),
            uri.host().unwrap_or("?"),
            uri.port().map(|port| format!(":{port}")).unwrap_or_default()
        ),
        Err(_) => "(not a URL)".into(),
    }
}
