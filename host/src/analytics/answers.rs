//! Answers over the stored events: active users, engagement and sessions, completion rates, satisfaction,
//! retention by weekly cohort, and what AI costs per model, per user and per day against the budget.
//!
//! Days and weeks are UTC; weeks start on Monday. A session is a user's run of events with no gap over
//! [`SESSION_GAP`]; its duration runs from its first event to its last.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use serde::Serialize;

use crate::analytics::cost::Prices;
use crate::storage::rfc3339;

/// The longest window analytics cover.
pub const MAX_DAYS: u64 = 366;
/// Inactivity that ends a session.
pub const SESSION_GAP: Duration = Duration::from_secs(30 * 60);
/// Users listed by AI cost, and actions listed by count.
const TOP: usize = 10;
pub const DAY_MS: i64 = 86_400_000;

/// `GET /v1/analytics`.
#[derive(Debug, Clone, Serialize, async_graphql::SimpleObject, utoipa::ToSchema)]
pub struct Analytics {
    pub days: u64,
    /// RFC 3339: the window's bounds.
    pub from: String,
    pub to: String,
    pub users: Users,
    pub engagement: Engagement,
    pub conversations: Funnel,
    pub assessments: Funnel,
    pub satisfaction: Satisfaction,
    /// Users by the week of their first event in the window, and the share of them active in each week after.
    pub retention: Vec<Cohort>,
    pub ai: AiCosts,
}

#[derive(Debug, Clone, Serialize, async_graphql::SimpleObject, utoipa::ToSchema)]
pub struct Users {
    /// Distinct users with an event in the 24 hours, 7 days and 30 days before `to`.
    pub daily_active: u64,
    pub weekly_active: u64,
    pub monthly_active: u64,
    /// Distinct users in the window.
    pub active: u64,
    /// Users whose first event ever is in the window.
    pub new: u64,
    /// Distinct users per day.
    pub by_day: Vec<DayCount>,
}

#[derive(Debug, Clone, Serialize, async_graphql::SimpleObject, utoipa::ToSchema)]
pub struct DayCount {
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    pub count: u64,
}

#[derive(Debug, Clone, Serialize, async_graphql::SimpleObject, utoipa::ToSchema)]
pub struct Engagement {
    /// `user_activity` events.
    pub actions: u64,
    pub actions_per_user: f64,
    pub top_actions: Vec<NameCount>,
    pub sessions: u64,
    pub sessions_per_user: f64,
    pub mean_session_seconds: f64,
    pub median_session_seconds: f64,
}

#[derive(Debug, Clone, Serialize, async_graphql::SimpleObject, utoipa::ToSchema)]
pub struct NameCount {
    pub name: String,
    pub count: u64,
}

#[derive(Debug, Clone, Serialize, async_graphql::SimpleObject, utoipa::ToSchema)]
pub struct Funnel {
    pub started: u64,
    pub completed: u64,
    /// Completed per started, 0 to 1; none when nothing started.
    pub completion_rate: Option<f64>,
}

#[derive(Debug, Clone, Serialize, async_graphql::SimpleObject, utoipa::ToSchema)]
pub struct Satisfaction {
    pub ratings: u64,
    pub average: Option<f64>,
    /// Ratings rounded to 1..5: how many of each.
    pub distribution: Vec<u64>,
    pub by_day: Vec<DayAverage>,
}

#[derive(Debug, Clone, Serialize, async_graphql::SimpleObject, utoipa::ToSchema)]
pub struct DayAverage {
    pub day: String,
    pub average: f64,
    pub count: u64,
}

#[derive(Debug, Clone, Serialize, async_graphql::SimpleObject, utoipa::ToSchema)]
pub struct Cohort {
    /// The Monday the cohort's week starts, `YYYY-MM-DD`.
    pub week: String,
    pub users: u64,
    /// Share of the cohort active in its first week (1), the week after, and so on up to the window's end.
    pub retained: Vec<f64>,
}

