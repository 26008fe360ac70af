//! Grouping and pacing of notifications, in the manner of Alertmanager, on whatever clock the caller passes.
//!
//! Alerts bound for one channel are grouped by the values of `group_by` labels. A new group waits `group_wait` for
//! more alerts, so a storm becomes one message. Once notified, a group sends a change (an alert that fires or
//! resolves) no sooner than `group_interval` after its last message, and repeats itself every `repeat_interval` while
//! anything in it fires. Each message carries the group's whole state: what fires and what has just resolved.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// The soonest a message that was given up is tried again, whatever the channel's pacing.
const MIN_RETRY: Duration = Duration::from_secs(60);

/// How a channel paces its groups.
#[derive(Debug, Clone, PartialEq)]
pub struct Pacing {
    pub group_by: Vec<String>,
    pub group_wait: Duration,
    pub group_interval: Duration,
    pub repeat_interval: Duration,
}

/// Firing or resolved, as notifications say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Firing,
    Resolved,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Firing => "firing",
            Self::Resolved => "resolved",
        }
    }
}

/// An alert as a notification shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    pub id: i64,
    pub fingerprint: String,
    pub rule: String,
    pub severity: String,
    pub summary: String,
    /// With `alertname` and `severity`, as Alertmanager's receivers expect.
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub status: Status,
    pub fired_at: SystemTime,
    pub resolved_at: Option<SystemTime>,
}

/// One message to send (kept in the store's outbox as JSON until it is delivered).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub channel: String,
    /// The channel and the group's label values: stable for the group's life.
    pub group_key: String,
    pub group_labels: BTreeMap<String, String>,
    /// Firing first, then resolved; each by when it fired.
    pub alerts: Vec<Notice>,
}

impl Notification {
    /// Firing while anything in it fires.
    pub fn status(&self) -> Status {
        if self.alerts.iter().any(|a| a.status == Status::Firing) { Status::Firing } else { Status::Resolved }
    }
}

#[derive(Debug)]
struct Member {
    notice: Notice,
    /// Whether a message has shown it in its current status.
    sent: bool,
    /// Silenced or inhibited: left out of messages until it is not, without losing whether it was sent.
    muted: bool,
}

#[derive(Debug)]
struct Group {
    labels: BTreeMap<String, String>,
    members: BTreeMap<String, Member>,
    next: Option<SystemTime>,
    last_sent: Option<SystemTime>,
}

/// Every channel's groups.
#[derive(Debug, Default)]
pub struct Dispatcher {
    groups: BTreeMap<(String, String), Group>,
}

impl Dispatcher {
    /// An alert that fires (or still fires, perhaps with new text) or has resolved, for `channel`. It is no longer
    /// muted.
    pub fn push(&mut self, channel: &str, pacing: &Pacing, notice: Notice, now: SystemTime) {
        let key = (channel.to_string(), group_key(&group_labels(pacing, &notice)));
        // An alert whose group changed (its severity was raised, and the channel groups by it) moves.
        let elsewhere = self
            .groups
            .iter()
            .find(|((c, k), g)| c == channel && *k != key.1 && g.members.contains_key(&notice.fingerprint))
            .map(|(k, _)| k.clone());
        if let Some(old) = elsewhere {
            self.remove(&old, &notice.fingerprint);
        }
        if notice.status == Status::Resolved {
            let Some(group) = self.groups.get_mut(&key) else { return };
            match group.members.get(&notice.fingerprint) {
                // It fired and resolved before anyone heard of it: nobody needs to.
                Some(member) if !member.sent => {
                    self.remove(&key, &notice.fingerprint);
                    return;
                }
                Some(_) => {}
                None => return,
            }
        }
        let group = self.groups.entry(key).or_insert_with(|| Group {
            labels: group_labels(pacing, &notice),
            members: BTreeMap::new(),
            next: Some(now + pacing.group_wait),
            last_sent: None,
        });
        let news = group.members.get(&notice.fingerprint).is_none_or(|m| m.notice.status != notice.status || !m.sent);
        match group.members.get_mut(&notice.fingerprint) {
            Some(member) => {
                member.sent &= !news;
                member.muted = false;
                member.notice = notice;
            }
            None => {
                group.members.insert(notice.fingerprint.clone(), Member { notice, sent: false, muted: false });
            }
        }
        if news && group.next.is_none() {
            let earliest = group.last_sent.map_or(now, |last| last + pacing.group_interval);
            group.next = Some(earliest.max(now));
        }
    }

