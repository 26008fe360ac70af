//! The alerting engine: every step it evaluates the rules that are due, carries their alerts through their
//! lifecycle, applies silences, inhibition, acknowledgements and escalation to the firing ones, and hands the
//! notifications that are due to their channels. It runs on the clock it is given ([`Engine::tick`]);
//! [`driver::spawn`](crate::alerting::driver::spawn) runs it on the real clock, on the node that leads.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::alerting::Alerting;
use crate::alerting::alert::Alert;
use crate::alerting::channels::Channel;
use crate::alerting::data;
use crate::alerting::dispatch::{Dispatcher, Notice, Notification, Status};
use crate::alerting::lifecycle::{Change, Lifecycle, Raised, State, Tracked};
use crate::alerting::rules::{self, RuleSpec};
use crate::alerting::store::Notifying;
use crate::checks::board::Board;
use crate::events::{Events, Payload};
use crate::ops::telemetry::Telemetry;
use crate::runtime::{RuleData, RuleRequest, Runtime, Sandbox, Severity, one_line, truncate};
use crate::storage::{Storage, StorageError, rfc3339, to_millis};

/// Alerts one evaluation of one rule may raise; the rest are dropped with a warning.
const MAX_ALERTS_PER_RULE: usize = 1000;
/// Labels and annotations per alert at most, and the longest name or value kept.
const MAX_LABELS: usize = 32;
const LABEL_BYTES: usize = 1024;

/// How a rule fared at its last evaluation, for the API (and, on a shared store, kept there by the leader for the
/// other nodes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema, async_graphql::SimpleObject)]
pub struct RuleStatus {
    pub name: String,
    pub plugin: String,
    /// default, config or api.
    pub origin: String,
    pub enabled: bool,
    pub severity: Option<String>,
    pub for_seconds: f64,
    pub channels: Vec<String>,
    pub escalation: Option<String>,
    pub description: String,
    /// An expression rule's condition.
    pub condition: Option<String>,
    /// inactive, pending or firing: the most urgent of its alerts.
    pub state: String,
    /// RFC 3339.
    pub last_evaluation: Option<String>,
    pub evaluation_ms: Option<f64>,
    /// Why the last evaluation failed (a trap, a deadline, the rule's own error).
    pub error: Option<String>,
}

/// What the engine knows about how an active, firing alert is being notified.
#[derive(Debug, Clone, PartialEq)]
struct Delivery {
    /// Neither silenced nor inhibited.
    notifiable: bool,
    silenced_by: Option<i64>,
    inhibited_by: Option<String>,
    /// Escalation steps taken.
    step: usize,
    severity: String,
    /// The channels it was pushed to.
    channels: Vec<String>,
    /// Carried over from before a restart, not yet seen by this process.
    restored: bool,
}

/// A notification due, for its channel. `held` is its id in the store's outbox, where it stays until it is
/// delivered or given up (`None` when the store could not be written: it goes out all the same).
pub struct Due {
    pub channel: Arc<Channel>,
    pub notification: Notification,
    pub held: Option<i64>,
}

/// The alerting engine: one step at a time, on the clock it is given.
pub struct Engine {
    pub(super) alerting: Arc<Alerting>,
    runtime: Arc<Runtime>,
    pub(super) storage: Storage,
    board: Arc<Board>,
    events: Events,
    lifecycle: Lifecycle,
    dispatcher: Dispatcher,
    deliveries: HashMap<String, Delivery>,
    /// The rules of the last evaluation, by name.
    specs: BTreeMap<String, RuleSpec>,
    next_evaluation: Option<SystemTime>,
    status: Arc<Mutex<BTreeMap<String, RuleStatus>>>,
    pub(super) telemetry: Arc<Telemetry>,
}