#[derive(Debug, Clone, Serialize, async_graphql::SimpleObject, utoipa::ToSchema)]
pub struct AiCosts {
    pub requests: u64,
    pub failed: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// US dollars.
    pub cost: f64,
    pub by_model: Vec<ModelCost>,
    pub by_day: Vec<DayCost>,
    /// The users who cost most (pseudonyms when pseudonymization is on).
    pub top_users: Vec<UserCost>,
    pub budget: Budget,
    /// Models used in the window that have no price (their cost counts as 0 unless the events carried one).
    pub unpriced_models: Vec<String>,
}

#[derive(Debug, Clone, Serialize, async_graphql::SimpleObject, utoipa::ToSchema)]
pub struct ModelCost {
    pub provider: String,
    pub model: String,
    pub requests: u64,
    pub failed: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost: f64,
    pub mean_latency_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize, async_graphql::SimpleObject, utoipa::ToSchema)]
pub struct DayCost {
    pub day: String,
    pub cost: f64,
    pub requests: u64,
}

#[derive(Debug, Clone, Serialize, async_graphql::SimpleObject, utoipa::ToSchema)]
pub struct UserCost {
    pub user_id: String,
    pub cost: f64,
    pub requests: u64,
}

#[derive(Debug, Clone, Serialize, async_graphql::SimpleObject, utoipa::ToSchema)]
pub struct Budget {
    /// `[ai] daily_budget`, and the spend over the 24 hours before `to` (what the `high_ai_costs` rule compares).
    pub daily_budget: f64,
    pub last_24_hours: f64,
    /// Since midnight UTC.
    pub today: f64,
    /// `[ai] monthly_budget`, the spend since the 1st of this month (UTC), and its share of the budget.
    pub monthly_budget: Option<f64>,
    pub this_month: f64,
    pub monthly_share: Option<f64>,
}

/// `YYYY-MM-DD` of a Unix day.
fn day_name(day: i64) -> String {
    rfc3339(day * DAY_MS)[..10].to_string()
}

/// The Unix day of the Monday starting the week of `day` (1970-01-01 was a Thursday).
fn monday(day: i64) -> i64 {
    day - (day + 3).rem_euclid(7)
}

/// An event as the answers read it.
pub struct Row {
    pub ts: i64,
    pub kind: String,
    pub user: Option<String>,
    pub action: Option<String>,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub input: i64,
    pub output: i64,
    pub latency: Option<f64>,
    pub success: bool,
    pub cost: Option<f64>,
    pub rating: Option<f64>,
}