    /// An alert that was notified before selfmon restarted: in its group as sent, so it is not announced again.
    pub fn restore(&mut self, channel: &str, pacing: &Pacing, notice: Notice, now: SystemTime) {
        let key = (channel.to_string(), group_key(&group_labels(pacing, &notice)));
        let group = self.groups.entry(key).or_insert_with(|| Group {
            labels: group_labels(pacing, &notice),
            members: BTreeMap::new(),
            next: None,
            last_sent: Some(now),
        });
        group.members.entry(notice.fingerprint.clone()).or_insert(Member { notice, sent: true, muted: false });
    }

    /// Leave an alert out of messages (it was silenced or inhibited). One nobody has heard of goes altogether; one
    /// that was sent stays, so its resolution is still sent and its return is not news.
    pub fn mute(&mut self, fingerprint: &str) {
        let keys: Vec<(String, String)> =
            self.groups.iter().filter(|(_, g)| g.members.contains_key(fingerprint)).map(|(k, _)| k.clone()).collect();
        for key in keys {
            let group = self.groups.get_mut(&key).expect("the group just found");
            let member = group.members.get_mut(fingerprint).expect("the member just found");
            if member.sent {
                member.muted = true;
            } else {
                self.remove(&key, fingerprint);
            }
        }
    }

    /// A message that could not be delivered: what it said is news again, for the group's next message.
    pub fn requeue(&mut self, notification: &Notification, pacing: &Pacing, now: SystemTime) {
        let Some(raw) = notification.group_key.strip_prefix(&format!("{}:", notification.channel)) else { return };
        let key = (notification.channel.clone(), raw.to_string());
        let group = self.groups.entry(key).or_insert_with(|| Group {
            labels: notification.group_labels.clone(),
            members: BTreeMap::new(),
            next: None,
            last_sent: Some(now),
        });
        for notice in &notification.alerts {
            match group.members.get_mut(&notice.fingerprint) {
                Some(member) if member.notice.status == notice.status => member.sent = false,
                // A newer state of it is queued already.
                Some(_) => {}
                // A resolution not yet delivered.
                None if notice.status == Status::Resolved => {
                    group.members.insert(
                        notice.fingerprint.clone(),
                        Member { notice: notice.clone(), sent: false, muted: false },
                    );
                }
                None => {}
            }
        }
        if group.next.is_none() {
            group.next = Some(now + pacing.group_interval.max(MIN_RETRY));
        }
    }

    fn remove(&mut self, key: &(String, String), fingerprint: &str) {
        if let Some(group) = self.groups.get_mut(key) {
            group.members.remove(fingerprint);
            if group.members.is_empty() {
                self.groups.remove(key);
            }
        }
    }

    /// The messages due at `now`, with each channel's pacing.
    pub fn due(&mut self, now: SystemTime, pacing: impl Fn(&str) -> Option<Pacing>) -> Vec<Notification> {
        let mut due = Vec::new();
        for ((channel, key), group) in &mut self.groups {
            let Some(pacing) = pacing(channel) else { continue };
            let repeat = group.last_sent.is_some_and(|last| now >= last + pacing.repeat_interval);
            if group.next.is_none_or(|next| now < next) && !repeat {
                continue;
            }
            group.next = None;
            let mut alerts: Vec<Notice> =
                group.members.values().filter(|m| !m.muted).map(|m| m.notice.clone()).collect();
            if alerts.is_empty() {
                // Everything in it is muted: nothing to say, and the repeat clock starts again.
                group.last_sent = group.last_sent.map(|_| now);
                continue;
            }
            alerts.sort_by_key(|a| (a.status == Status::Resolved, a.fired_at, a.id));
            due.push(Notification {
                channel: channel.clone(),
                group_key: format!("{channel}:{key}"),
                group_labels: group.labels.clone(),
                alerts,
            });
            group.members.retain(|_, m| m.muted || m.notice.status == Status::Firing);
            for member in group.members.values_mut().filter(|m| !m.muted) {
                member.sent = true;
            }
            group.last_sent = Some(now);
        }
        self.groups.retain(|_, group| !group.members.is_empty());
        due
    }

    /// When the next message may be due, for a loop that sleeps until then.
    pub fn next_due(&self, pacing: impl Fn(&str) -> Option<Pacing>) -> Option<SystemTime> {
        self.groups
            .iter()
            .filter_map(|((channel, _), group)| {
                let repeat = pacing(channel).and_then(|p| group.last_sent.map(|last| last + p.repeat_interval));
                [group.next, repeat].into_iter().flatten().min()
            })
            .min()
    }
}

/// The values of a channel's `group_by` labels in an alert.
fn group_labels(pacing: &Pacing, notice: &Notice) -> BTreeMap<String, String> {
    pacing.group_by.iter().map(|name| (name.clone(), notice.labels.get(name).cloned().unwrap_or_default())).collect()
}

