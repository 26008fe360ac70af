//! GraphQL at `/graphql`: the [query layer](crate::query) again, for tools that want to choose their fields.
//! Queries and mutations are POSTed; subscriptions use the `graphql-transport-ws` protocol over a WebSocket on the
//! same path and are fed by the [event bus](crate::events).
//!
//! A query deeper than [`MAX_DEPTH`] or more complex than [`MAX_COMPLEXITY`] is refused before it runs. Mutations
//! need an admin key (or an API without keys). `selfmon graphql-schema` prints the schema; the repository keeps a
//! copy in `schema.graphql`, which a test holds to the code.

use crate::alerting::RuleStatus;
use crate::alerting::silences::{Silence, SilenceRequest};
use std::collections::BTreeMap;
use std::sync::Arc;

use async_graphql::futures_util::{Stream, StreamExt};
use async_graphql::{ComplexObject, Context, ErrorExtensions, Json, Object, SimpleObject, Subscription};
use async_graphql_axum::{GraphQLProtocol, GraphQLRequest, GraphQLResponse, GraphQLWebSocket};
use axum::Extension;
use axum::extract::{State, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use tokio_stream::wrappers::BroadcastStream;

use crate::access::Caller;
use crate::alerts::{Alert, Rule, RuleRequest};
use crate::analysis::{Aggregation, Analysis, Period, Security};
use crate::events::{HealthChange, Payload};
use crate::health::{CheckState, Health};
use crate::performance::{Errors, Performance};
use crate::query::{MetricsAnswer, MetricsRequest, Queries, QueryError};
use crate::storage::{MetricName, StoredRun};

/// The deepest a query may nest.
pub const MAX_DEPTH: usize = 10;
/// The most fields (weighted by lists) a query may ask for.
pub const MAX_COMPLEXITY: usize = 1000;
/// The largest WebSocket message a subscriber may send.
const MAX_MESSAGE: usize = 64 << 10;
/// The most items one list field returns.
const MAX_LIMIT: i32 = 1000;

pub type Schema = async_graphql::Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// The schema, serving `queries`.
pub fn schema(queries: Arc<Queries>) -> Schema {
    builder().data(queries).finish()
}

/// The schema in SDL, as `selfmon graphql-schema` prints it.
pub fn sdl() -> String {
    builder().finish().sdl()
}

fn builder() -> async_graphql::SchemaBuilder<QueryRoot, MutationRoot, SubscriptionRoot> {
    Schema::build(QueryRoot, MutationRoot, SubscriptionRoot).limit_depth(MAX_DEPTH).limit_complexity(MAX_COMPLEXITY)
}

/// A GraphQL error with the REST API's code in its extensions.
fn error(error: QueryError) -> async_graphql::Error {
    let code = match &error {
        QueryError::NotFound { code, .. } => code,
        QueryError::Invalid(_) | QueryError::Rejected(_) => "bad_request",
        QueryError::Conflict(_) => "conflict",
        QueryError::Busy | QueryError::Unavailable(_) => "busy",
        QueryError::Storage(detail) => {
            tracing::error!(detail, "A GraphQL query failed in storage");
            return async_graphql::Error::new("the data could not be read")
                .extend_with(|_, e| e.set("code", "storage"));
        }
    };
    async_graphql::Error::new(error.to_string()).extend_with(|_, e| e.set("code", code.to_string()))
}

fn limit(value: i32) -> async_graphql::Result<u32> {
    if (1..=MAX_LIMIT).contains(&value) {
        Ok(value.unsigned_abs())
    } else {
        Err(async_graphql::Error::new(format!("`limit` must be between 1 and {MAX_LIMIT}")))
    }
}

fn offset(value: i32) -> async_graphql::Result<u64> {
    u64::try_from(value).map_err(|_| async_graphql::Error::new("`offset` must not be negative"))
}

fn queries<'a>(ctx: &Context<'a>) -> &'a Arc<Queries> {
    ctx.data_unchecked::<Arc<Queries>>()
}

/// The caller's key name when it may change things; a refusal is counted and logged like the REST API's.
fn admin(ctx: &Context<'_>, what: &str) -> async_graphql::Result<Option<String>> {
    match ctx.data_opt::<Caller>() {
        Some(caller) if caller.is_admin() => Ok(caller.name.clone()),
        caller => {
            queries(ctx).access.refused_inside("forbidden", caller.and_then(|c| c.name.as_deref()), what);
            Err(async_graphql::Error::new("this needs a key with the admin role")
                .extend_with(|_, e| e.set("code", "forbidden")))
        }
    }
}

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
    recovery: Option<Json<crate::recovery::Status>>,
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

