//! The life of an alert, on whatever clock the caller passes: inactive → pending (the condition holds, waiting out
//! the rule's `for`) → firing → resolved.
//!
//! An alert is known by its fingerprint: its rule, its name and its labels. A rule says on every evaluation which
//! alerts hold; one that held before and is missing now has resolved (or, if it was still pending, is forgotten
//! without a word). A rule that could not be evaluated says nothing, and its alerts stay as they were.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

/// An alert as a rule raised it, before the lifecycle knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Raised {
    pub name: String,
    pub severity: String,
    pub summary: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Pending,
    Firing,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Firing => "firing",
        }
    }
}

/// An alert the lifecycle tracks: pending or firing.
#[derive(Debug, Clone, PartialEq)]
pub struct Tracked {
    /// Its row in storage, once stored.
    pub id: Option<i64>,
    pub fingerprint: String,
    pub rule: String,
    pub raised: Raised,
    pub state: State,
    /// When the condition was first seen to hold.
    pub started_at: SystemTime,
    pub fired_at: Option<SystemTime>,
}

/// What one evaluation changed.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// New, and waiting out `for`.
    Pending(Tracked),
    /// Firing now: new with no `for`, or pending long enough.
    Fired(Tracked),
    /// Still active, but what it says changed (summary, severity, annotations).
    Updated(Tracked),
    /// It fired and its condition no longer holds.
    Resolved(Tracked, SystemTime),
    /// It was pending and its condition stopped holding before it fired.
    Dropped(Tracked),
}

/// The alert's identity: a hash of its rule, name and labels.
pub fn fingerprint(rule: &str, name: &str, labels: &BTreeMap<String, String>) -> String {
    let mut hash = Sha256::new();
    for part in [rule, name].into_iter().chain(labels.iter().flat_map(|(k, v)| [k.as_str(), v.as_str()])) {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part.as_bytes());
    }
    hash.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Every active alert, by fingerprint.
#[derive(Debug, Default)]
pub struct Lifecycle {
    active: HashMap<String, Tracked>,
}

impl Lifecycle {
    /// Start from alerts that were active when selfmon stopped, so a restart does not raise them again.
    pub fn resume(alerts: impl IntoIterator<Item = Tracked>) -> Self {
        Self { active: alerts.into_iter().map(|a| (a.fingerprint.clone(), a)).collect() }
    }

    /// Take in one evaluation of `rule`: the alerts that hold at `now`.
    pub fn observe(&mut self, rule: &str, hold: Duration, now: SystemTime, raised: Vec<Raised>) -> Vec<Change> {
        let mut changes = Vec::new();
        let mut seen = Vec::with_capacity(raised.len());
        for alert in raised {
            let fingerprint = fingerprint(rule, &alert.name, &alert.labels);
            if seen.contains(&fingerprint) {
                continue;
            }
            seen.push(fingerprint.clone());
            match self.active.get_mut(&fingerprint) {
                Some(tracked) => {
                    let changed = tracked.raised != alert;
                    tracked.raised = alert;
                    let due = now.duration_since(tracked.started_at).unwrap_or_default() >= hold;
                    if tracked.state == State::Pending && due {
                        tracked.state = State::Firing;
                        tracked.fired_at = Some(now);
                        changes.push(Change::Fired(tracked.clone()));
                    } else if changed {
                        changes.push(Change::Updated(tracked.clone()));
                    }
                }
                None => {
                    let firing = hold.is_zero();
                    let tracked = Tracked {
                        id: None,
                        fingerprint: fingerprint.clone(),
                        rule: rule.to_string(),
                        raised: alert,
                        state: if firing { State::Firing } else { State::Pending },
                        started_at: now,
                        fired_at: firing.then_some(now),
                    };
                    changes.push(if firing {
                        Change::Fired(tracked.clone())
                    } else {
                        Change::Pending(tracked.clone())
                    });
                    self.active.insert(fingerprint, tracked);
                }
            }
        }
        let gone: Vec<String> = self
            .active
            .iter()
            .filter(|(fingerprint, tracked)| tracked.rule == rule && !seen.contains(fingerprint))
            .map(|(fingerprint, _)| fingerprint.clone())
            .collect();
        for fingerprint in gone {
            changes.extend(self.end(&fingerprint, now));
        }
        changes
    }

    /// Resolve every alert of a rule that no longer exists.
    pub fn forget(&mut self, rule: &str, now: SystemTime) -> Vec<Change> {
        let gone: Vec<String> =
            self.active.iter().filter(|(_, t)| t.rule == rule).map(|(fingerprint, _)| fingerprint.clone()).collect();
        gone.iter().filter_map(|fingerprint| self.end(fingerprint, now)).collect()
    }

    fn end(&mut self, fingerprint: &str, now: SystemTime) -> Option<Change> {
        let tracked = self.active.remove(fingerprint)?;
        Some(match tracked.state {
            State::Pending => Change::Dropped(tracked),
            State::Firing => Change::Resolved(tracked, now),
        })
    }

    /// Record where an alert is stored.
    pub fn stored(&mut self, fingerprint: &str, id: i64) {
        if let Some(tracked) = self.active.get_mut(fingerprint) {
            tracked.id = Some(id);
        }
    }

    /// Every active alert.
    pub fn all(&self) -> impl Iterator<Item = &Tracked> {
        self.active.values()
    }

    pub fn get(&self, fingerprint: &str) -> Option<&Tracked> {
        self.active.get(fingerprint)
    }