/// `{label="value",...}`, as Alertmanager writes a group key.
fn group_key(labels: &BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", pairs.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + seconds)
    }

    fn pacing() -> Pacing {
        Pacing {
            group_by: vec!["alertname".into()],
            group_wait: Duration::from_secs(30),
            group_interval: Duration::from_secs(300),
            repeat_interval: Duration::from_secs(3600),
        }
    }

    fn notice(id: i64, name: &str, status: Status) -> Notice {
        Notice {
            id,
            fingerprint: format!("f{id}"),
            rule: name.into(),
            severity: "high".into(),
            summary: format!("alert {id}"),
            labels: [("alertname".to_string(), name.to_string()), ("check".to_string(), format!("c{id}"))].into(),
            annotations: BTreeMap::new(),
            status,
            fired_at: at(id as u64),
            resolved_at: (status == Status::Resolved).then(|| at(1000)),
        }
    }

    fn ids(notification: &Notification) -> Vec<(i64, Status)> {
        notification.alerts.iter().map(|a| (a.id, a.status)).collect()
    }

    #[test]
    fn a_burst_becomes_one_message_after_group_wait() {
        let mut dispatcher = Dispatcher::default();
        for id in 0..100 {
            dispatcher.push("ops", &pacing(), notice(id, "down", Status::Firing), at(id as u64 / 10));
        }
        dispatcher.push("ops", &pacing(), notice(500, "slow", Status::Firing), at(5));
        assert!(dispatcher.due(at(29), |_| Some(pacing())).is_empty(), "still waiting for the rest of the storm");
        assert_eq!(dispatcher.next_due(|_| Some(pacing())), Some(at(30)));
        let due = dispatcher.due(at(30), |_| Some(pacing()));
        assert_eq!(due.len(), 1, "the `slow` group waits its own 30 s");
        assert_eq!(due[0].alerts.len(), 100);
        assert_eq!(due[0].group_labels, BTreeMap::from([("alertname".to_string(), "down".to_string())]));
        assert_eq!(due[0].group_key, "ops:{alertname=\"down\"}");
        assert_eq!(dispatcher.due(at(35), |_| Some(pacing())).len(), 1);
        assert!(dispatcher.due(at(60), |_| Some(pacing())).is_empty(), "nothing new");
    }

    #[test]
    fn changes_wait_for_group_interval_and_resolved_alerts_are_sent_once() {
        let mut dispatcher = Dispatcher::default();
        dispatcher.push("ops", &pacing(), notice(1, "down", Status::Firing), at(0));
        dispatcher.push("ops", &pacing(), notice(2, "down", Status::Firing), at(0));
        assert_eq!(ids(&dispatcher.due(at(30), |_| Some(pacing()))[0]), [(1, Status::Firing), (2, Status::Firing)]);
        dispatcher.push("ops", &pacing(), notice(1, "down", Status::Resolved), at(40));
        dispatcher.push("ops", &pacing(), notice(2, "down", Status::Firing), at(40));
        assert!(dispatcher.due(at(329), |_| Some(pacing())).is_empty(), "group_interval counts from the last message");
        let due = dispatcher.due(at(330), |_| Some(pacing()));
        assert_eq!(ids(&due[0]), [(2, Status::Firing), (1, Status::Resolved)]);
        assert_eq!(due[0].status(), Status::Firing);
        dispatcher.push("ops", &pacing(), notice(2, "down", Status::Resolved), at(400));
        let due = dispatcher.due(at(630), |_| Some(pacing()));
        assert_eq!((ids(&due[0]), due[0].status()), (vec![(2, Status::Resolved)], Status::Resolved));
        assert_eq!(dispatcher.next_due(|_| Some(pacing())), None, "an empty group is gone");
    }

    #[test]
    fn a_firing_group_repeats_and_a_quiet_flap_says_nothing() {
        let mut dispatcher = Dispatcher::default();
        dispatcher.push("ops", &pacing(), notice(1, "down", Status::Firing), at(0));
        dispatcher.due(at(30), |_| Some(pacing()));
        assert!(dispatcher.due(at(3629), |_| Some(pacing())).is_empty());
        assert_eq!(ids(&dispatcher.due(at(3630), |_| Some(pacing()))[0]), [(1, Status::Firing)]);

        dispatcher.push("ops", &pacing(), notice(7, "flap", Status::Firing), at(4000));
        dispatcher.push("ops", &pacing(), notice(7, "flap", Status::Resolved), at(4010));
        assert!(dispatcher.due(at(4100), |_| Some(pacing())).iter().all(|n| n.group_labels["alertname"] != "flap"));
        dispatcher.push("ops", &pacing(), notice(9, "never", Status::Resolved), at(4100));
        assert!(dispatcher.due(at(9000), |_| Some(pacing())).iter().all(|n| n.group_labels["alertname"] == "down"));
    }

    #[test]
    fn channels_group_apart_and_muted_alerts_that_nobody_heard_of_go_quietly() {
        let mut dispatcher = Dispatcher::default();
        dispatcher.push("ops", &pacing(), notice(3, "down", Status::Firing), at(0));
        dispatcher.push("chat", &pacing(), notice(1, "down", Status::Firing), at(0));
        dispatcher.push("chat", &pacing(), notice(2, "down", Status::Firing), at(0));
        dispatcher.mute("f1");
        let due = dispatcher.due(at(30), |channel| (channel == "chat").then(pacing));
        assert_eq!(due.len(), 1, "a channel without pacing (removed) sends nothing");
        assert_eq!((due[0].channel.as_str(), ids(&due[0])), ("chat", vec![(2, Status::Firing)]));
        dispatcher.push("chat", &pacing(), notice(1, "down", Status::Resolved), at(40));
        assert!(
            dispatcher
                .due(at(4000), |channel| (channel == "chat").then(pacing))
                .iter()
                .all(|n| ids(n) == [(2, Status::Firing)])
        );
    }

    #[test]
    fn a_muted_alert_that_was_sent_still_resolves_and_its_return_is_not_news() {
        let mut dispatcher = Dispatcher::default();
        dispatcher.push("ops", &pacing(), notice(1, "down", Status::Firing), at(0));
        dispatcher.push("ops", &pacing(), notice(2, "down", Status::Firing), at(0));
        dispatcher.due(at(30), |_| Some(pacing()));
        dispatcher.mute("f1");
        assert!(
            dispatcher.due(at(3630), |_| Some(pacing())).iter().all(|n| ids(n) == [(2, Status::Firing)]),
            "a repeat leaves it out"
        );
        dispatcher.push("ops", &pacing(), notice(1, "down", Status::Firing), at(4000));
        assert!(dispatcher.due(at(4100), |_| Some(pacing())).is_empty(), "unmuted, but receivers know it fires");
        dispatcher.mute("f1");
        dispatcher.push("ops", &pacing(), notice(1, "down", Status::Resolved), at(5000));
        let due = dispatcher.due(at(5000), |_| Some(pacing()));
        assert_eq!(ids(&due[0]), [(2, Status::Firing), (1, Status::Resolved)], "receivers were told it fired");
    }

    #[test]
    fn restored_alerts_are_not_announced_again_and_failed_messages_are_sent_again() {
        let mut dispatcher = Dispatcher::default();
        dispatcher.restore("ops", &pacing(), notice(1, "down", Status::Firing), at(0));
        dispatcher.push("ops", &pacing(), notice(1, "down", Status::Firing), at(1));
        assert!(dispatcher.due(at(600), |_| Some(pacing())).is_empty(), "it was sent before the restart");
        dispatcher.push("ops", &pacing(), notice(1, "down", Status::Resolved), at(700));
        let failed = dispatcher.due(at(700), |_| Some(pacing()));
        assert_eq!(ids(&failed[0]), [(1, Status::Resolved)]);
        assert_eq!(dispatcher.next_due(|_| Some(pacing())), None);
        dispatcher.requeue(&failed[0], &pacing(), at(710));
        assert!(dispatcher.due(at(1009), |_| Some(pacing())).is_empty());
        assert_eq!(ids(&dispatcher.due(at(1010), |_| Some(pacing()))[0]), [(1, Status::Resolved)], "sent again");
        let eager = Pacing { group_interval: Duration::ZERO, ..pacing() };
        dispatcher.push("ops", &eager, notice(2, "down", Status::Firing), at(2000));
        let failed = dispatcher.due(at(2030), |_| Some(eager.clone()));
        dispatcher.requeue(&failed[0], &eager, at(2031));
        assert!(
            dispatcher.due(at(2090), |_| Some(eager.clone())).is_empty(),
            "not every tick, however eager the channel"
        );
        assert_eq!(dispatcher.due(at(2091), |_| Some(eager.clone())).len(), 1);
    }

    #[test]
    fn an_alert_whose_group_changes_moves_and_is_not_repeated_in_the_old_one() {
        let by_severity = Pacing { group_by: vec!["alertname".into(), "severity".into()], ..pacing() };
        let mut dispatcher = Dispatcher::default();
        let mut high = notice(1, "down", Status::Firing);
        high.labels.insert("severity".into(), "high".into());
        dispatcher.push("ops", &by_severity, high.clone(), at(0));
        dispatcher.due(at(30), |_| Some(by_severity.clone()));
        let mut critical = high.clone();
        critical.labels.insert("severity".into(), "critical".into());
        dispatcher.push("ops", &by_severity, critical, at(300));
        let due = dispatcher.due(at(330), |_| Some(by_severity.clone()));
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].group_labels["severity"], "critical");
        assert!(dispatcher.due(at(3630), |_| Some(by_severity.clone())).is_empty(), "the old group is gone");
    }
}