impl<T: async_graphql::OutputType> From<crate::alerts::Page<T>> for Page<T> {
    fn from(page: crate::alerts::Page<T>) -> Self {
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
    #[graphql(complexity = "10 + usize::try_from(limit).unwrap_or(0) * child_complexity")]
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
    #[graphql(complexity = 100)]
    async fn performance(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 3600)] time_window: u32,
    ) -> async_graphql::Result<Performance> {
        queries(ctx).performance(std::time::Duration::from_secs(time_window.into())).await.map_err(error)
    }

    /// Error counts, rate, per check, and the top error patterns over the last `timeWindow` seconds.
    #[graphql(complexity = 100)]
    async fn errors(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 3600)] time_window: u32,
    ) -> async_graphql::Result<Errors> {
        queries(ctx).errors(std::time::Duration::from_secs(time_window.into())).await.map_err(error)
    }

    /// Log record counts per period (`MINUTE`, `HOUR`, `DAY`), level and service over the last `hours`.
    #[graphql(complexity = 100)]
    async fn log_aggregate(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 24)] hours: u32,
        #[graphql(default_with = "Period::Hour")] period: Period,
    ) -> async_graphql::Result<Aggregation> {
        queries(ctx).aggregate_logs(hours.into(), period).await.map_err(error)
    }

    /// Log analysis over the last `hours`: counts, error templates with spikes, user activity, security events.
    #[graphql(complexity = 100)]
    async fn log_analysis(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 24)] hours: u32,
    ) -> async_graphql::Result<Analysis> {
        queries(ctx).analyse_logs(hours.into()).await.map_err(error)
    }

    /// Security events over the last `hours`.
    #[graphql(complexity = 100)]
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
    #[graphql(complexity = "10 + usize::try_from(limit).unwrap_or(0) * child_complexity")]
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
    ) -> async_graphql::Result<Vec<crate::logs::StoredRecord>> {
        let time = |seconds: Option<f64>| {
            seconds
                .and_then(|s| std::time::Duration::try_from_secs_f64(s).ok())
                .and_then(|d| std::time::UNIX_EPOCH.checked_add(d))
        };
        let search = crate::logs::Search {
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
    async fn status(&self, ctx: &Context<'_>) -> async_graphql::Result<Json<crate::query::Status>> {
        Ok(Json(queries(ctx).status().await.map_err(error)?))
    }

    /// One trace as a tree of spans, with its log records.
    async fn trace(&self, ctx: &Context<'_>, trace_id: String) -> async_graphql::Result<crate::traces::Trace> {
        queries(ctx).trace(&trace_id).await.map_err(error)
    }

    /// Traces with a span matching every filter, newest first.
    #[allow(clippy::too_many_arguments)]
    async fn traces(
        &self,
        ctx: &Context<'_>,
        service: Option<String>,
        operation: Option<String>,
        min_duration_ms: Option<f64>,
        error_only: Option<bool>,
        user_id: Option<String>,
        #[graphql(default = 20)] limit: u32,
    ) -> async_graphql::Result<Vec<crate::traces::TraceSummary>> {
        let min_duration = min_duration_ms
            .map(|ms| std::time::Duration::try_from_secs_f64(ms / 1000.0))
            .transpose()
            .map_err(|_| async_graphql::Error::new("`minDurationMs` must be 0 or more"))?;
        let search = crate::traces::TraceSearch {
            service,
            operation,
            min_duration,
            error: error_only,
            user_id,
            limit: u64::from(limit.clamp(1, 200)),
            ..crate::traces::TraceSearch::default()
        };
        queries(ctx).search_traces(search).await.map_err(error)
    }

    /// Users, engagement, satisfaction, retention and AI cost over the last `days`.
    async fn analytics(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 30)] days: u32,
    ) -> async_graphql::Result<crate::analytics::Analytics> {
        queries(ctx).analytics(u64::from(days)).await.map_err(error)
    }
}

pub struct MutationRoot;

#[Object]
impl MutationRoot {
    /// Create an alert rule; refused with every problem named when it is not valid.
    async fn create_alert_rule(&self, ctx: &Context<'_>, rule: RuleRequest) -> async_graphql::Result<Rule> {
        let caller = admin(ctx, "createAlertRule")?;
        queries(ctx).create_rule(rule, caller).await.map_err(error)
    }

    /// Delete an alert rule; true when it existed.
    async fn delete_alert_rule(&self, ctx: &Context<'_>, name: String) -> async_graphql::Result<bool> {
        let caller = admin(ctx, "deleteAlertRule")?;
        match queries(ctx).delete_rule(&name, caller.as_deref()).await {
            Ok(()) => Ok(true),
            Err(QueryError::NotFound { .. }) => Ok(false),
            Err(other) => Err(error(other)),
        }
    }

