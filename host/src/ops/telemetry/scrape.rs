//! What `/metrics` reads at scrape time rather than counting as it happens: the state of every check (its status,
//! its latest run, the metrics its plugin reported), the storage and heap figures, and the latest system sample.

use std::time::UNIX_EPOCH;

use prometheus::proto::{self, MetricFamily, MetricType};

use super::Telemetry;
use crate::ops::heap::Heap;
use crate::ops::journal;

/// What only the scrape can read: the state of the checks and the other parts of the host.
pub struct Scrape<'a> {
    /// The enabled checks.
    pub checks: Vec<CheckFigures<'a>>,
    /// Every status a check may have, for a series per status.
    pub statuses: &'a [&'a str],
    pub writes_queued: usize,
    /// Whether writes are refused for want of room.
    pub storage_full: bool,
    /// Bytes SQLite holds on the heap.
    pub storage_heap_bytes: i64,
    /// selfmon's own heap, as its allocator counts it.
    pub heap: Heap,
    pub refused_calls: u64,
    pub version: &'a str,
    pub contract: &'a str,
}

/// One check as the scrape shows it.
pub struct CheckFigures<'a> {
    pub name: &'a str,
    pub plugin: &'a str,
    /// Whether its own latest run found it serving (healthy or degraded).
    pub serving: bool,
    /// Its status as the board reports it.
    pub status: &'a str,
    /// When its latest run started and how long it took.
    pub last_run: Option<(std::time::SystemTime, std::time::Duration)>,
    /// What its plugin reported in that run (names and labels already checked, at most 128 of them).
    pub metrics: Vec<PluginMetric<'a>>,
}

/// One metric a plugin reported.
pub struct PluginMetric<'a> {
    pub name: &'a str,
    pub value: f64,
    pub labels: Vec<(&'a str, &'a str)>,
}

/// The labels a plugin's metric gets from selfmon; its own labels of these names become `plugin_<name>`.
const OWN_LABELS: [&str; 3] = ["check", "plugin", "metric"];

/// A plugin's labels as they are exposed: one that selfmon's own labels would hide is renamed `plugin_<name>`,
/// prefixed again while that name is taken, so every label the plugin reported stays, under a distinct name.
fn plugin_labels<'a>(labels: &[(&'a str, &'a str)]) -> Vec<(String, &'a str)> {
    let mut kept: Vec<(String, &str)> = Vec::with_capacity(labels.len());
    let taken = |name: &str, kept: &[(String, &str)]| {
        OWN_LABELS.contains(&name)
            || labels.iter().any(|(other, _)| *other == name)
            || kept.iter().any(|(k, _)| k == name)
    };
    for (name, value) in labels {
        let mut exposed = (*name).to_string();
        if OWN_LABELS.contains(name) {
            exposed = format!("plugin_{name}");
            while taken(&exposed, &kept) {
                exposed = format!("plugin_{exposed}");
            }
        }
        kept.push((exposed, value));
    }
    kept
}

