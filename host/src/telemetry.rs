//! selfmon's own metrics in the Prometheus text format, served at `GET /metrics`.
//!
//! Counters and histograms are observed where things happen (the scheduler, the storage writer, the API layer);
//! the current state of every check, the latest system sample and the gauges are read at scrape time. Label values
//! come only from bounded sets: configured check, plugin, rule and channel names, statuses, failure kinds, route
//! patterns, methods and status codes.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::{
    CounterVec, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::health::{CheckRun, CheckState, Health};
use crate::storage::{Sample, Storage};

/// Check durations, from a fast local probe to a slow AI API call (seconds).
const CHECK_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// How late a run started after its slot (seconds).
const LAG_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0];
/// API request durations (seconds).
const HTTP_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

/// Why a plugin call failed: the plugin said so, or one of [`CallError`](crate::runtime::CallError)'s kinds.
const FAILURE_KINDS: [&str; 5] = ["plugin_error", "deadline", "memory", "trap", "instantiate"];

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The metrics selfmon keeps about itself.
pub struct Telemetry {
    registry: Registry,
    check_duration: HistogramVec,
    check_runs: IntCounterVec,
    plugin_failures: IntCounterVec,
    scheduler_lag: Histogram,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    log_records: IntCounterVec,
    log_unparsed: IntCounterVec,
    log_parser_failures: IntCounterVec,
    cleanup_deleted: IntCounterVec,
    rule_evaluations: IntCounterVec,
    alerts: IntGaugeVec,
    notifications: IntCounterVec,
    events: IntCounterVec,
    ai_requests: IntCounterVec,
    ai_tokens: IntCounterVec,
    ai_cost: CounterVec,
    satisfaction: Histogram,
    otlp_items: IntCounterVec,
    erasures: IntCounterVec,
    system: Mutex<Vec<Sample>>,
    started: SystemTime,
    failures: std::sync::atomic::AtomicU64,
}

/// The scheduler's figures since start-up, for `/v1/status`.
#[derive(Debug, Clone, Copy)]
pub struct SchedulerTotals {
    pub runs: u64,
    pub plugin_failures: u64,
    pub mean_lag: Duration,
}

/// What only the scrape can read: the state of the checks and the other parts of the host.
pub struct Scrape<'a> {
    pub checks: &'a [CheckState],
    pub storage: &'a Storage,
    pub refused_calls: u64,
    pub version: &'a str,
    pub contract: &'a str,
}

