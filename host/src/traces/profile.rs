//! Per operation (a service's spans of one name) latency and errors, and the slowest operations with the
//! operations their time is spent in: a span's self time is its duration less the time covered by its children
//! (overlapping children counted once, time outside the span ignored).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::checks::latency::Latency;
use crate::traces::{MAX_DEPTH, millis};

/// Spans the performance summary reads at most (the newest of the window).
pub const MAX_PROFILED: i64 = 200_000;
/// Operations listed as the slowest, and the spans listed as dominating each.
const SLOWEST: usize = 10;
const DOMINANT: usize = 5;

/// Latency and errors of one operation (a service's spans of one name).
#[derive(Debug, Clone, Serialize, async_graphql::SimpleObject, utoipa::ToSchema)]
pub struct OperationPerformance {
    pub service: String,
    pub operation: String,
    /// Over its spans in the window.
    #[serde(flatten)]
    #[graphql(flatten)]
    pub latency: Latency,
    /// Mean time spent in the operation's own spans, outside their children.
    pub mean_self_ms: f64,
}

/// One of the slowest operations, and where its time goes.
#[derive(Debug, Clone, Serialize, async_graphql::SimpleObject, utoipa::ToSchema)]
pub struct SlowOperation {
    pub service: String,
    pub operation: String,
    pub p95_ms: f64,
    pub count: u64,
    /// The operations within it (itself included) by the self time they add up to in its spans, most first.
    pub dominated_by: Vec<SelfTime>,
}

#[derive(Debug, Clone, Serialize, async_graphql::SimpleObject, utoipa::ToSchema)]
pub struct SelfTime {
    pub service: String,
    pub operation: String,
    /// Self time summed over the slow operation's spans.
    pub self_ms: f64,
    /// Of the slow operation's total time, 0 to 1.
    pub share: f64,
}

/// A span as the profile reads it.
pub struct ProfiledSpan {
    pub trace: String,
    pub span: String,
    pub parent: Option<String>,
    /// Service and name.
    pub operation: (String, String),
    pub duration: i64,
    pub error: bool,
    pub start: i64,
}

/// The figures of every operation among `rows` over `minutes`, and the slowest operations with where their time
/// goes.
pub fn profile(rows: &[ProfiledSpan], minutes: f64) -> (Vec<OperationPerformance>, Vec<SlowOperation>) {
    let index: HashMap<(&str, &str), usize> =
        rows.iter().enumerate().map(|(i, r)| ((r.trace.as_str(), r.span.as_str()), i)).collect();
    let parents: Vec<Option<usize>> =
        rows.iter().map(|r| r.parent.as_deref().and_then(|p| index.get(&(r.trace.as_str(), p)).copied())).collect();
    let shape: Vec<(i64, i64, Option<usize>)> =
        rows.iter().zip(&parents).map(|(r, p)| (r.start, r.duration, *p)).collect();
    let own = self_times(&shape);
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); rows.len()];
    for (i, parent) in parents.iter().enumerate() {
        if let Some(parent) = parent {
            children[*parent].push(i);
        }
    }
    let mut by_operation: BTreeMap<&(String, String), Vec<usize>> = BTreeMap::new();
    for (i, row) in rows.iter().enumerate() {
        by_operation.entry(&row.operation).or_default().push(i);
    }
    let mut operations = Vec::new();
    for (operation, spans) in &by_operation {
        let durations: Vec<f64> = spans.iter().map(|&i| millis(rows[i].duration)).collect();
        let count = durations.len();
        let errors = spans.iter().filter(|&&i| rows[i].error).count();
        operations.push(OperationPerformance {
            service: operation.0.clone(),
            operation: operation.1.clone(),
            latency: Latency::of(durations, errors, minutes),
            mean_self_ms: spans.iter().map(|&i| millis(own[i])).sum::<f64>() / count as f64,
        });
    }
    let mut slow: Vec<&OperationPerformance> = operations.iter().collect();
    slow.sort_by(|a, b| b.latency.p95_ms.total_cmp(&a.latency.p95_ms));
    let slowest = slow
        .into_iter()
        .take(SLOWEST)
        .map(|operation| {
            let key = (operation.service.clone(), operation.operation.clone());
            let mut time: BTreeMap<&(String, String), i64> = BTreeMap::new();
            let mut total = 0i64;
            for &top in &by_operation[&key] {
                // The span's subtree, each span's self time to its operation. A nested span of the same
                // operation is counted within its ancestor's.
                let mut ancestor = parents[top];
                let mut nested = false;
                for _ in 0..MAX_DEPTH {
                    let Some(i) = ancestor else { break };
                    if rows[i].operation == key {
                        nested = true;
                        break;
                    }
                    ancestor = parents[i];
                }
                if nested {
                    continue;
                }
                total += rows[top].duration;
                let mut stack = vec![top];
                while let Some(i) = stack.pop() {
                    *time.entry(&rows[i].operation).or_default() += own[i];
                    stack.extend(&children[i]);
                }
            }
            let mut dominated_by: Vec<SelfTime> = time
                .into_iter()
                .map(|((service, name), nanos)| SelfTime {
                    service: service.clone(),
                    operation: name.clone(),
                    self_ms: millis(nanos),
                    share: if total > 0 { nanos as f64 / total as f64 } else { 0.0 },
                })
                .collect();
            dominated_by.sort_by(|a, b| b.self_ms.total_cmp(&a.self_ms));
            dominated_by.truncate(DOMINANT);
            SlowOperation {
                service: key.0,
                operation: key.1,
                p95_ms: operation.latency.p95_ms,
                count: operation.latency.count,
                dominated_by,
            }
        })
        .collect();
    (operations, slowest)
}

/// Each span's self time: its duration less the union of its children's intervals clipped to it.
pub fn self_times(spans: &[(i64, i64, Option<usize>)]) -> Vec<i64> {
    let mut children: Vec<Vec<(i64, i64)>> = vec![Vec::new(); spans.len()];
    for &(start, duration, parent) in spans {
        if let Some(parent) = parent {
            children[parent].push((start, start.saturating_add(duration)));
        }
    }
    spans
        .iter()
        .zip(children.iter_mut())
        .map(|(&(start, duration, _), intervals)| {
            let end = start.saturating_add(duration);
            intervals.sort_unstable();
            let (mut covered, mut reach) = (0i64, start);
            for &(from, to) in intervals.iter() {
                let (from, to) = (from.max(reach), to.min(end));
                if to > from {
                    covered += to - from;
                    reach = to;
                }
            }
            (duration - covered).max(0)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_time_leaves_out_what_children_cover_once() {
        // A 100 ns parent with children at 10–40 and 30–60 (overlapping) and one running past its end (90–120).
        let spans = [(0, 100, None), (10, 30, Some(0)), (30, 30, Some(0)), (90, 30, Some(0))];
        assert_eq!(self_times(&spans), vec![100 - 50 - 10, 30, 30, 30]);
    }
}