    /// The rules that have active alerts.
    pub fn rules(&self) -> Vec<String> {
        let mut rules: Vec<String> = self.active.values().map(|t| t.rule.clone()).collect();
        rules.sort();
        rules.dedup();
        rules
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raised(check: &str, summary: &str) -> Raised {
        Raised {
            name: "service_down".into(),
            severity: "critical".into(),
            summary: summary.into(),
            labels: [("check".to_string(), check.to_string())].into(),
            annotations: BTreeMap::new(),
        }
    }

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + seconds)
    }

    fn kinds(changes: &[Change]) -> Vec<&'static str> {
        changes
            .iter()
            .map(|c| match c {
                Change::Pending(_) => "pending",
                Change::Fired(_) => "fired",
                Change::Updated(_) => "updated",
                Change::Resolved(..) => "resolved",
                Change::Dropped(_) => "dropped",
            })
            .collect()
    }

    #[test]
    fn pending_waits_out_for_then_fires_then_resolves() {
        let hold = Duration::from_secs(60);
        let mut lifecycle = Lifecycle::default();
        assert_eq!(kinds(&lifecycle.observe("down", hold, at(0), vec![raised("db", "down")])), ["pending"]);
        assert!(lifecycle.observe("down", hold, at(30), vec![raised("db", "down")]).is_empty(), "30 s < for");
        assert!(lifecycle.observe("down", hold, at(59), vec![raised("db", "down")]).is_empty(), "59 s < for");
        let fired = lifecycle.observe("down", hold, at(60), vec![raised("db", "down")]);
        let Change::Fired(tracked) = &fired[0] else { panic!("{fired:?}") };
        assert_eq!((tracked.started_at, tracked.fired_at), (at(0), Some(at(60))));
        assert!(lifecycle.observe("down", hold, at(75), vec![raised("db", "down")]).is_empty(), "no duplicate");
        let resolved = lifecycle.observe("down", hold, at(90), Vec::new());
        assert!(
            matches!(&resolved[..], [Change::Resolved(t, when)] if t.fingerprint == tracked.fingerprint && *when == at(90))
        );
        assert!(lifecycle.get(&tracked.fingerprint).is_none());
        assert_eq!(kinds(&lifecycle.observe("down", hold, at(100), vec![raised("db", "down")])), ["pending"], "again");
    }

    #[test]
    fn a_condition_that_stops_holding_while_pending_is_dropped_quietly() {
        let hold = Duration::from_secs(300);
        let mut lifecycle = Lifecycle::default();
        lifecycle.observe("down", hold, at(0), vec![raised("db", "down")]);
        assert_eq!(kinds(&lifecycle.observe("down", hold, at(60), Vec::new())), ["dropped"]);
        assert_eq!(kinds(&lifecycle.observe("down", hold, at(120), vec![raised("db", "down")])), ["pending"]);
        assert!(lifecycle.observe("down", hold, at(400), vec![raised("db", "down")]).is_empty(), "the clock restarted");
        assert_eq!(kinds(&lifecycle.observe("down", hold, at(420), vec![raised("db", "down")])), ["fired"]);
    }

    #[test]
    fn alerts_are_told_apart_by_labels_and_rules_do_not_touch_each_other() {
        let mut lifecycle = Lifecycle::default();
        let both = lifecycle.observe(
            "down",
            Duration::ZERO,
            at(0),
            vec![raised("db", "x"), raised("api", "y"), raised("db", "x")],
        );
        assert_eq!(kinds(&both), ["fired", "fired"], "the same alert twice in one answer counts once");
        assert_eq!(kinds(&lifecycle.observe("other", Duration::ZERO, at(1), vec![raised("db", "x")])), ["fired"]);
        assert_eq!(kinds(&lifecycle.observe("down", Duration::ZERO, at(2), vec![raised("api", "y")])), ["resolved"]);
        assert_eq!(lifecycle.rules(), ["down", "other"]);
        assert_eq!(
            kinds(&lifecycle.observe("down", Duration::ZERO, at(3), vec![raised("api", "now 503")])),
            ["updated"]
        );
        assert_eq!(kinds(&lifecycle.forget("down", at(4))), ["resolved"]);
        assert_eq!(lifecycle.rules(), ["other"]);
    }

    #[test]
    fn a_resumed_lifecycle_does_not_raise_its_alerts_again() {
        let mut first = Lifecycle::default();
        let fired = first.observe("down", Duration::ZERO, at(0), vec![raised("db", "down")]);
        let Change::Fired(mut tracked) = fired[0].clone() else { unreachable!() };
        tracked.id = Some(7);
        let mut resumed = Lifecycle::resume([tracked]);
        assert!(resumed.observe("down", Duration::ZERO, at(15), vec![raised("db", "down")]).is_empty());
        let Change::Resolved(tracked, _) = &resumed.observe("down", Duration::ZERO, at(30), Vec::new())[0] else {
            panic!()
        };
        assert_eq!(tracked.id, Some(7));
    }

    #[test]
    fn fingerprints_depend_on_rule_name_and_every_label() {
        let labels = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let base = fingerprint("r", "a", &labels(&[("check", "db")]));
        assert_eq!(base.len(), 16);
        assert_eq!(base, fingerprint("r", "a", &labels(&[("check", "db")])));
        assert_ne!(base, fingerprint("r2", "a", &labels(&[("check", "db")])));
        assert_ne!(base, fingerprint("r", "a", &labels(&[("check", "db"), ("x", "")])));
        assert_ne!(fingerprint("r", "ab", &labels(&[])), fingerprint("r", "a", &labels(&[("b", "")])));
    }
}