#[allow(clippy::too_many_arguments)]
pub fn summarise(
    days: u64,
    from: i64,
    to: i64,
    rows: &[Row],
    first_seen: &HashMap<String, i64>,
    mut users: Users,
    mut budget: Budget,
    prices: &Prices,
) -> Analytics {
    let count = |kind: &str| rows.iter().filter(|r| r.kind == kind).count() as u64;
    let funnel = |started: u64, completed: u64| Funnel {
        started,
        completed,
        completion_rate: (started > 0).then(|| completed as f64 / started as f64),
    };

    // Users and their days.
    let mut by_user: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    let mut by_day: BTreeMap<i64, BTreeSet<&str>> = BTreeMap::new();
    for row in rows {
        if let Some(user) = &row.user {
            by_user.entry(user).or_default().push(row.ts);
            by_day.entry(row.ts.div_euclid(DAY_MS)).or_default().insert(user);
        }
    }
    users.active = by_user.len() as u64;
    users.new = by_user.keys().filter(|u| first_seen.get(**u).is_some_and(|first| *first >= from)).count() as u64;
    users.by_day = by_day.iter().map(|(day, set)| DayCount { day: day_name(*day), count: set.len() as u64 }).collect();

    // Engagement and sessions.
    let actions = count("user_activity");
    let mut action_counts: BTreeMap<&str, u64> = BTreeMap::new();
    for row in rows.iter().filter(|r| r.kind == "user_activity") {
        *action_counts.entry(row.action.as_deref().unwrap_or_default()).or_default() += 1;
    }
    let mut top_actions: Vec<NameCount> =
        action_counts.into_iter().map(|(name, count)| NameCount { name: name.into(), count }).collect();
    top_actions.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
    top_actions.truncate(TOP);
    let gap = i64::try_from(SESSION_GAP.as_millis()).unwrap_or(i64::MAX);
    let mut sessions: Vec<f64> = Vec::new();
    for times in by_user.values() {
        let mut start = times[0];
        let mut last = times[0];
        for &ts in &times[1..] {
            if ts - last > gap {
                sessions.push((last - start) as f64 / 1000.0);
                start = ts;
            }
            last = ts;
        }
        sessions.push((last - start) as f64 / 1000.0);
    }
    sessions.sort_by(f64::total_cmp);
    let per_user = |n: u64| if users.active > 0 { n as f64 / users.active as f64 } else { 0.0 };
    let engagement = Engagement {
        actions,
        actions_per_user: per_user(actions),
        top_actions,
        sessions: sessions.len() as u64,
        sessions_per_user: per_user(sessions.len() as u64),
        mean_session_seconds: if sessions.is_empty() {
            0.0
        } else {
            sessions.iter().sum::<f64>() / sessions.len() as f64
        },
        median_session_seconds: median(&sessions),
    };

    // Satisfaction.
    let ratings: Vec<(i64, f64)> =
        rows.iter().filter(|r| r.kind == "satisfaction").filter_map(|r| Some((r.ts, r.rating?))).collect();
    let mut distribution = vec![0u64; 5];
    let mut daily: BTreeMap<i64, (f64, u64)> = BTreeMap::new();
    for (ts, rating) in &ratings {
        let index = (rating.round() as usize).clamp(1, 5) - 1;
        distribution[index] += 1;
        let day = daily.entry(ts.div_euclid(DAY_MS)).or_default();
        day.0 += rating;
        day.1 += 1;
    }
    let satisfaction = Satisfaction {
        ratings: ratings.len() as u64,
        average: (!ratings.is_empty()).then(|| ratings.iter().map(|r| r.1).sum::<f64>() / ratings.len() as f64),
        distribution,
        by_day: daily
            .into_iter()
            .map(|(day, (sum, count))| DayAverage { day: day_name(day), average: sum / count as f64, count })
            .collect(),
    };

    // Retention by weekly cohort: users whose first event ever falls in the window.
    let last_week = monday(to.div_euclid(DAY_MS));
    let mut cohorts: BTreeMap<i64, Vec<&str>> = BTreeMap::new();
    for user in by_user.keys() {
        if let Some(first) = first_seen.get(*user).filter(|first| **first >= from) {
            cohorts.entry(monday(first.div_euclid(DAY_MS))).or_default().push(user);
        }
    }
    let retention = cohorts
        .into_iter()
        .map(|(week, members)| {
            let weeks = usize::try_from((last_week - week) / 7).unwrap_or(0) + 1;
            let mut active = vec![0u64; weeks];
            for user in &members {
                let seen: BTreeSet<usize> = by_user[user]
                    .iter()
                    .filter_map(|ts| usize::try_from((monday(ts.div_euclid(DAY_MS)) - week) / 7).ok())
                    .collect();
                for offset in seen.into_iter().filter(|o| *o < weeks) {
                    active[offset] += 1;
                }
            }
            Cohort {
                week: day_name(week),
                users: members.len() as u64,
                retained: active.iter().map(|n| *n as f64 / members.len() as f64).collect(),
            }
        })
        .collect();

    // AI usage and cost.
    let ai_rows: Vec<&Row> = rows.iter().filter(|r| r.kind == "ai_usage").collect();
    let mut models: BTreeMap<(String, String), (ModelCost, f64, u64)> = BTreeMap::new();
    let mut by_day: BTreeMap<i64, (f64, u64)> = BTreeMap::new();
    let mut by_cost_user: BTreeMap<&str, (f64, u64)> = BTreeMap::new();
    let mut unpriced = BTreeSet::new();
    for row in &ai_rows {
        let provider = row.provider.clone().unwrap_or_default();
        let model = row.model.clone().unwrap_or_default();
        if prices.lookup(&model).is_none() {
            unpriced.insert(model.clone());
        }
        let cost = row.cost.unwrap_or(0.0);
        let entry = models.entry((provider.clone(), model.clone())).or_insert_with(|| {
            (
                ModelCost {
                    provider,
                    model,
                    requests: 0,
                    failed: 0,
                    input_tokens: 0,
                    output_tokens: 0,
                    cost: 0.0,
                    mean_latency_ms: None,
                },
                0.0,
                0,
            )
        });
        entry.0.requests += 1;
        entry.0.failed += u64::from(!row.success);
        entry.0.input_tokens += row.input.cast_unsigned();
        entry.0.output_tokens += row.output.cast_unsigned();
        entry.0.cost += cost;
        if let Some(latency) = row.latency {
            entry.1 += latency;
            entry.2 += 1;
        }
        let day = by_day.entry(row.ts.div_euclid(DAY_MS)).or_default();
        day.0 += cost;
        day.1 += 1;
        if let Some(user) = &row.user {
            let spent = by_cost_user.entry(user).or_default();
            spent.0 += cost;
            spent.1 += 1;
        }
    }
    let mut by_model: Vec<ModelCost> = models
        .into_values()
        .map(|(mut model, latency, timed)| {
            model.mean_latency_ms = (timed > 0).then(|| latency / timed as f64);
            model
        })
        .collect();
    by_model.sort_by(|a, b| b.cost.total_cmp(&a.cost).then_with(|| a.model.cmp(&b.model)));
    let mut top_users: Vec<UserCost> = by_cost_user
        .into_iter()
        .map(|(user, (cost, requests))| UserCost { user_id: user.into(), cost, requests })
        .collect();
    top_users.sort_by(|a, b| b.cost.total_cmp(&a.cost).then_with(|| a.user_id.cmp(&b.user_id)));
    top_users.truncate(TOP);
    budget.monthly_share = budget.monthly_budget.filter(|b| *b > 0.0).map(|b| budget.this_month / b);
    let ai = AiCosts {
        requests: ai_rows.len() as u64,
        failed: ai_rows.iter().filter(|r| !r.success).count() as u64,
        input_tokens: ai_rows.iter().map(|r| r.input.cast_unsigned()).sum(),
        output_tokens: ai_rows.iter().map(|r| r.output.cast_unsigned()).sum(),
        cost: by_model.iter().map(|m| m.cost).sum(),
        by_model,
        by_day: by_day
            .into_iter()
            .map(|(day, (cost, requests))| DayCost { day: day_name(day), cost, requests })
            .collect(),
        top_users,
        budget,
        unpriced_models: unpriced.into_iter().collect(),
    };

    Analytics {
        days,
        from: rfc3339(from),
        to: rfc3339(to),
        users,
        engagement,
        conversations: funnel(count("conversation_started"), count("conversation_completed")),
        assessments: funnel(count("assessment_started"), count("assessment_completed")),
        satisfaction,
        retention,
        ai,
    }
}

fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => f64::midpoint(sorted[n / 2 - 1], sorted[n / 2]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::to_millis;

    #[test]
    fn weeks_start_on_monday() {
        // 2026-11-23 is a Monday; 2026-11-27 a Friday; 2026-11-29 a Sunday.
        let day = |text: &str| to_millis(humantime::parse_rfc3339(text).unwrap()).div_euclid(DAY_MS);
        let monday_23 = day("2026-11-23T00:00:00Z");
        assert_eq!(monday(day("2026-11-27T13:00:00Z")), monday_23);
        assert_eq!(monday(day("2026-11-29T23:59:59Z")), monday_23);
        assert_eq!(monday(day("2026-11-30T00:00:00Z")), monday_23 + 7);
        assert_eq!(day_name(monday_23), "2026-11-23");
    }
}