impl Engine {
    /// An engine that carries on with the alerts that were active when selfmon stopped.
    pub async fn new(
        alerting: Arc<Alerting>,
        runtime: Arc<Runtime>,
        storage: Storage,
        board: Arc<Board>,
        events: Events,
        telemetry: Arc<Telemetry>,
    ) -> Result<Self, StorageError> {
        let (tracked, steps) = storage.active_alerts().await?;
        let deliveries = steps
            .into_iter()
            .map(|(fingerprint, restored)| {
                let delivery = Delivery {
                    notifiable: restored.notified,
                    silenced_by: None,
                    inhibited_by: None,
                    step: restored.step,
                    severity: restored.severity,
                    channels: Vec::new(),
                    restored: true,
                };
                (fingerprint, delivery)
            })
            .collect();
        // Until the first evaluation, every rule of the config is there, not yet evaluated.
        let status = alerting
            .rules
            .iter()
            .map(|spec| {
                (spec.name.clone(), RuleStatus { last_evaluation: None, ..rule_status(spec, SystemTime::now()) })
            })
            .collect();
        Ok(Self {
            alerting,
            runtime,
            storage,
            board,
            events,
            lifecycle: Lifecycle::resume(tracked),
            dispatcher: Dispatcher::default(),
            deliveries,
            specs: BTreeMap::new(),
            next_evaluation: None,
            status: Arc::new(Mutex::new(status)),
            telemetry,
        })
    }

    /// Carry on with `alerting`'s rules, channels and policies: alerts, silences and escalations in progress
    /// continue; the rules are evaluated at the next step, and alerts of a rule that is gone resolve then.
    pub fn reconfigure(&mut self, alerting: Arc<Alerting>) {
        self.alerting = alerting;
        self.next_evaluation = None;
    }

    /// A new engine on the same parts, with `alerting`, carrying on from the store as it is now (as one does after a
    /// restart), and reporting to the same rule status.
    pub async fn renewed(&self, alerting: Arc<Alerting>) -> Result<Self, StorageError> {
        let (runtime, storage, board) = (self.runtime.clone(), self.storage.clone(), self.board.clone());
        let engine = Self::new(alerting, runtime, storage, board, self.events.clone(), self.telemetry.clone()).await?;
        Ok(Self { status: self.status.clone(), ..engine })
    }

    /// The rules' states, shared with the API.
    pub fn status(&self) -> Arc<Mutex<BTreeMap<String, RuleStatus>>> {
        self.status.clone()
    }

    /// One step at `now`: evaluate the rules when their interval has passed, apply silences, inhibitions and
    /// escalations, and return the notifications due, with their channels, held in the store's outbox as `node`'s
    /// to send (see [`Due`]).
    pub async fn tick(&mut self, now: SystemTime, node: &str) -> Vec<Due> {
        if self.next_evaluation.is_none_or(|next| now >= next) {
            self.evaluate(now).await;
            self.next_evaluation = Some(now + self.alerting.config.interval);
        }
        if let Err(error) = self.reconsider(now).await {
            tracing::error!(%error, "Cannot read silences and acknowledgements; notifications wait");
            return Vec::new();
        }
        let alerting = self.alerting.clone();
        let due: Vec<(Arc<Channel>, Notification)> = self
            .dispatcher
            .due(now, |channel| alerting.pacing(channel))
            .into_iter()
            .filter_map(|n| Some((alerting.channels.iter().find(|c| c.name == n.channel)?.clone(), n)))
            .collect();
        if due.is_empty() {
            return Vec::new();
        }
        let notifications = due.iter().map(|(_, n)| n.clone()).collect();
        let held = match self.storage.hold_notifications(node.to_string(), notifications).await {
            Ok(ids) => ids.into_iter().map(Some).collect(),
            Err(error) => {
                tracing::error!(%error, "Cannot keep the notifications due in the store; they go out without it");
                vec![None; due.len()]
            }
        };
        due.into_iter().zip(held).map(|((channel, notification), held)| Due { channel, notification, held }).collect()
    }