impl Telemetry {
    pub(super) fn scraped(&self, scrape: &Scrape) -> Vec<MetricFamily> {
        let mut up = Vec::new();
        let mut status = Vec::new();
        let (mut last_run, mut last_duration, mut reported) = (Vec::new(), Vec::new(), Vec::new());
        for check in &scrape.checks {
            let labels = [("check", check.name), ("plugin", check.plugin)];
            up.push(metric(&labels, f64::from(u8::from(check.serving))));
            for each in scrape.statuses {
                let labels = [labels[0], labels[1], ("status", each)];
                status.push(metric(&labels, f64::from(u8::from(check.status == *each))));
            }
            if let Some((started, took)) = check.last_run {
                last_run.push(metric(&labels, started.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())));
                last_duration.push(metric(&labels, took.as_secs_f64()));
            }
            for value in &check.metrics {
                let own = plugin_labels(&value.labels);
                let mut all = vec![labels[0], labels[1], ("metric", value.name)];
                all.extend(own.iter().map(|(name, value)| (name.as_str(), *value)));
                reported.push(metric(&all, value.value));
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
                "selfmon_check_last_run_timestamp_seconds",
                "When the check's latest run started, in Unix seconds.",
                MetricType::GAUGE,
                last_run,
            ),
            family(
                "selfmon_check_last_duration_seconds",
                "How long the check's latest run took.",
                MetricType::GAUGE,
                last_duration,
            ),
            family(
                "selfmon_check_metric",
                "The latest value of each metric the check's plugin reported (`metric` names it; the plugin's own \
                 labels follow).",
                MetricType::GAUGE,
                reported,
            ),
            family(
                "selfmon_storage_writes_queued",
                "Writes waiting for the storage writer.",
                MetricType::GAUGE,
                vec![metric(&[], scrape.writes_queued as f64)],
            ),
            family(
                "selfmon_storage_full",
                "Whether the store is full (the disk, or `[storage] size_limit`) and refuses writes: 1, or 0.",
                MetricType::GAUGE,
                vec![metric(&[], f64::from(u8::from(scrape.storage_full)))],
            ),
            family(
                "selfmon_storage_heap_bytes",
                "Bytes SQLite holds: page caches (bounded per connection, in a block of their own), schemas and statements.",
                MetricType::GAUGE,
                vec![metric(&[], scrape.storage_heap_bytes as f64)],
            ),
            family(
                "selfmon_heap_allocated_bytes",
                "Bytes selfmon's own allocations hold now (jemalloc's count; SQLite's are selfmon_storage_heap_bytes).",
                MetricType::GAUGE,
                vec![metric(&[], scrape.heap.allocated as f64)],
            ),
            family(
                "selfmon_heap_resident_bytes",
                "Bytes of memory jemalloc keeps resident for them: the allocations, freed pages not yet handed back, \
                 and its own bookkeeping.",
                MetricType::GAUGE,
                vec![metric(&[], scrape.heap.resident as f64)],
            ),
            family(
                "selfmon_c_heap_allocated_bytes",
                "Bytes the C libraries (SQLite's statements and schemas, libcrypto, the resolver) hold in glibc's heap.",
                MetricType::GAUGE,
                vec![metric(&[], scrape.heap.c_allocated as f64)],
            ),
            family(
                "selfmon_c_heap_free_bytes",
                "Bytes glibc's heap keeps free between the C libraries' allocations, not handed back to the system.",
                MetricType::GAUGE,
                vec![metric(&[], scrape.heap.c_free as f64)],
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
                vec![metric(&[], journal::dropped() as f64)],
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
        let system = self.system.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (samples, describe) = (&system.0, system.1.unwrap_or(|_| ""));
        let mut by_name: std::collections::BTreeMap<&str, Vec<Point>> = Default::default();
        for sample in samples.iter() {
            let labels: Vec<(&str, &str)> = sample.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            by_name.entry(&sample.name).or_default().push(metric(&labels, sample.value));
        }
        by_name
            .into_iter()
            .map(|(name, metrics)| {
                let kind = if name.ends_with("_total") { MetricType::COUNTER } else { MetricType::GAUGE };
                family(name, describe(name), kind, metrics)
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

#[cfg(test)]
mod tests {
    use super::plugin_labels;

    #[test]
    fn a_plugin_label_named_as_selfmon_s_own_is_renamed_not_dropped() {
        let labels = [("model", "gpt-4o"), ("check", "x"), ("metric", "y"), ("plugin_check", "z")];
        let kept = plugin_labels(&labels);
        let names: Vec<(&str, &str)> = kept.iter().map(|(name, value)| (name.as_str(), *value)).collect();
        assert_eq!(
            names,
            [("model", "gpt-4o"), ("plugin_plugin_check", "x"), ("plugin_metric", "y"), ("plugin_check", "z")]
        );
    }
}