impl Telemetry {
    /// The metrics, with the storage writer's commit timings among them.
    pub fn new(storage: &Storage) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let check_duration = HistogramVec::new(
            HistogramOpts::new("selfmon_check_duration_seconds", "How long check runs took, failed runs included.")
                .buckets(CHECK_BUCKETS.to_vec()),
            &["check"],
        )?;
        let check_runs = IntCounterVec::new(
            Opts::new("selfmon_check_runs_total", "Check runs by the status they reported."),
            &["check", "status"],
        )?;
        let plugin_failures = IntCounterVec::new(
            Opts::new(
                "selfmon_plugin_failures_total",
                "Plugin calls that failed, by kind: plugin_error (reported by the plugin), deadline (stopped at its \
                 deadline), memory (over its memory cap), trap (crashed), instantiate (could not start).",
            ),
            &["plugin", "reason"],
        )?;
        let scheduler_lag = Histogram::with_opts(
            HistogramOpts::new(
                "selfmon_scheduler_lag_seconds",
                "How late check runs started after their scheduled time (waiting for a free slot included).",
            )
            .buckets(LAG_BUCKETS.to_vec()),
        )?;
        let http_requests = IntCounterVec::new(
            Opts::new(
                "selfmon_http_requests_total",
                "API requests answered, by route pattern, method and status code.",
            ),
            &["route", "method", "code"],
        )?;
        let http_duration = HistogramVec::new(
            HistogramOpts::new("selfmon_http_request_duration_seconds", "Time to answer API requests.")
                .buckets(HTTP_BUCKETS.to_vec()),
            &["route", "method"],
        )?;
        let log_records = IntCounterVec::new(
            Opts::new("selfmon_log_records_total", "Log records stored, by level (unparsed lines count as info)."),
            &["level"],
        )?;
        let log_unparsed = IntCounterVec::new(
            Opts::new("selfmon_log_unparsed_total", "Log lines the parser did not understand, stored raw."),
            &["parser"],
        )?;
        let log_parser_failures = IntCounterVec::new(
            Opts::new(
                "selfmon_log_parser_failures_total",
                "Log lines stored raw because their batch's parser call failed (crash, deadline, memory).",
            ),
            &["parser"],
        )?;
        let cleanup_deleted = IntCounterVec::new(
            Opts::new(
                "selfmon_cleanup_deleted_total",
                "Rows the periodic cleanup deleted: log records past retention (logs_expired) or over the size cap \
                 (logs_over_size), check runs, metric samples, resolved alerts and their notifications, events and spans.",
            ),
            &["what"],
        )?;
        let rule_evaluations = IntCounterVec::new(
            Opts::new(
                "selfmon_rule_evaluations_total",
                "Alert rule evaluations by outcome: ok, or failed (the rule trapped, ran out of time or reported an \
                 error; its alerts stay as they were).",
            ),
            &["rule", "outcome"],
        )?;
        let alerts = IntGaugeVec::new(
            Opts::new("selfmon_alerts", "Active alerts by rule and state (pending or firing)."),
            &["rule", "state"],
        )?;
        let notifications = IntCounterVec::new(
            Opts::new(
                "selfmon_alert_notifications_total",
                "Attempts to deliver alert notifications, by channel and outcome: delivered, failed (retried), \
                 gave_up.",
            ),
            &["channel", "outcome"],
        )?;
        let events = IntCounterVec::new(
            Opts::new("selfmon_events_total", "Events stored, by type (AI usage taken from GenAI spans included)."),
            &["type"],
        )?;
        let ai_requests = IntCounterVec::new(
            Opts::new(
                "selfmon_ai_requests_total",
                "AI calls reported, by provider, model (its price table entry, or other) and outcome (ok, failed).",
            ),
            &["provider", "model", "outcome"],
        )?;
        let ai_tokens = IntCounterVec::new(
            Opts::new("selfmon_ai_tokens_total", "Tokens of AI calls reported, by provider, model and direction."),
            &["provider", "model", "direction"],
        )?;
        let ai_cost = CounterVec::new(
            Opts::new(
                "selfmon_ai_cost_dollars_total",
                "What AI calls reported since start-up cost, in US dollars, by provider and model.",
            ),
            &["provider", "model"],
        )?;
        let satisfaction = Histogram::with_opts(
            HistogramOpts::new("selfmon_user_satisfaction_rating", "Satisfaction ratings received, 1 to 5.")
                .buckets(vec![1.0, 2.0, 3.0, 4.0, 5.0]),
        )?;
        let otlp_items = IntCounterVec::new(
            Opts::new(
                "selfmon_otlp_items_total",
                "Spans and log records received over OTLP, by signal (traces, logs) and outcome (accepted, rejected).",
            ),
            &["signal", "outcome"],
        )?;
        let erasures = IntCounterVec::new(
            Opts::new("selfmon_user_data_erased_total", "Rows erased on request for a user, by kind."),
            &["kind"],
        )?;
        for metric in [&events, &ai_requests, &ai_tokens, &otlp_items, &erasures] {
            registry.register(Box::new(metric.clone()))?;
        }
        registry.register(Box::new(ai_cost.clone()))?;
        registry.register(Box::new(satisfaction.clone()))?;
        registry.register(Box::new(rule_evaluations.clone()))?;
        registry.register(Box::new(alerts.clone()))?;
        registry.register(Box::new(notifications.clone()))?;
        registry.register(Box::new(cleanup_deleted.clone()))?;
        registry.register(Box::new(log_records.clone()))?;
        registry.register(Box::new(log_unparsed.clone()))?;
        registry.register(Box::new(log_parser_failures.clone()))?;
        registry.register(Box::new(check_duration.clone()))?;
        registry.register(Box::new(check_runs.clone()))?;
        registry.register(Box::new(plugin_failures.clone()))?;
        registry.register(Box::new(scheduler_lag.clone()))?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_duration.clone()))?;
        registry.register(Box::new(storage.commit_seconds().clone()))?;
        Ok(Self {
            registry,
            check_duration,
            check_runs,
            plugin_failures,
            scheduler_lag,
            http_requests,
            http_duration,
            log_records,
            log_unparsed,
            log_parser_failures,
            cleanup_deleted,
            rule_evaluations,
            alerts,
            notifications,
            events,
            ai_requests,
            ai_tokens,
            ai_cost,
            satisfaction,
            otlp_items,
            erasures,
            system: Mutex::default(),
            started: SystemTime::now(),
            failures: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// A check ran.
    pub fn observe_run(&self, run: &CheckRun) {
        self.check_duration.with_label_values(&[&run.check]).observe(run.duration.as_secs_f64());
        self.check_runs.with_label_values(&[run.check.as_str(), run.health.as_str()]).inc();
        if let Some(reason) = run.failure {
            self.plugin_failures.with_label_values(&[run.plugin.as_str(), reason]).inc();
            self.failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Runs started, plugin failures, and how late runs started on average, since start-up.
    pub fn scheduler_totals(&self) -> SchedulerTotals {
        let runs = self.scheduler_lag.get_sample_count();
        let mean = if runs == 0 { 0.0 } else { self.scheduler_lag.get_sample_sum() / runs as f64 };
        SchedulerTotals {
            runs,
            plugin_failures: self.failures.load(std::sync::atomic::Ordering::Relaxed),
            mean_lag: Duration::try_from_secs_f64(mean).unwrap_or_default(),
        }
    }

    /// A plugin's failed calls since start-up, by kind (`deadline` is a call stopped at its deadline).
    pub fn plugin_failures(&self, plugin: &str) -> std::collections::BTreeMap<&'static str, u64> {
        FAILURE_KINDS
            .iter()
            .map(|kind| (*kind, self.plugin_failures.with_label_values(&[plugin, kind]).get()))
            .collect()
    }

    /// Start every failure count of a plugin at zero, so the series exist before the first failure.
    pub fn register_plugin(&self, plugin: &str) {
        for reason in FAILURE_KINDS {
            self.plugin_failures.with_label_values(&[plugin, reason]);
        }
    }

    /// Log records are being stored: counted from the records themselves, so a record the tailer holds back (and
    /// parses again later) is counted once, when it is stored. `failed` of them were kept raw because their parser
    /// call failed; the other raw ones were lines the parser did not understand.
    pub fn observe_logs(&self, parser: &str, records: &[crate::logs::NewRecord], failed: usize) {
        for record in records {
            self.log_records.with_label_values(&[record.level]).inc();
        }
        let raw = records.iter().filter(|r| !r.parsed).count();
        self.log_unparsed.with_label_values(&[parser]).inc_by(raw.saturating_sub(failed) as u64);
        self.log_parser_failures.with_label_values(&[parser]).inc_by(failed as u64);
    }

    /// What a cleanup deleted.
    pub fn observe_cleanup(&self, swept: &crate::retention::Swept) {
        for (what, count) in [
            ("logs_expired", swept.logs_expired),
            ("logs_over_size", swept.logs_over_size),
            ("check_runs", swept.check_runs),
            ("samples", swept.samples),
            ("alerts", swept.alerts),
            ("events", swept.events),
            ("spans", swept.spans),
        ] {
            self.cleanup_deleted.with_label_values(&[what]).inc_by(count);
        }
    }

    /// A rule was evaluated.
    pub fn observe_rule(&self, rule: &str, ok: bool) {
        self.rule_evaluations.with_label_values(&[rule, if ok { "ok" } else { "failed" }]).inc();
    }

    /// The active alerts after an evaluation: pending and firing ones per rule (every rule listed, at zero too).
    pub fn set_alerts(&self, counts: &[(String, usize, usize)]) {
        self.alerts.reset();
        for (rule, pending, firing) in counts {
            self.alerts.with_label_values(&[rule.as_str(), "pending"]).set(i64::try_from(*pending).unwrap_or(i64::MAX));
            self.alerts.with_label_values(&[rule.as_str(), "firing"]).set(i64::try_from(*firing).unwrap_or(i64::MAX));
        }
    }

    /// An attempt to deliver a notification ended so.
    pub fn observe_notification(&self, channel: &str, outcome: &str) {
        self.notifications.with_label_values(&[channel, outcome]).inc();
    }

    /// Events were received (before they are stored).
    pub fn observe_events(&self, events: &[crate::usage::NewEvent], prices: &crate::usage::Prices) {
        for event in events {
            self.events.with_label_values(&[event.kind]).inc();
            if event.kind == "ai_usage" {
                let (provider, model) = crate::usage::labels(prices, event);
                let outcome = if event.success.unwrap_or(true) { "ok" } else { "failed" };
                self.ai_requests.with_label_values(&[provider.as_str(), &model, outcome]).inc();
                for (direction, tokens) in [("input", event.input_tokens), ("output", event.output_tokens)] {
                    self.ai_tokens
                        .with_label_values(&[provider.as_str(), &model, direction])
                        .inc_by(tokens.unwrap_or(0));
                }
                self.ai_cost.with_label_values(&[provider, model]).inc_by(event.cost.unwrap_or(0.0));
            }
            if let Some(rating) = event.rating.filter(|_| event.kind == "satisfaction") {
                self.satisfaction.observe(rating);
            }
        }
    }

    /// Spans or log records (`signal`) received over OTLP.
    pub fn observe_otlp(&self, signal: &str, accepted: usize, rejected: usize) {
        self.otlp_items.with_label_values(&[signal, "accepted"]).inc_by(accepted as u64);
        self.otlp_items.with_label_values(&[signal, "rejected"]).inc_by(rejected as u64);
    }

    /// A user's data was erased.
    pub fn observe_erasure(&self, erased: &crate::usage::Erased) {
        for (kind, count) in [("events", erased.events), ("spans", erased.spans), ("log_records", erased.log_records)] {
            self.erasures.with_label_values(&[kind]).inc_by(count);
        }
    }

    /// A run started this long after its slot.
    pub fn observe_lag(&self, lag: Duration) {
        self.scheduler_lag.observe(lag.as_secs_f64());
    }

    /// The system collector's latest sample.
    pub fn set_system(&self, samples: &[Sample]) {
        *self.system.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = samples.to_vec();
    }

    /// Everything, in the text exposition format.
    pub fn render(&self, scrape: &Scrape) -> String {
        let mut families = self.registry.gather();
        // A family without samples (no checks configured yet) has nothing to say, and the encoder refuses it.
        families.extend(self.scraped(scrape).into_iter().filter(|f| !f.get_metric().is_empty()));
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut out = Vec::new();
        // Encoding into memory fails only on families the registry would not have built.
        if let Err(error) = TextEncoder::new().encode(&families, &mut out) {
            tracing::error!(%error, "Cannot encode the metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }

    fn scraped(&self, scrape: &Scrape) -> Vec<MetricFamily> {
        let mut up = Vec::new();
        let mut status = Vec::new();
        for check in scrape.checks.iter().filter(|c| c.enabled) {
            let labels = [("check", check.name.as_str()), ("plugin", check.plugin.as_str())];
            let serving = matches!(check.own_status, Health::Healthy | Health::Degraded);
            up.push(metric(&labels, f64::from(u8::from(serving))));
            for each in Health::ALL {
                let labels = [labels[0], labels[1], ("status", each.as_str())];
                status.push(metric(&labels, f64::from(u8::from(check.status == each))));
            }
        }
        let mut families = vec![
            family(
                "selfmon_check_up",
                "Whether the check's latest run found it serving (healthy or degraded): 1, or 0.",
                MetricType::GAUGE,
                up,
            ),
            family(
                "selfmon_check_status",
                "The check's latest status: 1 for the current one, 0 for the others.",
                MetricType::GAUGE,
                status,
            ),
            family(
                "selfmon_storage_writes_queued",
                "Writes waiting for the storage writer.",
                MetricType::GAUGE,
                vec![metric(&[], scrape.storage.queued() as f64)],
            ),
            family(
                "selfmon_api_refused_calls_total",
                "API calls refused for a missing or wrong key or a role too weak.",
                MetricType::COUNTER,
                vec![metric(&[], scrape.refused_calls as f64)],
            ),
            family(
                "selfmon_log_lines_dropped_total",
                "Lines of selfmon's own log left out of its files because their writer was behind.",
                MetricType::COUNTER,
                vec![metric(&[], crate::journal::dropped() as f64)],
            ),
            family(
                "selfmon_build_info",
                "selfmon's version and the plugin contract it implements.",
                MetricType::GAUGE,
                vec![metric(&[("version", scrape.version), ("contract", scrape.contract)], 1.0)],
            ),
            family(
                "selfmon_start_time_seconds",
                "When selfmon started, in Unix seconds.",
                MetricType::GAUGE,
                vec![metric(&[], self.started.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64()))],
            ),
        ];
        families.extend(self.system_families());
        families
    }

    /// The latest system sample, one family per name: counters for names ending in `_total`, gauges otherwise.
    fn system_families(&self) -> Vec<MetricFamily> {
        let samples = self.system.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut by_name: std::collections::BTreeMap<&str, Vec<Point>> = Default::default();
        for sample in samples.iter() {
            let labels: Vec<(&str, &str)> = sample.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            by_name.entry(&sample.name).or_default().push(metric(&labels, sample.value));
        }
        by_name
            .into_iter()
            .map(|(name, metrics)| {
                let kind = if name.ends_with("_total") { MetricType::COUNTER } else { MetricType::GAUGE };
                family(name, crate::system::describe(name), kind, metrics)
            })
            .collect()
    }
}

/// One value of a family, with its labels.
struct Point {
    labels: Vec<proto::LabelPair>,
    value: f64,
}

fn metric(labels: &[(&str, &str)], value: f64) -> Point {
    let labels = labels
        .iter()
        .map(|(name, value)| {
            let mut pair = proto::LabelPair::default();
            pair.set_name((*name).to_string());
            pair.set_value((*value).to_string());
            pair
        })
        .collect();
    Point { labels, value }
}

fn family(name: &str, help: &str, kind: MetricType, points: Vec<Point>) -> MetricFamily {
    let metrics = points
        .into_iter()
        .map(|point| {
            let mut metric = proto::Metric::from_label(point.labels);
            if kind == MetricType::COUNTER {
                let mut counter = proto::Counter::default();
                counter.set_value(point.value);
                metric.set_counter(counter);
            } else {
                let mut gauge = proto::Gauge::default();
                gauge.set_value(point.value);
                metric.set_gauge(gauge);
            }
            metric
        })
        .collect();
    let mut family = MetricFamily::default();
    family.set_name(name.to_string());
    family.set_help(help.to_string());
    family.set_field_type(kind);
    family.set_metric(metrics);
    family
}

/// API requests slower than this are performance log records.
const SLOW_REQUEST: Duration = Duration::from_millis(500);

/// The API layer that counts and times every request by its route pattern (`unmatched` for unknown paths, so a
/// scan of random URLs cannot grow the label set). Each request is a span of selfmon's own log, with the caller's
/// trace (W3C `traceparent`) and correlation id (`X-Correlation-ID` or `X-Request-ID`, else a new one, sent back
/// as `X-Correlation-ID`).
pub async fn track(State(telemetry): State<std::sync::Arc<Telemetry>>, request: Request, next: Next) -> Response {
    use tracing::Instrument;
    let (trace_id, correlation_id) = {
        let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok());
        let correlation_id = header("x-correlation-id")
            .or_else(|| header("x-request-id"))
            .and_then(crate::journal::correlation_id)
            .unwrap_or_else(|| crate::journal::random_id(16));
        (header("traceparent").and_then(crate::journal::traceparent), correlation_id)
    };
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_string();
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        route = %route,
        trace_id = trace_id.as_deref(),
        correlation_id = %correlation_id,
    );
    let started = std::time::Instant::now();
    let mut response = measure(&telemetry, request, next).instrument(span.clone()).await;
    let took = started.elapsed();
    if took >= SLOW_REQUEST {
        span.in_scope(|| {
            tracing::warn!(
                target: crate::journal::PERFORMANCE,
                operation = "slow_operations",
                status = response.status().as_u16(),
                duration_ms = took.as_secs_f64() * 1000.0,
                "Slow API request"
            );
        });
    }
    if let Ok(value) = axum::http::HeaderValue::from_str(&correlation_id) {
        response.headers_mut().insert("x-correlation-id", value);
    }
    response
}

async fn measure(telemetry: &Telemetry, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_string();
    let method = match *request.method() {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    let timer = telemetry.http_duration.with_label_values(&[route.as_str(), method]).start_timer();
    let response = next.run(request).await;
    timer.observe_duration();
    telemetry.http_requests.with_label_values(&[route.as_str(), method, response.status().as_str()]).inc();
    response
}