    /// Evaluate every enabled rule at `now` and carry its alerts through their lifecycle.
    async fn evaluate(&mut self, now: SystemTime) {
        let mut specs: Vec<RuleSpec> = self.alerting.rules.clone();
        match (&self.alerting.expression, self.storage.rules(0, 10_000).await) {
            (Some(expression), Ok(page)) => {
                let api: Vec<RuleSpec> = page
                    .items
                    .iter()
                    .filter(|r| !specs.iter().any(|s| s.name == r.name))
                    .map(|r| rules::from_api(r, expression, &self.alerting.config, self.alerting.memory_limit))
                    .collect();
                specs.extend(api);
            }
            (None, Ok(page)) if page.total > 0 => {
                tracing::error!("Rules created through the API need the `expression` plugin, which is not loaded");
            }
            (_, Ok(_)) => {}
            (_, Err(error)) => {
                // Carry on with the rules read last time rather than resolve all of their alerts.
                tracing::error!(%error, "Cannot read the API's alert rules; evaluating the ones read last time");
                specs.extend(self.specs.values().filter(|s| s.origin == rules::Origin::Api).cloned());
            }
        }
        let data: Arc<dyn RuleData> =
            Arc::new(data::Stored { storage: self.storage.clone(), board: self.board.clone(), now });
        let mut calls = tokio::task::JoinSet::new();
        for spec in specs.iter().filter(|s| s.enabled).cloned() {
            let (runtime, data) = (self.runtime.clone(), data.clone());
            calls.spawn(async move {
                let started = std::time::Instant::now();
                let sandbox = Sandbox { data: Some(data), ..spec.sandbox.clone() };
                let request =
                    RuleRequest { name: spec.name.clone(), config: spec.config.clone(), now_ms: to_millis(now) };
                let result = match runtime.evaluate(&spec.plugin, &sandbox, &request).await {
                    Ok(Ok(alerts)) => Ok(alerts),
                    Ok(Err(reason)) => Err(format!("the rule could not evaluate: {reason}")),
                    Err(failure) => Err(failure.to_string()),
                };
                (spec, result, started.elapsed())
            });
        }
        let mut changes = Vec::new();
        let mut status = BTreeMap::new();
        for spec in &specs {
            status.insert(spec.name.clone(), rule_status(spec, now));
        }
        while let Some(joined) = calls.join_next().await {
            let Ok((spec, result, took)) = joined else { continue };
            let entry = status.get_mut(&spec.name).expect("every rule has a status");
            entry.evaluation_ms = Some(took.as_secs_f64() * 1000.0);
            self.telemetry.observe_rule(&spec.name, result.is_ok());
            match result {
                Ok(alerts) => {
                    if alerts.len() > MAX_ALERTS_PER_RULE {
                        tracing::warn!(rule = %spec.name, raised = alerts.len(), "The rule raised more than {MAX_ALERTS_PER_RULE} alerts; the rest are dropped");
                    }
                    let raised = alerts.into_iter().take(MAX_ALERTS_PER_RULE).map(|a| raise(&spec, a)).collect();
                    changes.extend(self.lifecycle.observe(&spec.name, spec.hold, now, raised));
                }
                Err(error) => {
                    tracing::warn!(rule = %spec.name, plugin = %spec.plugin.info.name, %error, "Alert rule failed; its alerts stay as they were");
                    entry.error = Some(error);
                }
            }
        }
        for rule in self.lifecycle.rules() {
            if !specs.iter().any(|s| s.name == rule && s.enabled) {
                changes.extend(self.lifecycle.forget(&rule, now));
            }
        }
        // Alerts of a rule that is gone resolve to the channels that rule had.
        let previous = std::mem::replace(&mut self.specs, specs.into_iter().map(|s| (s.name.clone(), s)).collect());
        if let Err(error) = self.store(&changes).await {
            tracing::error!(%error, "Cannot store alert changes");
        }
        for change in changes {
            self.announce(change, &previous, now);
        }
        let mut counts = Vec::new();
        for (name, entry) in &mut status {
            let states: Vec<State> = self.lifecycle.all().filter(|t| &t.rule == name).map(|t| t.state).collect();
            let firing = states.iter().filter(|s| **s == State::Firing).count();
            counts.push((name.clone(), states.len() - firing, firing));
            entry.state = if states.contains(&State::Firing) {
                "firing"
            } else if states.contains(&State::Pending) {
                "pending"
            } else {
                "inactive"
            }
            .into();
        }
        self.telemetry.set_alerts(&counts);
        *self.status.lock().expect("rule status lock") = status;
    }