    /// Acknowledge an active alert: escalation stops, the alert stays visible.
    async fn acknowledge_alert(
        &self,
        ctx: &Context<'_>,
        id: i64,
        #[graphql(default)] comment: String,
    ) -> async_graphql::Result<Alert> {
        let caller = admin(ctx, "acknowledgeAlert")?;
        queries(ctx).acknowledge(id, caller, comment).await.map_err(error)
    }

    /// Silence the alerts whose labels match, for a while; refused with every problem named when it is not valid.
    async fn create_silence(&self, ctx: &Context<'_>, silence: SilenceRequest) -> async_graphql::Result<Silence> {
        let caller = admin(ctx, "createSilence")?;
        queries(ctx).create_silence(silence, caller).await.map_err(error)
    }

    /// End a silence now.
    async fn expire_silence(&self, ctx: &Context<'_>, id: i64) -> async_graphql::Result<Silence> {
        let caller = admin(ctx, "expireSilence")?;
        queries(ctx).expire_silence(id, caller.as_deref()).await.map_err(error)
    }

    /// Erase every event, span and log record of a user (admin); what was removed.
    async fn erase_user_data(&self, ctx: &Context<'_>, user_id: String) -> async_graphql::Result<crate::usage::Erased> {
        let caller = admin(ctx, "eraseUserData")?;
        queries(ctx).erase_user(&user_id, caller.as_deref()).await.map_err(error)
    }

    /// Read the config file and the plugins folder again and put them in place if all of it is valid (admin), as
    /// `SIGHUP` does: what changed. A refused reload is an error naming every problem; everything runs as before.
    async fn reload(&self, ctx: &Context<'_>) -> async_graphql::Result<crate::reload::Outcome> {
        admin(ctx, "reload")?;
        let outcome = queries(ctx)
            .reloads
            .reload(crate::reload::Trigger::GraphQl)
            .await
            .ok_or_else(|| async_graphql::Error::new("selfmon is stopping"))?;
        if outcome.applied {
            return Ok(outcome);
        }
        Err(async_graphql::Error::new(format!(
            "the reload was refused, everything runs as before: {}",
            outcome.errors.join("; ")
        )))
    }
}

pub struct SubscriptionRoot;

/// An alert that fired or resolved.
#[derive(SimpleObject)]
struct AlertEvent {
    /// `alert.fired` or `alert.resolved`.
    event: String,
    alert: Alert,
}

#[Subscription]
impl SubscriptionRoot {
    /// Each change of a check's own status, of every check or of one.
    async fn health_changes(&self, ctx: &Context<'_>, check: Option<String>) -> impl Stream<Item = HealthChange> {
        BroadcastStream::new(queries(ctx).events.subscribe()).filter_map(move |event| {
            let change = match event.as_deref().map(|e| &e.payload) {
                Ok(Payload::HealthChanged(change)) if check.as_ref().is_none_or(|c| *c == change.check) => {
                    Some(change.clone())
                }
                _ => None,
            };
            async move { change }
        })
    }

    /// Alerts as they fire and resolve.
    async fn alerts(&self, ctx: &Context<'_>) -> impl Stream<Item = AlertEvent> {
        BroadcastStream::new(queries(ctx).events.subscribe()).filter_map(|event| {
            let alert = event.ok().and_then(|event| match &event.payload {
                Payload::AlertFired(alert) | Payload::AlertResolved(alert) => {
                    Some(AlertEvent { event: event.name().to_string(), alert: alert.clone() })
                }
                _ => None,
            });
            async move { alert }
        })
    }
}

/// `POST /graphql`.
pub async fn execute(
    State(schema): State<Schema>,
    Extension(caller): Extension<Caller>,
    request: GraphQLRequest,
) -> GraphQLResponse {
    schema.execute(request.into_inner().data(caller)).await.into()
}

/// `GET /graphql` with a WebSocket upgrade: subscriptions over `graphql-transport-ws` (or the older
/// `graphql-ws`). The caller's key was checked on the upgrade request.
pub async fn subscribe(
    State(schema): State<Schema>,
    Extension(caller): Extension<Caller>,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> Response {
    upgrade
        .max_message_size(MAX_MESSAGE)
        .protocols(async_graphql::http::ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |stream| {
            let mut data = async_graphql::Data::default();
            data.insert(caller);
            GraphQLWebSocket::new(stream, schema, protocol).with_data(data).serve()
        })
        .into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_checked_in_schema_matches_the_code() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../schema.graphql");
        let checked_in = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            checked_in == super::sdl(),
            "schema.graphql differs from the schema the code serves: run `cargo run -- graphql-schema > schema.graphql`"
        );
    }
}
