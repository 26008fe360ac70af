//! selfmon's own metrics in the Prometheus text format, served at `GET /metrics`.
//!
//! Counters and histograms are observed where things happen (the scheduler, the storage writer, the API layer);
//! the current state of every check, the latest system sample and the gauges are read at scrape time. Label values
//! come only from bounded sets: configured check, plugin, rule and channel names, statuses, failure kinds, route
//! patterns, methods and status codes.
//!
//! In the manner of Vector's internal events, every observation takes plain counts and labels, so this file knows no
//! capability's types, and what it counts is named where it happens. It imports only storage (the writer's commit
//! histogram, registered here, and [`Sample`] for the latest system sample) and the journal (its count of dropped
//! lines).

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use prometheus::{
    CounterVec, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::storage::{Sample, Storage};

mod scrape;

pub use scrape::{CheckFigures, PluginMetric, Scrape};

/// Check durations, from a fast local probe to a slow AI API call (seconds).
const CHECK_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// How late a run started after its slot (seconds).
const LAG_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0];
/// API request durations (seconds).
const HTTP_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

/// Why a plugin call failed: the plugin said so, or one of the runtime's kinds of failed call.
const FAILURE_KINDS: [&str; 5] = ["plugin_error", "deadline", "memory", "trap", "instantiate"];

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a system metric's name means, for its help text.
type Describe = fn(&str) -> &'static str;

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
    /// The latest system sample, and what each of its names means.
    system: Mutex<(Vec<Sample>, Option<Describe>)>,
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

    /// A check ran: it took `duration` and said `status`; `failure` is the kind of a plugin call that failed.
    pub fn observe_run(&self, check: &str, plugin: &str, status: &str, duration: Duration, failure: Option<&str>) {
        self.check_duration.with_label_values(&[check]).observe(duration.as_secs_f64());
        self.check_runs.with_label_values(&[check, status]).inc();
        if let Some(reason) = failure {
            self.plugin_failures.with_label_values(&[plugin, reason]).inc();
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

    /// Log records are being stored, one per level in `levels`; `raw` of them were kept unparsed, `failed` of
    /// those because their parser call failed (the others were lines the parser did not understand).
    pub fn observe_logs(&self, parser: &str, levels: &[&str], raw: usize, failed: usize) {
        for level in levels {
            self.log_records.with_label_values(&[*level]).inc();
        }
        self.log_unparsed.with_label_values(&[parser]).inc_by(raw.saturating_sub(failed) as u64);
        self.log_parser_failures.with_label_values(&[parser]).inc_by(failed as u64);
    }

    /// What a cleanup deleted: how many of each kind.
    pub fn observe_cleanup(&self, deleted: &[(&str, u64)]) {
        for (what, count) in deleted {
            self.cleanup_deleted.with_label_values(&[*what]).inc_by(*count);
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

    /// An event of `kind` was stored.
    pub fn observe_event(&self, kind: &str) {
        self.events.with_label_values(&[kind]).inc();
    }

    /// An AI request was made: whether it worked, its (input, output) tokens and what it cost.
    pub fn observe_ai_request(&self, provider: &str, model: &str, ok: bool, (input, output): (u64, u64), cost: f64) {
        let outcome = if ok { "ok" } else { "failed" };
        self.ai_requests.with_label_values(&[provider, model, outcome]).inc();
        for (direction, tokens) in [("input", input), ("output", output)] {
            self.ai_tokens.with_label_values(&[provider, model, direction]).inc_by(tokens);
        }
        self.ai_cost.with_label_values(&[provider, model]).inc_by(cost);
    }

    /// A user rated their satisfaction.
    pub fn observe_rating(&self, rating: f64) {
        self.satisfaction.observe(rating);
    }

    /// Spans or log records (`signal`) received over OTLP.
    pub fn observe_otlp(&self, signal: &str, accepted: usize, rejected: usize) {
        self.otlp_items.with_label_values(&[signal, "accepted"]).inc_by(accepted as u64);
        self.otlp_items.with_label_values(&[signal, "rejected"]).inc_by(rejected as u64);
    }

    /// A user's data was erased: how many of each kind.
    pub fn observe_erasure(&self, erased: &[(&str, u64)]) {
        for (kind, count) in erased {
            self.erasures.with_label_values(&[*kind]).inc_by(*count);
        }
    }

    /// An API request was answered with `status` after `took`: by route pattern and method.
    pub fn observe_request(&self, route: &str, method: &str, status: &str, took: Duration) {
        self.http_duration.with_label_values(&[route, method]).observe(took.as_secs_f64());
        self.http_requests.with_label_values(&[route, method, status]).inc();
    }

    /// A run started this long after its slot.
    pub fn observe_lag(&self, lag: Duration) {
        self.scheduler_lag.observe(lag.as_secs_f64());
    }

    /// The system collector's latest sample, and what each of its names means.
    pub fn set_system(&self, samples: &[Sample], describe: Describe) {
        *self.system.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = (samples.to_vec(), Some(describe));
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
}