    /// Store what an evaluation changed; new alerts get their ids.
    async fn store(&mut self, changes: &[Change]) -> Result<(), StorageError> {
        for (fingerprint, id) in self.storage.store_alert_changes(changes.to_vec()).await? {
            self.lifecycle.stored(&fingerprint, id);
        }
        Ok(())
    }

    /// Tell the event bus and the channels that an alert resolved. `previous` holds the rules of the evaluation
    /// before, for alerts whose rule is gone.
    fn announce(&mut self, change: Change, previous: &BTreeMap<String, RuleSpec>, now: SystemTime) {
        let Change::Resolved(t, at) = change else { return };
        let t = Tracked { id: t.id.or_else(|| self.lifecycle.get(&t.fingerprint).and_then(|x| x.id)), ..t };
        tracing::info!(rule = %t.rule, alert = t.id, "Alert resolved: {}", t.raised.summary);
        self.events.publish(Payload::AlertResolved(self.alert_of(&t, Some(at))));
        let Some(delivery) = self.deliveries.remove(&t.fingerprint) else { return };
        let spec = self.specs.get(&t.rule).or_else(|| previous.get(&t.rule)).cloned();
        let channels = match (&delivery.channels[..], spec) {
            ([], Some(spec)) => self.channels_of(&spec, delivery.step),
            (channels, _) => channels.to_vec(),
        };
        let notice = notice(&t, &delivery.severity, Status::Firing);
        for channel in &channels {
            if let Some(pacing) = self.alerting.pacing(channel) {
                // Channels told before a restart that it fires hear that it resolved.
                if delivery.restored && delivery.notifiable {
                    self.dispatcher.restore(channel, &pacing, notice.clone(), now);
                }
                let resolved = Notice { status: Status::Resolved, resolved_at: Some(at), ..notice.clone() };
                self.dispatcher.push(channel, &pacing, resolved, now);
            }
        }
    }

    /// The channels of a rule's alert at an escalation step, by channel name.
    fn channels_of(&self, spec: &RuleSpec, step: usize) -> Vec<String> {
        let mut names = spec.channels.clone();
        let policy = spec.escalation.as_ref().and_then(|name| self.alerting.escalations.get(name));
        for taken in policy.map(|p| &p[..step.min(p.len())]).unwrap_or_default() {
            names.extend(taken.channels.iter().cloned());
        }
        self.alerting.expand(&names).iter().map(|c| c.name.clone()).collect()
    }

    /// A message that could not be delivered goes out again with its group's next one.
    pub fn requeue(&mut self, notification: &Notification, now: SystemTime) {
        if let Some(pacing) = self.alerting.pacing(&notification.channel) {
            self.dispatcher.requeue(notification, &pacing, now);
        }
    }

