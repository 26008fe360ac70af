//! The GraphQL queries: the query layer's answers, with the types GraphQL needs of its own.

use std::collections::BTreeMap;

use async_graphql::{ComplexObject, Context, Json, Object, SimpleObject};

use super::limits::{log_scan, scan};
use super::{error, limit, offset, queries};
use crate::alerting::alert::Alert;
use crate::alerting::api_rules::Rule;
use crate::alerting::engine::RuleStatus;
use crate::alerting::silences::Silence;
use crate::analytics::answers::{Analytics, MAX_DAYS};
use crate::api::query::checks::{MetricsAnswer, MetricsRequest};
use crate::api::query::status::Status;
use crate::checks::board::CheckState;
use crate::checks::health::Health;
use crate::checks::performance::{Errors, MAX_WINDOW, Performance};
use crate::checks::recovery::status::Status as RecoveryStatus;
use crate::checks::store::StoredRun;
use crate::logs::StoredRecord;
use crate::logs::analysis::{Aggregation, Analysis, MAX_HOURS, Period, Security};
use crate::logs::search::Search;
use crate::storage::{MetricName, Page as StoragePage};
use crate::traces::{Trace, TraceSearch, TraceSummary};

pub struct QueryRoot;

/// Every check's state and the worst status among the enabled ones.
#[derive(SimpleObject)]
struct HealthReport {
    status: Health,
    checks: Vec<Check>,
    /// Checks in all.
    total: u64,
}

/// A check's latest state, with its history on request.
#[derive(SimpleObject)]
#[graphql(complex)]
struct Check {
    name: String,
    plugin: String,
    /// Its own status, unless a dependency is the cause of its failure: then `DEGRADED`.
    status: Health,
    summary: String,
    /// The dependency that is down and explains this check's failure.
    cause: Option<String>,
    own_status: Health,
    /// RFC 3339.
    last_run: Option<String>,
    response_time_ms: Option<f64>,
    details: BTreeMap<String, String>,
    error: Option<String>,
    enabled: bool,
    interval_seconds: f64,
    depends_on: Vec<String>,
    /// Where automatic recovery stands, as `/v1/health` reports it.
    recovery: Option<Json<RecoveryStatus>>,
}

impl From<CheckState> for Check {
    fn from(state: CheckState) -> Self {
        Self {
            name: state.name,
            plugin: state.plugin,
            status: state.status,
            summary: state.summary,
            cause: state.cause,
            own_status: state.own_status,
            last_run: state.last_run,
            response_time_ms: state.response_time_ms,
            details: state.details,
            error: state.error,
            enabled: state.enabled,
            interval_seconds: state.interval_seconds,
            depends_on: state.depends_on,
            recovery: state.recovery.map(Json),
        }
    }
}

#[ComplexObject]
impl Check {
    /// Past runs, newest first.
    #[graphql(complexity = "usize::try_from(limit).unwrap_or(0).saturating_mul(child_complexity)")]
    async fn history(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] limit: i32,
    ) -> async_graphql::Result<Vec<StoredRun>> {
        queries(ctx).history(&self.name, self::limit(limit)?).await.map_err(error)
    }
}

/// A label a series must carry.
#[derive(async_graphql::InputObject)]
struct LabelInput {
    name: String,
    value: String,
}

#[derive(SimpleObject)]
struct Point {
    /// Unix milliseconds.
    time: f64,
    value: f64,
}

#[derive(SimpleObject)]
struct Series {
    name: String,
    labels: BTreeMap<String, String>,
    points: Vec<Point>,
}

#[derive(SimpleObject)]
struct SeriesPage {
    series: Vec<Series>,
    /// Matching series in all.
    total: u64,
}

#[derive(SimpleObject)]
#[graphql(
    concrete(name = "AlertRulePage", params(Rule)),
    concrete(name = "AlertPage", params(Alert)),
    concrete(name = "SilencePage", params(Silence))
)]
struct Page<T: async_graphql::OutputType> {
    items: Vec<T>,
    total: u64,
    offset: u64,
    limit: u64,
}