    /// Apply silences, inhibitions, acknowledgements and escalation to every firing alert, and push what changed
    /// to the dispatcher.
    async fn reconsider(&mut self, now: SystemTime) -> Result<(), StorageError> {
        let silences = self.storage.active_silences(now).await?;
        let acknowledged = self.storage.acknowledged_alerts().await?;
        let firing: Vec<Tracked> = self.lifecycle.all().filter(|t| t.state == State::Firing).cloned().collect();
        let mut updates = Vec::new();
        for tracked in firing {
            let Some(spec) = self.specs.get(&tracked.rule) else { continue };
            let previous = self.deliveries.get(&tracked.fingerprint).cloned();
            let inhibited_by = tracked.raised.labels.get("check").and_then(|check| self.board.cause_of(check));
            let acked = tracked.id.is_some_and(|id| acknowledged.contains(&id));
            let policy = spec.escalation.as_ref().and_then(|name| self.alerting.escalations.get(name));
            let mut step = previous.as_ref().map_or(0, |p| p.step);
            if let (Some(policy), false, Some(fired_at)) = (policy, acked, tracked.fired_at) {
                let elapsed = now.duration_since(fired_at).unwrap_or_default();
                step = step.max(policy.iter().filter(|s| elapsed >= s.after).count());
            }
            let mut severity = tracked.raised.severity.clone();
            for taken in policy.map(|p| &p[..step.min(p.len())]).unwrap_or_default() {
                if let Some(raised) = &taken.severity {
                    severity = raised.clone();
                }
            }
            // Silences see the labels a notification carries: `alertname`, `severity` (as notified) and `rule` too.
            let mut labels = labels_with_name(&tracked);
            labels.insert("severity".into(), severity.clone());
            let silenced_by = silences.iter().find(|s| s.matches(&labels)).map(|s| s.id);
            if previous.as_ref().is_some_and(|p| p.step < step) {
                tracing::warn!(rule = %tracked.rule, alert = tracked.id, step, %severity, "Alert escalated: nobody acknowledged it");
            }
            let delivery = Delivery {
                notifiable: silenced_by.is_none() && inhibited_by.is_none(),
                silenced_by,
                inhibited_by,
                step,
                severity,
                channels: self.channels_of(spec, step),
                restored: false,
            };
            match &previous {
                // Its channels heard that it fires before selfmon restarted.
                Some(p) if p.restored && p.notifiable => {
                    let notice = notice(&tracked, &p.severity, Status::Firing);
                    for channel in &delivery.channels {
                        if let Some(pacing) = self.alerting.pacing(channel) {
                            self.dispatcher.restore(channel, &pacing, notice.clone(), now);
                        }
                    }
                }
                Some(_) => {}
                None => {
                    tracing::warn!(rule = %tracked.rule, alert = tracked.id, severity = %delivery.severity,
                        silenced_by = delivery.silenced_by, inhibited_by = delivery.inhibited_by.as_deref(),
                        "Alert firing: {}", tracked.raised.summary);
                    let mut alert = self.alert_of(&tracked, None);
                    (alert.silenced_by, alert.inhibited_by) = (delivery.silenced_by, delivery.inhibited_by.clone());
                    (alert.severity, alert.escalation_step) = (delivery.severity.clone(), delivery.step as u32);
                    self.events.publish(Payload::AlertFired(alert));
                }
            }
            if !delivery.notifiable {
                self.dispatcher.mute(&tracked.fingerprint);
            }
            // Pushing what a group already holds changes nothing but the text; what is new starts the group's clock.
            if delivery.notifiable {
                let notice = notice(&tracked, &delivery.severity, Status::Firing);
                for channel in &delivery.channels {
                    if let Some(pacing) = self.alerting.pacing(channel) {
                        self.dispatcher.push(channel, &pacing, notice.clone(), now);
                    }
                }
            }
            if previous.as_ref() != Some(&delivery)
                && let Some(id) = tracked.id
            {
                updates.push(Notifying {
                    alert: id,
                    silenced_by: delivery.silenced_by,
                    inhibited_by: delivery.inhibited_by.clone(),
                    step: delivery.step,
                    severity: delivery.severity.clone(),
                });
            }
            self.deliveries.insert(tracked.fingerprint.clone(), delivery);
        }
        if !updates.is_empty() {
            self.storage.store_notifying(updates).await?;
        }
        Ok(())
    }

    /// An alert as the event bus carries it.
    fn alert_of(&self, t: &Tracked, resolved_at: Option<SystemTime>) -> Alert {
        let delivery = self.deliveries.get(&t.fingerprint);
        Alert {
            id: t.id.unwrap_or_default(),
            fingerprint: t.fingerprint.clone(),
            rule: t.rule.clone(),
            name: t.raised.name.clone(),
            severity: delivery.map_or_else(|| t.raised.severity.clone(), |d| d.severity.clone()),
            state: if resolved_at.is_some() { "resolved".into() } else { t.state.as_str().into() },
            summary: t.raised.summary.clone(),
            labels: t.raised.labels.clone(),
            annotations: t.raised.annotations.clone(),
            started_at: rfc3339(to_millis(t.started_at)),
            fired_at: t.fired_at.map(|at| rfc3339(to_millis(at))),
            resolved_at: resolved_at.map(|at| rfc3339(to_millis(at))),
            acknowledged_at: None,
            acknowledged_by: None,
            ack_comment: None,
            silenced_by: delivery.and_then(|d| d.silenced_by),
            inhibited_by: delivery.and_then(|d| d.inhibited_by.clone()),
            escalation_step: delivery.map_or(0, |d| d.step as u32),
        }
    }
}