impl<T: async_graphql::OutputType> From<StoragePage<T>> for Page<T> {
    fn from(page: StoragePage<T>) -> Self {
        Self { items: page.items, total: page.total, offset: page.offset, limit: page.limit }
    }
}

#[Object]
impl QueryRoot {
    /// Every check's latest state, or one check's.
    async fn health(
        &self,
        ctx: &Context<'_>,
        service: Option<String>,
        #[graphql(default = 0)] offset: i32,
        #[graphql(default = 1000)] limit: i32,
    ) -> async_graphql::Result<HealthReport> {
        let (offset, limit) = (self::offset(offset)?, self::limit(limit)?);
        let report = queries(ctx)
            .health(service.as_deref(), usize::try_from(offset).unwrap_or(usize::MAX), limit as usize)
            .map_err(error)?;
        Ok(HealthReport {
            status: report.status,
            checks: report.checks.into_iter().map(Check::from).collect(),
            total: report.total as u64,
        })
    }

    /// One check, by name.
    async fn check(&self, ctx: &Context<'_>, name: String) -> async_graphql::Result<Check> {
        let report = queries(ctx).health(Some(&name), 0, 1).map_err(error)?;
        report.checks.into_iter().next().map(Check::from).ok_or_else(|| "no such check".into())
    }