/// A rule's status before its evaluation is known.
fn rule_status(spec: &RuleSpec, now: SystemTime) -> RuleStatus {
    RuleStatus {
        name: spec.name.clone(),
        plugin: spec.plugin.info.name.clone(),
        origin: serde_json::to_value(spec.origin).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(),
        enabled: spec.enabled,
        severity: spec.severity.clone(),
        for_seconds: spec.hold.as_secs_f64(),
        channels: spec.channels.clone(),
        escalation: spec.escalation.clone(),
        description: spec.annotations.get("description").cloned().unwrap_or_default(),
        condition: spec
            .config
            .iter()
            .find(|(key, _)| key == "condition")
            .and_then(|(_, value)| serde_json::from_str::<String>(value).ok()),
        state: "inactive".into(),
        last_evaluation: spec.enabled.then(|| rfc3339(to_millis(now))),
        evaluation_ms: None,
        error: None,
    }
}

/// A plugin's alert as the lifecycle takes it: the rule's severity and labels applied, names and sizes bounded.
fn raise(spec: &RuleSpec, alert: crate::runtime::Alert) -> Raised {
    let bounded = |pairs: Vec<(String, String)>| -> BTreeMap<String, String> {
        pairs
            .into_iter()
            .filter(|(k, _)| !k.is_empty())
            .take(MAX_LABELS)
            .map(|(k, v)| (truncate(&k, LABEL_BYTES).to_string(), truncate(&v, LABEL_BYTES).to_string()))
            .collect()
    };
    let mut labels = bounded(alert.labels);
    labels.extend(spec.labels.clone());
    let mut annotations = bounded(alert.annotations);
    // The operator's annotations win over the plugin's, with the alert's labels filled in.
    for (name, template) in &spec.annotations {
        annotations.insert(name.clone(), fill(template, &labels));
    }
    let severity = spec.severity.clone().unwrap_or_else(|| severity_name(alert.severity).to_string());
    Raised {
        name: truncate(&alert.name, 128).to_string(),
        severity,
        summary: one_line(truncate(&alert.summary, LABEL_BYTES)).into_owned(),
        labels,
        annotations,
    }
}

/// `{{ $labels.NAME }}` in an annotation replaced by the alert's label NAME (nothing when it has none), as in
/// Prometheus' alerting rules.
fn fill(template: &str, labels: &BTreeMap<String, String>) -> String {
    static LABEL: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"\{\{\s*\$labels\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}").expect("a valid pattern")
    });
    LABEL
        .replace_all(template, |found: &regex::Captures| labels.get(&found[1]).cloned().unwrap_or_default())
        .into_owned()
}

pub fn severity_name(severity: Severity) -> &'static str {
    match severity {
        Severity::Info => "info",
        Severity::Low => "low",
        Severity::Medium => "medium",
        Severity::High => "high",
        Severity::Critical => "critical",
    }
}

/// Labels with `alertname`, as silences and receivers see them.
fn labels_with_name(t: &Tracked) -> BTreeMap<String, String> {
    let mut labels = t.raised.labels.clone();
    labels.insert("alertname".into(), t.raised.name.clone());
    labels.insert("rule".into(), t.rule.clone());
    labels
}

fn notice(t: &Tracked, severity: &str, status: Status) -> Notice {
    let mut labels = labels_with_name(t);
    labels.remove("rule");
    labels.insert("severity".into(), severity.to_string());
    Notice {
        id: t.id.unwrap_or_default(),
        fingerprint: t.fingerprint.clone(),
        rule: t.rule.clone(),
        severity: severity.to_string(),
        summary: t.raised.summary.clone(),
        labels,
        annotations: t.raised.annotations.clone(),
        status,
        fired_at: t.fired_at.unwrap_or(t.started_at),
        resolved_at: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_take_the_alerts_labels() {
        let labels = BTreeMap::from([("check".to_string(), "api".to_string())]);
        assert_eq!(
            fill("https://r.example/{{ $labels.check }}/{{$labels.check}}", &labels),
            "https://r.example/api/api"
        );
        assert_eq!(fill("{{ $labels.missing }}!", &labels), "!");
        assert_eq!(fill("{{ $value }} stays", &labels), "{{ $value }} stays");
    }
}