    /// Every stored metric name and its number of series.
    #[graphql(complexity = 10)]
    async fn metric_names(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<MetricName>> {
        let request =
            MetricsRequest { name: None, matchers: Vec::new(), from: None, to: None, step: None, offset: 0, limit: 1 };
        match queries(ctx).metrics(request).await.map_err(error)? {
            MetricsAnswer::Names { metrics } => Ok(metrics),
            MetricsAnswer::Series { .. } => Ok(Vec::new()),
        }
    }

    /// A metric's series between `from` and `to` (Unix seconds; the last hour by default), averaged into
    /// buckets of `stepSeconds` when given.
    #[allow(clippy::too_many_arguments)]
    #[graphql(complexity = "50 + usize::try_from(limit).unwrap_or(0).saturating_mul(child_complexity)")]
    async fn series(
        &self,
        ctx: &Context<'_>,
        name: String,
        #[graphql(default)] labels: Vec<LabelInput>,
        from: Option<f64>,
        to: Option<f64>,
        step_seconds: Option<f64>,
        #[graphql(default = 0)] offset: i32,
        #[graphql(default = 100)] limit: i32,
    ) -> async_graphql::Result<SeriesPage> {
        let time = |what: &str, seconds: Option<f64>| -> async_graphql::Result<Option<std::time::SystemTime>> {
            seconds
                .map(|s| {
                    std::time::Duration::try_from_secs_f64(s)
                        .ok()
                        .and_then(|d| std::time::UNIX_EPOCH.checked_add(d))
                        .ok_or_else(|| async_graphql::Error::new(format!("`{what}` must be Unix seconds")))
                })
                .transpose()
        };
        let step = step_seconds
            .map(|s| {
                std::time::Duration::try_from_secs_f64(s)
                    .map_err(|_| async_graphql::Error::new("`stepSeconds` must be a positive number"))
            })
            .transpose()?;
        let request = MetricsRequest {
            name: Some(name),
            matchers: labels.into_iter().map(|l| (l.name, l.value)).collect(),
            from: time("from", from)?,
            to: time("to", to)?,
            step,
            offset: usize::try_from(self::offset(offset)?).unwrap_or(usize::MAX),
            limit: usize::try_from(self::limit(limit)?).unwrap_or(usize::MAX),
        };
        match queries(ctx).metrics(request).await.map_err(error)? {
            MetricsAnswer::Series { page, .. } => Ok(SeriesPage {
                total: page.total as u64,
                series: page
                    .series
                    .into_iter()
                    .map(|s| Series {
                        name: s.name,
                        labels: s.labels,
                        points: s.points.into_iter().map(|(time, value)| Point { time: time as f64, value }).collect(),
                    })
                    .collect(),
            }),
            MetricsAnswer::Names { .. } => Ok(SeriesPage { series: Vec::new(), total: 0 }),
        }
    }

    /// Per check count, error rate, p50/p95/p99 and throughput over the last `timeWindow` seconds, and the slowest
    /// runs.
    #[graphql(complexity = "scan(time_window.into(), MAX_WINDOW.as_secs()) + child_complexity")]
    async fn performance(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 3600)] time_window: u32,
    ) -> async_graphql::Result<Performance> {
        queries(ctx).performance(std::time::Duration::from_secs(time_window.into())).await.map_err(error)
    }

    /// Error counts, rate, per check, and the top error patterns over the last `timeWindow` seconds.
    #[graphql(complexity = "scan(time_window.into(), MAX_WINDOW.as_secs()) + child_complexity")]
    async fn errors(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 3600)] time_window: u32,
    ) -> async_graphql::Result<Errors> {
        queries(ctx).errors(std::time::Duration::from_secs(time_window.into())).await.map_err(error)
    }

    /// Log record counts per period (`MINUTE`, `HOUR`, `DAY`), level and service over the last `hours`.
    #[graphql(complexity = "scan(hours.into(), MAX_HOURS) + child_complexity")]
    async fn log_aggregate(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 24)] hours: u32,
        #[graphql(default_with = "Period::Hour")] period: Period,
    ) -> async_graphql::Result<Aggregation> {
        queries(ctx).aggregate_logs(hours.into(), period).await.map_err(error)
    }

    /// Log analysis over the last `hours`: counts, error templates with spikes, user activity, security events.
    #[graphql(complexity = "scan(hours.into(), MAX_HOURS) + child_complexity")]
    async fn log_analysis(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 24)] hours: u32,
    ) -> async_graphql::Result<Analysis> {
        queries(ctx).analyse_logs(hours.into()).await.map_err(error)
    }

    /// Security events over the last `hours`.
    #[graphql(complexity = "scan(hours.into(), MAX_HOURS) + child_complexity")]
    async fn security_events(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 24)] hours: u32,
    ) -> async_graphql::Result<Security> {
        queries(ctx).security_events(hours.into()).await.map_err(error)
    }

    /// Stored log records, newest first: a full-text query (`text`), levels, service, trace and time range (Unix
    /// seconds).
    #[allow(clippy::too_many_arguments)]
    #[graphql(complexity = "log_scan(from, to) + usize::try_from(offset).unwrap_or(0) / 100 + \
                            usize::try_from(limit).unwrap_or(0).saturating_mul(child_complexity)")]
    async fn logs(
        &self,
        ctx: &Context<'_>,
        text: Option<String>,
        #[graphql(default)] levels: Vec<String>,
        service: Option<String>,
        trace_id: Option<String>,
        from: Option<f64>,
        to: Option<f64>,
        #[graphql(default = 0)] offset: i32,
        #[graphql(default = 100)] limit: i32,
    ) -> async_graphql::Result<Vec<StoredRecord>> {
        let time = |seconds: Option<f64>| {
            seconds
                .and_then(|s| std::time::Duration::try_from_secs_f64(s).ok())
                .and_then(|d| std::time::UNIX_EPOCH.checked_add(d))
        };
        let search = Search {
            text,
            levels: levels.into_iter().map(|l| l.to_ascii_lowercase()).collect(),
            service,
            source: None,
            trace_id,
            user_id: None,
            from: time(from),
            to: time(to),
            after: None,
            offset: self::offset(offset)?,
            limit: u64::from(self::limit(limit)?),
        };
        Ok(queries(ctx).search_logs(search).await.map_err(error)?.records)
    }

    /// Alert rules by name.
    async fn alert_rules(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 0)] offset: i32,
        #[graphql(default = 100)] limit: i32,
    ) -> async_graphql::Result<Page<Rule>> {
        let page = queries(ctx).rules(self::offset(offset)?, u64::from(self::limit(limit)?)).await.map_err(error)?;
        Ok(page.into())
    }

    async fn alert_rule(&self, ctx: &Context<'_>, name: String) -> async_graphql::Result<Rule> {
        queries(ctx).rule(&name).await.map_err(error)
    }

    /// Active alerts (pending and firing), or with `active: false` the resolved ones; newest first.
    async fn alerts(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = true)] active: bool,
        #[graphql(default = 0)] offset: i32,
        #[graphql(default = 100)] limit: i32,
    ) -> async_graphql::Result<Page<Alert>> {
        let page =
            queries(ctx).alerts(active, self::offset(offset)?, u64::from(self::limit(limit)?)).await.map_err(error)?;
        Ok(page.into())
    }

    /// One alert, active or resolved.
    async fn alert(&self, ctx: &Context<'_>, id: i64) -> async_graphql::Result<Alert> {
        queries(ctx).alert(id).await.map_err(error)
    }

    /// Every rule (the defaults, the config's and the API's) with how it fared at its last evaluation.
    async fn rule_states(&self, ctx: &Context<'_>) -> Vec<RuleStatus> {
        queries(ctx).rule_states()
    }

    /// Silences not yet over first, then expired ones; newest first.
    async fn silences(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 0)] offset: i32,
        #[graphql(default = 100)] limit: i32,
    ) -> async_graphql::Result<Page<Silence>> {
        let page = queries(ctx).silences(self::offset(offset)?, u64::from(self::limit(limit)?)).await.map_err(error)?;
        Ok(page.into())
    }

    /// selfmon's own status, as `/v1/status` reports it.
    async fn status(&self, ctx: &Context<'_>) -> async_graphql::Result<Json<Status>> {
        Ok(Json(queries(ctx).status().await.map_err(error)?))
    }

    /// One trace as a tree of spans, with its log records.
    #[graphql(complexity = "100 + child_complexity")]
    async fn trace(&self, ctx: &Context<'_>, trace_id: String) -> async_graphql::Result<Trace> {
        queries(ctx).trace(&trace_id).await.map_err(error)
    }

    /// Traces with a span matching every filter, newest first.
    #[allow(clippy::too_many_arguments)]
    #[graphql(complexity = "scan(1, 1) + (limit.clamp(1, 200) as usize).saturating_mul(child_complexity)")]
    async fn traces(
        &self,
        ctx: &Context<'_>,
        service: Option<String>,
        operation: Option<String>,
        min_duration_ms: Option<f64>,
        error_only: Option<bool>,
        user_id: Option<String>,
        #[graphql(default = 20)] limit: u32,
    ) -> async_graphql::Result<Vec<TraceSummary>> {
        let min_duration = min_duration_ms
            .map(|ms| std::time::Duration::try_from_secs_f64(ms / 1000.0))
            .transpose()
            .map_err(|_| async_graphql::Error::new("`minDurationMs` must be 0 or more"))?;
        let search = TraceSearch {
            service,
            operation,
            min_duration,
            error: error_only,
            user_id,
            limit: u64::from(limit.clamp(1, 200)),
            ..TraceSearch::default()
        };
        queries(ctx).search_traces(search).await.map_err(error)
    }

    /// Users, engagement, satisfaction, retention and AI cost over the last `days`.
    #[graphql(complexity = "scan(days.into(), MAX_DAYS) + child_complexity")]
    async fn analytics(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 30)] days: u32,
    ) -> async_graphql::Result<Analytics> {
        queries(ctx).analytics(u64::from(days)).await.map_err(error)
    }
}
